//! The filter's metrics in Envoy: ids looked up once per config, each name defined once per VM.

use super::host::{self, MetricKind};
use crate::config::FilterConfig;
use crate::names::{Scope, Variant, custom_stat, metric_name};
use crate::tally::{COUNTERS, Counter, Tally};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// Every metric this VM defined, by full name.
    static DEFINED: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

/// A metric's id; `u32::MAX` (an id no host hands out, so updates to it fail soft) if the host
/// refused the name.
fn define(kind: MetricKind, name: String) -> u32 {
    DEFINED.with(|d| {
        let mut d = d.borrow_mut();
        if let Some(id) = d.get(&name) {
            return *id;
        }
        let id = host::define_metric(kind, &name).unwrap_or(u32::MAX);
        d.insert(name, id);
        id
    })
}

/// The ids of one config's metrics.
#[derive(Debug)]
pub struct Metrics {
    counters: [u32; COUNTERS],
    latency: [u32; 2],
    custom: [Vec<u32>; 2],
}

fn slot(v: Variant) -> usize {
    match v {
        Variant::Primary => 0,
        Variant::Shadow => 1,
    }
}

impl Metrics {
    /// Defines (or finds) every metric of `config`.
    pub fn new(config: &FilterConfig) -> Metrics {
        let service = config.service.as_str();
        let counters = Counter::ALL.map(|c| {
            let (scope, stat) = c.stat();
            define(MetricKind::Counter, metric_name(service, scope, stat))
        });
        let latency = Variant::ALL.map(|v| {
            define(
                MetricKind::Histogram,
                metric_name(service, Scope::Variant(v), "rq_time_us"),
            )
        });
        let custom = Variant::ALL.map(|v| {
            config
                .custom_metrics
                .iter()
                .map(|m| {
                    let stat = custom_stat(m.as_str());
                    define(
                        MetricKind::Histogram,
                        metric_name(service, Scope::Variant(v), &stat),
                    )
                })
                .collect()
        });
        Metrics {
            counters,
            latency,
            custom,
        }
    }

    /// Records a latency of `variant`.
    pub fn latency(&self, variant: Variant, us: u64) {
        host::record_metric(self.latency[slot(variant)], us);
    }

    /// Records custom durations of `variant`, aligned with `custom_metrics`.
    pub fn custom(&self, variant: Variant, durations_us: &[Option<u64>]) {
        for (id, us) in self.custom[slot(variant)].iter().zip(durations_us) {
            if let Some(us) = us {
                host::record_metric(*id, *us);
            }
        }
    }

    /// Publishes the counts waiting in `tally` (never an increment of 0, which Envoy rejects).
    pub fn publish(&self, tally: &mut Tally) {
        if !tally.is_dirty() {
            return;
        }
        for (counter, n) in tally.drain() {
            let delta = i64::try_from(n).unwrap_or(i64::MAX);
            host::increment_metric(self.counters[counter.index()], delta);
        }
    }
}
