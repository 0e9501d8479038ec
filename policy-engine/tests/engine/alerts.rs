//! The alerter against real HTTP receivers on 127.0.0.1 that record what they get and can fail
//! or hang: Slack and PagerDuty formats, retries, de-duplication, resolves, and a caller that is
//! never held up by a sink.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use doppel_engine::alerts::{
    AlertEvent, AlertKey, Alerter, AlertsConfig, AlertsError, Notified, Severity,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How a receiver answers.
#[derive(Clone, Copy)]
enum Mode {
    /// Fail the first `n` requests with 503, accept the rest.
    FailFirst(usize),
    /// Answer every request with this status.
    Always(u16),
    /// Never answer.
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    body: Value,
    authorization: Option<String>,
}

struct ReceiverState {
    mode: Mode,
    attempts: AtomicUsize,
    accepted: Mutex<Vec<Received>>,
}

/// A real HTTP server on 127.0.0.1:0; stopped on drop.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(mode: Mode) -> Self {
        let state = Arc::new(ReceiverState {
            mode,
            attempts: AtomicUsize::new(0),
            accepted: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Self { url, state, task }
    }

    fn accepted(&self) -> Vec<Received> {
        self.state.accepted.lock().expect("lock").clone()
    }

    fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.accepted().len() < count {
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {count} notifications in 10 s",
                self.accepted().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.accepted()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let attempt = state.attempts.fetch_add(1, Ordering::SeqCst);
    match state.mode {
        Mode::Hang => std::future::pending().await,
        Mode::Always(code) => {
            return (
                StatusCode::from_u16(code).expect("valid status"),
                "no".into(),
            );
        }
        Mode::FailFirst(n) if attempt < n => {
            return (StatusCode::SERVICE_UNAVAILABLE, "try later".into());
        }
        Mode::FailFirst(_) => {}
    }
    let body: Value = serde_json::from_str(&body).expect("the alerter sends JSON");
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.accepted.lock().expect("lock").push(Received {
        body,
        authorization,
    });
    (StatusCode::ACCEPTED, r#"{"status":"success"}"#.into())
}

/// A config with fast retries, from the given sinks.
fn config(sinks: Value) -> AlertsConfig {
    serde_json::from_value(json!({
        "sinks": sinks,
        "retry": {"max_attempts": 5, "initial_backoff_ms": 20, "max_backoff_ms": 200, "max_elapsed_ms": 5000},
        "request_timeout_ms": 2000,
    }))
    .expect("valid alerts config")
}

fn error_rate_fired(rollout: &str) -> AlertEvent {
    AlertEvent::firing(
        AlertKey::new(rollout, "shadow-errors"),
        Severity::Critical,
        "shadow 5xx rate 4.1% vs primary 0.2% (Fisher exact p=0.0003)",
    )
    .with_detail("shadow_error_rate", 0.041)
    .with_detail("primary_error_rate", 0.002)
    .with_detail("p_value", 0.0003)
    .with_detail("test", "fisher_exact")
}

/// Must show: a Slack-format and a PagerDuty-format receiver each get one trigger and one
/// resolve for one incident, nothing lost although each fails its first two requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_pagerduty_each_get_one_trigger_and_one_resolve_despite_two_failures() {
    let slack = Receiver::start(Mode::FailFirst(2)).await;
    let pagerduty = Receiver::start(Mode::FailFirst(2)).await;
    let alerter = Alerter::start(&config(json!([
        {"kind": "slack", "name": "team", "url": slack.url},
        {"kind": "pagerduty", "name": "oncall", "url": pagerduty.url,
         "routing_key": "R0UT1NGKEY0000000000000000000000", "source": "doppel-test"},
    ])))
    .expect("alerter starts");

    // The decision loop reports the condition on every evaluation.
    assert_eq!(
        alerter.notify(error_rate_fired("checkout/v2")),
        Notified::Triggered
    );
    assert_eq!(
        alerter.notify(error_rate_fired("checkout/v2")),
        Notified::StillFiring
    );
    assert_eq!(
        alerter.notify(error_rate_fired("checkout/v2")),
        Notified::StillFiring
    );
    let key = AlertKey::new("checkout/v2", "shadow-errors");
    let cleared = AlertEvent::clear(key.clone(), "shadow 5xx rate back to 0.3%")
        .with_detail("shadow_error_rate", 0.003);
    assert_eq!(alerter.notify(cleared.clone()), Notified::Resolved);
    assert_eq!(alerter.notify(cleared), Notified::NotFiring);
    assert!(alerter.firing().is_empty());

    let slack_got = slack.wait_for(2).await;
    let pd_got = pagerduty.wait_for(2).await;
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slack.accepted().len(), 2);
    assert_eq!(pagerduty.accepted().len(), 2);
    assert_eq!(
        slack.attempts(),
        4,
        "two failures, then trigger and resolve"
    );
    assert_eq!(
        pagerduty.attempts(),
        4,
        "two failures, then trigger and resolve"
    );

    // Slack: incoming-webhook JSON with text and blocks, trigger first.
    let trigger = &slack_got[0].body;
    let text = trigger["text"].as_str().expect("slack text");
    assert!(
        text.contains("FIRING") && text.contains("shadow-errors") && text.contains("checkout/v2"),
        "{text}"
    );
    assert!(text.contains("4.1%"), "{text}");
    let blocks = trigger["blocks"].to_string();
    assert!(
        blocks.contains("p_value") && blocks.contains("0.0003"),
        "{blocks}"
    );
    let resolve = slack_got[1].body["text"].as_str().expect("slack text");
    assert!(
        resolve.contains("RESOLVED") && resolve.contains("0.3%"),
        "{resolve}"
    );

    // PagerDuty Events API v2: trigger then resolve under one dedup key.
    let (trigger, resolve) = (&pd_got[0].body, &pd_got[1].body);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY0000000000000000000000");
    assert_eq!(trigger["dedup_key"], key.dedup_key());
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "doppel-test");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("4.1%"))
    );
    assert_eq!(trigger["payload"]["custom_details"]["p_value"], 0.0003);
    assert_eq!(
        trigger["payload"]["custom_details"]["rule"],
        "shadow-errors"
    );
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], key.dedup_key());
    assert_eq!(resolve["routing_key"], "R0UT1NGKEY0000000000000000000000");

    for stats in alerter.stats() {
        assert_eq!(
            (
                stats.queued,
                stats.delivered,
                stats.retries,
                stats.dropped,
                stats.failed
            ),
            (2, 2, 2, 0, 0),
            "{stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sink_never_blocks_notify_nor_the_other_sinks() {
    let hanging = Receiver::start(Mode::Hang).await;
    let healthy = Receiver::start(Mode::FailFirst(0)).await;
    let mut cfg = config(json!([
        {"kind": "json", "name": "hangs", "url": hanging.url},
        {"kind": "json", "name": "works", "url": healthy.url},
    ]));
    cfg.request_timeout_ms = 60_000;
    cfg.queue_capacity = 32;
    let alerter = Alerter::start(&cfg).expect("alerter starts");

    let started = Instant::now();
    for i in 0..20 {
        let key = AlertKey::new("checkout/v2", format!("rule-{i}"));
        assert_eq!(
            alerter.notify(AlertEvent::firing(key, Severity::Warning, "slow")),
            Notified::Triggered
        );
    }
    // The healthy sink gets everything while the other one hangs on its first request.
    healthy.wait_for(20).await;
    assert_eq!(hanging.attempts(), 1);

    // Overflow the hanging sink's queue: notify still returns at once; drops are counted.
    for i in 20..60 {
        let key = AlertKey::new("checkout/v2", format!("rule-{i}"));
        alerter.notify(AlertEvent::firing(key, Severity::Warning, "slow"));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "notify waited on a sink: {elapsed:?}"
    );
    let stats = alerter.stats();
    let hangs = &stats[0];
    assert_eq!(hangs.name, "hangs");
    assert_eq!(hangs.queued + hangs.dropped, 60);
    assert!(hangs.dropped >= 60 - 32 - 1, "{hangs:?}");
    assert_eq!(hangs.delivered, 0);

    // Shutting down does not wait for the hanging request either.
    let started = Instant::now();
    let final_stats = alerter.shutdown(Duration::from_millis(500)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(final_stats[1].delivered, final_stats[1].queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_notifies_once_per_incident_and_reopens_after_a_resolve() {
    let receiver = Receiver::start(Mode::FailFirst(0)).await;
    let alerter = Alerter::start(&config(json!([{"kind": "json", "url": receiver.url}])))
        .expect("alerter starts");
    let other = AlertEvent::firing(
        AlertKey::new("search/v7", "latency"),
        Severity::Warning,
        "p-value 0.001",
    );
    let key = AlertKey::new("checkout/v2", "shadow-errors");

    assert_eq!(
        alerter.notify(AlertEvent::clear(key.clone(), "")),
        Notified::NotFiring
    );
    assert_eq!(
        alerter.notify(error_rate_fired("checkout/v2")),
        Notified::Triggered
    );
    assert_eq!(
        alerter.notify(other.clone()),
        Notified::Triggered,
        "another key is its own incident"
    );
    for _ in 0..5 {
        assert_eq!(
            alerter.notify(error_rate_fired("checkout/v2")),
            Notified::StillFiring
        );
    }
    assert_eq!(alerter.firing().len(), 2);
    assert_eq!(
        alerter.notify(AlertEvent::clear(key.clone(), "")),
        Notified::Resolved
    );
    assert_eq!(
        alerter.notify(error_rate_fired("checkout/v2")),
        Notified::Triggered
    );

    let got = receiver.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.accepted().len(), 4);
    let ours: Vec<&Value> = got
        .iter()
        .map(|r| &r.body)
        .filter(|b| b["rollout"] == "checkout/v2")
        .collect();
    let statuses: Vec<&str> = ours.iter().filter_map(|b| b["status"].as_str()).collect();
    assert_eq!(statuses, ["firing", "resolved", "firing"]);
    assert!(ours.iter().all(|b| b["dedup_key"] == key.dedup_key()));
    // A resolve without its own summary repeats the trigger's, and keeps its severity.
    assert!(
        ours[1]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("cleared: shadow 5xx"))
    );
    assert_eq!(ours[1]["severity"], "critical");
    assert_eq!(ours[0]["details"]["shadow_error_rate"], 0.041);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_and_client_errors_are_not_retried() {
    let rejects = Receiver::start(Mode::Always(400)).await;
    let down = Receiver::start(Mode::Always(500)).await;
    let mut cfg = config(json!([
        {"kind": "json", "name": "rejects", "url": rejects.url},
        {"kind": "json", "name": "down", "url": down.url},
    ]));
    cfg.retry.max_attempts = 3;
    let alerter = Alerter::start(&cfg).expect("alerter starts");
    alerter.notify(error_rate_fired("checkout/v2"));

    let deadline = Instant::now() + Duration::from_secs(10);
    while alerter.stats().iter().map(|s| s.failed).sum::<u64>() < 2 {
        assert!(Instant::now() < deadline, "{:?}", alerter.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = alerter.stats();
    assert_eq!(
        (rejects.attempts(), stats[0].retries, stats[0].failed),
        (1, 0, 1)
    );
    assert_eq!(
        (down.attempts(), stats[1].retries, stats[1].failed),
        (3, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_sink_headers_can_come_from_the_environment() {
    let receiver = Receiver::start(Mode::FailFirst(0)).await;
    // Cargo sets CARGO_PKG_NAME for the tests it runs.
    let alerter = Alerter::start(&config(json!([{
        "kind": "json", "url": receiver.url,
        "headers": {"Authorization": {"env": "CARGO_PKG_NAME"}},
    }])))
    .expect("alerter starts");
    alerter.notify(error_rate_fired("checkout/v2"));
    let got = receiver.wait_for(1).await;
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(env!("CARGO_PKG_NAME"))
    );
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_offending_field() {
    let refuse = |value: Value| -> String {
        match serde_json::from_value::<AlertsConfig>(value) {
            Err(e) => e.to_string(),
            Ok(config) => match Alerter::start(&config) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted"),
            },
        }
    };
    let url = "http://127.0.0.1:9/hook";
    assert!(
        refuse(json!({"sinks": [{"kind": "slack", "url": url, "channel": "#x"}]}))
            .contains("channel")
    );
    assert!(refuse(json!({"sinks": [{"kind": "teams", "url": url}]})).contains("teams"));
    assert!(refuse(json!({"sinks": [], "retry": {}})).contains("at least one sink"));
    assert!(
        refuse(json!({"sinks": [{"kind": "json", "url": url}], "retries": {}})).contains("retries")
    );
    let twice = refuse(
        json!({"sinks": [{"kind": "json", "name": "a", "url": url}, {"kind": "slack", "name": "a", "url": url}]}),
    );
    assert!(
        twice.contains("sinks[1]") && twice.contains("twice"),
        "{twice}"
    );
    let scheme = refuse(json!({"sinks": [{"kind": "json", "url": "ftp://x/y"}]}));
    assert!(
        scheme.contains("sinks[0]") && scheme.contains("ftp"),
        "{scheme}"
    );
    let env = refuse(
        json!({"sinks": [{"kind": "pagerduty", "routing_key": {"env": "DOPPEL_TEST_UNSET_ROUTING_KEY"}}]}),
    );
    assert!(
        env.contains("DOPPEL_TEST_UNSET_ROUTING_KEY") && env.contains("routing_key"),
        "{env}"
    );
    let backoff = refuse(
        json!({"sinks": [{"kind": "json", "url": url}], "retry": {"initial_backoff_ms": 5000, "max_backoff_ms": 10}}),
    );
    assert!(backoff.contains("initial_backoff_ms"), "{backoff}");

    let config: AlertsConfig = serde_json::from_value(
        json!({"sinks": [{"kind": "slack", "url": "https://hooks.example/T/B/SECRET"}]}),
    )
    .expect("valid");
    assert!(
        !format!("{config:?}").contains("SECRET"),
        "secrets stay out of Debug"
    );
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let config: AlertsConfig =
        serde_json::from_value(json!({"sinks": [{"kind": "json", "url": "http://127.0.0.1:9/"}]}))
            .expect("valid");
    assert!(matches!(
        Alerter::start(&config),
        Err(AlertsError::NoRuntime)
    ));
}

/// The section embeds in a YAML policy as `alerts:`.
#[test]
fn the_config_reads_from_a_yaml_policy_section() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Policy {
        alerts: AlertsConfig,
    }
    let yaml = r#"
alerts:
  sinks:
    - kind: slack
      name: team-checkout
      url: {env: SLACK_WEBHOOK_URL}
    - kind: pagerduty
      routing_key: {env: PD_ROUTING_KEY}
      source: doppel-prod
    - kind: json
      url: http://audit.internal:8080/alerts
      headers: {Authorization: {env: AUDIT_TOKEN}}
  retry: {max_attempts: 4, initial_backoff_ms: 250}
  request_timeout_ms: 3000
  queue_capacity: 128
"#;
    let policy: Policy = serde_saphyr::from_str(yaml).expect("valid YAML section");
    policy.alerts.validate().expect("valid alerts");
    assert_eq!(policy.alerts.sinks.len(), 3);
    assert_eq!(policy.alerts.retry.max_attempts, 4);
    assert_eq!(
        policy.alerts.retry.max_backoff_ms, 30_000,
        "unset fields keep defaults"
    );

    let typo = yaml.replace("source:", "sauce:");
    let err = serde_saphyr::from_str::<Policy>(&typo)
        .err()
        .expect("unknown field");
    assert!(err.to_string().contains("sauce"), "{err}");
}
