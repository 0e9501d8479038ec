//! Helpers for the dashboard and `/metrics` end-to-end tests: plain HTTP requests to the
//! engine's API listener that keep the headers, a reader of its server-sent events, and
//! Prometheus's own `promtool check metrics`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An answer with its headers.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lower-case), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

async fn send(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<hyper::Response<Incoming>, String> {
    let stream = TcpStream::connect(api)
        .await
        .map_err(|e| format!("connecting to {api}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {api}: {e}"))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", api.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building {method} {path}: {e}"))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))
}

/// Sends `method path` (no body) with an optional bearer token; reads the whole answer.
pub async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Reply, String> {
    let response = send(api, method, path, token).await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading {path}: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An open `text/event-stream`, read event by event.
pub struct Events {
    body: Incoming,
    buffer: String,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `event:` name.
    pub name: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

impl Events {
    /// Opens `path` on `api`; fails unless it answers 200 with `text/event-stream`.
    pub async fn open(api: SocketAddr, path: &str) -> Result<Events, String> {
        let response = send(api, "GET", path, None).await?;
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if response.status() != 200 || !kind.starts_with("text/event-stream") {
            return Err(format!("{path}: {} {kind}", response.status()));
        }
        Ok(Events {
            body: response.into_body(),
            buffer: String::new(),
        })
    }

    /// The next event (comments and keep-alives skipped), within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<SseEvent, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Ok(SseEvent {
                    name,
                    data: data.join("\n"),
                });
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .map_err(|_| "no event in time".to_owned())?
                .ok_or("the event stream ended")?
                .map_err(|e| format!("reading events: {e}"))?;
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    /// Events until one named `name` whose data satisfies `want`, within `wait`.
    pub async fn until(
        &mut self,
        name: &str,
        wait: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await?;
            if event.name != name {
                continue;
            }
            let json: serde_json::Value = serde_json::from_str(&event.data)
                .map_err(|e| format!("event {name} is not JSON: {e}: {}", event.data))?;
            if want(&json) {
                return Ok(json);
            }
        }
    }
}

/// The `promtool` binary: `$PROMTOOL_BIN`, else `promtool` on the PATH (Debian's `prometheus`).
pub fn promtool_bin() -> String {
    std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_owned())
}

/// Runs `promtool check metrics` on `page`; `Err` with its output when it finds a problem
/// (it checks the syntax with Prometheus's own parser, and lints names and help).
pub fn promtool_check(page: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(promtool_bin())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "running {}: {e} (install Debian's prometheus: scripts/setup prometheus)",
                promtool_bin()
            )
        })?;
    let mut stdin = child.stdin.take().ok_or("promtool's stdin")?;
    stdin
        .write_all(page.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.trim().is_empty() {
        Ok(text)
    } else {
        Err(format!("promtool check metrics ({}): {text}", out.status))
    }
}

/// The value of one series (`name{labels}` exactly as written) on a metrics page.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series))
        .and_then(|(_, v)| v.parse().ok())
}
