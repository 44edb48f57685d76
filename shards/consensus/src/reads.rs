//! Read batching: linearizable reads that share read barriers (I-R2).
//!
//! With more than one member a read barrier is a log entry: a consensus round and a
//! durable record on a majority. One barrier per read makes every read cost a write, so
//! a [`ReadBatcher`] lets concurrent reads share them, as Raft's `ReadIndex` batching
//! does: a read arriving while a barrier is in flight waits for the next one, which covers
//! every read that arrived meanwhile and is appended as soon as the one in flight is
//! decided. At most one barrier is in flight per replica, so under load the reads of one
//! consensus round share one entry.
//!
//! Why it stays linearizable (I-L4): a read is answered only after a barrier *appended
//! after the read arrived* is applied. That barrier's decision proves this replica still
//! led after the read arrived, and every write acknowledged before the read arrived is
//! below it in the log, hence applied. A barrier appended before the read arrived proves
//! nothing about writes acknowledged in between, so a read never joins the barrier in
//! flight, only the next one.
//!
//! A barrier in flight for longer than `stale_after_ms` is not waited for: the next read
//! appends a new one (taking every waiting read along), so a barrier the replica never
//! decides (a leader that lost its majority without noticing) delays reads by at most that
//! long before they are tried again. In solo mode barriers are not log entries and cost
//! nothing: every read gets its own.
//!
//! Sans-IO like the replica: the host gives the time (`now_ms`, any monotonic clock) and
//! fresh barrier ids, and answers the reads the batcher names.

use std::collections::BTreeMap;

use crate::{ConsensusError, ProposalId, Replica, StateMachine};

/// The reads of one replica waiting for read barriers.
#[derive(Debug, Clone)]
pub struct ReadBatcher {
    stale_after_ms: u64,
    /// Reads waiting for each barrier appended, by the barrier's id.
    barriers: BTreeMap<ProposalId, Vec<ProposalId>>,
    /// The barrier appended last and not decided yet, with when (ms).
    open: Option<(ProposalId, u64)>,
    /// Reads that arrived while `open` was in flight: they wait for the next barrier.
    waiting: Vec<ProposalId>,
}

/// What a decided barrier means for the reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BarrierDecided {
    /// Reads that may now be answered from the local state.
    pub answered: Vec<ProposalId>,
    /// Reads whose next barrier could not be appended, with why (retry elsewhere).
    pub refused: Vec<(ProposalId, ConsensusError)>,
}

impl ReadBatcher {
    /// A batcher that stops waiting for a barrier in flight after `stale_after_ms`.
    pub fn new(stale_after_ms: u64) -> ReadBatcher {
        ReadBatcher {
            stale_after_ms,
            barriers: BTreeMap::new(),
            open: None,
            waiting: Vec::new(),
        }
    }

    /// The read `read_id` arrives at `now_ms`: it joins the next barrier, appended now
    /// (with id `barrier_id()`) unless one is in flight. Refused like
    /// [`Replica::read_barrier`] (not the leader, too busy), and then nothing is kept.
    pub fn read<S: StateMachine>(
        &mut self,
        replica: &mut Replica<S>,
        read_id: ProposalId,
        barrier_id: impl FnOnce() -> ProposalId,
        now_ms: u64,
    ) -> Result<(), ConsensusError> {
        let in_flight = !replica.config().is_solo()
            && self
                .open
                .is_some_and(|(_, appended_ms)| now_ms.saturating_sub(appended_ms) < self.stale_after_ms);
        if in_flight {
            if !replica.is_leader() {
                return Err(ConsensusError::NotLeader {
                    leader: replica.leader(),
                });
            }
            self.waiting.push(read_id);
            return Ok(());
        }
        let barrier = barrier_id();
        replica.read_barrier(barrier)?;
        let mut covered = std::mem::take(&mut self.waiting);
        covered.push(read_id);
        self.barriers.insert(barrier, covered);
        self.open = Some((barrier, now_ms));
        Ok(())
    }

    /// The replica reported `barrier` ready ([`crate::Action::ReadReady`]) at `now_ms`:
    /// the reads it covers, and the next barrier (id `barrier_id()`) appended for the
    /// reads that arrived meanwhile. An id this batcher did not append answers nothing.
    pub fn decided<S: StateMachine>(
        &mut self,
        replica: &mut Replica<S>,
        barrier: ProposalId,
        barrier_id: impl FnOnce() -> ProposalId,
        now_ms: u64,
    ) -> BarrierDecided {
        let mut outcome = BarrierDecided {
            answered: self.barriers.remove(&barrier).unwrap_or_default(),
            refused: Vec::new(),
        };
        if self.open.is_some_and(|(open, _)| open == barrier) {
            self.open = None;
            if !self.waiting.is_empty() {
                let next = barrier_id();
                match replica.read_barrier(next) {
                    Ok(()) => {
                        self.barriers.insert(next, std::mem::take(&mut self.waiting));
                        self.open = Some((next, now_ms));
                    }
                    Err(error) => {
                        outcome.refused = std::mem::take(&mut self.waiting)
                            .into_iter()
                            .map(|read| (read, error.clone()))
                            .collect();
                    }
                }
            }
        }
        outcome
    }

    /// Forgets every read (the replica stopped leading: the host refuses them all).
    pub fn clear(&mut self) {
        self.barriers.clear();
        self.open = None;
        self.waiting.clear();
    }

    /// Reads waiting, covered by a barrier or not.
    pub fn len(&self) -> usize {
        self.barriers.values().map(Vec::len).sum::<usize>() + self.waiting.len()
    }

    /// Whether no read waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
