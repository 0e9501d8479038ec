//! Counting operators' commands: a middleware on the API that, for every accepted
//! `POST /v1/rollouts/{service}/{command}`, counts a decision from source `operator`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::Telemetry;

/// The command a request path names, if it is a rollout command (`start`, `pause`, `resume`,
/// `promote`, `rollback`).
///
/// ```
/// use doppel_engine::telemetry::commands::command_of;
/// assert_eq!(command_of("/v1/rollouts/checkout/pause"), Some("pause"));
/// assert_eq!(command_of("/v1/rollouts/checkout/events"), None);
/// assert_eq!(command_of("/v1/rollouts/checkout"), None);
/// ```
pub fn command_of(path: &str) -> Option<&'static str> {
    let mut parts = path.trim_start_matches('/').split('/');
    let (Some("v1"), Some("rollouts"), Some(service), Some(command), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if service.is_empty() {
        return None;
    }
    ["start", "pause", "resume", "promote", "rollback"]
        .into_iter()
        .find(|known| *known == command)
}

/// The middleware: passes the request on, and counts the command if it was accepted (2xx).
pub async fn count(
    State(telemetry): State<Arc<Telemetry>>,
    request: Request,
    next: Next,
) -> Response {
    let command = (request.method() == Method::POST)
        .then(|| command_of(request.uri().path()))
        .flatten();
    let response = next.run(request).await;
    if let Some(command) = command
        && response.status().is_success()
    {
        telemetry.decision("operator", command);
    }
    response
}
