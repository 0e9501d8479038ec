//! One HTTP context per request: strip the control headers, decide, tag the chosen request (split)
//! or prepare its copy (mirror), measure the answer, and count. Host calls are kept to what the
//! config needs: the headers a decision reads, the clock twice, the status, one histogram.

use super::host;
use super::root::{Job, Shared, tally_resolution};
use crate::config::Mode;
use crate::mirror::{
    Answer, BodyDigest, Report, Safety, copy_headers, has_required_pseudo_headers, safety,
};
use crate::names::{SHADOW_VALUE, STATE_ID, STATE_VARIANT, Variant};
use crate::tally::Counter;
use crate::timing::durations_us;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

const REQ: MapType = MapType::HttpRequestHeaders;
const RESP: MapType = MapType::HttpResponseHeaders;

/// The context used when the root has no valid config: it does nothing.
pub struct Passthrough;

impl Context for Passthrough {}
impl HttpContext for Passthrough {}

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
    start_ns: u64,
    responded: bool,
    copy: Option<Copy>,
}

impl Http {
    /// A context for one request under `shared`'s config.
    pub fn new(shared: Rc<Shared>) -> Self {
        Http {
            shared,
            variant: Variant::Primary,
            start_ns: 0,
            responded: false,
            copy: None,
        }
    }

    /// Removes client-sent control headers; with a trusted source, honours its variant header.
    fn strip_control_headers(&mut self) -> bool {
        let h = &self.shared.config.headers;
        if self.shared.config.trusted_control {
            let trusted = host::header(REQ, h.variant.as_str());
            return trusted.as_deref() == Some(SHADOW_VALUE.as_bytes());
        }
        for name in [&h.variant, &h.id, &h.mirror] {
            if host::header(REQ, name.as_str()).is_some() {
                host::set_header(REQ, name.as_str(), None);
            }
        }
        false
    }

    /// Split: route to the shadow by the variant header, tag with an id.
    fn tag_shadow(&mut self) {
        let id = self.shared.state.borrow_mut().ids.next_id().hex();
        let h = &self.shared.config.headers;
        host::set_header(REQ, h.variant.as_str(), Some(SHADOW_VALUE.as_bytes()));
        host::set_header(REQ, h.id.as_str(), Some(id.as_bytes()));
        if host::header(REQ, "x-request-id").is_none() {
            host::set_header(REQ, "x-request-id", Some(id.as_bytes()));
        }
        host::set_filter_state(STATE_VARIANT, SHADOW_VALUE.as_bytes());
        host::set_filter_state(STATE_ID, id.as_bytes());
        self.variant = Variant::Shadow;
    }

    /// Mirror: check the request is safe to copy, open its comparison, prepare the copy.
    fn start_copy(&mut self, end_of_stream: bool) {
        let shared = self.shared.clone();
        let Some(m) = &shared.config.mirror else {
            return;
        };
        let method = host::header(REQ, ":method").unwrap_or_default();
        let length = if end_of_stream {
            None
        } else {
            host::header(REQ, "content-length")
        };
        let body_len = match safety(m, &method, length.as_deref(), end_of_stream) {
            Safety::Copy { body_len } => body_len,
            Safety::SkipMethod => return self.count(Counter::MirrorSkippedMethod),
            Safety::SkipBody => return self.count(Counter::MirrorSkippedBody),
        };
        let now = self.start_ns;
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
        let headers = copy_headers(
            host::headers(REQ),
            m.authority.as_ref().map(|a| a.as_str()),
            [h.variant.as_str(), h.id.as_str(), h.mirror.as_str()],
            (h.id.as_str(), id.as_bytes()),
            h.mirror.as_str(),
        );
        if !has_required_pseudo_headers(&headers) {
            self.cancel_copy(key, Counter::MirrorFailed);
            return;
        }
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
        self.copy = Some(copy);
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

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let trusted_shadow = self.strip_control_headers();
        self.start_ns = host::now_ns();
        if trusted_shadow {
            self.variant = Variant::Shadow;
            return Action::Continue;
        }
        let decider = &self.shared.decider;
        if !decider.can_choose() {
            return Action::Continue;
        }
        let values: Vec<Option<Vec<u8>>> = decider
            .needed()
            .iter()
            .map(|h| host::header(REQ, h))
            .collect();
        let chosen = decider.decide(&values, &mut self.shared.state.borrow_mut().rng);
        if chosen == Variant::Shadow {
            match self.shared.config.mode {
                Mode::Split => self.tag_shadow(),
                Mode::Mirror => self.start_copy(end_of_stream),
                Mode::Off => {}
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let Some(copy) = self.copy.as_mut() else {
            return Action::Continue;
        };
        let Some((job, expect)) = copy.pending.as_mut() else {
            return Action::Continue;
        };
        if let Some(chunk) = host::buffer(BufferType::HttpRequestBody, size) {
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
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.responded = true;
        let status = host::header(RESP, ":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
            .unwrap_or(0);
        let latency_us = host::now_ns().saturating_sub(self.start_ns) / 1000;
        let shared = self.shared.clone();
        shared.metrics.latency(self.variant, latency_us);
        if status >= 500 {
            let upstream =
                host::property(&["response", "code_details"]).is_some_and(|d| d == b"via_upstream");
            let mut st = shared.state.borrow_mut();
            st.tally.add(Counter::Rq5xx(self.variant));
            if !upstream {
                st.tally.add(Counter::RqReset(self.variant));
            }
        }
        if !shared.config.custom_metrics.is_empty()
            && let Some(h) = host::header(RESP, "server-timing")
        {
            let durations = durations_us(&h, &shared.config.custom_metrics);
            shared.metrics.custom(self.variant, &durations);
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
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let Some(copy) = self.copy.as_mut() else {
            return Action::Continue;
        };
        if copy.reported {
            return Action::Continue;
        }
        let Some(digest) = copy.digest.as_mut() else {
            return Action::Continue;
        };
        let want = usize::try_from(digest.wants())
            .unwrap_or(usize::MAX)
            .min(size);
        if want > 0
            && let Some(chunk) = host::buffer(BufferType::HttpResponseBody, want)
        {
            digest.feed(&chunk);
        }
        if end_of_stream || digest.wants() == 0 {
            let answer = self.primary_answer();
            self.report_primary(answer);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
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
