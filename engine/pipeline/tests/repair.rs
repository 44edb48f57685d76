//! Repair and scrub over a file-backed fragment store: one directory per device.

use std::fs;
use std::path::PathBuf;

use kiseki_pipeline::repair::{FragmentIo, Repairer};
use kiseki_pipeline::{
    Durability, Error, HashAlgorithm, Locator, ReadPipeline, SystemKey, SystemKeyring, TenantKek, TenantKeys,
    WriteConfig, WritePipeline,
};
use kiseki_placement::{place, plan_repair, ChunkPlacement, Device, DeviceId, Loss, NodeId, PoolMap};

/// Fragments as files: `<root>/dev<id>/<locator>.<index>`.
struct DirFragmentIo {
    root: PathBuf,
}

impl DirFragmentIo {
    fn path(&self, device: DeviceId, locator: &Locator, index: usize) -> PathBuf {
        self.root.join(device.to_string()).join(format!("{locator}.{index}"))
    }

    fn lose_device(&self, device: DeviceId) {
        let _ = fs::remove_dir_all(self.root.join(device.to_string()));
    }

    fn count(&self, device: DeviceId) -> usize {
        fs::read_dir(self.root.join(device.to_string())).map_or(0, |entries| entries.count())
    }
}

impl FragmentIo for DirFragmentIo {
    fn get_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        index: usize,
        buffer: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        buffer.clear();
        match fs::read(self.path(device, locator, index)) {
            Ok(bytes) => {
                buffer.extend_from_slice(&bytes);
                Ok(true)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    fn put_fragment(
        &mut self,
        device: DeviceId,
        locator: &Locator,
        index: usize,
        fragment: &[u8],
    ) -> Result<(), Error> {
        let path = self.path(device, locator, index);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, fragment)?;
        Ok(())
    }

    fn delete_fragment(&mut self, device: DeviceId, locator: &Locator, index: usize) -> Result<(), Error> {
        match fs::remove_file(self.path(device, locator, index)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }
}

fn pool() -> PoolMap {
    PoolMap::new((0..16).map(|i| Device::new(DeviceId(i), NodeId(i / 2))).collect()).unwrap()
}

struct Stored {
    io: DirFragmentIo,
    _dir: tempfile::TempDir,
    chunks: Vec<ChunkPlacement>,
    originals: Vec<Vec<Vec<u8>>>,
    refs: Vec<kiseki_pipeline::ChunkRef>,
    plaintexts: Vec<Vec<u8>>,
}

fn store(durability: Durability, count: usize) -> Stored {
    let dir = tempfile::tempdir().unwrap();
    let mut io = DirFragmentIo {
        root: dir.path().to_path_buf(),
    };
    let pool = pool();
    let tenant = TenantKeys::cross_tenant(TenantKek::new([8; 32]));
    let system_key = SystemKey::new(1, [1; 32]);
    let mut pipeline = WritePipeline::new(WriteConfig {
        durability,
        ..WriteConfig::default()
    })
    .unwrap();
    let mut stored = Stored {
        io: DirFragmentIo {
            root: dir.path().to_path_buf(),
        },
        _dir: dir,
        chunks: Vec::new(),
        originals: Vec::new(),
        refs: Vec::new(),
        plaintexts: Vec::new(),
    };
    for i in 0..count {
        let plaintext: Vec<u8> = (0..5000 + i * 977).map(|j| (j * 31 + i) as u8).collect();
        let chunk = pipeline.encode_chunk(&plaintext, &tenant, &system_key).unwrap();
        let placement = place(&pool, &chunk.locator, chunk.fragment_count()).unwrap();
        let mut fragments = Vec::new();
        for fragment in chunk.fragments() {
            let bytes = fragment.to_vec();
            let device = placement.device(fragment.index).unwrap();
            io.put_fragment(device, &chunk.locator, fragment.index, &bytes).unwrap();
            fragments.push(bytes);
        }
        stored.chunks.push(ChunkPlacement {
            locator: chunk.locator,
            placement,
        });
        stored.originals.push(fragments);
        stored.refs.push(chunk.chunk_ref());
        stored.plaintexts.push(plaintext);
    }
    stored
}

fn repair_after_device_loss(durability: Durability) {
    let mut stored = store(durability, 40);
    let pool = pool();
    let lost = DeviceId(3);
    assert!(stored.io.count(lost) > 0);
    stored.io.lose_device(lost);

    let plan = plan_repair(&pool, Loss::Device(lost), durability.fragments_needed(), &stored.chunks).unwrap();
    assert!(plan.unrecoverable.is_empty());
    let report = Repairer::new().execute(&plan, &mut stored.io);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.chunks_repaired, plan.repairs.len());
    assert!(report.fragments_rebuilt >= plan.repairs.len());

    // Every fragment is where the new placement says, byte-identical to what was written.
    let mut buffer = Vec::new();
    let tenant = TenantKeys::cross_tenant(TenantKek::new([8; 32]));
    let mut keyring = SystemKeyring::new();
    keyring.insert(SystemKey::new(1, [1; 32]));
    let mut reader = ReadPipeline::new(HashAlgorithm::Blake3);
    for (i, chunk) in stored.chunks.iter().enumerate() {
        let placement = place(&plan.pool_after, &chunk.locator, durability.fragments_total()).unwrap();
        let mut fragments = Vec::new();
        for (index, &device) in placement.devices().iter().enumerate() {
            assert_ne!(device, lost);
            assert!(stored
                .io
                .get_fragment(device, &chunk.locator, index, &mut buffer)
                .unwrap());
            assert_eq!(buffer, stored.originals[i][index], "chunk {i} fragment {index}");
            fragments.push(buffer.clone());
        }
        let slots: Vec<Option<&[u8]>> = fragments.iter().map(|f| Some(f.as_slice())).collect();
        let mut out = vec![0; stored.refs[i].chunk_bytes as usize];
        let outcome = reader
            .read_chunk(&stored.refs[i], durability, &tenant, &keyring, &slots, &mut out)
            .unwrap();
        assert!(!outcome.degraded);
        assert_eq!(out, stored.plaintexts[i]);
    }
    assert_eq!(stored.io.count(lost), 0);
}

#[test]
fn device_loss_is_repaired_byte_identical_erasure_coded() {
    repair_after_device_loss(Durability::ErasureCoded { data: 4, parity: 2 });
}

#[test]
fn device_loss_is_repaired_byte_identical_replicated() {
    repair_after_device_loss(Durability::Replicas(3));
}

#[test]
fn scrub_detects_a_flipped_bit_and_repairs_it() {
    let mut stored = store(Durability::ErasureCoded { data: 8, parity: 3 }, 6);
    let mut repairer = Repairer::new();
    // Clean scrub first.
    for chunk in &stored.chunks {
        let report = repairer
            .scrub_chunk(&chunk.locator, &chunk.placement, &mut stored.io)
            .unwrap();
        assert!(report.bad.is_empty());
        assert!(report.parity_consistent);
        assert_eq!(report.fragments_checked, 11);
    }
    // Flip one bit in a parity fragment of chunk 0 and one in a data fragment of chunk 1,
    // and delete a fragment of chunk 2.
    let damage = [(0usize, 9usize, 1234usize), (1, 2, 77), (1, 5, 40_000)];
    for &(chunk, index, byte) in &damage {
        let placement = &stored.chunks[chunk].placement;
        let path = stored
            .io
            .path(placement.device(index).unwrap(), &stored.chunks[chunk].locator, index);
        let mut bytes = fs::read(&path).unwrap();
        let at = byte % bytes.len();
        bytes[at] ^= 0x10;
        fs::write(&path, bytes).unwrap();
    }
    let deleted = &stored.chunks[2];
    stored
        .io
        .delete_fragment(deleted.placement.device(0).unwrap(), &deleted.locator, 0)
        .unwrap();
    for (i, chunk) in stored.chunks.iter().enumerate() {
        let report = repairer
            .scrub_chunk(&chunk.locator, &chunk.placement, &mut stored.io)
            .unwrap();
        let expected: Vec<usize> = match i {
            0 => vec![9],
            1 => vec![2, 5],
            2 => vec![0],
            _ => vec![],
        };
        assert_eq!(report.bad.iter().collect::<Vec<_>>(), expected, "chunk {i}");
        assert_eq!(report.repaired, report.bad);
    }
    // Everything is back, byte-identical, and a second scrub is clean.
    let mut buffer = Vec::new();
    for (i, chunk) in stored.chunks.iter().enumerate() {
        for (index, &device) in chunk.placement.devices().iter().enumerate() {
            assert!(stored
                .io
                .get_fragment(device, &chunk.locator, index, &mut buffer)
                .unwrap());
            assert_eq!(buffer, stored.originals[i][index]);
        }
        let report = repairer
            .scrub_chunk(&chunk.locator, &chunk.placement, &mut stored.io)
            .unwrap();
        assert!(report.bad.is_empty() && report.parity_consistent);
    }
}

#[test]
fn scrub_reports_too_much_damage() {
    let mut stored = store(Durability::ErasureCoded { data: 4, parity: 2 }, 1);
    let chunk = stored.chunks[0].clone();
    for index in 0..3 {
        stored
            .io
            .delete_fragment(chunk.placement.device(index).unwrap(), &chunk.locator, index)
            .unwrap();
    }
    let result = Repairer::new().scrub_chunk(&chunk.locator, &chunk.placement, &mut stored.io);
    assert!(matches!(result, Err(Error::TooManyLost { .. })), "{result:?}");
}
