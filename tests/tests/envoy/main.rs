//! End-to-end tests against the real Envoy binary, the demo upstreams and `doppel serve`, on
//! loopback with ephemeral ports. One binary, so the test crate is linked once.

mod dashboard_browser;
mod dashboard_metrics;
mod e2e_config;
mod e2e_mirror;
mod e2e_split;
mod e2e_upstream;
mod hostile_envoy;
mod ingest_envoy;
mod rollout_api;
mod rollout_bench;
mod rollout_envoy;
mod synthetic_serve;
mod xds_bootstrap;
mod xds_ecds;
mod xds_envoy;
mod xds_tls_envoy;
