//! Shard log records on the core's own device region, through the fragment store.
//!
//! A record is stored as one or more fragments (parts of at most
//! [`RECORD_PART_BYTES_MAX`]) whose locators spell out what they are: a 12-byte mark,
//! the shard, the record's sequence number, the part and the part count. Every put is
//! durable when it returns (the store's group commit: one `fdatasync` for a whole batch
//! of puts from every shard of the core), so a record is durable once all its parts are.
//! Trimming deletes the fragments of records below a snapshot record.
//!
//! Recovery keeps the longest run of complete records from the lowest sequence number
//! on: a record after a gap was never reported durable to its replica (durability is
//! reported in order), so nothing that depends on it left the node, and it is deleted
//! like any write lost in a crash.

use kiseki_store::{FragmentStore, Locator, StoreError};

use crate::HostError;

/// Identifies shard-log fragments among the chunk fragments of a store.
const RECORD_MARK: [u8; 12] = *b"kiseki-slog1";
/// Record fragments one step of a trim deletes at once (a store batch holds 1,024
/// entries by default).
const TRIM_DELETES_PER_WAVE: usize = 1024;
/// Largest fragment a record is cut into.
pub const RECORD_PART_BYTES_MAX: usize = 1 << 20;

/// The fragment locator of part `part` of `parts` of record `seq` of `shard`.
fn part_locator(shard: u64, seq: u64, part: u16, parts: u16) -> Locator {
    let mut bytes = [0u8; 32];
    bytes[..12].copy_from_slice(&RECORD_MARK);
    bytes[12..20].copy_from_slice(&shard.to_be_bytes());
    bytes[20..28].copy_from_slice(&seq.to_be_bytes());
    bytes[28..30].copy_from_slice(&part.to_be_bytes());
    bytes[30..32].copy_from_slice(&parts.to_be_bytes());
    Locator(bytes)
}

/// Whether `locator` names a shard-log record rather than a chunk fragment: such
/// locators are the node's own, and the fragment service neither serves nor lists them.
pub fn is_log_locator(locator: &Locator) -> bool {
    locator.0[..12] == RECORD_MARK
}

/// (shard, seq, part, parts) of a shard-log locator; `None` for any other fragment.
fn parse_locator(locator: &Locator) -> Option<(u64, u64, u16, u16)> {
    let bytes = &locator.0;
    if bytes[..12] != RECORD_MARK {
        return None;
    }
    let shard = u64::from_be_bytes(bytes[12..20].try_into().ok()?);
    let seq = u64::from_be_bytes(bytes[20..28].try_into().ok()?);
    let part = u16::from_be_bytes(bytes[28..30].try_into().ok()?);
    let parts = u16::from_be_bytes(bytes[30..32].try_into().ok()?);
    (part < parts).then_some((shard, seq, part, parts))
}

/// The shard logs of one core, in that core's allocation group of the device.
#[derive(Clone)]
pub struct ShardLog {
    store: FragmentStore,
}

impl ShardLog {
    /// Logs kept in `store` (the core's own fragment store).
    pub fn new(store: FragmentStore) -> ShardLog {
        ShardLog { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &FragmentStore {
        &self.store
    }

    /// Writes record `seq` of `shard`; returns once it is durable.
    pub async fn write(&self, shard: u64, seq: u64, record: &[u8]) -> Result<(), HostError> {
        let parts = record.len().div_ceil(RECORD_PART_BYTES_MAX).max(1);
        let parts =
            u16::try_from(parts).map_err(|_| HostError::Invalid(format!("record of {} bytes", record.len())))?;
        for part in 0..parts {
            let start = part as usize * RECORD_PART_BYTES_MAX;
            let end = (start + RECORD_PART_BYTES_MAX).min(record.len());
            let locator = part_locator(shard, seq, part, parts);
            match self.store.put(locator, &record[start..end]).await {
                Ok(()) => {}
                Err(StoreError::AlreadyExists { .. }) => {
                    // Left by an earlier life of this replica past its recovered prefix
                    // and not yet deleted: replace it (it was never reported durable).
                    self.store.delete(&locator).await?;
                    self.store.put(locator, &record[start..end]).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Every shard with records here.
    pub fn shards(&self) -> Vec<u64> {
        let mut shards: Vec<u64> = Vec::new();
        let mut after = predecessor(&part_locator(0, 0, 0, 0));
        loop {
            let page = self.store.list(after.as_ref(), 1024);
            let Some(last) = page.last().copied() else {
                return shards;
            };
            for locator in &page {
                if locator.0[..12] != RECORD_MARK {
                    return shards;
                }
                if let Some((shard, ..)) = parse_locator(locator) {
                    if shards.last() != Some(&shard) {
                        shards.push(shard);
                    }
                }
            }
            after = Some(last);
        }
    }

    /// Loads the records of `shard` in order: the complete, consecutive run from the
    /// first record; everything after a gap is deleted.
    pub async fn load(&self, shard: u64) -> Result<Vec<(u64, Vec<u8>)>, HostError> {
        let locators = self.locators(shard, 0);
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut broken_at = None;
        let mut position = 0;
        while position < locators.len() {
            let (_, seq, _, parts) = parse_locator(&locators[position]).unwrap_or_default();
            let expected = records.last().map(|(last, _)| last + 1);
            let run: Vec<&Locator> = locators[position..]
                .iter()
                .take_while(|locator| parse_locator(locator).is_some_and(|(_, s, _, p)| s == seq && p == parts))
                .collect();
            let complete = run.len() == parts as usize;
            if !complete || expected.is_some_and(|expected| expected != seq) {
                broken_at = Some(seq);
                break;
            }
            let mut record = Vec::new();
            for locator in &run {
                record.extend_from_slice(self.store.get(locator, None).await?.as_slice());
            }
            records.push((seq, record));
            position += run.len();
        }
        if let Some(seq) = broken_at {
            tracing::warn!(
                shard,
                seq,
                "shard log: dropping records after a gap (never reported durable)"
            );
            for locator in self.locators(shard, seq) {
                self.delete_quietly(&locator).await?;
            }
        }
        Ok(records)
    }

    /// Deletes the records of `shard` below `below_seq`.
    ///
    /// The deletes go lowest record first and share the store's batches: a crash keeps
    /// a prefix of them, which leaves the records that remain a consecutive run. One
    /// delete and one flush per record made a trim of 10,000 records take seconds of
    /// flushes that the shard's own writes queued behind.
    pub async fn trim(&self, shard: u64, below_seq: u64) -> Result<(), HostError> {
        let doomed: Vec<Locator> = self
            .locators(shard, 0)
            .into_iter()
            .take_while(|locator| matches!(parse_locator(locator), Some((_, seq, ..)) if seq < below_seq))
            .collect();
        for wave in doomed.chunks(TRIM_DELETES_PER_WAVE) {
            self.store.delete_present(wave).await?;
        }
        Ok(())
    }

    async fn delete_quietly(&self, locator: &Locator) -> Result<(), HostError> {
        match self.store.delete(locator).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Locators of `shard`'s records from `from_seq` on, in order.
    fn locators(&self, shard: u64, from_seq: u64) -> Vec<Locator> {
        let mut found = Vec::new();
        // `list` starts after the given locator: step back one from the first wanted one.
        let first = part_locator(shard, from_seq, 0, 0);
        let mut after = predecessor(&first);
        loop {
            let page = self.store.list(after.as_ref(), 1024);
            if page.is_empty() {
                return found;
            }
            for locator in &page {
                match parse_locator(locator) {
                    Some((s, ..)) if s == shard => found.push(*locator),
                    _ if locator.0 > first.0 && locator.0[..20] != first.0[..20] => return found,
                    _ => {}
                }
            }
            after = page.last().copied();
        }
    }
}

/// The locator just below `locator` (`None` for all zeros).
fn predecessor(locator: &Locator) -> Option<Locator> {
    let mut bytes = locator.0;
    for byte in bytes.iter_mut().rev() {
        if *byte > 0 {
            *byte -= 1;
            return Some(Locator(bytes));
        }
        *byte = 0xff;
    }
    None
}
