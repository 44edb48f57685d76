//! Watch events: what every applied delta changed, kept in a bounded ring so clients can
//! follow the namespace from a sequence number (cache invalidation, data pipelines).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::NamespaceError;
use crate::types::{InodeId, UploadId};

/// One change made by an applied delta. All events of one delta carry its log index as
/// their sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The log index of the delta that made the change.
    pub sequence: u64,
    /// The inode changed (for multipart events: the directory of the upload's object).
    pub inode: InodeId,
    /// What happened.
    pub kind: WatchKind,
    /// The directory of the entry concerned, for events about an entry.
    pub parent: Option<InodeId>,
    /// The entry name, for events about an entry.
    pub name: Option<Vec<u8>>,
}

impl WatchEvent {
    /// The inodes whose attributes the event's delta may have changed: the inode, the
    /// directory of the entry and, for a rename, the directory it left. A cache drops
    /// what it holds of them (I-N11).
    pub fn changed_inodes(&self) -> impl Iterator<Item = InodeId> + '_ {
        let from_parent = match &self.kind {
            WatchKind::Renamed { from_parent, .. } => Some(*from_parent),
            _ => None,
        };
        std::iter::once(self.inode).chain(self.parent).chain(from_parent)
    }

    /// The directory entries `(directory, name)` the event's delta may have pointed at
    /// another inode or removed: the entry and, for a rename, the one it left (I-N11).
    pub fn changed_entries(&self) -> impl Iterator<Item = (InodeId, &[u8])> + '_ {
        let here = self.parent.zip(self.name.as_deref());
        let left = match &self.kind {
            WatchKind::Renamed { from_parent, from_name } => Some((*from_parent, from_name.as_slice())),
            _ => None,
        };
        here.into_iter().chain(left)
    }
}

/// What a [`WatchEvent`] reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchKind {
    /// A new inode was created under `parent`/`name`.
    Created,
    /// An existing inode got the name `parent`/`name` (hard link).
    Linked,
    /// The name `parent`/`name` of the inode was removed (the inode may live on under
    /// other names).
    Removed,
    /// The inode moved to `parent`/`name` from the given place.
    Renamed {
        /// Where it was.
        from_parent: InodeId,
        /// Its former name.
        from_name: Vec<u8>,
    },
    /// File data or size changed.
    DataModified,
    /// Attributes changed (mode, owner, times).
    AttributesModified,
    /// Extended attributes changed.
    XattrModified,
    /// A multipart upload of `parent`/`name` began.
    MultipartBegun {
        /// The upload.
        upload_id: UploadId,
    },
    /// A part of an upload was stored.
    MultipartPartStored {
        /// The upload.
        upload_id: UploadId,
        /// The part.
        part_number: u32,
    },
    /// An upload was aborted.
    MultipartAborted {
        /// The upload.
        upload_id: UploadId,
    },
}

/// The bounded ring of recent events. Events of one delta are kept or trimmed together.
#[derive(Clone, Debug)]
pub(crate) struct WatchLog {
    events: VecDeque<WatchEvent>,
    /// Every event with a sequence at or above the floor is still held.
    floor: u64,
    events_max: usize,
}

impl WatchLog {
    pub(crate) fn new(events_max: usize, floor: u64) -> Self {
        WatchLog {
            events: VecDeque::new(),
            floor,
            events_max,
        }
    }

    /// Appends the events of one applied delta, trimming the oldest past the bound.
    pub(crate) fn push(&mut self, events: &[WatchEvent]) {
        self.events.extend(events.iter().cloned());
        while self.events.len() > self.events_max {
            if let Some(oldest) = self.events.pop_front() {
                self.floor = oldest.sequence.saturating_add(1);
            }
        }
        while self.events.front().is_some_and(|event| event.sequence < self.floor) {
            self.events.pop_front();
        }
    }

    /// Events with a sequence at or above `sequence`, oldest first.
    pub(crate) fn since(&self, sequence: u64) -> Result<Vec<WatchEvent>, NamespaceError> {
        if sequence < self.floor {
            return Err(NamespaceError::WatchGap {
                requested: sequence,
                oldest_available: self.floor,
            });
        }
        let start = self.events.partition_point(|event| event.sequence < sequence);
        Ok(self.events.range(start..).cloned().collect())
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}
