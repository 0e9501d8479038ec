//! `doppel serve`: the xDS server, MetricsService (and access-log) ingestion, the rollouts and
//! the HTTP API in one process. The API's listener also serves the dashboard (`/dashboard`) and
//! `/metrics`. State lives in the store (`--store`); a restart on the same store serves every
//! Envoy the snapshot version it had and resumes every rollout where it was.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, ValueEnum};
use doppel_filter::config::Sender;
use doppel_filter::names::Variant;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::analysis_loop::{self, Observers};
use super::api::{ApiState, router};
use super::{config, read_token};
use crate::accesslog::SampleStore;
use crate::dashboard::{self, Dashboard};
use crate::ingest::{ClusterRegistry, StoreConfig, WindowStore};
use crate::rollout::store::Store;
use crate::rollout::{Controller, Setup, Steering};
use crate::telemetry;
use crate::tls::{ServerTls, TlsFiles};
use crate::xds::SnapshotCache;

/// `doppel serve`'s arguments.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The serve config (YAML): steering, nodes, services and their endpoints.
    #[arg(long)]
    pub config: PathBuf,
    /// The state file (redb); created if missing.
    #[arg(long, default_value = "doppel.redb")]
    pub store: PathBuf,
    /// Where Envoy's ADS streams connect.
    #[arg(long, default_value = "127.0.0.1:18000")]
    pub xds: SocketAddr,
    /// Where Envoy's MetricsService streams connect.
    #[arg(long, default_value = "127.0.0.1:18001")]
    pub metrics: SocketAddr,
    /// Where the HTTP API listens (loopback by default; any other address needs
    /// `--allow-remote-api`).
    #[arg(long, default_value = "127.0.0.1:8700")]
    pub api: SocketAddr,
    /// Lets the API listen on a non-loopback address (put TLS and access control in front of it).
    #[arg(long)]
    pub allow_remote_api: bool,
    /// The xDS and metrics servers' certificate chain (PEM): they then speak TLS only.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) Envoys' client certificates must chain to: mutual TLS, a client without such
    /// a certificate is refused.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// A file holding the API's bearer token (else the DOPPEL_API_TOKEN environment variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Writes the bound addresses here as JSON once serving (useful with port 0).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// How logs (stderr) are written: `text` for people, `json` (one object per line) for
    /// log pipelines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How often the policy files are checked for edits, in milliseconds (0: never). A valid
    /// edit is put in force; an invalid one is refused and logged with file:line:column.
    #[arg(long, default_value_t = 1000)]
    pub policy_reload_ms: u64,
}

/// The log formats of `doppel serve`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, fields as keys.
    Json,
}

/// Installs the global log subscriber: `RUST_LOG` filters (default `info`), stderr, `format`.
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a pipeline gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Runs `doppel serve`; the process's exit code.
pub fn main(args: ServeArgs) -> ExitCode {
    init_logs(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("doppel: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("doppel serve: {message}");
            ExitCode::FAILURE
        }
    }
}

fn registry(setup: &Setup) -> ClusterRegistry {
    let mut registry = ClusterRegistry::new();
    for (name, service) in &setup.services {
        registry.insert(&service.policy.primary.cluster, name, Variant::Primary);
        registry.insert(&service.policy.shadow_cluster, name, Variant::Shadow);
    }
    registry
}

/// Windows as long as the shortest analysis interval (at most the default 10 s), an hour of them.
fn store_config(setup: &Setup) -> StoreConfig {
    let default = StoreConfig::default();
    let window_ms = analysis_loop::window_ms(
        setup.services.values().map(|s| &s.policy),
        default.window_ms,
    );
    StoreConfig {
        window_ms,
        windows: usize::try_from(3_600_000 / window_ms)
            .unwrap_or(usize::MAX)
            .max(1),
        ..default
    }
}

async fn bind(address: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|e| format!("binding the {what} on {address}: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Refuses a non-loopback API address unless the operator said so: the API changes rollouts
/// and its bearer token crosses the wire in the clear.
pub fn check_api_address(api: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if api.ip().is_loopback() || allow_remote {
        return Ok(());
    }
    Err(format!(
        "--api {api} is not a loopback address: the API would be reachable from the network \
         with its bearer token in plaintext; pass --allow-remote-api to do it anyway"
    ))
}

/// The gRPC servers' TLS setup from the flags, loaded and checked now.
fn server_tls(args: &ServeArgs) -> Result<Option<ServerTls>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: args.tls_client_ca.clone(),
    };
    ServerTls::load(&files).map(Some).map_err(|e| e.to_string())
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    check_api_address(args.api, args.allow_remote_api)?;
    let tls = server_tls(&args)?;
    if tls.is_none() {
        for (address, what) in [(args.xds, "xDS"), (args.metrics, "metrics")] {
            if !address.ip().is_loopback() {
                tracing::warn!(%address, server = what, "a plaintext gRPC server listens beyond loopback: pass --tls-cert, --tls-key and --tls-client-ca");
            }
        }
    }
    let token = read_token(args.token_file.as_deref())?;
    if token.is_none() {
        tracing::warn!("no API token configured: state-changing API requests are refused");
    }
    let setup = config::load(&args.config)?;
    if setup.steering == Steering::FilterOnly {
        for (service, s) in &setup.services {
            let by_envoy = s
                .policy
                .traffic
                .mirror
                .as_ref()
                .is_some_and(|m| m.sender == Some(Sender::Envoy));
            if by_envoy {
                tracing::warn!(%service, "traffic.mirror.sender is envoy under filter-only steering: the mesh's route must copy the requests the filter marks (docs/filter-config.md, \"Mirror: copies Envoy sends\"); doppel serves no routes here");
            }
        }
    }
    let policy_files = super::reload::watched(config::policy_paths(&args.config)?);
    let store = Store::open(&args.store).map_err(|e| e.to_string())?;
    let cache = Arc::new(SnapshotCache::new());
    let store_config = store_config(&setup);
    let window_ms = store_config.window_ms;
    let clusters = Arc::new(registry(&setup));
    let windows = Arc::new(WindowStore::new(
        store_config,
        ClusterRegistry::clone(&clusters),
    ));
    let samples = Arc::new(SampleStore::new());
    let controller = Arc::new(Mutex::new(
        Controller::open(setup, store, Arc::clone(&cache)).map_err(|e| e.to_string())?,
    ));

    // Probes, alerters and Prometheus clients start here so that their errors stop the start.
    let loops = analysis_loop::prepare(&controller, window_ms)?;

    let xds = bind(args.xds, "xDS server").await?;
    let metrics = bind(args.metrics, "metrics server").await?;
    let api = bind(args.api, "API").await?;
    let addresses = json!({
        "xds": xds.local_addr().map_err(|e| e.to_string())?.to_string(),
        "metrics": metrics.local_addr().map_err(|e| e.to_string())?.to_string(),
        "api": api.local_addr().map_err(|e| e.to_string())?.to_string(),
    });

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let xds_task = tokio::spawn(crate::xds::serve_with(
        xds,
        cache,
        tls.clone(),
        until_stopped(stopped.clone()),
    ));
    let metrics_task = tokio::spawn(crate::ingest::serve_with_access_logs(
        metrics,
        Arc::clone(&windows),
        tls,
        Some((Arc::clone(&samples), clusters)),
        until_stopped(stopped.clone()),
    ));
    let observers = Observers::default();
    let analysis_task = tokio::spawn(analysis_loop::run(
        loops,
        Arc::clone(&controller),
        Arc::clone(&windows),
        samples,
        observers.clone(),
        until_stopped(stopped.clone()),
    ));
    let board = Arc::new(Dashboard {
        controller: Arc::clone(&controller),
        history: observers.history,
        telemetry: Arc::clone(&observers.telemetry),
        windows,
    });
    let reload_task = (args.policy_reload_ms > 0).then(|| {
        tokio::spawn(super::reload::watch(
            Arc::clone(&controller),
            policy_files,
            std::time::Duration::from_millis(args.policy_reload_ms),
            until_stopped(stopped.clone()),
        ))
    });
    let state = Arc::new(ApiState { controller, token });
    let routes = router(state)
        .layer(axum::middleware::from_fn_with_state(
            observers.telemetry,
            telemetry::commands::count,
        ))
        .merge(dashboard::router(board));
    let api_task = tokio::spawn(
        axum::serve(api, routes)
            .with_graceful_shutdown(until_stopped(stopped.clone()))
            .into_future(),
    );
    tracing::info!(%addresses, "doppel serving");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, addresses.to_string())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    if let Some(task) = reload_task {
        let _ = task.await;
    }
    let (a, b, c, d) = tokio::join!(xds_task, metrics_task, api_task, analysis_task);
    a.map_err(|e| e.to_string())?
        .map_err(|e| format!("xds server: {e}"))?;
    b.map_err(|e| e.to_string())?
        .map_err(|e| format!("metrics server: {e}"))?;
    c.map_err(|e| e.to_string())?
        .map_err(|e| format!("API: {e}"))?;
    d.map_err(|e| format!("analysis loop: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_api_address;

    #[test]
    fn serve_api_binds_loopback_unless_remote_is_allowed() {
        for loopback in ["127.0.0.1:8700", "127.0.0.2:0", "[::1]:8700"] {
            let address = loopback.parse().expect("address");
            assert!(check_api_address(address, false).is_ok(), "{loopback}");
        }
        for remote in ["0.0.0.0:8700", "10.1.2.3:8700", "[::]:8700"] {
            let address = remote.parse().expect("address");
            let refused = check_api_address(address, false).expect_err(remote);
            assert!(refused.contains(remote), "{refused}");
            assert!(refused.contains("--allow-remote-api"), "{refused}");
            assert!(check_api_address(address, true).is_ok(), "{remote}");
        }
    }
}
