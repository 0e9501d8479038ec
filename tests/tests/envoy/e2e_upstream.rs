//! The demo upstream as the other end-to-end tests use it: a child process on port 0 whose
//! request log, fault modes and metrics behave as documented.

use std::time::Duration;

use doppel_tests::load::{HttpClient, Spec, drive, failures};
use doppel_tests::procs::RunDir;
use doppel_tests::upstream::DemoUpstream;

#[tokio::test]
async fn e2e_upstream_logs_each_request_and_answers_with_its_label() {
    let dir = RunDir::new("upstream_logs").expect("run dir");
    let up = DemoUpstream::start(&dir, "v7", &[]).expect("upstream");
    let client = HttpClient::new();
    let samples = drive(&client, up.addr(), 40, 4, |i| {
        Spec::get(format!("/item/{i}"))
            .header("x-doppel-id", format!("{i:032x}"))
            .header("x-user-id", format!("u{i}"))
            .header("accept", "text/plain")
    })
    .await;
    let (failed, why) = failures(&samples);
    assert_eq!(failed, 0, "{why}");
    assert!(samples.iter().all(|s| s.version.as_deref() == Some("v7")));

    let log = up.requests().expect("log");
    assert_eq!(log.len(), 40, "one line per request");
    for i in 0..40 {
        let entry = log
            .iter()
            .find(|e| e.path == format!("/item/{i}"))
            .unwrap_or_else(|| panic!("request {i} missing from the log"));
        assert_eq!(entry.method, "GET");
        assert_eq!(entry.label, "v7");
        assert_eq!(
            entry.header("x-doppel-id"),
            Some(format!("{i:032x}").as_str())
        );
        assert_eq!(entry.header("x-user-id"), Some(format!("u{i}").as_str()));
        assert_eq!(
            entry.header("accept"),
            None,
            "only x-* headers and host are logged"
        );
        assert_eq!(entry.outcome, "200");
    }
}

#[tokio::test]
async fn e2e_upstream_faults_change_at_run_time() {
    let dir = RunDir::new("upstream_faults").expect("run dir");
    let up = DemoUpstream::start(&dir, "v1", &["--latency-ms", "40"]).expect("upstream");
    let client = HttpClient::new();
    let url = format!("http://{}/x", up.addr());

    let samples = drive(&client, up.addr(), 10, 2, |_| Spec::get("/slow")).await;
    assert!(
        samples
            .iter()
            .all(|s| s.latency >= Duration::from_millis(40)),
        "the configured latency is applied"
    );

    up.set_fault(&client, r#"{"latency_ms": 0, "error_rate": 1.0}"#)
        .await
        .expect("set errors");
    let (status, body) = client.get(&url).await.expect("answer");
    assert_eq!(status, 500);
    assert!(body.contains("v1"), "{body}");

    up.set_fault(&client, r#"{"error_rate": 0, "mode": "reset"}"#)
        .await
        .expect("set reset");
    let err = client.get(&url).await.expect_err("a reset connection");
    let text = format!("{err:#}").to_lowercase();
    assert!(
        text.contains("reset") || text.contains("closed") || text.contains("incomplete"),
        "{text}"
    );

    up.set_fault(&client, r#"{"mode": "hang", "hang_ms": 300}"#)
        .await
        .expect("set hang");
    let samples = drive(&client, up.addr(), 2, 2, |_| Spec::get("/hang")).await;
    assert!(samples.iter().all(|s| s.status == Some(200)));
    assert!(
        samples
            .iter()
            .all(|s| s.latency >= Duration::from_millis(300))
    );

    assert!(
        up.set_fault(&client, r#"{"error_rate": 2}"#).await.is_err(),
        "an out-of-range fault is refused"
    );

    let outcomes: Vec<String> = up
        .requests()
        .expect("log")
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "500").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| *o == "reset").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| *o == "hang").count(), 2);

    let (status, metrics) = client
        .get(&format!("http://{}/metrics", up.addr()))
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("doppel_demo_requests_total{version=\"v1\"} 14"),
        "{metrics}"
    );
    assert!(
        metrics.contains("doppel_demo_errors_total{version=\"v1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );
}
