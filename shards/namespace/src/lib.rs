//! The namespace state machine: inodes, dentries, extent maps and the deltas that change them (sans-IO).
//!
//! This crate owns the deterministic state every replica of a shard applies (design §6):
//! inodes and their [`Attributes`], directory entries keyed by (parent, name), per-file
//! extent maps (file offset → [`Extent`] in a chunk) with inline data for small files,
//! extended attributes, symlink targets, hard links, S3 object metadata and multipart
//! upload state. The consensus layer replicates [`Delta`]s (encoded with postcard,
//! [`Delta::encode`]) and calls [`NamespaceState::apply`] on every replica in log order;
//! gateways and clients read through [`NamespaceState`] or a [`PinnedView`]. There is no
//! runtime, no I/O and no clock: every time a delta sets is stamped by the leader and
//! carried in the delta, and new inode and upload ids come from counters in the state.
//!
//! Invariants (docs/invariants.md, I-N1..I-N10): every entry names a live inode in a live
//! directory (I-N1); a file's link count equals its names (I-N2); every directory but the
//! root has exactly one name and reaches the root (I-N3); chunk reference counts equal the
//! extents naming each chunk (I-N4); a file's extents are disjoint, within its size and
//! above its inline bytes (I-N5); readdir cookies are unique per directory and stable
//! (I-N6); inode and upload ids are never reused (I-N7); bounds and totals hold (I-N8);
//! a refused delta changes nothing but the last applied index (I-N9); equal delta
//! sequences give byte-identical encodings and equal digests (I-N10).
//! [`NamespaceState::check_invariants`] checks I-N1..I-N8 and every restore runs it.
//!
//! All maps are persistent (`imbl` ordered maps): a [`PinnedView`] or a
//! [`NamespaceSnapshot`] is O(1) to take and applies go on beside it, and iteration is in
//! key order, so encodings are canonical. An apply costs O(log n) in the size of the state
//! plus the size of the delta (a create into a directory of a million entries touches a
//! handful of tree nodes).
//!
//! Runs on the core that owns the shard replica (one state per replica; plain ownership,
//! no sharing); pinned views may be handed to readers elsewhere (they are `Send`).
#![forbid(unsafe_code)]

mod apply;
mod config;
mod delta;
mod error;
mod invariants;
mod snapshot;
mod state;
mod tables;
mod types;
mod view;
mod watch;

pub use apply::{Applied, ChunkReferenceChange};
pub use config::{NamespaceConfig, WATCH_EVENTS_MIN};
pub use delta::{
    mode_grants, AttrChanges, CallerIds, CompletedPart, Delta, ObjectCondition, ObjectContent, RenameFlags,
    SetAttrGuard, XattrSetMode, MODE_EXECUTE, MODE_READ, MODE_WRITE,
};
pub use error::{Limit, NamespaceError, QuotaResource};
pub use snapshot::{NamespaceSnapshot, SNAPSHOT_FORMAT_VERSION};
pub use state::NamespaceState;
pub use tables::{NamespacePolicy, READDIR_COOKIE_FIRST};
pub use types::{
    validate_name, Attributes, ChunkLocator, Extent, FileKind, InodeId, NamespaceId, NewAttributes, ObjectMeta,
    SealedInline, Timestamp, UploadId, INLINE_SEAL_SLACK_BYTES, MODE_PERMISSION_BITS_MAX, NAME_BYTES_MAX,
    XATTR_NAME_BYTES_MAX,
};
pub use view::{DirEntry, NamespaceStats, PartInfo, PinnedView, ReadPiece, UploadInfo};
pub use watch::{WatchEvent, WatchKind};
