//! On-device structures and their encoding: superblock, segment header, batch header,
//! checkpoint header. Pure functions over byte slices; every decoder validates magic,
//! checksum and bounds and answers a [`FormatError`] for anything else, never a panic.
//!
//! Device layout (all integers little-endian, all offsets 4 KiB aligned):
//!
//! ```text
//! 0        superblock (primary)            4096   superblock (mirror)
//! 1 MiB    allocation group 0: [checkpoint slot A][checkpoint slot B][segment 0]...[segment n-1]
//!          allocation group 1: ...
//! segment: [segment header block][batch][batch]...
//! batch:   [header blocks: fixed part + entries][payload blocks, each payload 4 KiB padded]
//! ```

use crate::Locator;

/// Block size of the format: every structure and payload is aligned to it.
pub const BLOCK_BYTES: usize = 4096;
/// Offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 0;
/// Offset of the mirror superblock.
pub const SUPERBLOCK_MIRROR_OFFSET: u64 = 4096;
/// Offset of the first allocation group.
pub const DATA_OFFSET: u64 = 1 << 20;
/// Format version written by this build.
pub const FORMAT_VERSION: u32 = 1;

const SUPERBLOCK_MAGIC: &[u8; 8] = b"KISEKIDV";
const SEGMENT_MAGIC: &[u8; 8] = b"KSKSEGM1";
const BATCH_MAGIC: &[u8; 8] = b"KSKBATC1";
const CHECKPOINT_MAGIC: &[u8; 8] = b"KSKCKPT1";
const CRC_OFFSET: usize = BLOCK_BYTES - 4;

/// Size of the fixed part of a batch header; entries follow.
pub const BATCH_FIXED_BYTES: usize = 64;
/// Size of one batch entry.
pub const BATCH_ENTRY_BYTES: usize = 48;
/// Size of one checkpoint index entry.
pub const CHECKPOINT_ENTRY_BYTES: usize = 48;
/// Size of one checkpoint segment-table entry.
pub const CHECKPOINT_SEGMENT_BYTES: usize = 24;

// The fixed parts must fit their blocks.
const _: () = assert!(BATCH_FIXED_BYTES + BATCH_ENTRY_BYTES <= BLOCK_BYTES);
const _: () = assert!(DATA_OFFSET >= SUPERBLOCK_MIRROR_OFFSET + BLOCK_BYTES as u64);

/// What a decoder found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The magic bytes are not ours.
    #[error("bad magic")]
    BadMagic,
    /// The magic is ours but the checksum does not match.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// Stored CRC32C.
        stored: u32,
        /// Computed CRC32C.
        computed: u32,
    },
    /// A field is out of range.
    #[error("invalid field {field}: {value}")]
    BadField {
        /// Field name.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The buffer is shorter than the structure.
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// Little-endian field writer over a block.
struct Writer<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(bytes: &'a mut [u8]) -> Writer<'a> {
        Writer { bytes, at: 0 }
    }
    fn put(&mut self, data: &[u8]) {
        self.bytes[self.at..self.at + data.len()].copy_from_slice(data);
        self.at += data.len();
    }
    fn u8(&mut self, value: u8) {
        self.put(&[value]);
    }
    fn u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }
    fn skip(&mut self, count: usize) {
        self.bytes[self.at..self.at + count].fill(0);
        self.at += count;
    }
}

/// Little-endian field reader; bounds were checked by the caller.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn skip(&mut self, count: usize) {
        self.at += count;
    }
}

fn need(bytes: &[u8], needed: usize) -> Result<(), FormatError> {
    if bytes.len() < needed {
        Err(FormatError::Truncated {
            needed,
            available: bytes.len(),
        })
    } else {
        Ok(())
    }
}

/// Seals a block: CRC32C of everything before the last 4 bytes, stored in them.
fn seal_block(block: &mut [u8]) {
    let crc = crc32c::crc32c(&block[..CRC_OFFSET]);
    block[CRC_OFFSET..BLOCK_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// Checks magic then the block CRC.
fn check_block(block: &[u8], magic: &[u8; 8]) -> Result<(), FormatError> {
    need(block, BLOCK_BYTES)?;
    if &block[..8] != magic {
        return Err(FormatError::BadMagic);
    }
    let stored = u32::from_le_bytes(block[CRC_OFFSET..BLOCK_BYTES].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&block[..CRC_OFFSET]);
    if stored != computed {
        return Err(FormatError::BadChecksum { stored, computed });
    }
    Ok(())
}

/// Whether a block starts with our superblock magic (to tell "damaged Kiseki" from "foreign").
pub fn has_superblock_magic(block: &[u8]) -> bool {
    block.len() >= 8 && &block[..8] == SUPERBLOCK_MAGIC
}

/// The device's identity and geometry, written at format time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Format version.
    pub format_version: u32,
    /// Random identity of this format of the device; every header carries it.
    pub device_uuid: [u8; 16],
    /// When formatted, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Device size at format time.
    pub device_bytes: u64,
    /// Allocation groups (one per core).
    pub ag_count: u32,
    /// Bytes of each allocation group.
    pub ag_bytes: u64,
    /// Bytes of each segment.
    pub segment_bytes: u64,
    /// Segments in each allocation group.
    pub segments_per_ag: u32,
    /// Bytes of each of the two checkpoint slots of an allocation group.
    pub checkpoint_slot_bytes: u64,
}

impl Superblock {
    /// Encodes into a 4 KiB block.
    pub fn encode(&self, block: &mut [u8]) {
        block[..BLOCK_BYTES].fill(0);
        let mut writer = Writer::new(block);
        writer.put(SUPERBLOCK_MAGIC);
        writer.u32(self.format_version);
        writer.u32(BLOCK_BYTES as u32);
        writer.put(&self.device_uuid);
        writer.u64(self.created_unix_ms);
        writer.u64(self.device_bytes);
        writer.u32(self.ag_count);
        writer.u32(self.segments_per_ag);
        writer.u64(self.ag_bytes);
        writer.u64(self.segment_bytes);
        writer.u64(self.checkpoint_slot_bytes);
        seal_block(block);
    }

    /// Decodes and validates a superblock block.
    pub fn decode(block: &[u8]) -> Result<Superblock, FormatError> {
        check_block(block, SUPERBLOCK_MAGIC)?;
        let mut reader = Reader::new(block);
        reader.skip(8);
        let format_version = reader.u32();
        let block_bytes = reader.u32();
        let superblock = Superblock {
            format_version,
            device_uuid: reader.take(),
            created_unix_ms: reader.u64(),
            device_bytes: reader.u64(),
            ag_count: reader.u32(),
            segments_per_ag: reader.u32(),
            ag_bytes: reader.u64(),
            segment_bytes: reader.u64(),
            checkpoint_slot_bytes: reader.u64(),
        };
        if block_bytes != BLOCK_BYTES as u32 {
            return Err(FormatError::BadField {
                field: "block_bytes",
                value: block_bytes.into(),
            });
        }
        superblock.validate_geometry()?;
        Ok(superblock)
    }

    fn validate_geometry(&self) -> Result<(), FormatError> {
        let block = BLOCK_BYTES as u64;
        let checks: [(&'static str, u64, bool); 5] = [
            (
                "ag_count",
                self.ag_count.into(),
                self.ag_count >= 1 && self.ag_count <= 4096,
            ),
            (
                "segment_bytes",
                self.segment_bytes,
                self.segment_bytes >= 16 * block
                    && self.segment_bytes.is_multiple_of(block)
                    && self.segment_bytes <= 1 << 34,
            ),
            (
                "segments_per_ag",
                self.segments_per_ag.into(),
                self.segments_per_ag >= 2,
            ),
            (
                "checkpoint_slot_bytes",
                self.checkpoint_slot_bytes,
                self.checkpoint_slot_bytes >= 2 * block && self.checkpoint_slot_bytes.is_multiple_of(block),
            ),
            (
                "ag_bytes",
                self.ag_bytes,
                self.ag_bytes.is_multiple_of(block)
                    && self.ag_bytes
                        >= 2 * self.checkpoint_slot_bytes + u64::from(self.segments_per_ag) * self.segment_bytes,
            ),
        ];
        for (field, value, ok) in checks {
            if !ok {
                return Err(FormatError::BadField { field, value });
            }
        }
        let end = DATA_OFFSET + u64::from(self.ag_count) * self.ag_bytes;
        if end > self.device_bytes {
            return Err(FormatError::BadField {
                field: "device_bytes",
                value: self.device_bytes,
            });
        }
        Ok(())
    }

    /// Byte offset of allocation group `ag`.
    pub fn ag_offset(&self, ag: u32) -> u64 {
        DATA_OFFSET + u64::from(ag) * self.ag_bytes
    }

    /// Byte offset of checkpoint slot `slot` (0 or 1) of `ag`.
    pub fn checkpoint_slot_offset(&self, ag: u32, slot: u32) -> u64 {
        self.ag_offset(ag) + u64::from(slot) * self.checkpoint_slot_bytes
    }

    /// Byte offset of segment `segment` of `ag`.
    pub fn segment_offset(&self, ag: u32, segment: u32) -> u64 {
        self.ag_offset(ag) + 2 * self.checkpoint_slot_bytes + u64::from(segment) * self.segment_bytes
    }

    /// Blocks per segment.
    pub fn segment_blocks(&self) -> u32 {
        (self.segment_bytes / BLOCK_BYTES as u64) as u32
    }

    /// Hex form of the device uuid.
    pub fn uuid_hex(&self) -> String {
        self.device_uuid.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// Checkpoint slot size needed for `segments` segments of `segment_bytes` each: room for
/// one index entry per data block (every fragment takes at least one block) plus the
/// segment table.
pub fn checkpoint_slot_bytes_for(segments: u64, segment_bytes: u64) -> u64 {
    let blocks = segments * (segment_bytes / BLOCK_BYTES as u64);
    let body = blocks * CHECKPOINT_ENTRY_BYTES as u64 + segments * CHECKPOINT_SEGMENT_BYTES as u64;
    let bytes = BLOCK_BYTES as u64 + body;
    bytes.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// The header block at the start of every used segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Device identity.
    pub device_uuid: [u8; 16],
    /// Allocation group.
    pub ag: u32,
    /// Segment index within the allocation group.
    pub segment: u32,
    /// Log sequence of this use of the segment (monotonic per allocation group, from 1).
    pub sequence: u64,
}

impl SegmentHeader {
    /// Encodes into a 4 KiB block.
    pub fn encode(&self, block: &mut [u8]) {
        block[..BLOCK_BYTES].fill(0);
        let mut writer = Writer::new(block);
        writer.put(SEGMENT_MAGIC);
        writer.put(&self.device_uuid);
        writer.u32(self.ag);
        writer.u32(self.segment);
        writer.u64(self.sequence);
        seal_block(block);
    }

    /// Decodes and validates.
    pub fn decode(block: &[u8]) -> Result<SegmentHeader, FormatError> {
        check_block(block, SEGMENT_MAGIC)?;
        let mut reader = Reader::new(block);
        reader.skip(8);
        Ok(SegmentHeader {
            device_uuid: reader.take(),
            ag: reader.u32(),
            segment: reader.u32(),
            sequence: reader.u64(),
        })
    }
}

/// Kind of a batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A fragment with its payload.
    Put,
    /// A tombstone.
    Delete,
}

/// One record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// Put or delete.
    pub kind: EntryKind,
    /// The fragment.
    pub locator: Locator,
    /// Payload length in bytes (0 for deletes).
    pub payload_bytes: u32,
    /// First block of the payload, relative to the batch's first payload block.
    pub payload_block: u32,
    /// CRC32C of the payload.
    pub payload_crc: u32,
}

/// The fixed part of a batch header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeader {
    /// Device identity.
    pub device_uuid: [u8; 16],
    /// Allocation group.
    pub ag: u32,
    /// Segment index.
    pub segment: u32,
    /// The segment's sequence at the time of writing.
    pub segment_sequence: u64,
    /// Index of the batch within the segment, consecutive from 0.
    pub batch_index: u32,
    /// Blocks taken by the header (fixed part + entries).
    pub header_blocks: u32,
    /// Blocks of payload following the header.
    pub payload_blocks: u32,
}

/// Blocks needed by a batch header with `entries` entries.
pub fn batch_header_blocks(entries: usize) -> usize {
    (BATCH_FIXED_BYTES + entries * BATCH_ENTRY_BYTES).div_ceil(BLOCK_BYTES)
}

impl BatchHeader {
    /// Encodes header and entries into `bytes` (exactly `header_blocks` blocks long).
    pub fn encode(&self, entries: &[BatchEntry], bytes: &mut [u8]) {
        let length = self.header_blocks as usize * BLOCK_BYTES;
        assert_eq!(batch_header_blocks(entries.len()), self.header_blocks as usize);
        bytes[..length].fill(0);
        let mut writer = Writer::new(&mut bytes[..length]);
        writer.put(BATCH_MAGIC);
        writer.put(&self.device_uuid);
        writer.u32(self.ag);
        writer.u32(self.segment);
        writer.u64(self.segment_sequence);
        writer.u32(self.batch_index);
        writer.u32(entries.len() as u32);
        writer.u32(self.header_blocks);
        writer.u32(self.payload_blocks);
        writer.u32(0); // CRC, filled below
        writer.skip(BATCH_FIXED_BYTES - writer.at);
        for entry in entries {
            writer.u8(match entry.kind {
                EntryKind::Put => 1,
                EntryKind::Delete => 2,
            });
            writer.skip(3);
            writer.u32(entry.payload_bytes);
            writer.u32(entry.payload_block);
            writer.u32(entry.payload_crc);
            writer.put(&entry.locator.0);
        }
        let crc = crc32c::crc32c(&bytes[..length]);
        bytes[BATCH_CRC_OFFSET..BATCH_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads the header's block count from its first block, after checking the magic, so
    /// the caller knows how much to read for [`BatchHeader::decode`].
    pub fn peek_header_blocks(first_block: &[u8]) -> Result<u32, FormatError> {
        need(first_block, BATCH_FIXED_BYTES)?;
        if &first_block[..8] != BATCH_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let blocks = u32::from_le_bytes(first_block[48..52].try_into().expect("4 bytes"));
        if blocks == 0 || blocks > 1024 {
            return Err(FormatError::BadField {
                field: "header_blocks",
                value: blocks.into(),
            });
        }
        Ok(blocks)
    }

    /// Decodes and validates a whole header (all its blocks) and its entries.
    pub fn decode(bytes: &[u8]) -> Result<(BatchHeader, Vec<BatchEntry>), FormatError> {
        let header_blocks = BatchHeader::peek_header_blocks(bytes)?;
        let length = header_blocks as usize * BLOCK_BYTES;
        need(bytes, length)?;
        let stored = u32::from_le_bytes(
            bytes[BATCH_CRC_OFFSET..BATCH_CRC_OFFSET + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let mut hasher_input = bytes[..length].to_vec();
        hasher_input[BATCH_CRC_OFFSET..BATCH_CRC_OFFSET + 4].fill(0);
        let computed = crc32c::crc32c(&hasher_input);
        if stored != computed {
            return Err(FormatError::BadChecksum { stored, computed });
        }
        let mut reader = Reader::new(&bytes[..length]);
        reader.skip(8);
        let device_uuid = reader.take();
        let ag = reader.u32();
        let segment = reader.u32();
        let segment_sequence = reader.u64();
        let batch_index = reader.u32();
        let entry_count = reader.u32() as usize;
        let header_blocks_again = reader.u32();
        let payload_blocks = reader.u32();
        if batch_header_blocks(entry_count) != header_blocks as usize || header_blocks_again != header_blocks {
            return Err(FormatError::BadField {
                field: "entry_count",
                value: entry_count as u64,
            });
        }
        let mut entries = Vec::with_capacity(entry_count);
        let mut reader = Reader::new(&bytes[BATCH_FIXED_BYTES..length]);
        for _ in 0..entry_count {
            let kind = match reader.u8() {
                1 => EntryKind::Put,
                2 => EntryKind::Delete,
                other => {
                    return Err(FormatError::BadField {
                        field: "entry kind",
                        value: other.into(),
                    })
                }
            };
            reader.skip(3);
            let payload_bytes = reader.u32();
            let payload_block = reader.u32();
            let payload_crc = reader.u32();
            let locator = Locator(reader.take());
            let end_block = u64::from(payload_block) + (payload_bytes as u64).div_ceil(BLOCK_BYTES as u64);
            if kind == EntryKind::Put && end_block > u64::from(payload_blocks) {
                return Err(FormatError::BadField {
                    field: "payload_block",
                    value: payload_block.into(),
                });
            }
            entries.push(BatchEntry {
                kind,
                locator,
                payload_bytes,
                payload_block,
                payload_crc,
            });
        }
        Ok((
            BatchHeader {
                device_uuid,
                ag,
                segment,
                segment_sequence,
                batch_index,
                header_blocks,
                payload_blocks,
            },
            entries,
        ))
    }
}

const BATCH_CRC_OFFSET: usize = 56;

/// The header block of a checkpoint slot; the body (index entries then segment table)
/// follows from the slot's second block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// Device identity.
    pub device_uuid: [u8; 16],
    /// Allocation group.
    pub ag: u32,
    /// Checkpoint sequence (the slot is `sequence % 2`).
    pub sequence: u64,
    /// Index entries in the body.
    pub entry_count: u64,
    /// Segment-table entries in the body.
    pub segment_count: u32,
    /// CRC32C of the body.
    pub body_crc: u32,
    /// Next segment sequence to hand out.
    pub next_segment_sequence: u64,
    /// Replay resumes at this segment sequence (segments with a higher one are replayed
    /// whole; the segment with exactly this one from `resume_batch`/`resume_block`).
    pub resume_sequence: u64,
    /// First batch index to replay in the resume segment.
    pub resume_batch: u32,
    /// Block of that batch in the resume segment.
    pub resume_block: u32,
}

impl CheckpointHeader {
    /// Body length in bytes.
    pub fn body_bytes(&self) -> u64 {
        self.entry_count * CHECKPOINT_ENTRY_BYTES as u64
            + u64::from(self.segment_count) * CHECKPOINT_SEGMENT_BYTES as u64
    }

    /// Encodes into a 4 KiB block.
    pub fn encode(&self, block: &mut [u8]) {
        block[..BLOCK_BYTES].fill(0);
        let mut writer = Writer::new(block);
        writer.put(CHECKPOINT_MAGIC);
        writer.put(&self.device_uuid);
        writer.u32(self.ag);
        writer.u32(self.segment_count);
        writer.u64(self.sequence);
        writer.u64(self.entry_count);
        writer.u32(self.body_crc);
        writer.u32(self.resume_batch);
        writer.u64(self.next_segment_sequence);
        writer.u64(self.resume_sequence);
        writer.u32(self.resume_block);
        seal_block(block);
    }

    /// Decodes and validates.
    pub fn decode(block: &[u8]) -> Result<CheckpointHeader, FormatError> {
        check_block(block, CHECKPOINT_MAGIC)?;
        let mut reader = Reader::new(block);
        reader.skip(8);
        let device_uuid = reader.take();
        let ag = reader.u32();
        let segment_count = reader.u32();
        let sequence = reader.u64();
        let entry_count = reader.u64();
        let body_crc = reader.u32();
        let resume_batch = reader.u32();
        let next_segment_sequence = reader.u64();
        let resume_sequence = reader.u64();
        let resume_block = reader.u32();
        Ok(CheckpointHeader {
            device_uuid,
            ag,
            sequence,
            entry_count,
            segment_count,
            body_crc,
            next_segment_sequence,
            resume_sequence,
            resume_batch,
            resume_block,
        })
    }
}

/// Encodes one checkpoint index entry.
pub fn encode_checkpoint_entry(locator: &Locator, segment: u32, block: u32, bytes: u32, crc: u32, out: &mut [u8]) {
    let mut writer = Writer::new(&mut out[..CHECKPOINT_ENTRY_BYTES]);
    writer.put(&locator.0);
    writer.u32(segment);
    writer.u32(block);
    writer.u32(bytes);
    writer.u32(crc);
}

/// Decodes one checkpoint index entry: (locator, segment, block, bytes, crc).
pub fn decode_checkpoint_entry(input: &[u8]) -> (Locator, u32, u32, u32, u32) {
    let mut reader = Reader::new(&input[..CHECKPOINT_ENTRY_BYTES]);
    let locator = Locator(reader.take());
    (locator, reader.u32(), reader.u32(), reader.u32(), reader.u32())
}

/// Encodes one checkpoint segment-table entry: (state, write_block, next_batch, sequence).
pub fn encode_checkpoint_segment(state: u8, write_block: u32, next_batch: u32, sequence: u64, out: &mut [u8]) {
    let mut writer = Writer::new(&mut out[..CHECKPOINT_SEGMENT_BYTES]);
    writer.u8(state);
    writer.skip(3);
    writer.u32(write_block);
    writer.u32(next_batch);
    writer.skip(4);
    writer.u64(sequence);
}

/// Decodes one checkpoint segment-table entry.
pub fn decode_checkpoint_segment(input: &[u8]) -> (u8, u32, u32, u64) {
    let mut reader = Reader::new(&input[..CHECKPOINT_SEGMENT_BYTES]);
    let state = reader.u8();
    reader.skip(3);
    let write_block = reader.u32();
    let next_batch = reader.u32();
    reader.skip(4);
    (state, write_block, next_batch, reader.u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock() -> Superblock {
        Superblock {
            format_version: FORMAT_VERSION,
            device_uuid: [7; 16],
            created_unix_ms: 1,
            device_bytes: 64 << 20,
            ag_count: 2,
            ag_bytes: 16 << 20,
            segment_bytes: 1 << 20,
            segments_per_ag: 12,
            checkpoint_slot_bytes: 1 << 20,
        }
    }

    #[test]
    fn superblock_round_trips_and_detects_every_flipped_bit() {
        let mut block = vec![0u8; BLOCK_BYTES];
        superblock().encode(&mut block);
        assert_eq!(Superblock::decode(&block).unwrap(), superblock());
        for bit in (0..BLOCK_BYTES * 8).step_by(7) {
            let mut damaged = block.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Superblock::decode(&damaged).is_err(), "bit {bit} undetected");
        }
    }

    #[test]
    fn batch_header_round_trips_and_rejects_damage() {
        let entries: Vec<BatchEntry> = (0..100u32)
            .map(|index| BatchEntry {
                kind: if index % 3 == 0 {
                    EntryKind::Delete
                } else {
                    EntryKind::Put
                },
                locator: Locator([index as u8; 32]),
                payload_bytes: if index % 3 == 0 { 0 } else { 4096 },
                payload_block: index,
                payload_crc: index * 7,
            })
            .collect();
        let header_blocks = batch_header_blocks(entries.len()) as u32;
        let header = BatchHeader {
            device_uuid: [1; 16],
            ag: 1,
            segment: 3,
            segment_sequence: 9,
            batch_index: 4,
            header_blocks,
            payload_blocks: 100,
        };
        let mut bytes = vec![0u8; header_blocks as usize * BLOCK_BYTES];
        header.encode(&entries, &mut bytes);
        let (decoded, decoded_entries) = BatchHeader::decode(&bytes).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(decoded_entries, entries);
        for bit in (0..bytes.len() * 8).step_by(13) {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(BatchHeader::decode(&damaged).is_err(), "bit {bit} undetected");
        }
        assert!(BatchHeader::decode(&bytes[..100]).is_err());
    }

    #[test]
    fn garbage_never_panics_the_decoders() {
        let mut state = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            let mut block = vec![0u8; BLOCK_BYTES * 2];
            for byte in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            block[..8].copy_from_slice(BATCH_MAGIC);
            let _ = BatchHeader::decode(&block);
            let _ = Superblock::decode(&block);
            let _ = SegmentHeader::decode(&block);
            let _ = CheckpointHeader::decode(&block);
        }
    }
}
