//! Applying deltas to the tables.
//!
//! Every handler works in two phases: first every check that can refuse the delta (reading
//! the tables, copying the records it will change), then the commit, which cannot fail.
//! Nothing is written before the last check, so a refused delta leaves the tables exactly
//! as they were (I-N9). Commit-phase code carries the comment `Commit: nothing below fails.`

pub(crate) mod data;
mod entries;
mod objects;
mod rename;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::NamespaceConfig;
use crate::delta::Delta;
use crate::error::{Limit, NamespaceError};
use crate::tables::{CookieRecord, DentryRecord, InodeRecord, Tables};
use crate::types::{
    Attributes, ChunkLocator, Extent, FileKind, InodeId, SealedInline, Timestamp, UploadId, INLINE_SEAL_SLACK_BYTES,
};
use crate::watch::{WatchEvent, WatchKind};

/// What an applied delta did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index the delta was applied at.
    pub index: u64,
    /// The inode the delta created, found or changed (the moved inode of a rename, the
    /// removed one of an unlink), if any.
    pub inode: Option<InodeId>,
    /// That inode's attributes after the delta, if it still exists.
    pub attributes: Option<Attributes>,
    /// The upload a `MultipartBegin` created or a multipart delta worked on.
    pub upload_id: Option<UploadId>,
    /// The changes, for the watch log.
    pub events: Vec<WatchEvent>,
    /// Chunks whose reference count changed, ascending by locator. A chunk whose count is
    /// now 0 is no longer referenced and may be collected once no pinned view or snapshot
    /// still holds it.
    pub chunk_references: Vec<ChunkReferenceChange>,
}

/// The reference count of one chunk before and after a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReferenceChange {
    /// The chunk.
    pub locator: ChunkLocator,
    /// References before the delta.
    pub before: u64,
    /// References after the delta.
    pub after: u64,
}

/// What one apply collects besides the table changes.
pub(crate) struct Context<'a> {
    pub config: &'a NamespaceConfig,
    pub index: u64,
    pub events: Vec<WatchEvent>,
    /// Per touched chunk: count before the delta, count now.
    chunk_changes: BTreeMap<ChunkLocator, (u64, u64)>,
    pub inode: Option<InodeId>,
    pub upload_id: Option<UploadId>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(config: &'a NamespaceConfig, index: u64) -> Self {
        Context {
            config,
            index,
            events: Vec::new(),
            chunk_changes: BTreeMap::new(),
            inode: None,
            upload_id: None,
        }
    }

    /// Records a watch event.
    pub(crate) fn event(&mut self, inode: InodeId, kind: WatchKind, entry: Option<(InodeId, &[u8])>) {
        self.events.push(WatchEvent {
            sequence: self.index,
            inode,
            kind,
            parent: entry.map(|(parent, _)| parent),
            name: entry.map(|(_, name)| name.to_vec()),
        });
    }

    /// The result of the apply, reading the final attributes from `tables`.
    pub(crate) fn finish(self, tables: &Tables) -> Applied {
        let attributes = self
            .inode
            .and_then(|inode| tables.inodes.get(&inode))
            .map(|record| record.attributes.clone());
        let chunk_references = self
            .chunk_changes
            .into_iter()
            .filter(|(_, (before, after))| before != after)
            .map(|(locator, (before, after))| ChunkReferenceChange { locator, before, after })
            .collect();
        Applied {
            index: self.index,
            inode: self.inode,
            attributes,
            upload_id: self.upload_id,
            events: self.events,
            chunk_references,
        }
    }
}

/// Refuses unless `record`'s generation is `expected` (when given).
pub(crate) fn check_generation(record: &InodeRecord, expected: Option<u64>) -> Result<(), NamespaceError> {
    match expected {
        Some(generation) if generation != record.attributes.generation => Err(NamespaceError::PreconditionFailed),
        _ => Ok(()),
    }
}

/// Checks inline data a delta carries: 1 to `inline_bytes_max` file bytes, sealed in at
/// most `INLINE_SEAL_SLACK_BYTES` more.
pub(crate) fn validate_inline(config: &NamespaceConfig, data: &SealedInline) -> Result<(), NamespaceError> {
    if data.length_bytes == 0 {
        return Err(NamespaceError::invalid("inline data holds at least one byte"));
    }
    if data.length_bytes > config.inline_bytes_max as u64 {
        return Err(NamespaceError::limit(Limit::InlineBytes));
    }
    if data.sealed.len() as u64 > data.length_bytes + INLINE_SEAL_SLACK_BYTES as u64 {
        return Err(NamespaceError::invalid(
            "sealed inline data is longer than its bytes and seal",
        ));
    }
    Ok(())
}

/// Checks extents a delta carries; returns their total length.
pub(crate) fn validate_extents(config: &NamespaceConfig, extents: &[Extent]) -> Result<u64, NamespaceError> {
    if extents.len() > config.delta_extents_max {
        return Err(NamespaceError::limit(Limit::DeltaExtents));
    }
    let mut total_bytes: u64 = 0;
    for extent in extents {
        if extent.length_bytes == 0 {
            return Err(NamespaceError::invalid("empty extent"));
        }
        if extent.wrapped_key.len() > config.wrapped_key_bytes_max {
            return Err(NamespaceError::limit(Limit::WrappedKey));
        }
        if extent.chunk_offset_bytes.checked_add(extent.length_bytes).is_none() {
            return Err(NamespaceError::invalid("extent runs past the end of any chunk"));
        }
        total_bytes = total_bytes
            .checked_add(extent.length_bytes)
            .filter(|total| *total <= config.file_bytes_max)
            .ok_or(NamespaceError::limit(Limit::FileSize))?;
    }
    Ok(total_bytes)
}

impl Tables {
    /// Applies one delta; on error nothing changed.
    pub(crate) fn apply(&mut self, cx: &mut Context<'_>, delta: &Delta) -> Result<(), NamespaceError> {
        match delta {
            Delta::Noop => Ok(()),
            Delta::Create {
                parent,
                name,
                attributes,
                exclusive,
            } => self.create(
                cx,
                *parent,
                name,
                attributes,
                entries::NewNode::File { exclusive: *exclusive },
            ),
            Delta::Mkdir {
                parent,
                name,
                attributes,
            } => self.create(cx, *parent, name, attributes, entries::NewNode::Directory),
            Delta::Symlink {
                parent,
                name,
                target,
                attributes,
            } => self.create(cx, *parent, name, attributes, entries::NewNode::Symlink { target }),
            Delta::Mknod {
                parent,
                name,
                kind,
                attributes,
            } => self.create(cx, *parent, name, attributes, entries::NewNode::Special { kind: *kind }),
            Delta::Link {
                source_namespace,
                inode,
                parent,
                name,
                ctime,
            } => {
                if *source_namespace != cx.config.namespace_id {
                    return Err(NamespaceError::CrossDevice);
                }
                self.link(cx, *inode, *parent, name, *ctime)
            }
            Delta::Unlink { parent, name, ctime } => self.unlink(cx, *parent, name, *ctime),
            Delta::SetQuota { bytes_max, files_max } => {
                // Commit: nothing below fails.
                self.policy.quota_bytes_max = *bytes_max;
                self.policy.quota_files_max = *files_max;
                Ok(())
            }
            Delta::SetReadOnly { read_only } => {
                // Commit: nothing below fails.
                self.policy.read_only = *read_only;
                Ok(())
            }
            Delta::Rmdir { parent, name, ctime } => self.rmdir(cx, *parent, name, *ctime),
            Delta::AsCaller {
                caller,
                directory,
                mask,
                delta,
            } => {
                if matches!(**delta, Delta::AsCaller { .. }) {
                    return Err(NamespaceError::invalid("an AsCaller delta inside another"));
                }
                // Checked and applied within one apply: no change can come in between.
                if !caller.may(&self.directory(*directory)?.attributes, *mask) {
                    return Err(NamespaceError::AccessDenied);
                }
                self.apply(cx, delta)
            }
            Delta::Rename {
                source_namespace,
                from_parent,
                from_name,
                to_parent,
                to_name,
                flags,
                ctime,
            } => {
                if *source_namespace != cx.config.namespace_id {
                    return Err(NamespaceError::CrossDevice);
                }
                let request = rename::RenameRequest {
                    from_parent: *from_parent,
                    from_name,
                    to_parent: *to_parent,
                    to_name,
                    flags: *flags,
                    ctime: *ctime,
                };
                self.rename(cx, &request)
            }
            _ => self.apply_content(cx, delta),
        }
    }

    /// Applies a data, attribute or object delta; on error nothing changed.
    fn apply_content(&mut self, cx: &mut Context<'_>, delta: &Delta) -> Result<(), NamespaceError> {
        match delta {
            Delta::WriteExtents {
                inode,
                offset_bytes,
                extents,
                size_bytes,
                mtime,
                expected_generation,
            } => {
                let write = data::ExtentWrite {
                    inode: *inode,
                    offset_bytes: *offset_bytes,
                    extents,
                    size_bytes: *size_bytes,
                    mtime: *mtime,
                    expected_generation: *expected_generation,
                };
                self.write_extents(cx, &write)
            }
            Delta::AppendExtents { inode, extents, mtime } => {
                let size_bytes = self.file(*inode)?.attributes.size_bytes;
                let length = extents
                    .iter()
                    .try_fold(0u64, |total, extent| total.checked_add(extent.length_bytes))
                    .ok_or(NamespaceError::limit(Limit::FileSize))?;
                let write = data::ExtentWrite {
                    inode: *inode,
                    offset_bytes: size_bytes,
                    extents,
                    size_bytes: size_bytes
                        .checked_add(length)
                        .ok_or(NamespaceError::limit(Limit::FileSize))?,
                    mtime: *mtime,
                    expected_generation: None,
                };
                self.write_extents(cx, &write)
            }
            Delta::WriteInline {
                inode,
                data,
                mtime,
                expected_generation,
            } => self.write_inline(cx, *inode, data, *mtime, *expected_generation),
            Delta::Truncate {
                inode,
                size_bytes,
                mtime,
                expected_generation,
            } => self.truncate(cx, *inode, *size_bytes, *mtime, *expected_generation),
            Delta::SetAttr {
                inode,
                changes,
                ctime,
                guard,
            } => self.set_attr(cx, *inode, changes, *ctime, *guard),
            Delta::SetXattr {
                inode,
                name,
                value,
                mode,
                ctime,
            } => self.set_xattr(cx, *inode, name, value, *mode, *ctime),
            Delta::RemoveXattr { inode, name, ctime } => self.remove_xattr(cx, *inode, name, *ctime),
            Delta::MultipartBegin {
                parent,
                name,
                meta,
                initiated,
            } => self.multipart_begin(cx, *parent, name, meta, *initiated),
            Delta::MultipartPart {
                upload_id,
                part_number,
                etag,
                extents,
            } => self.multipart_part(cx, *upload_id, *part_number, etag, extents),
            Delta::MultipartComplete {
                upload_id,
                parts,
                etag,
                attributes,
                condition,
            } => self.multipart_complete(cx, *upload_id, parts, etag, attributes, condition),
            Delta::MultipartAbort { upload_id } => self.multipart_abort(cx, *upload_id),
            Delta::ObjectPut {
                parent,
                name,
                content,
                meta,
                attributes,
                condition,
            } => {
                let put = objects::ObjectPutRequest {
                    parent: *parent,
                    name,
                    content,
                    meta,
                    attributes,
                    condition,
                };
                self.object_put(cx, &put)
            }
            Delta::ObjectDelete {
                parent,
                name,
                condition,
                ctime,
            } => self.object_delete(cx, *parent, name, condition, *ctime),
            Delta::Noop
            | Delta::SetQuota { .. }
            | Delta::SetReadOnly { .. }
            | Delta::Create { .. }
            | Delta::Mkdir { .. }
            | Delta::Symlink { .. }
            | Delta::Mknod { .. }
            | Delta::Link { .. }
            | Delta::Unlink { .. }
            | Delta::Rmdir { .. }
            | Delta::AsCaller { .. }
            | Delta::Rename { .. } => self.apply(cx, delta),
        }
    }

    // ---- checks (read-only) ----

    /// Refuses unless one more inode fits (count bound and number range).
    pub(crate) fn check_new_inode(&self, config: &NamespaceConfig) -> Result<(), NamespaceError> {
        if self.inodes.len() as u64 >= config.inodes_max || self.next_inode > config.inode_number_last {
            return Err(NamespaceError::limit(Limit::Inodes));
        }
        Ok(())
    }

    /// Refuses unless one more entry fits in `parent` (global bound, cookie counter).
    pub(crate) fn check_new_dentry(
        &self,
        config: &NamespaceConfig,
        parent: &InodeRecord,
    ) -> Result<(), NamespaceError> {
        if self.dentries.len() as u64 >= config.dentries_max {
            return Err(NamespaceError::limit(Limit::Dentries));
        }
        if parent
            .directory()
            .is_some_and(|directory| directory.next_cookie == u64::MAX)
        {
            return Err(NamespaceError::limit(Limit::Counter));
        }
        Ok(())
    }

    /// Extent count of `record` (of `file`) after cutting `[start, end)` and adding `added`.
    pub(crate) fn extent_count_after(
        &self,
        record: &InodeRecord,
        file: InodeId,
        start: u64,
        end: u64,
        added: u64,
    ) -> u64 {
        let mut count = record.extent_count;
        for (offset, extent) in self.overlapping_extents(file, start, end) {
            count -= 1;
            if offset < start {
                count += 1;
            }
            if offset + extent.length_bytes > end {
                count += 1;
            }
        }
        count.saturating_add(added)
    }

    // ---- commit helpers (cannot fail) ----

    /// Hands out the next inode number (checked by `check_new_inode`).
    pub(crate) fn allocate_inode(&mut self) -> InodeId {
        let id = InodeId(self.next_inode);
        assert!(
            !self.inodes.contains_key(&id),
            "I-N7: inode number {} handed out twice",
            id.0
        );
        self.next_inode = self.next_inode.saturating_add(1);
        id
    }

    fn reference_chunk(&mut self, locator: ChunkLocator, cx: &mut Context<'_>) {
        let count = self.chunk_refs.get(&locator).copied().unwrap_or(0);
        let change = cx.chunk_changes.entry(locator).or_insert((count, count));
        change.1 = count + 1;
        self.chunk_refs.insert(locator, count + 1);
    }

    fn release_chunk(&mut self, locator: ChunkLocator, cx: &mut Context<'_>) {
        let count = self.chunk_refs.get(&locator).copied().unwrap_or(0);
        assert!(count > 0, "I-N4: releasing a chunk reference that is not counted");
        let change = cx.chunk_changes.entry(locator).or_insert((count, count));
        change.1 = count - 1;
        if count == 1 {
            self.chunk_refs.remove(&locator);
        } else {
            self.chunk_refs.insert(locator, count - 1);
        }
    }

    /// References every chunk of `extents` once more (a multipart part being stored).
    pub(crate) fn reference_extents(&mut self, extents: &[Extent], cx: &mut Context<'_>) {
        for extent in extents {
            self.reference_chunk(extent.chunk_locator, cx);
        }
    }

    /// Releases one reference of every chunk of `extents` (a multipart part being dropped).
    pub(crate) fn release_extents(&mut self, extents: &[Extent], cx: &mut Context<'_>) {
        for extent in extents {
            self.release_chunk(extent.chunk_locator, cx);
        }
    }

    /// Adds an extent to a file; `record` is the caller's copy of the file's record.
    pub(crate) fn insert_extent(
        &mut self,
        record: &mut InodeRecord,
        file: InodeId,
        offset: u64,
        extent: Extent,
        cx: &mut Context<'_>,
    ) {
        self.reference_chunk(extent.chunk_locator, cx);
        record.extent_count += 1;
        self.totals.extents = self.totals.extents.wrapping_add(1);
        self.totals.extent_bytes = self.totals.extent_bytes.wrapping_add(extent.length_bytes);
        let previous = self.extents.insert((file, offset), extent);
        assert!(previous.is_none(), "I-N5: two extents of one file at one offset");
    }

    /// Removes the extent of `file` at `offset`.
    fn remove_extent(&mut self, record: &mut InodeRecord, file: InodeId, offset: u64, cx: &mut Context<'_>) {
        if let Some(extent) = self.extents.remove(&(file, offset)) {
            self.release_chunk(extent.chunk_locator, cx);
            record.extent_count -= 1;
            self.totals.extents = self.totals.extents.wrapping_sub(1);
            self.totals.extent_bytes = self.totals.extent_bytes.wrapping_sub(extent.length_bytes);
        }
    }

    /// Cuts `[start, end)` out of a file's extent map, splitting extents at the boundaries.
    pub(crate) fn punch(
        &mut self,
        record: &mut InodeRecord,
        file: InodeId,
        start: u64,
        end: u64,
        cx: &mut Context<'_>,
    ) {
        for (offset, extent) in self.overlapping_extents(file, start, end) {
            self.remove_extent(record, file, offset, cx);
            let extent_end = offset + extent.length_bytes;
            if offset < start {
                self.insert_extent(record, file, offset, extent.slice(0, start - offset), cx);
            }
            if extent_end > end {
                let skip = end - offset;
                self.insert_extent(record, file, end, extent.slice(skip, extent_end - end), cx);
            }
        }
    }

    /// Adds entry `name` → `inode` to `parent`; `parent_record` is the caller's copy.
    pub(crate) fn add_dentry(&mut self, parent: InodeId, parent_record: &mut InodeRecord, name: &[u8], inode: InodeId) {
        let directory = parent_record.directory_mut();
        let cookie = directory.next_cookie;
        directory.next_cookie += 1;
        directory.entry_count += 1;
        let previous = self
            .dentries
            .insert((parent, name.to_vec()), DentryRecord { inode, cookie });
        assert!(previous.is_none(), "I-N1: adding an entry over an existing one");
        self.cookies.insert(
            (parent, cookie),
            CookieRecord {
                name: name.to_vec(),
                inode,
            },
        );
    }

    /// Removes entry `name` of `parent`; `parent_record` is the caller's copy.
    pub(crate) fn remove_dentry(&mut self, parent: InodeId, parent_record: &mut InodeRecord, name: &[u8]) {
        if let Some(entry) = self.dentries.remove(&(parent, name.to_vec())) {
            self.cookies.remove(&(parent, entry.cookie));
            parent_record.directory_mut().entry_count -= 1;
        }
    }

    /// Removes an inode with its extents and xattrs.
    pub(crate) fn drop_inode(&mut self, id: InodeId, cx: &mut Context<'_>) {
        let Some(record) = self.inodes.get(&id).map(|record| (**record).clone()) else {
            return;
        };
        let mut record = record;
        for (_, offset) in self.extent_keys(id) {
            self.remove_extent(&mut record, id, offset, cx);
        }
        for key in self.xattr_keys(id) {
            self.xattrs.remove(&key);
        }
        if let Some(old) = self.inodes.remove(&id) {
            self.totals.account_inode(&old, false);
        }
    }

    /// Takes one name from a file or symlink, dropping it with its last name; a directory
    /// (already checked empty, its parent's link count already lowered) is dropped.
    pub(crate) fn release_name(&mut self, id: InodeId, ctime: Timestamp, cx: &mut Context<'_>) {
        let Some(record) = self.inodes.get(&id).map(|record| (**record).clone()) else {
            return;
        };
        if record.kind() == FileKind::Directory || record.attributes.nlink <= 1 {
            self.drop_inode(id, cx);
            return;
        }
        let mut record = record;
        record.attributes.nlink -= 1;
        record.touch(ctime);
        self.put_inode(id, record);
    }
}
