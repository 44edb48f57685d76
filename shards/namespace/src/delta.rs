//! Deltas: the changes the consensus log carries. Each carries its preconditions and every
//! time it sets (stamped by the leader); new inode and upload ids are allocated by the state
//! machine, never chosen by the caller.

use serde::{Deserialize, Serialize};

use crate::error::NamespaceError;
use crate::types::{
    Extent, FileKind, InodeId, NamespaceId, NewAttributes, ObjectMeta, SealedInline, Timestamp, UploadId,
};

/// One change of the namespace. [`NamespaceState::apply`](crate::NamespaceState::apply)
/// applies it whole or refuses it with a typed error and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delta {
    /// Changes nothing; the consensus layer commits it as a read barrier.
    Noop,
    /// Creates a regular file. Without `exclusive`, an existing file of that name is returned
    /// unchanged (`open(O_CREAT)`); with it, an existing name is `AlreadyExists` (`O_EXCL`).
    Create {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
        /// Mode, owner and birth time.
        attributes: NewAttributes,
        /// Refuse an existing name.
        exclusive: bool,
    },
    /// Creates a directory.
    Mkdir {
        /// The directory holding the new one.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
        /// Mode, owner and birth time.
        attributes: NewAttributes,
    },
    /// Creates a symbolic link.
    Symlink {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
        /// Where the link points (1 to `symlink_target_bytes_max` bytes, no NUL).
        target: Vec<u8>,
        /// Mode, owner and birth time.
        attributes: NewAttributes,
    },
    /// Adds a name (hard link) for an existing file or symlink.
    Link {
        /// The namespace the caller resolved `inode` in; another than this state's is EXDEV.
        source_namespace: NamespaceId,
        /// The file to link.
        inode: InodeId,
        /// The directory of the new name.
        parent: InodeId,
        /// The new name.
        name: Vec<u8>,
        /// Change time of the inode and the directory.
        ctime: Timestamp,
    },
    /// Removes a name of a file or symlink; the inode goes with its last name.
    Unlink {
        /// The directory.
        parent: InodeId,
        /// The name.
        name: Vec<u8>,
        /// Change time of the directory (and of the inode if it keeps other names).
        ctime: Timestamp,
    },
    /// Removes an empty directory.
    Rmdir {
        /// The directory holding it.
        parent: InodeId,
        /// Its name.
        name: Vec<u8>,
        /// Change time of the parent.
        ctime: Timestamp,
    },
    /// Renames an entry, as `renameat2(2)`.
    Rename {
        /// The namespace the caller resolved the source in; another than this state's is EXDEV.
        source_namespace: NamespaceId,
        /// The source directory.
        from_parent: InodeId,
        /// The source name.
        from_name: Vec<u8>,
        /// The target directory.
        to_parent: InodeId,
        /// The target name.
        to_name: Vec<u8>,
        /// No-replace and exchange.
        flags: RenameFlags,
        /// Change time of both directories and the moved inodes.
        ctime: Timestamp,
    },
    /// Points `[offset_bytes, offset_bytes + Σ length)` of a file at the given extents, laid
    /// end to end; whatever was there before is cut away (existing extents are split at the
    /// boundaries). The file grows to at least `size_bytes`, which must be at least the end
    /// of the written range. Inline bytes the range covers are dropped; a range that covers
    /// inline bytes must reach at least to their end (else `InvalidArgument`: the writer
    /// rewrites them into its chunk).
    WriteExtents {
        /// The file.
        inode: InodeId,
        /// Where the first extent goes.
        offset_bytes: u64,
        /// The pieces, in file order (each at least one byte).
        extents: Vec<Extent>,
        /// File size after the write, at least (never shrinks the file).
        size_bytes: u64,
        /// Modification (and change) time.
        mtime: Timestamp,
        /// Refuse with `PreconditionFailed` unless the file's generation is this.
        expected_generation: Option<u64>,
    },
    /// Replaces a small file's inline bytes with `data` (sealed by the writer, who merges
    /// what it changes into what was there): file bytes `[0, data.length_bytes)` come from
    /// it afterwards, and inline bytes it no longer covers read as zeros. The range must
    /// end within `inline_bytes_max`, the seal be at most `INLINE_SEAL_SLACK_BYTES` longer,
    /// and no extent may start below its end. The file grows to at least its end.
    WriteInline {
        /// The file.
        inode: InodeId,
        /// The sealed bytes.
        data: SealedInline,
        /// Modification (and change) time.
        mtime: Timestamp,
        /// Refuse with `PreconditionFailed` unless the file's generation is this.
        expected_generation: Option<u64>,
    },
    /// Sets a file's size: cuts extents and inline bytes beyond it, or extends with a hole.
    Truncate {
        /// The file.
        inode: InodeId,
        /// The new size.
        size_bytes: u64,
        /// Modification (and change) time.
        mtime: Timestamp,
        /// Refuse with `PreconditionFailed` unless the file's generation is this.
        expected_generation: Option<u64>,
    },
    /// Changes attributes (`chmod`, `chown`, `utimens`, `truncate` through setattr).
    SetAttr {
        /// The inode.
        inode: InodeId,
        /// What to change.
        changes: AttrChanges,
        /// Change time.
        ctime: Timestamp,
        /// Refuse with `PreconditionFailed` unless the inode matches (NFSv3 guard).
        guard: Option<SetAttrGuard>,
    },
    /// Sets an extended attribute.
    SetXattr {
        /// The inode.
        inode: InodeId,
        /// The attribute name (1 to 255 bytes).
        name: Vec<u8>,
        /// The value (at most `xattr_value_bytes_max` bytes).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Create-only, replace-only or either.
        mode: XattrSetMode,
        /// Change time.
        ctime: Timestamp,
    },
    /// Removes an extended attribute (`NoData` if missing).
    RemoveXattr {
        /// The inode.
        inode: InodeId,
        /// The attribute name.
        name: Vec<u8>,
        /// Change time.
        ctime: Timestamp,
    },
    /// Starts a multipart upload of an object `name` in `parent`; the id comes back in
    /// [`Applied::upload_id`](crate::Applied::upload_id).
    MultipartBegin {
        /// The directory the object will be created in.
        parent: InodeId,
        /// The object's entry name.
        name: Vec<u8>,
        /// Metadata for the object (its ETag is set at completion).
        meta: ObjectMeta,
        /// When the upload started.
        initiated: Timestamp,
    },
    /// Stores (or replaces) one part of an upload; its size is the sum of its extents.
    MultipartPart {
        /// The upload.
        upload_id: UploadId,
        /// The part number, 1 to `multipart_part_number_max`.
        part_number: u32,
        /// The part's ETag.
        etag: String,
        /// The part's data, end to end.
        extents: Vec<Extent>,
    },
    /// Completes an upload: the listed parts, in ascending order, become the object.
    MultipartComplete {
        /// The upload.
        upload_id: UploadId,
        /// The parts to keep, ascending; parts not listed are dropped.
        parts: Vec<CompletedPart>,
        /// The object's ETag (multipart form).
        etag: String,
        /// Mode, owner and time of the object.
        attributes: NewAttributes,
        /// Condition on the entry the object replaces.
        condition: ObjectCondition,
    },
    /// Aborts an upload and drops its parts.
    MultipartAbort {
        /// The upload.
        upload_id: UploadId,
    },
    /// Creates or atomically replaces an object: a new file inode takes the name; a previous
    /// file or symlink of that name loses it (as a rename over it would).
    ObjectPut {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
        /// The data.
        content: ObjectContent,
        /// S3 metadata.
        meta: ObjectMeta,
        /// Mode, owner and time.
        attributes: NewAttributes,
        /// Condition on the entry being replaced.
        condition: ObjectCondition,
    },
    /// Deletes an object (a file or symlink name).
    ObjectDelete {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
        /// Condition on the entry (`IfAbsent` is `InvalidArgument` here).
        condition: ObjectCondition,
        /// Change time of the directory.
        ctime: Timestamp,
    },
    /// Creates a named pipe, socket or device node (`mknod(2)`); another kind is
    /// `InvalidArgument`.
    Mknod {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
        /// What to create ([`FileKind::is_special`]).
        kind: FileKind,
        /// Mode, owner and birth time.
        attributes: NewAttributes,
    },
    // New variants go last: a delta's variant index is its tag in logs and snapshots.
    /// Appends extents at the end of a file, wherever the end is when the delta applies
    /// (`O_APPEND`: appends from several writers never overwrite each other); the file
    /// grows by their length. The outcome's attributes give the new size, so the
    /// appended range is `[size - Σ length, size)`.
    AppendExtents {
        /// The file.
        inode: InodeId,
        /// The pieces, in file order (each at least one byte).
        extents: Vec<Extent>,
        /// Modification (and change) time.
        mtime: Timestamp,
    },
    /// Sets the namespace's quota (the control plane proposes it); `None` lifts a limit.
    /// Deltas that would raise usage past a limit are refused `QuotaExceeded` from the
    /// next index on; usage already above a lowered limit stays and may only shrink.
    SetQuota {
        /// Bytes stored (extents, inline data, multipart parts) at most.
        bytes_max: Option<u64>,
        /// Inodes (the root not counted) at most.
        files_max: Option<u64>,
    },
    /// Turns maintenance on or off: while on, every delta but this one and `Noop` is
    /// refused `ReadOnly`.
    SetReadOnly {
        /// Whether changes are refused.
        read_only: bool,
    },
    /// Applies `delta` only if `caller` has every bit of `mask` on `directory` when the
    /// delta applies: the permission check of a gateway that answers for many users (NFS),
    /// made atomically with the change instead of on attributes read before it. Refused
    /// `NotFound`, `NotDirectory` or `AccessDenied`; the inner delta may not be another
    /// `AsCaller` (`InvalidArgument`).
    AsCaller {
        /// Who asks, after the gateway's squashing.
        caller: CallerIds,
        /// The directory whose mode bits are checked.
        directory: InodeId,
        /// `MODE_READ`, `MODE_WRITE`, `MODE_EXECUTE` (search): every bit must be granted.
        mask: u32,
        /// The change.
        delta: Box<Delta>,
    },
}

/// A caller's user and groups, for [`Delta::AsCaller`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerIds {
    /// User (0: root, which passes every check but search on a non-directory).
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub gids: Vec<u32>,
}

impl CallerIds {
    /// Whether the mode bits of `attributes` grant this caller every bit of `mask`
    /// ([`mode_grants`]).
    pub fn may(&self, attributes: &crate::Attributes, mask: u32) -> bool {
        mode_grants(self.uid, self.gid, &self.gids, attributes, mask)
    }
}

/// Read permission, in a [`mode_grants`] mask.
pub const MODE_READ: u32 = 4;
/// Write permission.
pub const MODE_WRITE: u32 = 2;
/// Execute permission (search, for directories).
pub const MODE_EXECUTE: u32 = 1;

/// Whether the mode bits of `attributes` grant every bit of `mask` (`MODE_READ`,
/// `MODE_WRITE`, `MODE_EXECUTE`) to user `uid` of groups `gid` and `gids`: the owner's bits if
/// it owns the inode, else the group's if it is in the inode's group, else the others';
/// root passes all but execute on an inode that is not a directory and has no execute
/// bit — the kernel's rule for a local file system.
pub fn mode_grants(uid: u32, gid: u32, gids: &[u32], attributes: &crate::Attributes, mask: u32) -> bool {
    if uid == 0 {
        let executable = attributes.kind == FileKind::Directory || attributes.mode & 0o111 != 0;
        return mask & MODE_EXECUTE == 0 || executable;
    }
    let bits = if uid == attributes.uid {
        attributes.mode >> 6
    } else if gid == attributes.gid || gids.contains(&attributes.gid) {
        attributes.mode >> 3
    } else {
        attributes.mode
    };
    bits & mask & 0o7 == mask & 0o7
}

/// Flags of a rename (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`; both at once is `InvalidArgument`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameFlags {
    /// Refuse with `AlreadyExists` if the target exists.
    pub no_replace: bool,
    /// Swap source and target, which must both exist.
    pub exchange: bool,
}

/// The attribute changes of a setattr; `None` leaves the attribute as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChanges {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (files only; as [`Delta::Truncate`], setting mtime to the change time).
    pub size_bytes: Option<u64>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
}

/// The guard of a setattr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetAttrGuard {
    /// The inode's ctime must be this (NFSv3 `sattrguard3`).
    Ctime(Timestamp),
    /// The inode's generation must be this.
    Generation(u64),
}

/// How [`Delta::SetXattr`] treats an existing attribute (`XATTR_CREATE`, `XATTR_REPLACE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrSetMode {
    /// Create or replace.
    #[default]
    Either,
    /// Refuse with `AlreadyExists` if it exists.
    Create,
    /// Refuse with `NoData` if it does not exist.
    Replace,
}

/// One part named by a multipart complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedPart {
    /// The part number.
    pub part_number: u32,
    /// The ETag the client got for it; it must match the stored one.
    pub etag: String,
}

/// The data of an object put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectContent {
    /// Small data stored in the inode (at most `inline_bytes_max` bytes), sealed by the
    /// writer; the object's size is its `length_bytes`.
    Inline(SealedInline),
    /// Extents laid end to end from offset 0; the object's size is their sum.
    Extents(Vec<Extent>),
}

/// A condition on the entry an object put, complete or delete replaces or removes (S3
/// conditional requests). Failing conditions are `PreconditionFailed`; a condition naming
/// an existing object when there is none is `NotFound`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectCondition {
    /// No condition.
    #[default]
    Any,
    /// The name must not exist (`If-None-Match: *`).
    IfAbsent,
    /// The name must hold an object with this ETag (`If-Match`).
    IfEtagMatches(String),
    /// The name must point at this inode with this generation (the version read before).
    IfVersion {
        /// The inode.
        inode: InodeId,
        /// Its generation.
        generation: u64,
    },
}

impl Delta {
    /// The canonical encoding (postcard), as the consensus log stores it.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes [`Delta::encode`]'s output; trailing bytes or any malformation is `Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<Delta, NamespaceError> {
        decode(bytes)
    }
}

/// Encodes a value with postcard. Serializing plain data into a growable buffer cannot
/// fail: no type here has a fallible `Serialize`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    match postcard::to_allocvec(value) {
        Ok(bytes) => bytes,
        Err(error) => panic!("postcard cannot fail on plain data in a Vec: {error}"),
    }
}

/// Decodes a whole buffer with postcard.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, NamespaceError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|error| NamespaceError::corrupt(format!("decode: {error}")))?;
    if !rest.is_empty() {
        return Err(NamespaceError::corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}
