//! The shard log on a real fragment store (a file device opened O_DIRECT): records of any
//! size round-trip per shard, trimming deletes only what is below, and recovery keeps
//! only the consecutive run of complete records (I-L6) — a record after a gap, or one
//! missing a part, is dropped and deleted.

use std::path::{Path, PathBuf};

use kiseki_runtime::{block_on, ExecutorConfig};
use kiseki_shard_host::{ShardLog, RECORD_PART_BYTES_MAX};
use kiseki_store::{format_device, FormatOptions, FragmentStore, Locator, StoreConfig};

fn device(directory: &Path) -> PathBuf {
    let path = directory.join("device.img");
    format_device(
        &path,
        &FormatOptions {
            cores: 1,
            segment_bytes: 4 << 20,
            force: true,
            create_bytes: Some(128 << 20),
        },
    )
    .unwrap();
    path
}

fn run(test: impl std::future::Future<Output = ()> + 'static) {
    block_on(ExecutorConfig::default(), 0, test).unwrap();
}

fn record(seq: u64, bytes: usize) -> Vec<u8> {
    (0..bytes).map(|index| (index as u64 ^ seq) as u8).collect()
}

/// The locator the log uses for part `part` of `parts` of record `seq` of `shard`.
fn part_locator(shard: u64, seq: u64, part: u16, parts: u16) -> Locator {
    let mut bytes = [0u8; 32];
    bytes[..12].copy_from_slice(b"kiseki-slog1");
    bytes[12..20].copy_from_slice(&shard.to_be_bytes());
    bytes[20..28].copy_from_slice(&seq.to_be_bytes());
    bytes[28..30].copy_from_slice(&part.to_be_bytes());
    bytes[30..32].copy_from_slice(&parts.to_be_bytes());
    Locator(bytes)
}

#[test]
fn records_round_trip_per_shard_and_survive_a_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path());
    run(async move {
        let store = FragmentStore::open(&path, 0, StoreConfig::default()).await.unwrap();
        let log = ShardLog::new(store.clone());
        let large = RECORD_PART_BYTES_MAX * 2 + 123;
        for (shard, seq, bytes) in [(1, 1, 10), (1, 2, large), (2, 1, 0), (1, 3, 4096), (2, 2, 7)] {
            log.write(shard, seq, &record(seq, bytes)).await.unwrap();
        }
        // Chunk fragments beside the log do not disturb it.
        store.put(Locator([0xab; 32]), b"a chunk fragment").await.unwrap();
        store.close().await.unwrap();
        let store = FragmentStore::open(&path, 0, StoreConfig::default()).await.unwrap();
        let log = ShardLog::new(store.clone());
        assert_eq!(log.shards(), vec![1, 2]);
        let one = log.load(1).await.unwrap();
        assert_eq!(one.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(one[1].1, record(2, large));
        assert_eq!(log.load(2).await.unwrap(), vec![(1, Vec::new()), (2, record(2, 7))]);
        log.trim(1, 3).await.unwrap();
        assert_eq!(log.load(1).await.unwrap(), vec![(3, record(3, 4096))]);
        assert_eq!(
            log.load(2).await.unwrap().len(),
            2,
            "trimming one shard leaves the others"
        );
        store.close().await.unwrap();
    });
}

#[test]
fn recovery_keeps_only_the_consecutive_complete_records() {
    let directory = tempfile::tempdir().unwrap();
    let path = device(directory.path());
    run(async move {
        let store = FragmentStore::open(&path, 0, StoreConfig::default()).await.unwrap();
        let log = ShardLog::new(store.clone());
        for seq in [1, 2, 3, 5] {
            log.write(7, seq, &record(seq, 100)).await.unwrap();
        }
        // Record 4 is missing (never made durable): 5 must go.
        let loaded = log.load(7).await.unwrap();
        assert_eq!(loaded.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(
            !store.contains(&part_locator(7, 5, 0, 1)),
            "a record after a gap is deleted"
        );
        // A multi-part record that lost a part is as good as missing.
        log.write(7, 4, &record(4, RECORD_PART_BYTES_MAX + 1)).await.unwrap();
        log.write(7, 5, &record(5, 10)).await.unwrap();
        store.delete(&part_locator(7, 4, 1, 2)).await.unwrap();
        let loaded = log.load(7).await.unwrap();
        assert_eq!(loaded.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(!store.contains(&part_locator(7, 4, 0, 2)));
        assert!(!store.contains(&part_locator(7, 5, 0, 1)));
        // The replica then writes record 4 again: it replaces nothing stale.
        log.write(7, 4, &record(40, 10)).await.unwrap();
        assert_eq!(log.load(7).await.unwrap().last().unwrap(), &(4, record(40, 10)));
        store.close().await.unwrap();
    });
}
