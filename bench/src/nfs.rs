//! The nfs suite: 1 MiB sequential write and read (GB/s) and 4 KiB file create, stat and
//! remove (ops/s, with p50 and p99 latencies) through libnfs clients, against Kiseki's NFS
//! gateway in front of a one-node cluster (`kiseki up`: six file devices, EC 4+2,
//! encrypted) and against nfs-ganesha (FSAL_VFS on a directory of the same disk: no
//! replication, no encryption) under the same load in the same run. The page cache is
//! dropped before every read and stat phase, for both, when the suite runs as root.
//!
//! The load generator is `nfs_load.py` (libnfs 4.0, the library of nfs-cp, through
//! ctypes: one synchronous client per process); metadata phases run `streams` clients at
//! once, each in its own directory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cluster::free_port;
use crate::report::Case;

const SUITE: &str = "nfs";
const GB: f64 = 1e9;
const LOAD_SCRIPT: &str = include_str!("../nfs_load.py");

/// Options of the nfs suite.
#[derive(Debug, Clone)]
pub struct NfsOptions {
    /// The `kiseki` binary (the suite runs `kiseki up`).
    pub kiseki: PathBuf,
    /// Parent of the working directory; default: the system's temporary directory.
    pub directory: Option<PathBuf>,
    /// Bytes of the sequential file.
    pub file_bytes: u64,
    /// 4 KiB files each metadata client makes, stats and removes.
    pub files_per_stream: usize,
    /// Metadata clients at once.
    pub streams: usize,
    /// Size of each device file; `kiseki up` allocates it up front, so six of
    /// them must fit on the disk under `directory`.
    pub device_bytes: u64,
    /// Bytes at the start of each device file written before `kiseki up` formats it
    /// (what the run stores, so neither its fragments nor its shard log pay block
    /// allocation or unwritten-extent conversion in the file system; see
    /// `ClusterSpec::device_prewrite_bytes`).
    pub device_prewrite_bytes: u64,
}

impl NfsOptions {
    /// The full run: a 1 GiB file; 4 clients of 1,000 files each.
    pub fn full(kiseki: PathBuf) -> NfsOptions {
        NfsOptions {
            kiseki,
            directory: None,
            file_bytes: 1 << 30,
            files_per_stream: 1_000,
            streams: 4,
            device_bytes: 4 << 30,
            // The 1 GiB file is 1.5 GiB of fragments over 6 devices: 256 MiB each.
            device_prewrite_bytes: 512 << 20,
        }
    }

    /// A smoke run for CI: a 32 MiB file; 2 clients of 100 files.
    pub fn quick(kiseki: PathBuf) -> NfsOptions {
        NfsOptions {
            file_bytes: 32 << 20,
            files_per_stream: 100,
            streams: 2,
            device_bytes: 2 << 30,
            device_prewrite_bytes: 64 << 20,
            ..NfsOptions::full(kiseki)
        }
    }
}

/// What the suite measured, and what it could not.
#[derive(Debug, Clone, Default)]
pub struct NfsReport {
    /// Every case measured.
    pub cases: Vec<Case>,
    /// What could not be measured, with the reason.
    pub failures: Vec<String>,
}

/// One phase's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

const PHASES: [(&str, &str); 5] = [
    ("seqwrite-1m", "GB/s"),
    ("seqread-1m", "GB/s"),
    ("create-4k", "ops/s"),
    ("stat", "ops/s"),
    ("remove", "ops/s"),
];

/// A child process killed on drop (after a SIGTERM for a clean stop).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a server serves: its NFS port, its MOUNT port and the export's path.
#[derive(Debug, Clone)]
struct Endpoint {
    nfs_port: u16,
    mount_port: u16,
    export: String,
}

impl Endpoint {
    fn url(&self) -> String {
        format!(
            "nfs://127.0.0.1{}?version=3&nfsport={}&mountport={}",
            self.export, self.nfs_port, self.mount_port
        )
    }
}

/// Drops the page cache (root only).
fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// Runs the suite.
pub fn run(options: &NfsOptions) -> anyhow::Result<NfsReport> {
    let parent = options.directory.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kiseki-bench-nfs-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a working directory in {}", parent.display()))?;
    let script = work.path().join("nfs_load.py");
    std::fs::write(&script, LOAD_SCRIPT)?;
    let mut report = NfsReport::default();

    let baseline = match ganesha(work.path()) {
        Ok((server, endpoint)) => {
            eprintln!("nfs: nfs-ganesha");
            let figures = measure(options, &script, &endpoint);
            drop(server);
            Some(figures?)
        }
        Err(error) => {
            report.failures.push(format!("nfs-ganesha did not start: {error:#}"));
            None
        }
    };
    let (kiseki, port) = kiseki_up(options, work.path()).context("kiseki up did not start")?;
    eprintln!("nfs: kiseki");
    let endpoint = Endpoint {
        nfs_port: port,
        mount_port: port,
        export: "/default/default".into(),
    };
    let ours = measure(options, &script, &endpoint);
    drop(kiseki);
    let ours = ours?;
    let Some(theirs) = baseline else {
        return Ok(report);
    };
    for (index, (name, unit)) in PHASES.iter().enumerate() {
        let scale = if *unit == "GB/s" { GB } else { 1.0 };
        let (ours, theirs) = (ours[index], theirs[index]);
        report.cases.push(Case::higher_is_better(
            SUITE,
            name,
            ours.rate / scale,
            unit,
            "nfs-ganesha",
            theirs.rate / scale,
        ));
        for (quantile, ours, theirs) in [("p50", ours.p50_ms, theirs.p50_ms), ("p99", ours.p99_ms, theirs.p99_ms)] {
            report.cases.push(Case::lower_is_better(
                SUITE,
                &format!("{name}-{quantile}"),
                ours,
                "ms",
                "nfs-ganesha",
                theirs,
            ));
        }
    }
    Ok(report)
}

/// nfs-ganesha exporting a directory of `work` with FSAL_VFS on free ports (NFS and
/// MOUNT), rpcbind started first if none runs (ganesha registers with it at start).
fn ganesha(work: &Path) -> anyhow::Result<(Server, Endpoint)> {
    let export = work.join("ganesha-export");
    std::fs::create_dir_all(&export)?;
    let (nfs_port, mount_port) = (free_port()?, free_port()?);
    if nfs_port == mount_port {
        bail!("no two free ports");
    }
    let config = work.join("ganesha.conf");
    let export_path = export.display().to_string();
    std::fs::write(
        &config,
        format!(
            "NFS_CORE_PARAM {{ NFS_Port = {nfs_port}; MNT_Port = {mount_port}; Protocols = 3; \
             Enable_NLM = false; Enable_RQUOTA = false; Bind_addr = 127.0.0.1; }}\n\
             NFSV4 {{ Graceless = true; }}\n\
             EXPORT {{ Export_Id = 1; Path = {export_path}; Pseudo = {export_path}; Protocols = 3; \
             Transports = TCP; Access_Type = RW; Squash = No_Root_Squash; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
             LOG {{ Default_Log_Level = WARN; }}\n"
        ),
    )?;
    let rpcbind_running = Command::new("pgrep")
        .arg("-x")
        .arg("rpcbind")
        .status()
        .is_ok_and(|status| status.success());
    if !rpcbind_running {
        std::fs::create_dir_all("/run/rpcbind")?;
        Command::new("rpcbind")
            .arg("-w")
            .status()
            .context("starting rpcbind (apt install rpcbind)")?;
    }
    let mut child = Command::new("ganesha.nfsd")
        .arg("-F")
        .arg("-L")
        .arg(work.join("ganesha.log"))
        .arg("-f")
        .arg(&config)
        .arg("-p")
        .arg(work.join("ganesha.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ganesha.nfsd (apt install nfs-ganesha nfs-ganesha-vfs)")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", nfs_port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", mount_port)).is_ok()
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("ganesha.nfsd exited with {status}");
        }
        if Instant::now() > deadline {
            bail!("ganesha.nfsd did not listen");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let endpoint = Endpoint {
        nfs_port,
        mount_port,
        export: export_path,
    };
    Ok((Server(child), endpoint))
}

/// Devices of the node: EC 4+2, one fragment per device.
const DEVICES: usize = 6;

/// `kiseki up` with one node of one core, six devices and the NFS gateway on a free port.
fn kiseki_up(options: &NfsOptions, work: &Path) -> anyhow::Result<(Server, u16)> {
    let port = free_port()?;
    let node_directory = work.join("kiseki").join("node-1");
    std::fs::create_dir_all(&node_directory)?;
    for index in 0..DEVICES {
        // `kiseki up` formats a zeroed file of the full size as it is.
        let path = node_directory.join(format!("device-{index}.img"));
        crate::cluster::create_device_file(&path, options.device_bytes, options.device_prewrite_bytes)?;
    }
    let ports: Vec<String> = (0..7)
        .map(|_| free_port().map(|port| port.to_string()))
        .collect::<Result<_, _>>()?;
    let mut child = Command::new(&options.kiseki)
        .args(["up", "--nodes", "1", "--cores", "1", "--s3-port", "0"])
        .args(["--devices", &DEVICES.to_string()])
        .arg("--device-size")
        .arg(options.device_bytes.to_string())
        .arg("--data-dir")
        .arg(work.join("kiseki"))
        .args(["--nfs-port", &port.to_string(), "--nfs-metrics-port", &ports[0]])
        .args(["--port-base", &ports[1], "--metrics-port", &ports[2]])
        .args(["--control-port", &ports[3], "--control-metrics-port", &ports[4]])
        .args(["--keyserver-port", &ports[5], "--keyserver-metrics-port", &ports[6]])
        .env("RUST_LOG", "warn")
        .env("KISEKI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(File::create(work.join("kiseki-up.err"))?)
        .spawn()
        .with_context(|| format!("starting {}", options.kiseki.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("kiseki up's output")?).lines();
    let mut ready = false;
    let mut nfs = false;
    for line in lines.by_ref() {
        let line = line?;
        ready |= line == "kiseki up: ready";
        nfs |= line.starts_with("kiseki-gateway: NFS on");
        if ready && nfs {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    if !(ready && nfs) {
        let errors = std::fs::read_to_string(work.join("kiseki-up.err")).unwrap_or_default();
        let tail: Vec<&str> = errors.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "kiseki up ended before its NFS gateway listened; its last messages:\n{}",
            tail.join("\n")
        );
    }
    Ok((Server(child), port))
}

/// One phase: `streams` clients at once, each on its own target; the rate is every
/// client's operations (or bytes) over the longest client's time.
fn phase(
    script: &Path,
    endpoint: &Endpoint,
    mode: &str,
    targets: &[(String, u64)],
) -> anyhow::Result<(f64, f64, Phase)> {
    let children: Vec<Child> = targets
        .iter()
        .map(|(target, amount)| {
            Command::new("python3")
                .arg(script)
                .arg(endpoint.url())
                .arg(mode)
                .arg(target)
                .arg(amount.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting python3")
        })
        .collect::<Result<_, _>>()?;
    let (mut operations, mut bytes, mut seconds) = (0.0, 0.0, 0.0_f64);
    let mut quantiles = Phase::default();
    for child in children {
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("nfs_load.py {mode}: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        let figures: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let number = |name: &str| figures[name].as_f64().unwrap_or(0.0);
        operations += number("operations");
        bytes += number("bytes");
        seconds = seconds.max(number("seconds"));
        quantiles.p50_ms = quantiles.p50_ms.max(number("p50_ms"));
        quantiles.p99_ms = quantiles.p99_ms.max(number("p99_ms"));
    }
    Ok((operations / seconds.max(1e-9), bytes / seconds.max(1e-9), quantiles))
}

/// Every phase against one NFS server.
fn measure(options: &NfsOptions, script: &Path, endpoint: &Endpoint) -> anyhow::Result<[Phase; 5]> {
    let file = vec![("/bench-seq.bin".to_owned(), options.file_bytes)];
    let (_, write_rate, write) = phase(script, endpoint, "write", &file)?;
    drop_caches();
    let (_, read_rate, read) = phase(script, endpoint, "read", &file)?;
    let directories: Vec<(String, u64)> = (0..options.streams.max(1))
        .map(|stream| (format!("/bench-files-{stream}"), options.files_per_stream as u64))
        .collect();
    let (create_rate, _, create) = phase(script, endpoint, "create", &directories)?;
    drop_caches();
    let (stat_rate, _, stat) = phase(script, endpoint, "stat", &directories)?;
    let (remove_rate, _, remove) = phase(script, endpoint, "remove", &directories)?;
    Ok([
        Phase {
            rate: write_rate,
            ..write
        },
        Phase {
            rate: read_rate,
            ..read
        },
        Phase {
            rate: create_rate,
            ..create
        },
        Phase {
            rate: stat_rate,
            ..stat
        },
        Phase {
            rate: remove_rate,
            ..remove
        },
    ])
}
