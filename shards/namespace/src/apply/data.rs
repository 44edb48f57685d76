//! File data (extent writes, inline writes, truncate), attributes and extended attributes.

use std::sync::Arc;

use crate::apply::{check_generation, validate_extents, validate_inline, Context};
use crate::delta::{AttrChanges, SetAttrGuard, XattrSetMode};
use crate::error::{Limit, NamespaceError};
use crate::tables::{InodeRecord, Tables};
use crate::types::{validate_mode, Extent, InodeId, SealedInline, Timestamp, XATTR_NAME_BYTES_MAX};
use crate::watch::WatchKind;

/// The fields of a write-extents delta.
pub(crate) struct ExtentWrite<'a> {
    pub inode: InodeId,
    pub offset_bytes: u64,
    pub extents: &'a [Extent],
    pub size_bytes: u64,
    pub mtime: Timestamp,
    pub expected_generation: Option<u64>,
}

impl Tables {
    /// Points a byte range of a file at new extents.
    pub(crate) fn write_extents(
        &mut self,
        cx: &mut Context<'_>,
        write: &ExtentWrite<'_>,
    ) -> Result<(), NamespaceError> {
        let ExtentWrite {
            inode,
            offset_bytes: start,
            extents,
            size_bytes,
            mtime,
            expected_generation,
        } = *write;
        let mut record = self.file(inode)?.clone();
        check_generation(&record, expected_generation)?;
        mtime.validate()?;
        let length = validate_extents(cx.config, extents)?;
        let end = start
            .checked_add(length)
            .filter(|end| *end <= cx.config.file_bytes_max)
            .ok_or(NamespaceError::limit(Limit::FileSize))?;
        if size_bytes > cx.config.file_bytes_max {
            return Err(NamespaceError::limit(Limit::FileSize));
        }
        if size_bytes < end {
            return Err(NamespaceError::invalid("size_bytes is below the end of the write"));
        }
        let inline_bytes = record.inline_bytes();
        if length > 0 && start < inline_bytes && end < inline_bytes {
            return Err(NamespaceError::invalid(
                "extents may not cover only part of the inline bytes' tail",
            ));
        }
        if self.extent_count_after(&record, inode, start, end, extents.len() as u64) > cx.config.extents_per_file_max {
            return Err(NamespaceError::limit(Limit::Extents));
        }

        // Commit: nothing below fails.
        if length > 0 {
            self.punch(&mut record, inode, start, end, cx);
            record.cut_inline(start);
            let mut offset = start;
            for extent in extents {
                self.insert_extent(&mut record, inode, offset, extent.clone(), cx);
                offset += extent.length_bytes;
            }
        }
        record.attributes.size_bytes = record.attributes.size_bytes.max(size_bytes);
        record.touch_content(mtime);
        record.forget_etag();
        self.put_inode(inode, record);
        cx.event(inode, WatchKind::DataModified, None);
        cx.inode = Some(inode);
        Ok(())
    }

    /// Replaces the inline bytes of a small file.
    pub(crate) fn write_inline(
        &mut self,
        cx: &mut Context<'_>,
        inode: InodeId,
        data: &SealedInline,
        mtime: Timestamp,
        expected_generation: Option<u64>,
    ) -> Result<(), NamespaceError> {
        let mut record = self.file(inode)?.clone();
        check_generation(&record, expected_generation)?;
        mtime.validate()?;
        validate_inline(cx.config, data)?;
        let end = data.length_bytes;
        let first_extent = self
            .extents
            .range((inode, 0)..=(inode, u64::MAX))
            .next()
            .map(|((_, offset), _)| *offset);
        if first_extent.is_some_and(|offset| offset < end) {
            return Err(NamespaceError::invalid("inline bytes may not reach an extent"));
        }

        // Commit: nothing below fails.
        record.set_inline(Some(data.clone()));
        record.attributes.size_bytes = record.attributes.size_bytes.max(end);
        record.touch_content(mtime);
        record.forget_etag();
        self.put_inode(inode, record);
        cx.event(inode, WatchKind::DataModified, None);
        cx.inode = Some(inode);
        Ok(())
    }

    /// Sets a file's size.
    pub(crate) fn truncate(
        &mut self,
        cx: &mut Context<'_>,
        inode: InodeId,
        size_bytes: u64,
        mtime: Timestamp,
        expected_generation: Option<u64>,
    ) -> Result<(), NamespaceError> {
        let mut record = self.file(inode)?.clone();
        check_generation(&record, expected_generation)?;
        mtime.validate()?;
        if size_bytes > cx.config.file_bytes_max {
            return Err(NamespaceError::limit(Limit::FileSize));
        }

        // Commit: nothing below fails.
        self.resize_file(&mut record, inode, size_bytes, cx);
        record.touch_content(mtime);
        self.put_inode(inode, record);
        cx.event(inode, WatchKind::DataModified, None);
        cx.inode = Some(inode);
        Ok(())
    }

    /// Commit helper: cuts everything at or beyond `size_bytes` and sets the size.
    fn resize_file(&mut self, record: &mut InodeRecord, inode: InodeId, size_bytes: u64, cx: &mut Context<'_>) {
        self.punch(record, inode, size_bytes, u64::MAX, cx);
        record.cut_inline(size_bytes);
        record.attributes.size_bytes = size_bytes;
        record.forget_etag();
    }

    /// Changes attributes.
    pub(crate) fn set_attr(
        &mut self,
        cx: &mut Context<'_>,
        inode: InodeId,
        changes: &AttrChanges,
        ctime: Timestamp,
        guard: Option<SetAttrGuard>,
    ) -> Result<(), NamespaceError> {
        let mut record = self.inode(inode)?.clone();
        match guard {
            Some(SetAttrGuard::Ctime(expected)) if expected != record.attributes.ctime => {
                return Err(NamespaceError::PreconditionFailed)
            }
            Some(SetAttrGuard::Generation(expected)) if expected != record.attributes.generation => {
                return Err(NamespaceError::PreconditionFailed)
            }
            _ => {}
        }
        ctime.validate()?;
        if let Some(mode) = changes.mode {
            validate_mode(mode)?;
        }
        for time in [changes.atime, changes.mtime].into_iter().flatten() {
            time.validate()?;
        }
        if let Some(size_bytes) = changes.size_bytes {
            self.file(inode)?;
            if size_bytes > cx.config.file_bytes_max {
                return Err(NamespaceError::limit(Limit::FileSize));
            }
        }

        // Commit: nothing below fails.
        let attributes = &mut record.attributes;
        attributes.mode = changes.mode.unwrap_or(attributes.mode);
        attributes.uid = changes.uid.unwrap_or(attributes.uid);
        attributes.gid = changes.gid.unwrap_or(attributes.gid);
        attributes.atime = changes.atime.unwrap_or(attributes.atime);
        attributes.mtime = changes.mtime.unwrap_or(attributes.mtime);
        let kind = match changes.size_bytes {
            Some(size_bytes) => {
                self.resize_file(&mut record, inode, size_bytes, cx);
                if changes.mtime.is_none() {
                    record.attributes.mtime = ctime;
                }
                WatchKind::DataModified
            }
            None => WatchKind::AttributesModified,
        };
        record.touch(ctime);
        self.put_inode(inode, record);
        cx.event(inode, kind, None);
        cx.inode = Some(inode);
        Ok(())
    }

    /// Sets an extended attribute.
    pub(crate) fn set_xattr(
        &mut self,
        cx: &mut Context<'_>,
        inode: InodeId,
        name: &[u8],
        value: &[u8],
        mode: XattrSetMode,
        ctime: Timestamp,
    ) -> Result<(), NamespaceError> {
        let mut record = self.inode(inode)?.clone();
        validate_xattr_name(name)?;
        ctime.validate()?;
        if value.len() > cx.config.xattr_value_bytes_max {
            return Err(NamespaceError::limit(Limit::XattrValue));
        }
        let key = (inode, name.to_vec());
        let exists = self.xattrs.contains_key(&key);
        match (mode, exists) {
            (XattrSetMode::Create, true) => return Err(NamespaceError::AlreadyExists),
            (XattrSetMode::Replace, false) => return Err(NamespaceError::NoData),
            _ => {}
        }
        if !exists && record.xattr_count >= cx.config.xattrs_per_inode_max {
            return Err(NamespaceError::limit(Limit::Xattrs));
        }

        // Commit: nothing below fails.
        self.xattrs.insert(key, Arc::new(value.to_vec()));
        if !exists {
            record.xattr_count += 1;
        }
        record.touch(ctime);
        self.put_inode(inode, record);
        cx.event(inode, WatchKind::XattrModified, None);
        cx.inode = Some(inode);
        Ok(())
    }

    /// Removes an extended attribute.
    pub(crate) fn remove_xattr(
        &mut self,
        cx: &mut Context<'_>,
        inode: InodeId,
        name: &[u8],
        ctime: Timestamp,
    ) -> Result<(), NamespaceError> {
        let mut record = self.inode(inode)?.clone();
        validate_xattr_name(name)?;
        ctime.validate()?;
        let key = (inode, name.to_vec());
        if !self.xattrs.contains_key(&key) {
            return Err(NamespaceError::NoData);
        }

        // Commit: nothing below fails.
        self.xattrs.remove(&key);
        record.xattr_count -= 1;
        record.touch(ctime);
        self.put_inode(inode, record);
        cx.event(inode, WatchKind::XattrModified, None);
        cx.inode = Some(inode);
        Ok(())
    }
}

/// Checks an xattr name: 1 to 255 bytes, no NUL.
pub(crate) fn validate_xattr_name(name: &[u8]) -> Result<(), NamespaceError> {
    if name.len() > XATTR_NAME_BYTES_MAX {
        return Err(NamespaceError::limit(Limit::XattrName));
    }
    if name.is_empty() || name.contains(&0) {
        return Err(NamespaceError::invalid("xattr name empty or holding NUL"));
    }
    Ok(())
}
