//! Running a node: cores, their stores, the control channel of each core, shutdown.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use kiseki_runtime::local::Notify;
use kiseki_runtime::{ExecutorConfig, ExecutorStats};
use kiseki_shard_host::{serve_core, CoreHost, CoreService, HostConfig, ShardLog};

use crate::fragments::{FragmentService, NodeService};
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
    /// The cluster map (written by `kiseki-server init`): with it, every core hosts the
    /// shard replicas the map places there and serves them on its port.
    #[arg(long, requires = "node_id")]
    pub cluster: Option<PathBuf>,
    /// This node's id in the cluster map.
    #[arg(long, requires = "cluster")]
    pub node_id: Option<u64>,
    /// Milliseconds between consensus ticks (elections take 10 ticks without a leader).
    #[arg(long, default_value_t = 20)]
    pub tick_interval_ms: u64,
    /// Mutual TLS 1.3 for peers and clients: a directory with the cluster CA (`ca.pem`)
    /// and this node's `node-N.pem` / `node-N.key` (`kiseki certs`). Without it: plain TCP.
    #[arg(long, requires = "cluster")]
    pub tls_dir: Option<PathBuf>,
}

/// The TLS files of node `node_id` in `dir`, as `kiseki certs` writes them.
pub fn node_tls_files(dir: &std::path::Path, node_id: u64) -> kiseki_net::TlsFiles {
    kiseki_net::TlsFiles {
        ca_pem: dir.join(kiseki_net::tls::CA_CERTIFICATE_FILE),
        certificate_pem: dir.join(format!("node-{node_id}.pem")),
        key_pem: dir.join(format!("node-{node_id}.key")),
    }
}

/// Options of `kiseki-server init`: writes a cluster map.
#[derive(Debug, Clone, clap::Args)]
pub struct InitOptions {
    /// Where to write the map.
    #[arg(long)]
    pub out: PathBuf,
    /// The nodes' addresses, in node-id order (node 1 first), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub hosts: Vec<std::net::IpAddr>,
    /// Port of core 0 on each node; core c listens on port_base + c.
    #[arg(long, default_value_t = 9100)]
    pub port_base: u16,
    /// Cores per node.
    #[arg(long, default_value_t = 1)]
    pub cores: u16,
    /// Devices per node (each node runs with this many `--device`).
    #[arg(long, default_value_t = 1)]
    pub devices: u16,
    /// Shards of the namespace.
    #[arg(long, default_value_t = 8)]
    pub shards: u64,
    /// Replicas per shard.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
}

/// Writes the cluster map of `kiseki-server init`.
pub fn init(options: InitOptions) -> anyhow::Result<()> {
    let map = kiseki_shard_host::ClusterMap {
        nodes: options
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| kiseki_shard_host::NodeInfo {
                id: index as u64 + 1,
                host: *host,
                port_base: options.port_base,
                cores: options.cores,
                devices: options.devices,
            })
            .collect(),
        shards: options.shards,
        replicas: options.replicas.min(options.hosts.len()),
    };
    map.validate()?;
    map.save(&options.out)?;
    println!(
        "cluster map {}: {} node(s), {} shard(s), {} replica(s) each",
        options.out.display(),
        map.nodes.len(),
        map.shards,
        map.replicas
    );
    Ok(())
}

/// What a core serves besides its stores.
#[derive(Clone)]
struct ShardOptions {
    map: kiseki_shard_host::ClusterMap,
    node_id: u64,
    tick_interval_ms: u64,
    tls: Option<kiseki_net::TlsFiles>,
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
                ("scrub_first_pass_delay_ms", store.scrub_first_pass_delay_ms.to_string()),
                ("scrub_pass_interval_ms", store.scrub_pass_interval_ms.to_string()),
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

/// Starts the core's shard host on its first store and serves it, with the core's
/// fragment RPCs over all its stores, until `stop`.
async fn start_shards(
    core: usize,
    options: &ShardOptions,
    stores: &[FragmentStore],
    stop: &Rc<Notify>,
) -> Result<kiseki_runtime::JoinHandle<()>, String> {
    let Some(store) = stores.first() else {
        return Err(format!("core {core}: no device"));
    };
    let mut config = HostConfig::new(options.node_id, core);
    config.tick_interval_ms = options.tick_interval_ms;
    // Each core loads its own copy: a transport belongs to the core that uses it.
    let transport: Rc<dyn kiseki_net::Transport> = match &options.tls {
        Some(files) => {
            Rc::new(kiseki_net::TlsTransport::from_files(files).map_err(|error| format!("core {core}: TLS: {error}"))?)
        }
        None => Rc::new(kiseki_net::TcpTransport),
    };
    let host = CoreHost::start(config, options.map.clone(), ShardLog::new(store.clone()), transport)
        .await
        .map_err(|error| format!("core {core}: shards: {error}"))?;
    let service = Rc::new(NodeService::new(
        CoreService::new(host.clone()),
        FragmentService::new(options.node_id, core, options.map.clone(), stores.to_vec()),
    ));
    let stop = Rc::clone(stop);
    kiseki_runtime::spawn("core-server", async move {
        if let Err(error) = serve_core(host, service, stop).await {
            tracing::error!(core, %error, "core server failed");
        }
    })
    .map_err(|error| format!("core {core}: {error}"))
}

async fn core_main(
    core: usize,
    devices: Vec<PathBuf>,
    shards: Option<ShardOptions>,
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
    let stop = Rc::new(Notify::new());
    let mut server = None;
    if let Some(options) = &shards {
        match start_shards(core, options, &stores, &stop).await {
            Ok(task) => server = Some(task),
            Err(error) => {
                let _ = ready.send(Err(error));
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
    if let Some(server) = server {
        stop.notify();
        if kiseki_runtime::timeout(Duration::from_secs(15), server).await.is_none() {
            tracing::warn!(core, "core server did not stop within 15 s");
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
    let shards = match (&options.cluster, options.node_id) {
        (Some(path), Some(node_id)) => {
            let map = kiseki_shard_host::ClusterMap::load(path)?;
            let node = map
                .node(node_id)
                .with_context(|| format!("node {node_id} is not in {}", path.display()))?;
            if usize::from(node.cores) != cores {
                bail!(
                    "the cluster map gives node {node_id} {} cores but it runs {cores}",
                    node.cores
                );
            }
            if usize::from(node.devices) != options.devices.len() {
                bail!(
                    "the cluster map gives node {node_id} {} device(s) but it runs with {}: \
                     pass one --device per device, in the same order as before",
                    node.devices,
                    options.devices.len()
                );
            }
            let tls = options.tls_dir.as_ref().map(|dir| node_tls_files(dir, node_id));
            if let Some(files) = &tls {
                // Checked here, so a missing file is one clear error before any core starts.
                kiseki_net::TlsTransport::from_files(files).context("loading the node's TLS files")?;
            }
            Some(ShardOptions {
                map,
                node_id,
                tick_interval_ms: options.tick_interval_ms,
                tls,
            })
        }
        _ => None,
    };
    let shard_options = shards.clone();
    let core_set = kiseki_runtime::start_cores(ExecutorConfig::default(), cores, &cpus, move |core| {
        let receiver = receivers.get(core).cloned();
        let ready = ready_sender.clone();
        let devices = devices.clone();
        let shards = shard_options.clone();
        async move {
            match receiver {
                Some(receiver) => core_main(core, devices, shards, receiver, ready).await,
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
    if let Some(shards) = &shards {
        for core in 0..cores {
            if let Some(address) = shards.map.address(shards.node_id, core) {
                let hosted = shards.map.shards_on(shards.node_id, core);
                println!(
                    "  node {} core {core} listens on {address} ({} shards)",
                    shards.node_id,
                    hosted.len()
                );
            }
        }
    }
    println!("ready");
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping: closing stores and writing checkpoints");
    }
    stop_cores(&senders);
    core_set.join()?;
    println!("stopped");
    Ok(())
}
