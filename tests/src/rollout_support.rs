//! Helpers for the rollout end-to-end tests: the real `doppel` binary run as `doppel serve`
//! (killed on drop, or on demand with SIGKILL), its CLI, policy and serve-config files, and an
//! Envoy bootstrap for filter-only steering (static routes, the filter's config over ECDS).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::xds_support::workspace_root;

/// The API token the tests' engines use.
pub const TOKEN: &str = "rollout-test-token";

/// Builds the `doppel` binary once per test process and returns its path.
pub fn doppel_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("DOPPEL_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "doppel-policy-engine",
                "--bin",
                "doppel",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build for the doppel binary");
        assert!(status.success(), "cargo build of the doppel binary failed");
        // This test binary lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary under target/<profile>/deps");
        profile_dir.join("doppel")
    })
    .clone()
}

/// A free loopback port (bound, then released: the engine binds it again at once).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A policy for `checkout` with these (weight, hold) steps.
pub fn policy_yaml(steps: &[(f64, &str)]) -> String {
    let mut text = String::from(
        "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
         traffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 1s\n  min_sample: 10\n  alpha: 0.01\n\
         rules:\n  - name: errors\n    when: compare.errors.worse\n    action: rollback\nsteps:\n",
    );
    for (weight, hold) in steps {
        text += &format!("  - weight: {weight}\n    hold: {hold}\n");
    }
    text
}

/// A running `doppel serve`.
pub struct Engine {
    child: Child,
    /// The API address.
    pub api: SocketAddr,
    /// The MetricsService (ingest) address.
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl Engine {
    /// Starts `doppel serve` on `config` and `store`, ADS on `xds_port`; waits until it serves.
    pub fn start(dir: &Path, config: &Path, store: &Path, xds_port: u16) -> Result<Engine, String> {
        Engine::start_with(dir, config, store, xds_port, &[])
    }

    /// [`Engine::start`] with extra `doppel serve` arguments (for example `--log-format json`).
    pub fn start_with(
        dir: &Path,
        config: &Path,
        store: &Path,
        xds_port: u16,
        extra: &[&str],
    ) -> Result<Engine, String> {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = unique(dir.join("engine.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| format!("engine log: {e}"))?;
        let child = Command::new(doppel_bin())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--store")
            .arg(store)
            .args(["--xds", &format!("127.0.0.1:{xds_port}")])
            .args(["--metrics", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .env("DOPPEL_API_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting doppel serve: {e}"))?;
        let mut engine = Engine {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(json) = serde_json::from_str::<Value>(&text)
                && let Some(Ok(api)) = json["api"].as_str().map(str::parse)
                && let Some(Ok(metrics)) = json["metrics"].as_str().map(str::parse)
            {
                engine.api = api;
                engine.metrics = metrics;
                return Ok(engine);
            }
            if let Ok(Some(status)) = engine.child.try_wait() {
                return Err(format!(
                    "doppel serve exited with {status}:\n{}",
                    engine.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "doppel serve never became ready:\n{}",
                    engine.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the engine (no shutdown code runs) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The engine's whole log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The engine's log (stderr), last lines.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs `doppel rollout ARGS --api THIS` with the token; returns the process output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(doppel_bin())
            .arg("rollout")
            .args(args)
            .args(["--api", &self.api.to_string()])
            .env("DOPPEL_API_TOKEN", TOKEN)
            .output()
            .expect("running doppel rollout")
    }

    /// `doppel rollout start checkout --version v2`, which must succeed (the service
    /// [`policy_yaml`] writes).
    pub fn start_rollout(&self) {
        let out = self.cli(&["start", "checkout", "--version", "v2"]);
        assert!(
            out.status.success(),
            "doppel rollout start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `doppel rollout status SERVICE --json`, parsed.
    pub fn status(&self, service: &str) -> Value {
        let out = self.cli(&["status", service, "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Posts an analysis outcome (what the analysis loop sends in-process after the merge).
    pub async fn event(&self, service: &str, event: &Value) -> Result<Value, String> {
        let answer = doppel_engine::cli::client::request(
            &self.api.to_string(),
            "POST",
            &format!("/v1/rollouts/{service}/events"),
            Some(TOKEN),
            Some(event.to_string()),
        )
        .await?;
        if answer.status != 200 {
            return Err(format!(
                "event refused ({}): {}",
                answer.status, answer.body
            ));
        }
        serde_json::from_str(&answer.body).map_err(|e| e.to_string())
    }
}

fn unique(path: PathBuf) -> PathBuf {
    let mut candidate = path.clone();
    let mut n = 0;
    while candidate.exists() {
        n += 1;
        candidate = path.with_extension(format!("{n}.log"));
    }
    candidate
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Envoy bootstrap for filter-only steering, standing in for a mesh whose own xDS server
/// owns routes and clusters: a static listener whose HTTP filter `doppel.checkout` (the Wasm
/// filter) takes its config over ECDS, static routes that send `x-doppel-variant: shadow` to
/// `checkout-v2` at `shadow` and everything else to `checkout-v1` at `primary`, and ADS to
/// `xds_port` for nothing but ECDS.
pub fn filter_only_bootstrap(xds_port: u16, primary: SocketAddr, shadow: SocketAddr) -> String {
    format!(
        r#"node: {{ id: placeholder, cluster: doppel }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
      - envoy_grpc: {{ cluster_name: doppel_xds }}
static_resources:
  listeners:
    - name: checkout
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: checkout
                route_config:
                  name: mesh
                  virtual_hosts:
                    - name: mesh
                      domains: ["*"]
                      routes:
                        - match:
                            prefix: "/"
                            headers:
                              - name: x-doppel-variant
                                string_match: {{ exact: shadow }}
                          route: {{ cluster: checkout-v2 }}
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: checkout-v1 }}
                http_filters:
                  - name: doppel.checkout
                    config_discovery:
                      config_source: {{ ads: {{}}, resource_api_version: V3 }}
                      type_urls: ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: checkout-v1
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: checkout-v1
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {primary_port} }} }} }}
    - name: checkout-v2
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: checkout-v2
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {shadow_port} }} }} }}
    - name: doppel_xds
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: doppel_xds
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {xds_port} }} }} }}
"#,
        primary_port = primary.port(),
        shadow_port = shadow.port(),
    )
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `wait`.
pub async fn eventually<T, F, Fut>(wait: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
