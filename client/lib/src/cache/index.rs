//! The bookkeeping of the chunk cache, without I/O: which chunks L1 (memory) and L2
//! (the pool on local disk) hold, in which order they are evicted, which datasets pin
//! which chunks, and the counters `kiseki cache --stats` shows. The cache task feeds it
//! events and carries out what it answers (files to write, files to delete).
//!
//! **Invariants.**
//! - I-F3: the bytes L2 holds (written or being written) never exceed `l2_max_bytes`,
//!   and L1's never exceed `l1_max_bytes`.
//! - I-F4: a chunk pinned by a staged dataset is never evicted; it becomes evictable
//!   only when every dataset pinning it is released.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

const TICK_START: u64 = 1 << 62;

/// A chunk's locator: the address of its fragments.
pub type Locator = [u8; 32];

/// Where a looked-up chunk is.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<V> {
    /// Decoded in memory.
    Memory(V),
    /// Sealed fragments in the pool on local disk.
    Disk,
    /// Nowhere here: fetch it from the cluster. `again`: it missed recently too (the
    /// organic cache admits a chunk to L2 on its second miss, so a one-pass scan does
    /// not churn the pool).
    Miss {
        /// Missed before, within the last `GHOSTS_MAX` misses.
        again: bool,
    },
}

/// Recent misses remembered for admission.
const GHOSTS_MAX: usize = 65_536;

/// What admitting a chunk to L2 asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Write the chunk's entry, after deleting the entries of `evict` (already
    /// forgotten by the index).
    Write {
        /// Entries to delete first.
        evict: Vec<Locator>,
    },
    /// Already held (or being written); pinned now if asked.
    Present,
    /// No room: pinned chunks fill what the limit leaves.
    Full,
}

/// Counters and sizes of one cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Decoded chunks in memory.
    pub l1_chunks: u64,
    /// Their bytes.
    pub l1_bytes: u64,
    /// L1's limit.
    pub l1_max_bytes: u64,
    /// Chunk entries in the pool on disk.
    pub l2_chunks: u64,
    /// Their bytes (written or being written).
    pub l2_bytes: u64,
    /// Of those, bytes pinned by staged datasets.
    pub l2_pinned_bytes: u64,
    /// L2's limit.
    pub l2_max_bytes: u64,
    /// Reads served from memory.
    pub l1_hits: u64,
    /// Reads served from the pool on disk.
    pub l2_hits: u64,
    /// Reads that went to the cluster.
    pub misses: u64,
    /// Entries evicted from L1.
    pub l1_evictions: u64,
    /// Entries evicted from L2.
    pub l2_evictions: u64,
    /// Pool entries that failed their checksum or decryption (dropped and fetched again).
    pub l2_corrupt: u64,
    /// Chunks L2 had no room for.
    pub l2_refused: u64,
    /// Files opened by passthrough from a plaintext copy of cached chunks.
    pub passthrough_opens: u64,
}

/// A staged directory tree (or file) and the chunks it pins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetStatus {
    /// The staged path as the user named it.
    pub path: String,
    /// Regular files in it.
    pub files: u64,
    /// Distinct chunks pinned.
    pub chunks: u64,
    /// Bytes of those chunks' entries.
    pub bytes: u64,
    /// Seconds since the epoch when staging finished.
    pub staged_at_s: u64,
}

#[derive(Debug)]
struct MemoryEntry<V> {
    value: V,
    bytes: u64,
    tick: u64,
}

#[derive(Debug)]
struct DiskEntry {
    bytes: u64,
    tick: u64,
    /// Datasets pinning it.
    pins: u32,
    /// The entry's file is complete.
    written: bool,
}

/// The index of one cache (see the module documentation).
#[derive(Debug)]
pub struct CacheIndex<V> {
    l1_max_bytes: u64,
    l2_max_bytes: u64,
    /// Uses count up from `TICK_START`; released entries count down below it.
    tick: u64,
    released_tick: u64,
    memory: HashMap<Locator, MemoryEntry<V>>,
    memory_order: BTreeMap<u64, Locator>,
    memory_bytes: u64,
    disk: HashMap<Locator, DiskEntry>,
    /// Unpinned written entries by last use.
    disk_order: BTreeMap<u64, Locator>,
    /// The bytes of the entries in `disk_order`.
    evictable_bytes: u64,
    disk_bytes: u64,
    pinned_bytes: u64,
    datasets: BTreeMap<String, (DatasetStatus, BTreeSet<Locator>)>,
    /// Chunks that missed recently (a locator may linger in the order after leaving the set).
    ghosts: HashSet<Locator>,
    ghost_order: VecDeque<Locator>,
    stats: CacheStats,
}

impl<V: Clone> CacheIndex<V> {
    /// An empty index with these limits.
    pub fn new(l1_max_bytes: u64, l2_max_bytes: u64) -> CacheIndex<V> {
        CacheIndex {
            l1_max_bytes,
            l2_max_bytes,
            tick: TICK_START,
            released_tick: TICK_START,
            memory: HashMap::new(),
            memory_order: BTreeMap::new(),
            memory_bytes: 0,
            disk: HashMap::new(),
            disk_order: BTreeMap::new(),
            evictable_bytes: 0,
            disk_bytes: 0,
            pinned_bytes: 0,
            datasets: BTreeMap::new(),
            ghosts: HashSet::new(),
            ghost_order: VecDeque::new(),
            stats: CacheStats::default(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Where `locator` is; a hit counts as a use.
    pub fn lookup(&mut self, locator: &Locator) -> Lookup<V> {
        let tick = self.next_tick();
        if let Some(entry) = self.memory.get_mut(locator) {
            self.memory_order.remove(&entry.tick);
            entry.tick = tick;
            self.memory_order.insert(tick, *locator);
            self.stats.l1_hits += 1;
            return Lookup::Memory(entry.value.clone());
        }
        match self.disk.get_mut(locator) {
            Some(entry) if entry.written => {
                if entry.pins == 0 {
                    self.disk_order.remove(&entry.tick);
                    self.disk_order.insert(tick, *locator);
                }
                entry.tick = tick;
                self.stats.l2_hits += 1;
                Lookup::Disk
            }
            _ => {
                self.stats.misses += 1;
                let again = self.ghosts.remove(locator);
                if !again {
                    if self.ghost_order.len() >= GHOSTS_MAX {
                        if let Some(oldest) = self.ghost_order.pop_front() {
                            self.ghosts.remove(&oldest);
                        }
                    }
                    self.ghosts.insert(*locator);
                    self.ghost_order.push_back(*locator);
                }
                Lookup::Miss { again }
            }
        }
    }

    /// Keeps a decoded chunk in memory, evicting the least recently used ones to make
    /// room; one larger than the whole of L1 is not kept.
    pub fn insert_memory(&mut self, locator: Locator, value: V, bytes: u64) {
        if bytes > self.l1_max_bytes || self.memory.contains_key(&locator) {
            return;
        }
        while self.memory_bytes + bytes > self.l1_max_bytes {
            let Some((_, oldest)) = self.memory_order.pop_first() else {
                break;
            };
            if let Some(entry) = self.memory.remove(&oldest) {
                self.memory_bytes -= entry.bytes;
                self.stats.l1_evictions += 1;
            }
        }
        let tick = self.next_tick();
        self.memory_order.insert(tick, locator);
        self.memory.insert(locator, MemoryEntry { value, bytes, tick });
        self.memory_bytes += bytes;
        assert!(self.memory_bytes <= self.l1_max_bytes, "I-F3: L1 over its limit");
    }

    /// Forgets a decoded chunk (its file changed under it).
    pub fn forget_memory(&mut self, locator: &Locator) {
        if let Some(entry) = self.memory.remove(locator) {
            self.memory_order.remove(&entry.tick);
            self.memory_bytes -= entry.bytes;
        }
    }

    /// Makes room for an L2 entry of `bytes` for `locator`, pinned by `dataset` if given.
    pub fn admit_disk(&mut self, locator: Locator, bytes: u64, dataset: Option<&str>) -> Admission {
        if self.disk.contains_key(&locator) {
            if let Some(dataset) = dataset {
                self.pin(dataset, locator);
            }
            return Admission::Present;
        }
        // Pinned and unwritten entries cannot be evicted: only the rest makes room.
        if self.disk_bytes - self.evictable_bytes + bytes > self.l2_max_bytes {
            self.stats.l2_refused += 1;
            return Admission::Full;
        }
        let mut evict = Vec::new();
        while self.disk_bytes + bytes > self.l2_max_bytes {
            let Some((_, oldest)) = self.disk_order.pop_first() else {
                break;
            };
            if let Some(entry) = self.disk.remove(&oldest) {
                self.disk_bytes -= entry.bytes;
                self.evictable_bytes -= entry.bytes;
                self.stats.l2_evictions += 1;
                evict.push(oldest);
            }
        }
        let tick = self.next_tick();
        self.disk.insert(
            locator,
            DiskEntry {
                bytes,
                tick,
                pins: 0,
                written: false,
            },
        );
        self.disk_bytes += bytes;
        if let Some(dataset) = dataset {
            self.pin(dataset, locator);
        }
        assert!(self.disk_bytes <= self.l2_max_bytes, "I-F3: L2 over its limit");
        Admission::Write { evict }
    }

    fn pin(&mut self, dataset: &str, locator: Locator) {
        let (status, chunks) = self.datasets.entry(dataset.to_owned()).or_insert_with(|| {
            (
                DatasetStatus {
                    path: dataset.to_owned(),
                    ..DatasetStatus::default()
                },
                BTreeSet::new(),
            )
        });
        let Some(entry) = self.disk.get_mut(&locator) else {
            return;
        };
        if !chunks.insert(locator) {
            return;
        }
        status.chunks += 1;
        status.bytes += entry.bytes;
        if entry.pins == 0 {
            self.pinned_bytes += entry.bytes;
            if entry.written {
                self.disk_order.remove(&entry.tick);
                self.evictable_bytes -= entry.bytes;
            }
        }
        entry.pins += 1;
    }

    /// The entry of `locator` is on disk now.
    pub fn disk_written(&mut self, locator: &Locator) {
        if let Some(entry) = self.disk.get_mut(locator).filter(|entry| !entry.written) {
            entry.written = true;
            if entry.pins == 0 {
                self.disk_order.insert(entry.tick, *locator);
                self.evictable_bytes += entry.bytes;
            }
        }
    }

    /// The entry of `locator` is unusable (its write failed, or it failed its checksum
    /// or decryption): forgotten, and unpinned from the datasets that held it. Answers
    /// whether it was there (so its file is to be deleted).
    pub fn drop_disk(&mut self, locator: &Locator, corrupt: bool) -> bool {
        let Some(entry) = self.disk.remove(locator) else {
            return false;
        };
        self.disk_bytes -= entry.bytes;
        if entry.pins > 0 {
            self.pinned_bytes -= entry.bytes;
        } else if entry.written {
            self.disk_order.remove(&entry.tick);
            self.evictable_bytes -= entry.bytes;
        }
        for (status, chunks) in self.datasets.values_mut() {
            if chunks.remove(locator) {
                status.chunks -= 1;
                status.bytes -= entry.bytes;
            }
        }
        if corrupt {
            self.stats.l2_corrupt += 1;
        }
        true
    }

    /// Records that staging `dataset` finished with `files` regular files.
    pub fn dataset_staged(&mut self, dataset: &str, files: u64, staged_at_s: u64) -> DatasetStatus {
        let (status, _) = self.datasets.entry(dataset.to_owned()).or_insert_with(|| {
            (
                DatasetStatus {
                    path: dataset.to_owned(),
                    ..DatasetStatus::default()
                },
                BTreeSet::new(),
            )
        });
        status.files = files;
        status.staged_at_s = staged_at_s;
        status.clone()
    }

    /// Unpins every chunk of `dataset`; they stay in L2 as least recently used entries.
    /// Answers the released dataset, or `None` if it was not staged.
    pub fn release(&mut self, dataset: &str) -> Option<DatasetStatus> {
        let (status, chunks) = self.datasets.remove(dataset)?;
        for locator in chunks {
            let Some(entry) = self.disk.get_mut(&locator) else {
                continue;
            };
            entry.pins -= 1;
            if entry.pins == 0 {
                self.pinned_bytes -= entry.bytes;
                // Released data is evicted before any data read since.
                self.released_tick -= 1;
                entry.tick = self.released_tick;
                if entry.written {
                    self.disk_order.insert(entry.tick, locator);
                    self.evictable_bytes += entry.bytes;
                }
            }
        }
        Some(status)
    }

    /// The staged datasets.
    pub fn datasets(&self) -> Vec<DatasetStatus> {
        self.datasets.values().map(|(status, _)| status.clone()).collect()
    }

    /// Whether `locator` is held, in memory or written on disk (not a use).
    pub fn holds(&self, locator: &Locator) -> bool {
        self.memory.contains_key(locator) || self.disk.get(locator).is_some_and(|entry| entry.written)
    }

    /// Counts a passthrough open.
    pub fn passthrough_opened(&mut self) {
        self.stats.passthrough_opens += 1;
    }

    /// Counters and sizes now.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            l1_chunks: self.memory.len() as u64,
            l1_bytes: self.memory_bytes,
            l1_max_bytes: self.l1_max_bytes,
            l2_chunks: self.disk.len() as u64,
            l2_bytes: self.disk_bytes,
            l2_pinned_bytes: self.pinned_bytes,
            l2_max_bytes: self.l2_max_bytes,
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locator(n: u8) -> Locator {
        [n; 32]
    }

    #[test]
    fn memory_evicts_least_recently_used() {
        let mut index: CacheIndex<u8> = CacheIndex::new(30, 0);
        index.insert_memory(locator(1), 1, 10);
        index.insert_memory(locator(2), 2, 10);
        index.insert_memory(locator(3), 3, 10);
        assert_eq!(index.lookup(&locator(1)), Lookup::Memory(1));
        index.insert_memory(locator(4), 4, 10);
        assert_eq!(index.lookup(&locator(2)), Lookup::Miss { again: false });
        assert_eq!(index.lookup(&locator(1)), Lookup::Memory(1));
        index.insert_memory(locator(5), 5, 31);
        assert_eq!(index.lookup(&locator(5)), Lookup::Miss { again: false });
        // The second miss of a chunk says so.
        assert_eq!(index.lookup(&locator(5)), Lookup::Miss { again: true });
        assert_eq!(index.lookup(&locator(5)), Lookup::Miss { again: false });
        assert_eq!(index.stats().l1_evictions, 1);
    }

    #[test]
    fn pinned_chunks_survive_until_released() {
        let mut index: CacheIndex<u8> = CacheIndex::new(0, 100);
        assert_eq!(
            index.admit_disk(locator(1), 40, Some("/data")),
            Admission::Write { evict: vec![] }
        );
        index.disk_written(&locator(1));
        assert_eq!(
            index.admit_disk(locator(2), 40, None),
            Admission::Write { evict: vec![] }
        );
        index.disk_written(&locator(2));
        // Room only by evicting the unpinned one.
        assert_eq!(
            index.admit_disk(locator(3), 40, None),
            Admission::Write {
                evict: vec![locator(2)]
            }
        );
        index.disk_written(&locator(3));
        // Pinned bytes plus this one exceed the limit.
        assert_eq!(index.admit_disk(locator(4), 70, Some("/other")), Admission::Full);
        assert_eq!(index.lookup(&locator(1)), Lookup::Disk);
        let released = index.release("/data").expect("staged");
        assert_eq!((released.chunks, released.bytes), (1, 40));
        // Released data goes first.
        assert_eq!(
            index.admit_disk(locator(5), 40, None),
            Admission::Write {
                evict: vec![locator(1)]
            }
        );
        assert_eq!(index.stats().l2_pinned_bytes, 0);
    }

    #[test]
    fn a_corrupt_entry_leaves_its_dataset() {
        let mut index: CacheIndex<u8> = CacheIndex::new(0, 100);
        index.admit_disk(locator(1), 10, Some("/d"));
        index.disk_written(&locator(1));
        index.admit_disk(locator(2), 10, Some("/d"));
        index.disk_written(&locator(2));
        assert!(index.drop_disk(&locator(1), true));
        let status = &index.datasets()[0];
        assert_eq!((status.chunks, status.bytes), (1, 10));
        let stats = index.stats();
        assert_eq!((stats.l2_corrupt, stats.l2_bytes, stats.l2_pinned_bytes), (1, 10, 10));
    }

    /// I-F3 and I-F4 under random operations: the limits hold, pinned chunks stay.
    #[test]
    fn limits_hold_and_pins_stay_under_random_operations() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..50 {
            let mut index: CacheIndex<u8> = CacheIndex::new(64, 200);
            let datasets = ["/a", "/b"];
            for _ in 0..400 {
                let chunk = locator(rng.gen_range(0..24u8));
                let bytes = rng.gen_range(1..40u64);
                match rng.gen_range(0..7u8) {
                    0 => index.insert_memory(chunk, 0, bytes),
                    1 => {
                        let _ = index.lookup(&chunk);
                    }
                    2 | 3 => {
                        let pin = rng.gen_bool(0.3).then(|| datasets[rng.gen_range(0..2)]);
                        if let Admission::Write { evict } = index.admit_disk(chunk, bytes, pin) {
                            assert!(!evict.contains(&chunk));
                            if rng.gen_bool(0.9) {
                                index.disk_written(&chunk);
                            } else {
                                index.drop_disk(&chunk, false);
                            }
                        }
                    }
                    4 => {
                        index.release(datasets[rng.gen_range(0..2)]);
                    }
                    5 => {
                        index.drop_disk(&chunk, true);
                    }
                    _ => index.forget_memory(&chunk),
                }
                let stats = index.stats();
                assert!(stats.l1_bytes <= 64 && stats.l2_bytes <= 200);
                assert!(stats.l2_pinned_bytes <= stats.l2_bytes);
                let pinned: u64 = index
                    .disk
                    .values()
                    .filter(|entry| entry.pins > 0)
                    .map(|entry| entry.bytes)
                    .sum();
                assert_eq!(pinned, stats.l2_pinned_bytes);
                let evictable: u64 = index.disk_order.values().map(|chunk| index.disk[chunk].bytes).sum();
                assert_eq!(evictable, index.evictable_bytes);
                assert_eq!(
                    index.disk_order.len(),
                    index.disk.values().filter(|e| e.written && e.pins == 0).count()
                );
                // Every chunk of a staged dataset is still held.
                for (_, chunks) in index.datasets.values() {
                    assert!(chunks.iter().all(|chunk| index.disk.contains_key(chunk)));
                }
            }
        }
    }
}
