//! How healthy the stored chunks are: which fragments every device holds (listed from
//! their owner cores) against what every file's extent map references.
//!
//! [`Client::fragment_inventory`] lists each device's fragments through each core that
//! owns part of it; a node that does not answer is reported down and its fragments count
//! as missing. [`Client::chunk_records`] walks a namespace from its root and decodes the
//! chunk record of every extent (no keys needed: the record's durability and length are
//! in the clear, `K` stays wrapped). [`chunk_health`] puts the two together: a chunk is
//! *degraded* when fewer than all of its fragments are present and *lost* when fewer than
//! it needs to be read. [`Client::repair`] rebuilds what is missing from what survives;
//! [`Client::collect_garbage`] deletes what no file references.

use std::collections::{BTreeSet, HashMap, HashSet};

use kiseki_api::{ReadAnswer, ReadQuery, EXTENTS_READ_BYTES_MAX};
use kiseki_namespace::{FileKind, InodeId, NamespaceError, ReadPiece};
use kiseki_pipeline::repair::{FragmentIo, Repairer};
use kiseki_pipeline::Locator;
use kiseki_placement::{place, DeviceId, PoolMap};

use crate::chunk_record::ChunkRecord;
use crate::{Client, ClientError};

/// Locators listed in one page of a device's fragments.
const LIST_PAGE_LOCATORS: u32 = 4096;

/// Which fragments each device holds; `down` lists the nodes that did not answer.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    /// Locators stored on each cluster device id.
    pub devices: HashMap<u32, HashSet<[u8; 32]>>,
    /// Nodes that could not be listed, with why.
    pub down: Vec<(u64, String)>,
}

/// Counts of a namespace's chunks by health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHealth {
    /// Distinct chunks the namespace references.
    pub chunks: u64,
    /// Chunks missing at least one fragment (readable, redundancy reduced).
    pub degraded: u64,
    /// Chunks missing more fragments than their code tolerates (unreadable now).
    pub lost: u64,
    /// Fragments missing over all chunks.
    pub fragments_missing: u64,
}

impl Client {
    /// Lists every device's fragments on every core of every node.
    pub async fn fragment_inventory(&self) -> Result<Inventory, ClientError> {
        let mut inventory = Inventory::default();
        let nodes: Vec<(u64, u16, u16)> = self
            .map()
            .nodes
            .iter()
            .map(|node| (node.id, node.cores, node.devices))
            .collect();
        'nodes: for (node, cores, devices) in nodes {
            for core in 0..usize::from(cores) {
                for index in 0..devices {
                    let device = kiseki_api::device_id(node, index);
                    let mut after = None;
                    loop {
                        let page = match self.list_fragments(node, core, index, after, LIST_PAGE_LOCATORS).await {
                            Ok(page) => page,
                            Err(error) => {
                                inventory.down.push((node, error.to_string()));
                                continue 'nodes;
                            }
                        };
                        let full = page.len() as u32 == LIST_PAGE_LOCATORS;
                        after = page.last().copied();
                        inventory.devices.entry(device).or_default().extend(page);
                        if !full {
                            break;
                        }
                    }
                }
            }
        }
        Ok(inventory)
    }

    /// The chunk record of every extent of every file under the root of `shard`'s
    /// namespace and of every stored part of its multipart uploads in progress, each
    /// chunk once.
    pub async fn chunk_records(&self, shard: u64) -> Result<Vec<ChunkRecord>, ClientError> {
        let mut seen = BTreeSet::new();
        let mut records = self.part_chunks(shard, &mut seen).await?;
        let mut directories = vec![InodeId(1)];
        while let Some(dir) = directories.pop() {
            for entry in self.read_dir(shard, dir).await? {
                match entry.kind {
                    FileKind::Directory => directories.push(entry.inode),
                    FileKind::File => {
                        for record in self.file_chunks(shard, entry.inode).await? {
                            if seen.insert(record.chunk.locator.0) {
                                records.push(record);
                            }
                        }
                    }
                    // No chunks: names and attributes only.
                    FileKind::Symlink
                    | FileKind::Fifo
                    | FileKind::Socket
                    | FileKind::CharDevice { .. }
                    | FileKind::BlockDevice { .. } => {}
                }
            }
        }
        Ok(records)
    }

    /// The chunk records of the stored parts of `shard`'s multipart uploads in progress
    /// (no file names them until the upload completes; garbage collection must keep
    /// them), each chunk once, noted in `seen`.
    async fn part_chunks(&self, shard: u64, seen: &mut BTreeSet<[u8; 32]>) -> Result<Vec<ChunkRecord>, ClientError> {
        let limit = kiseki_api::READDIR_ENTRIES_MAX;
        let mut records = Vec::new();
        let mut after = None;
        loop {
            let uploads = match self.read(shard, &ReadQuery::Uploads { after, limit }).await? {
                ReadAnswer::Uploads(uploads) => uploads,
                other => return Err(ClientError::Invalid(format!("uploads answered {other:?}"))),
            };
            let Some(last) = uploads.last() else {
                return Ok(records);
            };
            after = Some(last.upload_id);
            for upload in &uploads {
                let mut after_part = 0;
                loop {
                    let query = ReadQuery::Parts {
                        upload_id: upload.upload_id,
                        after_part,
                        limit,
                    };
                    let parts = match self.read(shard, &query).await? {
                        ReadAnswer::Parts(parts) => parts,
                        // Completed or aborted since it was listed: its extents are a
                        // file's now, or released.
                        ReadAnswer::Failed(NamespaceError::NotFound) => break,
                        other => return Err(ClientError::Invalid(format!("parts answered {other:?}"))),
                    };
                    let Some(last) = parts.last() else {
                        break;
                    };
                    after_part = last.part_number;
                    for extent in parts.iter().flat_map(|part| &part.extents) {
                        let record = ChunkRecord::decode(extent.chunk_locator, &extent.wrapped_key)?;
                        if seen.insert(record.chunk.locator.0) {
                            records.push(record);
                        }
                    }
                }
            }
        }
    }

    /// The chunk records of one file's extents, in file order.
    async fn file_chunks(&self, shard: u64, inode: InodeId) -> Result<Vec<ChunkRecord>, ClientError> {
        let mut records = Vec::new();
        let mut position = 0u64;
        loop {
            let query = ReadQuery::Extents {
                inode,
                offset_bytes: position,
                length_bytes: EXTENTS_READ_BYTES_MAX,
            };
            let pieces = match self.read(shard, &query).await? {
                ReadAnswer::Pieces(pieces) => pieces,
                // Removed since it was listed.
                ReadAnswer::Failed(NamespaceError::NotFound) => return Ok(records),
                other => return Err(ClientError::Invalid(format!("extents answered {other:?}"))),
            };
            let Some(end) = pieces.last().map(ReadPiece::end_bytes) else {
                return Ok(records);
            };
            for piece in &pieces {
                if let ReadPiece::Extent { extent, .. } = piece {
                    records.push(ChunkRecord::decode(extent.chunk_locator, &extent.wrapped_key)?);
                }
            }
            if end <= position {
                return Ok(records);
            }
            position = end;
        }
    }
}

/// How many of `records`' fragments `inventory` holds, with the chunk's total.
fn fragments_present(pool: &PoolMap, record: &ChunkRecord, inventory: &Inventory) -> (usize, usize) {
    let total = record.durability.fragments_total();
    let present = match place(pool, &record.chunk.locator, total) {
        Ok(placement) => placement
            .devices()
            .iter()
            .filter(|device| {
                inventory
                    .devices
                    .get(&device.0)
                    .is_some_and(|locators| locators.contains(&record.chunk.locator.0))
            })
            .count(),
        Err(_) => 0,
    };
    (present, total)
}

/// How many of `records` are whole, degraded or lost given `inventory`.
pub fn chunk_health(pool: &PoolMap, records: &[ChunkRecord], inventory: &Inventory) -> ChunkHealth {
    let mut health = ChunkHealth {
        chunks: records.len() as u64,
        ..ChunkHealth::default()
    };
    for record in records {
        let (present, total) = fragments_present(pool, record, inventory);
        if present < total {
            health.degraded += 1;
            health.fragments_missing += (total - present) as u64;
        }
        if present < record.durability.fragments_needed() {
            health.lost += 1;
        }
    }
    health
}

/// What a repair pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairSummary {
    /// Chunks read and verified.
    pub chunks_checked: u64,
    /// Chunks that had missing or bad fragments and now have all of them.
    pub chunks_repaired: u64,
    /// Fragments rebuilt and written (each read back and verified).
    pub fragments_rebuilt: u64,
    /// Chunks left as they were because a device of theirs is on a node that is down.
    pub chunks_waiting: u64,
    /// Chunks whose repair failed, with why.
    pub failed: Vec<String>,
}

/// The cluster's fragments as the pipeline's repairer reads and writes them, from a
/// blocking thread: each call waits for the client's request on the runtime.
struct RemoteFragments {
    client: Client,
    runtime: tokio::runtime::Handle,
}

impl FragmentIo for RemoteFragments {
    fn get_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        _index: usize,
        buffer: &mut Vec<u8>,
    ) -> Result<bool, kiseki_pipeline::Error> {
        match self.runtime.block_on(self.client.get_fragment(device.0, &locator.0)) {
            Some(bytes) => {
                *buffer = bytes;
                Ok(true)
            }
            None => {
                buffer.clear();
                Ok(false)
            }
        }
    }

    fn put_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        _index: usize,
        fragment: &[u8],
    ) -> Result<(), kiseki_pipeline::Error> {
        let client = &self.client;
        self.runtime
            .block_on(async {
                // A corrupt fragment under this locator would refuse the new one.
                client.delete_fragment(device.0, &locator.0).await?;
                client.put_fragment(device.0, &locator.0, fragment.to_vec()).await
            })
            .map_err(|error| kiseki_pipeline::Error::Io(std::io::Error::other(error.to_string())))
    }

    fn delete_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        _index: usize,
    ) -> Result<(), kiseki_pipeline::Error> {
        self.runtime
            .block_on(self.client.delete_fragment(device.0, &locator.0))
            .map(|_| ())
            .map_err(|error| kiseki_pipeline::Error::Io(std::io::Error::other(error.to_string())))
    }
}

impl Client {
    /// Rebuilds the missing and corrupt fragments of `records` onto the devices their
    /// placement names, from the surviving ones (sealed bytes only: no key is needed or
    /// used, I-K1). With `scrub`, every chunk is read and verified (parity included);
    /// otherwise only the chunks `inventory` shows incomplete. A chunk with a device on a
    /// node `inventory` lists as down waits for that node.
    pub async fn repair(&self, records: Vec<ChunkRecord>, inventory: &Inventory, scrub: bool) -> RepairSummary {
        let down: HashSet<u64> = inventory.down.iter().map(|(node, _)| *node).collect();
        let mut summary = RepairSummary::default();
        let mut work = Vec::new();
        for record in records {
            let (present, total) = fragments_present(self.pool(), &record, inventory);
            if !scrub && present == total {
                continue;
            }
            let Ok(placement) = place(self.pool(), &record.chunk.locator, total) else {
                summary.failed.push(format!("{}: no placement", record.chunk.locator));
                continue;
            };
            if placement
                .devices()
                .iter()
                .any(|device| down.contains(&kiseki_api::split_device_id(device.0).0))
            {
                summary.chunks_waiting += 1;
                continue;
            }
            work.push((record.chunk.locator, placement));
        }
        let mut io = RemoteFragments {
            client: self.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let repaired = tokio::task::spawn_blocking(move || {
            let mut repairer = Repairer::new();
            let mut summary = summary;
            for (locator, placement) in work {
                summary.chunks_checked += 1;
                match repairer.scrub_chunk(&locator, &placement, &mut io) {
                    Ok(report) if !report.repaired.is_empty() => {
                        summary.chunks_repaired += 1;
                        summary.fragments_rebuilt += report.repaired.len() as u64;
                    }
                    Ok(report) if !report.parity_consistent => {
                        summary
                            .failed
                            .push(format!("{locator}: parity does not match the data"));
                    }
                    Ok(_) => {}
                    Err(error) => summary.failed.push(format!("{locator}: {error}")),
                }
            }
            summary
        })
        .await;
        repaired.unwrap_or_else(|error| RepairSummary {
            failed: vec![format!("the repair thread failed: {error}")],
            ..RepairSummary::default()
        })
    }
}

/// What a garbage collection pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcSummary {
    /// Fragments listed on the devices of the nodes that answered.
    pub fragments_listed: u64,
    /// Distinct chunks referenced by some file of some namespace.
    pub chunks_referenced: u64,
    /// Fragments referenced by no file in both walks (deleted unless a dry run).
    pub fragments_unreferenced: u64,
    /// Unreferenced fragments deleted.
    pub fragments_deleted: u64,
    /// Deletes that failed, with why.
    pub failed: Vec<String>,
    /// Nodes that could not be listed (their fragments are left alone).
    pub nodes_down: Vec<u64>,
}

impl Client {
    /// The chunk records of `shard`, or of every shard of the map; each chunk once,
    /// however many files, namespaces and parts share it.
    pub async fn chunk_records_of(&self, shard: Option<u64>) -> Result<Vec<ChunkRecord>, ClientError> {
        let shards: Vec<u64> = match shard {
            Some(shard) => vec![shard],
            None => (1..=self.map().shards).collect(),
        };
        let mut seen = BTreeSet::new();
        let mut records = Vec::new();
        for shard in shards {
            let walked = self.chunk_records(shard).await?;
            records.extend(walked.into_iter().filter(|record| seen.insert(record.chunk.locator.0)));
        }
        Ok(records)
    }

    /// Every chunk locator referenced by a file of any namespace of the cluster.
    async fn referenced_chunks(&self) -> Result<HashSet<[u8; 32]>, ClientError> {
        let mut referenced = HashSet::new();
        for shard in 1..=self.map().shards {
            for record in self.chunk_records(shard).await? {
                referenced.insert(record.chunk.locator.0);
            }
        }
        Ok(referenced)
    }

    /// Deletes the fragments no file references: those a crash left between fragment
    /// writes and the extent commit (I-L5), and those of removed files. A fragment is
    /// deleted only if it was listed and unreferenced before `grace`, and still
    /// unreferenced after it, so a writer that commits within `grace` of its fragment
    /// writes never loses one. Every namespace of the cluster is walked (a chunk may be
    /// shared across namespaces and tenants). With `dry_run`, nothing is deleted.
    pub async fn collect_garbage(&self, grace: std::time::Duration, dry_run: bool) -> Result<GcSummary, ClientError> {
        let inventory = self.fragment_inventory().await?;
        let referenced = self.referenced_chunks().await?;
        let mut summary = GcSummary {
            fragments_listed: inventory.devices.values().map(|locators| locators.len() as u64).sum(),
            nodes_down: inventory.down.iter().map(|(node, _)| *node).collect(),
            ..GcSummary::default()
        };
        let mut candidates: Vec<(u32, [u8; 32])> = inventory
            .devices
            .iter()
            .flat_map(|(device, locators)| {
                locators
                    .iter()
                    .filter(|locator| !referenced.contains(*locator))
                    .map(move |locator| (*device, *locator))
            })
            .collect();
        candidates.sort_unstable();
        if !candidates.is_empty() && !grace.is_zero() {
            tokio::time::sleep(grace).await;
        }
        let referenced = if candidates.is_empty() || grace.is_zero() {
            referenced
        } else {
            self.referenced_chunks().await?
        };
        summary.chunks_referenced = referenced.len() as u64;
        candidates.retain(|(_, locator)| !referenced.contains(locator));
        summary.fragments_unreferenced = candidates.len() as u64;
        if dry_run {
            return Ok(summary);
        }
        for (device, locator) in candidates {
            match self.delete_fragment(device, &locator).await {
                Ok(_) => summary.fragments_deleted += 1,
                Err(error) => summary
                    .failed
                    .push(format!("device {device:#x} {}: {error}", Locator(locator))),
            }
        }
        Ok(summary)
    }
}
