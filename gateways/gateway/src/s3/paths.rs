//! How S3 names map to the namespace (documented for users in `docs/s3.md`):
//!
//! - a bucket is a directory in the root of the tenant's namespace;
//! - a key is a path under it, split at `/`: `a/b/c.txt` is the file `c.txt` in the
//!   directories `a/b`, created on demand, so files written through a mount are objects
//!   and objects are files;
//! - a key ending in `/` is a directory marker: PUT with an empty body creates the
//!   directory, DELETE removes it if it is empty;
//! - a key that is not a path is refused (`InvalidArgument`): an empty segment (`a//b`,
//!   a leading `/`), a `.` or `..` segment, a NUL byte; a segment longer than 255 bytes
//!   is `KeyTooLongError`, a key longer than 1024 bytes too;
//! - a key cannot be both an object and a prefix of other keys (`a` and `a/b`): the
//!   second one is refused with `InvalidArgument`.

use s3s::{s3_error, S3Result};

/// Longest key S3 allows.
pub const KEY_BYTES_MAX: usize = 1024;

/// Refuses a name that is not a valid S3 bucket name (`InvalidBucketName`).
pub fn check_bucket_name(name: &str) -> S3Result<()> {
    match s3s::path::check_bucket_name(name) {
        true => Ok(()),
        false => Err(s3_error!(InvalidBucketName)),
    }
}

/// A key split into path segments, and whether it is a directory marker.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyPath<'k> {
    /// The segments, in order (at least one).
    pub segments: Vec<&'k str>,
    /// The key ends in `/`.
    pub marker: bool,
}

impl KeyPath<'_> {
    /// The segments above the last one.
    pub fn parents(&self) -> &[&str] {
        &self.segments[..self.segments.len() - 1]
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.segments[self.segments.len() - 1]
    }
}

/// Splits `key` into path segments, refusing keys that are not paths.
pub fn key_path(key: &str) -> S3Result<KeyPath<'_>> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "the key is empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(s3_error!(KeyTooLongError));
    }
    let (body, marker) = match key.strip_suffix('/') {
        Some(body) => (body, true),
        None => (key, false),
    };
    let mut segments = Vec::new();
    for segment in body.split('/') {
        match segment {
            "" | "." | ".." => {
                return Err(s3_error!(
                    InvalidArgument,
                    "the key {key:?} is not a path: empty, `.` and `..` segments are refused (docs/s3.md)"
                ))
            }
            segment if segment.contains('\0') => return Err(s3_error!(InvalidArgument, "NUL in a key")),
            segment if segment.len() > kiseki_namespace::NAME_BYTES_MAX => {
                return Err(s3_error!(
                    KeyTooLongError,
                    "a segment of the key is longer than 255 bytes"
                ))
            }
            segment => segments.push(segment),
        }
    }
    Ok(KeyPath { segments, marker })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_segments() {
        let path = key_path("a/b/c.txt").unwrap();
        assert_eq!(path.segments, vec!["a", "b", "c.txt"]);
        assert!(!path.marker);
        assert_eq!(path.parents(), &["a", "b"]);
        assert_eq!(path.name(), "c.txt");
        let marker = key_path("photos/2026/").unwrap();
        assert!(marker.marker);
        assert_eq!(marker.segments, vec!["photos", "2026"]);
    }

    #[test]
    fn keys_that_are_not_paths_are_refused() {
        for key in ["", "/a", "a//b", "a/./b", "../etc/passwd", "a/..", "/", "a\0b"] {
            assert!(key_path(key).is_err(), "{key:?}");
        }
        assert!(key_path(&"x".repeat(256)).is_err());
        assert!(key_path(&"x/".repeat(600)).is_err());
        assert!(key_path(&format!("{}/{}", "x".repeat(255), "y".repeat(255))).is_ok());
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for name in ["my-bucket", "abc", "a.b.c", "data-2026"] {
            assert!(check_bucket_name(name).is_ok(), "{name}");
        }
        for name in [
            "ab",
            "My-Bucket",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "a_b",
            &"x".repeat(64),
        ] {
            assert!(check_bucket_name(name).is_err(), "{name}");
        }
    }
}
