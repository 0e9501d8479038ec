//! Small helpers for the xDS end-to-end tests: an Envoy started from `envoy/ads.yaml`, a
//! counting HTTP upstream and a plain HTTP/1.1 GET.
//!
//! Everything binds 127.0.0.1 with ephemeral ports; processes die with their handle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use doppel_engine::xds::{NodeStatus, SnapshotCache};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The workspace root (the folder holding `envoy/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The Envoy binary: `$ENVOY_BIN`, else `.tools/bin/envoy` as `scripts/setup` installs it.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/envoy"))
}

/// Which ADS variant Envoy speaks (the engine's own type: `doppel demo` renders the same file).
pub use doppel_engine::xds::bootstrap::AdsMode;

/// `envoy/ads.yaml` pointed at `xds_port`, admin on an ephemeral port, in the given mode; its
/// stat sink aims at a port nothing listens on (see [`render_ads_bootstrap_with_metrics`]).
pub fn render_ads_bootstrap(xds_port: u16, mode: AdsMode) -> Result<String, String> {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    render_ads_bootstrap_with_metrics(xds_port, unused, mode)
}

/// `envoy/ads.yaml` pointed at `xds_port` for ADS and `metrics_port` for its stat sink, admin
/// on an ephemeral port, in the given mode.
pub fn render_ads_bootstrap_with_metrics(
    xds_port: u16,
    metrics_port: u16,
    mode: AdsMode,
) -> Result<String, String> {
    doppel_engine::xds::bootstrap::ads_bootstrap(xds_port, metrics_port, mode)
}

/// How long the tests wait for Envoy to take a push.
pub const XDS_WAIT: Duration = Duration::from_secs(20);

/// doppel's ADS server on an ephemeral port and an Envoy booted from `envoy/ads.yaml` against it.
pub struct AdsRig {
    /// The cache the server serves.
    pub cache: Arc<SnapshotCache>,
    /// Envoy's node id.
    pub node: String,
    /// The Envoy.
    pub envoy: Envoy,
    xds_port: u16,
    server: Option<XdsServer>,
}

/// A running ADS server: its stop signal and its task.
struct XdsServer {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_xds(listener: TcpListener, cache: &Arc<SnapshotCache>) -> XdsServer {
    let (stop, stopped) = oneshot::channel::<()>();
    let serve = doppel_engine::xds::serve(listener, Arc::clone(cache), async {
        let _ = stopped.await;
    });
    let task = tokio::spawn(async move {
        if let Err(error) = serve.await {
            eprintln!("xds server failed: {error}");
        }
    });
    XdsServer { stop, task }
}

impl AdsRig {
    /// Starts the server, then Envoy as node `node` speaking `mode`.
    pub async fn start(mode: AdsMode, node: &str) -> Result<AdsRig, String> {
        let cache = Arc::new(SnapshotCache::new());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding the xds server: {e}"))?;
        let xds_port = listener
            .local_addr()
            .map_err(|e| format!("xds server address: {e}"))?
            .port();
        let server = start_xds(listener, &cache);
        let bootstrap = render_ads_bootstrap(xds_port, mode)?;
        let envoy = Envoy::start(&bootstrap, node).await?;
        Ok(AdsRig {
            cache,
            node: node.to_owned(),
            envoy,
            xds_port,
            server: Some(server),
        })
    }

    /// Stops the ADS server (as an engine going away would) and waits until it is gone.
    pub async fn stop_xds(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop.send(());
            let _ = server.task.await;
        }
    }

    /// Starts a fresh ADS server, with an empty cache, on the same port; returns its cache.
    pub async fn restart_xds(&mut self) -> Result<Arc<SnapshotCache>, String> {
        self.stop_xds().await;
        let listener = TcpListener::bind(("127.0.0.1", self.xds_port))
            .await
            .map_err(|e| format!("rebinding the xds server on {}: {e}", self.xds_port))?;
        self.cache = Arc::new(SnapshotCache::new());
        self.server = Some(start_xds(listener, &self.cache));
        Ok(Arc::clone(&self.cache))
    }

    /// Waits (at most [`XDS_WAIT`]) until the node's status satisfies `done`; panics with the
    /// status and Envoy's log otherwise.
    pub async fn wait_status(
        &self,
        what: &str,
        done: impl FnMut(&NodeStatus) -> bool,
    ) -> NodeStatus {
        match tokio::time::timeout(XDS_WAIT, self.cache.wait_status(&self.node, done)).await {
            Ok(status) => status,
            Err(_) => panic!(
                "timed out waiting for {what}; status {:?}\nenvoy log:\n{}",
                self.cache.status(&self.node),
                self.envoy.log_tail()
            ),
        }
    }
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `bootstrap` as node `node_id`, and waits for its admin address.
    pub async fn start(bootstrap: &str, node_id: &str) -> Result<Envoy, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let config = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin.txt");
        let log = dir.path().join("envoy.log");
        std::fs::write(&config, bootstrap).map_err(|e| format!("writing config: {e}"))?;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args([
                "--service-node",
                node_id,
                "--service-cluster",
                "doppel-test",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .args([
                "--file-flush-interval-msec",
                "100",
                "--file-flush-min-size-kb",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", envoy_bin().display()))?;
        let mut envoy = Envoy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(address) = text.trim().parse()
            {
                envoy.admin = address;
                return Ok(envoy);
            }
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("envoy exited with {status}: {}", envoy.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy wrote no admin address: {}",
                    envoy.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The path of Envoy's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of Envoy's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// GETs an admin path; returns the body.
    pub async fn admin(&self, path: &str) -> Result<String, String> {
        let reply = http_get(self.admin, path).await?;
        if reply.status != 200 {
            return Err(format!(
                "admin {path}: status {}: {}",
                reply.status, reply.body
            ));
        }
        Ok(reply.body)
    }

    /// The address a named listener is bound to (listeners from LDS bind port 0).
    pub async fn listener_address(&self, name: &str) -> Result<SocketAddr, String> {
        let body = self.admin("/listeners?format=json").await?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("listeners json: {e}"))?;
        let statuses = json["listener_statuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let status = statuses
            .iter()
            .find(|s| s["name"] == name)
            .ok_or_else(|| format!("no listener `{name}` in {body}"))?;
        let socket = &status["local_address"]["socket_address"];
        let port = socket["port_value"].as_u64().unwrap_or(0);
        let ip = socket["address"].as_str().unwrap_or("");
        format!("{ip}:{port}")
            .parse()
            .map_err(|e| format!("listener `{name}` address in {body}: {e}"))
    }

    /// A counter or gauge from `/stats`, 0 when absent.
    pub async fn stat(&self, name: &str) -> Result<u64, String> {
        let body = self.admin(&format!("/stats?filter=^{name}$")).await?;
        Ok(body
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0))
    }

    /// One `resource` of Envoy's `/config_dump` (`dynamic_listeners`, `ecds_filters`, ...), as
    /// JSON.
    pub async fn config_dump(&self, resource: &str) -> Result<serde_json::Value, String> {
        let body = self
            .admin(&format!("/config_dump?resource={resource}"))
            .await?;
        serde_json::from_str(&body).map_err(|e| format!("config_dump {resource} json: {e}"))
    }

    /// The `(cluster, weight)` pairs of every weighted route in the dynamic route configs.
    pub async fn route_weights(&self) -> Result<Vec<(String, u64)>, String> {
        let json = self.config_dump("dynamic_route_configs").await?;
        let mut weights = Vec::new();
        collect_weights(&json, &mut weights);
        Ok(weights)
    }
}

fn collect_weights(value: &serde_json::Value, out: &mut Vec<(String, u64)>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(clusters) = map
                .get("weighted_clusters")
                .and_then(|w| w["clusters"].as_array())
            {
                for cluster in clusters {
                    let name = cluster["name"].as_str().unwrap_or_default().to_owned();
                    out.push((name, cluster["weight"].as_u64().unwrap_or(0)));
                }
            }
            map.values().for_each(|v| collect_weights(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_weights(v, out)),
        _ => {}
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP upstream on 127.0.0.1 that answers every request with its name and counts hits, and
/// among them those carrying a doppel control header (any `x-doppel-` name).
pub struct Upstream {
    /// Where it listens.
    pub address: SocketAddr,
    hits: Arc<AtomicU64>,
    marked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream answering `200 name`.
    pub async fn start(name: &'static str) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let marked = Arc::new(AtomicU64::new(0));
        let (counter, doppel) = (Arc::clone(&hits), Arc::clone(&marked));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, doppel) = (Arc::clone(&counter), Arc::clone(&doppel));
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<_>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        if request
                            .headers()
                            .keys()
                            .any(|name| name.as_str().starts_with("x-doppel-"))
                        {
                            doppel.fetch_add(1, Ordering::SeqCst);
                        }
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(name.as_bytes()),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Upstream {
            address,
            hits,
            marked,
            task,
        })
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests served so far that carried a doppel control header.
    pub fn marked(&self) -> u64 {
        self.marked.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl Reply {
    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 GET on a fresh connection.
pub async fn http_get(address: SocketAddr, path: &str) -> Result<Reply, String> {
    http_get_with(address, path, &[]).await
}

/// One HTTP/1.1 GET on a fresh connection, with extra request headers.
pub async fn http_get_with(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {address}: {e}"))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header("host", "doppel.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("request {path}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path} on {address}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body of {path}: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
