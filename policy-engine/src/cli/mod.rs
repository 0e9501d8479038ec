//! The `doppel` subcommands: `check` and `replay` work on policy files offline; `serve` runs the
//! engine (xDS, metrics ingestion, rollouts, HTTP API); `rollout ...` talks to a running engine's API.
//!
//! - [`check`]: `doppel check PATH...`.
//! - [`replay`]: `doppel replay --policy FILE --trace FILE`.
//! - [`config`]: the serve config file (steering, nodes, services and their endpoints).
//! - [`serve`]: `doppel serve`.
//! - [`analysis_loop`]: per service, every analysis interval, windows -> analyzer -> rollout.
//! - [`api`]: the HTTP API (axum); state-changing endpoints need the bearer token. The same
//!   listener serves the dashboard and `/metrics` ([`crate::dashboard`]).
//! - [`reload`]: policy files reloaded while serving; an invalid edit is refused, the last good policy stays.
//! - [`render`]: `doppel render istio POLICY`.
//! - [`rollout`]: `doppel rollout start|status|wait|pause|resume|promote|rollback`.
//! - [`client`]: the small HTTP client the rollout commands use.
//! - [`demo`]: `doppel demo`: upstreams, engine, Envoy, traffic and a decision to watch.

pub mod analysis_loop;
pub mod api;
pub mod check;
pub mod client;
pub mod config;
pub mod demo;
pub mod reload;
pub mod render;
pub mod replay;
pub mod rollout;
pub mod serve;

/// The environment variable holding the API's bearer token.
pub const TOKEN_ENV: &str = "DOPPEL_API_TOKEN";

/// Reads the API token: from `file` if given (trimmed), else from [`TOKEN_ENV`].
pub fn read_token(file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        return Ok(Some(token));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}
