//! The proxy-wasm glue (wasm32 only): the ABI 0.2.1 exports Envoy calls, and thin adapters
//! between them and the plain modules of this crate.
//!
//! The filter speaks the ABI itself rather than through an SDK, for speed: each call between
//! Envoy and the VM costs more than everything the filter computes for a request, and Envoy
//! skips a callback the module does not export. So the module exports only what it uses: no
//! `proxy_on_log`, `proxy_on_done`, trailers or metadata callbacks. A request costs Envoy five
//! calls into the VM (context create, request headers, response headers, one per response body
//! chunk, delete), and the filter makes as few calls back as its config needs (see [`http`]).
//! Built without the `mirror` feature (doppel_filter_split.wasm), the module exports no body
//! callbacks: it splits, or mirrors with copies Envoy's router sends (`mirror.sender: envoy`),
//! and a request costs four calls whatever its body.
//!
//! - [`root`]: the root context: parses the config, owns the per-VM state, publishes counters
//!   on its tick, dispatches mirror copies and receives their answers.
//! - [`http`]: one context per request: strips control headers, decides, tags, measures.
//! - [`metrics`]: metric ids, each name defined once per VM.
//! - [`host`]: the host calls (imports) with safe, fail-soft wrappers.
//!
//! One VM is one thread: the contexts live in a thread-local registry keyed by context id.

mod host;
mod http;
mod metrics;
mod root;

use crate::ids::IdMap;
use http::Http;
use root::Root;
use std::cell::RefCell;

type ById<T> = IdMap<u32, T>;

/// The VM's contexts. A request whose root has no valid config gets no entry: every callback
/// for it then does nothing.
#[derive(Default)]
struct Contexts {
    roots: ById<Root>,
    streams: ById<Http>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// Runs `f` on the request context `id`, if there is one; `default` otherwise. The registry
/// stays borrowed while `f` runs: a request's host calls never re-enter a request callback (the
/// host only calls back into `proxy_on_memory_allocate`), and if one ever did, it would find
/// the registry busy and do nothing rather than abort.
fn with_stream<R>(id: u32, default: R, f: impl FnOnce(&mut Http) -> R) -> R {
    CONTEXTS.with(|c| match c.try_borrow_mut() {
        Ok(mut contexts) => match contexts.streams.get_mut(&id) {
            Some(stream) => f(stream),
            None => default,
        },
        Err(_) => default,
    })
}

/// Runs `f` on the root context `id`, if there is one. The root is taken out while `f` runs:
/// its host calls may re-enter the VM (Envoy can answer a callout inside the call that makes
/// it), and the nested callback must find the registry free.
fn with_root<R>(id: u32, default: R, f: impl FnOnce(&mut Root) -> R) -> R {
    let Some(mut root) = CONTEXTS.with(|c| c.borrow_mut().roots.remove(&id)) else {
        return default;
    };
    let result = f(&mut root);
    CONTEXTS.with(|c| c.borrow_mut().roots.insert(id, root));
    result
}

#[cfg(target_os = "wasi")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

/// The reactor's start: runs static constructors (the host calls it once, before anything).
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once by the host before any other export, as WASI reactors require.
    unsafe {
        __wasm_call_ctors();
    }
}

/// Marks the module as speaking proxy-wasm ABI 0.2.1.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for a value the host hands to the VM ([`host::allocate`]).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    host::allocate(size)
}

/// A new context: a root (`parent` 0) or a request under root `parent`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
    if parent == 0 {
        CONTEXTS.with(|c| c.borrow_mut().roots.insert(id, Root::new(id)));
        return;
    }
    let shared = CONTEXTS.with(|c| c.borrow().roots.get(&parent).and_then(Root::shared));
    if let Some(shared) = shared {
        CONTEXTS.with(|c| c.borrow_mut().streams.insert(id, Http::new(shared)));
    }
}

/// The root's plugin configuration, `size` bytes: whether it is valid.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(id: u32, size: usize) -> u32 {
    u32::from(with_root(id, false, |root| root.configure(size)))
}

/// The root's tick.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(id: u32) {
    with_root(id, (), Root::tick);
}

/// A callout's answer; callouts are made by roots only.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_http_call_response(
    id: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    with_root(id, (), |root| root.call_answered(token, headers, body_size));
}

/// A request's headers; the answer is always Continue (0).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, end_of_stream: u32) -> u32 {
    with_stream(id, (), |s| s.request_headers(end_of_stream != 0));
    0
}

/// A chunk of a request's body (read only by a mirror copy that carries the body).
#[cfg(feature = "mirror")]
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, end_of_stream: u32) -> u32 {
    with_stream(id, (), |s| s.request_body(size, end_of_stream != 0));
    0
}

/// A response's headers.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, end_of_stream: u32) -> u32 {
    with_stream(id, (), |s| s.response_headers(end_of_stream != 0));
    0
}

/// A chunk of a response's body (read only when a mirror compares bodies).
#[cfg(feature = "mirror")]
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_body(id: u32, size: usize, end_of_stream: u32) -> u32 {
    with_stream(id, (), |s| s.response_body(size, end_of_stream != 0));
    0
}

/// The end of a context: a request is counted and forgotten; a root publishes what it still
/// holds. Envoy calls this for every context it created, after the request's last callback.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(id: u32) {
    if let Some(stream) = CONTEXTS.with(|c| c.borrow_mut().streams.remove(&id)) {
        stream.finish();
        return;
    }
    if let Some(root) = CONTEXTS.with(|c| c.borrow_mut().roots.remove(&id)) {
        root.finish();
    }
}
