//! One context per request: strip the control headers, decide, tag the chosen request (split)
//! or prepare its copy (mirror), measure the answer, and count.
//!
//! Host calls are what a request costs, so each is made only when needed. A request costs at
//! most one read of its headers: all of them in one call (the control headers to strip and
//! whatever the decision reads come out of the same copy), made before the decision when
//! stripping, trusting or deciding needs it, otherwise only once the request is chosen (with
//! `strip_control: envoy` and no matcher or sticky key, an unchosen request reads nothing).
//! Only measured requests (every chosen one, and a random sample of the others,
//! `primary_sample_percent`) cost more: the clock twice, the response status, one latency
//! recorded. Their counts are kept in VM memory and published on the root's tick. So the
//! primary's stats are those of its sample, which estimates its error rate and
//! latency without bias; the shadow's cover all of its requests.

#[cfg(feature = "mirror")]
use super::host::Buffer;
use super::host::{self, HeaderMap};
use super::root::{Job, Shared, tally_resolution};
use crate::config::{CONTROL_HEADERS, FilterConfig, MirrorConfig, Mode, Sender, Stripper};
use crate::decide::Decider;
use crate::mirror::{
    Answer, BodyDigest, Report, Safety, copy_headers, has_required_pseudo_headers, safety,
};
use crate::names::{SHADOW_VALUE, STATE_ID, STATE_VARIANT, Variant};
use crate::pairs::{self, Map as Headers, Names};
use crate::tally::Counter;
use crate::timing::durations_us;
use std::rc::Rc;

/// doppel's control headers: variant, id, mirror, mirror_to.
const CONTROL: usize = CONTROL_HEADERS;
/// How many decision headers are looked up without allocating.
const INLINE_VALUES: usize = 8;

/// A copy of this request on its way to the shadow.
struct Copy {
    /// Its entry in the mirror book.
    key: u64,
    /// Headers and body still being collected (until the request body is complete).
    pending: Option<(Job, u64)>,
    /// Digest of the primary's body, while it is being read.
    digest: Option<BodyDigest>,
    /// The primary's status, once known.
    status: Option<u16>,
    /// The primary's latency, once known.
    latency_us: u64,
    /// Whether the primary's side has been reported to the book.
    reported: bool,
}

/// The context of one request.
pub struct Http {
    shared: Rc<Shared>,
    variant: Variant,
    /// When the request's headers arrived, if it is measured.
    start_ns: Option<u64>,
    responded: bool,
    /// Boxed: few requests have one, and every request's context is moved into the registry.
    copy: Option<Box<Copy>>,
}

impl Http {
    /// A context for one request under `shared`'s config.
    pub fn new(shared: Rc<Shared>) -> Self {
        Http {
            shared,
            variant: Variant::Primary,
            start_ns: None,
            responded: false,
            copy: None,
        }
    }

    /// Split: route to the shadow by the variant header, tag with an id.
    fn tag_shadow(&mut self, headers: Option<Headers>) {
        let id = self.shared.state.borrow_mut().ids.next_id().hex();
        let h = &self.shared.config.headers;
        host::set_header(
            HeaderMap::Request,
            h.variant.as_str(),
            Some(SHADOW_VALUE.as_bytes()),
        );
        host::set_header(HeaderMap::Request, h.id.as_str(), Some(id.as_bytes()));
        if headers.is_none_or(|hs| hs.get("x-request-id").is_none()) {
            host::set_header(HeaderMap::Request, "x-request-id", Some(id.as_bytes()));
        }
        host::set_filter_state(STATE_VARIANT, SHADOW_VALUE.as_bytes());
        host::set_filter_state(STATE_ID, id.as_bytes());
        self.variant = Variant::Shadow;
    }

    /// Mirror: check the request is safe to copy, open its comparison, prepare the copy.
    fn start_copy(&mut self, headers: Headers, end_of_stream: bool) {
        let shared = self.shared.clone();
        let Some(m) = &shared.config.mirror else {
            return;
        };
        let Some(body_len) = self.copyable(m, headers, end_of_stream) else {
            return;
        };
        let now = self.start_ns.unwrap_or_default();
        let (key, id) = {
            let mut st = shared.state.borrow_mut();
            let st = &mut *st;
            let Some(key) = st.mirror.as_mut().and_then(|ms| ms.book.open(now)) else {
                st.tally.add(Counter::MirrorDroppedInFlight);
                return;
            };
            (key, st.ids.next_id().hex())
        };
        let h = &shared.config.headers;
        let copied = copy_headers(
            headers.iter(),
            m.authority.as_ref().map(|a| a.as_str()),
            h.control(),
            (h.id.as_str(), id.as_bytes()),
            h.mirror.as_str(),
        );
        if !has_required_pseudo_headers(&copied) {
            self.cancel_copy(key, Counter::MirrorFailed);
            return;
        }
        let headers = pairs::encode(&copied);
        host::set_filter_state(STATE_VARIANT, Variant::Primary.as_str().as_bytes());
        host::set_filter_state(STATE_ID, id.as_bytes());
        let job = Job {
            key,
            headers,
            body: Vec::new(),
        };
        let mut copy = Copy {
            key,
            pending: None,
            digest: None,
            status: None,
            latency_us: 0,
            reported: false,
        };
        if body_len == 0 {
            self.enqueue(job);
        } else {
            copy.pending = Some((job, body_len));
        }
        self.copy = Some(Box::new(copy));
    }

    /// The length of the body to copy with the request (`mirror.methods`, `max_body_bytes`), or
    /// `None` when it may not be copied: the reason is counted.
    fn copyable(&self, m: &MirrorConfig, headers: Headers, end_of_stream: bool) -> Option<u64> {
        let method = headers.get(":method").unwrap_or_default();
        let length = if end_of_stream {
            None
        } else {
            headers.get("content-length")
        };
        match safety(m, method, length, end_of_stream) {
            Safety::Copy { body_len } => Some(body_len),
            Safety::SkipMethod => {
                self.count(Counter::MirrorSkippedMethod);
                None
            }
            Safety::SkipBody => {
                self.count(Counter::MirrorSkippedBody);
                None
            }
        }
    }

    /// Mirror by Envoy: name the shadow's cluster in the `mirror_to` header, which the route's
    /// `request_mirror_policies` entry reads (`cluster_header`), and tag the request with an id
    /// the copy keeps. The route's policy drops `mirror_to` from the copy and marks it with the
    /// mirror header.
    fn mark_for_envoy(&mut self, headers: Option<Headers>, end_of_stream: bool) {
        let shared = self.shared.clone();
        let (Some(m), Some(headers)) = (&shared.config.mirror, headers) else {
            // Envoy sent headers the filter cannot read: nothing to check the copy against.
            return self.count(Counter::MirrorFailed);
        };
        if self.copyable(m, headers, end_of_stream).is_none() {
            return;
        }
        let id = {
            let mut st = shared.state.borrow_mut();
            st.tally.add(Counter::MirrorSent);
            st.ids.next_id().hex()
        };
        let h = &shared.config.headers;
        host::set_header(
            HeaderMap::Request,
            h.mirror_to.as_str(),
            Some(m.cluster.as_str().as_bytes()),
        );
        host::set_header(HeaderMap::Request, h.id.as_str(), Some(id.as_bytes()));
        host::set_filter_state(STATE_VARIANT, Variant::Primary.as_str().as_bytes());
        host::set_filter_state(STATE_ID, id.as_bytes());
    }

    fn count(&self, counter: Counter) {
        self.shared.state.borrow_mut().tally.add(counter);
    }

    fn enqueue(&self, job: Job) {
        if let Some(ms) = self.shared.state.borrow_mut().mirror.as_mut() {
            ms.enqueue(job);
        }
    }

    fn cancel_copy(&self, key: u64, why: Counter) {
        let mut st = self.shared.state.borrow_mut();
        if let Some(ms) = st.mirror.as_mut() {
            ms.book.cancel(key);
        }
        st.tally.add(why);
    }

    /// Reports the primary's side of the comparison (once).
    fn report_primary(&mut self, report: Report) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        if copy.reported || copy.pending.is_some() {
            return;
        }
        copy.reported = true;
        let mut st = self.shared.state.borrow_mut();
        let st = &mut *st;
        if let Some(ms) = st.mirror.as_mut() {
            let r = ms.book.primary(copy.key, report);
            tally_resolution(&mut st.tally, r);
        }
    }

    fn primary_answer(&self) -> Report {
        let copy = self.copy.as_ref()?;
        Some(Answer {
            status: copy.status?,
            latency_us: copy.latency_us,
            digest: copy.digest.map(|d| d.value()),
        })
    }
}

/// The request headers looked up in one pass: doppel's control headers (variant, id, mirror,
/// mirror_to), then those the decision reads, when there are at most [`INLINE_VALUES`] of them
/// (more are looked up one by one).
pub fn wanted_headers(config: &FilterConfig, decider: &Decider) -> Names {
    let control = config.headers.control();
    let needed = decider.needed();
    let decision = if needed.len() <= INLINE_VALUES {
        needed
    } else {
        &[]
    };
    Names::new(
        control
            .into_iter()
            .chain(decision.iter().map(String::as_str)),
    )
}

/// Whether a request's headers are read before its decision: to strip or trust the control
/// headers, or for the headers the decision reads. Otherwise only a chosen request's are read.
pub fn reads_up_front(config: &FilterConfig, decider: &Decider) -> bool {
    config.strip_control == Stripper::Filter
        || config.trusted_control
        || !decider.needed().is_empty()
}

/// A `:status` value, if it is a number.
pub fn parse_status(value: &[u8]) -> Option<u16> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Http {
    /// The request's headers: decide, and tag or copy a chosen request.
    pub fn request_headers(&mut self, end_of_stream: bool) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let decider = &shared.decider;
        let needed = decider.needed();

        // Read before the decision only when stripping, trusting or deciding needs the headers
        // (`reads_up_front`); otherwise a chosen request reads them once chosen.
        let early = shared
            .reads_up_front
            .then(|| host::header_pairs(HeaderMap::Request));
        let mut headers = early.as_deref().and_then(Headers::new);

        // One pass over the headers finds doppel's control headers and what the decision reads.
        let wanted = &shared.wanted;
        let count = wanted.len();
        // The decision's headers are among those looked up unless there are too many.
        let inline = count == CONTROL + needed.len();
        let mut found = [None; CONTROL + INLINE_VALUES];
        if let Some(headers) = headers {
            headers.lookup(wanted, &mut found[..count]);
        }
        let h = &config.headers;

        if config.trusted_control {
            let shadow = SHADOW_VALUE.as_bytes();
            let marked = match headers {
                Some(_) => found[0] == Some(shadow),
                None => {
                    host::header(HeaderMap::Request, h.variant.as_str()).as_deref() == Some(shadow)
                }
            };
            if marked {
                self.variant = Variant::Shadow;
                self.start_ns = Some(host::now_ns());
                return;
            }
        } else {
            if config.strip_control == Stripper::Filter {
                for (name, value) in wanted.iter().zip(&found).take(CONTROL) {
                    // Without a readable copy of the headers, remove blindly: never let one through.
                    if headers.is_none() || value.is_some() {
                        host::set_header(HeaderMap::Request, name, None);
                    }
                }
            }
            // A stripped header is gone for the decision too.
            for (name, value) in wanted.iter().zip(found.iter_mut()).skip(CONTROL) {
                if config.is_control_header(name) {
                    *value = None;
                }
            }
        }

        let chosen = decider.can_choose() && {
            let rng = &mut shared.state.borrow_mut().rng;
            let variant = if inline {
                decider.decide(&found[CONTROL..count], rng)
            } else {
                let strip = !config.trusted_control;
                let values: Vec<_> = needed
                    .iter()
                    .map(|name| match headers {
                        Some(_) if strip && config.is_control_header(name) => None,
                        Some(hs) => hs.get(name),
                        None => None,
                    })
                    .collect();
                decider.decide(&values, rng)
            };
            variant == Variant::Shadow
        };
        let late;
        if chosen && early.is_none() {
            late = host::header_pairs(HeaderMap::Request);
            headers = Headers::new(&late);
        }
        // A copy Envoy's router sends leaves this request a primary one like any other.
        let by_envoy = config.sender() == Some(Sender::Envoy);
        if !chosen || by_envoy {
            if chosen {
                self.mark_for_envoy(headers, end_of_stream);
            }
            let draw = shared.state.borrow_mut().rng.next_u64();
            if shared.primary_sample.chooses(draw) {
                self.start_ns = Some(host::now_ns());
            }
            return;
        }
        self.start_ns = Some(host::now_ns());
        match shared.config.mode {
            Mode::Split => self.tag_shadow(headers),
            Mode::Mirror => match headers {
                Some(headers) => self.start_copy(headers, end_of_stream),
                // Envoy sent headers the filter cannot read: nothing to copy them from.
                None => self.count(Counter::MirrorFailed),
            },
            Mode::Off => {}
        }
    }

    /// A chunk of the request body: collected while a copy waits for its body.
    #[cfg(feature = "mirror")]
    pub fn request_body(&mut self, size: usize, end_of_stream: bool) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        let Some((job, expect)) = copy.pending.as_mut() else {
            return;
        };
        if let Some(chunk) = host::buffer(Buffer::RequestBody, size) {
            job.body.extend_from_slice(&chunk);
        }
        let (len, expect) = (job.body.len() as u64, *expect);
        if len > expect || (end_of_stream && len != expect) {
            let key = copy.key;
            copy.pending = None;
            copy.reported = true;
            self.cancel_copy(key, Counter::MirrorSkippedBody);
        } else if (end_of_stream || len == expect)
            && let Some((job, _)) = copy.pending.take()
        {
            self.enqueue(job);
        }
    }

    /// The response's headers of a measured request: status and latency.
    pub fn response_headers(&mut self, end_of_stream: bool) {
        self.responded = true;
        let Some(start_ns) = self.start_ns else {
            return;
        };
        let shared = self.shared.clone();
        let latency_us = host::now_ns().saturating_sub(start_ns) / 1000;
        shared.metrics.latency(self.variant, latency_us);
        let custom = &shared.config.custom_metrics;
        let status = if custom.is_empty() {
            // The status alone: an upstream's response has more headers than the filter
            // needs, and reading them all costs more than reading one value (BENCHMARKS.md).
            host::header(HeaderMap::Response, ":status")
                .as_deref()
                .and_then(parse_status)
        } else {
            // Status and `server-timing` from one call (two values would cost two).
            let raw = host::header_pairs(HeaderMap::Response);
            let headers = Headers::new(&raw);
            let header = |name| headers.and_then(|h| h.get(name));
            if let Some(h) = header("server-timing") {
                shared
                    .metrics
                    .custom(self.variant, &durations_us(h, custom));
            }
            header(":status").and_then(parse_status)
        }
        .unwrap_or(0);
        if status >= 500 {
            let upstream = host::property(&["response", "code_details"])
                .is_some_and(|d| *d == *b"via_upstream");
            let mut st = shared.state.borrow_mut();
            st.tally.add(Counter::Rq5xx(self.variant));
            if !upstream {
                st.tally.add(Counter::RqReset(self.variant));
            }
        }
        if let Some(copy) = self.copy.as_mut() {
            copy.status = Some(status);
            copy.latency_us = latency_us;
            let limit = shared
                .config
                .mirror
                .as_ref()
                .map_or(0, |m| m.compare_body_bytes.get());
            if limit > 0 {
                copy.digest = Some(BodyDigest::new(limit));
            }
            if limit == 0 || end_of_stream {
                let answer = self.primary_answer();
                self.report_primary(answer);
            }
        }
    }

    /// A chunk of the response body: digested while a copy compares bodies.
    #[cfg(feature = "mirror")]
    pub fn response_body(&mut self, size: usize, end_of_stream: bool) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        if copy.reported {
            return;
        }
        let Some(digest) = copy.digest.as_mut() else {
            return;
        };
        let want = usize::try_from(digest.wants())
            .unwrap_or(usize::MAX)
            .min(size);
        if want > 0
            && let Some(chunk) = host::buffer(Buffer::ResponseBody, want)
        {
            digest.feed(&chunk);
        }
        if end_of_stream || digest.wants() == 0 {
            let answer = self.primary_answer();
            self.report_primary(answer);
        }
    }

    /// The end of the request (its context is deleted): count it if measured, settle its copy.
    pub fn finish(mut self) {
        if self.start_ns.is_none() {
            return;
        }
        {
            let mut st = self.shared.state.borrow_mut();
            st.tally.add(Counter::RqTotal(self.variant));
            if !self.responded {
                st.tally.add(Counter::RqReset(self.variant));
            }
        }
        if let Some(copy) = self.copy.as_mut()
            && copy.pending.take().is_some()
        {
            // The request ended before its body was complete: the copy was never sent.
            copy.reported = true;
            let key = copy.key;
            self.cancel_copy(key, Counter::MirrorSkippedBody);
            return;
        }
        let answer = self.primary_answer();
        self.report_primary(answer);
    }
}
