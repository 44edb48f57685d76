//! The trait a replicated state machine implements.

use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

/// A deterministic state machine driven by a [`Replica`](crate::Replica).
///
/// Every replica of a shard applies the same commands in the same order, so `apply` must
/// depend only on the state and the command: no clock, no randomness, no iteration over
/// hash maps. `snapshot` and `restore` must round-trip exactly: a replica restored from a
/// snapshot and then fed the same commands must reach the same state as one that applied
/// every command itself (I-L3).
pub trait StateMachine: Sized {
    /// A command carried by the log.
    type Command: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;
    /// The result of applying a command, returned to the proposer. Kept in the
    /// deduplication table (and its snapshots) so that a retried proposal gets the
    /// original answer.
    type Output: Clone + Debug + Serialize + DeserializeOwned;
    /// Why a snapshot could not be restored.
    type Error: std::error::Error;

    /// Applies one decided command. `index` is the entry's position in the shard's log,
    /// counted from 1 and increasing across configurations.
    fn apply(&mut self, index: u64, command: &Self::Command) -> Self::Output;

    /// The whole state, encoded.
    fn snapshot(&self) -> Vec<u8>;

    /// Rebuilds a state from [`snapshot`](Self::snapshot)'s bytes. The bytes come from
    /// disk or from another node: damage must be an error, never a panic.
    fn restore(bytes: &[u8]) -> Result<Self, Self::Error>;
}
