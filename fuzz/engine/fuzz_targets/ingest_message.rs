//! MetricsService message handling: any bytes that decode as a `StreamMetricsMessage` go through
//! conversion and the window store (in both counter modes, as a stream of two messages) without
//! a panic, and what the store reports adds up.
#![no_main]

use doppel_engine::ingest::{ClusterRegistry, CounterMode, StoreConfig, WindowStore};
use doppel_filter::names::Variant;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = StreamMetricsMessage::decode(data) else {
        return;
    };
    for counters in [CounterMode::Deltas, CounterMode::Cumulative] {
        let mut registry = ClusterRegistry::new();
        registry.insert("checkout-v1", "checkout", Variant::Primary);
        registry.insert("checkout-v2", "checkout", Variant::Shadow);
        let store = WindowStore::new(
            StoreConfig {
                counters,
                ..StoreConfig::default()
            },
            registry,
        );
        let mut stream = store.open_stream("fuzz");
        for now_ms in [1_000, 12_000] {
            let _ = store.ingest(now_ms, message.clone(), &mut stream);
        }
        for service in store.services() {
            let _ = store.sum(&service, 0, u64::MAX);
        }
    }
});
