//! `doppel check PATH...`: validates policy files the way `promtool check rules` does; with
//! `--serve-config FILE`, also a serve config, its policies and the endpoints they get
//! (a shadow endpoint that is also the primary's is refused, naming the address).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::policy;

/// Arguments of `doppel check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Policy files, or directories whose *.yaml and *.yml files are checked.
    #[arg(required_unless_present = "serve_config")]
    pub paths: Vec<PathBuf>,
    /// A `doppel serve` config to check too: its policies, hosts and endpoints.
    #[arg(long)]
    pub serve_config: Option<PathBuf>,
}

/// Prints one line per problem, `file:line:column: message`; exit 0 when all are good, 1 otherwise.
pub fn main(args: CheckArgs) -> ExitCode {
    let serve_ok = match &args.serve_config {
        Some(path) => match super::config::load(path) {
            Ok(setup) => {
                eprintln!(
                    "{}: serve config good ({} service(s))",
                    path.display(),
                    setup.services.len()
                );
                true
            }
            Err(e) => {
                println!("{e}");
                false
            }
        },
        None => true,
    };
    let policies_ok = args.paths.is_empty() || check(&args.paths);
    if serve_ok && policies_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(paths: &[PathBuf]) -> bool {
    let report = policy::check::check_paths(paths);
    let mut out = std::io::stdout().lock();
    for p in &report.problems {
        let _ = writeln!(out, "{p}");
    }
    if report.problems.is_empty() {
        eprintln!("{} policy file(s) checked: all good", report.files.len());
        true
    } else {
        eprintln!(
            "{} policy file(s) checked: {} problem(s)",
            report.files.len(),
            report.problems.len()
        );
        false
    }
}
