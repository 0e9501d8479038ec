//! The ingestion server over real gRPC: a tonic client plays Envoy's metrics sink, sending the
//! filter's `wasmcustom.doppel.*` metrics and malformed ones through [`ingest::serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use doppel_engine::ingest::wire::{BytesCodec, counter, gauge, histogram, message};
use doppel_engine::ingest::{self, ClusterRegistry, StoreConfig, WindowStore};
use doppel_engine::metrics::{Histogram, ServiceWindow};
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

struct Engine {
    addr: SocketAddr,
    store: Arc<WindowStore>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Engine {
    async fn start() -> Engine {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(WindowStore::new(
            StoreConfig {
                window_ms: 60_000,
                ..StoreConfig::default()
            },
            ClusterRegistry::new(),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ingest::serve(listener, store.clone(), async {
            let _ = stopped.await;
        }));
        Engine {
            addr,
            store,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> MetricsServiceClient<tonic::transport::Channel> {
        MetricsServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Sends `messages` on one stream and waits for the server to answer its end.
    async fn send(&self, messages: Vec<StreamMetricsMessage>) {
        self.client()
            .await
            .stream_metrics(tokio_stream::iter(messages))
            .await
            .unwrap();
    }

    /// Everything the store holds for `service`, summed over all time.
    fn total(&self, service: &str) -> ServiceWindow {
        self.store
            .sum(service, 0, u64::MAX)
            .unwrap()
            .unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn shop(variant: &str, stat: &str) -> String {
    format!("wasmcustom.doppel.shop.{variant}.{stat}")
}

/// One filter flush: `requests` primary requests, `errors` of them 5xx, their latency in µs.
fn filter_flush(node: Option<(&str, &str)>, requests: u64, errors: u64) -> StreamMetricsMessage {
    message(
        node,
        vec![
            counter(&shop("primary", "rq_total"), &[], requests as f64),
            counter(&shop("primary", "rq_5xx"), &[], errors as f64),
            histogram(
                &shop("primary", "rq_time_us"),
                &[],
                &[1_000.0, 10_000.0],
                &[requests / 2, requests],
                requests,
                5_000.0 * requests as f64,
            ),
            counter(&shop("mirror", "sent"), &[], 1.0),
            counter("server.uptime", &[], 1.0),
        ],
    )
}

#[tokio::test]
async fn ingest_filter_metrics_from_two_streams_add_up() {
    let engine = Engine::start().await;
    let first = engine.send(vec![
        filter_flush(Some(("envoy-a", "edge")), 10, 1),
        filter_flush(None, 4, 0),
    ]);
    let second = engine.send(vec![filter_flush(Some(("envoy-b", "edge")), 6, 2)]);
    tokio::join!(first, second);

    let total = engine.total("shop");
    assert_eq!((total.primary.requests, total.primary.errors_5xx), (20, 3));
    assert_eq!(
        total.primary.latency_ms,
        Histogram {
            bounds: vec![1.0, 10.0],
            counts: vec![5 + 2 + 3, 5 + 2 + 3, 0],
            sum: 100.0,
        }
    );
    assert_eq!(total.mirror.sent, 3);
    assert_eq!(engine.store.counts().accepted(), 12);
    assert_eq!(engine.store.counts().rejected_with("unknown_metric"), 3);
    engine.stop().await;
}

#[tokio::test]
async fn ingest_malformed_grpc_metrics_are_counted_and_never_corrupt_a_window() {
    let engine = Engine::start().await;
    engine
        .send(vec![filter_flush(Some(("envoy-a", "edge")), 10, 1)])
        .await;
    let before = engine.total("shop");

    let rq_total = shop("primary", "rq_total");
    let rq_time = shop("primary", "rq_time_us");
    let malformed = vec![
        // No node on a stream's first message.
        message(None, vec![counter("no.such.metric", &[], 1.0)]),
        message(
            None,
            vec![
                counter(&rq_total, &[], -3.0),
                counter(&rq_total, &[], f64::NAN),
                counter(&rq_total, &[], 1e30),
                counter(&rq_total, &[], 0.25),
                gauge(&rq_total, &[], 5.0),
                counter(&rq_time, &[], 5.0),
                histogram(&rq_time, &[], &[1_000.0, 10_000.0], &[9, 3], 9, 1.0),
                histogram(&rq_time, &[], &[5.0, 7.0], &[1, 1], 1, 6.0),
                histogram(&rq_time, &[], &[1_000.0, 10_000.0], &[1, 2], 2, -1.0),
                counter("wasmcustom.doppel.BAD SERVICE.primary.rq_total", &[], 1.0),
                counter("wasmcustom.doppel.shop.primary.no_such_stat", &[], 1.0),
            ],
        ),
    ];
    engine.send(malformed).await;

    assert_eq!(engine.total("shop"), before, "the window is unchanged");
    let rejected = engine.store.counts().rejected();
    let expected = [
        ("missing_node", 1),
        ("negative_value", 2),
        ("not_finite", 1),
        ("too_large", 1),
        ("not_an_integer", 1),
        ("wrong_type", 2),
        ("bad_histogram", 1),
        ("bucket_mismatch", 1),
        ("invalid_service", 1),
        ("unknown_metric", 3),
    ];
    for (code, n) in expected {
        assert_eq!(
            rejected.get(code).copied().unwrap_or(0),
            n,
            "{code}: {rejected:?}"
        );
    }

    // The engine still serves: a good flush after the bad ones lands.
    engine
        .send(vec![filter_flush(Some(("envoy-a", "edge")), 5, 0)])
        .await;
    assert_eq!(engine.total("shop").primary.requests, 15);
    engine.stop().await;
}

#[tokio::test]
async fn ingest_messages_larger_than_the_http2_window_land_whole() {
    let engine = Engine::start().await;
    // Each message is several flow-control windows long: it arrives only as the server reads
    // it, and is gathered across many HTTP/2 data frames.
    let big = |node: Option<(&str, &str)>, requests: u64| {
        let mut flush = filter_flush(node, requests, 0);
        for i in 0..20_000 {
            flush
                .envoy_metrics
                .push(counter(&format!("server.filler_{i}"), &[], 1.0));
        }
        flush
    };
    let first = big(Some(("envoy-a", "edge")), 7);
    let size = first.encoded_len();
    let window = ingest::WINDOW_BYTES as usize;
    assert!(
        size > 4 * window,
        "{size} bytes is not several windows of {window}"
    );
    engine.send(vec![first, big(None, 5)]).await;
    assert_eq!(engine.total("shop").primary.requests, 12);
    assert_eq!(
        engine.store.counts().rejected_with("unknown_metric"),
        2 * (20_000 + 1)
    );
    assert_eq!(engine.store.counts().rejected_with("stream_error"), 0);
    engine.stop().await;
}

#[tokio::test]
async fn ingest_shutdown_ends_streams_that_never_close() {
    let engine = Engine::start().await;
    let (tx, rx) = mpsc::channel(4);
    let mut client = engine.client().await;
    let call = tokio::spawn(async move { client.stream_metrics(ReceiverStream::new(rx)).await });
    tx.send(filter_flush(Some(("envoy-a", "edge")), 3, 0))
        .await
        .unwrap();
    let mut changes = engine.store.subscribe();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("the flush lands")
        .unwrap();
    assert_eq!(engine.total("shop").primary.requests, 3);

    // Like Envoy, the client never ends its stream; shutdown must still complete.
    engine.stop().await;
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends")
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    drop(tx);
}

#[tokio::test]
async fn ingest_undecodable_messages_end_only_their_stream() {
    let engine = Engine::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", engine.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.metrics.v3.MetricsService/StreamMetrics",
    );
    // Field 2 (envoy_metrics) claims 200 bytes and has 3: not a protobuf message.
    let garbage = bytes::Bytes::from_static(&[0x12, 0xc8, 0x01, 0xff, 0xff, 0xff]);
    let answer = grpc
        .client_streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            path,
            BytesCodec,
        )
        .await;
    assert!(answer.is_err(), "garbage accepted: {answer:?}");
    assert_eq!(engine.store.counts().rejected_with("stream_error"), 1);
    assert!(engine.store.services().is_empty());

    // The engine goes on serving other streams.
    engine
        .send(vec![filter_flush(Some(("envoy-a", "edge")), 2, 1)])
        .await;
    assert_eq!(engine.total("shop").primary.errors_5xx, 1);
    engine.stop().await;
}
