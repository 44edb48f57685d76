//! The state machine of the simulation: registers with put and compare-and-set, which
//! also remember every value written to each key and a hash chain of everything applied.

use kiseki_consensus::StateMachine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A command on one register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Set the register.
    Put {
        /// The register.
        key: u64,
        /// The new value (unique within a run).
        value: u64,
    },
    /// Set the register to `new` if it holds `expected`.
    Cas {
        /// The register.
        key: u64,
        /// The value it must hold (`None`: never written).
        expected: Option<u64>,
        /// The new value (unique within a run).
        new: u64,
    },
}

impl KvCommand {
    /// The register the command touches.
    pub fn key(&self) -> u64 {
        match self {
            KvCommand::Put { key, .. } | KvCommand::Cas { key, .. } => *key,
        }
    }
}

/// The answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvOutput {
    /// Whether the command wrote (always for a put; for a compare-and-set, whether it
    /// matched).
    pub ok: bool,
    /// The hash chain after this command: equal on every replica at the same index (I-L3).
    pub chain: u64,
}

/// Registers, their write histories and the hash chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// Current value of each register.
    pub registers: BTreeMap<u64, u64>,
    /// Every value that took effect on each register, in order.
    pub writes: BTreeMap<u64, Vec<u64>>,
    /// Hash of every (index, command) applied, in order.
    pub chain: u64,
}

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("undecodable key-value snapshot: {0}")]
pub struct KvSnapshotError(String);

/// FNV-1a over 64-bit words: a small, stable hash for chains, digests and traces.
pub fn mix(hash: u64, word: u64) -> u64 {
    let mut hash = if hash == 0 { 0xcbf2_9ce4_8422_2325 } else { hash };
    for byte in word.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a over bytes.
pub fn mix_bytes(hash: u64, bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(mix(hash, bytes.len() as u64), |hash, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mix(hash, u64::from_le_bytes(word))
    })
}

impl StateMachine for KvState {
    type Command = KvCommand;
    type Output = KvOutput;
    type Error = KvSnapshotError;

    fn apply(&mut self, index: u64, command: &KvCommand) -> KvOutput {
        let (key, written) = match command {
            KvCommand::Put { key, value } => (*key, Some(*value)),
            KvCommand::Cas { key, expected, new } => {
                (*key, (self.registers.get(key).copied() == *expected).then_some(*new))
            }
        };
        if let Some(value) = written {
            self.registers.insert(key, value);
            self.writes.entry(key).or_default().push(value);
        }
        let encoded = postcard::to_allocvec(command).unwrap_or_default();
        self.chain = mix_bytes(mix(self.chain, index), &encoded);
        KvOutput {
            ok: written.is_some(),
            chain: self.chain,
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn restore(bytes: &[u8]) -> Result<Self, KvSnapshotError> {
        postcard::from_bytes(bytes).map_err(|error| KvSnapshotError(error.to_string()))
    }
}
