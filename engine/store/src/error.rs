//! The one error type of the store. Every variant that concerns a device names it.

use std::path::PathBuf;

use crate::Locator;

/// Errors of the fragment store and the device layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No fragment with this locator.
    #[error("fragment {locator} not found")]
    NotFound {
        /// The locator asked for.
        locator: Locator,
    },
    /// A different fragment is already stored under this locator (fragments are immutable).
    #[error("fragment {locator} already exists with other content (fragments are immutable)")]
    AlreadyExists {
        /// The locator.
        locator: Locator,
    },
    /// Not enough free space on the device's allocation group.
    #[error("{device}: no space in allocation group {ag}: {needed_bytes} bytes needed, {free_bytes} free")]
    NoSpace {
        /// Device path.
        device: PathBuf,
        /// Allocation group.
        ag: u32,
        /// Bytes the request needed.
        needed_bytes: u64,
        /// Bytes free.
        free_bytes: u64,
    },
    /// A stored extent failed its checksum: the bytes are not returned.
    #[error("{device}: fragment {locator} is corrupt: {detail}")]
    Corrupt {
        /// Device path.
        device: PathBuf,
        /// The fragment.
        locator: Locator,
        /// What failed.
        detail: String,
    },
    /// The request is malformed (too large, bad range, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A bounded resource is full; retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// The store is shutting down or failed earlier and refuses writes.
    #[error("{device}: store stopped: {reason}")]
    Stopped {
        /// Device path.
        device: PathBuf,
        /// Why.
        reason: String,
    },
    /// An I/O error from the device.
    #[error("{device}: I/O error during {operation}: {source}")]
    Io {
        /// Device path.
        device: PathBuf,
        /// What we were doing.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The device carries no Kiseki superblock and is blank.
    #[error("{device}: not formatted (run `kiseki-server format --device {device}`)", device = .device.display())]
    Unformatted {
        /// Device path.
        device: PathBuf,
    },
    /// The device holds data that is not Kiseki's.
    #[error("{device}: holds foreign data ({detail}); refusing to use it without --force-format", device = .device.display())]
    ForeignData {
        /// Device path.
        device: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The device already holds a Kiseki format.
    #[error("{device}: already formatted as Kiseki device {uuid}; use --force-format to erase it", device = .device.display())]
    AlreadyFormatted {
        /// Device path.
        device: PathBuf,
        /// The existing device uuid.
        uuid: String,
    },
    /// Both superblock copies are damaged.
    #[error("{device}: corrupt superblock: {detail}", device = .device.display())]
    CorruptSuperblock {
        /// Device path.
        device: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A superblock of a format version this build does not read.
    #[error("{device}: unsupported format version {found} (this build reads {supported})", device = .device.display())]
    UnsupportedVersion {
        /// Device path.
        device: PathBuf,
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The device is smaller than its superblock says.
    #[error("{device}: truncated: superblock says {expected_bytes} bytes, device has {actual_bytes}", device = .device.display())]
    Truncated {
        /// Device path.
        device: PathBuf,
        /// Size recorded at format time.
        expected_bytes: u64,
        /// Size now.
        actual_bytes: u64,
    },
    /// A segment header or the log is damaged beyond a torn tail.
    #[error("{device}: corrupt segment {segment} of allocation group {ag}: {detail}", device = .device.display())]
    CorruptSegment {
        /// Device path.
        device: PathBuf,
        /// Allocation group.
        ag: u32,
        /// Segment index.
        segment: u32,
        /// What is wrong.
        detail: String,
    },
    /// The geometry does not fit the request (too small, wrong core count, ...).
    #[error("{device}: {detail}", device = .device.display())]
    Geometry {
        /// Device path.
        device: PathBuf,
        /// What does not fit.
        detail: String,
    },
}

impl StoreError {
    /// Whether a client may retry the same request later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy(_))
    }

    pub(crate) fn io(device: &std::path::Path, operation: &'static str, source: std::io::Error) -> StoreError {
        StoreError::Io {
            device: device.to_path_buf(),
            operation,
            source,
        }
    }
}
