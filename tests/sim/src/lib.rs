//! Deterministic simulation of a cluster of shard replicas from one seed.
//!
//! This crate owns the simulation test of `kiseki-consensus` (TigerBeetle's VOPR,
//! FoundationDB's sim2): one thread, one `u64` seed, the whole cluster — 3 or 5 nodes,
//! each holding a replica of every shard — with a simulated network (drops, delays,
//! reordering, duplicates, corruption, symmetric and one-way partitions that come and
//! go), simulated disks (records become durable after a random delay; a crash loses what
//! was not yet durable except a random prefix of it), crashes and restarts (recovery from
//! the surviving records), and clients running puts, reads and compare-and-sets on a few
//! registers through whichever node they believe leads, with retries. A safety phase with
//! faults is followed by a liveness phase without, in which every operation must finish
//! and the replicas converge. Every random choice comes from one ChaCha stream seeded by
//! the seed; the event queue and every map are ordered, so a seed replays bit for bit.
//!
//! Invariants checked on every run:
//! - **I-L1**: no replica sends a message before every record it produced earlier is
//!   reported durable (checked on every send).
//! - **I-L2**: every acknowledged write is in the final state's write history.
//! - **I-L3**: replicas that applied the same index hold the same hash chain there, and at
//!   the end every replica of a shard holds the same state at the same index.
//! - **I-L4**: the client history is linearizable ([`history`]).
//!
//! Runs on one thread of a test or of the `kiseki-sim` binary; nothing here is shared.
#![forbid(unsafe_code)]

pub mod history;
pub mod kv;
mod world;

pub use world::{run, Failure, Options, Report};
