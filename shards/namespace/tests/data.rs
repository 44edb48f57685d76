//! File data (extents, inline bytes, truncate), setattr and extended attributes.

mod common;

use common::{extent, locator, time, Harness, ROOT};
use kiseki_namespace::{
    AttrChanges, Delta, Extent, InodeId, Limit, NamespaceConfig, NamespaceError, ReadPiece, SealedInline, SetAttrGuard,
    Timestamp, WatchKind, XattrSetMode, INLINE_SEAL_SLACK_BYTES,
};

fn write(inode: InodeId, offset_bytes: u64, extents: Vec<Extent>, size_bytes: u64) -> Delta {
    Delta::WriteExtents {
        inode,
        offset_bytes,
        extents,
        size_bytes,
        mtime: time(10),
        expected_generation: None,
    }
}

fn write_inline(inode: InodeId, data: SealedInline) -> Delta {
    Delta::WriteInline {
        inode,
        data,
        mtime: time(11),
        expected_generation: None,
    }
}

fn truncate(inode: InodeId, size_bytes: u64) -> Delta {
    Delta::Truncate {
        inode,
        size_bytes,
        mtime: time(12),
        expected_generation: None,
    }
}

fn piece(offset_bytes: u64, extent: Extent) -> ReadPiece {
    ReadPiece::Extent { offset_bytes, extent }
}

fn hole(offset_bytes: u64, length_bytes: u64) -> ReadPiece {
    ReadPiece::Hole {
        offset_bytes,
        length_bytes,
    }
}

#[test]
fn writing_over_extents_splits_them_at_the_boundaries() {
    let mut harness = Harness::new();
    let file = harness.create(ROOT, "file");
    let applied = harness.write(file, 0, vec![extent(1, 0, 100), extent(2, 0, 100)]);
    assert_eq!(applied.events[0].kind, WatchKind::DataModified);
    assert_eq!(applied.attributes.as_ref().unwrap().size_bytes, 200);
    assert_eq!(applied.chunk_references.len(), 2);
    // Overwrite [50, 150): cuts the end of chunk 1 and the start of chunk 2.
    let applied = harness.ok(write(file, 50, vec![extent(3, 0, 100)], 150));
    assert_eq!(
        applied.attributes.as_ref().unwrap().size_bytes,
        200,
        "a write never shrinks the file"
    );
    let pieces = harness.state.read_extents(file, 0, 1000).unwrap();
    assert_eq!(
        pieces,
        vec![
            piece(0, extent(1, 0, 50)),
            piece(50, extent(3, 0, 100)),
            piece(150, extent(2, 50, 50))
        ]
    );
    // Overwrite in the middle of one extent: it becomes two, referencing one chunk twice.
    let applied = harness.ok(write(file, 60, vec![extent(4, 0, 10)], 70));
    assert_eq!(harness.state.chunk_reference_count(&locator(3)), 2);
    let change = applied
        .chunk_references
        .iter()
        .find(|change| change.locator == locator(3))
        .unwrap();
    assert_eq!((change.before, change.after), (1, 2));
    assert_eq!(
        harness.state.read_extents(file, 55, 30).unwrap(),
        vec![
            piece(55, extent(3, 5, 5)),
            piece(60, extent(4, 0, 10)),
            piece(70, extent(3, 20, 15))
        ]
    );
    // Cover everything: all old references go.
    let applied = harness.ok(write(file, 0, vec![extent(5, 0, 300)], 300));
    let dropped: Vec<_> = applied
        .chunk_references
        .iter()
        .filter(|change| change.after == 0)
        .collect();
    assert_eq!(dropped.len(), 4);
    assert_eq!(
        harness.state.chunk_references().collect::<Vec<_>>(),
        vec![(locator(5), 1)]
    );
    assert_eq!(harness.state.statfs().extent_bytes, 300);
}

#[test]
fn sparse_writes_and_truncate_leave_holes() {
    let mut harness = Harness::new();
    let file = harness.create(ROOT, "file");
    harness.ok(write(file, 1000, vec![extent(1, 0, 100)], 4000));
    assert_eq!(harness.state.getattr(file).unwrap().size_bytes, 4000);
    assert_eq!(
        harness.state.read_extents(file, 0, u64::MAX).unwrap(),
        vec![hole(0, 1000), piece(1000, extent(1, 0, 100)), hole(1100, 2900)]
    );
    // Truncate into the extent, then extend again: the cut part reads as a hole.
    let applied = harness.ok(truncate(file, 1050));
    assert_eq!(applied.attributes.as_ref().unwrap().mtime, time(12));
    harness.ok(truncate(file, 2000));
    assert_eq!(
        harness.state.read_extents(file, 900, 1000).unwrap(),
        vec![hole(900, 100), piece(1000, extent(1, 0, 50)), hole(1050, 850)]
    );
    let applied = harness.ok(truncate(file, 0));
    assert_eq!(applied.chunk_references[0].after, 0);
    assert_eq!(harness.state.read_extents(file, 0, 10).unwrap(), vec![]);
    assert_eq!(harness.state.statfs().extents, 0);
}

#[test]
fn write_preconditions_and_bounds() {
    let mut harness = Harness::with(NamespaceConfig::tiny());
    let file = harness.create(ROOT, "file");
    let dir = harness.mkdir(ROOT, "dir");
    let generation = harness.state.getattr(file).unwrap().generation;
    let guarded = |expected: u64| Delta::WriteExtents {
        inode: file,
        offset_bytes: 0,
        extents: vec![extent(1, 0, 10)],
        size_bytes: 10,
        mtime: time(1),
        expected_generation: Some(expected),
    };
    harness.refuse(guarded(generation + 1), NamespaceError::PreconditionFailed);
    harness.ok(guarded(generation));
    assert_eq!(harness.state.getattr(file).unwrap().generation, generation + 1);
    harness.refuse(write(dir, 0, vec![extent(1, 0, 1)], 1), NamespaceError::IsDirectory);
    harness.refuse(
        write(InodeId(500), 0, vec![extent(1, 0, 1)], 1),
        NamespaceError::NotFound,
    );
    let invalid = |error: &NamespaceError| matches!(error, NamespaceError::InvalidArgument { .. });
    harness.refuse_with(write(file, 0, vec![extent(1, 0, 0)], 0), invalid);
    harness.refuse_with(write(file, 0, vec![extent(1, 0, 10)], 5), invalid);
    harness.refuse_with(write(file, 0, vec![extent(1, u64::MAX, 10)], 10), invalid);
    let long_key = Extent {
        wrapped_key: vec![0; 17],
        ..extent(1, 0, 1)
    };
    harness.refuse(
        write(file, 0, vec![long_key], 1),
        NamespaceError::LimitExceeded {
            limit: Limit::WrappedKey,
        },
    );
    let many: Vec<Extent> = (0..9).map(|tag| extent(tag, 0, 1)).collect();
    harness.refuse(
        write(file, 0, many, 9),
        NamespaceError::LimitExceeded {
            limit: Limit::DeltaExtents,
        },
    );
    let file_size = NamespaceError::LimitExceeded { limit: Limit::FileSize };
    harness.refuse(
        write(file, u64::MAX - 1, vec![extent(1, 0, 10)], u64::MAX),
        file_size.clone(),
    );
    harness.refuse(
        write(file, 1 << 20, vec![extent(1, 0, 1)], (1 << 20) + 1),
        file_size.clone(),
    );
    harness.refuse(truncate(file, (1 << 20) + 1), file_size);
    // Sixteen extents per file at most; splitting counts.
    for number in 0..8u8 {
        harness.ok(write(
            file,
            u64::from(number) * 20,
            vec![extent(number, 0, 10), extent(number, 10, 5)],
            160,
        ));
    }
    assert_eq!(harness.state.statfs().extents, 16);
    harness.refuse(
        write(file, 2, vec![extent(9, 0, 1)], 3),
        NamespaceError::LimitExceeded { limit: Limit::Extents },
    );
    // Replacing two extents by one is fine at the bound.
    harness.ok(write(file, 0, vec![extent(9, 0, 15)], 15));
}

/// The shard never opens a seal: these tests use the plaintext itself as the "sealed"
/// bytes, which is enough to see which bytes a read hands back.
fn sealed(length_bytes: u64, sealed: &[u8]) -> SealedInline {
    SealedInline {
        length_bytes,
        sealed: sealed.to_vec(),
    }
}

fn inline_piece(offset_bytes: u64, length_bytes: u64, data: &SealedInline) -> ReadPiece {
    ReadPiece::Inline {
        offset_bytes,
        length_bytes,
        data: data.clone(),
    }
}

#[test]
fn inline_data_for_small_files() {
    let mut harness = Harness::with(NamespaceConfig::tiny());
    let file = harness.create(ROOT, "small");
    let hello = sealed(5, b"hello");
    let applied = harness.ok(write_inline(file, hello.clone()));
    assert_eq!(applied.attributes.unwrap().size_bytes, 5);
    // A write replaces the whole seal; the writer merged the old bytes into it.
    let merged = sealed(15, b"hello\0\0\0\0\0world");
    harness.ok(write_inline(file, merged.clone()));
    assert_eq!(
        harness.state.read_extents(file, 0, 100).unwrap(),
        vec![inline_piece(0, 15, &merged)]
    );
    assert_eq!(
        harness.state.read_extents(file, 3, 4).unwrap(),
        vec![inline_piece(3, 4, &merged)]
    );
    assert_eq!(harness.state.statfs().inline_bytes, 15);
    let too_long = NamespaceError::LimitExceeded {
        limit: Limit::InlineBytes,
    };
    harness.refuse(write_inline(file, sealed(65, &[0; 65])), too_long.clone());
    harness.refuse(write_inline(file, sealed(u64::MAX, b"1")), too_long);
    let invalid = |error: &NamespaceError| matches!(error, NamespaceError::InvalidArgument { .. });
    // Empty, or a seal longer than its bytes plus the slack: refused.
    harness.refuse_with(write_inline(file, sealed(0, b"")), invalid);
    let bloated = vec![0u8; 10 + INLINE_SEAL_SLACK_BYTES + 1];
    harness.refuse_with(write_inline(file, sealed(10, &bloated)), invalid);
    // Extents that cover only part of the inline tail are refused; from inside it to past
    // its end they cut it (the seal stays, covering fewer bytes).
    harness.refuse_with(write(file, 2, vec![extent(1, 0, 3)], 15), invalid);
    harness.ok(write(file, 8, vec![extent(1, 0, 100)], 108));
    assert_eq!(
        harness.state.read_extents(file, 0, 200).unwrap(),
        vec![
            inline_piece(0, 8, &sealed(8, &merged.sealed)),
            piece(8, extent(1, 0, 100))
        ]
    );
    assert_eq!(harness.state.statfs().inline_bytes, 8);
    // Inline bytes may not reach an extent.
    harness.refuse_with(write_inline(file, sealed(9, b"123456789")), invalid);
    let short = sealed(3, b"abc");
    harness.ok(write_inline(file, short.clone()));
    // What the new seal no longer covers reads as a hole.
    assert_eq!(
        harness.state.read_extents(file, 0, 10).unwrap(),
        vec![inline_piece(0, 3, &short), hole(3, 5), piece(8, extent(1, 0, 2))]
    );
    // Truncate cuts inline bytes too, and a later growth reads zeros past the cut.
    harness.ok(truncate(file, 2));
    harness.ok(truncate(file, 6));
    assert_eq!(
        harness.state.read_extents(file, 0, 10).unwrap(),
        vec![inline_piece(0, 2, &sealed(2, b"abc")), hole(2, 4)]
    );
    // Truncating to zero drops the seal.
    harness.ok(truncate(file, 0));
    assert_eq!(harness.state.statfs().inline_bytes, 0);
    assert_eq!(harness.state.read_extents(file, 0, 10).unwrap(), vec![]);
    let dir = harness.mkdir(ROOT, "dir");
    harness.refuse(write_inline(dir, sealed(1, b"x")), NamespaceError::IsDirectory);
}

#[test]
fn setattr_changes_and_guards() {
    let mut harness = Harness::new();
    let file = harness.create(ROOT, "file");
    harness.write(file, 0, vec![extent(1, 0, 100)]);
    let changes = AttrChanges {
        mode: Some(0o600),
        uid: Some(5),
        gid: Some(6),
        atime: Some(time(100)),
        mtime: Some(time(101)),
        size_bytes: None,
    };
    let setattr = |changes: AttrChanges, guard: Option<SetAttrGuard>| Delta::SetAttr {
        inode: file,
        changes,
        ctime: time(102),
        guard,
    };
    let before = harness.state.getattr(file).unwrap();
    harness.refuse(
        setattr(changes, Some(SetAttrGuard::Ctime(time(999)))),
        NamespaceError::PreconditionFailed,
    );
    let stale = SetAttrGuard::Generation(before.generation + 5);
    harness.refuse(setattr(changes, Some(stale)), NamespaceError::PreconditionFailed);
    let applied = harness.ok(setattr(changes, Some(SetAttrGuard::Ctime(before.ctime))));
    let after = applied.attributes.unwrap();
    assert_eq!((after.mode, after.uid, after.gid), (0o600, 5, 6));
    assert_eq!(
        (after.atime, after.mtime, after.ctime),
        (time(100), time(101), time(102))
    );
    assert_eq!(after.generation, before.generation + 1);
    assert_eq!(applied.events[0].kind, WatchKind::AttributesModified);
    // Size through setattr truncates.
    let resize = AttrChanges {
        size_bytes: Some(40),
        ..AttrChanges::default()
    };
    let applied = harness.ok(setattr(resize, Some(SetAttrGuard::Generation(after.generation))));
    assert_eq!(applied.events[0].kind, WatchKind::DataModified);
    assert_eq!(applied.attributes.unwrap().mtime, time(102));
    assert_eq!(
        harness.state.read_extents(file, 0, 100).unwrap(),
        vec![piece(0, extent(1, 0, 40))]
    );
    let invalid = |error: &NamespaceError| matches!(error, NamespaceError::InvalidArgument { .. });
    let bad_mode = AttrChanges {
        mode: Some(0o10_000),
        ..AttrChanges::default()
    };
    harness.refuse_with(setattr(bad_mode, None), invalid);
    let bad_time = AttrChanges {
        atime: Some(Timestamp::new(0, 2_000_000_000)),
        ..AttrChanges::default()
    };
    harness.refuse_with(setattr(bad_time, None), invalid);
    let dir_resize = Delta::SetAttr {
        inode: ROOT,
        changes: resize,
        ctime: time(1),
        guard: None,
    };
    harness.refuse(dir_resize, NamespaceError::IsDirectory);
    let chmod_root = Delta::SetAttr {
        inode: ROOT,
        changes: AttrChanges {
            mode: Some(0o700),
            ..AttrChanges::default()
        },
        ctime: time(1),
        guard: None,
    };
    harness.ok(chmod_root);
    assert_eq!(harness.state.getattr(ROOT).unwrap().mode, 0o700);
}

#[test]
fn extended_attributes() {
    let mut harness = Harness::with(NamespaceConfig::tiny());
    let file = harness.create(ROOT, "file");
    let set = |name: &[u8], value: &[u8], mode: XattrSetMode| Delta::SetXattr {
        inode: file,
        name: name.to_vec(),
        value: value.to_vec(),
        mode,
        ctime: time(20),
    };
    let remove = |name: &[u8]| Delta::RemoveXattr {
        inode: file,
        name: name.to_vec(),
        ctime: time(21),
    };
    let applied = harness.ok(set(b"user.a", b"1", XattrSetMode::Create));
    assert_eq!(applied.events[0].kind, WatchKind::XattrModified);
    harness.refuse(
        set(b"user.a", b"2", XattrSetMode::Create),
        NamespaceError::AlreadyExists,
    );
    harness.refuse(set(b"user.b", b"2", XattrSetMode::Replace), NamespaceError::NoData);
    harness.ok(set(b"user.a", b"3", XattrSetMode::Replace));
    harness.ok(set(b"user.b", b"", XattrSetMode::Either));
    assert_eq!(harness.state.getxattr(file, b"user.a").unwrap(), b"3");
    assert_eq!(harness.state.getxattr(file, b"user.b").unwrap(), b"");
    assert_eq!(harness.state.getxattr(file, b"user.c"), Err(NamespaceError::NoData));
    assert_eq!(
        harness.state.listxattr(file).unwrap(),
        vec![b"user.a".to_vec(), b"user.b".to_vec()]
    );
    let value_limit = NamespaceError::LimitExceeded {
        limit: Limit::XattrValue,
    };
    harness.refuse(set(b"user.c", &[0; 33], XattrSetMode::Either), value_limit.clone());
    assert_eq!(value_limit.errno(), 7);
    let name_limit = NamespaceError::LimitExceeded {
        limit: Limit::XattrName,
    };
    harness.refuse(set(&[b'n'; 256], b"", XattrSetMode::Either), name_limit.clone());
    assert_eq!(name_limit.errno(), 34);
    let invalid = |error: &NamespaceError| matches!(error, NamespaceError::InvalidArgument { .. });
    harness.refuse_with(set(b"", b"", XattrSetMode::Either), invalid);
    harness.ok(set(b"user.c", b"", XattrSetMode::Either));
    harness.refuse(
        set(b"user.d", b"", XattrSetMode::Either),
        NamespaceError::LimitExceeded { limit: Limit::Xattrs },
    );
    harness.ok(remove(b"user.a"));
    harness.refuse(remove(b"user.a"), NamespaceError::NoData);
    harness.ok(set(b"user.d", b"x", XattrSetMode::Either));
    let missing = Delta::RemoveXattr {
        inode: InodeId(99),
        name: b"user.a".to_vec(),
        ctime: time(1),
    };
    harness.refuse(missing, NamespaceError::NotFound);
    // Xattrs go with their inode.
    harness.ok(Delta::Unlink {
        parent: ROOT,
        name: "file".into(),
        ctime: time(30),
    });
    assert_eq!(harness.state.listxattr(file), Err(NamespaceError::NotFound));
}

#[test]
fn appends_land_at_the_end_the_file_has_when_they_apply() {
    let mut harness = Harness::new();
    let file = harness.create(ROOT, "log");
    let append = |extents: Vec<Extent>| Delta::AppendExtents {
        inode: file,
        extents,
        mtime: time(20),
    };
    // Inline bytes first; an append goes after them.
    harness.ok(write_inline(file, sealed(4, b"head")));
    let applied = harness.ok(append(vec![extent(1, 0, 100)]));
    assert_eq!(applied.attributes.as_ref().unwrap().size_bytes, 104);
    assert_eq!(applied.events[0].kind, WatchKind::DataModified);
    // Two writers that both saw size 104 append; neither overwrites the other.
    harness.ok(append(vec![extent(2, 0, 50)]));
    let applied = harness.ok(append(vec![extent(3, 10, 30), extent(4, 0, 5)]));
    assert_eq!(applied.attributes.as_ref().unwrap().size_bytes, 189);
    let pieces = harness.state.read_extents(file, 100, 1000).unwrap();
    assert_eq!(
        pieces,
        vec![
            piece(100, extent(1, 96, 4)),
            piece(104, extent(2, 0, 50)),
            piece(154, extent(3, 10, 30)),
            piece(184, extent(4, 0, 5)),
        ]
    );
    // Past the file size limit, and on a directory: refused, nothing changed.
    let huge = Extent {
        length_bytes: u64::MAX - 10,
        ..extent(5, 0, 1)
    };
    harness.refuse_with(append(vec![huge]), |error| {
        matches!(error, NamespaceError::LimitExceeded { .. })
    });
    harness.refuse_with(
        Delta::AppendExtents {
            inode: ROOT,
            extents: vec![extent(6, 0, 1)],
            mtime: time(21),
        },
        |error| matches!(error, NamespaceError::IsDirectory),
    );
    assert_eq!(
        harness
            .state
            .read_extents(file, 0, 1000)
            .unwrap()
            .last()
            .unwrap()
            .end_bytes(),
        189
    );
}

#[test]
fn sealed_inline_bytes_encode_as_before_the_block_encoding() {
    // Sealed bytes are encoded as one block (serde_bytes) rather than element by element;
    // postcard writes both as a length and the bytes, so logs and snapshots written before
    // still decode, and the encoding is the same.
    let sealed: Vec<u8> = (0..=255).cycle().take(4_200).collect();
    let inline = SealedInline {
        length_bytes: 4_096,
        sealed: sealed.clone(),
    };
    let as_block = postcard::to_allocvec(&inline).unwrap();
    let as_elements = postcard::to_allocvec(&(4_096u64, sealed.iter().collect::<Vec<&u8>>())).unwrap();
    assert_eq!(as_block, as_elements);
    let decoded: SealedInline = postcard::from_bytes(&as_elements).unwrap();
    assert_eq!(decoded, inline);
}
