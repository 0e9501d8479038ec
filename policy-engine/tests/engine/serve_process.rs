//! `doppel serve` as a child process for the engine's own end-to-end tests: started on
//! ephemeral ports with a ready file, its log appended to `<dir>/engine.log`, killed on drop;
//! and the rollout API calls those tests make.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doppel_engine::cli::client;
use serde_json::Value;

/// A running `doppel serve`, SIGKILLed and reaped on drop.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// The addresses it bound (`xds`, `metrics`, `api`), from its ready file.
    pub addresses: Value,
    /// The API address.
    pub api: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// One bound address by name.
    pub fn address(&self, name: &str) -> SocketAddr {
        self.addresses[name]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` address in {}", self.addresses))
    }
}

/// `doppel serve --config CONFIG --store STORE` on ephemeral loopback ports, before the
/// caller's own flags.
pub fn serve_command(config: &Path, store: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_doppel"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--store")
        .arg(store)
        .args(["--xds", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--api", "127.0.0.1:0"]);
    command
}

/// The engine log the processes of `dir` append to.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("engine.log")
}

/// The engine log of `dir`, so far.
pub fn log(dir: &Path) -> String {
    std::fs::read_to_string(log_path(dir)).unwrap_or_default()
}

/// Starts `command` (from [`serve_command`]) with its ready file and log in `dir`; waits until
/// it serves.
pub fn start(mut command: Command, dir: &Path) -> Serve {
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("engine log");
    let child = command
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("starting doppel serve");
    let mut serve = Serve {
        child,
        addresses: Value::Null,
        api: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(json) = serde_json::from_str::<Value>(&text)
            && let Some(api) = json["api"].as_str()
        {
            serve.api = api.to_owned();
            serve.addresses = json;
            return serve;
        }
        if let Ok(Some(status)) = serve.child.try_wait() {
            panic!("doppel serve exited with {status}:\n{}", log(dir));
        }
        assert!(Instant::now() < deadline, "doppel serve never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /v1/rollouts/{service}`, parsed; it must answer 200.
pub async fn status(api: &str, service: &str) -> Value {
    let answer = client::request(api, "GET", &format!("/v1/rollouts/{service}"), None, None)
        .await
        .expect("status request");
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).expect("status JSON")
}

/// `POST /v1/rollouts/{service}/{what}` with `token` and `body`; the status code, or `None`
/// when the engine never answered.
pub async fn post(api: &str, service: &str, what: &str, token: &str, body: String) -> Option<u16> {
    client::request(
        api,
        "POST",
        &format!("/v1/rollouts/{service}/{what}"),
        Some(token),
        Some(body),
    )
    .await
    .ok()
    .map(|answer| answer.status)
}
