//! The analysis of a policy over windows: when rules are evaluated, when they fire, and what
//! their decisions do to the rollout.

use doppel_engine::analysis::{Analyzer, End, Evaluation, Outcome};
use doppel_engine::metrics::{ServiceWindow, VariantWindow};
use doppel_engine::policy::{self, Action};

const INTERVAL_MS: u64 = 10_000;

fn policy(analysis_extra: &str, rules: &str, steps: &str) -> policy::Policy {
    let text = format!(
        "service: svc\nprimary:\n  cluster: a\nshadow:\n  cluster: b\ntraffic:\n  mode: split\n  percent: 5\n\
         analysis:\n  interval: 10s\n  min_sample: 100\n  alpha: 0.01\n{analysis_extra}rules:\n{rules}{steps}"
    );
    policy::parse(&text).unwrap_or_else(|p| panic!("{p:?}\n{text}"))
}

fn window(i: u64, primary: (u64, u64), shadow: (u64, u64)) -> ServiceWindow {
    let v = |(requests, errors_5xx): (u64, u64)| VariantWindow {
        requests,
        errors_5xx,
        ..VariantWindow::default()
    };
    ServiceWindow {
        service: "svc".to_string(),
        start_ms: i * INTERVAL_MS,
        end_ms: (i + 1) * INTERVAL_MS,
        primary: v(primary),
        shadow: v(shadow),
        ..ServiceWindow::default()
    }
}

fn run(analyzer: &mut Analyzer, windows: &[ServiceWindow]) -> Vec<Evaluation> {
    windows
        .iter()
        .filter_map(|w| analyzer.push(w).expect("window accepted"))
        .collect()
}

fn fired(evals: &[Evaluation]) -> Vec<(u64, String)> {
    evals
        .iter()
        .flat_map(|e| e.decisions.iter())
        .map(|d| (d.at_ms / INTERVAL_MS, d.rule.clone()))
        .collect()
}

#[test]
fn policy_rules_wait_for_the_minimum_sample_and_say_so() {
    let p = policy(
        "",
        "  - name: many\n    when: shadow.requests > 0\n    action: alert\n",
        "",
    );
    let mut a = Analyzer::new(p).unwrap();
    // The shadow serves 40 requests a window: 100 are reached in the third window.
    let evals = run(
        &mut a,
        &(0..4)
            .map(|i| window(i, (1000, 0), (40, 0)))
            .collect::<Vec<_>>(),
    );
    assert_eq!(evals.len(), 4);
    assert!(
        matches!(&evals[0].outcome, Outcome::Inconclusive { reason, .. } if reason.contains("shadow 40"))
    );
    assert!(matches!(evals[1].outcome, Outcome::Inconclusive { .. }));
    assert!(matches!(evals[2].outcome, Outcome::Evaluated { .. }));
    assert_eq!(fired(&evals), vec![(3, "many".to_string())]);
}

#[test]
fn policy_rule_fires_after_for_intervals_once_per_episode() {
    let rules = "  - name: errs\n    when: shadow.errors > 0\n    action: alert\n    for: 2\n";
    let p = policy("  data: sliding\n  window: 10s\n", rules, "");
    let mut a = Analyzer::new(p).unwrap();
    let errors = [1, 1, 1, 1, 0, 1, 0, 1, 1];
    let windows: Vec<_> = errors
        .iter()
        .enumerate()
        .map(|(i, &e)| window(i as u64, (1000, 0), (200, e)))
        .collect();
    let evals = run(&mut a, &windows);
    // Holds in windows 0-3 (fires at the 2nd), stops at 4, holds at 5 only, then 7-8 (fires at 8).
    assert_eq!(fired(&evals), vec![(2, "errs".into()), (9, "errs".into())]);
}

#[test]
fn policy_shift_waits_for_the_hold_time_and_resets_cumulative_data() {
    let rules = "  - name: up\n    when: compare.errors.sufficient && !compare.errors.worse\n    action: shift\n";
    let steps = "steps:\n  - weight: 10\n    hold: 30s\n  - weight: 50\n    hold: 30s\n";
    let p = policy("", rules, steps);
    let mut a = Analyzer::new(p).unwrap();
    let windows: Vec<_> = (0..12).map(|i| window(i, (1000, 10), (200, 2))).collect();
    let evals = run(&mut a, &windows);
    let shifts = fired(&evals);
    // Step 0 has no hold: the first evaluated interval shifts. Then 30 s at step 1, and the
    // cumulative data restarts, so the minimum sample must be reached again (one window).
    assert_eq!(
        shifts,
        vec![(1, "up".into()), (4, "up".into())],
        "{evals:#?}"
    );
    assert_eq!(evals[3].step, 1, "the step before the interval's decisions");
    assert_eq!(evals[4].step, 2);
    let last = evals.last().unwrap();
    assert!(last.decisions.is_empty(), "no step after the last one");
}

#[test]
fn policy_pause_blocks_shift_and_rollback_ends_the_rollout() {
    let rules = "  - name: up\n    when: rollout.age_s >= 0.0\n    action: shift\n\
                 - name: hold\n    when: shadow.errors > 5\n    action: pause\n\
                 - name: stop\n    when: shadow.errors > 50\n    action: rollback\n";
    let rules = rules.replace("\n- ", "\n  - ");
    let steps = "steps:\n  - weight: 10\n    hold: 1m\n";
    let p = policy("  data: sliding\n  window: 10s\n", &rules, steps);
    let mut a = Analyzer::new(p).unwrap();
    let windows = vec![
        window(0, (1000, 0), (200, 6)), // pause and shift together: pause wins
        window(1, (1000, 0), (200, 0)),
        window(2, (1000, 0), (200, 60)), // rollback
        window(3, (1000, 0), (200, 0)),
    ];
    let evals = run(&mut a, &windows);
    let actions: Vec<(u64, Action, String)> = evals
        .iter()
        .flat_map(|e| e.decisions.iter())
        .map(|d| (d.at_ms / INTERVAL_MS, d.action, d.explanation.clone()))
        .collect();
    assert_eq!(actions.len(), 3, "{actions:#?}");
    assert_eq!((actions[0].0, actions[0].1), (1, Action::Pause));
    assert_eq!((actions[1].0, actions[1].1), (3, Action::Pause));
    assert_eq!((actions[2].0, actions[2].1), (3, Action::Rollback));
    assert!(actions[2].2.contains("rolled back"), "{}", actions[2].2);
    assert_eq!(a.ended(), Some(End::RolledBack));
    assert_eq!(evals.len(), 3, "nothing is evaluated after the rollback");
}

#[test]
fn policy_decision_carries_values_and_statistics() {
    let rules = "  - name: worse\n    when: compare.errors.worse\n    action: rollback\n";
    let p = policy("", rules, "");
    let mut a = Analyzer::new(p).unwrap();
    // A zero-error primary against a shadow failing 10%.
    let windows: Vec<_> = (0..30).map(|i| window(i, (2000, 0), (100, 10))).collect();
    let evals = run(&mut a, &windows);
    let d = evals
        .iter()
        .flat_map(|e| e.decisions.iter())
        .next()
        .expect("rollback");
    assert_eq!(
        d.values["compare.errors.worse"],
        serde_json::Value::Bool(true)
    );
    assert!(
        d.explanation.contains("Fisher exact one-sided p="),
        "{}",
        d.explanation
    );
    assert!(
        d.explanation.contains("mSPRT always-valid p="),
        "{}",
        d.explanation
    );
    assert!(
        d.at_ms <= 5 * INTERVAL_MS,
        "caught within five intervals, at {}",
        d.at_ms
    );
}

#[test]
fn policy_analysis_refuses_windows_out_of_order() {
    let p = policy("", "  - name: r\n    when: true\n    action: alert\n", "");
    let mut a = Analyzer::new(p).unwrap();
    a.push(&window(3, (1, 0), (1, 0))).unwrap();
    let err = a.push(&window(2, (1, 0), (1, 0))).unwrap_err();
    assert_eq!(err.code(), "out_of_order");
}

#[test]
fn policy_synthetic_rules_decide_without_traffic_but_never_step_up() {
    use doppel_engine::context::LookInputs;
    use doppel_engine::synthetic::{SyntheticRecord, SyntheticVariant};
    let rules = "  - name: probe-fails\n    when: synthetic.shadow.failed > 0\n    action: rollback\n\
                 \x20 - name: probes-pass\n    when: synthetic.shadow.passed > 0 && synthetic.shadow.failed == 0\n    action: shift\n\
                 \x20 - name: errors\n    when: shadow.errors > 0\n    action: rollback\n";
    let probes = "synthetic:\n  - name: home\n    path: /\n";
    let p = policy(
        "",
        &format!("{rules}{probes}"),
        "steps:\n  - weight: 50\n    hold: 1s\n",
    );
    let mut a = Analyzer::new(p).unwrap();
    let record = |passed: i64, failed: i64| SyntheticRecord {
        shadow: SyntheticVariant {
            runs: passed + failed,
            passed,
            failed,
            ..SyntheticVariant::default()
        },
        ..SyntheticRecord::default()
    };
    // No traffic at all, probes passing: inconclusive, the shift rule holds but may not fire.
    a.set_inputs(LookInputs {
        synthetic: Some(record(3, 0)),
        resources: None,
    });
    let evals = run(
        &mut a,
        &[window(0, (0, 0), (0, 0)), window(1, (0, 0), (0, 0))],
    );
    assert_eq!(evals.len(), 2);
    for e in &evals {
        assert!(
            matches!(&e.outcome, Outcome::Inconclusive { holding, .. } if holding.is_empty()),
            "shift rules are not evaluated without traffic: {:?}",
            e.outcome
        );
        assert!(e.decisions.is_empty());
        assert_eq!(e.synthetic.as_ref().map(|s| s.shadow.passed), Some(3));
    }
    // A probe fails: the rollback fires at once, still without traffic.
    a.set_inputs(LookInputs {
        synthetic: Some(record(2, 1)),
        resources: None,
    });
    let evals = run(&mut a, &[window(2, (0, 0), (0, 0))]);
    assert_eq!(fired(&evals), vec![(3, "probe-fails".to_string())]);
    assert!(
        evals[0].decisions[0]
            .explanation
            .contains("synthetic: shadow 2/3 passed"),
        "{}",
        evals[0].decisions[0].explanation
    );
    assert_eq!(a.ended(), Some(End::RolledBack));
}
