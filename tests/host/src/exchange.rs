//! One HTTP stream through the filter: request headers (and body), the upstream's answer, then
//! `proxy_on_done`, `proxy_on_log` and `proxy_on_delete`, in Envoy's order.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};

use super::driver::{Host, StreamCallbacks};
use super::headers::HeaderMap;
use super::state::{HttpCtx, LocalResponse};

/// What a stream callback answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on (0).
    Continue,
    /// Stop iteration, or buffer (anything else).
    Pause,
}

impl Action {
    fn from_abi(value: u32) -> Action {
        if value == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// A stream in flight; each step consumes it and hands it back.
pub struct Exchange<'h> {
    host: &'h mut Host,
    id: u32,
    calls: StreamCallbacks,
    /// What each callback answered, in order: (callback name, action).
    pub actions: Vec<(&'static str, Action)>,
    body_buffering: (bool, bool),
}

/// What happened to a finished stream.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The context id the stream had.
    pub id: u32,
    /// The request headers as they went upstream; `None` if the filter never let them go.
    pub forwarded: Option<HeaderMap>,
    /// The cluster those headers routed to.
    pub cluster: Option<String>,
    /// The request headers as the filter left them (also when not forwarded).
    pub request_headers: HeaderMap,
    /// The response headers as they went to the client.
    pub delivered: Option<HeaderMap>,
    /// A local response the filter sent instead of the upstream's.
    pub local_response: Option<LocalResponse>,
    /// Filter state the filter set (`set_property`), by path; Envoy prefixes keys with `wasm.`.
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// Streams the filter closed (`proxy_close_stream` types).
    pub closed: Vec<u32>,
    /// What each callback answered, in order.
    pub actions: Vec<(&'static str, Action)>,
    /// What `proxy_on_done` answered.
    pub done: bool,
}

impl Finished {
    /// A request header as it went upstream.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.forwarded.as_ref()?.get_str(name)
    }
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.add(k, v.as_bytes());
    }
    map
}

impl Host {
    /// Starts a stream with `headers` and no body (`end_of_stream` on the headers).
    pub fn request(&mut self, headers: &[(&str, &str)]) -> Result<Exchange<'_>> {
        self.open(headers, true)
    }

    /// Starts a stream with `headers` and a body sent in one chunk.
    pub fn request_with_body(
        &mut self,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Exchange<'_>> {
        self.open(headers, false)?.body(body, true)
    }

    /// Starts a stream; with `end_of_stream` false, send the body with [`Exchange::body`].
    pub fn open(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Result<Exchange<'_>> {
        self.open_map(header_map(headers), end_of_stream)
    }

    /// [`Host::open`] with a header map of raw bytes (values that are not UTF-8, repeated names).
    pub fn open_map(
        &mut self,
        request_headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<Exchange<'_>> {
        let id = self.new_context_id();
        let root = self.root_id();
        let now = self.now_ns();
        let count = request_headers.len() as u32;
        self.store.data_mut().http.insert(
            id,
            HttpCtx {
                request_headers,
                started_ns: now,
                request_paused: true,
                ..HttpCtx::default()
            },
        );
        if let Some(f) = self.exports_on_context_create() {
            self.enter(id, |s| f.call(s, (id, root)))?;
        }
        let calls = self.stream_callbacks();
        let mut exchange = Exchange {
            host: self,
            id,
            calls,
            actions: Vec::new(),
            body_buffering: (false, false),
        };
        let action = match exchange.calls.request_headers.clone() {
            Some(f) => exchange.call("on_request_headers", |s| {
                f.call(s, (id, count, end_of_stream as u32))
            })?,
            None => Action::Continue,
        };
        if action == Action::Continue {
            exchange.ctx()?.release_request();
        }
        Ok(exchange)
    }
}

impl<'h> Exchange<'h> {
    fn call(
        &mut self,
        name: &'static str,
        run: impl FnOnce(&mut wasmtime::Store<super::state::HostState>) -> wasmtime::Result<u32>,
    ) -> Result<Action> {
        let action = Action::from_abi(self.host.enter(self.id, run)?);
        self.actions.push((name, action));
        Ok(action)
    }

    fn ctx(&mut self) -> Result<&mut HttpCtx> {
        let id = self.id;
        match self.host.store.data_mut().http.get_mut(&id) {
            Some(ctx) => Ok(ctx),
            None => bail!("stream {id} is gone"),
        }
    }

    /// The stream's context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The host, for looking at metrics or callouts mid-stream.
    pub fn host(&mut self) -> &mut Host {
        self.host
    }

    /// The request headers as they went upstream, if the filter let them go yet.
    pub fn forwarded(&self) -> Option<HeaderMap> {
        self.host.store.data().http.get(&self.id)?.forwarded.clone()
    }

    /// A local response the filter sent, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.host
            .store
            .data()
            .http
            .get(&self.id)?
            .local_response
            .clone()
    }

    /// Sends a request body chunk (`proxy_on_request_body`). A chunk after a buffering answer is
    /// added to the buffered body, as Envoy does.
    pub fn body(mut self, chunk: &[u8], end_of_stream: bool) -> Result<Self> {
        let buffering = self.body_buffering.0;
        let ctx = self.ctx()?;
        if !buffering {
            ctx.request_body.clear();
        }
        ctx.request_body.extend_from_slice(chunk);
        let size = ctx.request_body.len() as u32;
        let id = self.id;
        let action = match self.calls.request_body.clone() {
            Some(f) => self.call("on_request_body", |s| {
                f.call(s, (id, size, end_of_stream as u32))
            })?,
            None => Action::Continue,
        };
        self.body_buffering.0 = action == Action::Pause;
        if action == Action::Continue {
            self.ctx()?.release_request();
        }
        Ok(self)
    }

    /// Lets virtual time pass (ticks and callout timeouts run, see [`Host::advance`]).
    pub fn wait(self, by: Duration) -> Result<Self> {
        self.host.advance(by)?;
        Ok(self)
    }

    /// The upstream answers with `status` and `headers`, no body.
    pub fn respond(self, status: u16, headers: &[(&str, &str)]) -> Result<Self> {
        self.response(status, headers, true)
    }

    /// The upstream answers with `status`, `headers` and a body in one chunk.
    pub fn respond_with_body(
        self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Self> {
        self.response(status, headers, false)?
            .response_body(body, true)
    }

    /// The upstream's response headers (`proxy_on_response_headers`). Like Envoy's router, the
    /// host adds `x-envoy-upstream-service-time` and sets `response.code_details` to `via_upstream`.
    pub fn response(
        self,
        status: u16,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Self> {
        let start = self
            .host
            .store
            .data()
            .http
            .get(&self.id)
            .map_or(0, |c| c.started_ns);
        let elapsed_ms = (self.host.now_ns().saturating_sub(start) / 1_000_000).to_string();
        let mut map = header_map(headers);
        map.add("x-envoy-upstream-service-time", elapsed_ms.as_bytes());
        self.answer(status, map, "via_upstream", end_of_stream)
    }

    /// [`Exchange::response`] with raw header bytes (values that are not UTF-8, many headers).
    pub fn response_map(
        self,
        status: u16,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<Self> {
        self.answer(status, headers, "via_upstream", end_of_stream)
    }

    /// Envoy's router answers itself because the upstream reset the stream before answering
    /// (503, `upstream_reset_before_response_started{connection_termination}`).
    pub fn upstream_reset(self) -> Result<Self> {
        let body: &[u8] = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
        let details = "upstream_reset_before_response_started{connection_termination}";
        self.router_reply(503, details, body)
    }

    /// Envoy's router answers itself because the upstream did not answer in time (504,
    /// `upstream_response_timeout`).
    pub fn upstream_timeout(self) -> Result<Self> {
        self.router_reply(
            504,
            "upstream_response_timeout",
            b"upstream request timeout",
        )
    }

    /// A local reply of Envoy's router (no upstream answer): `status`, `details`, a text body.
    pub fn router_reply(self, status: u16, details: &str, body: &[u8]) -> Result<Self> {
        let length = body.len().to_string();
        let map = header_map(&[("content-length", &length), ("content-type", "text/plain")]);
        let exchange = self.answer(status, map, details, body.is_empty())?;
        if body.is_empty() {
            Ok(exchange)
        } else {
            exchange.response_body(body, true)
        }
    }

    fn answer(
        mut self,
        status: u16,
        headers: HeaderMap,
        details: &str,
        end_of_stream: bool,
    ) -> Result<Self> {
        let ctx = self.ctx()?;
        if ctx.local_response.is_some() {
            bail!("the filter answered this stream locally; the upstream never saw it");
        }
        if ctx.forwarded.is_none() {
            bail!("the filter has not let the request go upstream yet; nothing can answer it");
        }
        let mut map = HeaderMap::new();
        map.set(":status", status.to_string().as_bytes());
        for (k, v) in headers.iter() {
            map.add(k, v);
        }
        ctx.code_details = Some(details.to_string());
        let count = map.len() as u32;
        ctx.response_headers = Some(map);
        let id = self.id;
        let action = match self.calls.response_headers.clone() {
            Some(f) => self.call("on_response_headers", |s| {
                f.call(s, (id, count, end_of_stream as u32))
            })?,
            None => Action::Continue,
        };
        if action == Action::Continue {
            self.ctx()?.release_response();
        }
        Ok(self)
    }

    /// A response body chunk (`proxy_on_response_body`).
    pub fn response_body(mut self, chunk: &[u8], end_of_stream: bool) -> Result<Self> {
        let buffering = self.body_buffering.1;
        let ctx = self.ctx()?;
        if !buffering {
            ctx.response_body.clear();
        }
        ctx.response_body.extend_from_slice(chunk);
        let size = ctx.response_body.len() as u32;
        let id = self.id;
        let action = match self.calls.response_body.clone() {
            Some(f) => self.call("on_response_body", |s| {
                f.call(s, (id, size, end_of_stream as u32))
            })?,
            None => Action::Continue,
        };
        self.body_buffering.1 = action == Action::Pause;
        if action == Action::Continue {
            self.ctx()?.release_response();
        }
        Ok(self)
    }

    /// Ends the stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`; what happened.
    pub fn finish(mut self) -> Result<Finished> {
        let now = self.host.now_ns();
        self.ctx()?.finished_ns = Some(now);
        let id = self.id;
        let done = match self.calls.done.clone() {
            Some(f) => self.host.enter(id, |s| f.call(s, id))? != 0,
            None => true,
        };
        if let Some(f) = self.calls.log.clone() {
            self.host.enter(id, |s| f.call(s, id))?;
        }
        self.ctx()?.maps_gone = true;
        if let Some(f) = self.calls.delete.clone() {
            self.host.enter(id, |s| f.call(s, id))?;
        }
        let ctx = match self.host.store.data_mut().http.remove(&id) {
            Some(ctx) => ctx,
            None => bail!("stream {id} is gone"),
        };
        let cluster = ctx.forwarded.as_ref().map(|h| self.host.route(h));
        Ok(Finished {
            id,
            forwarded: ctx.forwarded,
            cluster,
            request_headers: ctx.request_headers,
            delivered: ctx.delivered,
            local_response: ctx.local_response,
            filter_state: ctx.filter_state,
            closed: ctx.closed,
            actions: self.actions,
            done,
        })
    }
}
