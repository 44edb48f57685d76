//! `kiseki status`: the cluster as its nodes report it — nodes and whether they answer,
//! each shard's replicas and leader, each device's used and free bytes summed over the
//! cores that own its allocation groups, and the health of the namespace's chunks
//! (fragments listed on every device against every file's extent map). Every figure is
//! asked of the nodes when the command runs; a node that does not answer is shown down.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use kiseki_client::{chunk_health, ChunkHealth, Client, ClientOptions};
use serde::Serialize;

/// Options of `kiseki status`.
#[derive(Debug, clap::Args)]
pub struct StatusOptions {
    /// Any core of any node (`kiseki up` prints them).
    #[arg(long, env = "KISEKI_CLUSTER", default_value = "127.0.0.1:9100")]
    pub cluster: SocketAddr,
    /// Only the chunks of this shard of the cluster map; default: every shard's.
    #[arg(long)]
    pub shard: Option<u64>,
    /// Skips the chunk health scan (which lists every fragment and every file).
    #[arg(long)]
    pub no_chunks: bool,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct NodeStatus {
    id: u64,
    address: String,
    cores: u16,
    devices: u16,
    /// `up`, or why it is down.
    state: String,
}

#[derive(Debug, Serialize)]
struct ShardStatus {
    shard: u64,
    /// Node of the leader as the first answering replica knows it (0: none).
    leader: u64,
    /// `node/core` of every replica that answered.
    replicas: Vec<String>,
    /// Highest applied index over the replicas that answered.
    applied_index: u64,
    inodes: u64,
}

#[derive(Debug, Default, Serialize)]
struct DeviceStatus {
    node: u64,
    index: u16,
    path: String,
    total_bytes: u64,
    used_bytes: u64,
    free_bytes: u64,
    live_bytes: u64,
    fragments: u64,
    failures: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ChunkStatus {
    /// The shard scanned; `None`: every shard.
    shard: Option<u64>,
    chunks: u64,
    degraded: u64,
    lost: u64,
    fragments_missing: u64,
}

#[derive(Debug, Serialize)]
struct ClusterStatus {
    nodes: Vec<NodeStatus>,
    shards: Vec<ShardStatus>,
    devices: Vec<DeviceStatus>,
    chunks: Option<ChunkStatus>,
}

/// A tokio runtime for one command, and a client connected to `cluster` on it.
fn connected(cluster: SocketAddr) -> anyhow::Result<(tokio::runtime::Runtime, Client)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let client = runtime
        .block_on(Client::connect(cluster, ClientOptions::default()))
        .with_context(|| format!("connecting to {cluster}"))?;
    Ok((runtime, client))
}

/// Runs `kiseki status` on a tokio runtime of its own.
pub fn run(options: StatusOptions) -> anyhow::Result<()> {
    let (runtime, client) = connected(options.cluster)?;
    runtime.block_on(async move {
        let status = gather(&client, &options).await?;
        print(&status, options.json)
    })
}

async fn gather(client: &Client, options: &StatusOptions) -> anyhow::Result<ClusterStatus> {
    let mut nodes = Vec::new();
    let mut shards: BTreeMap<u64, ShardStatus> = BTreeMap::new();
    let mut devices: BTreeMap<(u64, u16), DeviceStatus> = BTreeMap::new();
    for node in &client.map().nodes {
        let mut state = String::from("up");
        for core in 0..usize::from(node.cores) {
            let reply = match client.status(node.id, core).await {
                Ok(reply) => reply,
                Err(error) => {
                    state = format!("down: core {core}: {error}");
                    break;
                }
            };
            for replica in reply.replicas {
                let shard = shards.entry(replica.shard).or_insert_with(|| ShardStatus {
                    shard: replica.shard,
                    leader: 0,
                    replicas: Vec::new(),
                    applied_index: 0,
                    inodes: 0,
                });
                if shard.leader == 0 {
                    shard.leader = replica.leader;
                }
                shard.replicas.push(format!("{}/{core}", node.id));
                if replica.applied_index >= shard.applied_index {
                    shard.applied_index = replica.applied_index;
                    shard.inodes = replica.inodes;
                }
            }
            let reply = match client.devices(node.id, core).await {
                Ok(reply) => reply,
                Err(error) => {
                    state = format!("down: core {core}: {error}");
                    break;
                }
            };
            for device in reply.devices {
                let entry = devices.entry((node.id, device.index)).or_insert_with(|| DeviceStatus {
                    node: node.id,
                    index: device.index,
                    path: device.path.clone(),
                    ..DeviceStatus::default()
                });
                entry.total_bytes += device.total_bytes;
                entry.free_bytes += device.free_bytes;
                entry.used_bytes += device.total_bytes.saturating_sub(device.free_bytes);
                entry.live_bytes += device.live_bytes;
                entry.fragments += device.fragments;
                if let Some(failure) = device.failure {
                    entry.failures.push(format!("core {core}: {failure}"));
                }
            }
        }
        nodes.push(NodeStatus {
            id: node.id,
            address: node.host.to_string(),
            cores: node.cores,
            devices: node.devices,
            state,
        });
    }
    let chunks = if options.no_chunks {
        None
    } else {
        let inventory = client.fragment_inventory().await?;
        let records = client
            .chunk_records_of(options.shard)
            .await
            .context("walking the namespaces for their chunks")?;
        let ChunkHealth {
            chunks,
            degraded,
            lost,
            fragments_missing,
        } = chunk_health(client.pool(), &records, &inventory);
        Some(ChunkStatus {
            shard: options.shard,
            chunks,
            degraded,
            lost,
            fragments_missing,
        })
    };
    Ok(ClusterStatus {
        nodes,
        shards: shards.into_values().collect(),
        devices: devices.into_values().collect(),
        chunks,
    })
}

fn print(status: &ClusterStatus, json: bool) -> anyhow::Result<()> {
    // Written with `?`, so a closed pipe (`| head`) ends the command instead of panicking.
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(status)?)?;
        return Ok(());
    }
    writeln!(out, "nodes")?;
    print_nodes(&mut out, &status.nodes)?;
    writeln!(out, "shards")?;
    print_shards(&mut out, &status.shards)?;
    writeln!(out, "devices")?;
    for device in &status.devices {
        writeln!(
            out,
            "  node {:>3} dev {:>2}  used {:>10} free {:>10} of {:>10}  {:>8} fragments  {}{}",
            device.node,
            device.index,
            human_bytes(device.used_bytes),
            human_bytes(device.free_bytes),
            human_bytes(device.total_bytes),
            device.fragments,
            device.path,
            if device.failures.is_empty() {
                String::new()
            } else {
                format!("  FAILED: {}", device.failures.join("; "))
            }
        )?;
    }
    if let Some(chunks) = &status.chunks {
        writeln!(
            out,
            "chunks ({}): {} total, {} degraded, {} lost, {} fragment(s) missing",
            chunks
                .shard
                .map_or_else(|| "every shard".to_owned(), |shard| format!("shard {shard}")),
            chunks.chunks,
            chunks.degraded,
            chunks.lost,
            chunks.fragments_missing
        )?;
    }
    Ok(())
}

fn print_nodes(out: &mut impl Write, nodes: &[NodeStatus]) -> std::io::Result<()> {
    for node in nodes {
        writeln!(
            out,
            "  node {:>3}  {:<15} {} core(s) {} device(s)  {}",
            node.id, node.address, node.cores, node.devices, node.state
        )?;
    }
    Ok(())
}

fn print_shards(out: &mut impl Write, shards: &[ShardStatus]) -> std::io::Result<()> {
    for shard in shards {
        let leader = if shard.leader == 0 {
            String::from("none")
        } else {
            format!("node {}", shard.leader)
        };
        writeln!(
            out,
            "  shard {:>3}  leader {leader:<8} replicas {:<20} applied {:>8}  inodes {}",
            shard.shard,
            shard.replicas.join(" "),
            shard.applied_index,
            shard.inodes
        )?;
    }
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Options of `kiseki repair`.
#[derive(Debug, clap::Args)]
pub struct RepairOptions {
    /// Any core of any node (`kiseki up` prints them).
    #[arg(long, env = "KISEKI_CLUSTER", default_value = "127.0.0.1:9100")]
    pub cluster: SocketAddr,
    /// Only the chunks of this shard of the cluster map; default: every shard's.
    #[arg(long)]
    pub shard: Option<u64>,
    /// Reads and verifies every chunk (checksums and parity), not only those with
    /// fragments missing from the listings.
    #[arg(long)]
    pub scrub: bool,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kiseki repair`: rebuilds missing and corrupt fragments from the survivors onto
/// the devices their placement names. Fails if any chunk could not be repaired.
pub fn run_repair(options: RepairOptions) -> anyhow::Result<()> {
    let (runtime, client) = connected(options.cluster)?;
    runtime.block_on(async move {
        let inventory = client.fragment_inventory().await?;
        for (node, why) in &inventory.down {
            eprintln!("node {node} is down ({why}): chunks with fragments there wait for it");
        }
        let records = client
            .chunk_records_of(options.shard)
            .await
            .context("walking the namespaces for their chunks")?;
        let summary = client.repair(records, &inventory, options.scrub).await;
        if options.json {
            println!(
                "{}",
                serde_json::json!({
                    "chunks_checked": summary.chunks_checked,
                    "chunks_repaired": summary.chunks_repaired,
                    "fragments_rebuilt": summary.fragments_rebuilt,
                    "chunks_waiting": summary.chunks_waiting,
                    "failed": summary.failed,
                })
            );
        } else {
            println!(
                "repair: {} chunk(s) checked, {} repaired ({} fragment(s) rebuilt), {} waiting for a node, {} failed",
                summary.chunks_checked,
                summary.chunks_repaired,
                summary.fragments_rebuilt,
                summary.chunks_waiting,
                summary.failed.len()
            );
        }
        for failure in &summary.failed {
            eprintln!("  failed: {failure}");
        }
        if !summary.failed.is_empty() {
            anyhow::bail!("{} chunk(s) could not be repaired", summary.failed.len());
        }
        Ok(())
    })
}

/// Options of `kiseki gc`.
#[derive(Debug, clap::Args)]
pub struct GcOptions {
    /// Any core of any node (`kiseki up` prints them).
    #[arg(long, env = "KISEKI_CLUSTER", default_value = "127.0.0.1:9100")]
    pub cluster: SocketAddr,
    /// Seconds between the two walks: a fragment is deleted only if no file referenced it
    /// in either. Writers must commit a chunk within this time of writing its fragments;
    /// 0 is safe only when nothing writes.
    #[arg(long, default_value_t = 60)]
    pub grace_s: u64,
    /// Counts what would be deleted; deletes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kiseki gc`: deletes the fragments no file of any namespace references.
pub fn run_gc(options: GcOptions) -> anyhow::Result<()> {
    let (runtime, client) = connected(options.cluster)?;
    runtime.block_on(async move {
        let summary = client
            .collect_garbage(std::time::Duration::from_secs(options.grace_s), options.dry_run)
            .await?;
        if options.json {
            println!(
                "{}",
                serde_json::json!({
                    "fragments_listed": summary.fragments_listed,
                    "chunks_referenced": summary.chunks_referenced,
                    "fragments_unreferenced": summary.fragments_unreferenced,
                    "fragments_deleted": summary.fragments_deleted,
                    "nodes_down": summary.nodes_down,
                    "failed": summary.failed,
                })
            );
        } else {
            println!(
                "gc: {} fragment(s) listed, {} chunk(s) referenced, {} unreferenced, {} deleted{}",
                summary.fragments_listed,
                summary.chunks_referenced,
                summary.fragments_unreferenced,
                summary.fragments_deleted,
                if options.dry_run { " (dry run)" } else { "" }
            );
        }
        for node in &summary.nodes_down {
            eprintln!("node {node} is down: its fragments were not collected");
        }
        for failure in &summary.failed {
            eprintln!("  failed: {failure}");
        }
        if !summary.failed.is_empty() {
            anyhow::bail!("{} delete(s) failed", summary.failed.len());
        }
        Ok(())
    })
}

/// Where the cluster is and how to print; shared by the list commands.
#[derive(Debug, clap::Args)]
pub struct ListOptions {
    /// Any core of any node (`kiseki up` prints them).
    #[arg(long, env = "KISEKI_CLUSTER", default_value = "127.0.0.1:9100")]
    pub cluster: SocketAddr,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `kiseki node ...`.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// The nodes of the cluster map: address, cores, devices, and whether they answer.
    List(ListOptions),
}

/// `kiseki shard ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ShardCommand {
    /// Every shard: its leader, the replicas that answer, applied index and inodes.
    List(ListOptions),
}

/// What a list command prints.
enum Listing {
    Nodes,
    Shards,
}

fn list(options: &ListOptions, listing: Listing) -> anyhow::Result<()> {
    let (runtime, client) = connected(options.cluster)?;
    let status = runtime.block_on(async {
        let status_options = StatusOptions {
            cluster: options.cluster,
            shard: None,
            no_chunks: true,
            json: options.json,
        };
        gather(&client, &status_options).await
    })?;
    let mut out = std::io::stdout().lock();
    match listing {
        Listing::Nodes if options.json => {
            for node in &status.nodes {
                writeln!(out, "{}", serde_json::to_string(node)?)?;
            }
        }
        Listing::Shards if options.json => {
            for shard in &status.shards {
                writeln!(out, "{}", serde_json::to_string(shard)?)?;
            }
        }
        Listing::Nodes => print_nodes(&mut out, &status.nodes)?,
        Listing::Shards => print_shards(&mut out, &status.shards)?,
    }
    Ok(())
}

/// Runs `kiseki node COMMAND`.
pub fn run_node(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List(options) => list(&options, Listing::Nodes),
    }
}

/// Runs `kiseki shard COMMAND`.
pub fn run_shard(command: ShardCommand) -> anyhow::Result<()> {
    match command {
        ShardCommand::List(options) => list(&options, Listing::Shards),
    }
}
