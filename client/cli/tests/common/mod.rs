//! A `kiseki up` cluster driven through the `kiseki` command, and test data helpers,
//! shared by the CLI's end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const KISEKI: &str = env!("CARGO_BIN_EXE_kiseki");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `kiseki up` and its nodes log: the file `$KISEKI_TEST_UP_LOG` (appended to, so
/// restarts add to it) when set, else nowhere.
fn up_log() -> Stdio {
    match std::env::var_os("KISEKI_TEST_UP_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| Stdio::null(), Stdio::from),
        None => Stdio::null(),
    }
}

/// `kiseki up` and the pid of each node, once every node printed `ready`.
pub struct Cluster {
    up: Child,
    pub node_pids: Vec<u32>,
    pub seed: String,
    pub keys: PathBuf,
    data_dir: PathBuf,
    nodes: u64,
    devices: u64,
    port_base: u16,
    metrics_port: u16,
    s3_port: u16,
}

impl Cluster {
    /// Starts `nodes` nodes of one core and `devices` devices of `device_size` each.
    pub fn start(data_dir: &Path, nodes: u64, devices: u64) -> Cluster {
        Cluster::start_sized(data_dir, nodes, devices, "512MiB")
    }

    /// [`Cluster::start`] with devices of `device_size` (a `kiseki up --device-size`).
    pub fn start_sized(data_dir: &Path, nodes: u64, devices: u64, device_size: &str) -> Cluster {
        let server = Path::new(KISEKI).with_file_name("kiseki-server");
        assert!(
            server.is_file(),
            "kiseki-server must be built beside kiseki ({})",
            server.display()
        );
        // Ports p .. p+1 for the one core of each node on its own address; metrics on another.
        let port_base = free_port();
        let metrics_port = free_port();
        Cluster::launch(data_dir, nodes, devices, device_size, port_base, metrics_port, 0)
    }

    /// [`Cluster::start`] with the S3 gateway on a free port ([`Cluster::s3_endpoint`]),
    /// serving the tenants of `DATA_DIR/gateway.json` (made by `kiseki up` if absent).
    pub fn start_with_s3(data_dir: &Path, nodes: u64, devices: u64) -> Cluster {
        let (port_base, metrics_port, s3_port) = (free_port(), free_port(), free_port());
        Cluster::launch(data_dir, nodes, devices, "1GiB", port_base, metrics_port, s3_port)
    }

    /// The S3 endpoint, when the gateway runs.
    pub fn s3_endpoint(&self) -> String {
        assert!(self.s3_port != 0, "the cluster was started without the gateway");
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Stops `kiseki up`, runs `between` (e.g. to damage a device), and starts it again
    /// on the same data directory and ports.
    pub fn restart_after(self, between: impl FnOnce(&Path)) -> Cluster {
        let (data_dir, nodes, devices) = (self.data_dir.clone(), self.nodes, self.devices);
        let (port_base, metrics_port) = (self.port_base, self.metrics_port);
        self.stop();
        between(&data_dir);
        // The size only applies to devices not created yet.
        Cluster::launch(&data_dir, nodes, devices, "512MiB", port_base, metrics_port, 0)
    }

    fn launch(
        data_dir: &Path,
        nodes: u64,
        devices: u64,
        device_size: &str,
        port_base: u16,
        metrics_port: u16,
        s3_port: u16,
    ) -> Cluster {
        let mut up = Command::new(KISEKI)
            .args(["up", "--cores", "1", "--device-size", device_size, "--shards", "2"])
            .args(["--nodes", &nodes.to_string(), "--devices", &devices.to_string()])
            .args([
                "--port-base",
                &port_base.to_string(),
                "--metrics-port",
                &metrics_port.to_string(),
            ])
            .args(["--s3-port", &s3_port.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .env(
                "RUST_LOG",
                std::env::var("KISEKI_TEST_UP_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(up_log())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
        let mut node_pids = Vec::new();
        let mut ready = 0;
        let mut gateway = s3_port == 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            gateway |= line.starts_with("kiseki-gateway: S3 on");
            if let Some(rest) = line.strip_prefix("kiseki up: node ") {
                let pid = rest
                    .split("(pid ")
                    .nth(1)
                    .and_then(|tail| tail.split(')').next())
                    .unwrap();
                node_pids.push(pid.parse().unwrap());
            }
            if line == "ready" {
                ready += 1;
            }
            if ready == nodes && gateway {
                break;
            }
        }
        assert_eq!(ready, nodes, "every node prints ready");
        assert!(gateway, "the gateway starts");
        std::thread::spawn(move || for _ in lines {});
        Cluster {
            up,
            node_pids,
            seed: format!("127.0.0.1:{port_base}"),
            keys: data_dir.join("keys.json"),
            data_dir: data_dir.to_path_buf(),
            nodes,
            devices,
            port_base,
            metrics_port,
            s3_port,
        }
    }

    /// Runs an admin command (`status`, `repair`): the cluster, no key file.
    pub fn admin(&self, arguments: &[&str]) -> std::process::Output {
        Command::new(KISEKI)
            .args(arguments)
            .args(["--cluster", &self.seed])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// SIGKILLs node `node` (from 1).
    pub fn kill_node(&self, node: usize) {
        let killed = Command::new("kill")
            .arg("-KILL")
            .arg(self.node_pids[node - 1].to_string())
            .status()
            .unwrap();
        assert!(killed.success());
    }

    pub fn kiseki(&self, arguments: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        let mut command = Command::new(KISEKI);
        command
            .args(arguments)
            .args(["--cluster", &self.seed])
            .arg("--keys")
            .arg(&self.keys)
            .env("RUST_LOG", "warn")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Starts a data command without waiting for it (stdout and stderr discarded).
    pub fn spawn(&self, arguments: &[&str]) -> Child {
        Command::new(KISEKI)
            .args(arguments)
            .args(["--cluster", &self.seed])
            .arg("--keys")
            .arg(&self.keys)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs a data command that must succeed; its standard output.
    pub fn ok(&self, arguments: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let output = self.kiseki(arguments, stdin);
        assert!(
            output.status.success(),
            "kiseki {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Cluster {
    /// Stops `kiseki up` and so every node, also when a test fails half-way.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.up.id().to_string()).status();
        // A node killed by the test makes `kiseki up` exit non-zero; it must still exit.
        let _ = self.up.wait();
    }
}

/// Incompressible bytes with `marker` at the start of every 64 KiB.
pub fn file_bytes(length: usize, seed: u64, marker: &[u8]) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes: Vec<u8> = (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for start in (0..length).step_by(64 << 10) {
        let end = (start + marker.len()).min(length);
        bytes[start..end].copy_from_slice(&marker[..end - start]);
    }
    bytes
}

/// Whether any file under `dir` holds `needle`.
pub fn any_file_holds(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if let Some(found) = any_file_holds(&path, needle) {
                return Some(found);
            }
            continue;
        }
        let mut file = std::fs::File::open(&path).unwrap();
        let mut block = vec![0u8; 8 << 20];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let read = file.read(&mut block).unwrap();
            if read == 0 {
                break;
            }
            carry.extend_from_slice(&block[..read]);
            if carry.windows(needle.len()).any(|window| window == needle) {
                return Some(path);
            }
            let keep = carry.len().min(needle.len() - 1);
            carry.drain(..carry.len() - keep);
        }
    }
    None
}
