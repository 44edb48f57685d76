//! [`KisekiFs`]: the FUSE operations over a [`Namespace`].
//!
//! Every operation runs as a task on the mount's tokio runtime: the FUSE event-loop
//! thread decodes the request, hands it and its reply object to a task, and goes back to
//! the device for the next request, so slow calls (a commit, a chunk fetch) never hold up
//! others. Inode numbers are the namespace's own (the root is 1 in both); FUSE
//! generations are 0 because inode numbers are never reused.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use kiseki_client::cache::ChunkCache;
use kiseki_client::{Creator, Namespace};
use kiseki_namespace::{
    AttrChanges, Attributes, FileKind, InodeId, RenameFlags as NamespaceRenameFlags, Timestamp, XattrSetMode,
};
use tokio::sync::oneshot;

use crate::errno::errno;
use crate::files::{FileLimits, FileOp};
use crate::options::{CacheMode, MountOptions};
use crate::passthrough::{self, Backing};
use crate::registry::{
    remove_hidden, Handle, HandleKind, HandleTable, OpenMode, OpenRequest, Registry, Version, HIDDEN_DIR,
};

/// Block size `stat` and `statfs` report.
const BLOCK_BYTES: u32 = 4096;
/// Entries one readdir page asks the shard for.
const READDIR_PAGE_ENTRIES: u32 = 512;
/// Requests one open file's task queues at most.
const FILE_QUEUE_REQUESTS: usize = 256;
/// Largest write the kernel sends.
pub const MAX_WRITE_BYTES: u32 = 1 << 20;

/// The mounted filesystem.
pub struct KisekiFs {
    runtime: tokio::runtime::Handle,
    namespace: Namespace,
    cache: ChunkCache,
    /// Fully cached read-only files are served by passthrough (the option, if the
    /// kernel offers it).
    passthrough: bool,
    registry: Registry,
    handles: Arc<HandleTable>,
    ttl: Duration,
    direct_io: bool,
}

impl KisekiFs {
    /// The filesystem of `namespace`, running its tasks on `runtime` (which must be
    /// entered: the registry task starts here).
    pub fn new(
        runtime: tokio::runtime::Handle,
        namespace: Namespace,
        cache: ChunkCache,
        options: &MountOptions,
    ) -> KisekiFs {
        let chunk_bytes = u64::from(namespace.options().write.chunking.chunk_bytes_avg).max(1);
        // The chunks of the read-ahead window and the one being read; L1 holds more.
        let cached_chunks = match options.cache_mode {
            CacheMode::Bypass => 0,
            CacheMode::Organic | CacheMode::Pinned => {
                (options.read_ahead_bytes / chunk_bytes + 2).clamp(2, 64) as usize
            }
        };
        let limits = FileLimits {
            flush_bytes: options.flush_bytes as usize,
            cached_chunks,
            read_ahead_bytes: options.read_ahead_bytes,
            meta_ttl: options.meta_ttl(),
        };
        let registry = {
            let _entered = runtime.enter();
            Registry::spawn(namespace.clone(), cache.clone(), limits, FILE_QUEUE_REQUESTS)
        };
        KisekiFs {
            runtime,
            namespace,
            passthrough: options.passthrough && cache.mode() != CacheMode::Bypass,
            cache,
            registry,
            handles: Arc::new(HandleTable::new(options.handles_max)),
            ttl: options.meta_ttl(),
            direct_io: options.direct_io || options.cache_mode == CacheMode::Bypass,
        }
    }

    /// The registry, to write every open file's buffers before an unmount.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(task);
    }

    /// What a task needs: the namespace, the registry, the handles and the TTL.
    fn context(&self) -> Context {
        Context {
            namespace: self.namespace.clone(),
            cache: self.cache.clone(),
            passthrough: self.passthrough,
            registry: self.registry.clone(),
            handles: Arc::clone(&self.handles),
            ttl: self.ttl,
            direct_io: self.direct_io,
        }
    }
}

/// The parts of the filesystem a request's task carries.
#[derive(Clone)]
struct Context {
    namespace: Namespace,
    cache: ChunkCache,
    passthrough: bool,
    registry: Registry,
    handles: Arc<HandleTable>,
    ttl: Duration,
    direct_io: bool,
}

impl Context {
    /// Attributes of `inode`, with the size of writes buffered by an open handle.
    async fn getattr(&self, inode: InodeId) -> Result<Attributes, Errno> {
        if let Some(file) = self.registry.find(inode).await {
            if let Some(answer) = ask_if_open(&file, |reply| FileOp::GetAttr { reply }).await {
                return answer;
            }
        }
        self.namespace.getattr(inode).await.map_err(|error| errno(&error))
    }

    /// Changes attributes of `inode`: through its file task if it is open (a size
    /// change must pass its buffers), else directly.
    async fn setattr(
        &self,
        inode: InodeId,
        file: Option<FileSender>,
        changes: AttrChanges,
    ) -> Result<Attributes, Errno> {
        let file = match file {
            Some(file) => Some(file),
            None => self.registry.find(inode).await,
        };
        if let Some(file) = file {
            if let Some(answer) = ask_if_open(&file, |reply| FileOp::SetAttr { changes, reply }).await {
                return answer;
            }
        }
        self.namespace
            .setattr(inode, changes)
            .await
            .map_err(|error| errno(&error))
    }

    /// Opens a handle of `inode`; `version` is the file's version if known (then the
    /// kernel keeps its cached pages when the file did not change since its last open).
    /// With `reply` (an `open`, not a `create`), a read-only open may get a passthrough
    /// copy: it is answered as the handle's backing.
    async fn open(
        &self,
        inode: InodeId,
        flags: OpenFlags,
        version: Option<Version>,
        reply: Option<&ReplyOpen>,
    ) -> Result<(u64, FopenFlags, Option<Arc<Backing>>), Errno> {
        let writable = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let direct = self.direct_io || flags.0 & libc::O_DIRECT != 0;
        let request = OpenRequest {
            version,
            direct,
            writable,
            passthrough_candidate: self.passthrough && reply.is_some() && !writable && version.is_some(),
        };
        let (file, mode) = self.registry.open(inode, request).await?;
        let (kind, keep_cache, backing) = match mode {
            OpenMode::Plain { kind, keep_cache } => (kind, keep_cache, None),
            OpenMode::Passthrough(backing) => (HandleKind::Passthrough, false, Some(backing)),
            OpenMode::Build => {
                let made = match (reply, version) {
                    (Some(reply), Some(version)) => self.passthrough_copy(inode, version, reply).await,
                    _ => None,
                };
                let backing = made.as_ref().map(|(backing, _)| Arc::clone(backing));
                let kind = self.registry.built(inode, made).await;
                (kind, false, backing.filter(|_| kind == HandleKind::Passthrough))
            }
        };
        let fh = match self.handles.insert(Handle {
            inode,
            file,
            writable,
            kind,
        }) {
            Some(fh) => fh,
            None => {
                self.registry.release(inode, kind).await;
                return Err(Errno::ENFILE);
            }
        };
        let open_flags = match kind {
            HandleKind::Direct => FopenFlags::FOPEN_DIRECT_IO,
            HandleKind::Cached if keep_cache => FopenFlags::FOPEN_KEEP_CACHE,
            HandleKind::Cached | HandleKind::Passthrough => FopenFlags::empty(),
        };
        Ok((fh, open_flags, backing))
    }

    /// A passthrough copy of `inode` at `version`, registered with the kernel, if the
    /// file is fully cached.
    async fn passthrough_copy(
        &self,
        inode: InodeId,
        version: Version,
        reply: &ReplyOpen,
    ) -> Option<(Arc<Backing>, Version)> {
        let copy = passthrough::plaintext_copy(&self.namespace, &self.cache, inode, version.2).await;
        let file = match copy {
            Ok(Some(file)) => file,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(inode = inode.0, errno = error.code(), "no passthrough copy");
                return None;
            }
        };
        match reply.open_backing(&file) {
            Ok(id) => {
                self.cache.passthrough_opened().await;
                Some((Arc::new(Backing::new(id, file)), version))
            }
            Err(error) => {
                tracing::warn!(inode = inode.0, %error, "the kernel refused a passthrough file");
                None
            }
        }
    }
}

type FileSender = tokio::sync::mpsc::Sender<FileOp>;

impl Context {
    /// Unlinks `name` of `parent`; a file open in this mount whose last link this is
    /// moves to the hidden directory instead and is removed when its last handle closes
    /// (the POSIX rule that an open file lives on after its last unlink).
    async fn unlink(&self, parent: InodeId, name: &[u8]) -> Result<(), Errno> {
        if is_hidden(parent, name) {
            return Err(Errno::ENOENT);
        }
        if self.registry.any_open().await {
            if let Ok((found, attributes)) = self.namespace.lookup(parent, name).await {
                let open = self.registry.find(found).await.is_some();
                if open && attributes.kind == FileKind::File && attributes.nlink <= 1 {
                    return self.hide(parent, name, found).await;
                }
            }
        }
        self.namespace
            .unlink_at(parent, name)
            .await
            .map_err(|error| errno(&error))
    }

    async fn hide(&self, parent: InodeId, name: &[u8], found: InodeId) -> Result<(), Errno> {
        let namespace = &self.namespace;
        let creator = Creator {
            mode: 0o700,
            uid: 0,
            gid: 0,
        };
        let dir = match namespace.mkdir_at(InodeId::ROOT, HIDDEN_DIR, creator).await {
            Ok((dir, _)) => dir,
            Err(_) => {
                namespace
                    .lookup(InodeId::ROOT, HIDDEN_DIR)
                    .await
                    .map_err(|error| errno(&error))?
                    .0
            }
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let hidden_name = format!("{}-{}-{nanos}", found.0, std::process::id()).into_bytes();
        let flags = NamespaceRenameFlags {
            no_replace: true,
            exchange: false,
        };
        namespace
            .rename_at(parent, name, dir, &hidden_name, flags)
            .await
            .map_err(|error| errno(&error))?;
        if !self.registry.unlinked(found, hidden_name.clone()).await {
            // Closed meanwhile.
            remove_hidden(namespace, found, &hidden_name).await;
        }
        Ok(())
    }
}

/// Sends `op` to a file task the registry found and waits for its answer; `None` if the
/// task ended meanwhile (its last handle closed: it wrote everything first, so the
/// caller asks the cluster instead).
async fn ask_if_open<T>(
    file: &FileSender,
    op: impl FnOnce(oneshot::Sender<Result<T, Errno>>) -> FileOp,
) -> Option<Result<T, Errno>> {
    let (reply, answer) = oneshot::channel();
    file.send(op(reply)).await.ok()?;
    answer.await.ok()
}

/// Sends `op` to the file task of an open handle (alive while the handle is) and waits
/// for its answer.
async fn ask<T>(
    file: &tokio::sync::mpsc::Sender<FileOp>,
    op: impl FnOnce(oneshot::Sender<Result<T, Errno>>) -> FileOp,
) -> Result<T, Errno> {
    let (reply, answer) = oneshot::channel();
    file.send(op(reply)).await.map_err(|_| Errno::EIO)?;
    answer.await.map_err(|_| Errno::EIO)?
}

fn inode(ino: INodeNo) -> InodeId {
    InodeId(ino.0)
}

fn system_time(time: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(time.nanos));
    if time.seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(time.seconds as u64) + nanos
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(time.seconds.unsigned_abs()))
            .map_or(UNIX_EPOCH, |time| time + nanos)
    }
}

fn timestamp(time: SystemTime) -> Timestamp {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => Timestamp::new(since.as_secs() as i64, since.subsec_nanos()),
        Err(before) => {
            let before = before.duration();
            let (seconds, nanos) = if before.subsec_nanos() == 0 {
                (-(before.as_secs() as i64), 0)
            } else {
                (-(before.as_secs() as i64) - 1, 1_000_000_000 - before.subsec_nanos())
            };
            Timestamp::new(seconds, nanos)
        }
    }
}

fn time_or_now(time: TimeOrNow) -> Timestamp {
    match time {
        TimeOrNow::SpecificTime(time) => timestamp(time),
        TimeOrNow::Now => timestamp(SystemTime::now()),
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice { .. } => FileType::CharDevice,
        FileKind::BlockDevice { .. } => FileType::BlockDevice,
    }
}

/// The kernel's view of `attributes`.
pub fn file_attr(inode: InodeId, attributes: &Attributes) -> FileAttr {
    FileAttr {
        ino: INodeNo(inode.0),
        size: attributes.size_bytes,
        blocks: attributes.size_bytes.div_ceil(512),
        atime: system_time(attributes.atime),
        mtime: system_time(attributes.mtime),
        ctime: system_time(attributes.ctime),
        crtime: system_time(attributes.ctime),
        kind: file_type(attributes.kind),
        perm: (attributes.mode & 0o7777) as u16,
        nlink: attributes.nlink,
        uid: attributes.uid,
        gid: attributes.gid,
        rdev: match attributes.kind {
            FileKind::CharDevice { rdev } | FileKind::BlockDevice { rdev } => rdev,
            _ => 0,
        },
        blksize: BLOCK_BYTES,
        flags: 0,
    }
}

/// The directory of files unlinked while open, which the mount does not show.
fn is_hidden(parent: InodeId, name: &[u8]) -> bool {
    parent == InodeId::ROOT && name == HIDDEN_DIR
}

fn creator(req: &Request, mode: u32, umask: u32) -> Creator {
    Creator {
        mode: mode & !umask & 0o7777,
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn reply_entry(reply: ReplyEntry, ttl: Duration, result: Result<(InodeId, Attributes), Errno>) {
    match result {
        Ok((inode, attributes)) => reply.entry(&ttl, &file_attr(inode, &attributes), Generation(0)),
        Err(error) => reply.error(error),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(error),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, Errno>) {
    match result {
        Ok(bytes) if size == 0 => reply.size(bytes.len() as u32),
        Ok(bytes) if bytes.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(bytes) => reply.data(&bytes),
        Err(error) => reply.error(error),
    }
}

impl Filesystem for KisekiFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE_BYTES);
        let _ = config.set_max_readahead(MAX_WRITE_BYTES);
        let _ = config.set_max_background(64);
        for capability in [
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_MAX_PAGES,
        ] {
            // A kernel without one of these still mounts; it just does without.
            let _ = config.add_capabilities(capability);
        }
        if self.passthrough {
            let offered = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok();
            if !offered || config.set_max_stack_depth(1).is_err() {
                tracing::warn!("the kernel offers no FUSE passthrough; files are served through the mount");
                self.passthrough = false;
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let context = self.context();
        let name = name.as_bytes().to_vec();
        self.spawn(async move {
            let result = async {
                if is_hidden(inode(parent), &name) {
                    return Err(Errno::ENOENT);
                }
                let (found, attributes) = context
                    .namespace
                    .lookup(inode(parent), &name)
                    .await
                    .map_err(|error| errno(&error))?;
                if attributes.kind == FileKind::File {
                    if let Some(file) = context.registry.find(found).await {
                        if let Some(answer) = ask_if_open(&file, |reply| FileOp::GetAttr { reply }).await {
                            return Ok((found, answer?));
                        }
                    }
                }
                Ok((found, attributes))
            }
            .await;
            reply_entry(reply, context.ttl, result);
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let context = self.context();
        self.spawn(async move {
            let handle = fh.and_then(|fh| context.handles.get(fh.0));
            let result = match handle {
                Some(handle) => ask(&handle.file, |reply| FileOp::GetAttr { reply }).await,
                None => context.getattr(inode(ino)).await,
            };
            match result {
                Ok(attributes) => reply.attr(&context.ttl, &file_attr(inode(ino), &attributes)),
                Err(error) => reply.error(error),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = AttrChanges {
            mode: mode.map(|mode| mode & 0o7777),
            uid,
            gid,
            size_bytes: size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
        };
        let context = self.context();
        self.spawn(async move {
            let file = fh
                .and_then(|fh| context.handles.get(fh.0))
                .map(|handle| handle.file.clone());
            let result = context.setattr(inode(ino), file, changes).await;
            match result {
                Ok(attributes) => reply.attr(&context.ttl, &file_attr(inode(ino), &attributes)),
                Err(error) => reply.error(error),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let context = self.context();
        self.spawn(async move {
            match context.namespace.readlink(inode(ino)).await {
                Ok(target) => reply.data(&target),
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFIFO => Some(FileKind::Fifo),
            libc::S_IFSOCK => Some(FileKind::Socket),
            libc::S_IFCHR => Some(FileKind::CharDevice { rdev }),
            libc::S_IFBLK => Some(FileKind::BlockDevice { rdev }),
            _ => return reply.error(Errno::EINVAL),
        };
        let context = self.context();
        let name = name.as_bytes().to_vec();
        let creator = creator(req, mode, umask);
        self.spawn(async move {
            let result = match kind {
                None => context.namespace.create_at(inode(parent), &name, creator, true).await,
                Some(kind) => context.namespace.mknod_at(inode(parent), &name, kind, creator).await,
            };
            reply_entry(reply, context.ttl, result.map_err(|error| errno(&error)));
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let context = self.context();
        let name = name.as_bytes().to_vec();
        let creator = creator(req, mode, umask);
        self.spawn(async move {
            let result = context
                .namespace
                .mkdir_at(inode(parent), &name, creator)
                .await
                .map_err(|error| errno(&error));
            reply_entry(reply, context.ttl, result);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let context = self.context();
        let name = name.as_bytes().to_vec();
        self.spawn(async move {
            let result = context.unlink(inode(parent), &name).await;
            reply_empty(reply, result);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let context = self.context();
        let name = name.as_bytes().to_vec();
        self.spawn(async move {
            let result = context.namespace.rmdir_at(inode(parent), &name).await;
            reply_empty(reply, result.map_err(|error| errno(&error)));
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let context = self.context();
        let name = link_name.as_bytes().to_vec();
        let target = target.as_os_str().as_bytes().to_vec();
        let creator = creator(req, 0o777, 0);
        self.spawn(async move {
            let result = context
                .namespace
                .symlink_at(inode(parent), &name, &target, creator)
                .await
                .map_err(|error| errno(&error));
            reply_entry(reply, context.ttl, result);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let flags = NamespaceRenameFlags {
            no_replace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        let context = self.context();
        let (name, newname) = (name.as_bytes().to_vec(), newname.as_bytes().to_vec());
        self.spawn(async move {
            let result = context
                .namespace
                .rename_at(inode(parent), &name, inode(newparent), &newname, flags)
                .await;
            reply_empty(reply, result.map_err(|error| errno(&error)));
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let context = self.context();
        let name = newname.as_bytes().to_vec();
        self.spawn(async move {
            let result = async {
                context
                    .namespace
                    .link_at(inode(ino), inode(newparent), &name)
                    .await
                    .map_err(|error| errno(&error))?;
                Ok((inode(ino), context.getattr(inode(ino)).await?))
            }
            .await;
            reply_entry(reply, context.ttl, result);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let context = self.context();
        self.spawn(async move {
            let version = match context.getattr(inode(ino)).await {
                Ok(attributes) => Some((attributes.mtime, attributes.ctime, attributes.size_bytes)),
                Err(error) => return reply.error(error),
            };
            match context.open(inode(ino), flags, version, Some(&reply)).await {
                Ok((fh, open_flags, Some(backing))) => {
                    reply.opened_passthrough(FileHandle(fh), open_flags, &backing.id)
                }
                Ok((fh, open_flags, None)) => reply.opened(FileHandle(fh), open_flags),
                Err(error) => reply.error(error),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let context = self.context();
        let name = name.as_bytes().to_vec();
        let creator = creator(req, mode, umask);
        self.spawn(async move {
            let result = async {
                let exclusive = flags & libc::O_EXCL != 0;
                let (created, mut attributes) = context
                    .namespace
                    .create_at(inode(parent), &name, creator, exclusive)
                    .await
                    .map_err(|error| errno(&error))?;
                if attributes.kind != FileKind::File {
                    return Err(Errno::EISDIR);
                }
                let (fh, open_flags, _) = context.open(created, OpenFlags(flags), None, None).await?;
                if flags & libc::O_TRUNC != 0 && attributes.size_bytes > 0 {
                    let changes = AttrChanges {
                        size_bytes: Some(0),
                        ..AttrChanges::default()
                    };
                    if let Some(handle) = context.handles.get(fh) {
                        attributes = ask(&handle.file, |reply| FileOp::SetAttr { changes, reply }).await?;
                    }
                }
                Ok((created, attributes, fh, open_flags))
            }
            .await;
            match result {
                Ok((created, attributes, fh, open_flags)) => reply.created(
                    &context.ttl,
                    &file_attr(created, &attributes),
                    Generation(0),
                    FileHandle(fh),
                    open_flags,
                ),
                Err(error) => reply.error(error),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(handle) = self.handles.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn(async move {
            let result = ask(&handle.file, |reply| FileOp::Read {
                offset_bytes: offset,
                length_bytes: size,
                reply,
            })
            .await;
            match result {
                Ok(bytes) => reply.data(bytes.as_slice()),
                Err(error) => reply.error(error),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(handle) = self.handles.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        if !handle.writable {
            reply.error(Errno::EBADF);
            return;
        }
        let data = data.to_vec();
        // The descriptor's flags now (fcntl may have changed O_APPEND since the open).
        let append = flags.0 & libc::O_APPEND != 0;
        self.spawn(async move {
            let result = if append {
                ask(&handle.file, |reply| FileOp::Append { data, reply }).await
            } else {
                ask(&handle.file, |reply| FileOp::Write {
                    offset_bytes: offset,
                    data,
                    reply,
                })
                .await
            };
            match result {
                Ok(written) => reply.written(written),
                Err(error) => reply.error(error),
            }
        });
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.sync(fh, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(handle) = self.handles.remove(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let registry = self.registry.clone();
        self.spawn(async move {
            registry.release(handle.inode, handle.kind).await;
            reply.ok();
        });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync(fh, reply);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let context = self.context();
        self.spawn(async move {
            if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            if offset <= 1 && reply.add(ino, 2, FileType::Directory, "..") {
                return reply.ok();
            }
            let page = context
                .namespace
                .read_dir_page(inode(ino), offset.max(2), READDIR_PAGE_ENTRIES)
                .await;
            let entries = match page {
                Ok(entries) => entries,
                Err(error) => return reply.error(errno(&error)),
            };
            for entry in entries {
                if is_hidden(inode(ino), &entry.name) {
                    continue;
                }
                let name = OsStr::from_bytes(&entry.name);
                if reply.add(INodeNo(entry.inode.0), entry.cookie, file_type(entry.kind), name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let context = self.context();
        self.spawn(async move {
            if offset <= 1 {
                let attributes = match context.namespace.getattr(inode(ino)).await {
                    Ok(attributes) => file_attr(inode(ino), &attributes),
                    Err(error) => return reply.error(errno(&error)),
                };
                let ttl = context.ttl;
                if offset == 0 && reply.add(ino, 1, ".", &ttl, &attributes, Generation(0)) {
                    return reply.ok();
                }
                if reply.add(ino, 2, "..", &ttl, &attributes, Generation(0)) {
                    return reply.ok();
                }
            }
            let entries = match context
                .namespace
                .read_dir_plus(inode(ino), offset.max(2), READDIR_PAGE_ENTRIES)
                .await
            {
                Ok(entries) => entries,
                Err(error) => return reply.error(errno(&error)),
            };
            for (entry, attributes) in entries {
                if is_hidden(inode(ino), &entry.name) {
                    continue;
                }
                let name = OsStr::from_bytes(&entry.name);
                let attributes = file_attr(entry.inode, &attributes);
                if reply.add(
                    INodeNo(entry.inode.0),
                    entry.cookie,
                    name,
                    &context.ttl,
                    &attributes,
                    Generation(0),
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let context = self.context();
        self.spawn(async move {
            let capacity = context.namespace.capacity().await;
            let stats = context.namespace.stats().await.unwrap_or_default();
            let block = u64::from(BLOCK_BYTES);
            let files_free = u64::from(u32::MAX);
            reply.statfs(
                capacity.total_bytes / block,
                capacity.free_bytes / block,
                capacity.free_bytes / block,
                stats.inodes + files_free,
                files_free,
                BLOCK_BYTES,
                kiseki_namespace::NAME_BYTES_MAX as u32,
                BLOCK_BYTES,
            );
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if name.as_bytes().starts_with(b"system.posix_acl_") {
            // POSIX ACLs are not offered: permissions are uid, gid and mode bits only.
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let mode = match flags {
            0 => XattrSetMode::Either,
            libc::XATTR_CREATE => XattrSetMode::Create,
            libc::XATTR_REPLACE => XattrSetMode::Replace,
            _ => return reply.error(Errno::EINVAL),
        };
        let context = self.context();
        let (name, value) = (name.as_bytes().to_vec(), value.to_vec());
        self.spawn(async move {
            let result = context.namespace.setxattr(inode(ino), &name, &value, mode).await;
            reply_empty(reply, result.map_err(|error| errno(&error)));
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let context = self.context();
        let name = name.as_bytes().to_vec();
        self.spawn(async move {
            let result = context.namespace.getxattr(inode(ino), &name).await;
            reply_xattr(reply, size, result.map_err(|error| errno(&error)));
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let context = self.context();
        self.spawn(async move {
            let result = context.namespace.listxattr(inode(ino)).await.map(|names| {
                let mut list = Vec::new();
                for name in names {
                    list.extend_from_slice(&name);
                    list.push(0);
                }
                list
            });
            reply_xattr(reply, size, result.map_err(|error| errno(&error)));
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let context = self.context();
        let name = name.as_bytes().to_vec();
        self.spawn(async move {
            let result = context.namespace.removexattr(inode(ino), &name).await;
            reply_empty(reply, result.map_err(|error| errno(&error)));
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks mode bits itself (`default_permissions`).
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Files here are not terminals (isatty asks) and take no device controls.
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            // Punching holes and keeping sizes are not offered.
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let Some(handle) = self.handles.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn(async move {
            let result = async {
                let attributes = ask(&handle.file, |reply| FileOp::GetAttr { reply }).await?;
                let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
                if end > attributes.size_bytes {
                    let changes = AttrChanges {
                        size_bytes: Some(end),
                        ..AttrChanges::default()
                    };
                    ask(&handle.file, |reply| FileOp::SetAttr { changes, reply }).await?;
                }
                Ok(())
            }
            .await;
            reply_empty(reply, result);
        });
    }
}

impl KisekiFs {
    /// Writes what handle `fh` buffers and waits for the commit.
    fn sync(&self, fh: FileHandle, reply: ReplyEmpty) {
        let Some(handle) = self.handles.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn(async move {
            let result = ask(&handle.file, |reply| FileOp::Sync { reply }).await;
            reply_empty(reply, result);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_system_time() {
        for (seconds, nanos) in [(0, 0), (1_700_000_000, 123), (-1, 0), (-2, 999_999_999), (-5, 1)] {
            let time = Timestamp::new(seconds, nanos);
            assert_eq!(timestamp(system_time(time)), time, "{seconds}.{nanos}");
        }
    }
}
