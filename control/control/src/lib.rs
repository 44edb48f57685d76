//! The Kiseki control plane (`kiseki-control`): tenants, their namespaces (durability,
//! chunk size, dedup, quota), S3 access keys and maintenance (a read-only cluster),
//! served over mutual TLS 1.3 (design §10).
//!
//! **What it owns.** The records of tenants, namespaces and access keys, kept as files of
//! a system namespace in the cluster itself ([`records`]; the last shard of the cluster
//! map), encrypted by the native client under the system tenant's KEK like any tenant's
//! data; the assignment of namespaces to shards (one namespace per shard, claimed
//! exclusively); quotas, set in each namespace's shard by a `SetQuota` delta and enforced
//! there on every write; maintenance, a `SetReadOnly` delta on every shard; crypto-shred
//! through the key server; the RPC service ([`ControlService`]) that authorizes each
//! request by the caller's certificate; and the [`keeper`], which repairs degraded chunks
//! when nodes come back and collects unreferenced fragments, in the background.
//!
//! **Invariants.**
//! - I-Q1: a namespace's quota is in force in its shard before the namespace is handed
//!   out, and a delta that would raise usage past it is refused whole (EDQUOT; enforced
//!   by the namespace state machine).
//! - I-Q2: one shard holds at most one namespace: shards are claimed by an exclusive
//!   create in the system namespace before they are used.
//! - I-M1: maintenance is a `SetReadOnly` delta on every shard; while it holds, every
//!   other change is refused (EROFS) by the namespace state machine.
//! - Every mutation is written to the system namespace before it is answered.
//!
//! **Where it runs.** A tokio process of its own, one per cluster, off every data path:
//! clients ask it once when they open a namespace. Its mutations are serialized by one
//! async mutex; its reads are served from the records it loaded at start. The keeper is
//! one more task of it, with a client of its own.
#![forbid(unsafe_code)]

pub mod keeper;
mod plane;
pub mod records;
mod service;

pub use plane::{now_unix_s, ControlPlane, ACCESS_KEYS_PER_TENANT_MAX, NAMESPACES_PER_TENANT_MAX, TENANTS_MAX};
pub use service::{ControlCounters, ControlService};

use kiseki_client::ClientError;
use kiseki_namespace::NamespaceError;
use kiseki_net::{ErrorCode, RemoteError};

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such tenant, namespace or access key.
    #[error("no such {0}")]
    NotFound(String),
    /// The tenant or namespace exists already.
    #[error("{0} exists already")]
    AlreadyExists(String),
    /// The tenant or namespace still holds something.
    #[error("not empty: {0}")]
    NotEmpty(String),
    /// The tenant was crypto-shredded: nothing of it can be opened again.
    #[error("tenant {0} was crypto-shredded; its data cannot be read")]
    Shredded(String),
    /// A name, durability or size that cannot work.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A bound is reached (shards, namespaces, keys).
    #[error("limit reached: {0}")]
    Limit(String),
    /// A record of the system namespace does not parse.
    #[error("record {path} is corrupt: {reason}")]
    Corrupt {
        /// The record.
        path: String,
        /// Why.
        reason: String,
    },
    /// The cluster, the key server or the system namespace failed.
    #[error("{0}")]
    Client(#[from] ClientError),
}

impl From<ControlError> for RemoteError {
    fn from(error: ControlError) -> RemoteError {
        let code = match &error {
            ControlError::NotFound(_) => ErrorCode::NotFound,
            ControlError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            ControlError::NotEmpty(_) | ControlError::Shredded(_) => ErrorCode::Precondition,
            ControlError::Invalid(_) => ErrorCode::BadRequest,
            ControlError::Limit(_) => ErrorCode::NoSpace,
            ControlError::Client(ClientError::Namespace(NamespaceError::ReadOnly)) => ErrorCode::Precondition,
            ControlError::Client(ClientError::Denied(_)) => ErrorCode::PermissionDenied,
            ControlError::Client(ClientError::Unavailable(_)) => ErrorCode::Busy,
            _ => ErrorCode::Internal,
        };
        RemoteError::new(code, error.to_string())
    }
}
