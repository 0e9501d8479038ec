//! doppel's test support: a proxy-wasm host on wasmtime and helpers that run a real Envoy.

pub mod host;
