//! The fragment store of one allocation group of one device, owned by one core.
//!
//! Writers call [`FragmentStore::put`] / [`FragmentStore::delete`]; their records gather
//! in the pending batch (payloads copied once, into registered DMA memory). The committer
//! task turns the pending batch into one contiguous write (header blocks + payloads) at the
//! end of the active segment, followed by `fdatasync`; up to `batches_in_flight_max`
//! batches are in flight, and they are retired strictly in log order: the index changes and
//! the writers are answered only when a batch and every batch before it are durable
//! (I-E1). Checkpoints run in the committer between batches, compaction and scrub run as
//! background tasks under an I/O budget.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kiseki_runtime::local::{oneshot, Notify, OneshotReceiver, OneshotSender};
use kiseki_runtime::{dma_buffer, DmaBuf, DmaFile, OpenMode};

use crate::device::read_superblock;
use crate::format::{
    batch_header_blocks, encode_checkpoint_entry, encode_checkpoint_segment, BatchEntry, BatchHeader, CheckpointHeader,
    EntryKind, SegmentHeader, Superblock, BLOCK_BYTES, CHECKPOINT_ENTRY_BYTES, CHECKPOINT_SEGMENT_BYTES,
};
use crate::index::{AgState, Extent, SegmentState};
use crate::{Locator, StoreError};

/// Limits and tunables of a store. Every bound is fixed at open.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest fragment accepted, in bytes.
    pub fragment_bytes_max: usize,
    /// Payload bytes of one batch at most.
    pub batch_payload_bytes_max: usize,
    /// Records of one batch at most.
    pub batch_entries_max: usize,
    /// Batches written and not yet durable at most.
    pub batches_in_flight_max: usize,
    /// Bytes written between two checkpoints.
    pub checkpoint_interval_bytes: u64,
    /// Free segments kept back from writers for compaction to work with.
    pub reserve_segments: usize,
    /// Dead share of a sealed segment from which compaction takes it.
    pub compaction_dead_ratio_min: f64,
    /// How often compaction looks for work.
    pub compaction_interval_ms: u64,
    /// Background (compaction + scrub) read budget in bytes per second.
    pub background_bytes_per_second: u64,
    /// Pause between two slices of a scrub pass (0 disables background scrub).
    pub scrub_interval_ms: u64,
    /// Extents verified per scrub slice.
    pub scrub_slice_entries: usize,
    /// Time from the store's open to its first scrub pass.
    pub scrub_first_pass_delay_ms: u64,
    /// Time from the end of one scrub pass to the start of the next.
    pub scrub_pass_interval_ms: u64,
}

// Measured on the benchmark machine (docs/benchmarks.md): smaller batches keep each
// device write short; more of them stay in flight to keep the queue full.
const BATCH_PAYLOAD_BYTES_MAX_DEFAULT: usize = 2 << 20;
const BATCHES_IN_FLIGHT_MAX_DEFAULT: usize = 8;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            fragment_bytes_max: (4 << 20) + (64 << 10),
            batch_payload_bytes_max: BATCH_PAYLOAD_BYTES_MAX_DEFAULT,
            batch_entries_max: 1024,
            batches_in_flight_max: BATCHES_IN_FLIGHT_MAX_DEFAULT,
            checkpoint_interval_bytes: 256 << 20,
            reserve_segments: 1,
            compaction_dead_ratio_min: 0.5,
            compaction_interval_ms: 1000,
            background_bytes_per_second: 64 << 20,
            scrub_interval_ms: 1000,
            scrub_slice_entries: 1024,
            // Every extent was checked when written and is checked on every read; a pass
            // finds what rots unread. Ceph's default is one pass a day too.
            scrub_first_pass_delay_ms: 10 * 60 * 1000,
            scrub_pass_interval_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// Counters and latency histograms of a store (microseconds).
#[derive(Debug, Clone)]
pub struct StoreStats {
    /// Puts acknowledged.
    pub puts: u64,
    /// Payload bytes of acknowledged puts.
    pub put_bytes: u64,
    /// Gets answered with data.
    pub gets: u64,
    /// Bytes returned by gets.
    pub get_bytes: u64,
    /// Deletes acknowledged.
    pub deletes: u64,
    /// Batches made durable.
    pub batches: u64,
    /// Device flushes (fdatasync).
    pub flushes: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Segments reclaimed by compaction.
    pub compactions: u64,
    /// Bytes moved by compaction.
    pub compacted_bytes: u64,
    /// Bytes verified by scrub.
    pub scrubbed_bytes: u64,
    /// Corrupt extents found (by reads or scrub).
    pub corrupt_extents: u64,
    /// Puts refused for lack of space.
    pub no_space: u64,
    /// Put latency, µs.
    pub put_latency_us: Histogram<u64>,
    /// Get latency, µs.
    pub get_latency_us: Histogram<u64>,
}

impl Default for StoreStats {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 2).expect("static histogram bounds");
        StoreStats {
            puts: 0,
            put_bytes: 0,
            gets: 0,
            get_bytes: 0,
            deletes: 0,
            batches: 0,
            flushes: 0,
            checkpoints: 0,
            compactions: 0,
            compacted_bytes: 0,
            scrubbed_bytes: 0,
            corrupt_extents: 0,
            no_space: 0,
            put_latency_us: histogram(),
            get_latency_us: histogram(),
        }
    }
}

/// Space of the allocation group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Data bytes of all segments.
    pub total_bytes: u64,
    /// Bytes writers may still use (excluding the compaction reserve).
    pub free_bytes: u64,
    /// Bytes of live fragments (block granular).
    pub live_bytes: u64,
    /// Fragments stored.
    pub fragments: u64,
}

/// A fragment read back: the verified bytes in a DMA buffer.
#[derive(Debug)]
pub struct Fragment {
    buffer: DmaBuf,
    range: Range<usize>,
}

impl Fragment {
    /// The requested bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buffer.full()[self.range.clone()]
    }

    /// Length of the requested bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// What one scrub pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Extents verified.
    pub extents_checked: u64,
    /// Bytes verified.
    pub bytes_checked: u64,
    /// Extents whose checksum failed.
    pub corrupt: Vec<Locator>,
}

type Reply = OneshotSender<Result<(), StoreError>>;

/// Records gathered for the next batch.
#[derive(Default)]
struct Pending {
    entries: Vec<BatchEntry>,
    /// For compaction moves: the extent the index must still hold at retirement.
    expected: Vec<Option<Extent>>,
    replies: Vec<Option<Reply>>,
    payload: Option<DmaBuf>,
    payload_blocks: u32,
    started: Vec<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a record (its payload, if any, already copied in) and returns where its
    /// outcome will arrive.
    fn push(
        &mut self,
        entry: BatchEntry,
        expected: Option<Extent>,
        started: Instant,
    ) -> OneshotReceiver<Result<(), StoreError>> {
        self.entries.push(entry);
        self.expected.push(expected);
        let (sender, receiver) = oneshot();
        self.replies.push(Some(sender));
        self.started.push(started);
        receiver
    }
}

struct InFlight {
    result: Rc<RefCell<Option<std::io::Result<()>>>>,
    segment: u32,
    payload_first_block: u32,
    entries: Vec<BatchEntry>,
    expected: Vec<Option<Extent>>,
    replies: Vec<Option<Reply>>,
    started: Vec<Instant>,
    bytes: u64,
}

struct Inner {
    path: PathBuf,
    superblock: Superblock,
    ag: u32,
    file: DmaFile,
    config: StoreConfig,
    /// Bytes in front of the payload in a batch buffer: segment header room + largest header.
    prefix_bytes: usize,
    state: RefCell<AgState>,
    pending: RefCell<Pending>,
    in_flight: RefCell<VecDeque<InFlight>>,
    commit_notify: Notify,
    room_notify: Notify,
    stop_notify: Notify,
    compaction_notify: Notify,
    pending_deletes: RefCell<HashMap<Locator, u32>>,
    /// Puts queued or in flight: locator -> (bytes, crc, count), so a second put of other
    /// bytes under the same locator is refused before either is durable (I-C1).
    pending_puts: RefCell<HashMap<Locator, (u32, u32, u32)>>,
    /// Segments compaction could not empty (corrupt extents); retried after a checkpoint.
    compaction_stuck: RefCell<BTreeSet<u32>>,
    /// Segments a compaction is moving now (the background task's or `compact_now`'s):
    /// never picked by the other. Two compactions of one segment would both write every
    /// extent, one copy of each dead at once, and the segment they wrote to would then be
    /// half dead, a candidate in turn: the two would chase each other without end.
    compacting: RefCell<BTreeSet<u32>>,
    corrupt: RefCell<BTreeSet<Locator>>,
    stats: RefCell<StoreStats>,
    failure: RefCell<Option<String>>,
    stopping: Cell<bool>,
    checkpoint_sequence: Cell<u64>,
    bytes_since_checkpoint: Cell<u64>,
    checkpoint_requested: Cell<bool>,
    committer_finished: Cell<bool>,
    committer_exit: Notify,
    /// Device flushes begun and completed (generations), for sharing flushes.
    flushes_started: Cell<u64>,
    flushes_done: Cell<u64>,
    flush_running: Cell<bool>,
    flush_notify: Notify,
    flush_failure: RefCell<Option<String>>,
}

/// One allocation group's fragment store. Core-local (`!Send`): clone the handle freely
/// within the owning core.
#[derive(Clone)]
pub struct FragmentStore {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for FragmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FragmentStore")
            .field("device", &self.inner.path)
            .field("ag", &self.inner.ag)
            .finish()
    }
}

impl FragmentStore {
    /// Opens allocation group `ag` of the device at `path` on this core: validates the
    /// superblock, loads the newest valid checkpoint, replays newer batches and starts the
    /// committer, compaction and scrub tasks.
    pub async fn open(path: &Path, ag: u32, config: StoreConfig) -> Result<FragmentStore, StoreError> {
        let superblock = read_superblock(path)?;
        if ag >= superblock.ag_count {
            return Err(StoreError::Geometry {
                device: path.to_path_buf(),
                detail: format!(
                    "formatted for {} cores (allocation groups); core {ag} has none: run with --cores {} or reformat",
                    superblock.ag_count, superblock.ag_count
                ),
            });
        }
        let file =
            DmaFile::open(path, OpenMode::DEVICE).map_err(|error| StoreError::io(path, "opening O_DIRECT", error))?;
        let config = fit_config(config, &superblock);
        let prefix_bytes = (1 + batch_header_blocks(config.batch_entries_max)) * BLOCK_BYTES;
        let inner = Rc::new(Inner {
            path: path.to_path_buf(),
            state: RefCell::new(AgState::new(superblock.segments_per_ag, superblock.segment_blocks())),
            superblock,
            ag,
            file,
            config,
            prefix_bytes,
            pending: RefCell::new(Pending::default()),
            in_flight: RefCell::new(VecDeque::new()),
            commit_notify: Notify::new(),
            room_notify: Notify::new(),
            stop_notify: Notify::new(),
            compaction_notify: Notify::new(),
            pending_deletes: RefCell::new(HashMap::new()),
            pending_puts: RefCell::new(HashMap::new()),
            compaction_stuck: RefCell::new(BTreeSet::new()),
            compacting: RefCell::new(BTreeSet::new()),
            corrupt: RefCell::new(BTreeSet::new()),
            stats: RefCell::new(StoreStats::default()),
            failure: RefCell::new(None),
            stopping: Cell::new(false),
            checkpoint_sequence: Cell::new(0),
            bytes_since_checkpoint: Cell::new(0),
            checkpoint_requested: Cell::new(false),
            committer_finished: Cell::new(false),
            committer_exit: Notify::new(),
            flushes_started: Cell::new(0),
            flushes_done: Cell::new(0),
            flush_running: Cell::new(false),
            flush_notify: Notify::new(),
            flush_failure: RefCell::new(None),
        });
        inner.load().await?;
        let store = FragmentStore { inner };
        let spawn_error = |error: kiseki_runtime::RuntimeError| StoreError::Busy(error.to_string());
        let committer = Rc::clone(&store.inner);
        kiseki_runtime::spawn("store-committer", async move { committer.run_committer().await })
            .map_err(spawn_error)?;
        let compactor = Rc::clone(&store.inner);
        kiseki_runtime::spawn("store-compaction", async move { compactor.run_compaction().await })
            .map_err(spawn_error)?;
        let scrubber = Rc::clone(&store.inner);
        kiseki_runtime::spawn("store-scrub", async move { scrubber.run_scrub().await }).map_err(spawn_error)?;
        Ok(store)
    }

    /// The device path.
    pub fn device(&self) -> &Path {
        &self.inner.path
    }

    /// The allocation group.
    pub fn ag(&self) -> u32 {
        self.inner.ag
    }

    /// The superblock of the device.
    pub fn superblock(&self) -> &Superblock {
        &self.inner.superblock
    }

    /// The effective configuration (bounds fitted to the geometry).
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Stores `data` under `locator`; resolves once durable. Storing the same bytes again
    /// is a no-op; other bytes under an existing locator are refused (I-C1).
    pub async fn put(&self, locator: Locator, data: &[u8]) -> Result<(), StoreError> {
        let started = Instant::now();
        let inner = &self.inner;
        inner.check_writable()?;
        if data.len() > inner.config.fragment_bytes_max {
            return Err(StoreError::Invalid(format!(
                "fragment of {} bytes exceeds the maximum of {} bytes",
                data.len(),
                inner.config.fragment_bytes_max
            )));
        }
        let crc = crc32c::crc32c(data);
        let bytes = data.len() as u32;
        let stored = inner.state.borrow().index.get(&locator).copied();
        // A stored extent known to be corrupt may be written again (a repair).
        // So may one that a queued delete is about to remove: the new put lands after it.
        let stored_intact = stored.filter(|_| {
            !inner.corrupt.borrow().contains(&locator) && !inner.pending_deletes.borrow().contains_key(&locator)
        });
        if let Some(existing) = stored_intact {
            return if existing.bytes == bytes && existing.crc == crc {
                Ok(())
            } else {
                Err(StoreError::AlreadyExists { locator })
            };
        }
        if let Some(&(pending_bytes, pending_crc, _)) = inner.pending_puts.borrow().get(&locator) {
            if (pending_bytes, pending_crc) != (bytes, crc) {
                return Err(StoreError::AlreadyExists { locator });
            }
        }
        inner.check_space(data.len())?;
        inner
            .pending_puts
            .borrow_mut()
            .entry(locator)
            .or_insert((bytes, crc, 0))
            .2 += 1;
        // Until the record is queued this call owns the mark (released if the caller
        // drops it); once queued, the batch's retirement releases it.
        let mut pending = PendingGuard::put(inner, locator);
        match inner
            .enqueue(EntryKind::Put, locator, Some(data), crc, None, started)
            .await
        {
            Ok(receiver) => {
                pending.disarm();
                receiver.await.unwrap_or_else(|| Err(inner.stopped_error()))
            }
            Err(error) => Err(error),
        }
    }

    /// Deletes the fragment; resolves once the tombstone is durable.
    pub async fn delete(&self, locator: &Locator) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.check_writable()?;
        if !inner.state.borrow().index.contains_key(locator) {
            return Err(StoreError::NotFound { locator: *locator });
        }
        *inner.pending_deletes.borrow_mut().entry(*locator).or_insert(0) += 1;
        // As for puts: this call owns the mark until the tombstone is queued.
        let mut pending = PendingGuard::delete(inner, *locator);
        match inner
            .enqueue(EntryKind::Delete, *locator, None, 0, None, Instant::now())
            .await
        {
            Ok(receiver) => {
                pending.disarm();
                receiver.await.unwrap_or_else(|| Err(inner.stopped_error()))
            }
            Err(error) => Err(error),
        }
    }

    /// Deletes every fragment of `locators` that the index holds, skipping the others;
    /// resolves once every tombstone is durable. Tombstones go in groups of up to
    /// `batch_entries_max`, each group whole in one batch (one write and one `fdatasync`
    /// for the group, not one per fragment), and a group is queued only once the one
    /// before it is durable. A batch replays whole or not at all, so a crash keeps a
    /// prefix of the groups: what survives of `locators` is a suffix, as after a
    /// sequence of [`delete`](Self::delete) calls.
    pub async fn delete_present(&self, locators: &[Locator]) -> Result<(), StoreError> {
        let inner = &self.inner;
        let group_max = inner.config.batch_entries_max.max(1);
        for group in locators.chunks(group_max) {
            inner.check_writable()?;
            let present: Vec<Locator> = {
                let state = inner.state.borrow();
                group
                    .iter()
                    .filter(|locator| state.index.contains_key(locator))
                    .copied()
                    .collect()
            };
            if present.is_empty() {
                continue;
            }
            let mut guards = Vec::with_capacity(present.len());
            for locator in &present {
                *inner.pending_deletes.borrow_mut().entry(*locator).or_insert(0) += 1;
                guards.push(PendingGuard::delete(inner, *locator));
            }
            let receivers = inner.enqueue_deletes_together(&present).await?;
            for guard in &mut guards {
                guard.disarm();
            }
            for receiver in receivers {
                receiver.await.unwrap_or_else(|| Err(inner.stopped_error()))?;
            }
        }
        Ok(())
    }

    /// Reads `range` of the fragment (all of it with `None`), verified against its CRC32C.
    pub async fn get(&self, locator: &Locator, range: Option<Range<usize>>) -> Result<Fragment, StoreError> {
        let started = Instant::now();
        let inner = &self.inner;
        for _attempt in 0..3 {
            let extent = inner
                .state
                .borrow()
                .index
                .get(locator)
                .copied()
                .ok_or(StoreError::NotFound { locator: *locator })?;
            let range = range.clone().unwrap_or(0..extent.bytes as usize);
            if range.start > range.end || range.end > extent.bytes as usize {
                return Err(StoreError::Invalid(format!(
                    "range {range:?} outside fragment {locator} of {} bytes",
                    extent.bytes
                )));
            }
            let known_corrupt = {
                let corrupt = inner.corrupt.borrow();
                !corrupt.is_empty() && corrupt.contains(locator)
            };
            if known_corrupt {
                return Err(inner.corrupt_error(locator, "marked corrupt by an earlier read or scrub"));
            }
            let buffer = inner.read_extent(&extent).await?;
            if crc32c::crc32c(&buffer.full()[..extent.bytes as usize]) == extent.crc {
                let mut stats = inner.stats.borrow_mut();
                stats.gets += 1;
                stats.get_bytes += range.len() as u64;
                let _ = stats.get_latency_us.record(started.elapsed().as_micros() as u64);
                return Ok(Fragment { buffer, range });
            }
            // The extent may have moved (compaction) while we read: look again.
            if inner.state.borrow().index.get(locator) == Some(&extent) {
                inner.mark_corrupt(locator);
                return Err(inner.corrupt_error(locator, "CRC32C mismatch"));
            }
        }
        Err(StoreError::Busy(format!(
            "fragment {locator} kept moving during the read"
        )))
    }

    /// Whether a fragment is stored.
    pub fn contains(&self, locator: &Locator) -> bool {
        self.inner.state.borrow().index.contains_key(locator)
    }

    /// Up to `limit` locators after `after`, in order.
    pub fn list(&self, after: Option<&Locator>, limit: usize) -> Vec<Locator> {
        let state = self.inner.state.borrow();
        let lower = after.map_or(Bound::Unbounded, |locator| Bound::Excluded(*locator));
        state
            .index
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(locator, _)| *locator)
            .collect()
    }

    /// Length of a stored fragment.
    pub fn fragment_bytes(&self, locator: &Locator) -> Option<u32> {
        self.inner.state.borrow().index.get(locator).map(|extent| extent.bytes)
    }

    /// Space figures.
    pub fn space(&self) -> SpaceInfo {
        let inner = &self.inner;
        let state = inner.state.borrow();
        let segment_data_bytes =
            (inner.superblock.segment_bytes - BLOCK_BYTES as u64) * u64::from(inner.superblock.segments_per_ag);
        let reserve_blocks = inner.config.reserve_segments as u64 * u64::from(state.segment_blocks - 1);
        SpaceInfo {
            total_bytes: segment_data_bytes,
            free_bytes: state.free_blocks().saturating_sub(reserve_blocks) * BLOCK_BYTES as u64,
            live_bytes: state.live_blocks() * BLOCK_BYTES as u64,
            fragments: state.index.len() as u64,
        }
    }

    /// Why the store refuses writes after an I/O failure, if it does.
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.borrow().clone()
    }

    /// Counters and histograms.
    pub fn stats(&self) -> StoreStats {
        self.inner.stats.borrow().clone()
    }

    /// Locators found corrupt so far.
    pub fn corrupt(&self) -> Vec<Locator> {
        self.inner.corrupt.borrow().iter().copied().collect()
    }

    /// Verifies every stored extent now (outside the background budget).
    pub async fn scrub_all(&self) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let mut cursor = None;
        loop {
            let slice = self.inner.scrub_slice(cursor.as_ref(), 256);
            let Some(last) = slice.last().map(|(locator, _)| *locator) else {
                break;
            };
            self.inner.scrub_extents(&slice, &mut report, false).await?;
            cursor = Some(last);
        }
        Ok(report)
    }

    /// Compacts until no sealed segment qualifies; returns the segments reclaimed.
    pub async fn compact_now(&self) -> Result<u32, StoreError> {
        let mut reclaimed = 0;
        loop {
            let candidate = self.inner.next_compaction_candidate();
            let Some(segment) = candidate else { break };
            if self.inner.compact_segment(segment, false).await? {
                reclaimed += 1;
            } else {
                self.inner.compaction_stuck.borrow_mut().insert(segment);
            }
        }
        self.checkpoint_now().await?;
        Ok(reclaimed)
    }

    /// Writes a checkpoint as soon as in-flight batches are durable, and waits for it.
    pub async fn checkpoint_now(&self) -> Result<(), StoreError> {
        let before = self.inner.checkpoint_sequence.get();
        self.inner.checkpoint_requested.set(true);
        self.inner.commit_notify.notify();
        while self.inner.checkpoint_sequence.get() == before {
            self.inner.check_writable()?;
            kiseki_runtime::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Stops accepting writes, drains pending and in-flight batches, writes a final
    /// checkpoint and stops the background tasks.
    pub async fn close(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.stopping.set(true);
        inner.stop_notify.notify();
        inner.compaction_notify.notify();
        inner.commit_notify.notify();
        while !inner.committer_finished.get() {
            inner.committer_exit.notified().await;
        }
        match inner.failure.borrow().clone() {
            Some(reason) => Err(StoreError::Stopped {
                device: inner.path.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// Shrinks batch limits so a full batch always fits in an empty segment.
fn fit_config(mut config: StoreConfig, superblock: &Superblock) -> StoreConfig {
    let segment_blocks = superblock.segment_blocks() as usize;
    config.batch_entries_max = config.batch_entries_max.clamp(1, 8192);
    let header_blocks = batch_header_blocks(config.batch_entries_max);
    let payload_blocks_max = segment_blocks.saturating_sub(1 + header_blocks).max(1);
    config.batch_payload_bytes_max = config
        .batch_payload_bytes_max
        .clamp(BLOCK_BYTES, payload_blocks_max * BLOCK_BYTES);
    // A fragment larger than a batch travels alone in a batch of its own, which must
    // still fit an empty segment.
    config.fragment_bytes_max = config.fragment_bytes_max.min(payload_blocks_max * BLOCK_BYTES);
    config.batches_in_flight_max = config.batches_in_flight_max.max(1);
    config.background_bytes_per_second = config.background_bytes_per_second.max(1 << 20);
    config
}

/// Forgets a pending put or delete when dropped (also when a caller cancels).
struct PendingGuard<'a> {
    inner: &'a Inner,
    locator: Locator,
    kind: EntryKind,
    armed: bool,
}

impl<'a> PendingGuard<'a> {
    fn put(inner: &'a Inner, locator: Locator) -> PendingGuard<'a> {
        PendingGuard {
            inner,
            locator,
            kind: EntryKind::Put,
            armed: true,
        }
    }

    fn delete(inner: &'a Inner, locator: Locator) -> PendingGuard<'a> {
        PendingGuard {
            inner,
            locator,
            kind: EntryKind::Delete,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            match self.kind {
                EntryKind::Put => self.inner.forget_pending_put(&self.locator),
                EntryKind::Delete => self.inner.forget_pending_delete(&self.locator),
            }
        }
    }
}

/// Marks a corrupt extent in a checkpoint entry's segment field (segments < 2^31).
pub(crate) const CHECKPOINT_CORRUPT_BIT: u32 = 1 << 31;

/// Why a compaction move was dropped before queueing (the fragment changed meanwhile).
const MOVE_NOT_NEEDED: &str = "compaction move no longer needed";

fn padded_bytes(bytes: usize) -> usize {
    bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

fn blocks_for(bytes: usize) -> u32 {
    bytes.div_ceil(BLOCK_BYTES).max(1) as u32
}

impl Inner {
    fn check_writable(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.failure.borrow().as_ref() {
            return Err(StoreError::Stopped {
                device: self.path.clone(),
                reason: reason.clone(),
            });
        }
        if self.stopping.get() {
            return Err(self.stopped_error());
        }
        Ok(())
    }

    fn stopped_error(&self) -> StoreError {
        StoreError::Stopped {
            device: self.path.clone(),
            reason: self.failure.borrow().clone().unwrap_or_else(|| "shutting down".into()),
        }
    }

    fn corrupt_error(&self, locator: &Locator, detail: &str) -> StoreError {
        StoreError::Corrupt {
            device: self.path.clone(),
            locator: *locator,
            detail: format!("allocation group {}: {detail}", self.ag),
        }
    }

    fn mark_corrupt(&self, locator: &Locator) {
        if self.corrupt.borrow_mut().insert(*locator) {
            self.stats.borrow_mut().corrupt_extents += 1;
            tracing::error!(device = %self.path.display(), ag = self.ag, %locator, "corrupt extent");
        }
    }

    fn next_compaction_candidate(&self) -> Option<u32> {
        let mut excluded = self.compaction_stuck.borrow().clone();
        excluded.extend(self.compacting.borrow().iter().copied());
        self.state
            .borrow()
            .compaction_candidate_excluding(self.config.compaction_dead_ratio_min, &excluded)
    }

    /// A queued record left the pipeline (retired, failed or refused): release the
    /// pending mark its caller took (compaction moves take none).
    fn forget_pending(&self, entry: &BatchEntry, is_move: bool) {
        match entry.kind {
            EntryKind::Delete => self.forget_pending_delete(&entry.locator),
            EntryKind::Put if !is_move => self.forget_pending_put(&entry.locator),
            EntryKind::Put => {}
        }
    }

    fn forget_pending_put(&self, locator: &Locator) {
        let mut pending = self.pending_puts.borrow_mut();
        if let Some(entry) = pending.get_mut(locator) {
            entry.2 -= 1;
            if entry.2 == 0 {
                pending.remove(locator);
            }
        }
    }

    fn forget_pending_delete(&self, locator: &Locator) {
        let mut pending = self.pending_deletes.borrow_mut();
        if let Some(count) = pending.get_mut(locator) {
            *count -= 1;
            if *count == 0 {
                pending.remove(locator);
            }
        }
    }

    /// Refuses a put that would eat into the compaction reserve.
    fn check_space(&self, bytes: usize) -> Result<(), StoreError> {
        let state = self.state.borrow();
        let pending = self.pending.borrow();
        let reserve_blocks = self.config.reserve_segments as u64 * u64::from(state.segment_blocks - 1);
        let pending_blocks = u64::from(pending.payload_blocks) + batch_header_blocks(pending.entries.len() + 1) as u64;
        let needed_blocks = pending_blocks + u64::from(blocks_for(bytes)) + 1;
        let available_blocks = state.free_blocks().saturating_sub(reserve_blocks);
        if needed_blocks > available_blocks {
            self.stats.borrow_mut().no_space += 1;
            // Reclaim now rather than at the next compaction tick.
            self.compaction_notify.notify();
            return Err(StoreError::NoSpace {
                device: self.path.clone(),
                ag: self.ag,
                needed_bytes: bytes as u64,
                free_bytes: available_blocks.saturating_sub(pending_blocks) * BLOCK_BYTES as u64,
            });
        }
        Ok(())
    }

    /// Adds a record to the pending batch, waiting for room; returns the reply receiver.
    async fn enqueue(
        &self,
        kind: EntryKind,
        locator: Locator,
        data: Option<&[u8]>,
        crc: u32,
        expected: Option<Extent>,
        started: Instant,
    ) -> Result<OneshotReceiver<Result<(), StoreError>>, StoreError> {
        let bytes = data.map_or(0, <[u8]>::len);
        let blocks = if kind == EntryKind::Put { blocks_for(bytes) } else { 0 };
        let payload_blocks_max = (self.config.batch_payload_bytes_max / BLOCK_BYTES) as u32;
        loop {
            // Moves too: one queued after the committer stopped would never be answered.
            self.check_writable()?;
            if let Some(expected) = expected {
                // Checked again right before queueing, with no await in between: a delete
                // queued before this move would otherwise be undone by it at replay.
                let still_there = self.state.borrow().index.get(&locator) == Some(&expected);
                if !still_there || self.pending_deletes.borrow().contains_key(&locator) {
                    return Err(StoreError::Busy(MOVE_NOT_NEEDED.to_string()));
                }
            }
            {
                let mut pending = self.pending.borrow_mut();
                // An empty batch takes any fragment, even one larger than a batch.
                let fits = pending.entries.len() < self.config.batch_entries_max
                    && (pending.payload_blocks == 0 || pending.payload_blocks + blocks <= payload_blocks_max);
                if fits {
                    if let Some(data) = data {
                        let prefix = self.prefix_bytes;
                        let offset = prefix + pending.payload_blocks as usize * BLOCK_BYTES;
                        // Sized for a normal batch, or for the one large fragment it carries.
                        let capacity = prefix + self.config.batch_payload_bytes_max.max(padded_bytes(bytes));
                        let buffer = pending.payload.get_or_insert_with(|| dma_buffer(capacity));
                        let full = buffer.full_mut();
                        full[offset..offset + bytes].copy_from_slice(data);
                        let padded_end = offset + blocks as usize * BLOCK_BYTES;
                        full[offset + bytes..padded_end].fill(0);
                    }
                    let payload_block = pending.payload_blocks;
                    pending.payload_blocks += blocks;
                    let receiver = pending.push(
                        BatchEntry {
                            kind,
                            locator,
                            payload_bytes: bytes as u32,
                            payload_block,
                            payload_crc: crc,
                        },
                        expected,
                        started,
                    );
                    drop(pending);
                    self.commit_notify.notify();
                    return Ok(receiver);
                }
            }
            self.commit_notify.notify();
            self.room_notify.notified().await;
        }
    }

    /// Queues a tombstone for each of `locators` (at most `batch_entries_max`) into the
    /// same pending batch, with no await in between: they commit together or not at all.
    async fn enqueue_deletes_together(
        &self,
        locators: &[Locator],
    ) -> Result<Vec<OneshotReceiver<Result<(), StoreError>>>, StoreError> {
        assert!(
            locators.len() <= self.config.batch_entries_max,
            "a group of {} tombstones exceeds a batch",
            locators.len()
        );
        loop {
            self.check_writable()?;
            {
                let mut pending = self.pending.borrow_mut();
                if pending.entries.len() + locators.len() <= self.config.batch_entries_max {
                    let started = Instant::now();
                    let payload_block = pending.payload_blocks;
                    let receivers = locators
                        .iter()
                        .map(|locator| {
                            let entry = BatchEntry {
                                kind: EntryKind::Delete,
                                locator: *locator,
                                payload_bytes: 0,
                                payload_block,
                                payload_crc: 0,
                            };
                            pending.push(entry, None, started)
                        })
                        .collect();
                    drop(pending);
                    self.commit_notify.notify();
                    return Ok(receivers);
                }
            }
            self.commit_notify.notify();
            self.room_notify.notified().await;
        }
    }

    async fn read_extent(&self, extent: &Extent) -> Result<DmaBuf, StoreError> {
        let offset =
            self.superblock.segment_offset(self.ag, extent.segment) + u64::from(extent.block) * BLOCK_BYTES as u64;
        let length = extent.blocks() as usize * BLOCK_BYTES;
        let (result, buffer) = self.file.read_exact_at(dma_buffer(length), offset, length).await;
        result.map_err(|error| StoreError::io(&self.path, "reading a fragment", error))?;
        Ok(buffer)
    }

    // ----- committer -------------------------------------------------------------------

    async fn run_committer(self: Rc<Self>) {
        loop {
            self.retire_finished();
            let in_flight = self.in_flight.borrow().len();
            let pending_empty = self.pending.borrow().is_empty();
            if self.failure.borrow().is_some() {
                self.fail_pending();
                if in_flight == 0 {
                    break;
                }
            } else {
                let freed_waiting = {
                    let mut state = self.state.borrow_mut();
                    if !pending_empty && state.free_segments() == 0 {
                        let pending = self.pending.borrow();
                        let needed = pending.payload_blocks + batch_header_blocks(pending.entries.len()) as u32;
                        if state.active_room_blocks() < needed {
                            // Out of segments: reclaim the dead ones now, no I/O needed.
                            state.free_dead_sealed();
                        }
                    }
                    state.freed_segments() > 0 && state.free_segments() <= self.config.reserve_segments
                };
                let checkpoint_due = self.checkpoint_requested.get()
                    || freed_waiting
                    || self.bytes_since_checkpoint.get() >= self.config.checkpoint_interval_bytes;
                let can_dispatch = !pending_empty && in_flight < self.config.batches_in_flight_max;
                if self.stopping.get() {
                    // Drain what writers queued, then one final checkpoint.
                    if can_dispatch {
                        self.dispatch().await;
                        continue;
                    }
                    if pending_empty && in_flight == 0 {
                        if let Err(error) = self.write_checkpoint().await {
                            self.fail(format!("final checkpoint failed: {error}"));
                        }
                        break;
                    }
                } else if checkpoint_due && in_flight == 0 {
                    if let Err(error) = self.write_checkpoint().await {
                        self.fail(format!("checkpoint failed: {error}"));
                    }
                    continue;
                } else if can_dispatch && !checkpoint_due {
                    self.dispatch().await;
                    continue;
                }
            }
            self.commit_notify.notified().await;
        }
        self.fail_pending();
        self.committer_finished.set(true);
        self.committer_exit.notify();
        self.room_notify.notify();
    }

    fn fail(&self, reason: String) {
        tracing::error!(device = %self.path.display(), ag = self.ag, %reason, "store failed; refusing writes");
        self.failure.borrow_mut().get_or_insert(reason);
        self.commit_notify.notify();
        self.room_notify.notify();
    }

    fn fail_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for ((entry, reply), expected) in pending.entries.iter().zip(pending.replies).zip(&pending.expected) {
            self.forget_pending(entry, expected.is_some());
            if let Some(reply) = reply {
                reply.send(Err(self.stopped_error()));
            }
        }
        self.room_notify.notify();
    }

    /// Takes the pending batch, places it, and starts its write + flush.
    async fn dispatch(self: &Rc<Self>) {
        let mut batch = std::mem::take(&mut *self.pending.borrow_mut());
        self.room_notify.notify();
        let header_blocks = batch_header_blocks(batch.entries.len()) as u32;
        let blocks = header_blocks + batch.payload_blocks;
        let reserved = match self.reserve(blocks).await {
            Ok(reserved) => reserved,
            Err(error) => {
                tracing::warn!(device = %self.path.display(), ag = self.ag, %error, "batch refused");
                for ((entry, reply), expected) in
                    batch.entries.iter().zip(batch.replies.iter_mut()).zip(&batch.expected)
                {
                    self.forget_pending(entry, expected.is_some());
                    if let Some(reply) = reply.take() {
                        reply.send(Err(clone_error(&error)));
                    }
                }
                return;
            }
        };
        let (segment, sequence, first_block, batch_index) = reserved;
        let header = BatchHeader {
            device_uuid: self.superblock.device_uuid,
            ag: self.ag,
            segment,
            segment_sequence: sequence,
            batch_index,
            header_blocks,
            payload_blocks: batch.payload_blocks,
        };
        let header_bytes = header_blocks as usize * BLOCK_BYTES;
        let start = self.prefix_bytes - header_bytes;
        let length = header_bytes + batch.payload_blocks as usize * BLOCK_BYTES;
        let mut buffer = batch
            .payload
            .take()
            .unwrap_or_else(|| dma_buffer(self.prefix_bytes + BLOCK_BYTES));
        header.encode(&batch.entries, &mut buffer.full_mut()[start..self.prefix_bytes]);
        let offset = self.superblock.segment_offset(self.ag, segment) + u64::from(first_block) * BLOCK_BYTES as u64;
        let result = Rc::new(RefCell::new(None));
        let bytes = length as u64;
        self.in_flight.borrow_mut().push_back(InFlight {
            result: Rc::clone(&result),
            segment,
            payload_first_block: first_block + header_blocks,
            entries: batch.entries,
            expected: batch.expected,
            replies: batch.replies,
            started: batch.started,
            bytes,
        });
        let task_inner = Rc::clone(self);
        let spawned = kiseki_runtime::spawn("store-batch", async move {
            let (written, _buffer) = task_inner.file.write_range_all_at(buffer, start, length, offset).await;
            let outcome = match written {
                Ok(()) => task_inner.flush_covering_now().await,
                Err(error) => Err(error),
            };
            *result.borrow_mut() = Some(outcome);
            task_inner.commit_notify.notify();
        });
        if let Err(error) = spawned {
            // Nothing was written and nothing awaited since the reservation: take it back
            // (no hole in the log) and refuse the batch as retryable.
            let last = self.in_flight.borrow_mut().pop_back();
            if let Some(mut last) = last {
                self.state.borrow_mut().unreserve(segment, blocks);
                for ((entry, reply), expected) in last.entries.iter().zip(last.replies.iter_mut()).zip(&last.expected) {
                    self.forget_pending(entry, expected.is_some());
                    if let Some(reply) = reply.take() {
                        reply.send(Err(StoreError::Busy(format!("cannot start a batch write: {error}"))));
                    }
                }
            }
        }
    }

    /// Waits for a device flush that begins after this call, so it covers every write
    /// completed before the call. Batches in flight share flushes: while one flush runs,
    /// every batch whose write completes meanwhile waits for the single next one.
    async fn flush_covering_now(&self) -> std::io::Result<()> {
        let needed = self.flushes_started.get() + 1;
        loop {
            if let Some(reason) = self.flush_failure.borrow().as_ref() {
                return Err(std::io::Error::other(reason.clone()));
            }
            if self.flushes_done.get() >= needed {
                return Ok(());
            }
            if !self.flush_running.get() {
                self.flush_running.set(true);
                let generation = self.flushes_started.get() + 1;
                self.flushes_started.set(generation);
                let result = self.file.sync_data().await;
                self.flush_running.set(false);
                if let Err(error) = result {
                    self.flush_failure.borrow_mut().get_or_insert(error.to_string());
                }
                self.flushes_done.set(generation);
                self.stats.borrow_mut().flushes += 1;
                self.flush_notify.notify();
                continue;
            }
            self.flush_notify.notified().await;
        }
    }

    /// Finds room for `blocks` in the active segment, switching to a fresh segment (its
    /// header durable first) when needed.
    async fn reserve(&self, blocks: u32) -> Result<(u32, u64, u32, u32), StoreError> {
        if let Some(reserved) = self.state.borrow_mut().reserve_in_active(blocks) {
            return Ok(reserved);
        }
        let allocated = self.state.borrow_mut().allocate_segment();
        let Some((segment, sequence)) = allocated else {
            self.compaction_notify.notify();
            let free_bytes = self.state.borrow().free_blocks() * BLOCK_BYTES as u64;
            self.stats.borrow_mut().no_space += 1;
            return Err(StoreError::NoSpace {
                device: self.path.clone(),
                ag: self.ag,
                needed_bytes: u64::from(blocks) * BLOCK_BYTES as u64,
                free_bytes,
            });
        };
        let header = SegmentHeader {
            device_uuid: self.superblock.device_uuid,
            ag: self.ag,
            segment,
            sequence,
        };
        let mut block = dma_buffer(BLOCK_BYTES);
        block.set_len(BLOCK_BYTES);
        header.encode(block.full_mut());
        let offset = self.superblock.segment_offset(self.ag, segment);
        let (written, _) = self.file.write_all_at(block, offset).await;
        let durable = match written {
            Ok(()) => self.file.sync_data().await,
            Err(error) => Err(error),
        };
        if let Err(error) = durable {
            // The segment is active but its header may not be on the device: writing
            // batches behind it could lose them at replay. Stop writing.
            let error = StoreError::io(&self.path, "writing a segment header", error);
            self.fail(error.to_string());
            return Err(error);
        }
        self.stats.borrow_mut().flushes += 1;
        self.state
            .borrow_mut()
            .reserve_in_active(blocks)
            .ok_or_else(|| StoreError::Invalid(format!("a batch of {blocks} blocks does not fit an empty segment")))
    }

    /// Retires durable batches in log order: index updates, then replies (I-E1).
    fn retire_finished(&self) {
        loop {
            let finished = {
                let in_flight = self.in_flight.borrow();
                match in_flight.front() {
                    Some(front) => front.result.borrow().is_some(),
                    None => false,
                }
            };
            if !finished {
                return;
            }
            let batch = self.in_flight.borrow_mut().pop_front().expect("front checked above");
            let outcome = batch.result.borrow_mut().take().expect("finished batch has a result");
            match outcome {
                Ok(()) => self.apply_batch(batch),
                Err(error) => {
                    let reason = format!("batch write or flush failed: {error}");
                    self.fail(reason);
                    self.fail_batch(batch);
                    // Later batches follow a hole in the log: fail them too.
                    while let Some(later) = self.in_flight.borrow_mut().pop_front() {
                        self.fail_batch(later);
                    }
                    return;
                }
            }
        }
    }

    fn fail_batch(&self, mut batch: InFlight) {
        self.state.borrow_mut().batch_retired(batch.segment);
        for ((entry, reply), expected) in batch.entries.iter().zip(batch.replies.iter_mut()).zip(&batch.expected) {
            self.forget_pending(entry, expected.is_some());
            if let Some(reply) = reply.take() {
                reply.send(Err(self.stopped_error()));
            }
        }
    }

    fn apply_batch(&self, mut batch: InFlight) {
        let now = Instant::now();
        {
            let mut state = self.state.borrow_mut();
            state.batch_retired(batch.segment);
            let mut stats = self.stats.borrow_mut();
            stats.batches += 1;
            for (position, entry) in batch.entries.iter().enumerate() {
                match entry.kind {
                    EntryKind::Put => {
                        let extent = Extent {
                            segment: batch.segment,
                            block: batch.payload_first_block + entry.payload_block,
                            bytes: entry.payload_bytes,
                            crc: entry.payload_crc,
                        };
                        match batch.expected[position] {
                            // A compaction move: its precondition holds by construction
                            // (deletes enqueued before it are excluded when it is queued).
                            Some(expected) => {
                                if state.index.get(&entry.locator) == Some(&expected) {
                                    state.apply_put(entry.locator, extent);
                                    self.corrupt.borrow_mut().remove(&entry.locator);
                                    stats.compacted_bytes += u64::from(entry.payload_bytes);
                                }
                            }
                            None => {
                                state.apply_put(entry.locator, extent);
                                self.corrupt.borrow_mut().remove(&entry.locator);
                                stats.puts += 1;
                                stats.put_bytes += u64::from(entry.payload_bytes);
                                let _ = stats
                                    .put_latency_us
                                    .record((now - batch.started[position]).as_micros() as u64);
                            }
                        }
                    }
                    EntryKind::Delete => {
                        state.apply_delete(&entry.locator);
                        self.corrupt.borrow_mut().remove(&entry.locator);
                        stats.deletes += 1;
                    }
                }
            }
        }
        for (entry, expected) in batch.entries.iter().zip(&batch.expected) {
            self.forget_pending(entry, expected.is_some());
        }
        self.bytes_since_checkpoint
            .set(self.bytes_since_checkpoint.get() + batch.bytes);
        for reply in batch.replies.iter_mut().filter_map(Option::take) {
            reply.send(Ok(()));
        }
    }

    // ----- checkpoints -------------------------------------------------------------------

    /// Writes the index and segment table to the older slot: body, flush, header, flush.
    async fn write_checkpoint(&self) -> Result<(), StoreError> {
        self.checkpoint_requested.set(false);
        let sequence = self.checkpoint_sequence.get() + 1;
        let slot = (sequence % 2) as u32;
        let slot_offset = self.superblock.checkpoint_slot_offset(self.ag, slot);
        let (segments, resume_sequence, resume_batch, resume_block, next_segment_sequence, entry_count) = {
            let state = self.state.borrow();
            let resume_sequence = match state.active {
                Some(active) => state.segments[active as usize].sequence,
                None => state.next_sequence - 1,
            };
            let (resume_batch, resume_block) = state
                .segments
                .iter()
                .find(|info| info.sequence == resume_sequence && info.state != SegmentState::Free)
                .map_or((0, 1), |info| (info.next_batch, info.write_block));
            (
                state.segments.clone(),
                resume_sequence,
                resume_batch,
                resume_block,
                state.next_sequence,
                state.index.len() as u64,
            )
        };
        let mut body = CheckpointBody::new(
            slot_offset + BLOCK_BYTES as u64,
            self.superblock.checkpoint_slot_bytes - BLOCK_BYTES as u64,
        );
        let mut cursor: Option<Locator> = None;
        let mut entry = [0u8; CHECKPOINT_ENTRY_BYTES];
        loop {
            // Encode a slice of the index without holding the borrow across the write.
            let mut encoded = 0;
            {
                let state = self.state.borrow();
                let corrupt = self.corrupt.borrow();
                let lower = cursor.map_or(Bound::Unbounded, Bound::Excluded);
                for (locator, extent) in state
                    .index
                    .range((lower, Bound::Unbounded))
                    .take(CHECKPOINT_SLICE_ENTRIES)
                {
                    // The top bit of the segment field carries the corrupt mark, so a
                    // damaged extent stays refused (and rewritable) after a reopen.
                    let corrupt_bit = if corrupt.contains(locator) {
                        CHECKPOINT_CORRUPT_BIT
                    } else {
                        0
                    };
                    encode_checkpoint_entry(
                        locator,
                        extent.segment | corrupt_bit,
                        extent.block,
                        extent.bytes,
                        extent.crc,
                        &mut entry,
                    );
                    body.push(&entry);
                    cursor = Some(*locator);
                    encoded += 1;
                }
            }
            body.write_full_blocks(self).await?;
            if encoded < CHECKPOINT_SLICE_ENTRIES {
                break;
            }
        }
        assert_eq!(
            body.items, entry_count,
            "the index changed while the committer wrote a checkpoint"
        );
        let mut segment_entry = [0u8; CHECKPOINT_SEGMENT_BYTES];
        for info in &segments {
            encode_checkpoint_segment(
                info.state.code(),
                info.write_block,
                info.next_batch,
                info.sequence,
                &mut segment_entry,
            );
            body.push(&segment_entry);
        }
        let crc = body.finish(self).await?;
        self.file
            .sync_data()
            .await
            .map_err(|error| StoreError::io(&self.path, "flushing a checkpoint", error))?;
        let header = CheckpointHeader {
            device_uuid: self.superblock.device_uuid,
            ag: self.ag,
            sequence,
            entry_count,
            segment_count: segments.len() as u32,
            body_crc: crc,
            next_segment_sequence,
            resume_sequence,
            resume_batch,
            resume_block,
        };
        let mut block = dma_buffer(BLOCK_BYTES);
        block.set_len(BLOCK_BYTES);
        header.encode(block.full_mut());
        let (result, _) = self.file.write_all_at(block, slot_offset).await;
        result.map_err(|error| StoreError::io(&self.path, "writing a checkpoint header", error))?;
        self.file
            .sync_data()
            .await
            .map_err(|error| StoreError::io(&self.path, "flushing a checkpoint", error))?;
        {
            let mut state = self.state.borrow_mut();
            for (segment, snapshot) in segments.iter().enumerate() {
                if snapshot.state == SegmentState::Freed && state.segments[segment].state == SegmentState::Freed {
                    state.segments[segment].state = SegmentState::Free;
                }
            }
        }
        self.checkpoint_sequence.set(sequence);
        self.bytes_since_checkpoint.set(0);
        self.compaction_stuck.borrow_mut().clear();
        let mut stats = self.stats.borrow_mut();
        stats.checkpoints += 1;
        stats.flushes += 2;
        Ok(())
    }
}

/// Index entries encoded per slice of a checkpoint.
const CHECKPOINT_SLICE_ENTRIES: usize = 16 * 1024;

/// Streams a checkpoint body to its slot in whole blocks, with a running CRC32C.
struct CheckpointBody {
    staging: Vec<u8>,
    crc: u32,
    next_offset: u64,
    end_offset: u64,
    items: u64,
}

impl CheckpointBody {
    fn new(offset: u64, capacity_bytes: u64) -> CheckpointBody {
        CheckpointBody {
            staging: Vec::with_capacity(2 << 20),
            crc: 0,
            next_offset: offset,
            end_offset: offset + capacity_bytes,
            items: 0,
        }
    }

    fn push(&mut self, item: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, item);
        self.staging.extend_from_slice(item);
        if item.len() == CHECKPOINT_ENTRY_BYTES {
            self.items += 1;
        }
    }

    async fn write(&mut self, inner: &Inner, bytes: usize) -> Result<(), StoreError> {
        assert!(
            self.next_offset + bytes as u64 <= self.end_offset,
            "checkpoint body exceeds its slot: geometry invariant broken"
        );
        let mut buffer = dma_buffer(bytes);
        buffer.full_mut()[..bytes].copy_from_slice(&self.staging[..bytes]);
        buffer.set_len(bytes);
        let (result, _) = inner.file.write_all_at(buffer, self.next_offset).await;
        result.map_err(|error| StoreError::io(&inner.path, "writing a checkpoint", error))?;
        self.staging.drain(..bytes);
        self.next_offset += bytes as u64;
        Ok(())
    }

    /// Writes the whole blocks staged so far once at least 1 MiB is staged.
    async fn write_full_blocks(&mut self, inner: &Inner) -> Result<(), StoreError> {
        if self.staging.len() < 1 << 20 {
            return Ok(());
        }
        let bytes = self.staging.len() / BLOCK_BYTES * BLOCK_BYTES;
        self.write(inner, bytes).await
    }

    /// Pads and writes the rest; returns the body CRC.
    async fn finish(mut self, inner: &Inner) -> Result<u32, StoreError> {
        let padded = self.staging.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        self.staging.resize(padded, 0);
        if padded > 0 {
            self.write(inner, padded).await?;
        }
        Ok(self.crc)
    }
}

fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::NoSpace {
            device,
            ag,
            needed_bytes,
            free_bytes,
        } => StoreError::NoSpace {
            device: device.clone(),
            ag: *ag,
            needed_bytes: *needed_bytes,
            free_bytes: *free_bytes,
        },
        other => StoreError::Stopped {
            device: PathBuf::new(),
            reason: other.to_string(),
        },
    }
}

mod background;
mod recovery;
