//! Each statistic the analysis runs at a look, at 1e3 to 1e6 requests (both variants, 10% to
//! the shadow; 1% and 1.5% errors; log-normal latency in Envoy's 19 default buckets).
//!
//! The fixed-horizon tests (`compare_error_rates`: Fisher's exact test, the z test past
//! 100,000 per margin; `mann_whitney`; `summarize`) run on the analysed data, so their size is
//! the requests since the step began. The sequential tests are fed the requests of one
//! interval, so their size is requests per interval; each is measured at its 11th look (a
//! clone of a test that has looked 10 times, made outside the measured time). Under `cargo
//! test` the 1e6 size is left out.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion};
use doppel_engine::context::Comparer;
use doppel_engine::stats::mann_whitney::mann_whitney;
use doppel_engine::stats::proportions::{ErrorRateConfig, compare_error_rates};
use doppel_engine::stats::quantiles::summarize;
use doppel_engine::stats::sequential::{
    ErrorRateSequential, LatencySequential, LatencyTailSequential, SequentialConfig,
};
use doppel_engine::stats::sim::Interval;

use crate::data;

const SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];
const SHARE: f64 = 0.1;
const ALPHA: f64 = 0.01;
/// Looks a sequential test has made before the measured one.
const WARM_LOOKS: usize = 10;

/// `WARM_LOOKS + 1` intervals of `requests` each.
fn intervals(requests: u64) -> Vec<Interval> {
    let sim = data::simulator(requests, SHARE);
    let mut rng = data::rng();
    (0..=WARM_LOOKS).map(|_| sim.interval(&mut rng)).collect()
}

pub fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats");
    // The setup at 1e6 (its sequential tests' warm-up looks) takes seconds in a debug build.
    let sizes = if crate::smoke() {
        &SIZES[..3]
    } else {
        &SIZES[..]
    };
    for &n in sizes {
        let runs = intervals(n);
        let last = &runs[WARM_LOOKS];
        let (p, s) = (last.primary, last.shadow);
        let (ph, sh) = (&last.primary_latency, &last.shadow_latency);
        let config = ErrorRateConfig::default();

        group.bench_with_input(BenchmarkId::new("compare_error_rates", n), &n, |b, _| {
            b.iter(|| compare_error_rates(black_box(p), black_box(s), &config))
        });
        group.bench_with_input(BenchmarkId::new("mann_whitney", n), &n, |b, _| {
            b.iter(|| mann_whitney(black_box(ph), black_box(sh), 200))
        });
        group.bench_with_input(BenchmarkId::new("summarize", n), &n, |b, _| {
            b.iter(|| summarize(black_box(ph)))
        });

        let mut errors = ErrorRateSequential::new(SequentialConfig::errors(ALPHA)).expect("test");
        let mut latency =
            LatencySequential::new(SequentialConfig::latency(ALPHA)).expect("latency test");
        let mut tail =
            LatencyTailSequential::new(0.95, SequentialConfig::errors(ALPHA)).expect("tail test");
        let mut comparer = Comparer::new(ALPHA, 200).expect("comparer");
        let mut analysed = doppel_engine::metrics::ServiceWindow::default();
        let mut windows = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            windows.push(data::window(run, i as u64 * 10_000, 10_000));
        }
        for (run, window) in runs.iter().zip(&windows).take(WARM_LOOKS) {
            errors.observe(run.primary, run.shadow).expect("observe");
            latency
                .observe(&run.primary_latency, &run.shadow_latency)
                .expect("observe");
            tail.observe(&run.primary_latency, &run.shadow_latency)
                .expect("observe");
            analysed.merge(window).expect("merge");
            comparer.look(window, &analysed).expect("look");
        }
        group.bench_with_input(BenchmarkId::new("error_rate_sequential", n), &n, |b, _| {
            b.iter_batched(
                || errors.clone(),
                |mut t| t.observe(p, s),
                BatchSize::SmallInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("latency_sequential", n), &n, |b, _| {
            b.iter_batched(
                || latency.clone(),
                |mut t| t.observe(ph, sh),
                BatchSize::SmallInput,
            )
        });
        group.bench_with_input(
            BenchmarkId::new("latency_tail_sequential", n),
            &n,
            |b, _| {
                b.iter_batched(
                    || tail.clone(),
                    |mut t| t.observe(ph, sh),
                    BatchSize::SmallInput,
                )
            },
        );
        // Everything `Comparer::look` does at a look: both sequential tests on the new
        // interval, Fisher and Mann-Whitney on the analysed data (here 11 intervals of `n`).
        let new = &windows[WARM_LOOKS];
        analysed.merge(new).expect("merge");
        group.bench_with_input(BenchmarkId::new("comparer_look", n), &n, |b, _| {
            b.iter_batched(
                || comparer.clone(),
                |mut cmp| cmp.look(new, &analysed),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}
