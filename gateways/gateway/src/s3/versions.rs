//! Bucket versioning ([decision 0015](../../../../docs/decisions/0015-s3-versioning.md)).
//!
//! A bucket's versioning state is the extended attribute `user.kiseki.s3.versioning` of
//! its directory (absent: never enabled). Noncurrent versions and delete markers live in
//! a version tree beside the buckets, `/.kiseki-versions/BUCKET/`, which mirrors the
//! keys: a parent segment `s` of a key is the directory `ds`, the key's last segment
//! `n` the directory `vn`, and that directory holds one entry per version, named by its
//! version id: a hard link to the version's file, or a symlink for a delete marker. The
//! `d`/`v` prefixes keep a key's versions apart from the keys under it (`a` and `a/b`
//! may both have versions).
//!
//! The current version stays where it always is, at the key's path, with its version id
//! in its metadata (`x-kiseki-version-id`; none is `null`). A write or delete first links
//! the current version into the tree (so it stays reachable whatever happens next), then
//! commits with the condition that the key still holds that very inode (`IfVersion`):
//! two writers racing on a key never lose a version. Version order is inode order (the
//! state machine allocates inode ids in increasing order), so no clock is trusted.
//! Deleting the current version, or the newest delete marker, links the newest remaining
//! version back at the key's path.

use std::collections::VecDeque;

use kiseki_api::ListedEntry;
use kiseki_client::{ClientError, Creator, Namespace};
use kiseki_namespace::{Attributes, FileKind, InodeId, NamespaceError, ObjectCondition, ObjectMeta};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::errors::client_error;
use super::list::all_names;
use super::meta;
use super::objects::{self, parent_dirs, Found};
use super::paths::{key_path, KeyPath};
use super::{BucketRef, S3Gateway};

/// Where an object's version id is stored in its metadata (never shown as a header).
pub(crate) const VERSION_ID: &str = "x-kiseki-version-id";
/// The extended attribute of a bucket's directory holding its versioning state.
const VERSIONING_XATTR: &[u8] = b"user.kiseki.s3.versioning";
/// The directory at the namespace's root holding every bucket's version tree (a name no
/// bucket can have: bucket names start with a letter or digit).
pub(crate) const VERSIONS_ROOT: &[u8] = b".kiseki-versions";
/// The target of a delete marker's symlink.
const DELETE_MARKER_TARGET: &[u8] = b"kiseki:s3-delete-marker";
/// The version id of objects written while versioning was off or suspended.
pub(crate) const NULL_VERSION: &str = "null";
/// Attempts at a step of the version tree that a concurrent change undid.
const RACE_ATTEMPTS_MAX: usize = 4;
/// Attempts of a versioned write that lost the race for its key to another write (each
/// loss is another write's success; a short random pause spreads the retries).
const WRITE_ATTEMPTS_MAX: usize = 32;

/// A bucket's versioning state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Never enabled: every object is the `null` version, nothing is kept.
    Unversioned,
    /// Writes get new version ids and keep what they replace.
    Enabled,
    /// Writes get the `null` version (replacing the previous `null` one) and keep the
    /// others.
    Suspended,
}

/// The versioning state of `bucket`.
pub(crate) async fn status(bucket: &BucketRef) -> S3Result<Status> {
    match bucket.namespace.getxattr(bucket.dir, VERSIONING_XATTR).await {
        Ok(value) if value == b"Enabled" => Ok(Status::Enabled),
        Ok(value) if value == b"Suspended" => Ok(Status::Suspended),
        Ok(_) => Err(s3_error!(InternalError, "the bucket's versioning state is unreadable")),
        Err(ClientError::Namespace(NamespaceError::NoData)) => Ok(Status::Unversioned),
        Err(error) => Err(client_error(error)),
    }
}

/// A fresh version id: 32 lowercase hex digits, the time in nanoseconds then 64 random
/// bits (unique; the order of versions is their inodes').
fn new_version_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or_default();
    format!("{nanos:016x}{:016x}", rand::random::<u64>())
}

/// Refuses a version id this gateway cannot have given (`InvalidArgument`, as S3).
fn check_version_id(version_id: &str) -> S3Result<()> {
    let ours = version_id.len() == 32 && version_id.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    match ours || version_id == NULL_VERSION {
        true => Ok(()),
        false => Err(s3_error!(InvalidArgument, "Invalid version id specified")),
    }
}

/// The version id of an object with metadata `meta`.
pub(crate) fn version_of(meta: Option<&ObjectMeta>) -> &str {
    meta.and_then(|meta| meta.system_metadata.get(VERSION_ID))
        .map(String::as_str)
        .unwrap_or(NULL_VERSION)
}

/// The names of a key's directories in the version tree, below the bucket's.
fn tree_names(path: &KeyPath<'_>) -> S3Result<Vec<Vec<u8>>> {
    let mut names = Vec::with_capacity(path.segments.len());
    for (index, segment) in path.segments.iter().enumerate() {
        let tag = if index + 1 == path.segments.len() { b'v' } else { b'd' };
        let mut name = Vec::with_capacity(segment.len() + 1);
        name.push(tag);
        name.extend_from_slice(segment.as_bytes());
        if name.len() > kiseki_namespace::NAME_BYTES_MAX {
            return Err(s3_error!(
                KeyTooLongError,
                "in a versioned bucket a key's segments hold at most 254 bytes"
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// Checks that `path` can have versions (a write in a versioned bucket checks this before
/// storing the body).
pub(crate) fn check_key(path: &KeyPath<'_>) -> S3Result<()> {
    tree_names(path).map(|_| ())
}

/// The directories from the namespace root down through `names` (the root itself
/// excluded), made where missing when `create`; `None` when one is missing.
async fn descend(namespace: &Namespace, names: &[Vec<u8>], create: bool) -> S3Result<Option<Vec<InodeId>>> {
    let mut dirs = Vec::with_capacity(names.len());
    let mut parent = InodeId::ROOT;
    for name in names {
        let dir = match namespace.lookup(parent, name).await {
            Ok((dir, attributes)) if attributes.kind == FileKind::Directory => dir,
            Ok(_) => {
                return Err(s3_error!(
                    InternalError,
                    "the version tree holds a file where a directory belongs"
                ))
            }
            Err(ClientError::Namespace(NamespaceError::NotFound)) if create => {
                objects::mkdir(namespace, parent, name).await?
            }
            Err(ClientError::Namespace(NamespaceError::NotFound)) => return Ok(None),
            Err(error) => return Err(client_error(error)),
        };
        dirs.push(dir);
        parent = dir;
    }
    Ok(Some(dirs))
}

/// The names from the root to `bucket`'s version directory.
fn bucket_tree(bucket: &BucketRef) -> Vec<Vec<u8>> {
    vec![VERSIONS_ROOT.to_vec(), bucket.name.as_bytes().to_vec()]
}

/// The key's version directory with the names and directories leading to it from the
/// root (`None` when absent and not created).
struct KeyTree {
    names: Vec<Vec<u8>>,
    dirs: Vec<InodeId>,
}

impl KeyTree {
    fn dir(&self) -> InodeId {
        self.dirs[self.dirs.len() - 1]
    }
}

async fn key_tree(bucket: &BucketRef, path: &KeyPath<'_>, create: bool) -> S3Result<Option<KeyTree>> {
    let mut names = bucket_tree(bucket);
    match tree_names(path) {
        Ok(tree) => names.extend(tree),
        // A key that cannot have versions has none (writes check the key first).
        Err(_) if !create => return Ok(None),
        Err(error) => return Err(error),
    }
    Ok(descend(&bucket.namespace, &names, create)
        .await?
        .map(|dirs| KeyTree { names, dirs }))
}

/// Removes the key's version directory and the directories above it that it leaves
/// empty, up to the bucket's (a failure stops it: something else lives there).
async fn prune_tree(namespace: &Namespace, tree: &KeyTree) {
    for depth in (2..tree.dirs.len()).rev() {
        if namespace
            .rmdir_at(tree.dirs[depth - 1], &tree.names[depth])
            .await
            .is_err()
        {
            break;
        }
    }
}

/// The current version of a key: the file at its path, and the directories above it.
pub(crate) async fn current(bucket: &BucketRef, path: &KeyPath<'_>) -> S3Result<Option<(Found, Vec<InodeId>)>> {
    let Some(dirs) = parent_dirs(bucket, path, false).await? else {
        return Ok(None);
    };
    let parent = dirs[dirs.len() - 1];
    let (inode, attributes) = match bucket.namespace.lookup(parent, path.name().as_bytes()).await {
        Ok(found) if found.1.kind == FileKind::File => found,
        Ok(_) | Err(ClientError::Namespace(NamespaceError::NotFound)) => return Ok(None),
        Err(error) => return Err(client_error(error)),
    };
    let meta = bucket.namespace.object_meta(inode).await.map_err(client_error)?;
    let etag = meta::etag_of(meta.as_ref(), inode, &attributes);
    let found = Found {
        inode,
        attributes,
        meta,
        etag,
    };
    Ok(Some((found, dirs)))
}

/// Links `inode` into the key's version directory as `version_id`; an entry of that name
/// for the same inode is fine, another `null` version is replaced. Returns the inode's
/// attributes after the link.
async fn link_version(
    bucket: &BucketRef,
    path: &KeyPath<'_>,
    version_id: &str,
    inode: InodeId,
) -> S3Result<Attributes> {
    let namespace = &bucket.namespace;
    for _ in 0..RACE_ATTEMPTS_MAX {
        let Some(tree) = key_tree(bucket, path, true).await? else {
            continue;
        };
        match namespace.link_at(inode, tree.dir(), version_id.as_bytes()).await {
            Ok(attributes) => return Ok(attributes),
            // The directory was pruned meanwhile: make it again.
            Err(ClientError::Namespace(NamespaceError::NotFound)) => continue,
            Err(ClientError::Namespace(NamespaceError::AlreadyExists)) => {}
            Err(error) => return Err(client_error(error)),
        }
        match namespace.lookup(tree.dir(), version_id.as_bytes()).await {
            Ok((linked, linked_attributes)) if linked == inode => return Ok(linked_attributes),
            Ok(_) if version_id == NULL_VERSION => {
                // An older null version: the one being kept replaces it.
                match namespace.unlink_at(tree.dir(), version_id.as_bytes()).await {
                    Ok(()) | Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
                    Err(error) => return Err(client_error(error)),
                }
            }
            Ok(_) => return Err(s3_error!(InternalError, "two versions have the id {version_id}")),
            Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
            Err(error) => return Err(client_error(error)),
        }
    }
    Err(s3_error!(ServiceUnavailable, "the key's versions keep changing"))
}

/// Before a write or delete marker replaces the current version of `path`: checks the
/// client's condition against it, keeps it reachable as a version (unless it is the
/// `null` version and versioning is suspended: that one is replaced), and returns the
/// condition to commit with, which holds only while the key still holds that version.
async fn keep_current(
    bucket: &BucketRef,
    path: &KeyPath<'_>,
    status: Status,
    condition: &ObjectCondition,
) -> S3Result<ObjectCondition> {
    let current = current(bucket, path).await?.map(|(found, _)| found);
    match (condition, &current) {
        (ObjectCondition::IfAbsent, Some(_)) => return Err(s3_error!(PreconditionFailed)),
        (ObjectCondition::IfEtagMatches(_), None) => {
            return Err(s3_error!(PreconditionFailed, "the object does not exist"))
        }
        (ObjectCondition::IfEtagMatches(etag), Some(found)) if found.etag != *etag => {
            return Err(s3_error!(PreconditionFailed))
        }
        _ => {}
    }
    let Some(found) = current else {
        return Ok(ObjectCondition::IfAbsent);
    };
    let version_id = version_of(found.meta.as_ref()).to_owned();
    let attributes = match status == Status::Suspended && version_id == NULL_VERSION {
        true => found.attributes,
        false => link_version(bucket, path, &version_id, found.inode).await?,
    };
    Ok(ObjectCondition::IfVersion {
        inode: found.inode,
        generation: attributes.generation,
    })
}

/// The inode the `null` entry of a key's version directory names, if any.
async fn null_entry(bucket: &BucketRef, path: &KeyPath<'_>) -> S3Result<Option<InodeId>> {
    match key_tree(bucket, path, false).await? {
        Some(tree) => null_entry_in(&bucket.namespace, &tree).await,
        None => Ok(None),
    }
}

/// The inode the `null` entry of `tree`'s key directory names, if any.
async fn null_entry_in(namespace: &Namespace, tree: &KeyTree) -> S3Result<Option<InodeId>> {
    match namespace.lookup(tree.dir(), NULL_VERSION.as_bytes()).await {
        Ok((inode, _)) => Ok(Some(inode)),
        Err(ClientError::Namespace(NamespaceError::NotFound)) => Ok(None),
        Err(error) => Err(client_error(error)),
    }
}

/// Removes the `null` entry of a key's version directory if it still names `replaced`
/// (the `null` version a suspended bucket's write replaced); one made meanwhile (a
/// concurrent delete's marker, a version kept by a writer) stays.
async fn drop_null_entry(bucket: &BucketRef, path: &KeyPath<'_>, replaced: Option<InodeId>) -> S3Result<()> {
    let Some(replaced) = replaced else {
        return Ok(());
    };
    let Some(tree) = key_tree(bucket, path, false).await? else {
        return Ok(());
    };
    if null_entry_in(&bucket.namespace, &tree).await? != Some(replaced) {
        return Ok(());
    }
    match bucket.namespace.unlink_at(tree.dir(), NULL_VERSION.as_bytes()).await {
        Ok(()) => {
            prune_tree(&bucket.namespace, &tree).await;
            Ok(())
        }
        Err(ClientError::Namespace(NamespaceError::NotFound)) => Ok(()),
        Err(error) => Err(client_error(error)),
    }
}

/// The version id a new object of a bucket in `status` gets, set in its `meta`.
pub(crate) fn stamp(meta: &mut ObjectMeta, status: Status) -> String {
    match status {
        Status::Enabled => {
            let version_id = new_version_id();
            meta.system_metadata.insert(VERSION_ID.to_owned(), version_id.clone());
            version_id
        }
        Status::Unversioned | Status::Suspended => {
            meta.system_metadata.remove(VERSION_ID);
            NULL_VERSION.to_owned()
        }
    }
}

/// Commits a write to `path` of a bucket in `status` (`commit` proposes it with the
/// condition it is given): in a versioned bucket, the current version is kept first and
/// the write commits only over it, retried when another write won the race. The client's
/// `condition` is checked against the current version.
pub(crate) async fn commit_write<F, Fut>(
    bucket: &BucketRef,
    path: &KeyPath<'_>,
    status: Status,
    condition: ObjectCondition,
    mut commit: F,
) -> S3Result<()>
where
    F: FnMut(ObjectCondition) -> Fut,
    Fut: std::future::Future<Output = S3Result<()>>,
{
    if status == Status::Unversioned {
        return commit(condition).await;
    }
    for attempt in 1..=WRITE_ATTEMPTS_MAX {
        let replaced_null = match status {
            Status::Suspended => null_entry(bucket, path).await?,
            Status::Unversioned | Status::Enabled => None,
        };
        let kept = keep_current(bucket, path, status, &condition).await?;
        match commit(kept).await {
            Ok(()) => {
                drop_null_entry(bucket, path, replaced_null).await?;
                return Ok(());
            }
            Err(error) if *error.code() == s3s::S3ErrorCode::PreconditionFailed && attempt < WRITE_ATTEMPTS_MAX => {
                tracing::debug!(attempt, "a versioned write lost the race for its key; again");
                let pause_us = rand::random::<u64>() % (500 * attempt.min(8) as u64);
                tokio::time::sleep(std::time::Duration::from_micros(pause_us)).await;
            }
            Err(error) => return Err(error),
        }
    }
    Err(s3_error!(ServiceUnavailable, "the key keeps changing"))
}

/// The version of `key` a GET, HEAD or copy names: the current one without a version
/// id; `NoSuchVersion` for an unknown one, `MethodNotAllowed` for a delete marker.
pub(crate) async fn find_version(bucket: &BucketRef, key: &str, version_id: Option<&str>) -> S3Result<Found> {
    let Some(version_id) = version_id else {
        return objects::find(bucket, key).await;
    };
    check_version_id(version_id)?;
    let path = key_path(key)?;
    if path.marker {
        return match version_id == NULL_VERSION {
            true => objects::find(bucket, key).await,
            false => Err(s3_error!(NoSuchVersion)),
        };
    }
    if let Some((found, _)) = current(bucket, &path).await? {
        if version_of(found.meta.as_ref()) == version_id {
            return Ok(found);
        }
    }
    let namespace = &bucket.namespace;
    let Some(tree) = key_tree(bucket, &path, false).await? else {
        return Err(s3_error!(NoSuchVersion));
    };
    let (inode, attributes) = match namespace.lookup(tree.dir(), version_id.as_bytes()).await {
        Ok(found) => found,
        Err(ClientError::Namespace(NamespaceError::NotFound)) => return Err(s3_error!(NoSuchVersion)),
        Err(error) => return Err(client_error(error)),
    };
    if attributes.kind != FileKind::File {
        return Err(s3_error!(MethodNotAllowed, "the version is a delete marker"));
    }
    let meta = namespace.object_meta(inode).await.map_err(client_error)?;
    let etag = meta::etag_of(meta.as_ref(), inode, &attributes);
    Ok(Found {
        inode,
        attributes,
        meta,
        etag,
    })
}

/// What a delete in a versioned bucket did.
pub(crate) struct Deleted {
    /// A delete marker was made, or the deleted version was one.
    pub delete_marker: bool,
    /// The marker's version id, or the deleted version's.
    pub version_id: String,
}

/// Deletes `key` of a bucket in `status`: with a version id, that version for good
/// (the newest remaining one becomes current when it was the current one or hid it);
/// without one, in a versioned bucket, a delete marker hides the key. `None` when the
/// caller deletes as in an unversioned bucket.
pub(crate) async fn delete(
    bucket: &BucketRef,
    key: &str,
    version_id: Option<&str>,
    status: Status,
) -> S3Result<Option<Deleted>> {
    let path = key_path(key)?;
    if path.marker {
        return Ok(None);
    }
    match version_id {
        Some(version_id) => {
            check_version_id(version_id)?;
            delete_version(bucket, &path, version_id).await.map(Some)
        }
        None if status == Status::Unversioned => Ok(None),
        None => hide(bucket, &path, status).await.map(Some),
    }
}

/// Puts a delete marker over `path` and removes its current version from the key's path
/// (it stays a version, unless it is the `null` one of a suspended bucket).
async fn hide(bucket: &BucketRef, path: &KeyPath<'_>, status: Status) -> S3Result<Deleted> {
    check_key(path)?;
    let namespace = &bucket.namespace;
    let kept = keep_current(bucket, path, status, &ObjectCondition::Any).await?;
    let version_id = match status {
        Status::Enabled => new_version_id(),
        Status::Unversioned | Status::Suspended => NULL_VERSION.to_owned(),
    };
    let creator = Creator {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut marked = false;
    for _ in 0..RACE_ATTEMPTS_MAX {
        let Some(tree) = key_tree(bucket, path, true).await? else {
            continue;
        };
        if status == Status::Suspended {
            match namespace.unlink_at(tree.dir(), NULL_VERSION.as_bytes()).await {
                Ok(()) | Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
                Err(error) => return Err(client_error(error)),
            }
        }
        match namespace
            .symlink_at(tree.dir(), version_id.as_bytes(), DELETE_MARKER_TARGET, creator)
            .await
        {
            Ok(_) => {
                marked = true;
                break;
            }
            Err(ClientError::Namespace(NamespaceError::NotFound)) => continue,
            Err(error) => return Err(client_error(error)),
        }
    }
    if !marked {
        return Err(s3_error!(
            ServiceUnavailable,
            "the key's version directory keeps disappearing"
        ));
    }
    if matches!(kept, ObjectCondition::IfVersion { .. }) {
        // A write that replaced the current version meanwhile wins over the marker.
        match objects::remove_object(bucket, path, kept).await? {
            Ok(()) | Err(NamespaceError::PreconditionFailed | NamespaceError::NotFound) => {}
            Err(error) => return Err(client_error(ClientError::Namespace(error))),
        }
    }
    Ok(Deleted {
        delete_marker: true,
        version_id,
    })
}

/// Deletes one version of `path` for good.
async fn delete_version(bucket: &BucketRef, path: &KeyPath<'_>, version_id: &str) -> S3Result<Deleted> {
    let namespace = &bucket.namespace;
    let mut delete_marker = false;
    // The current version, when it is the one named: the tree's entry of that id goes
    // too only if it is the same inode (two `null` versions exist when an upload begun
    // before versioning completes after it; one delete removes one).
    let mut removed_current = None;
    if let Some((found, _)) = current(bucket, path).await? {
        if version_of(found.meta.as_ref()) == version_id {
            let condition = ObjectCondition::IfVersion {
                inode: found.inode,
                generation: found.attributes.generation,
            };
            match objects::remove_object(bucket, path, condition).await? {
                Ok(()) | Err(NamespaceError::NotFound) => removed_current = Some(found.inode),
                Err(NamespaceError::PreconditionFailed) => {
                    return Err(s3_error!(
                        ServiceUnavailable,
                        "the version changed while it was deleted; try again"
                    ))
                }
                Err(error) => return Err(client_error(ClientError::Namespace(error))),
            }
        }
    }
    let Some(tree) = key_tree(bucket, path, false).await? else {
        return Ok(Deleted {
            delete_marker,
            version_id: version_id.to_owned(),
        });
    };
    match namespace.lookup(tree.dir(), version_id.as_bytes()).await {
        Ok((inode, _)) if removed_current.is_some_and(|current| current != inode) => {}
        Ok((_, attributes)) => {
            delete_marker = attributes.kind == FileKind::Symlink;
            match namespace.unlink_at(tree.dir(), version_id.as_bytes()).await {
                Ok(()) | Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
                Err(error) => return Err(client_error(error)),
            }
        }
        Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
        Err(error) => return Err(client_error(error)),
    }
    promote(bucket, path, &tree).await?;
    Ok(Deleted {
        delete_marker,
        version_id: version_id.to_owned(),
    })
}

/// When `path` has no current version, links the newest remaining version at it (unless
/// that is a delete marker); removes the key's version directory when it is empty.
async fn promote(bucket: &BucketRef, path: &KeyPath<'_>, tree: &KeyTree) -> S3Result<()> {
    let namespace = &bucket.namespace;
    let entries = match all_names(namespace, tree.dir()).await {
        Ok(entries) => entries,
        Err(error) if *error.code() == s3s::S3ErrorCode::NoSuchKey => Vec::new(),
        Err(error) => return Err(error),
    };
    let Some(newest) = entries.iter().max_by_key(|listed| listed.entry.inode.0) else {
        prune_tree(namespace, tree).await;
        return Ok(());
    };
    if newest.entry.kind != FileKind::File || current(bucket, path).await?.is_some() {
        return Ok(());
    }
    let Some(dirs) = parent_dirs(bucket, path, true).await? else {
        return Err(s3_error!(InternalError, "parent directories were not created"));
    };
    match namespace
        .link_at(newest.entry.inode, dirs[dirs.len() - 1], path.name().as_bytes())
        .await
    {
        // A write put a new current version meanwhile: it stays.
        Ok(_) | Err(ClientError::Namespace(NamespaceError::AlreadyExists)) => Ok(()),
        Err(error) => Err(client_error(error)),
    }
}

/// Whether `bucket` holds versions (noncurrent ones or delete markers); if it holds
/// none, its version tree is removed (a bucket deleted and made again starts clean).
pub(crate) async fn clear_tree(bucket: &BucketRef) -> S3Result<bool> {
    let namespace = &bucket.namespace;
    let Some(dirs) = descend(namespace, &bucket_tree(bucket), false).await? else {
        return Ok(false);
    };
    // Depth first: (parent, name, dir); directories are removed after their children.
    let mut order = Vec::new();
    let mut stack = vec![(dirs[0], bucket.name.as_bytes().to_vec(), dirs[1])];
    while let Some((parent, name, dir)) = stack.pop() {
        for listed in all_names(namespace, dir).await? {
            match listed.entry.kind {
                FileKind::Directory => stack.push((dir, listed.entry.name, listed.entry.inode)),
                _ => return Ok(true),
            }
        }
        order.push((parent, name));
    }
    for (parent, name) in order.into_iter().rev() {
        match namespace.rmdir_at(parent, &name).await {
            Ok(()) | Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
            Err(ClientError::Namespace(NamespaceError::NotEmpty)) => return Ok(true),
            Err(error) => return Err(client_error(error)),
        }
    }
    Ok(false)
}

pub(crate) async fn get_bucket_versioning(
    gateway: &S3Gateway,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let status = match status(&bucket).await? {
        Status::Unversioned => None,
        Status::Enabled => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED)),
        Status::Suspended => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED)),
    };
    Ok(S3Response::new(GetBucketVersioningOutput {
        status,
        ..Default::default()
    }))
}

pub(crate) async fn put_bucket_versioning(
    gateway: &S3Gateway,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let configuration = &req.input.versioning_configuration;
    if configuration
        .mfa_delete
        .as_ref()
        .is_some_and(|mfa| mfa.as_str() == MFADelete::ENABLED)
    {
        return Err(s3_error!(NotImplemented, "MFA delete"));
    }
    let value: &[u8] = match configuration.status.as_ref().map(BucketVersioningStatus::as_str) {
        Some(BucketVersioningStatus::ENABLED) => b"Enabled",
        Some(BucketVersioningStatus::SUSPENDED) => b"Suspended",
        _ => return Err(s3_error!(MalformedXML, "the status must be Enabled or Suspended")),
    };
    bucket
        .namespace
        .setxattr(
            bucket.dir,
            VERSIONING_XATTR,
            value,
            kiseki_namespace::XattrSetMode::Either,
        )
        .await
        .map_err(client_error)?;
    Ok(S3Response::new(PutBucketVersioningOutput {}))
}

/// One version of a key as a listing shows it.
struct Row {
    key: String,
    version_id: String,
    inode: InodeId,
    delete_marker: bool,
    latest: bool,
    attributes: Attributes,
    etag: Option<String>,
}

/// Every version of one key, newest first: the entries of its version directory and
/// the current version (`current`: its inode and attributes), which may or may not be
/// among them.
async fn rows_of(
    namespace: &Namespace,
    key: &str,
    entries: Vec<ListedEntry>,
    current: Option<(InodeId, Attributes, String)>,
) -> S3Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::with_capacity(entries.len() + 1);
    for listed in entries {
        let Ok(version_id) = String::from_utf8(listed.entry.name) else {
            continue;
        };
        let delete_marker = match listed.entry.kind {
            FileKind::File => false,
            FileKind::Symlink => true,
            _ => continue,
        };
        rows.push(Row {
            key: key.to_owned(),
            version_id,
            inode: listed.entry.inode,
            delete_marker,
            latest: false,
            attributes: listed.attributes,
            etag: listed.etag,
        });
    }
    if let Some((inode, attributes, etag)) = &current {
        if !rows.iter().any(|row| row.inode == *inode) {
            let meta = namespace.object_meta(*inode).await.map_err(client_error)?;
            rows.push(Row {
                key: key.to_owned(),
                version_id: version_of(meta.as_ref()).to_owned(),
                inode: *inode,
                delete_marker: false,
                latest: false,
                attributes: attributes.clone(),
                etag: Some(etag.clone()),
            });
        }
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.inode.0));
    let latest = match &current {
        Some((inode, _, _)) => rows.iter().position(|row| row.inode == *inode),
        None => (!rows.is_empty()).then_some(0),
    };
    if let Some(index) = latest {
        rows[index].latest = true;
    }
    Ok(rows)
}

/// A walk over a bucket's version tree in key order: each key with its version
/// directory's entries.
struct TreeWalk<'n> {
    namespace: &'n Namespace,
    prefix: String,
    /// Keys must sort after this.
    after: Option<String>,
    /// Directories being walked: children not yet visited, in key order (a key, or a
    /// key prefix ending in `/` for a directory).
    stack: Vec<VecDeque<(String, bool, InodeId)>>,
}

impl<'n> TreeWalk<'n> {
    async fn new(bucket: &'n BucketRef, prefix: &str, after: Option<&str>) -> S3Result<TreeWalk<'n>> {
        let mut walk = TreeWalk {
            namespace: &bucket.namespace,
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            stack: Vec::new(),
        };
        if let Some(dirs) = descend(&bucket.namespace, &bucket_tree(bucket), false).await? {
            let children = walk.children(dirs[1], "").await?;
            walk.stack.push(children);
        }
        Ok(walk)
    }

    /// The children of a tree directory whose keys start with `path`, sorted by key.
    async fn children(&self, dir: InodeId, path: &str) -> S3Result<VecDeque<(String, bool, InodeId)>> {
        let mut children = Vec::new();
        for listed in all_names(self.namespace, dir).await? {
            if listed.entry.kind != FileKind::Directory {
                continue;
            }
            let Some((&tag, rest)) = listed.entry.name.split_first() else {
                continue;
            };
            let Ok(segment) = std::str::from_utf8(rest) else {
                continue;
            };
            match tag {
                b'd' => children.push((format!("{path}{segment}/"), true, listed.entry.inode)),
                b'v' => children.push((format!("{path}{segment}"), false, listed.entry.inode)),
                _ => {}
            }
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(children.into())
    }

    /// The next key with its version entries.
    async fn next(&mut self) -> S3Result<Option<(String, Vec<ListedEntry>)>> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some((key, is_dir, inode)) = frame.pop_front() else {
                self.stack.pop();
                continue;
            };
            if is_dir {
                let matches = key.starts_with(&self.prefix) || self.prefix.starts_with(&key);
                let later = self
                    .after
                    .as_deref()
                    .is_none_or(|after| key.as_str() > after || after.starts_with(&key));
                if matches && later {
                    let children = self.children(inode, &key).await?;
                    self.stack.push(children);
                }
                continue;
            }
            if !key.starts_with(&self.prefix) || self.after.as_deref().is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            let entries = all_names(self.namespace, inode).await?;
            return Ok(Some((key, entries)));
        }
    }
}

/// ListObjectVersions of a bucket with a version tree: the keys of the current objects
/// and of the tree, merged in key order, each key's versions newest first.
pub(crate) async fn list(
    bucket: &BucketRef,
    input: &ListObjectVersionsInput,
    max_keys: usize,
) -> S3Result<Option<VersionPage>> {
    let has_tree = descend(&bucket.namespace, &bucket_tree(bucket), false).await?.is_some();
    if !has_tree && status(bucket).await? == Status::Unversioned {
        return Ok(None);
    }
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().filter(|delimiter| !delimiter.is_empty());
    let key_marker = input.key_marker.clone().filter(|marker| !marker.is_empty());
    let mut page = VersionPage::default();
    let mut last_prefix: Option<String> = None;
    if let (Some(delimiter), Some(marker)) = (&delimiter, &key_marker) {
        if let Some(rest) = marker.strip_prefix(prefix.as_str()) {
            if rest
                .find(delimiter.as_str())
                .is_some_and(|index| index + delimiter.len() == rest.len())
            {
                last_prefix = Some(marker.clone());
            }
        }
    }
    // The rest of the key the last page stopped in.
    if let (Some(marker), Some(version_marker)) = (&key_marker, &input.version_id_marker) {
        if let Ok(path) = key_path(marker) {
            let rows = key_rows(bucket, marker, &path).await?;
            let mut rest = rows
                .into_iter()
                .skip_while(|row| row.version_id != *version_marker)
                .skip(1);
            for row in rest.by_ref() {
                if page.push_row(row, max_keys) {
                    return Ok(Some(page));
                }
            }
        }
    }
    let mut currents = objects_walk(bucket, &prefix, key_marker.as_deref()).await?;
    let mut tree = TreeWalk::new(bucket, &prefix, key_marker.as_deref()).await?;
    let mut next_current = currents.next().await?;
    let mut next_tree = tree.next().await?;
    loop {
        let take_current = match (&next_current, &next_tree) {
            (None, None) => return Ok(Some(page)),
            (Some(current), Some((key, _))) => match current.0.as_str().cmp(key.as_str()) {
                std::cmp::Ordering::Less => Some(true),
                std::cmp::Ordering::Greater => Some(false),
                std::cmp::Ordering::Equal => None,
            },
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
        };
        let (key, entries, current) = match take_current {
            Some(true) => {
                let (key, inode, attributes, etag) = next_current.take().unwrap_or_else(|| unreachable!());
                next_current = currents.next().await?;
                (key, Vec::new(), Some((inode, attributes, etag)))
            }
            Some(false) => {
                let (key, entries) = next_tree.take().unwrap_or_else(|| unreachable!());
                next_tree = tree.next().await?;
                (key, entries, None)
            }
            None => {
                let (key, inode, attributes, etag) = next_current.take().unwrap_or_else(|| unreachable!());
                let (_, entries) = next_tree.take().unwrap_or_else(|| unreachable!());
                next_current = currents.next().await?;
                next_tree = tree.next().await?;
                (key, entries, Some((inode, attributes, etag)))
            }
        };
        if last_prefix.as_deref().is_some_and(|last| key.starts_with(last)) {
            continue;
        }
        if let Some(delimiter) = &delimiter {
            let rest = &key[prefix.len()..];
            if let Some(index) = rest.find(delimiter.as_str()) {
                let common = key[..prefix.len() + index + delimiter.len()].to_owned();
                last_prefix = Some(common.clone());
                if page.push_prefix(common, max_keys) {
                    return Ok(Some(page));
                }
                continue;
            }
        }
        for row in rows_of(&bucket.namespace, &key, entries, current).await? {
            if page.push_row(row, max_keys) {
                return Ok(Some(page));
            }
        }
    }
}

/// Every version of one key.
async fn key_rows(bucket: &BucketRef, key: &str, path: &KeyPath<'_>) -> S3Result<Vec<Row>> {
    if path.marker {
        return Ok(Vec::new());
    }
    let current = current(bucket, path)
        .await?
        .map(|(found, _)| (found.inode, found.attributes, found.etag));
    let entries = match key_tree(bucket, path, false).await? {
        Some(tree) => all_names(&bucket.namespace, tree.dir()).await?,
        None => Vec::new(),
    };
    rows_of(&bucket.namespace, key, entries, current).await
}

/// The current objects of a bucket under `prefix` after `after`, in key order.
struct Currents<'n> {
    walk: super::list::Walk<'n>,
}

impl Currents<'_> {
    async fn next(&mut self) -> S3Result<Option<(String, InodeId, Attributes, String)>> {
        loop {
            match self.walk.next().await? {
                None => return Ok(None),
                Some(super::list::Item::Object {
                    key,
                    inode,
                    attributes,
                    etag,
                }) => return Ok(Some((key, inode, attributes, etag))),
                Some(super::list::Item::Prefix(_)) => {}
            }
        }
    }
}

async fn objects_walk<'n>(bucket: &'n BucketRef, prefix: &str, after: Option<&str>) -> S3Result<Currents<'n>> {
    let walk = super::list::Walk::new(bucket, prefix, None, after).await?;
    Ok(Currents { walk })
}

/// A page of ListObjectVersions.
#[derive(Default)]
pub(crate) struct VersionPage {
    pub versions: Vec<ObjectVersion>,
    pub delete_markers: Vec<DeleteMarkerEntry>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key: Option<String>,
    pub next_version_id: Option<String>,
    count: usize,
}

impl VersionPage {
    /// Adds a version; `true` when the page was already full (it is then truncated).
    fn push_row(&mut self, row: Row, max_keys: usize) -> bool {
        if self.count == max_keys {
            self.truncated = true;
            return true;
        }
        self.count += 1;
        self.next_key = Some(row.key.clone());
        self.next_version_id = Some(row.version_id.clone());
        let last_modified = Some(meta::timestamp(row.attributes.mtime));
        match row.delete_marker {
            true => self.delete_markers.push(DeleteMarkerEntry {
                is_latest: Some(row.latest),
                key: Some(row.key),
                last_modified,
                version_id: Some(row.version_id),
                ..Default::default()
            }),
            false => {
                let etag = row
                    .etag
                    .unwrap_or_else(|| meta::etag_of(None, row.inode, &row.attributes));
                self.versions.push(ObjectVersion {
                    key: Some(row.key),
                    size: Some(row.attributes.size_bytes as i64),
                    last_modified,
                    e_tag: Some(ETag::Strong(etag)),
                    is_latest: Some(row.latest),
                    version_id: Some(row.version_id),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    ..Default::default()
                });
            }
        }
        false
    }

    /// Adds a common prefix; `true` when the page was already full.
    fn push_prefix(&mut self, prefix: String, max_keys: usize) -> bool {
        if self.count == max_keys {
            self.truncated = true;
            return true;
        }
        self.count += 1;
        self.next_key = Some(prefix.clone());
        self.next_version_id = None;
        self.prefixes.push(prefix);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_are_checked() {
        let fresh = new_version_id();
        assert!(check_version_id(&fresh).is_ok());
        assert!(check_version_id(NULL_VERSION).is_ok());
        for bad in ["", "NULL", "../x", "0123", &"g".repeat(32), &fresh.to_uppercase()] {
            assert!(check_version_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tree_names_keep_versions_apart_from_keys_below() {
        let key = key_path("a/b").unwrap();
        assert_eq!(tree_names(&key).unwrap(), vec![b"da".to_vec(), b"vb".to_vec()]);
        let longest = "x".repeat(255);
        assert!(tree_names(&key_path(&longest).unwrap()).is_err());
        assert!(tree_names(&key_path(&"x".repeat(254)).unwrap()).is_ok());
    }

    #[test]
    fn a_page_stops_at_max_keys() {
        let mut page = VersionPage::default();
        assert!(!page.push_prefix("a/".to_owned(), 1));
        assert!(page.push_prefix("b/".to_owned(), 1));
        assert!(page.truncated);
        assert_eq!(page.next_key.as_deref(), Some("a/"));
    }
}
