use doppel_filter::names::Variant::{Primary, Shadow};
use envoy_types::pb::io::prometheus::client as prom;
use proptest::prelude::*;

use super::*;
use crate::ingest::wire::{counter, gauge, histogram, message};

fn registry() -> ClusterRegistry {
    ClusterRegistry::new()
        .with("cart_v1", "cart", Primary)
        .with("cart_v2", "cart", Shadow)
        .with("outbound|80||pay.default.svc", "pay", Shadow)
}

fn convert(families: Vec<prom::MetricFamily>) -> Flush {
    Flush::from_message(message(None, families), &registry())
}

/// The single update of a one-metric message, or its single error's code.
fn one(family: prom::MetricFamily) -> Result<Update, &'static str> {
    let flush = convert(vec![family]);
    match (flush.updates.as_slice(), flush.rejected.as_slice()) {
        ([update], []) => Ok(update.clone()),
        ([], [error]) => Err(error.code()),
        other => panic!("expected one outcome, got {other:?}"),
    }
}

fn count_update(service: &str, field: Field, n: u64) -> Update {
    Update {
        service: service.to_owned(),
        field,
        value: Value::Count(n),
    }
}

const CLUSTER: &str = "envoy.cluster_name";

#[test]
fn filter_counters_map_to_variant_and_mirror_fields() {
    let cases = [
        (
            "wasmcustom.doppel.shop.primary.rq_total",
            Field::Requests(Primary),
        ),
        (
            "wasmcustom.doppel.shop.shadow.rq_5xx",
            Field::Errors5xx(Shadow),
        ),
        (
            "wasmcustom.doppel.shop.shadow.rq_reset",
            Field::Resets(Shadow),
        ),
        (
            "wasmcustom.doppel.shop.mirror.sent",
            Field::Mirror(MirrorStat::Sent),
        ),
        (
            "wasmcustom.doppel.shop.mirror.compared",
            Field::Mirror(MirrorStat::Compared),
        ),
        (
            "wasmcustom.doppel.shop.mirror.mismatch_body",
            Field::Mirror(MirrorStat::MismatchBody),
        ),
        (
            "wasmcustom.doppel.shop.mirror.skipped_method",
            Field::Mirror(MirrorStat::Skipped),
        ),
        (
            "wasmcustom.doppel.shop.mirror.dropped_in_flight",
            Field::Mirror(MirrorStat::Skipped),
        ),
        (
            "doppel.shop.mirror.failed",
            Field::Mirror(MirrorStat::Failed),
        ),
    ];
    for (name, field) in cases {
        assert_eq!(
            one(counter(name, &[], 7.0)),
            Ok(count_update("shop", field, 7)),
            "{name}"
        );
    }
}

#[test]
fn filter_histograms_are_decumulated_and_converted_to_milliseconds() {
    // Envoy's sink: cumulative counts at or below each bound, in microseconds, no +Inf bucket.
    let family = histogram(
        "wasmcustom.doppel.shop.shadow.rq_time_us",
        &[],
        &[500.0, 1000.0, 5000.0],
        &[2, 5, 9],
        10,
        21_000.0,
    );
    let update = one(family).unwrap();
    assert_eq!(update.field, Field::Latency(Shadow));
    assert_eq!(
        update.value,
        Value::Histogram(Histogram {
            bounds: vec![0.5, 1.0, 5.0],
            counts: vec![2, 3, 4, 1],
            sum: 21.0,
        })
    );
    let custom = histogram(
        "wasmcustom.doppel.shop.primary.custom.db_us",
        &[],
        &[1000.0],
        &[1],
        1,
        800.0,
    );
    assert_eq!(
        one(custom).unwrap().field,
        Field::Custom(Primary, "db".to_owned())
    );
}

#[test]
fn tagged_cluster_stats_map_through_the_registry() {
    let total = counter("cluster.upstream_rq_total", &[(CLUSTER, "cart_v2")], 40.0);
    assert_eq!(
        one(total),
        Ok(count_update("cart", Field::Requests(Shadow), 40))
    );
    let errors = counter(
        "cluster.upstream_rq_xx",
        &[(CODE_CLASS_LABEL, "5"), (CLUSTER, "cart_v1")],
        3.0,
    );
    assert_eq!(
        one(errors),
        Ok(count_update("cart", Field::Errors5xx(Primary), 3))
    );
    let ok_class = counter(
        "cluster.upstream_rq_xx",
        &[(CODE_CLASS_LABEL, "2"), (CLUSTER, "cart_v1")],
        3.0,
    );
    assert_eq!(one(ok_class), Err("unknown_metric"));
    let timeouts = counter(
        "cluster.upstream_rq_timeout",
        &[(CLUSTER, "outbound|80||pay.default.svc")],
        1.0,
    );
    assert_eq!(
        one(timeouts),
        Ok(count_update("pay", Field::Resets(Shadow), 1))
    );
    let time = histogram(
        "cluster.upstream_rq_time",
        &[(CLUSTER, "cart_v1")],
        &[1.0, 5.0],
        &[1, 1],
        2,
        9.0,
    );
    let update = one(time).unwrap();
    assert_eq!(update.field, Field::Latency(Primary));
    assert_eq!(
        update.value,
        Value::Histogram(Histogram {
            bounds: vec![1.0, 5.0],
            counts: vec![1, 0, 1],
            sum: 9.0
        })
    );
}

#[test]
fn plain_cluster_stats_carry_the_cluster_in_the_name() {
    let errors = counter("cluster.cart_v2.upstream_rq_5xx", &[], 2.0);
    assert_eq!(
        one(errors),
        Ok(count_update("cart", Field::Errors5xx(Shadow), 2))
    );
    let dotted = counter(
        "cluster.outbound|80||pay.default.svc.upstream_rq_rx_reset",
        &[],
        4.0,
    );
    assert_eq!(
        one(dotted),
        Ok(count_update("pay", Field::Resets(Shadow), 4))
    );
}

#[test]
fn names_doppel_does_not_read_are_ignored_with_a_code() {
    let cases = [
        (counter("server.uptime", &[], 1.0), "unknown_metric"),
        (
            counter("cluster.upstream_cx_total", &[(CLUSTER, "cart_v1")], 1.0),
            "unknown_metric",
        ),
        (
            counter("wasmcustom.doppel.shop.primary.rq_teapot", &[], 1.0),
            "unknown_metric",
        ),
        (
            counter("wasmcustom.doppel.shop.canary.rq_total", &[], 1.0),
            "unknown_metric",
        ),
        (
            counter(
                "cluster.upstream_rq_total",
                &[(CLUSTER, "metrics_sink")],
                1.0,
            ),
            "unmapped_cluster",
        ),
        (
            counter("cluster.other.upstream_rq_total", &[], 1.0),
            "unmapped_cluster",
        ),
        // cart is judged on its clusters: the filter's request counts would count twice.
        (
            counter("wasmcustom.doppel.cart.primary.rq_total", &[], 1.0),
            "superseded",
        ),
    ];
    for (family, code) in cases {
        let name = family.name.clone();
        let flush = convert(vec![family]);
        assert!(flush.updates.is_empty(), "{name:?}");
        assert_eq!(flush.rejected.len(), 1);
        assert_eq!(flush.rejected[0].code(), code, "{name:?}");
        assert!(flush.rejected[0].is_ignorable());
    }
    // The filter's mirror and custom metrics of such a service are still read.
    assert!(one(counter("wasmcustom.doppel.cart.mirror.sent", &[], 1.0)).is_ok());
}

#[test]
fn malformed_counters_are_rejected_by_code() {
    let name = "wasmcustom.doppel.shop.primary.rq_total";
    let cases = [
        (counter(name, &[], -1.0), "negative_value"),
        (counter(name, &[], f64::NAN), "not_finite"),
        (counter(name, &[], f64::INFINITY), "not_finite"),
        (counter(name, &[], 2.5), "not_an_integer"),
        (counter(name, &[], 1e300), "too_large"),
        (counter(name, &[], (MAX_COUNT + 1) as f64), "too_large"),
        (gauge(name, &[], 3.0), "wrong_type"),
        (
            counter("wasmcustom.doppel.shop.primary.rq_time_us", &[], 3.0),
            "wrong_type",
        ),
        (
            counter("wasmcustom.doppel.Shop!.primary.rq_total", &[], 1.0),
            "invalid_service",
        ),
        (
            counter("cluster.upstream_rq_total", &[], 1.0),
            "missing_label",
        ),
        (
            counter("cluster.upstream_rq_xx", &[(CLUSTER, "cart_v1")], 1.0),
            "missing_label",
        ),
    ];
    for (family, code) in cases {
        let debug = format!("{family:?}");
        let result = one(family);
        assert_eq!(result.map(|_| ()), Err(code), "{debug}");
    }
    assert_eq!(
        one(counter(name, &[], MAX_COUNT as f64)).unwrap().value,
        Value::Count(MAX_COUNT)
    );
}

#[test]
fn malformed_families_are_rejected_by_code() {
    let mut no_name = counter("x", &[], 1.0);
    no_name.name = None;
    let mut strange_type = counter("wasmcustom.doppel.shop.primary.rq_total", &[], 1.0);
    strange_type.r#type = Some(42);
    let mut no_value = counter("wasmcustom.doppel.shop.primary.rq_total", &[], 1.0);
    no_value.metric[0].counter = None;
    let mut no_histogram = histogram(
        "cluster.upstream_rq_time",
        &[(CLUSTER, "cart_v1")],
        &[],
        &[],
        0,
        0.0,
    );
    no_histogram.metric[0].histogram = None;
    for (family, code) in [
        (no_name, "missing_name"),
        (strange_type, "unknown_type"),
        (no_value, "missing_value"),
        (no_histogram, "missing_value"),
    ] {
        assert_eq!(one(family).map(|_| ()), Err(code));
    }
}

#[test]
fn malformed_histograms_are_rejected_by_code() {
    let name = "wasmcustom.doppel.shop.primary.rq_time_us";
    let h = |bounds: &[f64], cumulative: &[u64], count: u64, sum: f64| {
        histogram(name, &[], bounds, cumulative, count, sum)
    };
    let mut native = h(&[1.0], &[1], 1, 1.0);
    native.metric[0].histogram.as_mut().unwrap().schema = Some(3);
    let mut float = h(&[1.0], &[1], 1, 1.0);
    float.metric[0]
        .histogram
        .as_mut()
        .unwrap()
        .sample_count_float = Some(1.0);
    let mut no_count = h(&[1.0], &[1], 1, 1.0);
    no_count.metric[0].histogram.as_mut().unwrap().sample_count = None;
    let many: Vec<f64> = (1..=65).map(f64::from).collect();
    let cases = [
        (h(&[1.0, 2.0], &[5, 3], 5, 1.0), "bad_histogram"),
        (h(&[2.0, 1.0], &[1, 2], 2, 1.0), "bad_histogram"),
        (h(&[1.0, 1.0], &[1, 2], 2, 1.0), "bad_histogram"),
        (h(&[1.0, f64::NAN], &[1, 2], 2, 1.0), "bad_histogram"),
        (h(&[1.0, 2.0], &[1, 2], 1, 1.0), "bad_histogram"),
        (h(&[1.0, f64::INFINITY], &[1, 2], 3, 1.0), "bad_histogram"),
        (h(&[f64::INFINITY, 1.0], &[2, 2], 2, 1.0), "bad_histogram"),
        (h(&[1.0], &[1], 1, -4.0), "negative_value"),
        (h(&[1.0], &[1], 1, f64::NAN), "not_finite"),
        (h(&[1.0], &[1], 1, 1e300), "too_large"),
        (h(&[1.0], &[1], 1 << 50, 1.0), "too_large"),
        (h(&many, &[0; 65], 0, 0.0), "unsupported_histogram"),
        (native, "unsupported_histogram"),
        (float, "unsupported_histogram"),
        (no_count, "missing_value"),
        (counter(name, &[], 1.0), "wrong_type"),
    ];
    for (family, code) in cases {
        let debug = format!("{family:?}");
        assert_eq!(one(family).map(|_| ()), Err(code), "{debug}");
    }
    // A Prometheus-style +Inf bucket that agrees with the count is fine.
    let with_inf = one(h(&[1.0, f64::INFINITY], &[1, 3], 3, 1.0)).unwrap();
    assert_eq!(
        with_inf.value,
        Value::Histogram(Histogram {
            bounds: vec![0.001],
            counts: vec![1, 2],
            sum: 0.001
        })
    );
}

#[test]
fn one_bad_metric_does_not_spoil_its_message() {
    let flush = Flush::from_message(
        message(
            Some(("envoy-a", "edge")),
            vec![
                counter("wasmcustom.doppel.shop.primary.rq_total", &[], 10.0),
                counter("wasmcustom.doppel.shop.primary.rq_5xx", &[], f64::NAN),
                counter("server.uptime", &[], 3.0),
                counter("wasmcustom.doppel.shop.shadow.rq_total", &[], 2.0),
            ],
        ),
        &registry(),
    );
    assert_eq!(flush.node.as_deref(), Some("envoy-a/edge"));
    assert_eq!(
        flush.updates,
        vec![
            count_update("shop", Field::Requests(Primary), 10),
            count_update("shop", Field::Requests(Shadow), 2),
        ]
    );
    let codes: Vec<_> = flush.rejected.iter().map(IngestError::code).collect();
    assert_eq!(codes, ["not_finite", "unknown_metric"]);
}

#[test]
fn every_error_code_is_listed() {
    let errors = [
        IngestError::MissingName,
        IngestError::MissingNode,
        IngestError::StaleWindow {
            service: "s".into(),
            start_ms: 0,
        },
        IngestError::Stream {
            message: "m".into(),
        },
    ];
    for error in errors {
        assert!(
            IngestError::CODES.contains(&error.code()),
            "{}",
            error.code()
        );
    }
}

proptest! {
    /// Whatever buckets a peer sends, conversion never panics, and what it accepts is a
    /// well-formed histogram that keeps every sample.
    #[test]
    fn any_histogram_converts_to_a_well_formed_one_or_an_error(
        bounds in proptest::collection::vec(prop_oneof![any::<f64>(), 0.0..1e6f64], 0..8),
        cumulative in proptest::collection::vec(0u64..1000, 0..8),
        count in 0u64..2000,
        sum in prop_oneof![any::<f64>(), 0.0..1e9f64],
    ) {
        let n = bounds.len().min(cumulative.len());
        let family = histogram("cluster.upstream_rq_time", &[(CLUSTER, "cart_v1")], &bounds[..n], &cumulative[..n], count, sum);
        if let Ok(update) = one(family) {
            let Value::Histogram(h) = update.value else { panic!("not a histogram") };
            prop_assert_eq!(h.counts.len(), h.bounds.len() + 1);
            prop_assert_eq!(h.total(), count);
            prop_assert!(h.bounds.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(h.sum.is_finite() && h.sum >= 0.0);
        }
    }
}
