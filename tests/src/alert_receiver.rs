//! An alert webhook receiver for end-to-end tests: a real HTTP server on 127.0.0.1:0 that
//! answers its first `fail_first` requests with 503 and records the JSON bodies of the others.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

struct State {
    fail_first: usize,
    attempts: AtomicUsize,
    accepted: Mutex<Vec<Value>>,
}

/// A running receiver; stopped on drop.
pub struct AlertReceiver {
    /// Where it listens.
    pub address: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AlertReceiver {
    /// Starts a receiver that fails its first `fail_first` requests.
    pub async fn start(fail_first: usize) -> std::io::Result<AlertReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State {
            fail_first,
            attempts: AtomicUsize::new(0),
            accepted: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let state = Arc::clone(&state);
                            async move {
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let attempt = state.attempts.fetch_add(1, Ordering::SeqCst);
                                let status = if attempt < state.fail_first {
                                    StatusCode::SERVICE_UNAVAILABLE
                                } else {
                                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                    state.accepted.lock().expect("lock").push(json);
                                    StatusCode::ACCEPTED
                                };
                                let mut response =
                                    Response::new(Full::new(Bytes::from_static(b"{}")));
                                *response.status_mut() = status;
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(AlertReceiver {
            address,
            state,
            task,
        })
    }

    /// Its URL (any path is accepted).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Requests received, the failed ones included.
    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    /// The bodies accepted so far, in order.
    pub fn accepted(&self) -> Vec<Value> {
        self.state.accepted.lock().expect("lock").clone()
    }

    /// Waits until `n` bodies were accepted, at most `wait`; returns what was accepted.
    pub async fn wait_for(&self, n: usize, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.accepted().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.accepted()
    }
}
