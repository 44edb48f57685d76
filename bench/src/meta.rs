//! `kiseki bench meta`: the metadata service against the state machine alone and fio.
//!
//! For each topology (nodes × cores per node; the full run measures 1×1, 1×2, 3×1 and
//! 3×2) and each scope, a fresh cluster of real `kiseki-server` processes is started on
//! file-backed devices in a temporary directory (127.0.0.`n`, a free port range,
//! `shards_per_core × cores × nodes` shards, 3 replicas or as many as there are nodes).
//! This process then drives the service with many concurrent streams, one session and
//! one operation in flight each, from a few client threads ([`load`]):
//! - **create**: `files` exclusive creates;
//! - **stat**: `ops` linearizable lookups of created names;
//! - **readdir**: every directory paged through (`files` entries over all of them; one
//!   directory of `files` entries on one shard), by several listers in parallel;
//! - **rename**: `ops` renames within the directory;
//! - **unlink**: `ops` unlinks of the renamed files.
//!
//! Scopes: `1shard`, every stream on shard 1, one directory; `allshards`, streams
//! spread over every shard, one directory per shard. Figures: operations (entries) per
//! second and p50/p99 latency (per page for readdir).
//!
//! Baselines, measured in the same run: the same operation sequences applied to
//! `NamespaceState` alone in this process ([`alone`]), and fio's `filecreate` and
//! `filestat` engines on a directory of the local filesystem (as many jobs as the node
//! has cores). Derived cases: 3-node creates against 1-node creates, 2 cores against 1,
//! and creates per node against fio.
//!
//! A topology or scope that cannot be measured (its cluster does not start, or the
//! service fails under load) is reported and skipped; the others still run, and the
//! caller gets the list ([`MetaReport::failures`]). Nothing here asserts timing.

mod alone;
mod load;
mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::fio::{self, FioDirectoryRun, FioResult};
use crate::report::Case;
use load::LoadShape;
use workload::{Op, OpFigures, Workload, OPS};

const SUITE: &str = "meta";
/// fio's create baseline stops after this many seconds if it has not created its files.
const FIO_CREATE_RUNTIME_CAP_S: u32 = 300;

/// Nodes and cores per node of one measured cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topology {
    /// Storage nodes.
    pub nodes: usize,
    /// Cores per node.
    pub cores: usize,
}

impl fmt::Display for Topology {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}n{}c", self.nodes, self.cores)
    }
}

impl FromStr for Topology {
    type Err = String;

    /// Parses `NODESxCORES`, e.g. `3x2`.
    fn from_str(text: &str) -> Result<Topology, String> {
        let parse = |part: &str| part.trim().parse::<usize>().ok().filter(|value| *value > 0);
        match text.split_once('x') {
            Some((nodes, cores)) => match (parse(nodes), parse(cores)) {
                (Some(nodes), Some(cores)) if nodes <= 254 => Ok(Topology { nodes, cores }),
                _ => Err(format!(
                    "bad topology {text:?}: NODESxCORES with 1..=254 nodes, cores ≥ 1"
                )),
            },
            None => Err(format!("bad topology {text:?}: expected NODESxCORES, e.g. 3x2")),
        }
    }
}

/// Which shards the streams use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Every stream on shard 1.
    OneShard,
    /// Streams spread over every shard.
    AllShards,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::OneShard => "1shard",
            Scope::AllShards => "allshards",
        }
    }
}

const SCOPES: [Scope; 2] = [Scope::OneShard, Scope::AllShards];

/// Options of the metadata suite.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    /// The `kiseki-server` binary.
    pub server: PathBuf,
    /// Parent of the working directory (devices, fio's files); default: the system's
    /// temporary directory. Removed again at the end.
    pub directory: Option<PathBuf>,
    /// Clusters to measure.
    pub topologies: Vec<Topology>,
    /// Creates per scope: also readdir's entries (one directory of this many on 1 shard).
    pub files: u64,
    /// Stats, renames and unlinks per scope.
    pub ops: u64,
    /// Concurrent client streams.
    pub streams: usize,
    /// Client threads.
    pub client_threads: usize,
    /// Concurrent readdir listers.
    pub listers: usize,
    /// Shards per core of the cluster.
    pub shards_per_core: u64,
    /// Size of each node's device file (sparse: disk space is taken as the store writes).
    pub device_bytes: u64,
    /// Skip the fio baselines (their figures and ratios read 0).
    pub skip_fio: bool,
    /// Files fio's create baseline makes, over all jobs.
    pub fio_create_files: u64,
    /// Files fio's stat baseline stats round and round, over all jobs.
    pub fio_stat_files: u64,
    /// Seconds fio's stat baseline runs.
    pub fio_runtime_s: u32,
}

impl MetaOptions {
    /// The full run: four topologies, a million creates per scope (the one-shard readdir
    /// lists a directory of a million entries).
    pub fn full(server: PathBuf) -> MetaOptions {
        MetaOptions {
            server,
            directory: None,
            topologies: ["1x1", "1x2", "3x1", "3x2"]
                .iter()
                .filter_map(|text| text.parse().ok())
                .collect(),
            files: 1_000_000,
            ops: 100_000,
            streams: 128,
            client_threads: 2,
            listers: 8,
            shards_per_core: 4,
            device_bytes: 64 << 30,
            skip_fio: false,
            fio_create_files: 100_000,
            fio_stat_files: 20_000,
            fio_runtime_s: 10,
        }
    }

    /// A smoke run for CI: two topologies, small counts.
    pub fn quick(server: PathBuf) -> MetaOptions {
        MetaOptions {
            topologies: ["1x1", "3x1"].iter().filter_map(|text| text.parse().ok()).collect(),
            files: 2_000,
            ops: 1_000,
            streams: 32,
            client_threads: 1,
            device_bytes: 2 << 30,
            fio_create_files: 2_000,
            fio_stat_files: 1_000,
            fio_runtime_s: 1,
            ..MetaOptions::full(server)
        }
    }
}

/// fio's figures for one job count.
#[derive(Debug, Clone, Copy, Default)]
struct FioFigures {
    create: FioResult,
    stat: FioResult,
}

/// What a run measured, and what it could not.
#[derive(Debug, Clone, Default)]
pub struct MetaReport {
    /// The cases of every topology and scope that was measured, and the derived cases.
    pub cases: Vec<Case>,
    /// One line per topology and scope that could not be measured (the cluster did not
    /// start, or the service failed under load), with the reason.
    pub failures: Vec<String>,
}

/// Runs the suite. A topology or scope that cannot be measured does not stop the others:
/// it is reported on stderr as it happens and listed in [`MetaReport::failures`] (with
/// the nodes' logs kept beside the working directory when the service failed under load).
pub fn run(options: &MetaOptions) -> anyhow::Result<MetaReport> {
    if options.topologies.is_empty() || options.files == 0 || options.shards_per_core == 0 {
        bail!("the meta suite needs topologies, files and shards_per_core");
    }
    if !options.server.is_file() && options.server.components().count() > 1 {
        bail!("kiseki-server not found at {}", options.server.display());
    }
    let parent = options.directory.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kiseki-bench-meta-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a working directory in {}", parent.display()))?;

    let fio_figures = fio_baselines(options, work.path())?;
    let mut alone_cache: BTreeMap<u64, Vec<OpFigures>> = BTreeMap::new();
    let mut measured: BTreeMap<(Topology, Scope), Vec<OpFigures>> = BTreeMap::new();
    let mut report = MetaReport::default();
    for &topology in &options.topologies {
        let shard_count = options.shards_per_core * (topology.nodes * topology.cores) as u64;
        for scope in SCOPES {
            let workload = Workload {
                files: options.files,
                ops: options.ops,
                shards: match scope {
                    Scope::OneShard => vec![1],
                    Scope::AllShards => (1..=shard_count).collect(),
                },
            };
            let key = workload.shards.len() as u64;
            if let std::collections::btree_map::Entry::Vacant(entry) = alone_cache.entry(key) {
                eprintln!("meta: state machine alone, {key} shard(s)");
                entry.insert(alone::run(&workload).context("state-machine baseline")?);
            }
            let figures = match measure(options, topology, scope, &workload, work.path(), &parent) {
                Ok(figures) => figures,
                Err(failure) => {
                    let failure = format!("{topology} {}: {failure:#}", scope.name());
                    eprintln!("meta: not measured: {failure}");
                    report.failures.push(failure);
                    continue;
                }
            };
            let fio = fio_figures.get(&topology.cores).copied().unwrap_or_default();
            report
                .cases
                .extend(scope_cases(topology, scope, &figures, &alone_cache[&key], &fio));
            measured.insert((topology, scope), figures);
        }
    }
    report.cases.extend(derived_cases(&measured));
    Ok(report)
}

/// Starts a cluster for `topology` and drives `workload` through it.
fn measure(
    options: &MetaOptions,
    topology: Topology,
    scope: Scope,
    workload: &Workload,
    work: &Path,
    parent: &Path,
) -> anyhow::Result<Vec<OpFigures>> {
    let spec = ClusterSpec {
        nodes: topology.nodes,
        cores: topology.cores,
        devices: 1,
        shards: options.shards_per_core * (topology.nodes * topology.cores) as u64,
        device_bytes: options.device_bytes,
        device_prewrite_bytes: 0,
    };
    let directory = work.join(format!("{topology}-{}", scope.name()));
    eprintln!("meta: {topology} {}: starting {} node(s)", scope.name(), topology.nodes);
    let cluster = LocalCluster::start(&options.server, &directory, &spec).context("the cluster did not start")?;
    let shape = LoadShape {
        streams: options.streams,
        threads: options.client_threads,
        listers: options.listers,
    };
    load::run(cluster.seed(), workload, &shape).map_err(|error| {
        let logs = parent.join(format!(
            "kiseki-bench-meta-logs-{}-{topology}-{}",
            std::process::id(),
            scope.name()
        ));
        match cluster.preserve_logs(&logs) {
            Ok(path) => error.context(format!("node logs kept in {}", path.display())),
            Err(copy_error) => error.context(format!("node logs lost: {copy_error:#}")),
        }
    })
}

/// fio's create and stat figures for every core count of the topologies.
fn fio_baselines(options: &MetaOptions, work: &Path) -> anyhow::Result<BTreeMap<usize, FioFigures>> {
    let mut figures = BTreeMap::new();
    if options.skip_fio {
        return Ok(figures);
    }
    if !fio::fio_available() {
        eprintln!("fio is not installed: fio baselines read 0 (apt-get install fio)");
        return Ok(figures);
    }
    for topology in &options.topologies {
        if figures.contains_key(&topology.cores) {
            continue;
        }
        let jobs = topology.cores;
        eprintln!("meta: fio filecreate and filestat, {jobs} job(s)");
        let run_in = |profile: &str, name: &str, files: u64, runtime_s: u32| -> anyhow::Result<FioResult> {
            let directory = work.join(format!("fio-{name}-{jobs}"));
            std::fs::create_dir_all(&directory)?;
            let result = fio::run_in_directory(&FioDirectoryRun {
                profile: profile.to_string(),
                directory: directory.clone(),
                files_per_job: (files / jobs as u64).max(1),
                runtime_s,
                numjobs: jobs,
            });
            let _ = std::fs::remove_dir_all(&directory);
            result
        };
        let create = run_in(
            fio::META_FILECREATE,
            "create",
            options.fio_create_files,
            FIO_CREATE_RUNTIME_CAP_S,
        )?;
        let stat = run_in(
            fio::META_FILESTAT,
            "stat",
            options.fio_stat_files,
            options.fio_runtime_s.max(1),
        )?;
        figures.insert(jobs, FioFigures { create, stat });
    }
    Ok(figures)
}

/// The unit of an operation's throughput.
fn unit(op: Op) -> &'static str {
    if op == Op::Readdir {
        "entries/s"
    } else {
        "ops/s"
    }
}

/// The cases of one topology and scope.
fn scope_cases(
    topology: Topology,
    scope: Scope,
    figures: &[OpFigures],
    alone: &[OpFigures],
    fio: &FioFigures,
) -> Vec<Case> {
    let suffix = format!("{}-{topology}", scope.name());
    let mut cases = Vec::new();
    for ((op, kiseki), alone) in OPS.iter().zip(figures).zip(alone) {
        let name = op.name();
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("{name}-{suffix}"),
            kiseki.per_second(),
            unit(*op),
            "state-machine",
            alone.per_second(),
        ));
        // Latency against fio where fio does the same thing, else the state machine.
        let (baseline, p50, p99) = match op {
            Op::Create => ("fio-filecreate", fio.create.write_p50_us, fio.create.write_p99_us),
            Op::Stat => ("fio-filestat", fio.stat.read_p50_us, fio.stat.read_p99_us),
            Op::Readdir | Op::Rename | Op::Unlink => ("state-machine", alone.quantile_us(0.5), alone.quantile_us(0.99)),
        };
        let latency_name = if *op == Op::Readdir { "readdir-page" } else { name };
        for (quantile, label, baseline_value) in [(0.5, "p50", p50), (0.99, "p99", p99)] {
            cases.push(Case::lower_is_better(
                SUITE,
                &format!("{latency_name}-{label}-{suffix}"),
                kiseki.quantile_us(quantile),
                "us",
                baseline,
                baseline_value,
            ));
        }
    }
    let nodes = topology.nodes as f64;
    let per_node = [
        (Op::Create, "fio-filecreate", fio.create.write_iops),
        (Op::Stat, "fio-filestat", fio.stat.read_iops),
    ];
    for (op, baseline, baseline_value) in per_node {
        let position = OPS.iter().position(|candidate| *candidate == op).unwrap_or(0);
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("{}-per-node-{suffix}", op.name()),
            figures[position].per_second() / nodes,
            "ops/s",
            baseline,
            baseline_value,
        ));
    }
    cases
}

/// Create throughput of more nodes against fewer, and more cores against fewer.
fn derived_cases(measured: &BTreeMap<(Topology, Scope), Vec<OpFigures>>) -> Vec<Case> {
    let creates = |topology: Topology, scope: Scope| measured.get(&(topology, scope)).map(|figures| figures[0].clone());
    let topologies: Vec<Topology> = {
        let mut all: Vec<Topology> = measured.keys().map(|(topology, _)| *topology).collect();
        all.dedup();
        all
    };
    let mut cases = Vec::new();
    for scope in SCOPES {
        for &small in &topologies {
            for &large in &topologies {
                let more_nodes = small.cores == large.cores && small.nodes < large.nodes;
                let more_cores = small.nodes == large.nodes && small.cores < large.cores;
                if !more_nodes && !more_cores {
                    continue;
                }
                let (Some(small_figures), Some(large_figures)) = (creates(small, scope), creates(large, scope)) else {
                    continue;
                };
                let name = if more_nodes {
                    format!(
                        "create-{}n-vs-{}n-{}-{}c",
                        large.nodes,
                        small.nodes,
                        scope.name(),
                        small.cores
                    )
                } else {
                    format!(
                        "create-{}c-vs-{}c-{}-{}n",
                        large.cores,
                        small.cores,
                        scope.name(),
                        small.nodes
                    )
                };
                cases.push(Case::higher_is_better(
                    SUITE,
                    &name,
                    large_figures.per_second(),
                    "ops/s",
                    &format!("{small}-create"),
                    small_figures.per_second(),
                ));
            }
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_topologies() {
        assert_eq!("3x2".parse(), Ok(Topology { nodes: 3, cores: 2 }));
        assert!("3".parse::<Topology>().is_err());
        assert!("0x1".parse::<Topology>().is_err());
        assert!("1x0".parse::<Topology>().is_err());
        assert_eq!(Topology { nodes: 1, cores: 2 }.to_string(), "1n2c");
    }

    fn figures(creates_per_second: u64) -> Vec<OpFigures> {
        OPS.iter()
            .map(|_| OpFigures {
                count: creates_per_second,
                elapsed: std::time::Duration::from_secs(1),
                latency_ns: workload::latency_histogram(),
            })
            .collect()
    }

    #[test]
    fn derives_node_and_core_scaling() {
        let mut measured = BTreeMap::new();
        for (topology, rate) in [("1x1", 100), ("1x2", 170), ("3x1", 60), ("3x2", 120)] {
            let topology: Topology = topology.parse().expect("topology");
            measured.insert((topology, Scope::OneShard), figures(rate));
        }
        let cases = derived_cases(&measured);
        let find = |name: &str| cases.iter().find(|case| case.case == name).map(|case| case.ratio);
        assert_eq!(find("create-3n-vs-1n-1shard-1c"), Some(0.6));
        assert_eq!(find("create-3n-vs-1n-1shard-2c"), Some(120.0 / 170.0));
        assert_eq!(find("create-2c-vs-1c-1shard-1n"), Some(1.7));
        assert_eq!(find("create-2c-vs-1c-1shard-3n"), Some(2.0));
        assert_eq!(cases.len(), 4);
    }

    #[test]
    fn scope_cases_follow_the_contract() {
        let topology: Topology = "3x1".parse().expect("topology");
        let cases = scope_cases(
            topology,
            Scope::AllShards,
            &figures(300),
            &figures(1000),
            &FioFigures::default(),
        );
        assert_eq!(cases.len(), OPS.len() * 3 + 2);
        let create = &cases[0];
        assert_eq!(create.case, "create-allshards-3n1c");
        assert_eq!(create.baseline, "state-machine");
        assert!((create.ratio - 0.3).abs() < 1e-9);
        let per_node = cases.iter().find(|case| case.case == "create-per-node-allshards-3n1c");
        assert_eq!(per_node.map(|case| case.value), Some(100.0));
    }
}
