//! The NFSv3 procedures over the native client: each decodes its arguments (a decoding
//! failure is `GARBAGE_ARGS`), resolves its handles (`BADHANDLE`, `STALE`, `ACCES` for a
//! client the export does not allow), checks permissions as the kernel would
//! ([`super::access`]), refuses changes on a read-only export (`ROFS`), calls the
//! namespace, and writes the status and results.

use std::sync::Arc;

use kiseki_client::{ClientError, Creator, Namespace};
use kiseki_namespace::{
    AttrChanges, Attributes, Delta, FileKind, InodeId, NamespaceError, NewAttributes, RenameFlags, SetAttrGuard,
    Timestamp,
};

use super::access::{Caller, EXECUTE, READ, WRITE};
use super::errors::status_of;
use super::exports::Export;
use super::handle::FileHandle;
use super::proto::{
    write_fattr, write_post_op, write_pre_op, CreateHow, DirOp, MknodWhat, NfsArguments, SetAttributes, SetTime,
    Stable, Status, IO_BYTES_MAX, NAME_BYTES_MAX,
};
use super::rpc::{self, Credentials};
use super::xdr::{XdrReader, XdrWriter};
use super::{CallContext, NfsService};

/// The largest file (the namespace's `file_bytes_max` default; FSINFO's `maxfilesize`).
const FILE_BYTES_MAX: u64 = 1 << 50;

/// A handle resolved for a call: its export, its inode, and the caller as the export
/// sees it.
struct Target {
    export: Arc<Export>,
    inode: InodeId,
    caller: Caller,
}

impl Target {
    fn namespace(&self) -> &Namespace {
        &self.export.namespace
    }

    fn fsid(&self) -> u64 {
        self.export.fsid()
    }

    fn key(&self) -> (u32, InodeId) {
        (self.export.id, self.inode)
    }
}

/// Answers an NFSv3 call: the whole reply, or an RPC-level refusal.
pub async fn call(
    service: &NfsService,
    context: &CallContext,
    procedure: u32,
    arguments: &mut XdrReader<'_>,
) -> Result<Vec<u8>, Vec<u8>> {
    let xid = context.xid;
    if procedure != 0 {
        match context.credentials {
            Credentials::Sys { .. } => {}
            Credentials::None => return Err(rpc::auth_error(xid, rpc::AuthStat::TooWeak)),
            Credentials::Other(_) => return Err(rpc::auth_error(xid, rpc::AuthStat::RejectedCredential)),
        }
    }
    let arguments = match NfsArguments::decode(procedure, arguments) {
        Ok(Some(arguments)) => arguments,
        Ok(None) => return Err(rpc::procedure_unavailable(xid)),
        Err(error) => {
            tracing::debug!(peer = %context.peer, procedure, %error, "arguments do not decode");
            return Err(rpc::garbage_args(xid));
        }
    };
    let mut out = rpc::success(xid);
    let nfs = Nfs {
        service,
        context,
        out: &mut out,
    };
    match arguments {
        NfsArguments::Null => {}
        NfsArguments::GetAttr(handle) => nfs.getattr(handle).await,
        NfsArguments::SetAttr { handle, set, guard } => nfs.setattr(handle, set, guard).await,
        NfsArguments::Lookup(dirop) => nfs.lookup(dirop).await,
        NfsArguments::Access { handle, mask } => nfs.access(handle, mask).await,
        NfsArguments::ReadLink(handle) => nfs.readlink(handle).await,
        NfsArguments::Read { handle, offset, count } => nfs.read(handle, offset, count).await,
        NfsArguments::Write {
            handle,
            offset,
            count,
            stable,
            data,
        } => nfs.write(handle, offset, count, stable, data).await,
        NfsArguments::Create { dirop, how } => nfs.create(dirop, how).await,
        NfsArguments::Mkdir { dirop, set } => nfs.mkdir(dirop, set).await,
        NfsArguments::Symlink { dirop, set, target } => nfs.symlink(dirop, set, target).await,
        NfsArguments::Mknod { dirop, what } => nfs.mknod(dirop, what).await,
        NfsArguments::Remove(dirop) => nfs.remove(dirop, false).await,
        NfsArguments::Rmdir(dirop) => nfs.remove(dirop, true).await,
        NfsArguments::Rename { from, to } => nfs.rename(from, to).await,
        NfsArguments::Link { handle, dirop } => nfs.link(handle, dirop).await,
        NfsArguments::ReadDir {
            handle,
            cookie,
            verifier,
            dircount,
            maxcount,
            plus,
        } => nfs.readdir(handle, cookie, verifier, (dircount, maxcount), plus).await,
        NfsArguments::FsStat(handle) => nfs.fsstat(handle).await,
        NfsArguments::FsInfo(handle) => nfs.fsinfo(handle).await,
        NfsArguments::PathConf(handle) => nfs.pathconf(handle).await,
        NfsArguments::Commit { handle, .. } => nfs.commit(handle).await,
    }
    Ok(out.into_bytes())
}

/// One NFSv3 call in progress.
struct Nfs<'c> {
    service: &'c NfsService,
    context: &'c CallContext,
    out: &'c mut XdrWriter,
}

/// The client's time, as the namespace keeps times.
fn now() -> Timestamp {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: elapsed.as_secs() as i64,
        nanos: elapsed.subsec_nanos(),
    }
}

/// The creation time an EXCLUSIVE create stores its verifier in (RFC 1813 leaves where to
/// the server; the client sets the real times with a SETATTR after).
fn verifier_time(verifier: [u8; 8]) -> Timestamp {
    let seconds = u32::from_be_bytes([verifier[0], verifier[1], verifier[2], verifier[3]]);
    let nanos = u32::from_be_bytes([verifier[4], verifier[5], verifier[6], verifier[7]]) % 1_000_000_000;
    Timestamp {
        seconds: i64::from(seconds),
        nanos,
    }
}

fn check_name(name: &[u8]) -> Result<(), Status> {
    if name.len() > NAME_BYTES_MAX {
        return Err(Status::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Status::Inval);
    }
    Ok(())
}

impl Nfs<'_> {
    fn status(&mut self, status: Status) {
        self.out.u32(status as u32);
    }

    /// Resolves a handle (I-H1).
    async fn resolve(&self, bytes: &[u8]) -> Result<Target, Status> {
        let handle = self.service.handles.decode(bytes).map_err(|_| Status::BadHandle)?;
        let FileHandle {
            export_id,
            incarnation,
            inode,
        } = handle;
        let export = self.service.exports.by_id(export_id).await.ok_or(Status::Stale)?;
        if export.incarnation != incarnation {
            return Err(Status::Stale);
        }
        if !export
            .options
            .clients
            .iter()
            .any(|network| network.contains(self.context.peer))
        {
            return Err(Status::Acces);
        }
        let caller = Caller::new(&self.context.credentials, &export.options);
        Ok(Target { export, inode, caller })
    }

    fn handle_of(&self, export: &Export, inode: InodeId) -> [u8; super::handle::HANDLE_BYTES] {
        self.service.handles.encode(FileHandle {
            export_id: export.id,
            incarnation: export.incarnation,
            inode,
        })
    }

    /// An inode's attributes, with the size its buffered writes give it; `STALE` when it
    /// is gone.
    /// The buffered end is asked for before the shard: bytes a flush commits in between
    /// are in one or the other, never in neither.
    async fn attributes(&self, target: &Target, inode: InodeId) -> Result<Attributes, Status> {
        let key = (target.export.id, inode);
        let buffered_end = match self.service.writes.may_be_dirty(key) {
            true => self.service.writes.overlay(key, 0, 0).await.end_bytes,
            false => 0,
        };
        let mut attributes = target.namespace().getattr(inode).await.map_err(|error| match error {
            ClientError::Namespace(NamespaceError::NotFound) => Status::Stale,
            error => status_of(&error),
        })?;
        if attributes.kind == FileKind::File {
            attributes.size_bytes = attributes.size_bytes.max(buffered_end);
        }
        Ok(attributes)
    }

    fn post_op(&mut self, target: &Target, inode: InodeId, attributes: Option<&Attributes>) {
        write_post_op(
            self.out,
            attributes.map(|attributes| (attributes, inode.0)),
            target.fsid(),
        );
    }

    fn wcc(&mut self, target: &Target, inode: InodeId, before: Option<&Attributes>, after: Option<&Attributes>) {
        write_pre_op(self.out, before);
        self.post_op(target, inode, after);
    }

    fn refuse_read_only(&self, target: &Target) -> Result<(), Status> {
        match target.export.options.read_only {
            true => Err(Status::RoFs),
            false => Ok(()),
        }
    }

    async fn getattr(mut self, handle: &[u8]) {
        let result = async {
            let target = self.resolve(handle).await?;
            let attributes = self.attributes(&target, target.inode).await?;
            Ok::<_, Status>((target, attributes))
        }
        .await;
        match result {
            Ok((target, attributes)) => {
                self.status(Status::Ok);
                write_fattr(self.out, &attributes, target.inode.0, target.fsid());
            }
            Err(status) => self.status(status),
        }
    }

    async fn setattr(mut self, handle: &[u8], set: SetAttributes, guard: Option<Timestamp>) {
        let target = match self.resolve(handle).await {
            Ok(target) => target,
            Err(status) => {
                self.status(status);
                self.wcc_empty();
                return;
            }
        };
        let before = self.attributes(&target, target.inode).await.ok();
        let result = match &before {
            Some(before) => self.apply_setattr(&target, before, &set, guard).await,
            None => Err(Status::Stale),
        };
        let after = self.attributes(&target, target.inode).await.ok();
        self.status(result.err().unwrap_or(Status::Ok));
        self.wcc(&target, target.inode, before.as_ref(), after.as_ref());
    }

    fn wcc_empty(&mut self) {
        self.out.bool(false).bool(false);
    }

    async fn apply_setattr(
        &self,
        target: &Target,
        before: &Attributes,
        set: &SetAttributes,
        guard: Option<Timestamp>,
    ) -> Result<(), Status> {
        self.refuse_read_only(target)?;
        let caller = &target.caller;
        if let Some(ctime) = guard {
            if before.ctime.seconds as u32 != ctime.seconds as u32 || before.ctime.nanos != ctime.nanos {
                return Err(Status::NotSync);
            }
        }
        if set.mode.is_some() && !caller.owns(before) {
            return Err(Status::Perm);
        }
        if set.uid.is_some_and(|uid| uid != before.uid) && !caller.is_root() {
            return Err(Status::Perm);
        }
        if let Some(gid) = set.gid.filter(|gid| *gid != before.gid) {
            if !(caller.is_root() || (caller.uid == before.uid && caller.in_group(gid))) {
                return Err(Status::Perm);
            }
        }
        if set.size.is_some() {
            match before.kind {
                FileKind::File => {}
                FileKind::Directory => return Err(Status::IsDir),
                _ => return Err(Status::Inval),
            }
            if !caller.may_access_data(before, WRITE) {
                return Err(Status::Acces);
            }
        }
        if set.size.is_some() || set.mode.is_some() || set.uid.is_some() || set.gid.is_some() {
            // What was buffered is committed first: the change comes after it, and the
            // attributes buffered writes are checked with start again from the new ones.
            self.service.writes.commit(target.key()).await?;
        }
        let time = |how: SetTime| match how {
            SetTime::DontChange => Ok(None),
            SetTime::ServerTime if caller.owns(before) || caller.may(before, WRITE) => Ok(Some(now())),
            SetTime::ClientTime(time) if caller.owns(before) => Ok(Some(time)),
            _ => Err(Status::Perm),
        };
        let changes = AttrChanges {
            mode: set.mode.map(|mode| mode & 0o7777),
            uid: set.uid,
            gid: set.gid,
            size_bytes: set.size,
            atime: time(set.atime)?,
            mtime: time(set.mtime)?,
        };
        let delta = Delta::SetAttr {
            inode: target.inode,
            changes,
            ctime: now(),
            guard: guard.map(SetAttrGuard::Ctime),
        };
        match target.namespace().propose(&delta).await {
            Ok(_) => Ok(()),
            Err(ClientError::Namespace(NamespaceError::PreconditionFailed)) => Err(Status::NotSync),
            Err(error) => Err(status_of(&error)),
        }
    }

    async fn lookup(mut self, dirop: DirOp<'_>) {
        let target = match self.resolve(dirop.dir).await {
            Ok(target) => target,
            Err(status) => {
                self.status(status);
                self.out.bool(false);
                return;
            }
        };
        let (dir, found) = self.lookup_entry(&target, dirop.name).await;
        match found {
            Ok((inode, attributes)) => {
                self.status(Status::Ok);
                let handle = self.handle_of(&target.export, inode);
                self.out.opaque(&handle);
                self.post_op(&target, inode, Some(&attributes));
                self.post_op(&target, target.inode, dir.as_ref());
            }
            Err(status) => {
                self.status(status);
                self.post_op(&target, target.inode, dir.as_ref());
            }
        }
    }

    /// The directory's attributes (when it answered) and the entry `name` in it: one read
    /// for a name, two for `.` and `..`.
    async fn lookup_entry(
        &self,
        target: &Target,
        name: &[u8],
    ) -> (Option<Attributes>, Result<(InodeId, Attributes), Status>) {
        let failed = |error: ClientError| match error {
            ClientError::Namespace(NamespaceError::NotFound) => Status::Stale,
            error => status_of(&error),
        };
        let (dir, entry) = match name {
            b"." | b".." => match self.attributes(target, target.inode).await {
                Ok(dir) => (dir, None),
                Err(status) => return (None, Err(status)),
            },
            _ if name.len() > NAME_BYTES_MAX => return (None, Err(Status::NameTooLong)),
            _ => match target.namespace().lookup_in(target.inode, name).await {
                Ok((dir, entry)) => (dir, Some(entry)),
                Err(ClientError::Namespace(NamespaceError::InvalidName)) => return (None, Err(Status::Inval)),
                Err(error) => return (None, Err(failed(error))),
            },
        };
        if dir.kind != FileKind::Directory {
            return (Some(dir), Err(Status::NotDir));
        }
        if !target.caller.may(&dir, EXECUTE) {
            return (Some(dir), Err(Status::Acces));
        }
        let found = match (name, entry) {
            (b".", _) => Ok((target.inode, dir.clone())),
            (b"..", _) => target
                .namespace()
                .parent(target.inode)
                .await
                .map_err(|error| status_of(&error)),
            (_, Some(Some((inode, mut attributes)))) => {
                let key = (target.export.id, inode);
                if attributes.kind == FileKind::File && self.service.writes.may_be_dirty(key) {
                    let overlay = self.service.writes.overlay(key, 0, 0).await;
                    attributes.size_bytes = attributes.size_bytes.max(overlay.end_bytes);
                }
                Ok((inode, attributes))
            }
            _ => Err(Status::NoEnt),
        };
        (Some(dir), found)
    }

    async fn access(mut self, handle: &[u8], asked: u32) {
        let resolved = async {
            let target = self.resolve(handle).await?;
            let attributes = self.attributes(&target, target.inode).await?;
            Ok::<_, Status>((target, attributes))
        }
        .await;
        let (target, attributes) = match resolved {
            Ok(resolved) => resolved,
            Err(status) => {
                self.status(status);
                self.out.bool(false);
                return;
            }
        };
        const ACCESS_READ: u32 = 0x01;
        const ACCESS_LOOKUP: u32 = 0x02;
        const ACCESS_MODIFY: u32 = 0x04;
        const ACCESS_EXTEND: u32 = 0x08;
        const ACCESS_DELETE: u32 = 0x10;
        const ACCESS_EXECUTE: u32 = 0x20;
        let caller = &target.caller;
        let directory = attributes.kind == FileKind::Directory;
        let writable = !target.export.options.read_only;
        let mut granted = 0;
        let mut grant = |bit: u32, allowed: bool| {
            if asked & bit != 0 && allowed {
                granted |= bit;
            }
        };
        grant(ACCESS_READ, caller.may(&attributes, READ));
        grant(ACCESS_LOOKUP, directory && caller.may(&attributes, EXECUTE));
        grant(ACCESS_MODIFY, writable && caller.may(&attributes, WRITE));
        grant(ACCESS_EXTEND, writable && caller.may(&attributes, WRITE));
        grant(
            ACCESS_DELETE,
            writable && directory && caller.may(&attributes, WRITE | EXECUTE),
        );
        grant(ACCESS_EXECUTE, !directory && caller.may(&attributes, EXECUTE));
        self.status(Status::Ok);
        self.post_op(&target, target.inode, Some(&attributes));
        self.out.u32(granted);
    }

    async fn readlink(mut self, handle: &[u8]) {
        let result = async {
            let target = self.resolve(handle).await?;
            let attributes = self.attributes(&target, target.inode).await?;
            if attributes.kind != FileKind::Symlink {
                return Err(Status::Inval);
            }
            let link = target
                .namespace()
                .readlink(target.inode)
                .await
                .map_err(|error| status_of(&error))?;
            Ok((target, attributes, link))
        }
        .await;
        match result {
            Ok((target, attributes, link)) => {
                self.status(Status::Ok);
                self.post_op(&target, target.inode, Some(&attributes));
                self.out.opaque(&link);
            }
            Err(status) => {
                self.status(status);
                self.out.bool(false);
            }
        }
    }

    async fn read(mut self, handle: &[u8], offset: u64, count: u32) {
        let count = count.min(IO_BYTES_MAX);
        let result = async {
            let target = self.resolve(handle).await?;
            let (attributes, data) = self.read_data(&target, offset, count).await?;
            Ok((target, attributes, data))
        }
        .await;
        match result {
            Ok((target, attributes, data)) => {
                let end = offset.saturating_add(data.len() as u64);
                self.service
                    .counters
                    .read_bytes
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.status(Status::Ok);
                self.post_op(&target, target.inode, Some(&attributes));
                self.out
                    .u32(data.len() as u32)
                    .bool(end >= attributes.size_bytes)
                    .opaque(&data);
            }
            Err(status) => {
                self.status(status);
                self.out.bool(false);
            }
        }
    }

    /// The file's attributes and `count` bytes at `offset` (cut at its size): its
    /// attributes and committed pieces in one read of the shard, the chunks through the
    /// export's cache, then the buffered writes laid over them. The range that follows is
    /// fetched into the cache meanwhile (read-ahead).
    async fn read_data(&self, target: &Target, offset: u64, count: u32) -> Result<(Attributes, Vec<u8>), Status> {
        let failed = |error: ClientError| match error {
            ClientError::Namespace(NamespaceError::NotFound) => Status::Stale,
            error => status_of(&error),
        };
        // The buffered bytes first, then the shard: bytes a flush commits in between are
        // in one or the other, never in neither.
        let overlay = self
            .service
            .writes
            .overlay(target.key(), offset, u64::from(count))
            .await;
        let (mut attributes, pieces) = target
            .namespace()
            .read_with_attributes(target.inode, offset, u64::from(count))
            .await
            .map_err(failed)?;
        match attributes.kind {
            FileKind::File => {}
            FileKind::Directory => return Err(Status::IsDir),
            _ => return Err(Status::Inval),
        }
        if !target.caller.may_access_data(&attributes, READ) {
            return Err(Status::Acces);
        }
        attributes.size_bytes = attributes.size_bytes.max(overlay.end_bytes);
        let length = attributes.size_bytes.saturating_sub(offset).min(u64::from(count));
        let end = offset + length;
        if end < attributes.size_bytes {
            read_ahead(Arc::clone(&target.export), target.inode, end);
        }
        let mut data = vec![0u8; length as usize];
        for piece in pieces {
            match piece {
                kiseki_namespace::ReadPiece::Inline { offset_bytes, .. } => {
                    let bytes = target
                        .namespace()
                        .inline_piece(&piece)
                        .map_err(|error| status_of(&error))?
                        .unwrap_or_default();
                    copy_into(&mut data, offset, offset_bytes, &bytes);
                }
                kiseki_namespace::ReadPiece::Hole { .. } => {}
                kiseki_namespace::ReadPiece::Extent { offset_bytes, extent } => {
                    let chunk = target
                        .export
                        .cache
                        .chunk(target.namespace(), &extent)
                        .await
                        .map_err(|error| status_of(&error))?;
                    let start = extent.chunk_offset_bytes as usize;
                    let stop = start + extent.length_bytes as usize;
                    let bytes = chunk.get(start..stop).ok_or(Status::Io)?;
                    copy_into(&mut data, offset, offset_bytes, bytes);
                }
            }
        }
        for (at, bytes) in overlay.ranges {
            copy_into(&mut data, offset, at, &bytes);
        }
        Ok((attributes, data))
    }

    async fn write(mut self, handle: &[u8], offset: u64, count: u32, stable: Stable, data: &[u8]) {
        let result = async {
            let target = self.resolve(handle).await?;
            if data.len() != count as usize {
                return Err(Status::Inval);
            }
            let after = self.write_data(&target, offset, data, stable).await?;
            Ok((target, after))
        }
        .await;
        match result {
            Ok((target, after)) => {
                self.service
                    .counters
                    .written_bytes
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.status(Status::Ok);
                self.wcc(&target, target.inode, None, after.as_ref());
                let committed = if stable == Stable::Unstable {
                    Stable::Unstable
                } else {
                    Stable::FileSync
                };
                self.out
                    .u32(count)
                    .u32(committed as u32)
                    .fixed(&self.service.writes.verifier());
            }
            Err(status) => {
                self.status(status);
                self.wcc_empty();
            }
        }
    }

    /// Buffers (or, for a stable write, commits) a write; the attributes after a stable
    /// one.
    async fn write_data(
        &self,
        target: &Target,
        offset: u64,
        data: &[u8],
        stable: Stable,
    ) -> Result<Option<Attributes>, Status> {
        self.refuse_read_only(target)?;
        // While the file has buffered writes, the attributes its buffer started with
        // serve the checks: the writes of a stream read the shard once per buffer.
        let attributes = match self.service.writes.attributes(target.key()).await {
            Some(attributes) => attributes,
            None => self.attributes(target, target.inode).await?,
        };
        match attributes.kind {
            FileKind::File => {}
            FileKind::Directory => return Err(Status::IsDir),
            _ => return Err(Status::Inval),
        }
        if !target.caller.may_access_data(&attributes, WRITE) {
            return Err(Status::Acces);
        }
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > FILE_BYTES_MAX)
        {
            return Err(Status::FBig);
        }
        let sync = stable != Stable::Unstable;
        self.service
            .writes
            .write(
                target.namespace(),
                &attributes,
                target.key(),
                offset,
                data.to_vec(),
                sync,
            )
            .await?;
        if sync {
            return Ok(self.attributes(target, target.inode).await.ok());
        }
        Ok(None)
    }

    async fn commit(mut self, handle: &[u8]) {
        let target = match self.resolve(handle).await {
            Ok(target) => target,
            Err(status) => {
                self.status(status);
                self.wcc_empty();
                return;
            }
        };
        // The file's attributes are not read again: the client asks if it needs them.
        match self.service.writes.commit(target.key()).await {
            Ok(()) => {
                self.status(Status::Ok);
                self.wcc_empty();
                self.out.fixed(&self.service.writes.verifier());
            }
            Err(status) => {
                self.status(status);
                self.wcc_empty();
            }
        }
    }
}

/// Why the caller may not add or remove entries of `dir` (`target`'s attributes), if
/// it may not: not a directory, a read-only export, or no write and search permission.
fn directory_refusal(target: &Target, dir: &Attributes) -> Option<Status> {
    if dir.kind != FileKind::Directory {
        Some(Status::NotDir)
    } else if target.export.options.read_only {
        Some(Status::RoFs)
    } else if !target.caller.may(dir, WRITE | EXECUTE) {
        Some(Status::Acces)
    } else {
        None
    }
}

/// Bytes fetched ahead of a read.
const READ_AHEAD_BYTES: u64 = 4 << 20;

/// Fetches the chunks of `[from, from + READ_AHEAD_BYTES)` of a file into its export's
/// cache in the background, unless the export runs as many read-aheads as it may.
fn read_ahead(export: Arc<Export>, inode: InodeId, from: u64) {
    let Ok(permit) = Arc::clone(&export.read_aheads).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let Ok(pieces) = export.namespace.pieces(inode, from, READ_AHEAD_BYTES).await else {
            return;
        };
        for piece in pieces {
            if let kiseki_namespace::ReadPiece::Extent { extent, .. } = piece {
                if export.cache.chunk(&export.namespace, &extent).await.is_err() {
                    return;
                }
            }
        }
    });
}

/// Copies `bytes` (at file offset `at`) into `data` (which starts at file offset
/// `start`), clipped to both.
fn copy_into(data: &mut [u8], start: u64, at: u64, bytes: &[u8]) {
    let end = start + data.len() as u64;
    let from = at.max(start);
    let to = end.min(at + bytes.len() as u64);
    if from >= to {
        return;
    }
    data[(from - start) as usize..(to - start) as usize]
        .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
}

/// The creator of a new inode: the caller, with the mode the client asked for.
fn creator(caller: &Caller, set: &SetAttributes, default_mode: u32) -> Creator {
    Creator {
        mode: set.mode.unwrap_or(default_mode) & 0o7777,
        uid: caller.uid,
        gid: caller.gid,
    }
}

/// The directory-changing procedures: create, mkdir, symlink, mknod, remove, rmdir,
/// rename, link.
impl Nfs<'_> {
    /// Whether two valid handles name objects of different exports (`XDEV`, answered
    /// before any permission of either side is looked at).
    fn crosses_exports(&self, first: &[u8], second: &[u8]) -> bool {
        match (self.service.handles.decode(first), self.service.handles.decode(second)) {
            (Ok(first), Ok(second)) => first.export_id != second.export_id,
            _ => false,
        }
    }

    /// Resolves a directory the caller may add entries to (write and search).
    async fn writable_directory(&self, handle: &[u8]) -> Result<(Target, Attributes), (Option<Target>, Status)> {
        let target = self.resolve(handle).await.map_err(|status| (None, status))?;
        let dir = match self.attributes(&target, target.inode).await {
            Ok(dir) => dir,
            Err(status) => return Err((Some(target), status)),
        };
        let refusal = directory_refusal(&target, &dir);
        match refusal {
            Some(status) => Err((Some(target), status)),
            None => Ok((target, dir)),
        }
    }

    /// Writes a CREATE/MKDIR/SYMLINK/MKNOD result: the new handle and attributes, the
    /// directory's attributes before (after: not read again, the client asks if it needs
    /// them).
    fn created(
        &mut self,
        target: Option<&Target>,
        before: Option<&Attributes>,
        made: Result<(InodeId, Attributes), Status>,
    ) {
        let Some(target) = target else {
            self.status(made.err().unwrap_or(Status::ServerFault));
            self.wcc_empty();
            return;
        };
        match made {
            Ok((inode, attributes)) => {
                self.status(Status::Ok);
                let handle = self.handle_of(&target.export, inode);
                self.out.bool(true).opaque(&handle);
                self.post_op(target, inode, Some(&attributes));
            }
            Err(status) => self.status(status),
        }
        self.wcc(target, target.inode, before, None);
    }

    /// CREATE: one proposal, which the shard applies only if the caller may write and
    /// search the directory (`Delta::AsCaller`); no read of the directory before it, so
    /// the reply carries no pre-operation attributes of it.
    async fn create(mut self, dirop: DirOp<'_>, how: CreateHow) {
        let (target, made) = match self.resolve(dirop.dir).await {
            Ok(target) => {
                let made = self.create_file(&target, dirop.name, how).await;
                if let Ok((inode, attributes)) = &made {
                    // The WRITE that usually follows checks these instead of reading.
                    self.service.writes.prime((target.export.id, *inode), attributes).await;
                }
                (Some(target), made)
            }
            Err(status) => (None, Err(status)),
        };
        self.created(target.as_ref(), None, made);
    }

    async fn create_file(&self, target: &Target, name: &[u8], how: CreateHow) -> Result<(InodeId, Attributes), Status> {
        if target.export.options.read_only {
            return Err(Status::RoFs);
        }
        check_name(name)?;
        let failed = |error: ClientError| status_of(&error);
        // The create's own NotFound: the directory the handle names is gone.
        let create_failed = |error: ClientError| match error {
            ClientError::Namespace(NamespaceError::NotFound) => Status::Stale,
            error => status_of(&error),
        };
        let caller = target.caller.ids();
        match how {
            CreateHow::Unchecked(set) | CreateHow::Guarded(set) => {
                let exclusive = matches!(how, CreateHow::Guarded(_));
                let made = target
                    .namespace()
                    .create_as(
                        caller,
                        target.inode,
                        name,
                        creator(&target.caller, &set, 0o644),
                        exclusive,
                    )
                    .await
                    .map_err(create_failed)?;
                if set.size == Some(0) && made.1.size_bytes > 0 {
                    if !target.caller.may_access_data(&made.1, WRITE) {
                        return Err(Status::Acces);
                    }
                    self.service.writes.discard((target.export.id, made.0)).await;
                    let changes = AttrChanges {
                        size_bytes: Some(0),
                        ..AttrChanges::default()
                    };
                    let attributes = target.namespace().setattr(made.0, changes).await.map_err(failed)?;
                    return Ok((made.0, attributes));
                }
                Ok(made)
            }
            CreateHow::Exclusive(verifier) => {
                let time = verifier_time(verifier);
                let attributes = NewAttributes {
                    mode: 0o644,
                    uid: target.caller.uid,
                    gid: target.caller.gid,
                    time,
                };
                match target
                    .namespace()
                    .create_as_at(caller, target.inode, name, attributes, true)
                    .await
                {
                    Ok(made) => Ok(made),
                    Err(ClientError::Namespace(NamespaceError::AlreadyExists)) => {
                        // A retry of the same create finds the verifier it stored.
                        let (inode, attributes) =
                            target.namespace().lookup(target.inode, name).await.map_err(failed)?;
                        let same =
                            attributes.kind == FileKind::File && attributes.mtime == time && attributes.atime == time;
                        if same {
                            Ok((inode, attributes))
                        } else {
                            Err(Status::Exist)
                        }
                    }
                    Err(error) => Err(create_failed(error)),
                }
            }
        }
    }

    async fn mkdir(mut self, dirop: DirOp<'_>, set: SetAttributes) {
        let (target, before, made) = match self.writable_directory(dirop.dir).await {
            Ok((target, before)) => {
                let made = match check_name(dirop.name) {
                    Ok(()) => target
                        .namespace()
                        .mkdir_at(target.inode, dirop.name, creator(&target.caller, &set, 0o755))
                        .await
                        .map_err(|error| status_of(&error)),
                    Err(status) => Err(status),
                };
                (Some(target), Some(before), made)
            }
            Err((target, status)) => (target, None, Err(status)),
        };
        self.created(target.as_ref(), before.as_ref(), made);
    }

    async fn symlink(mut self, dirop: DirOp<'_>, set: SetAttributes, link: &[u8]) {
        let (target, before, made) = match self.writable_directory(dirop.dir).await {
            Ok((target, before)) => {
                let made = match check_name(dirop.name) {
                    Ok(()) => target
                        .namespace()
                        .symlink_at(target.inode, dirop.name, link, creator(&target.caller, &set, 0o777))
                        .await
                        .map_err(|error| status_of(&error)),
                    Err(status) => Err(status),
                };
                (Some(target), Some(before), made)
            }
            Err((target, status)) => (target, None, Err(status)),
        };
        self.created(target.as_ref(), before.as_ref(), made);
    }

    async fn mknod(mut self, dirop: DirOp<'_>, what: MknodWhat) {
        let (target, before, made) = match self.writable_directory(dirop.dir).await {
            Ok((target, before)) => {
                let made = match (check_name(dirop.name), what) {
                    (Err(status), _) => Err(status),
                    (Ok(()), MknodWhat::Device) => Err(Status::NotSupp),
                    (Ok(()), MknodWhat::Other) => Err(Status::BadType),
                    (Ok(()), MknodWhat::Special(kind, set)) => target
                        .namespace()
                        .mknod_at(target.inode, dirop.name, kind, creator(&target.caller, &set, 0o644))
                        .await
                        .map_err(|error| status_of(&error)),
                };
                (Some(target), Some(before), made)
            }
            Err((target, status)) => (target, None, Err(status)),
        };
        self.created(target.as_ref(), before.as_ref(), made);
    }

    async fn remove(mut self, dirop: DirOp<'_>, directory: bool) {
        let target = match self.resolve(dirop.dir).await {
            Ok(target) => target,
            Err(status) => {
                self.status(status);
                self.wcc_empty();
                return;
            }
        };
        let (before, result) = self.remove_entry(&target, dirop.name, directory).await;
        self.status(result.err().unwrap_or(Status::Ok));
        self.wcc(&target, target.inode, before.as_ref(), None);
    }

    /// A directory the caller may change, and the entry `name` in it (one read).
    async fn changeable_entry(
        &self,
        target: &Target,
        name: &[u8],
    ) -> (Option<Attributes>, Result<Option<(InodeId, Attributes)>, Status>) {
        if name.len() > NAME_BYTES_MAX {
            return (None, Err(Status::NameTooLong));
        }
        if name == b"." || name == b".." {
            return (None, Err(Status::Inval));
        }
        let (dir, entry) = match target.namespace().lookup_in(target.inode, name).await {
            Ok(found) => found,
            Err(ClientError::Namespace(NamespaceError::NotFound)) => return (None, Err(Status::Stale)),
            Err(error) => return (None, Err(status_of(&error))),
        };
        let refusal = directory_refusal(target, &dir);
        match refusal {
            Some(status) => (Some(dir), Err(status)),
            None => (Some(dir), Ok(entry)),
        }
    }

    async fn remove_entry(
        &self,
        target: &Target,
        name: &[u8],
        directory: bool,
    ) -> (Option<Attributes>, Result<(), Status>) {
        let (dir, entry) = self.changeable_entry(target, name).await;
        let result = async {
            let dir = dir.as_ref().ok_or(Status::ServerFault)?;
            let (inode, entry) = entry?.ok_or(Status::NoEnt)?;
            if !target.caller.may_unlink(dir, &entry) {
                return Err(Status::Acces);
            }
            let failed = |error: ClientError| status_of(&error);
            if directory {
                if entry.kind != FileKind::Directory {
                    return Err(Status::NotDir);
                }
                return target.namespace().rmdir_at(target.inode, name).await.map_err(failed);
            }
            if entry.kind == FileKind::Directory {
                return Err(Status::IsDir);
            }
            target.namespace().unlink_at(target.inode, name).await.map_err(failed)?;
            if entry.kind == FileKind::File && entry.nlink <= 1 {
                self.service.writes.discard((target.export.id, inode)).await;
            }
            Ok(())
        }
        .await;
        (dir, result)
    }

    async fn rename(mut self, from: DirOp<'_>, to: DirOp<'_>) {
        let crossing = self.crosses_exports(from.dir, to.dir);
        let source = self.resolve(from.dir).await;
        let destination = self.resolve(to.dir).await;
        let (mut source_dir, mut destination_dir) = (None, None);
        let result = match (&source, &destination) {
            _ if crossing => Err(Status::XDev),
            (Ok(source), Ok(destination)) => {
                let (from_dir, entry) = self.changeable_entry(source, from.name).await;
                let (to_dir, replaced) = self.changeable_entry(destination, to.name).await;
                source_dir = from_dir;
                destination_dir = to_dir;
                match (entry, replaced, &source_dir, &destination_dir) {
                    (Err(status), _, _, _) | (_, Err(status), _, _) => Err(status),
                    (Ok(None), _, _, _) => Err(Status::NoEnt),
                    (Ok(Some((_, entry))), Ok(replaced), Some(from_dir), Some(to_dir)) => {
                        let allowed = source.caller.may_unlink(from_dir, &entry)
                            && replaced.is_none_or(|(_, replaced)| destination.caller.may_unlink(to_dir, &replaced));
                        match allowed {
                            false => Err(Status::Acces),
                            true => source
                                .namespace()
                                .rename_at(
                                    source.inode,
                                    from.name,
                                    destination.inode,
                                    to.name,
                                    RenameFlags::default(),
                                )
                                .await
                                .map_err(|error| status_of(&error)),
                        }
                    }
                    _ => Err(Status::ServerFault),
                }
            }
            (Err(status), _) | (_, Err(status)) => Err(*status),
        };
        self.status(result.err().unwrap_or(Status::Ok));
        for (side, before) in [(source, source_dir), (destination, destination_dir)] {
            match side {
                Ok(target) => self.wcc(&target, target.inode, before.as_ref(), None),
                Err(_) => self.wcc_empty(),
            }
        }
    }

    async fn link(mut self, handle: &[u8], dirop: DirOp<'_>) {
        let file = self.resolve(handle).await;
        let dir = self.writable_directory(dirop.dir).await;
        let crossing = self.crosses_exports(handle, dirop.dir);
        let result = match (&file, &dir) {
            _ if crossing => Err(Status::XDev),
            (Ok(file), Ok((dir, _))) if file.export.id != dir.export.id => Err(Status::XDev),
            (Ok(file), Ok((dir, _))) => match check_name(dirop.name) {
                Ok(()) => dir
                    .namespace()
                    .link_at(file.inode, dir.inode, dirop.name)
                    .await
                    .map(|_| ())
                    .map_err(|error| status_of(&error)),
                Err(status) => Err(status),
            },
            (Err(status), _) | (_, Err((_, status))) => Err(*status),
        };
        self.status(result.err().unwrap_or(Status::Ok));
        match &file {
            Ok(file) => {
                let attributes = self.attributes(file, file.inode).await.ok();
                self.post_op(file, file.inode, attributes.as_ref());
            }
            Err(_) => {
                self.out.bool(false);
            }
        }
        match dir {
            Ok((target, before)) => {
                let after = self.attributes(&target, target.inode).await.ok();
                self.wcc(&target, target.inode, Some(&before), after.as_ref());
            }
            Err(_) => self.wcc_empty(),
        }
    }
}

/// Cookies of the `.` and `..` entries (the namespace's cookies start at 3).
const COOKIE_DOT: u64 = 1;
const COOKIE_DOTDOT: u64 = 2;

/// Reading directories and the file system's properties.
impl Nfs<'_> {
    /// The cookie verifier of an export: the namespace's cookies are stable for the life
    /// of each entry (I-N6), so one verifier per namespace incarnation serves every call
    /// and every gateway restart.
    fn cookie_verifier(export: &Export) -> [u8; 8] {
        export.incarnation.to_be_bytes()
    }

    async fn readdir(mut self, handle: &[u8], cookie: u64, verifier: [u8; 8], counts: (u32, u32), plus: bool) {
        let (dircount, maxcount) = counts;
        let resolved = async {
            let target = self.resolve(handle).await?;
            let dir = self.attributes(&target, target.inode).await?;
            if dir.kind != FileKind::Directory {
                return Err(Status::NotDir);
            }
            if !target.caller.may(&dir, READ) {
                return Err(Status::Acces);
            }
            if cookie != 0 && verifier != Self::cookie_verifier(&target.export) {
                return Err(Status::BadCookie);
            }
            Ok((target, dir))
        }
        .await;
        let (target, dir) = match resolved {
            Ok(resolved) => resolved,
            Err(status) => {
                self.status(status);
                self.out.bool(false);
                return;
            }
        };
        let entries = match self.entries(&target, cookie, dircount, maxcount, plus).await {
            Ok(entries) => entries,
            Err(status) => {
                self.status(status);
                self.post_op(&target, target.inode, Some(&dir));
                return;
            }
        };
        self.status(Status::Ok);
        self.post_op(&target, target.inode, Some(&dir));
        self.out.fixed(&Self::cookie_verifier(&target.export));
        self.out.fixed(entries.bytes.as_bytes());
        self.out.bool(false).bool(entries.eof);
    }

    /// Encodes the entries after `cookie` that fit `dircount` (names, ids, cookies) and
    /// `maxcount` (the whole reply).
    async fn entries(
        &self,
        target: &Target,
        cookie: u64,
        dircount: u32,
        maxcount: u32,
        plus: bool,
    ) -> Result<Entries, Status> {
        // Room left for entries: the reply without them is about 128 bytes.
        let mut room = (maxcount as usize).saturating_sub(128);
        let mut names_room = dircount as usize;
        let mut encoded = Entries {
            bytes: XdrWriter::new(),
            eof: false,
        };
        let failed = |error: ClientError| status_of(&error);
        let mut dots = Vec::new();
        if cookie < COOKIE_DOT {
            dots.push((COOKIE_DOT, b".".to_vec(), target.inode));
        }
        if cookie < COOKIE_DOTDOT {
            let (parent, _) = target.namespace().parent(target.inode).await.map_err(failed)?;
            dots.push((COOKIE_DOTDOT, b"..".to_vec(), parent));
        }
        for (cookie, name, inode) in dots {
            let attributes = match plus {
                true => Some(self.attributes(target, inode).await?),
                false => None,
            };
            if !self.encode_entry(
                target,
                &mut encoded.bytes,
                (cookie, &name, inode),
                attributes.as_ref(),
                &mut room,
                &mut names_room,
            ) {
                return Ok(encoded);
            }
        }
        let mut after = cookie.max(COOKIE_DOTDOT);
        loop {
            let page: Vec<(kiseki_namespace::DirEntry, Option<Attributes>)> = if plus {
                let page = target
                    .namespace()
                    .read_dir_plus(target.inode, after, 256)
                    .await
                    .map_err(failed)?;
                page.into_iter()
                    .map(|(entry, attributes)| (entry, Some(attributes)))
                    .collect()
            } else {
                let page = target
                    .namespace()
                    .read_dir_page(target.inode, after, 1024)
                    .await
                    .map_err(failed)?;
                page.into_iter().map(|entry| (entry, None)).collect()
            };
            if page.is_empty() {
                encoded.eof = true;
                return Ok(encoded);
            }
            for (entry, attributes) in &page {
                let fits = self.encode_entry(
                    target,
                    &mut encoded.bytes,
                    (entry.cookie, &entry.name, entry.inode),
                    attributes.as_ref(),
                    &mut room,
                    &mut names_room,
                );
                if !fits {
                    return Ok(encoded);
                }
                after = entry.cookie;
            }
        }
    }

    /// Encodes one entry if it fits what is left of the reply; `false` if it does not.
    fn encode_entry(
        &self,
        target: &Target,
        out: &mut XdrWriter,
        (cookie, name, inode): (u64, &[u8], InodeId),
        attributes: Option<&Attributes>,
        room: &mut usize,
        names_room: &mut usize,
    ) -> bool {
        let name_bytes = 4 + name.len() + super::xdr::padding(name.len());
        let names_cost = 8 + name_bytes + 8;
        let cost = 4 + names_cost + if attributes.is_some() { 4 + 84 + 4 + 4 + 40 } else { 0 };
        if cost > *room || names_cost > *names_room {
            return false;
        }
        *room -= cost;
        *names_room -= names_cost;
        out.bool(true).u64(inode.0).opaque(name).u64(cookie);
        if let Some(attributes) = attributes {
            write_post_op(out, Some((attributes, inode.0)), target.fsid());
            let handle = self.handle_of(&target.export, inode);
            out.bool(true).opaque(&handle);
        }
        true
    }

    async fn fsstat(mut self, handle: &[u8]) {
        let resolved = async {
            let target = self.resolve(handle).await?;
            let attributes = self.attributes(&target, target.inode).await?;
            let stats = target.namespace().stats().await.map_err(|error| status_of(&error))?;
            Ok::<_, Status>((target, attributes, stats))
        }
        .await;
        let (target, attributes, stats) = match resolved {
            Ok(resolved) => resolved,
            Err(status) => {
                self.status(status);
                self.out.bool(false);
                return;
            }
        };
        let capacity = target.namespace().capacity().await;
        let (total_bytes, free_bytes) = match stats.policy.quota_bytes_max {
            Some(limit) => (limit, limit.saturating_sub(stats.quota_bytes_used)),
            None => (capacity.total_bytes, capacity.free_bytes),
        };
        let (total_files, free_files) = match stats.policy.quota_files_max {
            Some(limit) => (limit, limit.saturating_sub(stats.quota_files_used)),
            None => (1 << 32, (1u64 << 32).saturating_sub(stats.inodes)),
        };
        self.status(Status::Ok);
        self.post_op(&target, target.inode, Some(&attributes));
        self.out
            .u64(total_bytes)
            .u64(free_bytes)
            .u64(free_bytes)
            .u64(total_files)
            .u64(free_files)
            .u64(free_files)
            .u32(0);
    }

    async fn fsinfo(mut self, handle: &[u8]) {
        let resolved = async {
            let target = self.resolve(handle).await?;
            let attributes = self.attributes(&target, target.inode).await?;
            Ok::<_, Status>((target, attributes))
        }
        .await;
        let (target, attributes) = match resolved {
            Ok(resolved) => resolved,
            Err(status) => {
                self.status(status);
                self.out.bool(false);
                return;
            }
        };
        const FSF3_LINK: u32 = 0x01;
        const FSF3_SYMLINK: u32 = 0x02;
        const FSF3_HOMOGENEOUS: u32 = 0x08;
        const FSF3_CANSETTIME: u32 = 0x10;
        self.status(Status::Ok);
        self.post_op(&target, target.inode, Some(&attributes));
        self.out
            .u32(IO_BYTES_MAX)
            .u32(IO_BYTES_MAX)
            .u32(4096)
            .u32(IO_BYTES_MAX)
            .u32(IO_BYTES_MAX)
            .u32(4096)
            .u32(64 << 10)
            .u64(FILE_BYTES_MAX)
            .u32(0)
            .u32(1)
            .u32(FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
    }

    async fn pathconf(mut self, handle: &[u8]) {
        let resolved = async {
            let target = self.resolve(handle).await?;
            let attributes = self.attributes(&target, target.inode).await?;
            Ok::<_, Status>((target, attributes))
        }
        .await;
        match resolved {
            Ok((target, attributes)) => {
                self.status(Status::Ok);
                self.post_op(&target, target.inode, Some(&attributes));
                self.out
                    .u32(65_000)
                    .u32(NAME_BYTES_MAX as u32)
                    .bool(true)
                    .bool(true)
                    .bool(false)
                    .bool(true);
            }
            Err(status) => {
                self.status(status);
                self.out.bool(false);
            }
        }
    }
}

/// Encoded directory entries and whether they reach the end.
struct Entries {
    bytes: XdrWriter,
    eof: bool,
}
