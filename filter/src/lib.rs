//! doppel's proxy-wasm filter.
//!
//! The filter sits in Envoy's HTTP filter chain. For every request it strips client-sent copies
//! of its own control headers, decides whether the request is chosen for the shadow, and then
//! either routes it there (split mode: it writes the variant header an Envoy route matches) or
//! copies it there out of band (mirror mode). It tags chosen requests with a unique id and keeps
//! per-variant stats that Envoy streams to the policy engine.
//!
//! Modules:
//! - [`config`]: the config document, parsed and validated once; the engine builds it too.
//! - [`decide`]: matchers, sticky keys and the share: primary or shadow, pure and deterministic.
//! - [`ids`]: 128-bit request ids, unique across workers and restarts; maps keyed by ids.
//! - [`mirror`]: which requests may be copied, the copy's headers, and the comparison book.
//! - [`timing`]: durations out of an upstream's `Server-Timing` header.
//! - [`tally`]: counters kept in VM memory until the next publication.
//! - [`names`]: the headers and metric names the filter writes; the engine parses the same names.
//! - [`pairs`]: the proxy-wasm ABI's serialized header maps.
//! - `glue` (wasm32 only): the proxy-wasm ABI exports, root and HTTP contexts, thin adapters
//!   over the above (no SDK: each call between Envoy and the VM is the filter's main cost).
//!
//! Deliberate shortcuts, for speed: counters are published on the root context's tick rather
//! than per request (Envoy's counters lag by at most a second); the primary is measured on a
//! random sample of its requests (`primary_sample_percent`, by default five times the shadow's
//! share), the shadow on all of them; mirror copies are dispatched from the root context on a
//! 1 ms tick, so their answers outlive the request that made them. Where Envoy strips the
//! control headers and no sticky key is set, Envoy can run the filter on only the requests it
//! may choose or measure (`pool_percent`, [`config::FilterConfig::shares_seen`]): the others
//! never enter the VM.
//!
//! The proxy-wasm glue is compiled only for `wasm32`; everything else is plain Rust that
//! unit-tests natively, and the engine depends on this crate for the config it pushes. Without
//! the default `mirror` feature the module sends no copies itself and exports no body callbacks
//! (doppel_filter_split.wasm: one call into the VM less per request with a body); it splits, or
//! mirrors with copies Envoy's router sends (`mirror.sender: envoy`).

pub mod config;
pub mod decide;
pub mod ids;
pub mod mirror;
pub mod names;
pub mod pairs;
pub mod tally;
pub mod timing;

#[cfg(target_arch = "wasm32")]
mod glue;
