//! The benchmark harness: many seeded runs per scenario, every judge fed the same intervals,
//! thresholds calibrated on separate A/A runs, and the markdown table.
//!
//! Fair calibration: each judge alarms when its running maximum score reaches a threshold.
//! Equal false-alarm rates are obtained two ways, both from A/A runs with the same traffic and
//! length as the scenario and seeds of their own (never the runs evaluated):
//! - doppel at its nominal threshold `ln(2 / alpha)` against the Kayenta-style judge with its
//!   per-look threshold raised until its A/A false-alarm rate is `alpha` ("calibrated"). That
//!   judge then knows the run's length in advance, which a live engine does not.
//! - the Kayenta-style judge as configured (98%) against doppel with its threshold lowered
//!   until its A/A false-alarm rate equals the one the Kayenta-style judge showed on the
//!   calibration runs ("doppel at Kayenta's rate").

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::judges::{ArgoConfig, ArgoJudge, DoppelJudge, Judge, KayentaJudge};
use super::{Scenario, Simulator, VariantModel};
use crate::stats::StatsError;

/// The judges in table order.
pub const JUDGES: [&str; 5] = [
    "doppel",
    "doppel-at-kayenta-rate",
    "kayenta",
    "kayenta-calibrated",
    "argo",
];

/// One run: cumulative shadow requests and each judge's running maximum score per look
/// (the calibrated Kayenta shares the Kayenta trace).
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Shadow requests seen up to and including each look.
    pub shadow_requests: Vec<u64>,
    /// Running maximum score per look: doppel, kayenta, argo.
    pub scores: [Vec<f64>; 3],
}

impl Trace {
    /// The first look (0-based) at which judge `j`'s running score reaches `threshold`.
    pub fn first_alarm(&self, j: usize, threshold: f64) -> Option<usize> {
        // Running maxima are sorted, so a binary search finds the first crossing.
        let s = &self.scores[j];
        let i = s.partition_point(|&v| v < threshold);
        (i < s.len()).then_some(i)
    }
}

/// Simulates one run and feeds every judge.
pub fn run(scenario: &Scenario, alpha: f64, seed: u64) -> Result<Trace, StatsError> {
    let sim = Simulator::new(scenario.clone());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut doppel = DoppelJudge::new(alpha)?;
    let mut kayenta = KayentaJudge::default();
    let mut argo = ArgoJudge::new(ArgoConfig::for_scenario(scenario));
    let n = scenario.intervals;
    let mut trace = Trace {
        shadow_requests: Vec::with_capacity(n),
        scores: [Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n)],
    };
    let mut requests = 0;
    let mut best = [0.0f64; 3];
    for _ in 0..n {
        let interval = sim.interval(&mut rng);
        requests += interval.shadow.requests;
        trace.shadow_requests.push(requests);
        let scores = [
            doppel.look(&interval),
            kayenta.look(&interval),
            argo.look(&interval),
        ];
        for (j, s) in scores.into_iter().enumerate() {
            best[j] = best[j].max(s);
            trace.scores[j].push(best[j]);
        }
    }
    Ok(trace)
}

/// Runs `runs` seeded runs (seeds `base_seed`, `base_seed + 1`, ...).
pub fn runs(scenario: &Scenario, alpha: f64, runs: usize, base_seed: u64) -> Result<Vec<Trace>, StatsError> {
    (0..runs as u64).map(|i| run(scenario, alpha, base_seed.wrapping_add(i))).collect()
}

/// The same scenario with the shadow behaving exactly like the primary.
pub fn a_a(scenario: &Scenario) -> Scenario {
    Scenario {
        name: format!("{} (A/A)", scenario.name),
        regression: false,
        shadow: scenario.primary,
        ..scenario.clone()
    }
}

/// The smallest threshold at which at most `rate` of the runs alarm for judge `j`.
pub fn calibrate(traces: &[Trace], j: usize, rate: f64) -> f64 {
    let mut finals: Vec<f64> = traces
        .iter()
        .filter_map(|t| t.scores[j].last().copied())
        .collect();
    finals.sort_by(|a, b| b.total_cmp(a));
    let allowed = (rate * finals.len() as f64).floor() as usize;
    finals.get(allowed).map_or(0.0, |&v| v.next_up())
}

/// How one judge did on one scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Fraction of runs with an alarm (false alarms on A/A, detections otherwise).
    pub alarm_rate: f64,
    /// Median shadow requests before the alarm, over all runs (a run without alarm counts as
    /// never); `None` when fewer than half the runs alarmed.
    pub median_requests: Option<u64>,
    /// Median looks before the alarm, same convention.
    pub median_looks: Option<usize>,
}

/// Scores judge `j` on `traces` at `threshold`.
pub fn outcome(traces: &[Trace], j: usize, threshold: f64) -> Outcome {
    let mut at: Vec<Option<(u64, usize)>> = traces
        .iter()
        .map(|t| t.first_alarm(j, threshold).map(|i| (t.shadow_requests[i], i + 1)))
        .collect();
    let alarms = at.iter().filter(|a| a.is_some()).count();
    // None sorts first; put "never" last instead.
    at.sort_by_key(|a| a.map_or((u64::MAX, usize::MAX), |x| x));
    let median = at.get(traces.len() / 2).copied().flatten();
    Outcome {
        alarm_rate: alarms as f64 / traces.len().max(1) as f64,
        median_requests: median.map(|m| m.0),
        median_looks: median.map(|m| m.1),
    }
}

/// The judges' outcomes on one scenario, in [`JUDGES`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// Outcomes in [`JUDGES`] order.
    pub outcomes: [Outcome; 5],
    /// The calibrated Kayenta threshold, as a one-sided p-value per look.
    pub kayenta_calibrated_p: f64,
    /// The Kayenta-style judge's (98%) false-alarm rate on the calibration A/A runs.
    pub kayenta_calibration_rate: f64,
}

/// Evaluates one scenario: A/A calibration runs, then `n` evaluation runs.
pub fn evaluate(scenario: &Scenario, alpha: f64, n: usize, seed: u64) -> Result<Row, StatsError> {
    let calibration = runs(&a_a(scenario), alpha, n, seed ^ 0x5eed_ca11_b7a7_e000)?;
    let kayenta_threshold = calibrate(&calibration, 1, alpha);
    let kayenta_rate = outcome(&calibration, 1, KayentaJudge::threshold()).alarm_rate;
    let doppel_threshold = calibrate(&calibration, 0, kayenta_rate);
    let traces = runs(scenario, alpha, n, seed)?;
    let argo = ArgoConfig::for_scenario(scenario).threshold();
    Ok(Row {
        outcomes: [
            outcome(&traces, 0, DoppelJudge::threshold(alpha)),
            outcome(&traces, 0, doppel_threshold),
            outcome(&traces, 1, KayentaJudge::threshold()),
            outcome(&traces, 1, kayenta_threshold),
            outcome(&traces, 2, argo),
        ],
        kayenta_calibrated_p: (-kayenta_threshold).exp(),
        kayenta_calibration_rate: kayenta_rate,
        scenario: scenario.clone(),
    })
}

/// The scenarios of BENCHMARKS.md: 10 s intervals, 2000 requests per interval (200 rps).
pub fn scenarios() -> Vec<Scenario> {
    let base = VariantModel {
        error_rate: 0.01,
        median_ms: 40.0,
        sigma: 0.6,
    };
    let scenario = |name: &str, share: f64, intervals: usize, primary: VariantModel, shadow: VariantModel| Scenario {
        name: name.to_string(),
        regression: primary != shadow,
        requests_per_interval: 2000,
        shadow_share: share,
        intervals,
        primary,
        shadow,
    };
    let hour = 360;
    let zero = VariantModel { error_rate: 0.0, ..base };
    vec![
        scenario("A/A, 1% traffic", 0.01, hour, base, base),
        scenario("errors 1% -> 2%, 1% traffic", 0.01, hour, base, VariantModel { error_rate: 0.02, ..base }),
        scenario("latency +10%, 1% traffic", 0.01, hour, base, VariantModel { median_ms: 44.0, ..base }),
        scenario("latency variance only (sigma 0.6 -> 0.9), 1% traffic", 0.01, hour, base, VariantModel { sigma: 0.9, ..base }),
        scenario("zero-error primary, shadow fails 5%, 1% traffic", 0.01, hour, zero, VariantModel { error_rate: 0.05, ..zero }),
 scenario("errors 1% -> 2%, 1% traffic, 6 h", 0.01, 6 * hour, base, VariantModel { error_rate: 0.02, ..base }),
        scenario("A/A, 0.1% traffic, 6 h", 0.001, 6 * hour, base, base),
        scenario("errors 1% -> 2%, 0.1% traffic, 6 h", 0.001, 6 * hour, base, VariantModel { error_rate: 0.02, ..base }),
    ]
}

fn cell(o: &Outcome, regression: bool) -> String {
    let rate = format!("{:.1}%", 100.0 * o.alarm_rate);
    if !regression {
        return rate;
    }
    match o.median_requests {
        Some(r) => format!("{rate} / {r}"),
        None => format!("{rate} / never"),
    }
}

/// The markdown table: per scenario and judge, the alarm rate and (for regressions) the
/// median shadow requests before detection.
pub fn markdown(rows: &[Row], alpha: f64, n: usize) -> String {
    let mut out = format!(
        "| scenario | doppel (alpha {a}) | doppel at Kayenta-style's false-alarm rate | Kayenta-style (98%) | Kayenta-style calibrated to {a} false alarms | Argo-style threshold |\n|---|---|---|---|---|---|\n",
        a = alpha
    );
    for r in rows {
        out.push_str(&format!("| {} |", r.scenario.name));
        for o in &r.outcomes {
            out.push_str(&format!(" {} |", cell(o, r.scenario.regression)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{n} runs per scenario (and {n} A/A calibration runs). A/A rows: false-alarm rate over the whole run. Other rows: detection rate / median shadow requests before the alarm.\n"
    ));
    out.push_str("Calibrated Kayenta-style per-look p-value thresholds: ");
    let cal: Vec<String> = rows
        .iter()
        .map(|r| format!("{}: {:.2e}", r.scenario.name, r.kayenta_calibrated_p))
        .collect();
    out.push_str(&cal.join("; "));
    out.push('\n');
    out
}
