//! The Kiseki key server (`kiseki-keyserver`): system key epochs and tenants' key
//! material, kept encrypted at rest and served over mutual TLS 1.3 (design §5, §10).
//!
//! **What it owns.** The system keys by epoch (generated at initialization, a new epoch
//! per rotation; new chunks are sealed under the newest, every older epoch stays
//! readable), each tenant's key material made, opened and destroyed through a
//! [`KmsProvider`] ([`InternalProvider`] first), the state behind a [`KeyStore`]
//! ([`EncryptedFileStore`]: one file, AES-256-GCM under a master key), and the RPC
//! service ([`KeyService`]) that authorizes every request by the caller's certificate.
//! Nodes get no key material at all: they store ciphertext and never need it.
//!
//! **Invariants.**
//! - I-K5: every change (a new epoch, new or destroyed tenant keys) is durable in the
//!   store before it is answered or served, so a restart never forgets a key a client
//!   already sealed data under, nor brings back a destroyed one.
//! - I-K6: a tenant's key material reaches only that tenant's clients, the gateways and
//!   the operator, and nodes get no key material at all; once destroyed (crypto-shred)
//!   it is never served again, and the saved state no longer holds it.
//!
//! **Where it runs.** A tokio process of its own (one instance today; its state sits
//! behind [`KeyStore`] so a replicated store can take the file's place). Requests are
//! handled on tokio's threads; the state is behind one async mutex, off every data
//! path: clients fetch their keys once when they open a namespace.
#![forbid(unsafe_code)]

mod manager;
mod provider;
mod secret;
mod service;
mod state;
mod store;

use std::path::PathBuf;

pub use manager::{KeyManager, EPOCHS_MAX, TENANTS_MAX};
pub use provider::{InternalProvider, KmsProvider, TenantKeyMaterial};
pub use secret::{Secret32, SecretBytes, KEY_BYTES};
pub use service::{now_unix_s, KeyServerCounters, KeyService};
pub use state::{KeyState, SystemKeyRecord, TenantRecord, STATE_FORMAT_VERSION};
pub use store::{open_state, seal_state, EncryptedFileStore, KeyStore, MasterKey, MemoryStore};

/// Errors of the key server.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The master key file cannot be used.
    #[error("master key {path}: {reason}")]
    MasterKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The state file does not decrypt under the master key given.
    #[error("key state {path} does not open with this master key (a different key, or the file was altered)")]
    WrongMasterKey {
        /// The state file.
        path: PathBuf,
    },
    /// The state file is not a valid state.
    #[error("key state {path} is corrupt: {reason}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the state failed.
    #[error("key state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// There is no state yet.
    #[error("{store} holds no key state; run `kiseki-keyserver init` first")]
    NotInitialized {
        /// The store.
        store: String,
    },
    /// The tenant has no keys.
    #[error("no keys for tenant {0}")]
    NoTenant(String),
    /// The tenant's keys were destroyed.
    #[error("the keys of tenant {tenant} were destroyed (crypto-shred); its data cannot be read")]
    Destroyed {
        /// The tenant.
        tenant: String,
    },
    /// A request or setting that cannot work.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A cryptographic primitive failed.
    #[error("crypto: {0}")]
    Crypto(&'static str),
}
