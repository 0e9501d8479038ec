//! The judges the benchmark compares, each fed one interval at a time as a live engine would
//! be, each returning an evidence score after every look (higher is stronger evidence that the
//! shadow is worse; a judge alarms once its score reaches its threshold).
//!
//! - [`DoppelJudge`]: doppel's two sequential tests, errors and latency, each at `alpha / 2`
//!   (so together at most `alpha`); score `-ln(always-valid p)` of the stronger one.
//! - [`KayentaJudge`]: Kayenta's Mann-Whitney classifier, re-run every interval on all data
//!   since the start (Spinnaker's default, growing analysis window): per-request latency
//!   histograms, and errors as 0/1 outcomes. Kayenta flags a metric "high" when the 98% confidence
//!   interval of the shift lies above 0, that is a one-sided test at 1%; score `-ln(p)` of the
//!   smaller one-sided p-value of the two metrics.
//! - [`ArgoJudge`]: an Argo Rollouts analysis: every interval, one measurement of the shadow
//!   alone over the last few intervals (like a Prometheus `rate(...[1m])`) against fixed
//!   limits on its error rate and p95 latency; score is the count of failed measurements, and
//!   the analysis fails once more than `failure_limit` have failed.

use std::collections::VecDeque;

use super::{Interval, Scenario};
use crate::metrics::Histogram;
use crate::stats::mann_whitney::{RankSums, rank_sums};
use crate::stats::proportions::Counts;
use crate::stats::quantiles::quantile;
use crate::stats::sequential::{ErrorRateSequential, LatencySequential, SequentialConfig};
use crate::stats::StatsError;
use crate::stats::special::norm_sf;

/// Something that looks at every interval and scores the evidence against the shadow.
pub trait Judge {
    /// Takes one more interval and returns the evidence score after it.
    fn look(&mut self, interval: &Interval) -> f64;
}

/// doppel's always-valid tests.
pub struct DoppelJudge {
    errors: ErrorRateSequential,
    latency: LatencySequential,
}

impl DoppelJudge {
    /// Both tests at `alpha / 2`.
    pub fn new(alpha: f64) -> Result<Self, StatsError> {
        let half = alpha / 2.0;
        Ok(DoppelJudge {
            errors: ErrorRateSequential::new(SequentialConfig::errors(half))?,
            latency: LatencySequential::new(SequentialConfig::latency(half))?,
        })
    }

    /// The score at which it alarms: `ln(2 / alpha)`.
    pub fn threshold(alpha: f64) -> f64 {
        (2.0 / alpha).ln()
    }
}

impl Judge for DoppelJudge {
    fn look(&mut self, i: &Interval) -> f64 {
        let e = self.errors.observe(i.primary, i.shadow).map_or(1.0, |r| r.p_value);
        let l = self
            .latency
            .observe(&i.primary_latency, &i.shadow_latency)
            .map_or(1.0, |r| r.p_value);
        -(e.min(l)).ln()
    }
}

/// The Kayenta-style Mann-Whitney judge on cumulative data.
#[derive(Default)]
pub struct KayentaJudge {
    primary: Counts,
    shadow: Counts,
    primary_latency: Option<Histogram>,
    shadow_latency: Option<Histogram>,
}

impl KayentaJudge {
    /// Its own threshold: one-sided p below 1% (a 98% two-sided interval above 0).
    pub fn threshold() -> f64 {
        -(0.01f64).ln()
    }
}

/// The one-sided "first sample larger" p-value with continuity correction.
fn p_greater(r: &RankSums) -> f64 {
    if r.variance <= 0.0 {
        return 1.0;
    }
    norm_sf((r.u - r.mean - 0.5) / r.variance.sqrt()).min(1.0)
}

fn add(acc: &mut Option<Histogram>, h: &Histogram) {
    match acc {
        Some(a) => {
            for (c, w) in a.counts.iter_mut().zip(&h.counts) {
                *c += w;
            }
            a.sum += h.sum;
        }
        None => *acc = Some(h.clone()),
    }
}

impl Judge for KayentaJudge {
    fn look(&mut self, i: &Interval) -> f64 {
        self.primary.requests += i.primary.requests;
        self.primary.errors += i.primary.errors;
        self.shadow.requests += i.shadow.requests;
        self.shadow.errors += i.shadow.errors;
        add(&mut self.primary_latency, &i.primary_latency);
        add(&mut self.shadow_latency, &i.shadow_latency);
        let outcomes = |c: Counts| [c.requests - c.errors, c.errors];
        let errors = p_greater(&rank_sums(&outcomes(self.shadow), &outcomes(self.primary)));
        let latency = match (&self.primary_latency, &self.shadow_latency) {
            (Some(p), Some(s)) => p_greater(&rank_sums(&s.counts, &p.counts)),
            _ => 1.0,
        };
        -(errors.min(latency)).ln()
    }
}

/// Limits of the Argo-style analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArgoConfig {
    /// A measurement fails when the shadow's error rate is above this.
    pub max_error_rate: f64,
    /// ... or its p95 latency (ms) is above this.
    pub max_p95_ms: f64,
    /// Intervals each measurement covers.
    pub window: usize,
    /// The analysis fails once more measurements than this have failed.
    pub failure_limit: u32,
}

impl ArgoConfig {
    /// Limits an operator would write from the primary's known behaviour: error rate 1.5x
    /// the primary's (at least 1%), p95 1.2x the primary's, 6-interval window, failure limit 3.
    pub fn for_scenario(s: &Scenario) -> Self {
        ArgoConfig {
            max_error_rate: (1.5 * s.primary.error_rate).max(0.01),
            max_p95_ms: 1.2 * s.primary.quantile_ms(0.95),
            window: 6,
            failure_limit: 3,
        }
    }

    /// The score at which it alarms.
    pub fn threshold(&self) -> f64 {
        f64::from(self.failure_limit + 1)
    }
}

/// The Argo-Rollouts-style threshold rule.
pub struct ArgoJudge {
    config: ArgoConfig,
    recent: VecDeque<Interval>,
    failures: u32,
}

impl ArgoJudge {
    /// A fresh analysis.
    pub fn new(config: ArgoConfig) -> Self {
        ArgoJudge {
            config,
            recent: VecDeque::new(),
            failures: 0,
        }
    }
}

impl Judge for ArgoJudge {
    fn look(&mut self, i: &Interval) -> f64 {
        self.recent.push_back(i.clone());
        if self.recent.len() > self.config.window {
            self.recent.pop_front();
        }
        let mut counts = Counts::default();
        let mut latency: Option<Histogram> = None;
        for r in &self.recent {
            counts.requests += r.shadow.requests;
            counts.errors += r.shadow.errors;
            add(&mut latency, &r.shadow_latency);
        }
        // No shadow requests in the window: the query returns nothing, no measurement.
        if counts.requests > 0 {
            let p95 = latency
                .as_ref()
                .and_then(|h| quantile(h, 0.95))
                .map_or(0.0, |q| q.value);
            if counts.rate() > self.config.max_error_rate || p95 > self.config.max_p95_ms {
                self.failures += 1;
            }
        }
        f64::from(self.failures)
    }
}
