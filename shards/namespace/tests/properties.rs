//! Property tests: random delta sequences (valid and invalid: bad names, unknown inodes,
//! out-of-range values) applied to independent replicas, a restored snapshot and a model.
//!
//! - I-N10: two replicas applying the same deltas give the same results and digests, and
//!   byte-identical snapshots; a replica restored from a snapshot mid-way continues
//!   identically; a snapshot taken mid-way still restores to its own digest afterwards.
//! - I-N9: a refused delta leaves the digest unchanged.
//! - I-N11: every attribute or directory entry an applied delta changed is named by one
//!   of its watch events.
//! - I-N1..I-N8: `check_invariants` after every step; chunk reference changes reported by
//!   `apply` match the counts.
//! - File data against a byte-array model: extent splits, inline bytes, truncation, holes.
//! - Decoding random bytes never panics.

use kiseki_namespace::{
    AttrChanges, CallerIds, CompletedPart, Delta, Extent, FileKind, InodeId, NamespaceConfig, NamespaceId,
    NamespaceSnapshot, NamespaceState, NewAttributes, ObjectCondition, ObjectContent, ObjectMeta, ReadPiece,
    RenameFlags, SealedInline, SetAttrGuard, Timestamp, UploadId, XattrSetMode,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// A name that mostly exists already in the directory it is used with.
fn existing_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => (0u8..16).prop_map(|k| vec![EXISTING_NAME, k]), 1 => name()]
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        40 => prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(|name| name.as_bytes().to_vec()),
        1 => prop::sample::select(vec![&b""[..], b".", b"..", b"x/y", b"\0"]).prop_map(|name| name.to_vec()),
        1 => Just(vec![b'n'; 256]),
    ]
}

/// Placeholder inode numbers, resolved against the live state when the delta is applied
/// (see `resolve`): `SELECT_DIRECTORY + k` is the k-th live directory (modulo their
/// number), `SELECT_FILE + k` the k-th live file or symlink, `SELECT_ANY + k` any inode.
const SELECT_DIRECTORY: u64 = u64::MAX - 96;
const SELECT_FILE: u64 = u64::MAX - 64;
const SELECT_ANY: u64 = u64::MAX - 32;
/// `SELECT_UPLOAD + k` is the k-th upload in progress.
const SELECT_UPLOAD: u64 = u64::MAX - 16;
/// A name `[EXISTING_NAME, k]` is the k-th entry of the directory it is looked up in.
const EXISTING_NAME: u8 = 0xff;
/// A completion naming this ETag names every stored part of the upload instead.
const EVERY_PART: &str = "*every part*";

/// Mostly live directories, sometimes anything (unknown numbers included).
fn directory() -> impl Strategy<Value = InodeId> {
    prop_oneof![
        16 => (0u64..32).prop_map(|k| InodeId(SELECT_DIRECTORY + k)),
        3 => (0u64..32).prop_map(|k| InodeId(SELECT_ANY + k)),
        1 => (1u64..40).prop_map(InodeId),
        1 => any::<u64>().prop_map(InodeId),
    ]
}

/// Mostly live files, sometimes anything (unknown numbers included).
fn xattr_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => prop::sample::select(vec!["user.a", "user.b"]).prop_map(|name| name.as_bytes().to_vec()),
        1 => Just(vec![]),
        1 => Just(vec![b'x'; 256]),
    ]
}

fn inode() -> impl Strategy<Value = InodeId> {
    prop_oneof![
        16 => (0u64..32).prop_map(|k| InodeId(SELECT_FILE + k)),
        4 => (0u64..32).prop_map(|k| InodeId(SELECT_ANY + k)),
        1 => (1u64..40).prop_map(InodeId),
        1 => any::<u64>().prop_map(InodeId),
    ]
}

/// Every live inode reachable from the root, split into directories and the rest.
fn live_inodes(state: &NamespaceState) -> (Vec<InodeId>, Vec<InodeId>) {
    let mut directories = vec![InodeId::ROOT];
    let mut others = std::collections::BTreeSet::new();
    let mut next = 0;
    while next < directories.len() {
        for entry in state.readdir(directories[next], 0, usize::MAX).unwrap() {
            match entry.kind {
                kiseki_namespace::FileKind::Directory => directories.push(entry.inode),
                _ => {
                    others.insert(entry.inode);
                }
            }
        }
        next += 1;
    }
    (directories, others.into_iter().collect())
}

/// Replaces placeholder inode numbers in a delta by live ones.
fn resolve(delta: &Delta, state: &NamespaceState) -> Delta {
    let (directories, others) = live_inodes(state);
    let all: Vec<InodeId> = directories.iter().chain(others.iter()).copied().collect();
    let pick = |id: &mut InodeId| {
        let from = |list: &[InodeId], k: u64| list.get((k as usize) % list.len().max(1)).copied();
        let chosen = match id.0 {
            number if number >= SELECT_ANY => from(&all, number - SELECT_ANY),
            number if number >= SELECT_FILE => from(&others, number - SELECT_FILE).or(Some(InodeId(999))),
            number if number >= SELECT_DIRECTORY => from(&directories, number - SELECT_DIRECTORY),
            _ => None,
        };
        if let Some(chosen) = chosen {
            *id = chosen;
        }
    };
    let mut delta = delta.clone();
    let condition_inode = |condition: &mut ObjectCondition, pick: &dyn Fn(&mut InodeId)| {
        if let ObjectCondition::IfVersion { inode, .. } = condition {
            pick(inode);
        }
    };
    match &mut delta {
        Delta::Create { parent, .. }
        | Delta::Mkdir { parent, .. }
        | Delta::Symlink { parent, .. }
        | Delta::Mknod { parent, .. } => pick(parent),
        Delta::Unlink { parent, .. } | Delta::Rmdir { parent, .. } | Delta::MultipartBegin { parent, .. } => {
            pick(parent)
        }
        Delta::Link { inode, parent, .. } => {
            pick(inode);
            pick(parent);
        }
        Delta::Rename {
            from_parent, to_parent, ..
        } => {
            pick(from_parent);
            pick(to_parent);
        }
        Delta::WriteExtents { inode, .. }
        | Delta::AppendExtents { inode, .. }
        | Delta::WriteInline { inode, .. }
        | Delta::Truncate { inode, .. } => pick(inode),
        Delta::SetAttr { inode, .. } | Delta::SetXattr { inode, .. } | Delta::RemoveXattr { inode, .. } => pick(inode),
        Delta::ObjectPut { parent, condition, .. } | Delta::ObjectDelete { parent, condition, .. } => {
            pick(parent);
            condition_inode(condition, &pick);
        }
        Delta::MultipartComplete {
            condition,
            upload_id,
            parts,
            ..
        } => {
            condition_inode(condition, &pick);
            pick_upload(upload_id, state);
            if parts.first().is_some_and(|part| part.etag == EVERY_PART) {
                let stored = state.list_parts(*upload_id, 0, usize::MAX).unwrap_or_default();
                *parts = stored
                    .into_iter()
                    .map(|part| CompletedPart {
                        part_number: part.part_number,
                        etag: part.etag,
                    })
                    .collect();
            }
        }
        Delta::MultipartPart { upload_id, .. } | Delta::MultipartAbort { upload_id } => pick_upload(upload_id, state),
        Delta::AsCaller { directory, delta, .. } => {
            pick(directory);
            **delta = resolve(delta, state);
        }
        Delta::Noop | Delta::SetQuota { .. } | Delta::SetReadOnly { .. } => {}
    }
    match &mut delta {
        Delta::Unlink { parent, name, .. } | Delta::Rmdir { parent, name, .. } => pick_name(*parent, name, state),
        Delta::ObjectDelete { parent, name, .. } => pick_name(*parent, name, state),
        Delta::Rename {
            from_parent, from_name, ..
        } => pick_name(*from_parent, from_name, state),
        _ => {}
    }
    delta
}

fn pick_upload(upload_id: &mut UploadId, state: &NamespaceState) {
    if upload_id.0 >= SELECT_UPLOAD {
        let uploads = state.list_multipart(None, usize::MAX);
        if !uploads.is_empty() {
            *upload_id = uploads[(upload_id.0 - SELECT_UPLOAD) as usize % uploads.len()].upload_id;
        }
    }
}

fn pick_name(parent: InodeId, name: &mut Vec<u8>, state: &NamespaceState) {
    if name.len() == 2 && name[0] == EXISTING_NAME {
        let entries = state.readdir(parent, 0, usize::MAX).unwrap_or_default();
        *name = match entries.get(usize::from(name[1]) % entries.len().max(1)) {
            Some(entry) => entry.name.clone(),
            None => b"a".to_vec(),
        };
    }
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        60 => (0i64..100).prop_map(|seconds| Timestamp::new(seconds, 0)),
        1 => Just(Timestamp::new(0, 1_000_000_000)),
    ]
}

fn new_attributes() -> impl Strategy<Value = NewAttributes> {
    (prop_oneof![40 => Just(0o644u32), 1 => Just(0o10_000u32)], timestamp()).prop_map(|(mode, time)| NewAttributes {
        mode,
        uid: 1,
        gid: 2,
        time,
    })
}

fn extent() -> impl Strategy<Value = Extent> {
    let chunk_offset = prop_oneof![40 => 0u64..100, 1 => Just(u64::MAX - 5)];
    let length = prop_oneof![40 => 1u64..40, 1 => Just(0u64)];
    (
        0u8..4,
        prop_oneof![30 => 0usize..16, 1 => Just(17usize)],
        chunk_offset,
        length,
    )
        .prop_map(|(tag, key_bytes, chunk_offset_bytes, length_bytes)| Extent {
            chunk_locator: [tag; 32],
            wrapped_key: vec![tag; key_bytes],
            chunk_offset_bytes,
            length_bytes,
        })
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![40 => 0u64..200, 1 => Just(u64::MAX - 3), 1 => Just(1u64 << 20)]
}

fn meta() -> impl Strategy<Value = ObjectMeta> {
    prop_oneof![
        30 => prop::sample::select(vec!["e1", "e2"]).prop_map(|etag| ObjectMeta { etag: etag.into(), ..ObjectMeta::default() }),
        1 => Just(ObjectMeta { content_type: "x".repeat(300), ..ObjectMeta::default() }),
    ]
}

fn condition() -> impl Strategy<Value = ObjectCondition> {
    prop_oneof![
        6 => Just(ObjectCondition::Any),
        1 => Just(ObjectCondition::IfAbsent),
        1 => prop::sample::select(vec!["e1", "e2"]).prop_map(|etag| ObjectCondition::IfEtagMatches(etag.into())),
        1 => (inode(), 1u64..4).prop_map(|(inode, generation)| ObjectCondition::IfVersion { inode, generation }),
    ]
}

fn namespace() -> impl Strategy<Value = NamespaceId> {
    prop_oneof![20 => Just(NamespaceId(0)), 1 => Just(NamespaceId(1))]
}

fn create_delta() -> impl Strategy<Value = Delta> {
    let fields = (directory(), name(), new_attributes(), any::<bool>());
    fields.prop_map(|(parent, name, attributes, exclusive)| Delta::Create {
        parent,
        name,
        attributes,
        exclusive,
    })
}

fn mkdir_delta() -> impl Strategy<Value = Delta> {
    let fields = (directory(), name(), new_attributes());
    fields.prop_map(|(parent, name, attributes)| Delta::Mkdir {
        parent,
        name,
        attributes,
    })
}

fn symlink_delta() -> impl Strategy<Value = Delta> {
    let target = prop_oneof![Just(b"t".to_vec()), Just(vec![]), Just(vec![b't'; 70])];
    let fields = (directory(), name(), target, new_attributes());
    fields.prop_map(|(parent, name, target, attributes)| Delta::Symlink {
        parent,
        name,
        target,
        attributes,
    })
}

fn mknod_delta() -> impl Strategy<Value = Delta> {
    let kind = prop_oneof![
        Just(FileKind::Fifo),
        Just(FileKind::Socket),
        Just(FileKind::CharDevice { rdev: 0x0103 }),
        Just(FileKind::BlockDevice { rdev: 0x0801 }),
        Just(FileKind::File),
    ];
    let fields = (directory(), name(), kind, new_attributes());
    fields.prop_map(|(parent, name, kind, attributes)| Delta::Mknod {
        parent,
        name,
        kind,
        attributes,
    })
}

fn link_delta() -> impl Strategy<Value = Delta> {
    let fields = (namespace(), inode(), directory(), name(), timestamp());
    fields.prop_map(|(source_namespace, inode, parent, name, ctime)| Delta::Link {
        source_namespace,
        inode,
        parent,
        name,
        ctime,
    })
}

fn unlink_delta() -> impl Strategy<Value = Delta> {
    let fields = (directory(), existing_name(), timestamp());
    fields.prop_map(|(parent, name, ctime)| Delta::Unlink { parent, name, ctime })
}

fn rmdir_delta() -> impl Strategy<Value = Delta> {
    let fields = (directory(), existing_name(), timestamp());
    fields.prop_map(|(parent, name, ctime)| Delta::Rmdir { parent, name, ctime })
}

fn rename_delta() -> impl Strategy<Value = Delta> {
    let flags = (any::<bool>(), any::<bool>(), 0u8..4).prop_map(|(no_replace, exchange, gate)| RenameFlags {
        no_replace: no_replace && gate == 0,
        exchange: exchange && gate == 1,
    });
    let fields = (
        namespace(),
        directory(),
        existing_name(),
        directory(),
        name(),
        flags,
        timestamp(),
    );
    fields.prop_map(
        |(source_namespace, from_parent, from_name, to_parent, to_name, flags, ctime)| Delta::Rename {
            source_namespace,
            from_parent,
            from_name,
            to_parent,
            to_name,
            flags,
            ctime,
        },
    )
}

fn entry_delta() -> impl Strategy<Value = Delta> {
    prop_oneof![
        4 => create_delta(),
        3 => mkdir_delta(),
        1 => symlink_delta(),
        1 => mknod_delta(),
        2 => link_delta(),
        2 => unlink_delta(),
        2 => rmdir_delta(),
        4 => rename_delta(),
        1 => Just(Delta::Noop),
        1 => policy_delta(),
    ]
}

/// Quotas near what the random sequences reach, and maintenance switched on and off.
fn policy_delta() -> impl Strategy<Value = Delta> {
    let limit = prop_oneof![2 => Just(None), 1 => (0u64..2000).prop_map(Some)];
    let files = prop_oneof![2 => Just(None), 1 => (0u64..30).prop_map(Some)];
    prop_oneof![
        3 => (limit, files).prop_map(|(bytes_max, files_max)| Delta::SetQuota { bytes_max, files_max }),
        1 => Just(Delta::SetReadOnly { read_only: true }),
        2 => Just(Delta::SetReadOnly { read_only: false }),
    ]
}

fn expected_generation() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![4 => Just(None), 1 => (1u64..4).prop_map(Some)]
}

fn write_extents_delta() -> impl Strategy<Value = Delta> {
    let extents = prop::collection::vec(extent(), 0..6);
    let fields = (
        inode(),
        offset(),
        extents,
        0u64..400,
        timestamp(),
        expected_generation(),
    );
    fields.prop_map(|(inode, offset_bytes, extents, extra, mtime, expected_generation)| {
        let length: u64 = extents.iter().map(|extent| extent.length_bytes).sum();
        let end = offset_bytes.saturating_add(length);
        let size_bytes = if extra == 0 { 0 } else { end.saturating_add(extra % 50) };
        Delta::WriteExtents {
            inode,
            offset_bytes,
            extents,
            size_bytes,
            mtime,
            expected_generation,
        }
    })
}

fn append_extents_delta() -> impl Strategy<Value = Delta> {
    let fields = (inode(), prop::collection::vec(extent(), 0..4), timestamp());
    fields.prop_map(|(inode, extents, mtime)| Delta::AppendExtents { inode, extents, mtime })
}

/// Inline data as the shard sees it: a length and opaque sealed bytes, both sometimes out
/// of bounds.
fn sealed_inline() -> impl Strategy<Value = SealedInline> {
    let length = prop_oneof![0u64..70, Just(u64::MAX)];
    let sealed = prop::collection::vec(any::<u8>(), 0..140);
    (length, sealed).prop_map(|(length_bytes, sealed)| SealedInline { length_bytes, sealed })
}

fn write_inline_delta() -> impl Strategy<Value = Delta> {
    let fields = (inode(), sealed_inline(), timestamp(), expected_generation());
    fields.prop_map(|(inode, data, mtime, expected_generation)| Delta::WriteInline {
        inode,
        data,
        mtime,
        expected_generation,
    })
}

fn truncate_delta() -> impl Strategy<Value = Delta> {
    let fields = (inode(), offset(), timestamp(), expected_generation());
    fields.prop_map(|(inode, size_bytes, mtime, expected_generation)| Delta::Truncate {
        inode,
        size_bytes,
        mtime,
        expected_generation,
    })
}

fn set_attr_delta() -> impl Strategy<Value = Delta> {
    let changes = (
        prop::option::of(prop_oneof![Just(0o600u32), Just(0o20_000u32)]),
        prop::option::of(0u32..3),
        prop::option::of(offset()),
        prop::option::of(timestamp()),
    )
        .prop_map(|(mode, uid, size_bytes, mtime)| AttrChanges {
            mode,
            uid,
            gid: None,
            size_bytes,
            atime: None,
            mtime,
        });
    let guard = prop::option::of(prop_oneof![
        (1u64..4).prop_map(SetAttrGuard::Generation),
        timestamp().prop_map(SetAttrGuard::Ctime),
    ]);
    let fields = (inode(), changes, timestamp(), guard);
    fields.prop_map(|(inode, changes, ctime, guard)| Delta::SetAttr {
        inode,
        changes,
        ctime,
        guard,
    })
}

fn set_xattr_delta() -> impl Strategy<Value = Delta> {
    let mode = prop::sample::select(vec![XattrSetMode::Either, XattrSetMode::Create, XattrSetMode::Replace]);
    let value = prop_oneof![8 => Just(vec![1u8]), 1 => Just(vec![0u8; 40])];
    let fields = (inode(), xattr_name(), value, mode, timestamp());
    fields.prop_map(|(inode, name, value, mode, ctime)| Delta::SetXattr {
        inode,
        name,
        value,
        mode,
        ctime,
    })
}

fn remove_xattr_delta() -> impl Strategy<Value = Delta> {
    let fields = (inode(), xattr_name(), timestamp());
    fields.prop_map(|(inode, name, ctime)| Delta::RemoveXattr { inode, name, ctime })
}

fn data_delta() -> impl Strategy<Value = Delta> {
    prop_oneof![
        4 => write_extents_delta(),
        1 => append_extents_delta(),
        2 => write_inline_delta(),
        2 => truncate_delta(),
        2 => set_attr_delta(),
        2 => set_xattr_delta(),
        2 => remove_xattr_delta(),
    ]
}

fn upload() -> impl Strategy<Value = UploadId> {
    prop_oneof![
        6 => (0u64..8).prop_map(|k| UploadId(SELECT_UPLOAD + k)),
        1 => (0u64..5).prop_map(UploadId),
    ]
}

fn part_etag() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["p1", "p2"]).prop_map(String::from)
}

fn object_put_delta() -> impl Strategy<Value = Delta> {
    let content = prop_oneof![
        sealed_inline().prop_map(ObjectContent::Inline),
        prop::collection::vec(extent(), 0..6).prop_map(ObjectContent::Extents),
    ];
    let fields = (directory(), name(), content, meta(), new_attributes(), condition());
    fields.prop_map(
        |(parent, name, content, meta, attributes, condition)| Delta::ObjectPut {
            parent,
            name,
            content,
            meta,
            attributes,
            condition,
        },
    )
}

fn object_delete_delta() -> impl Strategy<Value = Delta> {
    let fields = (directory(), existing_name(), condition(), timestamp());
    fields.prop_map(|(parent, name, condition, ctime)| Delta::ObjectDelete {
        parent,
        name,
        condition,
        ctime,
    })
}

fn multipart_begin_delta() -> impl Strategy<Value = Delta> {
    let fields = (directory(), name(), meta(), timestamp());
    fields.prop_map(|(parent, name, meta, initiated)| Delta::MultipartBegin {
        parent,
        name,
        meta,
        initiated,
    })
}

fn multipart_part_delta() -> impl Strategy<Value = Delta> {
    let part_number = prop_oneof![8 => 1u32..6, 1 => Just(0u32), 1 => Just(6u32)];
    let fields = (
        upload(),
        part_number,
        part_etag(),
        prop::collection::vec(extent(), 0..4),
    );
    fields.prop_map(|(upload_id, part_number, etag, extents)| Delta::MultipartPart {
        upload_id,
        part_number,
        etag,
        extents,
    })
}

fn multipart_complete_delta() -> impl Strategy<Value = Delta> {
    let random_parts = prop::collection::vec((0u32..7, part_etag()), 0..4).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(part_number, etag)| CompletedPart { part_number, etag })
            .collect::<Vec<_>>()
    });
    // Mostly "every stored part", resolved when applied.
    let every_part = vec![CompletedPart {
        part_number: 0,
        etag: EVERY_PART.into(),
    }];
    let completed = prop_oneof![2 => Just(every_part), 1 => random_parts];
    let fields = (upload(), completed, new_attributes(), condition());
    fields.prop_map(|(upload_id, parts, attributes, condition)| Delta::MultipartComplete {
        upload_id,
        parts,
        etag: "m".into(),
        attributes,
        condition,
    })
}

fn object_delta() -> impl Strategy<Value = Delta> {
    prop_oneof![
        3 => object_put_delta(),
        2 => object_delete_delta(),
        2 => multipart_begin_delta(),
        6 => multipart_part_delta(),
        2 => multipart_complete_delta(),
        1 => upload().prop_map(|upload_id| Delta::MultipartAbort { upload_id }),
    ]
}

fn delta() -> impl Strategy<Value = Delta> {
    prop_oneof![
        5 => entry_delta(),
        4 => data_delta(),
        3 => object_delta(),
        1 => as_caller_delta(),
    ]
}

/// A change made as a caller (root, the owner of everything here, or a stranger) who
/// needs some bits on a directory; now and then nested, which is refused.
fn as_caller_delta() -> impl Strategy<Value = Delta> {
    let caller = prop_oneof![Just(0u32), Just(1_000u32), Just(4_242u32)].prop_map(|uid| CallerIds {
        uid,
        gid: uid,
        gids: vec![uid],
    });
    (caller, inode(), 0u32..8, entry_delta(), 0u8..16).prop_map(|(caller, directory, mask, delta, nest)| {
        let wrapped = Delta::AsCaller {
            caller: caller.clone(),
            directory,
            mask,
            delta: Box::new(delta),
        };
        match nest {
            0 => Delta::AsCaller {
                caller,
                directory,
                mask,
                delta: Box::new(wrapped),
            },
            _ => wrapped,
        }
    })
}

fn check(state: &NamespaceState) -> Result<(), TestCaseError> {
    state
        .check_invariants()
        .map_err(|error| TestCaseError::fail(format!("{error}")))
}

/// What a cache could hold of a state: every reachable inode's attributes and every
/// directory entry.
type Visible = (
    BTreeMap<InodeId, kiseki_namespace::Attributes>,
    BTreeMap<(InodeId, Vec<u8>), InodeId>,
);

fn visible(state: &NamespaceState) -> Visible {
    let (directories, others) = live_inodes(state);
    let mut attributes = BTreeMap::new();
    for inode in directories.iter().chain(others.iter()) {
        attributes.insert(*inode, state.getattr(*inode).unwrap());
    }
    let mut entries = BTreeMap::new();
    for directory in &directories {
        for entry in state.readdir(*directory, 0, usize::MAX).unwrap() {
            entries.insert((*directory, entry.name.clone()), entry.inode);
        }
    }
    (attributes, entries)
}

/// The first key whose value differs between `before` and `after` (added, removed or
/// changed) and that `announced` does not hold.
fn first_unannounced<'a, K: Ord, V: PartialEq>(
    before: &'a BTreeMap<K, V>,
    after: &'a BTreeMap<K, V>,
    announced: &BTreeSet<K>,
) -> Option<&'a K> {
    before
        .keys()
        .chain(after.keys())
        .find(|key| before.get(*key) != after.get(*key) && !announced.contains(*key))
}

/// I-N11: what changed between `before` and `after` is named by the events of `index`
/// (when the ring still holds them all).
fn changes_are_announced(
    before: &Visible,
    after: &Visible,
    state: &NamespaceState,
    index: u64,
) -> Result<(), TestCaseError> {
    let Ok(events) = state.events_since(index) else {
        return Ok(());
    };
    let inodes: BTreeSet<InodeId> = events.iter().flat_map(|event| event.changed_inodes()).collect();
    let entries: BTreeSet<(InodeId, Vec<u8>)> = events
        .iter()
        .flat_map(|event| event.changed_entries().map(|(parent, name)| (parent, name.to_vec())))
        .collect();
    let changed_inode = first_unannounced(&before.0, &after.0, &inodes);
    prop_assert!(
        changed_inode.is_none(),
        "inode {:?} changed unannounced: {:?}",
        changed_inode,
        events
    );
    let changed_entry = first_unannounced(&before.1, &after.1, &entries);
    prop_assert!(
        changed_entry.is_none(),
        "entry {:?} changed unannounced: {:?}",
        changed_entry,
        events
    );
    Ok(())
}

/// Applies `deltas` to two replicas (and, from `snapshot_at`, to a restored copy) and
/// checks that they agree step by step and that the invariants hold.
fn replicas_agree(deltas: &[Delta], snapshot_at: usize) -> Result<(), TestCaseError> {
    let config = NamespaceConfig::tiny();
    let mut replica = NamespaceState::new(config.clone()).unwrap();
    let mut other = NamespaceState::new(config).unwrap();
    let mut restored: Option<NamespaceState> = None;
    let mut frozen = None;
    for (position, delta) in deltas.iter().enumerate() {
        let index = position as u64 + 1;
        let delta = &resolve(delta, &replica);
        let digest_before = replica.state_digest();
        let visible_before = visible(&replica);
        let result = replica.apply(index, delta);
        prop_assert_eq!(&result, &other.apply(index, delta));
        match &result {
            Err(_) => prop_assert_eq!(replica.state_digest(), digest_before, "refused {:?}", delta),
            Ok(applied) => {
                changes_are_announced(&visible_before, &visible(&replica), &replica, index)?;
                for change in &applied.chunk_references {
                    prop_assert_eq!(replica.chunk_reference_count(&change.locator), change.after);
                    prop_assert_ne!(change.before, change.after);
                }
            }
        }
        prop_assert_eq!(replica.last_applied_index(), index);
        check(&replica)?;
        if let Some(restored) = restored.as_mut() {
            prop_assert_eq!(&restored.apply(index, delta), &result);
        }
        if position == snapshot_at {
            let snapshot = replica.snapshot();
            let decoded = NamespaceSnapshot::decode(&snapshot.encode()).unwrap();
            let state = NamespaceState::restore(decoded).unwrap();
            prop_assert_eq!(state.state_digest(), replica.state_digest());
            restored = Some(state);
            frozen = Some((snapshot, replica.state_digest()));
        }
    }
    prop_assert_eq!(replica.state_digest(), other.state_digest());
    prop_assert_eq!(replica.snapshot().encode(), other.snapshot().encode());
    if let Some(restored) = restored {
        prop_assert_eq!(restored.state_digest(), replica.state_digest());
    }
    if let Some((snapshot, digest)) = frozen {
        // The snapshot taken mid-way did not move with the applies that followed.
        prop_assert_eq!(NamespaceState::restore(snapshot).unwrap().state_digest(), digest);
    }
    Ok(())
}

/// Decodes random bytes as a delta (applying it if it decodes) and as a snapshot.
fn decode_random(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(delta) = Delta::decode(bytes) {
        let mut state = NamespaceState::new(NamespaceConfig::tiny()).unwrap();
        let _ = state.apply(1, &delta);
        check(&state)?;
    }
    if let Ok(snapshot) = NamespaceSnapshot::decode(bytes) {
        let _ = NamespaceState::restore(snapshot);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_agree_and_invariants_hold(deltas in prop::collection::vec(delta(), 1..120), at in 0usize..120) {
        replicas_agree(&deltas, at)?;
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        decode_random(&bytes)?;
    }
}

/// One operation of the file-data model test.
#[derive(Clone, Debug)]
enum FileOp {
    Write { offset: u64, lengths: Vec<u64>, extra: u64 },
    Inline { offset: u64, data: Vec<u8> },
    Truncate { size: u64 },
}

fn file_op() -> impl Strategy<Value = FileOp> {
    let write = (0u64..300, prop::collection::vec(1u64..60, 1..4), 0u64..30);
    let inline = (0u64..64, prop::collection::vec(1u8..255, 0..30));
    prop_oneof![
        4 => write.prop_map(|(offset, lengths, extra)| FileOp::Write { offset, lengths, extra }),
        2 => inline.prop_map(|(offset, data)| FileOp::Inline { offset, data }),
        2 => (0u64..400).prop_map(|size| FileOp::Truncate { size }),
    ]
}

/// How a successful operation changes the model.
type ModelUpdate = Box<dyn Fn(&mut Vec<u8>)>;

/// The plaintext byte at `position` of chunk `tag` (never 0, so holes stand out).
fn chunk_byte(tag: u8, position: u64) -> u8 {
    (u64::from(tag).wrapping_mul(31).wrapping_add(position.wrapping_mul(7)) % 255) as u8 + 1
}

/// The delta for one operation and the change it makes to the model if applied; `model`
/// is the file's bytes now and `inline_bytes` how many of them are inline.
fn file_delta(
    file: InodeId,
    op: FileOp,
    mtime: Timestamp,
    next_tag: &mut u8,
    model: &[u8],
    inline_bytes: u64,
) -> (Delta, ModelUpdate) {
    match op {
        FileOp::Write { offset, lengths, extra } => {
            let mut extents = Vec::new();
            let mut bytes = Vec::new();
            for length in lengths {
                *next_tag = next_tag.wrapping_add(1);
                let tag = *next_tag;
                let chunk_offset_bytes = u64::from(tag % 5);
                extents.push(Extent {
                    chunk_locator: [tag; 32],
                    wrapped_key: vec![],
                    chunk_offset_bytes,
                    length_bytes: length,
                });
                bytes.extend((0..length).map(|at| chunk_byte(tag, chunk_offset_bytes + at)));
            }
            let end = offset + bytes.len() as u64;
            let size_bytes = end + extra;
            let delta = Delta::WriteExtents {
                inode: file,
                offset_bytes: offset,
                extents,
                size_bytes,
                mtime,
                expected_generation: None,
            };
            let update = move |model: &mut Vec<u8>| {
                if (model.len() as u64) < size_bytes {
                    model.resize(size_bytes as usize, 0);
                }
                model[offset as usize..end as usize].copy_from_slice(&bytes);
            };
            (delta, Box::new(update))
        }
        FileOp::Inline { offset, data } => {
            // As a client does: the new seal holds the file's bytes up to the end of the
            // write (or of the old inline bytes, if further) with `data` written over them.
            // The shard treats the seal as opaque, so the plaintext stands in for it here.
            let end = (offset as usize + data.len()).max(inline_bytes as usize);
            let mut plaintext = model[..end.min(model.len())].to_vec();
            plaintext.resize(end, 0);
            plaintext[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            let delta = Delta::WriteInline {
                inode: file,
                data: SealedInline {
                    length_bytes: end as u64,
                    sealed: plaintext,
                },
                mtime,
                expected_generation: None,
            };
            let update = move |model: &mut Vec<u8>| {
                let end = offset as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].copy_from_slice(&data);
            };
            (delta, Box::new(update))
        }
        FileOp::Truncate { size } => {
            let delta = Delta::Truncate {
                inode: file,
                size_bytes: size,
                mtime,
                expected_generation: None,
            };
            (
                delta,
                Box::new(move |model: &mut Vec<u8>| model.resize(size as usize, 0)),
            )
        }
    }
}

/// The bytes `read_extents` describes for `[start, start + length)`, checking that the
/// pieces are contiguous.
fn read_bytes(state: &NamespaceState, file: InodeId, start: u64, length: u64) -> Result<Vec<u8>, TestCaseError> {
    let mut read = Vec::new();
    for piece in state.read_extents(file, start, length).unwrap() {
        let (offset_bytes, bytes) = match piece {
            ReadPiece::Inline {
                offset_bytes,
                length_bytes,
                data,
            } => {
                prop_assert!(offset_bytes + length_bytes <= data.length_bytes);
                let range = offset_bytes as usize..(offset_bytes + length_bytes) as usize;
                (offset_bytes, data.sealed[range].to_vec())
            }
            ReadPiece::Extent { offset_bytes, extent } => {
                let tag = extent.chunk_locator[0];
                let range = 0..extent.length_bytes;
                (
                    offset_bytes,
                    range
                        .map(|at| chunk_byte(tag, extent.chunk_offset_bytes + at))
                        .collect(),
                )
            }
            ReadPiece::Hole {
                offset_bytes,
                length_bytes,
            } => (offset_bytes, vec![0; length_bytes as usize]),
        };
        prop_assert_eq!(offset_bytes, start + read.len() as u64);
        read.extend(bytes);
    }
    Ok(read)
}

/// Applies file operations to one file and to a byte model; they must always agree.
fn file_matches_model(ops: &[FileOp]) -> Result<(), TestCaseError> {
    let config = NamespaceConfig {
        extents_per_file_max: 10_000,
        ..NamespaceConfig::tiny()
    };
    let mut state = NamespaceState::new(config).unwrap();
    let create = Delta::Create {
        parent: InodeId::ROOT,
        name: b"f".to_vec(),
        attributes: NewAttributes {
            mode: 0o644,
            uid: 0,
            gid: 0,
            time: Timestamp::default(),
        },
        exclusive: true,
    };
    let file = state.apply(1, &create).unwrap().inode.unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut next_tag: u8 = 0;
    for (position, op) in ops.iter().enumerate() {
        let index = position as u64 + 2;
        let inline_bytes = match state.read_extents(file, 0, u64::MAX).unwrap().first() {
            Some(ReadPiece::Inline { length_bytes, .. }) => *length_bytes,
            _ => 0,
        };
        let time = Timestamp::new(index as i64, 0);
        let (delta, update) = file_delta(file, op.clone(), time, &mut next_tag, &model, inline_bytes);
        if state.apply(index, &delta).is_ok() {
            update(&mut model);
        }
        check(&state)?;
        prop_assert_eq!(state.getattr(file).unwrap().size_bytes, model.len() as u64);
        prop_assert_eq!(&read_bytes(&state, file, 0, u64::MAX)?, &model);
        // A window in the middle reads the same bytes.
        let (start, length) = (model.len() / 3, model.len() / 2);
        let window = read_bytes(&state, file, start as u64, length as u64)?;
        prop_assert_eq!(&window[..], &model[start..start + length]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn file_data_matches_a_byte_model(ops in prop::collection::vec(file_op(), 1..40)) {
        file_matches_model(&ops)?;
    }
}
