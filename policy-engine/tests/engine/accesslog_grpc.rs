//! The AccessLogService over real gRPC, on the metrics server's port: a tonic client plays
//! Envoy's gRPC access logger (`envoy.access_loggers.http_grpc`), streaming entries whose filter
//! state carries the doppel id, as a full-ADS listener asks for.

use std::sync::Arc;
use std::time::Duration;

use doppel_engine::accesslog::SampleStore;
use doppel_engine::ingest::wire::{counter, message};
use doppel_engine::ingest::{self, ClusterRegistry, StoreConfig, WindowStore};
use doppel_filter::names::Variant;
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, HttpAccessLogEntry, HttpResponseProperties,
};
use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsMessage;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_client::AccessLogServiceClient;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
    HttpAccessLogEntries, LogEntries,
};
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
use envoy_types::pb::google::protobuf::{Any, BytesValue, Duration as PbDuration, UInt32Value};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// One logged request to `cluster` answered `status` after `ms`, with the doppel id `id`.
fn entry(cluster: &str, id: Option<&str>, status: u32, ms: i32) -> HttpAccessLogEntry {
    let mut common = AccessLogCommon {
        upstream_cluster: cluster.to_owned(),
        time_to_last_upstream_rx_byte: Some(PbDuration {
            seconds: 0,
            nanos: ms * 1_000_000,
        }),
        ..Default::default()
    };
    if let Some(id) = id {
        let value = BytesValue {
            value: id.as_bytes().to_vec(),
        };
        common.filter_state_objects.insert(
            "wasm.doppel_id".to_owned(),
            Any {
                type_url: "type.googleapis.com/google.protobuf.BytesValue".to_owned(),
                value: value.encode_to_vec(),
            },
        );
    }
    HttpAccessLogEntry {
        common_properties: Some(common),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: status }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn batch(entries: Vec<HttpAccessLogEntry>) -> StreamAccessLogsMessage {
    StreamAccessLogsMessage {
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: entries,
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn accesslog_entries_with_a_doppel_id_become_samples_beside_the_metrics_service() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = ClusterRegistry::new()
        .with("shop_v1", "shop", Variant::Primary)
        .with("shop_v2", "shop", Variant::Shadow);
    let store = Arc::new(WindowStore::new(
        StoreConfig::default(),
        ClusterRegistry::new(),
    ));
    let samples = Arc::new(SampleStore::new());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(ingest::serve_with_access_logs(
        listener,
        Arc::clone(&store),
        None,
        Some((Arc::clone(&samples), Arc::new(registry))),
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{addr}");

    // Like Envoy, the logger keeps its stream open; entries arrive in batches.
    let mut client = AccessLogServiceClient::connect(url.clone()).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    let call =
        tokio::spawn(async move { client.stream_access_logs(ReceiverStream::new(rx)).await });
    let shadow_500 = "0123456789abcdef0123456789abcdef";
    let shadow_slow = "fedcba9876543210fedcba9876543210";
    tx.send(batch(vec![
        entry("shop_v2", Some(shadow_500), 500, 12),
        // No doppel id: not a sample.
        entry("shop_v2", None, 200, 5),
        // A cluster no service has: not a sample.
        entry("other", Some("00000000000000000000000000000001"), 200, 5),
        entry("shop_v1", Some("00000000000000000000000000000002"), 200, 3),
    ]))
    .await
    .unwrap();
    tx.send(batch(vec![entry("shop_v2", Some(shadow_slow), 200, 900)]))
        .await
        .unwrap();
    let mut evidence = Vec::new();
    for _ in 0..100 {
        evidence = samples.evidence("shop", 10);
        if evidence.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The shadow's samples: the 5xx first, then the slowest; the primary's is not evidence.
    let ids: Vec<&str> = evidence.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [shadow_500, shadow_slow], "{evidence:?}");
    assert_eq!(evidence[0].status, 500);
    assert_eq!(evidence[1].duration_ms, Some(900));

    // The MetricsService answers on the same port meanwhile.
    let mut metrics = MetricsServiceClient::connect(url).await.unwrap();
    metrics
        .stream_metrics(tokio_stream::iter(vec![message(
            Some(("envoy-a", "edge")),
            vec![counter("server.uptime", &[], 1.0)],
        )]))
        .await
        .expect("the metrics stream is served");

    // The logger never ends its stream: shutdown ends it, and the server returns.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the access-log call ends")
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    drop(tx);
}
