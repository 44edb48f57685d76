//! `kiseki-gateway`: serves S3 over a Kiseki cluster for the tenants of its control plane
//! (or of a tenants file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kiseki_client::{parse_durability, ControlClient, KeyMaterial, KeyServerClient, Namespace, TlsIdentity};
use kiseki_gateway::config::GatewayConfig;
use kiseki_gateway::s3::auth::TenantAuth;
use kiseki_gateway::s3::S3Gateway;
use kiseki_gateway::server::{serve, ServerLimits};
use kiseki_gateway::tenants::Tenants;
use kiseki_pipeline::Durability;
use s3s::service::S3ServiceBuilder;

/// The Kiseki gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
enum Command {
    /// Serves S3 (HTTP/1.1) until SIGTERM or SIGINT.
    S3(S3Options),
    /// Serves NFSv3 and MOUNT v3 (one TCP port) until SIGTERM or SIGINT.
    Nfs(NfsOptions),
}

#[derive(Debug, clap::Args)]
struct NfsOptions {
    /// Address to listen on (NFS and MOUNT).
    #[arg(long, default_value = "127.0.0.1:2049")]
    listen: SocketAddr,
    /// How long cached directory entries and attributes are served at most (0: no
    /// metadata cache). Changes made by other clients reach the cache through the
    /// shard's watch events, within about `--metadata-watch-interval-ms`.
    #[arg(long, default_value_t = 30_000)]
    metadata_cache_ttl_ms: u64,
    /// Pause between two reads of a shard's watch events by the metadata cache.
    #[arg(long, default_value_t = 20)]
    metadata_watch_interval_ms: u64,
    /// Address of the metrics and health endpoint (`/metrics`, `/health`).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Any core of any node of the cluster.
    #[arg(long, env = "KISEKI_CLUSTER", default_value = "127.0.0.1:9100")]
    cluster: SocketAddr,
    /// The control plane: every namespace it knows is exported as `/TENANT/NAMESPACE`.
    #[arg(long, default_value = "127.0.0.1:9200")]
    control: SocketAddr,
    /// The key server (tenants' keys, and the key that signs file handles).
    #[arg(long, default_value = "127.0.0.1:9300")]
    keyserver: SocketAddr,
    /// Directory with the cluster CA (`ca.pem`) and this gateway's certificate.
    #[arg(long)]
    tls_dir: PathBuf,
    /// The certificate name to present (its role must be `gateway`).
    #[arg(long, default_value = "gateway")]
    tls_name: String,
    /// Export options: allowed clients, squashing, anonymous ids, read-only (see
    /// `docs/nfs.md`); default: clients on loopback, root squashed.
    #[arg(long)]
    exports: Option<PathBuf>,
    /// How often the exports are read again from the control plane.
    #[arg(long, default_value_t = 2_000)]
    exports_refresh_ms: u64,
    /// Where each export's read cache makes its (memory-only) pool.
    #[arg(long, default_value = "/var/tmp/kiseki-gateway-cache")]
    cache_dir: PathBuf,
    /// Bytes of decoded chunks each export keeps for reads.
    #[arg(long, default_value = "64MiB", value_parser = kiseki_placement::units::parse_bytes)]
    read_cache_bytes: u64,
    /// Bytes of unstable writes buffered at most (all files).
    #[arg(long, default_value = "256MiB", value_parser = kiseki_placement::units::parse_bytes)]
    write_buffer_bytes: u64,
}

#[derive(Debug, clap::Args)]
struct S3Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// How long cached directory entries and attributes are served at most (0: no
    /// metadata cache). Changes made by other clients reach the cache through the
    /// shard's watch events, within about `--metadata-watch-interval-ms`.
    #[arg(long, default_value_t = 30_000)]
    metadata_cache_ttl_ms: u64,
    /// Pause between two reads of a shard's watch events by the metadata cache.
    #[arg(long, default_value_t = 20)]
    metadata_watch_interval_ms: u64,
    /// Any core of any node of the cluster.
    #[arg(long, env = "KISEKI_CLUSTER", default_value = "127.0.0.1:9100")]
    cluster: SocketAddr,
    /// The control plane, where tenants and their access keys come from.
    #[arg(long, conflicts_with = "tenants", requires_all = ["keyserver", "tls_dir"])]
    control: Option<SocketAddr>,
    /// The key server, where tenants' keys come from (with `--control`).
    #[arg(long)]
    keyserver: Option<SocketAddr>,
    /// Directory with the cluster CA (`ca.pem`) and this gateway's certificate (with
    /// `--control`).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// The certificate name to present (its role must be `gateway`).
    #[arg(long, default_value = "gateway")]
    tls_name: String,
    /// Each tenant's namespace that holds its buckets (with `--control`).
    #[arg(long, default_value = "default")]
    namespace: String,
    /// How often tenants and access keys are read again from the control plane (also at
    /// once for an unknown access key).
    #[arg(long, default_value_t = 2_000)]
    tenants_refresh_ms: u64,
    /// A tenants file instead of the control plane (tests and benchmarks): names, access
    /// keys, secrets, namespaces and key files.
    #[arg(long)]
    tenants: Option<PathBuf>,
    /// Address of the metrics and health endpoint (`/metrics`, `/health`).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Durability of new chunks (`3x`, `4+2`); default: by the cluster's devices.
    #[arg(long, value_parser = parse_durability)]
    durability: Option<Durability>,
    /// Requests served at once; more wait.
    #[arg(long, default_value_t = 64)]
    requests_in_flight_max: usize,
    /// Host names for virtual-hosted-style requests (`bucket.HOST`); path style always works.
    #[arg(long)]
    domain: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KISEKI_LOG").unwrap_or_else(|_| "info,s3s=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Command::parse() {
        Command::S3(options) => run_s3(options),
        Command::Nfs(options) => run_nfs(options),
    }
}

/// Client options with the metadata cache the command line asks for.
fn client_options(ttl_ms: u64, watch_interval_ms: u64) -> kiseki_client::ClientOptions {
    kiseki_client::ClientOptions {
        metadata_cache: kiseki_client::metadata::MetadataCacheOptions {
            ttl_ms,
            watch_interval_ms,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Opens a namespace, waiting up to `CONNECT_WAIT` for the cluster to come up (the
/// gateway may start beside its nodes, as under `kiseki up`).
async fn connect(options: &S3Options, shard: u64, keys: KeyMaterial) -> anyhow::Result<Namespace> {
    const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    let keys = Arc::new(keys);
    loop {
        let attempt = async {
            let client = kiseki_client::Client::connect(
                options.cluster,
                client_options(options.metadata_cache_ttl_ms, options.metadata_watch_interval_ms),
            )
            .await?;
            let devices = client.pool().devices().len();
            let durability = options
                .durability
                .unwrap_or_else(|| kiseki_client::default_durability(devices));
            let options = kiseki_client::NamespaceOptions {
                chunks_in_flight_max: kiseki_gateway::s3::CHUNKS_IN_FLIGHT_PER_REQUEST,
                ..kiseki_client::NamespaceOptions::with_durability(durability)
            };
            let namespace = Namespace::new(client, shard, keys.clone(), options)?;
            namespace.getattr(kiseki_namespace::InodeId::ROOT).await?;
            Ok::<_, kiseki_client::ClientError>(namespace)
        };
        match attempt.await {
            Ok(namespace) => return Ok(namespace),
            Err(error @ kiseki_client::ClientError::Invalid(_)) => return Err(error.into()),
            Err(error) if started.elapsed() > CONNECT_WAIT => return Err(error.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// The tenants of the tenants file, each namespace opened with its key file.
async fn file_tenants(options: &S3Options, path: &std::path::Path) -> anyhow::Result<Tenants> {
    let config = GatewayConfig::load(path)?;
    let mut namespaces = Vec::new();
    for tenant in &config.tenants {
        let keys = KeyMaterial::load(&tenant.keys).with_context(|| format!("tenant {}: keys", tenant.name))?;
        namespaces.push(
            connect(options, tenant.namespace, keys)
                .await
                .with_context(|| format!("tenant {}: opening namespace {}", tenant.name, tenant.namespace))?,
        );
    }
    Ok(Tenants::from_file(&config, namespaces))
}

/// The tenants of the control plane, waiting up to a minute for it, the key server and
/// the cluster to answer (the gateway may start beside them, as under `kiseki up`).
async fn control_tenants(options: &S3Options, control: SocketAddr) -> anyhow::Result<Tenants> {
    let (Some(keyserver), Some(tls_dir)) = (options.keyserver, &options.tls_dir) else {
        anyhow::bail!("--control needs --keyserver and --tls-dir");
    };
    let identity = TlsIdentity::in_dir(tls_dir, &options.tls_name);
    let started = std::time::Instant::now();
    loop {
        let attempt = async {
            let control = ControlClient::connect(control, &identity).await?;
            let keyserver = KeyServerClient::connect(keyserver, &identity).await?;
            let client = kiseki_client::Client::connect(
                options.cluster,
                client_options(options.metadata_cache_ttl_ms, options.metadata_watch_interval_ms),
            )
            .await?;
            Tenants::from_control(control, keyserver, client, &options.namespace).await
        };
        match attempt.await {
            Ok(tenants) => return Ok(tenants),
            Err(error @ kiseki_client::ClientError::Denied(_)) => return Err(error.into()),
            Err(error) if started.elapsed() > std::time::Duration::from_secs(60) => return Err(error.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

#[tokio::main]
async fn run_s3(options: S3Options) -> anyhow::Result<()> {
    let tenants = match (&options.tenants, options.control) {
        (Some(path), _) => Arc::new(file_tenants(&options, path).await?),
        (None, Some(control)) => {
            let tenants = Arc::new(control_tenants(&options, control).await?);
            let interval = std::time::Duration::from_millis(options.tenants_refresh_ms.max(100));
            tokio::spawn(Arc::clone(&tenants).refresh_every(interval));
            tenants
        }
        (None, None) => anyhow::bail!("give --control (with --keyserver and --tls-dir) or --tenants FILE"),
    };
    let served = tenants.table().tenants.len();
    let gateway = S3Gateway::new(Arc::clone(&tenants));
    let mut builder = S3ServiceBuilder::new(gateway);
    builder.set_auth(TenantAuth::new(Arc::clone(&tenants)));
    if !options.domain.is_empty() {
        let domains: Vec<&str> = options.domain.iter().map(String::as_str).collect();
        builder.set_host(s3s::host::MultiDomain::new(&domains).context("--domain")?);
    }
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let address = listener.local_addr()?;
    println!("kiseki-gateway: S3 on http://{address} for {served} tenant(s)");
    if let Some(admin_listen) = options.admin_listen {
        let admin = tokio::net::TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("listening on {admin_listen}"))?;
        let metrics_tenants = Arc::clone(&tenants);
        tokio::spawn(kiseki_net::serve_admin(
            admin,
            move || {
                let table = metrics_tenants.table();
                let mut text = format!(
                    "# TYPE kiseki_gateway_tenants gauge\nkiseki_gateway_tenants {}\n",
                    table.tenants.len()
                );
                // Tenants from the control plane share one client (a tenants file's do
                // not; the first one's counters are shown).
                if let Some(tenant) = table.tenants.first() {
                    text += &tenant.namespace.client().metadata_metrics_text();
                }
                async move { text }
            },
            std::future::pending(),
        ));
    }
    let limits = ServerLimits {
        requests_in_flight_max: options.requests_in_flight_max,
    };
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let notify = shutdown.clone();
    tokio::spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(_) => return,
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        notify.notify_one();
    });
    serve(listener, service, limits, async move { shutdown.notified().await }).await?;
    println!("kiseki-gateway: stopped");
    Ok(())
}

/// Connects to the control plane, the key server and the cluster, waiting up to a minute
/// for them (the gateway may start beside them, as under `kiseki up`).
async fn services(
    identity: &TlsIdentity,
    control: SocketAddr,
    keyserver: SocketAddr,
    cluster: SocketAddr,
    client_options: kiseki_client::ClientOptions,
) -> anyhow::Result<(ControlClient, KeyServerClient, kiseki_client::Client)> {
    let started = std::time::Instant::now();
    loop {
        let attempt = async {
            let control = ControlClient::connect(control, identity).await?;
            let keyserver = KeyServerClient::connect(keyserver, identity).await?;
            let client = kiseki_client::Client::connect(cluster, client_options.clone()).await?;
            control.status().await?;
            Ok::<_, kiseki_client::ClientError>((control, keyserver, client))
        };
        match attempt.await {
            Ok(connected) => return Ok(connected),
            Err(error @ kiseki_client::ClientError::Denied(_)) => return Err(error.into()),
            Err(error) if started.elapsed() > std::time::Duration::from_secs(60) => return Err(error.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

#[tokio::main]
async fn run_nfs(options: NfsOptions) -> anyhow::Result<()> {
    use kiseki_gateway::nfs::{exports, handle, write, NfsLimits, NfsService};
    let config = match &options.exports {
        Some(path) => exports::ExportsConfig::load(path)?,
        None => exports::ExportsConfig::default(),
    };
    let identity = TlsIdentity::in_dir(&options.tls_dir, &options.tls_name);
    let (control, keyserver, client) = services(
        &identity,
        options.control,
        options.keyserver,
        options.cluster,
        client_options(options.metadata_cache_ttl_ms, options.metadata_watch_interval_ms),
    )
    .await?;
    let key = keyserver
        .service_key(handle::HANDLE_KEY_NAME)
        .await
        .context("the file-handle key from the key server")?;
    std::fs::create_dir_all(&options.cache_dir).with_context(|| format!("creating {}", options.cache_dir.display()))?;
    let cache = exports::ReadCacheSettings {
        dir: options.cache_dir.clone(),
        bytes_per_export: options.read_cache_bytes,
    };
    let metrics_client = client.clone();
    let exports = Arc::new(exports::Exports::start(control, keyserver, client, config, cache).await?);
    let refresh = std::time::Duration::from_millis(options.exports_refresh_ms.max(100));
    tokio::spawn(Arc::clone(&exports).refresh_every(refresh));
    let writes = write::WriteBack::start(write::WriteLimits {
        buffer_bytes_max: usize::try_from(options.write_buffer_bytes).context("--write-buffer-bytes")?,
        ..write::WriteLimits::default()
    });
    let service = Arc::new(NfsService::new(
        exports,
        handle::HandleKey::new(key),
        writes,
        NfsLimits::default(),
    ));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    println!(
        "kiseki-gateway: NFS on {} for {} export(s)",
        listener.local_addr()?,
        service.exports.table().by_id.len()
    );
    let stopping = kiseki_net::stop_on_signals()?;
    if let Some(admin_listen) = options.admin_listen {
        let admin = tokio::net::TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("listening on {admin_listen}"))?;
        let metrics = Arc::clone(&service);
        tokio::spawn(kiseki_net::serve_admin(
            admin,
            move || {
                let text = metrics.metrics_text() + &metrics_client.metadata_metrics_text();
                async move { text }
            },
            kiseki_net::stopped(stopping.clone()),
        ));
    }
    kiseki_gateway::nfs::serve_nfs(listener, service, kiseki_net::stopped(stopping)).await?;
    println!("kiseki-gateway: NFS stopped");
    Ok(())
}
