//! The state machine the integration tests replicate.

use kiseki_consensus::StateMachine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tiny key-value state machine: `Put` returns the previous value; `applied` lists the
/// indexes it applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// The registers.
    pub map: BTreeMap<u64, u64>,
    /// The log index of every command applied, in order.
    pub applied: Vec<u64>,
}

/// Its one command: put a value under a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Put {
    /// Key, value.
    Put(u64, u64),
}

/// A snapshot that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("bad snapshot: {0}")]
pub struct BadSnapshot(String);

impl StateMachine for Kv {
    type Command = Put;
    type Output = Option<u64>;
    type Error = BadSnapshot;

    fn apply(&mut self, index: u64, command: &Put) -> Option<u64> {
        self.applied.push(index);
        let Put::Put(key, value) = command;
        self.map.insert(*key, *value)
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap()
    }

    fn restore(bytes: &[u8]) -> Result<Self, BadSnapshot> {
        postcard::from_bytes(bytes).map_err(|error| BadSnapshot(error.to_string()))
    }
}
