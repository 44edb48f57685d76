//! `kiseki up`: the embedded default. It formats file-backed devices under the data
//! directory on first use, writes the cluster map, and runs `--nodes N` storage nodes as
//! child processes (node k on 127.0.0.k), each hosting its shard replicas; it prints
//! where they listen, starts the S3 gateway (`kiseki-gateway s3`) for a default tenant
//! on namespace 1 with credentials it makes once (`DATA_DIR/gateway.json`), and stops
//! them all on Ctrl-C or SIGTERM. The control plane and key server join as they are
//! built.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, Context};
use kiseki_gateway::config::{GatewayConfig, TenantConfig};
use kiseki_store::units::parse_bytes;
use kiseki_store::{format_device, read_superblock, FormatOptions, StoreError};

/// Options of `kiseki up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpOptions {
    /// Where devices and state live; reused on the next start.
    #[arg(long, default_value = "./kiseki-data")]
    pub data_dir: PathBuf,
    /// Cores for the node; default: all available.
    #[arg(long)]
    pub cores: Option<usize>,
    /// File-backed devices per node.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Size of each file-backed device.
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    pub device_size: u64,
    /// Port of each node's metrics and health endpoint (node k on 127.0.0.k).
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Storage nodes to run, on 127.0.0.1 … 127.0.0.N.
    #[arg(long, default_value_t = 1)]
    pub nodes: u64,
    /// Port of core 0 of every node; core c listens on port_base + c.
    #[arg(long, default_value_t = 9100)]
    pub port_base: u16,
    /// Shards of the namespace (used when the cluster map is first written).
    #[arg(long, default_value_t = 8)]
    pub shards: u64,
    /// Port of the S3 gateway on 127.0.0.1 (0: no gateway).
    #[arg(long, default_value_t = 9000)]
    pub s3_port: u16,
}

/// The gateway's tenants file: made once with a default tenant on namespace 1 and new
/// credentials, reused after.
fn gateway_config(options: &UpOptions, keys: &Path) -> anyhow::Result<(PathBuf, GatewayConfig)> {
    let path = options.data_dir.join("gateway.json");
    if path.exists() {
        return Ok((path.clone(), GatewayConfig::load(&path)?));
    }
    let (access_key, secret_key) = kiseki_gateway::config::new_credentials();
    let config = GatewayConfig {
        tenants: vec![TenantConfig {
            name: "default".into(),
            access_key,
            secret_key,
            namespace: 1,
            keys: std::path::absolute(keys)?,
        }],
    };
    config.save(&path)?;
    Ok((path, config))
}

fn start_gateway(options: &UpOptions, tenants: &Path, port_base: u16) -> anyhow::Result<Child> {
    let child = Command::new(binary_beside("kiseki-gateway"))
        .arg("s3")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", options.s3_port))
        .arg("--cluster")
        .arg(format!("127.0.0.1:{port_base}"))
        .arg("--tenants")
        .arg(tenants)
        .spawn()
        .context("starting kiseki-gateway (is it built and beside kiseki?)")?;
    Ok(child)
}

/// The `kiseki-server` binary: beside this one, else on PATH.
pub fn server_binary() -> PathBuf {
    binary_beside("kiseki-server")
}

/// The binary `name` beside this executable if it is there, else `name` (found on PATH).
pub fn binary_beside(name: &str) -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|directory| directory.join(name)));
    match beside {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from(name),
    }
}

fn prepare_device(path: &Path, cores: usize, bytes: u64) -> anyhow::Result<()> {
    match read_superblock(path) {
        Ok(superblock) if superblock.ag_count as usize == cores => Ok(()),
        Ok(superblock) => bail!(
            "{} is formatted for {} cores; run `kiseki up --cores {}` or remove the data directory",
            path.display(),
            superblock.ag_count,
            superblock.ag_count
        ),
        Err(StoreError::Io { .. }) if !path.exists() => format(path, cores, bytes),
        Err(StoreError::Unformatted { .. }) => format(path, cores, bytes),
        Err(error) => Err(error.into()),
    }
}

fn format(path: &Path, cores: usize, bytes: u64) -> anyhow::Result<()> {
    let superblock = format_device(
        path,
        &FormatOptions {
            cores: cores as u32,
            create_bytes: Some(bytes),
            ..FormatOptions::default()
        },
    )?;
    println!(
        "formatted {} ({} bytes, device {})",
        path.display(),
        bytes,
        superblock.uuid_hex()
    );
    Ok(())
}

/// The cluster map of the data directory: written on first start, then reused (its
/// node count and cores must match the options).
fn cluster_map(options: &UpOptions, cores: usize) -> anyhow::Result<PathBuf> {
    let path = options.data_dir.join("cluster.json");
    if path.exists() {
        let map = kiseki_shard_host::ClusterMap::load(&path)?;
        let differs = |node: &kiseki_shard_host::NodeInfo| {
            usize::from(node.cores) != cores || usize::from(node.devices) != options.devices
        };
        if map.nodes.len() as u64 != options.nodes || map.nodes.iter().any(differs) {
            bail!(
                "{} describes {} node(s) of {} core(s) and {} device(s); start with matching \
                 --nodes/--cores/--devices or remove the data directory",
                path.display(),
                map.nodes.len(),
                map.nodes.first().map_or(0, |node| node.cores),
                map.nodes.first().map_or(0, |node| node.devices)
            );
        }
        return Ok(path);
    }
    let map = kiseki_shard_host::ClusterMap {
        nodes: (1..=options.nodes)
            .map(|id| kiseki_shard_host::NodeInfo {
                id,
                host: std::net::IpAddr::from([127, 0, 0, id as u8]),
                port_base: options.port_base,
                cores: cores as u16,
                devices: options.devices as u16,
            })
            .collect(),
        shards: options.shards,
        replicas: 3.min(options.nodes as usize),
    };
    map.validate()?;
    map.save(&path)?;
    Ok(path)
}

pub fn run(options: UpOptions) -> anyhow::Result<()> {
    let cores = options.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1)
    });
    if options.nodes == 0 || options.nodes > 250 {
        bail!("--nodes must be between 1 and 250");
    }
    if options.devices == 0 || options.devices > usize::from(kiseki_api::DEVICES_PER_NODE_MAX) {
        bail!("--devices must be between 1 and {}", kiseki_api::DEVICES_PER_NODE_MAX);
    }
    std::fs::create_dir_all(&options.data_dir).with_context(|| format!("creating {}", options.data_dir.display()))?;
    let map = cluster_map(&options, cores)?;
    // The development key file (until the key server exists): made once, reused after.
    let keys = options.data_dir.join("keys.json");
    kiseki_client::KeyMaterial::load_or_create(&keys).with_context(|| format!("preparing {}", keys.display()))?;
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    let mut children: Vec<Child> = Vec::new();
    for node in 1..=options.nodes {
        match start_node(&options, &map, node, cores) {
            Ok(child) => children.push(child),
            Err(error) => {
                stop_all(&mut children);
                return Err(error);
            }
        }
    }
    let port_base = kiseki_shard_host::ClusterMap::load(&map)?.nodes[0].port_base;
    if options.s3_port != 0 {
        let started = gateway_config(&options, &keys).and_then(|(tenants, config)| {
            let child = start_gateway(&options, &tenants, port_base)?;
            let tenant = &config.tenants[0];
            println!(
                "  s3: http://127.0.0.1:{} (pid {}), tenant {}: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} \
                 (region us-east-1, path style; all tenants in {})",
                options.s3_port,
                child.id(),
                tenant.name,
                tenant.access_key,
                tenant.secret_key,
                tenants.display()
            );
            Ok(child)
        });
        match started {
            Ok(child) => children.push(child),
            Err(error) => {
                stop_all(&mut children);
                return Err(error);
            }
        }
    }
    println!(
        "kiseki up: {} node(s), {cores} core(s) each, map {}; try `kiseki meta status --seed 127.0.0.1:{port_base}`",
        options.nodes,
        map.display(),
    );
    println!(
        "  files: kiseki put --cluster 127.0.0.1:{port_base} --keys {} LOCAL /PATH  (then get, ls, stat, rm, mv)",
        keys.display()
    );
    println!(
        "  stop with Ctrl-C; the data stays in {} for the next start",
        options.data_dir.display()
    );
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        let mut signals = signals;
        if signals.forever().next().is_some() {
            // SIGTERM the nodes: they close their stores and write checkpoints.
            for pid in pids {
                let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        }
    });
    let mut failed = None;
    for (index, child) in children.iter_mut().enumerate() {
        let status = child.wait()?;
        if !status.success() && failed.is_none() {
            failed = Some((index + 1, status));
        }
    }
    handle.close();
    let _ = forwarder.join();
    if let Some((node, status)) = failed {
        if node as u64 > options.nodes {
            bail!("kiseki-gateway exited with {status}");
        }
        bail!("kiseki-server node {node} exited with {status}");
    }
    Ok(())
}

fn start_node(options: &UpOptions, map: &Path, node: u64, cores: usize) -> anyhow::Result<Child> {
    let node_directory = options.data_dir.join(format!("node-{node}"));
    std::fs::create_dir_all(&node_directory).with_context(|| format!("creating {}", node_directory.display()))?;
    let mut devices = Vec::new();
    for index in 0..options.devices.max(1) {
        let path = node_directory.join(format!("device-{index}.img"));
        prepare_device(&path, cores, options.device_size)?;
        devices.push(path);
    }
    let mut command = Command::new(server_binary());
    command
        .arg("run")
        .arg("--cores")
        .arg(cores.to_string())
        .arg("--metrics-addr")
        .arg(format!("127.0.0.{node}:{}", options.metrics_port))
        .arg("--cluster")
        .arg(map)
        .arg("--node-id")
        .arg(node.to_string());
    for device in &devices {
        command.arg("--device").arg(device);
    }
    let child = command
        .spawn()
        .context("starting kiseki-server (is it built and beside kiseki?)")?;
    println!(
        "kiseki up: node {node} (pid {}) on {} device(s) in {}",
        child.id(),
        devices.len(),
        node_directory.display()
    );
    Ok(child)
}

fn stop_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
}
