//! What the client keeps per chunk in a file's extent map, inside the namespace's opaque
//! per-extent key field (`Extent::wrapped_key`, at most 128 bytes): everything a reader
//! needs to find and open the chunk besides its locator.
//!
//! ```text
//! offset  size  field
//!  0      1     record version (1)
//!  1      1     hash algorithm (1 BLAKE3, 2 SHA-256)
//!  2      1     scheme (1 replicas, 2 Reed-Solomon)
//!  3      1     k (copies for replicas)
//!  4      1     m (0 for replicas)
//!  5      4     epoch of the system key the chunk is sealed under (LE)
//!  9      4     plaintext bytes of the chunk (LE)
//! 13     40     K wrapped under the tenant KEK
//! ```
//!
//! The shards see these bytes but learn nothing from them: `K` is wrapped under a key
//! they never hold (I-K2).

use kiseki_pipeline::crypto::WRAPPED_KEY_BYTES;
use kiseki_pipeline::{ChunkRef, Durability, HashAlgorithm, Locator, WrappedKey};

use crate::ClientError;

const RECORD_VERSION: u8 = 1;
/// Bytes of an encoded record.
pub const CHUNK_RECORD_BYTES: usize = 13 + WRAPPED_KEY_BYTES;

/// One chunk as a file's extent map records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Locator, wrapped key, length and epoch.
    pub chunk: ChunkRef,
    /// How its fragments are stored.
    pub durability: Durability,
    /// The hash of its identity.
    pub hash: HashAlgorithm,
}

impl ChunkRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (scheme, k, m) = match self.durability {
            Durability::Replicas(copies) => (1, copies, 0),
            Durability::ErasureCoded { data, parity } => (2, data, parity),
        };
        let mut bytes = Vec::with_capacity(CHUNK_RECORD_BYTES);
        bytes.extend_from_slice(&[RECORD_VERSION, self.hash.id(), scheme, k, m]);
        bytes.extend_from_slice(&self.chunk.epoch.to_le_bytes());
        bytes.extend_from_slice(&self.chunk.chunk_bytes.to_le_bytes());
        bytes.extend_from_slice(&self.chunk.wrapped_key.0);
        bytes
    }

    /// Parses a record of the chunk `locator`; anything malformed is an error, never a
    /// guess.
    pub fn decode(locator: [u8; 32], bytes: &[u8]) -> Result<ChunkRecord, ClientError> {
        let bad = |what: &str| ClientError::DataUnavailable(format!("extent key record: {what}"));
        if bytes.len() != CHUNK_RECORD_BYTES {
            return Err(bad("wrong length"));
        }
        if bytes[0] != RECORD_VERSION {
            return Err(bad("unknown version"));
        }
        let hash = HashAlgorithm::from_id(bytes[1]).ok_or_else(|| bad("unknown hash"))?;
        let durability = match (bytes[2], bytes[3], bytes[4]) {
            (1, copies, 0) => Durability::Replicas(copies),
            (2, data, parity) => Durability::ErasureCoded { data, parity },
            _ => return Err(bad("unknown scheme")),
        };
        durability.validate().map_err(|_| bad("durability out of range"))?;
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut wrapped = [0u8; WRAPPED_KEY_BYTES];
        wrapped.copy_from_slice(&bytes[13..]);
        Ok(ChunkRecord {
            chunk: ChunkRef {
                locator: Locator(locator),
                wrapped_key: WrappedKey(wrapped),
                chunk_bytes: word(9),
                epoch: word(5),
            },
            durability,
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        for durability in [
            Durability::Replicas(3),
            Durability::ErasureCoded { data: 4, parity: 2 },
            Durability::ErasureCoded { data: 8, parity: 3 },
        ] {
            let record = ChunkRecord {
                chunk: ChunkRef {
                    locator: Locator([7; 32]),
                    wrapped_key: WrappedKey([9; WRAPPED_KEY_BYTES]),
                    chunk_bytes: 1 << 20,
                    epoch: 3,
                },
                durability,
                hash: HashAlgorithm::Blake3,
            };
            let bytes = record.encode();
            assert_eq!(bytes.len(), CHUNK_RECORD_BYTES);
            assert_eq!(ChunkRecord::decode([7; 32], &bytes).ok(), Some(record));
            assert!(ChunkRecord::decode([7; 32], &bytes[..bytes.len() - 1]).is_err());
            let mut versioned = bytes.clone();
            versioned[0] = 2;
            assert!(ChunkRecord::decode([7; 32], &versioned).is_err());
            let mut schemed = bytes;
            schemed[2] = 9;
            assert!(ChunkRecord::decode([7; 32], &schemed).is_err());
        }
    }
}
