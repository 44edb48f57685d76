//! The namespace's configuration: its id and every bound the state keeps.

use serde::{Deserialize, Serialize};

use crate::error::NamespaceError;
use crate::types::{InodeId, NamespaceId, MODE_PERMISSION_BITS_MAX};

/// Configuration of one namespace state machine. Every replica of a shard must use the same
/// configuration: it is part of snapshots and of the state digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceConfig {
    /// The namespace this state belongs to; links and renames from another one are EXDEV.
    pub namespace_id: NamespaceId,
    /// First inode number the counter hands out (at least 2: 1 is the root). Shards of one
    /// namespace get disjoint ranges.
    pub inode_number_first: u64,
    /// Last inode number the counter may hand out.
    pub inode_number_last: u64,
    /// Live inodes at most (the root included).
    pub inodes_max: u64,
    /// Directory entries at most, over all directories.
    pub dentries_max: u64,
    /// Names (hard links) of one file or symlink at most.
    pub hard_links_max: u32,
    /// Extents of one file at most.
    pub extents_per_file_max: u64,
    /// Extents one delta may carry at most (write, object put, multipart part).
    pub delta_extents_max: usize,
    /// Largest file size.
    pub file_bytes_max: u64,
    /// Largest inline data of a file (bytes stored in the inode instead of a chunk).
    pub inline_bytes_max: usize,
    /// Longest wrapped key of an extent.
    pub wrapped_key_bytes_max: usize,
    /// Extended attributes of one inode at most.
    pub xattrs_per_inode_max: u32,
    /// Longest extended attribute value.
    pub xattr_value_bytes_max: usize,
    /// Longest symlink target.
    pub symlink_target_bytes_max: usize,
    /// Multipart uploads in progress at most.
    pub multipart_uploads_max: u64,
    /// Highest multipart part number (parts are numbered from 1).
    pub multipart_part_number_max: u32,
    /// Largest object metadata ([`ObjectMeta::size_bytes`](crate::ObjectMeta::size_bytes)).
    pub object_meta_bytes_max: usize,
    /// Watch events kept for `events_since` (older ones are trimmed).
    pub watch_events_max: usize,
    /// Permission bits of the root directory of a new state.
    pub root_mode: u32,
    /// Owner of the root directory of a new state.
    pub root_uid: u32,
    /// Group of the root directory of a new state.
    pub root_gid: u32,
}

/// Fewest watch events a configuration may keep: one delta emits at most this many, and a
/// delta's events are kept or trimmed together.
pub const WATCH_EVENTS_MIN: usize = 4;

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            namespace_id: NamespaceId(0),
            inode_number_first: InodeId::ROOT.0 + 1,
            inode_number_last: u64::MAX,
            inodes_max: 1 << 32,
            dentries_max: 1 << 34,
            hard_links_max: 65_000,
            extents_per_file_max: 1 << 22,
            delta_extents_max: 4096,
            file_bytes_max: 1 << 50,
            inline_bytes_max: 4096,
            wrapped_key_bytes_max: 128,
            xattrs_per_inode_max: 256,
            xattr_value_bytes_max: 64 * 1024,
            symlink_target_bytes_max: 4095,
            multipart_uploads_max: 100_000,
            multipart_part_number_max: 10_000,
            object_meta_bytes_max: 8 * 1024,
            watch_events_max: 4096,
            root_mode: 0o755,
            root_uid: 0,
            root_gid: 0,
        }
    }
}

impl NamespaceConfig {
    /// A tiny configuration whose bounds tests actually reach.
    pub fn tiny() -> Self {
        NamespaceConfig {
            inode_number_last: 1_000,
            inodes_max: 48,
            dentries_max: 64,
            hard_links_max: 4,
            extents_per_file_max: 16,
            delta_extents_max: 8,
            file_bytes_max: 1 << 20,
            inline_bytes_max: 64,
            wrapped_key_bytes_max: 16,
            xattrs_per_inode_max: 3,
            xattr_value_bytes_max: 32,
            symlink_target_bytes_max: 64,
            multipart_uploads_max: 3,
            multipart_part_number_max: 5,
            object_meta_bytes_max: 128,
            watch_events_max: 16,
            ..NamespaceConfig::default()
        }
    }

    /// Checks that the configuration is usable.
    pub fn validate(&self) -> Result<(), NamespaceError> {
        if self.inode_number_first <= InodeId::ROOT.0 || self.inode_number_first > self.inode_number_last {
            return Err(NamespaceError::invalid(
                "inode numbers must start above the root and not be empty",
            ));
        }
        if self.inodes_max < 1 || self.watch_events_max < WATCH_EVENTS_MIN {
            return Err(NamespaceError::invalid(
                "inodes_max must hold the root and watch_events_max at least 4",
            ));
        }
        if self.root_mode > MODE_PERMISSION_BITS_MAX {
            return Err(NamespaceError::invalid(
                "root_mode holds bits beyond the permission bits",
            ));
        }
        if self.inline_bytes_max as u64 > self.file_bytes_max {
            return Err(NamespaceError::invalid(
                "inline_bytes_max is larger than file_bytes_max",
            ));
        }
        Ok(())
    }
}
