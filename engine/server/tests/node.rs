//! `kiseki-server` as an operator runs it: format, run, scrape metrics and health,
//! SIGTERM, run again on the same device; and the refusals an operator can hit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_kiseki-server");

fn format(device: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(SERVER)
        .args([
            "format",
            "--cores",
            "1",
            "--segment-size",
            "1MiB",
            "--size",
            "64MiB",
            "--device",
        ])
        .arg(device)
        .args(extra)
        .output()
        .unwrap()
}

/// Starts a node on an ephemeral metrics port; returns it and the port's address.
fn start(device: &Path) -> (Child, String) {
    let mut child = Command::new(SERVER)
        .args(["run", "--cores", "1", "--metrics-addr", "127.0.0.1:0", "--device"])
        .arg(device)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut address = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("metrics http://") {
            address = rest.split('/').next().map(str::to_string);
        }
        if line == "ready" {
            break;
        }
    }
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, address.expect("the node prints its metrics address"))
}

fn get(address: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// `kiseki-server run` that is expected to refuse the device and exit.
fn run_refused(device: &Path, cores: &str) -> std::process::Output {
    Command::new(SERVER)
        .args(["run", "--cores", cores, "--metrics-addr", "127.0.0.1:0", "--device"])
        .arg(device)
        .output()
        .unwrap()
}

fn stop(mut child: Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "the node exits cleanly on SIGTERM: {status}");
}

#[test]
fn a_node_runs_serves_metrics_and_stops_cleanly() {
    let directory = tempfile::tempdir().unwrap();
    let device = directory.path().join("node.img");
    assert!(format(&device, &[]).status.success());
    for _restart in 0..2 {
        let (child, address) = start(&device);
        let (status, body) = get(&address, "/health");
        assert!(status.contains("200"), "{status}");
        assert!(body.contains("\"status\":\"ok\""), "{body}");
        let (status, body) = get(&address, "/metrics");
        assert!(status.contains("200"), "{status}");
        for family in [
            "kiseki_store_puts_total{core=\"0\"",
            "kiseki_store_free_bytes{core=\"0\"",
            "kiseki_store_put_latency_microseconds{core=\"0\"",
            "kiseki_core_stalls_total{core=\"0\"}",
        ] {
            assert!(body.contains(family), "metrics lack {family}");
        }
        let (status, _) = get(&address, "/nothing");
        assert!(status.contains("404"), "{status}");
        stop(child);
    }
}

#[test]
fn operator_mistakes_get_clear_errors() {
    let directory = tempfile::tempdir().unwrap();
    let device = directory.path().join("node.img");
    assert!(format(&device, &[]).status.success());
    // A second format without --force-format is refused, naming the device.
    let output = format(&device, &[]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("already formatted") && message.contains("node.img"),
        "{message}"
    );
    assert!(format(&device, &["--force-format"]).status.success());
    // Running with another core count than the format is refused.
    let output = run_refused(&device, "2");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("formatted for 1 cores"), "{message}");
    // A foreign file is refused by run and by format.
    let foreign = directory.path().join("foreign.img");
    let mut content = b"not a kiseki device".to_vec();
    content.resize(64 << 20, 7);
    std::fs::write(&foreign, content).unwrap();
    let output = run_refused(&foreign, "1");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("foreign data"));
    assert!(!format(&foreign, &[]).status.success());
}
