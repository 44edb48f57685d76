//! FUSE passthrough (`-o passthrough`, kernel 6.9 and later): a file opened read-only
//! whose every chunk is in this mount's cache is served by the kernel straight from a
//! plaintext copy on local disk, with no request reaching this process per read.
//!
//! **The trade-off.** The copy is plaintext: an anonymous `O_TMPFILE` in the mount's
//! cache pool (mode 0700, no name, so nothing else can open it and a crash frees its
//! blocks), built when the first handle opens and zero-filled and closed when the last
//! one closes. While the file is open its plaintext is on the local disk, which the rest
//! of the cache never allows (L2 holds ciphertext only). Without the option, or when a
//! chunk is missing from the cache, or the file is open elsewhere, the file is served
//! through the mount as usual.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use fuser::{BackingId, Errno};
use kiseki_client::cache::pool::zero_fill_file;
use kiseki_client::cache::ChunkCache;
use kiseki_client::Namespace;
use kiseki_namespace::{InodeId, ReadPiece};

use crate::errno::errno;

/// The kernel's reference on a plaintext copy, and the copy.
pub struct Backing {
    /// What opens name in their reply.
    pub id: BackingId,
    file: File,
}

impl Backing {
    /// Pairs a registered backing id with its file.
    pub fn new(id: BackingId, file: File) -> Backing {
        Backing { id, file }
    }

    /// Drops the kernel's reference, then zero-fills and closes the copy (blocking).
    pub fn wipe(self) {
        let Backing { id, file } = self;
        drop(id);
        if let Err(error) = zero_fill_file(&file) {
            tracing::warn!(%error, "zero-filling a passthrough copy failed");
        }
    }
}

/// The plaintext of `inode` (`size_bytes` long) in an anonymous file of the cache pool,
/// if every chunk of it is cached; `None` if one is not.
pub async fn plaintext_copy(
    namespace: &Namespace,
    cache: &ChunkCache,
    inode: InodeId,
    size_bytes: u64,
) -> Result<Option<File>, Errno> {
    let pieces = namespace
        .all_pieces(inode, size_bytes)
        .await
        .map_err(|error| errno(&error))?;
    for piece in &pieces {
        if let ReadPiece::Extent { extent, .. } = piece {
            if !cache.holds(extent.chunk_locator).await {
                return Ok(None);
            }
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(cache.pool_dir())
        .map_err(|error| Errno::from_i32(error.raw_os_error().unwrap_or(libc::EIO)))?;
    let io = |result: std::io::Result<()>| result.map_err(|_| Errno::EIO);
    io(file.set_len(size_bytes))?;
    for piece in pieces {
        match piece {
            ReadPiece::Hole { .. } => {}
            ReadPiece::Inline { offset_bytes, .. } => {
                let bytes = namespace.inline_piece(&piece).map_err(|error| errno(&error))?;
                io(file.write_all_at(&bytes.unwrap_or_default(), offset_bytes))?;
            }
            ReadPiece::Extent { offset_bytes, extent } => {
                let chunk = cache.chunk(namespace, &extent).await.map_err(|error| errno(&error))?;
                let start = extent.chunk_offset_bytes as usize;
                let end = start + extent.length_bytes as usize;
                let writer = file.try_clone().map_err(|_| Errno::EIO)?;
                let written = tokio::task::spawn_blocking(move || {
                    let bytes = chunk.get(start..end).ok_or(Errno::EIO)?;
                    writer.write_all_at(bytes, offset_bytes).map_err(|_| Errno::EIO)
                })
                .await
                .map_err(|_| Errno::EIO)?;
                written?;
            }
        }
    }
    Ok(Some(file))
}
