//! The one place where client errors become the errno the kernel returns.

use fuser::Errno;
use kiseki_client::ClientError;

/// The errno for `error`: the namespace's own mapping for refused deltas, `ENOSPC` for a
/// full cluster, `EIO` for everything the caller cannot fix (unreachable nodes, data
/// that cannot be read back, a broken answer).
pub fn errno(error: &ClientError) -> Errno {
    let code = code(error);
    if code == Errno::EIO {
        // The application sees only EIO: the log says what it was.
        tracing::warn!(%error, "answering EIO");
    }
    code
}

fn code(error: &ClientError) -> Errno {
    match error {
        ClientError::Namespace(namespace) => Errno::from_i32(namespace.errno()),
        ClientError::NoSpace(_) => Errno::ENOSPC,
        ClientError::Io(io) => io.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
        ClientError::Keys(_) | ClientError::Denied(_) => Errno::EACCES,
        ClientError::Invalid(_)
        | ClientError::Unavailable(_)
        | ClientError::Refused { .. }
        | ClientError::DataUnavailable(_)
        | ClientError::Pipeline(_)
        | ClientError::Placement(_)
        | ClientError::Net(_)
        | ClientError::Service { .. }
        | ClientError::Api(_) => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiseki_namespace::NamespaceError;

    #[test]
    fn refusals_keep_their_errno() {
        let code = |error: ClientError| errno(&error).code();
        assert_eq!(code(ClientError::Namespace(NamespaceError::NotFound)), libc::ENOENT);
        assert_eq!(code(ClientError::Namespace(NamespaceError::NotEmpty)), libc::ENOTEMPTY);
        assert_eq!(code(ClientError::Namespace(NamespaceError::CrossDevice)), libc::EXDEV);
        assert_eq!(code(ClientError::NoSpace("full".into())), libc::ENOSPC);
        assert_eq!(code(ClientError::Unavailable("down".into())), libc::EIO);
        assert_eq!(code(ClientError::Namespace(NamespaceError::ReadOnly)), libc::EROFS);
        let quota = NamespaceError::QuotaExceeded {
            resource: kiseki_namespace::QuotaResource::Files,
            usage: 2,
            limit: 1,
        };
        assert_eq!(code(ClientError::Namespace(quota)), libc::EDQUOT);
    }
}
