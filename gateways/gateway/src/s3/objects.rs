//! Objects: PUT (streamed into sealed chunks, committed in one `ObjectPut`), GET and
//! HEAD (ranged, conditional, streamed), DELETE, DeleteObjects and CopyObject (the copy
//! names the source's chunks; no byte goes through the gateway unless the source has
//! holes).

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kiseki_client::{ClientError, Namespace, ObjectWriter, StoredData};
use kiseki_namespace::{
    Attributes, Delta, Extent, FileKind, InodeId, NamespaceError, NewAttributes, ObjectCondition, ObjectContent,
    ObjectMeta, ReadPiece,
};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::errors::{client_error, namespace_error};
use super::meta::{self, ReadConditions, StoredHeaders};
use super::paths::{key_path, KeyPath};
use super::{versions, BucketRef, S3Gateway};

/// Largest single PUT S3 allows (larger objects go in multipart uploads).
pub const PUT_BYTES_MAX: u64 = 5 << 30;
/// ETag of no bytes.
pub const EMPTY_ETAG: &str = "d41d8cd98f00b204e9800998ecf8427e";
/// Attempts of a commit whose parent directory vanished meanwhile (an empty directory
/// pruned by a concurrent delete).
const COMMIT_ATTEMPTS_MAX: usize = 3;

/// Now, as deltas carry it.
pub(crate) fn now() -> kiseki_namespace::Timestamp {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    kiseki_namespace::Timestamp::new(elapsed.as_secs() as i64, elapsed.subsec_nanos())
}

/// Attributes of a new object or directory.
pub(crate) fn new_attributes(mode: u32) -> NewAttributes {
    NewAttributes {
        mode,
        uid: 0,
        gid: 0,
        time: now(),
    }
}

/// The directories above a key, from the bucket down; created where missing when
/// `create`. `None` when one is missing and not created.
pub(crate) async fn parent_dirs(
    bucket: &BucketRef,
    path: &KeyPath<'_>,
    create: bool,
) -> S3Result<Option<Vec<InodeId>>> {
    let namespace = &bucket.namespace;
    let mut dirs = vec![bucket.dir];
    for segment in path.parents() {
        let parent = dirs[dirs.len() - 1];
        let dir = match namespace.lookup(parent, segment.as_bytes()).await {
            Ok((dir, attributes)) if attributes.kind == FileKind::Directory => dir,
            Ok(_) if create => return Err(namespace_error(NamespaceError::NotDirectory)),
            Ok(_) => return Ok(None),
            Err(ClientError::Namespace(NamespaceError::NotFound)) if create => {
                mkdir(namespace, parent, segment.as_bytes()).await?
            }
            Err(ClientError::Namespace(NamespaceError::NotFound)) => return Ok(None),
            Err(error) => return Err(client_error(error)),
        };
        dirs.push(dir);
    }
    Ok(Some(dirs))
}

/// Makes the directory `name` in `parent`, or finds the one made meanwhile.
pub(crate) async fn mkdir(namespace: &Namespace, parent: InodeId, name: &[u8]) -> S3Result<InodeId> {
    let delta = Delta::Mkdir {
        parent,
        name: name.to_vec(),
        attributes: new_attributes(0o755),
    };
    match namespace.propose(&delta).await {
        Ok((Some(dir), _)) => Ok(dir),
        Ok((None, _)) => Err(s3_error!(InternalError, "mkdir answered without an inode")),
        Err(ClientError::Namespace(NamespaceError::AlreadyExists)) => match namespace.lookup(parent, name).await {
            Ok((dir, attributes)) if attributes.kind == FileKind::Directory => Ok(dir),
            Ok(_) => Err(namespace_error(NamespaceError::NotDirectory)),
            Err(error) => Err(client_error(error)),
        },
        Err(error) => Err(client_error(error)),
    }
}

/// A found object: a file, or a directory marker.
pub(crate) struct Found {
    pub inode: InodeId,
    pub attributes: Attributes,
    pub meta: Option<ObjectMeta>,
    pub etag: String,
}

/// The object `key` of `bucket` (`NoSuchKey` when absent).
pub(crate) async fn find(bucket: &BucketRef, key: &str) -> S3Result<Found> {
    let path = key_path(key)?;
    let Some(dirs) = parent_dirs(bucket, &path, false).await? else {
        return Err(s3_error!(NoSuchKey));
    };
    let parent = dirs[dirs.len() - 1];
    let (inode, attributes) = match bucket.namespace.lookup(parent, path.name().as_bytes()).await {
        Ok(found) => found,
        Err(ClientError::Namespace(NamespaceError::NotFound)) => return Err(s3_error!(NoSuchKey)),
        Err(error) => return Err(client_error(error)),
    };
    match (attributes.kind, path.marker) {
        (FileKind::Directory, true) => Ok(Found {
            inode,
            attributes,
            meta: None,
            etag: EMPTY_ETAG.to_owned(),
        }),
        (FileKind::File, false) => {
            let meta = bucket.namespace.object_meta(inode).await.map_err(client_error)?;
            let etag = meta::etag_of(meta.as_ref(), inode, &attributes);
            Ok(Found {
                inode,
                attributes,
                meta,
                etag,
            })
        }
        _ => Err(s3_error!(NoSuchKey)),
    }
}

/// The object (version) a GET or HEAD serves, if its conditions hold.
async fn find_for_read(
    bucket: &BucketRef,
    key: &str,
    version_id: Option<&str>,
    conditions: &ReadConditions<'_>,
) -> S3Result<Found> {
    let found = versions::find_version(bucket, key, version_id).await?;
    conditions.check(&found.etag, found.attributes.mtime)?;
    Ok(found)
}

/// The version id a response shows for an object: its own, when it has one.
fn shown_version(found: &Found) -> Option<String> {
    found
        .meta
        .as_ref()
        .and_then(|meta| meta.system_metadata.get(versions::VERSION_ID))
        .cloned()
}

/// The source object of a copy: a file whose `x-amz-copy-source-if-*` conditions hold
/// (a failed one is `PreconditionFailed`, never `NotModified`).
pub(crate) async fn find_copy_source(
    bucket: &BucketRef,
    key: &str,
    version_id: Option<&str>,
    conditions: &ReadConditions<'_>,
) -> S3Result<Found> {
    let source = versions::find_version(bucket, key, version_id).await?;
    if source.attributes.kind != FileKind::File {
        return Err(s3_error!(InvalidRequest, "the copy source is a directory"));
    }
    conditions
        .check(&source.etag, source.attributes.mtime)
        .map_err(|error| match error.code() {
            s3s::S3ErrorCode::NotModified => s3_error!(PreconditionFailed),
            _ => error,
        })?;
    Ok(source)
}

/// Bytes of a body hashed in the request's task before the rest goes to a thread.
const DIGEST_INLINE_BYTES: u64 = 1 << 20;
/// Body pieces queued for the MD5 thread at most (each a piece as the client sent it).
const DIGEST_QUEUE_PIECES: usize = 32;

/// The MD5 of a body as it streams by. The first `DIGEST_INLINE_BYTES` are hashed in the
/// request's task (small objects cost no thread); past that, pieces go through a bounded
/// queue to a blocking thread, so hashing runs beside the chunking and sealing the
/// request's task does instead of before it.
enum BodyDigest {
    Inline {
        hasher: Md5,
        bytes: u64,
    },
    Offloaded {
        pieces: tokio::sync::mpsc::Sender<Bytes>,
        digest: tokio::task::JoinHandle<[u8; 16]>,
    },
}

impl BodyDigest {
    fn new() -> BodyDigest {
        BodyDigest::Inline {
            hasher: Md5::new(),
            bytes: 0,
        }
    }

    async fn update(&mut self, piece: &Bytes) -> S3Result<()> {
        match self {
            BodyDigest::Inline { hasher, bytes } => {
                hasher.update(piece);
                *bytes += piece.len() as u64;
                if *bytes >= DIGEST_INLINE_BYTES {
                    let mut hasher = std::mem::take(hasher);
                    let (pieces, mut queue) = tokio::sync::mpsc::channel::<Bytes>(DIGEST_QUEUE_PIECES);
                    let digest = tokio::task::spawn_blocking(move || {
                        while let Some(piece) = queue.blocking_recv() {
                            hasher.update(&piece);
                        }
                        hasher.finalize().into()
                    });
                    *self = BodyDigest::Offloaded { pieces, digest };
                }
                Ok(())
            }
            BodyDigest::Offloaded { pieces, .. } => pieces
                .send(piece.clone())
                .await
                .map_err(|_| s3_error!(InternalError, "the MD5 thread stopped")),
        }
    }

    async fn finish(self) -> S3Result<[u8; 16]> {
        match self {
            BodyDigest::Inline { hasher, .. } => Ok(hasher.finalize().into()),
            BodyDigest::Offloaded { pieces, digest } => {
                drop(pieces);
                digest
                    .await
                    .map_err(|error| s3_error!(InternalError, "the MD5 thread: {error}"))
            }
        }
    }
}

/// Streams a request body into sealed chunks, hashing it with MD5 on the way.
pub(crate) async fn store_body(namespace: &Namespace, body: Option<StreamingBlob>) -> S3Result<(StoredData, [u8; 16])> {
    let mut writer = namespace.object_writer().map_err(client_error)?;
    let mut digest = BodyDigest::new();
    if let Some(mut body) = body {
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|error| s3_error!(IncompleteBody, "reading the body: {error}"))?;
            digest.update(&piece).await?;
            writer.push(&piece).await.map_err(client_error)?;
        }
    }
    let stored = writer.finish().await.map_err(client_error)?;
    Ok((stored, digest.finish().await?))
}

/// The body of a whole object, stored: one within the namespace's inline bound
/// (`inline_bytes_max`) is sealed into the object's inode (no chunk, design §5), a larger
/// one goes to chunks as [`store_body`] writes them. Returns the content, its length and
/// its MD5.
pub(crate) async fn store_object_body(
    namespace: &Namespace,
    body: Option<StreamingBlob>,
) -> S3Result<(ObjectContent, u64, [u8; 16])> {
    let bound = namespace.options().inline_bytes_max;
    let mut digest = BodyDigest::new();
    let mut head = Vec::new();
    let mut writer: Option<ObjectWriter<'_>> = None;
    if let Some(mut body) = body {
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|error| s3_error!(IncompleteBody, "reading the body: {error}"))?;
            digest.update(&piece).await?;
            if let Some(writer) = writer.as_mut() {
                writer.push(&piece).await.map_err(client_error)?;
                continue;
            }
            head.extend_from_slice(&piece);
            if head.len() > bound {
                let mut chunks = namespace.object_writer().map_err(client_error)?;
                chunks.push(&std::mem::take(&mut head)).await.map_err(client_error)?;
                writer = Some(chunks);
            }
        }
    }
    let md5 = digest.finish().await?;
    match writer {
        Some(writer) => {
            let stored = writer.finish().await.map_err(client_error)?;
            Ok((ObjectContent::Extents(stored.extents), stored.bytes, md5))
        }
        None if head.is_empty() => Ok((ObjectContent::Extents(Vec::new()), 0, md5)),
        None => {
            let sealed = namespace.seal_inline(&head).map_err(client_error)?;
            Ok((ObjectContent::Inline(sealed), head.len() as u64, md5))
        }
    }
}

/// Checks a `Content-MD5` header against the body's MD5 (`BadDigest`, `InvalidDigest`).
pub(crate) fn check_content_md5(content_md5: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    let Some(content_md5) = content_md5 else {
        return Ok(());
    };
    let expected = base64_simd::STANDARD
        .decode_to_vec(content_md5)
        .map_err(|_| s3_error!(InvalidDigest))?;
    if expected.as_slice() != md5.as_slice() {
        return Err(s3_error!(BadDigest, "the body does not match Content-MD5"));
    }
    Ok(())
}

/// The condition of a PUT or a multipart complete.
pub(crate) fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<ObjectCondition> {
    match (if_match, if_none_match) {
        (None, None) => Ok(ObjectCondition::Any),
        (None, Some(ETagCondition::Any)) => Ok(ObjectCondition::IfAbsent),
        (Some(ETagCondition::ETag(etag)), None) => Ok(ObjectCondition::IfEtagMatches(etag.value().to_owned())),
        _ => Err(s3_error!(NotImplemented, "this combination of conditions on a write")),
    }
}

/// Commits an object `key` whose data is `content` (I-S1: every chunk of it is durable).
pub(crate) async fn commit(
    bucket: &BucketRef,
    path: &KeyPath<'_>,
    content: ObjectContent,
    meta: ObjectMeta,
    condition: ObjectCondition,
) -> S3Result<()> {
    for attempt in 1..=COMMIT_ATTEMPTS_MAX {
        let Some(dirs) = parent_dirs(bucket, path, true).await? else {
            return Err(s3_error!(InternalError, "parent directories were not created"));
        };
        let delta = Delta::ObjectPut {
            parent: dirs[dirs.len() - 1],
            name: path.name().as_bytes().to_vec(),
            content: content.clone(),
            meta: meta.clone(),
            attributes: new_attributes(0o644),
            condition: condition.clone(),
        };
        let prunable = matches!(condition, ObjectCondition::Any | ObjectCondition::IfAbsent);
        match bucket.namespace.propose(&delta).await {
            Ok(_) => return Ok(()),
            // The parent was pruned by a concurrent delete: resolve it again.
            Err(ClientError::Namespace(NamespaceError::NotFound)) if prunable && attempt < COMMIT_ATTEMPTS_MAX => {}
            Err(ClientError::Namespace(NamespaceError::NotFound)) if prunable => break,
            Err(ClientError::Namespace(NamespaceError::NotFound)) => {
                return Err(s3_error!(PreconditionFailed, "the object does not exist"))
            }
            Err(error) => return Err(client_error(error)),
        }
    }
    Err(s3_error!(ServiceUnavailable, "the key's directory keeps disappearing"))
}

pub(crate) async fn put_object(
    gateway: &S3Gateway,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let path = key_path(&input.key)?;
    if input.content_length.is_some_and(|length| length as u64 > PUT_BYTES_MAX) {
        return Err(s3_error!(
            EntityTooLarge,
            "a single PUT holds at most 5 GiB; use a multipart upload"
        ));
    }
    if path.marker {
        if input.content_length.is_some_and(|length| length > 0) {
            return Err(s3_error!(
                InvalidArgument,
                "a key ending in `/` is a directory and holds no bytes"
            ));
        }
        let mut marker_path = path.segments.clone();
        marker_path.push("");
        let dirs = parent_dirs(
            &bucket,
            &KeyPath {
                segments: marker_path,
                marker: false,
            },
            true,
        )
        .await?;
        debug_assert!(dirs.is_some());
        return Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(EMPTY_ETAG.to_owned())),
            ..Default::default()
        }));
    }
    let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    let status = versions::status(&bucket).await?;
    if status != versions::Status::Unversioned {
        versions::check_key(&path)?;
    }
    let (content, stored_bytes, md5) = store_object_body(&bucket.namespace, input.body).await?;
    check_content_md5(input.content_md5.as_deref(), &md5)?;
    if stored_bytes > PUT_BYTES_MAX {
        return Err(s3_error!(
            EntityTooLarge,
            "a single PUT holds at most 5 GiB; use a multipart upload"
        ));
    }
    let etag = meta::hex(&md5);
    let headers = StoredHeaders::new(
        input.content_type,
        input.metadata,
        input.content_encoding,
        input.content_disposition,
        input.content_language,
        input.cache_control,
    );
    let mut meta = headers.into_meta(etag.clone());
    let version_id = versions::stamp(&mut meta, status);
    versions::commit_write(&bucket, &path, status, condition, |condition| {
        commit(&bucket, &path, content.clone(), meta.clone(), condition)
    })
    .await?;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(etag)),
        version_id: (status != versions::Status::Unversioned).then_some(version_id),
        ..Default::default()
    }))
}

/// The bytes `[start, end)` of a file as a body stream: a task reads them through the
/// client (verified and decrypted) into a bounded pipe; a failed read ends the stream
/// with an error, so the client sees a broken response, never short data.
fn body_of(namespace: &Namespace, inode: InodeId, start: u64, end: u64) -> StreamingBlob {
    const PIPE_BYTES: usize = 1 << 20;
    let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let namespace = namespace.clone();
    tokio::spawn(async move {
        let result = namespace.read_range(inode, start, end - start, &mut writer).await;
        let _ = done_tx.send(result.map(|_| ()).map_err(|error| error.to_string()));
    });
    let data = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10);
    let tail = futures::stream::once(done_rx).filter_map(|done| async move {
        match done {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(Err(std::io::Error::other(error))),
            Err(_) => Some(Err(std::io::Error::other("the read task stopped"))),
        }
    });
    StreamingBlob::wrap(data.chain(tail).map_ok(Bytes::from))
}

pub(crate) async fn get_object(
    gateway: &S3Gateway,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = &req.input;
    let conditions = ReadConditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    };
    let found = find_for_read(&bucket, &input.key, input.version_id.as_deref(), &conditions).await?;
    let size = found.attributes.size_bytes;
    let (range, content_range) = meta::served_range(input.range.as_ref(), size)?;
    let shown = meta::shown(found.meta.as_ref());
    let body = body_of(&bucket.namespace, found.inode, range.start, range.end);
    Ok(S3Response::new(GetObjectOutput {
        body: Some(body),
        content_length: Some((range.end - range.start) as i64),
        content_range,
        accept_ranges: Some("bytes".to_owned()),
        version_id: shown_version(&found),
        e_tag: Some(ETag::Strong(found.etag)),
        last_modified: Some(meta::timestamp(found.attributes.mtime)),
        content_type: shown.content_type,
        metadata: shown.metadata,
        content_encoding: shown.content_encoding,
        content_disposition: shown.content_disposition,
        content_language: shown.content_language,
        cache_control: shown.cache_control,
        ..Default::default()
    }))
}

pub(crate) async fn head_object(
    gateway: &S3Gateway,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = &req.input;
    let conditions = ReadConditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    };
    let found = find_for_read(&bucket, &input.key, input.version_id.as_deref(), &conditions).await?;
    let size = found.attributes.size_bytes;
    let (range, content_range) = meta::served_range(input.range.as_ref(), size)?;
    let length = range.end - range.start;
    let shown = meta::shown(found.meta.as_ref());
    Ok(S3Response::new(HeadObjectOutput {
        content_length: Some(length as i64),
        content_range,
        accept_ranges: Some("bytes".to_owned()),
        version_id: shown_version(&found),
        e_tag: Some(ETag::Strong(found.etag)),
        last_modified: Some(meta::timestamp(found.attributes.mtime)),
        content_type: shown.content_type,
        metadata: shown.metadata,
        content_encoding: shown.content_encoding,
        content_disposition: shown.content_disposition,
        content_language: shown.content_language,
        cache_control: shown.cache_control,
        ..Default::default()
    }))
}

/// Removes the object at `path` if `condition` holds, and prunes the directories left
/// empty above it (a versioned bucket's delete of the current version). The namespace's
/// refusal comes back inside, as it is; any other failure is the outer error.
pub(crate) async fn remove_object(
    bucket: &BucketRef,
    path: &KeyPath<'_>,
    condition: ObjectCondition,
) -> S3Result<Result<(), NamespaceError>> {
    let Some(dirs) = parent_dirs(bucket, path, false).await? else {
        return Ok(Err(NamespaceError::NotFound));
    };
    let delta = Delta::ObjectDelete {
        parent: dirs[dirs.len() - 1],
        name: path.name().as_bytes().to_vec(),
        condition,
        ctime: now(),
    };
    match bucket.namespace.propose(&delta).await {
        Ok(_) => {}
        Err(ClientError::Namespace(refused)) => return Ok(Err(refused)),
        Err(error) => return Err(client_error(error)),
    }
    if let Err(error) = prune(bucket, path, &dirs).await {
        tracing::debug!(%error, "pruning directories after a delete");
    }
    Ok(Ok(()))
}

/// Deletes `key` (absent keys are fine, as S3 has it) and prunes directories left empty
/// above it, up to the bucket.
pub(crate) async fn delete_key(bucket: &BucketRef, key: &str) -> S3Result<()> {
    let path = key_path(key)?;
    let Some(dirs) = parent_dirs(bucket, &path, false).await? else {
        return Ok(());
    };
    let parent = dirs[dirs.len() - 1];
    let name = path.name().as_bytes().to_vec();
    let namespace = &bucket.namespace;
    let result = match path.marker {
        true => namespace.rmdir_at(parent, &name).await,
        false => {
            let delta = Delta::ObjectDelete {
                parent,
                name,
                condition: ObjectCondition::Any,
                ctime: now(),
            };
            namespace.propose(&delta).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => {}
        // Absent, a directory under a file key, or a marker with keys under it: nothing
        // to delete under that key.
        Err(ClientError::Namespace(
            NamespaceError::NotFound
            | NamespaceError::IsDirectory
            | NamespaceError::NotDirectory
            | NamespaceError::NotEmpty,
        )) => return Ok(()),
        Err(error) => return Err(client_error(error)),
    }
    prune(bucket, &path, &dirs).await
}

/// Prunes the directories above `path` (`dirs`, from the bucket down) that are empty:
/// directories made on demand for keys vanish with their last key, unless an upload in
/// progress will put its object there.
async fn prune(bucket: &BucketRef, path: &KeyPath<'_>, dirs: &[InodeId]) -> S3Result<()> {
    let namespace = &bucket.namespace;
    if dirs.len() == 1 {
        return Ok(());
    }
    let uploads = namespace
        .uploads(None, kiseki_api::READDIR_ENTRIES_MAX)
        .await
        .map_err(client_error)?;
    for depth in (1..dirs.len()).rev() {
        if uploads.iter().any(|upload| upload.parent == dirs[depth])
            || uploads.len() as u32 == kiseki_api::READDIR_ENTRIES_MAX
        {
            break;
        }
        let removed = namespace
            .rmdir_at(dirs[depth - 1], path.segments[depth - 1].as_bytes())
            .await;
        if removed.is_err() {
            break;
        }
    }
    Ok(())
}

pub(crate) async fn delete_object(
    gateway: &S3Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let deleted = delete_one(&bucket, &req.input.key, req.input.version_id.as_deref()).await?;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: deleted.as_ref().map(|deleted| deleted.delete_marker),
        version_id: deleted.map(|deleted| deleted.version_id),
        ..Default::default()
    }))
}

/// Deletes a key or one version of it; `None` when the bucket had no versions to say
/// anything about.
async fn delete_one(bucket: &BucketRef, key: &str, version_id: Option<&str>) -> S3Result<Option<versions::Deleted>> {
    let status = versions::status(bucket).await?;
    if let Some(deleted) = versions::delete(bucket, key, version_id, status).await? {
        return Ok(Some(deleted));
    }
    match version_id {
        // A directory marker: only its `null` version exists.
        Some(version_id) if version_id != versions::NULL_VERSION => Ok(None),
        _ => delete_key(bucket, key).await.map(|()| None),
    }
}

pub(crate) async fn delete_objects(
    gateway: &S3Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let quiet = req.input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for object in &req.input.delete.objects {
        match delete_one(&bucket, &object.key, object.version_id.as_deref()).await {
            Ok(_) if quiet => {}
            Ok(outcome) => deleted.push(DeletedObject {
                key: Some(object.key.clone()),
                version_id: object.version_id.clone(),
                delete_marker: outcome.as_ref().map(|outcome| outcome.delete_marker),
                delete_marker_version_id: outcome
                    .filter(|outcome| outcome.delete_marker)
                    .map(|outcome| outcome.version_id),
            }),
            Err(error) => errors.push(Error {
                key: Some(object.key.clone()),
                code: Some(error.code().as_str().to_owned()),
                message: error.message().map(str::to_owned),
                version_id: object.version_id.clone(),
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}

/// The extents of `[start, end)` of a file, if it is extents end to end (no holes, no
/// inline bytes): a copy can then name them instead of moving bytes.
pub(crate) async fn extents_of(
    namespace: &Namespace,
    inode: InodeId,
    start: u64,
    end: u64,
) -> S3Result<Option<Vec<Extent>>> {
    let mut extents = Vec::new();
    let mut position = start;
    while position < end {
        let pieces = namespace
            .pieces(inode, position, end - position)
            .await
            .map_err(client_error)?;
        let Some(last) = pieces.last().map(ReadPiece::end_bytes) else {
            break;
        };
        for piece in pieces {
            match piece {
                ReadPiece::Extent { extent, .. } => extents.push(extent),
                ReadPiece::Inline { .. } | ReadPiece::Hole { .. } => return Ok(None),
            }
        }
        position = last;
    }
    Ok(Some(extents))
}

/// Copies `[start, end)` of a file of `source` by reading and rewriting it into chunks of
/// `destination` (a source with holes or inline bytes).
pub(crate) async fn copy_bytes(
    source: &Namespace,
    inode: InodeId,
    start: u64,
    end: u64,
    destination: &Namespace,
) -> S3Result<(StoredData, [u8; 16])> {
    let body = body_of(source, inode, start, end);
    store_body(destination, Some(body)).await
}

/// The source of a copy: its bucket (the caller's), key and version id.
pub(crate) async fn copy_source<T>(
    gateway: &S3Gateway,
    req: &S3Request<T>,
    source: &CopySource,
) -> S3Result<(BucketRef, String, Option<String>)> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            gateway.bucket(req, bucket).await?,
            key.to_string(),
            version_id.as_deref().map(str::to_owned),
        )),
        CopySource::AccessPoint { .. } | CopySource::Outpost { .. } => {
            Err(s3_error!(NotImplemented, "copies from access points"))
        }
    }
}

pub(crate) async fn copy_object(
    gateway: &S3Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let (source_bucket, source_key, source_version) = copy_source(gateway, &req, &req.input.copy_source).await?;
    let input = req.input;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|directive| directive.as_str() == MetadataDirective::REPLACE);
    if source_bucket.dir == bucket.dir && source_key == input.key && !replace && source_version.is_none() {
        return Err(s3_error!(
            InvalidRequest,
            "copying an object onto itself needs a metadata directive of REPLACE"
        ));
    }
    let path = key_path(&input.key)?;
    if path.marker {
        return Err(s3_error!(
            InvalidArgument,
            "a key ending in `/` is a directory and holds no bytes"
        ));
    }
    let conditions = ReadConditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    };
    let source = find_copy_source(&source_bucket, &source_key, source_version.as_deref(), &conditions).await?;
    let status = versions::status(&bucket).await?;
    if status != versions::Status::Unversioned {
        versions::check_key(&path)?;
    }
    let size = source.attributes.size_bytes;
    let (content, etag) = match extents_of(&source_bucket.namespace, source.inode, 0, size).await? {
        Some(extents) => (ObjectContent::Extents(extents), source.etag.clone()),
        None => {
            let body = body_of(&source_bucket.namespace, source.inode, 0, size);
            let (content, _, md5) = store_object_body(&bucket.namespace, Some(body)).await?;
            (content, meta::hex(&md5))
        }
    };
    let mut meta = match replace {
        true => StoredHeaders::new(
            input.content_type,
            input.metadata,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
        )
        .into_meta(etag.clone()),
        false => {
            let mut meta = source.meta.clone().unwrap_or_default();
            meta.etag = etag.clone();
            meta
        }
    };
    let version_id = versions::stamp(&mut meta, status);
    versions::commit_write(&bucket, &path, status, ObjectCondition::Any, |condition| {
        commit(&bucket, &path, content.clone(), meta.clone(), condition)
    })
    .await?;
    Ok(S3Response::new(CopyObjectOutput {
        version_id: (status != versions::Status::Unversioned).then_some(version_id),
        copy_source_version_id: source_version.or_else(|| shown_version(&source)),
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(meta::timestamp(now())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}
