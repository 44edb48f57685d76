//! Create, mkdir, symlink, link, unlink, rmdir and rename: every success and error case.

mod common;

use common::{attributes, extent, time, Harness, NAMESPACE, ROOT};
use kiseki_namespace::{
    AttrChanges, CallerIds, Delta, FileKind, InodeId, Limit, NamespaceConfig, NamespaceError, NamespaceId,
    NewAttributes, RenameFlags, WatchKind,
};

fn create(parent: InodeId, name: &[u8], exclusive: bool) -> Delta {
    Delta::Create {
        parent,
        name: name.to_vec(),
        attributes: attributes(1),
        exclusive,
    }
}

fn rename(from_parent: InodeId, from_name: &str, to_parent: InodeId, to_name: &str) -> Delta {
    rename_with(from_parent, from_name, to_parent, to_name, RenameFlags::default())
}

fn rename_with(from_parent: InodeId, from_name: &str, to_parent: InodeId, to_name: &str, flags: RenameFlags) -> Delta {
    Delta::Rename {
        source_namespace: NAMESPACE,
        from_parent,
        from_name: from_name.into(),
        to_parent,
        to_name: to_name.into(),
        flags,
        ctime: time(50),
    }
}

fn unlink(parent: InodeId, name: &str) -> Delta {
    Delta::Unlink {
        parent,
        name: name.into(),
        ctime: time(60),
    }
}

fn rmdir(parent: InodeId, name: &str) -> Delta {
    Delta::Rmdir {
        parent,
        name: name.into(),
        ctime: time(60),
    }
}

fn link(inode: InodeId, parent: InodeId, name: &str) -> Delta {
    Delta::Link {
        source_namespace: NAMESPACE,
        inode,
        parent,
        name: name.into(),
        ctime: time(70),
    }
}

#[test]
fn a_new_state_holds_only_the_root() {
    let harness = Harness::new();
    let root = harness.state.getattr(ROOT).unwrap();
    assert_eq!(root.kind, FileKind::Directory);
    assert_eq!(root.nlink, 2);
    assert_eq!(root.mode, 0o755);
    assert_eq!(harness.state.readdir(ROOT, 0, 10).unwrap(), vec![]);
    assert_eq!(harness.state.parent(ROOT).unwrap(), ROOT);
    assert_eq!(harness.state.statfs().inodes, 1);
    harness.state.check_invariants().unwrap();
}

#[test]
fn create_then_lookup_and_getattr() {
    let mut harness = Harness::new();
    let applied = harness.ok(create(ROOT, b"file", true));
    let inode = applied.inode.unwrap();
    assert_eq!(inode, InodeId(2), "inode numbers come from the state's counter");
    let attributes = applied.attributes.unwrap();
    assert_eq!(
        (attributes.kind, attributes.nlink, attributes.size_bytes),
        (FileKind::File, 1, 0)
    );
    assert_eq!(attributes.generation, 1);
    assert_eq!(attributes.mtime, time(1));
    assert_eq!(harness.state.lookup(ROOT, b"file").unwrap(), (inode, attributes));
    assert_eq!(applied.events.len(), 1);
    let event = &applied.events[0];
    assert_eq!(
        (event.sequence, event.inode, &event.kind),
        (1, inode, &WatchKind::Created)
    );
    assert_eq!((event.parent, event.name.as_deref()), (Some(ROOT), Some(&b"file"[..])));
    let root = harness.state.getattr(ROOT).unwrap();
    assert_eq!((root.mtime, root.ctime, root.nlink), (time(1), time(1), 2));
    assert_eq!(harness.create(ROOT, "other"), InodeId(3));
}

#[test]
fn exclusive_create_of_an_existing_name_is_already_exists() {
    let mut harness = Harness::new();
    let inode = harness.create(ROOT, "file");
    harness.refuse(create(ROOT, b"file", true), NamespaceError::AlreadyExists);
    // Without O_EXCL the existing file comes back and nothing changes.
    let digest = harness.state.state_digest();
    let applied = harness.ok(create(ROOT, b"file", false));
    assert_eq!(applied.inode, Some(inode));
    assert!(applied.events.is_empty());
    assert_eq!(harness.state.state_digest(), digest);
    harness.mkdir(ROOT, "dir");
    harness.refuse(create(ROOT, b"dir", false), NamespaceError::IsDirectory);
    harness.refuse(create(ROOT, b"dir", true), NamespaceError::AlreadyExists);
    let mkdir = Delta::Mkdir {
        parent: ROOT,
        name: "file".into(),
        attributes: attributes(2),
    };
    harness.refuse(mkdir, NamespaceError::AlreadyExists);
}

#[test]
fn invalid_names_are_refused() {
    let mut harness = Harness::new();
    for name in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
        harness.refuse(create(ROOT, name, true), NamespaceError::InvalidName);
    }
    harness.refuse(create(ROOT, &[b'x'; 256], true), NamespaceError::NameTooLong);
    harness.ok(create(ROOT, &[b'x'; 255], true));
    harness.ok(create(ROOT, "名前 with spaces".as_bytes(), true));
    assert_eq!(harness.state.lookup(ROOT, b"a/b"), Err(NamespaceError::InvalidName));
    assert_eq!(
        harness.state.lookup(ROOT, &[b'y'; 300]),
        Err(NamespaceError::NameTooLong)
    );
}

#[test]
fn parents_must_be_live_directories() {
    let mut harness = Harness::new();
    let file = harness.create(ROOT, "file");
    harness.refuse(create(InodeId(999), b"x", true), NamespaceError::NotFound);
    harness.refuse(create(file, b"x", true), NamespaceError::NotDirectory);
    assert_eq!(harness.state.lookup(file, b"x"), Err(NamespaceError::NotDirectory));
    assert_eq!(harness.state.lookup(ROOT, b"missing"), Err(NamespaceError::NotFound));
    assert_eq!(harness.state.readdir(file, 0, 1), Err(NamespaceError::NotDirectory));
    let bad_time = Delta::Create {
        parent: ROOT,
        name: "x".into(),
        attributes: kiseki_namespace::NewAttributes {
            time: kiseki_namespace::Timestamp::new(0, 1_000_000_000),
            ..attributes(0)
        },
        exclusive: true,
    };
    harness.refuse_with(bad_time, |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
    let bad_mode = Delta::Mkdir {
        parent: ROOT,
        name: "x".into(),
        attributes: kiseki_namespace::NewAttributes {
            mode: 0o170_000,
            ..attributes(0)
        },
    };
    harness.refuse_with(bad_mode, |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
}

#[test]
fn mkdir_and_rmdir_keep_link_counts() {
    let mut harness = Harness::new();
    let dir = harness.mkdir(ROOT, "dir");
    assert_eq!(harness.state.getattr(ROOT).unwrap().nlink, 3);
    assert_eq!(harness.state.getattr(dir).unwrap().nlink, 2);
    assert_eq!(harness.state.parent(dir).unwrap(), ROOT);
    let sub = harness.mkdir(dir, "sub");
    assert_eq!(harness.state.getattr(dir).unwrap().nlink, 3);
    harness.refuse(rmdir(ROOT, "dir"), NamespaceError::NotEmpty);
    harness.refuse(unlink(ROOT, "dir"), NamespaceError::IsDirectory);
    harness.create(ROOT, "file");
    harness.refuse(rmdir(ROOT, "file"), NamespaceError::NotDirectory);
    harness.refuse(rmdir(ROOT, "missing"), NamespaceError::NotFound);
    let applied = harness.ok(rmdir(dir, "sub"));
    assert_eq!(applied.inode, Some(sub));
    assert_eq!(applied.attributes, None, "the directory is gone");
    assert_eq!(applied.events[0].kind, WatchKind::Removed);
    assert_eq!(harness.state.getattr(sub), Err(NamespaceError::NotFound));
    harness.ok(rmdir(ROOT, "dir"));
    assert_eq!(harness.state.getattr(ROOT).unwrap().nlink, 2);
    assert_eq!(harness.state.getattr(ROOT).unwrap().mtime, time(60));
}

#[test]
fn symlinks_store_their_target() {
    let mut harness = Harness::new();
    let symlink = |name: &str, target: &[u8]| Delta::Symlink {
        parent: ROOT,
        name: name.into(),
        target: target.to_vec(),
        attributes: attributes(3),
    };
    let applied = harness.ok(symlink("link", b"../some/where"));
    let inode = applied.inode.unwrap();
    let attributes = applied.attributes.unwrap();
    assert_eq!((attributes.kind, attributes.size_bytes), (FileKind::Symlink, 13));
    assert_eq!(harness.state.readlink(inode).unwrap(), b"../some/where");
    let file = harness.create(ROOT, "file");
    assert!(matches!(
        harness.state.readlink(file),
        Err(NamespaceError::InvalidArgument { .. })
    ));
    assert!(matches!(
        harness.state.read_extents(inode, 0, 1),
        Err(NamespaceError::InvalidArgument { .. })
    ));
    harness.refuse(
        symlink("long", &[b'a'; 4096]),
        NamespaceError::LimitExceeded {
            limit: Limit::SymlinkTarget,
        },
    );
    harness.ok(symlink("longest", &[b'a'; 4095]));
    harness.refuse_with(symlink("empty", b""), |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
    harness.refuse(symlink("link", b"x"), NamespaceError::AlreadyExists);
    // A symlink can be hard linked and unlinked like a file.
    harness.ok(link(inode, ROOT, "link2"));
    harness.ok(unlink(ROOT, "link"));
    assert_eq!(harness.state.readlink(inode).unwrap(), b"../some/where");
}

#[test]
fn unlinking_one_hard_link_keeps_the_other_name() {
    let mut harness = Harness::new();
    let dir = harness.mkdir(ROOT, "dir");
    let file = harness.create(ROOT, "a");
    harness.write(file, 0, vec![extent(7, 0, 100)]);
    let applied = harness.ok(link(file, dir, "b"));
    assert_eq!(applied.attributes.as_ref().unwrap().nlink, 2);
    assert_eq!(applied.events[0].kind, WatchKind::Linked);
    assert_eq!(harness.state.lookup(dir, b"b").unwrap().0, file);
    let applied = harness.ok(unlink(ROOT, "a"));
    assert_eq!(applied.attributes.as_ref().unwrap().nlink, 1);
    assert!(applied.chunk_references.is_empty(), "the data is still referenced");
    assert_eq!(harness.state.lookup(ROOT, b"a"), Err(NamespaceError::NotFound));
    let (inode, attributes) = harness.state.lookup(dir, b"b").unwrap();
    assert_eq!((inode, attributes.size_bytes, attributes.ctime), (file, 100, time(60)));
    assert_eq!(harness.state.read_extents(file, 0, 100).unwrap().len(), 1);
    // The last name takes the inode and its chunk references with it.
    let applied = harness.ok(unlink(dir, "b"));
    assert_eq!(applied.attributes, None);
    assert_eq!(applied.chunk_references.len(), 1);
    assert_eq!(
        (applied.chunk_references[0].before, applied.chunk_references[0].after),
        (1, 0)
    );
    assert_eq!(harness.state.getattr(file), Err(NamespaceError::NotFound));
    assert_eq!(harness.state.chunk_references().count(), 0);
    harness.refuse(unlink(dir, "b"), NamespaceError::NotFound);
}

#[test]
fn link_errors() {
    let mut harness = Harness::with(NamespaceConfig::tiny());
    let dir = harness.mkdir(ROOT, "dir");
    let file = harness.create(ROOT, "file");
    harness.refuse(link(dir, ROOT, "dir2"), NamespaceError::NotPermitted);
    harness.refuse(link(file, ROOT, "dir"), NamespaceError::AlreadyExists);
    harness.refuse(link(InodeId(77), ROOT, "x"), NamespaceError::NotFound);
    harness.refuse(link(file, file, "x"), NamespaceError::NotDirectory);
    harness.refuse(link(file, ROOT, ".."), NamespaceError::InvalidName);
    let other_namespace = Delta::Link {
        source_namespace: NamespaceId(9),
        inode: file,
        parent: ROOT,
        name: "x".into(),
        ctime: time(1),
    };
    harness.refuse(other_namespace, NamespaceError::CrossDevice);
    for name in ["l1", "l2", "l3"] {
        harness.ok(link(file, ROOT, name));
    }
    assert_eq!(harness.state.getattr(file).unwrap().nlink, 4);
    harness.refuse(
        link(file, ROOT, "l4"),
        NamespaceError::LimitExceeded { limit: Limit::Links },
    );
    assert_eq!(NamespaceError::LimitExceeded { limit: Limit::Links }.errno(), 31);
}

#[test]
fn rename_moves_an_entry_between_directories() {
    let mut harness = Harness::new();
    let a = harness.mkdir(ROOT, "a");
    let b = harness.mkdir(ROOT, "b");
    let file = harness.create(a, "f");
    let applied = harness.ok(rename(a, "f", b, "g"));
    assert_eq!(applied.inode, Some(file));
    let kind = WatchKind::Renamed {
        from_parent: a,
        from_name: b"f".to_vec(),
    };
    assert_eq!(applied.events[0].kind, kind);
    assert_eq!(
        (applied.events[0].parent, applied.events[0].name.as_deref()),
        (Some(b), Some(&b"g"[..]))
    );
    assert_eq!(harness.state.lookup(b, b"g").unwrap().0, file);
    assert_eq!(harness.state.lookup(a, b"f"), Err(NamespaceError::NotFound));
    assert_eq!(harness.state.getattr(file).unwrap().ctime, time(50));
    // Moving a directory moves its link from one parent to the other.
    let sub = harness.mkdir(a, "sub");
    harness.ok(rename(a, "sub", b, "sub"));
    assert_eq!(harness.state.parent(sub).unwrap(), b);
    assert_eq!(harness.state.getattr(a).unwrap().nlink, 2);
    assert_eq!(harness.state.getattr(b).unwrap().nlink, 3);
    // Within one directory.
    harness.ok(rename(b, "sub", b, "renamed"));
    assert_eq!(harness.state.lookup(b, b"renamed").unwrap().0, sub);
    assert_eq!(harness.state.getattr(b).unwrap().nlink, 3);
    // Onto itself or onto another name of the same file: nothing happens.
    harness.ok(link(file, b, "g2"));
    let digest = harness.state.state_digest();
    harness.ok(rename(b, "g", b, "g"));
    harness.ok(rename(b, "g", b, "g2"));
    assert_eq!(harness.state.state_digest(), digest);
}

#[test]
fn rename_of_a_directory_into_its_own_subtree_is_invalid() {
    let mut harness = Harness::new();
    let a = harness.mkdir(ROOT, "a");
    let b = harness.mkdir(a, "b");
    let c = harness.mkdir(b, "c");
    for (to_parent, to_name) in [(c, "a"), (b, "a"), (a, "a")] {
        harness.refuse_with(rename(ROOT, "a", to_parent, to_name), |error| {
            matches!(error, NamespaceError::InvalidArgument { .. })
        });
    }
    let exchange = RenameFlags {
        exchange: true,
        ..RenameFlags::default()
    };
    harness.refuse_with(rename_with(ROOT, "a", c, "x", exchange), |error| {
        *error == NamespaceError::NotFound
    });
    harness.mkdir(c, "x");
    harness.refuse_with(rename_with(ROOT, "a", c, "x", exchange), |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
    harness.refuse_with(rename_with(c, "x", ROOT, "a", exchange), |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
}

#[test]
fn rename_over_existing_targets() {
    let mut harness = Harness::new();
    let full = harness.mkdir(ROOT, "full");
    harness.create(full, "inside");
    let empty = harness.mkdir(ROOT, "empty");
    let dir = harness.mkdir(ROOT, "dir");
    let file = harness.create(ROOT, "file");
    let victim = harness.create(ROOT, "victim");
    harness.write(victim, 0, vec![extent(3, 0, 10)]);
    harness.refuse(rename(ROOT, "dir", ROOT, "full"), NamespaceError::NotEmpty);
    harness.refuse(rename(ROOT, "file", ROOT, "dir"), NamespaceError::IsDirectory);
    harness.refuse(rename(ROOT, "dir", ROOT, "file"), NamespaceError::NotDirectory);
    harness.refuse(rename(ROOT, "missing", ROOT, "x"), NamespaceError::NotFound);
    harness.refuse(rename(ROOT, "file", InodeId(99), "x"), NamespaceError::NotFound);
    harness.refuse(rename(ROOT, "file", file, "x"), NamespaceError::NotDirectory);
    let no_replace = RenameFlags {
        no_replace: true,
        ..RenameFlags::default()
    };
    harness.refuse(
        rename_with(ROOT, "file", ROOT, "victim", no_replace),
        NamespaceError::AlreadyExists,
    );
    let both = RenameFlags {
        no_replace: true,
        exchange: true,
    };
    harness.refuse_with(rename_with(ROOT, "file", ROOT, "victim", both), |error| {
        matches!(error, NamespaceError::InvalidArgument { .. })
    });
    let other_namespace = Delta::Rename {
        source_namespace: NamespaceId(3),
        from_parent: ROOT,
        from_name: "file".into(),
        to_parent: ROOT,
        to_name: "x".into(),
        flags: RenameFlags::default(),
        ctime: time(1),
    };
    harness.refuse(other_namespace, NamespaceError::CrossDevice);
    // A file over a file: the old one goes, with its chunk references.
    let applied = harness.ok(rename(ROOT, "file", ROOT, "victim"));
    assert_eq!(applied.events.len(), 2);
    assert_eq!(
        (applied.events[0].inode, &applied.events[0].kind),
        (victim, &WatchKind::Removed)
    );
    assert_eq!(applied.chunk_references[0].after, 0);
    assert_eq!(harness.state.getattr(victim), Err(NamespaceError::NotFound));
    assert_eq!(harness.state.lookup(ROOT, b"victim").unwrap().0, file);
    // A directory over an empty directory.
    let nlink = harness.state.getattr(ROOT).unwrap().nlink;
    harness.ok(rename(ROOT, "dir", ROOT, "empty"));
    assert_eq!(harness.state.getattr(empty), Err(NamespaceError::NotFound));
    assert_eq!(harness.state.lookup(ROOT, b"empty").unwrap().0, dir);
    assert_eq!(harness.state.getattr(ROOT).unwrap().nlink, nlink - 1);
}

#[test]
fn rename_exchange_swaps_entries() {
    let mut harness = Harness::new();
    let a = harness.mkdir(ROOT, "a");
    let b = harness.mkdir(ROOT, "b");
    let file = harness.create(a, "file");
    let dir = harness.mkdir(b, "dir");
    let cookie_before = harness.state.readdir(a, 0, 10).unwrap()[0].cookie;
    let exchange = RenameFlags {
        exchange: true,
        ..RenameFlags::default()
    };
    let applied = harness.ok(rename_with(a, "file", b, "dir", exchange));
    assert_eq!(applied.events.len(), 2);
    assert_eq!(harness.state.lookup(a, b"file").unwrap().0, dir);
    assert_eq!(harness.state.lookup(b, b"dir").unwrap().0, file);
    assert_eq!(harness.state.parent(dir).unwrap(), a);
    assert_eq!(harness.state.getattr(a).unwrap().nlink, 3);
    assert_eq!(harness.state.getattr(b).unwrap().nlink, 2);
    assert_eq!(
        harness.state.readdir(a, 0, 10).unwrap()[0].cookie,
        cookie_before,
        "entries keep their place"
    );
    harness.refuse(rename_with(a, "file", b, "nothing", exchange), NamespaceError::NotFound);
}

#[test]
fn readdir_pages_with_stable_cookies() {
    let mut harness = Harness::new();
    let dir = harness.mkdir(ROOT, "dir");
    let names: Vec<String> = (0..10).map(|number| format!("entry{number}")).collect();
    for name in &names {
        harness.create(dir, name);
    }
    let first = harness.state.readdir(dir, 0, 4).unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(first[0].cookie, kiseki_namespace::READDIR_COOKIE_FIRST);
    let pinned = harness.state.pin();
    // Removing entries already listed does not move the others.
    harness.ok(unlink(dir, "entry0"));
    harness.ok(unlink(dir, "entry5"));
    let rest = harness.state.readdir(dir, first[3].cookie, 100).unwrap();
    let rest_names: Vec<&[u8]> = rest.iter().map(|entry| &entry.name[..]).collect();
    assert_eq!(rest_names, [&b"entry4"[..], b"entry6", b"entry7", b"entry8", b"entry9"]);
    // Across a snapshot and restore.
    let restored = kiseki_namespace::NamespaceState::restore(
        kiseki_namespace::NamespaceSnapshot::decode(&harness.state.snapshot().encode()).unwrap(),
    )
    .unwrap();
    assert_eq!(restored.readdir(dir, first[3].cookie, 100).unwrap(), rest);
    assert_eq!(
        pinned.readdir(dir, 0, 100).unwrap().len(),
        10,
        "the pinned view still sees every entry"
    );
    let plus = harness.state.readdir_plus(dir, 0, 2).unwrap();
    assert_eq!(plus[0].1.kind, FileKind::File);
}

#[test]
fn inode_and_entry_bounds_are_enforced() {
    let mut config = NamespaceConfig::tiny();
    config.inodes_max = 4;
    let mut harness = Harness::with(config);
    harness.create(ROOT, "1");
    harness.create(ROOT, "2");
    harness.mkdir(ROOT, "3");
    harness.refuse(
        create(ROOT, b"4", true),
        NamespaceError::LimitExceeded { limit: Limit::Inodes },
    );
    let mut config = NamespaceConfig::tiny();
    config.dentries_max = 2;
    let mut harness = Harness::with(config);
    let file = harness.create(ROOT, "1");
    harness.ok(link(file, ROOT, "2"));
    harness.refuse(
        link(file, ROOT, "3"),
        NamespaceError::LimitExceeded { limit: Limit::Dentries },
    );
    let mut config = NamespaceConfig::tiny();
    config.inode_number_last = 3;
    let mut harness = Harness::with(config);
    harness.create(ROOT, "1");
    harness.ok(unlink(ROOT, "1"));
    harness.create(ROOT, "2");
    harness.refuse(
        create(ROOT, b"3", true),
        NamespaceError::LimitExceeded { limit: Limit::Inodes },
    );
}

fn mknod(parent: InodeId, name: &str, kind: FileKind) -> Delta {
    Delta::Mknod {
        parent,
        name: name.into(),
        kind,
        attributes: attributes(2),
    }
}

#[test]
fn mknod_makes_pipes_sockets_and_device_nodes_that_hold_no_data() {
    let mut harness = Harness::new();
    let kinds = [
        ("fifo", FileKind::Fifo),
        ("socket", FileKind::Socket),
        ("tty", FileKind::CharDevice { rdev: 0x0501 }),
        ("disk", FileKind::BlockDevice { rdev: 0x0800 }),
    ];
    for (name, kind) in kinds {
        let applied = harness.ok(mknod(ROOT, name, kind));
        let attributes = applied.attributes.unwrap();
        assert_eq!((attributes.kind, attributes.size_bytes, attributes.nlink), (kind, 0, 1));
        let (inode, found) = harness.state.lookup(ROOT, name.as_bytes()).unwrap();
        assert_eq!((inode, found.kind), (applied.inode.unwrap(), kind));
    }
    let fifo = harness.state.lookup(ROOT, b"fifo").unwrap().0;
    // A name taken, a kind mknod does not make, data written to a pipe: refused.
    harness.refuse(mknod(ROOT, "fifo", FileKind::Fifo), NamespaceError::AlreadyExists);
    for kind in [FileKind::File, FileKind::Directory, FileKind::Symlink] {
        assert!(matches!(
            harness.apply(mknod(ROOT, "other", kind)),
            Err(NamespaceError::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        harness.apply(Delta::WriteExtents {
            inode: fifo,
            offset_bytes: 0,
            extents: vec![extent(1, 0, 10)],
            size_bytes: 10,
            mtime: time(3),
            expected_generation: None,
        }),
        Err(NamespaceError::InvalidArgument { .. })
    ));
    // Special inodes link, rename and unlink as files do.
    harness.ok(link(fifo, ROOT, "fifo2"));
    harness.ok(rename(ROOT, "fifo2", ROOT, "fifo3"));
    harness.ok(unlink(ROOT, "fifo"));
    assert_eq!(harness.state.getattr(fifo).unwrap().nlink, 1);
    assert_eq!(harness.state.statfs().inodes, 5);
    harness.state.check_invariants().unwrap();
}

fn as_caller(uid: u32, gids: &[u32], directory: InodeId, delta: Delta) -> Delta {
    Delta::AsCaller {
        caller: CallerIds {
            uid,
            gid: gids.first().copied().unwrap_or(uid),
            gids: gids.to_vec(),
        },
        directory,
        mask: 0o3,
        delta: Box::new(delta),
    }
}

#[test]
fn a_create_as_a_caller_is_checked_against_the_directory_when_it_applies() {
    let mut harness = Harness::new();
    let dir = harness
        .ok(Delta::Mkdir {
            parent: ROOT,
            name: b"shared".to_vec(),
            attributes: NewAttributes {
                mode: 0o750,
                ..attributes(1)
            },
        })
        .inode
        .unwrap();
    // The owner (uid 1000) may write and search.
    let made = harness.ok(as_caller(1000, &[], dir, create(dir, b"by-owner", true)));
    assert!(made.inode.is_some());
    // Group members may only read and search; others nothing: refused, nothing changed.
    harness.refuse(
        as_caller(2000, &[2000, 1000], dir, create(dir, b"by-member", true)),
        NamespaceError::AccessDenied,
    );
    harness.refuse(
        as_caller(3000, &[3000], dir, create(dir, b"by-other", true)),
        NamespaceError::AccessDenied,
    );
    // Root passes.
    harness.ok(as_caller(0, &[0], dir, create(dir, b"by-root", true)));
    // The check reads the mode as it is when the create applies.
    harness.ok(Delta::SetAttr {
        inode: dir,
        changes: AttrChanges {
            mode: Some(0o770),
            ..AttrChanges::default()
        },
        ctime: time(5),
        guard: None,
    });
    harness.ok(as_caller(2000, &[2000, 1000], dir, create(dir, b"by-member", true)));
    // The inner delta's own refusals still come through.
    harness.refuse(
        as_caller(1000, &[], dir, create(dir, b"by-owner", true)),
        NamespaceError::AlreadyExists,
    );
    // The directory must be one, and exist; no nesting.
    harness.refuse(
        as_caller(1000, &[], made.inode.unwrap(), create(dir, b"x", true)),
        NamespaceError::NotDirectory,
    );
    harness.refuse(
        as_caller(1000, &[], InodeId(999_999), create(dir, b"x", true)),
        NamespaceError::NotFound,
    );
    let nested = as_caller(1000, &[], dir, as_caller(1000, &[], dir, create(dir, b"x", true)));
    harness.refuse_with(nested, |error| matches!(error, NamespaceError::InvalidArgument { .. }));
    assert_eq!(NamespaceError::AccessDenied.errno(), 13);
}
