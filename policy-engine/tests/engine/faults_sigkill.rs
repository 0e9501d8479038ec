//! Issue 9's engine fault: `doppel serve` SIGKILLed at random points of 20 rollouts. Each
//! rollout gets a random run of commands and analysis outcomes through the API; the engine is
//! killed while one more input is in flight, at a random moment, and restarted on the same
//! store. After each restart no acknowledged decision is lost, none is applied twice (the log's
//! sequence is gapless and the in-flight input appears at most once), the rollout's state is
//! the one its last logged decision left, and when nothing new was logged Envoy is served the
//! same snapshot version as before the kill.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::serve_process::{self, Serve, serve_command};

const TOKEN: &str = "faults-token";
const ROLLOUTS: usize = 20;

const POLICY: &str = "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
traffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 1s\n  min_sample: 10\n  alpha: 0.01\n\
rules:\n  - name: errors\n    when: compare.errors.worse\n    action: rollback\n\
steps:\n  - weight: 10\n    hold: 1ms\n  - weight: 30\n    hold: 1ms\n  - weight: 60\n    hold: 1ms\n";

fn start(dir: &Path) -> Serve {
    let mut command = serve_command(&dir.join("serve.yaml"), &dir.join("state.redb"));
    command.env("DOPPEL_API_TOKEN", TOKEN);
    serve_process::start(command, dir)
}

async fn status(api: &str) -> Value {
    serve_process::status(api, "checkout").await
}

/// A random input as (path suffix, body).
fn random_input(rng: &mut StdRng) -> (&'static str, String) {
    match rng.random_range(0..7) {
        0..=2 => (
            "events",
            json!({ "at_ms": 0, "verdict": "pass" }).to_string(),
        ),
        3 => ("pause", String::new()),
        4 => ("resume", String::new()),
        5 => (
            "events",
            json!({ "at_ms": 0, "verdict": "fired", "rule": "errors", "action": "pause" })
                .to_string(),
        ),
        _ => ("promote", String::new()),
    }
}

/// Sends one input; `Some(logged)` when the engine answered (200: applied, 409: refused, both
/// logged), `None` when it never answered.
async fn send(api: &str, (what, body): &(&'static str, String)) -> Option<bool> {
    match serve_process::post(api, "checkout", what, TOKEN, body.clone()).await? {
        200 => Some(true),
        409 => Some(false),
        other => panic!("{what}: unexpected {other}"),
    }
}

fn last_seq(status: &Value) -> u64 {
    status["decisions"]
        .as_array()
        .and_then(|d| d.iter().filter_map(|e| e["seq"].as_u64()).max())
        .unwrap_or(0)
}

fn node_version(status: &Value) -> Option<u64> {
    status["nodes"][0]["version"].as_u64()
}

fn write_config(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("policy.yaml"), POLICY).expect("policy");
    let config = dir.join("serve.yaml");
    std::fs::write(
        &config,
        "steering: full_ads\nfilter: { kind: none }\nnodes: [fault-node]\nservices:\n  - policy: policy.yaml\n    listener: 127.0.0.1:10000\n    endpoints:\n      checkout-v1: [\"127.0.0.1:9\"]\n      checkout-v2: [\"127.0.0.1:10\"]\n",
    )
    .expect("serve config");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_sigkill_at_random_points_of_20_rollouts_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path());
    let seed = std::env::var("DOPPEL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_206_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut engine = start(dir.path());
    for round in 0..ROLLOUTS {
        let before = status(&engine.api).await;
        let phase = before["rollout"]["phase"]["phase"].as_str().unwrap_or("");
        if phase == "shadowing" || phase == "paused" {
            assert_eq!(
                send(&engine.api, &("rollback", String::new())).await,
                Some(true)
            );
        }
        let start_input = (
            "start",
            json!({ "version": format!("v{round}") }).to_string(),
        );
        assert_eq!(
            send(&engine.api, &start_input).await,
            Some(true),
            "round {round} (seed {seed}): a new version starts after a verdict"
        );
        let mut answered = 0;
        for _ in 0..rng.random_range(0..6) {
            assert!(send(&engine.api, &random_input(&mut rng)).await.is_some());
            answered += 1;
        }
        let acked = status(&engine.api).await;
        let acked_seq = last_seq(&acked);

        // One more input in flight, and SIGKILL at a random moment around it.
        let in_flight = random_input(&mut rng);
        let api = engine.api.clone();
        let request = tokio::spawn(async move { send(&api, &in_flight).await });
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..3_000))).await;
        let _ = engine.child.kill();
        let _ = engine.child.wait();
        let in_flight_answered = request.await.expect("request task").is_some();

        engine = start(dir.path());
        let after = status(&engine.api).await;
        let after_seq = last_seq(&after);
        let context = format!(
            "round {round} (seed {seed}), {answered} inputs answered before the kill, in-flight answered: {in_flight_answered}\nbefore: {acked}\nafter: {after}"
        );
        // Nothing acknowledged is lost; the in-flight input is logged at most once.
        assert!(
            after_seq >= acked_seq + u64::from(in_flight_answered),
            "{context}"
        );
        assert!(after_seq <= acked_seq + 1, "{context}");
        // The log is gapless and ordered.
        let seqs: Vec<u64> = after["decisions"]
            .as_array()
            .expect("decision log")
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), seqs.len(), "no entry twice: {context}");
        assert!(
            sorted.windows(2).all(|w| w[1] == w[0] + 1),
            "gapless: {context}"
        );
        // The rollout is where its last logged decision left it.
        let newest = after["decisions"]
            .as_array()
            .and_then(|d| d.iter().find(|e| e["seq"].as_u64() == Some(after_seq)))
            .expect("the newest decision");
        assert_eq!(
            after["rollout"]["phase"]["phase"], newest["phase"],
            "state matches the log: {context}"
        );
        assert_eq!(after["step"], newest["step"], "{context}");
        if after_seq == acked_seq {
            // Nothing new: the same state and the same snapshot version for Envoy.
            assert_eq!(after["rollout"], acked["rollout"], "{context}");
            assert_eq!(node_version(&after), node_version(&acked), "{context}");
        }
    }
}
