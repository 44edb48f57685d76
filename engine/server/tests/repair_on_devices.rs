//! The data path's repair and scrub over the real on-device fragment store: 16 file
//! devices, each opened O_DIRECT by one core's fragment store; chunks encoded by the
//! pipeline, placed by rendezvous hashing, a device lost (reformatted), its fragments
//! rebuilt elsewhere, and a flipped bit on a device found and repaired by scrub.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kiseki_pipeline::repair::{FragmentIo, Repairer};
use kiseki_pipeline::{
    Durability, Error, HashAlgorithm, ReadPipeline, SystemKey, SystemKeyring, TenantKek, TenantKeys, WriteConfig,
    WritePipeline,
};
use kiseki_placement::{place, plan_repair, ChunkPlacement, Device, DeviceId, Loss, NodeId, PoolMap};
use kiseki_store::{format_device, FormatOptions, FragmentStore, Locator, StoreConfig, StoreError};

const DEVICES: u32 = 16;

enum Request {
    Get(u32, Locator, flume::Sender<Result<Option<Vec<u8>>, String>>),
    Put(u32, Locator, Vec<u8>, flume::Sender<Result<(), String>>),
    Delete(u32, Locator, flume::Sender<Result<(), String>>),
    /// Reformats the device and reopens its store empty: the device is lost.
    Lose(u32, flume::Sender<()>),
}

/// The store key of fragment `index` of a chunk.
fn fragment_key(locator: &kiseki_pipeline::Locator, index: usize) -> Locator {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&locator.0);
    hasher.update(&(index as u64).to_le_bytes());
    Locator(*hasher.finalize().as_bytes())
}

fn format(path: &Path) {
    format_device(
        path,
        &FormatOptions {
            cores: 1,
            segment_bytes: 256 << 10,
            force: true,
            create_bytes: Some(16 << 20),
        },
    )
    .unwrap();
}

/// One core owning the stores of every device; requests arrive over a bounded channel.
fn start_core(paths: Vec<PathBuf>) -> (flume::Sender<Request>, std::thread::JoinHandle<()>) {
    let (sender, receiver) = flume::bounded::<Request>(16);
    let thread = std::thread::spawn(move || {
        kiseki_runtime::block_on(kiseki_runtime::ExecutorConfig::default(), 0, async move {
            let mut stores = Vec::new();
            for path in &paths {
                stores.push(FragmentStore::open(path, 0, StoreConfig::default()).await.unwrap());
            }
            while let Ok(request) = receiver.recv_async().await {
                match request {
                    Request::Get(device, key, reply) => {
                        let result = match stores[device as usize].get(&key, None).await {
                            Ok(fragment) => Ok(Some(fragment.as_slice().to_vec())),
                            Err(StoreError::NotFound { .. }) => Ok(None),
                            Err(error) => Err(error.to_string()),
                        };
                        let _ = reply.send(result);
                    }
                    Request::Put(device, key, bytes, reply) => {
                        let result = stores[device as usize]
                            .put(key, &bytes)
                            .await
                            .map_err(|error| error.to_string());
                        let _ = reply.send(result);
                    }
                    Request::Delete(device, key, reply) => {
                        let result = match stores[device as usize].delete(&key).await {
                            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
                            Err(error) => Err(error.to_string()),
                        };
                        let _ = reply.send(result);
                    }
                    Request::Lose(device, reply) => {
                        stores[device as usize].close().await.unwrap();
                        format(&paths[device as usize]);
                        stores[device as usize] =
                            FragmentStore::open(&paths[device as usize], 0, StoreConfig::default())
                                .await
                                .unwrap();
                        let _ = reply.send(());
                    }
                }
            }
            for store in &stores {
                store.close().await.unwrap();
            }
        })
        .unwrap();
    });
    (sender, thread)
}

/// [`FragmentIo`] over the stores: each call is a message to the owning core.
struct StoreFragmentIo {
    core: flume::Sender<Request>,
}

fn store_error(message: String) -> Error {
    Error::from(std::io::Error::other(message))
}

impl FragmentIo for StoreFragmentIo {
    fn get_fragment(
        &mut self,
        device: DeviceId,
        locator: &kiseki_pipeline::Locator,
        index: usize,
        buffer: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let (reply, answer) = flume::bounded(1);
        self.core
            .send(Request::Get(device.0, fragment_key(locator, index), reply))
            .unwrap();
        buffer.clear();
        match answer.recv().unwrap() {
            Ok(Some(bytes)) => {
                buffer.extend_from_slice(&bytes);
                Ok(true)
            }
            Ok(None) => Ok(false),
            // A corrupt fragment reads as missing: the pipeline rebuilds it from the rest.
            Err(message) if message.contains("corrupt") => Ok(false),
            Err(message) => Err(store_error(message)),
        }
    }

    fn put_fragment(
        &mut self,
        device: DeviceId,
        locator: &kiseki_pipeline::Locator,
        index: usize,
        fragment: &[u8],
    ) -> Result<(), Error> {
        let (reply, answer) = flume::bounded(1);
        let request = Request::Put(device.0, fragment_key(locator, index), fragment.to_vec(), reply);
        self.core.send(request).unwrap();
        answer.recv().unwrap().map_err(store_error)
    }

    fn delete_fragment(
        &mut self,
        device: DeviceId,
        locator: &kiseki_pipeline::Locator,
        index: usize,
    ) -> Result<(), Error> {
        let (reply, answer) = flume::bounded(1);
        self.core
            .send(Request::Delete(device.0, fragment_key(locator, index), reply))
            .unwrap();
        answer.recv().unwrap().map_err(store_error)
    }
}

fn pool() -> PoolMap {
    PoolMap::new((0..DEVICES).map(|i| Device::new(DeviceId(i), NodeId(i / 2))).collect()).unwrap()
}

#[test]
fn a_lost_device_is_rebuilt_and_a_flipped_bit_repaired_on_real_devices() {
    let directory = tempfile::Builder::new()
        .prefix("kiseki-repair")
        .tempdir_in("/var/tmp")
        .unwrap();
    let paths: Vec<PathBuf> = (0..DEVICES)
        .map(|i| directory.path().join(format!("device-{i}.img")))
        .collect();
    for path in &paths {
        format(path);
    }
    let (core, thread) = start_core(paths.clone());
    let mut io = StoreFragmentIo { core: core.clone() };
    let durability = Durability::ErasureCoded { data: 4, parity: 2 };
    let pool = pool();
    let tenant = TenantKeys::cross_tenant(TenantKek::new([8; 32]));
    let mut keyring = SystemKeyring::new();
    keyring.insert(SystemKey::new(1, [1; 32]));
    let mut writer = WritePipeline::new(WriteConfig {
        durability,
        ..WriteConfig::default()
    })
    .unwrap();
    let (mut chunks, mut references, mut plaintexts) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..40usize {
        let plaintext: Vec<u8> = (0..5000 + i * 977).map(|j| (j * 31 + i) as u8).collect();
        let chunk = writer
            .encode_chunk(&plaintext, &tenant, &SystemKey::new(1, [1; 32]))
            .unwrap();
        let placement = place(&pool, &chunk.locator, chunk.fragment_count()).unwrap();
        for fragment in chunk.fragments() {
            let device = placement.device(fragment.index).unwrap();
            io.put_fragment(device, &chunk.locator, fragment.index, &fragment.to_vec())
                .unwrap();
        }
        chunks.push(ChunkPlacement {
            locator: chunk.locator,
            placement,
        });
        references.push(chunk.chunk_ref());
        plaintexts.push(plaintext);
    }

    // Lose a device: its store is reformatted, every fragment on it gone.
    let lost = DeviceId(3);
    let (reply, done) = flume::bounded(1);
    core.send(Request::Lose(lost.0, reply)).unwrap();
    done.recv().unwrap();
    let plan = plan_repair(&pool, Loss::Device(lost), durability.fragments_needed(), &chunks).unwrap();
    assert!(!plan.repairs.is_empty(), "device 3 held fragments");
    assert!(plan.unrecoverable.is_empty());
    let report = Repairer::new().execute(&plan, &mut io);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.chunks_repaired, plan.repairs.len());

    // Every chunk reads back whole, not degraded, from its new placement.
    let mut reader = ReadPipeline::new(HashAlgorithm::Blake3);
    let mut buffer = Vec::new();
    let mut new_chunks = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let placement = place(&plan.pool_after, &chunk.locator, durability.fragments_total()).unwrap();
        let mut fragments = Vec::new();
        for (index, &device) in placement.devices().iter().enumerate() {
            assert_ne!(device, lost);
            assert!(
                io.get_fragment(device, &chunk.locator, index, &mut buffer).unwrap(),
                "chunk {i} fragment {index}"
            );
            fragments.push(buffer.clone());
        }
        let slots: Vec<Option<&[u8]>> = fragments.iter().map(|fragment| Some(fragment.as_slice())).collect();
        let mut out = vec![0; references[i].chunk_bytes as usize];
        let outcome = reader
            .read_chunk(&references[i], durability, &tenant, &keyring, &slots, &mut out)
            .unwrap();
        assert!(!outcome.degraded);
        assert_eq!(out, plaintexts[i]);
        new_chunks.push(ChunkPlacement {
            locator: chunk.locator,
            placement,
        });
    }

    // Flip a bit inside one fragment on its device file; scrub finds it and repairs it.
    let victim = &new_chunks[0];
    let device = victim.placement.devices()[1];
    assert!(io.get_fragment(device, &victim.locator, 1, &mut buffer).unwrap());
    let raw = std::fs::read(&paths[device.0 as usize]).unwrap();
    let offset = raw
        .windows(64)
        .position(|window| window == &buffer[..64])
        .expect("fragment on the device");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[device.0 as usize])
        .unwrap();
    file.write_all_at(&[raw[offset + 100] ^ 0x04], (offset + 100) as u64)
        .unwrap();
    file.sync_all().unwrap();
    let mut repairer = Repairer::new();
    let scrub = repairer
        .scrub_chunk(&victim.locator, &victim.placement, &mut io)
        .unwrap();
    assert!(scrub.bad.contains(1), "scrub finds the flipped bit: {scrub:?}");
    assert!(scrub.repaired.contains(1), "and rewrites the fragment: {scrub:?}");
    let again = repairer
        .scrub_chunk(&victim.locator, &victim.placement, &mut io)
        .unwrap();
    assert!(again.bad.is_empty(), "scrub repaired it: {again:?}");

    drop(io);
    drop(core);
    thread.join().unwrap();
}
