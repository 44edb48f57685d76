//! The chunk pipeline: what turns file bytes into encrypted, erasure-coded fragments and
//! back.
//!
//! It owns content-defined chunking ([`chunking`], FastCDC v2020), chunk identity and
//! convergent envelope encryption ([`crypto`]: content key `K = H(plaintext)` or a keyed
//! MAC, locator `L = H(domain ‖ K)`, `DEK = HKDF(system_key[epoch], K)`, AES-256-GCM,
//! `K` wrapped under the tenant KEK), erasure coding and replication ([`erasure`]),
//! the self-describing fragment format ([`fragment`]), the write and read paths
//! ([`WritePipeline`], [`ReadPipeline`]) and the repair and scrub executors ([`repair`])
//! that run the plans of `kiseki-placement` against a [`repair::FragmentIo`].
//!
//! Invariants:
//! - **I-K1**: plaintext exists only on the caller's side of this crate: the write path
//!   hands out sealed fragments only, repair and scrub work on ciphertext and never hold a
//!   key.
//! - **I-K2**: decrypting a chunk needs `K`, which only the tenant KEK unwraps; system keys
//!   alone derive nothing.
//! - **I-C1**: a fragment is immutable: its header and payload are covered by one CRC32C
//!   and bound to its locator; any change is detected and the fragment treated as missing.
//! - A read never returns data that is not the written plaintext: fragments are verified
//!   before use, the AEAD tag after decryption, and `H(plaintext) == K` last.
//!
//! There is no runtime, no device code and no I/O here besides what the caller hands in
//! (buffers, a `Read`, a `FragmentIo`): clients, gateways and storage-node cores link it.
//! Every type is owned by one thread at a time (buffers are reused, never shared), so each
//! core or client thread keeps its own pipelines.
#![forbid(unsafe_code)]

pub mod chunking;
pub mod crypto;
pub mod erasure;
mod error;
pub mod fragment;
pub mod inline;
mod read;
pub mod repair;
mod write;

pub use chunking::{ChunkingParams, StreamChunker};
pub use crypto::{
    content_key, locator_of, ChunkCipher, ContentKey, DedupScope, HashAlgorithm, SystemKey, SystemKeyring, TenantKek,
    TenantKeys, TenantSecret, WrappedKey,
};
pub use erasure::{Codec, Durability};
pub use error::Error;
pub use fragment::{FragmentHeader, FragmentSet, FRAGMENT_HEADER_BYTES};
pub use inline::{open_inline, seal_inline, INLINE_SEAL_OVERHEAD_BYTES};
pub use kiseki_placement::Locator;
pub use read::{ChunkRef, ReadOutcome, ReadPipeline};
pub use write::{EncodedChunk, FragmentRef, WriteConfig, WritePipeline};
