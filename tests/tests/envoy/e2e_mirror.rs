//! Mirror mode in a real Envoy: which requests are copied to the shadow (read from the shadow's
//! own request log), how copies are tagged and joined to Envoy's access log, and how the filter
//! counts the comparison of the two answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use doppel_tests::envoy_stack::{Stack, StackSpec, filter_stat};
use doppel_tests::load::{Spec, drive, failures};
use hyper::Method;
use serde_json::json;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn is_doppel_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mirror_copies_only_allowed_methods_each_with_an_id_found_in_the_access_log() {
    copies_only_allowed_methods(Sender::Filter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mirror_sent_by_envoy_copies_the_same_requests_tagged_the_same_way() {
    copies_only_allowed_methods(Sender::Envoy).await;
}

/// Who sends the copies (`mirror.sender`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sender {
    Filter,
    Envoy,
}

/// Mirrors every request of five methods (a fifth of them GETs) and checks what the shadow,
/// the primary, the access log and the stats saw.
async fn copies_only_allowed_methods(sender: Sender) {
    let (service, test, mirror) = match sender {
        Sender::Filter => (
            "mirrormix",
            "mirror_methods",
            json!({"cluster": "shadow", "timeout_ms": 2000, "max_in_flight": 1000}),
        ),
        Sender::Envoy => (
            "mirrorenvoy",
            "mirror_envoy",
            json!({"cluster": "shadow", "sender": "envoy"}),
        ),
    };
    let stack = Stack::start(StackSpec {
        test,
        template: "mirror.yaml",
        filter_config: json!({
            "service": service, "mode": "mirror", "percent": 100.0, "mirror": mirror
        }),
        primary_args: &[],
        shadow_args: &[],
    })
    .await
    .expect("stack");

    let n = 1000usize;
    let samples = drive(&stack.client, stack.front, n, 8, |i| {
        let method = METHODS[i % METHODS.len()].clone();
        // Every client names a cluster itself: the filter must strip it, or the mirror route
        // would copy the methods it refuses too.
        let spec =
            Spec::new(method.clone(), format!("/m/{i}")).header("x-doppel-mirror-to", "shadow");
        if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
            spec.header("content-type", "application/json")
                .body(format!("{{\"n\":{i}}}"))
        } else {
            spec
        }
    })
    .await;
    let (failed, why) = failures(&samples);
    assert_eq!(failed, 0, "every client request succeeds: {why}");
    assert!(samples.iter().all(|s| s.version.as_deref() == Some("v1")));

    let gets = n / METHODS.len();
    let primary = stack.primary.requests().expect("primary log");
    assert_eq!(primary.len(), n, "the primary serves everything");
    assert!(
        primary
            .iter()
            .all(|e| e.header("x-doppel-mirror").is_none())
    );

    let shadow = stack
        .shadow
        .wait_for_requests(gets, Duration::from_secs(20))
        .await
        .expect("shadow log");
    let shadow = {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = stack.shadow.requests().expect("shadow log");
        assert_eq!(later.len(), shadow.len(), "no copy arrives late");
        later
    };
    let methods: BTreeSet<&str> = shadow.iter().map(|e| e.method.as_str()).collect();
    assert_eq!(
        methods,
        BTreeSet::from(["GET"]),
        "only allowed methods are copied"
    );
    assert_eq!(shadow.len(), gets, "at 100% every GET is copied once");

    let mut copies: BTreeMap<String, String> = BTreeMap::new();
    for entry in &shadow {
        assert_eq!(entry.header("x-doppel-mirror"), Some("1"), "{entry:?}");
        assert_eq!(entry.header("x-doppel-mirror-to"), None, "{entry:?}");
        let id = entry.header("x-doppel-id").expect("a copy carries its id");
        assert!(is_doppel_id(id), "{id}");
        assert!(
            copies.insert(id.to_string(), entry.path.clone()).is_none(),
            "duplicate id {id}"
        );
    }

    // Each copy's id is on the access log line of the request it copies.
    let log = stack
        .envoy
        .wait_for_access_log(n, Duration::from_secs(10))
        .await
        .expect("access log");
    assert_eq!(log.len(), n);
    let by_id: BTreeMap<String, _> = log
        .iter()
        .filter_map(|e| Some((e.field("doppel_id")?, e)))
        .collect();
    for (id, path) in &copies {
        let line = by_id
            .get(id)
            .unwrap_or_else(|| panic!("copy id {id} ({path}) is in no access log line"));
        assert_eq!(line.field("path").as_deref(), Some(path.as_str()));
        assert_eq!(line.field("method").as_deref(), Some("GET"));
        assert_eq!(line.field("doppel_variant").as_deref(), Some("primary"));
        assert_eq!(line.field("upstream_cluster").as_deref(), Some("primary"));
    }

    let stats = stack
        .envoy
        .settled_filter_stats(service)
        .await
        .expect("stats");
    let stat = |scope: &str, name: &str| stats.value(&filter_stat(service, scope, name));
    assert_eq!(stat("mirror", "sent"), gets as u64, "{:?}", stats.all());
    assert_eq!(
        stat("mirror", "skipped_method"),
        (n - gets) as u64,
        "{:?}",
        stats.all()
    );
    assert_eq!(stat("mirror", "failed"), 0, "{:?}", stats.all());
    match sender {
        Sender::Filter => {
            assert_eq!(stat("mirror", "compared"), gets as u64, "{:?}", stats.all());
            // The request itself never learns its copy's id.
            assert!(primary.iter().all(|e| e.header("x-doppel-id").is_none()));
        }
        Sender::Envoy => {
            // Nothing to compare in the filter: the shadow is judged on its cluster's stats.
            assert_eq!(stat("mirror", "compared"), 0, "{:?}", stats.all());
            let envoy = stack.envoy.stats("cluster.shadow.").await.expect("stats");
            assert_eq!(
                envoy.value("cluster.shadow.upstream_rq_total"),
                gets as u64,
                "{:?}",
                envoy.all()
            );
            // The request and its copy carry the same id; the request also names the cluster.
            for entry in &primary {
                let id = entry.header("x-doppel-id");
                match copies.get(id.unwrap_or_default()) {
                    Some(path) => {
                        assert_eq!(&entry.path, path);
                        assert_eq!(entry.header("x-doppel-mirror-to"), Some("shadow"));
                    }
                    None => {
                        assert_ne!(entry.method, "GET", "{entry:?}");
                        assert_eq!(id, None, "{entry:?}");
                        assert_eq!(entry.header("x-doppel-mirror-to"), None, "{entry:?}");
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_shadow_answering_500_shows_in_mismatch_stats_and_an_identical_one_does_not() {
    let service = "mismatch";
    let stack = Stack::start(StackSpec {
        test: "mirror_mismatch",
        template: "mirror.yaml",
        filter_config: json!({
            "service": service, "mode": "mirror", "percent": 100.0,
            "mirror": {"cluster": "shadow", "timeout_ms": 2000, "max_in_flight": 1000}
        }),
        primary_args: &[],
        shadow_args: &[],
    })
    .await
    .expect("stack");
    let stat = |stats: &doppel_tests::envoy::Stats, name: &str| {
        stats.value(&filter_stat(service, "mirror", name))
    };
    let n = 300usize;

    // Phase 1: the shadow behaves exactly like the primary.
    let samples = drive(&stack.client, stack.front, n, 8, |i| {
        Spec::get(format!("/same/{i}"))
    })
    .await;
    assert_eq!(failures(&samples).0, 0);
    stack
        .shadow
        .wait_for_requests(n, Duration::from_secs(20))
        .await
        .expect("shadow log");
    let same = stack
        .envoy
        .settled_filter_stats(service)
        .await
        .expect("stats");
    assert_eq!(stat(&same, "compared"), n as u64, "{:?}", same.all());
    for kind in ["mismatch_status", "mismatch_body", "mismatch_latency"] {
        assert_eq!(stat(&same, kind), 0, "{kind}: {:?}", same.all());
    }

    // Phase 2: the shadow answers 500 to everything; the clients still get the primary's 200.
    stack
        .shadow
        .set_fault(&stack.client, r#"{"error_rate": 1.0}"#)
        .await
        .expect("fault");
    let samples = drive(&stack.client, stack.front, n, 8, |i| {
        Spec::get(format!("/broken/{i}"))
    })
    .await;
    let (failed, why) = failures(&samples);
    assert_eq!(failed, 0, "the shadow's 500s never reach clients: {why}");
    let shadow = stack
        .shadow
        .wait_for_requests(2 * n, Duration::from_secs(20))
        .await
        .expect("shadow log");
    assert_eq!(shadow.iter().filter(|e| e.outcome == "500").count(), n);
    let broken = stack
        .envoy
        .settled_filter_stats(service)
        .await
        .expect("stats");
    assert_eq!(
        stat(&broken, "compared"),
        2 * n as u64,
        "{:?}",
        broken.all()
    );
    assert_eq!(
        stat(&broken, "mismatch_status"),
        n as u64,
        "{:?}",
        broken.all()
    );
    assert_eq!(
        broken.value(&filter_stat(service, "shadow", "rq_5xx")),
        n as u64,
        "{:?}",
        broken.all()
    );
}
