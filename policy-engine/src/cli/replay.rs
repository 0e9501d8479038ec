//! `doppel replay --policy FILE --trace FILE [--json]`: a policy run over a recorded trace.

use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{policy, replay};

/// Arguments of `doppel replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The policy file.
    #[arg(long)]
    pub policy: PathBuf,
    /// The trace (JSON Lines, see docs/trace-format.md).
    #[arg(long)]
    pub trace: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Traces at least this long get a progress bar (when stderr is a terminal).
const PROGRESS_FROM: usize = 1_000;

/// Prints the decision timeline; exit 1 on a bad policy or trace.
pub fn main(args: ReplayArgs) -> ExitCode {
    run_replay(&args.policy, &args.trace, args.json)
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
