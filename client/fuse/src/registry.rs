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

/// One open handle.
pub struct Handle {
    /// The inode.
    pub inode: InodeId,
    /// Its file task.
    pub file: mpsc::Sender<FileOp>,
    /// Opened for writing.
    pub writable: bool,
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

enum RegistryOp {
    Open {
        inode: InodeId,
        version: Option<Version>,
        reply: oneshot::Sender<(mpsc::Sender<FileOp>, bool)>,
    },
    Release {
        inode: InodeId,
    },
    Find {
        inode: InodeId,
        reply: oneshot::Sender<Option<mpsc::Sender<FileOp>>>,
    },
    SyncAll {
        reply: oneshot::Sender<()>,
    },
}

/// The calling side of the registry task.
#[derive(Clone)]
pub struct Registry {
    requests: mpsc::Sender<RegistryOp>,
}

impl Registry {
    /// Starts the registry task; file tasks get `limits` and queues of `queue` requests.
    pub fn spawn(namespace: Namespace, limits: FileLimits, queue: usize) -> Registry {
        let (requests, mut receiver) = mpsc::channel::<RegistryOp>(1024);
        tokio::spawn(async move {
            let mut open: HashMap<InodeId, (mpsc::Sender<FileOp>, u64)> = HashMap::new();
            // The version each inode had when last opened: the kernel may keep its cached
            // pages of a file opened again unchanged (close-to-open).
            let mut seen: HashMap<InodeId, Version> = HashMap::new();
            while let Some(op) = receiver.recv().await {
                match op {
                    RegistryOp::Open { inode, version, reply } => {
                        let entry = open
                            .entry(inode)
                            .or_insert_with(|| (files::spawn(namespace.clone(), inode, limits, queue), 0));
                        entry.1 += 1;
                        let keep_cache = match version {
                            Some(version) => {
                                if seen.len() >= SEEN_INODES_MAX && !seen.contains_key(&inode) {
                                    seen.clear();
                                }
                                seen.insert(inode, version) == Some(version)
                            }
                            None => {
                                seen.remove(&inode);
                                false
                            }
                        };
                        let _ = reply.send((entry.0.clone(), keep_cache));
                    }
                    RegistryOp::Release { inode } => {
                        if let Some(entry) = open.get_mut(&inode) {
                            entry.1 -= 1;
                            if entry.1 == 0 {
                                if let Some((file, _)) = open.remove(&inode) {
                                    let _ = file.send(FileOp::Close).await;
                                }
                            }
                        }
                    }
                    RegistryOp::Find { inode, reply } => {
                        let _ = reply.send(open.get(&inode).map(|entry| entry.0.clone()));
                    }
                    RegistryOp::SyncAll { reply } => {
                        for (_, (file, _)) in open.iter() {
                            let (done, wait) = oneshot::channel();
                            if file.send(FileOp::Sync { reply: done }).await.is_ok() {
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

    /// The file task of `inode`, started if it is not open yet; one more handle holds it.
    /// Also whether the file is at the `version` it had when last opened (then the
    /// kernel's cached pages of it are still right); `None` forgets the version.
    pub async fn open(&self, inode: InodeId, version: Option<Version>) -> Option<(mpsc::Sender<FileOp>, bool)> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(RegistryOp::Open { inode, version, reply })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// One handle of `inode` fewer; the last one closes the file task.
    pub async fn release(&self, inode: InodeId) {
        let _ = self.requests.send(RegistryOp::Release { inode }).await;
    }

    /// The file task of `inode` if it is open.
    pub async fn find(&self, inode: InodeId) -> Option<mpsc::Sender<FileOp>> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(RegistryOp::Find { inode, reply }).await.ok()?;
        answer.await.ok().flatten()
    }

    /// Writes what every open file buffers (before an unmount).
    pub async fn sync_all(&self) {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(RegistryOp::SyncAll { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }
}
