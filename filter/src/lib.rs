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
//! - [`names`]: the headers and metric names the filter writes; the engine parses the same names.
//!
//! The proxy-wasm glue is compiled only for `wasm32`; everything else is plain Rust that
//! unit-tests natively, and the engine depends on this crate for the config it pushes.

pub mod config;
pub mod decide;
pub mod ids;
pub mod mirror;
pub mod names;
pub mod tally;
pub mod timing;

#[cfg(target_arch = "wasm32")]
mod glue;
