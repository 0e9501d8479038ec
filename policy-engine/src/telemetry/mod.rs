//! The engine's own observability: counters of what the analysis did, and `/metrics`, the
//! Prometheus text page built from them and from the counters the other parts already keep
//! (ingestion's [`crate::ingest::Counts`], the xDS [`XdsCounters`] and node statuses, the
//! rollouts).
//!
//! Names follow one scheme: `doppel_<subsystem>_<name>[_<unit>]`, counters end in `_total`, and
//! every label takes values from a bounded set (codes, types, actions, the configured services
//! and nodes). The filter's own stats come from Envoy's `/stats/prometheus`, not from here.
//!
//! - [`exposition`]: the text format writer.
//! - [`commands`]: the middleware that counts operators' commands on the API.

pub mod commands;
pub mod exposition;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use exposition::{Exposition, Kind};

use crate::analysis::{Evaluation, Outcome};
use crate::ingest::{Counts, IngestError};
use crate::rollout::{Phase, Rollout};
use crate::xds::{ResourceType, XdsCounters};

/// The phases a rollout can be in, as the `state` label spells them.
pub const STATES: [&str; 5] = ["pending", "shadowing", "paused", "promoted", "rolled_back"];

/// Counters of the analysis and of decisions, shared by the analysis loop and the API.
#[derive(Debug, Default)]
pub struct Telemetry {
    looks_evaluated: AtomicU64,
    looks_inconclusive: AtomicU64,
    rules_evaluated: AtomicU64,
    /// (source, action) -> decisions.
    decisions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Analysis errors by code.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    dashboard_clients: AtomicU64,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    // A panic elsewhere while holding the lock cannot leave a count half-written.
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = map.entry(key).or_default();
    *n = n.saturating_add(1);
}

fn copy<K: Ord + Clone>(map: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<K, u64> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

impl Telemetry {
    /// Fresh counters.
    pub fn new() -> Telemetry {
        Telemetry::default()
    }

    /// Counts one look: evaluated (with its rules) or inconclusive.
    pub fn look(&self, evaluation: &Evaluation) {
        match evaluation.outcome {
            Outcome::Evaluated { .. } => {
                self.looks_evaluated.fetch_add(1, Ordering::Relaxed);
                let rules = u64::try_from(evaluation.rules.len()).unwrap_or(u64::MAX);
                self.rules_evaluated.fetch_add(rules, Ordering::Relaxed);
            }
            Outcome::Inconclusive { .. } => {
                self.looks_inconclusive.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one decision: `source` is `rule` or `operator`, `action` what it asked for.
    pub fn decision(&self, source: &'static str, action: &'static str) {
        bump(&self.decisions, (source, action));
    }

    /// Counts one window the analysis could not take, by its error code.
    pub fn analysis_error(&self, code: &'static str) {
        bump(&self.errors, code);
    }

    /// A dashboard event stream opened; the guard counts it until dropped.
    pub fn dashboard_client(self: &std::sync::Arc<Self>) -> ClientGuard {
        self.dashboard_clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(std::sync::Arc::clone(self))
    }
}

impl Telemetry {
    /// Dashboard event streams open now.
    pub fn open_dashboard_clients(&self) -> u64 {
        self.dashboard_clients.load(Ordering::Relaxed)
    }
}

/// Counts one open dashboard event stream while it lives.
#[derive(Debug)]
pub struct ClientGuard(std::sync::Arc<Telemetry>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.dashboard_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything one `/metrics` page reads.
#[derive(Debug)]
pub struct Scrape<'a> {
    /// The analysis and decision counters.
    pub telemetry: &'a Telemetry,
    /// Ingestion's counters.
    pub ingest: &'a Counts,
    /// The xDS counters.
    pub xds: &'a XdsCounters,
    /// Each served node with its open ADS streams.
    pub nodes: Vec<(String, usize)>,
    /// Each service's rollout.
    pub rollouts: Vec<Rollout>,
}

fn n(v: u64) -> f64 {
    v as f64
}

/// The shadow's share of traffic a rollout asks for, in percent.
pub fn shadow_weight(rollout: &Rollout) -> f64 {
    match rollout.phase {
        Phase::Shadowing { .. } | Phase::Paused { .. } => {
            rollout.current_step().map_or(0.0, |s| s.weight)
        }
        Phase::Promoted { .. } => 100.0,
        Phase::Pending | Phase::RolledBack { .. } => 0.0,
    }
}

/// The `/metrics` page.
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut page = Exposition::new();
    let t = scrape.telemetry;

    page.family(
        "doppel_ingest_messages_total",
        "MetricsService messages received from Envoys.",
        Kind::Counter,
    );
    page.sample(&[], n(scrape.ingest.messages()));
    page.family(
        "doppel_ingest_metrics_accepted_total",
        "Metrics added into windows.",
        Kind::Counter,
    );
    page.sample(&[], n(scrape.ingest.accepted()));
    page.family(
        "doppel_ingest_metrics_refused_total",
        "Metrics not taken, by code (unknown_metric, unmapped_cluster and superseded are normal traffic).",
        Kind::Counter,
    );
    let refused = scrape.ingest.rejected();
    for code in IngestError::CODES {
        page.sample(
            &[("code", code)],
            n(refused.get(code).copied().unwrap_or(0)),
        );
    }

    page.family(
        "doppel_analysis_looks_total",
        "Analysis looks, by outcome (evaluated, or inconclusive for too little data).",
        Kind::Counter,
    );
    let looks = [
        ("evaluated", &t.looks_evaluated),
        ("inconclusive", &t.looks_inconclusive),
    ];
    for (outcome, count) in looks {
        page.sample(&[("outcome", outcome)], n(count.load(Ordering::Relaxed)));
    }
    page.family(
        "doppel_analysis_rules_evaluated_total",
        "Rule conditions evaluated.",
        Kind::Counter,
    );
    page.sample(&[], n(t.rules_evaluated.load(Ordering::Relaxed)));
    page.family(
        "doppel_analysis_errors_total",
        "Windows the analysis could not take, by code.",
        Kind::Counter,
    );
    for (code, count) in copy(&t.errors) {
        page.sample(&[("code", code)], n(count));
    }
    page.family(
        "doppel_decisions_total",
        "Decisions taken, by source (rule or operator) and action.",
        Kind::Counter,
    );
    for ((source, action), count) in copy(&t.decisions) {
        page.sample(&[("source", source), ("action", action)], n(count));
    }

    let kinds = [
        (
            "doppel_xds_pushes_total",
            "xDS responses sent to Envoys, by type.",
        ),
        (
            "doppel_xds_acks_total",
            "xDS responses Envoys acknowledged, by type.",
        ),
        (
            "doppel_xds_nacks_total",
            "xDS responses Envoys rejected (NACK), by type.",
        ),
    ];
    for (i, (name, help)) in kinds.into_iter().enumerate() {
        page.family(name, help, Kind::Counter);
        for kind in ResourceType::ALL {
            let counts = scrape.xds.of(kind);
            let value = [counts.pushes, counts.acks, counts.nacks][i];
            page.sample(&[("type", kind.code())], n(value));
        }
    }
    page.family(
        "doppel_xds_streams",
        "Open ADS streams, by node.",
        Kind::Gauge,
    );
    for (node, streams) in &scrape.nodes {
        page.sample(
            &[("node", node)],
            n(u64::try_from(*streams).unwrap_or(u64::MAX)),
        );
    }

    page.family(
        "doppel_rollout_state",
        "1 for the phase each service's rollout is in, 0 for the others.",
        Kind::Gauge,
    );
    for rollout in &scrape.rollouts {
        for state in STATES {
            let on = rollout.phase.name() == state;
            page.sample(
                &[("service", &rollout.service), ("state", state)],
                if on { 1.0 } else { 0.0 },
            );
        }
    }
    page.family(
        "doppel_rollout_step",
        "The rollout's current step (1-based; 0 when not shadowing or paused).",
        Kind::Gauge,
    );
    for rollout in &scrape.rollouts {
        let step = rollout.phase.step().map_or(0, |k| k + 1);
        page.sample(
            &[("service", &rollout.service)],
            n(u64::try_from(step).unwrap_or(u64::MAX)),
        );
    }
    page.family(
        "doppel_rollout_shadow_weight_percent",
        "The shadow's share of traffic the rollout asks for, in percent.",
        Kind::Gauge,
    );
    for rollout in &scrape.rollouts {
        page.sample(&[("service", &rollout.service)], shadow_weight(rollout));
    }
    page.family(
        "doppel_dashboard_clients",
        "Open dashboard event streams.",
        Kind::Gauge,
    );
    page.sample(&[], n(t.dashboard_clients.load(Ordering::Relaxed)));
    page.finish()
}

#[cfg(test)]
mod tests;
