//! `doppel-demo-upstream`: parses flags, binds, prints the bound address as the first line of
//! stdout, and serves until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use doppel_demo_upstream::fault::{Fault, Mode};
use doppel_demo_upstream::reqlog::RequestLog;
use doppel_demo_upstream::{Upstream, serve};
use tokio::signal::unix::{SignalKind, signal};

/// A demo upstream that plays primary or shadow: a version label, an error rate, a latency
/// distribution, connection faults and a request log.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port. The bound address is printed first.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Version label returned in the `x-upstream-version` header and the body.
    #[arg(long, default_value = "v1")]
    label: String,
    /// Share of requests answered with 500, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Median latency added to each answer, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// Spread (sigma) of the log-normal latency distribution; 0 makes the latency fixed.
    #[arg(long, default_value_t = 0.0)]
    latency_sigma: f64,
    /// Connection behaviour: answer normally, reset every connection, or hang.
    #[arg(long, value_enum, default_value_t = Mode::Normal)]
    mode: Mode,
    /// In hang mode, answer after this many milliseconds (default: hold until the client leaves).
    #[arg(long)]
    hang_ms: Option<u64>,
    /// Answer with this body instead of `<status> answered by <label>` (a wrong answer).
    #[arg(long)]
    body: Option<String>,
    /// Append one JSON line per request received to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fault = Fault {
        error_rate: args.error_rate,
        latency_ms: args.latency_ms,
        latency_sigma: args.latency_sigma,
        mode: args.mode,
        hang_ms: args.hang_ms.filter(|&ms| ms > 0),
        body: args.body.clone(),
    };
    fault.validate().context("invalid flags")?;
    let log = match &args.log {
        Some(path) => Some(
            RequestLog::open(path)
                .with_context(|| format!("opening the request log {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{addr}")?;
        stdout.flush()?;
        drop(stdout);
        let upstream = Upstream::new(args.label, fault, log);
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        serve(listener, upstream, shutdown).await.context("serving")
    })
}
