//! The live dashboard and `/metrics`, served on the API's listener by `doppel serve`.
//!
//! - `GET /dashboard`: one page (HTML, JS and CSS embedded in the binary, no CDN, charts drawn
//!   on `<canvas>` by hand). Per rollout: primary against shadow over time (request rate, error
//!   rate, p50/p95/p99 latency, mirror mismatches), each rule with its values, p-value and
//!   state, the decision timeline with reasons, the weights and step, and pause, resume,
//!   rollback and promote buttons that post the API's token-protected commands with a token
//!   the user types in.
//! - `GET /dashboard/state`: everything the page shows, as JSON ([`state::State`]).
//! - `GET /dashboard/events`: server-sent events: `snapshot` (the state) first, then
//!   `point` and `look` as the analysis records them, and `rollout` when a rollout changes.
//! - `GET /metrics`: the engine's metrics in Prometheus text format ([`crate::telemetry`]).
//!
//! Files: [`history`] keeps the bounded per-service history; [`state`] builds the snapshot;
//! [`events`] is the event stream; `assets/` holds the page.

pub mod events;
pub mod history;
pub mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use history::{Change, History, Point, ServiceHistory};

use crate::cli::analysis_loop::SharedController;
use crate::ingest::WindowStore;
use crate::telemetry::{self, Scrape, Telemetry};

/// What the dashboard and `/metrics` read.
#[derive(Debug)]
pub struct Dashboard {
    /// The rollouts (and, through them, the xDS cache).
    pub controller: SharedController,
    /// The analysis history.
    pub history: Arc<History>,
    /// The analysis and decision counters.
    pub telemetry: Arc<Telemetry>,
    /// The windows (for ingestion's counters).
    pub windows: Arc<WindowStore>,
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Everything is served from this origin: no script, style or connection goes elsewhere.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's and `/metrics`' routes over `dashboard`.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route(
            "/dashboard",
            get(|| asset(INDEX_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/dashboard/",
            get(|| asset(INDEX_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/dashboard/style.css",
            get(|| asset(STYLE_CSS, "text/css; charset=utf-8")),
        )
        .route("/dashboard/state", get(snapshot))
        .route("/dashboard/events", get(events::events))
        .route("/metrics", get(metrics))
        .with_state(dashboard)
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn snapshot(State(dashboard): State<Arc<Dashboard>>) -> Response {
    match state::State::of(&dashboard) {
        Ok(state) => axum::Json(state).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let (cache, nodes, rollouts) = {
        let controller = state::lock(&dashboard.controller);
        let services = controller.services();
        // The configured nodes only (as every status lists them): a bounded label set.
        let mut nodes = std::collections::BTreeMap::new();
        for status in services.iter().filter_map(|s| controller.status(s).ok()) {
            for node in status.nodes {
                nodes.insert(node.node, node.streams);
            }
        }
        let rollouts = services
            .iter()
            .filter_map(|s| controller.rollout(s).cloned())
            .collect();
        (Arc::clone(controller.cache()), nodes, rollouts)
    };
    let page = telemetry::render(&Scrape {
        telemetry: &dashboard.telemetry,
        ingest: dashboard.windows.counts(),
        xds: cache.counters(),
        nodes: nodes.into_iter().collect(),
        rollouts,
    });
    let mut response = page.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(telemetry::exposition::CONTENT_TYPE),
    );
    response
}

#[cfg(test)]
mod tests;
