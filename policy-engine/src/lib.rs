//! doppel's policy engine.
//!
//! It gathers per-variant stats from every Envoy, compares primary and shadow with real
//! statistics, evaluates the CEL rules of policy files, and acts on Envoy over xDS.
//!
//! Modules:
//! - [`metrics`]: the domain types every other module shares (windows, histograms).
//! - [`xds`]: the ADS server (state of the world and delta) and its per-node snapshot cache.
//! - [`alerts`]: webhook alerts (Slack, PagerDuty Events v2, JSON) with retries and de-duplication.
//! - [`hosts`]: stratified, seeded choice of shadow hosts from an inventory or EDS endpoints.
//! - [`resources`]: per-variant resource metrics (CPU, memory, I/O, custom) from Prometheus.

pub mod alerts;
pub mod hosts;
pub mod metrics;
pub mod resources;
pub mod xds;

