//! Multipart uploads. The upload and its parts live in the namespace's shard
//! (`MultipartBegin`, `MultipartPart`), so any gateway can continue, list or abort an
//! upload another one began, and one killed mid-upload loses no acknowledged part. A part
//! is streamed into sealed chunks and committed with its MD5 ETag; completion checks the
//! listed parts and their sizes against the stored ones and commits the object in one
//! `MultipartComplete` (I-S1). Abort drops the parts; their chunks lose their references.

use kiseki_namespace::{CompletedPart, Delta, NamespaceError, ObjectCondition, UploadId, UploadInfo};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::errors::{client_error, namespace_error};
use super::meta::{self, StoredHeaders};
use super::objects::{self, new_attributes, parent_dirs, write_condition};
use super::paths::key_path;
use super::{versions, BucketRef, S3Gateway};

/// Smallest part S3 allows, except the last.
pub const PART_BYTES_MIN: u64 = 5 << 20;
/// Largest part S3 allows.
pub const PART_BYTES_MAX: u64 = 5 << 30;
/// Highest part number.
pub const PART_NUMBER_MAX: i32 = 10_000;

fn upload_id(text: &str) -> S3Result<UploadId> {
    text.parse().map(UploadId).map_err(|_| s3_error!(NoSuchUpload))
}

/// The upload `id` of `key` in `bucket` (`NoSuchUpload` when it is not that upload),
/// matched on the key and bucket stored with it, so it is found even when its directory
/// was removed meanwhile.
async fn find_upload(bucket: &BucketRef, key: &str, id: UploadId) -> S3Result<UploadInfo> {
    key_path(key)?;
    let after = id.0.checked_sub(1).map(UploadId);
    let uploads = bucket.namespace.uploads(after, 1).await.map_err(client_error)?;
    let bucket_dir = bucket.dir.0.to_string();
    let found = uploads.into_iter().next().filter(|upload| {
        let stored = &upload.meta.system_metadata;
        upload.upload_id == id
            && stored.get(UPLOAD_KEY).map(String::as_str) == Some(key)
            && stored.get(UPLOAD_BUCKET) == Some(&bucket_dir)
    });
    found.ok_or_else(|| s3_error!(NoSuchUpload))
}

/// Stored with an upload's metadata: the key and the bucket's directory, so listings of
/// uploads need no walk up the tree (kept with the object, never shown).
pub(crate) const UPLOAD_KEY: &str = "x-kiseki-upload-key";
pub(crate) const UPLOAD_BUCKET: &str = "x-kiseki-upload-bucket";

/// Every upload in progress whose object goes into `bucket`, with its key.
pub(crate) async fn uploads_in(bucket: &BucketRef) -> S3Result<Vec<(String, UploadInfo)>> {
    let mut found = Vec::new();
    let mut after = None;
    let bucket_dir = bucket.dir.0.to_string();
    loop {
        let page = bucket.namespace.uploads(after, 1000).await.map_err(client_error)?;
        let Some(last) = page.last() else {
            return Ok(found);
        };
        after = Some(last.upload_id);
        for upload in page {
            if upload.meta.system_metadata.get(UPLOAD_BUCKET) != Some(&bucket_dir) {
                continue;
            }
            if let Some(key) = upload.meta.system_metadata.get(UPLOAD_KEY).cloned() {
                found.push((key, upload));
            }
        }
    }
}

pub(crate) async fn create(
    gateway: &S3Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let path = key_path(&input.key)?;
    if path.marker {
        return Err(s3_error!(InvalidArgument, "a key ending in `/` is a directory"));
    }
    let Some(dirs) = parent_dirs(&bucket, &path, true).await? else {
        return Err(s3_error!(InternalError, "parent directories were not created"));
    };
    let headers = StoredHeaders::new(
        input.content_type,
        input.metadata,
        input.content_encoding,
        input.content_disposition,
        input.content_language,
        input.cache_control,
    );
    let mut meta = headers.into_meta(String::new());
    let status = versions::status(&bucket).await?;
    if status != versions::Status::Unversioned {
        versions::check_key(&path)?;
    }
    // The object's version id is set now; the status at completion decides what it
    // replaces.
    versions::stamp(&mut meta, status);
    meta.system_metadata.insert(UPLOAD_KEY.to_owned(), input.key.clone());
    meta.system_metadata
        .insert(UPLOAD_BUCKET.to_owned(), bucket.dir.0.to_string());
    let delta = Delta::MultipartBegin {
        parent: dirs[dirs.len() - 1],
        name: path.name().as_bytes().to_vec(),
        meta,
        initiated: objects::now(),
    };
    let id = bucket.namespace.begin_upload(&delta).await.map_err(client_error)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(bucket.name.clone()),
        key: Some(input.key),
        upload_id: Some(id.0.to_string()),
        ..Default::default()
    }))
}

fn check_part_number(part_number: i32) -> S3Result<u32> {
    if !(1..=PART_NUMBER_MAX).contains(&part_number) {
        return Err(s3_error!(InvalidArgument, "part numbers go from 1 to 10000"));
    }
    Ok(part_number as u32)
}

async fn commit_part(
    bucket: &BucketRef,
    id: UploadId,
    part_number: u32,
    etag: &str,
    extents: Vec<kiseki_namespace::Extent>,
) -> S3Result<()> {
    let delta = Delta::MultipartPart {
        upload_id: id,
        part_number,
        etag: etag.to_owned(),
        extents,
    };
    match bucket.namespace.propose(&delta).await {
        Ok(_) => Ok(()),
        Err(kiseki_client::ClientError::Namespace(kiseki_namespace::NamespaceError::NotFound)) => {
            Err(s3_error!(NoSuchUpload))
        }
        Err(error) => Err(client_error(error)),
    }
}

pub(crate) async fn upload_part(
    gateway: &S3Gateway,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let part_number = check_part_number(input.part_number)?;
    let id = upload_id(&input.upload_id)?;
    find_upload(&bucket, &input.key, id).await?;
    if input
        .content_length
        .is_some_and(|length| length as u64 > PART_BYTES_MAX)
    {
        return Err(s3_error!(EntityTooLarge, "a part holds at most 5 GiB"));
    }
    let (stored, md5) = objects::store_body(&bucket.namespace, input.body).await?;
    objects::check_content_md5(input.content_md5.as_deref(), &md5)?;
    let etag = meta::hex(&md5);
    commit_part(&bucket, id, part_number, &etag, stored.extents).await?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    }))
}

/// Parses `bytes=first-last` of a copy source range against the source's size.
pub(crate) fn copy_range(range: Option<&str>, size: u64) -> S3Result<(u64, u64)> {
    let Some(range) = range else {
        return Ok((0, size));
    };
    let invalid = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last");
    let spec = range.strip_prefix("bytes=").ok_or_else(invalid)?;
    let (first, last) = spec.split_once('-').ok_or_else(invalid)?;
    let first: u64 = first.parse().map_err(|_| invalid())?;
    let last: u64 = last.parse().map_err(|_| invalid())?;
    if first > last || last >= size {
        return Err(s3_error!(InvalidRange));
    }
    Ok((first, last + 1))
}

pub(crate) async fn upload_part_copy(
    gateway: &S3Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let (source_bucket, source_key, source_version) =
        objects::copy_source(gateway, &req, &req.input.copy_source).await?;
    let input = req.input;
    let part_number = check_part_number(input.part_number)?;
    let id = upload_id(&input.upload_id)?;
    find_upload(&bucket, &input.key, id).await?;
    let conditions = meta::ReadConditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    };
    let source = objects::find_copy_source(&source_bucket, &source_key, source_version.as_deref(), &conditions).await?;
    let (start, end) = copy_range(input.copy_source_range.as_deref(), source.attributes.size_bytes)?;
    if end - start > PART_BYTES_MAX {
        return Err(s3_error!(EntityTooLarge, "a part holds at most 5 GiB"));
    }
    // Name the source's chunks when it is extents end to end: no byte moves. The part's
    // ETag then is an MD5 over what it names (opaque to clients, as S3 says part ETags
    // are), not over its bytes.
    let (extents, etag) = match objects::extents_of(&source_bucket.namespace, source.inode, start, end).await? {
        Some(extents) => {
            let mut named = format!("{}:{start}-{end}", source.etag);
            for extent in &extents {
                named.push_str(&meta::hex(&extent.chunk_locator));
                named.push_str(&format!(":{}+{}", extent.chunk_offset_bytes, extent.length_bytes));
            }
            (extents, meta::md5_hex(named.as_bytes()))
        }
        None => {
            let (stored, md5) =
                objects::copy_bytes(&source_bucket.namespace, source.inode, start, end, &bucket.namespace).await?;
            (stored.extents, meta::hex(&md5))
        }
    };
    commit_part(&bucket, id, part_number, &etag, extents).await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(meta::timestamp(objects::now())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub(crate) async fn complete(
    gateway: &S3Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let id = upload_id(&input.upload_id)?;
    let upload = find_upload(&bucket, &input.key, id).await?;
    let version_id = versions::version_of(Some(&upload.meta)).to_owned();
    let listed = input
        .multipart_upload
        .and_then(|upload| upload.parts)
        .unwrap_or_default();
    if listed.is_empty() {
        return Err(s3_error!(MalformedXML, "a complete lists at least one part"));
    }
    let stored = bucket.namespace.all_parts(id).await.map_err(client_error)?;
    let mut numbers = Vec::with_capacity(listed.len());
    for part in &listed {
        let number = check_part_number(
            part.part_number
                .ok_or_else(|| s3_error!(MalformedXML, "a part without a number"))?,
        )?;
        if numbers.last().is_some_and(|&previous| number <= previous) {
            return Err(s3_error!(InvalidPartOrder));
        }
        numbers.push(number);
    }
    let mut parts = Vec::with_capacity(listed.len());
    for (index, (part, &number)) in listed.iter().zip(&numbers).enumerate() {
        let wanted = part
            .e_tag
            .as_ref()
            .map(|etag| etag.value().to_owned())
            .unwrap_or_default();
        let Some(found) = stored.iter().find(|stored| stored.part_number == number) else {
            return Err(s3_error!(InvalidPart, "part {number} was not uploaded"));
        };
        if found.etag != wanted.trim_matches('"') {
            return Err(s3_error!(InvalidPart, "part {number}: the ETag differs"));
        }
        if index + 1 < listed.len() && found.size_bytes < PART_BYTES_MIN {
            return Err(s3_error!(
                EntityTooSmall,
                "part {number} is smaller than 5 MiB and not the last"
            ));
        }
        parts.push(CompletedPart {
            part_number: number,
            etag: found.etag.clone(),
        });
    }
    let etag = meta::multipart_etag(parts.iter().map(|part| part.etag.as_str()));
    let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    let status = versions::status(&bucket).await?;
    let path = key_path(&input.key)?;
    versions::commit_write(&bucket, &path, status, condition, |condition| {
        let delta = Delta::MultipartComplete {
            upload_id: id,
            parts: parts.clone(),
            etag: etag.clone(),
            attributes: new_attributes(0o644),
            condition,
        };
        let (bucket, key) = (&bucket, &input.key);
        async move {
            let kept_version = matches!(
                delta,
                Delta::MultipartComplete {
                    condition: ObjectCondition::IfVersion { .. },
                    ..
                }
            );
            match bucket.namespace.propose(&delta).await {
                Ok(_) => Ok(()),
                // The version kept was deleted meanwhile: a lost race while the upload
                // is still there (tried again), else the upload is gone.
                Err(kiseki_client::ClientError::Namespace(NamespaceError::NotFound)) if kept_version => {
                    find_upload(bucket, key, id).await?;
                    Err(s3_error!(PreconditionFailed, "the key changed during the completion"))
                }
                Err(kiseki_client::ClientError::Namespace(error)) => Err(namespace_error(error)),
                Err(error) => Err(client_error(error)),
            }
        }
    })
    .await?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        version_id: (status != versions::Status::Unversioned).then(|| version_id.clone()),
        bucket: Some(bucket.name.clone()),
        key: Some(input.key),
        e_tag: Some(ETag::Strong(etag)),
        location: None,
        ..Default::default()
    }))
}

pub(crate) async fn abort(
    gateway: &S3Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let id = upload_id(&req.input.upload_id)?;
    find_upload(&bucket, &req.input.key, id).await?;
    let delta = Delta::MultipartAbort { upload_id: id };
    match bucket.namespace.propose(&delta).await {
        Ok(_) => Ok(S3Response::new(AbortMultipartUploadOutput::default())),
        Err(kiseki_client::ClientError::Namespace(kiseki_namespace::NamespaceError::NotFound)) => {
            Err(s3_error!(NoSuchUpload))
        }
        Err(error) => Err(client_error(error)),
    }
}

pub(crate) async fn list_parts(
    gateway: &S3Gateway,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let id = upload_id(&input.upload_id)?;
    find_upload(&bucket, &input.key, id).await?;
    let after = input.part_number_marker.unwrap_or(0).clamp(0, PART_NUMBER_MAX) as u32;
    let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as u32;
    let mut parts = bucket.namespace.parts(id, after, max + 1).await.map_err(client_error)?;
    let truncated = parts.len() > max as usize;
    parts.truncate(max as usize);
    let next = parts.last().map(|part| part.part_number as i32);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(bucket.name.clone()),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: truncated.then_some(next).flatten(),
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: Some(
            parts
                .into_iter()
                .map(|part| Part {
                    part_number: Some(part.part_number as i32),
                    e_tag: Some(ETag::Strong(part.etag)),
                    size: Some(part.size_bytes as i64),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub(crate) async fn list_uploads(
    gateway: &S3Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let prefix = input.prefix.clone().unwrap_or_default();
    let mut uploads: Vec<(String, UploadInfo)> = uploads_in(&bucket)
        .await?
        .into_iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .collect();
    uploads.sort_by(|(a_key, a), (b_key, b)| a_key.cmp(b_key).then(a.upload_id.cmp(&b.upload_id)));
    if let Some(marker) = input.key_marker.as_deref() {
        let id_marker = input.upload_id_marker.as_deref().and_then(|id| id.parse::<u64>().ok());
        uploads.retain(|(key, upload)| match id_marker {
            Some(id) => key.as_str() > marker || (key == marker && upload.upload_id.0 > id),
            None => key.as_str() > marker,
        });
    }
    let max = input.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
    let truncated = uploads.len() > max;
    uploads.truncate(max);
    let next = uploads
        .last()
        .map(|(key, upload)| (key.clone(), upload.upload_id.0.to_string()));
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(bucket.name.clone()),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        next_key_marker: truncated.then(|| next.clone().map(|(key, _)| key)).flatten(),
        next_upload_id_marker: truncated.then(|| next.map(|(_, id)| id)).flatten(),
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        uploads: Some(
            uploads
                .into_iter()
                .map(|(key, upload)| MultipartUpload {
                    key: Some(key),
                    upload_id: Some(upload.upload_id.0.to_string()),
                    initiated: Some(meta::timestamp(upload.initiated)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}
