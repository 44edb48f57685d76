//! Listings in S3 key order over a tree of directories.
//!
//! A directory's entries come from the shard in byte order of their names, but the keys
//! under a subdirectory `d` sort as `d/…`, after names like `d-x` or `d.txt` that sort
//! before `d/` and after `d`. [`Walk`] holds each subdirectory back until the stream of
//! names has passed `d/`, so keys come out in exact S3 order, page by page, without
//! reading whole directories. A continuation starts each directory at the first name
//! that can still hold a later key, not at its beginning.

use std::collections::BTreeMap;

use kiseki_api::{ListedEntry, NameBound};
use kiseki_client::{ClientError, Namespace};
use kiseki_namespace::{Attributes, DirEntry, FileKind, InodeId, NamespaceError};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::errors::client_error;
use super::meta;
use super::{versions, BucketRef, S3Gateway};

/// Entries read from the shard per call.
const PAGE_ENTRIES: u32 = 1000;
/// Keys a listing returns at most (S3's bound on `max-keys`).
const KEYS_PER_LISTING_MAX: usize = 1000;
/// Names that could be directories sorting before a continuation key that are looked up
/// to start a directory late; past this many the walk starts earlier instead.
const START_LOOKUPS_MAX: usize = 4;

/// Every entry of a directory, with attributes, in name order.
pub(crate) async fn all_names(namespace: &Namespace, dir: InodeId) -> S3Result<Vec<ListedEntry>> {
    let mut entries: Vec<ListedEntry> = Vec::new();
    loop {
        let start = match entries.last() {
            Some(listed) => NameBound::After(listed.entry.name.clone()),
            None => NameBound::First,
        };
        let page = namespace
            .list_names(dir, b"", start, PAGE_ENTRIES)
            .await
            .map_err(client_error)?;
        if page.is_empty() {
            return Ok(entries);
        }
        entries.extend(page);
    }
}

/// One item of a listing.
#[derive(Debug)]
pub(crate) enum Item {
    /// An object: a file.
    Object {
        key: String,
        inode: InodeId,
        attributes: Attributes,
        etag: String,
    },
    /// Keys rolled up under a delimiter.
    Prefix(String),
}

impl Item {
    fn key(&self) -> &str {
        match self {
            Item::Object { key, .. } | Item::Prefix(key) => key,
        }
    }
}

/// One directory being walked.
struct Frame {
    dir: InodeId,
    /// The key prefix of its entries (`a/b/`, empty at the bucket).
    path: String,
    /// Names must start with this (the listing prefix's last segment, first frame only).
    name_prefix: Vec<u8>,
    /// Where the next page starts.
    next: NameBound,
    exhausted: bool,
    /// Entries read, not yet considered.
    fetched: std::collections::VecDeque<ListedEntry>,
    /// Entries held back, by the key they sort at (`name` or `name/`).
    held: BTreeMap<Vec<u8>, ListedEntry>,
}

/// A walk over the keys of a bucket under a prefix, in S3 order, after a key.
pub(crate) struct Walk<'n> {
    namespace: &'n Namespace,
    prefix: String,
    delimiter: Option<String>,
    after: Option<String>,
    stack: Vec<Frame>,
    /// The last common prefix returned (keys under it are skipped).
    last_prefix: Option<String>,
}

fn sort_key(entry: &DirEntry) -> Vec<u8> {
    let mut key = entry.name.clone();
    if entry.kind == FileKind::Directory {
        key.push(b'/');
    }
    key
}

impl<'n> Walk<'n> {
    /// A walk of `bucket` under `prefix`, after the key `after`.
    pub(crate) async fn new(
        bucket: &'n BucketRef,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
    ) -> S3Result<Walk<'n>> {
        let mut walk = Walk {
            namespace: &bucket.namespace,
            prefix: prefix.to_owned(),
            delimiter: delimiter.filter(|delimiter| !delimiter.is_empty()).map(str::to_owned),
            after: after.filter(|after| !after.is_empty()).map(str::to_owned),
            stack: Vec::new(),
            last_prefix: None,
        };
        // Descend straight to the directory the prefix ends in.
        let (dir_part, leaf) = match prefix.rfind('/') {
            Some(index) => prefix.split_at(index + 1),
            None => ("", prefix),
        };
        let mut dir = bucket.dir;
        for segment in dir_part.split('/').filter(|segment| !segment.is_empty()) {
            match bucket.namespace.lookup(dir, segment.as_bytes()).await {
                Ok((inode, attributes)) if attributes.kind == FileKind::Directory => dir = inode,
                Ok(_) | Err(ClientError::Namespace(NamespaceError::NotFound | NamespaceError::InvalidName)) => {
                    return Ok(walk)
                }
                Err(ClientError::Namespace(NamespaceError::NameTooLong)) => return Ok(walk),
                Err(error) => return Err(client_error(error)),
            }
        }
        if dir_part.split('/').any(|segment| segment == "." || segment == "..") || dir_part.contains("//") {
            return Ok(walk);
        }
        // A continuation after a common prefix skips every key under it.
        if let (Some(delimiter), Some(after)) = (walk.delimiter.clone(), walk.after.clone()) {
            if let Some(rest) = after.strip_prefix(prefix) {
                if rest
                    .find(delimiter.as_str())
                    .is_some_and(|index| index + delimiter.len() == rest.len())
                {
                    walk.last_prefix = Some(after);
                }
            }
        }
        let frame = walk.frame(dir, dir_part.to_owned(), leaf.as_bytes().to_vec()).await?;
        walk.stack.push(frame);
        Ok(walk)
    }

    /// A frame for `dir`, starting where the continuation key allows.
    async fn frame(&self, dir: InodeId, path: String, name_prefix: Vec<u8>) -> S3Result<Frame> {
        let next = match self
            .after
            .as_deref()
            .and_then(|after| after.strip_prefix(path.as_str()))
        {
            Some(rest) => {
                let first = rest.split('/').next().unwrap_or("").as_bytes();
                self.start_at(dir, first).await?
            }
            None => NameBound::First,
        };
        Ok(Frame {
            dir,
            path,
            name_prefix,
            next,
            exhausted: false,
            fetched: Default::default(),
            held: BTreeMap::new(),
        })
    }

    /// The first name of a directory that may hold a key after one whose segment here is
    /// `first`: `first` itself, unless a directory named by a prefix of it cut before a
    /// byte below `/` exists (its keys `d/…` sort after `first`).
    async fn start_at(&self, dir: InodeId, first: &[u8]) -> S3Result<NameBound> {
        let cuts: Vec<usize> = (1..first.len()).filter(|&index| first[index] < b'/').collect();
        if cuts.len() > START_LOOKUPS_MAX {
            return Ok(NameBound::From(first[..cuts[0]].to_vec()));
        }
        for cut in cuts {
            match self.namespace.lookup(dir, &first[..cut]).await {
                Ok((_, attributes)) if attributes.kind == FileKind::Directory => {
                    return Ok(NameBound::From(first[..cut].to_vec()))
                }
                Ok(_) | Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
                Err(error) => return Err(client_error(error)),
            }
        }
        Ok(NameBound::From(first.to_vec()))
    }

    fn is_after(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|after| key > after)
    }

    /// The next item, or `None` at the end.
    pub(crate) async fn next(&mut self) -> S3Result<Option<Item>> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(None);
            };
            // The first held entry can go once no later name can sort before it.
            let ready = match (frame.held.keys().next(), frame.fetched.front()) {
                (Some(held), Some(next)) => next.entry.name > *held,
                (Some(_), None) => frame.exhausted,
                (None, _) => false,
            };
            if ready {
                if let Some((_, listed)) = frame.held.pop_first() {
                    if let Some(item) = self.visit(listed).await? {
                        return Ok(Some(item));
                    }
                }
                continue;
            }
            if let Some(listed) = frame.fetched.pop_front() {
                frame.held.insert(sort_key(&listed.entry), listed);
                continue;
            }
            if !frame.exhausted {
                let page = self
                    .namespace
                    .list_names(frame.dir, &frame.name_prefix, frame.next.clone(), PAGE_ENTRIES)
                    .await;
                let page = match page {
                    Ok(page) => page,
                    // The directory went away under the walk: it holds nothing now.
                    Err(ClientError::Namespace(NamespaceError::NotFound)) => Vec::new(),
                    Err(error) => return Err(client_error(error)),
                };
                match page.last() {
                    Some(last) => frame.next = NameBound::After(last.entry.name.clone()),
                    None => frame.exhausted = true,
                }
                frame.exhausted |= page.len() < PAGE_ENTRIES as usize;
                frame.fetched.extend(page);
                continue;
            }
            self.stack.pop();
        }
    }

    /// What an entry contributes: an object, a common prefix, a directory to descend
    /// into (`None` back, the walk goes on inside it), or nothing.
    async fn visit(&mut self, listed: ListedEntry) -> S3Result<Option<Item>> {
        let ListedEntry {
            entry,
            attributes,
            etag,
        } = listed;
        let path = &self.stack[self.stack.len() - 1].path;
        let Ok(name) = std::str::from_utf8(&entry.name) else {
            return Ok(None);
        };
        let key = format!("{path}{name}");
        match entry.kind {
            FileKind::File => {
                let under_last = self.last_prefix.as_deref().is_some_and(|last| key.starts_with(last));
                if !self.is_after(&key) || under_last {
                    return Ok(None);
                }
                let etag = etag.unwrap_or_else(|| meta::etag_of(None, entry.inode, &attributes));
                let object = Item::Object {
                    key,
                    inode: entry.inode,
                    attributes,
                    etag,
                };
                Ok(self.rolled_up(object.key()).or(Some(object)))
            }
            FileKind::Directory => {
                let dir_key = format!("{key}/");
                if self.delimiter.as_deref() == Some("/") {
                    return Ok(self.is_after(&dir_key).then(|| self.remember(dir_key)));
                }
                // Skip a subtree whose keys all sort before the continuation key.
                if let Some(after) = self.after.as_deref() {
                    if after >= dir_key.as_str() && !after.starts_with(&dir_key) {
                        return Ok(None);
                    }
                }
                if self
                    .last_prefix
                    .as_deref()
                    .is_some_and(|last| dir_key.starts_with(last))
                {
                    return Ok(None);
                }
                let frame = self.frame(entry.inode, dir_key, Vec::new()).await?;
                self.stack.push(frame);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The common prefix a key rolls up into under a delimiter other than `/`, if it is
    /// new; `Some(skip)` for a key under the last prefix returned.
    fn rolled_up(&mut self, key: &str) -> Option<Item> {
        let delimiter = self.delimiter.clone()?;
        let rest = &key[self.prefix.len().min(key.len())..];
        let index = rest.find(delimiter.as_str())?;
        let common = key[..self.prefix.len() + index + delimiter.len()].to_owned();
        Some(self.remember(common))
    }

    fn remember(&mut self, common: String) -> Item {
        self.last_prefix = Some(common.clone());
        Item::Prefix(common)
    }
}

/// A page of a listing: up to `max_keys` items and whether more follow.
pub(crate) async fn page(
    bucket: &BucketRef,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max_keys: usize,
) -> S3Result<(Vec<Item>, bool)> {
    let max_keys = max_keys.min(KEYS_PER_LISTING_MAX);
    if max_keys == 0 {
        // Nothing asked for, nothing to continue from.
        return Ok((Vec::new(), false));
    }
    let mut walk = Walk::new(bucket, prefix, delimiter, after).await?;
    let mut items: Vec<Item> = Vec::new();
    while let Some(item) = walk.next().await? {
        // Keys under a common prefix already returned collapse into it.
        if let (Item::Prefix(common), Some(Item::Prefix(last))) = (&item, items.last()) {
            if common == last {
                continue;
            }
        }
        if let (Some(Item::Prefix(last)), Item::Object { key, .. }) = (items.last(), &item) {
            if key.starts_with(last.as_str()) {
                continue;
            }
        }
        if items.len() == max_keys {
            return Ok((items, true));
        }
        items.push(item);
    }
    Ok((items, false))
}

/// A key as `encoding-type=url` shows it: each segment percent-encoded, `/` kept (as S3
/// does).
fn encode(key: &str, url: bool) -> String {
    match url {
        true => key
            .split('/')
            .map(|segment| urlencoding::encode(segment).into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        false => key.to_owned(),
    }
}

/// Objects and common prefixes of a page, as S3 types.
fn contents(items: Vec<Item>, url: bool) -> (Vec<Object>, Vec<CommonPrefix>) {
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for item in items {
        match item {
            Item::Object {
                key, attributes, etag, ..
            } => objects.push(Object {
                key: Some(encode(&key, url)),
                size: Some(attributes.size_bytes as i64),
                last_modified: Some(meta::timestamp(attributes.mtime)),
                e_tag: Some(ETag::Strong(etag)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            }),
            Item::Prefix(prefix) => prefixes.push(CommonPrefix {
                prefix: Some(encode(&prefix, url)),
            }),
        }
    }
    (objects, prefixes)
}

fn wants_url(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding.map(EncodingType::as_str) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(other) => Err(s3_error!(InvalidArgument, "encoding-type {other} is not supported")),
    }
}

fn max_keys(max_keys: Option<i32>) -> S3Result<usize> {
    match max_keys {
        None => Ok(KEYS_PER_LISTING_MAX),
        Some(keys) if keys < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(keys) => Ok(keys as usize),
    }
}

pub(crate) async fn list_objects_v2(
    gateway: &S3Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let url = wants_url(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let after = match (&input.continuation_token, &input.start_after) {
        (Some(token), _) => Some(decode_token(token)?),
        (None, Some(start)) => Some(start.clone()),
        (None, None) => None,
    };
    let max = max_keys(input.max_keys)?;
    let (items, truncated) = page(&bucket, &prefix, input.delimiter.as_deref(), after.as_deref(), max).await?;
    let next = match truncated {
        true => items.last().map(|item| encode_token(item.key())),
        false => None,
    };
    let count = items.len() as i32;
    let (objects, prefixes) = contents(items, url);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(bucket.name.clone()),
        prefix: Some(encode(&prefix, url)),
        delimiter: input.delimiter.filter(|delimiter| !delimiter.is_empty()),
        max_keys: Some(max.min(KEYS_PER_LISTING_MAX) as i32),
        key_count: Some(count),
        is_truncated: Some(truncated),
        contents: Some(objects),
        common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
        continuation_token: input.continuation_token,
        next_continuation_token: next,
        start_after: input.start_after.map(|start| encode(&start, url)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(crate) async fn list_objects(
    gateway: &S3Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let url = wants_url(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = max_keys(input.max_keys)?;
    let delimiter = input.delimiter.as_deref();
    let (items, truncated) = page(&bucket, &prefix, delimiter, input.marker.as_deref(), max).await?;
    // NextMarker is returned when a delimiter is given; without one, clients use the
    // last key, which is the same.
    let next_marker = match truncated {
        true => items.last().map(|item| encode(item.key(), url)),
        false => None,
    };
    let (objects, prefixes) = contents(items, url);
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(bucket.name.clone()),
        prefix: Some(encode(&prefix, url)),
        marker: input.marker.map(|marker| encode(&marker, url)),
        delimiter: input.delimiter.filter(|delimiter| !delimiter.is_empty()),
        max_keys: Some(max.min(KEYS_PER_LISTING_MAX) as i32),
        is_truncated: Some(truncated),
        next_marker,
        contents: Some(objects),
        common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// Versions of a bucket: of one that never had versions, one per object (version id
/// `null`, latest); else [`versions::list`].
pub(crate) async fn list_object_versions(
    gateway: &S3Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let bucket = gateway.bucket(&req, &req.input.bucket).await?;
    let input = req.input;
    let url = wants_url(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = max_keys(input.max_keys)?.min(KEYS_PER_LISTING_MAX);
    if max > 0 {
        if let Some(page) = versions::list(&bucket, &input, max).await? {
            let mut page = page;
            if url {
                for version in &mut page.versions {
                    version.key = version.key.take().map(|key| encode(&key, true));
                }
                for marker in &mut page.delete_markers {
                    marker.key = marker.key.take().map(|key| encode(&key, true));
                }
            }
            let prefixes: Vec<CommonPrefix> = page
                .prefixes
                .iter()
                .map(|prefix| CommonPrefix {
                    prefix: Some(encode(prefix, url)),
                })
                .collect();
            return Ok(S3Response::new(ListObjectVersionsOutput {
                name: Some(bucket.name.clone()),
                prefix: Some(encode(&prefix, url)),
                delimiter: input.delimiter.filter(|delimiter| !delimiter.is_empty()),
                max_keys: Some(max as i32),
                is_truncated: Some(page.truncated),
                key_marker: input.key_marker,
                version_id_marker: input.version_id_marker,
                next_key_marker: page
                    .truncated
                    .then(|| page.next_key.map(|key| encode(&key, url)))
                    .flatten(),
                next_version_id_marker: page.truncated.then_some(page.next_version_id).flatten(),
                versions: Some(page.versions),
                delete_markers: (!page.delete_markers.is_empty()).then_some(page.delete_markers),
                common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
                encoding_type: input.encoding_type,
                ..Default::default()
            }));
        }
    }
    let after = input.key_marker.as_deref();
    let (items, truncated) = page(&bucket, &prefix, input.delimiter.as_deref(), after, max).await?;
    let next_key = match truncated {
        true => items.last().map(|item| item.key().to_owned()),
        false => None,
    };
    let (objects, prefixes) = contents(items, url);
    let versions = objects
        .into_iter()
        .map(|object| ObjectVersion {
            key: object.key,
            size: object.size,
            last_modified: object.last_modified,
            e_tag: object.e_tag,
            is_latest: Some(true),
            version_id: Some("null".to_owned()),
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(bucket.name.clone()),
        prefix: Some(encode(&prefix, url)),
        delimiter: input.delimiter.filter(|delimiter| !delimiter.is_empty()),
        max_keys: Some(max.min(KEYS_PER_LISTING_MAX) as i32),
        is_truncated: Some(truncated),
        key_marker: input.key_marker,
        version_id_marker: input.version_id_marker,
        next_key_marker: next_key.map(|key| encode(&key, url)),
        next_version_id_marker: truncated.then(|| "null".to_owned()),
        versions: Some(versions),
        common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// Continuation tokens are the last key returned, base64 (opaque to clients).
fn encode_token(key: &str) -> String {
    base64_simd::URL_SAFE_NO_PAD.encode_to_string(key.as_bytes())
}

pub(crate) fn decode_token(token: &str) -> S3Result<String> {
    base64_simd::URL_SAFE_NO_PAD
        .decode_to_vec(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not one this gateway gave"))
}
