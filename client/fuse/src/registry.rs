//! Which inodes are open, and the handle table.
//!
//! The registry is one task that owns the map from an open inode to its file task (and
//! how many handles hold it): `open` finds or starts the task, `release` of the last
//! handle closes it, and attribute calls for an open inode are routed to its task (which
//! knows the size its buffered writes give the file). The kernel's file handle indexes a
//! fixed table of slots, each an atomic pointer to the handle's channel end, so reads and
//! writes reach their file task without passing through the registry or a lock.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use kiseki_client::Namespace;
use kiseki_namespace::InodeId;
use tokio::sync::{mpsc, oneshot};

use crate::files::{self, FileLimits, FileOp};
use crate::passthrough::Backing;
use kiseki_client::cache::ChunkCache;

/// One open handle.
pub struct Handle {
    /// The inode.
    pub inode: InodeId,
    /// Its file task.
    pub file: mpsc::Sender<FileOp>,
    /// Opened for writing.
    pub writable: bool,
    /// How its reads reach the file.
    pub kind: HandleKind,
}

/// The kernel's file handles: slot `fh - 1` holds handle `fh`.
pub struct HandleTable {
    slots: Box<[ArcSwapOption<Handle>]>,
    free: ArrayQueue<u32>,
}

impl HandleTable {
    /// A table of `capacity` handles.
    pub fn new(capacity: usize) -> HandleTable {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        let free = ArrayQueue::new(capacity);
        for index in 0..capacity as u32 {
            let _ = free.push(index);
        }
        HandleTable {
            slots: (0..capacity).map(|_| ArcSwapOption::empty()).collect(),
            free,
        }
    }

    /// Stores `handle`; its number, or `None` when every slot is taken (EMFILE).
    pub fn insert(&self, handle: Handle) -> Option<u64> {
        let index = self.free.pop()?;
        self.slots[index as usize].store(Some(Arc::new(handle)));
        Some(u64::from(index) + 1)
    }

    /// The handle `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        let index = usize::try_from(fh.checked_sub(1)?).ok()?;
        self.slots.get(index)?.load_full()
    }

    /// Removes the handle `fh`.
    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        let index = fh.checked_sub(1)?;
        let handle = self.slots.get(usize::try_from(index).ok()?)?.swap(None)?;
        let _ = self.free.push(index as u32);
        Some(handle)
    }
}

/// What identifies a file's contents between opens: its modification and change times
/// and its size.
pub type Version = (kiseki_namespace::Timestamp, kiseki_namespace::Timestamp, u64);

/// Inodes whose last-open version the registry remembers at most.
const SEEN_INODES_MAX: usize = 65_536;

/// How a handle's reads reach the file.
///
/// The kernel allows no other open of an inode beside passthrough handles: while one is
/// open, every further open of the inode shares its copy (read-only, unchanged file)
/// or is refused (`ETXTBSY` for writers, `EBUSY` if the file changed meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleKind {
    /// Through the kernel's page cache and this mount.
    Cached,
    /// Through this mount, bypassing the page cache (`O_DIRECT`, `direct_io`).
    Direct,
    /// By the kernel from a plaintext copy ([`crate::passthrough`]).
    Passthrough,
}

/// What an open asks for.
#[derive(Clone, Copy, Debug)]
pub struct OpenRequest {
    /// The version of the file now (`None`: forget the one last seen).
    pub version: Option<Version>,
    /// Page cache bypassed.
    pub direct: bool,
    /// Opened for writing.
    pub writable: bool,
    /// Read-only, and passthrough is on: a passthrough copy may serve it.
    pub passthrough_candidate: bool,
}

/// How an open goes on.
pub enum OpenMode {
    /// An ordinary handle of this kind (`keep_cache`: the kernel's pages are still right).
    Plain {
        /// The kind.
        kind: HandleKind,
        /// Whether the kernel may keep its cached pages.
        keep_cache: bool,
    },
    /// Share the passthrough copy of the other handles.
    Passthrough(Arc<Backing>),
    /// No other handle: build a passthrough copy if the file is fully cached, then call
    /// [`Registry::built`].
    Build,
}

enum RegistryOp {
    Open {
        inode: InodeId,
        request: OpenRequest,
        reply: OpenReply,
    },
    Built {
        inode: InodeId,
        backing: Option<(Arc<Backing>, Version)>,
        reply: oneshot::Sender<HandleKind>,
    },
    Release {
        inode: InodeId,
        kind: HandleKind,
    },
    Find {
        inode: InodeId,
        reply: oneshot::Sender<Option<mpsc::Sender<FileOp>>>,
    },
    AnyOpen {
        reply: oneshot::Sender<bool>,
    },
    Unlinked {
        inode: InodeId,
        hidden_name: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    SyncAll {
        reply: oneshot::Sender<()>,
    },
}

/// An open inode as the registry task keeps it.
struct OpenInode {
    file: mpsc::Sender<FileOp>,
    handles: u64,
    passthrough_handles: u64,
    /// A copy is being built.
    building: bool,
    /// The copy passthrough handles share, and the version it holds.
    backing: Option<(Arc<Backing>, Version)>,
    /// Opens that came while the copy was being built, answered once it is.
    waiting: Vec<(OpenRequest, OpenReply)>,
    /// Unlinked while open: its name in the hidden directory, removed at the last close.
    hidden_name: Option<Vec<u8>>,
}

type OpenReply = oneshot::Sender<Result<(mpsc::Sender<FileOp>, OpenMode), fuser::Errno>>;

/// The registry task's state.
struct RegistryState {
    namespace: Namespace,
    cache: ChunkCache,
    limits: FileLimits,
    queue: usize,
    open: HashMap<InodeId, OpenInode>,
    /// The version each inode had when last opened: the kernel may keep its cached
    /// pages of a file opened again unchanged (close-to-open).
    seen: HashMap<InodeId, Version>,
}

impl RegistryState {
    fn open(&mut self, inode: InodeId, request: OpenRequest, reply: OpenReply) {
        let (namespace, cache, limits, queue) = (&self.namespace, &self.cache, self.limits, self.queue);
        let entry = self.open.entry(inode).or_insert_with(|| OpenInode {
            file: files::spawn(namespace.clone(), cache.clone(), inode, limits, queue),
            handles: 0,
            passthrough_handles: 0,
            building: false,
            backing: None,
            waiting: Vec::new(),
            hidden_name: None,
        });
        if entry.building {
            entry.waiting.push((request, reply));
            return;
        }
        if entry
            .backing
            .as_ref()
            .is_some_and(|(_, version)| !request.passthrough_candidate || request.version != Some(*version))
        {
            let refused = if request.writable {
                fuser::Errno::ETXTBSY
            } else {
                fuser::Errno::EBUSY
            };
            let _ = reply.send(Err(refused));
            return;
        }
        let first = entry.handles == 0;
        entry.handles += 1;
        let keep_cache = match request.version {
            Some(version) => {
                if self.seen.len() >= SEEN_INODES_MAX && !self.seen.contains_key(&inode) {
                    self.seen.clear();
                }
                self.seen.insert(inode, version) == Some(version)
            }
            None => {
                self.seen.remove(&inode);
                false
            }
        };
        let plain = |kind| OpenMode::Plain { kind, keep_cache };
        let mode = if let Some((backing, _)) = &entry.backing {
            entry.passthrough_handles += 1;
            OpenMode::Passthrough(Arc::clone(backing))
        } else if first && request.passthrough_candidate && !request.direct {
            entry.building = true;
            OpenMode::Build
        } else if request.direct {
            plain(HandleKind::Direct)
        } else {
            plain(HandleKind::Cached)
        };
        let _ = reply.send(Ok((entry.file.clone(), mode)));
    }

    fn built(&mut self, inode: InodeId, backing: Option<(Arc<Backing>, Version)>) -> HandleKind {
        let Some(entry) = self.open.get_mut(&inode) else {
            return HandleKind::Direct;
        };
        entry.building = false;
        let kind = match backing {
            Some(backing) => {
                entry.backing = Some(backing);
                entry.passthrough_handles += 1;
                HandleKind::Passthrough
            }
            None => HandleKind::Cached,
        };
        for (request, reply) in std::mem::take(&mut entry.waiting) {
            self.open(inode, request, reply);
        }
        kind
    }

    async fn release(&mut self, inode: InodeId, kind: HandleKind) {
        let Some(entry) = self.open.get_mut(&inode) else { return };
        entry.handles -= 1;
        if kind == HandleKind::Passthrough {
            entry.passthrough_handles -= 1;
            if entry.passthrough_handles == 0 {
                if let Some((backing, _)) = entry.backing.take() {
                    wipe_later(backing);
                }
            }
        }
        if entry.handles == 0 {
            if let Some(entry) = self.open.remove(&inode) {
                let _ = entry.file.send(FileOp::Close).await;
                if let Some(hidden_name) = entry.hidden_name {
                    // Removed once the file task has written what it held.
                    let (namespace, file) = (self.namespace.clone(), entry.file);
                    tokio::spawn(async move {
                        file.closed().await;
                        remove_hidden(&namespace, inode, &hidden_name).await;
                    });
                }
            }
        }
    }
}

/// Zero-fills a passthrough copy no handle uses any more, off the registry task.
fn wipe_later(backing: Arc<Backing>) {
    tokio::task::spawn_blocking(move || {
        if let Ok(backing) = Arc::try_unwrap(backing) {
            backing.wipe();
        }
    });
}

/// The calling side of the registry task.
#[derive(Clone)]
pub struct Registry {
    requests: mpsc::Sender<RegistryOp>,
}

impl Registry {
    /// Starts the registry task; file tasks get `limits` and queues of `queue` requests.
    pub fn spawn(namespace: Namespace, cache: ChunkCache, limits: FileLimits, queue: usize) -> Registry {
        let (requests, mut receiver) = mpsc::channel::<RegistryOp>(1024);
        let mut state = RegistryState {
            namespace,
            cache,
            limits,
            queue,
            open: HashMap::new(),
            seen: HashMap::new(),
        };
        tokio::spawn(async move {
            while let Some(op) = receiver.recv().await {
                match op {
                    RegistryOp::Open { inode, request, reply } => state.open(inode, request, reply),
                    RegistryOp::Built { inode, backing, reply } => {
                        let _ = reply.send(state.built(inode, backing));
                    }
                    RegistryOp::Release { inode, kind } => state.release(inode, kind).await,
                    RegistryOp::Find { inode, reply } => {
                        let _ = reply.send(state.open.get(&inode).map(|entry| entry.file.clone()));
                    }
                    RegistryOp::AnyOpen { reply } => {
                        let _ = reply.send(!state.open.is_empty());
                    }
                    RegistryOp::Unlinked {
                        inode,
                        hidden_name,
                        reply,
                    } => {
                        let entry = state.open.get_mut(&inode);
                        let open = entry.is_some();
                        if let Some(entry) = entry {
                            entry.hidden_name = Some(hidden_name);
                            let _ = entry.file.send(FileOp::Unlinked).await;
                        }
                        let _ = reply.send(open);
                    }
                    RegistryOp::SyncAll { reply } => {
                        for entry in state.open.values() {
                            let (done, wait) = oneshot::channel();
                            if entry.file.send(FileOp::Sync { reply: done }).await.is_ok() {
                                let _ = wait.await;
                            }
                        }
                        let _ = reply.send(());
                    }
                }
            }
        });
        Registry { requests }
    }

    /// The file task of `inode`, started if it is not open yet, and how the new handle
    /// reads; one more handle holds the task.
    pub async fn open(
        &self,
        inode: InodeId,
        request: OpenRequest,
    ) -> Result<(mpsc::Sender<FileOp>, OpenMode), fuser::Errno> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(RegistryOp::Open { inode, request, reply })
            .await
            .map_err(|_| fuser::Errno::EIO)?;
        answer.await.map_err(|_| fuser::Errno::EIO)?
    }

    /// Ends an [`OpenMode::Build`]: the copy (with the version it holds), or `None` if
    /// none was made; answers the handle's kind.
    pub async fn built(&self, inode: InodeId, backing: Option<(Arc<Backing>, Version)>) -> HandleKind {
        let (reply, answer) = oneshot::channel();
        if self
            .requests
            .send(RegistryOp::Built { inode, backing, reply })
            .await
            .is_err()
        {
            return HandleKind::Direct;
        }
        answer.await.unwrap_or(HandleKind::Direct)
    }

    /// One handle of `inode` fewer; the last one closes the file task.
    pub async fn release(&self, inode: InodeId, kind: HandleKind) {
        let _ = self.requests.send(RegistryOp::Release { inode, kind }).await;
    }

    /// The file task of `inode` if it is open.
    pub async fn find(&self, inode: InodeId) -> Option<mpsc::Sender<FileOp>> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(RegistryOp::Find { inode, reply }).await.ok()?;
        answer.await.ok().flatten()
    }

    /// Whether any inode is open (a hint: it may change right after).
    pub async fn any_open(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(RegistryOp::AnyOpen { reply }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// `inode`, unlinked while open, now lives as `hidden_name` in the hidden directory:
    /// it is removed when its last handle closes. Answers whether it is still open (if
    /// not, the caller removes it).
    pub async fn unlinked(&self, inode: InodeId, hidden_name: Vec<u8>) -> bool {
        let (reply, answer) = oneshot::channel();
        let op = RegistryOp::Unlinked {
            inode,
            hidden_name,
            reply,
        };
        if self.requests.send(op).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Writes what every open file buffers (before an unmount).
    pub async fn sync_all(&self) {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(RegistryOp::SyncAll { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }
}

/// The directory (under the namespace root) where files unlinked while open live until
/// their last handle closes; the mount hides it.
pub const HIDDEN_DIR: &[u8] = b".kiseki-unlinked";

/// Removes a file that was unlinked while open, now that its last handle closed.
pub async fn remove_hidden(namespace: &Namespace, inode: InodeId, hidden_name: &[u8]) {
    let removed = async {
        let (dir, _) = namespace.lookup(InodeId::ROOT, HIDDEN_DIR).await?;
        namespace.unlink_at(dir, hidden_name).await
    }
    .await;
    if let Err(error) = removed {
        tracing::warn!(inode = inode.0, %error, "removing a file unlinked while open failed");
    }
}
