//! `kiseki`: the operator's command.
//!
//! `kiseki up` runs a local cluster on file-backed devices as child processes (nodes, key
//! server, control plane, S3 gateway); the admin commands talk to the control plane and
//! the key server; `kiseki bench SUITE`
//! runs a benchmark suite against its baseline and prints the figures. This binary is
//! an operator's tool, not a data client: it may link the store for `bench engine`.
#![forbid(unsafe_code)]

mod admin;
mod cache;
mod certs;
mod data;
mod meta;
mod status;
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
    /// Runs a local cluster (nodes on file-backed devices, key server, control plane, S3
    /// gateway) under a data directory until Ctrl-C.
    Up(up::UpOptions),
    /// A development CA and certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// The metadata service: replica status, creates and lookups on a shard.
    Meta {
        #[command(subcommand)]
        command: meta::MetaCommand,
    },
    /// Nodes, shards and leaders, devices with used and free bytes, degraded chunks.
    Status(status::StatusOptions),
    /// Rebuilds missing and corrupt fragments from the surviving ones (`--scrub`: verify all).
    Repair(status::RepairOptions),
    /// Deletes the fragments no file references (left by crashed writers, removed files).
    Gc(status::GcOptions),
    /// The nodes of the cluster (`list`; drain and remove need membership changes).
    Node {
        #[command(subcommand)]
        command: status::NodeCommand,
    },
    /// The shards of the cluster and their leaders (`list`).
    Shard {
        #[command(subcommand)]
        command: status::ShardCommand,
    },
    /// Tenants: create, list, delete, shred (crypto-shred), through the control plane.
    Tenant {
        #[command(subcommand)]
        command: admin::TenantCommand,
    },
    /// Namespaces of tenants: create (durability, chunk size, dedup, quota), list with
    /// usage, delete, quota.
    Namespace {
        #[command(subcommand)]
        command: admin::NamespaceCommand,
    },
    /// S3 access keys of tenants: create, list, delete.
    Key {
        #[command(subcommand)]
        command: admin::KeyCommand,
    },
    /// Maintenance: `on` makes the whole cluster read-only, `off` ends it, `status`.
    Maintenance {
        #[command(subcommand)]
        command: admin::MaintenanceCommand,
    },
    /// The key server: `status` (system key epochs), `rotate` (a new epoch).
    Keyserver {
        #[command(subcommand)]
        command: admin::KeyServerCommand,
    },
    /// Fetches a dataset (a tree inside a FUSE mount) into the mount's cache and pins it;
    /// `--status` lists staged datasets, `--release DATASET` unpins one.
    Stage(cache::StageOptions),
    /// The cache counters of every FUSE mount on this machine (`--stats`).
    Cache(cache::CacheOptions),
    /// Files of a namespace: put, get, ls, stat, mkdir, rm, mv (encrypted in this process).
    #[command(flatten)]
    Data(data::DataCommand),
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
    /// Metadata service (real kiseki-server clusters on this machine) vs the state machine
    /// alone and fio's filecreate/filestat.
    Meta(MetaArguments),
    /// Files through the native client (real kiseki-server clusters on this machine) vs
    /// fio on the same filesystem and the chunk pipeline.
    Io(IoArguments),
    /// fio jobs through a FUSE mount of a one-node cluster vs bindfs and a local directory.
    Fuse {
        /// Parent of the working directory (devices, mount points, the local baseline);
        /// default: the system's temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Cores of the node.
        #[arg(long, default_value_t = 1)]
        cores: usize,
        /// Bytes each sequential fio job writes and reads; default 512MiB (quick 32MiB).
        #[arg(long, value_parser = parse_bytes)]
        file_size: Option<u64>,
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
    /// S3 through kiseki-gateway (a one-node cluster, EC 4+2) vs s3s-fs on the same disk:
    /// 64 MiB and 4 KiB PUT and GET at several concurrencies, with p50/p99 latencies.
    S3 {
        /// Parent of the working directory; default: the system's temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The baseline server (default: /var/tmp/s3s-fs/bin/s3s-fs, as scripts/setup.sh
        /// installs it, else `s3s-fs` on PATH).
        #[arg(long, env = "KISEKI_S3S_FS")]
        s3s_fs: Option<PathBuf>,
        /// A short run for smoke tests (concurrency 1 and 4, 8 MiB objects).
        #[arg(long)]
        quick: bool,
        /// Runs the suite this many times and reports each case's median.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// One JSON object per case per line.
        #[arg(long)]
        json: bool,
    },
    /// NFS through kiseki-gateway (`kiseki up`: one node, EC 4+2) vs nfs-ganesha on the same
    /// disk, both through libnfs clients: 1 MiB sequential write and read, 4 KiB file
    /// create, stat and remove.
    Nfs {
        /// Parent of the working directory; default: the system's temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A short run for smoke tests (a 32 MiB file, 2×100 small files).
        #[arg(long)]
        quick: bool,
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

/// Options of `kiseki bench meta`.
#[derive(Debug, clap::Args)]
struct MetaArguments {
    /// Parent of the working directory (device files, fio's files); default: the system's
    /// temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Topologies as NODESxCORES, comma separated; default: 1x1,1x2,3x1,3x2 (quick: 1x1,3x1).
    #[arg(long, value_delimiter = ',')]
    topologies: Vec<kiseki_bench::meta::Topology>,
    /// Creates per scope (also the one-shard readdir directory's size); default 1M (quick 2000).
    #[arg(long)]
    files: Option<u64>,
    /// Stats, renames and unlinks per scope; default 100k (quick 1000).
    #[arg(long)]
    ops: Option<u64>,
    /// Concurrent client streams (one session each); default 128 (quick 32).
    #[arg(long)]
    streams: Option<usize>,
    /// Client threads (executors); default 2 (quick 1).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Size of each node's device file (sparse); default 64GiB (quick 2GiB).
    #[arg(long, value_parser = parse_bytes)]
    device_size: Option<u64>,
    /// A short run (two topologies, small counts) for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Skip the fio baselines.
    #[arg(long)]
    no_fio: bool,
    /// Runs the suite this many times and reports each case's median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// One JSON object per case per line.
    #[arg(long)]
    json: bool,
}

impl MetaArguments {
    fn options(&self) -> kiseki_bench::meta::MetaOptions {
        let server = up::server_binary();
        let mut options = if self.quick {
            kiseki_bench::meta::MetaOptions::quick(server)
        } else {
            kiseki_bench::meta::MetaOptions::full(server)
        };
        options.directory.clone_from(&self.dir);
        if !self.topologies.is_empty() {
            options.topologies.clone_from(&self.topologies);
        }
        options.files = self.files.unwrap_or(options.files);
        options.ops = self.ops.unwrap_or(options.ops);
        options.streams = self.streams.unwrap_or(options.streams);
        options.client_threads = self.client_threads.unwrap_or(options.client_threads);
        options.device_bytes = self.device_size.unwrap_or(options.device_bytes);
        options.skip_fio = self.no_fio;
        options
    }
}

/// Options of `kiseki bench io`.
#[derive(Debug, clap::Args)]
struct IoArguments {
    /// Parent of the working directory (device files, fio's files); default: the system's
    /// temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Topologies as NODESxCORES, comma separated; default: 1x1,1x2,3x1,3x2 (quick: 1x1,3x1).
    #[arg(long, value_delimiter = ',')]
    topologies: Vec<kiseki_bench::meta::Topology>,
    /// Large files per topology; default 16 (quick 2).
    #[arg(long)]
    large_files: Option<usize>,
    /// Size of each large file; default 64MiB (quick 16MiB).
    #[arg(long, value_parser = parse_bytes)]
    large_file_size: Option<u64>,
    /// Large files written or read at once; default 2.
    #[arg(long)]
    streams: Option<usize>,
    /// 4 KiB files per topology; default 2000 (quick 100).
    #[arg(long)]
    small_files: Option<usize>,
    /// Size of each device file (sparse); default 16GiB (quick 2GiB).
    #[arg(long, value_parser = parse_bytes)]
    device_size: Option<u64>,
    /// A short run (two topologies, a few files) for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Skip the fio baselines.
    #[arg(long)]
    no_fio: bool,
    /// Runs the suite this many times and reports each case's median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// One JSON object per case per line.
    #[arg(long)]
    json: bool,
}

impl IoArguments {
    fn options(&self) -> anyhow::Result<kiseki_bench::io::IoOptions> {
        let server = up::server_binary();
        let mut options = if self.quick {
            kiseki_bench::io::IoOptions::quick(server)
        } else {
            kiseki_bench::io::IoOptions::full(server)
        };
        options.directory.clone_from(&self.dir);
        if !self.topologies.is_empty() {
            options.topologies.clone_from(&self.topologies);
        }
        options.large_files = self.large_files.unwrap_or(options.large_files);
        if let Some(bytes) = self.large_file_size {
            options.large_file_bytes = usize::try_from(bytes)?;
        }
        options.streams = self.streams.unwrap_or(options.streams);
        options.small_files = self.small_files.unwrap_or(options.small_files);
        options.device_bytes = self.device_size.unwrap_or(options.device_bytes);
        options.skip_fio = self.no_fio;
        Ok(options)
    }
}

/// Runs `suite` `repeat` times; each case's value and baseline are the medians of the runs
/// (cases are matched by name: a run may leave some out, e.g. a topology that did not start).
/// Runs a suite `repeat` times, prints each case's median, and fails after printing if
/// some figure could not be measured.
fn report_runs(
    repeat: usize,
    json: bool,
    suite: impl Fn() -> anyhow::Result<(Vec<Case>, Vec<String>)>,
) -> anyhow::Result<()> {
    let failures = std::cell::RefCell::new(Vec::new());
    let cases = median_of_runs(repeat, || {
        let (cases, failed) = suite()?;
        failures.borrow_mut().extend(failed);
        Ok(cases)
    })?;
    print_all(&cases, json);
    let failures = failures.into_inner();
    if !failures.is_empty() {
        anyhow::bail!("not measured:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

fn median_of_runs(repeat: usize, suite: impl Fn() -> anyhow::Result<Vec<Case>>) -> anyhow::Result<Vec<Case>> {
    let runs = (0..repeat.max(1))
        .map(|_| suite())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut cases = runs[0].clone();
    for case in &mut cases {
        let same: Vec<&Case> = runs
            .iter()
            .filter_map(|run| {
                run.iter()
                    .find(|other| other.suite == case.suite && other.case == case.case)
            })
            .collect();
        case.value = median(same.iter().map(|run| run.value).collect());
        case.baseline_value = median(same.iter().map(|run| run.baseline_value).collect());
        case.ratio = median(same.iter().map(|run| run.ratio).collect());
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
        Command::Meta { command } => meta::run(command),
        Command::Certs { command } => certs::run(command),
        Command::Data(command) => data::run(command),
        Command::Tenant { command } => admin::run_tenant(command),
        Command::Namespace { command } => admin::run_namespace(command),
        Command::Key { command } => admin::run_key(command),
        Command::Maintenance { command } => admin::run_maintenance(command),
        Command::Keyserver { command } => admin::run_keyserver(command),
        Command::Stage(options) => cache::run_stage(options),
        Command::Cache(options) => cache::run_cache(options),
        Command::Status(options) => status::run(options),
        Command::Repair(options) => status::run_repair(options),
        Command::Gc(options) => status::run_gc(options),
        Command::Node { command } => status::run_node(command),
        Command::Shard { command } => status::run_shard(command),
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
            Suite::Meta(arguments) => {
                let options = arguments.options();
                report_runs(arguments.repeat, arguments.json, || {
                    kiseki_bench::meta::run(&options).map(|report| (report.cases, report.failures))
                })
            }
            Suite::Io(arguments) => {
                let options = arguments.options()?;
                report_runs(arguments.repeat, arguments.json, || {
                    kiseki_bench::io::run(&options).map(|report| (report.cases, report.failures))
                })
            }
            Suite::Fuse {
                dir,
                cores,
                file_size,
                quick,
                repeat,
                json,
            } => {
                let (server, mount) = (up::server_binary(), up::binary_beside("kiseki-client-fuse"));
                let mut options = if quick {
                    kiseki_bench::fuse::FuseOptions::quick(server, mount)
                } else {
                    kiseki_bench::fuse::FuseOptions::full(server, mount)
                };
                options.directory = dir;
                options.cores = cores.max(1);
                if let Some(bytes) = file_size {
                    options.file_bytes = bytes;
                }
                report_runs(repeat, json, || {
                    kiseki_bench::fuse::run(&options).map(|report| (report.cases, report.failures))
                })
            }
            Suite::S3 {
                dir,
                s3s_fs,
                quick,
                repeat,
                json,
            } => bench_s3(dir, s3s_fs, quick, repeat, json),
            Suite::Nfs {
                dir,
                quick,
                repeat,
                json,
            } => {
                let kiseki = std::env::current_exe()?;
                let mut options = match quick {
                    true => kiseki_bench::nfs::NfsOptions::quick(kiseki),
                    false => kiseki_bench::nfs::NfsOptions::full(kiseki),
                };
                options.directory = dir;
                report_runs(repeat, json, || {
                    kiseki_bench::nfs::run(&options).map(|report| (report.cases, report.failures))
                })
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

/// `kiseki bench s3`.
fn bench_s3(
    dir: Option<PathBuf>,
    s3s_fs: Option<PathBuf>,
    quick: bool,
    repeat: usize,
    json: bool,
) -> anyhow::Result<()> {
    let installed = PathBuf::from("/var/tmp/s3s-fs/bin/s3s-fs");
    let s3s_fs = s3s_fs.unwrap_or_else(|| match installed.is_file() {
        true => installed,
        false => PathBuf::from("s3s-fs"),
    });
    let (server, gateway) = (up::server_binary(), up::binary_beside("kiseki-gateway"));
    let mut options = match quick {
        true => kiseki_bench::s3::S3Options::quick(server, gateway, s3s_fs),
        false => kiseki_bench::s3::S3Options::full(server, gateway, s3s_fs),
    };
    options.directory = dir;
    report_runs(repeat, json, || {
        kiseki_bench::s3::run(&options).map(|report| (report.cases, report.failures))
    })
}
