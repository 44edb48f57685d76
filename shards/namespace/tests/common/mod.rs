//! Helpers shared by the namespace test suites.
#![allow(dead_code)]

use kiseki_namespace::{
    Applied, Delta, Extent, InodeId, NamespaceConfig, NamespaceError, NamespaceId, NamespaceState, NewAttributes,
    Timestamp,
};

/// A state and the next log index to apply at.
pub struct Harness {
    pub state: NamespaceState,
    pub index: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness::with(NamespaceConfig::default())
    }

    pub fn with(config: NamespaceConfig) -> Self {
        Harness {
            state: NamespaceState::new(config).expect("valid configuration"),
            index: 0,
        }
    }

    /// Applies at the next index.
    pub fn apply(&mut self, delta: Delta) -> Result<Applied, NamespaceError> {
        self.index += 1;
        self.state.apply(self.index, &delta)
    }

    /// Applies and expects success; checks the invariants.
    #[track_caller]
    pub fn ok(&mut self, delta: Delta) -> Applied {
        let applied = self
            .apply(delta.clone())
            .unwrap_or_else(|error| panic!("{delta:?} refused: {error:?}"));
        self.state.check_invariants().expect("invariants hold");
        applied
    }

    /// Applies and expects `expected`; checks that nothing but the index changed.
    #[track_caller]
    pub fn refuse(&mut self, delta: Delta, expected: NamespaceError) {
        let digest = self.state.state_digest();
        let stats = self.state.statfs();
        let events = self.state.watch_events_held();
        let result = self.apply(delta.clone());
        assert_eq!(result, Err(expected), "delta {delta:?}");
        assert_eq!(self.state.state_digest(), digest, "a refused delta changed the state");
        assert_eq!(self.state.statfs(), stats);
        assert_eq!(self.state.watch_events_held(), events);
        assert_eq!(
            self.state.last_applied_index(),
            self.index,
            "a refused delta consumes its index"
        );
        self.state.check_invariants().expect("invariants hold");
    }

    /// Applies and expects a refusal matching `check`.
    #[track_caller]
    pub fn refuse_with(&mut self, delta: Delta, check: impl Fn(&NamespaceError) -> bool) {
        let digest = self.state.state_digest();
        let result = self.apply(delta.clone());
        match result {
            Err(error) => assert!(check(&error), "unexpected error {error:?} for {delta:?}"),
            Ok(applied) => panic!("{delta:?} applied: {applied:?}"),
        }
        assert_eq!(self.state.state_digest(), digest);
    }

    pub fn create(&mut self, parent: InodeId, name: &str) -> InodeId {
        let applied = self.ok(Delta::Create {
            parent,
            name: name.into(),
            attributes: attributes(self.index as i64),
            exclusive: true,
        });
        applied.inode.expect("created inode")
    }

    pub fn mkdir(&mut self, parent: InodeId, name: &str) -> InodeId {
        let applied = self.ok(Delta::Mkdir {
            parent,
            name: name.into(),
            attributes: attributes(self.index as i64),
        });
        applied.inode.expect("created directory")
    }

    pub fn write(&mut self, inode: InodeId, offset_bytes: u64, extents: Vec<Extent>) -> Applied {
        let end = offset_bytes + extents.iter().map(|extent| extent.length_bytes).sum::<u64>();
        self.ok(Delta::WriteExtents {
            inode,
            offset_bytes,
            extents,
            size_bytes: end,
            mtime: time(self.index as i64),
            expected_generation: None,
        })
    }
}

pub fn time(seconds: i64) -> Timestamp {
    Timestamp::new(1_700_000_000 + seconds, 0)
}

pub fn attributes(seconds: i64) -> NewAttributes {
    NewAttributes {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        time: time(seconds),
    }
}

pub fn locator(tag: u8) -> [u8; 32] {
    [tag; 32]
}

pub fn extent(tag: u8, chunk_offset_bytes: u64, length_bytes: u64) -> Extent {
    Extent {
        chunk_locator: locator(tag),
        wrapped_key: vec![tag; 8],
        chunk_offset_bytes,
        length_bytes,
    }
}

pub const NAMESPACE: NamespaceId = NamespaceId(0);
pub const ROOT: InodeId = InodeId::ROOT;
