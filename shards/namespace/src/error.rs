//! The namespace's error type and its errno mapping.

use serde::{Deserialize, Serialize};

/// Linux errno values, hard-coded so the mapping is the same on every platform that runs a
/// replica or a gateway (tests compare them with the `libc` constants on Linux).
mod errno {
    pub const EPERM: i32 = 1;
    pub const EACCES: i32 = 13;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const E2BIG: i32 = 7;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EMLINK: i32 = 31;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const ESTALE: i32 = 116;
    pub const EDQUOT: i32 = 122;
}

/// A bound of [`NamespaceConfig`](crate::NamespaceConfig) (or a fixed protocol bound) that a
/// delta would break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// `inodes_max` live inodes, or the inode number range is used up.
    Inodes,
    /// `dentries_max` directory entries in the whole state.
    Dentries,
    /// `hard_links_max` names for one file, or a directory's link count would overflow.
    Links,
    /// `extents_per_file_max` extents in one file.
    Extents,
    /// `delta_extents_max` extents carried by one delta.
    DeltaExtents,
    /// `file_bytes_max`: a file would grow past it.
    FileSize,
    /// `inline_bytes_max`: inline data would grow past it.
    InlineBytes,
    /// `wrapped_key_bytes_max`: an extent's wrapped key is longer.
    WrappedKey,
    /// An xattr name longer than 255 bytes.
    XattrName,
    /// An xattr value longer than `xattr_value_bytes_max`.
    XattrValue,
    /// `xattrs_per_inode_max` xattrs on one inode.
    Xattrs,
    /// A symlink target longer than `symlink_target_bytes_max`.
    SymlinkTarget,
    /// `multipart_uploads_max` uploads in progress.
    MultipartUploads,
    /// `object_meta_bytes_max`: object metadata (content type, ETag, metadata maps) is larger.
    ObjectMeta,
    /// A per-directory or global counter (readdir cookies, upload ids) would overflow.
    Counter,
}

/// Errors of the namespace: why a delta was refused or a read failed. Bad input (unknown
/// inodes, invalid names, malformed encodings) is always one of these, never a panic.
///
/// A refused delta changes nothing but `last_applied_index`; [`NamespaceError::errno`] maps
/// each variant to the Linux errno a FUSE or NFS front end answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NamespaceError {
    /// The inode, directory entry, upload or part does not exist (ENOENT).
    #[error("not found")]
    NotFound,
    /// The name already exists (exclusive create, link, rename with no-replace) (EEXIST).
    #[error("already exists")]
    AlreadyExists,
    /// The directory is not empty (rmdir, rename over a directory) (ENOTEMPTY).
    #[error("directory not empty")]
    NotEmpty,
    /// A directory was expected (a parent, rmdir, rename of a directory over a file) (ENOTDIR).
    #[error("not a directory")]
    NotDirectory,
    /// The operation does not apply to a directory (unlink, write, rename of a file over a
    /// directory, object put over a directory) (EISDIR).
    #[error("is a directory")]
    IsDirectory,
    /// The operation crosses namespaces (EXDEV).
    #[error("cross-namespace link or rename")]
    CrossDevice,
    /// The name is empty, `.` or `..`, or holds `/` or NUL (EINVAL).
    #[error("invalid name")]
    InvalidName,
    /// The name is longer than 255 bytes (ENAMETOOLONG).
    #[error("name too long")]
    NameTooLong,
    /// The operation is not permitted, such as a hard link to a directory (EPERM).
    #[error("operation not permitted")]
    NotPermitted,
    /// An argument is out of range or inconsistent (EINVAL).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// A precondition of the delta does not hold: expected generation, setattr guard,
    /// object condition (ESTALE: the caller's view was stale; refetch and retry).
    #[error("precondition failed")]
    PreconditionFailed,
    /// A bound would be exceeded (errno depends on the bound: EFBIG, ENOSPC, EMLINK, E2BIG,
    /// ERANGE, ENAMETOOLONG).
    #[error("limit exceeded: {limit:?}")]
    LimitExceeded {
        /// The bound.
        limit: Limit,
    },
    /// The extended attribute does not exist, or replace-only set of a missing one (ENODATA).
    #[error("no such extended attribute")]
    NoData,
    /// A multipart complete names a part that was not uploaded or whose ETag differs (EINVAL).
    #[error("invalid part {part_number}")]
    InvalidPart {
        /// The part.
        part_number: u32,
    },
    /// The events asked for were trimmed from the watch log (ERANGE); resubscribe from
    /// `oldest_available` after a full resync.
    #[error("watch events from {requested} were trimmed; oldest available is {oldest_available}")]
    WatchGap {
        /// The first sequence asked for.
        requested: u64,
        /// The oldest sequence whose events are all still held.
        oldest_available: u64,
    },
    /// `apply` was called with an index not above the last applied one; nothing changed (EINVAL).
    #[error("index {index} is not above the last applied index {last_applied_index}")]
    IndexOutOfOrder {
        /// The index given.
        index: u64,
        /// The state's last applied index.
        last_applied_index: u64,
    },
    /// An encoding could not be decoded, or a snapshot breaks an invariant (EIO).
    #[error("corrupt: {reason}")]
    Corrupt {
        /// What failed.
        reason: String,
    },
    // New variants go last: refusals are kept in snapshots (deduplicated outcomes).
    /// The delta would raise the namespace's usage past its quota (EDQUOT).
    #[error("quota exceeded: {resource:?} (usage {usage}, limit {limit})")]
    QuotaExceeded {
        /// What ran out.
        resource: QuotaResource,
        /// Usage after the delta would have applied.
        usage: u64,
        /// The limit.
        limit: u64,
    },
    /// The namespace is in maintenance (read-only) (EROFS).
    #[error("read-only: the cluster is in maintenance")]
    ReadOnly,
    /// The caller of a [`Delta::AsCaller`](crate::Delta::AsCaller) lacks the permission
    /// bits it needs on the directory (EACCES).
    #[error("permission denied")]
    AccessDenied,
}

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaResource {
    /// Bytes stored.
    Bytes,
    /// Inodes.
    Files,
}

impl NamespaceError {
    /// The Linux errno for this error, as a FUSE or NFS front end answers it.
    pub fn errno(&self) -> i32 {
        match self {
            NamespaceError::NotFound => errno::ENOENT,
            NamespaceError::AlreadyExists => errno::EEXIST,
            NamespaceError::NotEmpty => errno::ENOTEMPTY,
            NamespaceError::NotDirectory => errno::ENOTDIR,
            NamespaceError::IsDirectory => errno::EISDIR,
            NamespaceError::CrossDevice => errno::EXDEV,
            NamespaceError::InvalidName => errno::EINVAL,
            NamespaceError::NameTooLong => errno::ENAMETOOLONG,
            NamespaceError::NotPermitted => errno::EPERM,
            NamespaceError::InvalidArgument { .. } => errno::EINVAL,
            NamespaceError::PreconditionFailed => errno::ESTALE,
            NamespaceError::LimitExceeded { limit } => match limit {
                Limit::FileSize => errno::EFBIG,
                Limit::Links => errno::EMLINK,
                Limit::XattrValue => errno::E2BIG,
                Limit::XattrName => errno::ERANGE,
                Limit::SymlinkTarget => errno::ENAMETOOLONG,
                Limit::WrappedKey | Limit::DeltaExtents | Limit::InlineBytes | Limit::ObjectMeta => errno::EINVAL,
                Limit::Inodes
                | Limit::Dentries
                | Limit::Extents
                | Limit::Xattrs
                | Limit::MultipartUploads
                | Limit::Counter => errno::ENOSPC,
            },
            NamespaceError::NoData => errno::ENODATA,
            NamespaceError::InvalidPart { .. } => errno::EINVAL,
            NamespaceError::WatchGap { .. } => errno::ERANGE,
            NamespaceError::IndexOutOfOrder { .. } => errno::EINVAL,
            NamespaceError::Corrupt { .. } => errno::EIO,
            NamespaceError::QuotaExceeded { .. } => errno::EDQUOT,
            NamespaceError::ReadOnly => errno::EROFS,
            NamespaceError::AccessDenied => errno::EACCES,
        }
    }

    /// Shorthand for [`NamespaceError::InvalidArgument`].
    pub(crate) fn invalid(reason: &str) -> Self {
        NamespaceError::InvalidArgument {
            reason: reason.to_owned(),
        }
    }

    /// Shorthand for [`NamespaceError::LimitExceeded`].
    pub(crate) fn limit(limit: Limit) -> Self {
        NamespaceError::LimitExceeded { limit }
    }

    /// Shorthand for [`NamespaceError::Corrupt`].
    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        NamespaceError::Corrupt { reason: reason.into() }
    }
}
