//! `kiseki bench io`: files through the native client, against fio and the pipeline.
//!
//! For each topology (nodes × cores per node; the full run measures 1×1, 1×2, 3×1 and
//! 3×2) a fresh cluster of real `kiseki-server` processes is started on file-backed
//! devices in a temporary directory, with enough devices for EC 4+2 (six on one node,
//! two per node on three). This process is the client: `kiseki-client` on a tokio
//! runtime with two worker threads, chunking, encrypting and encoding on its side and
//! writing fragments to their owner cores, exactly as `kiseki put` does.
//!
//! Measured per topology:
//! - **write-64m**: `large_files` files of `large_file_bytes` (pseudo-random, so nothing
//!   deduplicates), `streams` files at once; GB/s of file bytes over the wall time, each
//!   file acknowledged only once its extents are committed (I-L5);
//! - **read-64m**: the same files read back whole (every chunk verified and decrypted),
//!   `streams` at once; one file is then compared byte for byte (outside the timing);
//! - **create-4k**: `small_files` files of 4 KiB, 32 at once; files/s.
//!
//! Baselines, measured in the same run: fio's `engine-seqwrite-1m` (durable: a flush
//! every 8 MiB) and `engine-seqread-1m` on a file on the same filesystem as the devices,
//! as many jobs as the node has cores; the streaming write pipeline and the read
//! pipeline (4+2, BLAKE3) from `kiseki bench pipeline`, per core × the node's cores; fio's
//! `io-smallfiles-4k` (a 4 KiB file written and fsynced on close per file). Large-file
//! cases are reported against `min(fio, pipeline)`: whichever bounds the node. Derived:
//! 3 nodes against 1 node with as many cores.
//!
//! Everything runs on the same machine: the client's pipeline, every node's executors
//! and fio share its CPUs and disk. Nothing here asserts timing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use kiseki_client::{Client, ClientOptions, KeyMaterial, Namespace, NamespaceOptions};
use kiseki_pipeline::Durability;

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::fio::{self, FioDirectoryRun, FioRun};
use crate::meta::Topology;
use crate::pipeline::{self, PipelineOptions};
use crate::report::Case;

const SUITE: &str = "io";
const GB: f64 = 1e9;
/// Devices the cluster needs in all: EC 4+2 writes six fragments per chunk.
const DEVICES_TOTAL_MIN: usize = 6;
const DURABILITY: Durability = Durability::ErasureCoded { data: 4, parity: 2 };
/// Small files written at once.
const SMALL_FILE_STREAMS: usize = 32;
const SMALL_FILE_BYTES: usize = 4096;

/// Options of the io suite.
#[derive(Debug, Clone)]
pub struct IoOptions {
    /// The `kiseki-server` binary.
    pub server: PathBuf,
    /// Parent of the working directory (devices, fio's files); default: the system's
    /// temporary directory. Removed again at the end.
    pub directory: Option<PathBuf>,
    /// Clusters to measure.
    pub topologies: Vec<Topology>,
    /// Large files written and read per topology.
    pub large_files: usize,
    /// Size of each large file.
    pub large_file_bytes: usize,
    /// Large files written (read) at once.
    pub streams: usize,
    /// 4 KiB files written per topology.
    pub small_files: usize,
    /// Size of each device file (sparse: disk space is taken as the store writes).
    pub device_bytes: u64,
    /// Seconds each fio baseline runs.
    pub fio_runtime_s: u32,
    /// Skip the fio baselines (their figures read 0, large-file cases are then against
    /// the pipeline alone).
    pub skip_fio: bool,
    /// A short pipeline baseline (CI smoke).
    pub quick: bool,
}

impl IoOptions {
    /// The full run: four topologies, 16 files of 64 MiB (1 GiB) and 2,000 small files
    /// per topology.
    pub fn full(server: PathBuf) -> IoOptions {
        IoOptions {
            server,
            directory: None,
            topologies: ["1x1", "1x2", "3x1", "3x2"]
                .iter()
                .filter_map(|text| text.parse().ok())
                .collect(),
            large_files: 16,
            large_file_bytes: 64 << 20,
            streams: 2,
            small_files: 2_000,
            device_bytes: 16 << 30,
            fio_runtime_s: 5,
            skip_fio: false,
            quick: false,
        }
    }

    /// A smoke run for CI: two topologies, a few files.
    pub fn quick(server: PathBuf) -> IoOptions {
        IoOptions {
            topologies: ["1x1", "3x1"].iter().filter_map(|text| text.parse().ok()).collect(),
            large_files: 2,
            large_file_bytes: 16 << 20,
            small_files: 100,
            device_bytes: 2 << 30,
            fio_runtime_s: 1,
            quick: true,
            ..IoOptions::full(server)
        }
    }
}

/// Figures of one topology.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    write_bytes_per_s: f64,
    read_bytes_per_s: f64,
    small_files_per_s: f64,
}

/// Baselines for one core count.
#[derive(Debug, Clone, Copy, Default)]
struct Baselines {
    fio_write_bytes_per_s: f64,
    fio_read_bytes_per_s: f64,
    fio_small_files_per_s: f64,
    pipeline_write_bytes_per_s: f64,
    pipeline_read_bytes_per_s: f64,
}

/// What a run measured, and what it could not.
#[derive(Debug, Clone, Default)]
pub struct IoReport {
    /// Cases of every topology measured, and the derived cases.
    pub cases: Vec<Case>,
    /// One line per topology that could not be measured, with the reason.
    pub failures: Vec<String>,
}

/// Runs the suite. A topology that cannot be measured is reported and skipped.
pub fn run(options: &IoOptions) -> anyhow::Result<IoReport> {
    if options.topologies.is_empty() || options.large_files == 0 || options.large_file_bytes == 0 {
        bail!("the io suite needs topologies and large files");
    }
    let parent = options.directory.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kiseki-bench-io-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a working directory in {}", parent.display()))?;

    let (pipeline_write, pipeline_read) = pipeline_baselines(options.quick)?;
    let mut baselines = BTreeMap::new();
    for topology in &options.topologies {
        if baselines.contains_key(&topology.cores) {
            continue;
        }
        let mut figures = fio_baselines(options, topology.cores, work.path())?;
        figures.pipeline_write_bytes_per_s = pipeline_write * topology.cores as f64;
        figures.pipeline_read_bytes_per_s = pipeline_read * topology.cores as f64;
        baselines.insert(topology.cores, figures);
    }

    let mut report = IoReport::default();
    for (&jobs, figures) in &baselines {
        report.cases.extend(baseline_cases(jobs, figures));
    }
    let mut measured = BTreeMap::new();
    for &topology in &options.topologies {
        eprintln!("io: {topology}: starting {} node(s)", topology.nodes);
        match measure(options, topology, work.path()) {
            Ok(figures) => {
                report
                    .cases
                    .extend(topology_cases(topology, &figures, &baselines[&topology.cores]));
                measured.insert(topology, figures);
            }
            Err(failure) => {
                let failure = format!("{topology}: {failure:#}");
                eprintln!("io: not measured: {failure}");
                report.failures.push(failure);
            }
        }
    }
    report.cases.extend(derived_cases(&measured));
    Ok(report)
}

/// The streaming write and the read pipeline, 4+2 BLAKE3, bytes/s on one core.
fn pipeline_baselines(quick: bool) -> anyhow::Result<(f64, f64)> {
    eprintln!("io: pipeline baseline (4+2, BLAKE3, one core)");
    let cases = pipeline::run(&PipelineOptions { cores: 1, quick })?;
    let find = |name: &str| {
        cases
            .iter()
            .find(|case| case.case == name)
            .map(|case| case.value * GB)
            .with_context(|| format!("the pipeline suite measured no {name}"))
    };
    Ok((find("write-stream-4+2-blake3")?, find("read-4+2-blake3")?))
}

/// fio's figures with `jobs` jobs on a file beside the devices.
fn fio_baselines(options: &IoOptions, jobs: usize, work: &Path) -> anyhow::Result<Baselines> {
    let mut figures = Baselines::default();
    if options.skip_fio {
        return Ok(figures);
    }
    if !fio::fio_available() {
        eprintln!("fio is not installed: fio baselines read 0 (apt-get install fio)");
        return Ok(figures);
    }
    eprintln!("io: fio seqwrite, seqread and small files, {jobs} job(s)");
    let size_bytes = (options.large_files * options.large_file_bytes / jobs).max(1 << 20) as u64;
    let device = work.join(format!("fio-{jobs}.img"));
    fill_file(&device, size_bytes * jobs as u64)?;
    let run = |profile: &str| {
        fio::run(&FioRun {
            profile: profile.to_string(),
            device: device.clone(),
            size_bytes,
            runtime_s: options.fio_runtime_s.max(1),
            numjobs: jobs,
        })
    };
    figures.fio_write_bytes_per_s = run(fio::SEQWRITE_1M)?.write_bytes_per_s;
    figures.fio_read_bytes_per_s = run(fio::SEQREAD_1M)?.read_bytes_per_s;
    let _ = std::fs::remove_file(&device);
    let directory = work.join(format!("fio-small-{jobs}"));
    std::fs::create_dir_all(&directory)?;
    let small = fio::run_in_directory(&FioDirectoryRun {
        profile: fio::IO_SMALLFILES.to_string(),
        directory: directory.clone(),
        files_per_job: (options.small_files / jobs).max(1) as u64,
        runtime_s: options.fio_runtime_s.max(1),
        numjobs: jobs,
    })?;
    figures.fio_small_files_per_s = small.write_iops;
    let _ = std::fs::remove_dir_all(&directory);
    Ok(figures)
}

/// Writes `bytes` of non-zero data to `path`, so neither fio nor the filesystem is
/// measured allocating blocks.
fn fill_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        file.write_all(&block[..take])?;
        left -= take as u64;
    }
    file.sync_all()?;
    Ok(())
}

/// Starts a cluster for `topology` and measures it.
fn measure(options: &IoOptions, topology: Topology, work: &Path) -> anyhow::Result<Figures> {
    let spec = ClusterSpec {
        nodes: topology.nodes,
        cores: topology.cores,
        devices: DEVICES_TOTAL_MIN.div_ceil(topology.nodes),
        shards: (topology.nodes * topology.cores) as u64,
        device_bytes: options.device_bytes,
        device_prewrite_bytes: 0,
    };
    let directory = work.join(topology.to_string());
    let cluster = LocalCluster::start(&options.server, &directory, &spec).context("the cluster did not start")?;
    let keys = Arc::new(KeyMaterial::load_or_create(&directory.join("keys.json"))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the client's runtime")?;
    let seed = cluster.seed();
    let result = runtime.block_on(drive(options, seed, keys));
    if result.is_err() {
        let logs = work
            .parent()
            .unwrap_or(work)
            .join(format!("kiseki-bench-io-logs-{}-{topology}", std::process::id()));
        if let Ok(path) = cluster.preserve_logs(&logs) {
            eprintln!("io: node logs kept in {}", path.display());
        }
    }
    result
}

/// A file's pseudo-random contents (xorshift; distinct per `seed`, so nothing dedups).
fn contents(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(bytes + 8);
    while data.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(bytes);
    data
}

async fn drive(options: &IoOptions, seed: SocketAddr, keys: Arc<KeyMaterial>) -> anyhow::Result<Figures> {
    let client = Client::connect(seed, ClientOptions::default()).await?;
    let namespace = Namespace::new(client, 1, keys, NamespaceOptions::with_durability(DURABILITY))?;
    namespace.mkdir_all("/large", 0o755).await?;
    namespace.mkdir_all("/small", 0o755).await?;
    let files: Vec<Arc<Vec<u8>>> = (0..options.large_files)
        .map(|index| Arc::new(contents(options.large_file_bytes, rand::random::<u64>() ^ index as u64)))
        .collect();
    let total_bytes = (options.large_files * options.large_file_bytes) as f64;

    let started = Instant::now();
    for_each_concurrently(options.large_files, options.streams, |index| {
        let namespace = namespace.clone();
        let data = Arc::clone(&files[index]);
        async move {
            namespace
                .write_file(&format!("/large/{index}"), data.as_slice(), 0o644)
                .await
                .map(|_| ())
                .with_context(|| format!("writing /large/{index}"))
        }
    })
    .await?;
    let write_bytes_per_s = total_bytes / started.elapsed().as_secs_f64();

    let started = Instant::now();
    for_each_concurrently(options.large_files, options.streams, |index| {
        let namespace = namespace.clone();
        let expected = files[index].len() as u64;
        async move {
            let summary = namespace
                .read_file(&format!("/large/{index}"), &mut tokio::io::sink())
                .await
                .with_context(|| format!("reading /large/{index}"))?;
            if summary.bytes != expected {
                bail!("/large/{index} read {} bytes, wrote {expected}", summary.bytes);
            }
            Ok(())
        }
    })
    .await?;
    let read_bytes_per_s = total_bytes / started.elapsed().as_secs_f64();
    let mut check = Vec::with_capacity(files[0].len());
    namespace.read_file("/large/0", &mut check).await?;
    if check != *files[0] {
        bail!("/large/0 read back different bytes");
    }

    let small = Arc::new(contents(SMALL_FILE_BYTES, 7));
    let started = Instant::now();
    for_each_concurrently(options.small_files, SMALL_FILE_STREAMS, |index| {
        let namespace = namespace.clone();
        let small = Arc::clone(&small);
        async move {
            namespace
                .write_file(&format!("/small/{index}"), small.as_slice(), 0o644)
                .await
                .map(|_| ())
                .with_context(|| format!("writing /small/{index}"))
        }
    })
    .await?;
    let small_files_per_s = options.small_files as f64 / started.elapsed().as_secs_f64();
    Ok(Figures {
        write_bytes_per_s,
        read_bytes_per_s,
        small_files_per_s,
    })
}

/// Runs `task(0..count)` with at most `width` at once, on the runtime's threads.
async fn for_each_concurrently<F, T>(count: usize, width: usize, mut task: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> T,
    T: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for index in 0..count {
        if running.len() >= width.max(1) {
            if let Some(done) = running.join_next().await {
                done.context("a benchmark task panicked")??;
            }
        }
        running.spawn(task(index));
    }
    while let Some(done) = running.join_next().await {
        done.context("a benchmark task panicked")??;
    }
    Ok(())
}

fn topology_cases(topology: Topology, figures: &Figures, baselines: &Baselines) -> Vec<Case> {
    let bound = |fio: f64, pipeline: f64| if fio > 0.0 { fio.min(pipeline) } else { pipeline };
    let write_bound = bound(baselines.fio_write_bytes_per_s, baselines.pipeline_write_bytes_per_s);
    let read_bound = bound(baselines.fio_read_bytes_per_s, baselines.pipeline_read_bytes_per_s);
    vec![
        Case::higher_is_better(
            SUITE,
            &format!("write-64m-{topology}"),
            figures.write_bytes_per_s / GB,
            "GB/s",
            "min(fio-seqwrite,pipeline-write)",
            write_bound / GB,
        ),
        Case::higher_is_better(
            SUITE,
            &format!("read-64m-{topology}"),
            figures.read_bytes_per_s / GB,
            "GB/s",
            "min(fio-seqread,pipeline-read)",
            read_bound / GB,
        ),
        Case::higher_is_better(
            SUITE,
            &format!("create-4k-{topology}"),
            figures.small_files_per_s,
            "files/s",
            "fio-smallfiles-4k",
            baselines.fio_small_files_per_s,
        ),
    ]
}

/// fio against the pipeline, for reading which of the two bounds a node.
fn baseline_cases(jobs: usize, baselines: &Baselines) -> Vec<Case> {
    vec![
        Case::higher_is_better(
            SUITE,
            &format!("fio-seqwrite-{jobs}job"),
            baselines.fio_write_bytes_per_s / GB,
            "GB/s",
            &format!("pipeline-write-{jobs}core"),
            baselines.pipeline_write_bytes_per_s / GB,
        ),
        Case::higher_is_better(
            SUITE,
            &format!("fio-seqread-{jobs}job"),
            baselines.fio_read_bytes_per_s / GB,
            "GB/s",
            &format!("pipeline-read-{jobs}core"),
            baselines.pipeline_read_bytes_per_s / GB,
        ),
    ]
}

/// 3 nodes against 1 node with as many cores, for each large-file direction.
fn derived_cases(measured: &BTreeMap<Topology, Figures>) -> Vec<Case> {
    let mut cases = Vec::new();
    for (&large, large_figures) in measured {
        for (&small, small_figures) in measured {
            if small.cores != large.cores || small.nodes >= large.nodes {
                continue;
            }
            for (name, value, baseline) in [
                (
                    "write",
                    large_figures.write_bytes_per_s,
                    small_figures.write_bytes_per_s,
                ),
                ("read", large_figures.read_bytes_per_s, small_figures.read_bytes_per_s),
            ] {
                cases.push(Case::higher_is_better(
                    SUITE,
                    &format!("{name}-64m-{large}-vs-{small}"),
                    value / GB,
                    "GB/s",
                    &format!("{name}-64m-{small}"),
                    baseline / GB,
                ));
            }
        }
    }
    cases
}
