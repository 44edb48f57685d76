//! Unstable writes, buffered per file with bounded memory and flushed on COMMIT, when a
//! file's buffer is full, or when a worker's share of memory is (I-H2).
//!
//! **Shape.** Files are spread over `workers` tasks by a hash of (export, inode); each
//! task owns the buffers of its files (no lock: one owner, reached by message over a
//! bounded channel) and runs every write, flush, overlay and commit of a file in order.
//! A lock-free table of counters, one per hash bucket, says which buckets hold buffered
//! bytes, so a READ or GETATTR asks a worker only when its file may have some.
//!
//! **Durability.** A WRITE with `UNSTABLE` is answered once buffered; with `DATA_SYNC`
//! or `FILE_SYNC`, once the file's buffer is committed (its chunks at their write quorum
//! and their extents applied on a majority, I-L5 and I-L2). COMMIT flushes the file and
//! answers with the gateway's write verifier: random at each start, so a client whose
//! unstable writes died with a gateway sees a new verifier and sends them again. A flush
//! that fails drops the file's buffered bytes and the next COMMIT reports the failure.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use kiseki_client::{ClientError, Namespace};
use kiseki_namespace::{Attributes, InodeId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::errors::status_of;
use super::proto::Status;

/// Buckets of the dirty table.
const BUCKETS: usize = 4096;

/// A file: its export and inode.
pub type FileKey = (u32, InodeId);

/// Limits of the write buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// Worker tasks (files are spread over them).
    pub workers: usize,
    /// Buffered bytes of all files at most (split evenly over the workers).
    pub buffer_bytes_max: usize,
    /// Buffered bytes of one file that make it flush.
    pub file_flush_bytes: usize,
    /// Requests queued per worker.
    pub queue_max: usize,
}

impl Default for WriteLimits {
    fn default() -> WriteLimits {
        WriteLimits {
            workers: 8,
            buffer_bytes_max: 256 << 20,
            file_flush_bytes: 8 << 20,
            queue_max: 64,
        }
    }
}

/// Buffered bytes of a file's range, for reads to lay over what is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Buffered ranges in the range asked for: (file offset, bytes), to be laid in order
    /// (a later range is newer where two overlap).
    pub ranges: Vec<(u64, Vec<u8>)>,
    /// The end of the highest buffered byte of the file (0 if none).
    pub end_bytes: u64,
}

enum Command {
    Write {
        namespace: Namespace,
        attributes: Attributes,
        key: FileKey,
        offset: u64,
        data: Vec<u8>,
        sync: bool,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Commit {
        key: FileKey,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Overlay {
        key: FileKey,
        offset: u64,
        length: u64,
        reply: oneshot::Sender<Overlay>,
    },
    Attributes {
        key: FileKey,
        reply: oneshot::Sender<Option<Attributes>>,
    },
    Prime {
        key: FileKey,
        attributes: Attributes,
    },
    Drop {
        key: FileKey,
        reply: oneshot::Sender<()>,
    },
    FlushAll {
        reply: oneshot::Sender<()>,
    },
}

struct FileBuffer {
    namespace: Namespace,
    /// The file's attributes when its buffer was started (for the permission checks of
    /// the writes that follow, which then need no read of the shard).
    attributes: Attributes,
    /// Whether `attributes` still describe the file in the shard (no flush since): a
    /// flush may then write a small new file inline without reading it first.
    fresh: bool,
    ranges: Ranges,
    /// Background flushes under way, oldest first: at most `FLUSHES_PER_FILE_MAX`, and
    /// the ranges of two of them never overlap (I-H3).
    flushing: VecDeque<Flushing>,
    /// A flush failure not reported yet.
    failure: Option<Status>,
}

/// A background flush of a file's full buffer: the ranges stay readable (under the
/// buffer's newer bytes) until their extents are committed.
struct Flushing {
    ranges: Arc<BTreeMap<u64, Vec<u8>>>,
    bytes: usize,
    task: JoinHandle<Result<(), Status>>,
}

impl FileBuffer {
    /// Whether the file holds bytes a read must lay over the shard's.
    fn is_dirty(&self) -> bool {
        !self.ranges.is_empty() || !self.flushing.is_empty()
    }

    fn held_bytes(&self) -> usize {
        self.ranges.bytes + self.flushing.iter().map(|flushing| flushing.bytes).sum::<usize>()
    }

    fn end_bytes(&self) -> u64 {
        let flushing_end = self
            .flushing
            .iter()
            .filter_map(|flushing| flushing.ranges.iter().next_back())
            .map(|(start, bytes)| start + bytes.len() as u64)
            .max()
            .unwrap_or(0);
        self.ranges.end_bytes().max(flushing_end)
    }

    /// The buffered bytes of a range: the flushing ones first, then the newer buffer's
    /// laid over them.
    fn overlay(&self, offset: u64, length: u64) -> Overlay {
        let mut overlay = Overlay::default();
        for flushing in &self.flushing {
            overlay.ranges.extend(overlay_of(&flushing.ranges, offset, length));
        }
        overlay.ranges.extend(overlay_of(&self.ranges.map, offset, length));
        overlay.end_bytes = self.end_bytes();
        overlay
    }
}

/// Disjoint, non-adjacent buffered ranges of one file.
#[derive(Debug, Default)]
struct Ranges {
    /// Offset → bytes.
    map: BTreeMap<u64, Vec<u8>>,
    /// Bytes held.
    bytes: usize,
}

impl Ranges {
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Lays `data` at `offset` over the buffered ranges; returns the change in bytes held.
    fn insert(&mut self, offset: u64, data: Vec<u8>) -> isize {
        let end = offset + data.len() as u64;
        let before = self.bytes;
        let overlapping: Vec<u64> = self
            .map
            .range(..end)
            .filter(|(start, bytes)| **start + bytes.len() as u64 > offset)
            .map(|(start, _)| *start)
            .collect();
        for start in overlapping {
            let Some(old) = self.map.remove(&start) else { continue };
            self.bytes -= old.len();
            let old_end = start + old.len() as u64;
            if start < offset {
                let left = old[..(offset - start) as usize].to_vec();
                self.bytes += left.len();
                self.map.insert(start, left);
            }
            if old_end > end {
                let right = old[(end - start) as usize..].to_vec();
                self.bytes += right.len();
                self.map.insert(end, right);
            }
        }
        self.bytes += data.len();
        // Sequential writes extend the range before them instead of starting a new one.
        let joined = match self.map.range_mut(..offset).next_back() {
            Some((start, bytes)) if *start + bytes.len() as u64 == offset => {
                bytes.extend_from_slice(&data);
                Some(*start)
            }
            _ => None,
        };
        let start = joined.unwrap_or(offset);
        if joined.is_none() {
            self.map.insert(offset, data);
        }
        if let Some(next) = self.map.remove(&end) {
            if let Some(bytes) = self.map.get_mut(&start) {
                bytes.extend_from_slice(&next);
            }
        }
        self.bytes as isize - before as isize
    }

    fn end_bytes(&self) -> u64 {
        self.map
            .iter()
            .next_back()
            .map_or(0, |(start, bytes)| start + bytes.len() as u64)
    }
}

/// The parts of `map`'s ranges within `[offset, offset + length)`, ascending.
fn overlay_of(map: &BTreeMap<u64, Vec<u8>>, offset: u64, length: u64) -> Vec<(u64, Vec<u8>)> {
    let end = offset.saturating_add(length);
    map.range(..end)
        .filter(|(start, bytes)| **start + bytes.len() as u64 > offset)
        .map(|(start, bytes)| {
            let from = offset.max(*start);
            let to = end.min(start + bytes.len() as u64);
            (from, bytes[(from - start) as usize..(to - start) as usize].to_vec())
        })
        .collect()
}

/// The lock-free table of buckets holding buffered bytes.
#[derive(Debug)]
struct DirtyTable {
    counts: Vec<AtomicU32>,
}

fn bucket_of(key: FileKey) -> usize {
    let mixed = (u64::from(key.0) << 32 ^ key.1 .0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as usize
}

/// The write buffers of a gateway.
#[derive(Debug, Clone)]
pub struct WriteBack {
    workers: Vec<mpsc::Sender<Command>>,
    dirty: Arc<DirtyTable>,
    verifier: [u8; 8],
}

impl WriteBack {
    /// Starts the worker tasks; the write verifier is random.
    pub fn start(limits: WriteLimits) -> WriteBack {
        let dirty = Arc::new(DirtyTable {
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        });
        let workers = limits.workers.max(1);
        let budget = (limits.buffer_bytes_max / workers).max(limits.file_flush_bytes);
        let senders = (0..workers)
            .map(|_| {
                let (sender, receiver) = mpsc::channel(limits.queue_max.max(1));
                let worker = Worker {
                    files: HashMap::new(),
                    primed: HashMap::new(),
                    primed_order: VecDeque::new(),
                    bytes: 0,
                    budget,
                    file_flush_bytes: limits.file_flush_bytes,
                    dirty: Arc::clone(&dirty),
                };
                tokio::spawn(worker.run(receiver));
                sender
            })
            .collect();
        WriteBack {
            workers: senders,
            dirty,
            verifier: rand::random(),
        }
    }

    /// The write verifier of this gateway's life.
    pub fn verifier(&self) -> [u8; 8] {
        self.verifier
    }

    fn worker(&self, key: FileKey) -> &mpsc::Sender<Command> {
        &self.workers[bucket_of(key) % self.workers.len()]
    }

    /// Whether `key`'s file may hold buffered bytes.
    pub fn may_be_dirty(&self, key: FileKey) -> bool {
        self.dirty.counts[bucket_of(key) % BUCKETS].load(Ordering::Acquire) > 0
    }

    async fn ask<T>(&self, key: FileKey, command: Command, answer: oneshot::Receiver<T>) -> Option<T> {
        self.worker(key).send(command).await.ok()?;
        answer.await.ok()
    }

    /// The attributes a file had when its current buffer started, with the size its
    /// buffered bytes give it, or those CREATE answered for it if no write came since
    /// ([`WriteBack::prime`]); `None` when the worker has neither.
    pub async fn attributes(&self, key: FileKey) -> Option<Attributes> {
        let (reply, answer) = oneshot::channel();
        self.ask(key, Command::Attributes { key, reply }, answer)
            .await
            .flatten()
    }

    /// Buffers `data` at `offset` of the file (whose attributes are `attributes`); with
    /// `sync`, commits the file's buffer before answering.
    pub async fn write(
        &self,
        namespace: &Namespace,
        attributes: &Attributes,
        key: FileKey,
        offset: u64,
        data: Vec<u8>,
        sync: bool,
    ) -> Result<(), Status> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Write {
            namespace: namespace.clone(),
            attributes: attributes.clone(),
            key,
            offset,
            data,
            sync,
            reply,
        };
        self.ask(key, command, answer).await.unwrap_or(Err(Status::ServerFault))
    }

    /// Keeps the attributes a CREATE answered for a new file, for the checks of the
    /// WRITE that usually follows (which then needs no read of the shard); the oldest
    /// are forgotten past `PRIMED_FILES_MAX` per worker.
    pub async fn prime(&self, key: FileKey, attributes: &Attributes) {
        let command = Command::Prime {
            key,
            attributes: attributes.clone(),
        };
        let _ = self.worker(key).send(command).await;
    }

    /// Commits the file's buffered bytes; reports a failure of an earlier flush.
    pub async fn commit(&self, key: FileKey) -> Result<(), Status> {
        let (reply, answer) = oneshot::channel();
        self.ask(key, Command::Commit { key, reply }, answer)
            .await
            .unwrap_or(Err(Status::ServerFault))
    }

    /// The file's buffered bytes in a range, when it may have some.
    pub async fn overlay(&self, key: FileKey, offset: u64, length: u64) -> Overlay {
        if !self.may_be_dirty(key) {
            return Overlay::default();
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Overlay {
            key,
            offset,
            length,
            reply,
        };
        self.ask(key, command, answer).await.unwrap_or_default()
    }

    /// Drops the file's buffered bytes (it was removed or truncated to the buffer's
    /// start by a change that supersedes them), once a flush under way has finished.
    pub async fn discard(&self, key: FileKey) {
        if self.may_be_dirty(key) {
            let (reply, answer) = oneshot::channel();
            let _ = self.ask(key, Command::Drop { key, reply }, answer).await;
        }
    }

    /// Commits every buffered byte (clean shutdown).
    pub async fn flush_all(&self) {
        for worker in &self.workers {
            let (reply, answer) = oneshot::channel();
            if worker.send(Command::FlushAll { reply }).await.is_ok() {
                let _ = answer.await;
            }
        }
    }
}

/// Background flushes of one file under way at once.
const FLUSHES_PER_FILE_MAX: usize = 2;

/// Whether a range of `a` and a range of `b` share a byte.
fn overlaps(a: &BTreeMap<u64, Vec<u8>>, b: &BTreeMap<u64, Vec<u8>>) -> bool {
    b.iter().any(|(start, bytes)| {
        let end = start + bytes.len() as u64;
        a.range(..end)
            .next_back()
            .is_some_and(|(other, other_bytes)| other + other_bytes.len() as u64 > *start)
    })
}

/// Primed attributes a worker keeps at most.
const PRIMED_FILES_MAX: usize = 1024;

struct Worker {
    files: HashMap<FileKey, FileBuffer>,
    /// Attributes CREATE answered for files with no buffer yet, and their order.
    primed: HashMap<FileKey, Attributes>,
    primed_order: VecDeque<FileKey>,
    bytes: usize,
    budget: usize,
    file_flush_bytes: usize,
    dirty: Arc<DirtyTable>,
}

impl Worker {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        while let Some(command) = receiver.recv().await {
            match command {
                Command::Write {
                    namespace,
                    attributes,
                    key,
                    offset,
                    data,
                    sync,
                    reply,
                } => {
                    let result = self.write(namespace, attributes, key, offset, data, sync).await;
                    let _ = reply.send(result);
                }
                Command::Commit { key, reply } => {
                    // A COMMIT also comes before a change of attributes: the primed ones
                    // may be stale after it.
                    self.primed.remove(&key);
                    let result = self.flush(key).await;
                    let _ = reply.send(result);
                }
                Command::Overlay {
                    key,
                    offset,
                    length,
                    reply,
                } => {
                    let overlay = self
                        .files
                        .get(&key)
                        .map(|file| file.overlay(offset, length))
                        .unwrap_or_default();
                    let _ = reply.send(overlay);
                }
                Command::Attributes { key, reply } => {
                    let attributes = match self.files.get(&key) {
                        Some(file) => {
                            let mut attributes = file.attributes.clone();
                            attributes.size_bytes = attributes.size_bytes.max(file.end_bytes());
                            Some(attributes)
                        }
                        None => self.primed.get(&key).cloned(),
                    };
                    let _ = reply.send(attributes);
                }
                Command::Prime { key, attributes } => self.prime(key, attributes),
                Command::Drop { key, reply } => {
                    self.primed.remove(&key);
                    // A flush under way finishes first: the change that drops the buffer
                    // (a truncation, a removal) must come after its extents.
                    self.wait_flush(key).await;
                    if let Some(file) = self.files.remove(&key) {
                        self.forget(key, &file);
                    }
                    let _ = reply.send(());
                }
                Command::FlushAll { reply } => {
                    let keys: Vec<FileKey> = self.files.keys().copied().collect();
                    for key in keys {
                        if let Err(status) = self.flush(key).await {
                            tracing::warn!(?key, ?status, "flushing buffered NFS writes at shutdown failed");
                        }
                    }
                    let _ = reply.send(());
                }
            }
        }
    }

    fn prime(&mut self, key: FileKey, attributes: Attributes) {
        if self.files.contains_key(&key) {
            return;
        }
        if self.primed.insert(key, attributes).is_none() {
            self.primed_order.push_back(key);
        }
        while self.primed.len() > PRIMED_FILES_MAX {
            let Some(oldest) = self.primed_order.pop_front() else {
                break;
            };
            self.primed.remove(&oldest);
        }
        // Keys used or dropped since stay in the order until they come up; keep it short.
        if self.primed_order.len() > 2 * PRIMED_FILES_MAX {
            let primed = &self.primed;
            self.primed_order.retain(|key| primed.contains_key(key));
        }
    }

    /// Counts a file in or out of the dirty table when it starts or stops holding bytes.
    fn mark(&self, key: FileKey, was_dirty: bool, is_dirty: bool) {
        let count = &self.dirty.counts[bucket_of(key) % BUCKETS];
        match (was_dirty, is_dirty) {
            (false, true) => {
                count.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                count.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// Forgets a file taken out of `files` (after its background flush).
    fn forget(&mut self, key: FileKey, file: &FileBuffer) {
        self.bytes -= file.held_bytes();
        self.mark(key, file.is_dirty(), false);
    }

    fn check_bytes(&self) {
        assert!(
            self.bytes == self.files.values().map(FileBuffer::held_bytes).sum::<usize>(),
            "I-H2: the worker's byte count matches its buffers"
        );
    }

    async fn write(
        &mut self,
        namespace: Namespace,
        attributes: Attributes,
        key: FileKey,
        offset: u64,
        data: Vec<u8>,
        sync: bool,
    ) -> Result<(), Status> {
        self.primed.remove(&key);
        let file = self.files.entry(key).or_insert_with(|| FileBuffer {
            namespace,
            attributes,
            fresh: true,
            ranges: Ranges::default(),
            flushing: VecDeque::new(),
            failure: None,
        });
        let was_dirty = file.is_dirty();
        let change = file.ranges.insert(offset, data);
        let (is_dirty, buffered) = (file.is_dirty(), file.ranges.bytes);
        self.mark(key, was_dirty, is_dirty);
        self.bytes = (self.bytes as isize + change) as usize;
        self.check_bytes();
        if sync {
            return self.flush(key).await;
        }
        if buffered >= self.file_flush_bytes {
            self.start_flush(key).await;
        }
        while self.bytes > self.budget {
            let Some((largest, flushing)) = self
                .files
                .iter()
                .filter(|(_, file)| file.held_bytes() > 0)
                .max_by_key(|(_, file)| file.held_bytes())
                .map(|(key, file)| (*key, !file.flushing.is_empty()))
            else {
                break;
            };
            // Another file's failure is kept for its next COMMIT.
            if flushing {
                self.wait_oldest_flush(largest).await;
            } else {
                self.start_flush(largest).await;
            }
        }
        Ok(())
    }

    /// Moves a file's buffer to a background flush, once fewer than
    /// `FLUSHES_PER_FILE_MAX` are under way and none of them holds a range the buffer
    /// overlaps (I-H3: a byte written twice reaches the shard in the order written).
    async fn start_flush(&mut self, key: FileKey) {
        loop {
            let Some(file) = self.files.get(&key) else { return };
            let busy = file.flushing.len() >= FLUSHES_PER_FILE_MAX
                || file
                    .flushing
                    .iter()
                    .any(|flushing| overlaps(&flushing.ranges, &file.ranges.map));
            if !busy {
                break;
            }
            self.wait_oldest_flush(key).await;
        }
        let Some(file) = self.files.get_mut(&key) else { return };
        if file.ranges.is_empty() {
            return;
        }
        if file.failure.is_some() {
            // The buffer is dropped with the failure: COMMIT reports it and the client
            // sends its unstable writes again.
            let dropped = std::mem::take(&mut file.ranges).bytes;
            let is_dirty = file.is_dirty();
            self.bytes -= dropped;
            self.mark(key, true, is_dirty);
            return;
        }
        let ranges = Arc::new(std::mem::take(&mut file.ranges.map));
        let bytes = std::mem::take(&mut file.ranges.bytes);
        let known = std::mem::replace(&mut file.fresh, false).then(|| file.attributes.clone());
        let namespace = file.namespace.clone();
        let committing = Arc::clone(&ranges);
        let task = tokio::spawn(async move { commit_ranges(&namespace, key, &committing, known).await });
        file.flushing.push_back(Flushing { ranges, bytes, task });
    }

    /// Waits for every background flush of a file.
    async fn wait_flush(&mut self, key: FileKey) {
        while self.files.get(&key).is_some_and(|file| !file.flushing.is_empty()) {
            self.wait_oldest_flush(key).await;
        }
    }

    /// Waits for a file's oldest background flush, keeping its failure for the next
    /// COMMIT.
    async fn wait_oldest_flush(&mut self, key: FileKey) {
        let Some(flushing) = self.files.get_mut(&key).and_then(|file| file.flushing.pop_front()) else {
            return;
        };
        let result = flushing.task.await.unwrap_or(Err(Status::ServerFault));
        self.bytes -= flushing.bytes;
        let Some(file) = self.files.get_mut(&key) else { return };
        if let Err(status) = result {
            file.failure.get_or_insert(status);
        }
        let (is_dirty, idle) = (file.is_dirty(), !file.is_dirty() && file.failure.is_none());
        self.mark(key, true, is_dirty);
        if idle {
            self.files.remove(&key);
        }
        self.check_bytes();
    }

    /// Commits the buffered ranges of `key`'s file, in order, after its background
    /// flush; reports a failure of either.
    async fn flush(&mut self, key: FileKey) -> Result<(), Status> {
        self.wait_flush(key).await;
        let Some(mut file) = self.files.remove(&key) else {
            return Ok(());
        };
        self.forget(key, &file);
        if let Some(failure) = file.failure.take() {
            return Err(failure);
        }
        let known = file.fresh.then(|| file.attributes.clone());
        commit_ranges(&file.namespace, key, &file.ranges.map, known).await
    }
}

/// Writes `ranges` of `key`'s file, in order. `known` are the file's attributes if no
/// flush changed it since they were read: a small new file then goes inline without a
/// read first (the shard checks their generation); after each inline write the shard's
/// answer is the next range's starting point.
async fn commit_ranges(
    namespace: &Namespace,
    key: FileKey,
    ranges: &BTreeMap<u64, Vec<u8>>,
    mut known: Option<Attributes>,
) -> Result<(), Status> {
    for (offset, data) in ranges {
        let written = match namespace.write_inline(key.1, *offset, data, known.as_ref()).await {
            Ok(Some((_, attributes))) => {
                known = Some(attributes);
                Ok(())
            }
            Ok(None) => {
                known = None;
                namespace.write_chunks_at(key.1, *offset, data).await.map(drop)
            }
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::warn!(?key, offset, %error, "flushing buffered NFS writes failed");
            return Err(flush_status(&error));
        }
    }
    Ok(())
}

fn flush_status(error: &ClientError) -> Status {
    match status_of(error) {
        Status::Jukebox => Status::Io,
        status => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat model of the file's buffered bytes.
    fn apply(model: &mut Vec<Option<u8>>, offset: usize, data: &[u8]) {
        if model.len() < offset + data.len() {
            model.resize(offset + data.len(), None);
        }
        for (index, byte) in data.iter().enumerate() {
            model[offset + index] = Some(*byte);
        }
    }

    #[test]
    fn ranges_merge_like_a_flat_buffer() {
        let mut file = Ranges::default();
        let mut model: Vec<Option<u8>> = Vec::new();
        let mut state = 7u64;
        for round in 0..2_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let offset = (state % 300) as usize;
            let length = 1 + (state >> 20) as usize % 40;
            let data: Vec<u8> = (0..length).map(|index| (round as usize + index) as u8).collect();
            file.insert(offset as u64, data.clone());
            apply(&mut model, offset, &data);
            let mut flat: Vec<Option<u8>> = vec![None; model.len()];
            let mut previous_end = None;
            for (start, bytes) in &file.map {
                assert!(!bytes.is_empty());
                if let Some(end) = previous_end {
                    assert!(*start > end, "ranges stay disjoint and non-adjacent");
                }
                previous_end = Some(*start + bytes.len() as u64);
                for (index, byte) in bytes.iter().enumerate() {
                    flat[*start as usize + index] = Some(*byte);
                }
            }
            assert_eq!(flat, model);
            assert_eq!(file.bytes, model.iter().filter(|byte| byte.is_some()).count());
        }
        for (offset, bytes) in overlay_of(&file.map, 100, 50) {
            for (index, byte) in bytes.iter().enumerate() {
                assert_eq!(model[offset as usize + index], Some(*byte));
            }
        }
        assert_eq!(file.end_bytes() as usize, model.len());
    }

    #[test]
    fn overlaps_finds_a_shared_byte_and_only_that() {
        let map = |ranges: &[(u64, usize)]| -> BTreeMap<u64, Vec<u8>> {
            ranges
                .iter()
                .map(|(start, length)| (*start, vec![0; *length]))
                .collect()
        };
        let flushing = map(&[(0, 100), (1_000, 100)]);
        assert!(
            !overlaps(&flushing, &map(&[(100, 900)])),
            "adjacent ranges share no byte"
        );
        assert!(!overlaps(&flushing, &map(&[(1_100, 10), (200, 5)])));
        assert!(overlaps(&flushing, &map(&[(99, 1)])));
        assert!(overlaps(&flushing, &map(&[(500, 10), (1_050, 1)])));
        assert!(overlaps(&flushing, &map(&[(900, 1_000)])), "a range covering another");
        assert!(!overlaps(&map(&[]), &flushing));
    }

    #[test]
    fn sequential_writes_make_one_range() {
        let mut file = Ranges::default();
        for index in 0..16u64 {
            file.insert(index * 1000, vec![index as u8; 1000]);
        }
        assert_eq!(file.map.len(), 1);
        assert_eq!(file.bytes, 16_000);
        file.insert(20_000, vec![1; 10]);
        file.insert(16_000, vec![2; 4000]);
        assert_eq!(file.map.len(), 1, "a write that fills a gap joins both sides");
        assert_eq!(file.end_bytes(), 20_010);
    }
}
