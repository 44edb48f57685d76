//! The read path: verify → (decode if degraded) → decrypt → check `H(plaintext) == K`.

use crate::crypto::{verify_content, ChunkCipher, HashAlgorithm, SystemKeyring, TenantKeys, WrappedKey, TAG_BYTES};
use crate::erasure::{Codec, Durability};
use crate::error::Error;
use crate::fragment::{FragmentHeader, FragmentSet, FRAGMENT_HEADER_BYTES};
use crate::Locator;

/// Codecs a read pipeline keeps for different k+m before dropping the oldest.
const CODECS_MAX: usize = 8;

/// What a file's extent map records per chunk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChunkRef {
    /// The chunk's locator.
    pub locator: Locator,
    /// `K` wrapped under the tenant KEK.
    pub wrapped_key: WrappedKey,
    /// Plaintext length.
    pub chunk_bytes: u32,
    /// System key epoch the chunk is sealed under.
    pub epoch: u32,
}

/// How a read went.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReadOutcome {
    /// Fragments the chunk was decoded from.
    pub used: FragmentSet,
    /// Fragments absent from the input (among those examined).
    pub missing: FragmentSet,
    /// Fragments present but failing verification (treated as missing).
    pub corrupt: FragmentSet,
    /// Whether reconstruction from parity (or a non-first replica) was needed.
    pub degraded: bool,
}

/// The read path of one thread; reuses its scratch buffer and codecs across chunks.
pub struct ReadPipeline {
    hash: HashAlgorithm,
    codecs: Vec<Codec>,
    scratch: Vec<u8>,
    present: Vec<bool>,
    chosen: Vec<usize>,
}

/// Parses `fragment` and checks that it is fragment `index` of the chunk `expected`
/// describes (everything but the index must match).
fn verify_fragment<'a>(fragment: &'a [u8], index: usize, expected: &FragmentHeader) -> Result<&'a [u8], Error> {
    let (header, payload) = FragmentHeader::parse(fragment)?;
    if usize::from(header.index) != index || !header.same_chunk(expected) {
        return Err(Error::Corrupt {
            reason: "header does not match the chunk",
        });
    }
    Ok(payload)
}

impl ReadPipeline {
    /// A read pipeline for the cluster's hash algorithm.
    pub fn new(hash: HashAlgorithm) -> ReadPipeline {
        ReadPipeline {
            hash,
            codecs: Vec::new(),
            scratch: Vec::new(),
            present: Vec::new(),
            chosen: Vec::new(),
        }
    }

    fn codec(&mut self, data: usize, parity: usize) -> Result<&Codec, Error> {
        let position = match self.codecs.iter().position(|c| c.matches(data, parity)) {
            Some(position) => position,
            None => {
                if self.codecs.len() == CODECS_MAX {
                    self.codecs.remove(0);
                }
                self.codecs.push(Codec::new(data, parity)?);
                self.codecs.len() - 1
            }
        };
        Ok(&self.codecs[position])
    }

    /// Reads one chunk into `out[..chunk_bytes]`.
    ///
    /// `fragments[i]` is fragment `i` as fetched (header ‖ payload), or `None` if it could
    /// not be fetched; there must be one slot per fragment of `durability`. Fragments are
    /// verified in index order until enough are usable (data fragments first, so a healthy
    /// read decodes nothing); a fragment that fails verification counts as missing. On any
    /// error after the argument checks, `out[..chunk_bytes]` holds zeros, never
    /// unauthenticated data.
    pub fn read_chunk(
        &mut self,
        chunk: &ChunkRef,
        durability: Durability,
        tenant: &TenantKeys,
        keyring: &SystemKeyring,
        fragments: &[Option<&[u8]>],
        out: &mut [u8],
    ) -> Result<ReadOutcome, Error> {
        durability.validate()?;
        if fragments.len() != durability.fragments_total() {
            return Err(Error::invalid(format!(
                "{} fragment slots given for {} fragments",
                fragments.len(),
                durability.fragments_total()
            )));
        }
        let chunk_bytes = chunk.chunk_bytes as usize;
        if chunk_bytes == 0 {
            return Err(Error::invalid("a chunk cannot be empty"));
        }
        if out.len() < chunk_bytes {
            return Err(Error::BufferTooSmall {
                needed: chunk_bytes,
                available: out.len(),
            });
        }
        let out = &mut out[..chunk_bytes];
        let result = self.read_checked(chunk, durability, tenant, keyring, fragments, out);
        if result.is_err() {
            out.fill(0);
        }
        result
    }

    /// [`ReadPipeline::read_chunk`] after its argument checks; `out` is exactly the chunk.
    fn read_checked(
        &mut self,
        chunk: &ChunkRef,
        durability: Durability,
        tenant: &TenantKeys,
        keyring: &SystemKeyring,
        fragments: &[Option<&[u8]>],
        out: &mut [u8],
    ) -> Result<ReadOutcome, Error> {
        let key = tenant.kek.unwrap(&chunk.wrapped_key, &chunk.locator, self.hash)?;
        let cipher = ChunkCipher::new(keyring.get(chunk.epoch)?, &key, &chunk.locator)?;
        let shard_bytes = durability.shard_bytes(out.len() + TAG_BYTES);
        let expected = FragmentHeader {
            locator: chunk.locator,
            durability,
            hash: self.hash,
            index: 0,
            epoch: chunk.epoch,
            payload_bytes: shard_bytes as u32,
            chunk_bytes: chunk.chunk_bytes,
        };
        let outcome = self.select(&expected, fragments)?;
        match durability {
            Durability::Replicas(_) => {
                let sealed = payload(fragments, self.chosen[0]);
                cipher.open(&sealed[..out.len()], &sealed[out.len()..], out)?;
            }
            Durability::ErasureCoded { .. } if !outcome.degraded => {
                self.open_healthy(&cipher, fragments, shard_bytes, out)?;
            }
            Durability::ErasureCoded { data, parity } => {
                self.rebuild_stripe(fragments, usize::from(data), usize::from(parity), shard_bytes)?;
                let chunk_bytes = out.len();
                cipher.open(
                    &self.scratch[..chunk_bytes],
                    &self.scratch[chunk_bytes..chunk_bytes + TAG_BYTES],
                    out,
                )?;
            }
        }
        verify_content(self.hash, &tenant.dedup, out, &key)?;
        Ok(outcome)
    }

    /// Verifies fragments in index order until enough are usable; fills `self.chosen`.
    fn select(&mut self, expected: &FragmentHeader, fragments: &[Option<&[u8]>]) -> Result<ReadOutcome, Error> {
        let needed = expected.durability.fragments_needed();
        let mut outcome = ReadOutcome::default();
        self.chosen.clear();
        for (index, fragment) in fragments.iter().enumerate() {
            if self.chosen.len() == needed {
                break;
            }
            match fragment {
                None => outcome.missing.insert(index),
                Some(bytes) => match verify_fragment(bytes, index, expected) {
                    Ok(_) => {
                        self.chosen.push(index);
                        outcome.used.insert(index);
                    }
                    Err(_) => outcome.corrupt.insert(index),
                },
            }
        }
        if self.chosen.len() < needed {
            return Err(Error::TooManyLost {
                locator: expected.locator,
                needed,
                usable: self.chosen.len(),
                corrupt: outcome.corrupt.len(),
            });
        }
        outcome.degraded = !outcome.missing.is_empty() || !outcome.corrupt.is_empty();
        Ok(outcome)
    }

    /// Healthy erasure-coded read: the data shards in order are the sealed chunk (plus
    /// padding); copy the ciphertext into `out`, the tag aside, and open in place.
    fn open_healthy(
        &self,
        cipher: &ChunkCipher,
        fragments: &[Option<&[u8]>],
        shard_bytes: usize,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let chunk_bytes = out.len();
        let sealed_bytes = chunk_bytes + TAG_BYTES;
        let mut tag = [0u8; TAG_BYTES];
        for &index in &self.chosen {
            let start = index * shard_bytes;
            if start >= sealed_bytes {
                break; // only padding from here on
            }
            let shard = payload(fragments, index);
            let end = (start + shard_bytes).min(sealed_bytes);
            let ciphertext_end = end.min(chunk_bytes);
            if start < ciphertext_end {
                out[start..ciphertext_end].copy_from_slice(&shard[..ciphertext_end - start]);
            }
            let tag_start = start.max(chunk_bytes);
            if tag_start < end {
                tag[tag_start - chunk_bytes..end - chunk_bytes].copy_from_slice(&shard[tag_start - start..end - start]);
            }
        }
        cipher.open_in_place(&tag, out)
    }

    /// Degraded erasure-coded read: copies the chosen shards into the scratch stripe and
    /// rebuilds the missing data shards there.
    fn rebuild_stripe(
        &mut self,
        fragments: &[Option<&[u8]>],
        data: usize,
        parity: usize,
        shard_bytes: usize,
    ) -> Result<(), Error> {
        let total = data + parity;
        let stripe_bytes = total * shard_bytes;
        if self.scratch.len() < stripe_bytes {
            self.scratch.resize(stripe_bytes, 0);
        }
        self.present.clear();
        self.present.resize(total, false);
        for &index in &self.chosen {
            self.scratch[index * shard_bytes..(index + 1) * shard_bytes].copy_from_slice(payload(fragments, index));
            self.present[index] = true;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let present = std::mem::take(&mut self.present);
        let rebuilt = self
            .codec(data, parity)
            .and_then(|codec| codec.reconstruct(&mut scratch[..stripe_bytes], shard_bytes, &present, true));
        self.scratch = scratch;
        self.present = present;
        rebuilt
    }
}

/// The payload of a fragment already verified by [`ReadPipeline::select`].
fn payload<'a>(fragments: &[Option<&'a [u8]>], index: usize) -> &'a [u8] {
    fragments[index].map_or(&[][..], |bytes| &bytes[FRAGMENT_HEADER_BYTES..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{locator_of, SystemKey, TenantKek};
    use crate::write::{WriteConfig, WritePipeline};

    /// I-K2 from the inside: with every system key and everything a node or a stolen
    /// extent map holds (locator, wrapped key, epoch, fragments), every candidate for the
    /// content key an attacker can form without the tenant KEK fails to open the chunk.
    #[test]
    fn system_keys_alone_open_nothing() {
        let owner = TenantKeys::cross_tenant(TenantKek::new([42; 32]));
        let system_keys: Vec<SystemKey> = (0..4u32)
            .map(|epoch| SystemKey::new(epoch, [epoch as u8 + 1; 32]))
            .collect();
        let plaintext = vec![7u8; 4096];
        let mut pipeline = WritePipeline::new(WriteConfig {
            durability: Durability::Replicas(1),
            ..WriteConfig::default()
        })
        .unwrap();
        let chunk = pipeline.encode_chunk(&plaintext, &owner, &system_keys[3]).unwrap();
        let reference = chunk.chunk_ref();
        let sealed = chunk.fragment(0).unwrap().payload.to_vec();
        let locator = reference.locator;
        let mut candidates: Vec<[u8; 32]> = vec![
            [0; 32],
            locator.0,
            HashAlgorithm::Blake3.digest(&[&locator.0]),
            HashAlgorithm::Sha256.digest(&[&locator.0]),
        ];
        candidates.push(reference.wrapped_key.0[..32].try_into().unwrap());
        candidates.push(reference.wrapped_key.0[8..].try_into().unwrap());
        for key in &system_keys {
            candidates.push(HashAlgorithm::Blake3.digest(&[&[key.epoch() as u8 + 1; 32]]));
        }
        let mut out = vec![0u8; plaintext.len()];
        for system_key in &system_keys {
            for candidate in &candidates {
                let key = crate::crypto::tests_support::content_key_from(*candidate);
                assert_ne!(locator_of(HashAlgorithm::Blake3, &key), locator);
                let cipher = ChunkCipher::new(system_key, &key, &locator).unwrap();
                assert!(cipher.open(&sealed[..4096], &sealed[4096..], &mut out).is_err());
            }
        }
    }
}
