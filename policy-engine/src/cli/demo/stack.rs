//! The demo's processes: two demo upstreams, `doppel serve` and Envoy, each killed when its
//! [`Proc`] is dropped (on success, on error and on Ctrl-C alike), with their logs kept in the
//! run directory.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process, killed and reaped on drop.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` with stderr to `<dir>/<name>.log` (and stdout to `<dir>/<name>.out`).
    pub fn spawn(name: &'static str, mut command: Command, dir: &Path) -> Result<Proc, String> {
        let log = dir.join(format!("{name}.log"));
        let out = dir.join(format!("{name}.out"));
        let open = |path: &Path| {
            File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(open(&out)?)
            .stderr(open(&log)?)
            .spawn()
            .map_err(|e| format!("starting {name} ({:?}): {e}", command.get_program()))?;
        Ok(Proc { name, child, log })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 15)
            )),
            Err(e) => Err(format!("watching {}: {e}", self.name)),
        }
    }

    /// Waits for `file` to hold what `parse` accepts, while the process lives.
    pub async fn wait_for<T>(
        &mut self,
        file: &Path,
        timeout: Duration,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = std::fs::read_to_string(file)
                .ok()
                .as_deref()
                .and_then(&parse)
            {
                return Ok(value);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not write {} within {timeout:?}; the end of {}:\n{}",
                    self.name,
                    file.display(),
                    self.log.display(),
                    tail(&self.log, 15)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of the file at `path`.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free loopback port: bound, then released for the process that binds it next.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free loopback port: {e}"))
}

/// A demo upstream and the address it serves on.
pub struct Upstream {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub address: SocketAddr,
}

/// Starts the demo upstream `bin` labelled `label` (it prints its address first on stdout).
pub async fn upstream(bin: &Path, label: &'static str, dir: &Path) -> Result<Upstream, String> {
    let mut command = Command::new(bin);
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--label",
            label,
            "--threads",
            "2",
        ])
        .args(super::scenario::Scenario::upstream_flags())
        .arg("--log")
        .arg(dir.join(format!("{label}-requests.jsonl")));
    let name = if label == "v1" { "primary" } else { "shadow" };
    let mut proc = Proc::spawn(name, command, dir)?;
    let out = dir.join(format!("{name}.out"));
    let address = proc
        .wait_for(&out, Duration::from_secs(20), |text| {
            text.lines().next()?.trim().parse().ok()
        })
        .await?;
    Ok(Upstream { proc, address })
}

/// The addresses `doppel serve` bound, from its ready file.
pub struct EngineAddresses {
    /// The HTTP API (and dashboard).
    pub api: SocketAddr,
    /// The MetricsService ingest.
    pub metrics: SocketAddr,
}

/// Starts `doppel serve` (this very binary) on the serve config in `dir`, ADS on `xds_port`.
pub async fn engine(
    exe: &Path,
    dir: &Path,
    xds_port: u16,
    token: &str,
) -> Result<(Proc, EngineAddresses), String> {
    let ready = dir.join("engine-ready.json");
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--config")
        .arg(dir.join("serve.yaml"))
        .arg("--store")
        .arg(dir.join("state.redb"))
        .args(["--xds", &format!("127.0.0.1:{xds_port}")])
        .args(["--metrics", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .env(super::super::TOKEN_ENV, token)
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn("engine", command, dir)?;
    let addresses = proc
        .wait_for(&ready, Duration::from_secs(30), |text| {
            let json: Value = serde_json::from_str(text).ok()?;
            Some(EngineAddresses {
                api: json["api"].as_str()?.parse().ok()?,
                metrics: json["metrics"].as_str()?.parse().ok()?,
            })
        })
        .await?;
    Ok((proc, addresses))
}

/// Starts Envoy on `bootstrap` as node `node`; returns it and its admin address.
pub async fn envoy(
    bin: &Path,
    dir: &Path,
    bootstrap: &str,
    node: &str,
) -> Result<(Proc, SocketAddr), String> {
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, bootstrap).map_err(|e| format!("writing {}: {e}", config.display()))?;
    let admin_file = dir.join("envoy-admin.txt");
    let mut command = Command::new(bin);
    command
        .arg("-c")
        .arg(&config)
        .args(["--service-node", node, "--service-cluster", "doppel-demo"])
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "2",
            "-l",
            "warning",
        ])
        .arg("--admin-address-path")
        .arg(&admin_file);
    let mut proc = Proc::spawn("envoy", command, dir)?;
    let admin = proc
        .wait_for(&admin_file, Duration::from_secs(60), |text| {
            text.trim().parse().ok()
        })
        .await?;
    Ok((proc, admin))
}
