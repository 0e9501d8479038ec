use super::*;

const GOOD: &str = r#"service: checkout
primary:
  cluster: checkout-v1
shadow:
  cluster: checkout-v2
traffic:
  mode: split
  percent: 1
analysis:
  interval: 10s
  min_sample: 100
  alpha: 0.01
rules:
  - name: errors
    when: compare.errors.worse
    action: rollback
"#;

fn problems(text: &str) -> Vec<(u64, u64, &'static str)> {
    parse(text)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.position.line, p.position.column, p.code))
        .collect()
}

#[test]
fn a_minimal_policy_loads_with_defaults() {
    let p = parse(GOOD).unwrap();
    assert_eq!(p.service, "checkout");
    assert_eq!(p.traffic.mode, Mode::Split);
    assert_eq!(p.analysis.interval_ms, 10_000);
    assert_eq!(p.analysis.data, DataScope::Cumulative);
    assert_eq!(p.rules[0].action, Action::Rollback);
    assert_eq!(p.rules[0].severity, Severity::Critical);
    assert_eq!(p.rules[0].for_intervals, 1);
    assert_eq!(p.rules[0].fields, vec!["compare.errors.worse"]);
}

#[test]
fn cel_errors_point_into_plain_quoted_and_block_scalars() {
    let plain = GOOD.replace("when: compare.errors.worse", "when: compare.errors.wrose");
    assert_eq!(problems(&plain), vec![(15, 26, "unknown_reference")]);
    let quoted = GOOD.replace(
        "when: compare.errors.worse",
        "when: \"compare.errors.wrose\"",
    );
    assert_eq!(problems(&quoted), vec![(15, 27, "unknown_reference")]);
    let block = GOOD.replace(
        "when: compare.errors.worse",
        "when: |\n      shadow.requests > 10 &&\n        compare.errors.wrose",
    );
    assert_eq!(problems(&block), vec![(17, 24, "unknown_reference")]);
}

#[test]
fn value_problems_are_all_reported_in_file_order() {
    let text = GOOD
        .replace("percent: 1", "percent: 120")
        .replace("action: rollback", "action: explode")
        .replace("interval: 10s", "interval: soon");
    assert_eq!(
        problems(&text),
        vec![
            (8, 12, "percent"),
            (10, 13, "duration"),
            (16, 13, "unknown_action")
        ]
    );
}

#[test]
fn structural_problems_point_at_their_values() {
    let no_rules = GOOD.replace(
        "rules:\n  - name: errors\n    when: compare.errors.worse\n    action: rollback\n",
        "rules: []\n",
    );
    assert_eq!(problems(&no_rules), vec![(13, 8, "rules")]);
    let twice = format!("{GOOD}  - name: errors\n    when: shadow.errors > 3\n    action: alert\n");
    assert_eq!(problems(&twice), vec![(17, 11, "duplicate")]);
    let sliding = GOOD.replace("alpha: 0.01", "alpha: 0.01\n  data: sliding");
    assert_eq!(problems(&sliding), vec![(13, 9, "window")]);
    let mirror_in_split = GOOD.replace("percent: 1", "percent: 1\n  mirror:\n    timeout_ms: 0");
    assert_eq!(problems(&mirror_in_split), vec![(7, 9, "mirror")]);
    let same_cluster = GOOD.replace("checkout-v2", "checkout-v1");
    assert_eq!(problems(&same_cluster), vec![(5, 12, "cluster")]);
    let bad_alpha = GOOD.replace("alpha: 0.01", "alpha: 0.9");
    assert_eq!(problems(&bad_alpha), vec![(12, 10, "range")]);
    let for_zero = GOOD.replace("action: rollback", "action: rollback\n    for: 0");
    assert_eq!(problems(&for_zero), vec![(17, 10, "range")]);
}

#[test]
fn mirror_mode_takes_the_filter_ranges() {
    let mirror = GOOD.replace(
        "mode: split\n  percent: 1",
        "mode: mirror\n  percent: 1\n  mirror:\n    timeout_ms: 70000\n    methods: [GET, post]",
    );
    assert_eq!(
        problems(&mirror),
        vec![(10, 17, "range"), (11, 20, "method")]
    );
    let ok = GOOD.replace("mode: split", "mode: mirror");
    let p = parse(&ok).unwrap();
    assert_eq!(p.traffic.mirror, Some(Mirror::default()));
}
