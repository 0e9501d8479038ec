//! Split mode in a real Envoy: the share of requests served by the shadow, sticky users, and
//! clients that try to route themselves. What reached which variant is read from the upstreams'
//! own request logs, not from the filter's word.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use doppel_tests::envoy_stack::{Stack, StackSpec, filter_stat};
use doppel_tests::host::support::within_binomial;
use doppel_tests::load::{Spec, drive, failures};
use serde_json::json;

fn is_doppel_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_split_at_one_percent_lands_within_four_sigma_and_tags_every_shadowed_request() {
    let service = "splitshare";
    let stack = Stack::start(StackSpec {
        test: "split_share",
        template: "split.yaml",
        filter_config: json!({"service": service, "mode": "split", "percent": 1.0}),
        primary_args: &[],
        shadow_args: &[],
    })
    .await
    .expect("stack");

    let n = 20_000usize;
    let samples = drive(&stack.client, stack.front, n, 32, |i| {
        Spec::get(format!("/r/{i}"))
    })
    .await;
    let (failed, why) = failures(&samples);
    assert_eq!(failed, 0, "every request succeeds: {why}");

    let primary = stack.primary.requests().expect("primary log");
    let shadow = stack.shadow.requests().expect("shadow log");
    assert_eq!(
        primary.len() + shadow.len(),
        n,
        "each request reached exactly one variant"
    );

    let expected = n as f64 * 0.01;
    let sigma = (n as f64 * 0.01 * 0.99).sqrt();
    let got = shadow.len() as f64;
    assert!(
        (got - expected).abs() <= 4.0 * sigma,
        "shadow got {got} of {n}; expected {expected} +- {:.1}",
        4.0 * sigma
    );
    let served_by_shadow = samples
        .iter()
        .filter(|s| s.version.as_deref() == Some("v2"))
        .count();
    assert_eq!(
        served_by_shadow,
        shadow.len(),
        "clients saw the shadow's answers"
    );

    // Every shadowed request carries the variant header and its own id; primaries carry neither.
    let mut ids = BTreeSet::new();
    for entry in &shadow {
        assert_eq!(
            entry.header("x-doppel-variant"),
            Some("shadow"),
            "{entry:?}"
        );
        let id = entry
            .header("x-doppel-id")
            .expect("shadowed request has an id");
        assert!(is_doppel_id(id), "{id}");
        assert!(ids.insert(id.to_string()), "duplicate id {id}");
        assert!(entry.header("x-request-id").is_some(), "{entry:?}");
    }
    for entry in &primary {
        assert_eq!(entry.header("x-doppel-variant"), None, "{entry:?}");
        assert_eq!(entry.header("x-doppel-id"), None, "{entry:?}");
    }

    // Envoy's access log carries the same id and the variant (from the filter's state).
    let log = stack
        .envoy
        .wait_for_access_log(n, Duration::from_secs(10))
        .await
        .expect("access log");
    assert_eq!(log.len(), n);
    let logged: BTreeMap<String, String> = log
        .iter()
        .filter_map(|e| Some((e.field("doppel_id")?, e.field("doppel_variant")?)))
        .collect();
    for id in &ids {
        assert_eq!(
            logged.get(id).map(String::as_str),
            Some("shadow"),
            "id {id}"
        );
    }
    for entry in log
        .iter()
        .filter(|e| e.field("doppel_variant").as_deref() == Some("shadow"))
    {
        assert_eq!(entry.field("upstream_cluster").as_deref(), Some("shadow"));
    }

    // The filter's own counters agree with what the upstreams saw.
    let stats = stack
        .envoy
        .settled_filter_stats(service)
        .await
        .expect("stats");
    assert_eq!(
        stats.value(&filter_stat(service, "shadow", "rq_total")),
        shadow.len() as u64,
        "{:?}",
        stats.all()
    );
    // The primary is measured on a random sample, by default five times the shadow's share.
    let measured = stats.value(&filter_stat(service, "primary", "rq_total"));
    let (ok, expected, allowed) = within_binomial(primary.len() as u64, 0.05, measured, 4.0);
    assert!(
        ok,
        "{measured} of {} primary requests measured, expected {expected} ± {allowed:.0}: {:?}",
        primary.len(),
        stats.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sticky_users_stay_on_one_variant() {
    let stack = Stack::start(StackSpec {
        test: "split_sticky",
        template: "split.yaml",
        filter_config: json!({
            "service": "sticky", "mode": "split", "percent": 30.0,
            "sticky": {"header": "x-user-id"}
        }),
        primary_args: &[],
        shadow_args: &[],
    })
    .await
    .expect("stack");

    let users = 300usize;
    let rounds = 5usize;
    // Users interleaved: round r sends one request for every user.
    let samples = drive(&stack.client, stack.front, users * rounds, 16, move |i| {
        Spec::get(format!("/u/{}", i / users)).header("x-user-id", format!("user-{}", i % users))
    })
    .await;
    let (failed, why) = failures(&samples);
    assert_eq!(failed, 0, "{why}");

    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut count = 0;
    for entry in stack
        .primary
        .requests()
        .expect("primary")
        .into_iter()
        .chain(stack.shadow.requests().expect("shadow"))
    {
        let user = entry.header("x-user-id").expect("user header").to_string();
        seen.entry(user).or_default().insert(entry.label.clone());
        count += 1;
    }
    assert_eq!(count, users * rounds);
    assert_eq!(seen.len(), users);
    let moved: Vec<_> = seen.iter().filter(|(_, labels)| labels.len() > 1).collect();
    assert!(moved.is_empty(), "users served by both variants: {moved:?}");

    // About 30% of users are on the shadow (4 binomial sigmas over 300 users).
    let on_shadow = seen.values().filter(|l| l.contains("v2")).count() as f64;
    let sigma = (users as f64 * 0.3 * 0.7).sqrt();
    assert!(
        (on_shadow - users as f64 * 0.3).abs() <= 4.0 * sigma,
        "{on_shadow} of {users} users on the shadow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_spoofed_variant_header_never_reaches_the_shadow() {
    let stack = Stack::start(StackSpec {
        test: "split_spoof",
        template: "split.yaml",
        filter_config: json!({"service": "spoof", "mode": "split", "percent": 0.0}),
        primary_args: &[],
        shadow_args: &[],
    })
    .await
    .expect("stack");

    let n = 500;
    let samples = drive(&stack.client, stack.front, n, 16, |i| {
        Spec::get(format!("/s/{i}"))
            .header("x-doppel-variant", "shadow")
            .header("x-doppel-id", "0123456789abcdef0123456789abcdef")
            .header("x-doppel-mirror", "1")
    })
    .await;
    let (failed, why) = failures(&samples);
    assert_eq!(failed, 0, "{why}");
    assert!(samples.iter().all(|s| s.version.as_deref() == Some("v1")));

    let shadow = stack.shadow.requests().expect("shadow log");
    assert!(
        shadow.is_empty(),
        "spoofed requests reached the shadow: {shadow:?}"
    );
    let primary = stack.primary.requests().expect("primary log");
    assert_eq!(primary.len(), n);
    for entry in &primary {
        for name in ["x-doppel-variant", "x-doppel-id", "x-doppel-mirror"] {
            assert_eq!(
                entry.header(name),
                None,
                "{name} was not stripped: {entry:?}"
            );
        }
    }
}
