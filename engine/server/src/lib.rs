//! The Kiseki storage node (`kiseki-server`): composes the per-core runtime and the
//! fragment store into a process.
//!
//! **What it owns.** Start-up (device checks, one pinned executor per core, each core
//! opening allocation group `core` of every device), the per-core control loop, the admin
//! endpoint (`/metrics`, `/health`) and clean shutdown on SIGTERM/SIGINT. Also the
//! crash-test writer used by the crash suite.
//!
//! **Invariants.** I-T1: a core's stores are touched only by that core; the admin thread
//! reaches them only by bounded control messages answered with snapshots.
//!
//! **Where it runs.** The main thread (signals, start-up), the admin thread (metrics
//! HTTP), and one executor thread per core (all data-path work).
#![forbid(unsafe_code)]

pub mod metrics;
pub mod node;
pub mod torture;
