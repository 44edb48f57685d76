//! The crash-test writer: stores and deletes fragments as fast as it can and appends a
//! line to the acknowledgment log after each acknowledged operation (`p INDEX` or
//! `d INDEX`), and `x INDEX` before it asks for a delete. A test SIGKILLs it at random
//! moments and checks the device against the log: every acknowledged put reads back
//! byte-identical, every acknowledged delete is gone, and nothing ever reads back wrong.

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

use kiseki_runtime::ExecutorConfig;
use kiseki_store::{FragmentStore, Locator, StoreConfig, StoreError};

/// Options of the hidden `torture-writer` command.
#[derive(Debug, Clone, clap::Args)]
pub struct TortureOptions {
    /// Formatted device (one allocation group is used: core 0).
    #[arg(long)]
    pub device: PathBuf,
    /// Acknowledgment log (appended).
    #[arg(long)]
    pub ack_log: PathBuf,
    /// First fragment index of this run (indices never repeat across runs).
    #[arg(long, default_value_t = 0)]
    pub first_index: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Live fragments kept at most (older ones are deleted).
    #[arg(long, default_value_t = 2000)]
    pub live_max: u64,
}

/// The locator of fragment `index`.
pub fn torture_locator(index: u64) -> Locator {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&index.to_le_bytes());
    bytes[8..16].copy_from_slice(&index.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    Locator(bytes)
}

/// Size of fragment `index`: mostly small, some up to 256 KiB.
pub fn torture_size(index: u64) -> usize {
    let mixed = index.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
    match mixed % 10 {
        0 => (mixed as usize % (256 << 10)) + 1,
        1 => 0,
        _ => (mixed as usize % 16_384) + 1,
    }
}

/// Content of fragment `index`.
pub fn torture_payload(index: u64) -> Vec<u8> {
    let mut state = index ^ 0x5851_f42d_4c95_7f2d;
    (0..torture_size(index))
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Runs the writer until killed.
pub fn run(options: TortureOptions) -> anyhow::Result<()> {
    let log = OpenOptions::new().create(true).append(true).open(&options.ack_log)?;
    let config = ExecutorConfig {
        dma_arena_bytes: 32 << 20,
        ..ExecutorConfig::default()
    };
    kiseki_runtime::block_on(config, 0, async move {
        let store_config = StoreConfig {
            compaction_interval_ms: 50,
            checkpoint_interval_bytes: 4 << 20,
            batch_payload_bytes_max: 1 << 20,
            fragment_bytes_max: 256 << 10,
            scrub_interval_ms: 0,
            background_bytes_per_second: 256 << 20,
            ..StoreConfig::default()
        };
        let store = FragmentStore::open(&options.device, 0, store_config).await?;
        let log = Rc::new(RefCell::new(log));
        let next = Rc::new(Cell::new(options.first_index));
        let mut handles = Vec::new();
        for _ in 0..options.writers.max(1) {
            let (store, log, next) = (store.clone(), Rc::clone(&log), Rc::clone(&next));
            let (first, live_max) = (options.first_index, options.live_max);
            handles.push(kiseki_runtime::spawn("torture-writer", async move {
                loop {
                    let index = next.get();
                    next.set(index + 1);
                    match store.put(torture_locator(index), &torture_payload(index)).await {
                        // One write(2) per line: a SIGKILL never leaves half a line.
                        Ok(()) => log.borrow_mut().write_all(format!("p {index}\n").as_bytes())?,
                        // Full: give compaction (on this same core) time to reclaim.
                        Err(StoreError::NoSpace { .. }) => {
                            kiseki_runtime::sleep(std::time::Duration::from_millis(5)).await
                        }
                        Err(error) => return Err(anyhow::Error::from(error)),
                    }
                    // Keep the footprint bounded: delete an old fragment of this run.
                    if index >= first + live_max {
                        let old = index - live_max;
                        // Intent first: a delete may become durable before its reply.
                        log.borrow_mut().write_all(format!("x {old}\n").as_bytes())?;
                        match store.delete(&torture_locator(old)).await {
                            Ok(()) => log.borrow_mut().write_all(format!("d {old}\n").as_bytes())?,
                            Err(StoreError::NotFound { .. }) => {}
                            Err(error) => return Err(anyhow::Error::from(error)),
                        }
                    }
                }
            })?);
        }
        for handle in handles {
            handle.await?;
        }
        Ok::<(), anyhow::Error>(())
    })?
}
