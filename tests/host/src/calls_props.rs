//! `proxy_get_property` and `proxy_set_property`: the stream's attributes as Envoy serialises them
//! (strings as bytes; times, durations and integers as 8-byte little-endian), and filter state.

use wasmtime::{Caller, Linker};

use super::abi::{self, Outcome, Status, finish};
use super::state::HostState;

type C<'a> = Caller<'a, HostState>;

/// The plugin name the host reports (`plugin_name`, `plugin_root_id`, `plugin_vm_id`).
pub const PLUGIN_NAME: &str = "doppel";

/// Splits an ABI property path (segments separated by NUL).
fn segments(path: &[u8]) -> Vec<String> {
    path.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn int(value: i64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// Resolves a property for the active context, `None` when Envoy would answer `NotFound`.
fn resolve(state: &HostState, path: &[String]) -> Option<Vec<u8>> {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["plugin_name"] | ["plugin_root_id"] => return Some(PLUGIN_NAME.as_bytes().to_vec()),
        ["plugin_vm_id"] => return Some(Vec::new()),
        _ => {}
    }
    let routes = &state.routes;
    let http = state.http.get(&state.active())?;
    let header = |name: &str| http.request_headers.get(name).map(<[u8]>::to_vec);
    Some(match path.as_slice() {
        ["request", "time"] => int(http.started_ns as i64),
        ["request", "duration"] => int((http.finished_ns? - http.started_ns) as i64),
        ["request", "id"] => header("x-request-id")?,
        ["request", "method"] => header(":method")?,
        ["request", "path"] => header(":path")?,
        ["request", "host"] => header(":authority")?,
        ["request", "scheme"] => header(":scheme").unwrap_or_else(|| b"http".to_vec()),
        ["request", "protocol"] => b"HTTP/1.1".to_vec(),
        ["request", "headers", name] => header(name)?,
        ["response", "code"] => {
            let status = http.response_headers.as_ref()?.get_str(":status")?;
            int(status.parse().ok()?)
        }
        ["response", "code_details"] => match &http.local_response {
            Some(local) => local.details.clone().into_bytes(),
            None => http.code_details.clone()?.into_bytes(),
        },
        ["response", "headers", name] => http.response_headers.as_ref()?.get(name)?.to_vec(),
        ["xds", "cluster_name"] | ["cluster_name"] => routes
            .cluster_for(&http.request_headers)
            .as_bytes()
            .to_vec(),
        ["source", "address"] => b"127.0.0.1:40000".to_vec(),
        ["destination", "address"] => b"127.0.0.1:10000".to_vec(),
        [name] => http.filter_state.get(*name)?.clone(),
        _ => return None,
    })
}

fn get_property(mut c: C<'_>, ptr: u32, len: u32, ptr_ptr: u32, size_ptr: u32) -> Outcome {
    let path = segments(&abi::read(&c, ptr, len)?);
    let value = resolve(c.data(), &path).ok_or(Status::NotFound)?;
    abi::copy_out(&mut c, &value, ptr_ptr, size_ptr)
}

/// Envoy stores a set property as filter state `wasm.<path>` of the stream; without a stream
/// (the root context) it answers `NotFound`.
fn set_property(mut c: C<'_>, ptr: u32, len: u32, vptr: u32, vlen: u32) -> Outcome {
    let path = segments(&abi::read(&c, ptr, len)?).join(".");
    let value = abi::read(&c, vptr, vlen)?;
    let http = c.data_mut().active_http().ok_or(Status::NotFound)?;
    http.filter_state.insert(path, value);
    Ok(())
}

/// Adds the property hostcalls to `linker`.
pub(crate) fn register(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |c: C<'_>, p: u32, l: u32, rp: u32, rs: u32| finish(get_property(c, p, l, rp, rs)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |c: C<'_>, p: u32, l: u32, vp: u32, vl: u32| finish(set_property(c, p, l, vp, vl)),
    )?;
    Ok(())
}

/// The names this module provides, for the import check.
pub(crate) const PROVIDES: &[&str] = &["proxy_get_property", "proxy_set_property"];
