//! A demo upstream that plays primary or shadow behind Envoy.
//!
//! It answers every request with its version label (in the `x-upstream-version` header and the
//! body), after a latency drawn from a log-normal distribution, with a configurable share of 500s,
//! or misbehaves at the connection level (TCP reset, hang). Each request it receives is appended
//! to a JSON-lines log that tests read to prove what reached which variant.
//!
//! Modules:
//! - [`fault`]: the behaviour setting (error rate, latency, reset, hang) and how one request draws from it.
//! - [`reqlog`]: the request log, its entry type and a reader.
//! - [`metrics`]: counters and the Prometheus text of `/metrics`.
//! - `server`: the hyper server and its admin endpoints (`/healthz`, `/metrics`, `/admin/fault`).
//!
//! Deliberate shortcuts: HTTP/1.1 only (what Envoy speaks to upstreams by default), and process
//! CPU and memory are read from Linux's `/proc`.

pub mod fault;
pub mod metrics;
pub mod reqlog;
mod server;

pub use server::{Upstream, VERSION_HEADER, serve};
