//! The L2 pool of one client process: a directory `pool-<pid>-<nanos>` under the cache
//! directory, locked (`flock`) for as long as the process lives, holding one file per
//! cached chunk with the chunk's sealed fragments (ciphertext, exactly as the nodes
//! hold them) behind a checksummed header.
//!
//! A clean shutdown zero-fills and deletes every file of the pool ([`Pool::wipe`]). A
//! pool whose lock nobody holds belongs to a client that died; the next client to start
//! on the same cache directory scrubs it the same way ([`scrub_orphans`]).
//!
//! Entry layout (little endian): magic `KSKCHNK1`, the 32-byte locator, `u16` slot
//! count, per slot a `u32` length (`u32::MAX`: no fragment), the fragments, and a
//! CRC-32C of everything before it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::index::Locator;

const MAGIC: &[u8; 8] = b"KSKCHNK1";
const ABSENT: u32 = u32::MAX;
/// Prefix of every pool directory's name.
pub const POOL_PREFIX: &str = "pool-";
/// The lock file of a pool.
pub const LOCK_FILE: &str = "lock";
/// What a pool's mount writes about itself (see `control`).
pub const MOUNT_FILE: &str = "mount.json";
/// The control socket of a pool's mount.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Why an entry read back from disk is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    /// Shorter than its header says, or the magic is wrong.
    #[error("cache entry is truncated or not an entry")]
    Malformed,
    /// Its checksum does not match.
    #[error("cache entry fails its checksum")]
    Checksum,
    /// It holds another chunk.
    #[error("cache entry holds another chunk")]
    WrongChunk,
}

/// Encodes the fragments of chunk `locator` as a pool entry.
pub fn encode_entry(locator: &Locator, fragments: &[Option<Vec<u8>>]) -> Vec<u8> {
    let body: usize = fragments.iter().flatten().map(Vec::len).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 32 + 2 + fragments.len() * 4 + body + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(locator);
    out.extend_from_slice(&(fragments.len() as u16).to_le_bytes());
    for fragment in fragments {
        let length = fragment.as_ref().map_or(ABSENT, |bytes| bytes.len() as u32);
        out.extend_from_slice(&length.to_le_bytes());
    }
    for fragment in fragments.iter().flatten() {
        out.extend_from_slice(fragment);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a pool entry that must hold chunk `locator`.
pub fn decode_entry(locator: &Locator, bytes: &[u8]) -> Result<Vec<Option<Vec<u8>>>, EntryError> {
    let header = MAGIC.len() + 32 + 2;
    if bytes.len() < header + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(EntryError::Malformed);
    }
    let (covered, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(covered) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(EntryError::Checksum);
    }
    if &covered[MAGIC.len()..MAGIC.len() + 32] != locator {
        return Err(EntryError::WrongChunk);
    }
    let slots = usize::from(u16::from_le_bytes([covered[header - 2], covered[header - 1]]));
    let lengths_end = header + slots * 4;
    let lengths = covered.get(header..lengths_end).ok_or(EntryError::Malformed)?;
    let mut at = lengths_end;
    let mut fragments = Vec::with_capacity(slots);
    for length in lengths.chunks_exact(4) {
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
        if length == ABSENT {
            fragments.push(None);
            continue;
        }
        let end = at.checked_add(length as usize).ok_or(EntryError::Malformed)?;
        fragments.push(Some(covered.get(at..end).ok_or(EntryError::Malformed)?.to_vec()));
        at = end;
    }
    if at != covered.len() {
        return Err(EntryError::Malformed);
    }
    Ok(fragments)
}

/// What scrubbing or wiping removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WipeReport {
    /// Pools removed.
    pub pools: u64,
    /// Files zero-filled and deleted.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One process's pool, locked while it lives.
#[derive(Debug)]
pub struct Pool {
    dir: PathBuf,
    _lock: File,
}

impl Pool {
    /// Creates a fresh pool under `cache_dir` (made if missing, mode 0700), after
    /// scrubbing the pools of dead clients there.
    pub fn create(cache_dir: &Path) -> io::Result<(Pool, WipeReport)> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(cache_dir)?;
        let scrubbed = scrub_orphans(cache_dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let dir = cache_dir.join(format!("{POOL_PREFIX}{}-{nanos}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        fs::DirBuilder::new().mode(0o700).create(dir.join("chunks"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))?;
        lock.try_lock()
            .map_err(|error| io::Error::other(format!("locking {}: {error}", dir.display())))?;
        Ok((Pool { dir, _lock: lock }, scrubbed))
    }

    /// The pool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where chunk `locator`'s entry lives.
    pub fn entry_path(&self, locator: &Locator) -> PathBuf {
        self.dir.join("chunks").join(hex(locator))
    }

    /// Writes an entry in full, then gives it its name: a reader sees a complete
    /// entry or none.
    pub fn write_entry(&self, locator: &Locator, entry: &[u8]) -> io::Result<()> {
        let path = self.entry_path(locator);
        let partial = path.with_extension("partial");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(entry)?;
        drop(file);
        fs::rename(&partial, &path)
    }

    /// Zero-fills and deletes every file of the pool, then the pool.
    pub fn wipe(&self) -> io::Result<WipeReport> {
        let mut report = WipeReport::default();
        wipe_dir(&self.dir, &mut report)?;
        report.pools = 1;
        Ok(report)
    }
}

/// Scrubs (zero-fills and deletes) every pool under `cache_dir` that no live process
/// holds locked.
pub fn scrub_orphans(cache_dir: &Path) -> io::Result<WipeReport> {
    let mut report = WipeReport::default();
    for entry in fs::read_dir(cache_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        // A pool may vanish under us: its live owner is wiping it at its unmount.
        let is_dir = match entry.file_type() {
            Ok(kind) => kind.is_dir(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if !name.to_string_lossy().starts_with(POOL_PREFIX) || !is_dir || pool_is_live(&entry.path()) {
            continue;
        }
        tracing::warn!(pool = %entry.path().display(), "scrubbing the cache pool of a client that died");
        match wipe_dir(&entry.path(), &mut report) {
            Ok(()) => report.pools += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(report)
}

/// Whether a live process holds the pool at `dir` locked.
pub fn pool_is_live(dir: &Path) -> bool {
    match File::open(dir.join(LOCK_FILE)) {
        // A lock this process cannot take is held by a live client (or by this one
        // through another open file).
        Ok(lock) => match lock.try_lock() {
            Ok(()) => {
                let _ = lock.unlock();
                false
            }
            Err(_) => true,
        },
        Err(_) => false,
    }
}

fn wipe_dir(dir: &Path, report: &mut WipeReport) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            wipe_dir(&entry.path(), report)?;
        } else {
            if kind.is_file() {
                let bytes = zero_fill(&entry.path())?;
                report.files += 1;
                report.bytes += bytes;
            }
            fs::remove_file(entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Overwrites a file with zeros, flushed to the device, and answers its length.
fn zero_fill(path: &Path) -> io::Result<u64> {
    zero_fill_file(&OpenOptions::new().write(true).open(path)?)
}

/// Overwrites an open file with zeros, flushed to the device, and answers its length.
pub fn zero_fill_file(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let length = file.metadata()?.len();
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < length {
        let step = (length - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..step], at)?;
        at += step as u64;
    }
    if length > 0 {
        file.sync_data()?;
    }
    Ok(length)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_every_flipped_byte_is_caught() {
        let locator = [7u8; 32];
        let fragments = vec![Some(vec![1, 2, 3]), None, Some(vec![]), Some(vec![9; 40])];
        let entry = encode_entry(&locator, &fragments);
        assert_eq!(decode_entry(&locator, &entry), Ok(fragments));
        for at in 0..entry.len() {
            let mut bad = entry.clone();
            bad[at] ^= 0x20;
            assert!(decode_entry(&locator, &bad).is_err(), "flip at {at} went unnoticed");
        }
        for cut in 0..entry.len() {
            assert!(decode_entry(&locator, &entry[..cut]).is_err());
        }
        assert_eq!(decode_entry(&[8u8; 32], &entry), Err(EntryError::WrongChunk));
    }

    #[test]
    fn orphaned_pools_are_scrubbed_and_live_ones_kept() {
        let cache = tempfile::tempdir().expect("tempdir");
        let (live, scrubbed) = Pool::create(cache.path()).expect("pool");
        assert_eq!(scrubbed, WipeReport::default());
        live.write_entry(&[1; 32], &encode_entry(&[1; 32], &[Some(vec![5; 100])]))
            .expect("entry");
        // A dead client's pool: the same layout, its lock not held.
        let orphan = cache.path().join("pool-1-1");
        fs::create_dir_all(orphan.join("chunks")).expect("orphan");
        fs::write(orphan.join(LOCK_FILE), b"").expect("lock");
        fs::write(orphan.join("chunks").join("ab"), vec![0xaa; 5000]).expect("chunk");
        assert!(pool_is_live(live.dir()));
        assert!(!pool_is_live(&orphan));
        let (second, scrubbed) = Pool::create(cache.path()).expect("second pool");
        assert_eq!((scrubbed.pools, scrubbed.files, scrubbed.bytes), (1, 2, 5000));
        assert!(!orphan.exists());
        assert!(live.entry_path(&[1; 32]).exists(), "a live pool is never scrubbed");
        let live_dir = live.dir().to_path_buf();
        let wiped = live.wipe().expect("wipe");
        assert_eq!((wiped.pools, wiped.files), (1, 2));
        assert!(!live_dir.exists());
        second.wipe().expect("wipe");
    }
}
