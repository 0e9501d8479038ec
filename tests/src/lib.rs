//! doppel's test support: a proxy-wasm host on wasmtime and helpers that run a real Envoy.

pub mod ingest_support;
pub mod rollout_support;
pub mod xds_support;
