//! The state's tables: persistent ordered maps keyed like a key-value store (inode, dentry,
//! readdir cookie, extent, xattr, upload, part, chunk reference), plus the counters that
//! allocate ids and the totals `statfs` reports.
//!
//! Every map is an `imbl` `OrdMap`: cloning the tables is O(1) (roots are shared) and a
//! mutation copies only the nodes on its path while a clone is alive, so pinned views and
//! snapshots cost nothing until applies diverge from them. Iteration is in key order, so
//! encodings are canonical.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::error::NamespaceError;
use crate::types::{
    Attributes, ChunkLocator, Extent, FileKind, InodeId, ObjectMeta, SealedInline, Timestamp, UploadId,
};

/// An inode as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InodeRecord {
    pub attributes: Attributes,
    pub body: InodeBody,
    /// Extents of a file (entries of `Tables::extents` under this inode).
    pub extent_count: u64,
    /// Extended attributes (entries of `Tables::xattrs` under this inode).
    pub xattr_count: u32,
    /// S3 metadata of a file written as an object.
    pub object_meta: Option<ObjectMeta>,
}

/// What an inode holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum InodeBody {
    /// A file: its inline bytes cover `[0, inline.length_bytes)`; extents all start at or
    /// above. (Snapshots before format 3 held an always-empty byte string here, which
    /// decodes as `None`.)
    File { inline: Option<SealedInline> },
    /// A directory.
    Directory(DirectoryBody),
    /// A symlink and its target.
    Symlink { target: Vec<u8> },
    /// A named pipe, socket or device node: nothing but its attributes.
    Special,
}

/// A directory's own fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirectoryBody {
    /// The directory holding this one (the root's parent is the root).
    pub parent: InodeId,
    /// The readdir cookie the next entry gets.
    pub next_cookie: u64,
    /// Entries in the directory.
    pub entry_count: u64,
}

/// The first readdir cookie a directory hands out: 0 means "from the start", and 1 and 2
/// are left for the `.` and `..` entries front ends synthesize.
pub const READDIR_COOKIE_FIRST: u64 = 3;

impl InodeRecord {
    pub(crate) fn new(kind: FileKind, body: InodeBody, mode: u32, uid: u32, gid: u32, time: Timestamp) -> Self {
        let (size_bytes, nlink) = match &body {
            InodeBody::File { inline } => (inline.as_ref().map_or(0, |inline| inline.length_bytes), 1),
            InodeBody::Directory(_) => (0, 2),
            InodeBody::Symlink { target } => (target.len() as u64, 1),
            InodeBody::Special => (0, 1),
        };
        InodeRecord {
            attributes: Attributes {
                kind,
                mode,
                uid,
                gid,
                size_bytes,
                atime: time,
                mtime: time,
                ctime: time,
                nlink,
                generation: 1,
            },
            body,
            extent_count: 0,
            xattr_count: 0,
            object_meta: None,
        }
    }

    pub(crate) fn kind(&self) -> FileKind {
        self.attributes.kind
    }

    pub(crate) fn directory(&self) -> Option<&DirectoryBody> {
        match &self.body {
            InodeBody::Directory(directory) => Some(directory),
            _ => None,
        }
    }

    /// The directory fields of a record already checked to be a directory.
    pub(crate) fn directory_mut(&mut self) -> &mut DirectoryBody {
        match &mut self.body {
            InodeBody::Directory(directory) => directory,
            _ => panic!("directory_mut on a non-directory: the caller checked the kind"),
        }
    }

    /// A file's sealed inline bytes, if it has any.
    pub(crate) fn inline(&self) -> Option<&SealedInline> {
        match &self.body {
            InodeBody::File { inline } => inline.as_ref(),
            _ => None,
        }
    }

    /// File bytes stored inline (`[0, inline_bytes())`).
    pub(crate) fn inline_bytes(&self) -> u64 {
        self.inline().map_or(0, |inline| inline.length_bytes)
    }

    /// Replaces the inline bytes of a record already checked to be a file.
    pub(crate) fn set_inline(&mut self, data: Option<SealedInline>) {
        match &mut self.body {
            InodeBody::File { inline } => *inline = data,
            _ => panic!("set_inline on a non-file: the caller checked the kind"),
        }
    }

    /// Cuts the inline bytes at `end_bytes`: the seal stays, covering fewer bytes, and
    /// goes when it covers none.
    pub(crate) fn cut_inline(&mut self, end_bytes: u64) {
        if let InodeBody::File { inline } = &mut self.body {
            if let Some(data) = inline {
                data.length_bytes = data.length_bytes.min(end_bytes);
            }
            if inline.as_ref().is_some_and(|data| data.length_bytes == 0) {
                *inline = None;
            }
        }
    }

    /// Marks a change: ctime and one generation more.
    pub(crate) fn touch(&mut self, ctime: Timestamp) {
        self.attributes.ctime = ctime;
        self.attributes.generation = self.attributes.generation.wrapping_add(1);
    }

    /// Marks a content change: mtime, ctime and one generation more.
    pub(crate) fn touch_content(&mut self, time: Timestamp) {
        self.attributes.mtime = time;
        self.touch(time);
    }

    /// A file's bytes changed other than through an object put: its stored S3 ETag no
    /// longer describes them and is dropped (the rest of its object metadata stays).
    pub(crate) fn forget_etag(&mut self) {
        if let Some(meta) = &mut self.object_meta {
            meta.etag.clear();
        }
    }
}

/// A directory entry as stored under `(parent, name)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DentryRecord {
    pub inode: InodeId,
    pub cookie: u64,
}

/// The readdir index entry stored under `(parent, cookie)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CookieRecord {
    pub name: Vec<u8>,
    pub inode: InodeId,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    pub parent: InodeId,
    pub name: Vec<u8>,
    pub meta: ObjectMeta,
    pub initiated: Timestamp,
    pub part_count: u32,
}

/// One stored part of an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    pub etag: String,
    pub size_bytes: u64,
    pub extents: Vec<Extent>,
}

/// Sums kept up to date on every change, for `statfs`. Arithmetic wraps (sizes come from
/// outside and a sum of hostile ones could overflow); the invariant check recounts with
/// the same arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Sum of file sizes.
    pub file_bytes: u64,
    /// Sum of inline data lengths.
    pub inline_bytes: u64,
    /// Extents of files.
    pub extents: u64,
    /// Sum of file extent lengths.
    pub extent_bytes: u64,
    /// Stored multipart parts.
    pub multipart_parts: u64,
    /// Sum of multipart part sizes.
    pub multipart_bytes: u64,
}

impl Totals {
    /// Adds (`add` true) or removes the record-level contribution of one inode.
    pub(crate) fn account_inode(&mut self, record: &InodeRecord, add: bool) {
        let change = |total: &mut u64, amount: u64| {
            *total = if add {
                total.wrapping_add(amount)
            } else {
                total.wrapping_sub(amount)
            };
        };
        match record.kind() {
            FileKind::File => {
                change(&mut self.files, 1);
                change(&mut self.file_bytes, record.attributes.size_bytes);
                change(&mut self.inline_bytes, record.inline_bytes());
            }
            FileKind::Directory => change(&mut self.directories, 1),
            FileKind::Symlink => change(&mut self.symlinks, 1),
            FileKind::Fifo | FileKind::Socket | FileKind::CharDevice { .. } | FileKind::BlockDevice { .. } => {}
        }
    }
}

/// The namespace's quota and maintenance switch, set by deltas (`SetQuota`,
/// `SetReadOnly`) and kept in snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePolicy {
    /// Bytes stored (file extents, inline data, multipart parts) at most.
    pub quota_bytes_max: Option<u64>,
    /// Inodes (the root not counted) at most.
    pub quota_files_max: Option<u64>,
    /// Whether every change but leaving maintenance is refused.
    pub read_only: bool,
}

impl Totals {
    /// Bytes a quota counts: extent bytes, inline bytes and multipart part bytes (what
    /// the namespace stores, before redundancy).
    pub(crate) fn quota_bytes(&self) -> u64 {
        self.extent_bytes
            .wrapping_add(self.inline_bytes)
            .wrapping_add(self.multipart_bytes)
    }
}

/// Key of a directory entry.
pub(crate) type DentryKey = (InodeId, Vec<u8>);

/// All the maps and counters of a state. Cloning is O(1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tables {
    pub inodes: OrdMap<InodeId, Arc<InodeRecord>>,
    pub dentries: OrdMap<DentryKey, DentryRecord>,
    /// Readdir index: `(directory, cookie)` → entry (derived from `dentries`).
    pub cookies: OrdMap<(InodeId, u64), CookieRecord>,
    /// File extents: `(file, file offset)` → extent.
    pub extents: OrdMap<(InodeId, u64), Extent>,
    pub xattrs: OrdMap<(InodeId, Vec<u8>), Arc<Vec<u8>>>,
    pub uploads: OrdMap<UploadId, Arc<UploadRecord>>,
    pub parts: OrdMap<(UploadId, u32), Arc<PartRecord>>,
    /// Reference counts of chunks by file extents and parts (derived).
    pub chunk_refs: OrdMap<ChunkLocator, u64>,
    /// The next inode number to hand out.
    pub next_inode: u64,
    /// The next upload id to hand out.
    pub next_upload: u64,
    /// Derived sums.
    pub totals: Totals,
    /// Quota and maintenance.
    pub policy: NamespacePolicy,
}

impl Tables {
    /// Inodes a quota counts (the root excluded).
    pub(crate) fn quota_files(&self) -> u64 {
        (self.inodes.len() as u64).saturating_sub(1)
    }

    /// The tables of a new namespace: only the root directory.
    pub(crate) fn new(root: InodeRecord, next_inode: u64) -> Self {
        let mut tables = Tables {
            inodes: OrdMap::new(),
            dentries: OrdMap::new(),
            cookies: OrdMap::new(),
            extents: OrdMap::new(),
            xattrs: OrdMap::new(),
            uploads: OrdMap::new(),
            parts: OrdMap::new(),
            chunk_refs: OrdMap::new(),
            next_inode,
            next_upload: 1,
            totals: Totals::default(),
            policy: NamespacePolicy::default(),
        };
        tables.put_inode(InodeId::ROOT, root);
        tables
    }

    /// The inode, or `NotFound`.
    pub(crate) fn inode(&self, id: InodeId) -> Result<&InodeRecord, NamespaceError> {
        self.inodes
            .get(&id)
            .map(|record| &**record)
            .ok_or(NamespaceError::NotFound)
    }

    /// The directory, or `NotFound` / `NotDirectory`.
    pub(crate) fn directory(&self, id: InodeId) -> Result<&InodeRecord, NamespaceError> {
        let record = self.inode(id)?;
        if record.kind() != FileKind::Directory {
            return Err(NamespaceError::NotDirectory);
        }
        Ok(record)
    }

    /// The regular file, or `NotFound` / `IsDirectory` / `InvalidArgument` (symlink).
    pub(crate) fn file(&self, id: InodeId) -> Result<&InodeRecord, NamespaceError> {
        let record = self.inode(id)?;
        match record.kind() {
            FileKind::File => Ok(record),
            FileKind::Directory => Err(NamespaceError::IsDirectory),
            FileKind::Symlink
            | FileKind::Fifo
            | FileKind::Socket
            | FileKind::CharDevice { .. }
            | FileKind::BlockDevice { .. } => Err(NamespaceError::invalid("not a regular file")),
        }
    }

    /// The entry `name` in `parent`, if any.
    pub(crate) fn dentry(&self, parent: InodeId, name: &[u8]) -> Option<DentryRecord> {
        self.dentries.get(&(parent, name.to_vec())).copied()
    }

    /// Stores an inode record, keeping the totals.
    pub(crate) fn put_inode(&mut self, id: InodeId, record: InodeRecord) {
        if let Some(old) = self.inodes.get(&id) {
            self.totals.account_inode(old, false);
        }
        self.totals.account_inode(&record, true);
        self.inodes.insert(id, Arc::new(record));
    }

    /// Extents of `file` that overlap `[start, end)`, in offset order.
    pub(crate) fn overlapping_extents(&self, file: InodeId, start: u64, end: u64) -> Vec<(u64, Extent)> {
        let mut found = Vec::new();
        if start >= end {
            return found;
        }
        if let Some(((owner, offset), extent)) = self.extents.range(..(file, start)).next_back() {
            if *owner == file && offset.saturating_add(extent.length_bytes) > start {
                found.push((*offset, extent.clone()));
            }
        }
        for ((_, offset), extent) in self.extents.range((file, start)..(file, end)) {
            found.push((*offset, extent.clone()));
        }
        found
    }

    /// Keys of every extent of `file`.
    pub(crate) fn extent_keys(&self, file: InodeId) -> Vec<(InodeId, u64)> {
        self.extents
            .range((file, 0)..=(file, u64::MAX))
            .map(|(key, _)| *key)
            .collect()
    }

    /// Keys of every xattr of `inode`.
    pub(crate) fn xattr_keys(&self, inode: InodeId) -> Vec<(InodeId, Vec<u8>)> {
        let start = (inode, Vec::new());
        self.xattrs
            .range(start..)
            .take_while(|((owner, _), _)| *owner == inode)
            .map(|(key, _)| key.clone())
            .collect()
    }
}
