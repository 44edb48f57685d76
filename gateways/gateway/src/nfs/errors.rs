//! The one place client and namespace errors become `nfsstat3` codes.

use kiseki_client::ClientError;
use kiseki_namespace::{Limit, NamespaceError};

use super::proto::Status;

/// The NFS status of a failed client call.
pub fn status_of(error: &ClientError) -> Status {
    match error {
        ClientError::Namespace(error) => namespace_status(error),
        ClientError::NoSpace(_) => Status::NoSpc,
        ClientError::Denied(_) => Status::Acces,
        ClientError::Invalid(_) => Status::Inval,
        // Unreachable nodes or shards, a busy cluster: the client retries later.
        ClientError::Unavailable(_) => Status::Jukebox,
        ClientError::Net(error) if error.is_retryable() => Status::Jukebox,
        ClientError::Net(_) | ClientError::Refused { .. } => Status::Io,
        ClientError::DataUnavailable(_) | ClientError::Pipeline(_) | ClientError::Io(_) => Status::Io,
        error => {
            tracing::warn!(%error, "NFS request failed");
            Status::ServerFault
        }
    }
}

/// The NFS status of a namespace refusal.
pub fn namespace_status(error: &NamespaceError) -> Status {
    match error {
        NamespaceError::NotFound => Status::NoEnt,
        NamespaceError::AlreadyExists => Status::Exist,
        NamespaceError::NotEmpty => Status::NotEmpty,
        NamespaceError::NotDirectory => Status::NotDir,
        NamespaceError::IsDirectory => Status::IsDir,
        NamespaceError::CrossDevice => Status::XDev,
        NamespaceError::InvalidName => Status::Inval,
        NamespaceError::NameTooLong => Status::NameTooLong,
        NamespaceError::NotPermitted => Status::Perm,
        NamespaceError::InvalidArgument { .. } | NamespaceError::InvalidPart { .. } => Status::Inval,
        NamespaceError::PreconditionFailed => Status::NotSync,
        NamespaceError::LimitExceeded { limit } => match limit {
            Limit::FileSize => Status::FBig,
            Limit::Links => Status::MLink,
            Limit::SymlinkTarget => Status::NameTooLong,
            Limit::Inodes | Limit::Dentries | Limit::Extents | Limit::Counter | Limit::MultipartUploads => {
                Status::NoSpc
            }
            _ => Status::Inval,
        },
        NamespaceError::NoData => Status::NoEnt,
        // RFC 1813's code for a quota ("resource (quota) hard limit exceeded").
        NamespaceError::QuotaExceeded { .. } => Status::DQuot,
        NamespaceError::ReadOnly => Status::RoFs,
        NamespaceError::AccessDenied => Status::Acces,
        NamespaceError::WatchGap { .. } | NamespaceError::IndexOutOfOrder { .. } | NamespaceError::Corrupt { .. } => {
            Status::Io
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_meaning() {
        let status = |error: NamespaceError| status_of(&ClientError::Namespace(error));
        assert_eq!(status(NamespaceError::NotFound), Status::NoEnt);
        assert_eq!(status(NamespaceError::NotEmpty), Status::NotEmpty);
        assert_eq!(status(NamespaceError::ReadOnly), Status::RoFs);
        assert_eq!(status(NamespaceError::AccessDenied), Status::Acces);
        assert_eq!(
            status(NamespaceError::LimitExceeded { limit: Limit::FileSize }),
            Status::FBig
        );
        let quota = NamespaceError::QuotaExceeded {
            resource: kiseki_namespace::QuotaResource::Bytes,
            usage: 2,
            limit: 1,
        };
        assert_eq!(status(quota), Status::DQuot);
        assert_eq!(status_of(&ClientError::NoSpace("full".into())), Status::NoSpc);
        assert_eq!(status_of(&ClientError::Unavailable("down".into())), Status::Jukebox);
    }
}
