//! The CEL context a rule sees: `primary`, `shadow`, `compare`, `mirror`, `rollout`,
//! `synthetic`.
//!
//! [`RuleContext`] is built once per analysis interval from the analysed window (cumulative or
//! sliding, see [`crate::analysis`]), the statistics of [`crate::stats`] (through [`Comparer`],
//! which also keeps the always-valid sequential tests between intervals) and the rollout's
//! state. Its shape is also the schema the policy checker uses: [`RuleContext::sample`] is a
//! fully populated context, and [`Schema::of`] reads the field tree from it, so the checker,
//! the evaluator and `docs/policy-context.md` (tested against [`Schema::paths`]) cannot drift.
//!
//! What the engine measures itself rather than reads from Envoy comes in through [`LookInputs`]:
//! the synthetic probes' results (`synthetic`) and the Prometheus numbers
//! (`<variant>.resources`, present only for the queries that gave a number).
//!
//! Counts are CEL `int`, rates, latencies, p-values and effects are `double`: CEL compares an
//! int with a double but does not do arithmetic across them (`double(shadow.requests) * 0.5`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::metrics::{Histogram, MirrorWindow, ServiceWindow, VariantWindow};
use crate::resources::ResourceSample;
use crate::stats::mann_whitney::{MannWhitney, mann_whitney};
use crate::stats::proportions::{
    Counts, ErrorRateComparison, ErrorRateConfig, ProportionTest, compare_error_rates,
};
use crate::stats::quantiles::summarize;
use crate::stats::sequential::{
    ErrorRateSequential, LatencySequential, SequentialConfig, SequentialResult,
};
use crate::stats::{Evidence, StatsError};
use crate::synthetic::{SyntheticRecord, SyntheticVariant};

/// The names a rule may start a field path with.
pub const ROOTS: [&str; 6] = [
    "primary",
    "shadow",
    "compare",
    "mirror",
    "rollout",
    "synthetic",
];

/// What the engine measured itself for a look, beside the windows from Envoy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LookInputs {
    /// The synthetic probes' results since the last look (`None`: the policy has none).
    pub synthetic: Option<SyntheticRecord>,
    /// Resource numbers from Prometheus (`None`: the policy queries none).
    pub resources: Option<ResourceSample>,
}

/// Whether a rule reads what the engine measures itself (probes, resources) and nothing of
/// the user traffic (only those and `rollout.*`), so it can be evaluated without traffic.
pub fn traffic_free(fields: &[String]) -> bool {
    let measured = |f: &String| {
        f.starts_with("synthetic.")
            || f.starts_with("primary.resources.")
            || f.starts_with("shadow.resources.")
    };
    fields.iter().any(measured)
        && fields
            .iter()
            .all(|f| measured(f) || f.starts_with("rollout."))
}

/// Everything a rule can read at one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleContext {
    /// The primary's metrics over the analysed data.
    pub primary: VariantContext,
    /// The shadow's metrics over the analysed data.
    pub shadow: VariantContext,
    /// The statistical comparison of the two.
    pub compare: CompareContext,
    /// The mirror comparison's counts (zero outside mirror mode).
    pub mirror: MirrorContext,
    /// Where the rollout stands.
    pub rollout: RolloutContext,
    /// The synthetic probes' results since the last look.
    pub synthetic: SyntheticContext,
}

/// The synthetic probes' results, per variant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SyntheticContext {
    /// Against the primary's hosts.
    pub primary: SyntheticVariant,
    /// Against the shadow's hosts.
    pub shadow: SyntheticVariant,
}

/// One variant's metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VariantContext {
    /// Requests answered.
    pub requests: i64,
    /// Failed requests: 5xx answers plus resets.
    pub errors: i64,
    /// Answers with a 5xx status.
    pub errors_5xx: i64,
    /// Requests without an upstream answer (reset, timeout).
    pub resets: i64,
    /// `errors / requests`, 0 without requests.
    pub error_rate: f64,
    /// Latency in milliseconds.
    pub latency: LatencyContext,
    /// Custom Server-Timing histograms by name (those the policy declares), in milliseconds.
    pub custom: BTreeMap<String, LatencyContext>,
    /// Resource numbers from Prometheus by query name; a query without a number is absent.
    pub resources: BTreeMap<String, f64>,
}

/// A latency distribution's summary, in milliseconds; every value is 0 when `count` is 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyContext {
    /// Observations.
    pub count: i64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
}

/// The statistical comparison, shadow against primary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompareContext {
    /// Error rates.
    pub errors: ErrorsCompare,
    /// Latency distributions.
    pub latency: LatencyCompare,
}

/// Error-rate comparison: is the shadow failing more often?
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorsCompare {
    /// Both variants reached the policy's minimum sample.
    pub sufficient: bool,
    /// The fixed-horizon test: `fisher_exact` or `normal_approx`.
    pub test: String,
    /// One-sided p-value of that test for "the shadow errs more" on the analysed data.
    pub p_value: f64,
    /// Two-sided p-value of the same test.
    pub p_value_two_sided: f64,
    /// Always-valid p-value of the sequential test (mSPRT) over the whole rollout.
    pub sequential_p_value: f64,
    /// Shadow error rate minus primary error rate.
    pub difference: f64,
    /// Lower confidence limit of `difference`.
    pub difference_lower: f64,
    /// Upper confidence limit of `difference`.
    pub difference_upper: f64,
    /// Shadow error rate over primary error rate (1 when neither errs, the largest double
    /// when only the shadow errs).
    pub ratio: f64,
    /// The sequential test says the shadow errs more: `sequential_p_value <= alpha`.
    pub worse: bool,
}

/// Latency comparison: is the shadow slower?
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyCompare {
    /// Both variants reached the policy's minimum sample.
    pub sufficient: bool,
    /// One-sided Mann-Whitney p-value for "the shadow is slower" on the analysed data.
    pub p_value: f64,
    /// Two-sided Mann-Whitney p-value.
    pub p_value_two_sided: f64,
    /// Always-valid p-value of the sequential test (mSPRT) over the whole rollout.
    pub sequential_p_value: f64,
    /// P(a shadow request is slower than a primary one), ties half: 0.5 means no difference.
    pub effect: f64,
    /// Rank-biserial correlation `2 * effect - 1`, in [-1, 1].
    pub rank_biserial: f64,
    /// Hodges-Lehmann shift of the shadow's latency, in milliseconds (bucket resolution).
    pub shift_ms: f64,
    /// The sequential test says the shadow is slower: `sequential_p_value <= alpha`.
    pub slower: bool,
}

/// The mirror comparison's counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MirrorContext {
    /// Copies sent to the shadow.
    pub sent: i64,
    /// Copies whose answer was compared with the primary's.
    pub compared: i64,
    /// Compared copies that differed, by kind.
    pub mismatches: MismatchContext,
    /// `mismatches.total / compared`, 0 when nothing was compared.
    pub mismatch_rate: f64,
    /// Copies that got no answer.
    pub failed: i64,
    /// Chosen requests not copied (method, body, in-flight cap).
    pub skipped: i64,
}

/// Mismatches by kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MismatchContext {
    /// The status class differed.
    pub status: i64,
    /// The body digest differed.
    pub body: i64,
    /// The shadow was slower than the tolerance allows.
    pub latency: i64,
    /// All three added up.
    pub total: i64,
}

/// Where the rollout stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RolloutContext {
    /// 0 while shadowing at `traffic.percent`, then the number of the promotion step (from 1).
    pub step: i64,
    /// The shadow's current share of traffic, in percent.
    pub weight: f64,
    /// Seconds since the current step began.
    pub age_s: f64,
    /// A `pause` rule has frozen the rollout.
    pub paused: bool,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl LatencyContext {
    /// The summary of a histogram (all zero when it is empty).
    pub fn of(h: &Histogram) -> LatencyContext {
        match summarize(h) {
            Some(s) => LatencyContext {
                count: count(s.count),
                p50: s.p50.value,
                p90: s.p90.value,
                p95: s.p95.value,
                p99: s.p99.value,
                mean: s.mean,
            },
            None => LatencyContext::default(),
        }
    }
}

impl VariantContext {
    /// One variant's context from its window; `custom` lists the declared custom metrics
    /// (a declared metric without data reads as zeros).
    pub fn of(w: &VariantWindow, custom: &[String]) -> VariantContext {
        let errors = w.errors_5xx.saturating_add(w.resets);
        VariantContext {
            requests: count(w.requests),
            errors: count(errors),
            errors_5xx: count(w.errors_5xx),
            resets: count(w.resets),
            error_rate: ratio(errors, w.requests),
            latency: LatencyContext::of(&w.latency_ms),
            custom: custom
                .iter()
                .map(|name| {
                    let h = w.custom.get(name).map(LatencyContext::of);
                    (name.clone(), h.unwrap_or_default())
                })
                .collect(),
            resources: BTreeMap::new(),
        }
    }
}

impl MirrorContext {
    /// The mirror context of a window's mirror counts.
    pub fn of(m: &MirrorWindow) -> MirrorContext {
        let total = m
            .mismatch_status
            .saturating_add(m.mismatch_body)
            .saturating_add(m.mismatch_latency);
        MirrorContext {
            sent: count(m.sent),
            compared: count(m.compared),
            mismatches: MismatchContext {
                status: count(m.mismatch_status),
                body: count(m.mismatch_body),
                latency: count(m.mismatch_latency),
                total: count(total),
            },
            mismatch_rate: ratio(total, m.compared),
            failed: count(m.failed),
            skipped: count(m.skipped),
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The error counts the statistics compare: 5xx answers plus resets.
pub fn error_counts(w: &VariantWindow) -> Counts {
    Counts::new(
        w.requests,
        w.errors_5xx.saturating_add(w.resets).min(w.requests),
    )
}

/// The statistics of one evaluation, kept whole for explanations.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The fixed-horizon error-rate test on the analysed data.
    pub errors: ErrorRateComparison,
    /// The sequential error-rate test over the whole rollout.
    pub errors_sequential: SequentialResult,
    /// Mann-Whitney on the analysed latency histograms (`None` without latency data).
    pub latency: Option<MannWhitney>,
    /// The sequential latency test over the whole rollout.
    pub latency_sequential: SequentialResult,
    /// The policy's alpha.
    pub alpha: f64,
}

/// Runs the statistics for a policy: fixed-horizon tests on the analysed data and always-valid
/// sequential tests fed once per interval.
#[derive(Clone, Debug)]
pub struct Comparer {
    alpha: f64,
    min_sample: u64,
    errors_sequential: ErrorRateSequential,
    latency_sequential: LatencySequential,
}

impl Comparer {
    /// A comparer for `alpha` and a minimum sample per variant.
    pub fn new(alpha: f64, min_sample: u64) -> Result<Comparer, StatsError> {
        let errors = SequentialConfig {
            min_samples: min_sample,
            ..SequentialConfig::errors(alpha)
        };
        let latency = SequentialConfig {
            min_samples: min_sample,
            ..SequentialConfig::latency(alpha)
        };
        Ok(Comparer {
            alpha,
            min_sample,
            errors_sequential: ErrorRateSequential::new(errors)?,
            latency_sequential: LatencySequential::new(latency)?,
        })
    }

    /// One look: feeds the data that arrived since the last look (`new`) to the sequential
    /// tests and runs the fixed-horizon tests on `analysed`.
    pub fn look(
        &mut self,
        new: &ServiceWindow,
        analysed: &ServiceWindow,
    ) -> Result<Comparison, StatsError> {
        let errors_sequential = self
            .errors_sequential
            .observe(error_counts(&new.primary), error_counts(&new.shadow))?;
        let latency_sequential = match aligned(&new.primary.latency_ms, &new.shadow.latency_ms) {
            Some((p, s)) => self.latency_sequential.observe(&p, &s)?,
            None => self.latency_sequential.result()?,
        };
        let config = ErrorRateConfig {
            min_requests: self.min_sample,
            ..ErrorRateConfig::default()
        };
        let errors = compare_error_rates(
            error_counts(&analysed.primary),
            error_counts(&analysed.shadow),
            &config,
        )?;
        let latency = match aligned(&analysed.primary.latency_ms, &analysed.shadow.latency_ms) {
            Some((p, s)) if p.total() > 0 || s.total() > 0 => {
                Some(mann_whitney(&p, &s, self.min_sample)?)
            }
            _ => None,
        };
        Ok(Comparison {
            errors,
            errors_sequential,
            latency,
            latency_sequential,
            alpha: self.alpha,
        })
    }
}

/// Both histograms with buckets: an empty one (a variant without traffic) becomes all zeros
/// on the other's bounds. `None` when both are empty.
fn aligned(primary: &Histogram, shadow: &Histogram) -> Option<(Histogram, Histogram)> {
    let zeros = |like: &Histogram| Histogram {
        bounds: like.bounds.clone(),
        counts: vec![0; like.counts.len()],
        sum: 0.0,
    };
    match (primary.is_empty(), shadow.is_empty()) {
        (true, true) => None,
        (true, false) => Some((zeros(shadow), shadow.clone())),
        (false, true) => Some((primary.clone(), zeros(primary))),
        (false, false) => Some((primary.clone(), shadow.clone())),
    }
}

impl Comparison {
    /// The `compare` part of the context.
    pub fn context(&self, min_sample: u64, data: &ServiceWindow) -> CompareContext {
        let e = &self.errors;
        let enough = data.primary.requests >= min_sample && data.shadow.requests >= min_sample;
        let ratio = if e.shadow_rate == 0.0 && e.primary_rate == 0.0 {
            1.0
        } else if e.primary_rate == 0.0 {
            f64::MAX
        } else {
            e.shadow_rate / e.primary_rate
        };
        let errors = ErrorsCompare {
            sufficient: enough && e.evidence.is_sufficient(),
            test: match e.test {
                ProportionTest::FisherExact => "fisher_exact",
                ProportionTest::NormalApprox => "normal_approx",
            }
            .to_string(),
            p_value: e.p_worse,
            p_value_two_sided: e.p_two_sided,
            sequential_p_value: self.errors_sequential.p_value,
            difference: e.difference.estimate,
            difference_lower: e.difference.lower,
            difference_upper: e.difference.upper,
            ratio,
            worse: self.errors_sequential.p_value <= self.alpha,
        };
        let latency = match &self.latency {
            Some(m) => LatencyCompare {
                sufficient: enough && m.evidence.is_sufficient(),
                p_value: m.p_slower,
                p_value_two_sided: m.p_two_sided,
                sequential_p_value: self.latency_sequential.p_value,
                effect: m.cles,
                rank_biserial: m.rank_biserial,
                shift_ms: m.hodges_lehmann,
                slower: self.latency_sequential.p_value <= self.alpha,
            },
            None => LatencyCompare {
                sufficient: false,
                p_value: 1.0,
                p_value_two_sided: 1.0,
                sequential_p_value: self.latency_sequential.p_value,
                effect: 0.5,
                rank_biserial: 0.0,
                shift_ms: 0.0,
                slower: self.latency_sequential.p_value <= self.alpha,
            },
        };
        CompareContext { errors, latency }
    }

    /// What the error statistics say, in one sentence with the numbers.
    pub fn explain_errors(&self) -> String {
        let e = &self.errors;
        let s = &self.errors_sequential;
        let test = match e.test {
            ProportionTest::FisherExact => "Fisher exact",
            ProportionTest::NormalApprox => "two-proportion z",
        };
        format!(
            "errors: shadow {:.3}% vs primary {:.3}% (difference {:+.3} pp, {:.0}% CI [{:+.3}, {:+.3}]); \
             {test} one-sided p={}; mSPRT always-valid p={} (alpha {}){}",
            e.shadow_rate * 100.0,
            e.primary_rate * 100.0,
            e.difference.estimate * 100.0,
            ErrorRateConfig::default().confidence * 100.0,
            e.difference.lower * 100.0,
            e.difference.upper * 100.0,
            fmt_p(e.p_worse),
            fmt_p(s.p_value),
            self.alpha,
            evidence_note(&e.evidence),
        )
    }

    /// What the latency statistics say, in one sentence with the numbers.
    pub fn explain_latency(&self) -> String {
        let s = &self.latency_sequential;
        match &self.latency {
            Some(m) => format!(
                "latency: Mann-Whitney (n shadow {}, primary {}) one-sided p={}, P(shadow slower)={:.3}, \
                 shift {:+.1} ms; mSPRT always-valid p={} (alpha {}){}",
                m.shadow_n,
                m.primary_n,
                fmt_p(m.p_slower),
                m.cles,
                m.hodges_lehmann,
                fmt_p(s.p_value),
                self.alpha,
                evidence_note(&m.evidence),
            ),
            None => format!(
                "latency: no latency data; mSPRT always-valid p={} (alpha {})",
                fmt_p(s.p_value),
                self.alpha
            ),
        }
    }
}

fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

fn evidence_note(e: &Evidence) -> String {
    match e {
        Evidence::Sufficient => String::new(),
        Evidence::Inconclusive(i) => format!("; inconclusive: {}", i.reason),
    }
}

impl RuleContext {
    /// The context of one evaluation.
    pub fn new(
        data: &ServiceWindow,
        comparison: &Comparison,
        min_sample: u64,
        rollout: RolloutContext,
        custom: &[String],
        inputs: &LookInputs,
    ) -> RuleContext {
        let mut primary = VariantContext::of(&data.primary, custom);
        let mut shadow = VariantContext::of(&data.shadow, custom);
        if let Some(r) = &inputs.resources {
            primary.resources = r.primary.values.clone();
            shadow.resources = r.shadow.values.clone();
        }
        let synthetic = inputs
            .synthetic
            .as_ref()
            .map(|s| SyntheticContext {
                primary: s.primary.clone(),
                shadow: s.shadow.clone(),
            })
            .unwrap_or_else(|| SyntheticContext {
                primary: SyntheticVariant {
                    pass_rate: 1.0,
                    ..SyntheticVariant::default()
                },
                shadow: SyntheticVariant {
                    pass_rate: 1.0,
                    ..SyntheticVariant::default()
                },
            });
        RuleContext {
            primary,
            shadow,
            compare: comparison.context(min_sample, data),
            mirror: MirrorContext::of(&data.mirror),
            rollout,
            synthetic,
        }
    }

    /// [`RuleContext::sample_with`] for a policy without resource queries.
    pub fn sample(custom: &[String]) -> RuleContext {
        RuleContext::sample_with(custom, &[])
    }

    /// A context with every field set to a plausible, non-zero value, one entry per declared
    /// custom metric and one per resource query: what `doppel check` evaluates each rule
    /// against.
    pub fn sample_with(custom: &[String], resources: &[String]) -> RuleContext {
        let latency = LatencyContext {
            count: 980,
            p50: 12.5,
            p90: 40.0,
            p95: 55.0,
            p99: 120.0,
            mean: 18.2,
        };
        let variant = |requests: i64, errors: i64| VariantContext {
            requests,
            errors,
            errors_5xx: errors - 1,
            resets: 1,
            error_rate: errors as f64 / requests as f64,
            latency: latency.clone(),
            custom: custom
                .iter()
                .map(|name| (name.clone(), latency.clone()))
                .collect(),
            resources: resources.iter().map(|name| (name.clone(), 0.75)).collect(),
        };
        let synthetic = |passed: i64, failed: i64| SyntheticVariant {
            runs: passed + failed,
            passed,
            failed,
            failing: failed.min(1),
            pass_rate: passed as f64 / (passed + failed) as f64,
            latency_mean_ms: 12.5,
            latency_max_ms: 40.5,
        };
        RuleContext {
            primary: variant(10_000, 100),
            shadow: variant(1_000, 21),
            compare: CompareContext {
                errors: ErrorsCompare {
                    sufficient: true,
                    test: "fisher_exact".to_string(),
                    p_value: 0.0042,
                    p_value_two_sided: 0.0071,
                    sequential_p_value: 0.0081,
                    difference: 0.011,
                    difference_lower: 0.003,
                    difference_upper: 0.02,
                    ratio: 2.1,
                    worse: true,
                },
                latency: LatencyCompare {
                    sufficient: true,
                    p_value: 0.03,
                    p_value_two_sided: 0.06,
                    sequential_p_value: 0.2,
                    effect: 0.56,
                    rank_biserial: 0.12,
                    shift_ms: 3.5,
                    slower: false,
                },
            },
            mirror: MirrorContext {
                sent: 1_000,
                compared: 990,
                mismatches: MismatchContext {
                    status: 3,
                    body: 5,
                    latency: 2,
                    total: 10,
                },
                mismatch_rate: 10.0 / 990.0,
                failed: 10,
                skipped: 4,
            },
            rollout: RolloutContext {
                step: 1,
                weight: 5.0,
                age_s: 120.0,
                paused: false,
            },
            synthetic: SyntheticContext {
                primary: synthetic(6, 0),
                shadow: synthetic(5, 1),
            },
        }
    }

    /// The context as JSON (field paths for explanations are looked up in it).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The context as CEL variables over CEL's standard library: one per root, and one per leaf
    /// field named by its dotted path (`shadow.custom.db.p99`), for speed.
    ///
    /// `cel` 0.15 resolves a qualified name `a.b.c` by trying the variable `a.b.c` first, then
    /// `a.b` with `c` selected on it, then `a` with `b` and `c` selected (see its
    /// `Context::resolve_qualified`). Selecting field by field was most of a rule's cost: with
    /// one lookup of the leaf's own variable instead, a shipped rule takes 0.24 to 0.70 of the
    /// time (BENCHMARKS.md). A leaf variable holds the very value the selection would reach,
    /// and the roots stay bound, so every expression means what it means on
    /// [`RuleContext::to_cel_roots`]: a field that is absent (a resource query without a
    /// number, a custom metric a context lacks) has no leaf variable and resolves through its
    /// root as before (`has()` false, the same missing-key error);
    /// `has()`, indexing (`shadow.custom['db']`), comprehensions and a comprehension variable
    /// named like a root (an inner scope wins over every name of an outer one) go through the
    /// roots too. A key that is not a plain name (empty, or holding a dot, which a qualified
    /// name would split) gets no leaf variable, nor do the fields under it.
    pub fn to_cel(&self) -> Result<cel::Context<'static, 'static>, cel::SerializationError> {
        let mut ctx = cel::Context::with_env(stdlib());
        for (name, value) in self.cel_roots()? {
            bind_leaves(&mut ctx, &mut name.to_owned(), &value);
            ctx.add_variable_from_value(name, value);
        }
        Ok(ctx)
    }

    /// The context as CEL variables, one per root, over CEL's standard library: the plain
    /// form [`RuleContext::to_cel`] must agree with on every expression (tests compare the
    /// two), and the baseline of the CEL benchmarks.
    pub fn to_cel_roots(&self) -> Result<cel::Context<'static, 'static>, cel::SerializationError> {
        // `cel::Context::default()` would build the standard library's environment anew:
        // about 20 times the cost of converting the context itself.
        let mut ctx = cel::Context::with_env(stdlib());
        for (name, value) in self.cel_roots()? {
            ctx.add_variable_from_value(name, value);
        }
        Ok(ctx)
    }

    /// Each root with its CEL value, in [`ROOTS`] order.
    fn cel_roots(&self) -> Result<[(&'static str, cel::Value); 6], cel::SerializationError> {
        Ok([
            ("primary", cel::to_value(&self.primary)?),
            ("shadow", cel::to_value(&self.shadow)?),
            ("compare", cel::to_value(&self.compare)?),
            ("mirror", cel::to_value(&self.mirror)?),
            ("rollout", cel::to_value(&self.rollout)?),
            ("synthetic", cel::to_value(&self.synthetic)?),
        ])
    }
}

/// Binds every leaf under `value` (a map) as a variable named by its dotted path from `path`:
/// see [`RuleContext::to_cel`]. `path` is restored before returning.
fn bind_leaves(ctx: &mut cel::Context<'static, 'static>, path: &mut String, value: &cel::Value) {
    let cel::Value::Map(map) = value else {
        return;
    };
    let len = path.len();
    for (key, value) in map.map.iter() {
        let cel::objects::Key::String(key) = key else {
            continue;
        };
        if key.is_empty() || key.contains('.') {
            continue;
        }
        path.push('.');
        path.push_str(key);
        if matches!(value, cel::Value::Map(_)) {
            bind_leaves(ctx, path, value);
        } else {
            ctx.add_variable_from_value(path.as_str(), value.clone());
        }
        path.truncate(len);
    }
}

/// CEL's standard library (functions, macros, types), built once and shared by every context:
/// it is immutable, and the same for every rule.
fn stdlib() -> Arc<cel::Env> {
    static STDLIB: OnceLock<Arc<cel::Env>> = OnceLock::new();
    Arc::clone(STDLIB.get_or_init(|| Arc::new(cel::Env::stdlib())))
}

/// The type of a context field, as the checker sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldType {
    /// CEL `bool`.
    Bool,
    /// CEL `int`.
    Int,
    /// CEL `double`.
    Double,
    /// CEL `string`.
    String,
    /// A map with known keys.
    Object(BTreeMap<String, FieldType>),
}

impl FieldType {
    /// The CEL name of the type.
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::String => "string",
            FieldType::Object(_) => "map",
        }
    }

    fn of(value: &serde_json::Value) -> FieldType {
        use serde_json::Value;
        match value {
            Value::Bool(_) => FieldType::Bool,
            Value::Number(n) if n.is_f64() => FieldType::Double,
            Value::Number(_) => FieldType::Int,
            Value::Object(fields) => FieldType::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), FieldType::of(v)))
                    .collect(),
            ),
            Value::String(_) | Value::Null | Value::Array(_) => FieldType::String,
        }
    }
}

/// The field tree of the context for a policy's custom metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    /// The root variables and their fields.
    pub roots: BTreeMap<String, FieldType>,
}

impl Schema {
    /// The schema of the context for a policy declaring `custom` metrics and no resources.
    pub fn of(custom: &[String]) -> Schema {
        Schema::with(custom, &[])
    }

    /// The schema of the context for a policy declaring `custom` metrics and `resources`
    /// queries.
    pub fn with(custom: &[String], resources: &[String]) -> Schema {
        let roots = match FieldType::of(&RuleContext::sample_with(custom, resources).to_json()) {
            FieldType::Object(roots) => roots,
            _ => BTreeMap::new(),
        };
        Schema { roots }
    }

    /// Every leaf field path with its type, sorted (`compare.errors.p_value: double`).
    pub fn paths(&self) -> Vec<(String, &'static str)> {
        fn walk(prefix: &str, t: &FieldType, out: &mut Vec<(String, &'static str)>) {
            match t {
                FieldType::Object(fields) => {
                    for (name, t) in fields {
                        walk(&format!("{prefix}.{name}"), t, out);
                    }
                }
                leaf => out.push((prefix.to_string(), leaf.name())),
            }
        }
        let mut out = Vec::new();
        for (name, t) in &self.roots {
            walk(name, t, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_context_schema_lists_every_root_and_custom_metrics() {
        let schema = Schema::of(&["db".to_string()]);
        let roots: Vec<_> = schema.roots.keys().map(String::as_str).collect();
        let mut expected = ROOTS.to_vec();
        expected.sort_unstable();
        assert_eq!(roots, expected);
        let paths = schema.paths();
        assert!(paths.contains(&("shadow.custom.db.p99".to_string(), "double")));
        assert!(paths.contains(&("primary.requests".to_string(), "int")));
        assert!(paths.contains(&("compare.errors.worse".to_string(), "bool")));
    }

    #[test]
    fn policy_context_sample_evaluates_in_cel() {
        let ctx = RuleContext::sample(&[]).to_cel().unwrap();
        let program = cel::Program::compile(
            "shadow.error_rate > primary.error_rate && compare.errors.worse && rollout.step == 1",
        )
        .unwrap();
        assert_eq!(program.execute(&ctx), Ok(cel::Value::Bool(true)));
    }
}
