//! Files through the `kiseki` command against a `kiseki up --nodes 3` cluster with two
//! devices per node, as a user runs it: put files of many sizes (and from standard
//! input), read them back byte-identical, list, stat, rename and remove; no device of any
//! node holds a byte of the plaintext (I-K1); after SIGKILL of one node every file still
//! reads back, from the surviving fragments (degraded reads of EC 4+2).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const KISEKI: &str = env!("CARGO_BIN_EXE_kiseki");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kiseki up` and the pid of each node, once every node printed `ready`.
struct Cluster {
    up: Child,
    node_pids: Vec<u32>,
    seed: String,
    keys: PathBuf,
}

impl Cluster {
    fn start(data_dir: &Path, nodes: u64, devices: u64) -> Cluster {
        let server = Path::new(KISEKI).with_file_name("kiseki-server");
        assert!(
            server.is_file(),
            "kiseki-server must be built beside kiseki ({})",
            server.display()
        );
        // Ports p .. p+1 for the one core of each node on its own address; metrics on another.
        let port_base = free_port();
        let metrics_port = free_port();
        let mut up = Command::new(KISEKI)
            .args(["up", "--cores", "1", "--device-size", "512MiB", "--shards", "2"])
            .args(["--nodes", &nodes.to_string(), "--devices", &devices.to_string()])
            .args([
                "--port-base",
                &port_base.to_string(),
                "--metrics-port",
                &metrics_port.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
        let mut node_pids = Vec::new();
        let mut ready = 0;
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
            if line == "ready" {
                ready += 1;
                if ready == nodes {
                    break;
                }
            }
        }
        assert_eq!(ready, nodes, "every node prints ready");
        std::thread::spawn(move || for _ in lines {});
        Cluster {
            up,
            node_pids,
            seed: format!("127.0.0.1:{port_base}"),
            keys: data_dir.join("keys.json"),
        }
    }

    fn kiseki(&self, arguments: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
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

    /// Runs a data command that must succeed; its standard output.
    fn ok(&self, arguments: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let output = self.kiseki(arguments, stdin);
        assert!(
            output.status.success(),
            "kiseki {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.up.id().to_string()).status();
        // A node killed by the test makes `kiseki up` exit non-zero; it must still exit.
        let _ = self.up.wait();
    }
}

/// Incompressible bytes with `marker` at the start of every 64 KiB.
fn file_bytes(length: usize, seed: u64, marker: &[u8]) -> Vec<u8> {
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
fn any_file_holds(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
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

#[test]
fn files_round_trip_stay_encrypted_on_every_device_and_survive_a_killed_node() {
    let data_dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(data_dir.path(), 3, 2);
    let marker = b"kiseki-plaintext-marker-0123456789abcdef";
    let sizes = [0usize, 1, 4095, 4096, (1 << 20) + 7, 9 << 20];
    let local = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        let bytes = file_bytes(*size, index as u64 + 1, marker);
        let path = local.path().join(format!("in-{index}"));
        std::fs::write(&path, &bytes).unwrap();
        let remote = format!("/data/set-{}/file-{index}.bin", index % 2);
        cluster.ok(&["put", path.to_str().unwrap(), &remote], None);
        files.push((remote, bytes));
    }
    let piped = file_bytes(300 << 10, 99, marker);
    cluster.ok(&["put", "-", "/data/piped.bin"], Some(&piped));
    files.push(("/data/piped.bin".to_string(), piped));

    for (remote, bytes) in &files {
        assert_eq!(
            &cluster.ok(&["get", remote], None),
            bytes,
            "{remote} reads back byte-identical"
        );
        let stat = String::from_utf8(cluster.ok(&["stat", remote, "--json"], None)).unwrap();
        assert!(
            stat.contains(&format!("\"size_bytes\":{}", bytes.len())),
            "{remote}: {stat}"
        );
    }
    let listing = String::from_utf8(cluster.ok(&["ls", "/data"], None)).unwrap();
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["set-0/", "set-1/", "piped.bin"]);

    // Rename, remove, and the typed errors of a missing path and of `..`.
    cluster.ok(&["mv", "/data/piped.bin", "/data/set-0/moved.bin"], None);
    assert_eq!(
        cluster.ok(&["get", "/data/set-0/moved.bin"], None),
        files[files.len() - 1].1
    );
    cluster.ok(&["rm", "/data/set-0/moved.bin"], None);
    files.pop();
    let missing = cluster.kiseki(&["get", "/data/set-0/moved.bin"], None);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{missing:?}"
    );
    let dotdot = cluster.kiseki(&["get", "/data/../etc/passwd"], None);
    assert!(!dotdot.status.success());
    assert!(
        String::from_utf8_lossy(&dotdot.stderr).contains("not allowed"),
        "{dotdot:?}"
    );
    cluster.ok(&["mkdir", "-p", "/empty/deeper"], None);
    cluster.ok(&["rm", "/empty/deeper"], None);

    // I-K1: no device or file of any node holds the plaintext marker.
    if let Some(path) = any_file_holds(data_dir.path(), marker) {
        panic!("plaintext found in {}", path.display());
    }

    // SIGKILL node 3 (two of the six devices): every file still reads back.
    let killed = Command::new("kill")
        .arg("-KILL")
        .arg(cluster.node_pids[2].to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    for (remote, bytes) in &files {
        let output = cluster.kiseki(&["get", remote], None);
        assert!(
            output.status.success(),
            "{remote} with node 3 down: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            &output.stdout, bytes,
            "{remote} reads back byte-identical with node 3 down"
        );
    }
    cluster.stop();
}
