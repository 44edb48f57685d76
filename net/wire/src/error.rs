//! The crate's error type and the typed codes carried by error answers.

use std::path::PathBuf;

/// Errors of the wire protocol, the RPC layer and the transports.
///
/// Bad input from the network (a malformed frame, a body that fails validation, a peer
/// that breaks the protocol) is always one of these, never a panic (I-W2).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The frame does not start with the protocol's magic bytes.
    #[error("bad frame magic {found:02x?}")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The frame names a protocol version this build does not speak.
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The frame's header announces more bytes than the connection accepts.
    #[error("frame of {frame_bytes} bytes exceeds the limit of {frame_bytes_max}")]
    FrameTooLarge {
        /// Header plus body, as announced.
        frame_bytes: u64,
        /// The limit.
        frame_bytes_max: usize,
    },
    /// A CRC32C did not match (`part` is `header` or `body`).
    #[error("bad {part} checksum")]
    BadChecksum {
        /// Which checksum failed.
        part: &'static str,
    },
    /// The stream ended inside a frame.
    #[error("truncated frame: {bytes_have} of {bytes_needed} bytes")]
    Truncated {
        /// Bytes of the frame received.
        bytes_have: usize,
        /// Bytes the frame needs (the header alone while it is incomplete).
        bytes_needed: usize,
    },
    /// The frame kind byte is not one this protocol defines.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The byte found.
        kind: u8,
    },
    /// A header field that must be zero or consistent is not.
    #[error("bad frame header: {reason}")]
    BadHeader {
        /// What is wrong.
        reason: &'static str,
    },
    /// A body failed rkyv validation (I-W1) or does not fit the expected type.
    #[error("bad message body: {reason}")]
    BadBody {
        /// What the validator reported.
        reason: String,
    },
    /// Serializing a body failed.
    #[error("cannot encode message body: {reason}")]
    Encode {
        /// What the serializer reported.
        reason: String,
    },
    /// A bounded resource is full; retry later.
    #[error("busy: {what} at their limit of {limit}")]
    Busy {
        /// Which resource.
        what: &'static str,
        /// Its configured limit.
        limit: usize,
    },
    /// No answer within the deadline.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The deadline.
        after_ms: u64,
    },
    /// The peer's handler answered with an error.
    #[error("remote error {code:?}: {message}")]
    Remote {
        /// The typed code.
        code: ErrorCode,
        /// The peer's message.
        message: String,
    },
    /// The peer closed the connection with a GoAway frame.
    #[error("peer went away ({code:?}): {message}")]
    GoAway {
        /// Why.
        code: ErrorCode,
        /// The peer's message.
        message: String,
    },
    /// The peer broke the protocol (an unexpected frame kind, for example).
    #[error("protocol violation: {reason}")]
    Protocol {
        /// What happened.
        reason: String,
    },
    /// The connection is closed; the reason is the error that closed it.
    #[error("connection closed: {reason}")]
    Closed {
        /// Why it closed.
        reason: String,
    },
    /// The TLS layer refused the peer or failed.
    #[error("TLS: {reason}")]
    Tls {
        /// What rustls reported.
        reason: String,
    },
    /// A certificate or key file could not be read, parsed or generated.
    #[error("certificate {path}: {reason}")]
    Certificate {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The runtime refused (no executor, or the task limit is reached).
    #[cfg(feature = "runtime")]
    #[error("runtime: {0}")]
    Runtime(#[from] kiseki_runtime::RuntimeError),
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl NetError {
    /// Whether the same call may succeed if retried (possibly on a new connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            NetError::Busy { .. } | NetError::Timeout { .. } | NetError::Closed { .. } | NetError::Io(_) => true,
            NetError::Remote { code, .. } | NetError::GoAway { code, .. } => code.is_retryable(),
            _ => false,
        }
    }

    /// The code an error answer carries for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            NetError::BadMagic { .. }
            | NetError::UnsupportedVersion { .. }
            | NetError::FrameTooLarge { .. }
            | NetError::BadChecksum { .. }
            | NetError::Truncated { .. }
            | NetError::UnknownKind { .. }
            | NetError::BadHeader { .. } => ErrorCode::BadFrame,
            NetError::BadBody { .. } => ErrorCode::BadRequest,
            NetError::Protocol { .. } => ErrorCode::ProtocolViolation,
            NetError::Busy { .. } => ErrorCode::Busy,
            #[cfg(feature = "runtime")]
            NetError::Runtime(_) => ErrorCode::Busy,
            NetError::Timeout { .. } => ErrorCode::Timeout,
            NetError::Remote { code, .. } | NetError::GoAway { code, .. } => *code,
            NetError::Closed { .. } => ErrorCode::ShuttingDown,
            _ => ErrorCode::Internal,
        }
    }

    pub(crate) fn closed(reason: impl Into<String>) -> NetError {
        NetError::Closed { reason: reason.into() }
    }
}

/// The typed code of an error answer (ErrorResponse and GoAway frames), a `u16` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The handler failed for a reason of its own.
    Internal,
    /// The request body is malformed or fails validation.
    BadRequest,
    /// No handler for the message type.
    UnknownMethod,
    /// Overloaded: the in-flight window or a queue is full. Retryable.
    Busy,
    /// The handler ran out of time. Retryable.
    Timeout,
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A precondition (generation, exclusive create) failed.
    Precondition,
    /// Out of space.
    NoSpace,
    /// The peer is shutting down. Retryable elsewhere.
    ShuttingDown,
    /// A malformed frame (sent with GoAway before the connection closes).
    BadFrame,
    /// A well-formed frame that breaks the protocol (GoAway).
    ProtocolViolation,
    /// A code this build does not know (from a newer peer).
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_wire(self) -> u16 {
        match self {
            ErrorCode::Internal => 1,
            ErrorCode::BadRequest => 2,
            ErrorCode::UnknownMethod => 3,
            ErrorCode::Busy => 4,
            ErrorCode::Timeout => 5,
            ErrorCode::NotFound => 6,
            ErrorCode::AlreadyExists => 7,
            ErrorCode::PermissionDenied => 8,
            ErrorCode::Precondition => 9,
            ErrorCode::NoSpace => 10,
            ErrorCode::ShuttingDown => 11,
            ErrorCode::BadFrame => 12,
            ErrorCode::ProtocolViolation => 13,
            ErrorCode::Other(value) => value,
        }
    }

    /// The code for a wire value (unknown values are kept as `Other`).
    pub fn from_wire(value: u16) -> ErrorCode {
        match value {
            1 => ErrorCode::Internal,
            2 => ErrorCode::BadRequest,
            3 => ErrorCode::UnknownMethod,
            4 => ErrorCode::Busy,
            5 => ErrorCode::Timeout,
            6 => ErrorCode::NotFound,
            7 => ErrorCode::AlreadyExists,
            8 => ErrorCode::PermissionDenied,
            9 => ErrorCode::Precondition,
            10 => ErrorCode::NoSpace,
            11 => ErrorCode::ShuttingDown,
            12 => ErrorCode::BadFrame,
            13 => ErrorCode::ProtocolViolation,
            other => ErrorCode::Other(other),
        }
    }

    /// Whether a request answered with this code may succeed when retried.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Busy | ErrorCode::Timeout | ErrorCode::ShuttingDown)
    }
}

/// The error a [`crate::Service`] handler returns; the client sees it as
/// [`NetError::Remote`] with the same code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RemoteError {
    /// The typed code.
    pub code: ErrorCode,
    /// A message for the caller's logs.
    pub message: String,
}

impl RemoteError {
    /// An error answer with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RemoteError {
        RemoteError {
            code,
            message: message.into(),
        }
    }
}

impl From<NetError> for RemoteError {
    fn from(error: NetError) -> RemoteError {
        RemoteError::new(error.code(), error.to_string())
    }
}
