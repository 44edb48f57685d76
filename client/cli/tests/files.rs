//! Files through the `kiseki` command against a `kiseki up --nodes 3` cluster with two
//! devices per node, as a user runs it: put files of many sizes (and from standard
//! input), read them back byte-identical, list, stat, rename and remove; no device of any
//! node holds a byte of the plaintext (I-K1); after SIGKILL of one node every file still
//! reads back, from the surviving fragments (degraded reads of EC 4+2).

mod common;

use std::process::Command;

use common::{any_file_holds, file_bytes, Cluster};

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
        // Files within the inline bound (4 KiB) live in their inode, larger ones in chunks.
        let inline = if (1..=4096).contains(&bytes.len()) {
            bytes.len()
        } else {
            0
        };
        assert!(stat.contains(&format!("\"inline_bytes\":{inline}")), "{remote}: {stat}");
        if inline > 0 {
            assert!(stat.contains("\"extents\":0"), "{remote}: {stat}");
        }
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
