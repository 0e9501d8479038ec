//! `doppel rollout start|status|wait|pause|resume|promote|rollback`: commands against a running
//! engine's API. `wait` blocks until a verdict, for CD pipelines: exit 0 promoted,
//! [`EXIT_ROLLED_BACK`] rolled back, [`EXIT_PAUSED`] paused, [`EXIT_TIMEOUT`] no verdict in time,
//! 1 any other error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Answer, request};
use super::{TOKEN_ENV, read_token};
use crate::policy::parse_duration;

/// `wait`'s exit code when the rollout was rolled back.
pub const EXIT_ROLLED_BACK: u8 = 2;
/// `wait`'s exit code when the rollout is paused (an operator must decide).
pub const EXIT_PAUSED: u8 = 3;
/// `wait`'s exit code when no verdict came before the timeout.
pub const EXIT_TIMEOUT: u8 = 4;

/// Where the API is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The engine's API address (`host:port`).
    #[arg(long, env = "DOPPEL_API", default_value = "127.0.0.1:8700")]
    pub api: String,
    /// A file holding the bearer token (else the DOPPEL_API_TOKEN environment variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// The rollout subcommands.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Opens a rollout of a new shadow version at the policy's first step.
    Start {
        /// The policy's service.
        service: String,
        /// The shadow's version label.
        #[arg(long)]
        version: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Shows a rollout: phase, step, traffic, Envoy's ACK/NACK state and recent decisions.
    Status {
        /// The policy's service.
        service: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Blocks until a verdict: exit 0 promoted, 2 rolled back, 3 paused, 4 timed out.
    Wait {
        /// The policy's service.
        service: String,
        /// Longest wait (`30m`, `1h`).
        #[arg(long, default_value = "1h")]
        timeout: String,
        /// How often to ask (`1s`).
        #[arg(long, default_value = "1s")]
        interval: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Freezes the rollout at its current step.
    Pause {
        /// The policy's service.
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Continues a paused rollout.
    Resume {
        /// The policy's service.
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Promotes the shadow now.
    Promote {
        /// The policy's service.
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Rolls back now: shadow weight 0, mirroring off.
    Rollback {
        /// The policy's service.
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs a rollout subcommand; the process's exit code.
pub fn main(command: RolloutCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("doppel: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("doppel: {message}");
            ExitCode::FAILURE
        }
    }
}

fn decode(answer: Answer) -> Result<Value, String> {
    let value: Value = serde_json::from_str(&answer.body)
        .map_err(|e| format!("the API answered {} with non-JSON: {e}", answer.status))?;
    if answer.status >= 400 {
        let message = value["error"].as_str().unwrap_or(&answer.body);
        return Err(format!("the API refused ({}): {message}", answer.status));
    }
    Ok(value)
}

async fn post(
    api: &ApiArgs,
    service: &str,
    what: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let token = read_token(api.token_file.as_deref())?
        .ok_or_else(|| format!("no API token: pass --token-file or set {TOKEN_ENV}"))?;
    send(&api.api, &token, service, what, body).await
}

async fn get_status(api: &ApiArgs, service: &str) -> Result<Value, String> {
    status(&api.api, service).await
}

/// `POST /v1/rollouts/{service}/{what}` on the engine's API at `api` with `token`; the answer,
/// or why the API refused.
pub async fn send(
    api: &str,
    token: &str,
    service: &str,
    what: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let path = format!("/v1/rollouts/{service}/{what}");
    decode(request(api, "POST", &path, Some(token), body.map(|b| b.to_string())).await?)
}

/// `service`'s rollout status from the engine's API at `api`.
pub async fn status(api: &str, service: &str) -> Result<Value, String> {
    decode(request(api, "GET", &format!("/v1/rollouts/{service}"), None, None).await?)
}

/// One line per fact of a status document.
pub fn describe(status: &Value) -> String {
    let rollout = &status["rollout"];
    let phase = &rollout["phase"];
    let mut out = format!(
        "{}: {} (version {})",
        rollout["service"].as_str().unwrap_or("?"),
        phase["phase"].as_str().unwrap_or("?"),
        rollout["version"].as_str().unwrap_or("none"),
    );
    if let Some(step) = status["step"].as_u64() {
        let steps = rollout["plan"].as_array().map_or(0, Vec::len);
        out += &format!("\n  step {step} of {steps}");
    }
    if let Some(reason) = phase["reason"].as_str() {
        out += &format!("\n  reason: {reason}");
    }
    let traffic = &status["traffic"];
    out += &format!(
        "\n  route: {} {}% / {} {}%\n  filter: {} {}%  mirroring: {}",
        traffic["primary_cluster"].as_str().unwrap_or("?"),
        100.0 - traffic["route_weight"].as_f64().unwrap_or(0.0),
        traffic["shadow_cluster"].as_str().unwrap_or("?"),
        traffic["route_weight"].as_f64().unwrap_or(0.0),
        traffic["filter_mode"].as_str().unwrap_or("?"),
        traffic["filter_percent"].as_f64().unwrap_or(0.0),
        status["mirroring"].as_bool().unwrap_or(false),
    );
    for node in status["nodes"].as_array().into_iter().flatten() {
        out += &format!(
            "\n  node {}: snapshot v{} ({} streams)",
            node["node"].as_str().unwrap_or("?"),
            node["version"]
                .as_u64()
                .map_or("-".to_owned(), |v| v.to_string()),
            node["streams"].as_u64().unwrap_or(0),
        );
        for nack in node["rejected"].as_array().into_iter().flatten() {
            out += &format!(
                "\n    REJECTED {} v{} (Envoy runs v{}): {}",
                nack["kind"].as_str().unwrap_or("?"),
                nack["version"].as_u64().unwrap_or(0),
                nack["running"]
                    .as_u64()
                    .map_or("-".to_owned(), |v| v.to_string()),
                nack["error"].as_str().unwrap_or(""),
            );
        }
    }
    for entry in status["decisions"].as_array().into_iter().flatten() {
        out += &format!(
            "\n  #{} {}",
            entry["seq"].as_u64().unwrap_or(0),
            entry["note"].as_str().unwrap_or("")
        );
    }
    out
}

async fn run(command: RolloutCommand) -> Result<ExitCode, String> {
    let (api, service, what, body) = match command {
        RolloutCommand::Status { service, json, api } => {
            let status = get_status(&api, &service).await?;
            if json {
                println!("{status:#}");
            } else {
                println!("{}", describe(&status));
            }
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCommand::Wait {
            service,
            timeout,
            interval,
            api,
        } => return wait(&api, &service, &timeout, &interval).await,
        RolloutCommand::Start {
            service,
            version,
            api,
        } => (api, service, "start", Some(json!({ "version": version }))),
        RolloutCommand::Pause { service, api } => (api, service, "pause", None),
        RolloutCommand::Resume { service, api } => (api, service, "resume", None),
        RolloutCommand::Promote { service, api } => (api, service, "promote", None),
        RolloutCommand::Rollback { service, api } => (api, service, "rollback", None),
    };
    let answer = post(&api, &service, what, body).await?;
    println!("{}", answer["decision"]["note"].as_str().unwrap_or(what));
    println!("{}", describe(&answer["status"]));
    Ok(ExitCode::SUCCESS)
}

async fn wait(
    api: &ApiArgs,
    service: &str,
    timeout: &str,
    interval: &str,
) -> Result<ExitCode, String> {
    let timeout = parse_duration(timeout)
        .ok_or_else(|| format!("--timeout: `{timeout}` is not a duration"))?;
    let interval = parse_duration(interval)
        .ok_or_else(|| format!("--interval: `{interval}` is not a duration"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = get_status(api, service).await?;
        let code = match status["rollout"]["phase"]["phase"].as_str() {
            Some("promoted") => Some(ExitCode::SUCCESS),
            Some("rolled_back") => Some(ExitCode::from(EXIT_ROLLED_BACK)),
            Some("paused") => Some(ExitCode::from(EXIT_PAUSED)),
            _ => None,
        };
        if let Some(code) = code {
            println!("{}", describe(&status));
            return Ok(code);
        }
        if tokio::time::Instant::now() + interval > deadline {
            println!("{}", describe(&status));
            eprintln!("doppel: no verdict within the timeout");
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        tokio::time::sleep(interval.min(Duration::from_secs(60))).await;
    }
}
