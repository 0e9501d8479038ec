//! The root context: one per plugin per VM (so one per worker). It parses the config once, owns
//! the state its HTTP contexts share, publishes the counters kept in VM memory on its tick, and
//! dispatches mirror copies: a callout belongs to the context that made it, and the root
//! outlives the request, so the shadow's answer is never dropped.

use super::host::{self, Buffer, HeaderMap};
use super::http::{parse_status, reads_up_front, wanted_headers};
use super::metrics::Metrics;
use crate::config::{FilterConfig, Sender};
use crate::decide::{Decider, Rng, Threshold};
use crate::ids::{IdGen, IdMap};
use crate::mirror::{Answer, BodyDigest, Book, Resolution};
use crate::names::Variant;
use crate::pairs::{self, Names};
use crate::tally::{Counter, Tally};
use crate::timing::durations_us;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// How often counters are published to Envoy, in milliseconds.
pub const PUBLISH_TICK_MS: u64 = 1000;
/// The tick asked for while mirror copies wait to be dispatched, in milliseconds.
pub const DISPATCH_TICK_MS: u64 = 1;
/// The header Envoy's router adds to answers that came from an upstream.
const UPSTREAM_TIME_HEADER: &str = "x-envoy-upstream-service-time";
/// An entry whose sides did not both report within the copy timeout plus this is forgotten.
const EXPIRE_SLACK_NS: u64 = 60_000_000_000;

/// What the root and the HTTP contexts of one config share (one VM is one thread).
pub struct Shared {
    /// The parsed config.
    pub config: FilterConfig,
    /// The compiled decision.
    pub decider: Decider,
    /// The request headers read in one pass ([`wanted_headers`]).
    pub wanted: Names,
    /// Whether every request's headers are read before its decision ([`reads_up_front`]).
    pub reads_up_front: bool,
    /// Which unchosen (primary) requests are measured; chosen ones always are.
    pub primary_sample: Threshold,
    /// Metric ids.
    pub metrics: Metrics,
    /// The mutable part.
    pub state: RefCell<State>,
}

/// The name of the build without the `mirror` feature.
const SPLIT_BUILD: &str = "doppel_filter_split.wasm";

/// Per-VM mutable state.
pub struct State {
    /// The PRNG for requests without a sticky key.
    pub rng: Rng,
    /// Ids for chosen requests.
    pub ids: IdGen,
    /// Counts not yet published.
    pub tally: Tally,
    /// Mirror bookkeeping (mirror mode only).
    pub mirror: Option<MirrorState>,
}

/// Copies waiting, in flight, and being compared.
pub struct MirrorState {
    /// Open comparisons.
    pub book: Book,
    /// Copies waiting for the next tick to be dispatched.
    pub queue: VecDeque<Job>,
    /// Dispatched copies: callout token to (book key, dispatch time).
    pub calls: IdMap<u32, (u64, u64)>,
    /// Whether the fast dispatch tick is armed.
    pub fast_tick: bool,
    /// When counters were last published (host clock, ns).
    pub published_ns: u64,
}

/// One copy to dispatch.
pub struct Job {
    /// Its entry in the book.
    pub key: u64,
    /// The copy's headers, serialized for the host ([`pairs::encode`]).
    pub headers: Vec<u8>,
    /// The copy's body (bounded by `max_body_bytes`).
    pub body: Vec<u8>,
}

impl MirrorState {
    /// Queues a copy for dispatch from the root, arming the fast tick if needed.
    pub fn enqueue(&mut self, job: Job) {
        self.queue.push_back(job);
        if !self.fast_tick {
            self.fast_tick = true;
            host::set_tick_ms(DISPATCH_TICK_MS);
        }
    }
}

/// Adds the counters for a settled comparison.
pub fn tally_resolution(tally: &mut Tally, resolution: Option<Resolution>) {
    if let Some(Resolution::Compared(v)) = resolution {
        tally.add(Counter::MirrorCompared);
        if v.status {
            tally.add(Counter::MirrorMismatchStatus);
        }
        if v.body {
            tally.add(Counter::MirrorMismatchBody);
        }
        if v.latency {
            tally.add(Counter::MirrorMismatchLatency);
        }
    }
}

/// The root context.
pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl Root {
    /// A root context that has not been configured yet.
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            shared: None,
        }
    }

    fn parse_config(&self, bytes: &[u8]) -> Result<Shared, String> {
        let config = FilterConfig::parse(bytes).map_err(|e| e.to_string())?;
        let by_filter = config.sender() == Some(Sender::Filter);
        if !cfg!(feature = "mirror") && by_filter {
            return Err(format!(
                "mode mirror: this build of the filter ({SPLIT_BUILD}) sends no copies itself; load doppel_filter.wasm, or let Envoy send them (mirror.sender: envoy)"
            ));
        }
        let seed = host::random_seed(self.context_id);
        let mut rng_seed = [0u8; 8];
        rng_seed.copy_from_slice(&seed[..8]);
        let mirror = match (by_filter, &config.mirror) {
            (true, Some(m)) => Some(MirrorState {
                book: Book::new(
                    usize::try_from(m.max_in_flight.get()).unwrap_or(usize::MAX),
                    m.latency_tolerance_ms.get(),
                ),
                queue: VecDeque::new(),
                calls: IdMap::default(),
                fast_tick: false,
                published_ns: 0,
            }),
            _ => None,
        };
        let state = State {
            // Different streams for ids and draws: the PRNG gets a mixed copy of the seed.
            rng: Rng::new(crate::decide::mix64(u64::from_le_bytes(rng_seed))),
            ids: IdGen::new(seed),
            tally: Tally::default(),
            mirror,
        };
        let decider = Decider::new(&config);
        Ok(Shared {
            wanted: wanted_headers(&config, &decider),
            reads_up_front: reads_up_front(&config, &decider),
            decider,
            primary_sample: Threshold::from_percent(config.shares_seen().1),
            metrics: Metrics::new(&config),
            config,
            state: RefCell::new(state),
        })
    }

    /// Dispatches every queued copy.
    fn dispatch(&self, shared: &Shared) {
        let Some(m) = &shared.config.mirror else {
            return;
        };
        loop {
            let job = match shared.state.borrow_mut().mirror.as_mut() {
                Some(ms) => ms.queue.pop_front(),
                None => None,
            };
            let Some(job) = job else { break };
            let sent_ns = host::now_ns();
            let result = host::http_call(
                m.cluster.as_str(),
                &job.headers,
                &job.body,
                m.timeout_ms.get(),
            );
            let mut st = shared.state.borrow_mut();
            let st = &mut *st;
            let Some(ms) = st.mirror.as_mut() else { break };
            match result {
                Some(token) => {
                    ms.calls.insert(token, (job.key, sent_ns));
                    st.tally.add(Counter::MirrorSent);
                }
                None => {
                    st.tally.add(Counter::MirrorFailed);
                    let r = ms.book.shadow(job.key, None);
                    tally_resolution(&mut st.tally, r);
                }
            }
        }
    }

    /// Records the shadow's answer to a copy.
    fn shadow_answered(&self, shared: &Shared, token: u32, num_headers: usize, body_size: usize) {
        let Some(m) = &shared.config.mirror else {
            return;
        };
        let call = shared
            .state
            .borrow_mut()
            .mirror
            .as_mut()
            .and_then(|ms| ms.calls.remove(&token));
        let Some((key, sent_ns)) = call else { return };
        // Every header of the answer in one call: status, upstream time and server-timing from one
        // copy (a handful of headers costs less than reading one value: bench-instructions' probes).
        let raw = if num_headers == 0 {
            host::HostBytes::empty()
        } else {
            host::header_pairs(HeaderMap::CallResponse)
        };
        let headers = pairs::Map::new(&raw);
        let header = |name| headers.and_then(|h| h.get(name));
        let status = header(":status").and_then(parse_status);
        // Envoy answers a failed callout (connection refused, reset, timeout) with its own 5xx;
        // only an answer that went through the upstream carries x-envoy-upstream-service-time.
        let status = status.filter(|s| *s < 500 || header(UPSTREAM_TIME_HEADER).is_some());
        let report = status.map(|status| {
            let latency_us = host::now_ns().saturating_sub(sent_ns) / 1000;
            shared.metrics.latency(Variant::Shadow, latency_us);
            if !shared.config.custom_metrics.is_empty()
                && let Some(h) = header("server-timing")
            {
                shared.metrics.custom(
                    Variant::Shadow,
                    &durations_us(h, &shared.config.custom_metrics),
                );
            }
            let limit = m.compare_body_bytes.get();
            let digest = (limit > 0).then(|| {
                let mut d = BodyDigest::new(limit);
                let want = usize::try_from(limit).unwrap_or(usize::MAX).min(body_size);
                if let Some(body) = host::buffer(Buffer::CallResponseBody, want) {
                    d.feed(&body);
                }
                d.value()
            });
            Answer {
                status,
                latency_us,
                digest,
            }
        });
        let mut st = shared.state.borrow_mut();
        let st = &mut *st;
        st.tally.add(Counter::RqTotal(Variant::Shadow));
        match status {
            None => {
                st.tally.add(Counter::RqReset(Variant::Shadow));
                st.tally.add(Counter::MirrorFailed);
            }
            Some(s) if s >= 500 => st.tally.add(Counter::Rq5xx(Variant::Shadow)),
            Some(_) => {}
        }
        if let Some(ms) = st.mirror.as_mut() {
            let r = ms.book.shadow(key, report);
            tally_resolution(&mut st.tally, r);
        }
    }
}

impl Root {
    /// The state its request contexts share, once it has a valid config.
    pub fn shared(&self) -> Option<Rc<Shared>> {
        self.shared.clone()
    }

    /// A callout's answer.
    pub fn call_answered(&mut self, token: u32, num_headers: usize, body_size: usize) {
        if let Some(shared) = self.shared.clone() {
            self.shadow_answered(&shared, token, num_headers, body_size);
        }
    }

    /// The end of the root (its plugin was removed or the VM stops): publish what is left.
    pub fn finish(self) {
        if let Some(shared) = &self.shared {
            shared.metrics.publish(&mut shared.state.borrow_mut().tally);
        }
    }

    /// Reads and applies the plugin configuration (`size` bytes): whether it is valid. An
    /// invalid one leaves the root without a config, so its requests pass untouched.
    pub fn configure(&mut self, size: usize) -> bool {
        let bytes = host::buffer(Buffer::PluginConfiguration, size).unwrap_or_default();
        match self.parse_config(&bytes) {
            Ok(shared) => {
                if let Some(old) = self.shared.take() {
                    old.metrics.publish(&mut old.state.borrow_mut().tally);
                }
                self.shared = Some(Rc::new(shared));
                host::set_tick_ms(PUBLISH_TICK_MS);
                true
            }
            Err(e) => {
                host::error(&format!("doppel: invalid config: {e}"));
                false
            }
        }
    }

    /// The tick: dispatch waiting copies, expire stale comparisons, publish counters. A fast
    /// tick (armed for copies waiting) publishes only if the last publication is a publish
    /// period old: under steady mirroring every tick is a fast one, and publishing on each would
    /// cost a host call per counter per copy.
    pub fn tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let fast = {
            let mut st = shared.state.borrow_mut();
            match st.mirror.as_mut() {
                Some(ms) => std::mem::replace(&mut ms.fast_tick, false),
                None => false,
            }
        };
        if fast {
            host::set_tick_ms(PUBLISH_TICK_MS);
        }
        self.dispatch(&shared);
        let mut st = shared.state.borrow_mut();
        let st = &mut *st;
        if let (Some(ms), Some(m)) = (st.mirror.as_mut(), &shared.config.mirror) {
            let now = host::now_ns();
            if ms.book.open_count() > 0 {
                let max_age = m.timeout_ms.get() * 1_000_000 + EXPIRE_SLACK_NS;
                ms.book.expire(now, max_age);
            }
            if fast && now.saturating_sub(ms.published_ns) < PUBLISH_TICK_MS * 1_000_000 {
                return;
            }
            ms.published_ns = now;
        }
        shared.metrics.publish(&mut st.tally);
    }
}
