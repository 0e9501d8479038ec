//! What the ingestion end-to-end tests need to run real Envoys that stream stats to an engine:
//! an Envoy process killed on drop, a small HTTP upstream, a plain HTTP GET, and the bootstrap
//! with the MetricsService sink (its sink section is the one in `envoy/metrics-sink.yaml`).
//! Kept small and self-contained; the general Envoy runner lives in `envoy.rs` once merged.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The Envoy binary: `$ENVOY_BIN`, else `.tools/bin/envoy` in the workspace (`scripts/setup`).
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/envoy"))
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A running Envoy, killed when dropped.
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    /// Its admin interface.
    pub admin: SocketAddr,
    /// Its first listener.
    pub listener: SocketAddr,
}

impl Envoy {
    /// Starts Envoy on `bootstrap` (YAML) and waits until it is ready and listening. The
    /// bootstrap should bind its admin and listener to `127.0.0.1:0`.
    pub async fn start(bootstrap: &str) -> Envoy {
        let bin = envoy_bin();
        assert!(
            bin.exists(),
            "no Envoy at {}: run scripts/setup or set ENVOY_BIN",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, bootstrap).expect("write bootstrap");
        let admin_path = dir.path().join("admin-address");
        let log = std::fs::File::create(dir.path().join("envoy.log")).expect("log file");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut envoy = Envoy {
            child,
            dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        envoy.admin = loop {
            envoy.check_running();
            if let Some(addr) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break addr;
            }
            envoy.check_deadline(deadline, "admin address");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        loop {
            envoy.check_running();
            if let Ok((200, body)) = get(envoy.admin, "/ready").await
                && body.trim() == "LIVE"
            {
                break;
            }
            envoy.check_deadline(deadline, "ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, listeners) = get(envoy.admin, "/listeners?format=json")
            .await
            .expect("admin /listeners");
        let listeners: serde_json::Value = serde_json::from_str(&listeners).expect("JSON");
        let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
        let port = socket["port_value"].as_u64().expect("a listener port");
        envoy.listener = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).expect("port")));
        envoy
    }

    /// GET on the admin interface; panics naming the path on failure.
    pub async fn admin_get(&self, path: &str) -> String {
        match get(self.admin, path).await {
            Ok((200, body)) => body,
            other => panic!("admin {path}: {other:?}"),
        }
    }

    /// A counter's value from the admin interface (0 when Envoy has not created it yet).
    pub async fn counter(&self, name: &str) -> u64 {
        let body = self
            .admin_get(&format!(
                "/stats?format=json&filter=^{}$",
                regex_escape(name)
            ))
            .await;
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        json["stats"]
            .as_array()
            .and_then(|stats| stats.iter().find(|s| s["name"] == name))
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }

    /// A histogram's buckets since start as (upper bound, count at or below it), from the
    /// admin interface as of Envoy's last stats flush; empty when it has no sample yet.
    pub async fn histogram(&self, name: &str) -> Vec<(f64, u64)> {
        let body = self
            .admin_get(&format!(
                "/stats?format=json&histogram_buckets=cumulative&filter=^{}$",
                regex_escape(name)
            ))
            .await;
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let Some(histograms) = json["stats"]
            .as_array()
            .and_then(|stats| stats.iter().find_map(|s| s["histograms"].as_array()))
        else {
            return Vec::new();
        };
        histograms
            .iter()
            .find(|h| h["name"] == name)
            .and_then(|h| h["buckets"].as_array())
            .map(|buckets| {
                buckets
                    .iter()
                    .map(|b| {
                        (
                            b["upper_bound"].as_f64().expect("bound"),
                            b["cumulative"].as_u64().expect("count"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("Envoy exited with {status}:\n{}", self.log());
        }
    }

    fn check_deadline(&self, deadline: Instant, what: &str) {
        if Instant::now() > deadline {
            panic!("Envoy not {what} in time:\n{}", self.log());
        }
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// A small HTTP upstream on 127.0.0.1: answers 200, or 500 on paths ending in `/fail`, after
/// the delay in milliseconds given as `?delay_ms=N`. Stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts it on an ephemeral port.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(answer))
                        .await;
                });
            }
        });
        Upstream { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay_ms = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay_ms=")))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms.min(5_000))).await;
    }
    let status = if request.uri().path().ends_with("/fail") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    *response.status_mut() = status;
    Ok(response)
}

/// A plain HTTP/1.1 GET to `addr`: the status code and the body.
pub async fn get(addr: SocketAddr, path_and_query: &str) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path_and_query}");
    let response = client
        .get(uri.parse().map_err(|e| format!("{uri}: {e}"))?)
        .await
        .map_err(|e| format!("GET {uri}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("GET {uri}: body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A bootstrap for one Envoy named `node` that streams its stats every second to the engine at
/// `engine` and proxies `/shadow/...` to cluster `cart_v2`, everything else to `cart_v1`, both
/// at `upstream`. Its sink section is the one in `envoy/metrics-sink.yaml`.
pub fn sink_bootstrap(node: &str, engine: SocketAddr, upstream: SocketAddr) -> String {
    BOOTSTRAP
        .replace("NODE_ID", node)
        .replace("ENGINE_PORT", &engine.port().to_string())
        .replace("UPSTREAM_PORT", &upstream.port().to_string())
}

const BOOTSTRAP: &str = r#"
node:
  id: NODE_ID
  cluster: doppel-ingest-test
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
stats_flush_interval: 1s
stats_sinks:
- name: envoy.stat_sinks.metrics_service
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig
    transport_api_version: V3
    report_counters_as_deltas: true
    emit_tags_as_labels: true
    histogram_emit_mode: HISTOGRAM
    grpc_service:
      envoy_grpc:
        cluster_name: doppel_engine
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: cart
              domains: ["*"]
              routes:
              - match: { prefix: "/shadow/" }
                route: { cluster: cart_v2 }
              - match: { prefix: "/" }
                route: { cluster: cart_v1 }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: cart_v1
    type: STATIC
    load_assignment:
      cluster_name: cart_v1
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: UPSTREAM_PORT }
  - name: cart_v2
    type: STATIC
    load_assignment:
      cluster_name: cart_v2
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: UPSTREAM_PORT }
  - name: doppel_engine
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: doppel_engine
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: ENGINE_PORT }
"#;
