//! Decision-quality simulation of the winner policy for every metric kind: false-winner rate
//! under A/A, how often a real difference is found (with and without the peeking guard), the
//! smallest revenue lift found, and what guardrail metrics block.
//!
//! ```text
//! cargo run --release -p verdict-simulation --bin decision_quality -- --experiments 1000 --seed 1
//! cargo run --release -p verdict-simulation --bin decision_quality -- --write BENCHMARKS.md
//! ```
//!
//! Prints markdown tables, one per metric kind (see `verdict_simulation` for the set-up),
//! and the targets with met / missed. `--write FILE` replaces the section between
//! `<!-- decision-quality:begin -->` and `<!-- decision-quality:end -->` in FILE (appending one
//! when absent) with the tables and the targets; `--check` exits with status 1 when a target
//! is missed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use verdict_simulation::{self as simulate, Config};

#[derive(Debug, Parser)]
#[command(about = "Measure false-winner rate and power of the winner policy by simulation")]
struct Args {
    /// Simulated experiments per scenario.
    #[arg(long = "experiments", default_value_t = 1000)]
    runs: u32,
    /// Seed of the ChaCha8 generator (same seed, same table).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Subjects per arm between two looks.
    #[arg(long, default_value_t = 500)]
    subjects_per_look: u64,
    /// Number of looks.
    #[arg(long, default_value_t = 40)]
    looks: u32,
    /// Threads simulating runs (the results do not depend on it; default: up to 2).
    #[arg(long)]
    threads: Option<usize>,
    /// Replace the marked decision-quality section of this file with the table.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let defaults = Config::new(args.runs, args.seed);
    let config = Config {
        subjects_per_look: args.subjects_per_look,
        looks: args.looks,
        threads: args.threads.unwrap_or(defaults.threads),
        ..defaults
    };
    let started = Instant::now();
    let tallies = simulate::run(&config, &simulate::standard_studies())?;
    let elapsed = started.elapsed();
    let mut table = simulate::markdown_table(&config, &tallies);

    let checks = simulate::check_targets(&tallies);
    let mut all_met = true;
    table.push_str("\nTargets:\n\n");
    for c in &checks {
        all_met &= c.met;
        let mark = if c.met { "met" } else { "MISSED" };
        table.push_str(&format!(
            "- {}: {:.1}% — {mark}\n",
            c.description,
            100.0 * c.value
        ));
    }
    println!("{table}");
    println!("(simulated in {:.1} s)", elapsed.as_secs_f64());

    if let Some(path) = args.write {
        let existing = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let updated = simulate::replace_section(&existing, &table);
        std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote the decision-quality section of {}", path.display());
    }
    Ok(if args.check && !all_met {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
