//! Log records: what a replica asks its host to make durable, and replays at recovery.
//!
//! Two kinds, each framed by [`codec`] (magic `KSCR`, version, CRC32C):
//! - an **operations record**: the storage mutations omnipaxos made since the previous
//!   record (group commit: many proposals and messages, one record);
//! - a **snapshot record**: a state machine snapshot at an applied index, the
//!   deduplication table and the whole omnipaxos storage (promise, accepted round,
//!   decided and compacted index, the retained log, the stop-sign). It supersedes every
//!   earlier record, which the host may drop once it is durable (`Action::Trim`).
//!
//! Every record names its shard, node, configuration and sequence number; recovery
//! refuses records of another owner or out of order.

use crate::{
    codec,
    sessions::SessionImage,
    storage::{LogOp, StorageState},
};
use serde::{Deserialize, Serialize};

/// Who wrote a record, and its place in the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordHeader {
    /// The shard.
    pub shard_id: u64,
    /// The node (omnipaxos pid).
    pub node_id: u64,
    /// The omnipaxos configuration.
    pub configuration_id: u32,
    /// Sequence number, from 1, increasing by one per record of this replica.
    pub record_seq: u64,
}

/// A state machine snapshot with the replica state that goes with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Image {
    /// Log entries (of this configuration) below this index are applied.
    pub applied_idx: u64,
    /// Entries of earlier configurations: the global index of local entry `i` is
    /// `index_base + i + 1`.
    pub index_base: u64,
    /// `StateMachine::snapshot`.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// The deduplication table.
    pub sessions: Vec<SessionImage>,
}

/// What a snapshot record holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord<C> {
    /// The state machine side.
    pub image: Image,
    /// The omnipaxos side.
    pub storage: StorageState<C>,
}

/// The body of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum RecordBody<C> {
    /// Storage mutations, to replay in order.
    Ops(Vec<LogOp<C>>),
    /// A full snapshot, superseding every earlier record.
    Snapshot(Box<SnapshotRecord<C>>),
}

#[derive(Serialize)]
struct RecordRef<'a, C> {
    header: RecordHeader,
    body: &'a RecordBody<C>,
}

#[derive(Deserialize)]
struct RecordOwned<C> {
    header: RecordHeader,
    body: RecordBody<C>,
}

/// Encodes a record.
pub(crate) fn encode<C: Serialize>(header: RecordHeader, body: &RecordBody<C>) -> Vec<u8> {
    codec::seal(codec::RECORD_MAGIC, &RecordRef { header, body })
}

/// Encodes a snapshot record from borrowed parts: the bytes of
/// `encode(header, &RecordBody::Snapshot(..))`, without first copying the state (which
/// holds every small file's data) into an owned record, into a buffer sized for it.
pub(crate) fn encode_snapshot<C: Serialize>(header: RecordHeader, image: &Image, storage: &StorageState<C>) -> Vec<u8> {
    #[derive(Serialize)]
    struct SnapshotRef<'a, C> {
        image: &'a Image,
        storage: &'a StorageState<C>,
    }
    /// `RecordBody` as postcard writes it: a variant index, then the fields.
    #[derive(Serialize)]
    enum BodyRef<'a, C> {
        #[allow(dead_code)]
        Ops(&'a [LogOp<C>]),
        Snapshot(SnapshotRef<'a, C>),
    }
    #[derive(Serialize)]
    struct Ref<'a, C> {
        header: RecordHeader,
        body: BodyRef<'a, C>,
    }
    let record = Ref {
        header,
        body: BodyRef::Snapshot(SnapshotRef { image, storage }),
    };
    codec::seal_with_capacity(codec::RECORD_MAGIC, &record, image.state.len() + 4096)
}

/// Decodes and checks a record's frame.
pub(crate) fn decode<C: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(RecordHeader, RecordBody<C>), String> {
    let payload = codec::open(codec::RECORD_MAGIC, bytes)?;
    let record: RecordOwned<C> = codec::decode(payload)?;
    Ok((record.header, record.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_encoded_from_borrowed_parts_is_the_owned_encoding() {
        let header = RecordHeader {
            shard_id: 3,
            node_id: 2,
            configuration_id: 1,
            record_seq: 9,
        };
        let image = Image {
            applied_idx: 40,
            index_base: 7,
            state: (0..=255).cycle().take(10_000).collect(),
            sessions: Vec::new(),
        };
        let storage = StorageState::<u64> {
            decided_idx: 40,
            ..StorageState::default()
        };
        let borrowed = encode_snapshot(header, &image, &storage);
        let owned = encode(
            header,
            &RecordBody::Snapshot(Box::new(SnapshotRecord {
                image: image.clone(),
                storage: storage.clone(),
            })),
        );
        assert_eq!(borrowed, owned);
        let (decoded_header, body) = decode::<u64>(&borrowed).unwrap();
        assert_eq!(decoded_header, header);
        assert!(
            matches!(body, RecordBody::Snapshot(snapshot) if snapshot.image == image && snapshot.storage == storage)
        );
    }
}
