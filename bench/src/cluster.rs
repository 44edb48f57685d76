//! A local cluster of real `kiseki-server` processes on file-backed devices.
//!
//! Node `n` (from 1) listens on 127.0.0.`n`, core `c` on `port_base + c`; its devices are
//! `node<n>.dev`, `node<n>-1.dev`, ... in the cluster's directory (sparse files but for an
//! optional written head, formatted by `kiseki-server format`) and its log (stderr)
//! `node<n>.log`. Each node process starts with a CPU affinity of its own cores' worth of
//! CPUs where the machine has them (wrapping around where it does not), so that one-core
//! nodes do not all pin their core 0 to the same CPU. Dropping the cluster stops every
//! node (SIGTERM, then SIGKILL after a grace period) and removes the directory. Nodes log
//! warnings and errors (`$KISEKI_BENCH_SERVER_LOG` sets another filter, as `RUST_LOG` would).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    /// Nodes (1 to 254).
    pub nodes: usize,
    /// Cores per node.
    pub cores: usize,
    /// Devices per node.
    pub devices: usize,
    /// Shards of the namespace.
    pub shards: u64,
    /// Size of each device file, a sparse file: disk space is taken as the store
    /// writes, so this bounds the store, not the disk space used.
    pub device_bytes: u64,
    /// Bytes at the start of each device file written (zeros, flushed) before it is
    /// formatted, as a raw device's blocks already are: the store's first writes there
    /// then pay no block allocation or unwritten-extent conversion in the file system.
    /// 0 leaves the whole file sparse.
    pub device_prewrite_bytes: u64,
}

struct Node {
    child: Child,
    log: PathBuf,
}

/// Running nodes; stopped and removed on drop.
pub(crate) struct LocalCluster {
    directory: PathBuf,
    nodes: Vec<Node>,
    port_base: u16,
}

/// Segment size the devices are formatted with.
const SEGMENT_SIZE: &str = "32MiB";
/// How long a node may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Creates the device file `path` of `bytes`: sparse but for its first `written_bytes`
/// (at most `bytes`), which are written with zeros and flushed.
pub(crate) fn create_device_file(path: &Path, bytes: u64, written_bytes: u64) -> anyhow::Result<()> {
    use std::io::Write;
    const PIECE_BYTES: usize = 8 << 20;
    let written = (|| {
        let mut file = File::create(path)?;
        let zeros = vec![0u8; PIECE_BYTES];
        let mut left = written_bytes.min(bytes);
        while left > 0 {
            let piece = left.min(PIECE_BYTES as u64) as usize;
            file.write_all(&zeros[..piece])?;
            left -= piece as u64;
        }
        file.sync_all()?;
        file.set_len(bytes)
    })();
    written.with_context(|| format!("creating {}", path.display()))
}

/// The device files of node `node` (from 1): `node<n>.dev`, then `node<n>-<i>.dev`.
fn device_paths(directory: &Path, node: usize, devices: usize) -> Vec<PathBuf> {
    (0..devices)
        .map(|index| match index {
            0 => directory.join(format!("node{node}.dev")),
            index => directory.join(format!("node{node}-{index}.dev")),
        })
        .collect()
}

/// The address of node `node` (from 1).
fn host(node: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, node as u8))
}

impl LocalCluster {
    /// Writes the map, formats the devices and starts every node, waiting for each to
    /// print `ready`. `directory` must not exist yet (it is created, and removed on drop).
    pub fn start(server: &Path, directory: &Path, spec: &ClusterSpec) -> anyhow::Result<LocalCluster> {
        if spec.nodes == 0 || spec.nodes > 254 || spec.cores == 0 || spec.devices == 0 {
            bail!("a local cluster has 1 to 254 nodes of at least one core and one device: {spec:?}");
        }
        std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        let mut cluster = LocalCluster {
            directory: directory.to_path_buf(),
            nodes: Vec::with_capacity(spec.nodes),
            port_base: free_port_base(spec.nodes, spec.cores)?,
        };
        let map = directory.join("cluster.json");
        let hosts: Vec<String> = (1..=spec.nodes).map(|node| host(node).to_string()).collect();
        let mut init = Command::new(server);
        init.arg("init")
            .args(["--hosts", &hosts.join(",")])
            .args(["--cores", &spec.cores.to_string()])
            .args(["--shards", &spec.shards.to_string()])
            .args(["--devices", &spec.devices.to_string()])
            .args(["--port-base", &cluster.port_base.to_string()])
            .arg("--out")
            .arg(&map);
        run_quietly(&mut init, "kiseki-server init")?;
        for device in (1..=spec.nodes).flat_map(|node| device_paths(directory, node, spec.devices)) {
            // Not `format --size`, which would allocate the whole file up front.
            create_device_file(&device, spec.device_bytes, spec.device_prewrite_bytes)?;
            let mut format = Command::new(server);
            format
                .arg("format")
                .arg("--device")
                .arg(&device)
                .args(["--cores", &spec.cores.to_string()])
                .args(["--segment-size", SEGMENT_SIZE])
                .arg("--force-format");
            run_quietly(&mut format, "kiseki-server format")?;
        }
        let cpus = kiseki_runtime::available_cpus();
        for node in 1..=spec.nodes {
            let started = cluster.start_node(server, node, spec, &map, &cpus)?;
            cluster.nodes.push(started);
        }
        for (index, node) in cluster.nodes.iter_mut().enumerate() {
            wait_ready(node, index + 1)?;
        }
        Ok(cluster)
    }

    /// Copies the nodes' logs into `destination` (created), e.g. before a failed run's
    /// cluster is dropped; returns `destination`.
    pub fn preserve_logs(&self, destination: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(destination).with_context(|| format!("creating {}", destination.display()))?;
        for node in &self.nodes {
            if let Some(name) = node.log.file_name() {
                std::fs::copy(&node.log, destination.join(name))
                    .with_context(|| format!("copying {}", node.log.display()))?;
            }
        }
        Ok(destination.to_path_buf())
    }

    /// Where clients may connect first (node 1, core 0).
    pub fn seed(&self) -> SocketAddr {
        SocketAddr::new(host(1), self.port_base)
    }

    fn start_node(
        &self,
        server: &Path,
        node: usize,
        spec: &ClusterSpec,
        map: &Path,
        cpus: &[usize],
    ) -> anyhow::Result<Node> {
        let log = self.directory.join(format!("node{node}.log"));
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(server);
        command.arg("run");
        for device in device_paths(&self.directory, node, spec.devices) {
            command.arg("--device").arg(device);
        }
        command
            .args(["--cores", &spec.cores.to_string()])
            .args(["--metrics-addr", &format!("{}:0", host(node))])
            .arg("--cluster")
            .arg(map)
            .args(["--node-id", &node.to_string()])
            .env("RUST_LOG", server_log_filter())
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let node_cpus = node_cpus(node - 1, spec.cores, cpus);
        // A child inherits the CPU affinity of the thread that starts it: start it from a
        // thread restricted to the node's CPUs, so that its core 0 is not every node's.
        let child = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if let Some(node_cpus) = &node_cpus {
                        restrict_current_thread(node_cpus);
                    }
                    command.spawn()
                })
                .join()
        })
        .map_err(|_| anyhow::anyhow!("the thread starting node {node} panicked"))?
        .with_context(|| format!("starting {} (is kiseki-server built?)", server.display()))?;
        Ok(Node { child, log })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(node.child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for node in &mut self.nodes {
            loop {
                match node.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = node.child.kill();
                        let _ = node.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// The nodes' log filter: `$KISEKI_BENCH_SERVER_LOG` (as `RUST_LOG`), else warnings.
fn server_log_filter() -> String {
    std::env::var("KISEKI_BENCH_SERVER_LOG").unwrap_or_else(|_| String::from("warn"))
}

/// Runs a short command to completion; fails with its output if it fails.
fn run_quietly(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(())
}

/// Waits for the node to print `ready`; then keeps draining its stdout in the background.
fn wait_ready(node: &mut Node, id: usize) -> anyhow::Result<()> {
    let stdout = node.child.stdout.take().context("node stdout not captured")?;
    let (sender, receiver) = mpsc::channel::<bool>();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut ready = false;
        for line in lines.by_ref() {
            match line {
                Ok(line) if line == "ready" => {
                    ready = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = sender.send(ready);
        for _ in lines {}
    });
    match receiver.recv_timeout(READY_TIMEOUT) {
        Ok(true) => Ok(()),
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let _ = node.child.wait();
            bail!("node {id} stopped before it was ready: {}", log_tail(&node.log))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("node {id} not ready within {READY_TIMEOUT:?}: {}", log_tail(&node.log))
        }
    }
}

/// The last lines of a node's log, for error messages.
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        format!("(nothing in {})", path.display())
    } else {
        tail
    }
}

/// The CPUs node `index` (from 0) should run on, or `None` to leave it unrestricted
/// (when it needs as many CPUs as there are).
fn node_cpus(index: usize, cores: usize, cpus: &[usize]) -> Option<Vec<usize>> {
    if cpus.is_empty() || cores >= cpus.len() {
        return None;
    }
    let first = index * cores;
    Some((0..cores).map(|core| cpus[(first + core) % cpus.len()]).collect())
}

fn restrict_current_thread(cpus: &[usize]) {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in cpus {
        set.set(*cpu);
    }
    if let Err(error) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::warn!(%error, ?cpus, "cannot restrict a node to its CPUs; it runs unrestricted");
    }
}

/// A port `p` such that `p .. p + cores` are free on 127.0.0.1 ..= 127.0.0.`nodes`.
/// A free port on 127.0.0.1 below the kernel's ephemeral range (32768-60999 by default):
/// a port handed out for `127.0.0.1:0` is free again once released, and an outgoing
/// connection (nfs-ganesha's, rpcbind's, a client's) may take it before the server the
/// suite starts binds it. Successive calls walk the range from a random start, so the
/// ports one run asks for (several before any is bound) differ.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = rand::random::<u32>() % u32::from(PORTS_SPAN);
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..PORTS_SPAN {
        let port = (NEXT.fetch_add(1, Ordering::Relaxed) % u32::from(PORTS_SPAN)) as u16 + PORTS_FIRST;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {PORTS_FIRST}..{}", PORTS_FIRST + PORTS_SPAN)
}

/// The ports the suites take servers' ports from: below the ephemeral range.
const PORTS_FIRST: u16 = 20_000;
const PORTS_SPAN: u16 = 12_000;

fn free_port_base(nodes: usize, cores: usize) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let base = rand::random::<u16>() % (PORTS_SPAN - cores as u16) + PORTS_FIRST;
        let free = (1..=nodes).all(|node| {
            (0..cores).all(|core| TcpListener::bind(SocketAddr::new(host(node), base + core as u16)).is_ok())
        });
        if free {
            return Ok(base);
        }
    }
    bail!("no free port range for {nodes} nodes of {cores} cores on 127.0.0.x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_their_own_cpus_where_there_are_enough() {
        assert_eq!(node_cpus(0, 1, &[0, 1]), Some(vec![0]));
        assert_eq!(node_cpus(1, 1, &[0, 1]), Some(vec![1]));
        assert_eq!(node_cpus(2, 1, &[0, 1]), Some(vec![0]));
        assert_eq!(node_cpus(0, 2, &[0, 1]), None);
        assert_eq!(node_cpus(1, 2, &[0, 1, 2, 3]), Some(vec![2, 3]));
        assert_eq!(node_cpus(2, 2, &[4, 5, 6, 7, 8]), Some(vec![8, 4]));
        assert_eq!(node_cpus(0, 1, &[]), None);
    }

    #[test]
    fn port_bases_are_free() {
        let base = free_port_base(3, 2).expect("a free port range");
        assert!(base >= 20_000);
    }
}
