//! doppel's policy engine.
//!
//! It gathers per-variant stats from every Envoy, compares primary and shadow with real
//! statistics, evaluates the CEL rules of policy files, and acts on Envoy over xDS.
//!
//! Modules:
//! - [`metrics`]: the domain types every other module shares (windows, histograms).
//! - [`ingest`]: the MetricsService gRPC server Envoys stream stats into, and the per
//!   (service, variant) time windows it fills.
//! - [`stats`]: the statistics (pure functions): error rates, Mann-Whitney on histograms,
//!   quantiles, always-valid sequential tests, and the detection benchmark simulator.
//! - [`policy`]: policy files (YAML): loading with positions, validation, CEL rules checked
//!   against the context's schema; `doppel check`.
//! - [`context`]: the CEL context a rule reads, built from windows, statistics and the
//!   rollout's state; its shape is the schema the checker uses.
//! - [`analysis`]: a policy evaluated over a stream of windows, interval by interval, into
//!   typed [`analysis::Decision`]s with their explanations.
//! - [`replay`]: `doppel replay`: reading a recorded trace (JSON Lines of windows) and running
//!   a policy over it deterministically.
//! - [`rollout`]: the rollout state machine per policy, its store, and the snapshots it serves.
//! - [`accesslog`]: Envoy's access logs (gRPC AccessLogService): the doppel ids of sample
//!   shadowed requests, named in the decisions they back.
//! - [`cli`]: the `doppel` subcommands (check, replay, serve, rollout, render, demo); `main.rs` only
//!   dispatches to them.
//! - [`xds`]: the ADS server (state of the world and delta) and its per-node snapshot cache.
//! - [`alerts`]: webhook alerts (Slack, PagerDuty Events v2, JSON) with retries and de-duplication.
//! - [`hosts`]: stratified, seeded choice of shadow hosts from an inventory or EDS endpoints.
//! - [`resources`]: per-variant resource metrics (CPU, memory, I/O, custom) from Prometheus.
//! - [`synthetic`]: synthetic probes sent to primary and shadow at the same moment.
//! - [`tls`]: TLS and mutual TLS (rustls) for the xDS and MetricsService gRPC servers.
//! - [`dashboard`]: the live dashboard (`/dashboard`, its JSON state and server-sent events)
//!   with the bounded analysis history it draws, and `/metrics`.
//! - [`telemetry`]: the engine's own counters and the Prometheus text page built from them.
//!
//! Feature `runtime` (on by default) is everything that runs a server, a network client or the
//! command line: [`accesslog`], [`cli`], [`dashboard`], [`rollout`], [`telemetry`], [`tls`],
//! [`xds`], and the parts of [`alerts`], [`ingest`], [`resources`] and [`synthetic`] that talk
//! to the network. Without it the crate is the core the fuzz targets build (`fuzz/engine`).

// The core: policies, statistics, analysis, replay, and stats ingestion up to the window store.
pub mod alerts;
pub mod analysis;
pub mod context;
pub mod hosts;
pub mod ingest;
pub mod metrics;
pub mod policy;
pub mod replay;
pub mod resources;
pub mod stats;
pub mod synthetic;

// The running engine (feature `runtime`): servers, the rollout store, the command line.
#[cfg(feature = "runtime")]
pub mod accesslog;
#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod dashboard;
#[cfg(feature = "runtime")]
pub mod rollout;
#[cfg(feature = "runtime")]
pub mod telemetry;
#[cfg(feature = "runtime")]
pub mod tls;
#[cfg(feature = "runtime")]
pub mod xds;
