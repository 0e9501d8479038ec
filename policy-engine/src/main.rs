//! `doppel`: the policy engine's command line. It parses arguments and calls the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use doppel_engine::cli;

/// doppel: shadow deployments decided by evidence.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Checks policy files (or directories of them): one line per problem, `file:line:column:
    /// message`; exit 0 when all are good, 1 otherwise.
    Check(cli::check::CheckArgs),
    /// Runs a policy over a recorded metrics trace (JSON Lines) and prints the decision timeline.
    Replay(cli::replay::ReplayArgs),
    /// Runs the engine: xDS server, metrics ingestion, rollouts and the HTTP API.
    Serve(cli::serve::ServeArgs),
    /// Drives a rollout through a running engine's API.
    #[command(subcommand)]
    Rollout(cli::rollout::RolloutCommand),
    /// Runs the whole product on this machine: demo upstreams, the engine, Envoy with the filter,
    /// traffic, and a rollout the engine decides (`--scenario promote|errors|latency|mirror`).
    Demo(cli::demo::DemoArgs),
    /// Renders manifests for other control planes.
    #[command(subcommand)]
    Render(cli::render::RenderCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check(args) => cli::check::main(args),
        Command::Replay(args) => cli::replay::main(args),
        Command::Serve(args) => cli::serve::main(args),
        Command::Rollout(command) => cli::rollout::main(command),
        Command::Render(command) => cli::render::main(command),
        Command::Demo(args) => cli::demo::main(args),
    }
}
