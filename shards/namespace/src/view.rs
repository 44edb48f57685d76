//! Reads, on the live state or on a [`PinnedView`] taken at some index.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::apply::data::validate_xattr_name;
use crate::error::NamespaceError;
use crate::tables::{NamespacePolicy, Tables};
use crate::types::{
    validate_name, Attributes, ChunkLocator, Extent, FileKind, InodeId, ObjectMeta, SealedInline, Timestamp, UploadId,
};

/// A read-only view of the namespace as it was at one index. Taking one is O(1) (the maps
/// are persistent and shared); applies continue on the state while the view keeps seeing
/// its frontier. Chunks referenced by a view must not be collected while it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedView {
    pub(crate) tables: Tables,
    pub(crate) index: u64,
}

/// One directory entry, as `readdir` and `list_prefix` return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's readdir cookie: stable for the life of the entry (across calls, snapshots
    /// and restores). Cookies are a per-directory counter from 3 (1 and 2 are left for `.`
    /// and `..`); a renamed entry gets a new cookie in its new place.
    pub cookie: u64,
    /// The name.
    pub name: Vec<u8>,
    /// The inode it names.
    pub inode: InodeId,
    /// What the inode is.
    pub kind: FileKind,
}

/// A piece of a file's byte range, as `read_extents` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadPiece {
    /// Bytes stored in the inode: `[offset_bytes, offset_bytes + length_bytes)` of the
    /// seal's plaintext (the reader opens the seal and cuts).
    Inline {
        /// File offset of the first byte.
        offset_bytes: u64,
        /// Bytes of the piece.
        length_bytes: u64,
        /// The file's whole sealed inline data.
        data: SealedInline,
    },
    /// Bytes in a chunk (the extent is already cut to the piece).
    Extent {
        /// File offset of the first byte.
        offset_bytes: u64,
        /// Where the bytes are.
        extent: Extent,
    },
    /// A range never written: reads as zeros.
    Hole {
        /// File offset of the first byte.
        offset_bytes: u64,
        /// Length of the hole.
        length_bytes: u64,
    },
}

impl ReadPiece {
    /// File offset of the piece's first byte.
    pub fn offset_bytes(&self) -> u64 {
        match self {
            ReadPiece::Inline { offset_bytes, .. }
            | ReadPiece::Extent { offset_bytes, .. }
            | ReadPiece::Hole { offset_bytes, .. } => *offset_bytes,
        }
    }

    /// File offset just past the piece's last byte.
    pub fn end_bytes(&self) -> u64 {
        match self {
            ReadPiece::Inline {
                offset_bytes,
                length_bytes,
                ..
            } => offset_bytes + length_bytes,
            ReadPiece::Extent { offset_bytes, extent } => offset_bytes + extent.length_bytes,
            ReadPiece::Hole {
                offset_bytes,
                length_bytes,
            } => offset_bytes + length_bytes,
        }
    }
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    /// The upload.
    pub upload_id: UploadId,
    /// The directory the object goes to.
    pub parent: InodeId,
    /// The object's entry name.
    pub name: Vec<u8>,
    /// The object's metadata (ETag set at completion).
    pub meta: ObjectMeta,
    /// When it began.
    pub initiated: Timestamp,
    /// Parts stored.
    pub part_count: u32,
}

/// One stored part of an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The part number.
    pub part_number: u32,
    /// Its ETag.
    pub etag: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its data.
    pub extents: Vec<Extent>,
}

/// Counts over the whole state, for `statfs` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStats {
    /// Live inodes (files, directories, symlinks).
    pub inodes: u64,
    /// Regular files.
    pub files: u64,
    /// Directories, the root included.
    pub directories: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Directory entries.
    pub dentries: u64,
    /// Sum of file sizes (holes included).
    pub file_bytes: u64,
    /// Bytes stored inline.
    pub inline_bytes: u64,
    /// Extents of files.
    pub extents: u64,
    /// Bytes of files held in chunks (sum of extent lengths).
    pub extent_bytes: u64,
    /// Distinct chunks referenced.
    pub chunks: u64,
    /// Multipart uploads in progress.
    pub multipart_uploads: u64,
    /// Stored parts.
    pub multipart_parts: u64,
    /// Bytes of stored parts.
    pub multipart_bytes: u64,
    /// Bytes the quota counts (extents, inline data, parts).
    pub quota_bytes_used: u64,
    /// Inodes the quota counts (the root excluded).
    pub quota_files_used: u64,
    /// The quota and the maintenance switch.
    pub policy: NamespacePolicy,
}

impl PinnedView {
    /// The index of the last delta this view includes.
    pub fn last_applied_index(&self) -> u64 {
        self.index
    }

    /// The inode named `name` in directory `parent`, with its attributes.
    pub fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<(InodeId, Attributes), NamespaceError> {
        validate_name(name)?;
        self.tables.directory(parent)?;
        let entry = self.tables.dentry(parent, name).ok_or(NamespaceError::NotFound)?;
        Ok((entry.inode, self.getattr(entry.inode)?))
    }

    /// The attributes of an inode.
    pub fn getattr(&self, inode: InodeId) -> Result<Attributes, NamespaceError> {
        Ok(self.tables.inode(inode)?.attributes.clone())
    }

    /// The parent of a directory (the root's parent is the root), for `..`.
    pub fn parent(&self, directory: InodeId) -> Result<InodeId, NamespaceError> {
        let record = self.tables.directory(directory)?;
        Ok(record.directory().map_or(InodeId::ROOT, |directory| directory.parent))
    }

    /// Up to `limit` entries of `directory` with a cookie above `after_cookie` (0 to start),
    /// in cookie order (creation order).
    pub fn readdir(
        &self,
        directory: InodeId,
        after_cookie: u64,
        limit: usize,
    ) -> Result<Vec<DirEntry>, NamespaceError> {
        self.tables.directory(directory)?;
        let range = (
            Bound::Excluded((directory, after_cookie)),
            Bound::Included((directory, u64::MAX)),
        );
        let mut entries = Vec::new();
        for ((_, cookie), entry) in self.tables.cookies.range(range).take(limit) {
            let kind = self.tables.inode(entry.inode)?.kind();
            entries.push(DirEntry {
                cookie: *cookie,
                name: entry.name.clone(),
                inode: entry.inode,
                kind,
            });
        }
        Ok(entries)
    }

    /// As [`PinnedView::readdir`], with each entry's attributes (readdirplus).
    pub fn readdir_plus(
        &self,
        directory: InodeId,
        after_cookie: u64,
        limit: usize,
    ) -> Result<Vec<(DirEntry, Attributes)>, NamespaceError> {
        self.readdir(directory, after_cookie, limit)?
            .into_iter()
            .map(|entry| Ok((entry.clone(), self.getattr(entry.inode)?)))
            .collect()
    }

    /// Up to `limit` entries of `directory` whose names start with `prefix`, in byte order
    /// of the names, starting after the name `after` if given (S3 listing).
    pub fn list_prefix(
        &self,
        directory: InodeId,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, NamespaceError> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.list_prefix_from(directory, prefix, start, limit)
    }

    /// As [`PinnedView::list_prefix`], from `start` (a name bound, included or excluded;
    /// names before `prefix` are skipped in any case).
    pub fn list_prefix_from(
        &self,
        directory: InodeId,
        prefix: &[u8],
        start: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, NamespaceError> {
        self.tables.directory(directory)?;
        let start = match start {
            Bound::Excluded(name) if name >= prefix => Bound::Excluded((directory, name.to_vec())),
            Bound::Included(name) if name >= prefix => Bound::Included((directory, name.to_vec())),
            _ => Bound::Included((directory, prefix.to_vec())),
        };
        let mut entries = Vec::new();
        for ((owner, name), entry) in self.tables.dentries.range((start, Bound::Unbounded)) {
            if *owner != directory || !name.starts_with(prefix) || entries.len() >= limit {
                break;
            }
            entries.push(DirEntry {
                cookie: entry.cookie,
                name: name.clone(),
                inode: entry.inode,
                kind: self.tables.inode(entry.inode)?.kind(),
            });
        }
        Ok(entries)
    }

    /// The target of a symlink (`InvalidArgument` for other inodes, as `readlink(2)`).
    pub fn readlink(&self, inode: InodeId) -> Result<Vec<u8>, NamespaceError> {
        match &self.tables.inode(inode)?.body {
            crate::tables::InodeBody::Symlink { target } => Ok(target.clone()),
            _ => Err(NamespaceError::invalid("not a symlink")),
        }
    }

    /// The pieces covering `[offset_bytes, offset_bytes + length_bytes)` of a file, cut at
    /// the file's size: inline bytes, extents (cut to the range) and holes, in order and
    /// without gaps.
    pub fn read_extents(
        &self,
        inode: InodeId,
        offset_bytes: u64,
        length_bytes: u64,
    ) -> Result<Vec<ReadPiece>, NamespaceError> {
        let record = self.tables.file(inode)?;
        let end = offset_bytes
            .saturating_add(length_bytes)
            .min(record.attributes.size_bytes);
        let mut pieces = Vec::new();
        let mut position = offset_bytes;
        if let Some(inline) = record
            .inline()
            .filter(|inline| position < end && position < inline.length_bytes)
        {
            let inline_end = end.min(inline.length_bytes);
            pieces.push(ReadPiece::Inline {
                offset_bytes: position,
                length_bytes: inline_end - position,
                data: inline.clone(),
            });
            position = inline_end;
        }
        for (offset, extent) in self.tables.overlapping_extents(inode, position, end) {
            let piece_start = offset.max(position);
            let piece_end = (offset + extent.length_bytes).min(end);
            if piece_start > position {
                pieces.push(ReadPiece::Hole {
                    offset_bytes: position,
                    length_bytes: piece_start - position,
                });
            }
            pieces.push(ReadPiece::Extent {
                offset_bytes: piece_start,
                extent: extent.slice(piece_start - offset, piece_end - piece_start),
            });
            position = piece_end;
        }
        if position < end {
            pieces.push(ReadPiece::Hole {
                offset_bytes: position,
                length_bytes: end - position,
            });
        }
        Ok(pieces)
    }

    /// The value of an extended attribute (`NoData` if missing).
    pub fn getxattr(&self, inode: InodeId, name: &[u8]) -> Result<Vec<u8>, NamespaceError> {
        self.tables.inode(inode)?;
        validate_xattr_name(name)?;
        let value = self
            .tables
            .xattrs
            .get(&(inode, name.to_vec()))
            .ok_or(NamespaceError::NoData)?;
        Ok(value.as_ref().clone())
    }

    /// The names of an inode's extended attributes, in byte order.
    pub fn listxattr(&self, inode: InodeId) -> Result<Vec<Vec<u8>>, NamespaceError> {
        self.tables.inode(inode)?;
        Ok(self
            .tables
            .xattr_keys(inode)
            .into_iter()
            .map(|(_, name)| name)
            .collect())
    }

    /// The S3 metadata of a file, if it was written as an object.
    pub fn object_meta(&self, inode: InodeId) -> Result<Option<ObjectMeta>, NamespaceError> {
        Ok(self.tables.inode(inode)?.object_meta.clone())
    }

    /// Up to `limit` uploads in progress with an id above `after` (all from the start).
    pub fn list_multipart(&self, after: Option<UploadId>, limit: usize) -> Vec<UploadInfo> {
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        self.tables
            .uploads
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(upload_id, upload)| UploadInfo {
                upload_id: *upload_id,
                parent: upload.parent,
                name: upload.name.clone(),
                meta: upload.meta.clone(),
                initiated: upload.initiated,
                part_count: upload.part_count,
            })
            .collect()
    }

    /// Up to `limit` parts of an upload with a number above `after_part` (0 to start).
    pub fn list_parts(
        &self,
        upload_id: UploadId,
        after_part: u32,
        limit: usize,
    ) -> Result<Vec<PartInfo>, NamespaceError> {
        if !self.tables.uploads.contains_key(&upload_id) {
            return Err(NamespaceError::NotFound);
        }
        let range = (
            Bound::Excluded((upload_id, after_part)),
            Bound::Included((upload_id, u32::MAX)),
        );
        Ok(self
            .tables
            .parts
            .range(range)
            .take(limit)
            .map(|((_, part_number), part)| PartInfo {
                part_number: *part_number,
                etag: part.etag.clone(),
                size_bytes: part.size_bytes,
                extents: part.extents.clone(),
            })
            .collect())
    }

    /// Counts over the whole state.
    pub fn statfs(&self) -> NamespaceStats {
        let totals = &self.tables.totals;
        NamespaceStats {
            inodes: self.tables.inodes.len() as u64,
            files: totals.files,
            directories: totals.directories,
            symlinks: totals.symlinks,
            dentries: self.tables.dentries.len() as u64,
            file_bytes: totals.file_bytes,
            inline_bytes: totals.inline_bytes,
            extents: totals.extents,
            extent_bytes: totals.extent_bytes,
            chunks: self.tables.chunk_refs.len() as u64,
            multipart_uploads: self.tables.uploads.len() as u64,
            multipart_parts: totals.multipart_parts,
            multipart_bytes: totals.multipart_bytes,
            quota_bytes_used: totals.quota_bytes(),
            quota_files_used: self.tables.quota_files(),
            policy: self.tables.policy,
        }
    }

    /// Every chunk referenced (by file extents and stored parts), ascending by locator, with
    /// its reference count (the number of extents naming it).
    pub fn chunk_references(&self) -> impl Iterator<Item = (ChunkLocator, u64)> + '_ {
        self.tables.chunk_refs.iter().map(|(locator, count)| (*locator, *count))
    }

    /// The reference count of one chunk (0 if unreferenced).
    pub fn chunk_reference_count(&self, locator: &ChunkLocator) -> u64 {
        self.tables.chunk_refs.get(locator).copied().unwrap_or(0)
    }
}
