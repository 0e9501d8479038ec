//! `doppel`: the policy engine's command line. It parses arguments and calls the library.

use clap::Parser;

/// doppel: shadow deployments decided by evidence.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
