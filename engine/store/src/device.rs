//! Formatting and identifying devices. Runs at start-up and from the admin CLI, off the
//! data path, with ordinary blocking I/O.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::{
    checkpoint_slot_bytes_for, has_superblock_magic, FormatError, Superblock, BLOCK_BYTES, DATA_OFFSET, FORMAT_VERSION,
    SUPERBLOCK_MIRROR_OFFSET, SUPERBLOCK_OFFSET,
};
use crate::StoreError;

/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Options of `format`.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// Allocation groups: one per core of the node that will run the device.
    pub cores: u32,
    /// Segment size in bytes (multiple of 4 KiB, at least 64 KiB).
    pub segment_bytes: u64,
    /// Erase whatever the device holds.
    pub force: bool,
    /// For a regular file: create or extend it to this size first.
    pub create_bytes: Option<u64>,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            cores: 1,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            force: false,
            create_bytes: None,
        }
    }
}

fn device_size(path: &Path, file: &std::fs::File) -> Result<u64, StoreError> {
    rustix::fs::seek(file, rustix::fs::SeekFrom::End(0))
        .map_err(|errno| StoreError::io(path, "reading the device size", errno.into()))
}

fn read_block(path: &Path, file: &std::fs::File, offset: u64) -> Result<Vec<u8>, StoreError> {
    let mut block = vec![0u8; BLOCK_BYTES];
    match file.read_exact_at(&mut block, offset) {
        Ok(()) => Ok(block),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(StoreError::Truncated {
            device: path.to_path_buf(),
            expected_bytes: offset + BLOCK_BYTES as u64,
            actual_bytes: device_size(path, file).unwrap_or(0),
        }),
        Err(error) => Err(StoreError::io(path, "reading the superblock", error)),
    }
}

/// Reads and validates the superblock of `path`: the primary, or the mirror if the
/// primary is damaged. Typed errors for blank, foreign, damaged, truncated devices.
pub fn read_superblock(path: &Path) -> Result<Superblock, StoreError> {
    let file = std::fs::File::open(path).map_err(|error| StoreError::io(path, "opening", error))?;
    let size = device_size(path, &file)?;
    if size < DATA_OFFSET {
        let head = read_block(path, &file, 0).ok();
        if head.as_deref().is_some_and(has_superblock_magic) {
            return Err(StoreError::Truncated {
                device: path.to_path_buf(),
                expected_bytes: DATA_OFFSET,
                actual_bytes: size,
            });
        }
        return Err(StoreError::Geometry {
            device: path.to_path_buf(),
            detail: format!("{size} bytes is too small to hold a Kiseki device"),
        });
    }
    let primary = read_block(path, &file, SUPERBLOCK_OFFSET)?;
    let mirror = read_block(path, &file, SUPERBLOCK_MIRROR_OFFSET)?;
    let superblock = match (Superblock::decode(&primary), Superblock::decode(&mirror)) {
        (Ok(superblock), _) => superblock,
        (Err(primary_error), Ok(superblock)) => {
            tracing::warn!(device = %path.display(), error = %primary_error, "primary superblock damaged; using the mirror");
            superblock
        }
        (Err(primary_error), Err(mirror_error)) => {
            if !has_superblock_magic(&primary) && !has_superblock_magic(&mirror) {
                if primary.iter().chain(mirror.iter()).all(|&byte| byte == 0) {
                    return Err(StoreError::Unformatted {
                        device: path.to_path_buf(),
                    });
                }
                return Err(StoreError::ForeignData {
                    device: path.to_path_buf(),
                    detail: describe_foreign(&primary),
                });
            }
            return Err(StoreError::CorruptSuperblock {
                device: path.to_path_buf(),
                detail: format!("primary: {primary_error}; mirror: {mirror_error}"),
            });
        }
    };
    if superblock.format_version != FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion {
            device: path.to_path_buf(),
            found: superblock.format_version,
            supported: FORMAT_VERSION,
        });
    }
    if size < superblock.device_bytes {
        return Err(StoreError::Truncated {
            device: path.to_path_buf(),
            expected_bytes: superblock.device_bytes,
            actual_bytes: size,
        });
    }
    Ok(superblock)
}

/// A short description of what a foreign device seems to hold.
fn describe_foreign(block: &[u8]) -> String {
    let known: [(&[u8], usize, &str); 4] = [
        (b"XFSB", 0, "an XFS filesystem"),
        (b"LUKS", 0, "a LUKS volume"),
        (b"\x7fELF", 0, "an ELF binary"),
        (b"PK\x03\x04", 0, "a zip archive"),
    ];
    for (magic, offset, what) in known {
        if block.len() >= offset + magic.len() && &block[offset..offset + magic.len()] == magic {
            return what.to_string();
        }
    }
    let printable = block
        .iter()
        .take(16)
        .all(|byte| byte.is_ascii_graphic() || byte.is_ascii_whitespace());
    if printable {
        let text: String = block.iter().take(24).map(|&byte| byte as char).collect();
        return format!("text starting {text:?}");
    }
    "non-zero bytes that are not a Kiseki superblock".to_string()
}

/// Computes the geometry for a device of `device_bytes` split into `cores` groups.
pub fn plan_geometry(path: &Path, device_bytes: u64, cores: u32, segment_bytes: u64) -> Result<Superblock, StoreError> {
    let block = BLOCK_BYTES as u64;
    let geometry_error = |detail: String| StoreError::Geometry {
        device: path.to_path_buf(),
        detail,
    };
    if cores == 0 || cores > 4096 {
        return Err(geometry_error(format!("{cores} cores is out of range 1..=4096")));
    }
    if segment_bytes < 16 * block || !segment_bytes.is_multiple_of(block) {
        return Err(geometry_error(format!(
            "segment size {segment_bytes} must be a multiple of 4 KiB and at least 64 KiB"
        )));
    }
    let ag_bytes = (device_bytes.saturating_sub(DATA_OFFSET) / u64::from(cores)) / block * block;
    let mut segments = ag_bytes / segment_bytes;
    while segments > 0 && 2 * checkpoint_slot_bytes_for(segments, segment_bytes) + segments * segment_bytes > ag_bytes {
        segments -= 1;
    }
    if segments < 4 {
        return Err(geometry_error(format!(
            "{device_bytes} bytes for {cores} cores leaves {segments} segments of {segment_bytes} bytes per core; at least 4 are needed"
        )));
    }
    let superblock = Superblock {
        format_version: FORMAT_VERSION,
        device_uuid: rand::random(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0),
        device_bytes,
        ag_count: cores,
        ag_bytes,
        segment_bytes,
        segments_per_ag: segments as u32,
        checkpoint_slot_bytes: checkpoint_slot_bytes_for(segments, segment_bytes),
    };
    // The decoder's geometry checks are the same that a reader will apply.
    let mut encoded = vec![0u8; BLOCK_BYTES];
    superblock.encode(&mut encoded);
    Superblock::decode(&encoded)
        .map_err(|error: FormatError| geometry_error(format!("planned geometry invalid: {error}")))?;
    Ok(superblock)
}

/// Formats `path`: writes the superblock and its mirror and clears every checkpoint slot
/// header. Refuses a device holding Kiseki or foreign data unless `force`.
pub fn format_device(path: &Path, options: &FormatOptions) -> Result<Superblock, StoreError> {
    if let Some(bytes) = options.create_bytes {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|error| StoreError::io(path, "creating the device file", error))?;
        if file.metadata().map(|metadata| metadata.len()).unwrap_or(0) < bytes {
            // Allocate the blocks now where the filesystem can; a sparse file otherwise.
            if rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes).is_err() {
                file.set_len(bytes)
                    .map_err(|error| StoreError::io(path, "sizing the device file", error))?;
            }
        }
    }
    if !options.force {
        match read_superblock(path) {
            Err(StoreError::Unformatted { .. }) => {}
            Ok(existing) => {
                return Err(StoreError::AlreadyFormatted {
                    device: path.to_path_buf(),
                    uuid: existing.uuid_hex(),
                })
            }
            Err(StoreError::CorruptSuperblock { .. }) | Err(StoreError::Truncated { .. }) => {
                return Err(StoreError::ForeignData {
                    device: path.to_path_buf(),
                    detail: "a damaged Kiseki format".into(),
                })
            }
            Err(other) => return Err(other),
        }
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|error| StoreError::io(path, "opening for format", error))?;
    let device_bytes = device_size(path, &file)?;
    let superblock = plan_geometry(path, device_bytes, options.cores, options.segment_bytes)?;
    let zero = vec![0u8; BLOCK_BYTES];
    for ag in 0..superblock.ag_count {
        for slot in 0..2 {
            file.write_all_at(&zero, superblock.checkpoint_slot_offset(ag, slot))
                .map_err(|error| StoreError::io(path, "clearing checkpoint slots", error))?;
        }
    }
    let mut block = vec![0u8; BLOCK_BYTES];
    superblock.encode(&mut block);
    // Mirror first: a crash between the two writes leaves one valid copy either way.
    for offset in [SUPERBLOCK_MIRROR_OFFSET, SUPERBLOCK_OFFSET] {
        file.write_all_at(&block, offset)
            .map_err(|error| StoreError::io(path, "writing the superblock", error))?;
        file.flush().map_err(|error| StoreError::io(path, "flushing", error))?;
        file.sync_data()
            .map_err(|error| StoreError::io(path, "syncing the superblock", error))?;
    }
    Ok(superblock)
}

/// Identity of an open device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Path it was opened at.
    pub path: PathBuf,
    /// Its superblock.
    pub superblock: Superblock,
}
