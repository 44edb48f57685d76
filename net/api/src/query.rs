//! What a client asks of a shard and what it learns: the outcome of a delta, reads and
//! their answers. These travel postcard-encoded inside the byte fields of the
//! [`crate::meta`] envelopes.

use kiseki_namespace::{
    Attributes, DirEntry, InodeId, NamespaceError, NamespaceStats, ObjectMeta, PartInfo, ReadPiece, UploadId,
    UploadInfo, WatchEvent,
};
use serde::{Deserialize, Serialize};

/// What a proposer learns of its delta: kept small, since the consensus layer stores the
/// last outcome of every client session for deduplication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DeltaOutcome {
    /// Applied.
    Done {
        /// The inode the delta created or changed.
        inode: Option<InodeId>,
        /// Its attributes after the delta.
        attributes: Option<Attributes>,
    },
    /// Refused; nothing changed.
    Refused(NamespaceError),
    // New variants go last: outcomes are kept in snapshots for deduplication.
    /// A `MultipartBegin` applied: the new upload.
    UploadBegun {
        /// The upload's id.
        upload_id: UploadId,
    },
}

/// A read a client may ask of a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReadQuery {
    /// `lookup(parent, name)`.
    Lookup {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
    },
    /// `getattr(inode)`.
    GetAttr {
        /// The inode.
        inode: InodeId,
    },
    /// `readdir(dir, after_cookie, limit)`.
    ReadDir {
        /// The directory.
        dir: InodeId,
        /// Entries after this cookie.
        after_cookie: u64,
        /// At most this many entries.
        limit: u32,
    },
    /// The pieces of `[offset_bytes, offset_bytes + length_bytes)` of a file: inline
    /// bytes, extents cut to the range, and holes, in order (at most
    /// [`EXTENTS_READ_BYTES_MAX`] bytes of the file per read).
    Extents {
        /// The file.
        inode: InodeId,
        /// First byte.
        offset_bytes: u64,
        /// Bytes wanted.
        length_bytes: u64,
    },
    /// Counts of the shard's namespace.
    StatFs,
    /// Watch events with a sequence at or above `sequence` (a subscription polls this,
    /// passing the last sequence it saw plus one).
    WatchSince {
        /// The first sequence wanted.
        sequence: u64,
        /// At most this many events.
        limit: u32,
    },
    /// As `ReadDir`, with each entry's attributes (readdirplus).
    ReadDirPlus {
        /// The directory.
        dir: InodeId,
        /// Entries after this cookie (0 for the first page).
        after_cookie: u64,
        /// At most this many entries (capped at [`READDIR_ENTRIES_MAX`]).
        limit: u32,
    },
    /// A symlink's target.
    ReadLink {
        /// The symlink.
        inode: InodeId,
    },
    /// One extended attribute's value.
    GetXattr {
        /// The inode.
        inode: InodeId,
        /// The attribute name.
        name: Vec<u8>,
    },
    /// The names of an inode's extended attributes.
    ListXattr {
        /// The inode.
        inode: InodeId,
    },
    // New variants go last.
    /// Entries of a directory whose names start with `prefix`, in byte order of the names,
    /// from `start`, with their attributes and ETags (S3 listings); answered with
    /// `Listing`.
    ListNames {
        /// The directory.
        dir: InodeId,
        /// Names must start with this.
        prefix: Vec<u8>,
        /// Where to start.
        start: NameBound,
        /// At most this many entries (capped at [`READDIR_ENTRIES_MAX`]).
        limit: u32,
    },
    /// A file's S3 metadata (`None` for a file not written as an object).
    ObjectMeta {
        /// The file.
        inode: InodeId,
    },
    /// Multipart uploads in progress, in id order.
    Uploads {
        /// Uploads with an id above this one (all from the start when `None`).
        after: Option<UploadId>,
        /// At most this many (capped at [`READDIR_ENTRIES_MAX`]).
        limit: u32,
    },
    /// The parts of an upload, in part-number order.
    Parts {
        /// The upload.
        upload_id: UploadId,
        /// Parts with a number above this one (0 to start).
        after_part: u32,
        /// At most this many (capped at [`READDIR_ENTRIES_MAX`]).
        limit: u32,
    },
    /// The directory holding directory `dir` (the root's is the root), with its
    /// attributes (NFS `LOOKUP ..`); answered with `Entry`.
    Parent {
        /// The directory.
        dir: InodeId,
    },
    /// A directory's attributes and, if it has one, the entry `name` with its inode's
    /// attributes, in one read (NFS LOOKUP, REMOVE, RENAME: the directory's mode decides
    /// and its attributes are answered too); answered with `LookedUp`.
    LookupIn {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
    },
    /// A file's attributes and the pieces of `[offset_bytes, offset_bytes +
    /// length_bytes)` (as `Extents`), in one read; answered with `Read`.
    Read {
        /// The file.
        inode: InodeId,
        /// First byte.
        offset_bytes: u64,
        /// Bytes wanted.
        length_bytes: u64,
    },
}

/// Where a [`ReadQuery::ListNames`] starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameBound {
    /// At the first name with the prefix.
    First,
    /// At this name, included.
    From(Vec<u8>),
    /// After this name.
    After(Vec<u8>),
}

/// The answer to a [`ReadQuery`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReadAnswer {
    /// A found entry.
    Entry {
        /// Its inode.
        inode: InodeId,
        /// Its attributes.
        attributes: Attributes,
    },
    /// Attributes.
    Attributes(Attributes),
    /// Directory entries.
    Entries(Vec<DirEntry>),
    /// The pieces of a file's range.
    Pieces(Vec<ReadPiece>),
    /// Counts.
    Stats(NamespaceStats),
    /// Watch events, in sequence order.
    Events(Vec<WatchEvent>),
    /// The read failed.
    Failed(NamespaceError),
    /// Directory entries with their attributes.
    EntriesPlus(Vec<(DirEntry, Attributes)>),
    /// Bytes (a symlink target, an xattr value).
    Bytes(Vec<u8>),
    /// Names (of extended attributes).
    Names(Vec<Vec<u8>>),
    /// A file's S3 metadata.
    Object(Option<ObjectMeta>),
    /// Multipart uploads.
    Uploads(Vec<UploadInfo>),
    /// Parts of an upload.
    Parts(Vec<PartInfo>),
    /// Entries of a `ListNames`.
    Listing(Vec<ListedEntry>),
    /// A `LookupIn`: the directory's attributes, and the entry's inode and attributes
    /// unless the name is not there.
    LookedUp {
        /// The directory's attributes.
        parent: Attributes,
        /// The entry, if it exists.
        entry: Option<(InodeId, Attributes)>,
    },
    /// A `Read`: the file's attributes and the pieces of the range.
    Read {
        /// The file's attributes.
        attributes: Attributes,
        /// The pieces, as `Pieces` has them.
        pieces: Vec<ReadPiece>,
    },
}

/// One entry of a [`ReadQuery::ListNames`] answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListedEntry {
    /// The entry.
    pub entry: DirEntry,
    /// Its inode's attributes.
    pub attributes: Attributes,
    /// The object's ETag, for a file written as an object.
    pub etag: Option<String>,
}

/// Watch events one read may return at most.
pub const WATCH_EVENTS_PER_READ_MAX: u32 = 4096;

/// Bytes of a file one `Extents` read covers at most (a longer range is cut).
pub const EXTENTS_READ_BYTES_MAX: u64 = 256 << 20;

/// Entries one readdir may return at most.
pub const READDIR_ENTRIES_MAX: u32 = 4096;
