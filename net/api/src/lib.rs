//! The plain types that Kiseki's processes exchange: the messages of the metadata
//! service ([`meta`]), of the fragment service ([`fragment`]), of the key server
//! ([`keys`]) and of the control plane ([`control`]), the reads and outcomes
//! they carry ([`query`]), and the cluster map ([`ClusterMap`]) from which every process
//! computes where a shard's replicas and a chunk's fragments live.
//!
//! **What it owns.** Types and pure functions only: no runtime, no I/O, no state. Storage
//! nodes, the native client, gateways and the command line all link it, so the same
//! placement rules run everywhere without coordination. It links `kiseki-net` without
//! its runtime (for the rkyv version the wire is pinned to) and `kiseki-namespace` for
//! the delta and attribute types.
//!
//! **Invariants.** Placement is a pure function of the map: the same map gives every
//! process the same replica sets ([`ClusterMap::members`]) and the same fragment owner
//! cores ([`ClusterMap::fragment_core`]).
//!
//! **Where it runs.** Anywhere, on any thread.
#![forbid(unsafe_code)]

mod cluster;
pub mod control;
pub mod fragment;
pub mod keys;
pub mod meta;
mod query;
mod roles;

pub use cluster::{device_id, split_device_id, ClusterMap, NodeInfo, DEVICES_PER_NODE_MAX};
pub use query::{
    DeltaOutcome, ListedEntry, NameBound, ReadAnswer, ReadQuery, EXTENTS_READ_BYTES_MAX, READDIR_ENTRIES_MAX,
    WATCH_EVENTS_PER_READ_MAX,
};
pub use roles::{validate_tenant_name, Role, SYSTEM_TENANT};

/// Errors of the API types.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A map or setting that cannot work.
    #[error("invalid: {0}")]
    Invalid(String),
}
