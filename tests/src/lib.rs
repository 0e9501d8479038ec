//! doppel's test support: helpers that run a real Envoy, and the proxy-wasm test host (its own
//! crate, `tests/host`, re-exported as [`host`]).

/// The proxy-wasm host on wasmtime that runs the filter `.wasm` (crate `doppel-test-host`,
/// optimised even in test builds: it runs every simulated request).
pub use doppel_test_host as host;

// Running a real Envoy end to end: processes, the demo upstream, bootstraps, load.
pub mod envoy;
pub mod envoy_config;
pub mod envoy_stack;
pub mod load;
pub mod procs;
pub mod upstream;

// Smaller runners written beside the ones above for ingestion, xDS and rollout tests.
pub mod alert_receiver;
pub mod ingest_support;
pub mod rollout_support;
pub mod tls_support;

// The dashboard, `/metrics` and the browser that looks at them.
pub mod browser;
pub mod dashboard_support;
pub mod xds_support;
