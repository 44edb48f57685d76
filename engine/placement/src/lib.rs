//! Placement of chunk fragments on a pool's devices, and repair planning.
//!
//! This crate owns the pure functions that decide where the fragments of a chunk live:
//! weighted rendezvous (highest-random-weight) hashing of the chunk [`Locator`] over the
//! devices of a [`PoolMap`], with failure domains (node, then device). It also owns repair
//! planning: given a lost device or node and the caller's list of chunk placements, it
//! says which surviving fragments to read, which fragments to rebuild and where to write
//! them. Executing a plan (reading, decoding, writing fragments) is the pipeline crate's
//! `repair` module; nothing here does I/O, keeps a clock or draws randomness.
//!
//! Invariants:
//! - **I-D4**: no two fragments of one chunk on one device. [`place`] asserts it on every
//!   placement it returns (a violation would put two fragments at risk of one failure);
//!   [`Placement::new`] rejects caller input that breaks it with an error.
//! - Nodes before devices: while the pool has at least as many eligible nodes as fragments,
//!   no two fragments share a node; with fewer nodes, fragments spread as evenly as the
//!   devices allow.
//! - Determinism: the same pool map and locator give the same placement on every machine.
//!   Scores use integer hashing and IEEE-754 basic operations only (no platform `libm`).
//!
//! Runs anywhere a placement is needed: in clients and gateways (to address fragments), on
//! storage-node cores (to route and repair) and in the control plane; every call is a
//! plain function of its arguments, so any core may call it without coordination.
//! It also holds [`units`], the byte-size parser every command line shares (a pure
//! function too, and the one crate both the store and the clients link).
#![forbid(unsafe_code)]

mod error;
mod locator;
mod place;
mod pool;
mod repair;
mod score;
pub mod units;

pub use error::PlacementError;
pub use locator::Locator;
pub use place::{place, Placement};
pub use pool::{Device, DeviceId, DeviceState, NodeId, PoolMap};
pub use repair::{
    affected_chunks, plan_repair, ChunkPlacement, ChunkRepair, FragmentCopy, FragmentRebuild, Loss, RepairPlan,
};
