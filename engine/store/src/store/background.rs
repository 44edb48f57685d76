//! Background work of an allocation group: compaction and scrub, both paced by the
//! background I/O budget and stopped promptly on close.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use crate::format::EntryKind;
use crate::index::Extent;
use crate::{Locator, StoreError};

use super::{Inner, ScrubReport, MOVE_NOT_NEEDED};

impl Inner {
    /// Sleeps `duration` or until the store stops; false when stopping.
    async fn idle(&self, duration: Duration) -> bool {
        if self.stopping.get() {
            return false;
        }
        let _ = kiseki_runtime::timeout(duration, self.stop_notify.notified()).await;
        !self.stopping.get()
    }

    /// Paces background reads: `bytes` at `background_bytes_per_second`.
    async fn spend_budget(&self, bytes: u64) -> bool {
        let seconds = bytes as f64 / self.config.background_bytes_per_second as f64;
        self.idle(Duration::from_secs_f64(seconds)).await
    }

    pub(super) async fn run_compaction(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.compaction_interval_ms.max(1));
        loop {
            // Wake at the tick, or at once when a writer ran out of space.
            let _ = kiseki_runtime::timeout(interval, self.compaction_notify.notified()).await;
            if self.stopping.get() {
                break;
            }
            if self.failure.borrow().is_some() {
                break;
            }
            // Drain every candidate (paced by the budget): under churn, reclaiming one
            // segment per wake-up falls behind the writers.
            loop {
                let candidate = self.next_compaction_candidate();
                let Some(segment) = candidate else { break };
                match self.compact_segment(segment, true).await {
                    Ok(true) => {}
                    Ok(false) => {
                        if self.stopping.get() {
                            break;
                        }
                        // Holds a corrupt extent (or lost a race): skip it until the next checkpoint.
                        self.compaction_stuck.borrow_mut().insert(segment);
                    }
                    Err(error) => {
                        tracing::warn!(device = %self.path.display(), ag = self.ag, segment, %error, "compaction stopped");
                        break;
                    }
                }
            }
        }
    }

    /// Moves the live extents of a sealed segment to the log's head, then marks it freed
    /// (reusable after the next checkpoint, I-E3). Returns whether it was freed.
    pub(super) async fn compact_segment(&self, segment: u32, paced: bool) -> Result<bool, StoreError> {
        if !self.compacting.borrow_mut().insert(segment) {
            // The other compaction has it.
            return Ok(false);
        }
        let _compacting = Compacting {
            set: &self.compacting,
            segment,
        };
        let extents = self.state.borrow().extents_in(segment);
        let mut replies = Vec::with_capacity(extents.len());
        for (locator, extent) in extents {
            if self.stopping.get() {
                return Ok(false);
            }
            if !self.still_movable(&locator, &extent) {
                continue;
            }
            let buffer = self.read_extent(&extent).await?;
            let bytes = &buffer.full()[..extent.bytes as usize];
            if crc32c::crc32c(bytes) != extent.crc {
                // Only if it did not move while we read (as `get` and scrub check).
                if self.state.borrow().index.get(&locator) == Some(&extent) {
                    self.mark_corrupt(&locator);
                }
                continue;
            }
            if paced && !self.spend_budget(u64::from(extent.blocks()) * 4096).await {
                return Ok(false);
            }
            // Re-check after the awaits: a delete queued meanwhile must not be undone by
            // a move written after it.
            if !self.still_movable(&locator, &extent) {
                continue;
            }
            let queued = self
                .enqueue(
                    EntryKind::Put,
                    locator,
                    Some(bytes),
                    extent.crc,
                    Some(extent),
                    std::time::Instant::now(),
                )
                .await;
            match queued {
                Ok(receiver) => replies.push(receiver),
                // Deleted or replaced while the move waited for room: nothing to move.
                Err(StoreError::Busy(reason)) if reason == MOVE_NOT_NEEDED => continue,
                Err(error) => return Err(error),
            }
        }
        for receiver in replies {
            receiver.await.unwrap_or_else(|| Err(self.stopped_error()))?;
        }
        let mut state = self.state.borrow_mut();
        if state.is_reclaimable(segment) {
            state.mark_freed(segment);
            drop(state);
            self.stats.borrow_mut().compactions += 1;
            self.checkpoint_requested.set(true);
            self.commit_notify.notify();
            tracing::debug!(device = %self.path.display(), ag = self.ag, segment, "segment compacted");
            return Ok(true);
        }
        Ok(false)
    }

    fn still_movable(&self, locator: &Locator, extent: &Extent) -> bool {
        self.state.borrow().index.get(locator) == Some(extent) && !self.pending_deletes.borrow().contains_key(locator)
    }

    /// Background scrub: passes over every extent, in locator order, one slice at a time
    /// (paced by the read budget, `scrub_interval_ms` apart); the first pass
    /// `scrub_first_pass_delay_ms` after the open, each next one `scrub_pass_interval_ms`
    /// after the previous ended. Scrubbing without pause read every device at the full
    /// budget for as long as the node ran, beside the foreground's reads and flushes.
    pub(super) async fn run_scrub(self: Rc<Self>) {
        if self.config.scrub_interval_ms == 0 {
            return;
        }
        let slice_pause = Duration::from_millis(self.config.scrub_interval_ms);
        let mut wait = Duration::from_millis(self.config.scrub_first_pass_delay_ms);
        loop {
            if !self.idle(wait).await {
                return;
            }
            let mut cursor: Option<Locator> = None;
            let mut report = ScrubReport::default();
            loop {
                let slice = self.scrub_slice(cursor.as_ref(), self.config.scrub_slice_entries);
                let Some((last, _)) = slice.last() else { break };
                cursor = Some(*last);
                if let Err(error) = self.scrub_extents(&slice, &mut report, true).await {
                    tracing::warn!(device = %self.path.display(), ag = self.ag, %error, "scrub read failed");
                }
                if !self.idle(slice_pause).await {
                    return;
                }
            }
            tracing::debug!(
                device = %self.path.display(),
                ag = self.ag,
                checked = report.extents_checked,
                corrupt = report.corrupt.len(),
                "scrub pass complete"
            );
            wait = Duration::from_millis(self.config.scrub_pass_interval_ms);
        }
    }

    pub(super) fn scrub_slice(&self, after: Option<&Locator>, limit: usize) -> Vec<(Locator, Extent)> {
        let state = self.state.borrow();
        let lower = after.map_or(std::ops::Bound::Unbounded, |locator| {
            std::ops::Bound::Excluded(*locator)
        });
        state
            .index
            .range((lower, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(locator, extent)| (*locator, *extent))
            .collect()
    }

    /// Verifies extents; corrupt ones are recorded (and refused by `get` from then on).
    pub(super) async fn scrub_extents(
        &self,
        extents: &[(Locator, Extent)],
        report: &mut ScrubReport,
        paced: bool,
    ) -> Result<(), StoreError> {
        for (locator, extent) in extents {
            if paced && !self.spend_budget(u64::from(extent.blocks()) * 4096).await {
                return Ok(());
            }
            if self.state.borrow().index.get(locator) != Some(extent) {
                continue;
            }
            let buffer = self.read_extent(extent).await?;
            report.extents_checked += 1;
            report.bytes_checked += u64::from(extent.bytes);
            self.stats.borrow_mut().scrubbed_bytes += u64::from(extent.bytes);
            if crc32c::crc32c(&buffer.full()[..extent.bytes as usize]) != extent.crc
                && self.state.borrow().index.get(locator) == Some(extent)
            {
                self.mark_corrupt(locator);
                report.corrupt.push(*locator);
            }
        }
        Ok(())
    }
}

/// A segment marked as being compacted; unmarked when the compaction ends, however it
/// ends.
struct Compacting<'a> {
    set: &'a RefCell<BTreeSet<u32>>,
    segment: u32,
}

impl Drop for Compacting<'_> {
    fn drop(&mut self) {
        self.set.borrow_mut().remove(&self.segment);
    }
}
