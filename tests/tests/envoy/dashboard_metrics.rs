//! The engine's `/metrics`, dashboard endpoints and JSON logs, end to end: a real `doppel
//! serve` (with `--log-format json`) steering a real Envoy that streams its stats into it.
//! `/metrics` passes Prometheus's own `promtool check metrics` and counts what happened; the
//! endpoint the dashboard's buttons post to refuses a pause without the token and takes it
//! with the token, and the dashboard's event stream shows the change.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use doppel_tests::dashboard_support::{Events, call, promtool_check, sample};
use doppel_tests::procs::{RunDir, workspace_root};
use doppel_tests::rollout_support::{Engine, TOKEN, eventually, free_port, policy_yaml};
use doppel_tests::xds_support::{
    AdsMode, Envoy, Upstream, XDS_WAIT, http_get, render_ads_bootstrap_with_metrics,
};
use serde_json::Value;

const NODE: &str = "dashboard-metrics";

fn write_config(dir: &Path, primary: SocketAddr, shadow: SocketAddr) {
    std::fs::write(
        dir.join("policy.yaml"),
        policy_yaml(&[(10.0, "1h"), (50.0, "1h")]),
    )
    .expect("policy file");
    let config = format!(
        "steering: full_ads\nfilter: {{ kind: none }}\nnodes: [{NODE}]\nservices:\n  - policy: policy.yaml\n    listener: 127.0.0.1:0\n    endpoints:\n      checkout-v1: [\"{primary}\"]\n      checkout-v2: [\"{shadow}\"]\n"
    );
    std::fs::write(dir.join("serve.yaml"), config).expect("serve config");
}

async fn metrics(engine: &Engine) -> String {
    let reply = call(engine.api, "GET", "/metrics", None)
        .await
        .expect("GET /metrics");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        reply.header("content-type")
    );
    reply.body
}

/// Every `expr` in a Grafana dashboard.
fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The engine's metric names in a PromQL expression: `doppel_...` names that are not the
/// filter's `doppel_$service_...`.
fn engine_metrics(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("doppel_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if !name.contains('$') {
            names.push(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn phase(status: &Value) -> &str {
    status["rollout"]["phase"]["phase"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_metrics_pass_promtool_and_the_buttons_need_the_token() {
    let run = RunDir::new("dashboard-metrics").expect("run dir");
    let primary = Upstream::start("primary").await.expect("primary upstream");
    let shadow = Upstream::start("shadow").await.expect("shadow upstream");
    write_config(run.path(), primary.address, shadow.address);
    let xds_port = free_port();
    let engine = Engine::start_with(
        run.path(),
        &run.join("serve.yaml"),
        &run.join("state.redb"),
        xds_port,
        &["--log-format", "json"],
    )
    .expect("doppel serve");
    let bootstrap =
        render_ads_bootstrap_with_metrics(xds_port, engine.metrics.port(), AdsMode::Sotw)
            .expect("bootstrap");
    let envoy = Envoy::start(&bootstrap, NODE).await.expect("envoy");

    // Envoy took its config (pushes ACKed) and streams stats (messages ingested).
    let page = eventually(
        XDS_WAIT,
        "pushes acknowledged and stats ingested",
        || async {
            let page = metrics(&engine).await;
            let acked = sample(&page, "doppel_xds_acks_total{type=\"lds\"}").unwrap_or(0.0);
            let messages = sample(&page, "doppel_ingest_messages_total").unwrap_or(0.0);
            (acked >= 1.0 && messages >= 2.0).then_some(page)
        },
    )
    .await;
    promtool_check(&page).unwrap_or_else(|e| panic!("{e}\n{page}"));
    assert!(sample(&page, "doppel_xds_pushes_total{type=\"cds\"}") >= Some(1.0));
    assert_eq!(
        sample(&page, "doppel_xds_nacks_total{type=\"cds\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&page, &format!("doppel_xds_streams{{node=\"{NODE}\"}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            "doppel_rollout_state{service=\"checkout\",state=\"pending\"}"
        ),
        Some(1.0)
    );

    // Traffic through Envoy: its cluster stats reach the engine's windows.
    let listener = envoy.listener_address("checkout").await.expect("listener");
    engine.start_rollout();
    for _ in 0..100 {
        let reply = http_get(listener, "/")
            .await
            .expect("request through envoy");
        assert_eq!(reply.status, 200);
    }

    // The dashboard's page, its script and its snapshot.
    let html = call(engine.api, "GET", "/dashboard", None)
        .await
        .expect("page");
    assert_eq!(html.status, 200);
    assert!(html.header("content-type").starts_with("text/html"));
    assert!(
        html.header("content-security-policy")
            .contains("default-src 'self'")
    );
    assert!(html.body.contains("/dashboard/app.js"), "{}", html.body);
    let script = call(engine.api, "GET", "/dashboard/app.js", None)
        .await
        .expect("app.js");
    assert_eq!(script.status, 200);
    assert!(
        script
            .body
            .contains("\"/v1/rollouts/\" + encodeURIComponent(service)"),
        "the buttons post to the rollout API"
    );
    assert!(
        !script.body.contains("http://") && !script.body.contains("https://"),
        "no CDN"
    );
    let state = eventually(XDS_WAIT, "windows in the dashboard's history", || async {
        let reply = call(engine.api, "GET", "/dashboard/state", None)
            .await
            .ok()?;
        let state: Value = serde_json::from_str(&reply.body).ok()?;
        let service = state["services"][0].clone();
        let served: u64 = service["history"]["points"]
            .as_array()?
            .iter()
            .map(|p| {
                p["primary"]["requests"].as_u64().unwrap_or(0)
                    + p["shadow"]["requests"].as_u64().unwrap_or(0)
            })
            .sum();
        (served >= 100).then_some(service)
    })
    .await;
    assert_eq!(state["service"], "checkout");
    assert_eq!(state["policy"]["rules"][0]["name"], "errors");
    assert_eq!(state["rollout"]["shadow_weight"], 10.0);
    assert_eq!(state["rollout"]["primary_weight"], 90.0);

    let mut events = Events::open(engine.api, "/dashboard/events")
        .await
        .expect("events");
    let snapshot = events
        .until("snapshot", Duration::from_secs(5), |_| true)
        .await
        .expect("a snapshot first");
    assert_eq!(
        phase(&snapshot["services"][0]["rollout"]["status"]),
        "shadowing"
    );

    // What the pause button sends, without the token, with a wrong one, then with it.
    let refused = call(engine.api, "POST", "/v1/rollouts/checkout/pause", None)
        .await
        .expect("pause without token");
    assert_eq!(refused.status, 401, "{}", refused.body);
    let wrong = call(
        engine.api,
        "POST",
        "/v1/rollouts/checkout/pause",
        Some("not-the-token"),
    )
    .await
    .expect("pause with a wrong token");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(
        phase(&engine.status("checkout")),
        "shadowing",
        "nothing changed"
    );
    let paused = call(
        engine.api,
        "POST",
        "/v1/rollouts/checkout/pause",
        Some(TOKEN),
    )
    .await
    .expect("pause with the token");
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(phase(&engine.status("checkout")), "paused");
    let update = events
        .until("rollout", Duration::from_secs(5), |v| {
            phase(&v["status"]) == "paused"
        })
        .await
        .expect("the pause on the event stream");
    assert_eq!(update["service"], "checkout");
    assert_eq!(update["shadow_weight"], 10.0, "paused keeps its weight");

    let page = metrics(&engine).await;
    promtool_check(&page).unwrap_or_else(|e| panic!("{e}\n{page}"));
    assert_eq!(
        sample(
            &page,
            "doppel_decisions_total{source=\"operator\",action=\"pause\"}"
        ),
        Some(1.0),
        "only the accepted pause counts\n{page}"
    );
    assert_eq!(
        sample(
            &page,
            "doppel_decisions_total{source=\"operator\",action=\"start\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            "doppel_rollout_state{service=\"checkout\",state=\"paused\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, "doppel_rollout_step{service=\"checkout\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            "doppel_rollout_shadow_weight_percent{service=\"checkout\"}"
        ),
        Some(10.0)
    );
    assert_eq!(sample(&page, "doppel_dashboard_clients"), Some(1.0));
    assert!(
        sample(&page, "doppel_ingest_metrics_accepted_total") > Some(0.0),
        "the requests' cluster stats were taken\n{page}"
    );
    // The analysis looks every second while the rollout is shadowing or paused.
    let page = eventually(XDS_WAIT, "an analysis look counted", || async {
        let page = metrics(&engine).await;
        let looks = sample(&page, "doppel_analysis_looks_total{outcome=\"evaluated\"}")
            .unwrap_or(0.0)
            + sample(
                &page,
                "doppel_analysis_looks_total{outcome=\"inconclusive\"}",
            )
            .unwrap_or(0.0);
        (looks >= 1.0).then_some(page)
    })
    .await;
    promtool_check(&page).unwrap_or_else(|e| panic!("{e}\n{page}"));

    // The Grafana dashboard asks only for engine metrics this page has.
    let grafana = std::fs::read_to_string(workspace_root().join("grafana/doppel.json"))
        .expect("grafana/doppel.json");
    let grafana: Value = serde_json::from_str(&grafana).expect("grafana/doppel.json is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&grafana, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    for expr in &exprs {
        for name in engine_metrics(expr) {
            assert!(
                page.contains(&format!("# TYPE {name} ")),
                "grafana/doppel.json reads {name}, which /metrics does not have: {expr}"
            );
        }
    }

    // Every log line is one JSON object with its fields as keys.
    drop(events);
    let log = engine.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "doppel serving" && l["addresses"].is_string()),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "rollout decision"
            && l["service"] == "checkout"
            && l["level"] == "INFO"),
        "{log}"
    );
}
