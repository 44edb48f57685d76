//! omnipaxos's synchronous `Storage`, kept in memory, recording every mutation.
//!
//! omnipaxos calls its storage synchronously and assumes a write is done when the call
//! returns. Here a write changes the in-memory state at once and appends a [`LogOp`] to
//! `pending`; the replica later cuts the pending operations into one log record (group
//! commit) and holds back every message produced meanwhile until the host reports that
//! record durable (I-L1). Replaying the records of a replica in order with
//! [`StorageState::apply`] rebuilds exactly the state omnipaxos saw.

use crate::entry::Entry;
use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry as OmniEntry, StopSign, Storage, StorageOp, StorageResult},
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::{cell::RefCell, fmt::Debug, rc::Rc};

/// One mutation of the storage, as persisted in an operations record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum LogOp<C> {
    /// Entries appended at the end of the log.
    Append(Vec<Entry<C>>),
    /// The log cut at the index and the entries appended there.
    AppendOnPrefix(u64, Vec<Entry<C>>),
    /// The promised ballot.
    Promise(Ballot),
    /// The decided index.
    Decided(u64),
    /// The round in which the log was last accepted.
    AcceptedRound(Ballot),
    /// The compacted index (entries below it are gone).
    Compacted(u64),
    /// Entries below the index removed.
    Trim(u64),
    /// The stop-sign set or cleared.
    StopSign(Option<StopSign>),
}

/// Everything omnipaxos stores, plus the operations not yet cut into a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StorageState<C> {
    /// The promised ballot.
    pub promise: Option<Ballot>,
    /// The round of the last accepted log.
    pub accepted_round: Option<Ballot>,
    /// Entries below this index are decided.
    pub decided_idx: u64,
    /// Entries below this index were compacted away (omnipaxos's view).
    pub compacted_idx: u64,
    /// The index of `log[0]`; equals `compacted_idx` between omnipaxos calls.
    pub log_start_idx: u64,
    /// The entries from `log_start_idx` on.
    pub log: Vec<Entry<C>>,
    /// The accepted stop-sign, which sits right after the last entry.
    pub stopsign: Option<StopSign>,
    /// Mutations since the last record was cut (not persisted with the state).
    #[serde(skip, default = "Vec::new")]
    pub pending: Vec<LogOp<C>>,
}

impl<C> Default for StorageState<C> {
    fn default() -> Self {
        Self {
            promise: None,
            accepted_round: None,
            decided_idx: 0,
            compacted_idx: 0,
            log_start_idx: 0,
            log: Vec::new(),
            stopsign: None,
            pending: Vec::new(),
        }
    }
}

impl<C: Clone> StorageState<C> {
    /// The index one past the last entry (not counting a stop-sign).
    pub fn log_end_idx(&self) -> u64 {
        self.log_start_idx + self.log.len() as u64
    }

    /// Applies one mutation. Fails when the operation does not fit the log (a gap or a
    /// cut below the compacted index): from a record that means damage; from omnipaxos
    /// it cannot happen.
    pub fn apply(&mut self, op: &LogOp<C>) -> Result<(), &'static str> {
        match op {
            LogOp::Append(entries) => self.log.extend(entries.iter().cloned()),
            LogOp::AppendOnPrefix(from_idx, entries) => {
                if *from_idx < self.log_start_idx {
                    return Err("append below the start of the log");
                }
                if *from_idx > self.log_end_idx() {
                    return Err("append past the end of the log leaves a gap");
                }
                self.log.truncate((*from_idx - self.log_start_idx) as usize);
                self.log.extend(entries.iter().cloned());
            }
            LogOp::Promise(ballot) => self.promise = Some(*ballot),
            LogOp::Decided(idx) => self.decided_idx = *idx,
            LogOp::AcceptedRound(ballot) => self.accepted_round = Some(*ballot),
            LogOp::Compacted(idx) => self.compacted_idx = *idx,
            LogOp::Trim(idx) => {
                let count = idx.saturating_sub(self.log_start_idx).min(self.log.len() as u64);
                self.log.drain(..count as usize);
                self.log_start_idx += count;
            }
            LogOp::StopSign(stopsign) => self.stopsign = stopsign.clone(),
        }
        Ok(())
    }

    /// Compacts the log locally up to `idx` (at most its end): entries below it are gone.
    /// Not remembered for a record: the snapshot record written next holds the result.
    pub fn compact(&mut self, idx: u64) {
        let idx = idx.min(self.log_end_idx());
        if idx > self.log_start_idx {
            self.log.drain(..(idx - self.log_start_idx) as usize);
            self.log_start_idx = idx;
        }
        self.compacted_idx = self.compacted_idx.max(self.log_start_idx);
    }

    /// Applies a mutation made by omnipaxos (or by a replica in solo mode, which keeps its
    /// log here without omnipaxos) and remembers it for the next record.
    pub fn record(&mut self, op: LogOp<C>) {
        let applied = self.apply(&op);
        assert!(
            applied.is_ok(),
            "omnipaxos made an impossible storage write: {applied:?}"
        );
        match (self.pending.last_mut(), op) {
            (Some(LogOp::Append(previous)), LogOp::Append(entries)) => previous.extend(entries),
            (_, op) => self.pending.push(op),
        }
    }

    fn record_storage_op(&mut self, op: StorageOp<Entry<C>>)
    where
        Entry<C>: OmniEntry,
    {
        match op {
            StorageOp::AppendEntry(entry) => self.record(LogOp::Append(vec![entry])),
            StorageOp::AppendEntries(entries) => self.record(LogOp::Append(entries)),
            StorageOp::AppendOnPrefix(from_idx, entries) => {
                self.record(LogOp::AppendOnPrefix(from_idx as u64, entries))
            }
            StorageOp::SetPromise(ballot) => self.record(LogOp::Promise(ballot)),
            StorageOp::SetDecidedIndex(idx) => self.record(LogOp::Decided(idx as u64)),
            StorageOp::SetAcceptedRound(ballot) => self.record(LogOp::AcceptedRound(ballot)),
            StorageOp::SetCompactedIdx(idx) => self.record(LogOp::Compacted(idx as u64)),
            StorageOp::Trim(idx) => self.record(LogOp::Trim(idx as u64)),
            StorageOp::SetStopsign(stopsign) => self.record(LogOp::StopSign(stopsign)),
            // Snapshots live outside omnipaxos (`NoStateSnapshot::use_snapshots` is false).
            StorageOp::SetSnapshot(_) => {}
        }
    }
}

/// The storage handed to omnipaxos: a handle on state the replica reads too. `Rc`, not
/// `Arc`: a replica and its storage live on one core (I-T1).
pub(crate) struct SharedStorage<C>(pub Rc<RefCell<StorageState<C>>>);

impl<C> Storage<Entry<C>> for SharedStorage<C>
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    fn write_atomically(&mut self, ops: Vec<StorageOp<Entry<C>>>) -> StorageResult<()> {
        let mut state = self.0.borrow_mut();
        for op in ops {
            state.record_storage_op(op);
        }
        Ok(())
    }

    fn append_entry(&mut self, entry: Entry<C>) -> StorageResult<()> {
        self.0.borrow_mut().record(LogOp::Append(vec![entry]));
        Ok(())
    }

    fn append_entries(&mut self, entries: Vec<Entry<C>>) -> StorageResult<()> {
        if !entries.is_empty() {
            self.0.borrow_mut().record(LogOp::Append(entries));
        }
        Ok(())
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<Entry<C>>) -> StorageResult<()> {
        self.0
            .borrow_mut()
            .record(LogOp::AppendOnPrefix(from_idx as u64, entries));
        Ok(())
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        let mut state = self.0.borrow_mut();
        if state.promise != Some(n_prom) {
            state.record(LogOp::Promise(n_prom));
        }
        Ok(())
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.0.borrow_mut().record(LogOp::Decided(ld as u64));
        Ok(())
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.0.borrow().decided_idx as usize)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.0.borrow_mut().record(LogOp::AcceptedRound(na));
        Ok(())
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.0.borrow().accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<Entry<C>>> {
        let state = self.0.borrow();
        let (from, to) = (from as u64, to as u64);
        if from < state.log_start_idx || to > state.log_end_idx() || from >= to {
            return Ok(Vec::new());
        }
        let start = (from - state.log_start_idx) as usize;
        let end = (to - state.log_start_idx) as usize;
        Ok(state.log[start..end].to_vec())
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.0.borrow().log.len())
    }

    /// Below the start of the log the suffix cannot be served: the answer is empty, and
    /// the replica turns the message built from it into a snapshot transfer.
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<Entry<C>>> {
        let state = self.0.borrow();
        let from = from as u64;
        if from < state.log_start_idx || from >= state.log_end_idx() {
            return Ok(Vec::new());
        }
        Ok(state.log[(from - state.log_start_idx) as usize..].to_vec())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.0.borrow().promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.0.borrow_mut().record(LogOp::StopSign(s));
        Ok(())
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.0.borrow().stopsign.clone())
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.0.borrow_mut().record(LogOp::Trim(idx as u64));
        Ok(())
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.0.borrow_mut().record(LogOp::Compacted(idx as u64));
        Ok(())
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.0.borrow().compacted_idx as usize)
    }

    fn set_snapshot(&mut self, _snapshot: Option<<Entry<C> as OmniEntry>::Snapshot>) -> StorageResult<()> {
        Ok(())
    }

    fn get_snapshot(&self) -> StorageResult<Option<<Entry<C> as OmniEntry>::Snapshot>> {
        Ok(None)
    }
}
