//! The HTTP API of `doppel serve` (axum). Reads are open; every state-changing endpoint needs
//! `Authorization: Bearer TOKEN`, compared in constant time. Without a configured token the
//! state-changing endpoints are refused.
//!
//! - `GET  /v1/rollouts`: every rollout's status.
//! - `GET  /v1/rollouts/{service}`: one rollout's status (phase, step, traffic, NACKs, log).
//! - `POST /v1/rollouts/{service}/start` with `{"version": "..."}`.
//! - `POST /v1/rollouts/{service}/{pause|resume|promote|rollback}`.
//! - `POST /v1/rollouts/{service}/events` with a rollout event (an analysis outcome:
//!   `{"at_ms": 1, "verdict": "pass"}` or `{"at_ms": 1, "verdict": "fired", "rule": "errors",
//!   "action": "rollback"}`); `at_ms` 0 means now.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::rollout::{Command, Controller, Input, RolloutError, RolloutEvent, now_ms};

/// What the handlers share.
pub struct ApiState {
    /// The rollouts.
    pub controller: Arc<Mutex<Controller>>,
    /// The bearer token; `None` refuses every state-changing request.
    pub token: Option<String>,
}

/// The API's routes over `state`.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/rollouts", get(list))
        .route("/v1/rollouts/{service}", get(status))
        .route("/v1/rollouts/{service}/events", post(event))
        .route("/v1/rollouts/{service}/{command}", post(command))
        .with_state(state)
}

/// Equal in constant time for equal lengths (the length itself is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

/// `None` when the request carries the token, else the refusal to send.
fn refusal(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &state.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "no API token is configured: state-changing requests are disabled",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

fn failure(e: RolloutError) -> Response {
    let code = match &e {
        RolloutError::UnknownService(_) => StatusCode::NOT_FOUND,
        RolloutError::Refused(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, e.to_string())
}

fn lock(state: &ApiState) -> std::sync::MutexGuard<'_, Controller> {
    // The controller commits before it changes memory: a panic leaves it consistent.
    state
        .controller
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn list(State(state): State<Arc<ApiState>>) -> Response {
    let controller = lock(&state);
    let mut all = Vec::new();
    for service in controller.services() {
        match controller.status(&service) {
            Ok(status) => all.push(status),
            Err(e) => return failure(e),
        }
    }
    Json(all).into_response()
}

async fn status(State(state): State<Arc<ApiState>>, Path(service): Path<String>) -> Response {
    match lock(&state).status(&service) {
        Ok(status) => Json(status).into_response(),
        Err(e) => failure(e),
    }
}

/// The body of `start`.
#[derive(Debug, Deserialize)]
struct StartBody {
    version: String,
}

fn apply(state: &ApiState, service: &str, input: Input) -> Response {
    let mut controller = lock(state);
    match controller.apply(service, input) {
        Ok(entry) => match controller.status(service) {
            Ok(status) => Json(json!({ "decision": entry, "status": status })).into_response(),
            Err(e) => failure(e),
        },
        Err(e) => failure(e),
    }
}

async fn command(
    State(state): State<Arc<ApiState>>,
    Path((service, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    let command = match name.as_str() {
        "start" => match serde_json::from_slice::<StartBody>(&body) {
            Ok(start) => Command::Start {
                version: start.version,
            },
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("start needs {{\"version\": \"...\"}}: {e}"),
                );
            }
        },
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "promote" => Command::Promote,
        "rollback" => Command::Rollback,
        other => return error(StatusCode::NOT_FOUND, format!("no command `{other}`")),
    };
    let input = Input::Command {
        command,
        now_ms: now_ms(),
    };
    apply(&state, &service, input)
}

async fn event(
    State(state): State<Arc<ApiState>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    let mut event: RolloutEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("rollout event: {e}")),
    };
    if event.at_ms == 0 {
        event.at_ms = now_ms();
    }
    apply(&state, &service, Input::Event(event))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn rollout_api_token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
