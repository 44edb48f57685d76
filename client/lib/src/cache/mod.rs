//! The client's chunk cache: L1 holds decoded chunks in memory, L2 holds chunks' sealed
//! fragments in a pool on local disk (ciphertext only: a hit is decrypted and verified
//! again, like a fetch from the cluster), and staging fetches a dataset into L2 and
//! pins it there.
//!
//! **Modes.** `organic`: every chunk read is kept in L1, and in L2 from its second miss
//! on (a one-pass scan does not push out what is read again, nor spend the local disk's
//! bandwidth on writes nobody reads), least recently used first out. `pinned`: reads
//! fill L1 only; L2 holds what was staged, until released, so what a job staged is never
//! pushed out by what it reads otherwise. `bypass`: nothing
//! is cached (staging is refused).
//!
//! **Shape.** One cache task owns the index ([`index::CacheIndex`], no I/O); the
//! [`ChunkCache`] handles that reads and staging use ask it by message over a bounded
//! channel and do the file and network I/O themselves. Nothing here is shared mutable
//! state: the pool is a directory, and the index lives in its task.
//!
//! **Invariants.** I-F3 (limits) and I-F4 (pins) in [`index`]; an L2 entry is used only
//! if its checksum and locator match ([`pool`]) and its fragments decrypt and verify, or
//! it is deleted and the chunk fetched again; the pool is zero-filled and deleted on
//! [`ChunkCache::close`] and scrubbed at the next start if its process died.

pub mod control;
pub mod index;
pub mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiseki_namespace::{Extent, FileKind, InodeId, ReadPiece};
use tokio::sync::{mpsc, oneshot};

use crate::{ClientError, Namespace};
use index::{Admission, CacheIndex, CacheStats, DatasetStatus, Locator, Lookup};
use pool::{Pool, WipeReport};

/// A decoded chunk; its memory is zeroed when the last holder drops it.
pub type Plaintext = Arc<Wiped>;

/// Bytes that are zeroed when dropped. A `fill` (one `memset`, tens of GB/s) kept from
/// being optimized away by `black_box`, rather than `zeroize`'s byte-wise volatile writes,
/// which cost more than decrypting the chunk did (measured: 15% of a sequential read).
#[derive(Debug)]
pub struct Wiped(Vec<u8>);

impl Wiped {
    /// Takes `bytes`, to be zeroed on drop.
    pub fn new(bytes: Vec<u8>) -> Wiped {
        Wiped(bytes)
    }
}

impl std::ops::Deref for Wiped {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}

/// Requests queued for the cache task at most.
const REQUESTS_QUEUED_MAX: usize = 1024;
/// Chunks fetched at once while staging.
const STAGE_FETCHES_MAX: usize = 8;

/// How file data is cached on this machine (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Least recently used chunks make room for new ones.
    Organic,
    /// L2 holds staged data only, until it is released.
    Pinned,
    /// No data cache.
    Bypass,
}

impl CacheMode {
    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            CacheMode::Organic => "organic",
            CacheMode::Pinned => "pinned",
            CacheMode::Bypass => "bypass",
        }
    }
}

impl std::str::FromStr for CacheMode {
    type Err = String;

    fn from_str(text: &str) -> Result<CacheMode, String> {
        match text {
            "organic" => Ok(CacheMode::Organic),
            "pinned" => Ok(CacheMode::Pinned),
            "bypass" => Ok(CacheMode::Bypass),
            other => Err(format!("cache_mode={other}: expected pinned, organic or bypass")),
        }
    }
}

/// What a cache is made with.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Its mode.
    pub mode: CacheMode,
    /// The cache directory the pool is made in.
    pub dir: PathBuf,
    /// Bytes of decoded chunks in memory at most.
    pub l1_max_bytes: u64,
    /// Bytes of pool entries at most.
    pub l2_max_bytes: u64,
}

enum Request {
    Lookup {
        locator: Locator,
        reply: oneshot::Sender<Lookup<Plaintext>>,
    },
    Holds {
        locator: Locator,
        reply: oneshot::Sender<bool>,
    },
    PassthroughOpened,
    InsertMemory {
        locator: Locator,
        value: Plaintext,
    },
    ForgetMemory {
        locator: Locator,
    },
    Admit {
        locator: Locator,
        bytes: u64,
        dataset: Option<String>,
        reply: oneshot::Sender<Admission>,
    },
    Written {
        locator: Locator,
    },
    DropDisk {
        locator: Locator,
        corrupt: bool,
    },
    Staged {
        dataset: String,
        files: u64,
        reply: oneshot::Sender<DatasetStatus>,
    },
    Release {
        dataset: String,
        reply: oneshot::Sender<Option<DatasetStatus>>,
    },
    Datasets {
        reply: oneshot::Sender<Vec<DatasetStatus>>,
    },
    Stats {
        reply: oneshot::Sender<CacheStats>,
    },
}

/// A handle on the cache of this process (cheap to clone).
#[derive(Clone)]
pub struct ChunkCache {
    mode: CacheMode,
    pool: Arc<Pool>,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("mode", &self.mode)
            .field("pool", &self.pool.dir())
            .finish_non_exhaustive()
    }
}

impl ChunkCache {
    /// Makes the pool under `config.dir` (scrubbing the pools of dead clients there) and
    /// starts the cache task; answers what the scrub removed.
    pub fn open(config: &CacheConfig) -> Result<(ChunkCache, WipeReport), ClientError> {
        let (pool, scrubbed) = Pool::create(&config.dir)?;
        let (requests, receiver) = mpsc::channel(REQUESTS_QUEUED_MAX);
        let pool = Arc::new(pool);
        let l1_max_bytes = if config.mode == CacheMode::Bypass {
            0
        } else {
            config.l1_max_bytes
        };
        let index = CacheIndex::new(l1_max_bytes, config.l2_max_bytes);
        tokio::spawn(run(index, receiver, Arc::clone(&pool)));
        Ok((
            ChunkCache {
                mode: config.mode,
                pool,
                requests,
            },
            scrubbed,
        ))
    }

    /// The cache mode.
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// This process's pool directory.
    pub fn pool_dir(&self) -> &Path {
        self.pool.dir()
    }

    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ClientError::Invalid("the cache task has stopped".into());
        self.requests.send(request(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    async fn tell(&self, request: Request) {
        let _ = self.requests.send(request).await;
    }

    /// The plaintext of the chunk `extent` points into: from memory, from the pool, or
    /// fetched from the cluster (and then kept as the mode says).
    pub async fn chunk(&self, namespace: &Namespace, extent: &Extent) -> Result<Plaintext, ClientError> {
        if self.mode == CacheMode::Bypass {
            return Ok(Arc::new(Wiped::new(namespace.load_chunk(extent).await?)));
        }
        let locator = extent.chunk_locator;
        let admit = match self.ask(|reply| Request::Lookup { locator, reply }).await? {
            Lookup::Memory(value) => return Ok(value),
            Lookup::Disk => {
                if let Some(value) = self.read_pool_entry(namespace, extent).await {
                    self.tell(Request::InsertMemory {
                        locator,
                        value: Arc::clone(&value),
                    })
                    .await;
                    return Ok(value);
                }
                // The entry was unusable and is gone: write it again.
                true
            }
            Lookup::Miss { again } => again,
        };
        let fragments = namespace.fetch_fragments(extent).await?;
        let value: Plaintext = Arc::new(Wiped::new(namespace.decode_fragments(extent, &fragments)?));
        self.tell(Request::InsertMemory {
            locator,
            value: Arc::clone(&value),
        })
        .await;
        if self.mode == CacheMode::Organic && admit {
            let cache = self.clone();
            tokio::spawn(async move { cache.store(locator, &fragments, None).await });
        }
        Ok(value)
    }

    /// Whether the chunk is held (in memory or in the pool) without counting a use.
    pub async fn holds(&self, locator: Locator) -> bool {
        self.ask(|reply| Request::Holds { locator, reply })
            .await
            .unwrap_or(false)
    }

    /// Counts a file opened by passthrough from a plaintext copy of cached chunks.
    pub async fn passthrough_opened(&self) {
        self.tell(Request::PassthroughOpened).await;
    }

    /// Drops a chunk from memory (its file was rewritten here).
    pub async fn forget(&self, locator: Locator) {
        self.tell(Request::ForgetMemory { locator }).await;
    }

    /// Reads, checks and decodes the pool entry of `extent`'s chunk; an unusable entry
    /// is deleted and forgotten.
    async fn read_pool_entry(&self, namespace: &Namespace, extent: &Extent) -> Option<Plaintext> {
        let locator = extent.chunk_locator;
        let path = self.pool.entry_path(&locator);
        let corrupt = match tokio::fs::read(&path).await {
            Ok(bytes) => match pool::decode_entry(&locator, &bytes) {
                Ok(fragments) => match namespace.decode_fragments(extent, &fragments) {
                    Ok(plaintext) => return Some(Arc::new(Wiped::new(plaintext))),
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "cache entry does not decode; fetching again");
                        true
                    }
                },
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "dropping a cache entry");
                    true
                }
            },
            // Evicted meanwhile.
            Err(_) => false,
        };
        self.tell(Request::DropDisk { locator, corrupt }).await;
        let _ = tokio::fs::remove_file(&path).await;
        None
    }

    /// Keeps a chunk's fragments in the pool (pinned by `dataset` if given); answers
    /// whether it is held now.
    async fn store(&self, locator: Locator, fragments: &[Option<Vec<u8>>], dataset: Option<String>) -> bool {
        let entry = pool::encode_entry(&locator, fragments);
        let bytes = entry.len() as u64;
        let admission = self.ask(|reply| Request::Admit {
            locator,
            bytes,
            dataset,
            reply,
        });
        match admission.await {
            Ok(Admission::Present) => true,
            Ok(Admission::Full) | Err(_) => false,
            Ok(Admission::Write { .. }) => {
                let pool = Arc::clone(&self.pool);
                let written = tokio::task::spawn_blocking(move || pool.write_entry(&locator, &entry)).await;
                match written {
                    Ok(Ok(())) => {
                        self.tell(Request::Written { locator }).await;
                        true
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "writing a cache entry failed");
                        self.tell(Request::DropDisk {
                            locator,
                            corrupt: false,
                        })
                        .await;
                        false
                    }
                    Err(_) => {
                        self.tell(Request::DropDisk {
                            locator,
                            corrupt: false,
                        })
                        .await;
                        false
                    }
                }
            }
        }
    }

    /// Fetches every chunk of the file or tree at `path` (in `namespace`) into the pool
    /// and pins it under the name `dataset`.
    pub async fn stage(&self, namespace: &Namespace, path: &str, dataset: &str) -> Result<DatasetStatus, ClientError> {
        if self.mode == CacheMode::Bypass {
            return Err(ClientError::Invalid(
                "cache_mode=bypass keeps no cache to stage into".into(),
            ));
        }
        let (root, attributes) = namespace.resolve(path).await?;
        let mut files = 0u64;
        let mut stack = vec![(root, attributes.kind, attributes.size_bytes)];
        let mut fetches = tokio::task::JoinSet::new();
        while let Some((inode, kind, size_bytes)) = stack.pop() {
            match kind {
                FileKind::Directory => push_children(namespace, inode, &mut stack).await?,
                FileKind::File => {
                    files += 1;
                    for extent in file_extents(namespace, inode, size_bytes).await? {
                        while fetches.len() >= STAGE_FETCHES_MAX {
                            stage_joined(fetches.join_next().await)?;
                        }
                        let (cache, namespace, dataset) = (self.clone(), namespace.clone(), dataset.to_owned());
                        fetches.spawn(async move { cache.stage_chunk(&namespace, &extent, dataset).await });
                    }
                }
                _ => {}
            }
        }
        while let Some(joined) = fetches.join_next().await {
            stage_joined(Some(joined))?;
        }
        self.ask(|reply| Request::Staged {
            dataset: dataset.to_owned(),
            files,
            reply,
        })
        .await
    }

    async fn stage_chunk(&self, namespace: &Namespace, extent: &Extent, dataset: String) -> Result<(), ClientError> {
        let locator = extent.chunk_locator;
        let fragments = namespace.fetch_fragments(extent).await?;
        // Verify before pinning: a chunk the cluster cannot serve fails the stage now.
        namespace.decode_fragments(extent, &fragments)?;
        if self.store(locator, &fragments, Some(dataset)).await {
            Ok(())
        } else {
            Err(ClientError::Invalid(
                "the cache has no room for the dataset (cache_l2_max is full of pinned data)".into(),
            ))
        }
    }

    /// Unpins a staged dataset.
    pub async fn release(&self, dataset: &str) -> Result<Option<DatasetStatus>, ClientError> {
        self.ask(|reply| Request::Release {
            dataset: dataset.to_owned(),
            reply,
        })
        .await
    }

    /// The staged datasets.
    pub async fn datasets(&self) -> Result<Vec<DatasetStatus>, ClientError> {
        self.ask(|reply| Request::Datasets { reply }).await
    }

    /// Counters and sizes.
    pub async fn stats(&self) -> Result<CacheStats, ClientError> {
        self.ask(|reply| Request::Stats { reply }).await
    }

    /// Zero-fills and deletes the pool (clean shutdown).
    pub async fn close(self) -> Result<WipeReport, ClientError> {
        let pool = Arc::clone(&self.pool);
        drop(self);
        let report = tokio::task::spawn_blocking(move || pool.wipe())
            .await
            .map_err(|error| ClientError::Invalid(format!("wiping the cache: {error}")))??;
        Ok(report)
    }
}

fn stage_joined(joined: Option<Result<Result<(), ClientError>, tokio::task::JoinError>>) -> Result<(), ClientError> {
    match joined {
        Some(Ok(result)) => result,
        Some(Err(error)) => Err(ClientError::Invalid(format!("staging task: {error}"))),
        None => Ok(()),
    }
}

async fn push_children(
    namespace: &Namespace,
    dir: InodeId,
    stack: &mut Vec<(InodeId, FileKind, u64)>,
) -> Result<(), ClientError> {
    let mut after = 0;
    loop {
        let page = namespace.read_dir_plus(dir, after, 1024).await?;
        let Some(last) = page.last() else { return Ok(()) };
        after = last.0.cookie;
        for (entry, attributes) in page {
            stack.push((entry.inode, entry.kind, attributes.size_bytes));
        }
    }
}

/// The extents of a file, one per distinct chunk.
async fn file_extents(namespace: &Namespace, inode: InodeId, size_bytes: u64) -> Result<Vec<Extent>, ClientError> {
    let mut seen = std::collections::HashSet::new();
    let extents = namespace
        .all_pieces(inode, size_bytes)
        .await?
        .into_iter()
        .filter_map(|piece| match piece {
            ReadPiece::Extent { extent, .. } => seen.insert(extent.chunk_locator).then_some(extent),
            _ => None,
        })
        .collect();
    Ok(extents)
}

async fn run(mut index: CacheIndex<Plaintext>, mut requests: mpsc::Receiver<Request>, pool: Arc<Pool>) {
    while let Some(request) = requests.recv().await {
        match request {
            Request::Lookup { locator, reply } => {
                let _ = reply.send(index.lookup(&locator));
            }
            Request::Holds { locator, reply } => {
                let _ = reply.send(index.holds(&locator));
            }
            Request::PassthroughOpened => index.passthrough_opened(),
            Request::InsertMemory { locator, value } => {
                let bytes = value.len() as u64;
                index.insert_memory(locator, value, bytes);
            }
            Request::ForgetMemory { locator } => index.forget_memory(&locator),
            Request::Admit {
                locator,
                bytes,
                dataset,
                reply,
            } => {
                let admission = index.admit_disk(locator, bytes, dataset.as_deref());
                if let Admission::Write { evict } = &admission {
                    let paths: Vec<PathBuf> = evict.iter().map(|locator| pool.entry_path(locator)).collect();
                    if !paths.is_empty() {
                        tokio::task::spawn_blocking(move || {
                            for path in paths {
                                let _ = std::fs::remove_file(path);
                            }
                        });
                    }
                }
                let _ = reply.send(admission);
            }
            Request::Written { locator } => index.disk_written(&locator),
            Request::DropDisk { locator, corrupt } => {
                index.drop_disk(&locator, corrupt);
            }
            Request::Staged { dataset, files, reply } => {
                let now_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs());
                let _ = reply.send(index.dataset_staged(&dataset, files, now_s));
            }
            Request::Release { dataset, reply } => {
                let _ = reply.send(index.release(&dataset));
            }
            Request::Datasets { reply } => {
                let _ = reply.send(index.datasets());
            }
            Request::Stats { reply } => {
                let _ = reply.send(index.stats());
            }
        }
    }
}
