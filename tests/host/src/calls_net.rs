//! Hostcalls that reach outside the stream: HTTP callouts, shared data, shared queues, stream
//! control (continue, close, local responses) and the effective context.
//!
//! As in Envoy (proxy-wasm-cpp-host `exports.cc`), a callout belongs to the *root* context, and
//! its answer is delivered as `proxy_on_http_call_response(root_id, token, ...)`; the Rust SDK then
//! hands it to the context that dispatched it, and drops it if that context is gone.

use wasmtime::{Caller, Linker};

use super::abi::{self, Outcome, Status, finish};
use super::headers::HeaderMap;
use super::state::{Callout, HostState, LocalResponse, Queue};

type C<'a> = Caller<'a, HostState>;

fn pairs_to_map(bytes: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in abi::decode_pairs(bytes) {
        map.add(&String::from_utf8_lossy(&k), &v);
    }
    map
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut c: C<'_>,
    cluster: (u32, u32),
    headers: (u32, u32),
    body: (u32, u32),
    trailers: (u32, u32),
    timeout_ms: u32,
    token_ptr: u32,
) -> Outcome {
    let cluster = abi::read_string(&c, cluster.0, cluster.1)?;
    let headers = pairs_to_map(&abi::read(&c, headers.0, headers.1)?);
    let body = abi::read(&c, body.0, body.1)?;
    let trailers = pairs_to_map(&abi::read(&c, trailers.0, trailers.1)?);
    // Envoy writes the token once before the call to check the pointer.
    abi::write_u32(&mut c, token_ptr, 0)?;
    let state = c.data_mut();
    if !state.clusters.contains(&cluster) {
        return Err(Status::BadArgument.into());
    }
    if [":path", ":method", ":authority"]
        .iter()
        .any(|h| !headers.contains(h))
    {
        return Err(Status::BadArgument.into());
    }
    let token = state.next_token;
    state.next_token = state.next_token.wrapping_add(1).max(1);
    let callout = Callout {
        token,
        cluster,
        headers,
        body,
        trailers,
        timeout_ms,
        dispatched_by: state.active(),
        at_ns: state.clock.now_ns(),
    };
    state.callouts.push(callout.clone());
    state.pending_calls.insert(token, callout);
    abi::write_u32(&mut c, token_ptr, token)?;
    Ok(())
}

fn get_shared_data(
    mut c: C<'_>,
    kptr: u32,
    klen: u32,
    ptr_ptr: u32,
    size_ptr: u32,
    cas_ptr: u32,
) -> Outcome {
    let key = abi::read_string(&c, kptr, klen)?;
    let (value, cas) = c
        .data()
        .shared_data
        .get(&key)
        .cloned()
        .ok_or(Status::NotFound)?;
    abi::copy_out(&mut c, &value, ptr_ptr, size_ptr)?;
    abi::write_u32(&mut c, cas_ptr, cas)?;
    Ok(())
}

fn set_shared_data(mut c: C<'_>, kptr: u32, klen: u32, vptr: u32, vlen: u32, cas: u32) -> Outcome {
    let key = abi::read_string(&c, kptr, klen)?;
    let value = abi::read(&c, vptr, vlen)?;
    let state = c.data_mut();
    if let Some((_, current)) = state.shared_data.get(&key)
        && cas != 0
        && cas != *current
    {
        return Err(Status::CasMismatch.into());
    }
    state.next_cas = state.next_cas.wrapping_add(1).max(1);
    let next = state.next_cas;
    state.shared_data.insert(key, (value, next));
    Ok(())
}

fn register_queue(mut c: C<'_>, ptr: u32, len: u32, ret: u32) -> Outcome {
    let name = abi::read_string(&c, ptr, len)?;
    let state = c.data_mut();
    let owner = state.root_id;
    let token = match state
        .queues
        .iter()
        .position(|q| q.vm_id.is_empty() && q.name == name)
    {
        Some(index) => {
            state.queues[index].owner = owner;
            index as u32 + 1
        }
        None => {
            state.queues.push(Queue {
                vm_id: String::new(),
                name,
                owner,
                items: Default::default(),
            });
            state.queues.len() as u32
        }
    };
    abi::write_u32(&mut c, ret, token)?;
    Ok(())
}

fn resolve_queue(mut c: C<'_>, vm: (u32, u32), name: (u32, u32), ret: u32) -> Outcome {
    let vm_id = abi::read_string(&c, vm.0, vm.1)?;
    let name = abi::read_string(&c, name.0, name.1)?;
    let index = c
        .data()
        .queues
        .iter()
        .position(|q| q.vm_id == vm_id && q.name == name)
        .ok_or(Status::NotFound)?;
    abi::write_u32(&mut c, ret, index as u32 + 1)?;
    Ok(())
}

fn enqueue(mut c: C<'_>, token: u32, ptr: u32, len: u32) -> Outcome {
    let value = abi::read(&c, ptr, len)?;
    let state = c.data_mut();
    let queue = token
        .checked_sub(1)
        .and_then(|i| state.queues.get_mut(i as usize))
        .ok_or(Status::NotFound)?;
    queue.items.push_back(value);
    let owner = queue.owner;
    state.ready_queues.push_back((owner, token));
    Ok(())
}

fn dequeue(mut c: C<'_>, token: u32, ptr_ptr: u32, size_ptr: u32) -> Outcome {
    let state = c.data_mut();
    let queue = token
        .checked_sub(1)
        .and_then(|i| state.queues.get_mut(i as usize))
        .ok_or(Status::NotFound)?;
    let item = queue.items.pop_front().ok_or(Status::Empty)?;
    abi::copy_out(&mut c, &item, ptr_ptr, size_ptr)
}

fn continue_stream(mut c: C<'_>, stream: u32) -> Outcome {
    if stream > 3 {
        return Err(Status::BadArgument.into());
    }
    if let Some(http) = c.data_mut().active_http() {
        match stream {
            0 => http.release_request(),
            1 => http.release_response(),
            _ => {}
        }
    }
    Ok(())
}

fn close_stream(mut c: C<'_>, stream: u32) -> Outcome {
    if stream > 3 {
        return Err(Status::BadArgument.into());
    }
    if let Some(http) = c.data_mut().active_http() {
        http.closed.push(stream);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut c: C<'_>,
    status: u32,
    details: (u32, u32),
    body: (u32, u32),
    headers: (u32, u32),
) -> Outcome {
    let details = abi::read_string(&c, details.0, details.1)?;
    let body = abi::read(&c, body.0, body.1)?;
    let headers = pairs_to_map(&abi::read(&c, headers.0, headers.1)?);
    if let Some(http) = c.data_mut().active_http() {
        let mut sent = HeaderMap::new();
        sent.set(":status", status.to_string().as_bytes());
        for (k, v) in headers.iter() {
            sent.add(k, v);
        }
        http.local_response = Some(LocalResponse {
            status,
            details,
            body: body.clone(),
            headers,
        });
        http.response_headers = Some(sent.clone());
        http.response_body = body;
        http.delivered = Some(sent);
    }
    Ok(())
}

fn set_effective_context(mut c: C<'_>, id: u32) -> Outcome {
    let state = c.data_mut();
    if !state.exists(id) {
        return Err(Status::BadArgument.into());
    }
    state.effective = id;
    Ok(())
}

fn get_status(mut c: C<'_>, code_ptr: u32, ptr_ptr: u32, size_ptr: u32) -> Outcome {
    abi::write_u32(&mut c, code_ptr, 0)?;
    abi::copy_out(&mut c, b"", ptr_ptr, size_ptr)
}

/// Adds the callout, shared-data, queue and stream-control hostcalls to `linker`.
pub(crate) fn register(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |c: C<'_>,
         up: u32,
         ul: u32,
         hp: u32,
         hl: u32,
         bp: u32,
         bl: u32,
         tp: u32,
         tl: u32,
         to: u32,
         r: u32| { finish(http_call(c, (up, ul), (hp, hl), (bp, bl), (tp, tl), to, r)) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |c: C<'_>, kp: u32, kl: u32, p: u32, s: u32, cas: u32| {
            finish(get_shared_data(c, kp, kl, p, s, cas))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: u32, kl: u32, vp: u32, vl: u32, cas: u32| {
            finish(set_shared_data(c, kp, kl, vp, vl, cas))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |c: C<'_>, p: u32, l: u32, r: u32| finish(register_queue(c, p, l, r)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |c: C<'_>, vp: u32, vl: u32, np: u32, nl: u32, r: u32| {
            finish(resolve_queue(c, (vp, vl), (np, nl), r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, t: u32, p: u32, l: u32| finish(enqueue(c, t, p, l)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |c: C<'_>, t: u32, p: u32, s: u32| finish(dequeue(c, t, p, s)),
    )?;
    linker.func_wrap("env", "proxy_continue_stream", |c: C<'_>, t: u32| {
        finish(continue_stream(c, t))
    })?;
    linker.func_wrap("env", "proxy_close_stream", |c: C<'_>, t: u32| {
        finish(close_stream(c, t))
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |c: C<'_>, st: u32, dp: u32, dl: u32, bp: u32, bl: u32, hp: u32, hl: u32, _grpc: i32| {
            finish(send_local_response(c, st, (dp, dl), (bp, bl), (hp, hl)))
        },
    )?;
    linker.func_wrap("env", "proxy_set_effective_context", |c: C<'_>, id: u32| {
        finish(set_effective_context(c, id))
    })?;
    linker.func_wrap("env", "proxy_clear_route_cache", || Status::Ok as u32)?;
    linker.func_wrap("env", "proxy_done", || Status::NotFound as u32)?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |c: C<'_>, cp: u32, p: u32, s: u32| finish(get_status(c, cp, p, s)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: C<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| Status::NotFound as u32,
    )?;
    register_grpc(linker)
}

/// The gRPC hostcalls. The Rust SDK links them whether or not a filter uses gRPC, so they must
/// resolve; this host does not implement gRPC callouts, so calling one traps, naming it.
fn register_grpc(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn refuse(name: &str) -> wasmtime::Error {
        wasmtime::format_err!(
            "the test host does not implement gRPC callouts: the filter called {name}"
        )
    }
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: C<'_>,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32|
         -> wasmtime::Result<u32> { Err(refuse("proxy_grpc_call")) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: C<'_>,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32|
         -> wasmtime::Result<u32> { Err(refuse("proxy_grpc_stream")) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: C<'_>, _: u32, _: u32, _: u32, _: u32| -> wasmtime::Result<u32> {
            Err(refuse("proxy_grpc_send"))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_: C<'_>, _: u32| -> wasmtime::Result<u32> { Err(refuse("proxy_grpc_cancel")) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |_: C<'_>, _: u32| -> wasmtime::Result<u32> { Err(refuse("proxy_grpc_close")) },
    )?;
    Ok(())
}

/// The names this module provides, for the import check.
pub(crate) const PROVIDES: &[&str] = &[
    "proxy_http_call",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_set_effective_context",
    "proxy_clear_route_cache",
    "proxy_done",
    "proxy_get_status",
    "proxy_call_foreign_function",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
];
