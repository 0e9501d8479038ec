//! The demo upstream as a child process: started on port 0, its bound address read from its first
//! stdout line, its request log read back, its fault changed at run time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use doppel_demo_upstream::reqlog::{LogEntry, read_log};

use crate::load::HttpClient;
use crate::procs::{ChildGuard, RunDir, demo_upstream_bin};

/// A running `doppel-demo-upstream`, killed on drop.
#[derive(Debug)]
pub struct DemoUpstream {
    child: ChildGuard,
    addr: SocketAddr,
    label: String,
    log: PathBuf,
}

impl DemoUpstream {
    /// Starts an upstream labelled `label` with extra flags `args` (for example
    /// `["--error-rate", "1"]`), logging into `dir`.
    pub fn start(dir: &RunDir, label: &str, args: &[&str]) -> Result<DemoUpstream> {
        let log = dir.join(&format!("upstream-{label}.jsonl"));
        let mut cmd = Command::new(demo_upstream_bin());
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--label")
            .arg(label)
            .arg("--log")
            .arg(&log)
            .args(args);
        let stderr = dir.join(&format!("upstream-{label}.stderr"));
        let mut child = ChildGuard::spawn(&format!("upstream {label}"), cmd, &stderr)?;
        let line = child.first_stdout_line(Duration::from_secs(20))?;
        let addr = line
            .parse()
            .with_context(|| format!("upstream {label} printed {line:?}, not an address"))?;
        Ok(DemoUpstream {
            child,
            addr,
            label: label.to_string(),
            log,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its version label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its request log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Every request it has logged so far.
    pub fn requests(&self) -> Result<Vec<LogEntry>> {
        read_log(&self.log).with_context(|| format!("reading {}", self.log.display()))
    }

    /// Waits until the log holds at least `n` requests, or `timeout` passes; returns the log.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Result<Vec<LogEntry>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let entries = self.requests()?;
            if entries.len() >= n || tokio::time::Instant::now() >= deadline {
                return Ok(entries);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log stops growing for `quiet`, then returns it.
    pub async fn settled_requests(&self, quiet: Duration) -> Result<Vec<LogEntry>> {
        let mut last = self.requests()?.len();
        loop {
            tokio::time::sleep(quiet).await;
            let entries = self.requests()?;
            if entries.len() == last {
                return Ok(entries);
            }
            last = entries.len();
        }
    }

    /// Changes its behaviour: `patch` is the JSON body of `POST /admin/fault`, for example
    /// `{"error_rate": 1.0}` or `{"mode": "reset"}`.
    pub async fn set_fault(&self, client: &HttpClient, patch: &str) -> Result<()> {
        let url = format!("http://{}/admin/fault", self.addr);
        let (status, body) = client.post(&url, patch).await?;
        if status != 200 {
            bail!(
                "upstream {} refused fault {patch}: {status} {body}",
                self.label
            );
        }
        Ok(())
    }

    /// Kills it now (the shadow going down).
    pub fn kill(&mut self) {
        self.child.kill();
    }
}
