//! The pipeline's error type.

use kiseki_placement::{Locator, PlacementError};

/// Errors of the chunk pipeline. Bad input (malformed fragments, out-of-range parameters,
/// short buffers) is always an error here, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of range (chunk sizes, k+m, empty chunk, ...).
    #[error("invalid parameters: {reason}")]
    InvalidParams {
        /// What is wrong.
        reason: String,
    },
    /// A fragment failed verification (truncated, wrong magic or version, checksum
    /// mismatch, header inconsistent with the chunk). Readers treat it as missing.
    #[error("corrupt fragment: {reason}")]
    Corrupt {
        /// What failed.
        reason: &'static str,
    },
    /// Fewer usable fragments than needed to reconstruct the chunk.
    #[error("chunk {locator}: {usable} usable fragments, {needed} needed ({corrupt} corrupt)")]
    TooManyLost {
        /// The chunk.
        locator: Locator,
        /// Fragments needed (k, or 1 for replicas).
        needed: usize,
        /// Fragments that passed verification.
        usable: usize,
        /// Fragments present but failing verification.
        corrupt: usize,
    },
    /// An AEAD, key-wrap or key-derivation operation failed (wrong key, tampered
    /// ciphertext or wrapped key).
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    /// The decrypted plaintext does not hash to its content key (convergent integrity).
    #[error("decrypted chunk does not match its content key")]
    ContentMismatch,
    /// The tenant KEK was destroyed (crypto-shred): its wrapped keys cannot be unwrapped.
    #[error("tenant key destroyed")]
    KeyDestroyed,
    /// No system key for this epoch in the keyring.
    #[error("no system key for epoch {epoch}")]
    UnknownEpoch {
        /// The epoch asked for.
        epoch: u32,
    },
    /// The caller's output buffer is too small.
    #[error("buffer too small: {needed} bytes needed, {available} given")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// Reading the caller's input or a fragment store failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Placement or repair planning rejected its input.
    #[error("placement: {0}")]
    Placement(#[from] PlacementError),
}

impl Error {
    pub(crate) fn invalid(reason: impl Into<String>) -> Error {
        Error::InvalidParams { reason: reason.into() }
    }
}
