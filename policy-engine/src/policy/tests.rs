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

const PROBES: &str = r#"synthetic:
  - name: home
    path: /
    expect:
      status: 200
      body_contains: answered by
    latency_budget: 500ms
    rate: 2/s
  - name: order
    method: POST
    path: /orders
    headers: {content-type: application/json}
    body: '{"sku": 1}'
    expect:
      body_matches: '^2\d\d OK'
"#;

#[test]
fn synthetic_probes_load_and_state_changing_ones_need_an_isolated_shadow() {
    // GOOD has 16 lines: the probes start on line 17, the POST method is on line 26.
    let text = format!("{GOOD}{PROBES}");
    assert_eq!(problems(&text), vec![(26, 13, "isolation")]);
    let message = parse(&text).unwrap_err()[0].message.clone();
    assert!(
        message.contains("POST") && message.contains("isolated"),
        "{message}"
    );
    let isolated = format!("{text}isolation:\n  isolated: true\n");
    let p = parse(&isolated).unwrap();
    assert!(p.isolation.isolated);
    assert_eq!(p.synthetic.len(), 2);
    let home = &p.synthetic[0];
    assert_eq!(
        (
            home.method.as_str(),
            home.status,
            home.latency_budget_ms,
            home.every_ms
        ),
        ("GET", 200, 500, 500)
    );
    assert!(home.judge(200, b"200 OK answered by v1", 3).is_ok());
    assert!(home.judge(200, b"wrong", 3).is_err());
    let order = &p.synthetic[1];
    assert!(!order.is_safe());
    assert!(
        order.judge(201, b"201 OK", 3).is_err(),
        "status 200 by default"
    );
    assert!(order.judge(200, b"200 OK", 3).is_ok());
    assert_eq!(
        order.headers,
        vec![("content-type".into(), "application/json".into())]
    );

    let bad = format!("{GOOD}{PROBES}")
        .replace("rate: 2/s", "rate: 50/s")
        .replace("path: /orders", "path: orders")
        .replace(r"'^2\d\d OK'", "'(unclosed'")
        .replace("method: POST", "method: GET");
    assert_eq!(
        problems(&bad),
        vec![(24, 11, "rate"), (27, 11, "path"), (31, 21, "regex")]
    );
}

#[test]
fn rules_on_synthetic_and_resources_are_checked_against_the_sections() {
    let rule = |when: &str| GOOD.replace("when: compare.errors.worse", &format!("when: {when}"));
    // No probes: a rule on synthetic.* reads nothing.
    assert_eq!(
        problems(&rule("synthetic.shadow.failed > 0")),
        vec![(15, 11, "synthetic")]
    );
    let with_probes = format!(
        "{}{PROBES}isolation: {{ isolated: true }}\n",
        rule("synthetic.shadow.failed > 0")
    );
    assert_eq!(
        parse(&with_probes).unwrap().rules[0].fields,
        vec!["synthetic.shadow.failed"]
    );
    // Resources: the fields are the query names, built-in and custom.
    let resources = "resources:\n  prometheus: http://127.0.0.1:9090\n  queries: {fds: 'sum(process_open_fds{ {{selector}} })'}\n";
    let ok = format!(
        "{}{resources}",
        rule("shadow.resources.cpu > 1.5 * primary.resources.cpu && shadow.resources.fds > 10.0")
    );
    assert!(parse(&ok).is_ok(), "{:?}", parse(&ok).err());
    let unknown = format!("{}{resources}", rule("shadow.resources.gpu > 1.0"));
    assert_eq!(problems(&unknown), vec![(15, 28, "unknown_reference")]);
    let without = rule("shadow.resources.cpu > 1.0");
    assert_eq!(problems(&without)[0].2, "unknown_reference");
}

#[test]
fn sections_are_checked_where_they_are_written() {
    let alerts =
        format!("{GOOD}alerts:\n  sinks:\n    - kind: slack\n      url: ftp://hooks.example/x\n");
    let found = parse(&alerts).unwrap_err();
    assert_eq!((found[0].position.line, found[0].code), (18, "section"));
    assert!(found[0].message.contains("ftp"), "{}", found[0].message);
    let good_alerts = format!(
        "{GOOD}alerts:\n  sinks:\n    - kind: pagerduty\n      routing_key: {{env: PD_KEY}}\n"
    );
    assert_eq!(parse(&good_alerts).unwrap().alerts.unwrap().sinks.len(), 1);
    let unknown = format!("{GOOD}alerts:\n  sinks: []\n  retries: 3\n");
    assert_eq!(problems(&unknown)[0].2, "unknown_field");
    let resources = format!("{GOOD}resources:\n  prometheus: http://p:9090\n  window: soon\n");
    let found = parse(&resources).unwrap_err();
    assert!(
        found[0].message.contains("resources.window"),
        "{}",
        found[0].message
    );
    let hosts = format!("{GOOD}hosts:\n  inventory: inv.yaml\n  size: 0\n");
    assert_eq!(problems(&hosts), vec![(18, 3, "section")]);
}

#[test]
fn a_backend_the_shadow_shares_with_the_primary_is_refused_naming_it() {
    let text = format!(
        "{GOOD}isolation:\n  backends:\n    - name: orders-db\n      primary: [db-1.internal:5432]\n      shadow: [db-sandbox.internal:5432, DB-1.internal:5432]\n"
    );
    let found = parse(&text).unwrap_err();
    assert_eq!(
        (
            found[0].position.line,
            found[0].position.column,
            found[0].code
        ),
        (21, 42, "isolation")
    );
    assert!(
        found[0].message.contains("DB-1.internal:5432"),
        "{}",
        found[0].message
    );
    let ok = text.replace(", DB-1.internal:5432", "");
    let p = parse(&ok).unwrap();
    assert_eq!(
        p.isolation.backends[0].shadow,
        vec!["db-sandbox.internal:5432"]
    );
    assert!(!p.isolation.isolated);
}

#[test]
fn check_refusal_counts_lines_as_yaml_does() {
    let at = |line, column| Problem::new(Position { line, column }, "yaml", "broken");
    // Four lines for YAML (each lone `\r` ends one), one for `str::lines`.
    let text = "service: a\r\r\rprimary: [";
    assert_eq!(check_refusal(text, &[at(1, 1), at(4, 5)]), Ok(()));
    assert_eq!(
        check_refusal(text, &[at(5, 1)]),
        Ok(()),
        "one line of slack"
    );
    for wrong in [at(6, 1), at(0, 1), at(1, 0)] {
        let refused = check_refusal(text, &[at(1, 1), wrong.clone()]);
        assert!(refused.is_err(), "{wrong:?} passed");
    }
    assert_eq!(
        check_refusal(text, &[]),
        Err("refused without a reason".to_string())
    );
    let problems = parse(text).expect_err("an unclosed flow sequence");
    assert_eq!(problems[0].position.line, 4, "{problems:?}");
    assert_eq!(check_refusal(text, &problems), Ok(()), "{problems:?}");
}
