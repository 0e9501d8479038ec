//! The proxy-wasm glue (wasm32 only): thin adapters between Envoy's callbacks and the plain
//! modules of this crate. Every host call goes through `proxy_wasm::hostcalls` so that an error
//! is handled here (fail open: leave the request alone) rather than turned into a panic.
//!
//! - [`root`]: the root context: parses the config, owns the per-VM state, publishes counters
//!   on its tick, dispatches mirror copies and receives their answers.
//! - [`http`]: one context per request: strips control headers, decides, tags, measures.
//! - [`metrics`]: metric ids, each name defined once per VM.
//! - [`host`]: small wrappers over host calls (time, headers, properties, logging, randomness).

mod host;
mod http;
mod metrics;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}
