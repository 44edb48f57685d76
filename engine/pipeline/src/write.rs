//! The write path: chunk → content key → encrypt → encode → checksum.

use std::io::Read;

use crate::chunking::{chunk_slice, ChunkingParams, StreamChunker};
use crate::crypto::{
    content_key, locator_of, ChunkCipher, HashAlgorithm, SystemKey, TenantKeys, WrappedKey, TAG_BYTES,
};
use crate::erasure::{Codec, Durability};
use crate::error::Error;
use crate::fragment::{FragmentHeader, FRAGMENT_HEADER_BYTES};
use crate::read::ChunkRef;
use crate::Locator;

/// What a writer is configured with: the cluster's hash, the pool's durability and the
/// namespace's chunking.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WriteConfig {
    /// H (cluster setting).
    pub hash: HashAlgorithm,
    /// Replicas or k+m (pool setting).
    pub durability: Durability,
    /// Chunk sizes (namespace setting).
    pub chunking: ChunkingParams,
}

impl Default for WriteConfig {
    fn default() -> WriteConfig {
        WriteConfig {
            hash: HashAlgorithm::Blake3,
            durability: Durability::ErasureCoded { data: 4, parity: 2 },
            chunking: ChunkingParams::default(),
        }
    }
}

/// The write path of one thread. Holds one shard buffer sized for the largest chunk, so a
/// chunk costs no allocation beyond a few slice tables: the plaintext is read once by the
/// hash and once by AES-GCM, which writes the ciphertext straight into the data shards
/// (out-of-place seal: no copy of the plaintext), parity is computed next to it, and each
/// payload is read once more by CRC32C.
pub struct WritePipeline {
    config: WriteConfig,
    codec: Option<Codec>,
    /// The current chunk's shards back to back (k + m of them), or its sealed bytes.
    shards: Vec<u8>,
    headers: Vec<[u8; FRAGMENT_HEADER_BYTES]>,
}

/// One encoded chunk: its identity for the extent map and its fragments, borrowed from the
/// pipeline until the next chunk.
pub struct EncodedChunk<'a> {
    /// The chunk's locator.
    pub locator: Locator,
    /// `K` wrapped under the writer's tenant KEK.
    pub wrapped_key: WrappedKey,
    /// System key epoch the chunk is sealed under.
    pub epoch: u32,
    /// Plaintext length.
    pub chunk_bytes: u32,
    durability: Durability,
    shards: &'a [u8],
    shard_bytes: usize,
    headers: &'a [[u8; FRAGMENT_HEADER_BYTES]],
}

/// One fragment of an [`EncodedChunk`]: write `header` then `payload` (vectored I/O), or
/// [`FragmentRef::to_vec`] both.
#[derive(Clone, Copy, Debug)]
pub struct FragmentRef<'a> {
    /// Fragment index.
    pub index: usize,
    /// The 64-byte header.
    pub header: &'a [u8; FRAGMENT_HEADER_BYTES],
    /// The payload.
    pub payload: &'a [u8],
}

impl FragmentRef<'_> {
    /// Header and payload in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut fragment = Vec::with_capacity(FRAGMENT_HEADER_BYTES + self.payload.len());
        fragment.extend_from_slice(self.header);
        fragment.extend_from_slice(self.payload);
        fragment
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        FRAGMENT_HEADER_BYTES + self.payload.len()
    }

    /// Never true: a fragment has a header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'a> EncodedChunk<'a> {
    /// What the extent map records for this chunk.
    pub fn chunk_ref(&self) -> ChunkRef {
        ChunkRef {
            locator: self.locator,
            wrapped_key: self.wrapped_key,
            chunk_bytes: self.chunk_bytes,
            epoch: self.epoch,
        }
    }

    /// The durability it was encoded for.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Number of fragments.
    pub fn fragment_count(&self) -> usize {
        self.headers.len()
    }

    /// Fragment `index`, if in range.
    pub fn fragment(&self, index: usize) -> Option<FragmentRef<'a>> {
        let header = self.headers.get(index)?;
        let payload = match self.durability {
            Durability::Replicas(_) => self.shards,
            Durability::ErasureCoded { .. } => &self.shards[index * self.shard_bytes..(index + 1) * self.shard_bytes],
        };
        Some(FragmentRef { index, header, payload })
    }

    /// All fragments, by index.
    pub fn fragments(&self) -> impl Iterator<Item = FragmentRef<'a>> + '_ {
        (0..self.fragment_count()).filter_map(|index| self.fragment(index))
    }
}

impl WritePipeline {
    /// A pipeline for `config`; allocates its buffers for the largest chunk once.
    pub fn new(config: WriteConfig) -> Result<WritePipeline, Error> {
        config.chunking.validate()?;
        config.durability.validate()?;
        let sealed_max = config.chunking.chunk_bytes_max as usize + TAG_BYTES;
        let (codec, shards_bytes) = match config.durability {
            Durability::Replicas(_) => (None, sealed_max),
            Durability::ErasureCoded { data, parity } => (
                Some(Codec::new(usize::from(data), usize::from(parity))?),
                config.durability.shard_bytes(sealed_max) * config.durability.fragments_total(),
            ),
        };
        Ok(WritePipeline {
            config,
            codec,
            shards: vec![0; shards_bytes],
            headers: Vec::with_capacity(config.durability.fragments_total()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WriteConfig {
        &self.config
    }

    /// Encodes one chunk for `tenant` under `system_key`. The chunk must be non-empty and
    /// at most `chunk_bytes_max` long.
    pub fn encode_chunk(
        &mut self,
        plaintext: &[u8],
        tenant: &TenantKeys,
        system_key: &SystemKey,
    ) -> Result<EncodedChunk<'_>, Error> {
        let chunk_bytes = plaintext.len();
        if chunk_bytes == 0 {
            return Err(Error::invalid("a chunk cannot be empty"));
        }
        if chunk_bytes > self.config.chunking.chunk_bytes_max as usize {
            return Err(Error::invalid(format!(
                "chunk of {chunk_bytes} bytes exceeds chunk_bytes_max {}",
                self.config.chunking.chunk_bytes_max
            )));
        }
        let hash = self.config.hash;
        let durability = self.config.durability;
        let key = content_key(hash, &tenant.dedup, plaintext);
        let locator = locator_of(hash, &key);
        let wrapped_key = tenant.kek.wrap(&key)?;
        let cipher = ChunkCipher::new(system_key, &key, &locator)?;

        let sealed_bytes = chunk_bytes + TAG_BYTES;
        let shard_bytes = durability.shard_bytes(sealed_bytes);
        let fragments = durability.fragments_total();
        let used_bytes = match durability {
            Durability::Replicas(_) => sealed_bytes,
            Durability::ErasureCoded { .. } => shard_bytes * fragments,
        };
        let shards = &mut self.shards[..used_bytes];
        {
            let (ciphertext, rest) = shards.split_at_mut(chunk_bytes);
            cipher.seal(plaintext, ciphertext, &mut rest[..TAG_BYTES])?;
        }
        if let (Some(codec), Durability::ErasureCoded { data, .. }) = (&self.codec, durability) {
            let data_end = usize::from(data) * shard_bytes;
            shards[sealed_bytes..data_end].fill(0);
            codec.encode(shards, shard_bytes)?;
        }

        let template = FragmentHeader {
            locator,
            durability,
            hash,
            index: 0,
            epoch: system_key.epoch(),
            payload_bytes: shard_bytes as u32,
            chunk_bytes: chunk_bytes as u32,
        };
        self.headers.clear();
        let replica_crc = match durability {
            Durability::Replicas(_) => Some(crc32c::crc32c(shards)),
            Durability::ErasureCoded { .. } => None,
        };
        for index in 0..fragments {
            let payload_crc =
                replica_crc.unwrap_or_else(|| crc32c::crc32c(&shards[index * shard_bytes..(index + 1) * shard_bytes]));
            let header = FragmentHeader {
                index: index as u8,
                ..template
            };
            self.headers.push(header.encode_with_payload_crc(payload_crc));
        }
        Ok(EncodedChunk {
            locator,
            wrapped_key,
            epoch: system_key.epoch(),
            chunk_bytes: chunk_bytes as u32,
            durability,
            shards: &self.shards[..used_bytes],
            shard_bytes,
            headers: &self.headers,
        })
    }

    /// Chunks and encodes an in-memory object, calling `sink` with each chunk in order.
    /// Returns the number of chunks.
    pub fn write_slice<F>(
        &mut self,
        data: &[u8],
        tenant: &TenantKeys,
        system_key: &SystemKey,
        mut sink: F,
    ) -> Result<u64, Error>
    where
        F: FnMut(&EncodedChunk<'_>) -> Result<(), Error>,
    {
        let params = self.config.chunking;
        let mut chunks = 0;
        for chunk in chunk_slice(&params, data)? {
            let encoded = self.encode_chunk(chunk, tenant, system_key)?;
            sink(&encoded)?;
            chunks += 1;
        }
        Ok(chunks)
    }

    /// Chunks and encodes a stream with `chunker` (bounded memory), calling `sink` with each
    /// chunk in order. Returns the number of chunks. The chunker must have been made with
    /// this pipeline's chunking parameters; it is reset first.
    pub fn write_stream<R, F>(
        &mut self,
        chunker: &mut StreamChunker,
        reader: &mut R,
        tenant: &TenantKeys,
        system_key: &SystemKey,
        mut sink: F,
    ) -> Result<u64, Error>
    where
        R: Read,
        F: FnMut(&EncodedChunk<'_>) -> Result<(), Error>,
    {
        chunker.reset();
        let mut chunks = 0;
        while let Some(chunk) = chunker.next_chunk_from(reader)? {
            let encoded = self.encode_chunk(chunk, tenant, system_key)?;
            sink(&encoded)?;
            chunks += 1;
        }
        Ok(chunks)
    }
}
