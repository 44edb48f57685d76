//! Kiseki's on-device fragment store.
//!
//! **What it owns.** The device format ([`format`]: mirrored checksummed superblock,
//! allocation groups, segment log of batches, checkpoints), device formatting and
//! identification ([`device`]), the per-allocation-group index and allocator ([`index`])
//! and the fragment store itself ([`FragmentStore`]: put/get/delete/contains/list, group
//! commit, replay after a crash, compaction, scrub, space accounting and statistics).
//!
//! **Invariants.**
//! - I-C1: fragments are immutable: a put under a stored locator with other bytes is
//!   refused; the same bytes again are a no-op.
//! - I-E1: a put or delete is acknowledged only when its batch and every earlier batch
//!   of the allocation group are durable (write, then fdatasync, completed).
//! - I-E2: a read never returns bytes whose CRC32C does not match; a torn or damaged
//!   extent is absent (never acknowledged) or reported `Corrupt`.
//! - I-E3: a segment is reused only after a durable checkpoint records it free;
//!   compaction frees only segments without live extents (I-C2 within the store).
//! - I-E4: replay applies only batches naming this device format, allocation group,
//!   segment and segment sequence, in consecutive order.
//!
//! **Where it runs.** One [`FragmentStore`] per (device, core): allocation group `i` of
//! every device belongs to core `i` and is touched only by that core's executor
//! (I-T1). Formatting and superblock checks run at start-up on any thread.
#![forbid(unsafe_code)]

pub mod device;
mod error;
pub mod format;
pub mod index;
mod store;
/// Byte sizes with units (moved to `kiseki-placement`, which clients link too).
pub use kiseki_placement::units;

pub use device::{format_device, read_superblock, FormatOptions};
pub use error::StoreError;
pub use kiseki_placement::Locator;
pub use store::{Fragment, FragmentStore, ScrubReport, SpaceInfo, StoreConfig, StoreStats};
