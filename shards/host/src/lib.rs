//! Hosts the shard replicas of a storage node's cores and serves them over the wire.
//!
//! **What it owns.** Per core: the replicas the [`ClusterMap`] places there (omnipaxos
//! through `kiseki-consensus`, applying the namespace state machine of
//! `kiseki-namespace`), their log records in the core's own allocation group of the
//! device ([`ShardLog`], through the fragment store's group commit), the links to the
//! same shards' replicas on other nodes, and the RPC service clients call
//! ([`CoreService`]): propose a delta, read linearizably, discover the map, report
//! status. [`MetaClient`] is the shard-aware client of that service.
//!
//! **Invariants.**
//! - I-L1: a consensus message leaves only after the records before it are durable: the
//!   host reports durability to the replica strictly in record order, after the store's
//!   `fdatasync` (its put returned).
//! - I-L2: a client hears `Applied` only for entries committed on a majority.
//! - I-T1: every replica, log and link lives on one core; cores share nothing.
//! - I-R2: linearizable reads share read barriers (`kiseki_consensus::ReadBatcher`), each
//!   read waiting for a barrier appended after it arrived.
//!
//! **Group commit.** Proposals, reads, peer messages and durability reports only mark
//! their shard; one pump task per core polls each marked shard once per executor turn, so
//! what arrived together becomes one log record (one store put) and one round of
//! messages.
//!
//! **Where it runs.** On every core of `kiseki-server` (one [`CoreHost`] per core, over
//! that core's fragment store); [`MetaClient`] on any kiseki-runtime executor.
#![forbid(unsafe_code)]

mod client;
mod host;
mod log;
mod machine;
mod service;

/// The messages of the metadata service (they live in `kiseki-api`).
pub use kiseki_api::meta as api;
pub use kiseki_api::{ClusterMap, DeltaOutcome, NodeInfo, ReadAnswer, ReadQuery, READDIR_ENTRIES_MAX};

pub use client::{MetaClient, Session};
pub use host::{shard_namespace_config, CoreHost, HostConfig};
pub use log::{is_log_locator, ShardLog, RECORD_PART_BYTES_MAX};
pub use machine::NamespaceMachine;
pub use service::{serve_core, CoreService};

/// Largest consensus frame between nodes: a snapshot transfer to a lagging replica
/// travels in one message, so the default 16 MiB frame would strand a follower of a shard
/// with more than about 100k entries.
pub const PEER_FRAME_BYTES_MAX: usize = 256 << 20;

/// The connection settings of a core's server and of its links to peers.
pub fn peer_rpc_config() -> kiseki_net::RpcConfig {
    kiseki_net::RpcConfig {
        frame_bytes_max: PEER_FRAME_BYTES_MAX,
        ..kiseki_net::RpcConfig::default()
    }
}

/// Errors of the shard host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A setting, map or request that cannot work.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The shard has no replica on this core.
    #[error("shard {shard} has no replica on this core")]
    WrongCore {
        /// The shard.
        shard: u64,
    },
    /// A map or message of the API crate is invalid.
    #[error("{0}")]
    Api(#[from] kiseki_api::ApiError),
    /// The consensus layer refused.
    #[error("consensus: {0}")]
    Consensus(#[from] kiseki_consensus::ConsensusError),
    /// The namespace refused.
    #[error("namespace: {0}")]
    Namespace(#[from] kiseki_namespace::NamespaceError),
    /// The device store failed.
    #[error("store: {0}")]
    Store(#[from] kiseki_store::StoreError),
    /// The wire failed.
    #[error("net: {0}")]
    Net(#[from] kiseki_net::NetError),
    /// The runtime refused (a task limit).
    #[error("runtime: {0}")]
    Runtime(#[from] kiseki_runtime::RuntimeError),
    /// No answer within the deadline, after retries.
    #[error("no answer: {0}")]
    Unavailable(String),
}
