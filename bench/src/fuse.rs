//! `kiseki bench fuse`: fio job files from `fio-profiles/` through a Kiseki FUSE mount,
//! against the same jobs through bindfs and on a local directory.
//!
//! One cluster of one node (`cores` cores, six file-backed devices for EC 4+2) is started
//! in a temporary directory; `kiseki-client-fuse` mounts its namespace 1 there. A local
//! directory on the same filesystem is the raw baseline, and bindfs (a passthrough FUSE
//! filesystem, from Debian) mounts it a second time to separate FUSE's own cost. Each
//! of the three targets runs, in order:
//!
//! - `fuse-seqwrite-1m` with 1 and 4 jobs (one file each, fsynced at the end): GB/s;
//! - `fuse-seqread-1m` of those files, after dropping the page cache: GB/s;
//! - `fuse-randread-4k` over the first `randread_bytes` of the 1-job file: once after
//!   dropping the page cache (cold), once right after (cached: the working set now sits
//!   in the page cache, which Kiseki keeps across opens of an unchanged file): IOPS;
//! - `meta-filecreate`, `meta-filestat` and `meta-filedelete`: ops/s.
//!
//! Kiseki then mounts again with `-o passthrough` (a cache pool of its own): a 1-job file
//! is written and read twice (filling the L2 cache, which admits on a second miss), after which fio's opens get a
//! passthrough copy; `randread-4k-passthrough` (page cache warm, as bindfs's cached run)
//! and `seqread-1m-passthrough` (after dropping the page cache) compare with bindfs's
//! cached random and cold sequential reads.
//!
//! Cases compare Kiseki with bindfs (the targets of issue 6), and bindfs with the local
//! directory (what FUSE alone costs here). Dropping the page cache needs root; without it
//! the read figures are reported as warm. Nothing here asserts timing.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kiseki_client::KeyMaterial;

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::fio::{self, FioResult};
use crate::report::Case;

const SUITE: &str = "fuse";
const RANDREAD_4K: &str = "fuse-randread-4k.fio";
const GB: f64 = 1e9;
/// L1 of the passthrough phase's mount.
const PASSTHROUGH_L1_BYTES: u64 = 4 << 20;

/// Options of the fuse suite.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// The `kiseki-server` binary.
    pub server: PathBuf,
    /// The `kiseki-client-fuse` binary.
    pub mount: PathBuf,
    /// Parent of the working directory; default: the system's temporary directory.
    pub directory: Option<PathBuf>,
    /// Cores of the node.
    pub cores: usize,
    /// Bytes each sequential job writes (and reads).
    pub file_bytes: u64,
    /// Bytes at the start of the 1-job file the random reads cover (the working set the
    /// cold run brings into the caches and the cached run reads again).
    pub randread_bytes: u64,
    /// Files each metadata job creates, stats and deletes.
    pub meta_files: u64,
    /// Seconds of each time-based job (random reads, stats).
    pub runtime_s: u32,
    /// Size of each device file (sparse).
    pub device_bytes: u64,
    /// Bytes at the start of each device file written before the run, as a raw device's
    /// blocks already are (see `ClusterSpec::device_prewrite_bytes`).
    pub device_prewrite_bytes: u64,
}

impl FuseOptions {
    /// The full run: 512 MiB per sequential job, 5,000 files, 10 s timed jobs.
    pub fn full(server: PathBuf, mount: PathBuf) -> FuseOptions {
        FuseOptions {
            server,
            mount,
            directory: None,
            cores: 1,
            file_bytes: 512 << 20,
            randread_bytes: 64 << 20,
            meta_files: 5_000,
            runtime_s: 10,
            // Six of them hold 1.5 × the 2.5 GiB the jobs write, with room to spare.
            device_bytes: 4 << 30,
            // The 5 sequential files and the passthrough file, 1.5× as fragments over
            // six devices: 768 MiB each, plus the shard log.
            device_prewrite_bytes: 896 << 20,
        }
    }

    /// A smoke run for CI.
    pub fn quick(server: PathBuf, mount: PathBuf) -> FuseOptions {
        FuseOptions {
            file_bytes: 32 << 20,
            randread_bytes: 16 << 20,
            meta_files: 200,
            runtime_s: 1,
            device_bytes: 2 << 30,
            device_prewrite_bytes: 64 << 20,
            ..FuseOptions::full(server, mount)
        }
    }
}

/// What the suite measured, and what it could not.
#[derive(Debug, Clone, Default)]
pub struct FuseReport {
    /// Every case measured.
    pub cases: Vec<Case>,
    /// What could not be measured, with the reason.
    pub failures: Vec<String>,
}

/// Figures of one target.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    write_1: f64,
    write_4: f64,
    read_1: f64,
    read_4: f64,
    randread_cold: f64,
    randread_cached: f64,
    /// Through passthrough copies (Kiseki only).
    randread_passthrough: f64,
    seqread_passthrough: f64,
    creates: f64,
    stats: f64,
    deletes: f64,
}

/// A case: its name, its unit and how to read it from a target's figures.
type Row = (&'static str, &'static str, fn(&Figures) -> f64);

/// A mounted FUSE filesystem, unmounted on drop.
struct Mounted {
    child: Child,
    point: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("fusermount3").arg("-uz").arg(&self.point).status();
    }
}

/// Runs the suite.
pub fn run(options: &FuseOptions) -> anyhow::Result<FuseReport> {
    if !fio::fio_available() {
        bail!("the fuse suite runs fio jobs: install fio (apt-get install fio)");
    }
    let parent = options.directory.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kiseki-bench-fuse-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a working directory in {}", parent.display()))?;
    let mut report = FuseReport::default();

    let local = work.path().join("local");
    std::fs::create_dir_all(&local)?;
    eprintln!("fuse: local directory");
    let local_figures = measure(options, &local)?;

    let bindfs_figures = match bindfs(&local, &work.path().join("bindfs")) {
        Ok(mounted) => {
            eprintln!("fuse: bindfs");
            let figures = measure(options, &mounted.point);
            drop(mounted);
            Some(figures?)
        }
        Err(error) => {
            report.failures.push(format!("bindfs baseline: {error:#}"));
            None
        }
    };

    let spec = ClusterSpec {
        nodes: 1,
        cores: options.cores,
        devices: 6,
        shards: options.cores as u64,
        device_bytes: options.device_bytes,
        device_prewrite_bytes: options.device_prewrite_bytes,
    };
    let cluster_dir = work.path().join("cluster");
    let cluster = LocalCluster::start(&options.server, &cluster_dir, &spec).context("the cluster did not start")?;
    let keys = cluster_dir.join("keys.json");
    KeyMaterial::load_or_create(&keys)?;
    let mounted = mount_kiseki(options, &cluster, &keys, &work.path().join("kiseki"), &[])?;
    eprintln!("fuse: kiseki");
    let mut kiseki_figures = measure(options, &mounted.point);
    drop(mounted);
    if let Ok(figures) = &mut kiseki_figures {
        eprintln!("fuse: kiseki with passthrough");
        let cache_dir = work.path().join("kiseki-cache");
        // A small L1, so that the file's chunks are in L2 after two reads (but the last
        // few, still in L1).
        let option = format!(
            "passthrough,cache_l1_max={PASSTHROUGH_L1_BYTES},cache_dir={}",
            cache_dir.display()
        );
        let passthrough = mount_kiseki(options, &cluster, &keys, &work.path().join("kiseki"), &[&option])
            .and_then(|mounted| measure_passthrough(options, &mounted.point, &cache_dir, figures));
        if let Err(error) = passthrough {
            report.failures.push(format!("passthrough: {error:#}"));
        }
    }
    if kiseki_figures.is_err() {
        let logs = parent.join(format!("kiseki-bench-fuse-logs-{}", std::process::id()));
        if let Ok(path) = cluster.preserve_logs(&logs) {
            eprintln!("fuse: node logs kept in {}", path.display());
        }
    }
    drop(cluster);
    let kiseki_figures = kiseki_figures?;

    let rows: [Row; 9] = [
        ("seqwrite-1m-1job", "GB/s", |f| f.write_1 / GB),
        ("seqwrite-1m-4jobs", "GB/s", |f| f.write_4 / GB),
        ("seqread-1m-1job", "GB/s", |f| f.read_1 / GB),
        ("seqread-1m-4jobs", "GB/s", |f| f.read_4 / GB),
        ("randread-4k-cold", "IOPS", |f| f.randread_cold),
        ("randread-4k-cached", "IOPS", |f| f.randread_cached),
        ("filecreate", "ops/s", |f| f.creates),
        ("filestat", "ops/s", |f| f.stats),
        ("filedelete", "ops/s", |f| f.deletes),
    ];
    // Passthrough (Kiseki only) against the baseline's cached random and sequential reads.
    type Baseline = (&'static str, fn(&Figures) -> f64);
    let passthrough_rows: [(Row, Baseline); 2] = [
        (
            ("randread-4k-passthrough", "IOPS", |f| f.randread_passthrough),
            ("randread-4k-cached", |f| f.randread_cached),
        ),
        (
            ("seqread-1m-passthrough", "GB/s", |f| f.seqread_passthrough / GB),
            ("seqread-1m-1job", |f| f.read_1 / GB),
        ),
    ];
    for ((name, unit, value), (baseline_name, baseline_of)) in passthrough_rows {
        let baseline_value = baseline_of(bindfs_figures.as_ref().unwrap_or(&local_figures));
        if value(&kiseki_figures) > 0.0 {
            let label = if bindfs_figures.is_some() { "bindfs" } else { "local" };
            report.cases.push(Case::higher_is_better(
                SUITE,
                name,
                value(&kiseki_figures),
                unit,
                &format!("{label}-{baseline_name}"),
                baseline_value,
            ));
        }
    }
    for (name, unit, value) in rows {
        match &bindfs_figures {
            Some(bindfs) => {
                report.cases.push(Case::higher_is_better(
                    SUITE,
                    name,
                    value(&kiseki_figures),
                    unit,
                    "bindfs",
                    value(bindfs),
                ));
                report.cases.push(Case::higher_is_better(
                    SUITE,
                    &format!("bindfs-{name}"),
                    value(bindfs),
                    unit,
                    "local",
                    value(&local_figures),
                ));
            }
            None => report.cases.push(Case::higher_is_better(
                SUITE,
                name,
                value(&kiseki_figures),
                unit,
                "local",
                value(&local_figures),
            )),
        }
    }
    Ok(report)
}

/// Mounts `local` again at `point` with bindfs.
fn bindfs(local: &Path, point: &Path) -> anyhow::Result<Mounted> {
    std::fs::create_dir_all(point)?;
    let child = Command::new("bindfs")
        .args(["-f", "--no-allow-other"])
        .arg(local)
        .arg(point)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start bindfs (apt-get install bindfs)")?;
    let mounted = Mounted {
        child,
        point: point.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_fuse_mount(point) {
        if Instant::now() > deadline {
            bail!("bindfs did not mount {}", point.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(mounted)
}

fn is_fuse_mount(point: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(point) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|mounted| Path::new(mounted) == canonical)
                && line.contains(" - fuse")
        })
    })
}

fn mount_kiseki(
    options: &FuseOptions,
    cluster: &LocalCluster,
    keys: &Path,
    point: &Path,
    mount_options: &[&str],
) -> anyhow::Result<Mounted> {
    std::fs::create_dir_all(point)?;
    let mut command = Command::new(&options.mount);
    command.arg("mount").arg(point);
    for option in mount_options {
        command.args(["-o", option]);
    }
    let mut child = command
        .args([
            "--cluster",
            &cluster.seed().to_string(),
            "--durability",
            "4+2",
            "--shard",
            "1",
        ])
        .arg("--keys")
        .arg(keys)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", options.mount.display()))?;
    let stdout = child.stdout.take().context("the mount's output")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let mounted = Mounted {
        child,
        point: point.to_path_buf(),
    };
    if !first.starts_with("mounted ") {
        bail!("kiseki-client-fuse did not mount: {first:?}");
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(mounted)
}

/// Drops the page cache (root only); says whether it could.
fn drop_caches() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

/// Runs a fio profile with the suite's sizes in `directory`.
fn run_job(options: &FuseOptions, profile: &str, directory: &Path, jobs: usize) -> anyhow::Result<FioResult> {
    let runtime = options.runtime_s.max(1).to_string();
    let files = options.meta_files.to_string();
    let jobs = jobs.to_string();
    let size = if profile == RANDREAD_4K {
        options.randread_bytes.min(options.file_bytes)
    } else {
        options.file_bytes
    }
    .to_string();
    let environment: [(&str, &OsStr); 5] = [
        ("KISEKI_FIO_DIRECTORY", directory.as_os_str()),
        ("KISEKI_FIO_SIZE", size.as_ref()),
        ("KISEKI_FIO_NUMJOBS", jobs.as_ref()),
        ("KISEKI_FIO_RUNTIME", runtime.as_ref()),
        ("KISEKI_FIO_NRFILES", files.as_ref()),
    ];
    fio::run_profile(profile, &environment)
}

/// The passthrough phase on a mount made with `-o passthrough` and its pool in `cache_dir`.
fn measure_passthrough(
    options: &FuseOptions,
    point: &Path,
    cache_dir: &Path,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let dir = point.join("passthrough");
    std::fs::create_dir_all(&dir)?;
    run_job(options, "fuse-seqwrite-1m.fio", &dir, 1)?;
    // Read twice: the organic cache admits a chunk to L2 on its second miss.
    for _ in 0..2 {
        drop_caches();
        run_job(options, "fuse-seqread-1m.fio", &dir, 1)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool_bytes(cache_dir) + PASSTHROUGH_L1_BYTES < options.file_bytes {
        if Instant::now() > deadline {
            bail!("the L2 cache did not fill ({} bytes)", pool_bytes(cache_dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first run's open builds the copy and warms its pages; the second is measured.
    run_job(options, RANDREAD_4K, &dir, 1)?;
    figures.randread_passthrough = run_job(options, RANDREAD_4K, &dir, 1)?.read_iops;
    drop_caches();
    figures.seqread_passthrough = run_job(options, "fuse-seqread-1m.fio", &dir, 1)?.read_bytes_per_s;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Bytes of the chunk entries in the pools under `cache_dir`.
fn pool_bytes(cache_dir: &Path) -> u64 {
    let Ok(pools) = std::fs::read_dir(cache_dir) else {
        return 0;
    };
    pools
        .flatten()
        .filter_map(|pool| std::fs::read_dir(pool.path().join("chunks")).ok())
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}

fn measure(options: &FuseOptions, directory: &Path) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    let run = |profile: &str, directory: &Path, jobs: usize| run_job(options, profile, directory, jobs);
    let dir = directory.join("seq-1");
    std::fs::create_dir_all(&dir)?;
    figures.write_1 = run("fuse-seqwrite-1m.fio", &dir, 1)?.write_bytes_per_s;
    drop_caches();
    figures.read_1 = run("fuse-seqread-1m.fio", &dir, 1)?.read_bytes_per_s;
    drop_caches();
    figures.randread_cold = run(RANDREAD_4K, &dir, 1)?.read_iops;
    figures.randread_cached = run(RANDREAD_4K, &dir, 1)?.read_iops;
    let dir = directory.join("seq-4");
    std::fs::create_dir_all(&dir)?;
    figures.write_4 = run("fuse-seqwrite-1m.fio", &dir, 4)?.write_bytes_per_s;
    drop_caches();
    figures.read_4 = run("fuse-seqread-1m.fio", &dir, 4)?.read_bytes_per_s;
    let _ = std::fs::remove_dir_all(directory.join("seq-1"));
    let _ = std::fs::remove_dir_all(&dir);

    let dir = directory.join("meta");
    std::fs::create_dir_all(&dir)?;
    figures.creates = run(fio::META_FILECREATE, &dir, 1)?.write_iops;
    figures.deletes = run("meta-filedelete.fio", &dir, 1)?.write_iops;
    let dir = directory.join("stat");
    std::fs::create_dir_all(&dir)?;
    figures.stats = run(fio::META_FILESTAT, &dir, 1)?.read_iops;
    let _ = std::fs::remove_dir_all(directory.join("meta"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}
