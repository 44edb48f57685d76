//! Crash safety of the fragment store, as a process: a writer runs against a loop device
//! (a file when loop devices are unavailable), is SIGKILLed at random moments, and after
//! every kill the store is reopened and checked against the writer's acknowledgment log:
//! - every acknowledged put reads back byte-identical (I-E1);
//! - every acknowledged delete stays deleted;
//! - nothing ever reads back wrong: a fragment is either absent, intact, or reported
//!   corrupt (I-E2) — and corrupt must never happen for acknowledged ones.
//!
//! `KISEKI_CRASH_ROUNDS` (default 50) and `KISEKI_CRASH_SEED` tune it; the seed is
//! printed so a failing run can be replayed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kiseki_server::torture::{torture_locator, torture_payload};
use kiseki_store::{FragmentStore, StoreConfig, StoreError};

const SERVER: &str = env!("CARGO_BIN_EXE_kiseki-server");

/// A loop device over a file, detached on drop.
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    fn attach(image: &Path) -> Option<LoopDevice> {
        let output = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(image)
            .output()
            .ok()?;
        if !output.status.success() {
            eprintln!("losetup failed: {}", String::from_utf8_lossy(&output.stderr).trim());
            return None;
        }
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim().to_string());
        path.exists().then_some(LoopDevice { path })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// Whether this process could attach a loop device: root and the loop driver present.
fn loop_devices_available() -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    is_root && Path::new("/dev/loop-control").exists()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acknowledged {
    Stored,
    /// A delete was asked for but not acknowledged: either outcome is correct.
    MaybeDeleted,
    Deleted,
}

fn read_acknowledgments(log: &Path) -> HashMap<u64, Acknowledged> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut acknowledged = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(index)) = (parts.next(), parts.next().and_then(|index| index.parse::<u64>().ok())) else {
            panic!("malformed acknowledgment line {line:?}: lines are written with one write(2)");
        };
        match kind {
            "p" => acknowledged.insert(index, Acknowledged::Stored),
            "x" => acknowledged.insert(index, Acknowledged::MaybeDeleted),
            "d" => acknowledged.insert(index, Acknowledged::Deleted),
            other => panic!("unknown acknowledgment {other:?}"),
        };
    }
    acknowledged
}

/// Reopens the store and checks it against the log; returns (stored, deleted) counts.
/// With `clean_up`, deletes everything and closes cleanly; otherwise the verifier stops
/// without closing, so the next round recovers from an unclean stop on top of a crash.
fn verify(device: &Path, log: &Path, clean_up: bool) -> (usize, usize) {
    let acknowledged = read_acknowledgments(log);
    let device = device.to_path_buf();
    let log = log.to_path_buf();
    kiseki_runtime::block_on(kiseki_runtime::ExecutorConfig::default(), 0, async move {
        let store = FragmentStore::open(&device, 0, StoreConfig::default())
            .await
            .expect("reopen after SIGKILL");
        let (mut stored, mut deleted) = (0, 0);
        for (&index, &state) in &acknowledged {
            let result = store.get(&torture_locator(index), None).await;
            match state {
                Acknowledged::Stored => {
                    let fragment = result.unwrap_or_else(|error| panic!("acknowledged put {index} lost: {error}"));
                    assert!(
                        fragment.as_slice() == torture_payload(index).as_slice(),
                        "acknowledged put {index} reads back different bytes"
                    );
                    stored += 1;
                }
                Acknowledged::MaybeDeleted => match result {
                    Ok(fragment) => {
                        assert!(
                            fragment.as_slice() == torture_payload(index).as_slice(),
                            "fragment {index} reads back wrong"
                        );
                        stored += 1;
                    }
                    Err(StoreError::NotFound { .. }) => {}
                    Err(error) => panic!("fragment {index} being deleted: {error}"),
                },
                Acknowledged::Deleted => {
                    assert!(
                        matches!(result, Err(StoreError::NotFound { .. })),
                        "acknowledged delete {index} came back: {result:?}"
                    );
                    deleted += 1;
                }
            }
        }
        // Unacknowledged fragments may or may not be there, but never wrong.
        let mut corrupt_unacknowledged = 0;
        let mut after = None;
        loop {
            let page = store.list(after.as_ref(), 1024);
            let Some(last) = page.last().copied() else {
                break;
            };
            for locator in page {
                let index = u64::from_le_bytes(locator.0[..8].try_into().unwrap());
                assert_eq!(torture_locator(index), locator, "a locator the writer never made");
                match store.get(&locator, None).await {
                    Ok(fragment) => assert!(
                        fragment.as_slice() == torture_payload(index).as_slice(),
                        "fragment {index} reads back wrong"
                    ),
                    Err(StoreError::Corrupt { .. }) => {
                        assert!(
                            !acknowledged.contains_key(&index),
                            "acknowledged fragment {index} is corrupt"
                        );
                        corrupt_unacknowledged += 1;
                    }
                    Err(error) => panic!("listed fragment {index}: {error}"),
                }
            }
            after = Some(last);
        }
        if !clean_up {
            return (stored, deleted);
        }
        // Start the next round empty: delete everything, logging each delete as
        // acknowledged so later rounds check it stays deleted.
        let mut log_file = std::fs::OpenOptions::new().append(true).open(&log).expect("log");
        loop {
            let page = store.list(None, 1024);
            if page.is_empty() {
                break;
            }
            for locator in page {
                store.delete(&locator).await.expect("delete between rounds");
                let index = u64::from_le_bytes(locator.0[..8].try_into().unwrap());
                std::io::Write::write_all(&mut log_file, format!("d {index}\n").as_bytes()).expect("log");
            }
        }
        store.close().await.expect("clean close");
        if corrupt_unacknowledged > 0 {
            eprintln!("{corrupt_unacknowledged} unacknowledged fragments reported corrupt (allowed, never returned)");
        }
        (stored, deleted)
    })
    .expect("executor")
}

struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("KISEKI_CRASH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("KISEKI_CRASH_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {rounds} rounds, KISEKI_CRASH_SEED={seed}");
    let mut random = Random(seed);
    let directory = tempfile::Builder::new()
        .prefix("kiseki-crash")
        .tempdir_in("/var/tmp")
        .unwrap();
    let image = directory.path().join("crash.img");
    std::fs::File::create(&image).unwrap().set_len(512 << 20).unwrap();
    let loop_device = LoopDevice::attach(&image);
    let device = match &loop_device {
        Some(loop_device) => loop_device.path.clone(),
        None => {
            // Where loop devices can be had (root, /dev/loop-control), failing to get one is
            // a failure of the test, not a reason to test something weaker.
            assert!(
                !loop_devices_available(),
                "running as root with /dev/loop-control, yet losetup could not attach a loop device"
            );
            eprintln!("SKIPPED loop device (not root or no loop support): running on a plain file instead");
            image.clone()
        }
    };
    eprintln!("crash test device: {}", device.display());
    let status = Command::new(SERVER)
        .args([
            "format",
            "--cores",
            "1",
            "--segment-size",
            "4MiB",
            "--force-format",
            "--device",
        ])
        .arg(&device)
        .status()
        .unwrap();
    assert!(status.success(), "format failed");
    let log = directory.path().join("acknowledged.log");
    let mut total_stored = 0;
    for round in 0..rounds {
        let mut child = Command::new(SERVER)
            .args(["torture-writer", "--device"])
            .arg(&device)
            .arg("--ack-log")
            .arg(&log)
            .arg("--first-index")
            .arg((round * 1_000_000).to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + random.below(400)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("writer exited by itself in round {round}: {status}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Every fourth round empties the store and closes cleanly; the others leave it
        // as a crash did, so crashes stack on unclean recoveries.
        let (stored, deleted) = verify(&device, &log, round % 4 == 3);
        total_stored = stored;
        eprintln!("round {round}: {stored} acknowledged fragments intact, {deleted} acknowledged deletes hold");
    }
    assert!(total_stored > 0, "the writer never got an acknowledgment");
}
