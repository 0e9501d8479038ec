//! The engine's domain types for per-variant metrics: what ingestion produces, what a trace
//! records, and what the statistics and the CEL context read. Wire types (MetricsService
//! protobufs, trace lines) are converted into these at the edge.

use std::collections::BTreeMap;

use doppel_filter::names::Variant;
use serde::{Deserialize, Serialize};

/// A histogram with fixed buckets, as Envoy reports it: `counts[i]` observations fell at or
/// below `bounds[i]` and above `bounds[i - 1]`; `counts[bounds.len()]` is the overflow bucket.
/// Bounds are in the metric's unit (milliseconds for latency) and strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds of the buckets, strictly increasing.
    pub bounds: Vec<f64>,
    /// One count per bound, plus the overflow count last.
    pub counts: Vec<u64>,
    /// Sum of all observations, in the same unit as the bounds.
    pub sum: f64,
}

/// One variant's metrics over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantWindow {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with a 5xx status.
    pub errors_5xx: u64,
    /// Requests that got no upstream answer (local reset, timeout).
    pub resets: u64,
    /// Latency in milliseconds.
    pub latency_ms: Histogram,
    /// Custom histograms by name (for example `db` from `Server-Timing`), in milliseconds.
    pub custom: BTreeMap<String, Histogram>,
}

/// The mirror comparison's counts over one window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorWindow {
    /// Copies sent to the shadow.
    pub sent: u64,
    /// Copies whose answer was compared with the primary's.
    pub compared: u64,
    /// Compared, and the status class differed.
    pub mismatch_status: u64,
    /// Compared, and the body digest differed.
    pub mismatch_body: u64,
    /// Compared, and the shadow was slower than the tolerance allows.
    pub mismatch_latency: u64,
    /// Copies that got no answer.
    pub failed: u64,
    /// Chosen requests not copied (method, body, in-flight cap).
    pub skipped: u64,
}

/// Everything known about one service over one window `[start_ms, end_ms)` (Unix milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceWindow {
    /// The service, as named in the filter config and the policy.
    pub service: String,
    /// Window start, Unix milliseconds.
    pub start_ms: u64,
    /// Window end (exclusive), Unix milliseconds.
    pub end_ms: u64,
    /// The primary's metrics.
    pub primary: VariantWindow,
    /// The shadow's metrics.
    pub shadow: VariantWindow,
    /// The mirror comparison's counts.
    pub mirror: MirrorWindow,
}

impl ServiceWindow {
    /// The metrics of one variant.
    pub fn variant(&self, variant: Variant) -> &VariantWindow {
        match variant {
            Variant::Primary => &self.primary,
            Variant::Shadow => &self.shadow,
        }
    }
}
