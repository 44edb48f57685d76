//! Opening an allocation group: newest valid checkpoint, segment headers, replay.
//!
//! Fault model (what a crash or a damaged device may leave, and what we do):
//! - a torn checkpoint (header or body): the other slot's older checkpoint is used, and
//!   replay covers the difference;
//! - a torn tail batch (header or payload): replay of that segment stops at the first
//!   batch whose header fails its checks; a put whose payload fails its CRC stays indexed
//!   but marked corrupt (a torn tail put was never acknowledged, I-E1; damage to an
//!   acknowledged one must be reported, not hidden, I-E2);
//! - a torn segment header: only possible for a segment whose header write never
//!   completed, hence without batches; it is treated as unused. A damaged header in front
//!   of a valid first batch is corruption and fails the open;
//! - stale data from an earlier use or an earlier format never replays: every header
//!   names device uuid, allocation group, segment and its sequence (I-E4).
//!
//! After the open, writes always start in a fresh segment, so a torn tail is never
//! followed by new batches that a later replay could confuse with stale ones.

use std::rc::Rc;

use crate::format::{
    decode_checkpoint_entry, decode_checkpoint_segment, BatchHeader, CheckpointHeader, EntryKind, FormatError,
    SegmentHeader, BLOCK_BYTES, CHECKPOINT_ENTRY_BYTES, CHECKPOINT_SEGMENT_BYTES,
};
use crate::index::{AgState, Extent, SegmentInfo, SegmentState};
use crate::StoreError;

use super::{Inner, CHECKPOINT_CORRUPT_BIT};

use kiseki_runtime::{dma_buffer, DmaBuf};

/// A read of the device that may fail: the error names what was being read.
async fn read_blocks(inner: &Inner, offset: u64, bytes: usize, what: &'static str) -> Result<DmaBuf, StoreError> {
    let (result, buffer) = inner.file.read_exact_at(dma_buffer(bytes), offset, bytes).await;
    result.map_err(|error| StoreError::io(&inner.path, what, error))?;
    Ok(buffer)
}

impl Inner {
    pub(super) async fn load(self: &Rc<Self>) -> Result<(), StoreError> {
        let checkpoint = self.load_newest_checkpoint().await?;
        let (resume_sequence, resume_batch, resume_block) = match &checkpoint {
            Some((header, state)) => {
                *self.state.borrow_mut() = state.clone();
                self.checkpoint_sequence.set(header.sequence);
                (header.resume_sequence, header.resume_batch, header.resume_block)
            }
            None => (0, 0, 1),
        };
        let known_sequences: Vec<u64> = self.state.borrow().segments.iter().map(|info| info.sequence).collect();
        let headers = self.read_segment_headers(&known_sequences).await?;
        let mut to_replay: Vec<(u32, u64)> = headers
            .iter()
            .enumerate()
            .filter_map(|(segment, sequence)| sequence.map(|sequence| (segment as u32, sequence)))
            .filter(|&(_, sequence)| sequence >= resume_sequence && sequence > 0)
            .collect();
        to_replay.sort_by_key(|&(_, sequence)| sequence);
        let mut highest_sequence = 0;
        for (segment, sequence) in to_replay {
            let (start_batch, start_block) = if sequence == resume_sequence && checkpoint.is_some() {
                (resume_batch, resume_block)
            } else {
                (0, 1)
            };
            {
                let mut state = self.state.borrow_mut();
                let info = &mut state.segments[segment as usize];
                // A segment the checkpoint knew with live extents keeps them; a newer use
                // of a segment replaces whatever the checkpoint said, which is only sound
                // if the checkpoint held nothing in it (I-E3).
                if info.sequence != sequence && info.live_blocks > 0 {
                    return Err(StoreError::CorruptSegment {
                        device: self.path.clone(),
                        ag: self.ag,
                        segment,
                        detail: format!(
                            "header sequence {sequence} differs from the checkpoint's {} for a segment holding live fragments",
                            info.sequence
                        ),
                    });
                }
                *info = SegmentInfo {
                    state: SegmentState::Sealed,
                    sequence,
                    write_block: start_block,
                    next_batch: start_batch,
                    live_blocks: info.live_blocks,
                };
            }
            self.replay_segment(segment, sequence, start_batch, start_block).await?;
            highest_sequence = highest_sequence.max(sequence);
        }
        let mut state = self.state.borrow_mut();
        state.active = None;
        for info in &mut state.segments {
            if info.state == SegmentState::Active {
                info.state = SegmentState::Sealed;
            }
        }
        let from_headers = headers.iter().flatten().copied().max().unwrap_or(0);
        state.next_sequence = state.next_sequence.max(highest_sequence.max(from_headers) + 1);
        state.recompute_live();
        state.mark_sealed_before_open();
        tracing::info!(
            device = %self.path.display(),
            ag = self.ag,
            fragments = state.index.len(),
            checkpoint = self.checkpoint_sequence.get(),
            "allocation group opened"
        );
        Ok(())
    }

    /// The newest checkpoint whose header and body both verify, as a state.
    async fn load_newest_checkpoint(&self) -> Result<Option<(CheckpointHeader, AgState)>, StoreError> {
        let mut candidates = Vec::new();
        for slot in 0..2 {
            let offset = self.superblock.checkpoint_slot_offset(self.ag, slot);
            let block = read_blocks(self, offset, BLOCK_BYTES, "reading a checkpoint header").await?;
            match CheckpointHeader::decode(block.full()) {
                Ok(header) if header.device_uuid == self.superblock.device_uuid && header.ag == self.ag => {
                    candidates.push((header, offset));
                }
                Ok(_) | Err(FormatError::BadMagic) => {}
                Err(error) => {
                    tracing::warn!(device = %self.path.display(), ag = self.ag, slot, %error, "checkpoint header damaged; ignoring this slot");
                }
            }
        }
        candidates.sort_by_key(|(header, _)| std::cmp::Reverse(header.sequence));
        for (header, offset) in candidates {
            match self.load_checkpoint_body(&header, offset).await? {
                Some(state) => return Ok(Some((header, state))),
                None => tracing::warn!(
                    device = %self.path.display(),
                    ag = self.ag,
                    sequence = header.sequence,
                    "checkpoint body damaged; trying the older slot"
                ),
            }
        }
        Ok(None)
    }

    async fn load_checkpoint_body(
        &self,
        header: &CheckpointHeader,
        slot_offset: u64,
    ) -> Result<Option<AgState>, StoreError> {
        let body_bytes = header.body_bytes();
        let segments = self.superblock.segments_per_ag;
        if header.segment_count != segments || body_bytes + BLOCK_BYTES as u64 > self.superblock.checkpoint_slot_bytes {
            return Ok(None);
        }
        let padded = (body_bytes as usize).div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let mut body = Vec::with_capacity(padded);
        let chunk_bytes = 1 << 20;
        let mut read = 0;
        while read < padded {
            let length = chunk_bytes.min(padded - read);
            let buffer = read_blocks(
                self,
                slot_offset + BLOCK_BYTES as u64 + read as u64,
                length,
                "reading a checkpoint",
            )
            .await?;
            body.extend_from_slice(&buffer.full()[..length]);
            read += length;
        }
        let body = &body[..body_bytes as usize];
        if crc32c::crc32c(body) != header.body_crc {
            return Ok(None);
        }
        let mut state = AgState::new(segments, self.superblock.segment_blocks());
        let entries_end = header.entry_count as usize * CHECKPOINT_ENTRY_BYTES;
        for (position, raw) in body[entries_end..].chunks_exact(CHECKPOINT_SEGMENT_BYTES).enumerate() {
            let (code, write_block, next_batch, sequence) = decode_checkpoint_segment(raw);
            let Some(segment_state) = SegmentState::from_code(code) else {
                return Ok(None);
            };
            state.segments[position] = SegmentInfo {
                state: segment_state,
                sequence,
                write_block: write_block.min(state.segment_blocks),
                next_batch,
                live_blocks: 0,
            };
        }
        let mut corrupt = Vec::new();
        for raw in body[..entries_end].chunks_exact(CHECKPOINT_ENTRY_BYTES) {
            let (locator, segment_field, block, bytes, crc) = decode_checkpoint_entry(raw);
            let segment = segment_field & !CHECKPOINT_CORRUPT_BIT;
            if segment_field & CHECKPOINT_CORRUPT_BIT != 0 {
                corrupt.push(locator);
            }
            let extent = Extent {
                segment,
                block,
                bytes,
                crc,
            };
            let valid = (segment as usize) < state.segments.len()
                && state.segments[segment as usize].state == SegmentState::Sealed
                && block + extent.blocks() <= state.segment_blocks;
            if !valid {
                return Ok(None);
            }
            state.apply_put(locator, extent);
        }
        state.next_sequence = header.next_segment_sequence.max(1);
        let mut marks = self.corrupt.borrow_mut();
        marks.clear();
        marks.extend(corrupt);
        Ok(Some(state))
    }

    /// Reads every segment's header: `Some(sequence)` for a segment in use by this
    /// allocation group of this format, `None` for unused or stale ones.
    async fn read_segment_headers(&self, known_sequences: &[u64]) -> Result<Vec<Option<u64>>, StoreError> {
        let mut headers = Vec::with_capacity(self.superblock.segments_per_ag as usize);
        for segment in 0..self.superblock.segments_per_ag {
            let offset = self.superblock.segment_offset(self.ag, segment);
            let block = read_blocks(self, offset, BLOCK_BYTES, "reading a segment header").await?;
            let header = match SegmentHeader::decode(block.full()) {
                Ok(header) => header,
                Err(FormatError::BadMagic) => {
                    headers.push(None);
                    continue;
                }
                Err(error) => {
                    // Torn (never used) or corrupt (used): a valid first batch tells.
                    // Batches of an earlier use (at or below the sequence the checkpoint
                    // knew) are stale: only a newer first batch proves the header mattered.
                    let known = known_sequences.get(segment as usize).copied().unwrap_or(0);
                    if self
                        .first_batch_is_ours(segment)
                        .await?
                        .is_some_and(|sequence| sequence > known)
                    {
                        return Err(StoreError::CorruptSegment {
                            device: self.path.clone(),
                            ag: self.ag,
                            segment,
                            detail: format!("segment header damaged ({error}) in front of valid batches"),
                        });
                    }
                    tracing::warn!(device = %self.path.display(), ag = self.ag, segment, %error, "torn header of an unused segment ignored");
                    headers.push(None);
                    continue;
                }
            };
            let ours =
                header.device_uuid == self.superblock.device_uuid && header.ag == self.ag && header.segment == segment;
            headers.push(ours.then_some(header.sequence));
        }
        Ok(headers)
    }

    /// The segment sequence named by a valid first batch of this segment, if any.
    async fn first_batch_is_ours(&self, segment: u32) -> Result<Option<u64>, StoreError> {
        let offset = self.superblock.segment_offset(self.ag, segment) + BLOCK_BYTES as u64;
        let block = read_blocks(self, offset, BLOCK_BYTES, "reading a batch header").await?;
        let Ok(header_blocks) = BatchHeader::peek_header_blocks(block.full()) else {
            return Ok(None);
        };
        if header_blocks as u64 + 1 > u64::from(self.superblock.segment_blocks()) {
            return Ok(None);
        }
        let header = read_blocks(
            self,
            offset,
            header_blocks as usize * BLOCK_BYTES,
            "reading a batch header",
        )
        .await?;
        Ok(match BatchHeader::decode(header.full()) {
            Ok((header, _))
                if header.device_uuid == self.superblock.device_uuid
                    && header.ag == self.ag
                    && header.segment == segment
                    && header.batch_index == 0 =>
            {
                Some(header.segment_sequence)
            }
            _ => None,
        })
    }

    /// Replays batches of one segment from (`batch`, `block`) until the first batch that
    /// is not the expected next one of this segment's current use.
    async fn replay_segment(
        &self,
        segment: u32,
        sequence: u64,
        mut batch: u32,
        mut block: u32,
    ) -> Result<(), StoreError> {
        let segment_blocks = self.superblock.segment_blocks();
        let segment_offset = self.superblock.segment_offset(self.ag, segment);
        let mut replayed = 0u32;
        while block < segment_blocks {
            let first = read_blocks(
                self,
                segment_offset + u64::from(block) * BLOCK_BYTES as u64,
                BLOCK_BYTES,
                "replaying",
            )
            .await?;
            let Ok(header_blocks) = BatchHeader::peek_header_blocks(first.full()) else {
                break;
            };
            if block + header_blocks > segment_blocks {
                break;
            }
            let header_buffer = if header_blocks == 1 {
                first
            } else {
                read_blocks(
                    self,
                    segment_offset + u64::from(block) * BLOCK_BYTES as u64,
                    header_blocks as usize * BLOCK_BYTES,
                    "replaying",
                )
                .await?
            };
            let Ok((header, entries)) = BatchHeader::decode(header_buffer.full()) else {
                break;
            };
            let expected = header.device_uuid == self.superblock.device_uuid
                && header.ag == self.ag
                && header.segment == segment
                && header.segment_sequence == sequence
                && header.batch_index == batch
                && block + header_blocks + header.payload_blocks <= segment_blocks;
            if !expected {
                break;
            }
            let payload_first_block = block + header_blocks;
            let payload = if header.payload_blocks > 0 {
                Some(
                    read_blocks(
                        self,
                        segment_offset + u64::from(payload_first_block) * BLOCK_BYTES as u64,
                        header.payload_blocks as usize * BLOCK_BYTES,
                        "replaying",
                    )
                    .await?,
                )
            } else {
                None
            };
            let mut state = self.state.borrow_mut();
            for entry in &entries {
                match entry.kind {
                    EntryKind::Put => {
                        let start = entry.payload_block as usize * BLOCK_BYTES;
                        let bytes = payload
                            .as_ref()
                            .map(|payload| &payload.full()[start..start + entry.payload_bytes as usize]);
                        let extent = Extent {
                            segment,
                            block: payload_first_block + entry.payload_block,
                            bytes: entry.payload_bytes,
                            crc: entry.payload_crc,
                        };
                        let intact = bytes.is_some_and(|bytes| crc32c::crc32c(bytes) == entry.payload_crc);
                        if !intact && state.index.contains_key(&entry.locator) {
                            // A torn second copy (a compaction move, a repeated put) never
                            // replaces the copy already indexed.
                            continue;
                        }
                        state.apply_put(entry.locator, extent);
                        if !intact {
                            // Either a torn put that was never acknowledged, or damage to one
                            // that was: it stays indexed but is reported corrupt (I-E2), so a
                            // repair can rewrite it and a read never returns it.
                            self.corrupt.borrow_mut().insert(entry.locator);
                            self.stats.borrow_mut().corrupt_extents += 1;
                            tracing::warn!(
                                device = %self.path.display(),
                                ag = self.ag,
                                segment,
                                locator = %entry.locator,
                                "replayed put fails its checksum: marked corrupt"
                            );
                        }
                    }
                    EntryKind::Delete => {
                        state.apply_delete(&entry.locator);
                        self.corrupt.borrow_mut().remove(&entry.locator);
                    }
                }
            }
            block += header_blocks + header.payload_blocks;
            batch += 1;
            replayed += 1;
            let info = &mut state.segments[segment as usize];
            info.write_block = block;
            info.next_batch = batch;
        }
        if replayed > 0 {
            tracing::debug!(device = %self.path.display(), ag = self.ag, segment, replayed, "segment replayed");
        }
        Ok(())
    }
}
