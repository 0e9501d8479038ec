//! doppel's policy engine.
//!
//! It gathers per-variant stats from every Envoy, compares primary and shadow with real
//! statistics, evaluates the CEL rules of policy files, and acts on Envoy over xDS.
//!
//! Modules:
//! - [`metrics`]: the domain types every other module shares (windows, histograms).
//! - [`cli`]: `doppel serve` and `doppel rollout ...` (rollout control's subcommands).
//! - [`rollout`]: the rollout state machine per policy, its store, and the snapshots it serves.
//! - [`xds`]: the ADS server (state of the world and delta) and its per-node snapshot cache.
//! - [`policy`]: policy files (YAML): loading with positions, validation, CEL rules checked
//!   against the context's schema; `doppel check`.
//! - [`context`]: the CEL context a rule reads, built from windows, statistics and the
//!   rollout's state; its shape is the schema the checker uses.
//! - [`ingest`]: the MetricsService gRPC server Envoys stream stats into, and the per
//!   (service, variant) time windows it fills.
//! - [`stats`]: the statistics (pure functions): error rates, Mann-Whitney on histograms,
//!   quantiles, always-valid sequential tests, and the detection benchmark simulator.

pub mod cli;
pub mod context;
pub mod ingest;
pub mod metrics;
pub mod policy;
pub mod rollout;
pub mod stats;
pub mod xds;
