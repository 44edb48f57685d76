//! Snapshots: the canonical encoding of a state, and the state digest built on it.
//!
//! Encoding (postcard): the format version, the last applied index, then the body: the
//! configuration, the id counters and every primary map as a sequence of `(key, value)`
//! pairs in key order, then the policy (quota and maintenance; version 2 on). Derived
//! tables (readdir cookies index, chunk reference counts, totals) are not encoded;
//! decoding rebuilds them, and a restore checks every invariant.
//! Because all maps iterate in key order, equal states encode to identical bytes.

use std::sync::Arc;

use imbl::OrdMap;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};

use crate::config::NamespaceConfig;
use crate::delta::{decode, encode};
use crate::error::NamespaceError;
use crate::tables::{
    CookieRecord, DentryKey, DentryRecord, InodeRecord, NamespacePolicy, PartRecord, Tables, Totals, UploadRecord,
};
use crate::types::{Extent, FileKind, InodeId, UploadId};
use crate::view::PinnedView;

/// The snapshot encoding's version. Version 2 appends the namespace policy (quota,
/// maintenance) after the body; version 1 snapshots still decode, with no policy.
/// Version 3 stores a file's inline data sealed (`Option<SealedInline>`); before it no
/// writer stored inline data, and the always-empty byte string of versions 1 and 2
/// encodes exactly as `None` does, so they decode unchanged.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;

/// A snapshot of a namespace state at one index: O(1) to take (it shares the state's
/// persistent maps), serialized only when encoded. Restore with
/// [`NamespaceState::restore`](crate::NamespaceState::restore).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSnapshot {
    pub(crate) config: NamespaceConfig,
    pub(crate) view: PinnedView,
}

impl NamespaceSnapshot {
    /// The index of the last delta the snapshot includes.
    pub fn last_applied_index(&self) -> u64 {
        self.view.index
    }

    /// The configuration the state runs with.
    pub fn config(&self) -> &NamespaceConfig {
        &self.config
    }

    /// A read-only view of the snapshot's state.
    pub fn view(&self) -> &PinnedView {
        &self.view
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes [`NamespaceSnapshot::encode`]'s output (`Corrupt` on any malformation; the
    /// invariants are checked by `restore`).
    pub fn decode(bytes: &[u8]) -> Result<NamespaceSnapshot, NamespaceError> {
        let (wire, rest): (SnapshotWire, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|error| NamespaceError::corrupt(format!("decode: {error}")))?;
        let policy = match wire.format_version {
            1 if rest.is_empty() => NamespacePolicy::default(),
            1 => return Err(NamespaceError::corrupt(format!("{} trailing bytes", rest.len()))),
            _ => decode(rest)?,
        };
        wire.into_snapshot(policy)
    }
}

/// Serializes a persistent map as a sequence of `(key, value)` pairs in key order.
struct MapSeq<'a, K, V>(&'a OrdMap<K, V>);

impl<K: Serialize + Ord + Clone, V: Serialize + Clone> Serialize for MapSeq<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sequence = serializer.serialize_seq(Some(self.0.len()))?;
        for pair in self.0.iter() {
            sequence.serialize_element(&pair)?;
        }
        sequence.end()
    }
}

/// The body as encoded, borrowed from the tables.
#[derive(Serialize)]
struct BodyRef<'a> {
    config: &'a NamespaceConfig,
    next_inode: u64,
    next_upload: u64,
    inodes: MapSeq<'a, InodeId, Arc<InodeRecord>>,
    dentries: MapSeq<'a, DentryKey, DentryRecord>,
    extents: MapSeq<'a, (InodeId, u64), Extent>,
    xattrs: MapSeq<'a, (InodeId, Vec<u8>), Arc<Vec<u8>>>,
    uploads: MapSeq<'a, UploadId, Arc<UploadRecord>>,
    parts: MapSeq<'a, (UploadId, u32), Arc<PartRecord>>,
}

impl<'a> BodyRef<'a> {
    fn new(config: &'a NamespaceConfig, tables: &'a Tables) -> Self {
        BodyRef {
            config,
            next_inode: tables.next_inode,
            next_upload: tables.next_upload,
            inodes: MapSeq(&tables.inodes),
            dentries: MapSeq(&tables.dentries),
            extents: MapSeq(&tables.extents),
            xattrs: MapSeq(&tables.xattrs),
            uploads: MapSeq(&tables.uploads),
            parts: MapSeq(&tables.parts),
        }
    }
}

/// Key of an extended attribute.
type XattrKey = (InodeId, Vec<u8>);

/// The body as decoded.
#[derive(Deserialize)]
struct BodyOwned {
    config: NamespaceConfig,
    next_inode: u64,
    next_upload: u64,
    inodes: Vec<(InodeId, InodeRecord)>,
    dentries: Vec<(DentryKey, DentryRecord)>,
    extents: Vec<((InodeId, u64), Extent)>,
    xattrs: Vec<(XattrKey, Vec<u8>)>,
    uploads: Vec<(UploadId, UploadRecord)>,
    parts: Vec<((UploadId, u32), PartRecord)>,
}

/// The whole snapshot as decoded.
#[derive(Deserialize)]
struct SnapshotWire {
    format_version: u32,
    last_applied_index: u64,
    body: BodyOwned,
}

impl Serialize for NamespaceSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = BodyRef::new(&self.config, &self.view.tables);
        (SNAPSHOT_FORMAT_VERSION, self.view.index, body, self.view.tables.policy).serialize(serializer)
    }
}

/// Builds a persistent map from pairs that must be in strictly ascending key order.
fn ordered_map<K: Ord + Clone, V: Clone, W>(
    pairs: Vec<(K, W)>,
    wrap: impl Fn(W) -> V,
    what: &str,
) -> Result<OrdMap<K, V>, NamespaceError> {
    if pairs.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(NamespaceError::corrupt(format!(
            "snapshot {what} are not in strictly ascending key order"
        )));
    }
    Ok(pairs.into_iter().map(|(key, value)| (key, wrap(value))).collect())
}

impl SnapshotWire {
    fn into_snapshot(self, policy: NamespacePolicy) -> Result<NamespaceSnapshot, NamespaceError> {
        if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&self.format_version) {
            return Err(NamespaceError::corrupt(format!(
                "snapshot format version {}",
                self.format_version
            )));
        }
        let body = self.body;
        let mut tables = Tables {
            inodes: ordered_map(body.inodes, Arc::new, "inodes")?,
            dentries: ordered_map(body.dentries, |entry| entry, "dentries")?,
            cookies: OrdMap::new(),
            extents: ordered_map(body.extents, |extent| extent, "extents")?,
            xattrs: ordered_map(body.xattrs, Arc::new, "xattrs")?,
            uploads: ordered_map(body.uploads, Arc::new, "uploads")?,
            parts: ordered_map(body.parts, Arc::new, "parts")?,
            chunk_refs: OrdMap::new(),
            next_inode: body.next_inode,
            next_upload: body.next_upload,
            totals: Totals::default(),
            policy,
        };
        rebuild_derived(&mut tables)?;
        Ok(NamespaceSnapshot {
            config: body.config,
            view: PinnedView {
                tables,
                index: self.last_applied_index,
            },
        })
    }
}

/// Recomputes the derived tables (cookie index, chunk reference counts, totals) from the
/// primary ones. Arithmetic wraps: the input may be hostile, and the invariant check that
/// follows every restore rejects whatever does not add up.
pub(crate) fn rebuild_derived(tables: &mut Tables) -> Result<(), NamespaceError> {
    let (cookies, chunk_refs, totals) = derive(tables)?;
    tables.cookies = cookies;
    tables.chunk_refs = chunk_refs;
    tables.totals = totals;
    Ok(())
}

/// The derived tables of `tables`, computed from its primary maps.
pub(crate) type Derived = (OrdMap<(InodeId, u64), CookieRecord>, OrdMap<[u8; 32], u64>, Totals);

/// Computes the derived tables from the primary ones.
pub(crate) fn derive(tables: &Tables) -> Result<Derived, NamespaceError> {
    let mut cookies = OrdMap::new();
    for ((parent, name), entry) in tables.dentries.iter() {
        let record = CookieRecord {
            name: name.clone(),
            inode: entry.inode,
        };
        if cookies.insert((*parent, entry.cookie), record).is_some() {
            return Err(NamespaceError::corrupt(
                "I-N6: two entries of one directory share a cookie",
            ));
        }
    }
    let mut chunk_refs: OrdMap<[u8; 32], u64> = OrdMap::new();
    let mut totals = Totals::default();
    for record in tables.inodes.values() {
        totals.account_inode(record, true);
    }
    let mut count = |locator: [u8; 32]| {
        let entry = chunk_refs.entry(locator).or_insert(0);
        *entry = entry.wrapping_add(1);
    };
    for extent in tables.extents.values() {
        count(extent.chunk_locator);
        totals.extents = totals.extents.wrapping_add(1);
        totals.extent_bytes = totals.extent_bytes.wrapping_add(extent.length_bytes);
    }
    for part in tables.parts.values() {
        for extent in &part.extents {
            count(extent.chunk_locator);
        }
        totals.multipart_parts = totals.multipart_parts.wrapping_add(1);
        totals.multipart_bytes = totals.multipart_bytes.wrapping_add(part.size_bytes);
    }
    Ok((cookies, chunk_refs, totals))
}

/// The state digest: BLAKE3 over the canonical encoding of the body (configuration, id
/// counters, primary maps), without the last applied index, so replicas that applied the
/// same deltas agree, and a refused delta or a `Noop` does not change it.
pub(crate) fn digest(config: &NamespaceConfig, tables: &Tables) -> [u8; 32] {
    blake3::hash(&encode(&(BodyRef::new(config, tables), tables.policy))).into()
}

/// Whether a kind and a body agree (for the invariant check).
pub(crate) fn kind_matches(record: &InodeRecord) -> bool {
    matches!(
        (record.kind(), &record.body),
        (FileKind::File, crate::tables::InodeBody::File { .. })
            | (FileKind::Directory, crate::tables::InodeBody::Directory(_))
            | (FileKind::Symlink, crate::tables::InodeBody::Symlink { .. })
            | (
                FileKind::Fifo | FileKind::Socket | FileKind::CharDevice { .. } | FileKind::BlockDevice { .. },
                crate::tables::InodeBody::Special
            )
    )
}
