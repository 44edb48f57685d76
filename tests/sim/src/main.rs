//! `kiseki-sim`: runs the deterministic cluster simulation for one seed or a range of
//! seeds and prints, for a failing seed, the trace needed to replay it.

use anyhow::{bail, Context};
use clap::Parser;
use kiseki_sim::{run, Options};

/// Deterministic simulation of a cluster of shard replicas.
#[derive(Parser, Debug)]
#[command(name = "kiseki-sim", version)]
struct Args {
    /// Run this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run every seed of a range `A..B` (B excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// Nodes (one replica of every shard on each): 3 or 5.
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Shards.
    #[arg(long, default_value_t = 2)]
    shards: u64,
    /// Clients.
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Safety phase (faults on), in ticks of 1 ms simulated.
    #[arg(long, default_value_t = 1_500)]
    safety_ticks: u64,
    /// Print the full default configuration and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = Options {
        replicas: args.replicas,
        shards: args.shards,
        clients: args.clients,
        safety_ticks: args.safety_ticks,
        ..Options::default()
    };
    if args.print_config {
        println!("{options:#?}");
        return Ok(());
    }
    let seeds = match (args.seed, args.seeds.as_deref()) {
        (Some(seed), _) => seed..seed + 1,
        (None, Some(range)) => {
            let (start, end) = range.split_once("..").context("--seeds takes A..B")?;
            start.parse::<u64>().context("seed range start")?..end.parse::<u64>().context("seed range end")?
        }
        (None, None) => bail!("give --seed N or --seeds A..B"),
    };
    let mut failed = 0u64;
    let mut passed = 0u64;
    for seed in seeds {
        match run(seed, &options) {
            Ok(report) => {
                passed += 1;
                println!(
                    "seed {seed}: ok  trace {:016x}  events {}  ops ok/unknown/failed {}/{}/{}  crashes {}  \
                     partitions {}  snapshots installed {}  applied {:?}",
                    report.trace_hash,
                    report.events,
                    report.ops_ok,
                    report.ops_unknown,
                    report.ops_failed,
                    report.crashes,
                    report.partitions,
                    report.snapshots_installed,
                    report.applied_indexes
                );
            }
            Err(failure) => {
                failed += 1;
                println!("seed {seed}: FAILED: {failure}");
                // Replays bit for bit: run again with the trace on to show how it got there.
                let traced = run(
                    seed,
                    &Options {
                        trace: true,
                        ..options.clone()
                    },
                );
                if let Err(traced) = traced {
                    for line in traced.trace() {
                        println!("    {line}");
                    }
                }
                println!(
                    "replay: kiseki-sim --seed {seed} --replicas {} --shards {} --clients {} --safety-ticks {}",
                    options.replicas, options.shards, options.clients, options.safety_ticks
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} seeds failed");
    }
    Ok(())
}
