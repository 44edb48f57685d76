//! `kiseki-client-fuse`: mounts a namespace of a Kiseki cluster (`mount`) and unmounts it
//! (`unmount`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use kiseki_client::cache::control::MountInfo;
use kiseki_client::cache::{CacheConfig, ChunkCache};
use kiseki_client::{open_namespace as open_namespace_of, parse_durability, KeyMaterial, Namespace, Profile};
use kiseki_fuse::{session_config, KisekiFs, MountOptions};
use kiseki_pipeline::Durability;

/// Mounts Kiseki namespaces through FUSE; data is chunked, encrypted and erasure coded
/// in this process.
#[derive(Debug, Parser)]
#[command(name = "kiseki-client-fuse", version)]
enum Cli {
    /// Mounts a namespace at MOUNTPOINT (in the foreground unless `--daemon`).
    Mount(MountArgs),
    /// Unmounts MOUNTPOINT (also one left behind by a killed mount).
    Unmount {
        /// The mount point.
        mountpoint: PathBuf,
        /// Detach now and clean up once it is no longer busy.
        #[arg(short, long)]
        lazy: bool,
    },
}

#[derive(Debug, clap::Args)]
struct MountArgs {
    /// Where to mount.
    mountpoint: PathBuf,
    /// The client profile: cluster, control plane, key server, certificate, tenant and
    /// namespace (`kiseki up` writes `DATA_DIR/client.json`).
    #[arg(long, env = "KISEKI_PROFILE", default_value = "./kiseki-data/client.json")]
    profile: PathBuf,
    /// The tenant; default: the profile's.
    #[arg(long, env = "KISEKI_TENANT")]
    tenant: Option<String>,
    /// The namespace; default: the profile's.
    #[arg(long, env = "KISEKI_NAMESPACE")]
    namespace: Option<String>,
    /// Without a control plane and key server (benchmarks): a key file of the single
    /// tenant `default`, with `--cluster` and `--shard`.
    #[arg(long, requires = "shard")]
    keys: Option<PathBuf>,
    /// With `--keys`: any core of any node.
    #[arg(long, default_value = "127.0.0.1:9100")]
    cluster: SocketAddr,
    /// With `--keys`: the shard of the cluster map that holds the namespace.
    #[arg(long)]
    shard: Option<u64>,
    /// Durability of new chunks (`3x`, `4+2`); default as `kiseki put`.
    #[arg(long, value_parser = parse_durability)]
    durability: Option<Durability>,
    /// Mount options, `name=value` separated by commas (see `docs/fuse.md`).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Run in the background once mounted.
    #[arg(long)]
    daemon: bool,
    /// With `--daemon`: where the background process logs.
    #[arg(long)]
    log: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {
        Cli::Mount(args) if args.daemon => daemonize(&args),
        Cli::Mount(args) => mount(args),
        Cli::Unmount { mountpoint, lazy } => unmount(&mountpoint, lazy),
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

fn mount(args: MountArgs) -> anyhow::Result<()> {
    if args.keys.is_some() && args.tenant.as_deref().is_some_and(|tenant| tenant != "default") {
        bail!(
            "tenant {}: a development key file holds the tenant `default` only",
            args.tenant.as_deref().unwrap_or_default()
        );
    }
    let options = MountOptions::parse(args.options.iter().map(String::as_str), std::env::vars(), is_root())
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(2))
        .thread_name("kiseki-fuse")
        .enable_all()
        .build()?;
    let (namespace, label) = runtime.block_on(open_namespace(&args))?;
    let cache = open_cache(&runtime, &args, &options, &namespace)?;
    let filesystem = KisekiFs::new(runtime.handle().clone(), namespace.clone(), cache.clone(), &options);
    let registry = filesystem.registry();
    let session = fuser::Session::new(filesystem, &args.mountpoint, &session_config(&options))
        .with_context(|| format!("mounting {}", args.mountpoint.display()))?;
    let background = session.spawn()?;
    raise_read_ahead(&args.mountpoint, options.read_ahead_bytes);
    let poll_interval = Duration::from_millis((options.meta_ttl_ms / 4).clamp(50, 1_000));
    runtime.spawn(kiseki_fuse::watch::follow(
        namespace,
        background.notifier(),
        poll_interval,
    ));
    println!("mounted {} (namespace {label})", args.mountpoint.display());

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    while !stop.load(Ordering::Relaxed) && !background.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = if background.guard.is_finished() {
        // Unmounted from outside (`umount`, `kiseki-client-fuse unmount`).
        background.join().context("the FUSE session ended with an error")
    } else {
        // Clean stop: commit what open files buffer, then unmount.
        runtime.block_on(registry.sync_all());
        match background.umount_and_join() {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "unmount failed; detaching lazily");
                unmount(&args.mountpoint, true)
            }
        }
    };
    // Unmounted: zero-fill and delete the cache pool.
    match runtime.block_on(cache.close()) {
        Ok(wiped) => tracing::info!(files = wiped.files, bytes = wiped.bytes, "cache pool wiped"),
        Err(error) => tracing::error!(%error, "wiping the cache pool failed"),
    }
    ended
}

/// Sets the kernel's read-ahead of the mount to `read_ahead_bytes` (its backing device
/// in sysfs; root only). The kernel offers a FUSE filesystem at most its default (128 KiB)
/// at mount time, so sequential reads would reach the mount as 128 KiB requests one or
/// two at a time; with a larger window they come as `max_write`-sized requests, several
/// in flight.
fn raise_read_ahead(mountpoint: &Path, read_ahead_bytes: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let device = meta.dev();
    let (major, minor) = (libc::major(device), libc::minor(device));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let kib = (read_ahead_bytes / 1024).max(128);
    if let Err(error) = std::fs::write(&knob, kib.to_string()) {
        tracing::debug!(%knob, %error, "the kernel's read-ahead stays at its default");
    }
}

/// Makes this mount's cache pool (scrubbing those of dead mounts) and its control socket.
fn open_cache(
    runtime: &tokio::runtime::Runtime,
    args: &MountArgs,
    options: &MountOptions,
    namespace: &Namespace,
) -> anyhow::Result<ChunkCache> {
    let _entered = runtime.enter();
    let config = CacheConfig {
        mode: options.cache_mode,
        dir: options.cache_dir.clone(),
        l1_max_bytes: options.cache_l1_max_bytes,
        l2_max_bytes: options.cache_l2_max_bytes,
    };
    let (cache, scrubbed) =
        ChunkCache::open(&config).with_context(|| format!("opening the cache in {}", config.dir.display()))?;
    if scrubbed.pools > 0 {
        eprintln!(
            "scrubbed {} cache pool(s) of dead mounts ({} files, {} bytes)",
            scrubbed.pools, scrubbed.files, scrubbed.bytes
        );
    }
    let mountpoint = std::fs::canonicalize(&args.mountpoint)
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    let info = MountInfo {
        mountpoint,
        cluster: namespace.client().map().nodes[0].host.to_string(),
        namespace: namespace.id().0,
        cache_mode: options.cache_mode.name().into(),
        pid: std::process::id(),
    };
    kiseki_fuse::control::start(cache.clone(), namespace.clone(), info).context("starting the control socket")?;
    Ok(cache)
}

/// The namespace to mount and how to name it: through the profile (control plane and
/// key server), or with `--keys` straight from a key file and a shard.
async fn open_namespace(args: &MountArgs) -> anyhow::Result<(Namespace, String)> {
    if let (Some(keys), Some(shard)) = (&args.keys, args.shard) {
        let keys = KeyMaterial::load(keys).with_context(|| format!("loading keys from {}", keys.display()))?;
        let namespace = Namespace::connect(args.cluster, shard, keys, args.durability)
            .await
            .with_context(|| format!("opening shard {shard} at {}", args.cluster))?;
        return Ok((namespace, format!("shard {shard}")));
    }
    let mut profile =
        Profile::load(&args.profile).with_context(|| "reading the profile (is `kiseki up` running here?)")?;
    if let Some(tenant) = &args.tenant {
        profile.tenant.clone_from(tenant);
    }
    if let Some(namespace) = &args.namespace {
        profile.namespace.clone_from(namespace);
    }
    let label = format!("{}/{}", profile.tenant, profile.namespace);
    let (namespace, _) = open_namespace_of(&profile, &profile.tenant, &profile.namespace, args.durability)
        .await
        .with_context(|| format!("opening namespace {label}"))?;
    Ok((namespace, label))
}

/// Whether a FUSE filesystem is mounted at `mountpoint`.
fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(mountpoint) else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.get(4).is_some_and(|point| Path::new(point) == canonical) && line.contains(" - fuse")
    })
}

/// Starts this command again without `--daemon`, in its own process group, and returns
/// once it has mounted (or failed).
fn daemonize(args: &MountArgs) -> anyhow::Result<()> {
    let log = match &args.log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let arguments: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| argument != "--daemon")
        .collect();
    let mut child = std::os::unix::process::CommandExt::process_group(
        Command::new(std::env::current_exe()?)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        0,
    )
    .stderr(log)
    .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if is_mounted(&args.mountpoint) {
            println!("mounted {} (pid {})", args.mountpoint.display(), child.id());
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the mount process ended before mounting: {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("not mounted after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unmount(mountpoint: &Path, lazy: bool) -> anyhow::Result<()> {
    let flags = if lazy { "-uz" } else { "-u" };
    let fusermount = Command::new("fusermount3").arg(flags).arg(mountpoint).status();
    if matches!(fusermount, Ok(status) if status.success()) {
        return Ok(());
    }
    let mut umount = Command::new("umount");
    if lazy {
        umount.arg("-l");
    }
    let status = umount.arg(mountpoint).status().context("running umount")?;
    if !status.success() {
        bail!("unmounting {} failed ({status})", mountpoint.display());
    }
    Ok(())
}
