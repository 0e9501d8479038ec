//! Issue 9's policy fault: a policy file edited into an invalid state while `doppel serve`
//! runs is refused with file:line:column, the last good policy stays in force and the rollout
//! goes on; a valid edit is put in force without touching the rollout.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve_process::{self, Serve, serve_command};

const TOKEN: &str = "reload-token";

fn policy(percent: u32, rule: &str) -> String {
    format!(
        "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
         traffic:\n  mode: split\n  percent: {percent}\nanalysis:\n  interval: 1s\n  min_sample: 10\n  alpha: 0.01\n\
         rules:\n  - name: errors\n    when: {rule}\n    action: rollback\n\
         steps:\n  - weight: 10\n    hold: 1ms\n  - weight: 30\n    hold: 1ms\n  - weight: 60\n    hold: 1ms\n"
    )
}

fn start(dir: &Path) -> Serve {
    let mut command = serve_command(&dir.join("serve.yaml"), &dir.join("state.redb"));
    command
        .args(["--policy-reload-ms", "100"])
        .env("DOPPEL_API_TOKEN", TOKEN);
    serve_process::start(command, dir)
}

/// Waits until the engine's log has a line containing all of `parts`; returns that line.
async fn log_line(dir: &Path, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = serve_process::log(dir);
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(api: &str, what: &str, body: Value) -> u16 {
    serve_process::post(api, "checkout", what, TOKEN, body.to_string())
        .await
        .expect("API request")
}

async fn status(api: &str) -> Value {
    serve_process::status(api, "checkout").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_reload_refuses_an_invalid_edit_keeps_the_last_good_policy_and_the_rollout_goes_on()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy(1, "compare.errors.worse")).expect("policy");
    std::fs::write(
        dir.path().join("serve.yaml"),
        "steering: full_ads\nfilter: { kind: none }\nnodes: [reload-node]\nservices:\n  - policy: policy.yaml\n    listener: 127.0.0.1:10000\n    endpoints:\n      checkout-v1: [\"127.0.0.1:9\"]\n      checkout-v2: [\"127.0.0.1:10\"]\n",
    )
    .expect("serve config");
    let engine = start(dir.path());
    assert_eq!(
        post(&engine.api, "start", json!({ "version": "v2" })).await,
        200
    );
    let before = status(&engine.api).await;
    assert_eq!(before["step"], 1);

    // An edit that breaks the rule's CEL (line 15 of the file) is refused with its position.
    std::fs::write(&file, policy(3, "compare.errors.worse &&")).expect("broken policy");
    let refusal = log_line(dir.path(), &["policy refused", "policy.yaml:15:"]).await;
    assert!(refusal.contains("last good one stays"), "{refusal}");
    let kept = status(&engine.api).await;
    assert_eq!(
        kept["traffic"], before["traffic"],
        "the last good policy stays in force"
    );
    assert_eq!(kept["nodes"][0]["version"], before["nodes"][0]["version"]);
    // The rollout goes on: a passing analysis moves it to the next step.
    assert_eq!(
        post(
            &engine.api,
            "events",
            json!({ "at_ms": 0, "verdict": "pass" })
        )
        .await,
        200
    );
    assert_eq!(status(&engine.api).await["step"], 2);

    // Renaming the service is refused too.
    std::fs::write(
        &file,
        policy(3, "compare.errors.worse").replace("service: checkout", "service: basket"),
    )
    .expect("renamed policy");
    log_line(
        dir.path(),
        &["policy refused", "renaming a service needs a restart"],
    )
    .await;

    // A valid edit is put in force: the filter's share follows it; the rollout keeps its step.
    std::fs::write(&file, policy(3, "compare.errors.worse")).expect("fixed policy");
    log_line(dir.path(), &["policy reloaded", "generation=1"]).await;
    let after = status(&engine.api).await;
    assert_eq!(after["traffic"]["filter_percent"], 3.0, "{after}");
    assert_eq!(after["step"], 2);
    assert_eq!(after["rollout"]["phase"]["phase"], "shadowing");
    assert!(
        after["nodes"][0]["version"].as_u64() > before["nodes"][0]["version"].as_u64(),
        "Envoy is pushed the new filter config"
    );
}
