//! Object metadata as the namespace stores it (`ObjectMeta`) and as S3 shows it:
//! timestamps, ETags, stored headers, and the conditional-request checks.

use std::collections::BTreeMap;

use kiseki_namespace::{Attributes, InodeId, ObjectMeta};
use md5::{Digest, Md5};
use s3s::dto::{ETag, ETagCondition, Metadata, Timestamp};
use s3s::{s3_error, S3Result};

/// Stored header names (in `ObjectMeta::system_metadata`).
pub const CONTENT_ENCODING: &str = "content-encoding";
/// `Content-Disposition`.
pub const CONTENT_DISPOSITION: &str = "content-disposition";
/// `Content-Language`.
pub const CONTENT_LANGUAGE: &str = "content-language";
/// `Cache-Control`.
pub const CACHE_CONTROL: &str = "cache-control";

/// A namespace time as S3 shows it.
pub fn timestamp(time: kiseki_namespace::Timestamp) -> Timestamp {
    let nanos = i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos);
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(time) => Timestamp::from(time),
        Err(_) => Timestamp::from(time::OffsetDateTime::UNIX_EPOCH),
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    hex_simd::encode_to_string(bytes, hex_simd::AsciiCase::Lower)
}

/// MD5 of `data`, as hex.
pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

/// The ETag of a file: the stored one for an object, else one derived from the inode and
/// its generation (a file written through a mount has no MD5; this changes whenever the
/// file does, which is what conditional requests need).
pub fn etag_of(meta: Option<&ObjectMeta>, inode: InodeId, attributes: &Attributes) -> String {
    match meta {
        Some(meta) if !meta.etag.is_empty() => meta.etag.clone(),
        _ => md5_hex(format!("kiseki-file-{}-{}", inode.0, attributes.generation).as_bytes()),
    }
}

/// The headers an S3 client set on a PUT or multipart create, to store.
#[derive(Default)]
pub struct StoredHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `x-amz-meta-*`.
    pub user: Option<Metadata>,
    /// `Content-Encoding`, `Content-Disposition`, `Content-Language`, `Cache-Control`.
    pub other: Vec<(&'static str, Option<String>)>,
}

impl StoredHeaders {
    /// The headers of a request, in the order S3's inputs name them.
    pub fn new(
        content_type: Option<String>,
        user: Option<Metadata>,
        content_encoding: Option<String>,
        content_disposition: Option<String>,
        content_language: Option<String>,
        cache_control: Option<String>,
    ) -> StoredHeaders {
        StoredHeaders {
            content_type,
            user,
            other: vec![
                (CONTENT_ENCODING, content_encoding),
                (CONTENT_DISPOSITION, content_disposition),
                (CONTENT_LANGUAGE, content_language),
                (CACHE_CONTROL, cache_control),
            ],
        }
    }

    /// The object metadata to store, with `etag`.
    pub fn into_meta(self, etag: String) -> ObjectMeta {
        let user_metadata: BTreeMap<String, String> = self.user.unwrap_or_default().into_iter().collect();
        let system_metadata = self
            .other
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name.to_owned(), value)))
            .collect();
        ObjectMeta {
            content_type: self.content_type.unwrap_or_default(),
            etag,
            user_metadata,
            system_metadata,
        }
    }
}

/// What S3 shows of stored metadata.
pub struct Shown {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `x-amz-meta-*`.
    pub metadata: Option<Metadata>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
}

/// The headers of a stored object (none for a plain file).
pub fn shown(meta: Option<&ObjectMeta>) -> Shown {
    let header = |name: &str| meta.and_then(|meta| meta.system_metadata.get(name).cloned());
    Shown {
        content_type: Some(
            meta.map(|meta| meta.content_type.clone())
                .filter(|content_type| !content_type.is_empty())
                .unwrap_or_else(|| "binary/octet-stream".to_owned()),
        ),
        metadata: meta
            .filter(|meta| !meta.user_metadata.is_empty())
            .map(|meta| meta.user_metadata.clone().into_iter().collect()),
        content_encoding: header(CONTENT_ENCODING),
        content_disposition: header(CONTENT_DISPOSITION),
        content_language: header(CONTENT_LANGUAGE),
        cache_control: header(CACHE_CONTROL),
    }
}

/// The conditions of a GET or HEAD (RFC 9110 §13.2.2 order: If-Match, then
/// If-Unmodified-Since when there is no If-Match, then If-None-Match, then
/// If-Modified-Since when there is no If-None-Match).
pub struct ReadConditions<'a> {
    /// `If-Match`.
    pub if_match: Option<&'a ETagCondition>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a ETagCondition>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a Timestamp>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// The byte range a GET or HEAD serves of an object of `size` bytes, and its
/// `Content-Range` when a range was asked for (`InvalidRange` when it is empty or beyond).
pub fn served_range(range: Option<&s3s::dto::Range>, size: u64) -> S3Result<(std::ops::Range<u64>, Option<String>)> {
    let Some(range) = range else {
        return Ok((0..size, None));
    };
    let range = range.check(size)?;
    if range.is_empty() {
        return Err(s3_error!(InvalidRange));
    }
    let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
    Ok((range, Some(content_range)))
}

/// Seconds since the epoch (HTTP dates have whole seconds).
fn seconds(time: &Timestamp) -> i64 {
    time::OffsetDateTime::from(time.clone()).unix_timestamp()
}

impl ReadConditions<'_> {
    /// `PreconditionFailed` or `NotModified` when a condition refuses the object whose
    /// ETag is `etag` and modification time `modified`.
    pub fn check(&self, etag: &str, modified: kiseki_namespace::Timestamp) -> S3Result<()> {
        let current = ETag::Strong(etag.to_owned());
        let modified = modified.seconds;
        match self.if_match {
            Some(ETagCondition::Any) => {}
            Some(ETagCondition::ETag(wanted)) if !wanted.strong_cmp(&current) => {
                return Err(s3_error!(PreconditionFailed, "If-Match"))
            }
            Some(_) => {}
            None => {
                if self.if_unmodified_since.is_some_and(|since| modified > seconds(since)) {
                    return Err(s3_error!(PreconditionFailed, "If-Unmodified-Since"));
                }
            }
        }
        match self.if_none_match {
            Some(ETagCondition::Any) => return Err(s3_error!(NotModified)),
            Some(ETagCondition::ETag(unwanted)) if unwanted.weak_cmp(&current) => return Err(s3_error!(NotModified)),
            Some(_) => {}
            None => {
                if self.if_modified_since.is_some_and(|since| modified <= seconds(since)) {
                    return Err(s3_error!(NotModified));
                }
            }
        }
        Ok(())
    }
}

/// The multipart ETag: MD5 of the parts' binary MD5s, then `-N`.
pub fn multipart_etag<'a>(part_etags: impl Iterator<Item = &'a str>) -> String {
    let mut hasher = Md5::new();
    let mut count = 0;
    for etag in part_etags {
        count += 1;
        match hex_simd::decode_to_vec(etag.trim_matches('"')) {
            Ok(bytes) => hasher.update(&bytes),
            Err(_) => hasher.update(etag.as_bytes()),
        }
    }
    format!("{}-{count}", hex(&hasher.finalize()))
}
