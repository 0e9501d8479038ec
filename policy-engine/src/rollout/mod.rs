//! Rollout control: one state machine per policy, turned into Envoy configuration.
//!
//! - [`machine`]: the pure state machine (pending, shadowing at step k, paused, promoted,
//!   rolled back) driven by operator commands and analysis outcomes, each with its time.
//! - [`traffic`]: what a phase means for traffic (shadow weight, filter mode and share,
//!   mirroring, which primary), in full-ADS or filter-only steering.
//! - [`filter_config`]: the filter's JSON config and its ECDS packing.
//! - [`render`]: a node's snapshot from its inputs (deterministic, so it can be rebuilt).
//! - [`istio`]: WasmPlugin, VirtualService and DestinationRule for a policy (`doppel render istio`).
//! - [`store`]: rollouts, decision log and last snapshot per node in redb.
//! - [`controller`]: applies inputs, commits them, then serves the snapshots.

pub mod controller;
pub mod filter_config;
pub mod istio;
pub mod machine;
pub mod render;
pub mod store;
pub mod traffic;

#[cfg(test)]
mod tests;

pub use controller::{Controller, RolloutStatus, ServiceSetup, Setup};
pub use machine::{Command, Input, Phase, PlanStep, Refused, Rollout, RolloutEvent, Verdict};
pub use traffic::{Steering, TrafficState};

/// Why a rollout operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// No rollout for that service.
    #[error("no rollout for service `{0}`")]
    UnknownService(String),
    /// The machine refused the input.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The topology cannot carry the traffic state.
    #[error("service `{service}`: {problem}")]
    Topology {
        /// The service.
        service: String,
        /// What is missing.
        problem: String,
    },
    /// The snapshot was refused.
    #[error(transparent)]
    Snapshot(#[from] crate::xds::SnapshotError),
    /// The store failed.
    #[error("rollout store: {0}")]
    Store(String),
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
