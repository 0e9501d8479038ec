//! Synthetic probes and alerts end to end: the real `doppel serve`, two demo upstreams playing
//! primary and shadow, no Envoy and no user traffic. The engine's own probes are the only
//! requests the upstreams see; a shadow answering the wrong body must be caught by a rule on
//! `synthetic.shadow.failed`, and alert receivers that fail twice still get one trigger and one
//! resolve each.

use std::path::Path;
use std::time::Duration;

use doppel_tests::alert_receiver::AlertReceiver;
use doppel_tests::load::HttpClient;
use doppel_tests::procs::RunDir;
use doppel_tests::rollout_support::{Engine, eventually, free_port};
use doppel_tests::upstream::DemoUpstream;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A policy whose one probe expects the demo upstream's normal body, with `rules` and `extra`
/// sections appended.
fn policy(rules: &str, extra: &str) -> String {
    format!(
        "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
         traffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 1s\n  min_sample: 10\n  alpha: 0.01\n\
         synthetic:\n  - name: home\n    path: /cart?probe=1\n    expect:\n      status: 200\n      body_matches: '^200 OK answered by v[12]'\n    latency_budget: 900ms\n    rate: 4/s\n\
         rules:\n{rules}{extra}"
    )
}

fn write_setup(dir: &Path, policy: &str, primary: &DemoUpstream, shadow: &DemoUpstream) {
    std::fs::write(dir.join("policy.yaml"), policy).expect("policy file");
    let config = format!(
        "steering: filter_only\nnodes: [synthetic-test]\nservices:\n  - policy: policy.yaml\n    endpoints:\n      checkout-v1: [\"{}\"]\n      checkout-v2: [\"{}\"]\n",
        primary.addr(),
        shadow.addr()
    );
    std::fs::write(dir.join("serve.yaml"), config).expect("serve config");
}

fn start_engine(dir: &Path) -> Engine {
    Engine::start(
        dir,
        &dir.join("serve.yaml"),
        &dir.join("state.redb"),
        free_port(),
    )
    .expect("doppel serve")
}

fn phase(status: &Value) -> String {
    status["rollout"]["phase"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Must show: a shadow that fails one probe's body check is caught by a rule on
/// `synthetic.shadow.failed` with no user traffic, and the rollout rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_synthetic_shadow_with_a_wrong_body_rolls_back_without_user_traffic() {
    let run = RunDir::new("synthetic-rollback").expect("run dir");
    let primary = DemoUpstream::start(&run, "v1", &[]).expect("primary");
    // Right status, wrong body: only the body check can catch it.
    let shadow = DemoUpstream::start(&run, "v2", &["--body", "200 OK but the cart is gone\n"])
        .expect("shadow");
    let rules = "  - name: shadow-fails-probes\n    when: synthetic.shadow.failed > 0 && synthetic.primary.failed == 0\n    action: rollback\n";
    write_setup(run.path(), &policy(rules, ""), &primary, &shadow);
    let engine = start_engine(run.path());
    engine.start_rollout();

    let status = eventually(WAIT, "the rollout to roll back", || async {
        let status = engine.status("checkout");
        (phase(&status) == "rolled_back").then_some(status)
    })
    .await;
    let notes: Vec<String> = status["decisions"]
        .as_array()
        .expect("decision log")
        .iter()
        .filter_map(|d| d["note"].as_str().map(str::to_owned))
        .collect();
    let rollback = notes
        .iter()
        .find(|n| n.contains("shadow-fails-probes"))
        .unwrap_or_else(|| panic!("no decision of the probe rule in {notes:?}"));
    assert!(
        rollback.contains("synthetic: shadow 0/") && rollback.contains("body does not match"),
        "the decision explains the probe failure: {rollback}"
    );
    assert!(
        rollback.contains(&shadow.addr().to_string()),
        "names the shadow host: {rollback}"
    );

    // No user traffic: every request either upstream saw is a probe, marked as such, and the
    // primary saw the same probes at the same moments.
    let (p, s) = (
        primary.requests().expect("primary log"),
        shadow.requests().expect("shadow log"),
    );
    assert!(!p.is_empty() && !s.is_empty(), "probes reached both");
    for entry in p.iter().chain(&s) {
        assert_eq!(
            entry.headers.get("x-doppel-synthetic").map(String::as_str),
            Some("1"),
            "{entry:?}"
        );
        assert_eq!(entry.path, "/cart?probe=1");
        assert_eq!(entry.method, "GET");
    }
    let first = |log: &[doppel_demo_upstream::reqlog::LogEntry]| log[0].ts_ms;
    assert!(
        first(&p).abs_diff(first(&s)) < 200,
        "primary and shadow probed at the same moment: {} vs {}",
        first(&p),
        first(&s)
    );
}

/// Alerts through `doppel serve`: a Slack-format and a PagerDuty-format receiver, each failing
/// its first two requests, get exactly one trigger and one resolve for one incident (the shadow
/// breaks, then heals), and the alert rule never stops the looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_alerts_from_serve_reach_failing_receivers_once_each() {
    let run = RunDir::new("synthetic-alerts").expect("run dir");
    let slack = AlertReceiver::start(2).await.expect("slack receiver");
    let pagerduty = AlertReceiver::start(2).await.expect("pagerduty receiver");
    let primary = DemoUpstream::start(&run, "v1", &[]).expect("primary");
    let shadow = DemoUpstream::start(&run, "v2", &["--body", "200 OK wrong\n"]).expect("shadow");
    let rules = "  - name: shadow-probe-failing\n    when: synthetic.shadow.failed > 0\n    action: alert\n    severity: critical\n";
    let alerts = format!(
        "alerts:\n  sinks:\n    - kind: slack\n      url: {}\n    - kind: pagerduty\n      routing_key: test-routing-key\n      url: {}\n  retry:\n    max_attempts: 5\n    initial_backoff_ms: 50\n    max_backoff_ms: 200\n    max_elapsed_ms: 10000\n",
        slack.url(),
        pagerduty.url()
    );
    write_setup(run.path(), &policy(rules, &alerts), &primary, &shadow);
    let engine = start_engine(run.path());
    engine.start_rollout();

    let slack_trigger = slack.wait_for(1, WAIT).await;
    let pd_trigger = pagerduty.wait_for(1, WAIT).await;
    assert_eq!(slack_trigger.len(), 1, "slack trigger: {slack_trigger:?}");
    assert_eq!(pd_trigger.len(), 1, "pagerduty trigger: {pd_trigger:?}");
    // Heal the shadow: the rule stops holding and the incident resolves.
    shadow
        .set_fault(&HttpClient::new(), r#"{"body": ""}"#)
        .await
        .expect("heal the shadow");
    slack.wait_for(2, WAIT).await;
    pagerduty.wait_for(2, WAIT).await;
    // Nothing more may come: one incident, one trigger and one resolve.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (slack_all, pd_all) = (slack.accepted(), pagerduty.accepted());
    assert_eq!(slack_all.len(), 2, "{slack_all:#?}");
    assert_eq!(pd_all.len(), 2, "{pd_all:#?}");
    assert_eq!(
        slack.attempts(),
        4,
        "two failures, then the trigger and the resolve"
    );
    assert_eq!(pagerduty.attempts(), 4);

    let text = |v: &Value| v["text"].as_str().unwrap_or("").to_owned();
    assert!(
        text(&slack_all[0]).contains("[FIRING]"),
        "{}",
        text(&slack_all[0])
    );
    assert!(text(&slack_all[0]).contains("shadow-probe-failing"));
    assert!(
        text(&slack_all[1]).contains("[RESOLVED]"),
        "{}",
        text(&slack_all[1])
    );
    assert_eq!(pd_all[0]["event_action"], "trigger");
    assert_eq!(pd_all[1]["event_action"], "resolve");
    assert_eq!(pd_all[0]["routing_key"], "test-routing-key");
    assert_eq!(pd_all[0]["dedup_key"], pd_all[1]["dedup_key"]);
    assert_eq!(
        pd_all[0]["dedup_key"],
        "doppel/checkout/v2/shadow-probe-failing"
    );
    assert_eq!(pd_all[0]["payload"]["severity"], "critical");
    // An alert rule does not end the rollout.
    assert_eq!(phase(&engine.status("checkout")), "shadowing");
}
