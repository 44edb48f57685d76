//! A `kiseki up` cluster driven through the `kiseki` command, and test data helpers,
//! shared by the CLI's end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const KISEKI: &str = env!("CARGO_BIN_EXE_kiseki");

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768-60999 by default): a port handed out for
    // `127.0.0.1:0` is free again once released, and any outgoing connection of another
    // test may take it before `kiseki up` binds it. One counter per test process (its
    // tests run on parallel threads), started where the process id points so that two
    // processes rarely walk the same ports.
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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

/// The ports one `kiseki up` uses, kept across restarts.
#[derive(Clone, Copy, Debug)]
struct Ports {
    base: u16,
    metrics: u16,
    s3: u16,
    s3_metrics: u16,
    nfs: u16,
    nfs_metrics: u16,
    control: u16,
    control_metrics: u16,
    keyserver: u16,
    keyserver_metrics: u16,
}

impl Ports {
    fn free(with_gateways: bool) -> Ports {
        Ports {
            base: free_port(),
            metrics: free_port(),
            s3: if with_gateways { free_port() } else { 0 },
            s3_metrics: free_port(),
            nfs: if with_gateways { free_port() } else { 0 },
            nfs_metrics: free_port(),
            control: free_port(),
            control_metrics: free_port(),
            keyserver: free_port(),
            keyserver_metrics: free_port(),
        }
    }
}

/// `kiseki up` (nodes, key server, control plane, gateway) and the pid of each node, once
/// it printed `kiseki up: ready`.
pub struct Cluster {
    up: Child,
    pub node_pids: Vec<u32>,
    pub seed: String,
    /// The operator's client profile (`DATA_DIR/client.json`, the `admin` certificate).
    pub profile: PathBuf,
    data_dir: PathBuf,
    nodes: u64,
    devices: u64,
    ports: Ports,
    keeper: Keeper,
}

/// The control plane keeper's passes (`kiseki up --repair-interval-s --gc-interval-s
/// --gc-grace-s`): off unless a test asks, so a test's own `kiseki repair` and `kiseki gc`
/// find the work they count.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keeper {
    pub repair_interval_s: u64,
    pub gc_interval_s: u64,
    pub gc_grace_s: u64,
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
        Cluster::launch(
            data_dir,
            nodes,
            devices,
            device_size,
            Ports::free(false),
            Keeper::default(),
        )
    }

    /// [`Cluster::start`] with the control plane's keeper repairing and collecting.
    pub fn start_keeping(data_dir: &Path, nodes: u64, devices: u64, keeper: Keeper) -> Cluster {
        Cluster::launch(data_dir, nodes, devices, "512MiB", Ports::free(false), keeper)
    }

    /// [`Cluster::start`] with the S3 gateway ([`Cluster::s3_endpoint`]) and the NFS
    /// gateway ([`Cluster::nfs_port`]) on free ports, serving the control plane's tenants.
    pub fn start_with_s3(data_dir: &Path, nodes: u64, devices: u64) -> Cluster {
        Cluster::launch(data_dir, nodes, devices, "1GiB", Ports::free(true), Keeper::default())
    }

    /// The S3 endpoint, when the gateway runs.
    pub fn s3_endpoint(&self) -> String {
        assert!(self.ports.s3 != 0, "the cluster was started without the gateway");
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// The NFS gateway's port (NFS and MOUNT), when it runs.
    pub fn nfs_port(&self) -> u16 {
        assert!(self.ports.nfs != 0, "the cluster was started without the gateways");
        self.ports.nfs
    }

    /// The control plane's and the key server's addresses.
    pub fn services(&self) -> (String, String) {
        (
            format!("127.0.0.1:{}", self.ports.control),
            format!("127.0.0.1:{}", self.ports.keyserver),
        )
    }

    /// The control plane's metrics in the Prometheus text format.
    pub fn control_metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.ports.control_metrics)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The default tenant's S3 credentials `kiseki up` made.
    pub fn default_s3_credentials(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.data_dir.join("s3-credentials.json")).unwrap();
        let key: serde_json::Value = serde_json::from_str(&text).unwrap();
        (
            key["access_key"].as_str().unwrap().to_owned(),
            key["secret_key"].as_str().unwrap().to_owned(),
        )
    }

    /// Stops `kiseki up`, runs `between` (e.g. to damage a device), and starts it again
    /// on the same data directory and ports.
    pub fn restart_after(self, between: impl FnOnce(&Path)) -> Cluster {
        let (data_dir, nodes, devices, ports, keeper) =
            (self.data_dir.clone(), self.nodes, self.devices, self.ports, self.keeper);
        self.stop();
        between(&data_dir);
        // The size only applies to devices not created yet.
        Cluster::launch(&data_dir, nodes, devices, "512MiB", ports, keeper)
    }

    fn launch(data_dir: &Path, nodes: u64, devices: u64, device_size: &str, ports: Ports, keeper: Keeper) -> Cluster {
        let port = |port: u16| port.to_string();
        let mut up = Command::new(KISEKI)
            // Eight shards when the gateways run: the tests make several namespaces.
            .args(["up", "--cores", "1", "--device-size", device_size])
            .args(["--shards", if ports.s3 != 0 { "8" } else { "4" }])
            .args(["--nodes", &nodes.to_string(), "--devices", &devices.to_string()])
            .args(["--port-base", &port(ports.base), "--metrics-port", &port(ports.metrics)])
            .args([
                "--s3-port",
                &port(ports.s3),
                "--s3-metrics-port",
                &port(ports.s3_metrics),
            ])
            .args([
                "--nfs-port",
                &port(ports.nfs),
                "--nfs-metrics-port",
                &port(ports.nfs_metrics),
            ])
            .args(["--control-port", &port(ports.control)])
            .args(["--control-metrics-port", &port(ports.control_metrics)])
            .args(["--keyserver-port", &port(ports.keyserver)])
            .args(["--keyserver-metrics-port", &port(ports.keyserver_metrics)])
            .args(["--repair-interval-s", &keeper.repair_interval_s.to_string()])
            .args(["--gc-interval-s", &keeper.gc_interval_s.to_string()])
            .args(["--gc-grace-s", &keeper.gc_grace_s.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .env(
                "RUST_LOG",
                std::env::var("KISEKI_TEST_UP_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("KISEKI_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(up_log())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
        let mut node_pids = Vec::new();
        let mut ready = false;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("kiseki up: node ") {
                let pid = rest
                    .split("(pid ")
                    .nth(1)
                    .and_then(|tail| tail.split(')').next())
                    .unwrap();
                node_pids.push(pid.parse().unwrap());
            }
            if line == "kiseki up: ready" {
                ready = true;
                break;
            }
        }
        assert!(
            ready,
            "kiseki up prints `kiseki up: ready` (set KISEKI_TEST_UP_LOG to see why not)"
        );
        assert_eq!(node_pids.len() as u64, nodes, "every node starts");
        std::thread::spawn(move || for _ in lines {});
        Cluster {
            up,
            node_pids,
            seed: format!("127.0.0.1:{}", ports.base),
            profile: data_dir.join("client.json"),
            data_dir: data_dir.to_path_buf(),
            nodes,
            devices,
            ports,
            keeper,
        }
    }

    /// Runs an admin command that must succeed and prints one JSON object (`status
    /// --json`, `gc --json`); that object.
    pub fn admin_json(&self, arguments: &[&str]) -> serde_json::Value {
        let output = self.admin(arguments);
        assert!(
            output.status.success(),
            "kiseki {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
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

    /// Runs a data or administration command with the operator's profile.
    pub fn kiseki(&self, arguments: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        let mut command = Command::new(KISEKI);
        command
            .args(arguments)
            .arg("--profile")
            .arg(&self.profile)
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
            .arg("--profile")
            .arg(&self.profile)
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

/// A tenant's S3 credentials.
pub struct S3Credentials {
    pub access_key: String,
    pub secret_key: String,
}

/// The venv `scripts/setup.sh` makes (boto3, the aws CLI).
pub fn venv() -> PathBuf {
    let venv = PathBuf::from(std::env::var("KISEKI_VENV").unwrap_or_else(|_| "/var/tmp/kiseki-venv".into()));
    assert!(
        venv.join("bin/aws").is_file(),
        "{} needs boto3 and awscli: run scripts/setup.sh",
        venv.display()
    );
    venv
}

struct Tenant {
    access_key: String,
    secret_key: String,
}

/// A command with a tenant's S3 credentials and no CA bundle (the environment's bundle
/// breaks plain-HTTP endpoints).
pub fn with_credentials(program: impl AsRef<std::ffi::OsStr>, tenant: &S3Credentials) -> Command {
    let mut command = Command::new(program);
    command
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", &tenant.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &tenant.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    command
}

pub fn succeed(mut command: Command, what: &str) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn aws(endpoint: &str, tenant: &S3Credentials, arguments: &[&str]) -> Command {
    let mut command = with_credentials(venv().join("bin/aws"), tenant);
    command.args(["--endpoint-url", endpoint]).args(arguments);
    command
}

pub fn aws_ok(endpoint: &str, tenant: &S3Credentials, arguments: &[&str]) -> String {
    let output = succeed(aws(endpoint, tenant, arguments), &format!("aws {arguments:?}"));
    String::from_utf8(output.stdout).unwrap()
}

/// A tree of files: sizes from 0 bytes to 9 MiB, nested directories, odd names.
pub fn make_tree(root: &Path) {
    let files: &[(&str, usize)] = &[
        ("empty", 0),
        ("one", 1),
        ("notes/readme.md", 700),
        ("notes/deep/er/file.txt", 4096),
        ("data/blob-5m", 5 << 20),
        ("data/blob-9m", (9 << 20) + 123),
        ("data/with space.bin", 10_000),
        ("data/plus+and=equals.bin", 2_000),
    ];
    for (index, (path, size)) in files.iter().enumerate() {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..*size)
            .map(|byte| (byte * 31 + index * 7 + byte / 4099) as u8)
            .collect();
        std::fs::write(path, data).unwrap();
    }
}

pub fn same_trees(left: &Path, right: &Path) {
    let output = Command::new("diff").arg("-r").arg(left).arg(right).output().unwrap();
    assert!(
        output.status.success(),
        "trees differ: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
