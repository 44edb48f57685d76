//! Open files: one task per open inode owns that file's write-back buffer, its chunk
//! cache and its read-ahead; every handle of the inode sends its reads, writes, flushes
//! and attribute requests to that task over a bounded channel, so nothing here is
//! shared between threads except channel ends.
//!
//! **Write-back.** A write lands in the file's dirty map (non-overlapping byte ranges,
//! merged as they touch) and is acknowledged at once. When the dirty bytes reach
//! `flush_bytes`, they move to the one background flush of the file, which chunks,
//! encrypts and writes them through [`Namespace::write_at`] and commits their extents;
//! a second threshold crossing waits for that flush first, so a file holds at most
//! about twice `flush_bytes` in memory. `flush` (every `close`), `fsync` and a size
//! change wait for the flush and write what is left: a closed file is committed on a
//! majority of its shard (close-to-open).
//!
//! **Reads** assemble the committed bytes (from the shard's extent map, with a window of
//! pieces kept for `meta_ttl_ms`), then lay the flushing and the dirty bytes over them:
//! a read always sees this mount's own writes. Decoded chunks stay in a small LRU;
//! sequential reads start fetching the chunks of the next window in the background.
//!
//! **Errors.** A failed background flush is kept and reported by the next `flush` or
//! `fsync` of the file (as `close(2)` reports a failed write-back), after which the
//! bytes it held are dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::Errno;
use kiseki_client::cache::{ChunkCache, Plaintext};
use kiseki_client::{ClientError, Namespace};
use kiseki_namespace::{AttrChanges, Attributes, InodeId, ReadPiece};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::errno::errno;

/// Largest read the kernel sends (its `max_read`, the mount's `max_write`).
const MAX_READ_BYTES: u64 = crate::fs::MAX_WRITE_BYTES as u64;

/// What an open file's task is asked to do.
pub enum FileOp {
    /// Buffer `data` at `offset_bytes`.
    Write {
        /// Where.
        offset_bytes: u64,
        /// The bytes.
        data: Vec<u8>,
        /// The bytes taken, or the error a failed background flush left.
        reply: oneshot::Sender<Result<u32, Errno>>,
    },
    /// Append `data` at the file's end as it is when the append commits (`O_APPEND`).
    Append {
        /// The bytes.
        data: Vec<u8>,
        /// The bytes taken, or the error a failed background flush left.
        reply: oneshot::Sender<Result<u32, Errno>>,
    },
    /// Read up to `length_bytes` at `offset_bytes`.
    Read {
        /// Where.
        offset_bytes: u64,
        /// How many bytes at most.
        length_bytes: u32,
        /// The bytes (fewer at the end of the file).
        reply: oneshot::Sender<Result<ReadBytes, Errno>>,
    },
    /// Write everything buffered and commit it (flush, fsync).
    Sync {
        /// Done, or the first error since the last sync.
        reply: oneshot::Sender<Result<(), Errno>>,
    },
    /// Attributes, with the size the buffered writes give the file.
    GetAttr {
        /// The attributes.
        reply: oneshot::Sender<Result<Attributes, Errno>>,
    },
    /// Change attributes; a size change writes what is buffered first.
    SetAttr {
        /// What to change.
        changes: AttrChanges,
        /// The attributes after the change.
        reply: oneshot::Sender<Result<Attributes, Errno>>,
    },
    /// The file's last name was removed while it is open: it now lives on in the
    /// hidden directory, and `stat` says it has no links.
    Unlinked,
    /// The last handle closed: write what is left and end the task.
    Close,
}

/// What a read answers: bytes of its own, or a range of a decoded chunk (no copy: the
/// common case of a sequential read inside one chunk).
pub enum ReadBytes {
    /// Assembled from several pieces or buffers.
    Owned(Vec<u8>),
    /// `chunk[range]`.
    Chunk(Plaintext, std::ops::Range<usize>),
}

impl ReadBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadBytes::Owned(bytes) => bytes,
            ReadBytes::Chunk(chunk, range) => &chunk[range.clone()],
        }
    }
}

/// Limits of one open file.
#[derive(Clone, Copy, Debug)]
pub struct FileLimits {
    /// Dirty bytes that start a background flush.
    pub flush_bytes: usize,
    /// Decoded chunks kept by the open file itself, and fetched ahead at most (0: no
    /// read-ahead); the mount's cache holds more.
    pub cached_chunks: usize,
    /// Bytes of the file read ahead of a sequential reader.
    pub read_ahead_bytes: u64,
    /// How long a window of extent pieces is trusted.
    pub meta_ttl: Duration,
}

/// Starts the task of the open file `inode`; the channel holds at most `queue` requests.
pub fn spawn(
    namespace: Namespace,
    cache: ChunkCache,
    inode: InodeId,
    limits: FileLimits,
    queue: usize,
) -> mpsc::Sender<FileOp> {
    let (sender, receiver) = mpsc::channel(queue.max(1));
    let file = OpenFile {
        namespace,
        cache,
        inode,
        limits,
        dirty: BTreeMap::new(),
        dirty_bytes: 0,
        flushing: None,
        failure: None,
        window: None,
        chunks: VecDeque::new(),
        fetching: HashMap::new(),
        last_read_end: None,
        appended: Vec::new(),
        unlinked: false,
    };
    tokio::spawn(file.run(receiver));
    sender
}

/// A background flush: the ranges it writes (readable until it ends) and its task.
struct Flush {
    ranges: Arc<BTreeMap<u64, Vec<u8>>>,
    task: JoinHandle<Result<(), ClientError>>,
}

/// Pieces of the committed file over `[start, end)`, read at `read_at`.
struct Window {
    start: u64,
    end: u64,
    pieces: Vec<ReadPiece>,
    read_at: Instant,
}

type ChunkFetch = JoinHandle<Result<Plaintext, ClientError>>;

struct OpenFile {
    namespace: Namespace,
    cache: ChunkCache,
    inode: InodeId,
    limits: FileLimits,
    /// Buffered writes: offset → bytes, non-overlapping and not touching.
    dirty: BTreeMap<u64, Vec<u8>>,
    dirty_bytes: usize,
    flushing: Option<Flush>,
    /// The first error of a background flush not yet reported.
    failure: Option<Errno>,
    window: Option<Window>,
    /// Decoded chunks, most recently used last.
    chunks: VecDeque<([u8; 32], Plaintext)>,
    fetching: HashMap<[u8; 32], ChunkFetch>,
    last_read_end: Option<u64>,
    /// `O_APPEND` writes not yet committed, in order; they go after whatever the file
    /// holds when they commit, so they are committed before any other operation.
    appended: Vec<u8>,
    /// Unlinked while open (see [`FileOp::Unlinked`]).
    unlinked: bool,
}

impl OpenFile {
    async fn run(mut self, mut requests: mpsc::Receiver<FileOp>) {
        while let Some(op) = requests.recv().await {
            match op {
                FileOp::Write {
                    offset_bytes,
                    data,
                    reply,
                } => {
                    let result = self.write(offset_bytes, data).await;
                    let _ = reply.send(result);
                }
                FileOp::Append { data, reply } => {
                    let _ = reply.send(self.append(data).await);
                }
                FileOp::Read {
                    offset_bytes,
                    length_bytes,
                    reply,
                } => {
                    let result = self.read(offset_bytes, length_bytes).await;
                    let _ = reply.send(result);
                }
                FileOp::Sync { reply } => {
                    let _ = reply.send(self.sync().await);
                }
                FileOp::GetAttr { reply } => {
                    let _ = reply.send(self.getattr().await);
                }
                FileOp::SetAttr { changes, reply } => {
                    let _ = reply.send(self.setattr(changes).await);
                }
                FileOp::Unlinked => self.unlinked = true,
                FileOp::Close => break,
            }
        }
        if let Err(error) = self.sync().await {
            tracing::error!(
                inode = self.inode.0,
                errno = error.code(),
                "writing a closed file's last bytes failed"
            );
        }
        for (_, fetch) in self.fetching.drain() {
            fetch.abort();
        }
    }

    async fn write(&mut self, offset_bytes: u64, data: Vec<u8>) -> Result<u32, Errno> {
        self.commit_appended().await;
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        let length = data.len();
        if length == 0 {
            return Ok(0);
        }
        let length_u32 = u32::try_from(length).map_err(|_| Errno::EINVAL)?;
        offset_bytes.checked_add(length as u64).ok_or(Errno::EFBIG)?;
        self.window = None;
        insert_range(&mut self.dirty, &mut self.dirty_bytes, offset_bytes, data);
        if self.dirty_bytes >= self.limits.flush_bytes {
            self.wait_flush().await;
            self.start_flush();
        }
        Ok(length_u32)
    }

    async fn append(&mut self, data: Vec<u8>) -> Result<u32, Errno> {
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        let length = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        // Positional writes made before this append commit first.
        self.wait_flush().await;
        self.start_flush();
        self.wait_flush().await;
        self.appended.extend_from_slice(&data);
        if self.appended.len() >= self.limits.flush_bytes {
            self.commit_appended().await;
        }
        Ok(length)
    }

    /// Commits the buffered appends (an error is kept for the next sync).
    async fn commit_appended(&mut self) {
        if self.appended.is_empty() {
            return;
        }
        let appended = std::mem::take(&mut self.appended);
        self.window = None;
        if let Err(error) = self.namespace.append(self.inode, &appended).await {
            tracing::error!(inode = self.inode.0, %error, "committing appends failed");
            self.failure.get_or_insert(errno(&error));
        }
    }

    /// Moves the dirty ranges to a background flush (none may be running).
    fn start_flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let ranges = Arc::new(std::mem::take(&mut self.dirty));
        self.dirty_bytes = 0;
        let namespace = self.namespace.clone();
        let inode = self.inode;
        let writing = Arc::clone(&ranges);
        let task = tokio::spawn(async move {
            for (offset, data) in writing.iter() {
                namespace.write_at(inode, *offset, data).await?;
            }
            Ok(())
        });
        self.flushing = Some(Flush { ranges, task });
    }

    /// Waits for the background flush, keeping its error for the next sync.
    async fn wait_flush(&mut self) {
        let Some(flush) = self.flushing.take() else { return };
        let result = match flush.task.await {
            Ok(result) => result,
            Err(error) => Err(ClientError::Invalid(format!("flush task: {error}"))),
        };
        if let Err(error) = result {
            tracing::error!(inode = self.inode.0, %error, "background flush failed");
            self.failure.get_or_insert(errno(&error));
        }
        self.window = None;
    }

    async fn sync(&mut self) -> Result<(), Errno> {
        self.commit_appended().await;
        self.wait_flush().await;
        self.start_flush();
        self.wait_flush().await;
        match self.failure.take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// The end of the bytes written here and not yet committed.
    fn buffered_end(&self) -> u64 {
        let end = |ranges: &BTreeMap<u64, Vec<u8>>| {
            ranges
                .last_key_value()
                .map_or(0, |(offset, data)| offset + data.len() as u64)
        };
        let flushing = self.flushing.as_ref().map_or(0, |flush| end(&flush.ranges));
        end(&self.dirty).max(flushing)
    }

    async fn getattr(&mut self) -> Result<Attributes, Errno> {
        let mut attributes = self
            .namespace
            .getattr(self.inode)
            .await
            .map_err(|error| errno(&error))?;
        attributes.size_bytes = attributes.size_bytes.max(self.buffered_end()) + self.appended.len() as u64;
        if self.unlinked {
            attributes.nlink = 0;
        }
        Ok(attributes)
    }

    async fn setattr(&mut self, changes: AttrChanges) -> Result<Attributes, Errno> {
        if changes.size_bytes.is_some() {
            self.sync().await?;
            self.window = None;
            self.chunks.clear();
        }
        let mut attributes = self
            .namespace
            .setattr(self.inode, changes)
            .await
            .map_err(|error| errno(&error))?;
        attributes.size_bytes = attributes.size_bytes.max(self.buffered_end()) + self.appended.len() as u64;
        if self.unlinked {
            attributes.nlink = 0;
        }
        Ok(attributes)
    }

    async fn read(&mut self, offset_bytes: u64, length_bytes: u32) -> Result<ReadBytes, Errno> {
        self.commit_appended().await;
        let wanted_end = offset_bytes.saturating_add(u64::from(length_bytes));
        let committed = self.committed_pieces(offset_bytes, wanted_end).await?;
        let committed_end = committed.last().map_or(offset_bytes, ReadPiece::end_bytes);
        let end = wanted_end.min(committed_end.max(self.buffered_end()));
        let nothing_buffered = self.dirty.is_empty() && self.flushing.is_none();
        let out = match committed.as_slice() {
            // One extent covers the whole read and nothing of this mount lies over it.
            [ReadPiece::Extent {
                offset_bytes: start,
                extent,
            }] if nothing_buffered && *start <= offset_bytes && end <= committed_end => {
                let chunk = self.chunk(extent).await?;
                let from = (extent.chunk_offset_bytes + (offset_bytes - start)) as usize;
                let to = from + (end - offset_bytes) as usize;
                if chunk.get(from..to).is_none() {
                    return Err(Errno::EIO);
                }
                ReadBytes::Chunk(chunk, from..to)
            }
            _ => {
                let mut out = vec![0u8; end.saturating_sub(offset_bytes) as usize];
                for piece in &committed {
                    self.copy_piece(piece, offset_bytes, &mut out).await?;
                }
                if let Some(flush) = &self.flushing {
                    overlay(&flush.ranges, offset_bytes, &mut out);
                }
                overlay(&self.dirty, offset_bytes, &mut out);
                ReadBytes::Owned(out)
            }
        };
        // The kernel's read-ahead sends neighbouring reads out of order: near the last
        // read's end counts as sequential.
        let sequential = self.last_read_end.map_or(offset_bytes == 0, |last| {
            offset_bytes.saturating_add(MAX_READ_BYTES * 2) >= last
                && offset_bytes <= last.saturating_add(self.limits.read_ahead_bytes)
        });
        self.last_read_end = Some(end);
        if sequential && self.limits.cached_chunks > 0 {
            self.read_ahead(end);
        }
        Ok(out)
    }

    /// Committed pieces covering `[start, end)` (cut at the committed size), from the
    /// window when it covers the range and is fresh.
    async fn committed_pieces(&mut self, start: u64, end: u64) -> Result<Vec<ReadPiece>, Errno> {
        // The window must also cover the read-ahead after this read, or prefetching would
        // stall at its end until the next read fetched a new one.
        let needed_end = end.saturating_add(self.limits.read_ahead_bytes);
        let fresh = |window: &Window| {
            window.start <= start && needed_end <= window.end && window.read_at.elapsed() < self.limits.meta_ttl
        };
        if !self.window.as_ref().is_some_and(fresh) {
            // Twice the read-ahead, so the reads of one window also plan the next chunks.
            let span = (end - start).max(self.limits.read_ahead_bytes.saturating_mul(2));
            let pieces = self
                .namespace
                .pieces(self.inode, start, span)
                .await
                .map_err(|error| errno(&error))?;
            self.window = Some(Window {
                start,
                end: start + span,
                pieces,
                read_at: Instant::now(),
            });
        }
        let window = self.window.as_ref().ok_or(Errno::EIO)?;
        Ok(window
            .pieces
            .iter()
            .filter(|piece| piece.offset_bytes() < end && piece.end_bytes() > start)
            .cloned()
            .collect())
    }

    /// Copies the part of `piece` inside `[offset, offset + out.len())` into `out`.
    async fn copy_piece(&mut self, piece: &ReadPiece, offset: u64, out: &mut [u8]) -> Result<(), Errno> {
        let piece_start = piece.offset_bytes();
        let from = piece_start.max(offset);
        let to = piece.end_bytes().min(offset + out.len() as u64);
        if from >= to {
            return Ok(());
        }
        let target = &mut out[(from - offset) as usize..(to - offset) as usize];
        let skip = (from - piece_start) as usize;
        match piece {
            ReadPiece::Hole { .. } => target.fill(0),
            ReadPiece::Inline { .. } => {
                let bytes = self
                    .namespace
                    .inline_piece(piece)
                    .map_err(|error| errno(&error))?
                    .unwrap_or_default();
                let source = bytes.get(skip..skip + target.len()).ok_or(Errno::EIO)?;
                target.copy_from_slice(source);
            }
            ReadPiece::Extent { extent, .. } => {
                let chunk = self.chunk(extent).await?;
                let start = extent.chunk_offset_bytes as usize + skip;
                let source = chunk.get(start..start + target.len()).ok_or(Errno::EIO)?;
                target.copy_from_slice(source);
            }
        }
        Ok(())
    }

    /// The plaintext of the chunk `extent` points into: cached, being fetched, or fetched now.
    async fn chunk(&mut self, extent: &kiseki_namespace::Extent) -> Result<Plaintext, Errno> {
        let locator = extent.chunk_locator;
        if let Some(position) = self.chunks.iter().position(|(cached, _)| *cached == locator) {
            let entry = self.chunks.remove(position).ok_or(Errno::EIO)?;
            let chunk = Arc::clone(&entry.1);
            self.chunks.push_back(entry);
            return Ok(chunk);
        }
        let chunk = match self.fetching.remove(&locator) {
            Some(fetch) => fetch.await.map_err(|_| Errno::EIO)?.map_err(|error| errno(&error))?,
            None => self
                .cache
                .chunk(&self.namespace, extent)
                .await
                .map_err(|error| errno(&error))?,
        };
        self.chunks.push_back((locator, Arc::clone(&chunk)));
        while self.chunks.len() > self.limits.cached_chunks.max(1) {
            self.chunks.pop_front();
        }
        Ok(chunk)
    }

    /// Starts fetching the chunks of the committed window in `[end, end + read_ahead)`
    /// that are neither cached nor being fetched, up to the cache's size; fetches of
    /// chunks outside that range that finished without being asked for are dropped.
    fn read_ahead(&mut self, end: u64) {
        let Some(window) = &self.window else { return };
        let ahead_end = end.saturating_add(self.limits.read_ahead_bytes);
        let ahead: Vec<kiseki_namespace::Extent> = window
            .pieces
            .iter()
            .filter(|piece| piece.offset_bytes() < ahead_end && piece.end_bytes() > end)
            .filter_map(|piece| match piece {
                ReadPiece::Extent { extent, .. } => Some(extent.clone()),
                _ => None,
            })
            .collect();
        self.fetching.retain(|locator, fetch| {
            !fetch.is_finished() || ahead.iter().any(|extent| extent.chunk_locator == *locator)
        });
        for extent in ahead {
            if self.fetching.len() >= self.limits.cached_chunks {
                break;
            }
            let locator = extent.chunk_locator;
            if self.fetching.contains_key(&locator) || self.chunks.iter().any(|(cached, _)| *cached == locator) {
                continue;
            }
            let (namespace, cache) = (self.namespace.clone(), self.cache.clone());
            self.fetching.insert(
                locator,
                tokio::spawn(async move { cache.chunk(&namespace, &extent).await }),
            );
        }
    }
}

/// Adds `[offset, offset + data.len())` to `ranges`, replacing what it overlaps and
/// merging the ranges it touches; `total` follows the bytes held.
pub(crate) fn insert_range(ranges: &mut BTreeMap<u64, Vec<u8>>, total: &mut usize, offset: u64, data: Vec<u8>) {
    let end = offset + data.len() as u64;
    // Every range that overlaps or touches [offset, end).
    let touching: Vec<u64> = ranges
        .range(..=end)
        .rev()
        .take_while(|(start, bytes)| **start + bytes.len() as u64 >= offset)
        .map(|(start, _)| *start)
        .collect();
    if touching.is_empty() {
        *total += data.len();
        ranges.insert(offset, data);
        return;
    }
    // The common cases, without copying what is already buffered: an append to the one
    // range it touches (sequential writes), or an overwrite inside it.
    if let [start] = touching.as_slice() {
        if *start <= offset {
            if let Some(bytes) = ranges.get_mut(start) {
                let at = (offset - start) as usize;
                let before = bytes.len();
                if at + data.len() <= before {
                    bytes[at..at + data.len()].copy_from_slice(&data);
                } else {
                    bytes.truncate(at);
                    bytes.extend_from_slice(&data);
                    *total += bytes.len() - before;
                }
                return;
            }
        }
    }
    let first = *touching.last().unwrap_or(&offset);
    let merged_start = first.min(offset);
    let mut merged_end = end;
    for start in &touching {
        merged_end = merged_end.max(start + ranges[start].len() as u64);
    }
    let mut merged = vec![0u8; (merged_end - merged_start) as usize];
    for start in touching {
        if let Some(bytes) = ranges.remove(&start) {
            *total -= bytes.len();
            let at = (start - merged_start) as usize;
            merged[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }
    let at = (offset - merged_start) as usize;
    merged[at..at + data.len()].copy_from_slice(&data);
    *total += merged.len();
    ranges.insert(merged_start, merged);
}

/// Copies the bytes of `ranges` inside `[offset, offset + out.len())` over `out`.
pub(crate) fn overlay(ranges: &BTreeMap<u64, Vec<u8>>, offset: u64, out: &mut [u8]) {
    let end = offset + out.len() as u64;
    let first = ranges.range(..=offset).next_back().map_or(offset, |(start, _)| *start);
    for (start, bytes) in ranges.range(first..end) {
        let from = (*start).max(offset);
        let to = (start + bytes.len() as u64).min(end);
        if from >= to {
            continue;
        }
        out[(from - offset) as usize..(to - offset) as usize]
            .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_write(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[offset as usize..end].copy_from_slice(data);
    }

    #[test]
    fn ranges_merge_and_overlay_like_a_flat_buffer() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut ranges = BTreeMap::new();
            let mut total = 0usize;
            let mut model = vec![0u8; 0];
            let mut written = vec![false; 0];
            for step in 0..30u8 {
                let offset = rng.gen_range(0..200u64);
                let length = rng.gen_range(1..40usize);
                let data = vec![step + 1; length];
                model_write(&mut model, offset, &data);
                if written.len() < model.len() {
                    written.resize(model.len(), false);
                }
                written[offset as usize..offset as usize + length].fill(true);
                insert_range(&mut ranges, &mut total, offset, data);
                assert_eq!(total, ranges.values().map(Vec::len).sum::<usize>());
                assert_eq!(total, written.iter().filter(|bit| **bit).count());
                // Neither overlapping nor touching.
                let mut previous_end = None;
                for (start, bytes) in &ranges {
                    if let Some(end) = previous_end {
                        assert!(*start > end);
                    }
                    previous_end = Some(start + bytes.len() as u64);
                }
            }
            let mut out = vec![0u8; model.len()];
            overlay(&ranges, 0, &mut out);
            assert_eq!(out, model);
            let mut part = vec![0u8; 17];
            overlay(&ranges, 50, &mut part);
            let expected: Vec<u8> = (50..67).map(|index| model.get(index).copied().unwrap_or(0)).collect();
            assert_eq!(part, expected);
        }
    }
}
