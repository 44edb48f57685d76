//! The one place client and namespace errors become S3 errors. Callers that know better
//! (a missing bucket, a missing upload) map those cases themselves first.

use kiseki_client::ClientError;
use kiseki_namespace::{Limit, NamespaceError};
use s3s::{s3_error, S3Error, S3ErrorCode};

/// The S3 error for a failed client call on an object.
pub fn client_error(error: ClientError) -> S3Error {
    match error {
        ClientError::Namespace(error) => namespace_error(error),
        ClientError::Invalid(reason) => s3_error!(InvalidArgument, "{reason}"),
        ClientError::NoSpace(reason) => s3_error!(ServiceUnavailable, "no space: {reason}"),
        ClientError::Denied(reason) => s3_error!(AccessDenied, "{reason}"),
        error @ (ClientError::Unavailable(_) | ClientError::Net(_) | ClientError::Refused { .. }) => {
            s3_error!(ServiceUnavailable, "{error}")
        }
        error => {
            tracing::warn!(%error, "request failed");
            s3_error!(InternalError, "{error}")
        }
    }
}

/// The S3 error for a namespace refusal.
pub fn namespace_error(error: NamespaceError) -> S3Error {
    match error {
        NamespaceError::NotFound => s3_error!(NoSuchKey),
        NamespaceError::PreconditionFailed => s3_error!(PreconditionFailed),
        NamespaceError::NameTooLong => s3_error!(KeyTooLongError, "a segment of the key is longer than 255 bytes"),
        NamespaceError::NotDirectory => s3_error!(
            InvalidArgument,
            "a prefix of the key is an object; keys map to paths (docs/s3.md)"
        ),
        NamespaceError::IsDirectory => s3_error!(
            InvalidArgument,
            "the key names a directory (other keys are under it); keys map to paths (docs/s3.md)"
        ),
        NamespaceError::NotEmpty => s3_error!(BucketNotEmpty),
        NamespaceError::InvalidName => s3_error!(InvalidArgument, "the key is not a valid path"),
        NamespaceError::InvalidPart { part_number } => {
            s3_error!(InvalidPart, "part {part_number} was not uploaded or its ETag differs")
        }
        NamespaceError::LimitExceeded { limit } => match limit {
            Limit::ObjectMeta => s3_error!(MetadataTooLarge),
            Limit::FileSize => s3_error!(EntityTooLarge),
            Limit::MultipartUploads => s3_error!(SlowDown, "too many multipart uploads in progress"),
            limit => s3_error!(ServiceUnavailable, "namespace limit reached: {limit:?}"),
        },
        error @ NamespaceError::InvalidArgument { .. } => s3_error!(InvalidArgument, "{error}"),
        // As Ceph RGW answers it: 403 with the code `QuotaExceeded`.
        error @ NamespaceError::QuotaExceeded { .. } => {
            let mut refused = S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), error.to_string());
            refused.set_status_code(http::StatusCode::FORBIDDEN);
            refused
        }
        NamespaceError::ReadOnly => s3_error!(ServiceUnavailable, "the cluster is in maintenance (read-only)"),
        NamespaceError::AccessDenied => s3_error!(AccessDenied),
        error => {
            tracing::warn!(%error, "namespace refused a request");
            s3_error!(InternalError, "{error}")
        }
    }
}
