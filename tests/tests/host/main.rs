//! The real filter `.wasm` driven through the test host (tests/host): one test binary, so the
//! host and wasmtime are linked once.

mod abi;
mod calls;
mod config;
mod hostile;
mod ids;
mod mirror;
mod split;
mod stats;
