//! The fragment format: a 64-byte self-describing header followed by the payload.
//!
//! ```text
//! offset  size  field
//!  0      4     magic "KSKF"
//!  4      1     version (1)
//!  5      1     scheme (1 replicas, 2 Reed-Solomon)
//!  6      1     hash algorithm (1 BLAKE3, 2 SHA-256)
//!  7      1     reserved, 0
//!  8      1     fragment index
//!  9      1     k (data shards; 1 for replicas)
//! 10      1     m (parity shards; copies - 1 for replicas)
//! 11      1     reserved, 0
//! 12      4     epoch of the system key the chunk is sealed under (LE)
//! 16      4     payload bytes (LE)
//! 20      4     chunk bytes: plaintext length (LE); sealed = chunk + 16
//! 24     32     chunk locator
//! 56      4     reserved, 0
//! 60      4     CRC32C of payload ‖ header[0..60] (LE)
//! ```
//!
//! The checksum covers the payload first so replicas share one payload pass. A fragment
//! is immutable once written (I-C1): any change to header or payload fails the checksum.

use crate::crypto::{HashAlgorithm, TAG_BYTES};
use crate::erasure::Durability;
use crate::error::Error;
use crate::Locator;

/// Bytes of a fragment header.
pub const FRAGMENT_HEADER_BYTES: usize = 64;
/// First bytes of every fragment.
pub const FRAGMENT_MAGIC: [u8; 4] = *b"KSKF";
/// Current format version.
pub const FRAGMENT_VERSION: u8 = 1;
const CRC_OFFSET: usize = 60;

/// The decoded header of one fragment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FragmentHeader {
    /// The chunk.
    pub locator: Locator,
    /// Replicas or k+m.
    pub durability: Durability,
    /// Hash algorithm of the chunk's identity.
    pub hash: HashAlgorithm,
    /// This fragment's index (0..k+m; data shards first).
    pub index: u8,
    /// System key epoch the chunk is sealed under.
    pub epoch: u32,
    /// Payload length.
    pub payload_bytes: u32,
    /// Plaintext length of the chunk.
    pub chunk_bytes: u32,
}

impl FragmentHeader {
    /// Whether two headers describe the same sealed chunk (everything but the index).
    pub fn same_chunk(&self, other: &FragmentHeader) -> bool {
        FragmentHeader {
            index: other.index,
            ..*self
        } == *other
    }

    /// The header bytes for `payload`, checksum included.
    pub fn encode(&self, payload: &[u8]) -> [u8; FRAGMENT_HEADER_BYTES] {
        self.encode_with_payload_crc(crc32c::crc32c(payload))
    }

    /// The header bytes given the CRC32C of the payload alone.
    pub(crate) fn encode_with_payload_crc(&self, payload_crc: u32) -> [u8; FRAGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; FRAGMENT_HEADER_BYTES];
        let (scheme, data, parity) = self.durability.to_wire();
        bytes[0..4].copy_from_slice(&FRAGMENT_MAGIC);
        bytes[4] = FRAGMENT_VERSION;
        bytes[5] = scheme;
        bytes[6] = self.hash.id();
        bytes[8] = self.index;
        bytes[9] = data;
        bytes[10] = parity;
        bytes[12..16].copy_from_slice(&self.epoch.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.payload_bytes.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.chunk_bytes.to_le_bytes());
        bytes[24..56].copy_from_slice(&self.locator.0);
        let crc = crc32c::crc32c_append(payload_crc, &bytes[..CRC_OFFSET]);
        bytes[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// A whole fragment (header ‖ payload) as one buffer.
    pub fn to_fragment(&self, payload: &[u8]) -> Vec<u8> {
        let mut fragment = Vec::with_capacity(FRAGMENT_HEADER_BYTES + payload.len());
        fragment.extend_from_slice(&self.encode(payload));
        fragment.extend_from_slice(payload);
        fragment
    }

    /// Parses and verifies a whole fragment: magic, version, reserved bytes, field ranges,
    /// exact length and checksum. Returns the header and the payload.
    pub fn parse(fragment: &[u8]) -> Result<(FragmentHeader, &[u8]), Error> {
        let corrupt = |reason| Error::Corrupt { reason };
        if fragment.len() < FRAGMENT_HEADER_BYTES {
            return Err(corrupt("shorter than a fragment header"));
        }
        let (bytes, payload) = fragment.split_at(FRAGMENT_HEADER_BYTES);
        if bytes[0..4] != FRAGMENT_MAGIC {
            return Err(corrupt("bad magic"));
        }
        if bytes[4] != FRAGMENT_VERSION {
            return Err(corrupt("unknown version"));
        }
        let stored_crc = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(payload), &bytes[..CRC_OFFSET]);
        if crc != stored_crc {
            return Err(corrupt("checksum mismatch"));
        }
        if bytes[7] != 0 || bytes[11] != 0 || bytes[56..60] != [0; 4] {
            return Err(corrupt("reserved bytes are not zero"));
        }
        let durability = Durability::from_wire(bytes[5], bytes[9], bytes[10]).ok_or(corrupt("bad scheme"))?;
        let hash = HashAlgorithm::from_id(bytes[6]).ok_or(corrupt("unknown hash algorithm"))?;
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut locator = [0u8; 32];
        locator.copy_from_slice(&bytes[24..56]);
        let header = FragmentHeader {
            locator: Locator(locator),
            durability,
            hash,
            index: bytes[8],
            epoch: word(12),
            payload_bytes: word(16),
            chunk_bytes: word(20),
        };
        if usize::from(header.index) >= durability.fragments_total() {
            return Err(corrupt("fragment index out of range"));
        }
        if header.payload_bytes as usize != payload.len() {
            return Err(corrupt("payload length differs from the header"));
        }
        let sealed = header.chunk_bytes as usize + TAG_BYTES;
        if header.chunk_bytes == 0 || durability.shard_bytes(sealed) != payload.len() {
            return Err(corrupt("payload length does not fit the chunk length"));
        }
        Ok((header, payload))
    }
}

/// A set of fragment indices (0..=255).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FragmentSet([u64; 4]);

impl FragmentSet {
    /// The empty set.
    pub fn new() -> FragmentSet {
        FragmentSet::default()
    }

    /// Adds `index`.
    pub fn insert(&mut self, index: usize) {
        if index < 256 {
            self.0[index / 64] |= 1 << (index % 64);
        }
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: usize) -> bool {
        index < 256 && self.0[index / 64] & (1 << (index % 64)) != 0
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indices, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..256).filter(|&index| self.contains(index))
    }
}

impl std::fmt::Debug for FragmentSet {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (FragmentHeader, Vec<u8>) {
        let durability = Durability::ErasureCoded { data: 4, parity: 2 };
        let chunk_bytes = 1000u32;
        let payload_bytes = durability.shard_bytes(chunk_bytes as usize + TAG_BYTES);
        let header = FragmentHeader {
            locator: Locator([5; 32]),
            durability,
            hash: HashAlgorithm::Blake3,
            index: 3,
            epoch: 7,
            payload_bytes: payload_bytes as u32,
            chunk_bytes,
        };
        let payload: Vec<u8> = (0..payload_bytes).map(|i| (i * 13) as u8).collect();
        (header, payload)
    }

    #[test]
    fn round_trip() {
        let (header, payload) = sample();
        let fragment = header.to_fragment(&payload);
        let (parsed, parsed_payload) = FragmentHeader::parse(&fragment).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(parsed_payload, &payload[..]);
    }

    #[test]
    fn truncated_and_garbage_fragments_are_errors() {
        let (header, payload) = sample();
        let fragment = header.to_fragment(&payload);
        for length in [0, 1, 63, 64, 65, fragment.len() - 1] {
            assert!(matches!(
                FragmentHeader::parse(&fragment[..length]),
                Err(Error::Corrupt { .. })
            ));
        }
        let mut longer = fragment.clone();
        longer.push(0);
        assert!(FragmentHeader::parse(&longer).is_err());
        assert!(FragmentHeader::parse(&[0xff; 200]).is_err());
    }

    #[test]
    fn set_operations() {
        let mut set = FragmentSet::new();
        set.insert(0);
        set.insert(200);
        set.insert(300);
        assert!(set.contains(200) && !set.contains(1));
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 200]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A flipped bit anywhere in header or payload is detected.
        #[test]
        fn any_flipped_bit_is_detected(bit in 0usize..((64 + 1024) * 8)) {
            let (header, payload) = sample();
            let mut fragment = header.to_fragment(&payload);
            let bit = bit % (fragment.len() * 8);
            fragment[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(FragmentHeader::parse(&fragment).is_err());
        }
    }
}
