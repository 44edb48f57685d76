//! The namespace as a replicated state machine.

use kiseki_consensus::StateMachine;
use kiseki_namespace::{
    Attributes, Delta, DirEntry, InodeId, NamespaceConfig, NamespaceError, NamespaceSnapshot, NamespaceState,
    NamespaceStats, WatchEvent,
};
use serde::{Deserialize, Serialize};

use crate::HostError;

/// What a proposer learns of its delta: kept small, since the consensus layer stores the
/// last outcome of every client session for deduplication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DeltaOutcome {
    /// Applied.
    Done {
        /// The inode the delta created or changed.
        inode: Option<InodeId>,
        /// Its attributes after the delta.
        attributes: Option<Attributes>,
    },
    /// Refused; nothing changed.
    Refused(NamespaceError),
}

/// A read a client may ask of a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReadQuery {
    /// `lookup(parent, name)`.
    Lookup {
        /// The directory.
        parent: InodeId,
        /// The entry name.
        name: Vec<u8>,
    },
    /// `getattr(inode)`.
    GetAttr {
        /// The inode.
        inode: InodeId,
    },
    /// `readdir(dir, after_cookie, limit)`.
    ReadDir {
        /// The directory.
        dir: InodeId,
        /// Entries after this cookie.
        after_cookie: u64,
        /// At most this many entries.
        limit: u32,
    },
    /// Counts of the shard's namespace.
    StatFs,
    /// Watch events with a sequence at or above `sequence` (a subscription polls this,
    /// passing the last sequence it saw plus one).
    WatchSince {
        /// The first sequence wanted.
        sequence: u64,
        /// At most this many events.
        limit: u32,
    },
}

/// The answer to a [`ReadQuery`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReadAnswer {
    /// A found entry.
    Entry {
        /// Its inode.
        inode: InodeId,
        /// Its attributes.
        attributes: Attributes,
    },
    /// Attributes.
    Attributes(Attributes),
    /// Directory entries.
    Entries(Vec<DirEntry>),
    /// Counts.
    Stats(NamespaceStats),
    /// Watch events, in sequence order.
    Events(Vec<WatchEvent>),
    /// The read failed.
    Failed(NamespaceError),
}

/// Watch events one read may return at most.
pub const WATCH_EVENTS_PER_READ_MAX: u32 = 4096;

/// Entries one readdir may return at most.
pub const READDIR_ENTRIES_MAX: u32 = 4096;

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
            ReadQuery::StatFs => Ok(ReadAnswer::Stats(self.state.statfs())),
            ReadQuery::WatchSince { sequence, limit } => self.state.events_since(*sequence).map(|mut events| {
                events.truncate((*limit).min(WATCH_EVENTS_PER_READ_MAX) as usize);
                ReadAnswer::Events(events)
            }),
        };
        result.unwrap_or_else(ReadAnswer::Failed)
    }
}

impl StateMachine for NamespaceMachine {
    type Command = Delta;
    type Output = DeltaOutcome;
    type Error = NamespaceError;

    fn apply(&mut self, index: u64, command: &Delta) -> DeltaOutcome {
        match self.state.apply(index, command) {
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
