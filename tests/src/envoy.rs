//! A real Envoy as a child process: started from a rendered bootstrap with hot restart disabled
//! (so parallel tests share no memory segment), admin on an ephemeral port found through
//! `--admin-address-path`, listener ports found through the admin `/listeners` page; plus
//! readers for its stats, config dump and JSON access log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::envoy_config::Bootstrap;
use crate::load::HttpClient;
use crate::procs::{ChildGuard, RunDir, envoy_bin};

/// How long Envoy may take to become ready (compiling the filter under V8 on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Worker threads: two, so that per-worker filter state (one VM each) is exercised.
const CONCURRENCY: &str = "2";

/// A running Envoy, killed on drop.
#[derive(Debug)]
pub struct Envoy {
    name: String,
    child: ChildGuard,
    admin: SocketAddr,
    client: HttpClient,
    access_log: PathBuf,
}

fn command(dir: &RunDir, name: &str, bootstrap: &Bootstrap) -> (Command, PathBuf) {
    let admin_path = dir.join(&format!("envoy-{name}.admin"));
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c")
        .arg(&bootstrap.path)
        .arg("--disable-hot-restart")
        .arg("--concurrency")
        .arg(CONCURRENCY)
        .arg("--admin-address-path")
        .arg(&admin_path)
        // Access log lines reach the file within 50 ms, so tests can read them.
        .arg("--file-flush-interval-msec")
        .arg("50")
        .arg("-l")
        .arg("info");
    (cmd, admin_path)
}

impl Envoy {
    /// Starts Envoy on `bootstrap` and waits until it is ready to serve (`/ready` says LIVE).
    pub async fn start(dir: &RunDir, name: &str, bootstrap: &Bootstrap) -> Result<Envoy> {
        let (cmd, admin_path) = command(dir, name, bootstrap);
        let mut child = ChildGuard::spawn(
            &format!("envoy {name}"),
            cmd,
            &dir.join(&format!("envoy-{name}.log")),
        )?;
        let admin = wait_for_admin(&mut child, &admin_path).await?;
        let envoy = Envoy {
            name: name.to_string(),
            child,
            admin,
            client: HttpClient::new(),
            access_log: bootstrap.access_log.clone(),
        };
        envoy.wait_ready().await?;
        Ok(envoy)
    }

    /// Starts Envoy on `bootstrap` expecting it to refuse the config and exit; returns its log.
    pub async fn start_refused(dir: &RunDir, name: &str, bootstrap: &Bootstrap) -> Result<String> {
        let (cmd, _) = command(dir, name, bootstrap);
        let mut child = ChildGuard::spawn(
            &format!("envoy {name}"),
            cmd,
            &dir.join(&format!("envoy-{name}.log")),
        )?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = child.try_exit() {
                if status.success() {
                    bail!("envoy {name} exited with success, expected a refusal");
                }
                return Ok(child.stderr_tail(200));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("envoy {name} accepted the config and kept running for {START_TIMEOUT:?}")
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let url = self.admin_url("/ready");
        loop {
            let last = self.client.get(&url).await;
            if matches!(&last, Ok((200, _))) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "envoy {} not ready within {START_TIMEOUT:?} (last /ready: {last:?}); log:\n{}",
                    self.name,
                    self.child.stderr_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The last `lines` lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.child.stderr_tail(lines)
    }

    /// Where the listener `name` (for example `ingress`) is bound.
    pub async fn listener(&self, name: &str) -> Result<SocketAddr> {
        let body = self.admin_get("/listeners?format=json").await?;
        let json: Value = serde_json::from_str(&body).context("parsing /listeners")?;
        let statuses = json["listener_statuses"]
            .as_array()
            .context("/listeners has no listener_statuses")?;
        let status = statuses
            .iter()
            .find(|s| s["name"] == name)
            .with_context(|| format!("no listener {name} in {body}"))?;
        let sock = &status["local_address"]["socket_address"];
        let address = sock["address"].as_str().context("listener address")?;
        let port = sock["port_value"].as_u64().context("listener port")?;
        format!("{address}:{port}")
            .parse()
            .with_context(|| format!("listener {name} address {sock}"))
    }

    /// `GET` an admin page and return its body; a non-200 status is an error.
    pub async fn admin_get(&self, path: &str) -> Result<String> {
        let (status, body) = self.client.get(&self.admin_url(path)).await?;
        if status != 200 {
            bail!("envoy {} admin {path}: {status} {body}", self.name);
        }
        Ok(body)
    }

    /// `POST` to an admin page (for example `/reset_counters`).
    pub async fn admin_post(&self, path: &str) -> Result<String> {
        let (status, body) = self.client.post(&self.admin_url(path), "").await?;
        if status != 200 {
            bail!("envoy {} admin {path}: {status} {body}", self.name);
        }
        Ok(body)
    }

    /// Every counter and gauge whose name matches the regular expression `filter`.
    pub async fn stats(&self, filter: &str) -> Result<Stats> {
        let path = format!("/stats?format=json&filter={}", url_escape(filter));
        let body = self.admin_get(&path).await?;
        Stats::parse(&body)
    }

    /// The whole `/config_dump`.
    pub async fn config_dump(&self) -> Result<Value> {
        let body = self.admin_get("/config_dump").await?;
        serde_json::from_str(&body).context("parsing /config_dump")
    }

    /// Every line of the JSON access log written so far.
    pub fn access_log(&self) -> Result<Vec<AccessLogEntry>> {
        read_access_log(&self.access_log)
    }

    /// Waits until the access log holds at least `n` lines (or `timeout` passes) and returns it.
    pub async fn wait_for_access_log(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<AccessLogEntry>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let entries = self.access_log()?;
            if entries.len() >= n || tokio::time::Instant::now() >= deadline {
                return Ok(entries);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn wait_for_admin(child: &mut ChildGuard, path: &Path) -> Result<SocketAddr> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(addr) = text.trim().parse()
        {
            return Ok(addr);
        }
        if let Some(status) = child.try_exit() {
            bail!(
                "envoy exited with {status} before its admin came up; log:\n{}",
                child.stderr_tail(40)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "envoy wrote no admin address to {} within {START_TIMEOUT:?}; log:\n{}",
                path.display(),
                child.stderr_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Escapes the characters of a regular expression that a query string cannot carry as they are.
fn url_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counters and gauges from `/stats?format=json` (histograms are left out).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    values: BTreeMap<String, u64>,
}

impl Stats {
    /// Parses the admin's JSON stats page.
    pub fn parse(body: &str) -> Result<Stats> {
        let json: Value = serde_json::from_str(body).context("parsing /stats?format=json")?;
        let list = json["stats"]
            .as_array()
            .ok_or_else(|| anyhow!("no stats list in {body}"))?;
        let values = list
            .iter()
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
            .collect();
        Ok(Stats { values })
    }

    /// The value of stat `name`, if Envoy has it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }

    /// The value of stat `name`, zero if Envoy does not have it (yet).
    pub fn value(&self, name: &str) -> u64 {
        self.get(name).unwrap_or(0)
    }

    /// Every stat, by name.
    pub fn all(&self) -> &BTreeMap<String, u64> {
        &self.values
    }
}

/// One line of the JSON access log of the bootstraps in `envoy/`.
#[derive(Clone, Debug)]
pub struct AccessLogEntry(pub Value);

impl AccessLogEntry {
    /// Field `name` as text; `None` when absent, null or Envoy's `-` for "not set".
    pub fn field(&self, name: &str) -> Option<String> {
        match &self.0[name] {
            Value::String(s) if s == "-" || s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// The response status.
    pub fn status(&self) -> Option<u16> {
        self.field("status")?.parse().ok()
    }
}

/// Reads a JSON access log; a missing file is an empty log.
pub fn read_access_log(path: &Path) -> Result<Vec<AccessLogEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map(AccessLogEntry)
                .with_context(|| format!("{}:{}: {line}", path.display(), n + 1))
        })
        .collect()
}
