//! The MetricsService message as the server decodes it: the node in full, each metric family
//! left as its bytes until its name says doppel reads it.
//!
//! An Envoy sends hundreds of families per flush, of which doppel reads a few dozen; decoding
//! all of them into `MetricFamily` values costs several allocations per family (name, metric
//! list, labels), and under load the allocator was most of the engine's time (BENCHMARKS.md,
//! "Ingestion"). Here a family's name is read from its bytes in place; a name doppel does not
//! read ([`convert::may_read`]) becomes its `unknown_metric` error without decoding the rest, and
//! only the others are decoded and converted as before. A family without a readable name is
//! decoded in full, so a malformed one fails exactly as it did.

use std::marker::PhantomData;

use bytes::Bytes;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::envoy::service::metrics::v3::stream_metrics_message::Identifier;
use envoy_types::pb::io::prometheus::client as prom;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::convert;
use super::error::IngestError;

/// `StreamMetricsMessage` with its families undecoded: the same fields and tags.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawMessage {
    /// The sender's identifier (the stream's first message only).
    #[prost(message, optional, tag = "1")]
    pub identifier: Option<Identifier>,
    /// Each `io.prometheus.client.MetricFamily`, encoded.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub envoy_metrics: Vec<Bytes>,
}

impl RawMessage {
    /// The message with the families doppel may read decoded, and an `unknown_metric` error for
    /// each of the others. Fails when a family that has to be decoded does not decode.
    pub fn triage(self) -> Result<(StreamMetricsMessage, Vec<IngestError>), prost::DecodeError> {
        let RawMessage {
            identifier,
            envoy_metrics,
        } = self;
        let mut families = Vec::new();
        let mut unread = Vec::new();
        for family in envoy_metrics {
            match family_name(&family) {
                Some(name) if !convert::may_read(name) => {
                    unread.push(IngestError::UnknownMetric {
                        name: name.to_owned(),
                    });
                }
                _ => families.push(prom::MetricFamily::decode(family)?),
            }
        }
        let message = StreamMetricsMessage {
            identifier,
            envoy_metrics: families,
        };
        Ok((message, unread))
    }
}

/// The `name` (field 1) of an encoded `MetricFamily`, the last one as protobuf has it; `None`
/// when it has none, or it is not UTF-8, or the bytes do not parse.
fn family_name(mut bytes: &[u8]) -> Option<&str> {
    let mut name = None;
    while !bytes.is_empty() {
        let (tag, wire_type) = decode_key(&mut bytes).ok()?;
        if tag == 1 && wire_type == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
            let (value, rest) = bytes.split_at_checked(len)?;
            name = Some(std::str::from_utf8(value).ok()?);
            bytes = rest;
        } else {
            skip_field(wire_type, tag, &mut bytes, DecodeContext::default()).ok()?;
        }
    }
    name
}

/// The gRPC codec of doppel's client-streaming servers (MetricsService, AccessLogService):
/// encodes the answer, an `A`. The servers read the request's messages themselves
/// (`super::body`) and decode each with its own type's `decode`; tonic's reading of a stream,
/// which this codec's decoder serves, is not used there, and asks for no buffer.
#[derive(Debug)]
pub struct RawCodec<A>(PhantomData<A>);

impl<A> RawCodec<A> {
    /// The codec answering with an `A`.
    pub fn new() -> Self {
        RawCodec(PhantomData)
    }
}

impl<A> Default for RawCodec<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Message + Send + 'static> Codec for RawCodec<A> {
    type Encode = A;
    type Decode = RawMessage;
    type Encoder = RawCodec<A>;
    type Decoder = RawCodec<A>;

    fn encoder(&mut self) -> RawCodec<A> {
        RawCodec::new()
    }

    fn decoder(&mut self) -> RawCodec<A> {
        RawCodec::new()
    }
}

impl<A: Message> Encoder for RawCodec<A> {
    type Item = A;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

impl<A> Decoder for RawCodec<A> {
    type Item = RawMessage;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        // tonic allocates the buffer size per stream up front (8 KiB by default); the yield
        // threshold (tonic's default) only matters when encoding.
        BufferSettings::new(0, 32 * 1024)
    }

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawMessage>, Status> {
        RawMessage::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::convert::Flush;
    use crate::ingest::fleet;
    use crate::ingest::wire::{counter, message};

    /// The same message through [`RawMessage`] and through the full decode converts the same.
    fn both_ways(message: &StreamMetricsMessage) -> (Flush, Flush) {
        let registry = fleet::registry();
        let full = Flush::from_message(message.clone(), &registry);
        let raw = RawMessage::decode(message.encode_to_vec().as_slice()).unwrap();
        let (decoded, unread) = raw.triage().unwrap();
        let mut lazy = Flush::from_message(decoded, &registry);
        lazy.rejected.extend(unread);
        (full, lazy)
    }

    #[test]
    fn raw_triage_converts_a_fleet_flush_as_the_full_decode_does() {
        let message = fleet::flush(3).message(Some(fleet::node("envoy-1")));
        let (full, lazy) = both_ways(&message);
        assert_eq!(lazy.node, full.node);
        assert_eq!(lazy.updates, full.updates);
        let codes = |f: &Flush| {
            let mut codes: Vec<_> = f.rejected.iter().map(IngestError::code).collect();
            codes.sort_unstable();
            codes
        };
        assert_eq!(codes(&lazy), codes(&full));
        assert_eq!(lazy.rejected.len(), 412 - 31);
    }

    #[test]
    fn raw_family_name_reads_the_last_name_and_refuses_what_does_not_parse() {
        let mut family = counter("server.uptime", &[], 1.0);
        let bytes = family.encode_to_vec();
        assert_eq!(family_name(&bytes), Some("server.uptime"));
        // Protobuf takes the last value of a repeated scalar field.
        let mut twice = bytes.clone();
        family.name = Some("cluster.upstream_rq_total".to_owned());
        twice.extend(family.encode_to_vec());
        assert_eq!(family_name(&twice), Some("cluster.upstream_rq_total"));
        assert_eq!(family_name(&bytes[..bytes.len() - 1]), None);
        assert_eq!(family_name(&[0x0a, 0x02, 0xff, 0xfe]), None);
        family.name = None;
        assert_eq!(family_name(&family.encode_to_vec()), None);
    }

    #[test]
    fn raw_triage_fails_on_a_family_read_in_full_that_does_not_decode() {
        let good = message(None, vec![counter("server.uptime", &[], 1.0)]);
        let mut raw = RawMessage::decode(good.encode_to_vec().as_slice()).unwrap();
        // No name, and a metric field claiming more bytes than there are.
        raw.envoy_metrics
            .push(Bytes::from_static(&[0x22, 0x10, 0x01]));
        assert!(raw.triage().is_err());
    }
}
