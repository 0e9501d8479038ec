//! The `doppel serve` HTTP API: state changes need the bearer token, errors say why, and the
//! token never reaches the log.

use doppel_engine::cli::client::request;
use doppel_tests::rollout_support::{Engine, TOKEN, free_port, policy_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_api_guards_state_changes_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policy.yaml"), policy_yaml(&[(10.0, "1m")])).expect("policy");
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        "steering: filter_only\nfilter: { kind: wasm, path: /unused/doppel.wasm }\nnodes: [api-test]\nservices:\n  - policy: policy.yaml\n",
    )
    .expect("config");
    let engine = Engine::start(dir.path(), &config, &dir.path().join("s.redb"), free_port())
        .expect("doppel serve");
    let api = engine.api.to_string();
    let start = Some(r#"{"version":"v2"}"#.to_owned());
    let path = "/v1/rollouts/checkout/start";

    let none = request(&api, "POST", path, None, start.clone())
        .await
        .expect("answer");
    assert_eq!(none.status, 401, "{}", none.body);
    let wrong = request(
        &api,
        "POST",
        path,
        Some("rollout-test-tokeN"),
        start.clone(),
    )
    .await
    .expect("answer");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let status = request(&api, "GET", "/v1/rollouts/checkout", None, None)
        .await
        .expect("answer");
    assert_eq!(status.status, 200, "reads are open");
    assert!(status.body.contains("\"pending\""), "{}", status.body);

    let ok = request(&api, "POST", path, Some(TOKEN), start.clone())
        .await
        .expect("answer");
    assert_eq!(ok.status, 200, "{}", ok.body);
    let again = request(&api, "POST", path, Some(TOKEN), start)
        .await
        .expect("answer");
    assert_eq!(again.status, 409, "one rollout at a time: {}", again.body);
    // An unauthenticated pause is refused and changes nothing.
    for token in [None, Some("rollout-test-tokeN")] {
        let pause = request(&api, "POST", "/v1/rollouts/checkout/pause", token, None)
            .await
            .expect("answer");
        assert_eq!(pause.status, 401, "{}", pause.body);
    }
    let still = request(&api, "GET", "/v1/rollouts/checkout", None, None)
        .await
        .expect("answer");
    assert!(still.body.contains("shadowing"), "{}", still.body);
    assert!(again.body.contains("shadowing"), "{}", again.body);
    let unknown = request(&api, "POST", "/v1/rollouts/nope/pause", Some(TOKEN), None)
        .await
        .expect("answer");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let bad = request(
        &api,
        "POST",
        "/v1/rollouts/checkout/events",
        Some(TOKEN),
        Some("{}".into()),
    )
    .await
    .expect("answer");
    assert_eq!(bad.status, 400, "{}", bad.body);

    // `wait` reports a pause with its own exit code.
    let out = engine.cli(&["pause", "checkout"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        engine
            .cli(&["wait", "checkout", "--timeout", "5s"])
            .status
            .code(),
        Some(3)
    );
    assert!(
        !engine.log_tail().contains(TOKEN),
        "the token is never logged"
    );
}
