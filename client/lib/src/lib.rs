//! The native Kiseki client: what compute nodes, gateways and the command line use to
//! read and write a cluster.
//!
//! **What it owns.** The cluster map as a node hands it out, one multiplexed connection
//! per core it talks to ([`Connector`]), shard-aware metadata calls that go straight to
//! a shard's leader and retry across leader changes with the same proposal id
//! ([`Client::propose`], [`Client::read`]), fragment calls that go straight to the core
//! that owns the fragment ([`Client::put_fragment`], [`Client::get_fragment`]), and files
//! and directories of a namespace ([`Namespace`]) with client-side chunking, encryption
//! and erasure coding through `kiseki-pipeline`; the key server's and the control plane's
//! calling sides ([`services`]) and the profile that names them ([`profile`]), through
//! which a client opens a tenant's namespace with keys it is allowed to hold; and, when
//! asked for, a metadata cache per shard ([`metadata`]) kept right by watch events.
//!
//! **Invariants.**
//! - I-K1: plaintext never leaves this process: only sealed fragments are sent, and the
//!   extent map holds `K` wrapped under the tenant KEK ([`chunk_record`]).
//! - I-L5: a file's extents are committed only after the write quorum of every chunk
//!   they reference is durable ([`write_quorum`]); a fragment beyond the quorum is either
//!   durable or absent, never partial, and the chunk counts as degraded until repaired.
//! - I-MC1: a cached entry or attribute is dropped by the first applied watch event above
//!   the index it reflects, and served only while fresh and while the shard's events are
//!   being read ([`metadata`]).
//! - Reads return only verified plaintext: fragments are checked, the AEAD tag and
//!   `H(plaintext) == K` are verified, or the read fails.
//!
//! **Where it runs.** On tokio, any flavour and any number of threads: a [`Client`] is
//! `Send + Sync` and cheap to clone. It links the pipeline, placement and API crates, and
//! `kiseki-net` without its runtime: never the device store, the per-core runtime or the
//! shards.
#![forbid(unsafe_code)]

pub mod cache;
pub mod chunk_record;
mod client;
mod error;
mod health;
mod inline;
mod keys;
mod links;
pub mod metadata;
mod namespace;
mod objects;
mod posix;
pub mod profile;
pub mod services;

pub use client::{Client, ClientOptions};
pub use error::ClientError;
pub use health::{chunk_health, ChunkHealth, GcSummary, Inventory, RepairSummary};
pub use keys::KeyMaterial;
pub use links::Connector;
pub use namespace::{
    default_durability, parse_durability, path_components, write_quorum, Namespace, NamespaceOptions, ReadSummary,
    WriteSummary,
};
pub use objects::{ObjectWriter, StoredData};
pub use posix::{Capacity, Creator};
pub use profile::{open_namespace, open_namespace_with, Profile};
pub use services::{ControlClient, KeyServerClient, TlsIdentity};
