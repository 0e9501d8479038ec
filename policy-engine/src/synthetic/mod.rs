//! Synthetic transactions: requests the engine makes itself, the same one to the primary and
//! the shadow at the same moment, so a broken shadow is caught even with no user traffic.
//!
//! A policy's `synthetic:` section lists [`Probe`]s (method, path, headers, body, the expected
//! status, an optional body match, a latency budget, a rate). [`Prober`] runs each probe at its
//! rate straight at the hosts of each variant's cluster (round robin over them), both variants
//! at once, every request marked with [`MARKER_HEADER`]. The analysis loop takes what happened
//! since its last look ([`Prober::take`]) as a [`SyntheticRecord`]: its counts are
//! `synthetic.primary` and `synthetic.shadow` in the CEL context, and the record (with each
//! failure's reason) goes with the look.
//!
//! - [`probe`]: [`Probe`] and how one answer is judged ([`Probe::judge`]).
//! - [`runner`]: [`Prober`], the tasks that send probes, and the tally they fill.
//!
//! The policy fields are in `docs/synthetic.md`.

pub mod probe;
#[cfg(feature = "runtime")]
pub mod runner;

use serde::{Deserialize, Serialize};

pub use probe::{BodyMatch, Probe};
#[cfg(feature = "runtime")]
pub use runner::{Prober, Targets};

/// The header every probe request carries (value `1`), so backends can tell probes from users
/// and route them to sandboxes.
pub const MARKER_HEADER: &str = "x-doppel-synthetic";

/// One variant's probe results since the last look: the `synthetic.<variant>` context.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyntheticVariant {
    /// Probe runs finished since the last look.
    pub runs: i64,
    /// Of those, the ones that passed every check.
    pub passed: i64,
    /// Of those, the ones that failed a check (status, body, latency budget, no answer).
    pub failed: i64,
    /// Probes whose latest run (at any time) failed: the current state, whatever the rate.
    pub failing: i64,
    /// `passed / runs`, 1 without runs.
    pub pass_rate: f64,
    /// Mean latency of the runs since the last look, milliseconds (0 without runs).
    pub latency_mean_ms: f64,
    /// Largest latency of the runs since the last look, milliseconds (0 without runs).
    pub latency_max_ms: f64,
}

/// What the probes did since the last look: the context's `synthetic` and the look's record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyntheticRecord {
    /// The primary's results.
    pub primary: SyntheticVariant,
    /// The shadow's results.
    pub shadow: SyntheticVariant,
    /// Each failure since the last look, one line: probe, variant, host and why (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl SyntheticRecord {
    /// One line for explanations: `synthetic: shadow 0/3 passed (2 failing); primary 3/3; ...`.
    pub fn explain(&self) -> String {
        let one = |name: &str, v: &SyntheticVariant| {
            format!(
                "{name} {}/{} passed, {} probe(s) failing, mean {:.1} ms",
                v.passed, v.runs, v.failing, v.latency_mean_ms
            )
        };
        let mut text = format!(
            "synthetic: {}; {}",
            one("shadow", &self.shadow),
            one("primary", &self.primary)
        );
        if let Some(first) = self.failures.first() {
            text.push_str(&format!("; first failure: {first}"));
        }
        text
    }
}
