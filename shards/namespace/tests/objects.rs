//! S3 objects: put, delete, conditions, multipart uploads and prefix listing.

mod common;

use std::collections::BTreeMap;

use common::{attributes, extent, locator, time, Harness, ROOT};
use kiseki_namespace::{
    CompletedPart, Delta, Extent, InodeId, Limit, NamespaceConfig, NamespaceError, ObjectCondition, ObjectContent,
    ObjectMeta, ReadPiece, SealedInline, UploadId, WatchKind,
};

fn meta(etag: &str) -> ObjectMeta {
    ObjectMeta {
        content_type: "application/octet-stream".into(),
        etag: etag.into(),
        user_metadata: BTreeMap::from([("owner".to_owned(), "me".to_owned())]),
        system_metadata: BTreeMap::new(),
    }
}

fn put(parent: InodeId, name: &str, content: ObjectContent, etag: &str, condition: ObjectCondition) -> Delta {
    Delta::ObjectPut {
        parent,
        name: name.into(),
        content,
        meta: meta(etag),
        attributes: attributes(5),
        condition,
    }
}

fn delete(parent: InodeId, name: &str, condition: ObjectCondition) -> Delta {
    Delta::ObjectDelete {
        parent,
        name: name.into(),
        condition,
        ctime: time(6),
    }
}

fn begin(parent: InodeId, name: &str) -> Delta {
    Delta::MultipartBegin {
        parent,
        name: name.into(),
        meta: meta(""),
        initiated: time(7),
    }
}

fn part(upload_id: UploadId, part_number: u32, etag: &str, extents: Vec<Extent>) -> Delta {
    Delta::MultipartPart {
        upload_id,
        part_number,
        etag: etag.into(),
        extents,
    }
}

fn complete(upload_id: UploadId, parts: &[(u32, &str)], condition: ObjectCondition) -> Delta {
    Delta::MultipartComplete {
        upload_id,
        parts: parts
            .iter()
            .map(|(part_number, etag)| CompletedPart {
                part_number: *part_number,
                etag: (*etag).into(),
            })
            .collect(),
        etag: "final-2".into(),
        attributes: attributes(8),
        condition,
    }
}

/// Inline object data as the shard sees it: opaque bytes (the plaintext stands in for a
/// seal here).
fn sealed(data: &[u8]) -> SealedInline {
    SealedInline {
        length_bytes: data.len() as u64,
        sealed: data.to_vec(),
    }
}

#[test]
fn object_put_creates_and_atomically_replaces() {
    let mut harness = Harness::new();
    let bucket = harness.mkdir(ROOT, "bucket");
    let applied = harness.ok(put(
        bucket,
        "key",
        ObjectContent::Inline(sealed(b"tiny")),
        "e1",
        ObjectCondition::IfAbsent,
    ));
    let first = applied.inode.unwrap();
    assert_eq!(applied.attributes.unwrap().size_bytes, 4);
    assert_eq!(harness.state.object_meta(first).unwrap(), Some(meta("e1")));
    let content = ObjectContent::Extents(vec![extent(1, 0, 1000), extent(2, 0, 24)]);
    harness.refuse(
        put(bucket, "key", content.clone(), "e2", ObjectCondition::IfAbsent),
        NamespaceError::PreconditionFailed,
    );
    let wrong_etag = ObjectCondition::IfEtagMatches("nope".into());
    harness.refuse(
        put(bucket, "key", content.clone(), "e2", wrong_etag),
        NamespaceError::PreconditionFailed,
    );
    let stale = ObjectCondition::IfVersion {
        inode: first,
        generation: 7,
    };
    harness.refuse(
        put(bucket, "key", content.clone(), "e2", stale),
        NamespaceError::PreconditionFailed,
    );
    let missing = ObjectCondition::IfEtagMatches("e1".into());
    harness.refuse(
        put(bucket, "other", content.clone(), "e2", missing),
        NamespaceError::NotFound,
    );
    let applied = harness.ok(put(
        bucket,
        "key",
        content,
        "e2",
        ObjectCondition::IfEtagMatches("e1".into()),
    ));
    let second = applied.inode.unwrap();
    assert_ne!(first, second, "a replaced object is a new inode");
    let kinds: Vec<_> = applied
        .events
        .iter()
        .map(|event| (event.inode, event.kind.clone()))
        .collect();
    assert_eq!(kinds, vec![(first, WatchKind::Removed), (second, WatchKind::Created)]);
    assert_eq!(harness.state.getattr(first), Err(NamespaceError::NotFound));
    assert_eq!(harness.state.getattr(second).unwrap().size_bytes, 1024);
    assert_eq!(harness.state.lookup(bucket, b"key").unwrap().0, second);
    let version = ObjectCondition::IfVersion {
        inode: second,
        generation: 1,
    };
    harness.ok(put(bucket, "key", ObjectContent::Extents(vec![]), "e3", version));
    let dropped: Vec<_> = harness.state.chunk_references().collect();
    assert!(dropped.is_empty(), "replacing the object released its chunks");
}

#[test]
fn writes_truncates_and_appends_drop_a_stored_etag() {
    let mut harness = Harness::new();
    let bucket = harness.mkdir(ROOT, "bucket");
    let content = ObjectContent::Extents(vec![extent(1, 0, 1000)]);
    let changes: Vec<Box<dyn Fn(InodeId) -> Delta>> = vec![
        Box::new(|inode| Delta::WriteExtents {
            inode,
            offset_bytes: 10,
            extents: vec![extent(2, 0, 10)],
            size_bytes: 1000,
            mtime: time(9),
            expected_generation: None,
        }),
        Box::new(|inode| Delta::Truncate {
            inode,
            size_bytes: 10,
            mtime: time(9),
            expected_generation: None,
        }),
        Box::new(|inode| Delta::AppendExtents {
            inode,
            extents: vec![extent(3, 0, 10)],
            mtime: time(9),
        }),
        Box::new(|inode| Delta::SetAttr {
            inode,
            changes: kiseki_namespace::AttrChanges {
                size_bytes: Some(5),
                ..Default::default()
            },
            ctime: time(9),
            guard: None,
        }),
    ];
    for change in changes {
        let inode = harness
            .ok(put(bucket, "key", content.clone(), "e1", ObjectCondition::Any))
            .inode
            .unwrap();
        harness.ok(change(inode));
        let meta = harness.state.object_meta(inode).unwrap().unwrap();
        assert_eq!(meta.etag, "", "the bytes changed: the MD5 no longer holds");
        assert_eq!(meta.user_metadata.get("owner").map(String::as_str), Some("me"));
    }
    // Attribute changes alone keep it.
    let inode = harness
        .ok(put(bucket, "key", content, "e1", ObjectCondition::Any))
        .inode
        .unwrap();
    harness.ok(Delta::SetAttr {
        inode,
        changes: kiseki_namespace::AttrChanges {
            mode: Some(0o600),
            ..Default::default()
        },
        ctime: time(9),
        guard: None,
    });
    assert_eq!(harness.state.object_meta(inode).unwrap().unwrap().etag, "e1");
}

#[test]
fn object_put_errors() {
    let mut harness = Harness::with(NamespaceConfig::tiny());
    let dir = harness.mkdir(ROOT, "dir");
    let inline = ObjectContent::Inline(sealed(b"x"));
    harness.refuse(
        put(ROOT, "dir", inline.clone(), "e", ObjectCondition::Any),
        NamespaceError::IsDirectory,
    );
    harness.refuse(
        put(InodeId(99), "k", inline.clone(), "e", ObjectCondition::Any),
        NamespaceError::NotFound,
    );
    harness.refuse(
        put(dir, "a/b", inline.clone(), "e", ObjectCondition::Any),
        NamespaceError::InvalidName,
    );
    let big = ObjectContent::Inline(sealed(&[0; 65]));
    harness.refuse(
        put(dir, "k", big, "e", ObjectCondition::Any),
        NamespaceError::LimitExceeded {
            limit: Limit::InlineBytes,
        },
    );
    let big_meta = Delta::ObjectPut {
        parent: dir,
        name: "k".into(),
        content: inline.clone(),
        meta: ObjectMeta {
            content_type: "x".repeat(200),
            ..ObjectMeta::default()
        },
        attributes: attributes(1),
        condition: ObjectCondition::Any,
    };
    harness.refuse(
        big_meta,
        NamespaceError::LimitExceeded {
            limit: Limit::ObjectMeta,
        },
    );
    let empty_extent = ObjectContent::Extents(vec![extent(1, 0, 0)]);
    harness.refuse_with(put(dir, "k", empty_extent, "e", ObjectCondition::Any), |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
}

#[test]
fn object_delete_with_conditions() {
    let mut harness = Harness::new();
    let applied = harness.ok(put(
        ROOT,
        "key",
        ObjectContent::Extents(vec![extent(4, 0, 10)]),
        "e",
        ObjectCondition::Any,
    ));
    let inode = applied.inode.unwrap();
    harness.mkdir(ROOT, "dir");
    harness.refuse(delete(ROOT, "dir", ObjectCondition::Any), NamespaceError::IsDirectory);
    harness.refuse(delete(ROOT, "missing", ObjectCondition::Any), NamespaceError::NotFound);
    harness.refuse_with(delete(ROOT, "key", ObjectCondition::IfAbsent), |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
    harness.refuse(
        delete(ROOT, "key", ObjectCondition::IfEtagMatches("x".into())),
        NamespaceError::PreconditionFailed,
    );
    let applied = harness.ok(delete(ROOT, "key", ObjectCondition::IfEtagMatches("e".into())));
    assert_eq!(applied.inode, Some(inode));
    assert_eq!(applied.events[0].kind, WatchKind::Removed);
    assert_eq!(applied.chunk_references[0].after, 0);
    assert_eq!(harness.state.lookup(ROOT, b"key"), Err(NamespaceError::NotFound));
}

#[test]
fn multipart_upload_completes_into_an_object() {
    let mut harness = Harness::new();
    let bucket = harness.mkdir(ROOT, "bucket");
    let applied = harness.ok(begin(bucket, "big"));
    let upload = applied.upload_id.unwrap();
    assert_eq!(upload, UploadId(1));
    assert_eq!(applied.events[0].kind, WatchKind::MultipartBegun { upload_id: upload });
    harness.ok(part(upload, 1, "p1", vec![extent(1, 0, 100), extent(2, 0, 50)]));
    harness.ok(part(upload, 2, "p2-old", vec![extent(3, 0, 100)]));
    let applied = harness.ok(part(upload, 2, "p2", vec![extent(4, 0, 70)]));
    assert_eq!(
        applied.chunk_references.len(),
        2,
        "replacing a part swaps its references"
    );
    harness.ok(part(upload, 3, "p3", vec![extent(5, 0, 1)]));
    let uploads = harness.state.list_multipart(None, 10);
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        (uploads[0].upload_id, uploads[0].part_count, &uploads[0].name[..]),
        (upload, 3, &b"big"[..])
    );
    let parts = harness.state.list_parts(upload, 0, 10).unwrap();
    let numbers: Vec<_> = parts.iter().map(|part| (part.part_number, part.size_bytes)).collect();
    assert_eq!(numbers, vec![(1, 150), (2, 70), (3, 1)]);
    assert_eq!(harness.state.list_parts(upload, 1, 1).unwrap()[0].part_number, 2);
    assert_eq!(harness.state.statfs().multipart_bytes, 221);

    harness.refuse(
        complete(upload, &[(1, "p1"), (2, "wrong")], ObjectCondition::Any),
        NamespaceError::InvalidPart { part_number: 2 },
    );
    harness.refuse(
        complete(upload, &[(1, "p1"), (4, "p4")], ObjectCondition::Any),
        NamespaceError::InvalidPart { part_number: 4 },
    );
    let invalid = |error: &NamespaceError| matches!(error, NamespaceError::InvalidArgument { .. });
    harness.refuse_with(complete(upload, &[(2, "p2"), (1, "p1")], ObjectCondition::Any), invalid);
    harness.refuse_with(complete(upload, &[], ObjectCondition::Any), invalid);
    harness.refuse(
        complete(UploadId(9), &[(1, "p1")], ObjectCondition::Any),
        NamespaceError::NotFound,
    );

    // Parts 1 and 2 become the object; part 3 is dropped.
    let applied = harness.ok(complete(upload, &[(1, "p1"), (2, "p2")], ObjectCondition::IfAbsent));
    let object = applied.inode.unwrap();
    assert_eq!(applied.upload_id, Some(upload));
    assert_eq!(applied.attributes.unwrap().size_bytes, 220);
    let changes: Vec<_> = applied
        .chunk_references
        .iter()
        .map(|change| (change.locator, change.after))
        .collect();
    assert_eq!(changes, vec![(locator(5), 0)], "moved parts keep their references");
    assert_eq!(harness.state.object_meta(object).unwrap().unwrap().etag, "final-2");
    assert_eq!(
        harness.state.read_extents(object, 0, 1000).unwrap(),
        vec![
            ReadPiece::Extent {
                offset_bytes: 0,
                extent: extent(1, 0, 100)
            },
            ReadPiece::Extent {
                offset_bytes: 100,
                extent: extent(2, 0, 50)
            },
            ReadPiece::Extent {
                offset_bytes: 150,
                extent: extent(4, 0, 70)
            },
        ]
    );
    assert_eq!(harness.state.list_multipart(None, 10), vec![]);
    assert_eq!(harness.state.list_parts(upload, 0, 10), Err(NamespaceError::NotFound));
    assert_eq!(harness.state.statfs().multipart_parts, 0);
}

#[test]
fn multipart_abort_and_bounds() {
    let mut harness = Harness::with(NamespaceConfig::tiny());
    let mut uploads = Vec::new();
    for name in ["a", "b", "c"] {
        uploads.push(harness.ok(begin(ROOT, name)).upload_id.unwrap());
    }
    harness.refuse(
        begin(ROOT, "d"),
        NamespaceError::LimitExceeded {
            limit: Limit::MultipartUploads,
        },
    );
    harness.refuse(begin(InodeId(50), "d"), NamespaceError::NotFound);
    let invalid = |error: &NamespaceError| matches!(error, NamespaceError::InvalidArgument { .. });
    harness.refuse_with(part(uploads[0], 0, "e", vec![extent(1, 0, 1)]), invalid);
    harness.refuse_with(part(uploads[0], 6, "e", vec![extent(1, 0, 1)]), invalid);
    harness.refuse(
        part(UploadId(77), 1, "e", vec![extent(1, 0, 1)]),
        NamespaceError::NotFound,
    );
    harness.ok(part(uploads[0], 5, "e", vec![extent(1, 0, 1), extent(1, 1, 1)]));
    assert_eq!(harness.state.chunk_reference_count(&locator(1)), 2);
    let applied = harness.ok(Delta::MultipartAbort { upload_id: uploads[0] });
    assert_eq!(applied.chunk_references[0].after, 0);
    assert_eq!(
        applied.events[0].kind,
        WatchKind::MultipartAborted { upload_id: uploads[0] }
    );
    harness.refuse(
        Delta::MultipartAbort { upload_id: uploads[0] },
        NamespaceError::NotFound,
    );
    let fourth = harness.ok(begin(ROOT, "d")).upload_id.unwrap();
    assert_eq!(fourth, UploadId(4), "upload ids are never reused");
    harness.ok(Delta::MultipartAbort { upload_id: fourth });
    // A completion into a directory's name, or whose condition fails, is refused.
    harness.mkdir(ROOT, "b-dir");
    let into_dir = harness.ok(begin(ROOT, "b-dir")).upload_id.unwrap();
    harness.ok(part(into_dir, 1, "e", vec![extent(2, 0, 1)]));
    harness.refuse(
        complete(into_dir, &[(1, "e")], ObjectCondition::Any),
        NamespaceError::IsDirectory,
    );
    harness.ok(part(uploads[1], 1, "e", vec![extent(2, 0, 1)]));
    let condition = ObjectCondition::IfEtagMatches("x".into());
    harness.refuse(complete(uploads[1], &[(1, "e")], condition), NamespaceError::NotFound);
    // The upload's directory went away: completing fails, aborting works.
    harness.ok(Delta::MultipartAbort { upload_id: uploads[2] });
    let sub = harness.mkdir(ROOT, "sub");
    let orphan = harness.ok(begin(sub, "x")).upload_id.unwrap();
    harness.ok(Delta::Rmdir {
        parent: ROOT,
        name: "sub".into(),
        ctime: time(9),
    });
    harness.ok(part(orphan, 1, "e", vec![extent(3, 0, 1)]));
    harness.refuse(
        complete(orphan, &[(1, "e")], ObjectCondition::Any),
        NamespaceError::NotFound,
    );
    harness.ok(Delta::MultipartAbort { upload_id: orphan });
    assert_eq!(harness.state.chunk_reference_count(&locator(3)), 0);
}

#[test]
fn listing_by_prefix() {
    let mut harness = Harness::new();
    let bucket = harness.mkdir(ROOT, "bucket");
    for name in ["b", "ab", "a", "abc", "abd", "ac"] {
        harness.ok(put(
            bucket,
            name,
            ObjectContent::Extents(vec![]),
            "e",
            ObjectCondition::Any,
        ));
    }
    let names = |entries: Vec<kiseki_namespace::DirEntry>| -> Vec<String> {
        entries
            .into_iter()
            .map(|entry| String::from_utf8(entry.name).unwrap())
            .collect()
    };
    assert_eq!(
        names(harness.state.list_prefix(bucket, b"ab", None, 10).unwrap()),
        ["ab", "abc", "abd"]
    );
    assert_eq!(
        names(harness.state.list_prefix(bucket, b"ab", Some(b"abc"), 10).unwrap()),
        ["abd"]
    );
    assert_eq!(
        names(harness.state.list_prefix(bucket, b"ab", Some(b"a"), 10).unwrap()),
        ["ab", "abc", "abd"]
    );
    assert_eq!(
        names(harness.state.list_prefix(bucket, b"", None, 2).unwrap()),
        ["a", "ab"]
    );
    assert_eq!(
        names(harness.state.list_prefix(bucket, b"", Some(b"abd"), 10).unwrap()),
        ["ac", "b"]
    );
    assert_eq!(
        names(harness.state.list_prefix(bucket, b"z", None, 10).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        harness.state.list_prefix(ROOT, b"", None, 10).unwrap().len(),
        1,
        "only this directory's entries"
    );
}
