//! `doppel render istio POLICY`: the WasmPlugin, VirtualService and DestinationRule for a
//! policy, as YAML documents on stdout (or into `--out`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::policy;
use crate::rollout::istio::{IstioOptions, manifests, to_yaml};

/// What to render.
#[derive(Subcommand, Debug)]
pub enum RenderCommand {
    /// Istio manifests (WasmPlugin, VirtualService, DestinationRule) for a policy.
    Istio(IstioArgs),
}

/// `doppel render istio`'s arguments.
#[derive(Args, Debug)]
pub struct IstioArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// The Kubernetes service host (default: the policy's service).
    #[arg(long)]
    pub host: Option<String>,
    /// The namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Where Istio fetches the filter's Wasm module.
    #[arg(long, default_value = "oci://ghcr.io/doppel/filter:latest")]
    pub wasm_url: String,
    /// The shadow's share of the weighted route, whole percent.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub shadow_weight: u32,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs a render subcommand; the process's exit code.
pub fn main(command: RenderCommand) -> ExitCode {
    let RenderCommand::Istio(args) = command;
    let policy = match policy::load(&args.policy) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("doppel render istio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = IstioOptions {
        host: args.host.unwrap_or_else(|| policy.service.clone()),
        namespace: args.namespace,
        wasm_url: args.wasm_url,
        shadow_weight: args.shadow_weight,
    };
    let text = manifests(&policy, &options)
        .iter()
        .map(|doc| format!("---\n{}", to_yaml(doc)))
        .collect::<String>();
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("doppel render istio: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{text}"),
    }
    ExitCode::SUCCESS
}
