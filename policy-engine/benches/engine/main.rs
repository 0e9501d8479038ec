//! Micro-benchmarks of the engine's per-look and per-message work: CEL rules over the full
//! context, the statistics at realistic sizes, MetricsService decoding and window updates,
//! and xDS snapshot building for a rollout step.
//!
//! `cargo bench -p doppel-policy-engine --bench engine [FILTER]` (BENCHMARKS.md has the
//! figures). One bench binary, one module per part. Under `cargo test --all-targets` each
//! benchmark runs once, as a smoke test.

mod cel;
mod data;
mod ingest;
mod stats;
mod xds;

use std::time::Duration;

use criterion::Criterion;

/// Shorter than criterion's defaults (3 s warm-up, 5 s measurement): about 70 benchmarks in
/// a few minutes on a shared machine; medians are stable at these lengths.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// True under `cargo test` (cargo passes `--bench` only to `cargo bench`): each benchmark then
/// runs once, as a smoke test, and the setup is kept small.
pub fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

criterion::criterion_group! {
    name = benches;
    config = config();
    targets = cel::benches, stats::benches, ingest::benches, xds::benches
}
criterion::criterion_main!(benches);
