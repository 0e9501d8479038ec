//! doppel's policy engine.
//!
//! It gathers per-variant stats from every Envoy, compares primary and shadow with real
//! statistics, evaluates the CEL rules of policy files, and acts on Envoy over xDS.
//!
//! Modules:
//! - [`metrics`]: the domain types every other module shares (windows, histograms).
//! - [`xds`]: the ADS server (state of the world and delta) and its per-node snapshot cache.

pub mod metrics;
pub mod xds;
