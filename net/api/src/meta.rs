//! The messages of the metadata service, as they travel in frame bodies.
//!
//! Envelopes are rkyv archives validated before use (I-W1); what they carry for the
//! namespace (deltas, outcomes, read requests) is the namespace crate's own postcard
//! encoding inside a byte field, decoded with typed errors.

// rkyv's derive generates resolver types for enums whose fields carry no docs; every
// item written here is documented.
#![allow(missing_docs)]

use kiseki_net::rkyv::{Archive, Deserialize, Serialize};

/// Consensus traffic between replicas (one-way): [`ConsensusMessage`].
pub const MSG_CONSENSUS: u16 = 0x0101;
/// Propose a delta to a shard's leader: [`ProposeRequest`] → [`ProposeReply`].
pub const MSG_PROPOSE: u16 = 0x0110;
/// A linearizable read of a shard: [`ReadRequest`] → [`ReadReply`].
pub const MSG_READ: u16 = 0x0111;
/// The cluster map with shard leaders: [`DiscoverRequest`] → [`DiscoverReply`].
pub const MSG_DISCOVER: u16 = 0x0120;
/// Per-replica state of the shards of one core: [`StatusRequest`] → [`StatusReply`].
pub const MSG_STATUS: u16 = 0x0121;

/// A consensus message from a replica on node `from`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ConsensusMessage {
    /// The sending node.
    pub from: u64,
    /// The replica's message (routed by `kiseki_consensus::peek_route`).
    pub bytes: Vec<u8>,
}

/// A delta for a shard, with the proposal id that makes retries safe.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ProposeRequest {
    /// The shard.
    pub shard: u64,
    /// The client session (one outstanding proposal per session).
    pub client_id: u64,
    /// Increases by one per new proposal of the session; a retry repeats it.
    pub sequence: u64,
    /// `kiseki_namespace::Delta::encode`.
    pub delta: Vec<u8>,
}

/// Where a shard request went, when it did not run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub enum Redirect {
    /// This replica is not the leader; `leader` is its best guess (0: unknown).
    NotLeader {
        /// Node id of the leader, 0 if unknown.
        leader: u64,
    },
    /// The shard has no replica on this core.
    WrongCore,
    /// The replica is at a limit; retry shortly.
    Busy,
}

/// The answer to a proposal.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub enum ProposeReply {
    /// Committed on a majority and applied at `index`; `outcome` is the postcard
    /// encoding of a [`crate::DeltaOutcome`].
    Applied {
        /// Log index of the entry.
        index: u64,
        /// The encoded outcome.
        outcome: Vec<u8>,
        /// The postcard encoding of an `Option<Vec<WatchEvent>>`: the watch events of the
        /// entry (what it changed, for the proposer's metadata cache), `None` when the
        /// shard no longer holds them all.
        events: Vec<u8>,
    },
    /// Not run here.
    Redirect(Redirect),
}

/// A read of a shard's state, answered after a read barrier (linearizable).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ReadRequest {
    /// The shard.
    pub shard: u64,
    /// The postcard encoding of a [`crate::ReadQuery`].
    pub query: Vec<u8>,
}

/// The answer to a read.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub enum ReadReply {
    /// Read at `index`; `answer` is the postcard encoding of a [`crate::ReadAnswer`].
    Done {
        /// The barrier's log index: the read reflects every entry up to it.
        index: u64,
        /// The encoded answer.
        answer: Vec<u8>,
    },
    /// Not run here.
    Redirect(Redirect),
}

/// Asks any node for the cluster map.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct DiscoverRequest {}

/// The cluster map: nodes with their ports, shards with their replicas and leaders.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct DiscoverReply {
    /// `crate::ClusterMap` as JSON (small, read once per client).
    pub cluster_json: String,
    /// Leader hints known to the answering node: (shard, leader node id).
    pub leaders: Vec<(u64, u64)>,
}

/// Asks a core for the state of its replicas.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct StatusRequest {}

/// The state of one replica.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ReplicaStatus {
    /// The shard.
    pub shard: u64,
    /// The leader this replica knows (0: none).
    pub leader: u64,
    /// Highest decided log index.
    pub decided_index: u64,
    /// Highest applied log index.
    pub applied_index: u64,
    /// `NamespaceState::state_digest` at `applied_index`.
    pub digest: Vec<u8>,
    /// Inodes in the shard's namespace.
    pub inodes: u64,
}

/// The replicas of one core.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct StatusReply {
    /// Node id.
    pub node: u64,
    /// Core index.
    pub core: u64,
    /// One entry per hosted replica.
    pub replicas: Vec<ReplicaStatus>,
}
