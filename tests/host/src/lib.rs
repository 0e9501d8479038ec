//! A proxy-wasm host for tests: it runs the real filter `.wasm` on wasmtime (with WASI preview 1)
//! the way Envoy 1.40 runs it, implements the ABI 0.2.1 hostcalls the proxy-wasm Rust SDK 0.2.5
//! imports with Envoy's semantics, and records what the filter did so tests can assert on it.
//!
//! ```no_run
//! use doppel_test_host::Host;
//! # fn main() -> anyhow::Result<()> {
//! let mut host = Host::load_filter()?; // $DOPPEL_WASM or target/wasm32-wasip1/wasm/doppel_filter.wasm
//! assert!(host.configure(r#"{"service":"cart","mode":"split","percent":1.0}"#)?);
//! let done = host
//!     .request(&[(":method", "GET"), (":path", "/"), (":authority", "cart")])?
//!     .wait(std::time::Duration::from_millis(20))?
//!     .respond(200, &[("server-timing", "db;dur=3.5")])?
//!     .finish()?;
//! println!("went to {:?} with {:?}", done.cluster, done.forwarded);
//! println!("{:?}", host.counter("doppel.cart.primary.rq_total"));
//! # Ok(()) }
//! ```
//!
//! What it does, as Envoy does:
//! - **Loading** ([`Host::load`]): every import must be a hostcall implemented here or one of the
//!   WASI functions Envoy provides, else loading fails naming the import; the module must export
//!   a `proxy_abi_version_*` and an allocator. Then `_initialize` (or `_start`), the root
//!   context (`proxy_on_context_create(root, 0)`), `proxy_on_vm_start`. [`Host::configure`] runs
//!   `proxy_on_configure` with the plugin configuration buffer and returns its answer.
//! - **Streams** ([`Host::request`] → [`Exchange`] → [`Finished`]): context create, request
//!   headers and body, response headers and body, then `proxy_on_done`, `proxy_on_log`,
//!   `proxy_on_delete`. Headers "go upstream" when a callback answers Continue (or the filter calls
//!   `proxy_continue_stream`); [`Finished::forwarded`] is that snapshot and
//!   [`Finished::cluster`] where it routed (by default `x-doppel-variant: shadow` → `shadow`,
//!   else `primary`; see [`Host::set_routes`]).
//! - **Header maps**: lower-case keys, first value on get, `replace` replaces the first and drops
//!   the rest, `remove` of an absent key is Ok, a map that does not exist yet (response headers
//!   during the request) is `BadArgument`, and so is every stream map in `proxy_on_delete` (as
//!   under Envoy 1.40); the pairs encoding of the ABI.
//! - **Properties**: `request.time` and `request.duration` (8-byte LE nanoseconds; the duration
//!   only once the stream is finished), `request.id` (the `x-request-id` header),
//!   `request.method|path|host|scheme|protocol|headers.<h>`, `response.code` (8-byte LE),
//!   `response.code_details`, `xds.cluster_name`, `source.address`, `plugin_name`; a set property
//!   is filter state of the stream (in the root context: `NotFound`).
//! - **Metrics**: ids carry their kind in the low two bits as in Envoy; a counter increment of 0
//!   or less is `BadArgument`; histograms keep every sample ([`Host::histogram`]).
//! - **Time**: a virtual clock ([`Host::advance`], [`Exchange::wait`]) that also drives WASI's
//!   realtime clock (other WASI clocks are `ENOTSUP`, as in Envoy), ticks, and callout timeouts.
//! - **Callouts**: `dispatch_http_call` needs a known cluster and `:method`, `:path`,
//!   `:authority`, else `BadArgument`. The callout belongs to the root context; a test answers it
//!   ([`Host::answer`]), fails it ([`Host::fail_callout`]) or lets it time out. The answer goes to
//!   `proxy_on_http_call_response(root, token, ...)`; the SDK routes it to the context that made
//!   the call and drops it if that context is gone, exactly as under Envoy.
//! - **Shared data** with CAS, **shared queues** (`proxy_on_queue_ready` runs right after the
//!   callback that enqueued), `set_effective_context`, `send_local_response`, `continue_stream`,
//!   `close_stream`. Not implemented: gRPC calls and streams (the SDK links them, so they
//!   resolve, but calling one traps naming it). Any other unknown import fails loading.
//! - **Failures**: a trap (a Rust panic aborts) fails the VM for good, like Envoy; the error and
//!   [`Host::failure`] carry the guest's stderr (the panic message). stdout and stderr become
//!   logs at info and error level. Set `DOPPEL_HOST_LOG=1` to echo logs to stderr.
//!
//! Shortcut: one VM and one root context per [`Host`]; shared data and queues are per host.
//!
//! Files: [`abi`] (status codes, pairs, guest memory), [`headers`], `calls_*` (hostcalls by area),
//! `link` (import check, linking), `driver` (VM and root lifecycle), `exchange` (streams), `state`,
//! [`support`] (helpers the host tests share).

pub mod abi;
mod calls_maps;
mod calls_net;
mod calls_props;
mod calls_stats;
mod driver;
mod exchange;
pub mod headers;
mod link;
mod state;
pub mod support;

pub use abi::{LogLevel, Status};
pub use calls_props::PLUGIN_NAME;
pub use driver::{Host, filter_path};
pub use exchange::{Action, Exchange, Finished};
pub use headers::HeaderMap;
pub use state::{Callout, Crossings, LocalResponse, LogEntry, Metric, MetricKind, Routes};
