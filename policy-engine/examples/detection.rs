//! The detection benchmark: doppel's sequential tests against a Kayenta-style judge and an
//! Argo-style threshold rule on simulated traffic with a known truth. Prints the markdown table
//! of BENCHMARKS.md.
//!
//! `cargo run --release -p doppel-policy-engine --example detection -- --runs 1000`

use std::process::ExitCode;

use doppel_engine::stats::sim::bench::{evaluate, markdown, scenarios};

/// Parsed command line.
struct Args {
    runs: usize,
    alpha: f64,
    seed: u64,
    only: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        runs: 1000,
        alpha: 0.01,
        seed: 2026,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--runs" => args.runs = value.parse().map_err(|e| bad(&e))?,
            "--alpha" => args.alpha = value.parse().map_err(|e| bad(&e))?,
            "--seed" => args.seed = value.parse().map_err(|e| bad(&e))?,
            "--only" => args.only = Some(value),
            _ => {
                return Err(format!(
                    "unknown flag {flag} (known: --runs, --alpha, --seed, --only)"
                ));
            }
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("detection: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rows = Vec::new();
    for (i, scenario) in scenarios().iter().enumerate() {
        if let Some(only) = &args.only
            && !scenario.name.contains(only.as_str())
        {
            continue;
        }
        eprintln!("detection: {} ({} runs)", scenario.name, args.runs);
        let seed = args.seed.wrapping_add(1_000_003 * i as u64);
        match evaluate(scenario, args.alpha, args.runs, seed) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("detection: {}: {e}", scenario.name);
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", markdown(&rows, args.alpha, args.runs));
    ExitCode::SUCCESS
}
