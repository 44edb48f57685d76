//! Repair and scrub executors over a caller's fragment store.
//!
//! `kiseki-placement` plans (which fragments to read, rebuild and move, sans-IO); this
//! module executes a plan against a [`FragmentIo`]: it reads and verifies surviving
//! fragments, rebuilds the missing ones with Reed-Solomon (or copies a replica), writes
//! them to their new devices and reads them back to verify. Scrub reads every fragment of
//! a chunk, detects bad checksums and rebuilds the bad fragments from the good ones.
//!
//! Everything here works on sealed fragments: no key, no plaintext (I-K1). A rebuilt
//! fragment is byte-identical to the one it replaces (same header, same payload), so a
//! fragment's content never changes once written (I-C1).

use std::collections::BTreeMap;

use kiseki_placement::{ChunkRepair, DeviceId, Placement, RepairPlan};

use crate::crypto::TAG_BYTES;
use crate::erasure::{Codec, Durability};
use crate::error::Error;
use crate::fragment::{FragmentHeader, FragmentSet, FRAGMENT_HEADER_BYTES};
use crate::Locator;

/// Fragment storage as repair and scrub see it: whole fragments (header ‖ payload) by
/// (device, locator, index). The engine implements it over its fragment store; tests and
/// simulations use [`MemFragmentIo`] or files.
pub trait FragmentIo {
    /// Reads a fragment into `buffer` (replacing its contents); `Ok(false)` if absent.
    fn get_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        index: usize,
        buffer: &mut Vec<u8>,
    ) -> Result<bool, Error>;

    /// Writes a fragment durably, replacing any fragment under the same key.
    fn put_fragment(&mut self, device: DeviceId, locator: &Locator, index: usize, fragment: &[u8])
        -> Result<(), Error>;

    /// Deletes a fragment; deleting an absent fragment is not an error.
    fn delete_fragment(&mut self, device: DeviceId, locator: &Locator, index: usize) -> Result<(), Error>;
}

/// An in-memory [`FragmentIo`] for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct MemFragmentIo {
    fragments: BTreeMap<(DeviceId, Locator, usize), Vec<u8>>,
}

impl MemFragmentIo {
    /// An empty store.
    pub fn new() -> MemFragmentIo {
        MemFragmentIo::default()
    }

    /// Mutable access to a stored fragment (to inject faults).
    pub fn fragment_mut(&mut self, device: DeviceId, locator: &Locator, index: usize) -> Option<&mut Vec<u8>> {
        self.fragments.get_mut(&(device, *locator, index))
    }

    /// Drops every fragment of `device` (a lost device).
    pub fn lose_device(&mut self, device: DeviceId) {
        self.fragments.retain(|key, _| key.0 != device);
    }

    /// Number of fragments stored.
    pub fn len(&self) -> usize {
        self.fragments.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.fragments.is_empty()
    }
}

impl FragmentIo for MemFragmentIo {
    fn get_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        index: usize,
        buffer: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        buffer.clear();
        match self.fragments.get(&(device, *locator, index)) {
            Some(fragment) => {
                buffer.extend_from_slice(fragment);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        index: usize,
        fragment: &[u8],
    ) -> Result<(), Error> {
        self.fragments.insert((device, *locator, index), fragment.to_vec());
        Ok(())
    }

    fn delete_fragment(&mut self, device: DeviceId, locator: &Locator, index: usize) -> Result<(), Error> {
        self.fragments.remove(&(device, *locator, index));
        Ok(())
    }
}

/// What a repair plan's execution did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Chunks fully repaired and verified.
    pub chunks_repaired: usize,
    /// Fragments rebuilt from survivors and written.
    pub fragments_rebuilt: usize,
    /// Surviving fragments moved to their new device.
    pub fragments_copied: usize,
    /// Chunks the planner already found unrecoverable.
    pub unrecoverable: Vec<Locator>,
    /// Chunks whose repair failed, with why.
    pub failed: Vec<(Locator, Error)>,
}

/// What a scrub of one chunk found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubReport {
    /// Fragments read and checked.
    pub fragments_checked: usize,
    /// Fragments missing or failing verification.
    pub bad: FragmentSet,
    /// Bad fragments rebuilt and rewritten (verified).
    pub repaired: FragmentSet,
    /// For erasure coding with every fragment good: whether parity matches the data.
    /// Always true for replicas (every good replica passed its own checksum).
    pub parity_consistent: bool,
}

/// One chunk's fragments as read: reference header and the valid payloads.
struct Stripe {
    header: FragmentHeader,
    valid: FragmentSet,
}

impl Stripe {
    fn can_rebuild(&self) -> bool {
        self.valid.len() >= self.header.durability.fragments_needed()
    }
}

/// Executes repair plans and scrubs. Keeps its buffers across chunks (one per thread).
#[derive(Default)]
pub struct Repairer {
    codecs: Vec<Codec>,
    /// Fragment bytes by index, as read.
    fragments: Vec<Vec<u8>>,
    /// Shards back to back for reconstruction.
    shards: Vec<u8>,
    /// Bytes read back for verification.
    readback: Vec<u8>,
}

impl Repairer {
    /// A repairer with empty buffers.
    pub fn new() -> Repairer {
        Repairer::default()
    }

    fn codec(&mut self, data: usize, parity: usize) -> Result<&Codec, Error> {
        if let Some(position) = self.codecs.iter().position(|c| c.matches(data, parity)) {
            return Ok(&self.codecs[position]);
        }
        self.codecs.push(Codec::new(data, parity)?);
        Ok(&self.codecs[self.codecs.len() - 1])
    }

    /// Reads fragment `index` from `device` into `self.fragments[index]`; true if it is
    /// present and passes its checksum and identity checks. I/O errors count as missing.
    fn read_fragment<I: FragmentIo>(&mut self, io: &mut I, device: DeviceId, locator: &Locator, index: usize) -> bool {
        if self.fragments.len() <= index {
            self.fragments.resize_with(index + 1, Vec::new);
        }
        let buffer = &mut self.fragments[index];
        match io.get_fragment(device, locator, index, buffer) {
            Ok(true) => FragmentHeader::parse(buffer)
                .is_ok_and(|(header, _)| header.locator == *locator && usize::from(header.index) == index),
            _ => {
                buffer.clear();
                false
            }
        }
    }

    /// Picks the header most valid fragments agree on; fragments disagreeing with it are
    /// dropped from `valid`.
    fn agree(&self, valid: FragmentSet) -> Option<Stripe> {
        let headers: Vec<FragmentHeader> = valid
            .iter()
            .filter_map(|index| FragmentHeader::parse(&self.fragments[index]).ok())
            .map(|(header, _)| header)
            .collect();
        let reference = headers
            .iter()
            .max_by_key(|h| {
                let votes = headers.iter().filter(|other| h.same_chunk(other)).count();
                // Ties: prefer the lowest index (max_by_key keeps the last maximum).
                (votes, std::cmp::Reverse(h.index))
            })
            .copied()?;
        let mut agreed = FragmentSet::new();
        for header in headers.iter().filter(|h| h.same_chunk(&reference)) {
            agreed.insert(usize::from(header.index));
        }
        Some(Stripe {
            header: reference,
            valid: agreed,
        })
    }

    /// Rebuilds the fragments in `wanted` from the valid fragments of `stripe`; returns
    /// them whole (header ‖ payload), by index.
    fn rebuild(&mut self, stripe: &Stripe, wanted: &FragmentSet) -> Result<Vec<(usize, Vec<u8>)>, Error> {
        let header = stripe.header;
        let durability = header.durability;
        let needed = durability.fragments_needed();
        if stripe.valid.len() < needed {
            return Err(Error::TooManyLost {
                locator: header.locator,
                needed,
                usable: stripe.valid.len(),
                corrupt: 0,
            });
        }
        let build = |index: usize, payload: &[u8]| {
            FragmentHeader {
                index: index as u8,
                ..header
            }
            .to_fragment(payload)
        };
        match durability {
            Durability::Replicas(_) => {
                let source = stripe.valid.iter().next().unwrap_or(0);
                let payload = &self.fragments[source][FRAGMENT_HEADER_BYTES..];
                Ok(wanted.iter().map(|index| (index, build(index, payload))).collect())
            }
            Durability::ErasureCoded { data, parity } => {
                let shard_bytes = header.payload_bytes as usize;
                let total = durability.fragments_total();
                let stripe_bytes = shard_bytes * total;
                let mut shards = std::mem::take(&mut self.shards);
                shards.clear();
                shards.resize(stripe_bytes, 0);
                let mut present = vec![false; total];
                for index in stripe.valid.iter().take(needed) {
                    shards[index * shard_bytes..(index + 1) * shard_bytes]
                        .copy_from_slice(&self.fragments[index][FRAGMENT_HEADER_BYTES..]);
                    present[index] = true;
                }
                let result = self
                    .codec(usize::from(data), usize::from(parity))
                    .and_then(|codec| codec.reconstruct(&mut shards, shard_bytes, &present, false))
                    .map(|()| {
                        wanted
                            .iter()
                            .map(|index| {
                                let payload = &shards[index * shard_bytes..(index + 1) * shard_bytes];
                                (index, build(index, payload))
                            })
                            .collect()
                    });
                self.shards = shards;
                result
            }
        }
    }

    /// Writes `fragment` and reads it back: the bytes must be identical and verify.
    fn put_verified<I: FragmentIo>(
        &mut self,
        io: &mut I,
        device: DeviceId,
        locator: &Locator,
        index: usize,
        fragment: &[u8],
    ) -> Result<(), Error> {
        io.put_fragment(device, locator, index, fragment)?;
        let found = io.get_fragment(device, locator, index, &mut self.readback)?;
        if !found || self.readback != fragment || FragmentHeader::parse(&self.readback).is_err() {
            return Err(Error::Corrupt {
                reason: "fragment read back after repair differs from what was written",
            });
        }
        Ok(())
    }

    /// Executes every chunk repair of `plan`; a failing chunk is reported and the others
    /// go on.
    pub fn execute<I: FragmentIo>(&mut self, plan: &RepairPlan, io: &mut I) -> RepairReport {
        let mut report = RepairReport {
            unrecoverable: plan.unrecoverable.clone(),
            ..RepairReport::default()
        };
        for repair in &plan.repairs {
            match self.repair_chunk(repair, io) {
                Ok((rebuilt, copied)) => {
                    report.chunks_repaired += 1;
                    report.fragments_rebuilt += rebuilt;
                    report.fragments_copied += copied;
                }
                Err(error) => report.failed.push((repair.locator, error)),
            }
        }
        report
    }

    /// Repairs one chunk: reads its sources (falling back to the other survivors if a
    /// source is bad), rebuilds lost fragments onto their targets, moves the surviving
    /// fragments whose placement changed, and verifies every write. Returns (rebuilt,
    /// copied).
    pub fn repair_chunk<I: FragmentIo>(&mut self, repair: &ChunkRepair, io: &mut I) -> Result<(usize, usize), Error> {
        let locator = repair.locator;
        let mut wanted = FragmentSet::new();
        for rebuild in &repair.rebuild {
            wanted.insert(rebuild.index);
        }
        let mut valid = FragmentSet::new();
        for &(index, device) in &repair.sources {
            if self.read_fragment(io, device, &locator, index) {
                valid.insert(index);
            }
        }
        let mut stripe = self.agree(valid);
        if !wanted.is_empty() && !stripe.as_ref().is_some_and(Stripe::can_rebuild) {
            // A source was bad: read every other survivor too.
            for (index, &device) in repair.current.devices().iter().enumerate() {
                if !wanted.contains(index) && !valid.contains(index) && self.read_fragment(io, device, &locator, index)
                {
                    valid.insert(index);
                }
            }
            stripe = self.agree(valid);
        }
        let mut rebuilt = 0;
        if !wanted.is_empty() {
            let stripe = stripe
                .as_ref()
                .filter(|stripe| stripe.can_rebuild())
                .ok_or(Error::TooManyLost {
                    locator,
                    needed: repair.sources.len().max(1),
                    usable: valid.len(),
                    corrupt: 0,
                })?;
            for (index, fragment) in self.rebuild(stripe, &wanted)? {
                let target = repair
                    .target
                    .device(index)
                    .ok_or(Error::invalid("repair target placement is shorter than the chunk"))?;
                self.put_verified(io, target, &locator, index, &fragment)?;
                rebuilt += 1;
            }
        }
        let mut copied = 0;
        for copy in &repair.copies {
            let mut fragment = Vec::new();
            if self.read_fragment(io, copy.source, &locator, copy.index) {
                fragment = std::mem::take(&mut self.fragments[copy.index]);
            } else if let Some(stripe) = stripe.as_ref() {
                let mut single = FragmentSet::new();
                single.insert(copy.index);
                if let Some((_, rebuilt_fragment)) = self.rebuild(stripe, &single)?.pop() {
                    fragment = rebuilt_fragment;
                }
            }
            if fragment.is_empty() {
                return Err(Error::TooManyLost {
                    locator,
                    needed: 1,
                    usable: 0,
                    corrupt: 1,
                });
            }
            self.put_verified(io, copy.target, &locator, copy.index, &fragment)?;
            io.delete_fragment(copy.source, &locator, copy.index)?;
            copied += 1;
        }
        Ok((rebuilt, copied))
    }

    /// Scrubs one chunk: reads every fragment of `placement`, verifies each, and rebuilds
    /// and rewrites (in place, verified) the missing or bad ones from the good ones.
    pub fn scrub_chunk<I: FragmentIo>(
        &mut self,
        locator: &Locator,
        placement: &Placement,
        io: &mut I,
    ) -> Result<ScrubReport, Error> {
        let mut report = ScrubReport {
            fragments_checked: placement.len(),
            parity_consistent: true,
            ..ScrubReport::default()
        };
        let mut valid = FragmentSet::new();
        for (index, &device) in placement.devices().iter().enumerate() {
            if self.read_fragment(io, device, locator, index) {
                valid.insert(index);
            }
        }
        let Some(stripe) = self.agree(valid) else {
            return Err(Error::TooManyLost {
                locator: *locator,
                needed: 1,
                usable: 0,
                corrupt: placement.len(),
            });
        };
        let durability = stripe.header.durability;
        if durability.fragments_total() != placement.len() {
            return Err(Error::invalid(format!(
                "placement has {} devices, fragments say {}",
                placement.len(),
                durability.fragments_total()
            )));
        }
        for index in 0..placement.len() {
            if !stripe.valid.contains(index) {
                report.bad.insert(index);
            }
        }
        if report.bad.is_empty() {
            if let Durability::ErasureCoded { data, parity } = durability {
                report.parity_consistent = self.parity_consistent(&stripe, data, parity)?;
            }
            return Ok(report);
        }
        for (index, fragment) in self.rebuild(&stripe, &report.bad)? {
            let device = placement.devices()[index];
            self.put_verified(io, device, locator, index, &fragment)?;
            report.repaired.insert(index);
        }
        Ok(report)
    }

    fn parity_consistent(&mut self, stripe: &Stripe, data: u8, parity: u8) -> Result<bool, Error> {
        let shard_bytes = stripe.header.payload_bytes as usize;
        let total = usize::from(data) + usize::from(parity);
        let mut shards = std::mem::take(&mut self.shards);
        shards.clear();
        for index in 0..total {
            shards.extend_from_slice(&self.fragments[index][FRAGMENT_HEADER_BYTES..]);
        }
        let sealed_end = stripe.header.chunk_bytes as usize + TAG_BYTES;
        // Padding after the sealed bytes must be zero, as the writer left it.
        let padding_zero = shards[sealed_end..usize::from(data) * shard_bytes]
            .iter()
            .all(|&byte| byte == 0);
        let consistent = self
            .codec(usize::from(data), usize::from(parity))
            .map(|codec| codec.verify(&shards, shard_bytes))?;
        self.shards = shards;
        Ok(consistent && padding_zero)
    }
}
