//! `kiseki up`: the embedded default. On one machine, under a data directory reused by
//! the next start, it makes what a cluster needs the first time (file-backed devices, the
//! cluster map, a development CA with certificates for the services and the operator,
//! the key server's master key and state), runs every process as a child — the key
//! server, `--nodes N` storage nodes (node k on 127.0.0.k), the control plane and the S3
//! gateway and the NFS gateway —, makes a default tenant with a namespace and an S3 access key, writes the
//! operator's client profile (`DATA_DIR/client.json`), prints the endpoints and
//! credentials, and stops them all on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kiseki_api::control::{AccessKeyInfo, DedupPolicy, NamespaceCreateRequest, NamespaceSettings};
use kiseki_client::{ClientError, ControlClient, Profile, TlsIdentity};
use kiseki_store::units::parse_bytes;
use kiseki_store::{format_device, read_superblock, FormatOptions, StoreError};

/// The tenant and namespace `kiseki up` makes.
pub const DEFAULT_TENANT: &str = "default";
/// The namespace of the default tenant (also where its S3 buckets live).
pub const DEFAULT_NAMESPACE: &str = "default";

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
    /// Shards of the cluster map (used when it is first written): one for the control
    /// plane, each other one can hold a namespace.
    #[arg(long, default_value_t = 8)]
    pub shards: u64,
    /// Port of the S3 gateway on 127.0.0.1 (0: no gateway).
    #[arg(long, default_value_t = 9000)]
    pub s3_port: u16,
    /// Port of the S3 gateway's metrics and health endpoint.
    #[arg(long, default_value_t = 9001)]
    pub s3_metrics_port: u16,
    /// Port of the NFS gateway (NFSv3 and MOUNT) on 127.0.0.1 (0: no NFS gateway).
    #[arg(long, default_value_t = 2049)]
    pub nfs_port: u16,
    /// Port of the NFS gateway's metrics and health endpoint.
    #[arg(long, default_value_t = 2050)]
    pub nfs_metrics_port: u16,
    /// Port of the control plane on 127.0.0.1.
    #[arg(long, default_value_t = 9200)]
    pub control_port: u16,
    /// Port of the control plane's metrics and health endpoint.
    #[arg(long, default_value_t = 9201)]
    pub control_metrics_port: u16,
    /// Port of the key server on 127.0.0.1.
    #[arg(long, default_value_t = 9300)]
    pub keyserver_port: u16,
    /// Port of the key server's metrics and health endpoint.
    #[arg(long, default_value_t = 9301)]
    pub keyserver_metrics_port: u16,
    /// Time between two automatic repair passes of the control plane's keeper while
    /// every node answers (a pass also runs at start and when a node comes back); 0: no
    /// automatic repair.
    #[arg(long, default_value_t = 3_600)]
    pub repair_interval_s: u64,
    /// Time between two automatic GC passes of the keeper while every node answers; 0: no
    /// automatic GC.
    #[arg(long, default_value_t = 86_400)]
    pub gc_interval_s: u64,
    /// The automatic GC's grace period: a writer must commit a chunk within it of writing
    /// its fragments (a single S3 PUT commits its chunks when the whole body is in).
    #[arg(long, default_value_t = 21_600)]
    pub gc_grace_s: u64,
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
    if options.shards < 2 {
        bail!("--shards must be at least 2: one for the control plane, one for the default namespace");
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

/// The development CA and the certificates of the services and the operator, made once
/// under `DATA_DIR/tls` (nodes talk plain TCP under `kiseki up`).
fn prepare_tls(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("tls");
    if !dir.join(kiseki_net::tls::CA_KEY_FILE).exists() {
        kiseki_net::tls::generate_dev_ca(&dir)?;
    }
    let sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    for name in ["keyserver", "control", "gateway", "admin"] {
        if !dir.join(format!("{name}.pem")).exists() {
            kiseki_net::tls::issue_certificate(&dir, name, &sans, &dir)?;
        }
    }
    Ok(dir)
}

/// The processes `kiseki up` runs, by name.
struct Children {
    running: Vec<(String, Child)>,
}

impl Children {
    fn spawn(&mut self, name: &str, command: &mut Command) -> anyhow::Result<u32> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} (is it built and beside kiseki?)"))?;
        let pid = child.id();
        self.running.push((name.to_owned(), child));
        Ok(pid)
    }

    fn stop_all(&mut self) {
        for (_, child) in self.running.iter_mut().rev() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        for (_, child) in self.running.iter_mut() {
            let _ = child.wait();
        }
    }
}

fn start_keyserver(options: &UpOptions, tls: &Path, children: &mut Children) -> anyhow::Result<SocketAddr> {
    let dir = options.data_dir.join("keyserver");
    let state = dir.join("keys.state");
    let master = dir.join("master.key");
    let files = |command: &mut Command| {
        command.arg("--state").arg(&state).arg("--master-key").arg(&master);
    };
    if !state.exists() {
        let mut init = Command::new(binary_beside("kiseki-keyserver"));
        init.arg("init");
        files(&mut init);
        let status = init.status().context("running kiseki-keyserver init")?;
        if !status.success() {
            bail!("kiseki-keyserver init failed ({status})");
        }
    }
    let address = SocketAddr::from(([127, 0, 0, 1], options.keyserver_port));
    let mut run = Command::new(binary_beside("kiseki-keyserver"));
    run.arg("run");
    files(&mut run);
    run.arg("--listen")
        .arg(address.to_string())
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", options.keyserver_metrics_port))
        .arg("--tls-dir")
        .arg(tls);
    children.spawn("kiseki-keyserver", &mut run)?;
    Ok(address)
}

fn start_control(
    options: &UpOptions,
    tls: &Path,
    seed: SocketAddr,
    keyserver: SocketAddr,
    children: &mut Children,
) -> anyhow::Result<SocketAddr> {
    let address = SocketAddr::from(([127, 0, 0, 1], options.control_port));
    let mut run = Command::new(binary_beside("kiseki-control"));
    run.arg("run")
        .arg("--listen")
        .arg(address.to_string())
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", options.control_metrics_port))
        .arg("--cluster")
        .arg(seed.to_string())
        .arg("--keyserver")
        .arg(keyserver.to_string())
        .arg("--tls-dir")
        .arg(tls)
        .arg("--repair-interval-s")
        .arg(options.repair_interval_s.to_string())
        .arg("--gc-interval-s")
        .arg(options.gc_interval_s.to_string())
        .arg("--gc-grace-s")
        .arg(options.gc_grace_s.to_string());
    children.spawn("kiseki-control", &mut run)?;
    Ok(address)
}

fn start_gateway(options: &UpOptions, profile: &Profile, tls: &Path, children: &mut Children) -> anyhow::Result<()> {
    let mut run = Command::new(binary_beside("kiseki-gateway"));
    run.arg("s3")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", options.s3_port))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", options.s3_metrics_port))
        .arg("--cluster")
        .arg(profile.cluster.to_string())
        .arg("--control")
        .arg(profile.control.to_string())
        .arg("--keyserver")
        .arg(profile.keyserver.to_string())
        .arg("--tls-dir")
        .arg(tls)
        .arg("--namespace")
        .arg(DEFAULT_NAMESPACE);
    children.spawn("kiseki-gateway", &mut run)?;
    Ok(())
}

/// The NFS gateway's exports file, made once: clients on loopback, ids taken as sent
/// (`squash: none`: a local cluster's operator is root on both sides).
fn nfs_exports(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("nfs-exports.json");
    if !path.exists() {
        let text = serde_json::json!({
            "defaults": { "clients": ["127.0.0.0/8", "::1/128"], "squash": "none" },
            "exports": {}
        });
        std::fs::write(&path, serde_json::to_string_pretty(&text)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

fn start_nfs(
    options: &UpOptions,
    profile: &Profile,
    tls: &Path,
    data_dir: &Path,
    children: &mut Children,
) -> anyhow::Result<()> {
    let mut run = Command::new(binary_beside("kiseki-gateway"));
    run.arg("nfs")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", options.nfs_port))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", options.nfs_metrics_port))
        .arg("--cluster")
        .arg(profile.cluster.to_string())
        .arg("--control")
        .arg(profile.control.to_string())
        .arg("--keyserver")
        .arg(profile.keyserver.to_string())
        .arg("--tls-dir")
        .arg(tls)
        .arg("--exports")
        .arg(nfs_exports(data_dir)?)
        .arg("--cache-dir")
        .arg(data_dir.join("gateway-cache"));
    children.spawn("kiseki-gateway nfs", &mut run)?;
    Ok(())
}

/// Makes the default tenant, its namespace and an S3 access key unless they exist; the
/// key's secret is kept in `DATA_DIR/s3-credentials.json` (mode 0600), since the control
/// plane shows it only once.
async fn bootstrap(profile: &Profile, data_dir: &Path) -> anyhow::Result<AccessKeyInfo> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let control = loop {
        match ControlClient::connect(profile.control, &profile.tls).await {
            Ok(control) => match control.status().await {
                Ok(_) => break control,
                Err(error) if Instant::now() > deadline => return Err(error).context("waiting for the control plane"),
                Err(_) => {}
            },
            Err(error) if Instant::now() > deadline => return Err(error).context("waiting for the control plane"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let tenants = control.tenants().await?.tenants;
    if !tenants.iter().any(|tenant| tenant.name == DEFAULT_TENANT) {
        control.create_tenant(DEFAULT_TENANT).await?;
    }
    match control.resolve_namespace(DEFAULT_TENANT, DEFAULT_NAMESPACE).await {
        Ok(_) => {}
        Err(ClientError::Service {
            code: kiseki_net::ErrorCode::NotFound,
            ..
        }) => {
            let request = NamespaceCreateRequest {
                tenant: DEFAULT_TENANT.into(),
                name: DEFAULT_NAMESPACE.into(),
                settings: NamespaceSettings {
                    durability: String::new(),
                    chunk_bytes_avg: 0,
                    dedup: DedupPolicy::CrossTenant,
                    quota_bytes_max: None,
                    quota_files_max: None,
                },
            };
            control.create_namespace(&request).await?;
        }
        Err(error) => return Err(error.into()),
    }
    let saved = data_dir.join("s3-credentials.json");
    let listed = control.access_keys(DEFAULT_TENANT).await?.keys;
    if let Ok(text) = std::fs::read_to_string(&saved) {
        let key: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("reading {}", saved.display()))?;
        let access_key = key["access_key"].as_str().unwrap_or_default();
        if listed.iter().any(|listed| listed.access_key == access_key) {
            return Ok(AccessKeyInfo {
                access_key: access_key.to_owned(),
                tenant: DEFAULT_TENANT.into(),
                secret_key: key["secret_key"].as_str().unwrap_or_default().to_owned(),
                created_unix_s: 0,
            });
        }
    }
    let key = control.create_access_key(DEFAULT_TENANT).await?;
    let text = serde_json::json!({ "access_key": key.access_key, "secret_key": key.secret_key }).to_string();
    write_private(&saved, text.as_bytes())?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
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
    let data_dir = std::path::absolute(&options.data_dir)?;
    let map = cluster_map(&options, cores)?;
    let tls = prepare_tls(&data_dir)?;
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    let mut children = Children { running: Vec::new() };
    let started = start_all(&options, &data_dir, &map, &tls, cores, &mut children);
    let (profile, key) = match started {
        Ok(started) => started,
        Err(error) => {
            children.stop_all();
            return Err(error);
        }
    };
    print_endpoints(&options, &data_dir, &profile, &key);
    println!("kiseki up: ready");
    wait(children, signals)
}

/// Starts every process and makes the defaults; the operator's profile and the default
/// tenant's S3 key.
fn start_all(
    options: &UpOptions,
    data_dir: &Path,
    map: &Path,
    tls: &Path,
    cores: usize,
    children: &mut Children,
) -> anyhow::Result<(Profile, AccessKeyInfo)> {
    let keyserver = start_keyserver(options, tls, children)?;
    for node in 1..=options.nodes {
        start_node(options, map, node, cores, children)?;
    }
    let port_base = kiseki_shard_host::ClusterMap::load(map)?.nodes[0].port_base;
    let seed = SocketAddr::from(([127, 0, 0, 1], port_base));
    let control = start_control(options, tls, seed, keyserver, children)?;
    let profile = Profile {
        cluster: seed,
        control,
        keyserver,
        tls: TlsIdentity::in_dir(tls, "admin"),
        tenant: DEFAULT_TENANT.into(),
        namespace: DEFAULT_NAMESPACE.into(),
    };
    profile.save(&data_dir.join("client.json"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let key = runtime.block_on(bootstrap(&profile, data_dir))?;
    if options.s3_port != 0 {
        start_gateway(options, &profile, tls, children)?;
    }
    if options.nfs_port != 0 {
        start_nfs(options, &profile, tls, data_dir, children)?;
    }
    Ok((profile, key))
}

fn print_endpoints(options: &UpOptions, data_dir: &Path, profile: &Profile, key: &AccessKeyInfo) {
    let profile_path = data_dir.join("client.json");
    println!(
        "kiseki up: {} node(s), seed {}; key server {} and control plane {} (mutual TLS, CA {})",
        options.nodes,
        profile.cluster,
        profile.keyserver,
        profile.control,
        profile.tls.ca.display()
    );
    if options.s3_port != 0 {
        println!(
            "  s3: http://127.0.0.1:{} tenant {DEFAULT_TENANT}: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} \
             (region us-east-1, path style)",
            options.s3_port, key.access_key, key.secret_key
        );
    }
    if options.nfs_port != 0 {
        println!(
            "  nfs: nfs://127.0.0.1/{DEFAULT_TENANT}/{DEFAULT_NAMESPACE}?version=3&nfsport={port}&mountport={port} \
             (NFSv3, MOUNT on the same port; every namespace is exported as /TENANT/NAMESPACE)",
            port = options.nfs_port
        );
    }
    println!(
        "  files: kiseki put LOCAL /PATH (then get, ls, stat, rm, mv), as tenant {DEFAULT_TENANT}, namespace \
         {DEFAULT_NAMESPACE}, with the profile {} (KISEKI_PROFILE)",
        profile_path.display()
    );
    println!(
        "  admin: kiseki tenant|namespace|key|maintenance|keyserver …, kiseki status --cluster {}",
        profile.cluster
    );
    println!(
        "  mount: kiseki-client-fuse mount MOUNTPOINT --profile {}",
        profile_path.display()
    );
    println!(
        "  stop with Ctrl-C; the data stays in {} for the next start",
        data_dir.display()
    );
}

/// Waits for the children; the first signal is passed on to all of them.
fn wait(mut children: Children, signals: signal_hook::iterator::Signals) -> anyhow::Result<()> {
    let pids: Vec<u32> = children.running.iter().map(|(_, child)| child.id()).collect();
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        let mut signals = signals;
        if signals.forever().next().is_some() {
            // SIGTERM everything, the nodes included: they close their stores and write
            // checkpoints.
            for pid in pids.iter().rev() {
                let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        }
    });
    let mut failed = None;
    for (name, child) in children.running.iter_mut() {
        let status = child.wait()?;
        if !status.success() && failed.is_none() {
            failed = Some((name.clone(), status));
        }
    }
    handle.close();
    let _ = forwarder.join();
    if let Some((name, status)) = failed {
        bail!("{name} exited with {status}");
    }
    Ok(())
}

fn start_node(options: &UpOptions, map: &Path, node: u64, cores: usize, children: &mut Children) -> anyhow::Result<()> {
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
    let pid = children.spawn(&format!("kiseki-server node {node}"), &mut command)?;
    println!(
        "kiseki up: node {node} (pid {pid}) on {} device(s) in {}",
        devices.len(),
        node_directory.display()
    );
    Ok(())
}
