//! Crash test of the cluster, through the `kiseki` command on 3 nodes × 2 devices (EC
//! 4+2): each round starts `kiseki put` of a new file and, at a random moment, SIGKILLs
//! either the writer or node 2 or 3 (left down, so later rounds write with a node down,
//! until another node is to be killed: it is restarted first). Afterwards:
//! - every file whose `put` was acknowledged (exit 0) reads back byte-identical;
//! - a file whose writer was killed reads back, if at all, as a prefix of its bytes:
//!   never bytes that were not written (nothing corrupt is read);
//! - `kiseki repair` restores every chunk (zero degraded, zero lost);
//! - `kiseki gc` deletes what the killed writers left unreferenced, and a second pass
//!   finds nothing left (no fragment leaked), while every file still reads back.
//!
//! `KISEKI_CLUSTER_CRASH_ROUNDS` (default 20) and `KISEKI_CLUSTER_CRASH_SEED` tune it;
//! the seed is printed so a failing run can be replayed.

mod common;

use std::time::Duration;

use common::{file_bytes, Cluster};

/// xorshift, seeded: the test's only source of randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// What `get` returns for `remote`, or `None` if the file does not exist.
fn read(cluster: &Cluster, remote: &str) -> Option<Vec<u8>> {
    let output = cluster.kiseki(&["get", remote], None);
    if output.status.success() {
        return Some(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not found"), "get {remote}: {stderr}");
    None
}

fn check_files(cluster: &Cluster, acknowledged: &[(String, Vec<u8>)], killed: &[(String, Vec<u8>)]) {
    for (remote, bytes) in acknowledged {
        let read = read(cluster, remote).unwrap_or_else(|| panic!("acknowledged {remote} lost"));
        assert!(read == *bytes, "acknowledged {remote} reads back different bytes");
    }
    for (remote, bytes) in killed {
        if let Some(read) = read(cluster, remote) {
            assert!(
                read.len() <= bytes.len() && read == bytes[..read.len()],
                "{remote}, whose writer was killed, reads back bytes that were never written"
            );
        }
    }
}

#[test]
fn sigkill_of_writer_or_node_loses_nothing_acknowledged_and_gc_leaks_nothing() {
    let rounds: u64 = std::env::var("KISEKI_CLUSTER_CRASH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KISEKI_CLUSTER_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 0x9e37_79b9 + 1);
    eprintln!("cluster crash test: {rounds} rounds, KISEKI_CLUSTER_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let data_dir = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    // Every restart seals each device's active segment early; compaction frees such
    // segments after the open, and 2 GiB devices leave room even if it falls behind.
    let mut cluster = Cluster::start_sized(data_dir.path(), 3, 2, "2GiB");
    // The node SIGKILLed in an earlier round, still down: the next rounds write at the
    // write quorum, and the node is restarted before another is killed.
    let mut down: Option<u64> = None;
    let mut acknowledged = Vec::new();
    let mut killed = Vec::new();
    for round in 0..rounds {
        let size = (rng.below(12 << 20) + 1) as usize;
        let bytes = file_bytes(size, seed.wrapping_add(round), b"crash");
        let path = local.path().join(format!("round-{round}"));
        std::fs::write(&path, &bytes).unwrap();
        let remote = format!("/crash/round-{round}");
        let victim = rng.below(3);
        if victim != 0 {
            if let Some(node) = down.take() {
                eprintln!("round {round}: restarting node {node} first");
                cluster = cluster.restart_after(|_| {});
            }
        }
        let mut writer = cluster.spawn(&["put", "--durability", "4+2", path.to_str().unwrap(), &remote]);
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        if victim == 0 {
            let _ = writer.kill();
        } else {
            cluster.kill_node(victim as usize + 1);
            down = Some(victim + 1);
        }
        let status = writer.wait().unwrap();
        eprintln!(
            "round {round}: {size} bytes, killed {}, put {}",
            if victim == 0 {
                String::from("the writer")
            } else {
                format!("node {}", victim + 1)
            },
            if status.success() {
                "acknowledged"
            } else {
                "not acknowledged"
            }
        );
        if status.success() {
            acknowledged.push((remote, bytes));
        } else {
            killed.push((remote, bytes));
        }
        std::fs::remove_file(&path).unwrap();
    }
    if down.is_some() {
        cluster = cluster.restart_after(|_| {});
    }
    assert!(!acknowledged.is_empty(), "some puts must have been acknowledged");
    check_files(&cluster, &acknowledged, &killed);

    let repair = cluster.admin_json(&["repair", "--json"]);
    assert_eq!(repair["chunks_waiting"].as_u64().unwrap(), 0, "{repair}");
    let status = cluster.admin_json(&["status", "--json"]);
    assert_eq!(status["chunks"]["degraded"].as_u64().unwrap(), 0, "{status}");
    assert_eq!(status["chunks"]["lost"].as_u64().unwrap(), 0, "{status}");

    // Nothing writes now, so no grace is needed between the two walks.
    let gc = cluster.admin_json(&["gc", "--grace-s", "0", "--json"]);
    assert!(gc["nodes_down"].as_array().unwrap().is_empty(), "{gc}");
    assert_eq!(gc["fragments_deleted"], gc["fragments_unreferenced"], "{gc}");
    eprintln!("gc: {gc}");
    let again = cluster.admin_json(&["gc", "--grace-s", "0", "--dry-run", "--json"]);
    assert_eq!(
        again["fragments_unreferenced"].as_u64().unwrap(),
        0,
        "no fragment leaked: {again}"
    );
    check_files(&cluster, &acknowledged, &killed);
    let status = cluster.admin_json(&["status", "--json"]);
    assert_eq!(
        status["chunks"]["degraded"].as_u64().unwrap(),
        0,
        "gc deleted a referenced fragment: {status}"
    );
    cluster.stop();
}
