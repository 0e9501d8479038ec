//! Issue 2's must-show for stats: what the real filter records in the host matches the
//! requests driven through it, per variant: request, 5xx and reset counts, the latency histogram
//! and the custom `Server-Timing` histograms.

use std::collections::BTreeMap;
use std::time::Duration;

use doppel_tests::host::support::{get, within_binomial};
use doppel_tests::host::{Host, MetricKind};
use doppel_tests::procs::filter_split_wasm;

/// What one variant should show.
#[derive(Default, Debug)]
struct Expected {
    total: i64,
    errors: i64,
    resets: i64,
    latency_us: Vec<u64>,
    db_us: Vec<u64>,
    cache_us: Vec<u64>,
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[test]
fn host_stats_match_the_requests_driven_per_variant() -> anyhow::Result<()> {
    let mut host = Host::load_filter()?;
    let config =
        r#"{"service":"cart","mode":"split","percent":50,"custom_metrics":["db","cache"]}"#;
    assert!(host.configure(config)?, "{:?}", host.logs());
    let mut expected: BTreeMap<&str, Expected> = BTreeMap::new();

    for i in 0..3_000u64 {
        let latency_ms = i % 40 + 1;
        let db = format!("db;dur={}.{}", i % 30, i % 10);
        let timing = format!("{db}, cache;desc=\"hit, warm\";dur=0.25, app;dur=99");
        let exchange = host
            .request(&get("/cart", &[]))?
            .wait(Duration::from_millis(latency_ms))?;
        let variant = match exchange
            .forwarded()
            .and_then(|h| h.get_str("x-doppel-variant"))
        {
            Some(v) if v == "shadow" => "shadow",
            _ => "primary",
        };
        let e = expected.entry(variant).or_default();
        e.total += 1;
        let done = match i % 10 {
            // A 5xx from the upstream itself.
            0 => {
                e.errors += 1;
                e.latency_us.push(latency_ms * 1000);
                exchange.respond(503, &[])?.finish()?
            }
            // Envoy's router answers: the upstream reset, or timed out.
            1 => {
                e.errors += 1;
                e.resets += 1;
                e.latency_us.push(latency_ms * 1000);
                exchange.upstream_reset()?.finish()?
            }
            2 => {
                e.errors += 1;
                e.resets += 1;
                e.latency_us.push(latency_ms * 1000);
                exchange.upstream_timeout()?.finish()?
            }
            // The client went away before any answer.
            3 => {
                e.resets += 1;
                exchange.finish()?
            }
            // An answer with Server-Timing, and one without.
            4..=6 => {
                e.latency_us.push(latency_ms * 1000);
                e.db_us.push((i % 30) * 1000 + (i % 10) * 100);
                e.cache_us.push(250);
                exchange
                    .respond_with_body(200, &[("server-timing", &timing)], b"{}")?
                    .finish()?
            }
            _ => {
                e.latency_us.push(latency_ms * 1000);
                exchange
                    .respond(200, &[("content-type", "application/json")])?
                    .finish()?
            }
        };
        assert_eq!(done.cluster.as_deref(), Some(variant));
    }
    // Counters are kept in the VM and published on the filter's tick.
    host.advance(Duration::from_secs(2))?;
    assert!(host.failure().is_none());

    for variant in ["primary", "shadow"] {
        let e = expected.remove(variant).unwrap_or_default();
        assert!(
            e.total > 1_000,
            "{variant}: only {} requests at 50%",
            e.total
        );
        let name = |stat: &str| format!("doppel.cart.{variant}.{stat}");
        assert_eq!(
            host.counter(&name("rq_total")),
            Some(e.total),
            "{variant} rq_total"
        );
        assert_eq!(
            host.counter(&name("rq_5xx")),
            Some(e.errors),
            "{variant} rq_5xx"
        );
        assert_eq!(
            host.counter(&name("rq_reset")),
            Some(e.resets),
            "{variant} rq_reset"
        );
        let histogram = |stat: &str| host.histogram(&name(stat)).map(|s| sorted(s.to_vec()));
        assert_eq!(
            histogram("rq_time_us"),
            Some(sorted(e.latency_us)),
            "{variant} rq_time_us"
        );
        assert_eq!(
            histogram("custom.db_us"),
            Some(sorted(e.db_us)),
            "{variant} custom.db_us"
        );
        assert_eq!(
            histogram("custom.cache_us"),
            Some(sorted(e.cache_us)),
            "{variant} custom.cache_us"
        );
        assert!(
            host.metric(&name("custom.app_us")).is_none(),
            "app is not configured"
        );
    }
    for (name, metric) in host.metrics() {
        assert_eq!(
            metric.definitions, 1,
            "{name} defined {} times",
            metric.definitions
        );
        assert!(name.starts_with("doppel.cart."), "{name}");
        let parsed = doppel_filter::names::parse_metric(name);
        assert!(
            parsed.is_some(),
            "{name} does not follow the written naming scheme"
        );
        if name.ends_with("_us") {
            assert_eq!(metric.kind, MetricKind::Histogram, "{name}");
        } else {
            assert_eq!(metric.kind, MetricKind::Counter, "{name}");
        }
    }
    Ok(())
}

#[test]
fn host_stats_are_published_when_the_vm_stops() -> anyhow::Result<()> {
    let mut host = Host::load_filter()?;
    assert!(host.configure(
        r#"{"service":"cart","mode":"off","percent":0,"primary_sample_percent":100}"#
    )?);
    for _ in 0..10 {
        host.request(&get("/", &[]))?.respond(200, &[])?.finish()?;
    }
    assert!(host.shutdown()?);
    assert_eq!(host.counter("doppel.cart.primary.rq_total"), Some(10));
    assert_eq!(host.counter("doppel.cart.shadow.rq_total"), Some(0));
    Ok(())
}

/// In a pool (`pool_percent`: Envoy's route runs the filter on that share of requests only), the
/// filter scales its shares to the pool: at 1 % with the primary's default 5 % sample, a pool of
/// 5.95 % holds the chosen requests (1/5.95 of those it sees) and the primary's sample (all the
/// others it sees, each measured).
#[test]
fn host_stats_in_a_pool_choose_and_measure_shares_of_all_requests() -> anyhow::Result<()> {
    let mut host = Host::load(filter_split_wasm())?;
    let config = r#"{"service":"cart","mode":"split","percent":1,"strip_control":"envoy","pool_percent":5.95}"#;
    assert!(host.configure(config)?, "{:?}", host.logs());
    let n = 10_000u64;
    let mut shadow = 0u64;
    for _ in 0..n {
        let done = host
            .request(&get("/cart", &[]))?
            .respond_with_body(200, &[], b"ok")?
            .finish()?;
        shadow += u64::from(done.cluster.as_deref() == Some("shadow"));
    }
    host.advance(Duration::from_secs(2))?;
    let counter = |name: &str| host.counter(&format!("doppel.cart.{name}")).unwrap_or(0);
    let (ok, expected, allowed) = within_binomial(n, 1.0 / 5.95, shadow, 4.0);
    assert!(
        ok,
        "{shadow} of {n} pool requests chosen, expected {expected} ± {allowed:.0}"
    );
    assert_eq!(counter("shadow.rq_total"), shadow as i64);
    assert_eq!(
        counter("primary.rq_total"),
        (n - shadow) as i64,
        "every unchosen request of the pool is the primary's sample"
    );
    Ok(())
}

/// The primary is measured on a random sample (`primary_sample_percent`), the shadow on every
/// request: the sample's error rate estimates the primary's, and an unmeasured request leaves no
/// trace in any stat.
#[test]
fn host_stats_measure_a_sample_of_the_primary_and_all_of_the_shadow() -> anyhow::Result<()> {
    let mut host = Host::load_filter()?;
    let config = r#"{"service":"cart","mode":"split","percent":5,"primary_sample_percent":20}"#;
    assert!(host.configure(config)?, "{:?}", host.logs());
    let n = 20_000u64;
    let (mut primary, mut shadow, mut shadow_errors) = (0u64, 0u64, 0i64);
    for i in 0..n {
        let exchange = host.request(&get("/cart", &[]))?;
        let is_shadow = exchange
            .forwarded()
            .and_then(|h| h.get_str("x-doppel-variant"))
            .is_some_and(|v| v == "shadow");
        // Every fourth request fails, whichever variant it went to.
        let status = if i % 4 == 0 { 503 } else { 200 };
        exchange.respond(status, &[])?.finish()?;
        if is_shadow {
            shadow += 1;
            shadow_errors += i64::from(status == 503);
        } else {
            primary += 1;
        }
    }
    host.advance(Duration::from_secs(2))?;
    let counter = |name: &str| host.counter(&format!("doppel.cart.{name}")).unwrap_or(0);
    let latencies = |name: &str| {
        host.histogram(&format!("doppel.cart.{name}.rq_time_us"))
            .map_or(0, |h| h.len()) as i64
    };

    assert_eq!(
        counter("shadow.rq_total"),
        shadow as i64,
        "the shadow is measured in full"
    );
    assert_eq!(counter("shadow.rq_5xx"), shadow_errors);
    assert_eq!(latencies("shadow"), shadow as i64);

    let measured = counter("primary.rq_total");
    let (ok, expected, allowed) = within_binomial(primary, 0.2, measured as u64, 4.0);
    assert!(
        ok,
        "{measured} of {primary} primary requests measured, expected {expected} ± {allowed:.0}"
    );
    assert_eq!(
        latencies("primary"),
        measured,
        "one latency per measured request"
    );
    let errors = counter("primary.rq_5xx");
    let (ok, expected, allowed) = within_binomial(measured as u64, 0.25, errors as u64, 4.0);
    assert!(
        ok,
        "{errors} errors among {measured} measured, expected {expected} ± {allowed:.0}"
    );
    Ok(())
}
