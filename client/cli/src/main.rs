//! `kiseki`: the operator's command.
//!
//! `kiseki up` runs a local node on file-backed devices as a child process (later: the
//! whole local cluster with gateway, control plane and key server); `kiseki bench SUITE`
//! runs a benchmark suite against its baseline and prints the figures. This binary is
//! an operator's tool, not a data client: it may link the store for `bench engine`.
#![forbid(unsafe_code)]

mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kiseki_bench::report::{print_case, Case};
use kiseki_store::units::parse_bytes;

/// Kiseki: distributed, encrypted storage for HPC and AI clusters.
#[derive(Debug, Parser)]
#[command(name = "kiseki", version, about)]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a local node on file-backed devices under a data directory until Ctrl-C.
    Up(up::UpOptions),
    /// Runs a benchmark suite; prints each case with its baseline and ratio.
    Bench {
        #[command(subcommand)]
        suite: Suite,
    },
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Fragment store vs fio on the same device (the device's contents are destroyed).
    Engine {
        /// File or block device.
        #[arg(long)]
        device: PathBuf,
        /// Highest core count to measure (1 and this); default: all available.
        #[arg(long)]
        cores: Option<usize>,
        /// Bytes each core works on per phase.
        #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
        region_size: u64,
        /// Seconds of each timed phase.
        #[arg(long, default_value_t = 10)]
        runtime: u32,
        /// Create or extend a regular file to this size first.
        #[arg(long, value_parser = parse_bytes)]
        size: Option<u64>,
        /// A short run (32 MiB regions, 2 s phases) for smoke tests.
        #[arg(long)]
        quick: bool,
        /// Skip the fio baseline.
        #[arg(long)]
        no_fio: bool,
        /// Runs the suite this many times and reports each case's median.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// One JSON object per case per line.
        #[arg(long)]
        json: bool,
    },
    /// Chunk pipeline (chunk, key, encrypt, encode, CRC) vs its stages and memcpy.
    Pipeline {
        /// Highest core count to measure; default: all available.
        #[arg(long)]
        cores: Option<usize>,
        /// A short run for smoke tests.
        #[arg(long)]
        quick: bool,
        /// Runs the suite this many times and reports each case's median.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// One JSON object per case per line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `suite` `repeat` times; each case's value and baseline are the medians of the runs.
fn median_of_runs(repeat: usize, suite: impl Fn() -> anyhow::Result<Vec<Case>>) -> anyhow::Result<Vec<Case>> {
    let runs = (0..repeat.max(1))
        .map(|_| suite())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut cases = runs[0].clone();
    for (position, case) in cases.iter_mut().enumerate() {
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|run| run.get(position))
            .map(|run| run.value)
            .collect();
        let baselines = runs
            .iter()
            .filter_map(|run| run.get(position))
            .map(|run| run.baseline_value)
            .collect();
        let ratios = runs
            .iter()
            .filter_map(|run| run.get(position))
            .map(|run| run.ratio)
            .collect();
        case.value = median(values);
        case.baseline_value = median(baselines);
        case.ratio = median(ratios);
    }
    Ok(cases)
}

fn print_all(cases: &[Case], json: bool) {
    for case in cases {
        print_case(case, json);
    }
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let available = std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1);
    match arguments.command {
        Command::Up(options) => up::run(options),
        Command::Bench { suite } => match suite {
            Suite::Engine {
                device,
                cores,
                region_size,
                runtime,
                size,
                quick,
                no_fio,
                repeat,
                json,
            } => {
                let most = cores.unwrap_or(available).max(1);
                let core_counts = if most == 1 { vec![1] } else { vec![1, most] };
                let options = kiseki_bench::engine::EngineOptions {
                    device,
                    core_counts,
                    region_bytes_per_core: if quick { 32 << 20 } else { region_size },
                    runtime_s: if quick { 2 } else { runtime },
                    create_bytes: size,
                    skip_fio: no_fio,
                };
                print_all(&median_of_runs(repeat, || kiseki_bench::engine::run(&options))?, json);
                Ok(())
            }
            Suite::Pipeline {
                cores,
                quick,
                repeat,
                json,
            } => {
                let options = kiseki_bench::pipeline::PipelineOptions {
                    cores: cores.unwrap_or(available).max(1),
                    quick,
                };
                print_all(&median_of_runs(repeat, || kiseki_bench::pipeline::run(&options))?, json);
                Ok(())
            }
        },
    }
}
