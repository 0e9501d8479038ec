//! The demo's users: a few concurrent clients sending GETs through Envoy's listener as many
//! different users, counting what each variant answered (by the demo upstream's
//! `x-upstream-version` header) and what failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;

/// Concurrent clients.
const CLIENTS: usize = 4;
/// Pause between one client's requests.
const THINK: Duration = Duration::from_millis(8);
const PATHS: [&str; 4] = ["/", "/cart", "/items/42", "/search?q=shoes"];

/// Counts by who answered. `v1` is the primary's label, `v2` the shadow's.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Answered by the primary (any status).
    pub primary: AtomicU64,
    /// Of those, 5xx.
    pub primary_5xx: AtomicU64,
    /// Answered by the shadow.
    pub shadow: AtomicU64,
    /// Of those, 5xx.
    pub shadow_5xx: AtomicU64,
    /// No answer from either upstream (a connection error, or Envoy's own error reply).
    pub failed: AtomicU64,
}

/// A plain copy of a [`Tally`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent.
    pub sent: u64,
    /// Answered by the primary.
    pub primary: u64,
    /// Primary 5xx.
    pub primary_5xx: u64,
    /// Answered by the shadow.
    pub shadow: u64,
    /// Shadow 5xx.
    pub shadow_5xx: u64,
    /// Answered by neither.
    pub failed: u64,
}

impl Tally {
    /// The counts now.
    pub fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            sent: get(&self.sent),
            primary: get(&self.primary),
            primary_5xx: get(&self.primary_5xx),
            shadow: get(&self.shadow),
            shadow_5xx: get(&self.shadow_5xx),
            failed: get(&self.failed),
        }
    }

    fn record(&self, answer: Result<(u16, Option<String>), reqwest::Error>) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let (count, errors) = match &answer {
            Ok((_, Some(label))) if label == "v1" => (&self.primary, &self.primary_5xx),
            Ok((_, Some(label))) if label == "v2" => (&self.shadow, &self.shadow_5xx),
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        count.fetch_add(1, Ordering::Relaxed);
        if matches!(answer, Ok((status, _)) if status >= 500) {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Clients sending through `front` until `stop` is set.
pub fn start(
    front: SocketAddr,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("building the traffic client: {e}"))?;
    Ok((0..CLIENTS)
        .map(|_| {
            let (client, tally, stop) = (client.clone(), Arc::clone(&tally), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (user, path) = {
                        let mut rng = rand::rng();
                        (
                            format!("user-{}", rng.random_range(0..5_000)),
                            PATHS[rng.random_range(0..PATHS.len())],
                        )
                    };
                    let answer = match client
                        .get(format!("http://{front}{path}"))
                        .header("x-user-id", user)
                        .send()
                        .await
                    {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let label = response
                                .headers()
                                .get("x-upstream-version")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            // Read the body so the connection is kept for the next request.
                            response.bytes().await.map(|_| (status, label))
                        }
                        Err(e) => Err(e),
                    };
                    tally.record(answer);
                    tokio::time::sleep(THINK).await;
                }
            })
        })
        .collect())
}
