//! A headless Chromium driven over WebDriver: Debian's `chromedriver` (package
//! `chromium-driver`) as a child process on an ephemeral port, and a `fantoccini` session with
//! the flags this machine needs and a fresh profile directory. Both go when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::procs::{ChildGuard, RunDir};
use crate::rollout_support::free_port;

/// Chromium: `$CHROMIUM_BIN`, else Debian's `/usr/bin/chromium`.
pub fn chromium_bin() -> PathBuf {
    std::env::var_os("CHROMIUM_BIN").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// chromedriver: `$CHROMEDRIVER_BIN`, else Debian's `/usr/bin/chromedriver`.
pub fn chromedriver_bin() -> PathBuf {
    std::env::var_os("CHROMEDRIVER_BIN")
        .map_or_else(|| "/usr/bin/chromedriver".into(), PathBuf::from)
}

/// A WebDriver session on a headless Chromium.
pub struct Browser {
    /// The session.
    pub client: Client,
    _driver: ChildGuard,
}

impl Browser {
    /// Starts chromedriver and opens a session with a `width` x `height` window; profile and
    /// logs go in `dir`.
    pub async fn start(dir: &RunDir, width: u32, height: u32) -> Result<Browser> {
        for (bin, package) in [
            (chromium_bin(), "chromium"),
            (chromedriver_bin(), "chromium-driver"),
        ] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: install Debian's {package} (scripts/setup chromium chromium-driver)",
                    bin.display()
                );
            }
        }
        let port = free_port();
        let mut cmd = Command::new(chromedriver_bin());
        cmd.arg(format!("--port={port}")).arg(format!(
            "--log-path={}",
            dir.join("chromedriver.log").display()
        ));
        let mut driver = ChildGuard::spawn("chromedriver", cmd, &dir.join("chromedriver.stderr"))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(address).is_err() {
            if let Some(status) = driver.try_exit() {
                bail!("chromedriver exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on {address}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile)?;
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let options = json!({
            "binary": chromium_bin().display().to_string(),
            "args": args,
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{address}"))
            .await
            .context("opening a WebDriver session on chromium")?;
        Ok(Browser {
            client,
            _driver: driver,
        })
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Result<Value> {
        self.client
            .execute(script, Vec::new())
            .await
            .with_context(|| format!("running in the page: {script}"))
    }

    /// Evaluates `script` every 250 ms until it returns something other than `null` or
    /// `false`, for at most `wait`; returns that value.
    pub async fn until(&self, wait: Duration, what: &str, script: &str) -> Result<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let value = self.eval(script).await?;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!("timed out after {wait:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A PNG of the page, written to `path` (its folder is created).
    pub async fn screenshot(&self, path: &std::path::Path) -> Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Ends the session (the browser quits); chromedriver goes on drop.
    pub async fn close(self) -> Result<()> {
        self.client.close().await.context("closing the session")
    }
}
