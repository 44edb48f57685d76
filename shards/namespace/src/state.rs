//! The namespace state machine: apply, reads on the frontier, watch log, pins, snapshots.

use crate::apply::{Applied, Context};
use crate::config::NamespaceConfig;
use crate::delta::Delta;
use crate::error::{NamespaceError, QuotaResource};
use crate::invariants;
use crate::snapshot::{digest, NamespaceSnapshot};
use crate::tables::{DirectoryBody, InodeBody, InodeRecord, NamespacePolicy, Tables, READDIR_COOKIE_FIRST};
use crate::types::{Attributes, ChunkLocator, FileKind, InodeId, ObjectMeta, Timestamp, UploadId};
use crate::view::{DirEntry, NamespaceStats, PartInfo, PinnedView, ReadPiece, UploadInfo};
use crate::watch::{WatchEvent, WatchLog};

/// Refuses (`QuotaExceeded`) a change from `before` to `after` that raised a usage the
/// quota limits past its limit. Usage that shrinks or stays is always allowed, so a
/// namespace over a lowered quota can still delete.
fn check_quota(policy: &NamespacePolicy, before: &Tables, after: &Tables) -> Result<(), NamespaceError> {
    let checks = [
        (
            QuotaResource::Bytes,
            policy.quota_bytes_max,
            before.totals.quota_bytes(),
            after.totals.quota_bytes(),
        ),
        (
            QuotaResource::Files,
            policy.quota_files_max,
            before.quota_files(),
            after.quota_files(),
        ),
    ];
    for (resource, limit, usage_before, usage) in checks {
        if let Some(limit) = limit {
            if usage > limit && usage > usage_before {
                return Err(NamespaceError::QuotaExceeded { resource, usage, limit });
            }
        }
    }
    Ok(())
}

/// One replica's namespace state. Deterministic: replicas that apply the same deltas at
/// the same indexes hold equal states (equal [`NamespaceState::state_digest`]s).
#[derive(Clone, Debug)]
pub struct NamespaceState {
    config: NamespaceConfig,
    /// The frontier: the tables after the last applied delta.
    view: PinnedView,
    watch: WatchLog,
}

/// Forwards read methods to the frontier view.
macro_rules! frontier_reads {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $argument:ident: $type:ty)*) -> $result:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self $(, $argument: $type)*) -> $result {
                self.view.$name($($argument),*)
            }
        )*
    };
}

impl NamespaceState {
    /// A new namespace holding only its root directory (inode 1, all times zero).
    pub fn new(config: NamespaceConfig) -> Result<NamespaceState, NamespaceError> {
        config.validate()?;
        let root_body = DirectoryBody {
            parent: InodeId::ROOT,
            next_cookie: READDIR_COOKIE_FIRST,
            entry_count: 0,
        };
        let root = InodeRecord::new(
            FileKind::Directory,
            InodeBody::Directory(root_body),
            config.root_mode,
            config.root_uid,
            config.root_gid,
            Timestamp::default(),
        );
        let tables = Tables::new(root, config.inode_number_first);
        Ok(NamespaceState {
            watch: WatchLog::new(config.watch_events_max, 0),
            view: PinnedView { tables, index: 0 },
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NamespaceConfig {
        &self.config
    }

    /// Applies the delta committed at log `index`, whole or not at all.
    ///
    /// `index` must be above [`NamespaceState::last_applied_index`] (else
    /// `IndexOutOfOrder` and nothing changes); gaps are allowed (log entries that are not
    /// deltas). A refused delta changes nothing but the last applied index: it consumed
    /// its index on every replica alike.
    pub fn apply(&mut self, index: u64, delta: &Delta) -> Result<Applied, NamespaceError> {
        if index <= self.view.index {
            return Err(NamespaceError::IndexOutOfOrder {
                index,
                last_applied_index: self.view.index,
            });
        }
        self.view.index = index;
        let policy = self.view.tables.policy;
        if policy.read_only && !matches!(delta, Delta::Noop | Delta::SetReadOnly { .. }) {
            return Err(NamespaceError::ReadOnly);
        }
        // With a quota, the delta applies to the tables while a copy of them (O(1), shared
        // nodes) is kept, and the copy comes back if usage grew past a limit.
        let before =
            (policy.quota_bytes_max.is_some() || policy.quota_files_max.is_some()).then(|| self.view.tables.clone());
        let mut context = Context::new(&self.config, index);
        self.view.tables.apply(&mut context, delta)?;
        if let Some(before) = before {
            if let Err(error) = check_quota(&policy, &before, &self.view.tables) {
                self.view.tables = before;
                return Err(error);
            }
        }
        let applied = context.finish(&self.view.tables);
        self.watch.push(&applied.events);
        Ok(applied)
    }

    /// The index of the last delta applied (or refused).
    pub fn last_applied_index(&self) -> u64 {
        self.view.index
    }

    /// A read-only view pinned at the current frontier, in O(1). Applies continue; the view
    /// keeps seeing the state as it is now.
    pub fn pin(&self) -> PinnedView {
        self.view.clone()
    }

    /// The frontier, for reads (every read of [`PinnedView`] is also forwarded below).
    pub fn view(&self) -> &PinnedView {
        &self.view
    }

    /// The watch events from `sequence` on (all events of deltas at or above that index
    /// still held), oldest first; `WatchGap` if some were trimmed already.
    pub fn events_since(&self, sequence: u64) -> Result<Vec<WatchEvent>, NamespaceError> {
        self.watch.since(sequence)
    }

    /// Watch events held now (at most `watch_events_max`).
    pub fn watch_events_held(&self) -> usize {
        self.watch.len()
    }

    /// A snapshot of the current state, in O(1) (serialized only when encoded).
    pub fn snapshot(&self) -> NamespaceSnapshot {
        NamespaceSnapshot {
            config: self.config.clone(),
            view: self.view.clone(),
        }
    }

    /// A state from a snapshot, after checking every invariant (`Corrupt` if one fails).
    /// The watch log starts empty: events before the snapshot's index are a `WatchGap`.
    pub fn restore(snapshot: NamespaceSnapshot) -> Result<NamespaceState, NamespaceError> {
        invariants::check(&snapshot.view.tables, &snapshot.config)?;
        let floor = snapshot.view.index.saturating_add(1);
        Ok(NamespaceState {
            watch: WatchLog::new(snapshot.config.watch_events_max, floor),
            view: snapshot.view,
            config: snapshot.config,
        })
    }

    /// BLAKE3 over the canonical encoding of the configuration, id counters and maps
    /// (not the last applied index nor the watch log). O(n): for simulations and tests.
    pub fn state_digest(&self) -> [u8; 32] {
        digest(&self.config, &self.view.tables)
    }

    /// Checks the invariants I-N1..I-N8 over the whole state (O(n log n)); `Corrupt`
    /// names the first one broken.
    pub fn check_invariants(&self) -> Result<(), NamespaceError> {
        invariants::check(&self.view.tables, &self.config)
    }

    frontier_reads! {
        /// See [`PinnedView::lookup`].
        fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<(InodeId, Attributes), NamespaceError>;
        /// See [`PinnedView::getattr`].
        fn getattr(&self, inode: InodeId) -> Result<Attributes, NamespaceError>;
        /// See [`PinnedView::parent`].
        fn parent(&self, directory: InodeId) -> Result<InodeId, NamespaceError>;
        /// See [`PinnedView::readdir`].
        fn readdir(
            &self,
            directory: InodeId,
            after_cookie: u64,
            limit: usize
        ) -> Result<Vec<DirEntry>, NamespaceError>;
        /// See [`PinnedView::readdir_plus`].
        fn readdir_plus(
            &self,
            directory: InodeId,
            after_cookie: u64,
            limit: usize
        ) -> Result<Vec<(DirEntry, Attributes)>, NamespaceError>;
        /// See [`PinnedView::list_prefix`].
        fn list_prefix(
            &self,
            directory: InodeId,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize
        ) -> Result<Vec<DirEntry>, NamespaceError>;
        /// See [`PinnedView::readlink`].
        fn readlink(&self, inode: InodeId) -> Result<Vec<u8>, NamespaceError>;
        /// See [`PinnedView::read_extents`].
        fn read_extents(
            &self,
            inode: InodeId,
            offset_bytes: u64,
            length_bytes: u64
        ) -> Result<Vec<ReadPiece>, NamespaceError>;
        /// See [`PinnedView::getxattr`].
        fn getxattr(&self, inode: InodeId, name: &[u8]) -> Result<Vec<u8>, NamespaceError>;
        /// See [`PinnedView::listxattr`].
        fn listxattr(&self, inode: InodeId) -> Result<Vec<Vec<u8>>, NamespaceError>;
        /// See [`PinnedView::object_meta`].
        fn object_meta(&self, inode: InodeId) -> Result<Option<ObjectMeta>, NamespaceError>;
        /// See [`PinnedView::list_multipart`].
        fn list_multipart(&self, after: Option<UploadId>, limit: usize) -> Vec<UploadInfo>;
        /// See [`PinnedView::list_parts`].
        fn list_parts(
            &self,
            upload_id: UploadId,
            after_part: u32,
            limit: usize
        ) -> Result<Vec<PartInfo>, NamespaceError>;
        /// See [`PinnedView::statfs`].
        fn statfs(&self) -> NamespaceStats;
        /// See [`PinnedView::chunk_references`].
        fn chunk_references(&self) -> impl Iterator<Item = (ChunkLocator, u64)> + '_;
        /// See [`PinnedView::chunk_reference_count`].
        fn chunk_reference_count(&self, locator: &ChunkLocator) -> u64;
    }
}
