//! The HTTP/1.1 server: serves requests with the current [`Fault`], logs each one, and offers
//! `/metrics`, `/healthz` and `/admin/fault` (not logged, not counted, never faulted).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::fault::{Fault, FaultPatch, Outcome};
use crate::metrics::Counters;
use crate::reqlog::{LogEntry, RequestLog, is_logged_header, now_ms};

/// Response header carrying the upstream's version label.
pub const VERSION_HEADER: &str = "x-upstream-version";
/// The largest request body the upstream reads.
const MAX_BODY_BYTES: usize = 16 << 20;

/// One upstream's identity and state, shared by all its connections.
#[derive(Debug)]
pub struct Upstream {
    label: String,
    fault: Mutex<Fault>,
    log: Option<RequestLog>,
    counters: Counters,
}

impl Upstream {
    /// An upstream answering as `label` with `fault`, logging requests to `log` if given.
    pub fn new(label: String, fault: Fault, log: Option<RequestLog>) -> Arc<Upstream> {
        Arc::new(Upstream {
            label,
            fault: Mutex::new(fault),
            log,
            counters: Counters::default(),
        })
    }

    /// The current fault setting.
    pub fn fault(&self) -> Fault {
        self.fault.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn patch_fault(&self, patch: &FaultPatch) -> Result<Fault, String> {
        let mut guard = self.fault.lock().map_err(|_| "fault lock poisoned")?;
        let next = guard.patched(patch).map_err(|e| e.to_string())?;
        *guard = next.clone();
        Ok(next)
    }
}

/// The upstream asked hyper to drop a connection (after arming a TCP reset).
#[derive(Debug, thiserror::Error)]
#[error("connection reset on purpose")]
struct ResetOnPurpose;

/// Serves `upstream` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    upstream: Arc<Upstream>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Running out of file descriptors and the like: keep serving the others.
                Err(e) => { eprintln!("accept failed: error={e}"); tokio::time::sleep(Duration::from_millis(10)).await; continue }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        // A second descriptor of the same socket, so a request can arm a TCP reset (linger 0)
        // on a connection hyper owns; the reset goes out when the last descriptor closes.
        let socket: Arc<OwnedFd> = Arc::new(stream.as_fd().try_clone_to_owned()?);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(upstream.clone(), socket.clone(), req));
            // Errors here are peers going away or our own resets: nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    upstream: Arc<Upstream>,
    socket: Arc<OwnedFd>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ResetOnPurpose> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return Ok(text(StatusCode::OK, "ok\n".into())),
        (&Method::GET, "/metrics") => {
            let mut resp = text(StatusCode::OK, upstream.counters.render(&upstream.label));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return Ok(resp);
        }
        (_, "/admin/fault") => return Ok(admin_fault(&upstream, req).await),
        _ => {}
    }

    let fault = upstream.fault();
    let outcome = fault.draw(&mut rand::rng());
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("bad body: {e}\n"))),
    };
    let entry = LogEntry {
        ts_ms: now_ms(),
        label: upstream.label.clone(),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| is_logged_header(name.as_str()))
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_string(), value)
            })
            .collect(),
        body_bytes: body.len() as u64,
        outcome: outcome.label(),
    };
    upstream.counters.record(&entry.outcome);
    if let Some(log) = &upstream.log
        && let Err(e) = log.append(&entry)
    {
        eprintln!(
            "request log write failed: path={} error={e}",
            log.path().display()
        );
    }

    let (status, waited) = match outcome {
        Outcome::Reset => {
            arm_reset(&socket);
            return Err(ResetOnPurpose);
        }
        Outcome::Hang(None) => {
            let never = std::future::pending::<Infallible>().await;
            match never {}
        }
        Outcome::Hang(Some(d)) => (200, d),
        Outcome::Answer { status, delay } => (status, delay),
    };
    if !waited.is_zero() {
        tokio::time::sleep(waited).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = fault
        .body
        .unwrap_or_else(|| format!("{} answered by {}\n", status, upstream.label));
    let mut resp = text(status, body);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&upstream.label) {
        headers.insert(VERSION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("work;dur={:.3}", waited.as_secs_f64() * 1e3)) {
        headers.insert("server-timing", v);
    }
    Ok(resp)
}

/// `GET /admin/fault` shows the fault setting; `POST` applies a JSON [`FaultPatch`].
async fn admin_fault(upstream: &Upstream, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    if method == Method::POST {
        let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad body: {e}\n")),
        };
        let patch: FaultPatch = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("fault: {e}\n")),
        };
        if let Err(e) = upstream.patch_fault(&patch) {
            return text(StatusCode::BAD_REQUEST, format!("fault: {e}\n"));
        }
    } else if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n".into());
    }
    let json = serde_json::to_string(&upstream.fault()).unwrap_or_default();
    let mut resp = text(StatusCode::OK, json + "\n");
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Sets SO_LINGER to zero so that closing the connection sends a TCP RST.
fn arm_reset(socket: &OwnedFd) {
    if let Err(e) = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO)) {
        eprintln!("arming a reset failed: error={e}");
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
