//! A small HTTP client and a concurrent load driver that records each request's status and
//! latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one request may take before the driver counts it as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A pooled HTTP/1.1 client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

/// A response read whole.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl HttpClient {
    /// A client that keeps connections open between requests.
    pub fn new() -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        HttpClient { inner }
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer> {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.inner.request(req))
            .await
            .with_context(|| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| what.clone())?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .with_context(|| format!("{what}: body not read within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{what}: reading the body"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// `GET url`: the status and the body as text.
    pub async fn get(&self, url: &str) -> Result<(u16, String)> {
        let req = Request::get(url)
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("building GET {url}"))?;
        let a = self.send(req).await?;
        Ok((a.status, String::from_utf8_lossy(&a.body).into_owned()))
    }

    /// `POST url` with `body`: the status and the body as text.
    pub async fn post(&self, url: &str, body: &str) -> Result<(u16, String)> {
        let req = Request::post(url)
            .body(Full::new(Bytes::from(body.to_string())))
            .with_context(|| format!("building POST {url}"))?;
        let a = self.send(req).await?;
        Ok((a.status, String::from_utf8_lossy(&a.body).into_owned()))
    }
}

/// One request of a load run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Bytes,
}

impl Spec {
    /// A request with `method` to `path`, no extra headers, no body.
    pub fn new(method: Method, path: impl Into<String>) -> Spec {
        Spec {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Spec {
        Spec::new(Method::GET, path)
    }

    /// This request with header `name: value` added.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Spec {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// This request with `body`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Spec {
        self.body = body.into();
        self
    }
}

/// What one request of a load run got.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The index the request was built from.
    pub index: usize,
    /// The status, or `None` when there was no answer.
    pub status: Option<u16>,
    /// From sending the request to having read the whole answer.
    pub latency: Duration,
    /// The `x-upstream-version` of the answer, if any.
    pub version: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
}

/// Sends `total` requests built by `spec(index)` to `target`, at most `concurrency` at a time,
/// and returns one sample per request, in index order.
pub async fn drive<F>(
    client: &HttpClient,
    target: SocketAddr,
    total: usize,
    concurrency: usize,
    spec: F,
) -> Vec<Sample>
where
    F: Fn(usize) -> Spec + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let spec = Arc::new(spec);
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, spec) = (client.clone(), next.clone(), spec.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return samples;
                }
                samples.push(one(&client, target, index, spec(index)).await);
            }
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for worker in workers {
        match worker.await {
            Ok(s) => samples.extend(s),
            Err(e) => panic!("a load worker panicked: {e}"),
        }
    }
    samples.sort_by_key(|s| s.index);
    samples
}

async fn one(client: &HttpClient, target: SocketAddr, index: usize, spec: Spec) -> Sample {
    let start = Instant::now();
    let mut builder = Request::builder()
        .method(spec.method)
        .uri(format!("http://{target}{}", spec.path));
    for (name, value) in &spec.headers {
        builder = builder.header(name, value);
    }
    let result = match builder.body(Full::new(spec.body)) {
        Ok(req) => client.send(req).await,
        Err(e) => Err(e.into()),
    };
    let latency = start.elapsed();
    match result {
        Ok(answer) => Sample {
            index,
            status: Some(answer.status),
            latency,
            version: answer
                .headers
                .get(doppel_demo_upstream::VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            error: None,
        },
        Err(e) => Sample {
            index,
            status: None,
            latency,
            version: None,
            error: Some(format!("{e:#}")),
        },
    }
}

/// The `q`-quantile (0 to 1) of the samples' latencies (nearest rank); zero for no samples.
pub fn percentile<'a>(samples: impl IntoIterator<Item = &'a Sample>, q: f64) -> Duration {
    let mut latencies: Vec<Duration> = samples.into_iter().map(|s| s.latency).collect();
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort();
    let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
    latencies[rank - 1]
}

/// The samples that did not get a 2xx answer, with the first few described.
pub fn failures(samples: &[Sample]) -> (usize, String) {
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| !matches!(s.status, Some(200..=299)))
        .collect();
    let described = failed
        .iter()
        .take(5)
        .map(|s| {
            format!(
                "#{}: {}",
                s.index,
                s.error
                    .clone()
                    .unwrap_or_else(|| format!("status {:?}", s.status))
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (failed.len(), described)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64) -> Sample {
        Sample {
            index: 0,
            status: Some(200),
            latency: Duration::from_millis(ms),
            version: None,
            error: None,
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let samples: Vec<Sample> = (1..=100).map(sample).collect();
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
