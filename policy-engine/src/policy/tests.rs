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
    let quoted = GOOD.replace("when: compare.errors.worse", "when: \"compare.errors.wrose\"");
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
        vec![(8, 12, "percent"), (10, 13, "duration"), (16, 13, "unknown_action")]
    );
}
