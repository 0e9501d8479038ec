//! What the ingestion load benchmark (`examples/ingest_load.rs`) judges its runs by: many
//! Envoys, each on its own connection and stream, flushing the fleet's messages at once, leave
//! exactly the sum of what they sent in the windows, every metric taken or ignored once, and
//! one message counted per message sent.

use std::sync::Arc;

use doppel_engine::ingest::fleet::{self, Expected};
use doppel_engine::ingest::{self, StoreConfig, WindowStore};
use doppel_engine::metrics::ServiceWindow;
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
use tokio::sync::oneshot;

const ENVOYS: usize = 40;
const FLUSHES: u64 = 4;

fn total(store: &WindowStore, service: &str) -> ServiceWindow {
    store
        .sum(service, 0, u64::MAX)
        .expect("one set of buckets per histogram")
        .expect("the service has windows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_fleet_of_streams_ends_with_exactly_their_sum_in_the_windows() {
    let store = Arc::new(WindowStore::new(
        StoreConfig {
            window_ms: 3_600_000,
            ..StoreConfig::default()
        },
        fleet::registry(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(ingest::serve(listener, Arc::clone(&store), async {
        let _ = stopped.await;
    }));

    let mut expected = Expected::default();
    let mut envoys = Vec::new();
    for i in 0..ENVOYS {
        let flushes: Vec<_> = (0..FLUSHES)
            .map(|k| fleet::flush(i as u64 * 100 + k))
            .collect();
        for flush in &flushes {
            expected.add(&flush.expected);
        }
        let messages: Vec<_> = flushes
            .iter()
            .enumerate()
            .map(|(k, flush)| flush.message((k == 0).then(|| fleet::node(&format!("envoy-{i}")))))
            .collect();
        // Its own connection, as every Envoy has.
        let mut client = MetricsServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_encoding_message_size(ingest::MAX_MESSAGE_BYTES);
        envoys.push(tokio::spawn(async move {
            client
                .stream_metrics(tokio_stream::iter(messages))
                .await
                .map(|_| ())
        }));
    }
    for envoy in envoys {
        envoy.await.unwrap().unwrap();
    }

    let checkout = total(&store, fleet::SERVICE);
    for (i, variant) in [&checkout.primary, &checkout.shadow]
        .into_iter()
        .enumerate()
    {
        assert_eq!(variant.requests, expected.requests[i]);
        assert_eq!(variant.errors_5xx, expected.errors_5xx[i]);
        assert_eq!(variant.resets, expected.resets[i]);
        assert_eq!(variant.latency_ms.total(), expected.latency_samples[i]);
        assert_eq!(variant.custom["db"].total(), expected.db_samples[i]);
    }
    let search = total(&store, fleet::FILTER_SERVICE);
    assert_eq!(
        [search.primary.requests, search.shadow.requests],
        expected.filter_requests
    );
    assert_eq!(search.mirror.sent, expected.mirror_sent);
    assert_eq!(store.services().len(), 2, "{:?}", store.services());

    let counts = store.counts();
    assert_eq!(counts.messages(), ENVOYS as u64 * FLUSHES);
    assert_eq!(counts.accepted(), expected.accepted);
    let rejected = counts.rejected();
    let ignorable = ["unknown_metric", "unmapped_cluster", "superseded"];
    assert!(
        rejected.keys().all(|code| ignorable.contains(code)),
        "{rejected:?}"
    );
    assert_eq!(
        rejected.values().sum::<u64>(),
        expected.families - expected.accepted
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
