//! The ingestion load benchmark: N simulated Envoys, each on its own HTTP/2 connection and
//! MetricsService stream, flush realistic messages (`doppel_engine::ingest::fleet`: 412 metric
//! families, the first message with a 64 KB node) into one release-built `doppel serve` pinned
//! to one core. For each N it reports the messages offered and processed per second, the
//! engine's CPU per message and share of its core (`/proc/<pid>/stat`), its memory
//! (`VmRSS`, `VmHWM`), and checks that the engine's windows hold exactly what was sent (the
//! dashboard's per-window request counts and `/metrics`). Then, with the largest fleet, it
//! shortens the flush interval step by step to find where the engine stops keeping up.
//!
//! Run it through `scripts/bench-ingest` (it builds, pins this generator to the other core and
//! raises the open-files limit): `--help` lists the options.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use doppel_engine::cli::client;
use doppel_engine::ingest::fleet::{self, Expected};
use doppel_engine::ingest::wire::BytesCodec;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::envoy::service::metrics::v3::stream_metrics_message::Identifier;
use futures::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const HELP: &str =
    "ingest_load: simulated Envoys streaming MetricsService messages into one doppel serve

  --doppel PATH        the doppel binary (a release build)
  --envoys LIST        fleet sizes, comma-separated (default 100,1000,5000)
  --flush SECONDS      flush interval of the fleet (default 10)
  --intervals N        flush intervals measured per fleet size (default 3)
  --stress LIST        flush intervals (seconds) to step through with the largest fleet after
                       its run, until the engine stops keeping up; empty for none
                       (default 5,2,1,0.5,0.25)
  --stress-seconds S   length of each stress step's measurement (default 12)
  --engine-cpu N       the core the engine is pinned to with taskset (default 0)
  --write FILE         also replace (or append) the section in FILE (BENCHMARKS.md)";

/// The section this benchmark owns in BENCHMARKS.md.
const SECTION: &str = "## Ingestion: simulated Envoys streaming to one engine core";

/// Distinct flushes each Envoy cycles through (values differ, names are the fleet's).
const VARIANTS: usize = 16;
/// The engine's windows (and its analysis interval): the policy's `interval`.
const WINDOW_MS: u64 = 10_000;
/// A send later than this behind its schedule means the engine is not keeping up.
const MAX_LAG: Duration = Duration::from_secs(1);
/// Connections opened at once while the fleet connects.
const CONNECTING: usize = 64;

struct Args {
    doppel: PathBuf,
    envoys: Vec<usize>,
    flush: Duration,
    intervals: u32,
    stress: Vec<Duration>,
    stress_seconds: f64,
    engine_cpu: usize,
    write: Option<PathBuf>,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if !(0.01..=3600.0).contains(&value) {
        return Err(format!("{text:?}: between 0.01 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(value))
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        doppel: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/release/doppel"
        )),
        ..defaults()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--doppel" => args.doppel = PathBuf::from(&value),
            "--envoys" => {
                args.envoys = value
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
                if args.envoys.is_empty() || args.envoys.contains(&0) {
                    return Err(bad(&"at least one fleet, each of at least one Envoy"));
                }
            }
            "--flush" => args.flush = seconds(&value).map_err(|e| bad(&e))?,
            "--intervals" => args.intervals = value.parse().map_err(|e| bad(&e))?,
            "--stress" => {
                args.stress = value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| seconds(s.trim()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
            }
            "--stress-seconds" => args.stress_seconds = value.parse().map_err(|e| bad(&e))?,
            "--engine-cpu" => args.engine_cpu = value.parse().map_err(|e| bad(&e))?,
            "--write" => args.write = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown flag {flag} (--help lists them)")),
        }
    }
    if args.intervals == 0 {
        return Err("--intervals must be at least 1".to_owned());
    }
    Ok(args)
}

/// When the fleet flushes: Envoy `i` of `n` at `start + interval * (i / n + k)`, k = 0, 1, ...
#[derive(Clone, Copy, Debug)]
struct Schedule {
    generation: u64,
    running: bool,
    start: tokio::time::Instant,
    interval: Duration,
}

/// What the fleet did, shared by its tasks.
#[derive(Default)]
struct Tally {
    /// Messages handed to the gRPC streams.
    sent: AtomicU64,
    /// Per flush variant, messages sent with it (the expected totals follow from these).
    by_variant: [AtomicU64; VARIANTS],
    /// The largest delay of a send behind its schedule since the last reset, microseconds.
    max_lag_us: AtomicU64,
    /// Sends more than [`MAX_LAG`] late since the last reset.
    late: AtomicU64,
    /// Streams that failed.
    failed: AtomicU64,
}

/// The engine process and its addresses.
struct Engine {
    child: Child,
    metrics: String,
    api: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POLICY: &str = "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
traffic:\n  mode: split\n  percent: 5\nanalysis:\n  interval: 10s\n  min_sample: 200\n  alpha: 0.01\n\
rules:\n  - name: errors\n    when: compare.errors.worse\n    action: rollback\n\
steps:\n  - weight: 5\n    hold: 10m\n";

const SERVE: &str = "steering: full_ads\nfilter: { kind: none }\nnodes: [fleet-node]\nservices:\n  - policy: policy.yaml\n    listener: 127.0.0.1:10000\n    endpoints:\n      checkout-v1: [\"127.0.0.1:9\"]\n      checkout-v2: [\"127.0.0.1:10\"]\n";

fn start_engine(args: &Args, dir: &Path) -> Result<Engine, String> {
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
    };
    write("policy.yaml", POLICY)?;
    write("serve.yaml", SERVE)?;
    let ready = dir.join("ready.json");
    let log =
        std::fs::File::create(dir.join("engine.log")).map_err(|e| format!("engine log: {e}"))?;
    let child = Command::new("taskset")
        .args(["-c", &args.engine_cpu.to_string()])
        .arg(&args.doppel)
        .arg("serve")
        .arg("--config")
        .arg(dir.join("serve.yaml"))
        .arg("--store")
        .arg(dir.join("state.redb"))
        .args([
            "--xds",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting taskset {}: {e}", args.doppel.display()))?;
    let mut engine = Engine {
        child,
        metrics: String::new(),
        api: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && let (Some(metrics), Some(api)) = (json["metrics"].as_str(), json["api"].as_str())
        {
            engine.metrics = metrics.to_owned();
            engine.api = api.to_owned();
            return Ok(engine);
        }
        if let Ok(Some(status)) = engine.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default();
            return Err(format!("doppel serve exited with {status}:\n{log}"));
        }
        if Instant::now() > deadline {
            return Err("doppel serve never became ready".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| format!("{path}: field {} unreadable", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path}: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// One sample of `/metrics`: MetricsService messages received and metrics accepted.
async fn engine_counts(engine: &Engine) -> Result<(u64, u64), String> {
    let answer = client::request(&engine.api, "GET", "/metrics", None, None).await?;
    if answer.status != 200 {
        return Err(format!("/metrics answered {}", answer.status));
    }
    let value = |name: &str| {
        answer
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| format!("/metrics has no {name}"))
    };
    Ok((
        value("doppel_ingest_messages_total")?,
        value("doppel_ingest_metrics_accepted_total")?,
    ))
}

/// checkout's requests (primary, shadow) in the complete windows the dashboard shows.
async fn window_requests(engine: &Engine) -> Result<[u64; 2], String> {
    let answer = client::request(&engine.api, "GET", "/dashboard/state", None, None).await?;
    let state: serde_json::Value =
        serde_json::from_str(&answer.body).map_err(|e| format!("/dashboard/state: {e}"))?;
    let services = state["services"].as_array().cloned().unwrap_or_default();
    let service = services
        .iter()
        .find(|s| s["service"] == fleet::SERVICE)
        .ok_or("/dashboard/state has no checkout")?;
    let mut requests = [0u64; 2];
    for point in service["history"]["points"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for (i, variant) in ["primary", "shadow"].iter().enumerate() {
            requests[i] += point[variant]["requests"].as_u64().unwrap_or(0);
        }
    }
    Ok(requests)
}

/// The fleet's flushes, encoded once: variant `v` and what the engine must take from it.
struct Pool {
    bodies: Vec<Bytes>,
    expected: Vec<Expected>,
}

impl Pool {
    fn new() -> Pool {
        let flushes: Vec<_> = (0..VARIANTS as u64)
            .map(|v| fleet::flush(1000 + v))
            .collect();
        Pool {
            bodies: flushes
                .iter()
                .map(|f| Bytes::from(f.message(None).encode_to_vec()))
                .collect(),
            expected: flushes.iter().map(|f| f.expected).collect(),
        }
    }

    /// What the engine must hold after the sends counted in `tally`.
    fn expected(&self, tally: &Tally) -> Expected {
        let mut total = Expected::default();
        for (v, count) in tally.by_variant.iter().enumerate() {
            for _ in 0..count.load(Ordering::Relaxed) {
                total.add(&self.expected[v]);
            }
        }
        total
    }
}

/// The first message of Envoy `i`'s stream: the node identifier, then the flush's families
/// (two encoded messages concatenate into one whose fields are both).
fn first_message(i: usize, body: &Bytes) -> Bytes {
    let node = StreamMetricsMessage {
        identifier: Some(Identifier {
            node: Some(fleet::node(&format!("envoy-{i}"))),
        }),
        envoy_metrics: Vec::new(),
    };
    let mut bytes = node.encode_to_vec();
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

/// One simulated Envoy: opens its stream on its own connection and flushes on the schedule.
async fn envoy(
    i: usize,
    n: usize,
    channel: Channel,
    pool: Arc<Pool>,
    tally: Arc<Tally>,
    mut schedule: watch::Receiver<Schedule>,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let mut grpc = tonic::client::Grpc::new(channel);
    let call_tally = Arc::clone(&tally);
    tokio::spawn(async move {
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/envoy.service.metrics.v3.MetricsService/StreamMetrics",
        );
        let answer = match grpc.ready().await {
            Ok(()) => grpc
                .client_streaming(
                    tonic::Request::new(ReceiverStream::new(rx)),
                    path,
                    BytesCodec,
                )
                .await
                .map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        if answer.is_err() {
            call_tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut seq = 0usize;
    let mut last: Option<(u64, u32)> = None;
    loop {
        let now = *schedule.borrow_and_update();
        if !now.running {
            if schedule.changed().await.is_err() {
                return;
            }
            continue;
        }
        let k = match last {
            Some((generation, k)) if generation == now.generation => k + 1,
            _ => 0,
        };
        let at = now.start + now.interval.mul_f64(i as f64 / n as f64) + now.interval * k;
        tokio::select! {
            () = sleep_until(at) => {}
            changed = schedule.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let v = (i * 7 + seq) % VARIANTS;
        let body = if seq == 0 {
            first_message(i, &pool.bodies[v])
        } else {
            pool.bodies[v].clone()
        };
        if tx.send(body).await.is_err() {
            return;
        }
        let lag = tokio::time::Instant::now().saturating_duration_since(at);
        tally.sent.fetch_add(1, Ordering::Relaxed);
        tally.by_variant[v].fetch_add(1, Ordering::Relaxed);
        tally
            .max_lag_us
            .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
        if lag > MAX_LAG {
            tally.late.fetch_add(1, Ordering::Relaxed);
        }
        seq += 1;
        last = Some((now.generation, k));
    }
}

/// One measured stretch.
#[derive(Clone, Debug)]
struct Measure {
    envoys: usize,
    flush: Duration,
    seconds: f64,
    offered: f64,
    processed: f64,
    engine_cpu: f64,
    generator_cpu: f64,
    max_lag: Duration,
    late: u64,
    backlog: u64,
}

impl Measure {
    fn scheduled(&self) -> f64 {
        self.envoys as f64 / self.flush.as_secs_f64()
    }

    fn cpu_per_message_us(&self) -> f64 {
        if self.processed > 0.0 {
            self.engine_cpu / (self.processed * self.seconds) * 1e6
        } else {
            f64::NAN
        }
    }

    fn share(&self) -> f64 {
        self.engine_cpu / self.seconds
    }

    /// Processed what was scheduled (within 3%), no send held up past [`MAX_LAG`].
    fn keeps_up(&self) -> bool {
        self.processed >= 0.97 * self.scheduled() && self.late == 0
    }
}

/// Measures the engine and the fleet over `duration`.
async fn measure(
    engine: &Engine,
    tally: &Tally,
    envoys: usize,
    flush: Duration,
    duration: Duration,
) -> Result<Measure, String> {
    let pid = engine.child.id();
    let me = std::process::id();
    tally.max_lag_us.store(0, Ordering::Relaxed);
    tally.late.store(0, Ordering::Relaxed);
    let (processed0, _) = engine_counts(engine).await?;
    let sent0 = tally.sent.load(Ordering::Relaxed);
    let (cpu0, mine0) = (cpu_seconds(pid)?, cpu_seconds(me)?);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    let (processed1, _) = engine_counts(engine).await?;
    let sent1 = tally.sent.load(Ordering::Relaxed);
    let (cpu1, mine1) = (cpu_seconds(pid)?, cpu_seconds(me)?);
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Measure {
        envoys,
        flush,
        seconds,
        offered: (sent1 - sent0) as f64 / seconds,
        processed: processed1.saturating_sub(processed0) as f64 / seconds,
        engine_cpu: cpu1 - cpu0,
        generator_cpu: mine1 - mine0,
        max_lag: Duration::from_micros(tally.max_lag_us.load(Ordering::Relaxed)),
        late: tally.late.load(Ordering::Relaxed),
        backlog: sent1.saturating_sub(processed1),
    })
}

/// Waits until the engine has received every message sent; how long that took.
async fn drain(engine: &Engine, tally: &Tally, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let (processed, _) = engine_counts(engine).await?;
        let sent = tally.sent.load(Ordering::Relaxed);
        if processed >= sent {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "the engine received {processed} of {sent} messages within {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the windows holding everything sent to be complete and in the dashboard's
/// history, then checks them and `/metrics` against what was sent.
async fn check_windows(engine: &Engine, pool: &Pool, tally: &Tally) -> Result<String, String> {
    let expected = pool.expected(tally);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as u64;
    // The analysis loop records a window just after it ends.
    let complete_at = now_ms - now_ms % WINDOW_MS + WINDOW_MS + 1_000;
    tokio::time::sleep(Duration::from_millis(complete_at - now_ms)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let requests = window_requests(engine).await?;
        let (_, accepted) = engine_counts(engine).await?;
        if requests == expected.requests && accepted == expected.accepted {
            return Ok(format!(
                "{} + {} requests, {} metrics: equal",
                group(requests[0] as f64),
                group(requests[1] as f64),
                group(accepted as f64)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "windows hold {requests:?} checkout requests and {accepted} accepted metrics; \
                 sent {:?} and {}",
                expected.requests, expected.accepted
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One fleet size's row.
struct Row {
    measure: Measure,
    rss_idle_kib: u64,
    rss_connected_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
    drain: Result<String, String>,
    check: Result<String, String>,
}

impl Row {
    fn per_envoy_kib(&self) -> f64 {
        (self.rss_kib as f64 - self.rss_idle_kib as f64) / self.measure.envoys as f64
    }
}

/// Runs a fleet of `n` against a fresh engine; with `stress`, steps through shorter flush
/// intervals afterwards.
async fn run_fleet(
    args: &Args,
    n: usize,
    pool: &Arc<Pool>,
    stress: bool,
) -> Result<(Row, Vec<Measure>), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let engine = start_engine(args, dir.path())?;
    let pid = engine.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle_kib, _) = memory_kib(pid)?;

    eprintln!("ingest_load: {n} Envoys connecting");
    let uri = format!("http://{}", engine.metrics);
    let endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| format!("{uri}: {e}"))?;
    let channels: Vec<Channel> = futures::stream::iter(0..n)
        .map(|_| {
            let endpoint = endpoint.clone();
            async move { endpoint.connect().await }
        })
        .buffered(CONNECTING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("connecting to {uri}: {e}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_connected_kib, _) = memory_kib(pid)?;

    let tally = Arc::new(Tally::default());
    let (set, schedule) = watch::channel(Schedule {
        generation: 0,
        running: true,
        start: tokio::time::Instant::now() + Duration::from_millis(200),
        interval: args.flush,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, channel) in channels.into_iter().enumerate() {
        tasks.spawn(envoy(
            i,
            n,
            channel,
            Arc::clone(pool),
            Arc::clone(&tally),
            schedule.clone(),
        ));
    }
    drop(schedule);
    // Every Envoy's first message (with its node) goes out in the first interval: measure
    // from the second on.
    eprintln!("ingest_load: {n} Envoys streaming, warming up for one flush interval");
    tokio::time::sleep(args.flush + Duration::from_millis(500)).await;
    let measured = measure(&engine, &tally, n, args.flush, args.flush * args.intervals).await?;
    let (rss_kib, hwm_kib) = memory_kib(pid)?;
    eprintln!(
        "ingest_load: {n} Envoys: {:.1} messages/s offered, {:.1} processed, {:.0} µs CPU each, RSS {rss_kib} KiB",
        measured.offered,
        measured.processed,
        measured.cpu_per_message_us()
    );
    set.send_modify(|s| s.running = false);
    // A run that fails its checks is reported as such (and the command fails), not hidden.
    let drained = drain(&engine, &tally, Duration::from_secs(60))
        .await
        .map(|d| format!("{} ms", d.as_millis()));
    let mut check = match &drained {
        Ok(_) => check_windows(&engine, pool, &tally).await,
        Err(_) => Err("not checked: messages still in flight".to_owned()),
    };
    let failed = tally.failed.load(Ordering::Relaxed);
    if failed > 0 {
        check = Err(format!("{failed} streams failed"));
    }
    let row = Row {
        measure: measured,
        rss_idle_kib,
        rss_connected_kib,
        rss_kib,
        hwm_kib,
        drain: drained,
        check,
    };

    let mut steps = Vec::new();
    if stress {
        for (g, interval) in args.stress.iter().enumerate() {
            set.send_modify(|s| {
                *s = Schedule {
                    generation: g as u64 + 1,
                    running: true,
                    start: tokio::time::Instant::now() + Duration::from_millis(100),
                    interval: *interval,
                }
            });
            // Every Envoy's first flush of the step falls within its first interval.
            tokio::time::sleep(*interval + Duration::from_millis(500)).await;
            let seconds = args.stress_seconds.max(3.0 * interval.as_secs_f64());
            let step = measure(
                &engine,
                &tally,
                n,
                *interval,
                Duration::from_secs_f64(seconds),
            )
            .await?;
            eprintln!(
                "ingest_load: {n} Envoys every {:?}: {:.0} scheduled/s, {:.0} offered, {:.0} processed, CPU share {:.2}, max lag {:?}",
                interval,
                step.scheduled(),
                step.offered,
                step.processed,
                step.share(),
                step.max_lag
            );
            let kept_up = step.keeps_up();
            steps.push(step);
            if !kept_up {
                break;
            }
        }
        set.send_modify(|s| s.running = false);
        if let Err(e) = drain(&engine, &tally, Duration::from_secs(120)).await {
            eprintln!("ingest_load: after the stress steps: {e}");
        }
    }
    drop(set);
    tasks.abort_all();
    drop(engine);
    Ok((row, steps))
}

/// `1234567` as `1,234,567`.
fn group(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU")
        .to_owned();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    format!("{cpus} CPUs ({model}), load average {load} at the start")
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn command_line(args: &Args) -> String {
    let mut command = "scripts/bench-ingest".to_owned();
    let defaults = defaults();
    if args.envoys != defaults.envoys {
        let list: Vec<String> = args.envoys.iter().map(usize::to_string).collect();
        let _ = write!(command, " --envoys {}", list.join(","));
    }
    if args.flush != defaults.flush {
        let _ = write!(command, " --flush {}", args.flush.as_secs_f64());
    }
    if args.intervals != defaults.intervals {
        let _ = write!(command, " --intervals {}", args.intervals);
    }
    if args.stress != defaults.stress {
        let list: Vec<String> = args
            .stress
            .iter()
            .map(|d| d.as_secs_f64().to_string())
            .collect();
        let _ = write!(command, " --stress {}", list.join(","));
    }
    if args.write.is_some() {
        command += " --write";
    }
    command
}

/// The options' defaults.
fn defaults() -> Args {
    Args {
        doppel: PathBuf::new(),
        envoys: vec![100, 1000, 5000],
        flush: Duration::from_secs(10),
        intervals: 3,
        stress: [5.0, 2.0, 1.0, 0.5, 0.25]
            .into_iter()
            .map(Duration::from_secs_f64)
            .collect(),
        stress_seconds: 12.0,
        engine_cpu: 0,
        write: None,
    }
}

fn markdown(args: &Args, started: &str, machine: &str, rows: &[Row], steps: &[Measure]) -> String {
    let mut md = format!("{SECTION}\n\n```sh\n{}\n```\n\n", command_line(args));
    let _ = writeln!(
        md,
        "Run {started} on {machine}; `doppel serve` (release) pinned to CPU {} with `taskset`, the generator on the other CPU. Each fleet size runs against a fresh engine: {} s flushes, {} intervals measured after one of warm-up.\n",
        args.engine_cpu,
        args.flush.as_secs_f64(),
        args.intervals
    );
    md += "| Envoys | flush | messages/s offered | processed | engine CPU per message | engine CPU share | max send lag | RSS idle | RSS connected, no stream | RSS streaming (VmRSS) | VmHWM | memory per Envoy | in flight at the end | drained after | windows hold what was sent |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for row in rows {
        let m = &row.measure;
        let _ = writeln!(
            md,
            "| {} | {} s | {:.1} | {:.1} | {:.0} µs | {:.1}% | {} ms | {} | {} | {} | {} | {:.1} KiB | {} | {} | {} |",
            group(m.envoys as f64),
            m.flush.as_secs_f64(),
            m.offered,
            m.processed,
            m.cpu_per_message_us(),
            100.0 * m.share(),
            m.max_lag.as_millis(),
            mib(row.rss_idle_kib),
            mib(row.rss_connected_kib),
            mib(row.rss_kib),
            mib(row.hwm_kib),
            row.per_envoy_kib(),
            group(m.backlog as f64),
            row.drain.as_ref().unwrap_or_else(|e| e),
            match &row.check {
                Ok(text) => text.clone(),
                Err(e) => format!("**no**: {e}"),
            }
        );
    }
    if !steps.is_empty() {
        let _ = writeln!(
            md,
            "\nPast 10 s flushes: {} Envoys, the flush interval shortened step by step (each step measured for at least {} s after one interval of warm-up) until the engine stops keeping up (processed below 97% of scheduled, or a send held up more than {} ms).\n",
            group(steps[0].envoys as f64),
            args.stress_seconds,
            MAX_LAG.as_millis()
        );
        md += "| flush | messages/s scheduled | offered | processed | engine CPU per message | engine CPU share | generator CPU share | max send lag | keeps up |\n";
        md += "|---|---|---|---|---|---|---|---|---|\n";
        for s in steps {
            let _ = writeln!(
                md,
                "| {} s | {} | {} | {} | {:.0} µs | {:.0}% | {:.0}% | {} ms | {} |",
                s.flush.as_secs_f64(),
                group(s.scheduled()),
                group(s.offered),
                group(s.processed),
                s.cpu_per_message_us(),
                100.0 * s.share(),
                100.0 * s.generator_cpu / s.seconds,
                s.max_lag.as_millis(),
                if s.keeps_up() { "yes" } else { "no" }
            );
        }
    }
    md += r#"
How to read it:

- Each simulated Envoy is one HTTP/2 connection with one MetricsService stream, as a real
  Envoy's `envoy.stat_sinks.metrics_service` holds. Its first message carries the node (about
  64 KB, like Envoy's with its extension list); then one message per flush with 412 metric
  families (`policy-engine/src/ingest/fleet.rs`): Envoy's own cluster, listener, HTTP
  connection manager, server, cluster manager, runtime and Wasm stats for six clusters, two
  listeners and two connection managers, plus the doppel filter's counters and histograms for
  two services; 31 histograms with Envoy's default 19 buckets; tags as labels, counters as
  deltas (doppel's sink config). The engine reads 31 of the 412 (the `checkout` clusters'
  stats, the filter's custom and mirror-mode metrics) and counts the rest as ignored. Flushes
  are spread evenly over the interval, as a fleet's unsynchronised timers are.
- **offered**: messages the fleet handed to its streams per second; **processed**: messages
  the engine received (`doppel_ingest_messages_total` on `/metrics`) per second over the same
  stretch. **engine CPU per message** and **share** come from `/proc/<pid>/stat` (utime +
  stime) over that stretch; the share is of the one core the engine has. **max send lag**:
  the longest a simulated Envoy's flush went out behind its schedule (a stream held up by
  HTTP/2 flow control means the engine is behind).
- **RSS idle** is the engine before any connection; **connected, no stream** with every
  connection open before the first stream; **streaming** at the end of the measured
  stretch; **VmHWM** the peak. **memory per Envoy** = (streaming − idle) / Envoys.
- **Where an Envoy's memory goes**, measured once with heaptrack (Debian's `heaptrack`) on
  `doppel serve` with 500 Envoys of this fleet (`--envoys 500 --intervals 1 --stress ''`),
  the engine killed while streaming: its live heap by what allocated it, per Envoy. Before
  the fix (tonic's `Streaming` reading the stream) and now:

  | held per Envoy | before | now | what it is |
  |---|---|---|---|
  | tonic's decode buffer | 111.4 KiB | 0 | kept the capacity of the largest message (the first: node + flush, 106 KB) for the stream's life; the server now reads the gRPC framing itself (`ingest::body`), and a message is freed once ingested |
  | h2 codec | 20.0 KiB | 20.0 KiB | connection: its write buffer (16 KiB, fixed in h2) and frame state |
  | h2 read buffer | 16.0 KiB | 16.0 KiB | connection: holds one whole frame (HTTP/2's smallest maximum frame size is 16 KiB) |
  | h2 streams | 4.4 KiB | 5.0 KiB | connection and stream: stream state, HPACK, the queue of received frames |
  | tonic, tower, hyper | 3.5 KiB | 3.8 KiB | the stream's request future and service stack |
  | tokio | 3.2 KiB | 3.2 KiB | connection: its task, the stream's task, the socket's registration |
  | doppel's stream state | 0.1 KiB | 0.1 KiB | `ingest::Stream`: the node's name (and, only with cumulative counters, each counter's last value) |
  | total | 160.1 KiB | 49.5 KiB | (plus 1.4 KiB per Envoy of fixed memory: runtime, policy, CEL, windows) |

  What is left is connection state: HTTP/2 framing and the two tasks. While a message
  arrives it is gathered in a buffer of its own size (at most 256 KiB allocated before its
  bytes arrive); the HTTP/2 windows (`ingest::WINDOW_BYTES`, 128 KiB, hyper's default is
  1 MiB) bound what one Envoy can make the engine buffer when it falls behind.
- **in flight at the end**: messages sent but not yet received by the engine when the
  measured stretch ended. **drained after**: once sends stop, how long until the engine had received every message
  sent (no backlog left in buffers). **windows hold what was sent**: after the last window
  closed, the `checkout` primary + shadow requests summed over the engine's windows (the
  dashboard's history, `/dashboard/state`) and `doppel_ingest_metrics_accepted_total` equal
  exactly what the fleet sent; the run fails otherwise.
- The generator is pre-encoded and light, but it shares the machine with the engine, and
  the machine with other jobs: compare rows of one run, not runs of different machines.
"#;
    md
}

/// Replaces the section in `path` (from its heading to the next `## ` heading), or appends it.
fn write_section(path: &Path, section: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let updated = match text.find(&format!("\n{SECTION}\n")) {
        Some(start) => {
            let start = start + 1;
            let end = text[start + SECTION.len()..]
                .find("\n## ")
                .map_or(text.len(), |i| start + SECTION.len() + i + 1);
            format!("{}{}\n{}", &text[..start], section.trim_end(), {
                let rest = &text[end..];
                if rest.is_empty() {
                    String::new()
                } else {
                    format!("\n{rest}")
                }
            })
        }
        None => format!("{}\n\n{}\n", text.trim_end(), section.trim_end()),
    };
    std::fs::write(path, updated).map_err(|e| format!("{}: {e}", path.display()))
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The section, and the checks that failed.
async fn run(args: Args) -> Result<(String, Vec<String>), String> {
    let largest = args.envoys.iter().copied().max().unwrap_or(0);
    if let Some(limit) = open_files_limit()
        && limit < largest as u64 + 256
    {
        return Err(format!(
            "the open-files limit is {limit}: {largest} Envoys need {} (`ulimit -n`; scripts/bench-ingest raises it)",
            largest + 256
        ));
    }
    if !args.doppel.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p doppel-policy-engine --bin doppel",
            args.doppel.display()
        ));
    }
    let started = utc_now();
    let machine = machine();
    let pool = Arc::new(Pool::new());
    eprintln!(
        "ingest_load: flush messages of {} bytes ({} families)",
        pool.bodies[0].len(),
        pool.expected[0].families
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut steps = Vec::new();
    let last = args.envoys.len() - 1;
    for (index, n) in args.envoys.iter().copied().enumerate() {
        let stress = index == last && !args.stress.is_empty();
        let (row, fleet_steps) = run_fleet(&args, n, &pool, stress).await?;
        rows.push(row);
        steps.extend(fleet_steps);
    }
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|r| [r.drain.as_ref().err(), r.check.as_ref().err()])
        .flatten()
        .cloned()
        .collect();
    Ok((markdown(&args, &started, &machine, &rows, &steps), failures))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ingest_load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ingest_load: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let write = args.write.clone();
    match runtime.block_on(run(args)) {
        Ok((md, failures)) => {
            print!("{md}");
            if let Some(path) = write
                && let Err(e) = write_section(&path, &md)
            {
                eprintln!("ingest_load: {e}");
                return ExitCode::FAILURE;
            }
            for failure in &failures {
                eprintln!("ingest_load: check failed: {failure}");
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ingest_load: {e}");
            ExitCode::FAILURE
        }
    }
}
