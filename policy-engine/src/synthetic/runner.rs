//! [`Prober`]: one task per probe that, at the probe's rate, sends it to a primary host and a
//! shadow host at the same moment, and the tally the analysis loop takes at each look.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use doppel_filter::names::Variant;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::probe::{Failure, Probe};
use super::{MARKER_HEADER, SyntheticRecord, SyntheticVariant};

/// The largest part of an answer's body read for the body check.
const MAX_BODY_BYTES: usize = 64 << 10;
/// Failures kept per look in the record.
const MAX_FAILURES: usize = 20;

/// Where each variant's probes go: the hosts of its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// The primary cluster's hosts.
    pub primary: Vec<SocketAddr>,
    /// The shadow cluster's hosts.
    pub shadow: Vec<SocketAddr>,
}

impl Targets {
    fn of(&self, variant: Variant) -> &[SocketAddr] {
        match variant {
            Variant::Primary => &self.primary,
            Variant::Shadow => &self.shadow,
        }
    }
}

#[derive(Default)]
struct VariantTally {
    runs: u64,
    passed: u64,
    latency_sum_ms: f64,
    latency_max_ms: f64,
}

#[derive(Default)]
struct Tally {
    primary: VariantTally,
    shadow: VariantTally,
    failures: Vec<String>,
    /// Per (probe, variant): whether its latest run passed.
    latest: HashMap<(String, Variant), bool>,
}

impl Tally {
    fn variant(&mut self, variant: Variant) -> &mut VariantTally {
        match variant {
            Variant::Primary => &mut self.primary,
            Variant::Shadow => &mut self.shadow,
        }
    }

    fn record(&mut self, probe: &str, variant: Variant, host: SocketAddr, run: &RunResult) {
        let t = self.variant(variant);
        t.runs += 1;
        t.latency_sum_ms += run.latency_ms;
        t.latency_max_ms = t.latency_max_ms.max(run.latency_ms);
        match &run.outcome {
            Ok(()) => t.passed += 1,
            Err(failure) => {
                if self.failures.len() < MAX_FAILURES {
                    self.failures.push(format!(
                        "probe `{probe}` on {} {host}: {failure}",
                        variant.as_str()
                    ));
                }
            }
        }
        self.latest
            .insert((probe.to_owned(), variant), run.outcome.is_ok());
    }

    fn summary(&self, variant: Variant) -> SyntheticVariant {
        let t = match variant {
            Variant::Primary => &self.primary,
            Variant::Shadow => &self.shadow,
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let failing = self
            .latest
            .iter()
            .filter(|((_, v), passed)| *v == variant && !**passed)
            .count();
        SyntheticVariant {
            runs: count(t.runs),
            passed: count(t.passed),
            failed: count(t.runs - t.passed),
            failing: i64::try_from(failing).unwrap_or(i64::MAX),
            pass_rate: if t.runs == 0 {
                1.0
            } else {
                t.passed as f64 / t.runs as f64
            },
            latency_mean_ms: if t.runs == 0 {
                0.0
            } else {
                t.latency_sum_ms / t.runs as f64
            },
            latency_max_ms: t.latency_max_ms,
        }
    }
}

/// Runs a policy's probes in the background until dropped.
pub struct Prober {
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct RunResult {
    latency_ms: f64,
    outcome: Result<(), Failure>,
}

impl Prober {
    /// Starts one task per probe on the current Tokio runtime. Fails, naming the variant, when
    /// a variant has no host to probe, or when the HTTP client cannot be built.
    pub fn start(probes: &[Probe], targets: Targets) -> Result<Prober, String> {
        for variant in [Variant::Primary, Variant::Shadow] {
            if !probes.is_empty() && targets.of(variant).is_empty() {
                return Err(format!(
                    "synthetic probes need the {} cluster's hosts: list its endpoints in the serve config",
                    variant.as_str()
                ));
            }
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("doppel-synthetic/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("building the probes' HTTP client: {e}"))?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let targets = Arc::new(targets);
        let tasks = probes
            .iter()
            .map(|probe| {
                tokio::spawn(run_probe(
                    probe.clone(),
                    Arc::clone(&targets),
                    client.clone(),
                    Arc::clone(&tally),
                ))
            })
            .collect();
        Ok(Prober { tally, tasks })
    }

    /// What happened since the last call: counts per variant, the probes failing now, and the
    /// failures' reasons.
    pub fn take(&self) -> SyntheticRecord {
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let record = SyntheticRecord {
            primary: tally.summary(Variant::Primary),
            shadow: tally.summary(Variant::Shadow),
            failures: std::mem::take(&mut tally.failures),
        };
        tally.primary = VariantTally::default();
        tally.shadow = VariantTally::default();
        record
    }
}

async fn run_probe(
    probe: Probe,
    targets: Arc<Targets>,
    client: reqwest::Client,
    tally: Arc<Mutex<Tally>>,
) {
    let mut ticks = tokio::time::interval(Duration::from_millis(probe.every_ms.max(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut turn = 0usize;
    loop {
        ticks.tick().await;
        let primary = targets.primary[turn % targets.primary.len()];
        let shadow = targets.shadow[turn % targets.shadow.len()];
        turn = turn.wrapping_add(1);
        let (p, s) = tokio::join!(
            send(&client, &probe, primary),
            send(&client, &probe, shadow)
        );
        let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
        tally.record(&probe.name, Variant::Primary, primary, &p);
        tally.record(&probe.name, Variant::Shadow, shadow, &s);
        for (variant, host, run) in [
            (Variant::Primary, primary, &p),
            (Variant::Shadow, shadow, &s),
        ] {
            if let Err(failure) = &run.outcome {
                tracing::debug!(probe = %probe.name, variant = variant.as_str(), %host, %failure, "probe failed");
            }
        }
    }
}

/// One request to one host, judged.
async fn send(client: &reqwest::Client, probe: &Probe, host: SocketAddr) -> RunResult {
    let started = Instant::now();
    let budget = Duration::from_millis(probe.latency_budget_ms);
    let outcome = match tokio::time::timeout(budget, fetch(client, probe, host)).await {
        Ok(Ok((status, body))) => {
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            probe.judge(status, &body, took)
        }
        Ok(Err(why)) => Err(Failure::NoAnswer(why)),
        Err(_) => Err(Failure::NoAnswer(format!(
            "no full answer within the {} ms budget",
            probe.latency_budget_ms
        ))),
    };
    RunResult {
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        outcome,
    }
}

async fn fetch(
    client: &reqwest::Client,
    probe: &Probe,
    host: SocketAddr,
) -> Result<(u16, Vec<u8>), String> {
    let method = reqwest::Method::from_bytes(probe.method.as_bytes())
        .map_err(|e| format!("method {}: {e}", probe.method))?;
    let url = format!("http://{host}{}", probe.path);
    let mut request = client.request(method, url).header(MARKER_HEADER, "1");
    for (name, value) in &probe.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &probe.body {
        request = request.body(body.clone());
    }
    let mut response = request.send().await.map_err(|e| chain(&e))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_BODY_BYTES {
        match response.chunk().await.map_err(|e| chain(&e))? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body.truncate(MAX_BODY_BYTES);
    Ok((status, body))
}

fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
