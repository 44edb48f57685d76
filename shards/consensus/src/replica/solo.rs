//! Solo mode: a replica set of one, without omnipaxos (which needs two nodes or more).
//!
//! The replica keeps its log in the same [`StorageState`](crate::storage::StorageState)
//! and writes the same records as the replicated path. A proposal is appended to the log
//! at once; each poll cuts the entries appended since the previous one into one
//! operations record, `[Append(entries), Decided(end)]` (group commit). The entries of a
//! record are committed once the host reports it durable — a majority of one — and the
//! next poll applies them, in order. A record that survives a crash was durable, so
//! recovery applies every entry it holds (they are all decided in it).
//!
//! Read barriers do not enter the log: no other node can have decided anything, so a read
//! is linearizable once every entry committed before it is applied. Every acknowledged
//! entry is committed (it is answered when applied), so the read sees all of them; the
//! entries still waiting for their record to be durable were acknowledged to nobody and
//! are concurrent with the read, which need not wait for their `fdatasync`.

use super::{Action, Engine, Replica};
use crate::{entry::ProposalId, record::RecordBody, storage::LogOp, ConsensusError, StateMachine};
use std::collections::VecDeque;

/// What only a replica in solo mode keeps.
pub(super) struct Solo {
    /// Records holding entries and not yet reported durable: the record's sequence number
    /// and the local log index one past its last entry, in record order.
    unsettled: VecDeque<(u64, u64)>,
    /// Entries of this configuration below this local index are in durable records:
    /// committed.
    committed_idx: u64,
    /// Reads waiting for the entries committed before them: the read, and the local index
    /// below which every entry must be applied first. In arrival order (the indexes never
    /// decrease).
    reads: VecDeque<(ProposalId, u64)>,
}

impl Solo {
    /// The solo engine of a replica whose entries below `committed_idx` are committed:
    /// none for a new replica, the whole recovered log after a restart.
    pub fn new(committed_idx: u64) -> Self {
        Self {
            unsettled: VecDeque::new(),
            committed_idx,
            reads: VecDeque::new(),
        }
    }

    /// Entries below this local index are committed.
    pub fn committed_idx(&self) -> u64 {
        self.committed_idx
    }

    /// Read barriers not answered yet.
    pub fn reads_waiting(&self) -> usize {
        self.reads.len()
    }

    /// Records up to `record_seq_durable` are durable: their entries are committed.
    pub fn settle(&mut self, record_seq_durable: u64) {
        while let Some(&(record_seq, end_idx)) = self.unsettled.front() {
            if record_seq > record_seq_durable {
                break;
            }
            self.committed_idx = self.committed_idx.max(end_idx);
            self.unsettled.pop_front();
        }
    }
}

impl<S: StateMachine> Replica<S> {
    /// A read barrier in solo mode: ready once every entry committed so far is applied,
    /// at once when none waits to be (the common case).
    pub(super) fn solo_read_barrier(&mut self, read_id: ProposalId) -> Result<(), ConsensusError> {
        self.check_can_propose()?;
        if self.pending_count() >= self.config.pending_proposals_max {
            return Err(ConsensusError::Busy {
                what: "pending_proposals_max",
                limit: self.config.pending_proposals_max,
            });
        }
        if let Engine::Solo(solo) = &mut self.engine {
            let after_idx = solo.committed_idx;
            assert!(
                solo.reads.back().is_none_or(|(_, last)| *last <= after_idx),
                "I-L4: a solo read never waits for less than a read before it"
            );
            solo.reads.push_back((read_id, after_idx));
        }
        self.answer_solo_reads(true);
        Ok(())
    }

    /// Cuts the entries appended since the last cut into one record, which decides them:
    /// they are committed once it is reported durable.
    pub(super) fn cut_solo_record(&mut self) {
        let (ops, end_idx) = {
            let mut storage = self.storage.borrow_mut();
            if storage.pending.is_empty() {
                return;
            }
            let end_idx = storage.log_end_idx();
            storage.record(LogOp::Decided(end_idx));
            (std::mem::take(&mut storage.pending), end_idx)
        };
        self.push_record(&RecordBody::Ops(ops));
        let record_seq = self.record_seq_last;
        if let Engine::Solo(solo) = &mut self.engine {
            solo.unsettled.push_back((record_seq, end_idx));
        }
    }

    /// Applies every committed entry not yet applied, in order, and answers the reads
    /// that waited for them; `emit` is false while recovering.
    pub(super) fn apply_committed(&mut self, emit: bool) {
        loop {
            self.answer_solo_reads(emit);
            let Engine::Solo(solo) = &self.engine else {
                return;
            };
            if self.applied_idx >= solo.committed_idx {
                return;
            }
            let entry = {
                let storage = self.storage.borrow();
                let position = self.applied_idx.checked_sub(storage.log_start_idx);
                position.and_then(|position| storage.log.get(position as usize).cloned())
            };
            // Recovery checked that the log holds every committed entry not yet applied,
            // and compaction never passes the applied index.
            let Some(entry) = entry else {
                panic!(
                    "I-L3: committed entry {} is missing from the log (committed up to {})",
                    self.applied_idx, solo.committed_idx
                );
            };
            self.apply_entry(entry, emit);
        }
    }

    /// Answers the reads whose preceding entries are all applied.
    fn answer_solo_reads(&mut self, emit: bool) {
        let Engine::Solo(solo) = &mut self.engine else {
            return;
        };
        while let Some(&(read_id, after_idx)) = solo.reads.front() {
            if after_idx > self.applied_idx {
                break;
            }
            solo.reads.pop_front();
            if emit {
                self.actions.push(Action::ReadReady {
                    read_id,
                    index: self.index_base + after_idx,
                });
            }
        }
    }
}
