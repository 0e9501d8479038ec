//! `doppel check PATH...`: validates policy files the way `promtool check rules` does.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::policy;

/// Arguments of `doppel check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Policy files, or directories whose *.yaml and *.yml files are checked.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Prints one line per problem, `file:line:column: message`; exit 0 when all are good, 1 otherwise.
pub fn main(args: CheckArgs) -> ExitCode {
    check(&args.paths)
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
