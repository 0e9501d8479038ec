//! Hostcalls on header maps and byte buffers, with Envoy's answers: a map that does not exist
//! (yet) is `BadArgument` for reads and writes of one value, and an empty list of pairs.

use wasmtime::{Caller, Linker};

use super::abi::{self, BufferType, MapType, Outcome, Status, finish};
use super::headers::HeaderMap;
use super::state::HostState;

type C<'a> = Caller<'a, HostState>;

/// A writable map of the active context (request/response headers and trailers); none once the
/// stream is being deleted.
fn map_mut(state: &mut HostState, map: MapType) -> Option<&mut HeaderMap> {
    let http = state.active_http().filter(|h| !h.maps_gone)?;
    match map {
        MapType::RequestHeaders => Some(&mut http.request_headers),
        MapType::RequestTrailers => http.request_trailers.as_mut(),
        MapType::ResponseHeaders => http.response_headers.as_mut(),
        MapType::ResponseTrailers => http.response_trailers.as_mut(),
        _ => None,
    }
}

/// A readable map: the writable ones, plus the answer of the callout being delivered.
fn map_ref(state: &mut HostState, map: MapType) -> Option<&HeaderMap> {
    match map {
        MapType::CallResponseHeaders => state.call_response.as_ref().map(|r| &r.headers),
        MapType::CallResponseTrailers => state.call_response.as_ref().map(|r| &r.trailers),
        _ => map_mut(state, map).map(|m| &*m),
    }
}

fn get_pairs(mut c: C<'_>, map: u32, ptr_ptr: u32, size_ptr: u32) -> Outcome {
    let map = MapType::from_abi(map)?;
    let bytes = match map_ref(c.data_mut(), map) {
        Some(m) if !m.is_empty() => m.encode(),
        _ => Vec::new(),
    };
    abi::copy_out(&mut c, &bytes, ptr_ptr, size_ptr)
}

fn set_pairs(mut c: C<'_>, map: u32, ptr: u32, len: u32) -> Outcome {
    let map = MapType::from_abi(map)?;
    let pairs = abi::decode_pairs(&abi::read(&c, ptr, len)?);
    let target = map_mut(c.data_mut(), map).ok_or(Status::BadArgument)?;
    *target = HeaderMap::new();
    for (key, value) in pairs {
        target.add(&String::from_utf8_lossy(&key), &value);
    }
    Ok(())
}

fn get_value(mut c: C<'_>, map: u32, kptr: u32, klen: u32, ptr_ptr: u32, size_ptr: u32) -> Outcome {
    let map = MapType::from_abi(map)?;
    let key = abi::read_string(&c, kptr, klen)?;
    let headers = map_ref(c.data_mut(), map).ok_or(Status::BadArgument)?;
    let value = headers.get(&key).ok_or(Status::NotFound)?.to_vec();
    abi::copy_out(&mut c, &value, ptr_ptr, size_ptr)
}

/// `add`, `replace` and `remove` share their shape: find the map, change it.
fn edit(
    mut c: C<'_>,
    map: u32,
    kptr: u32,
    klen: u32,
    value: Option<(u32, u32)>,
    op: fn(&mut HeaderMap, &str, &[u8]),
) -> Outcome {
    let map = MapType::from_abi(map)?;
    let key = abi::read_string(&c, kptr, klen)?;
    let value = match value {
        Some((ptr, len)) => abi::read(&c, ptr, len)?,
        None => Vec::new(),
    };
    let target = map_mut(c.data_mut(), map).ok_or(Status::BadArgument)?;
    op(target, &key, &value);
    Ok(())
}

fn get_size(mut c: C<'_>, map: u32, ret: u32) -> Outcome {
    let map = MapType::from_abi(map)?;
    let size = map_mut(c.data_mut(), map)
        .ok_or(Status::BadArgument)?
        .byte_size();
    abi::write_u32(&mut c, ret, size as u32)?;
    Ok(())
}

/// The bytes of a buffer of the active context, `None` when Envoy has no such buffer.
fn buffer(state: &mut HostState, buffer: BufferType) -> Option<Vec<u8>> {
    match buffer {
        BufferType::VmConfiguration => Some(state.vm_config.clone()),
        BufferType::PluginConfiguration => state.plugin_config.clone(),
        BufferType::CallResponseBody => state.call_response.as_ref().map(|r| r.body.clone()),
        BufferType::RequestBody => state.active_http().map(|h| h.request_body.clone()),
        BufferType::ResponseBody => state.active_http().map(|h| h.response_body.clone()),
        _ => None,
    }
}

fn get_buffer(
    mut c: C<'_>,
    kind: u32,
    start: u32,
    max: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> Outcome {
    let kind = BufferType::from_abi(kind)?;
    let bytes = buffer(c.data_mut(), kind).ok_or(Status::NotFound)?;
    let start = start as usize;
    let end = start
        .checked_add(max as usize)
        .ok_or(Status::BadArgument)?
        .min(bytes.len());
    if start < end {
        abi::copy_out(&mut c, &bytes[start..end], ptr_ptr, size_ptr)?;
    }
    Ok(())
}

fn get_buffer_status(mut c: C<'_>, kind: u32, len_ptr: u32, flags_ptr: u32) -> Outcome {
    let kind = BufferType::from_abi(kind)?;
    let bytes = buffer(c.data_mut(), kind).ok_or(Status::NotFound)?;
    abi::write_u32(&mut c, len_ptr, bytes.len() as u32)?;
    abi::write_u32(&mut c, flags_ptr, 0)?;
    Ok(())
}

/// Envoy's `Buffer::copyFrom`: replace all from 0, prepend (start 0, size 0), or append.
fn set_buffer(mut c: C<'_>, kind: u32, start: u32, size: u32, ptr: u32, len: u32) -> Outcome {
    let kind = BufferType::from_abi(kind)?;
    let data = abi::read(&c, ptr, len)?;
    let http = c.data_mut().active_http().ok_or(Status::NotFound)?;
    let body = match kind {
        BufferType::RequestBody => &mut http.request_body,
        BufferType::ResponseBody => &mut http.response_body,
        _ => return Err(Status::BadArgument.into()),
    };
    let (start, size) = (start as usize, size as usize);
    if start == 0 && size == 0 {
        body.splice(0..0, data);
    } else if start == 0 && size >= body.len() {
        *body = data;
    } else if start >= body.len() {
        body.extend_from_slice(&data);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

/// Adds the header-map and buffer hostcalls to `linker`.
pub(crate) fn register(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |c: C<'_>, m: u32, p: u32, s: u32| finish(get_pairs(c, m, p, s)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |c: C<'_>, m: u32, p: u32, l: u32| finish(set_pairs(c, m, p, l)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |c: C<'_>, m: u32, kp: u32, kl: u32, p: u32, s: u32| finish(get_value(c, m, kp, kl, p, s)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |c: C<'_>, m: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            finish(edit(c, m, kp, kl, Some((vp, vl)), HeaderMap::add))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |c: C<'_>, m: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            finish(edit(c, m, kp, kl, Some((vp, vl)), HeaderMap::set))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |c: C<'_>, m: u32, kp: u32, kl: u32| {
            finish(edit(c, m, kp, kl, None, |map, key, _| map.remove(key)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |c: C<'_>, m: u32, r: u32| finish(get_size(c, m, r)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |c: C<'_>, t: u32, st: u32, max: u32, p: u32, s: u32| {
            finish(get_buffer(c, t, st, max, p, s))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |c: C<'_>, t: u32, l: u32, f: u32| finish(get_buffer_status(c, t, l, f)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |c: C<'_>, t: u32, st: u32, sz: u32, p: u32, l: u32| finish(set_buffer(c, t, st, sz, p, l)),
    )?;
    Ok(())
}

/// The names this module provides, for the import check.
pub(crate) const PROVIDES: &[&str] = &[
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_size",
    "proxy_get_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_set_buffer_bytes",
];
