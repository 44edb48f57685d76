//! `kiseki-server`: a Kiseki storage node.
//!
//! Runs one pinned executor per core; core `i` owns allocation group `i` of every device
//! (I-T1). The main thread only parses the command line, waits for a signal and stops the
//! cores; the admin thread serves metrics and health on the metrics port by asking each
//! core for a snapshot over a bounded channel. Data-path RPC listeners (one per core,
//! 9100 + core) arrive with the net layer.
#![forbid(unsafe_code)]

use kiseki_server::{node, torture};

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiseki_store::units::parse_bytes;
use kiseki_store::{format_device, FormatOptions};

/// Kiseki storage node.
#[derive(Debug, Parser)]
#[command(name = "kiseki-server", version, about)]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Formats a device (file or block device) for a node with N cores.
    Format {
        /// The device or file.
        #[arg(long)]
        device: PathBuf,
        /// Cores of the node that will run it (one allocation group each); default: all.
        #[arg(long)]
        cores: Option<u32>,
        /// Segment size, e.g. 64MiB.
        #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
        segment_size: u64,
        /// Create or extend a regular file to this size first, e.g. 4GiB.
        #[arg(long, value_parser = parse_bytes)]
        size: Option<u64>,
        /// Erase whatever the device holds (Kiseki or foreign data).
        #[arg(long)]
        force_format: bool,
    },
    /// Writes a cluster map: nodes, their ports and cores, shard count and replicas.
    Init(node::InitOptions),
    /// Runs the node on formatted devices until SIGTERM or SIGINT.
    Run(node::RunOptions),
    /// Prints the node's default configuration.
    PrintConfig,
    /// Test tool: writes and deletes fragments forever, logging acknowledged ones.
    #[command(hide = true)]
    TortureWriter(torture::TortureOptions),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let arguments = Arguments::parse();
    match arguments.command {
        Command::Format {
            device,
            cores,
            segment_size,
            size,
            force_format,
        } => {
            let cores = cores.unwrap_or(kiseki_runtime::available_cpus().len() as u32);
            let superblock = format_device(
                &device,
                &FormatOptions {
                    cores,
                    segment_bytes: segment_size,
                    force: force_format,
                    create_bytes: size,
                },
            )
            .with_context(|| format!("formatting {}", device.display()))?;
            println!(
                "formatted {}: device {} with {} allocation groups of {} segments of {} bytes",
                device.display(),
                superblock.uuid_hex(),
                superblock.ag_count,
                superblock.segments_per_ag,
                superblock.segment_bytes
            );
            Ok(())
        }
        Command::Init(options) => node::init(options),
        Command::Run(options) => node::run(options),
        Command::PrintConfig => {
            node::print_config();
            Ok(())
        }
        Command::TortureWriter(options) => torture::run(options),
    }
}
