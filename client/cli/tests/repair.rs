//! End to end through the `kiseki` command, 3 nodes on loopback with two devices each and
//! EC 4+2: files from 0 bytes to 64 MiB are written; node 3 is SIGKILLed and every file
//! reads back from the surviving fragments while `kiseki status` shows the node down and
//! its chunks degraded, and a file written meanwhile lands at the write quorum (4 of 6
//! fragments) and reads back; once node 3 is back, `kiseki repair` writes that file's
//! missing fragments; the cluster then restarts with one device of node 2 wiped (formatted
//! anew); `kiseki status` counts the chunks that lost a fragment, `kiseki repair`
//! rebuilds them from the survivors, and `kiseki status` then shows zero degraded chunks
//! and every file still reads back byte-identical.
//!
//! A second test leaves it to the control plane's keeper: after node 3 comes back, the
//! chunks written without it regain full redundancy with no `kiseki repair`, and the
//! fragments of a removed file are collected with no `kiseki gc`.
//!
//! `KISEKI_E2E_BYTES` sets how much is written (default 160 MiB; the full run is
//! `KISEKI_E2E_BYTES=1073741824`).

mod common;

use std::process::Command;

use common::{file_bytes, Cluster, Keeper, KISEKI};

/// The file sizes to write: the edge cases first, then 16 MiB files up to `total`.
fn sizes(total: usize) -> Vec<usize> {
    let mut sizes = vec![0, 1, 4095, 4096, (1 << 20) + 7, 9 << 20, 64 << 20];
    let mut written: usize = sizes.iter().sum();
    while written < total {
        let next = (16usize << 20).min(total - written);
        sizes.push(next);
        written += next;
    }
    sizes
}

fn status(cluster: &Cluster) -> serde_json::Value {
    let output = cluster.admin(&["status", "--json"]);
    assert!(
        output.status.success(),
        "kiseki status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn degraded(status: &serde_json::Value) -> u64 {
    status["chunks"]["degraded"].as_u64().unwrap()
}

/// `kiseki repair --json ARGS`, which must succeed; its report.
fn repair_ok(cluster: &Cluster, arguments: &[&str]) -> serde_json::Value {
    let output = cluster.admin(&[&["repair", "--json"], arguments].concat());
    assert!(
        output.status.success(),
        "kiseki repair: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn read_back(cluster: &Cluster, files: &[(String, Vec<u8>)], when: &str) {
    for (remote, bytes) in files {
        let output = cluster.kiseki(&["get", remote], None);
        assert!(
            output.status.success(),
            "{remote} {when}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout == *bytes, "{remote} reads back byte-identical {when}");
    }
}

#[test]
fn lost_node_reads_degraded_and_lost_device_is_repaired() {
    let total: usize = std::env::var("KISEKI_E2E_BYTES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(160 << 20);
    let data_dir = tempfile::tempdir().unwrap();
    let device_size = format!("{}", (total as u64 / 2).max(512 << 20));
    let cluster = Cluster::start_sized(data_dir.path(), 3, 2, &device_size);
    let local = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (index, size) in sizes(total).into_iter().enumerate() {
        let bytes = file_bytes(size, index as u64 + 11, b"e2e");
        let path = local.path().join(format!("in-{index}"));
        std::fs::write(&path, &bytes).unwrap();
        let remote = format!("/e2e/dir-{}/file-{index}", index % 3);
        cluster.ok(&["put", "--durability", "4+2", path.to_str().unwrap(), &remote], None);
        std::fs::remove_file(&path).unwrap();
        files.push((remote, bytes));
    }
    let healthy = status(&cluster);
    let chunks = healthy["chunks"]["chunks"].as_u64().unwrap();
    assert!(chunks > 0, "{healthy}");
    assert_eq!(degraded(&healthy), 0, "all fragments written: {healthy}");

    // Node 3 down: its two devices' fragments are missing, every file still reads.
    cluster.kill_node(3);
    let down = status(&cluster);
    let node3 = &down["nodes"][2];
    assert!(node3["state"].as_str().unwrap().starts_with("down"), "{down}");
    assert!(degraded(&down) > 0, "node 3 held fragments: {down}");
    assert_eq!(down["chunks"]["lost"].as_u64().unwrap(), 0, "{down}");
    let nodes = cluster.admin(&["node", "list", "--json"]);
    assert!(nodes.status.success(), "{nodes:?}");
    let nodes: Vec<serde_json::Value> = String::from_utf8(nodes.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["state"], "up");
    assert!(nodes[2]["state"].as_str().unwrap().starts_with("down"), "{nodes:?}");
    let shards = cluster.admin(&["shard", "list", "--json"]);
    assert!(shards.status.success(), "{shards:?}");
    assert_eq!(
        String::from_utf8(shards.stdout).unwrap().lines().count(),
        4,
        "kiseki up --shards 4"
    );
    let waiting = cluster.admin(&["repair", "--json"]);
    assert!(waiting.status.success(), "{waiting:?}");
    let waiting: serde_json::Value = serde_json::from_slice(&waiting.stdout).unwrap();
    assert!(waiting["chunks_waiting"].as_u64().unwrap() > 0, "{waiting}");
    read_back(&cluster, &files, "with node 3 down");
    // A write while node 3 is down lands at the write quorum (4 of 4+2) and reads back.
    let late = file_bytes(3 << 20, 999, b"late");
    let late_path = local.path().join("late");
    std::fs::write(&late_path, &late).unwrap();
    cluster.ok(
        &["put", "--durability", "4+2", late_path.to_str().unwrap(), "/e2e/late"],
        None,
    );
    files.push(("/e2e/late".to_string(), late));
    read_back(&cluster, &files[files.len() - 1..], "written with node 3 down");
    let with_late = status(&cluster);
    let chunks = with_late["chunks"]["chunks"].as_u64().unwrap();
    assert!(
        degraded(&with_late) > degraded(&down),
        "the late file is degraded: {with_late}"
    );

    // Node 3 back (its data intact): the late file's missing fragments are written to it.
    let cluster = cluster.restart_after(|_| {});
    let back = status(&cluster);
    assert_eq!(degraded(&back), degraded(&with_late) - degraded(&down), "{back}");
    let repair = repair_ok(&cluster, &[]);
    assert_eq!(repair["chunks_repaired"].as_u64().unwrap(), degraded(&back), "{repair}");
    assert_eq!(degraded(&status(&cluster)), 0, "full redundancy after node 3 is back");

    // Restart with node 2's second device wiped.
    let cluster = cluster.restart_after(|data_dir| {
        let wiped = data_dir.join("node-2").join("device-1.img");
        let server = std::path::Path::new(KISEKI).with_file_name("kiseki-server");
        let format = Command::new(server)
            .args(["format", "--cores", "1", "--force-format", "--device"])
            .arg(&wiped)
            .output()
            .unwrap();
        assert!(format.status.success(), "{format:?}");
    });
    let wiped = status(&cluster);
    assert!(
        wiped["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|node| node["state"] == "up"),
        "{wiped}"
    );
    assert!(degraded(&wiped) > 0, "the wiped device held fragments: {wiped}");
    read_back(&cluster, &files, "with a wiped device");

    let repair = repair_ok(&cluster, &[]);
    assert_eq!(
        repair["chunks_repaired"].as_u64().unwrap(),
        degraded(&wiped),
        "{repair}"
    );
    let repaired = status(&cluster);
    assert_eq!(degraded(&repaired), 0, "full redundancy restored: {repaired}");
    assert_eq!(repaired["chunks"]["chunks"].as_u64().unwrap(), chunks);

    // A scrub reads and verifies every chunk, parity included, and finds nothing to do.
    let scrub = repair_ok(&cluster, &["--scrub"]);
    assert_eq!(scrub["chunks_checked"].as_u64().unwrap(), chunks, "{scrub}");
    assert_eq!(scrub["chunks_repaired"].as_u64().unwrap(), 0, "{scrub}");

    // Node 3 again: with the repaired device in place every file reads back.
    cluster.kill_node(3);
    read_back(&cluster, &files, "after repair with node 3 down");
    cluster.stop();
}

/// The value of the metric `name` (no labels) in `text`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in the control plane's metrics:\n{text}"))
}

/// Polls `done` every second for up to `seconds`; whether it held.
fn eventually(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    done()
}

#[test]
fn keeper_repairs_a_returned_node_and_collects_removed_files() {
    let data_dir = tempfile::tempdir().unwrap();
    let keeper = Keeper {
        repair_interval_s: 3_600,
        gc_interval_s: 5,
        gc_grace_s: 10,
    };
    let cluster = Cluster::start_keeping(data_dir.path(), 3, 2, keeper);
    let local = tempfile::tempdir().unwrap();
    let put = |cluster: &Cluster, name: &str, size: usize, seed: u64| {
        let bytes = file_bytes(size, seed, b"keeper");
        let path = local.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let remote = format!("/keeper/{name}");
        cluster.ok(&["put", "--durability", "4+2", path.to_str().unwrap(), &remote], None);
        (remote, bytes)
    };
    let mut files = vec![put(&cluster, "early", 5 << 20, 1), put(&cluster, "doomed", 3 << 20, 2)];

    // Written while node 3 is down: at the write quorum, degraded from birth.
    cluster.kill_node(3);
    files.push(put(&cluster, "late", 6 << 20, 3));
    let cluster = cluster.restart_after(|_| {});
    let repaired = eventually(120, || degraded(&status(&cluster)) == 0);
    assert!(repaired, "the keeper restores full redundancy: {}", status(&cluster));
    let metrics = cluster.control_metrics();
    assert!(
        metric(&metrics, "kiseki_control_chunks_repaired_total") > 0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "kiseki_control_fragments_rebuilt_total") > 0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "kiseki_control_repair_failures_total"), 0, "{metrics}");
    assert_eq!(metric(&metrics, "kiseki_control_nodes_down"), 0, "{metrics}");

    // A removed file's fragments are referenced by nothing: the keeper's GC deletes them.
    let doomed = files.remove(1);
    cluster.ok(&["rm", &doomed.0], None);
    let unreferenced = || {
        let report = cluster.admin_json(&["gc", "--dry-run", "--grace-s", "0", "--json"]);
        report["fragments_unreferenced"].as_u64().unwrap()
    };
    assert!(unreferenced() > 0, "the removed file's fragments wait for GC");
    assert!(eventually(120, || unreferenced() == 0), "the keeper collects them");
    let metrics = cluster.control_metrics();
    assert!(
        metric(&metrics, "kiseki_control_gc_fragments_deleted_total") > 0,
        "{metrics}"
    );
    read_back(&cluster, &files, "after the keeper's repair and GC");
    cluster.stop();
}
