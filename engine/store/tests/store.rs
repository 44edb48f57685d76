//! The fragment store on real files opened O_DIRECT through the ring.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kiseki_runtime::{block_on, ExecutorConfig};
use kiseki_store::{format_device, read_superblock, FormatOptions, FragmentStore, Locator, StoreConfig, StoreError};
use proptest::prelude::*;

fn run<F: Future + 'static>(future: F) -> F::Output
where
    F::Output: 'static,
{
    let config = ExecutorConfig {
        dma_arena_bytes: 16 << 20,
        ..ExecutorConfig::default()
    };
    block_on(config, 0, future).expect("executor")
}

/// A formatted file device of `megabytes` with small segments so limits are reached.
fn device(directory: &Path, megabytes: u64, segment_kib: u64) -> PathBuf {
    let path = directory.join("device.img");
    format_device(
        &path,
        &FormatOptions {
            cores: 1,
            segment_bytes: segment_kib << 10,
            force: true,
            create_bytes: Some(megabytes << 20),
        },
    )
    .expect("format");
    path
}

fn small_config() -> StoreConfig {
    StoreConfig {
        batch_payload_bytes_max: 128 << 10,
        batch_entries_max: 64,
        checkpoint_interval_bytes: 1 << 20,
        compaction_interval_ms: 20,
        scrub_interval_ms: 0,
        background_bytes_per_second: 512 << 20,
        ..StoreConfig::default()
    }
}

fn locator(key: u64) -> Locator {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&key.to_le_bytes());
    bytes[8..16].copy_from_slice(&key.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    Locator(bytes)
}

fn payload(key: u64, bytes: usize) -> Vec<u8> {
    let mut state = key.wrapping_add(1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn put_get_delete_list_round_trip() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 32, 256);
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        let sizes = [0usize, 1, 4095, 4096, 4097, 100_000, 128 << 10];
        for (key, &size) in sizes.iter().enumerate() {
            store
                .put(locator(key as u64), &payload(key as u64, size))
                .await
                .unwrap();
        }
        for (key, &size) in sizes.iter().enumerate() {
            let fragment = store.get(&locator(key as u64), None).await.unwrap();
            assert_eq!(fragment.as_slice(), payload(key as u64, size).as_slice());
        }
        let range = store.get(&locator(5), Some(10..5000)).await.unwrap();
        assert_eq!(range.as_slice(), &payload(5, 100_000)[10..5000]);
        assert!(matches!(
            store.get(&locator(5), Some(0..100_001)).await,
            Err(StoreError::Invalid(_))
        ));
        // Same bytes again: a no-op. Other bytes: refused (I-C1).
        store.put(locator(3), &payload(3, 4096)).await.unwrap();
        assert!(matches!(
            store.put(locator(3), &payload(99, 4096)).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(matches!(
            store
                .put(locator(99), &vec![0; store.config().fragment_bytes_max + 1])
                .await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.list(None, 100).len(), sizes.len());
        let first_two = store.list(None, 2);
        assert_eq!(store.list(Some(&first_two[1]), 100).len(), sizes.len() - 2);
        store.delete(&locator(2)).await.unwrap();
        assert!(!store.contains(&locator(2)));
        assert!(matches!(
            store.get(&locator(2), None).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete(&locator(2)).await,
            Err(StoreError::NotFound { .. })
        ));
        let stats = store.stats();
        assert_eq!(stats.puts, sizes.len() as u64);
        assert_eq!(stats.deletes, 1);
        store.close().await.unwrap();
        assert!(matches!(
            store.put(locator(50), b"late").await,
            Err(StoreError::Stopped { .. })
        ));
    });
}

#[test]
fn concurrent_puts_share_batches_and_survive_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 64, 1024);
    let reopen_path = path.clone();
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        let mut handles = Vec::new();
        for key in 0..400u64 {
            let store = store.clone();
            handles.push(
                kiseki_runtime::spawn("writer", async move {
                    store
                        .put(locator(key), &payload(key, 1000 + (key as usize * 37) % 9000))
                        .await
                })
                .unwrap(),
            );
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let stats = store.stats();
        assert!(
            stats.batches < 400,
            "group commit must batch concurrent puts ({} batches)",
            stats.batches
        );
        store.close().await.unwrap();
    });
    // Reopen from the final checkpoint.
    run(async move {
        let store = FragmentStore::open(&reopen_path, 0, small_config()).await.unwrap();
        for key in 0..400u64 {
            let fragment = store.get(&locator(key), None).await.unwrap();
            assert_eq!(
                fragment.as_slice(),
                payload(key, 1000 + (key as usize * 37) % 9000).as_slice()
            );
        }
        store.close().await.unwrap();
    });
}

#[test]
fn unclean_stop_replays_the_log() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 32, 256);
    let first = path.clone();
    run(async move {
        let store = FragmentStore::open(&first, 0, small_config()).await.unwrap();
        for key in 0..50u64 {
            store.put(locator(key), &payload(key, 20_000)).await.unwrap();
        }
        for key in 0..10u64 {
            store.delete(&locator(key)).await.unwrap();
        }
        // No close: the executor drops the store without a final checkpoint.
    });
    let second = path.clone();
    run(async move {
        let store = FragmentStore::open(&second, 0, small_config()).await.unwrap();
        for key in 0..50u64 {
            let result = store.get(&locator(key), None).await;
            if key < 10 {
                assert!(
                    matches!(result, Err(StoreError::NotFound { .. })),
                    "deleted {key} came back"
                );
            } else {
                assert_eq!(result.unwrap().as_slice(), payload(key, 20_000).as_slice());
            }
        }
        // Writes after a replay go to a fresh segment; a second unclean stop still replays.
        store.put(locator(1000), b"after replay").await.unwrap();
    });
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        assert_eq!(
            store.get(&locator(1000), None).await.unwrap().as_slice(),
            b"after replay"
        );
        assert_eq!(store.list(None, 1000).len(), 41);
    });
}

/// Tombstones for many fragments share batches and flushes, skip what is absent, and
/// replay after an unclean stop.
#[test]
fn deleting_many_fragments_shares_batches_and_replays() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 32, 256);
    let first = path.clone();
    run(async move {
        let store = FragmentStore::open(&first, 0, small_config()).await.unwrap();
        for key in 0..300u64 {
            store.put(locator(key), &payload(key, 100)).await.unwrap();
        }
        let before = store.stats();
        // 0..200 present, 1000..1050 never stored; 200 present in groups of 64.
        let doomed: Vec<Locator> = (0..200u64).chain(1000..1050).map(locator).collect();
        store.delete_present(&doomed).await.unwrap();
        let after = store.stats();
        // Four groups of at most 64; background compaction may add batches of its own,
        // but nothing near one per tombstone.
        assert!(
            after.batches - before.batches < 50,
            "200 tombstones took {} batches",
            after.batches - before.batches
        );
        assert!(
            after.flushes - before.flushes < 50,
            "200 tombstones took {} flushes",
            after.flushes - before.flushes
        );
        // Deleting them again finds nothing to do.
        store.delete_present(&doomed).await.unwrap();
        assert_eq!(store.list(None, 1000).len(), 100);
        // No close: the executor drops the store without a final checkpoint.
    });
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        for key in 0..300u64 {
            let result = store.get(&locator(key), None).await;
            if key < 200 {
                assert!(
                    matches!(result, Err(StoreError::NotFound { .. })),
                    "deleted {key} came back"
                );
            } else {
                assert_eq!(result.unwrap().as_slice(), payload(key, 100).as_slice());
            }
        }
    });
}

#[test]
fn no_space_is_a_clean_error_and_compaction_gives_space_back() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 8, 256);
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        let size = 60_000;
        let mut stored = Vec::new();
        let error = loop {
            let key = stored.len() as u64;
            match store.put(locator(key), &payload(key, size)).await {
                Ok(()) => stored.push(key),
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StoreError::NoSpace { .. }), "got {error}");
        assert!(
            error.to_string().contains("device.img"),
            "error names the device: {error}"
        );
        // Everything acknowledged before the error is intact.
        for &key in &stored {
            assert_eq!(
                store.get(&locator(key), None).await.unwrap().as_slice(),
                payload(key, size).as_slice()
            );
        }
        // Delete three quarters, compact, and the space comes back.
        for &key in stored.iter().filter(|key| *key % 4 != 0) {
            store.delete(&locator(key)).await.unwrap();
        }
        // The background compaction may get to the segments first: either way, once
        // `compact_now` returns the space is back.
        let before = store.space().free_bytes;
        store.compact_now().await.unwrap();
        let after = store.space().free_bytes;
        assert!(
            after >= before && after >= 20 * size as u64,
            "free before {before}, after {after}"
        );
        for key in 10_000..10_020u64 {
            store.put(locator(key), &payload(key, size)).await.unwrap();
        }
        for &key in stored.iter().filter(|key| *key % 4 == 0) {
            assert_eq!(
                store.get(&locator(key), None).await.unwrap().as_slice(),
                payload(key, size).as_slice()
            );
        }
        store.close().await.unwrap();
    });
}

/// Finds `pattern` in the raw device (to damage a stored payload on purpose).
fn find(path: &Path, pattern: &[u8]) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .windows(pattern.len())
        .position(|window| window == pattern)
        .expect("pattern on device") as u64
}

/// XORs the byte at `offset` of the device file with `mask`, durably.
fn flip_bits(path: &Path, offset: u64, mask: u8) {
    let file = std::fs::OpenOptions::new().write(true).read(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ mask], offset).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn a_flipped_bit_is_reported_never_returned() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 16, 256);
    let writer = path.clone();
    let data = payload(7, 8192);
    let written = data.clone();
    run(async move {
        let store = FragmentStore::open(&writer, 0, small_config()).await.unwrap();
        store.put(locator(7), &written).await.unwrap();
        store.put(locator(8), &payload(8, 8192)).await.unwrap();
        store.close().await.unwrap();
    });
    flip_bits(&path, find(&path, &data[..64]) + 5000, 0x10);
    let repair_path = path.clone();
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        let report = store.scrub_all().await.unwrap();
        assert_eq!(report.corrupt, vec![locator(7)]);
        assert_eq!(report.extents_checked, 2);
        match store.get(&locator(7), None).await {
            Err(StoreError::Corrupt { device, .. }) => assert_eq!(device, path),
            other => panic!("corrupt extent returned {other:?}"),
        }
        assert_eq!(
            store.get(&locator(8), None).await.unwrap().as_slice(),
            payload(8, 8192).as_slice()
        );
        store.close().await.unwrap();
    });
    // The corrupt mark survives a reopen (it is in the checkpoint); writing the same
    // bytes again (a repair) replaces the damaged extent.
    run(async move {
        let store = FragmentStore::open(&repair_path, 0, small_config()).await.unwrap();
        assert!(matches!(
            store.get(&locator(7), None).await,
            Err(StoreError::Corrupt { .. })
        ));
        store.put(locator(7), &data).await.unwrap();
        assert_eq!(store.get(&locator(7), None).await.unwrap().as_slice(), data.as_slice());
        store.close().await.unwrap();
    });
}

/// The background scrub waits its first-pass delay, then finds a flipped bit by itself
/// and passes again after its pass interval.
#[test]
fn background_scrub_passes_find_a_flipped_bit() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 16, 256);
    let writer = path.clone();
    let data = payload(9, 8192);
    let written = data.clone();
    run(async move {
        let store = FragmentStore::open(&writer, 0, small_config()).await.unwrap();
        store.put(locator(9), &written).await.unwrap();
        store.put(locator(10), &payload(10, 8192)).await.unwrap();
        store.close().await.unwrap();
    });
    flip_bits(&path, find(&path, &data[..64]) + 100, 0x01);
    run(async move {
        // With the defaults' first-pass delay (minutes), nothing is scrubbed at once.
        let config = StoreConfig {
            scrub_interval_ms: 1,
            ..StoreConfig::default()
        };
        let store = FragmentStore::open(&path, 0, config).await.unwrap();
        kiseki_runtime::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(store.stats().scrubbed_bytes, 0, "scrubbed before its first-pass delay");
        assert!(store.corrupt().is_empty());
        store.close().await.unwrap();
        let config = StoreConfig {
            scrub_interval_ms: 1,
            scrub_first_pass_delay_ms: 1,
            scrub_pass_interval_ms: 1,
            ..StoreConfig::default()
        };
        let store = FragmentStore::open(&path, 0, config).await.unwrap();
        let mut waited_ms = 0;
        while store.stats().scrubbed_bytes < 4 * 8192 && waited_ms < 60_000 {
            kiseki_runtime::sleep(std::time::Duration::from_millis(10)).await;
            waited_ms += 10;
        }
        assert!(
            store.stats().scrubbed_bytes >= 4 * 8192,
            "two passes over two extents: {} bytes scrubbed",
            store.stats().scrubbed_bytes
        );
        assert_eq!(store.corrupt(), vec![locator(9)]);
        assert!(matches!(
            store.get(&locator(9), None).await,
            Err(StoreError::Corrupt { .. })
        ));
        store.close().await.unwrap();
    });
}

#[test]
fn damaged_devices_give_typed_errors_naming_the_device() {
    let directory = tempfile::tempdir().unwrap();
    // Blank.
    let blank = directory.path().join("blank.img");
    std::fs::File::create(&blank).unwrap().set_len(8 << 20).unwrap();
    assert!(matches!(read_superblock(&blank), Err(StoreError::Unformatted { .. })));
    // Foreign.
    let foreign = directory.path().join("foreign.img");
    let mut content = b"#!/bin/sh\necho hello\n".to_vec();
    content.resize(8 << 20, 0);
    std::fs::write(&foreign, &content).unwrap();
    let error = read_superblock(&foreign).unwrap_err();
    assert!(matches!(error, StoreError::ForeignData { .. }), "{error}");
    assert!(error.to_string().contains("foreign.img"));
    let refused = format_device(&foreign, &FormatOptions::default()).unwrap_err();
    assert!(matches!(refused, StoreError::ForeignData { .. }), "{refused}");
    // Formatted: refusing a second format without force.
    let path = device(directory.path(), 16, 256);
    assert!(matches!(
        format_device(&path, &FormatOptions::default()),
        Err(StoreError::AlreadyFormatted { .. })
    ));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // Primary damaged: the mirror serves.
    file.write_all_at(&[0xff; 16], 100).unwrap();
    read_superblock(&path).expect("mirror used");
    // Both damaged.
    file.write_all_at(&[0xff; 16], 4096 + 100).unwrap();
    let error = read_superblock(&path).unwrap_err();
    assert!(matches!(error, StoreError::CorruptSuperblock { .. }), "{error}");
    assert!(error.to_string().contains("device.img"));
    // Truncated.
    let path = device(directory.path(), 16, 256);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(12 << 20)
        .unwrap();
    let error = read_superblock(&path).unwrap_err();
    assert!(matches!(error, StoreError::Truncated { .. }), "{error}");
}

#[test]
fn a_damaged_segment_header_in_front_of_data_fails_the_open() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 16, 256);
    let writer = path.clone();
    run(async move {
        let store = FragmentStore::open(&writer, 0, small_config()).await.unwrap();
        store.put(locator(1), &payload(1, 10_000)).await.unwrap();
        // No close: no checkpoint, so the open must read the segment header.
    });
    let superblock = read_superblock(&path).unwrap();
    let header_offset = superblock.segment_offset(0, 0);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xAA; 8], header_offset + 40).unwrap();
    file.sync_all().unwrap();
    run(async move {
        match FragmentStore::open(&path, 0, small_config()).await {
            Err(error @ StoreError::CorruptSegment { .. }) => {
                assert!(error.to_string().contains("device.img"), "{error}");
                assert!(error.to_string().contains("segment 0"), "{error}");
            }
            other => panic!("expected CorruptSegment, got {other:?}"),
        }
    });
}

#[derive(Debug, Clone)]
enum Operation {
    Put(u8, u16),
    Delete(u8),
    Compact,
    Reopen { clean: bool },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (any::<u8>(), 0u16..30_000).prop_map(|(key, bytes)| Operation::Put(key, bytes)),
        3 => any::<u8>().prop_map(Operation::Delete),
        1 => Just(Operation::Compact),
        1 => any::<bool>().prop_map(|clean| Operation::Reopen { clean }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Random puts, deletes, compactions and clean or unclean reopens agree with a model.
    #[test]
    fn store_agrees_with_a_model(operations in proptest::collection::vec(operation(), 1..120)) {
        let directory = tempfile::tempdir().unwrap();
        let path = device(directory.path(), 12, 128);
        let mut model: HashMap<u64, usize> = HashMap::new();
        let mut start = 0;
        while start < operations.len() {
            let end = operations[start..]
                .iter()
                .position(|operation| matches!(operation, Operation::Reopen { .. }))
                .map_or(operations.len(), |position| start + position + 1);
            let session: Vec<Operation> = operations[start..end].to_vec();
            let session_path = path.clone();
            let before = model.clone();
            model = run(async move {
                let mut model = before;
                let store = FragmentStore::open(&session_path, 0, small_config()).await.unwrap();
                // Everything the model holds reads back byte-identical after the reopen.
                for (&key, &size) in &model {
                    let fragment = store.get(&locator(key), None).await.unwrap();
                    assert_eq!(fragment.as_slice(), payload(key, size).as_slice());
                }
                assert_eq!(store.list(None, 1000).len(), model.len());
                for operation in session {
                    match operation {
                        Operation::Put(key, bytes) => {
                            let key = u64::from(key);
                            let size = model.get(&key).copied().unwrap_or(bytes as usize);
                            match store.put(locator(key), &payload(key, size)).await {
                                Ok(()) => {
                                    model.insert(key, size);
                                }
                                Err(StoreError::NoSpace { .. }) => {}
                                Err(other) => panic!("put: {other}"),
                            }
                        }
                        Operation::Delete(key) => {
                            let key = u64::from(key);
                            let result = store.delete(&locator(key)).await;
                            assert_eq!(result.is_ok(), model.remove(&key).is_some(), "{result:?}");
                        }
                        Operation::Compact => {
                            store.compact_now().await.unwrap();
                        }
                        Operation::Reopen { clean } => {
                            if clean {
                                store.close().await.unwrap();
                            }
                        }
                    }
                }
                model
            });
            start = end;
        }
    }
}

#[test]
fn close_under_load_with_a_checkpoint_due_drains_and_returns() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 32, 256);
    let writer = path.clone();
    let acknowledged = run(async move {
        let config = StoreConfig {
            // A checkpoint is due after almost every batch.
            checkpoint_interval_bytes: 4096,
            ..small_config()
        };
        let store = FragmentStore::open(&writer, 0, config).await.unwrap();
        let mut handles = Vec::new();
        for key in 0..200u64 {
            let store = store.clone();
            handles.push(
                kiseki_runtime::spawn("writer", async move {
                    (key, store.put(locator(key), &payload(key, 3000)).await)
                })
                .unwrap(),
            );
        }
        // Close while most puts are still queued: it must drain them, not hang.
        kiseki_runtime::yield_now().await;
        store.close().await.unwrap();
        let mut acknowledged = Vec::new();
        for handle in handles {
            let (key, result) = handle.await;
            match result {
                Ok(()) => acknowledged.push(key),
                Err(StoreError::Stopped { .. }) => {}
                Err(other) => panic!("put {key}: {other}"),
            }
        }
        acknowledged
    });
    assert!(!acknowledged.is_empty());
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        for key in acknowledged {
            assert_eq!(
                store.get(&locator(key), None).await.unwrap().as_slice(),
                payload(key, 3000).as_slice()
            );
        }
    });
}

#[test]
fn concurrent_puts_of_other_bytes_under_one_locator_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 16, 256);
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        let (first_store, second_store) = (store.clone(), store.clone());
        let first = kiseki_runtime::spawn("first", async move { first_store.put(locator(1), b"one").await }).unwrap();
        let second =
            kiseki_runtime::spawn("second", async move { second_store.put(locator(1), b"two").await }).unwrap();
        let (first, second) = (first.await, second.await);
        assert!(
            first.is_ok() != second.is_ok(),
            "exactly one wins: {first:?} {second:?}"
        );
        let loser = if first.is_ok() { second } else { first };
        assert!(matches!(loser, Err(StoreError::AlreadyExists { .. })), "{loser:?}");
        // The same bytes twice, concurrently, both succeed (idempotent).
        let (a, b) = (store.clone(), store.clone());
        let first = kiseki_runtime::spawn("a", async move { a.put(locator(2), b"same").await }).unwrap();
        let second = kiseki_runtime::spawn("b", async move { b.put(locator(2), b"same").await }).unwrap();
        first.await.unwrap();
        second.await.unwrap();
        store.close().await.unwrap();
    });
}

#[test]
fn a_cancelled_put_still_holds_its_locator_until_it_retires() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path(), 16, 256);
    run(async move {
        let store = FragmentStore::open(&path, 0, small_config()).await.unwrap();
        // Polled once (queued), then dropped by the caller before its reply.
        let cancelled = kiseki_runtime::timeout(std::time::Duration::ZERO, store.put(locator(1), b"first")).await;
        assert!(cancelled.is_none(), "the put was still waiting for durability");
        // The queued record still claims the locator: other bytes are refused.
        assert!(matches!(
            store.put(locator(1), b"other").await,
            Err(StoreError::AlreadyExists { .. })
        ));
        store.put(locator(1), b"first").await.unwrap();
        assert_eq!(store.get(&locator(1), None).await.unwrap().as_slice(), b"first");
        // A cancelled delete releases nothing it did not take: the fragment stays movable
        // and deletable.
        let cancelled = kiseki_runtime::timeout(std::time::Duration::ZERO, store.delete(&locator(1))).await;
        assert!(cancelled.is_none());
        store.checkpoint_now().await.unwrap();
        // Whether the tombstone was queued before the caller gave up depends on batch space;
        // either way a second delete settles it and never finds a half-deleted fragment.
        let second = store.delete(&locator(1)).await;
        assert!(
            matches!(second, Ok(()) | Err(StoreError::NotFound { .. })),
            "{second:?}"
        );
        assert!(matches!(
            store.get(&locator(1), None).await,
            Err(StoreError::NotFound { .. })
        ));
        store.close().await.unwrap();
    });
}
