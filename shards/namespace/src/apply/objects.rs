//! S3 objects: put, delete and multipart uploads.

use std::sync::Arc;

use crate::apply::{validate_extents, validate_inline, Context};
use crate::delta::{CompletedPart, ObjectCondition, ObjectContent};
use crate::error::{Limit, NamespaceError};
use crate::tables::{InodeBody, InodeRecord, PartRecord, Tables, UploadRecord};
use crate::types::{
    validate_name, Extent, FileKind, InodeId, NewAttributes, ObjectMeta, SealedInline, Timestamp, UploadId,
};
use crate::watch::WatchKind;

/// The fields of an object put delta.
pub(crate) struct ObjectPutRequest<'a> {
    pub parent: InodeId,
    pub name: &'a [u8],
    pub content: &'a ObjectContent,
    pub meta: &'a ObjectMeta,
    pub attributes: &'a NewAttributes,
    pub condition: &'a ObjectCondition,
}

/// A checked object put, ready to commit.
struct PutPlan {
    parent: InodeId,
    parent_record: InodeRecord,
    name: Vec<u8>,
    /// The inode whose name the object takes over.
    replaced: Option<InodeId>,
    /// The new file's record (size, inline bytes, metadata set; no extents yet).
    record: InodeRecord,
    extents: Vec<Extent>,
    time: Timestamp,
}

/// Checks an object condition against the entry it concerns.
fn check_condition(
    existing: Option<(InodeId, &InodeRecord)>,
    condition: &ObjectCondition,
) -> Result<(), NamespaceError> {
    match (condition, existing) {
        (ObjectCondition::Any, _) | (ObjectCondition::IfAbsent, None) => Ok(()),
        (ObjectCondition::IfAbsent, Some(_)) => Err(NamespaceError::PreconditionFailed),
        (ObjectCondition::IfEtagMatches(_) | ObjectCondition::IfVersion { .. }, None) => Err(NamespaceError::NotFound),
        (ObjectCondition::IfEtagMatches(etag), Some((_, record))) => {
            match record.object_meta.as_ref().is_some_and(|meta| meta.etag == *etag) {
                true => Ok(()),
                false => Err(NamespaceError::PreconditionFailed),
            }
        }
        (ObjectCondition::IfVersion { inode, generation }, Some((id, record))) => {
            match *inode == id && *generation == record.attributes.generation {
                true => Ok(()),
                false => Err(NamespaceError::PreconditionFailed),
            }
        }
    }
}

fn validate_meta(cx: &Context<'_>, meta: &ObjectMeta) -> Result<(), NamespaceError> {
    if meta.size_bytes() > cx.config.object_meta_bytes_max {
        return Err(NamespaceError::limit(Limit::ObjectMeta));
    }
    Ok(())
}

impl Tables {
    /// Checks an object put of `inline` bytes or `extents` (`size_bytes` in total).
    #[allow(clippy::too_many_arguments)]
    fn prepare_object(
        &self,
        cx: &Context<'_>,
        parent: InodeId,
        name: &[u8],
        attributes: &NewAttributes,
        condition: &ObjectCondition,
        meta: ObjectMeta,
        inline: Option<SealedInline>,
        extents: Vec<Extent>,
        size_bytes: u64,
    ) -> Result<PutPlan, NamespaceError> {
        validate_name(name)?;
        attributes.validate()?;
        validate_meta(cx, &meta)?;
        let parent_record = self.directory(parent)?.clone();
        let existing = self.dentry(parent, name);
        let existing_record = match existing {
            Some(entry) => Some((entry.inode, self.inode(entry.inode)?)),
            None => None,
        };
        if existing_record.is_some_and(|(_, record)| record.kind() == FileKind::Directory) {
            return Err(NamespaceError::IsDirectory);
        }
        check_condition(existing_record, condition)?;
        self.check_new_inode(cx.config)?;
        match existing {
            None => self.check_new_dentry(cx.config, &parent_record)?,
            Some(_)
                if parent_record
                    .directory()
                    .is_some_and(|directory| directory.next_cookie == u64::MAX) =>
            {
                return Err(NamespaceError::limit(Limit::Counter));
            }
            Some(_) => {}
        }
        if extents.len() as u64 > cx.config.extents_per_file_max {
            return Err(NamespaceError::limit(Limit::Extents));
        }
        let time = attributes.time;
        let body = InodeBody::File { inline };
        let mut record = InodeRecord::new(
            FileKind::File,
            body,
            attributes.mode,
            attributes.uid,
            attributes.gid,
            time,
        );
        record.attributes.size_bytes = size_bytes;
        record.object_meta = Some(meta);
        Ok(PutPlan {
            parent,
            parent_record,
            name: name.to_vec(),
            replaced: existing.map(|entry| entry.inode),
            record,
            extents,
            time,
        })
    }

    /// Commits a checked object put.
    fn commit_object(&mut self, cx: &mut Context<'_>, plan: PutPlan) {
        let PutPlan {
            parent,
            mut parent_record,
            name,
            replaced,
            mut record,
            extents,
            time,
        } = plan;
        if let Some(replaced) = replaced {
            self.remove_name(cx, parent, &mut parent_record, &name, replaced, time);
        }
        let id = self.allocate_inode();
        let mut offset = 0;
        for extent in extents {
            let length = extent.length_bytes;
            self.insert_extent(&mut record, id, offset, extent, cx);
            offset += length;
        }
        self.put_inode(id, record);
        self.add_dentry(parent, &mut parent_record, &name, id);
        parent_record.touch_content(time);
        self.put_inode(parent, parent_record);
        cx.event(id, WatchKind::Created, Some((parent, &name)));
        cx.inode = Some(id);
    }

    /// Creates or replaces an object.
    pub(crate) fn object_put(
        &mut self,
        cx: &mut Context<'_>,
        put: &ObjectPutRequest<'_>,
    ) -> Result<(), NamespaceError> {
        let (inline, extents, size_bytes) = match put.content {
            ObjectContent::Inline(data) => {
                validate_inline(cx.config, data)?;
                (Some(data.clone()), Vec::new(), data.length_bytes)
            }
            ObjectContent::Extents(extents) => {
                let size_bytes = validate_extents(cx.config, extents)?;
                (None, extents.clone(), size_bytes)
            }
        };
        let plan = self.prepare_object(
            cx,
            put.parent,
            put.name,
            put.attributes,
            put.condition,
            put.meta.clone(),
            inline,
            extents,
            size_bytes,
        )?;
        // Commit: nothing below fails.
        self.commit_object(cx, plan);
        Ok(())
    }

    /// Deletes an object.
    pub(crate) fn object_delete(
        &mut self,
        cx: &mut Context<'_>,
        parent: InodeId,
        name: &[u8],
        condition: &ObjectCondition,
        ctime: Timestamp,
    ) -> Result<(), NamespaceError> {
        validate_name(name)?;
        ctime.validate()?;
        if *condition == ObjectCondition::IfAbsent {
            return Err(NamespaceError::invalid(
                "a delete cannot require the object to be absent",
            ));
        }
        let mut parent_record = self.directory(parent)?.clone();
        let entry = self.dentry(parent, name).ok_or(NamespaceError::NotFound)?;
        let record = self.inode(entry.inode)?;
        if record.kind() == FileKind::Directory {
            return Err(NamespaceError::IsDirectory);
        }
        check_condition(Some((entry.inode, record)), condition)?;

        // Commit: nothing below fails.
        self.remove_name(cx, parent, &mut parent_record, name, entry.inode, ctime);
        self.put_inode(parent, parent_record);
        cx.inode = Some(entry.inode);
        Ok(())
    }

    /// Starts a multipart upload.
    pub(crate) fn multipart_begin(
        &mut self,
        cx: &mut Context<'_>,
        parent: InodeId,
        name: &[u8],
        meta: &ObjectMeta,
        initiated: Timestamp,
    ) -> Result<(), NamespaceError> {
        validate_name(name)?;
        initiated.validate()?;
        validate_meta(cx, meta)?;
        self.directory(parent)?;
        if self.uploads.len() as u64 >= cx.config.multipart_uploads_max {
            return Err(NamespaceError::limit(Limit::MultipartUploads));
        }
        if self.next_upload == u64::MAX {
            return Err(NamespaceError::limit(Limit::Counter));
        }

        // Commit: nothing below fails.
        let upload_id = UploadId(self.next_upload);
        self.next_upload += 1;
        let upload = UploadRecord {
            parent,
            name: name.to_vec(),
            meta: meta.clone(),
            initiated,
            part_count: 0,
        };
        self.uploads.insert(upload_id, Arc::new(upload));
        cx.event(parent, WatchKind::MultipartBegun { upload_id }, Some((parent, name)));
        cx.upload_id = Some(upload_id);
        Ok(())
    }

    /// Stores or replaces one part.
    pub(crate) fn multipart_part(
        &mut self,
        cx: &mut Context<'_>,
        upload_id: UploadId,
        part_number: u32,
        etag: &str,
        extents: &[Extent],
    ) -> Result<(), NamespaceError> {
        let mut upload = self
            .uploads
            .get(&upload_id)
            .ok_or(NamespaceError::NotFound)?
            .as_ref()
            .clone();
        if part_number == 0 || part_number > cx.config.multipart_part_number_max {
            return Err(NamespaceError::invalid("part number out of range"));
        }
        if etag.len() > cx.config.object_meta_bytes_max {
            return Err(NamespaceError::limit(Limit::ObjectMeta));
        }
        let size_bytes = validate_extents(cx.config, extents)?;

        // Commit: nothing below fails.
        let part = PartRecord {
            etag: etag.to_owned(),
            size_bytes,
            extents: extents.to_vec(),
        };
        self.reference_extents(&part.extents, cx);
        self.totals.multipart_parts = self.totals.multipart_parts.wrapping_add(1);
        self.totals.multipart_bytes = self.totals.multipart_bytes.wrapping_add(size_bytes);
        match self.parts.insert((upload_id, part_number), Arc::new(part)) {
            Some(old) => self.forget_part(&old, cx),
            None => upload.part_count += 1,
        }
        let (parent, name) = (upload.parent, upload.name.clone());
        self.uploads.insert(upload_id, Arc::new(upload));
        let kind = WatchKind::MultipartPartStored { upload_id, part_number };
        cx.event(parent, kind, Some((parent, &name)));
        cx.upload_id = Some(upload_id);
        Ok(())
    }

    /// Completes an upload into an object.
    pub(crate) fn multipart_complete(
        &mut self,
        cx: &mut Context<'_>,
        upload_id: UploadId,
        parts: &[CompletedPart],
        etag: &str,
        attributes: &NewAttributes,
        condition: &ObjectCondition,
    ) -> Result<(), NamespaceError> {
        let upload = Arc::clone(self.uploads.get(&upload_id).ok_or(NamespaceError::NotFound)?);
        if parts.is_empty() {
            return Err(NamespaceError::invalid("a completion names no part"));
        }
        if parts.windows(2).any(|pair| pair[0].part_number >= pair[1].part_number) {
            return Err(NamespaceError::invalid("parts are not in ascending order"));
        }
        let mut extents = Vec::new();
        let mut size_bytes: u64 = 0;
        for completed in parts {
            let part_number = completed.part_number;
            let part = self
                .parts
                .get(&(upload_id, part_number))
                .filter(|part| part.etag == completed.etag)
                .ok_or(NamespaceError::InvalidPart { part_number })?;
            if (extents.len() + part.extents.len()) as u64 > cx.config.extents_per_file_max {
                return Err(NamespaceError::limit(Limit::Extents));
            }
            extents.extend(part.extents.iter().cloned());
            size_bytes = size_bytes
                .checked_add(part.size_bytes)
                .filter(|size| *size <= cx.config.file_bytes_max)
                .ok_or(NamespaceError::limit(Limit::FileSize))?;
        }
        let mut meta = upload.meta.clone();
        meta.etag = etag.to_owned();
        let plan = self.prepare_object(
            cx,
            upload.parent,
            &upload.name,
            attributes,
            condition,
            meta,
            None,
            extents,
            size_bytes,
        )?;

        // Commit: nothing below fails.
        self.commit_object(cx, plan);
        self.drop_upload(upload_id, cx);
        cx.upload_id = Some(upload_id);
        Ok(())
    }

    /// Aborts an upload.
    pub(crate) fn multipart_abort(&mut self, cx: &mut Context<'_>, upload_id: UploadId) -> Result<(), NamespaceError> {
        let upload = Arc::clone(self.uploads.get(&upload_id).ok_or(NamespaceError::NotFound)?);

        // Commit: nothing below fails.
        self.drop_upload(upload_id, cx);
        let kind = WatchKind::MultipartAborted { upload_id };
        cx.event(upload.parent, kind, Some((upload.parent, &upload.name)));
        cx.upload_id = Some(upload_id);
        Ok(())
    }

    /// Releases a part's chunk references and totals (the part is already out of the map).
    fn forget_part(&mut self, part: &PartRecord, cx: &mut Context<'_>) {
        self.release_extents(&part.extents, cx);
        self.totals.multipart_parts = self.totals.multipart_parts.wrapping_sub(1);
        self.totals.multipart_bytes = self.totals.multipart_bytes.wrapping_sub(part.size_bytes);
    }

    /// Removes an upload and all its parts.
    fn drop_upload(&mut self, upload_id: UploadId, cx: &mut Context<'_>) {
        let keys: Vec<(UploadId, u32)> = self
            .parts
            .range((upload_id, 0)..=(upload_id, u32::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            if let Some(part) = self.parts.remove(&key) {
                self.forget_part(&part, cx);
            }
        }
        self.uploads.remove(&upload_id);
    }
}
