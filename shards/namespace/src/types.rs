//! Plain value types of the namespace: identifiers, times, attributes, extents and object
//! metadata. Nothing here refers to the state; deltas and reads carry these values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::NamespaceError;

/// Longest entry name, in bytes (as in Linux `NAME_MAX`).
pub const NAME_BYTES_MAX: usize = 255;
/// Longest extended attribute name, in bytes (as in Linux `XATTR_NAME_MAX`).
pub const XATTR_NAME_BYTES_MAX: usize = 255;
/// Highest permission bits a mode may carry (set-user-id, set-group-id, sticky, rwx × 3).
pub const MODE_PERMISSION_BITS_MAX: u32 = 0o7777;

/// The 32-byte locator of a chunk (its content-derived address in the fragment store).
pub type ChunkLocator = [u8; 32];

/// An inode number. Numbers are allocated by the state machine from a counter and never
/// reused, so an inode number names one file for the life of the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InodeId(pub u64);

impl InodeId {
    /// The root directory of the namespace.
    pub const ROOT: InodeId = InodeId(1);
}

/// The id of a namespace (an S3 bucket or a filesystem).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamespaceId(pub u64);

/// The id of a multipart upload, allocated by the state machine from a counter (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UploadId(pub u64);

/// A point in time: seconds since the Unix epoch and nanoseconds within the second. The
/// consensus leader stamps every time a delta sets; the state machine never reads a clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    pub seconds: i64,
    /// Nanoseconds within the second, below 1 000 000 000.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp; `nanos` must be below 10⁹ for a delta carrying it to apply.
    pub const fn new(seconds: i64, nanos: u32) -> Self {
        Timestamp { seconds, nanos }
    }

    pub(crate) fn validate(&self) -> Result<(), NamespaceError> {
        if self.nanos >= 1_000_000_000 {
            return Err(NamespaceError::invalid("timestamp nanos must be below 10^9"));
        }
        Ok(())
    }
}

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file (or an S3 object).
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe (FIFO); it holds no data here.
    Fifo,
    /// A Unix domain socket's name; it holds no data here.
    Socket,
    /// A character device node.
    CharDevice {
        /// The device number (`makedev(major, minor)`).
        rdev: u32,
    },
    /// A block device node.
    BlockDevice {
        /// The device number (`makedev(major, minor)`).
        rdev: u32,
    },
}

impl FileKind {
    /// A named pipe, socket or device node (made by `mknod`, holding no data).
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::Socket | FileKind::CharDevice { .. } | FileKind::BlockDevice { .. }
        )
    }
}

/// The attributes of an inode, as `getattr` returns them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// What the inode is.
    pub kind: FileKind,
    /// Permission bits (at most [`MODE_PERMISSION_BITS_MAX`]); the file type is `kind`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Logical size: a file's length, a symlink's target length; 0 for directories.
    pub size_bytes: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last change of the content (file data, directory entries).
    pub mtime: Timestamp,
    /// Last change of the inode (content, attributes, links, xattrs).
    pub ctime: Timestamp,
    /// Links: a file's or symlink's number of names; 2 + subdirectories for a directory.
    pub nlink: u32,
    /// Change counter: 1 at creation, incremented by every applied delta that changes the
    /// inode (content, attributes, links, xattrs). Preconditions compare against it.
    pub generation: u64,
}

/// The attributes a new inode starts with (its kind comes from the delta).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAttributes {
    /// Permission bits (at most [`MODE_PERMISSION_BITS_MAX`]).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Birth time: atime, mtime and ctime of the new inode, and mtime and ctime of its parent.
    pub time: Timestamp,
}

impl NewAttributes {
    pub(crate) fn validate(&self) -> Result<(), NamespaceError> {
        validate_mode(self.mode)?;
        self.time.validate()
    }
}

pub(crate) fn validate_mode(mode: u32) -> Result<(), NamespaceError> {
    if mode > MODE_PERMISSION_BITS_MAX {
        return Err(NamespaceError::invalid("mode holds bits beyond the permission bits"));
    }
    Ok(())
}

/// Bytes a seal may add to its plaintext: room for the client's sealed form (version,
/// salt and tag; 33 bytes today) and a later version of it.
pub const INLINE_SEAL_SLACK_BYTES: usize = 64;

/// A small file's data stored in its inode (design §5): sealed by the client under a
/// tenant key before it enters the log, opaque to the shard. File bytes
/// `[0, length_bytes)` are the first `length_bytes` bytes of the sealed plaintext; a
/// truncate lowers `length_bytes` and keeps the seal.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedInline {
    /// File bytes the seal covers (at least 1, at most the plaintext's length).
    pub length_bytes: u64,
    /// The sealed bytes.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedInline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedInline")
            .field("length_bytes", &self.length_bytes)
            .field("sealed_bytes", &self.sealed.len())
            .finish()
    }
}

/// A piece of a file stored in a chunk: `length_bytes` bytes of the chunk's plaintext from
/// `chunk_offset_bytes`. The wrapped key is opaque here (the client unwraps it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// The chunk holding the bytes.
    pub chunk_locator: ChunkLocator,
    /// The chunk's data key, wrapped (at most `wrapped_key_bytes_max` bytes).
    pub wrapped_key: Vec<u8>,
    /// Where in the chunk's plaintext the piece starts.
    pub chunk_offset_bytes: u64,
    /// Length of the piece (at least 1).
    pub length_bytes: u64,
}

impl Extent {
    /// The extent cut to `[skip, skip + length)` of itself.
    pub(crate) fn slice(&self, skip: u64, length: u64) -> Extent {
        debug_assert!(skip + length <= self.length_bytes);
        Extent {
            chunk_locator: self.chunk_locator,
            wrapped_key: self.wrapped_key.clone(),
            chunk_offset_bytes: self.chunk_offset_bytes + skip,
            length_bytes: length,
        }
    }
}

/// S3 object metadata kept with a file: opaque to the namespace apart from the size bound
/// and the ETag, which object conditions compare.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// `Content-Type`.
    pub content_type: String,
    /// The ETag as the gateway computed it (MD5 for a single put, the multipart form otherwise).
    pub etag: String,
    /// `x-amz-meta-*` user metadata.
    pub user_metadata: BTreeMap<String, String>,
    /// Other stored headers (`Content-Encoding`, `Cache-Control`, `Content-Disposition`, ...).
    pub system_metadata: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// Bytes the metadata counts against `object_meta_bytes_max`.
    pub fn size_bytes(&self) -> usize {
        let map_bytes =
            |map: &BTreeMap<String, String>| -> usize { map.iter().map(|(key, value)| key.len() + value.len()).sum() };
        self.content_type.len() + self.etag.len() + map_bytes(&self.user_metadata) + map_bytes(&self.system_metadata)
    }
}

/// Checks an entry name: 1 to 255 bytes, no `/`, no NUL, not `.` or `..`.
pub fn validate_name(name: &[u8]) -> Result<(), NamespaceError> {
    if name.len() > NAME_BYTES_MAX {
        return Err(NamespaceError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&byte| byte == b'/' || byte == 0) {
        return Err(NamespaceError::InvalidName);
    }
    Ok(())
}
