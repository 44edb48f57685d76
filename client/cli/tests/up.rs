//! `kiseki up --nodes 3` as a newcomer runs it, then `kiseki meta` against it; Ctrl-C
//! (SIGINT) stops every node; a second `kiseki up` on the same data directory finds the
//! files created before.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;

use common::{free_port, KISEKI};

/// Starts `kiseki up` and waits until it prints `kiseki up: ready`; `ports` are the nodes',
/// their metrics', the control plane's, the key server's and their metrics'.
fn up(data_dir: &Path, nodes: u64, ports: [u16; 6]) -> Child {
    let server = Path::new(KISEKI).with_file_name("kiseki-server");
    assert!(
        server.is_file(),
        "kiseki-server must be built beside kiseki ({}); run the workspace's tests",
        server.display()
    );
    let mut child = Command::new(KISEKI)
        .args(["up", "--cores", "1", "--device-size", "512MiB"])
        .args([
            "--nodes",
            &nodes.to_string(),
            "--shards",
            "2",
            "--s3-port",
            "0",
            "--nfs-port",
            "0",
        ])
        .args([
            "--port-base",
            &ports[0].to_string(),
            "--metrics-port",
            &ports[1].to_string(),
        ])
        .args(["--control-port", &ports[2].to_string()])
        .args(["--control-metrics-port", &ports[3].to_string()])
        .args(["--keyserver-port", &ports[4].to_string()])
        .args(["--keyserver-metrics-port", &ports[5].to_string()])
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
        let line = line.unwrap();
        if line == "ready" {
            ready += 1;
        }
        if line == "kiseki up: ready" {
            break;
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
    let ports = [(); 6].map(|()| free_port());
    let seed = format!("127.0.0.1:{}", ports[0]);
    let cluster = up(&data_dir, 3, ports);
    let profile = data_dir.join("client.json");
    let kiseki = |arguments: &[&str], stdin: Option<&[u8]>| {
        let mut child = Command::new(KISEKI)
            .args(arguments)
            .arg("--profile")
            .arg(&profile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            std::io::Write::write_all(&mut input, bytes).unwrap();
        }
        drop(input);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "kiseki {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    // The files of the default tenant's namespace, through the profile `kiseki up` wrote.
    kiseki(&["put", "-", "/hello/world.txt"], Some(b"hello, kiseki\n"));
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

    let cluster = up(&data_dir, 3, ports);
    let found = meta(&["lookup", "--seed", &seed, "--shard", "1", "up-000000", "up-000019"]);
    assert_eq!(found.lines().count(), 2, "{found}");
    // The control plane's records and the key server's keys outlived the restart: the
    // same tenant, namespace and access key, and the file still decrypts.
    assert_eq!(kiseki(&["get", "/hello/world.txt"], None), b"hello, kiseki\n");
    let tenants = String::from_utf8(kiseki(&["tenant", "list", "--json"], None)).unwrap();
    assert_eq!(tenants.lines().count(), 1, "{tenants}");
    assert!(tenants.contains("\"access_keys\":1"), "{tenants}");
    interrupt(cluster);
}
