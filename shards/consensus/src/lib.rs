//! Sans-IO shard replicas over omnipaxos: durable-before-send log records, snapshots and
//! trimming.
//!
//! This crate owns one replica of one shard: a [`Replica`] wraps an omnipaxos node whose
//! log entries carry a [`StateMachine`] command and the [`ProposalId`] that proposed it.
//! It does no I/O and keeps no clock: the host (the storage node, or the simulation)
//! feeds it events — [`Replica::receive`], [`Replica::tick`], [`Replica::propose`],
//! [`Replica::read_barrier`], [`Replica::persisted`] — and carries out the [`Action`]s
//! that [`Replica::poll_actions`] returns: persist a record, send a message, answer a
//! client, trim old records. Records are replayed by [`Replica::recover`].
//!
//! Invariants:
//! - **I-L1**: no message leaves before every record produced before it is reported
//!   durable. omnipaxos writes its storage synchronously; here those writes are kept in
//!   memory and cut into records (one per poll: group commit), and messages wait behind
//!   the record they follow.
//! - **I-L2**: an entry is reported [`Action::Applied`] only once decided, i.e. accepted
//!   on a majority whose copies were durable before they acknowledged.
//! - **I-L3**: every replica applies the same entries in the same order; a retried
//!   proposal is applied at most once (a replicated deduplication table).
//! - Snapshots live outside omnipaxos: a snapshot record (state machine snapshot plus the
//!   omnipaxos storage) supersedes earlier records; a peer that needs compacted entries
//!   gets the snapshot instead (decision 0005).
//! - **Solo mode**: a replica set of one (`members == [node_id]`, the single-node
//!   deployment) runs without omnipaxos, which refuses one node, behind the same API: the
//!   replica leads at once, cuts the proposals of each poll into one record, and applies
//!   an entry once its record is durable (a majority of one; I-L2 holds). No messages.
//!
//! - **I-R2**: reads share read barriers ([`ReadBatcher`]) without losing I-L4: a read
//!   waits for a barrier appended after it arrived, never for one already in flight.
//!
//! Runs on the core that owns the shard replica (a [`Replica`] is `!Send`); nothing here
//! is shared between cores.
#![forbid(unsafe_code)]

mod codec;
mod config;
mod entry;
mod error;
mod reads;
mod record;
mod replica;
mod sessions;
mod state_machine;
mod storage;
mod wire;

pub use config::{ReplicaConfig, NODE_ID_MAX};
pub use entry::{Entry, NoStateSnapshot, Payload, ProposalId};
pub use error::ConsensusError;
pub use reads::{BarrierDecided, ReadBatcher};
pub use replica::{Action, Replica};
pub use state_machine::StateMachine;
pub use wire::{peek_route, Route};
