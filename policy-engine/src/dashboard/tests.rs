//! The dashboard's snapshot and event stream over a real controller (no Envoy node).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use super::events::feed;
use super::state::State;
use super::*;
use crate::analysis::{Evaluation, Outcome};
use crate::ingest::{ClusterRegistry, StoreConfig};
use crate::metrics::ServiceWindow;
use crate::policy::parse;
use crate::rollout::filter_config::FilterKind;
use crate::rollout::store::Store;
use crate::rollout::{Command, Controller, Input, ServiceSetup, Setup, Steering};
use crate::xds::SnapshotCache;

const POLICY: &str = "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
traffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 1s\n  min_sample: 10\n  alpha: 0.01\n\
rules:\n  - name: errors\n    when: compare.errors.worse\n    action: rollback\n\
steps:\n  - weight: 20\n    hold: 1h\n";

fn dashboard(dir: &std::path::Path) -> Arc<Dashboard> {
    let policy = parse(POLICY).expect("policy");
    let mut services = BTreeMap::new();
    services.insert(
        "checkout".to_owned(),
        ServiceSetup {
            policy,
            listener: None,
            endpoints: BTreeMap::new(),
        },
    );
    let setup = Setup {
        steering: Steering::FullAds,
        filter: FilterKind::None,
        nodes: Vec::new(),
        services,
        access_log: None,
    };
    let store = Store::open(&dir.join("state.redb")).expect("store");
    let controller = Controller::open(setup, store, Arc::new(SnapshotCache::new())).expect("open");
    Arc::new(Dashboard {
        controller: Arc::new(Mutex::new(controller)),
        history: Arc::new(History::new(10)),
        telemetry: Arc::new(Telemetry::new()),
        windows: Arc::new(WindowStore::new(
            StoreConfig::default(),
            ClusterRegistry::new(),
        )),
    })
}

fn window(end_ms: u64) -> ServiceWindow {
    let mut w = ServiceWindow {
        service: "checkout".into(),
        start_ms: end_ms - 1_000,
        end_ms,
        ..ServiceWindow::default()
    };
    w.primary.requests = 40;
    w.shadow.requests = 10;
    w.shadow.errors_5xx = 2;
    w
}

/// The next event's name and JSON body, rendered as the wire carries it.
async fn next(
    events: &mut (
             impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
             + Unpin
         ),
) -> (String, serde_json::Value) {
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("infallible");
    let wire = axum::response::sse::Sse::new(futures::stream::iter([Ok::<
        _,
        std::convert::Infallible,
    >(event)]));
    let body = axum::response::IntoResponse::into_response(wire).into_body();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("event: "))
        .unwrap_or("")
        .to_owned();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    (name, serde_json::from_str(data).expect("JSON data"))
}

#[tokio::test]
async fn dashboard_state_has_policy_rollout_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let board = dashboard(dir.path());
    board.history.record_window(&window(5_000));
    let state = serde_json::to_value(State::of(&board).expect("state")).expect("json");
    let service = &state["services"][0];
    assert_eq!(service["service"], "checkout");
    assert_eq!(
        service["policy"]["rules"][0]["when"],
        "compare.errors.worse"
    );
    assert_eq!(service["policy"]["steps"][0]["weight"], 20.0);
    assert_eq!(
        service["rollout"]["status"]["rollout"]["phase"]["phase"],
        "pending"
    );
    assert_eq!(service["rollout"]["shadow_weight"], 0.0);
    assert_eq!(service["history"]["points"][0]["shadow"]["error_rate"], 0.2);
}

#[tokio::test]
async fn dashboard_state_carries_each_looks_synthetic_probe_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let board = dashboard(dir.path());
    let record = crate::synthetic::SyntheticRecord {
        primary: crate::synthetic::SyntheticVariant {
            runs: 3,
            passed: 3,
            ..Default::default()
        },
        shadow: crate::synthetic::SyntheticVariant {
            runs: 3,
            passed: 1,
            failed: 2,
            failing: 1,
            ..Default::default()
        },
        failures: vec!["home shadow 127.0.0.1:8082: body lacks `ok`".into()],
    };
    board.history.record_look(
        "checkout",
        &Evaluation {
            at_ms: 5_000,
            step: 1,
            outcome: Outcome::Inconclusive {
                reason: "no traffic".into(),
                holding: Vec::new(),
            },
            decisions: Vec::new(),
            synthetic: Some(record),
            resources: None,
            rules: Vec::new(),
        },
    );
    let state = serde_json::to_value(State::of(&board).expect("state")).expect("json");
    let look = &state["services"][0]["history"]["looks"][0];
    // What app.js's renderSynthetic reads.
    assert_eq!(look["synthetic"]["shadow"]["failed"], 2);
    assert_eq!(look["synthetic"]["shadow"]["runs"], 3);
    assert_eq!(look["synthetic"]["primary"]["passed"], 3);
    assert_eq!(
        look["synthetic"]["failures"][0],
        "home shadow 127.0.0.1:8082: body lacks `ok`"
    );
}

#[tokio::test]
async fn dashboard_events_start_with_a_snapshot_then_stream_points_looks_and_rollouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let board = dashboard(dir.path());
    let mut events = Box::pin(feed(Arc::clone(&board)));
    let (name, snapshot) = next(&mut events).await;
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot["services"][0]["service"], "checkout");

    board.history.record_window(&window(5_000));
    let (name, point) = next(&mut events).await;
    assert_eq!(
        (name.as_str(), &point["kind"]),
        ("point", &serde_json::json!("point"))
    );
    assert_eq!(point["point"]["primary"]["rps"], 40.0);

    board.history.record_look(
        "checkout",
        &Evaluation {
            at_ms: 5_000,
            step: 1,
            outcome: Outcome::Inconclusive {
                reason: "so far primary has 40 requests, shadow 10".into(),
                holding: Vec::new(),
            },
            decisions: Vec::new(),
            synthetic: None,
            resources: None,
            rules: Vec::new(),
        },
    );
    let (name, look) = next(&mut events).await;
    assert_eq!(name, "look");
    assert_eq!(look["look"]["outcome"]["state"], "inconclusive");

    // An operator's command changes the rollout: the feed notices within its poll.
    state::lock(&board.controller)
        .apply(
            "checkout",
            Input::Command {
                command: Command::Start {
                    version: "v2".into(),
                },
                now_ms: 10_000,
            },
        )
        .expect("start");
    let (name, rollout) = next(&mut events).await;
    assert_eq!(name, "rollout");
    assert_eq!(rollout["service"], "checkout");
    assert_eq!(rollout["status"]["rollout"]["phase"]["phase"], "shadowing");
    assert_eq!(rollout["shadow_weight"], 20.0);
    assert_eq!(
        board.telemetry.open_dashboard_clients(),
        1,
        "the open feed is counted"
    );
    drop(events);
    assert_eq!(board.telemetry.open_dashboard_clients(), 0);
}
