//! `doppel demo`: the whole product on one machine. It starts two demo upstreams (primary `v1`,
//! shadow `v2`), `doppel serve` with a policy for the chosen scenario, and Envoy running the
//! doppel filter with everything else from the engine over ADS; sends traffic from many users;
//! starts a rollout; after a healthy phase it degrades the shadow (or not, for `promote`), and
//! shows the engine deciding: a live status line, one line per decision, the dashboard's URL.
//! Every process it started is stopped when it ends, on an error and on Ctrl-C.
//!
//! - [`scenario`]: the policy, the fault and the expected verdict of each scenario.
//! - [`stack`]: the processes; Envoy starts from [`crate::xds::bootstrap`].
//! - [`traffic`]: the users.
//! - [`watch`]: the status, decisions and request counts it prints.

pub mod scenario;
pub mod stack;
pub mod traffic;
pub mod watch;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use serde_json::json;

use self::scenario::Scenario;
use self::stack::Proc;
use self::traffic::Tally;
use self::watch::LogCounter;
use crate::cli::{client, rollout};
use crate::xds::bootstrap::{self, AdsMode};

/// The Envoy node id the demo's engine serves.
const NODE: &str = "doppel-demo";
/// The demo's service (as in its policy).
const SERVICE: &str = "checkout";

/// `doppel demo`'s arguments.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// What happens to the shadow.
    #[arg(long, value_enum, default_value_t = Scenario::Errors)]
    pub scenario: Scenario,
    /// Seconds of healthy traffic after the rollout starts, before the shadow degrades.
    #[arg(long, default_value_t = 20)]
    pub healthy_seconds: u64,
    /// Give up when no verdict has come this many seconds after the rollout started.
    #[arg(long, default_value_t = 110)]
    pub timeout_seconds: u64,
    /// Keep everything running after the verdict, until Ctrl-C (to look around the dashboard).
    #[arg(long)]
    pub stay: bool,
    /// The Envoy binary.
    #[arg(long, env = "ENVOY_BIN", default_value = "envoy")]
    pub envoy: PathBuf,
    /// The doppel filter (`doppel_filter.wasm`, built for wasm32-wasip1).
    #[arg(long, env = "DOPPEL_WASM")]
    pub wasm: PathBuf,
    /// The filter's split-only build (`doppel_filter_split.wasm`), pushed while the filter sends
    /// no copies itself (the serve config's `split_path`).
    #[arg(long, env = "DOPPEL_SPLIT_WASM")]
    pub split_wasm: Option<PathBuf>,
    /// The demo upstream binary (default: `doppel-demo-upstream` beside this binary).
    #[arg(long, env = "DOPPEL_UPSTREAM_BIN")]
    pub upstream: Option<PathBuf>,
    /// Where Envoy listens for the demo's users (0: a free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The run directory for configs and logs (default: a new one under the temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs `doppel demo`; 0 when the engine reached the scenario's verdict.
pub fn main(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("doppel demo: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(args) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted; stopped every process it started".to_owned()),
        }
    });
    // Every `Proc` of `run` has been dropped (killed and reaped) by now.
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(message) => {
            eprintln!("\ndoppel demo: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The binaries the demo runs, each checked to exist.
struct Binaries {
    doppel: PathBuf,
    upstream: PathBuf,
    envoy: PathBuf,
    wasm: PathBuf,
    split_wasm: Option<PathBuf>,
}

fn binaries(args: &DemoArgs) -> Result<Binaries, String> {
    let doppel =
        std::env::current_exe().map_err(|e| format!("finding the doppel binary itself: {e}"))?;
    let upstream = args
        .upstream
        .clone()
        .unwrap_or_else(|| doppel.with_file_name("doppel-demo-upstream"));
    if !upstream.is_file() {
        return Err(format!(
            "no demo upstream at {}: build it (`cargo build -p doppel-demo-upstream`) or pass --upstream",
            upstream.display()
        ));
    }
    if !args.wasm.is_file() {
        return Err(format!(
            "no doppel filter at {}: build it (`cargo build -p doppel-filter --target wasm32-wasip1 --profile wasm`) or pass --wasm",
            args.wasm.display()
        ));
    }
    if let Some(split) = &args.split_wasm
        && !split.is_file()
    {
        return Err(format!(
            "no split-only filter at {}: build it (`cargo build -p doppel-filter --target wasm32-wasip1 --profile wasm --no-default-features`, then copy doppel_filter.wasm to that name) or leave out --split-wasm",
            split.display()
        ));
    }
    if args.envoy.components().count() > 1 && !args.envoy.is_file() {
        return Err(format!(
            "no Envoy at {}: run scripts/setup or pass --envoy",
            args.envoy.display()
        ));
    }
    Ok(Binaries {
        doppel,
        upstream,
        envoy: args.envoy.clone(),
        wasm: args.wasm.clone(),
        split_wasm: args.split_wasm.clone(),
    })
}

fn run_dir(args: &DemoArgs) -> Result<PathBuf, String> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            let stamp = crate::rollout::now_ms();
            std::env::temp_dir().join(format!("doppel-demo-{}-{stamp}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A YAML double-quoted string.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Everything the demo started; dropping it stops them all.
struct Running {
    _upstreams: [Proc; 2],
    engine: Proc,
    envoy: Proc,
}

impl Running {
    fn check_alive(&mut self) -> Result<(), String> {
        self.engine.check_alive()?;
        self.envoy.check_alive()
    }
}

/// Says something with the time since `start` (on a terminal, over the status line).
fn say(start: Instant, text: &str) {
    let mut out = std::io::stdout().lock();
    let clear = if out.is_terminal() { "\r\x1b[K" } else { "" };
    let _ = writeln!(
        out,
        "{clear}{:>5.1}s  {text}",
        start.elapsed().as_secs_f64()
    );
}

async fn run(args: DemoArgs) -> Result<bool, String> {
    let bins = binaries(&args)?;
    let dir = run_dir(&args)?;
    let scenario = args.scenario;
    let token: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect()
    };
    println!(
        "doppel demo, scenario `{}`: starting two upstreams, the engine and Envoy (logs in {})",
        scenario.name(),
        dir.display()
    );

    let primary = stack::upstream(&bins.upstream, "v1", &dir).await?;
    let shadow = stack::upstream(&bins.upstream, "v2", &dir).await?;
    let port = match args.port {
        0 => stack::free_port()?,
        port => port,
    };
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    write(&dir.join("policy.yaml"), &scenario.policy())?;
    write(
        &dir.join("serve.yaml"),
        &format!(
            "# Written by `doppel demo`.\nsteering: full_ads\nfilter: {{ kind: wasm, path: {wasm}{split} }}\n\
             nodes: [{NODE}]\naccess_log_cluster: doppel_engine\nservices:\n  - policy: policy.yaml\n    listener: {front}\n    \
             endpoints:\n      checkout-v1: [\"{p}\"]\n      checkout-v2: [\"{s}\"]\n",
            wasm = quoted(&bins.wasm.display().to_string()),
            split = bins.split_wasm.as_ref().map_or(String::new(), |s| format!(
                ", split_path: {}",
                quoted(&s.display().to_string())
            )),
            p = primary.address,
            s = shadow.address,
        ),
    )?;
    let xds_port = stack::free_port()?;
    let (engine, engine_at) = stack::engine(&bins.doppel, &dir, xds_port, &token).await?;
    let bootstrap = bootstrap::ads_bootstrap(xds_port, engine_at.metrics.port(), AdsMode::Sotw)?;
    let (envoy, admin) = stack::envoy(&bins.envoy, &dir, &bootstrap, NODE).await?;
    let shadow_address = shadow.address;
    let mut running = Running {
        _upstreams: [primary.proc, shadow.proc],
        engine,
        envoy,
    };
    let api = engine_at.api.to_string();

    println!(
        "\n  send a request:   curl -si http://{front}/cart -H 'x-user-id: alice'\n  \
         dashboard:        http://{api}/dashboard   (API token for its buttons: {token})\n  \
         rollout status:   http://{api}/v1/rollouts/{SERVICE}\n  \
         Envoy admin:      http://{admin}/\n  \
         policy:           {}\n",
        dir.join("policy.yaml").display()
    );

    wait_until_served(front, &mut running).await?;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic::start(front, Arc::clone(&tally), Arc::clone(&stop))?;
    let start = Instant::now();
    rollout::send(
        &api,
        &token,
        SERVICE,
        "start",
        Some(json!({ "version": "v2" })),
    )
    .await
    .map_err(|e| format!("starting the rollout: {e}"))?;
    say(
        start,
        "rollout of checkout v2 started; users are sending requests",
    );
    let outcome = watch_until_verdict(&args, &api, shadow_address, &dir, start, &mut running).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let (phase, fault_at) = outcome?;
    let counts = tally.counts();
    let verdict_at = start.elapsed();
    println!(
        "\n\nverdict: {phase} after {:.1}s{}",
        verdict_at.as_secs_f64(),
        fault_at.map_or(String::new(), |at| format!(
            " ({:.1}s after the shadow degraded)",
            verdict_at.saturating_sub(at).as_secs_f64()
        ))
    );
    println!(
        "users sent {} requests: {} answered by the primary ({} 5xx), {} by the shadow ({} 5xx), {} unanswered",
        counts.sent,
        counts.primary,
        counts.primary_5xx,
        counts.shadow,
        counts.shadow_5xx,
        counts.failed
    );
    let expected = scenario.expected().phase();
    let good = phase == expected;
    if good {
        println!("as expected for `{}`.", scenario.name());
    } else {
        println!("expected {expected} for `{}`.", scenario.name());
    }
    if args.stay {
        println!("still running (dashboard: http://{api}/dashboard); Ctrl-C stops everything");
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            running.check_alive()?;
        }
    }
    println!("stopping every process; logs stay in {}", dir.display());
    drop(running);
    Ok(good)
}

/// Waits until a request through Envoy reaches an upstream (Envoy has its listener, routes and
/// clusters from the engine).
async fn wait_until_served(front: SocketAddr, running: &mut Running) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("building an HTTP client: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("http://{front}/")).send().await
            && response.headers().contains_key("x-upstream-version")
        {
            return Ok(());
        }
        running.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "Envoy did not serve http://{front}/ within 60 s (see envoy.log and engine.log)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Shows the rollout each second, degrades the shadow after the healthy phase, and returns
/// the final phase and when the fault began.
async fn watch_until_verdict(
    args: &DemoArgs,
    api: &str,
    shadow: SocketAddr,
    dir: &Path,
    start: Instant,
    running: &mut Running,
) -> Result<(String, Option<Duration>), String> {
    let tty = std::io::stdout().is_terminal();
    let mut primary_log = LogCounter::new(dir.join("v1-requests.jsonl"));
    let mut shadow_log = LogCounter::new(dir.join("v2-requests.jsonl"));
    let mut seen = 0;
    let mut fault_at = None;
    let mut last_line = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.check_alive()?;
        if fault_at.is_none()
            && start.elapsed() >= Duration::from_secs(args.healthy_seconds)
            && let Some((fault, words)) = args.scenario.fault()
        {
            let answer = client::request(
                &shadow.to_string(),
                "POST",
                "/admin/fault",
                None,
                Some(fault.to_string()),
            )
            .await?;
            if answer.status != 200 {
                return Err(format!(
                    "degrading the shadow: {} {}",
                    answer.status, answer.body
                ));
            }
            fault_at = Some(start.elapsed());
            say(start, &format!("-- {words} --"));
        }
        let status = rollout::status(api, SERVICE).await?;
        for line in watch::new_decisions(&status, &mut seen) {
            say(start, &line);
        }
        primary_log.update();
        shadow_log.update();
        let line = format!(
            "{:>5.1}s  {} | primary {} req ({:.1}% 5xx), shadow {} req ({:.1}% 5xx)",
            start.elapsed().as_secs_f64(),
            watch::describe(&status),
            primary_log.requests,
            primary_log.error_percent(),
            shadow_log.requests,
            shadow_log.error_percent(),
        );
        let phase = watch::phase(&status).to_owned();
        if tty {
            print!("\r\x1b[K{line}");
            let _ = std::io::stdout().flush();
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            println!("{line}");
            last_line = Instant::now();
        }
        if phase == "promoted" || phase == "rolled_back" {
            return Ok((phase, fault_at));
        }
        if start.elapsed() > Duration::from_secs(args.timeout_seconds) {
            return Err(format!(
                "no verdict within {} s of the rollout's start (phase: {phase}); see {}",
                args.timeout_seconds,
                dir.display()
            ));
        }
    }
}
