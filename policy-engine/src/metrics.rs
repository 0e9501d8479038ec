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

/// Two histograms whose buckets differ cannot be added bucket by bucket.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("histogram bucket bounds differ: {left:?} against {right:?}")]
pub struct BoundsMismatch {
    /// The bounds of the histogram being added to.
    pub left: Vec<f64>,
    /// The bounds of the histogram being added.
    pub right: Vec<f64>,
}

impl Histogram {
    /// Observations in all buckets, overflow included (saturating).
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |acc, c| acc.saturating_add(*c))
    }

    /// True when it holds no bucket at all (not even an overflow count).
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty() && self.counts.is_empty()
    }

    /// Adds `other` bucket by bucket. An empty histogram takes `other`'s bounds; histograms
    /// with different bounds are left unchanged and the mismatch is returned.
    ///
    /// ```
    /// use doppel_engine::metrics::Histogram;
    /// let mut a = Histogram { bounds: vec![1.0, 5.0], counts: vec![1, 2, 0], sum: 7.0 };
    /// let b = Histogram { bounds: vec![1.0, 5.0], counts: vec![0, 1, 1], sum: 13.0 };
    /// a.merge(&b).unwrap();
    /// assert_eq!((a.counts, a.sum), (vec![1, 3, 1], 20.0));
    /// ```
    pub fn merge(&mut self, other: &Histogram) -> Result<(), BoundsMismatch> {
        if other.is_empty() {
            return Ok(());
        }
        if self.is_empty() {
            *self = other.clone();
            return Ok(());
        }
        if self.bounds != other.bounds || self.counts.len() != other.counts.len() {
            return Err(BoundsMismatch {
                left: self.bounds.clone(),
                right: other.bounds.clone(),
            });
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum += other.sum;
        Ok(())
    }
}

impl VariantWindow {
    /// Adds `other`'s counts and histograms. On a bucket mismatch nothing is changed.
    pub fn merge(&mut self, other: &VariantWindow) -> Result<(), BoundsMismatch> {
        let mut merged = self.clone();
        merged.requests = merged.requests.saturating_add(other.requests);
        merged.errors_5xx = merged.errors_5xx.saturating_add(other.errors_5xx);
        merged.resets = merged.resets.saturating_add(other.resets);
        merged.latency_ms.merge(&other.latency_ms)?;
        for (name, histogram) in &other.custom {
            merged
                .custom
                .entry(name.clone())
                .or_default()
                .merge(histogram)?;
        }
        *self = merged;
        Ok(())
    }
}

impl MirrorWindow {
    /// Adds `other`'s counts (saturating).
    pub fn merge(&mut self, other: &MirrorWindow) {
        self.sent = self.sent.saturating_add(other.sent);
        self.compared = self.compared.saturating_add(other.compared);
        self.mismatch_status = self.mismatch_status.saturating_add(other.mismatch_status);
        self.mismatch_body = self.mismatch_body.saturating_add(other.mismatch_body);
        self.mismatch_latency = self.mismatch_latency.saturating_add(other.mismatch_latency);
        self.failed = self.failed.saturating_add(other.failed);
        self.skipped = self.skipped.saturating_add(other.skipped);
    }
}

impl ServiceWindow {
    /// Adds `other`'s metrics and widens the time range to cover both. On a bucket mismatch
    /// nothing is changed.
    pub fn merge(&mut self, other: &ServiceWindow) -> Result<(), BoundsMismatch> {
        let mut merged = self.clone();
        merged.primary.merge(&other.primary)?;
        merged.shadow.merge(&other.shadow)?;
        merged.mirror.merge(&other.mirror);
        merged.start_ms = merged.start_ms.min(other.start_ms);
        merged.end_ms = merged.end_ms.max(other.end_ms);
        *self = merged;
        Ok(())
    }

    /// The metrics of one variant, to change.
    pub fn variant_mut(&mut self, variant: Variant) -> &mut VariantWindow {
        match variant {
            Variant::Primary => &mut self.primary,
            Variant::Shadow => &mut self.shadow,
        }
    }
}
