//! A bare Rust proxy-wasm filter for the load benchmark: per request it reads one header
//! (`x-user-id`), writes one (`x-bare`), and records one histogram (the request's latency, at
//! its response headers). Nothing else: it is the floor any Rust Wasm filter pays in Envoy.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::time::SystemTime;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(Root { histogram: 0 }));
}}

struct Root {
    histogram: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        match hostcalls::define_metric(MetricType::Histogram, "bare.rq_time_us") {
            Ok(id) => {
                self.histogram = id;
                true
            }
            Err(_) => false,
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            histogram: self.histogram,
            start: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    histogram: u32,
    start: Option<SystemTime>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let user = self.get_http_request_header_bytes("x-user-id");
        let value: &[u8] = if user.is_some() { b"user" } else { b"anonymous" };
        self.set_http_request_header_bytes("x-bare", Some(value));
        self.start = Some(self.get_current_time());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(start) = self.start {
            let us = self.get_current_time().duration_since(start).map_or(0, |d| d.as_micros());
            let _ = hostcalls::record_metric(self.histogram, u64::try_from(us).unwrap_or(u64::MAX));
        }
        Action::Continue
    }
}
