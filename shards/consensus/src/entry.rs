//! The log entry replicated by omnipaxos.

use omnipaxos::storage::{Entry as OmniEntry, Snapshot};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;

/// Who proposed an entry: a client and its sequence number. Routes the result back to
/// the waiting client and deduplicates retries (a client has one proposal in flight and
/// numbers them upwards). Client id 0 is reserved for the replica's own entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// The client (nonzero for client proposals).
    pub client_id: u64,
    /// The client's sequence number, increasing from one proposal to the next.
    pub sequence: u64,
}

/// What an entry asks the replica to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<C> {
    /// Apply a command to the state machine.
    Command(C),
    /// A read barrier: nothing is applied; once decided, reads issued before it may be
    /// answered from the local state (read-index through the log).
    Barrier,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<C> {
    /// Who proposed it.
    pub proposal_id: ProposalId,
    /// What it carries.
    pub payload: Payload<C>,
}

impl<C> OmniEntry for Entry<C>
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    type Snapshot = NoStateSnapshot;
}

/// The omnipaxos snapshot type of [`Entry`]: snapshots are kept outside omnipaxos (see
/// decision 0005), so this type carries nothing and says so (`use_snapshots` is false).
/// Unlike omnipaxos's derived `NoSnapshot`, creating or merging one never panics, so no
/// message can crash a replica through it; replicas also refuse compaction messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoStateSnapshot;

impl<C> Snapshot<Entry<C>> for NoStateSnapshot
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    fn create(_entries: &[Entry<C>]) -> Self {
        NoStateSnapshot
    }

    fn merge(&mut self, _delta: Self) {}

    fn use_snapshots() -> bool {
        false
    }
}
