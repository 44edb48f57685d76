//! The in-memory state of one allocation group: the index from locator to extent and the
//! segment table (the allocator). Pure and synchronous: the store drives it, property
//! tests compare it with a model.
//!
//! Segment life cycle:
//!
//! ```text
//! Free --allocate--> Active --seal--> Sealed --compaction empties it--> Freed
//!   ^                                                                     |
//!   +------------- a durable checkpoint records it free (I-E3) -----------+
//! ```

use std::collections::BTreeMap;

use crate::format::BLOCK_BYTES;
use crate::Locator;

/// Where a fragment's payload lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Segment index in the allocation group.
    pub segment: u32,
    /// First block of the payload within the segment.
    pub block: u32,
    /// Payload length in bytes.
    pub bytes: u32,
    /// CRC32C of the payload.
    pub crc: u32,
}

impl Extent {
    /// Blocks the payload occupies (at least one).
    pub fn blocks(&self) -> u32 {
        (self.bytes as usize).div_ceil(BLOCK_BYTES).max(1) as u32
    }
}

/// State of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Never used, or reusable.
    Free,
    /// The one segment taking new batches.
    Active,
    /// Full or closed; read-only until compacted.
    Sealed,
    /// Emptied by compaction; reusable after the next durable checkpoint.
    Freed,
}

impl SegmentState {
    /// Code stored in checkpoints. A freed segment is stored as free: the checkpoint
    /// that records it is exactly what makes it reusable.
    pub fn code(self) -> u8 {
        match self {
            SegmentState::Free | SegmentState::Freed => 0,
            SegmentState::Active | SegmentState::Sealed => 2,
        }
    }

    /// State from a checkpoint code.
    pub fn from_code(code: u8) -> Option<SegmentState> {
        match code {
            0 => Some(SegmentState::Free),
            1 | 2 => Some(SegmentState::Sealed),
            _ => None,
        }
    }
}

/// One segment's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Life-cycle state.
    pub state: SegmentState,
    /// Sequence of its current use (0: never used).
    pub sequence: u64,
    /// Next block to write (the header takes block 0).
    pub write_block: u32,
    /// Index of the next batch.
    pub next_batch: u32,
    /// Blocks of live payload (derivable from the index; kept incrementally).
    pub live_blocks: u32,
}

/// The allocation group's index and segment table.
#[derive(Debug, Clone)]
pub struct AgState {
    /// Locator → extent.
    pub index: BTreeMap<Locator, Extent>,
    /// Segment table.
    pub segments: Vec<SegmentInfo>,
    /// The active segment, if any.
    pub active: Option<u32>,
    /// Next sequence to hand out.
    pub next_sequence: u64,
    /// Blocks per segment.
    pub segment_blocks: u32,
    /// Batches reserved in each segment and not yet retired: such a segment is never
    /// freed or compacted, whatever its live count says (transient, never persisted).
    pub batches_in_flight: Vec<u32>,
    /// Segments that were already sealed when the allocation group was opened (the one
    /// active at the previous stop among them, sealed with its unwritten space): their
    /// unwritten space counts as reclaimable for compaction. Segments sealed since the
    /// open do not count it, or compacting a segment into a fresh one that is sealed
    /// early in turn could go on forever (transient, never persisted).
    pub sealed_before_open: Vec<bool>,
}

impl AgState {
    /// A fresh allocation group with `segment_count` free segments.
    pub fn new(segment_count: u32, segment_blocks: u32) -> AgState {
        AgState {
            index: BTreeMap::new(),
            segments: (0..segment_count)
                .map(|_| SegmentInfo {
                    state: SegmentState::Free,
                    sequence: 0,
                    write_block: 0,
                    next_batch: 0,
                    live_blocks: 0,
                })
                .collect(),
            active: None,
            next_sequence: 1,
            segment_blocks,
            batches_in_flight: vec![0; segment_count as usize],
            sealed_before_open: vec![false; segment_count as usize],
        }
    }

    /// Segments that can be allocated now.
    pub fn free_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| segment.state == SegmentState::Free)
            .count()
    }

    /// Blocks still writable in the active segment.
    pub fn active_room_blocks(&self) -> u32 {
        self.active
            .map(|active| self.segment_blocks - self.segments[active as usize].write_block)
            .unwrap_or(0)
    }

    /// Free blocks: the active segment's room plus every free segment's data blocks.
    pub fn free_blocks(&self) -> u64 {
        u64::from(self.active_room_blocks()) + self.free_segments() as u64 * u64::from(self.segment_blocks - 1)
    }

    /// Blocks of live payload.
    pub fn live_blocks(&self) -> u64 {
        self.segments.iter().map(|segment| u64::from(segment.live_blocks)).sum()
    }

    /// Seals the active segment.
    pub fn seal_active(&mut self) {
        if let Some(active) = self.active.take() {
            self.segments[active as usize].state = SegmentState::Sealed;
        }
    }

    /// Makes the lowest free segment active with a new sequence; `None` when none is free.
    pub fn allocate_segment(&mut self) -> Option<(u32, u64)> {
        self.seal_active();
        let segment = self
            .segments
            .iter()
            .position(|segment| segment.state == SegmentState::Free)? as u32;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let info = &mut self.segments[segment as usize];
        assert_eq!(info.live_blocks, 0, "I-E3: a free segment {segment} holds live extents");
        *info = SegmentInfo {
            state: SegmentState::Active,
            sequence,
            write_block: 1,
            next_batch: 0,
            live_blocks: 0,
        };
        self.active = Some(segment);
        Some((segment, sequence))
    }

    /// Reserves `blocks` in the active segment for batch `next_batch`; returns
    /// (segment, sequence, first block, batch index).
    pub fn reserve_in_active(&mut self, blocks: u32) -> Option<(u32, u64, u32, u32)> {
        let active = self.active?;
        let info = &mut self.segments[active as usize];
        if self.segment_blocks - info.write_block < blocks {
            return None;
        }
        let first_block = info.write_block;
        let batch = info.next_batch;
        info.write_block += blocks;
        info.next_batch += 1;
        self.batches_in_flight[active as usize] += 1;
        Some((active, info.sequence, first_block, batch))
    }

    /// Undoes the latest reservation in `segment` (nothing was written for it).
    pub fn unreserve(&mut self, segment: u32, blocks: u32) {
        let info = &mut self.segments[segment as usize];
        assert!(
            info.write_block >= blocks && info.next_batch > 0,
            "unreserve without a reservation"
        );
        info.write_block -= blocks;
        info.next_batch -= 1;
        self.batch_retired(segment);
    }

    /// A batch reserved in `segment` was retired (applied or failed).
    pub fn batch_retired(&mut self, segment: u32) {
        let count = &mut self.batches_in_flight[segment as usize];
        assert!(*count > 0, "batch retired twice in segment {segment}");
        *count -= 1;
    }

    /// Whether a segment may be freed: sealed, no live extents, no batch in flight.
    pub fn is_reclaimable(&self, segment: u32) -> bool {
        let info = &self.segments[segment as usize];
        info.state == SegmentState::Sealed && info.live_blocks == 0 && self.batches_in_flight[segment as usize] == 0
    }

    /// Records a put: the extent replaces any previous one for the locator.
    pub fn apply_put(&mut self, locator: Locator, extent: Extent) {
        let info = &mut self.segments[extent.segment as usize];
        assert!(
            matches!(info.state, SegmentState::Active | SegmentState::Sealed),
            "I-E3: extent written into segment {} in state {:?}",
            extent.segment,
            info.state
        );
        info.live_blocks += extent.blocks();
        if let Some(previous) = self.index.insert(locator, extent) {
            self.release(previous);
        }
    }

    /// Records a delete; the removed extent, if any.
    pub fn apply_delete(&mut self, locator: &Locator) -> Option<Extent> {
        let removed = self.index.remove(locator)?;
        self.release(removed);
        Some(removed)
    }

    fn release(&mut self, extent: Extent) {
        let info = &mut self.segments[extent.segment as usize];
        assert!(
            info.live_blocks >= extent.blocks(),
            "live block accounting underflow in segment {}",
            extent.segment
        );
        info.live_blocks -= extent.blocks();
    }

    /// The sealed segment most worth compacting: the one with the most dead blocks, if
    /// its dead share is at least `dead_ratio_min` (fully dead segments always qualify).
    pub fn compaction_candidate(&self, dead_ratio_min: f64) -> Option<u32> {
        self.compaction_candidate_excluding(dead_ratio_min, &std::collections::BTreeSet::new())
    }

    /// As [`AgState::compaction_candidate`], skipping `excluded` segments (ones compaction
    /// could not empty, e.g. because they hold a corrupt extent waiting for repair).
    pub fn compaction_candidate_excluding(
        &self,
        dead_ratio_min: f64,
        excluded: &std::collections::BTreeSet<u32>,
    ) -> Option<u32> {
        self.segments
            .iter()
            .enumerate()
            .filter(|(segment, info)| {
                info.state == SegmentState::Sealed
                    && !excluded.contains(&(*segment as u32))
                    && self.batches_in_flight[*segment] == 0
            })
            .map(|(segment, info)| {
                let used = if self.sealed_before_open.get(segment).copied().unwrap_or(false) {
                    self.segment_blocks.saturating_sub(1).max(1)
                } else {
                    info.write_block.saturating_sub(1).max(1)
                };
                let dead = used.saturating_sub(info.live_blocks);
                (
                    segment as u32,
                    dead,
                    f64::from(dead) / f64::from(used),
                    info.live_blocks,
                )
            })
            .filter(|&(_, dead, ratio, live)| live == 0 || (dead > 0 && ratio >= dead_ratio_min))
            .max_by_key(|&(_, dead, _, _)| dead)
            .map(|(segment, _, _, _)| segment)
    }

    /// Extents living in `segment`.
    pub fn extents_in(&self, segment: u32) -> Vec<(Locator, Extent)> {
        self.index
            .iter()
            .filter(|(_, extent)| extent.segment == segment)
            .map(|(locator, extent)| (*locator, *extent))
            .collect()
    }

    /// Marks an emptied sealed segment freed (reusable after the next checkpoint).
    pub fn mark_freed(&mut self, segment: u32) {
        assert_eq!(
            self.batches_in_flight[segment as usize], 0,
            "freeing segment {segment} with batches in flight"
        );
        let info = &mut self.segments[segment as usize];
        assert_eq!(
            info.live_blocks, 0,
            "I-C2: freeing segment {segment} that still holds live extents"
        );
        assert_eq!(info.state, SegmentState::Sealed, "only sealed segments are freed");
        info.state = SegmentState::Freed;
        self.sealed_before_open[segment as usize] = false;
    }

    /// Marks every segment sealed now as sealed before the open (see
    /// [`AgState::sealed_before_open`]); called once the open has replayed the log.
    pub fn mark_sealed_before_open(&mut self) {
        for (segment, info) in self.segments.iter().enumerate() {
            self.sealed_before_open[segment] = info.state == SegmentState::Sealed;
        }
    }

    /// Marks every sealed segment without live extents freed (no I/O needed); returns
    /// how many.
    pub fn free_dead_sealed(&mut self) -> usize {
        let mut freed = 0;
        for segment in 0..self.segments.len() {
            if self.is_reclaimable(segment as u32) {
                self.segments[segment].state = SegmentState::Freed;
                freed += 1;
            }
        }
        freed
    }

    /// Segments waiting for a checkpoint to become free.
    pub fn freed_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| segment.state == SegmentState::Freed)
            .count()
    }

    /// After a durable checkpoint: freed segments become free (I-E3).
    pub fn on_checkpoint_durable(&mut self) {
        for info in &mut self.segments {
            if info.state == SegmentState::Freed {
                info.state = SegmentState::Free;
            }
        }
    }

    /// Recomputes every segment's live blocks from the index (after loading).
    pub fn recompute_live(&mut self) {
        for info in &mut self.segments {
            info.live_blocks = 0;
        }
        for extent in self.index.values() {
            self.segments[extent.segment as usize].live_blocks += extent.blocks();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Operation {
        Put(u8, u32),
        Delete(u8),
        Compact,
        Checkpoint,
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            4 => (any::<u8>(), 1u32..20_000).prop_map(|(key, bytes)| Operation::Put(key, bytes)),
            2 => any::<u8>().prop_map(Operation::Delete),
            1 => Just(Operation::Compact),
            1 => Just(Operation::Checkpoint),
        ]
    }

    /// Writes a put through the allocator as the store does: reserve, then apply.
    fn put(state: &mut AgState, locator: Locator, bytes: u32) -> bool {
        let blocks = (bytes as usize).div_ceil(BLOCK_BYTES).max(1) as u32 + 1;
        let reserved = match state.reserve_in_active(blocks) {
            Some(reserved) => reserved,
            None => {
                if state.allocate_segment().is_none() {
                    return false;
                }
                match state.reserve_in_active(blocks) {
                    Some(reserved) => reserved,
                    None => return false,
                }
            }
        };
        let (segment, _, first_block, _) = reserved;
        state.batch_retired(segment);
        state.apply_put(
            locator,
            Extent {
                segment,
                block: first_block + 1,
                bytes,
                crc: bytes,
            },
        );
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn allocator_and_index_agree_with_a_model(operations in proptest::collection::vec(operation(), 1..300)) {
            let mut state = AgState::new(6, 32);
            let mut model: HashMap<Locator, u32> = HashMap::new();
            for operation in operations {
                match operation {
                    Operation::Put(key, bytes) => {
                        let locator = Locator([key; 32]);
                        if put(&mut state, locator, bytes) {
                            model.insert(locator, bytes);
                        }
                    }
                    Operation::Delete(key) => {
                        let locator = Locator([key; 32]);
                        prop_assert_eq!(state.apply_delete(&locator).is_some(), model.remove(&locator).is_some());
                    }
                    Operation::Compact => {
                        if let Some(segment) = state.compaction_candidate(0.3) {
                            for (locator, extent) in state.extents_in(segment) {
                                // A move re-puts the same bytes elsewhere; when there is no
                                // room the compaction stops, as the store's does.
                                if !put(&mut state, locator, extent.bytes) {
                                    break;
                                }
                            }
                            if state.segments[segment as usize].live_blocks == 0 {
                                state.mark_freed(segment);
                            }
                        }
                    }
                    Operation::Checkpoint => state.on_checkpoint_durable(),
                }
                // The index holds exactly the model.
                prop_assert_eq!(state.index.len(), model.len());
                for (locator, bytes) in &model {
                    prop_assert_eq!(state.index[locator].bytes, *bytes);
                }
                // Live accounting matches the index; no extent sits in a free segment.
                let mut recomputed = state.clone();
                recomputed.recompute_live();
                prop_assert_eq!(&recomputed.segments, &state.segments);
                for extent in state.index.values() {
                    let info = &state.segments[extent.segment as usize];
                    prop_assert!(matches!(info.state, SegmentState::Active | SegmentState::Sealed));
                    prop_assert!(extent.block + extent.blocks() <= info.write_block);
                }
                // Extents never overlap.
                let mut extents: Vec<Extent> = state.index.values().copied().collect();
                extents.sort_by_key(|extent| (extent.segment, extent.block));
                for pair in extents.windows(2) {
                    if pair[0].segment == pair[1].segment {
                        prop_assert!(pair[0].block + pair[0].blocks() <= pair[1].block);
                    }
                }
                let active_is_active = state
                    .active
                    .is_none_or(|active| state.segments[active as usize].state == SegmentState::Active);
                prop_assert!(active_is_active);
            }
        }
    }

    #[test]
    fn a_segment_with_batches_in_flight_is_never_freed() {
        let mut state = AgState::new(3, 8);
        state.allocate_segment().unwrap();
        // A batch is reserved in segment 0, then the segment is sealed by a switch while
        // the batch is still being written: no live extents yet, but not reclaimable.
        let (segment, ..) = state.reserve_in_active(4).unwrap();
        state.allocate_segment().unwrap();
        assert_eq!(state.compaction_candidate(0.0), None);
        assert_eq!(state.free_dead_sealed(), 0);
        state.batch_retired(segment);
        assert!(state.is_reclaimable(segment));
        assert_eq!(state.free_dead_sealed(), 1);
    }

    #[test]
    fn a_segment_sealed_before_the_open_is_compacted_even_with_nothing_dead() {
        // Every open starts a fresh segment: the one active before is sealed with most of
        // its space unwritten. It must be a candidate, or restarts use up the device.
        let mut state = AgState::new(4, 64);
        assert!(put(&mut state, Locator([1; 32]), 4096 * 4));
        state.seal_active();
        assert_eq!(state.compaction_candidate(0.5), None, "sealed in this run: left alone");
        state.mark_sealed_before_open();
        assert_eq!(state.compaction_candidate(0.5), Some(0));
        // A full segment of live data is not, even from before the open.
        let mut state = AgState::new(4, 8);
        assert!(put(&mut state, Locator([2; 32]), 4096 * 6));
        state.seal_active();
        state.mark_sealed_before_open();
        assert_eq!(state.compaction_candidate(0.5), None);
    }

    #[test]
    fn freed_segments_wait_for_a_checkpoint() {
        let mut state = AgState::new(2, 8);
        let locator = Locator([1; 32]);
        assert!(put(&mut state, locator, 4096 * 6));
        state.apply_delete(&locator);
        state.seal_active();
        assert_eq!(state.compaction_candidate(0.5), Some(0));
        state.mark_freed(0);
        assert_eq!(state.free_segments(), 1, "freed is not free before a checkpoint");
        state.on_checkpoint_durable();
        assert_eq!(state.free_segments(), 2);
    }
}
