//! The Kiseki storage node (`kiseki-server`): composes the per-core runtime and the
//! fragment store into a process.
//!
//! **What it owns.** Start-up (device checks, one pinned executor per core, each core
//! opening allocation group `core` of every device), the per-core control loop, the admin
//! endpoint (`/metrics`, `/health`) and clean shutdown on SIGTERM/SIGINT; with a cluster
//! map, each core's RPC service: the shard host's metadata RPCs and the fragment RPCs of
//! [`fragments`] (put, get, delete, list on the core's allocation group of every device).
//! Also the crash-test writer used by the crash suite.
//!
//! **Invariants.** I-T1: a core's stores are touched only by that core; the admin thread
//! reaches them only by bounded control messages answered with snapshots. A fragment
//! request is served only by the core that owns its locator (`hash(locator) mod cores`);
//! any other core answers `WrongCore` with the owner. I-C1: a fragment put under a stored
//! locator with other bytes is refused `AlreadyExists`. Shard-log records, which share
//! the first device's store, are never served, listed or deleted as fragments.
//!
//! **Where it runs.** The main thread (signals, start-up), the admin thread (metrics
//! HTTP), and one executor thread per core (all data-path work).
#![forbid(unsafe_code)]

pub mod fragments;
pub mod metrics;
pub mod node;
pub mod torture;
