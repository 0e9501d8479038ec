//! Builders for MetricsService messages shaped as Envoy sends them, for tests and tools that
//! play an Envoy: one family per metric, labels as `(key, value)` pairs.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::envoy::service::metrics::v3::stream_metrics_message::Identifier;
use envoy_types::pb::io::prometheus::client as prom;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A message; `node` (id, cluster) makes it the first of a stream.
pub fn message(
    node: Option<(&str, &str)>,
    families: Vec<prom::MetricFamily>,
) -> StreamMetricsMessage {
    StreamMetricsMessage {
        identifier: node.map(|(id, cluster)| Identifier {
            node: Some(Node {
                id: id.to_owned(),
                cluster: cluster.to_owned(),
                ..Node::default()
            }),
        }),
        envoy_metrics: families,
    }
}

/// A counter family with one metric of `value`.
pub fn counter(name: &str, labels: &[(&str, &str)], value: f64) -> prom::MetricFamily {
    family(
        name,
        prom::MetricType::Counter,
        prom::Metric {
            label: label_pairs(labels),
            counter: Some(prom::Counter {
                value: Some(value),
                ..prom::Counter::default()
            }),
            ..prom::Metric::default()
        },
    )
}

/// A gauge family with one metric of `value`.
pub fn gauge(name: &str, labels: &[(&str, &str)], value: f64) -> prom::MetricFamily {
    family(
        name,
        prom::MetricType::Gauge,
        prom::Metric {
            label: label_pairs(labels),
            gauge: Some(prom::Gauge { value: Some(value) }),
            ..prom::Metric::default()
        },
    )
}

/// A histogram family as Envoy's sink writes it: one bucket per bound with the count at or
/// below it (cumulative across buckets), no `+Inf` bucket, `count` samples in all.
pub fn histogram(
    name: &str,
    labels: &[(&str, &str)],
    bounds: &[f64],
    cumulative: &[u64],
    count: u64,
    sum: f64,
) -> prom::MetricFamily {
    let bucket = bounds
        .iter()
        .zip(cumulative)
        .map(|(bound, count)| prom::Bucket {
            upper_bound: Some(*bound),
            cumulative_count: Some(*count),
            ..prom::Bucket::default()
        })
        .collect();
    family(
        name,
        prom::MetricType::Histogram,
        prom::Metric {
            label: label_pairs(labels),
            histogram: Some(prom::Histogram {
                sample_count: Some(count),
                sample_sum: Some(sum),
                bucket,
                ..prom::Histogram::default()
            }),
            ..prom::Metric::default()
        },
    )
}

fn family(name: &str, kind: prom::MetricType, metric: prom::Metric) -> prom::MetricFamily {
    prom::MetricFamily {
        name: Some(name.to_owned()),
        r#type: Some(kind as i32),
        metric: vec![metric],
        ..prom::MetricFamily::default()
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<prom::LabelPair> {
    labels
        .iter()
        .map(|(name, value)| prom::LabelPair {
            name: Some((*name).to_owned()),
            value: Some((*value).to_owned()),
        })
        .collect()
}

/// A client codec that sends bytes as they are as gRPC messages and ignores the answer: for a
/// peer that sends pre-encoded messages (a load generator encodes each flush once) or bytes
/// that are not protobuf at all (a test of what the server does with them).
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> BytesCodec {
        BytesCodec
    }

    fn decoder(&mut self) -> BytesCodec {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: bytes::Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, n);
        Ok(Some(()))
    }
}
