//! How healthy the stored chunks are: which fragments every device holds (listed from
//! their owner cores) against what every file's extent map references.
//!
//! [`Client::fragment_inventory`] lists each device's fragments through each core that
//! owns part of it; a node that does not answer is reported down and its fragments count
//! as missing. [`Client::chunk_records`] walks a namespace from its root and decodes the
//! chunk record of every extent (no keys needed: the record's durability and length are
//! in the clear, `K` stays wrapped). [`chunk_health`] puts the two together: a chunk is
//! *degraded* when fewer than all of its fragments are present and *lost* when fewer than
//! it needs to be read.

use std::collections::{BTreeSet, HashMap, HashSet};

use kiseki_api::{ReadAnswer, ReadQuery, EXTENTS_READ_BYTES_MAX, READDIR_ENTRIES_MAX};
use kiseki_namespace::{FileKind, InodeId, NamespaceError, ReadPiece, READDIR_COOKIE_FIRST};
use kiseki_placement::{place, PoolMap};

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
    /// namespace, each chunk once.
    pub async fn chunk_records(&self, shard: u64) -> Result<Vec<ChunkRecord>, ClientError> {
        let mut seen = BTreeSet::new();
        let mut records = Vec::new();
        let mut directories = vec![InodeId(1)];
        while let Some(dir) = directories.pop() {
            let mut after_cookie = READDIR_COOKIE_FIRST - 1;
            loop {
                let query = ReadQuery::ReadDir {
                    dir,
                    after_cookie,
                    limit: READDIR_ENTRIES_MAX,
                };
                let page = match self.read(shard, &query).await? {
                    ReadAnswer::Entries(page) => page,
                    other => return Err(ClientError::Invalid(format!("readdir answered {other:?}"))),
                };
                for entry in &page {
                    match entry.kind {
                        FileKind::Directory => directories.push(entry.inode),
                        FileKind::File => {
                            for record in self.file_chunks(shard, entry.inode).await? {
                                if seen.insert(record.chunk.locator.0) {
                                    records.push(record);
                                }
                            }
                        }
                        FileKind::Symlink => {}
                    }
                }
                let full = page.len() as u32 == READDIR_ENTRIES_MAX;
                match page.last() {
                    Some(last) if full => after_cookie = last.cookie,
                    _ => break,
                }
            }
        }
        Ok(records)
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
            let Some(end) = pieces.last().map(crate::namespace::piece_end) else {
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

/// How many of `records` are whole, degraded or lost given `inventory`.
pub fn chunk_health(pool: &PoolMap, records: &[ChunkRecord], inventory: &Inventory) -> ChunkHealth {
    let mut health = ChunkHealth {
        chunks: records.len() as u64,
        ..ChunkHealth::default()
    };
    for record in records {
        let total = record.durability.fragments_total();
        let needed = record.durability.fragments_needed();
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
        if present < total {
            health.degraded += 1;
            health.fragments_missing += (total - present) as u64;
        }
        if present < needed {
            health.lost += 1;
        }
    }
    health
}
