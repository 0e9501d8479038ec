//! Sample requests from Envoy's access logs, so that a decision can name the doppel ids of the
//! shadowed requests behind it and a user can jump from the decision log to their traces.
//!
//! Envoy streams one HTTP access-log entry per request to the engine's gRPC AccessLogService
//! ([`server`], on the MetricsService port). The full-ADS listener asks for the filter's
//! filter-state objects `wasm.doppel_id` and `wasm.doppel_variant` in each entry. An entry with
//! a doppel id whose upstream cluster belongs to a known service becomes a [`Sample`], kept in
//! a small ring per service ([`SampleStore`]): memory stays bounded whatever the traffic.

pub mod server;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use doppel_filter::names::{STATE_ID, STATE_VARIANT, Variant};
use envoy_types::pb::envoy::data::accesslog::v3::HttpAccessLogEntry;
use prost::Message;

use crate::ingest::ClusterRegistry;

/// Samples kept per service.
pub const KEEP: usize = 512;

/// One request the filter tagged, as Envoy logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The doppel id (the `x-doppel-id` header the filter set).
    pub id: String,
    /// Which variant's cluster answered.
    pub variant: Variant,
    /// The response status (0 when there was none).
    pub status: u32,
    /// From the request's start to the last byte from upstream, in milliseconds, if known.
    pub duration_ms: Option<u64>,
}

/// The key of a filter-state object as Envoy names it in access logs.
fn logged_key(key: &str) -> String {
    format!("wasm.{key}")
}

/// The filter-state keys the access log must carry.
pub fn logged_keys() -> Vec<String> {
    vec![logged_key(STATE_ID), logged_key(STATE_VARIANT)]
}

/// A filter-state value: Envoy serialises a Wasm filter-state object as a `BytesValue` (older
/// versions: `StringValue`); both put the text in field 1.
fn state_text(entry: &HttpAccessLogEntry, key: &str) -> Option<String> {
    let any = entry
        .common_properties
        .as_ref()?
        .filter_state_objects
        .get(&logged_key(key))?;
    let value = envoy_types::pb::google::protobuf::BytesValue::decode(any.value.as_slice()).ok()?;
    let text = String::from_utf8(value.value).ok()?;
    (!text.is_empty() && text.len() <= 128).then_some(text)
}

/// The sample in `entry`, with its service, when it carries a doppel id and its upstream
/// cluster is one of `registry`'s.
pub fn sample(entry: &HttpAccessLogEntry, registry: &ClusterRegistry) -> Option<(String, Sample)> {
    let id = state_text(entry, STATE_ID)?;
    let common = entry.common_properties.as_ref()?;
    let (service, variant) = registry.lookup(&common.upstream_cluster)?;
    let status = entry
        .response
        .as_ref()
        .and_then(|r| r.response_code)
        .map_or(0, |code| code.value);
    let duration_ms = common.time_to_last_upstream_rx_byte.as_ref().and_then(|d| {
        u64::try_from(d.seconds)
            .ok()?
            .checked_mul(1000)?
            .checked_add(u64::try_from(d.nanos / 1_000_000).ok()?)
    });
    Some((
        service.to_owned(),
        Sample {
            id,
            variant,
            status,
            duration_ms,
        },
    ))
}

/// The latest samples of each service.
#[derive(Debug, Default)]
pub struct SampleStore {
    rings: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl SampleStore {
    /// An empty store.
    pub fn new() -> SampleStore {
        SampleStore::default()
    }

    /// Keeps `sample` for `service`, dropping the oldest past [`KEEP`].
    pub fn record(&self, service: &str, sample: Sample) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let ring = rings.entry(service.to_owned()).or_default();
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// Up to `n` recent shadow samples of `service` that best show what went wrong: 5xx
    /// answers first (newest first), then the slowest.
    pub fn evidence(&self, service: &str, n: usize) -> Vec<Sample> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = rings.get(service) else {
            return Vec::new();
        };
        let mut shadow: Vec<&Sample> = ring
            .iter()
            .rev()
            .filter(|s| s.variant == Variant::Shadow)
            .collect();
        // Stable: among equals the newest stays first.
        shadow.sort_by_key(|s| {
            (
                s.status < 500,
                std::cmp::Reverse(s.duration_ms.unwrap_or(0)),
            )
        });
        shadow.into_iter().take(n).cloned().collect()
    }
}

/// `id (status, ms)` for each sample, comma-separated: what the decision log shows.
pub fn describe(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|s| match s.duration_ms {
            Some(ms) => format!("{} ({}, {ms} ms)", s.id, s.status),
            None => format!("{} ({})", s.id, s.status),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::data::accesslog::v3::{AccessLogCommon, HttpResponseProperties};
    use envoy_types::pb::google::protobuf::{Any, BytesValue, Duration, UInt32Value};

    fn entry(id: Option<&str>, cluster: &str, status: u32, ms: i32) -> HttpAccessLogEntry {
        let mut common = AccessLogCommon {
            upstream_cluster: cluster.to_owned(),
            time_to_last_upstream_rx_byte: Some(Duration {
                seconds: 0,
                nanos: ms * 1_000_000,
            }),
            ..AccessLogCommon::default()
        };
        if let Some(id) = id {
            common.filter_state_objects.insert(
                "wasm.doppel_id".to_owned(),
                Any {
                    type_url: "type.googleapis.com/google.protobuf.BytesValue".to_owned(),
                    value: BytesValue {
                        value: id.as_bytes().to_vec(),
                    }
                    .encode_to_vec(),
                },
            );
        }
        HttpAccessLogEntry {
            common_properties: Some(common),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: status }),
                ..HttpResponseProperties::default()
            }),
            ..HttpAccessLogEntry::default()
        }
    }

    fn registry() -> ClusterRegistry {
        ClusterRegistry::new()
            .with("checkout-v1", "checkout", Variant::Primary)
            .with("checkout-v2", "checkout", Variant::Shadow)
    }

    #[test]
    fn samples_need_a_doppel_id_and_a_known_cluster() {
        let (service, s) =
            sample(&entry(Some("d-1"), "checkout-v2", 503, 42), &registry()).expect("a sample");
        assert_eq!(service, "checkout");
        assert_eq!(
            s,
            Sample {
                id: "d-1".into(),
                variant: Variant::Shadow,
                status: 503,
                duration_ms: Some(42),
            }
        );
        assert!(sample(&entry(None, "checkout-v2", 200, 1), &registry()).is_none());
        assert!(sample(&entry(Some("d-2"), "elsewhere", 200, 1), &registry()).is_none());
    }

    #[test]
    fn samples_evidence_prefers_shadow_errors_then_slow_answers_and_stays_bounded() {
        let store = SampleStore::new();
        for i in 0..KEEP + 10 {
            let variant = if i % 2 == 0 {
                Variant::Shadow
            } else {
                Variant::Primary
            };
            let status = if i == KEEP + 8 || i == 4 { 500 } else { 200 };
            store.record(
                "checkout",
                Sample {
                    id: format!("d-{i}"),
                    variant,
                    status,
                    duration_ms: Some(if i == KEEP { 900 } else { 10 }),
                },
            );
        }
        let evidence = store.evidence("checkout", 3);
        let ids: Vec<&str> = evidence.iter().map(|s| s.id.as_str()).collect();
        // d-4 fell out of the ring; the newest 5xx comes first, then the slowest.
        assert_eq!(ids[..2], [format!("d-{}", KEEP + 8), format!("d-{KEEP}")]);
        assert!(evidence.iter().all(|s| s.variant == Variant::Shadow));
        assert_eq!(
            describe(&evidence[..1]),
            format!("d-{} (500, 10 ms)", KEEP + 8)
        );
        assert!(store.evidence("other", 3).is_empty());
    }
}
