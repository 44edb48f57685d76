//! Running a node: cores, their stores, the control channel of each core, shutdown.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use kiseki_runtime::{ExecutorConfig, ExecutorStats};
use kiseki_store::{read_superblock, FragmentStore, SpaceInfo, StoreConfig, StoreStats};

/// Options of `kiseki-server run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// A formatted device; repeat for several.
    #[arg(long = "device", required = true)]
    pub devices: Vec<PathBuf>,
    /// Cores to run (must match the devices' format); default: all available.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Address of the metrics, health and admin endpoint.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub metrics_addr: String,
    /// Control messages queued per core at most.
    #[arg(long, default_value_t = 64)]
    pub control_queue_max: usize,
}

/// What the admin thread may ask a core.
pub enum ControlMessage {
    /// Send a snapshot of the core's figures.
    Snapshot(flume::Sender<CoreSnapshot>),
    /// Close the stores and stop.
    Shutdown,
}

/// One device's figures on one core.
#[derive(Debug, Clone)]
pub struct DeviceSnapshot {
    /// Device path.
    pub device: PathBuf,
    /// Store counters and histograms.
    pub stats: StoreStats,
    /// Space.
    pub space: SpaceInfo,
    /// Why the store refuses writes, if it failed.
    pub failure: Option<String>,
}

/// One core's figures.
#[derive(Debug, Clone)]
pub struct CoreSnapshot {
    /// Core index.
    pub core: usize,
    /// Executor counters.
    pub executor: ExecutorStats,
    /// Per device.
    pub devices: Vec<DeviceSnapshot>,
}

/// Prints the default configuration of the node, section by section.
pub fn print_config() {
    let executor = ExecutorConfig::default();
    let store = StoreConfig::default();
    let sections: [(&str, Vec<(&str, String)>); 3] = [
        (
            "executor",
            vec![
                ("ring_entries", executor.ring_entries.to_string()),
                ("dma_arena_bytes", executor.dma_arena_bytes.to_string()),
                ("tasks_max", executor.tasks_max.to_string()),
                ("registered_files_max", executor.registered_files_max.to_string()),
                ("stall_threshold_ms", executor.stall_threshold_ms.to_string()),
                ("polls_per_reap", executor.polls_per_reap.to_string()),
            ],
        ),
        (
            "store",
            vec![
                ("fragment_bytes_max", store.fragment_bytes_max.to_string()),
                ("batch_payload_bytes_max", store.batch_payload_bytes_max.to_string()),
                ("batch_entries_max", store.batch_entries_max.to_string()),
                ("batches_in_flight_max", store.batches_in_flight_max.to_string()),
                ("checkpoint_interval_bytes", store.checkpoint_interval_bytes.to_string()),
                ("reserve_segments", store.reserve_segments.to_string()),
                ("compaction_dead_ratio_min", store.compaction_dead_ratio_min.to_string()),
                ("compaction_interval_ms", store.compaction_interval_ms.to_string()),
                (
                    "background_bytes_per_second",
                    store.background_bytes_per_second.to_string(),
                ),
                ("scrub_interval_ms", store.scrub_interval_ms.to_string()),
                ("scrub_slice_entries", store.scrub_slice_entries.to_string()),
            ],
        ),
        (
            "node",
            vec![
                ("metrics_addr", "\"127.0.0.1:9090\"".to_string()),
                ("control_queue_max", "64".to_string()),
                (
                    "segment_bytes (format)",
                    kiseki_store::device::SEGMENT_BYTES_DEFAULT.to_string(),
                ),
            ],
        ),
    ];
    println!("# kiseki-server defaults");
    for (section, entries) in sections {
        println!("[{section}]");
        for (key, value) in entries {
            println!("{key} = {value}");
        }
    }
}

async fn core_main(
    core: usize,
    devices: Vec<PathBuf>,
    control: flume::Receiver<ControlMessage>,
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
) {
    let mut stores = Vec::with_capacity(devices.len());
    for device in &devices {
        match FragmentStore::open(device, core as u32, StoreConfig::default()).await {
            Ok(store) => stores.push(store),
            Err(error) => {
                let _ = ready.send(Err(format!("core {core}: {error}")));
                return;
            }
        }
    }
    let _ = ready.send(Ok(core));
    while let Ok(message) = control.recv_async().await {
        match message {
            ControlMessage::Snapshot(reply) => {
                let snapshot = CoreSnapshot {
                    core,
                    executor: kiseki_runtime::stats().unwrap_or_default(),
                    devices: stores
                        .iter()
                        .map(|store| DeviceSnapshot {
                            device: store.device().to_path_buf(),
                            stats: store.stats(),
                            space: store.space(),
                            failure: store.failure(),
                        })
                        .collect(),
                };
                let _ = reply.try_send(snapshot);
            }
            ControlMessage::Shutdown => break,
        }
    }
    for store in &stores {
        if let Err(error) = store.close().await {
            tracing::error!(core, %error, "closing a store failed");
        }
    }
}

fn stop_cores(senders: &[flume::Sender<ControlMessage>]) {
    for sender in senders {
        let _ = sender.send_timeout(ControlMessage::Shutdown, Duration::from_secs(5));
    }
}

/// Runs the node until SIGTERM or SIGINT.
pub fn run(options: RunOptions) -> anyhow::Result<()> {
    let cpus = kiseki_runtime::available_cpus();
    let cores = options.cores.unwrap_or(cpus.len().max(1));
    for device in &options.devices {
        let superblock = read_superblock(device).with_context(|| format!("opening {}", device.display()))?;
        if superblock.ag_count as usize != cores {
            bail!(
                "{} is formatted for {} cores but this node runs {cores}: pass --cores {} or reformat",
                device.display(),
                superblock.ag_count,
                superblock.ag_count
            );
        }
    }
    // Installed before the cores start, so a signal during recovery still stops cleanly.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    let mut senders = Vec::with_capacity(cores);
    let mut receivers = Vec::with_capacity(cores);
    for _ in 0..cores {
        let (sender, receiver) = flume::bounded(options.control_queue_max.max(1));
        senders.push(sender);
        receivers.push(receiver);
    }
    let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
    let devices = options.devices.clone();
    let core_set = kiseki_runtime::start_cores(ExecutorConfig::default(), cores, &cpus, move |core| {
        let receiver = receivers.get(core).cloned();
        let ready = ready_sender.clone();
        let devices = devices.clone();
        async move {
            match receiver {
                Some(receiver) => core_main(core, devices, receiver, ready).await,
                None => {
                    let _ = ready.send(Err(format!("core {core}: no control channel")));
                }
            }
        }
    })?;
    for _ in 0..cores {
        match ready_receiver.recv_timeout(Duration::from_secs(600)) {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                for sender in &senders {
                    let _ = sender.try_send(ControlMessage::Shutdown);
                }
                let _ = core_set.join();
                bail!("{error}");
            }
            Err(_) => bail!("cores did not start within 600 s"),
        }
    }
    let serve_metrics = || -> anyhow::Result<std::net::SocketAddr> {
        let listener = std::net::TcpListener::bind(&options.metrics_addr)
            .with_context(|| format!("binding the metrics endpoint {}", options.metrics_addr))?;
        let metrics_addr = listener.local_addr()?;
        let metrics_senders = senders.clone();
        std::thread::Builder::new()
            .name("kiseki-admin".into())
            .spawn(move || crate::metrics::serve(listener, metrics_senders))?;
        Ok(metrics_addr)
    };
    let metrics_addr = match serve_metrics() {
        Ok(address) => address,
        Err(error) => {
            // The cores hold open stores: close them before reporting the error.
            stop_cores(&senders);
            let _ = core_set.join();
            return Err(error);
        }
    };
    println!("kiseki-server: {cores} cores, {} device(s)", options.devices.len());
    for device in &options.devices {
        println!("  device {}", device.display());
    }
    println!("  metrics http://{metrics_addr}/metrics  health http://{metrics_addr}/health");
    println!("ready");
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping: closing stores and writing checkpoints");
    }
    stop_cores(&senders);
    core_set.join()?;
    println!("stopped");
    Ok(())
}
