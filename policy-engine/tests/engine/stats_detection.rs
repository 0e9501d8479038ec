//! The detection benchmark's must-shows, on smaller seeded runs than BENCHMARKS.md (the full
//! table: `cargo run --release -p doppel-policy-engine --example detection`).
//!
//! Traffic: a 20 rps service (200 requests per 10 s interval), 1% of it to the shadow (two
//! shadow requests per interval), looked at every interval for 4 hours (1440 looks), judged on
//! error rates alone (latency is covered by the benchmark table; it is slow to simulate in a
//! debug build).

use doppel_engine::stats::sim::bench::{
    BASELINE, HOUR, a_a, calibrate, errors_only, outcome, runs, scenario,
};
use doppel_engine::stats::sim::judges::{DoppelJudge, KayentaJudge};
use doppel_engine::stats::sim::{Scenario, VariantModel};

const ALPHA: f64 = 0.01;
const RUNS: usize = 150;
const DOPPEL: usize = 0;
const KAYENTA: usize = 1;

fn low_traffic(name: &str, primary: VariantModel, shadow: VariantModel) -> Scenario {
    errors_only(scenario(name, 200, 0.01, 4 * HOUR, primary, shadow))
}

#[test]
fn stats_detection_sequential_keeps_alpha_where_kayenta_rerun_does_not() {
    let aa = low_traffic("A/A", BASELINE, BASELINE);
    let traces = runs(&aa, ALPHA, RUNS, 11).expect("valid scenario");
    let doppel = outcome(&traces, DOPPEL, DoppelJudge::threshold(ALPHA, false));
    let kayenta = outcome(&traces, KAYENTA, KayentaJudge::threshold());
    eprintln!("A/A false alarms: doppel {doppel:?}, Kayenta-style {kayenta:?}");
    assert!(
        doppel.alarm_rate <= ALPHA,
        "doppel's false-alarm rate {} exceeds its alpha {ALPHA} over {RUNS} A/A runs",
        doppel.alarm_rate
    );
    assert!(
        kayenta.alarm_rate > 5.0 * ALPHA,
        "the re-run Kayenta-style judge kept its false alarms at {} (expected far above {ALPHA})",
        kayenta.alarm_rate
    );
}

#[test]
fn stats_detection_doppel_needs_fewer_requests_than_kayenta_at_equal_false_alarms() {
    let worse = low_traffic(
        "errors 1% -> 2%",
        BASELINE,
        VariantModel {
            error_rate: 0.02,
            ..BASELINE
        },
    );
    // The Kayenta-style judge's threshold, raised until it alarms on ALPHA of A/A runs of the
    // same length (seeds of their own): it gets to know the horizon, doppel does not.
    let calibration = runs(&a_a(&worse), ALPHA, RUNS, 1_000_000).expect("valid scenario");
    let kayenta_threshold = calibrate(&calibration, KAYENTA, ALPHA);
    let kayenta_aa = outcome(&calibration, KAYENTA, kayenta_threshold).alarm_rate;
    let doppel_aa = outcome(&calibration, DOPPEL, DoppelJudge::threshold(ALPHA, false)).alarm_rate;
    assert!(
        kayenta_aa <= ALPHA && doppel_aa <= ALPHA,
        "{kayenta_aa} {doppel_aa}"
    );

    let traces = runs(&worse, ALPHA, RUNS, 2_000_000).expect("valid scenario");
    let doppel = outcome(&traces, DOPPEL, DoppelJudge::threshold(ALPHA, false));
    let kayenta = outcome(&traces, KAYENTA, kayenta_threshold);
    eprintln!(
        "1% -> 2%: doppel {doppel:?}, calibrated Kayenta-style {kayenta:?} (threshold p {:.2e})",
        (-kayenta_threshold).exp()
    );
    let doppel_requests = doppel.median_requests.expect("doppel detects in most runs");
    assert!(
        doppel.alarm_rate >= kayenta.alarm_rate,
        "doppel detected {} of runs, Kayenta-style {}",
        doppel.alarm_rate,
        kayenta.alarm_rate
    );
    assert!(
        kayenta.median_requests.is_none_or(|k| doppel_requests < k),
        "doppel needed {doppel_requests} shadow requests, the calibrated Kayenta-style judge {:?}",
        kayenta.median_requests
    );
}

#[test]
fn stats_detection_catches_a_failing_shadow_beside_a_zero_error_primary() {
    let zero = VariantModel {
        error_rate: 0.0,
        ..BASELINE
    };
    let failing = low_traffic(
        "zero-error primary",
        zero,
        VariantModel {
            error_rate: 0.05,
            ..zero
        },
    );
    let traces = runs(&failing, ALPHA, RUNS / 2, 3_000_000).expect("valid scenario");
    let doppel = outcome(&traces, DOPPEL, DoppelJudge::threshold(ALPHA, false));
    assert!(
        doppel.alarm_rate >= 0.99,
        "caught in only {} of runs",
        doppel.alarm_rate
    );
    let requests = doppel.median_requests.expect("caught");
    assert!(requests <= 300, "took {requests} shadow requests");
}
