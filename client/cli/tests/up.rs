//! `kiseki up --nodes 3` as a newcomer runs it, then `kiseki meta` against it; Ctrl-C
//! (SIGINT) stops every node; a second `kiseki up` on the same data directory finds the
//! files created before.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const KISEKI: &str = env!("CARGO_BIN_EXE_kiseki");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `kiseki up` and waits until all `nodes` print `ready`.
fn up(data_dir: &Path, nodes: u64, port_base: u16, metrics_port: u16) -> Child {
    let server = Path::new(KISEKI).with_file_name("kiseki-server");
    assert!(
        server.is_file(),
        "kiseki-server must be built beside kiseki ({}); run the workspace's tests",
        server.display()
    );
    let mut child = Command::new(KISEKI)
        .args(["up", "--cores", "1", "--device-size", "512MiB"])
        .args(["--nodes", &nodes.to_string(), "--shards", "2", "--s3-port", "0"])
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
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ready = 0;
    for line in lines.by_ref() {
        if line.unwrap() == "ready" {
            ready += 1;
            if ready == nodes {
                break;
            }
        }
    }
    assert_eq!(ready, nodes, "every node prints ready");
    std::thread::spawn(move || for _ in lines {});
    child
}

fn interrupt(mut child: Child) {
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "kiseki up stops cleanly on Ctrl-C: {status}");
}

fn meta(arguments: &[&str]) -> String {
    let output = Command::new(KISEKI).arg("meta").args(arguments).output().unwrap();
    assert!(
        output.status.success(),
        "kiseki meta {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kiseki_up_runs_three_nodes_that_serve_meta_and_keep_data_across_restarts() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    let (port_base, metrics_port) = (free_port(), free_port());
    let seed = format!("127.0.0.1:{port_base}");
    let cluster = up(&data_dir, 3, port_base, metrics_port);
    let created = meta(&[
        "create", "--seed", &seed, "--shard", "1", "--count", "20", "--prefix", "up",
    ]);
    assert_eq!(
        created.lines().filter(|line| line.starts_with("ok up-")).count(),
        20,
        "{created}"
    );
    let status = meta(&["status", "--seed", &seed, "--json"]);
    // Two shards, three replicas each, on three one-core nodes.
    assert_eq!(
        status.lines().filter(|line| line.contains("\"shard\"")).count(),
        6,
        "{status}"
    );
    interrupt(cluster);

    let cluster = up(&data_dir, 3, port_base, metrics_port);
    let found = meta(&["lookup", "--seed", &seed, "--shard", "1", "up-000000", "up-000019"]);
    assert_eq!(found.lines().count(), 2, "{found}");
    interrupt(cluster);
}
