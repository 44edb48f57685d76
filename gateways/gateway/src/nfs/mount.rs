//! MOUNT v3 (RFC 1813, appendix I): MNT hands out the root handle of an export (or of a
//! directory below it) to an allowed client, EXPORT lists the exports, DUMP answers an
//! empty list (mounts are not tracked: NFSv3 is stateless), UMNT and UMNTALL are
//! accepted.

use kiseki_namespace::{FileKind, InodeId};

use super::handle::FileHandle;
use super::rpc::{self, Credentials};
use super::xdr::{XdrReader, XdrWriter};
use super::{CallContext, NfsService};

/// Longest MOUNT path.
const MOUNT_PATH_BYTES_MAX: usize = 1024;

/// `mountstat3` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountStatus {
    NoEnt = 2,
    Acces = 13,
    NotDir = 20,
    Inval = 22,
    ServerFault = 10006,
}

/// Answers a MOUNT call: the whole reply, or an RPC-level refusal.
pub async fn call(
    service: &NfsService,
    context: &CallContext,
    procedure: u32,
    arguments: &mut XdrReader<'_>,
) -> Result<Vec<u8>, Vec<u8>> {
    let xid = context.xid;
    if matches!(context.credentials, Credentials::Other(_)) {
        return Err(rpc::auth_error(xid, rpc::AuthStat::RejectedCredential));
    }
    let mut out = rpc::success(xid);
    match procedure {
        // NULL, UMNT, UMNTALL: nothing to do (UMNT's path is read to check the call).
        0 | 4 => {}
        3 => {
            arguments
                .opaque("dirpath", MOUNT_PATH_BYTES_MAX)
                .map_err(|_| rpc::garbage_args(xid))?;
        }
        1 => {
            let path = arguments
                .opaque("dirpath", MOUNT_PATH_BYTES_MAX)
                .map_err(|_| rpc::garbage_args(xid))?;
            mnt(service, context, path, &mut out).await;
        }
        // DUMP: no mounts are tracked.
        2 => {
            out.bool(false);
        }
        5 => export_list(service, &mut out),
        _ => return Err(rpc::procedure_unavailable(xid)),
    }
    Ok(out.into_bytes())
}

async fn mnt(service: &NfsService, context: &CallContext, path: &[u8], out: &mut XdrWriter) {
    let status = match std::str::from_utf8(path) {
        Ok(path) => mount_handle(service, context, path).await,
        Err(_) => Err(MountStatus::Inval),
    };
    match status {
        Ok(handle) => {
            out.u32(0).opaque(&handle);
            // auth_flavors: AUTH_SYS only.
            out.u32(1).u32(rpc::AUTH_SYS);
        }
        Err(status) => {
            tracing::debug!(peer = %context.peer, ?status, "MNT refused");
            out.u32(status as u32);
        }
    }
}

async fn mount_handle(service: &NfsService, context: &CallContext, path: &str) -> Result<Vec<u8>, MountStatus> {
    let (export, rest) = service.exports.by_mount_path(path).await.ok_or(MountStatus::NoEnt)?;
    if !export
        .options
        .clients
        .iter()
        .any(|network| network.contains(context.peer))
    {
        return Err(MountStatus::Acces);
    }
    let mut inode = InodeId::ROOT;
    for component in rest.split('/').filter(|component| !component.is_empty()) {
        if component == "." || component == ".." {
            return Err(MountStatus::Inval);
        }
        let (found, attributes) = export
            .namespace
            .lookup(inode, component.as_bytes())
            .await
            .map_err(|error| match error {
                kiseki_client::ClientError::Namespace(kiseki_namespace::NamespaceError::NotFound) => MountStatus::NoEnt,
                _ => MountStatus::ServerFault,
            })?;
        if attributes.kind != FileKind::Directory {
            return Err(MountStatus::NotDir);
        }
        inode = found;
    }
    let handle = FileHandle {
        export_id: export.id,
        incarnation: export.incarnation,
        inode,
    };
    Ok(service.handles.encode(handle).to_vec())
}

fn export_list(service: &NfsService, out: &mut XdrWriter) {
    for path in service.exports.table().by_path.keys() {
        // exportnode: ex_dir, ex_groups (none: access is checked by address).
        out.bool(true).opaque(path.as_bytes()).bool(false);
    }
    out.bool(false);
}
