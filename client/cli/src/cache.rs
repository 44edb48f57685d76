//! `kiseki stage` and `kiseki cache`: staging datasets into the cache of a running mount
//! and reading its counters, through the mount's control socket in its cache pool.

use std::path::PathBuf;

use anyhow::{bail, Context};
use kiseki_client::cache::control::{live_mounts, mount_of, ControlReply, ControlRequest, LiveMount};
use kiseki_client::cache::index::DatasetStatus;

/// Where mounts keep their pools unless told otherwise (as the mount's `cache_dir`).
const CACHE_DIR_DEFAULT: &str = "/var/tmp/kiseki-cache";

/// Options of `kiseki stage`.
#[derive(Debug, clap::Args)]
pub struct StageOptions {
    /// The directory tree (or file) inside a mount to fetch into the cache and pin.
    dataset: Option<PathBuf>,
    /// List the staged datasets of every mount instead.
    #[arg(long, conflicts_with = "release")]
    status: bool,
    /// Unpin a staged dataset (its chunks stay cached until evicted).
    #[arg(long)]
    release: bool,
    /// The mounts' cache directory.
    #[arg(long, env = "KISEKI_CACHE_DIR", default_value = CACHE_DIR_DEFAULT)]
    cache_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `kiseki cache`.
#[derive(Debug, clap::Args)]
pub struct CacheOptions {
    /// Print every mount's cache counters (the default).
    #[arg(long)]
    stats: bool,
    /// Only the mount that holds this path.
    #[arg(long)]
    mount: Option<PathBuf>,
    /// The mounts' cache directory.
    #[arg(long, env = "KISEKI_CACHE_DIR", default_value = CACHE_DIR_DEFAULT)]
    cache_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn ask(mount: &LiveMount, request: &ControlRequest) -> anyhow::Result<ControlReply> {
    match mount.request(request).await? {
        ControlReply::Error { message } => bail!("{message}"),
        reply => Ok(reply),
    }
}

fn print_dataset(dataset: &DatasetStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(dataset)?);
    } else {
        println!(
            "{}  files {}  chunks {}  bytes {}",
            dataset.path, dataset.files, dataset.chunks, dataset.bytes
        );
    }
    Ok(())
}

/// Runs `kiseki stage`.
pub fn run_stage(options: StageOptions) -> anyhow::Result<()> {
    let mounts = live_mounts(&options.cache_dir)?;
    runtime()?.block_on(async {
        if options.status {
            for mount in &mounts {
                if let ControlReply::Datasets { datasets } = ask(mount, &ControlRequest::Status).await? {
                    for dataset in datasets {
                        print_dataset(&dataset, options.json)?;
                    }
                }
            }
            return Ok(());
        }
        let Some(dataset) = &options.dataset else {
            bail!("name a DATASET (a path inside a mount), or --status");
        };
        let path = std::fs::canonicalize(dataset).with_context(|| format!("{}", dataset.display()))?;
        let Some(mount) = mount_of(&mounts, &path) else {
            bail!(
                "{} is not inside a Kiseki mount with its cache in {}",
                path.display(),
                options.cache_dir.display()
            );
        };
        let request = if options.release {
            ControlRequest::Release { path }
        } else {
            ControlRequest::Stage { path }
        };
        if let ControlReply::Dataset { dataset } = ask(&mount, &request).await? {
            if !options.json {
                print!("{} ", if options.release { "released" } else { "staged" });
            }
            print_dataset(&dataset, options.json)?;
        }
        Ok(())
    })
}

/// Runs `kiseki cache`.
pub fn run_cache(options: CacheOptions) -> anyhow::Result<()> {
    let _ = options.stats;
    let mut mounts = live_mounts(&options.cache_dir)?;
    if let Some(path) = &options.mount {
        let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
        mounts = mount_of(&mounts, &path).into_iter().collect();
    }
    if mounts.is_empty() {
        bail!(
            "no live Kiseki mount keeps its cache in {}",
            options.cache_dir.display()
        );
    }
    runtime()?.block_on(async {
        for mount in &mounts {
            let ControlReply::Stats { stats } = ask(mount, &ControlRequest::Stats).await? else {
                continue;
            };
            if options.json {
                let mut value = serde_json::to_value(&stats)?;
                value["mountpoint"] = serde_json::json!(mount.info.mountpoint);
                value["cache_mode"] = serde_json::json!(mount.info.cache_mode);
                println!("{value}");
                continue;
            }
            println!(
                "{} (cache_mode={}, pid {})",
                mount.info.mountpoint.display(),
                mount.info.cache_mode,
                mount.info.pid
            );
            println!(
                "  L1 memory  {} chunks  {} / {} bytes  hits {}  evictions {}",
                stats.l1_chunks, stats.l1_bytes, stats.l1_max_bytes, stats.l1_hits, stats.l1_evictions
            );
            println!(
                "  L2 disk    {} chunks  {} / {} bytes ({} pinned)  hits {}  evictions {}  corrupt {}  refused {}",
                stats.l2_chunks,
                stats.l2_bytes,
                stats.l2_max_bytes,
                stats.l2_pinned_bytes,
                stats.l2_hits,
                stats.l2_evictions,
                stats.l2_corrupt,
                stats.l2_refused
            );
            println!("  misses     {}", stats.misses);
            println!("  passthrough opens {}", stats.passthrough_opens);
        }
        Ok(())
    })
}
