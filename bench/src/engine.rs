//! `kiseki bench engine`: the fragment store against fio on the same device.
//!
//! For each core count, fio runs its three checked-in job files first (sequential 1 MiB
//! write, then read, then 4 KiB random read at queue depth 32, one job per core, each on
//! its own region), then the device is formatted for that many cores and every core
//! drives its own allocation group through the store, as `kiseki-server` does:
//! - seqwrite: 1 MiB fragments, 8 puts in flight per core, each acknowledged only when
//!   durable (group commit);
//! - seqread: the same fragments read back whole, 8 in flight per core, CRC-verified;
//! - randread: 4 KiB fragments filling the same footprint, then random gets, 32 in
//!   flight per core.
//!
//! The device's contents are destroyed.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use kiseki_runtime::ExecutorConfig;
use kiseki_store::{format_device, FormatOptions, FragmentStore, Locator, StoreConfig};

use crate::fio::{self, FioRun};
use crate::report::Case;

/// Options of the engine suite.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// File or block device to use (destroyed).
    pub device: PathBuf,
    /// Core counts to measure, e.g. `[1, 2]`.
    pub core_counts: Vec<usize>,
    /// Bytes each core works on in each phase.
    pub region_bytes_per_core: u64,
    /// Seconds of each timed phase (fio runtime and the random-read phase).
    pub runtime_s: u32,
    /// Create or extend a regular file to this size first.
    pub create_bytes: Option<u64>,
    /// Skip fio (when it is not installed); ratios are then 0.
    pub skip_fio: bool,
}

const SUITE: &str = "engine";
const SEQ_FRAGMENT_BYTES: usize = 1 << 20;
const SEQ_IN_FLIGHT: usize = 8;
const RANDOM_FRAGMENT_BYTES: usize = 4096;
const RANDOM_IN_FLIGHT: usize = 32;

/// One core's figures for one phase.
#[derive(Debug)]
struct PhaseResult {
    bytes: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

/// Figures of one engine run (all cores), per phase.
#[derive(Debug, Default)]
struct EngineFigures {
    seqwrite: Vec<PhaseResult>,
    seqread: Vec<PhaseResult>,
    randread: Vec<PhaseResult>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

fn locator(core: usize, kind: u8, index: u64) -> Locator {
    let mut bytes = [0u8; 32];
    bytes[0] = kind;
    bytes[1] = core as u8;
    bytes[2..10].copy_from_slice(&index.to_le_bytes());
    // Spread like real locators (hashes) do.
    let mixed = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (core as u64) << 56;
    bytes[10..18].copy_from_slice(&mixed.to_le_bytes());
    Locator(bytes)
}

/// Runs the suite and returns its cases.
pub fn run(options: &EngineOptions) -> anyhow::Result<Vec<Case>> {
    let cpus = kiseki_runtime::available_cpus();
    if let Some(bytes) = options.create_bytes {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&options.device)
            .with_context(|| format!("creating {}", options.device.display()))?;
        if file.metadata()?.len() < bytes {
            // Write every byte once: a sparse file would make both fio's and Kiseki's
            // first writes pay for block allocation, and unevenly.
            fill_with_zeros(&file, bytes)?;
        }
    }
    let fio_available = !options.skip_fio && fio::fio_available();
    if !options.skip_fio && !fio_available {
        eprintln!("fio is not installed: baselines read 0 (apt-get install fio)");
    }
    let mut cases = Vec::new();
    let mut randread_iops_by_cores = Vec::new();
    for &cores in &options.core_counts {
        if cores == 0 {
            bail!("core counts must be at least 1");
        }
        let fio_figures = if fio_available {
            Some(run_fio_baselines(options, cores)?)
        } else {
            None
        };
        let figures = run_engine(options, cores, &cpus)?;
        let (write_bytes_per_s, write_latency) = aggregate(&figures.seqwrite);
        let (read_bytes_per_s, read_latency) = aggregate(&figures.seqread);
        let (random_bytes_per_s, random_latency) = aggregate(&figures.randread);
        let random_iops = random_bytes_per_s / RANDOM_FRAGMENT_BYTES as f64;
        randread_iops_by_cores.push((cores, random_iops));
        let fio_result = |select: fn(&FioFigures) -> f64| fio_figures.as_ref().map_or(0.0, select);
        let gigabytes = |bytes_per_s: f64| bytes_per_s / 1e9;
        let suffix = format!("{cores}core");
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("seqwrite-1m-durable-{suffix}"),
            gigabytes(write_bytes_per_s),
            "GB/s",
            "fio",
            gigabytes(fio_result(|fio| fio.seqwrite.write_bytes_per_s)),
        ));
        cases.push(Case::lower_is_better(
            SUITE,
            &format!("seqwrite-1m-p99-{suffix}"),
            write_latency.value_at_quantile(0.99) as f64,
            "us",
            "fio",
            fio_result(|fio| fio.seqwrite.write_p99_us),
        ));
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("seqread-1m-{suffix}"),
            gigabytes(read_bytes_per_s),
            "GB/s",
            "fio",
            gigabytes(fio_result(|fio| fio.seqread.read_bytes_per_s)),
        ));
        cases.push(Case::lower_is_better(
            SUITE,
            &format!("seqread-1m-p99-{suffix}"),
            read_latency.value_at_quantile(0.99) as f64,
            "us",
            "fio",
            fio_result(|fio| fio.seqread.read_p99_us),
        ));
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("randread-4k-qd32-{suffix}"),
            random_iops,
            "IOPS",
            "fio",
            fio_result(|fio| fio.randread.read_iops),
        ));
        cases.push(Case::lower_is_better(
            SUITE,
            &format!("randread-4k-p50-{suffix}"),
            random_latency.value_at_quantile(0.5) as f64,
            "us",
            "fio",
            fio_result(|fio| fio.randread.read_p50_us),
        ));
        cases.push(Case::lower_is_better(
            SUITE,
            &format!("randread-4k-p99-{suffix}"),
            random_latency.value_at_quantile(0.99) as f64,
            "us",
            "fio",
            fio_result(|fio| fio.randread.read_p99_us),
        ));
    }
    if let (Some(&(1, one)), Some(&(many_cores, many))) =
        (randread_iops_by_cores.first(), randread_iops_by_cores.last())
    {
        if many_cores > 1 && one > 0.0 {
            cases.push(Case::higher_is_better(
                SUITE,
                &format!("randread-4k-scaling-{many_cores}core"),
                many / one,
                "x",
                "linear",
                many_cores as f64,
            ));
        }
    }
    Ok(cases)
}

fn fill_with_zeros(file: &std::fs::File, bytes: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let chunk = vec![0u8; 8 << 20];
    let mut offset = 0;
    while offset < bytes {
        let length = chunk.len().min((bytes - offset) as usize);
        file.write_all_at(&chunk[..length], offset)?;
        offset += length as u64;
    }
    file.sync_all()?;
    Ok(())
}

struct FioFigures {
    seqwrite: fio::FioResult,
    seqread: fio::FioResult,
    randread: fio::FioResult,
}

fn run_fio_baselines(options: &EngineOptions, cores: usize) -> anyhow::Result<FioFigures> {
    let job = |profile: &str| FioRun {
        profile: profile.to_string(),
        device: options.device.clone(),
        size_bytes: options.region_bytes_per_core,
        runtime_s: options.runtime_s,
        numjobs: cores,
    };
    // Write first so the reads hit written blocks, not holes the filesystem fakes.
    let seqwrite = fio::run(&job(fio::SEQWRITE_1M)).context("fio seqwrite")?;
    let seqread = fio::run(&job(fio::SEQREAD_1M)).context("fio seqread")?;
    let randread = fio::run(&job(fio::RANDREAD_4K)).context("fio randread")?;
    Ok(FioFigures {
        seqwrite,
        seqread,
        randread,
    })
}

/// Sums throughput over cores (each core's bytes over the longest core's time) and
/// merges latency histograms.
fn aggregate(results: &[PhaseResult]) -> (f64, Histogram<u64>) {
    let mut latency = histogram();
    let mut bytes = 0u64;
    let mut longest = Duration::ZERO;
    for result in results {
        let _ = latency.add(&result.latency_us);
        bytes += result.bytes;
        longest = longest.max(result.elapsed);
    }
    let bytes_per_s = if longest.is_zero() {
        0.0
    } else {
        bytes as f64 / longest.as_secs_f64()
    };
    (bytes_per_s, latency)
}

fn bench_store_config() -> StoreConfig {
    StoreConfig {
        // Background work would only add noise to a timed run.
        scrub_interval_ms: 0,
        compaction_interval_ms: 3_600_000,
        checkpoint_interval_bytes: 1 << 40,
        ..StoreConfig::default()
    }
}

fn run_engine(options: &EngineOptions, cores: usize, cpus: &[usize]) -> anyhow::Result<EngineFigures> {
    format_device(
        &options.device,
        &FormatOptions {
            cores: cores as u32,
            force: true,
            ..FormatOptions::default()
        },
    )
    .with_context(|| format!("formatting {}", options.device.display()))?;
    let barrier = Arc::new(Barrier::new(cores));
    let (sender, receiver) = mpsc::channel::<(usize, anyhow::Result<[PhaseResult; 3]>)>();
    let device = options.device.clone();
    let region_bytes = options.region_bytes_per_core;
    let runtime = Duration::from_secs(u64::from(options.runtime_s));
    let config = ExecutorConfig {
        dma_arena_bytes: 96 << 20,
        ..ExecutorConfig::default()
    };
    let core_set = kiseki_runtime::start_cores(config, cores, cpus, move |core| {
        let device = device.clone();
        let barrier = Arc::clone(&barrier);
        let sender = sender.clone();
        async move {
            let result = core_bench(core, &device, region_bytes, runtime, &barrier).await;
            let _ = sender.send((core, result));
        }
    })?;
    let mut figures = EngineFigures::default();
    for _ in 0..cores {
        let (core, result) = receiver.recv().context("a core stopped without reporting")?;
        let [seqwrite, seqread, randread] = result.with_context(|| format!("core {core}"))?;
        figures.seqwrite.push(seqwrite);
        figures.seqread.push(seqread);
        figures.randread.push(randread);
    }
    core_set.join()?;
    Ok(figures)
}

/// Runs `in_flight` tasks that each call `operation(index)` for indices taken in order
/// from `0..count`, stopping early at `deadline`.
async fn drive<F, Fut>(
    count: u64,
    in_flight: usize,
    deadline: Option<Instant>,
    operation: F,
) -> anyhow::Result<PhaseResult>
where
    F: Fn(u64) -> Fut + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + 'static,
{
    let next = Rc::new(Cell::new(0u64));
    let latency = Rc::new(RefCell::new(histogram()));
    let operation = Rc::new(operation);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (next, latency, operation) = (Rc::clone(&next), Rc::clone(&latency), Rc::clone(&operation));
        handles.push(kiseki_runtime::spawn("bench-driver", async move {
            let mut bytes = 0u64;
            loop {
                let index = next.get();
                if index >= count || deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return Ok::<_, anyhow::Error>(bytes);
                }
                next.set(index + 1);
                let begun = Instant::now();
                bytes += operation(index).await?;
                let _ = latency.borrow_mut().record(begun.elapsed().as_micros().max(1) as u64);
            }
        })?);
    }
    let mut bytes = 0;
    for handle in handles {
        bytes += handle.await?;
    }
    let latency_us = latency.borrow().clone();
    Ok(PhaseResult {
        bytes,
        elapsed: started.elapsed(),
        latency_us,
    })
}

async fn core_bench(
    core: usize,
    device: &Path,
    region_bytes: u64,
    runtime: Duration,
    barrier: &Barrier,
) -> anyhow::Result<[PhaseResult; 3]> {
    let store = FragmentStore::open(device, core as u32, bench_store_config()).await?;
    let sequential_count = region_bytes / SEQ_FRAGMENT_BYTES as u64;
    let random_count = region_bytes / RANDOM_FRAGMENT_BYTES as u64;
    let data: Rc<Vec<u8>> = Rc::new(
        (0..SEQ_FRAGMENT_BYTES)
            .map(|index| (index * 31 + core * 7) as u8)
            .collect(),
    );

    barrier.wait();
    let (writer, bytes) = (store.clone(), Rc::clone(&data));
    let seqwrite = drive(sequential_count, SEQ_IN_FLIGHT, None, move |index| {
        let (store, bytes) = (writer.clone(), Rc::clone(&bytes));
        async move {
            store.put(locator(core, 1, index), &bytes).await?;
            Ok(bytes.len() as u64)
        }
    })
    .await?;

    barrier.wait();
    let reader = store.clone();
    let seqread = drive(sequential_count, SEQ_IN_FLIGHT, None, move |index| {
        let store = reader.clone();
        async move { Ok(store.get(&locator(core, 1, index), None).await?.len() as u64) }
    })
    .await?;

    // Fill the random-read footprint with 4 KiB fragments (not timed).
    let (writer, bytes) = (store.clone(), Rc::clone(&data));
    drive(random_count, RANDOM_IN_FLIGHT, None, move |index| {
        let (store, bytes) = (writer.clone(), Rc::clone(&bytes));
        async move {
            store
                .put(locator(core, 2, index), &bytes[..RANDOM_FRAGMENT_BYTES])
                .await?;
            Ok(RANDOM_FRAGMENT_BYTES as u64)
        }
    })
    .await?;

    barrier.wait();
    let reader = store.clone();
    let random_state = Rc::new(Cell::new(0x2545_f491_4f6c_dd1d_u64 ^ core as u64));
    let randread = drive(u64::MAX, RANDOM_IN_FLIGHT, Some(Instant::now() + runtime), move |_| {
        let store = reader.clone();
        let mut state = random_state.get();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        random_state.set(state);
        let index = state % random_count;
        async move { Ok(store.get(&locator(core, 2, index), None).await?.len() as u64) }
    })
    .await?;
    store.close().await?;
    Ok([seqwrite, seqread, randread])
}
