//! The namespace as a replicated state machine.

use std::ops::Bound;

use kiseki_api::{
    DeltaOutcome, ListedEntry, NameBound, ReadAnswer, ReadQuery, EXTENTS_READ_BYTES_MAX, READDIR_ENTRIES_MAX,
    WATCH_EVENTS_PER_READ_MAX,
};
use kiseki_consensus::StateMachine;
use kiseki_namespace::{
    Delta, InodeId, NamespaceConfig, NamespaceError, NamespaceSnapshot, NamespaceState, WatchEvent,
};

use crate::HostError;

/// One shard's namespace state.
#[derive(Debug)]
pub struct NamespaceMachine {
    state: NamespaceState,
}

impl NamespaceMachine {
    /// An empty namespace.
    pub fn new(config: NamespaceConfig) -> Result<NamespaceMachine, HostError> {
        Ok(NamespaceMachine {
            state: NamespaceState::new(config)?,
        })
    }

    /// The state.
    pub fn state(&self) -> &NamespaceState {
        &self.state
    }

    /// The watch events of the entry applied at `index` (it and later entries applied
    /// since), or `None` once the ring no longer holds all of them.
    pub fn events_of(&self, index: u64) -> Option<Vec<WatchEvent>> {
        let mut events = self.state.events_since(index).ok()?;
        events.retain(|event| event.sequence == index);
        Some(events)
    }

    /// Answers `query` from the current state.
    pub fn read(&self, query: &ReadQuery) -> ReadAnswer {
        let result = match query {
            ReadQuery::Lookup { parent, name } => self
                .state
                .lookup(*parent, name)
                .map(|(inode, attributes)| ReadAnswer::Entry { inode, attributes }),
            ReadQuery::GetAttr { inode } => self.state.getattr(*inode).map(ReadAnswer::Attributes),
            ReadQuery::ReadDir {
                dir,
                after_cookie,
                limit,
            } => self
                .state
                .readdir(*dir, *after_cookie, (*limit).min(READDIR_ENTRIES_MAX) as usize)
                .map(ReadAnswer::Entries),
            ReadQuery::Extents {
                inode,
                offset_bytes,
                length_bytes,
            } => self
                .state
                .read_extents(*inode, *offset_bytes, (*length_bytes).min(EXTENTS_READ_BYTES_MAX))
                .map(ReadAnswer::Pieces),
            ReadQuery::StatFs => Ok(ReadAnswer::Stats(self.state.statfs())),
            ReadQuery::WatchSince { sequence, limit } => self.state.events_since(*sequence).map(|mut events| {
                events.truncate((*limit).min(WATCH_EVENTS_PER_READ_MAX) as usize);
                ReadAnswer::Events(events)
            }),
            ReadQuery::ReadDirPlus {
                dir,
                after_cookie,
                limit,
            } => self
                .state
                .view()
                .readdir_plus(*dir, *after_cookie, (*limit).min(READDIR_ENTRIES_MAX) as usize)
                .map(ReadAnswer::EntriesPlus),
            ReadQuery::ReadLink { inode } => self.state.view().readlink(*inode).map(ReadAnswer::Bytes),
            ReadQuery::GetXattr { inode, name } => self.state.view().getxattr(*inode, name).map(ReadAnswer::Bytes),
            ReadQuery::ListXattr { inode } => self.state.view().listxattr(*inode).map(ReadAnswer::Names),
            ReadQuery::ListNames {
                dir,
                prefix,
                start,
                limit,
            } => self.list_names(*dir, prefix, start, *limit),
            ReadQuery::ObjectMeta { inode } => self.state.view().object_meta(*inode).map(ReadAnswer::Object),
            ReadQuery::Uploads { after, limit } => Ok(ReadAnswer::Uploads(
                self.state
                    .view()
                    .list_multipart(*after, (*limit).min(READDIR_ENTRIES_MAX) as usize),
            )),
            ReadQuery::Parts {
                upload_id,
                after_part,
                limit,
            } => self
                .state
                .view()
                .list_parts(*upload_id, *after_part, (*limit).min(READDIR_ENTRIES_MAX) as usize)
                .map(ReadAnswer::Parts),
            ReadQuery::LookupIn { parent, name } => self.state.getattr(*parent).and_then(|directory| {
                let entry = match self.state.lookup(*parent, name) {
                    Ok(found) => Some(found),
                    Err(NamespaceError::NotFound) => None,
                    Err(error) => return Err(error),
                };
                Ok(ReadAnswer::LookedUp {
                    parent: directory,
                    entry,
                })
            }),
            ReadQuery::Read {
                inode,
                offset_bytes,
                length_bytes,
            } => self.state.getattr(*inode).and_then(|attributes| {
                let pieces =
                    self.state
                        .read_extents(*inode, *offset_bytes, (*length_bytes).min(EXTENTS_READ_BYTES_MAX))?;
                Ok(ReadAnswer::Read { attributes, pieces })
            }),
            ReadQuery::Parent { dir } => self.state.parent(*dir).and_then(|parent| {
                let attributes = self.state.getattr(parent)?;
                Ok(ReadAnswer::Entry {
                    inode: parent,
                    attributes,
                })
            }),
        };
        result.unwrap_or_else(ReadAnswer::Failed)
    }

    fn list_names(
        &self,
        dir: InodeId,
        prefix: &[u8],
        start: &NameBound,
        limit: u32,
    ) -> Result<ReadAnswer, NamespaceError> {
        let view = self.state.view();
        let start = match start {
            NameBound::First => Bound::Unbounded,
            NameBound::From(name) => Bound::Included(name.as_slice()),
            NameBound::After(name) => Bound::Excluded(name.as_slice()),
        };
        let entries = view.list_prefix_from(dir, prefix, start, limit.min(READDIR_ENTRIES_MAX) as usize)?;
        let mut answer = Vec::with_capacity(entries.len());
        for entry in entries {
            let attributes = view.getattr(entry.inode)?;
            let etag = view.object_meta(entry.inode)?.map(|meta| meta.etag);
            answer.push(ListedEntry {
                entry,
                attributes,
                etag,
            });
        }
        Ok(ReadAnswer::Listing(answer))
    }
}

impl StateMachine for NamespaceMachine {
    type Command = Delta;
    type Output = DeltaOutcome;
    type Error = NamespaceError;

    fn apply(&mut self, index: u64, command: &Delta) -> DeltaOutcome {
        match self.state.apply(index, command) {
            Ok(applied) if matches!(command, Delta::MultipartBegin { .. }) => match applied.upload_id {
                Some(upload_id) => DeltaOutcome::UploadBegun { upload_id },
                None => DeltaOutcome::Refused(NamespaceError::InvalidArgument {
                    reason: "a multipart begin made no upload".into(),
                }),
            },
            Ok(applied) => DeltaOutcome::Done {
                inode: applied.inode,
                attributes: applied.attributes,
            },
            Err(error) => DeltaOutcome::Refused(error),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.snapshot().encode()
    }

    fn restore(bytes: &[u8]) -> Result<NamespaceMachine, NamespaceError> {
        let snapshot = NamespaceSnapshot::decode(bytes)?;
        Ok(NamespaceMachine {
            state: NamespaceState::restore(snapshot)?,
        })
    }
}
