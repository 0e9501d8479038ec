//! `doppel`: the policy engine's command line. It parses arguments and calls the library.

use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use doppel_engine::{policy, replay};

/// doppel: shadow deployments decided by evidence.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check policy files (or directories of them): one line per problem, `file:line:column:
    /// message`; exit 0 when all are good, 1 otherwise.
    Check {
        /// Policy files, or directories whose *.yaml and *.yml files are checked.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run a policy over a recorded metrics trace (JSON Lines) and print the decision timeline.
    Replay {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The trace (JSON Lines, see docs/trace-format.md).
        #[arg(long)]
        trace: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Traces at least this long get a progress bar (when stderr is a terminal).
const PROGRESS_FROM: usize = 1_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { paths } => check(&paths),
        Command::Replay {
            policy,
            trace,
            json,
        } => run_replay(&policy, &trace, json),
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    let report = policy::check::check_paths(paths);
    let mut out = std::io::stdout().lock();
    for p in &report.problems {
        let _ = writeln!(out, "{p}");
    }
    if report.problems.is_empty() {
        eprintln!("{} policy file(s) checked: all good", report.files.len());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} policy file(s) checked: {} problem(s)",
            report.files.len(),
            report.problems.len()
        );
        ExitCode::FAILURE
    }
}

fn run_replay(policy_path: &Path, trace_path: &Path, json: bool) -> ExitCode {
    let policy = match policy::load(policy_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let file = match std::fs::File::open(trace_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", trace_path.display());
            return ExitCode::FAILURE;
        }
    };
    let windows = match replay::read_trace(BufReader::new(file)) {
        Ok(w) => w,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}:{}: {}", trace_path.display(), e.line, e.message);
            }
            eprintln!("{} bad trace line(s): nothing replayed", errors.len());
            return ExitCode::FAILURE;
        }
    };
    let bar = if windows.len() >= PROGRESS_FROM && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(windows.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let result = replay::replay(&policy, &windows, || bar.inc(1));
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}:{}: {}", trace_path.display(), e.line, e.source);
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("cannot write the report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        replay::render_text(&report)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if report.windows == 0 {
        eprintln!(
            "{}: no window of service {} in the trace",
            trace_path.display(),
            report.service
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
