//! The client's error type: one place where wire, namespace and pipeline errors become
//! what a caller (the CLI, a gateway, the FUSE mount) maps to its own codes.

use kiseki_namespace::NamespaceError;

/// Errors of the native client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The namespace refused the operation (ENOENT, EEXIST, ENOTEMPTY, ... inside).
    #[error("{0}")]
    Namespace(#[from] NamespaceError),
    /// A path or argument the client refuses before asking anyone (`..`, empty name, ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// No answer within the deadline after retries (a node or shard is unreachable).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A node refused for a reason the client cannot retry around.
    #[error("refused by {node}: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// Its reason.
        reason: String,
    },
    /// A device has no space left for a fragment.
    #[error("no space: {0}")]
    NoSpace(String),
    /// More fragments of a chunk are missing or corrupt than its durability tolerates,
    /// or a read failed verification: no data is returned.
    #[error("data unavailable: {0}")]
    DataUnavailable(String),
    /// Chunking, encryption or coding failed (including a key that cannot open a chunk).
    #[error("pipeline: {0}")]
    Pipeline(#[from] kiseki_pipeline::Error),
    /// Placement of a chunk's fragments failed (too few devices for the durability).
    #[error("placement: {0}")]
    Placement(#[from] kiseki_placement::PlacementError),
    /// The key file or key material is unusable.
    #[error("keys: {0}")]
    Keys(String),
    /// The wire failed in a way retries did not mend.
    #[error("net: {0}")]
    Net(#[from] kiseki_net::NetError),
    /// A map or message from a node is invalid.
    #[error("{0}")]
    Api(#[from] kiseki_api::ApiError),
    /// The key server or the control plane refused the caller (its certificate's role).
    #[error("permission denied by the {0}")]
    Denied(String),
    /// The key server or the control plane refused the request for another reason.
    #[error("{service}: {message}")]
    Service {
        /// Which service.
        service: &'static str,
        /// The typed code.
        code: kiseki_net::ErrorCode,
        /// Its reason.
        message: String,
    },
    /// Reading the caller's input or writing its output failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The namespace's error, when that is what it is.
    pub fn namespace(&self) -> Option<&NamespaceError> {
        match self {
            ClientError::Namespace(error) => Some(error),
            _ => None,
        }
    }
}
