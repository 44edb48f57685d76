//! `kiseki-control`: `run` serves the control plane over mutual TLS 1.3, keeping its
//! records in the cluster's system namespace; `print-config` prints the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use kiseki_api::control::DedupPolicy;
use kiseki_api::SYSTEM_TENANT;
use kiseki_client::profile::fetch_keys;
use kiseki_client::{Client, ClientError, ClientOptions, KeyServerClient, Namespace, NamespaceOptions, TlsIdentity};
use kiseki_control::keeper::{KeeperConfig, KeeperCounters};
use kiseki_control::records::RecordStore;
use kiseki_control::{ControlPlane, ControlService};
use kiseki_net::RpcConfig;

/// The Kiseki control plane.
#[derive(Debug, Parser)]
#[command(name = "kiseki-control", version, about)]
enum Command {
    /// Serves tenants, namespaces, quotas, access keys and maintenance until SIGTERM or
    /// SIGINT.
    Run(Box<RunOptions>),
    /// Prints the default configuration.
    PrintConfig,
}

#[derive(Debug, clap::Args)]
struct RunOptions {
    /// Address to serve on (mutual TLS 1.3).
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// Address of the metrics and health endpoint.
    #[arg(long, default_value = "127.0.0.1:9201")]
    admin_listen: SocketAddr,
    /// Any core of any node of the cluster.
    #[arg(long, default_value = "127.0.0.1:9100")]
    cluster: SocketAddr,
    /// The key server.
    #[arg(long, default_value = "127.0.0.1:9300")]
    keyserver: SocketAddr,
    /// Directory with the cluster CA (`ca.pem`) and this server's `NAME.pem`/`NAME.key`.
    #[arg(long)]
    tls_dir: PathBuf,
    /// The certificate name to serve and call with (its role must be `control`).
    #[arg(long, default_value = "control")]
    tls_name: String,
    /// The shard that holds the control plane's records; default: the map's last.
    #[arg(long)]
    system_shard: Option<u64>,
    /// How long to wait for the cluster and the key server to answer at start.
    #[arg(long, default_value_t = 60)]
    start_wait_s: u64,
    /// Time between two liveness checks of every node by the keeper.
    #[arg(long, default_value_t = 5_000)]
    keeper_check_interval_ms: u64,
    /// Time between two automatic repair passes while every node answers (a pass also
    /// runs at start and when a node comes back); 0: no automatic repair.
    #[arg(long, default_value_t = 3_600)]
    repair_interval_s: u64,
    /// Time between two automatic GC passes while every node answers; 0: no automatic GC.
    #[arg(long, default_value_t = 86_400)]
    gc_interval_s: u64,
    /// The automatic GC's grace period: a writer must commit a chunk within it of writing
    /// its fragments (a single S3 PUT commits its chunks when the whole body is in).
    #[arg(long, default_value_t = 21_600)]
    gc_grace_s: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KISEKI_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Command::parse() {
        Command::Run(options) => run(*options),
        Command::PrintConfig => {
            println!(
                "listen = 127.0.0.1:9200\nadmin_listen = 127.0.0.1:9201\ncluster = 127.0.0.1:9100\n\
                 keyserver = 127.0.0.1:9300\ntls_name = control\nsystem_shard = the cluster map's last\n\
                 keeper_check_interval_ms = 5000\nrepair_interval_s = 3600\ngc_interval_s = 86400\ngc_grace_s = 21600\n\
                 tenants_max = {}\nnamespaces_per_tenant_max = {}\naccess_keys_per_tenant_max = {}",
                kiseki_control::TENANTS_MAX,
                kiseki_control::NAMESPACES_PER_TENANT_MAX,
                kiseki_control::ACCESS_KEYS_PER_TENANT_MAX
            );
            Ok(())
        }
    }
}

/// Retries `attempt` while it fails with a retryable error, until `deadline`.
async fn patiently<T, F, Fut>(what: &str, deadline: Instant, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error @ (ClientError::Denied(_) | ClientError::Invalid(_) | ClientError::Keys(_))) => {
                return Err(error).with_context(|| what.to_owned())
            }
            Err(error) if Instant::now() > deadline => return Err(error).with_context(|| what.to_owned()),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Opens the system namespace: the system tenant's keys (made on first start), the
/// cluster, and a first answer from the system shard.
async fn open_system(
    options: &RunOptions,
    identity: &TlsIdentity,
) -> anyhow::Result<(RecordStore, KeyServerClient, u64, Client)> {
    let deadline = Instant::now() + Duration::from_secs(options.start_wait_s);
    let keyserver = patiently("reaching the key server", deadline, || {
        KeyServerClient::connect(options.keyserver, identity)
    })
    .await?;
    patiently("making the system tenant's keys", deadline, || {
        keyserver.create_tenant(SYSTEM_TENANT)
    })
    .await?;
    let keys = fetch_keys(&keyserver, SYSTEM_TENANT, DedupPolicy::TenantOnly).await?;
    let client = patiently("reaching the cluster", deadline, || {
        Client::connect(options.cluster, ClientOptions::default())
    })
    .await?;
    let shards = client.map().shards;
    let system_shard = options.system_shard.unwrap_or(shards);
    if shards < 2 || system_shard == 0 || system_shard > shards {
        bail!("the cluster map has {shards} shard(s): the control plane needs one of its own and one for namespaces");
    }
    let durability = kiseki_client::default_durability(client.pool().devices().len());
    let system = Namespace::new(
        client.clone(),
        system_shard,
        Arc::new(keys),
        NamespaceOptions::with_durability(durability),
    )?;
    patiently("reaching the system shard", deadline, || {
        system.getattr(kiseki_namespace::InodeId::ROOT)
    })
    .await?;
    let store = patiently("preparing the system namespace", deadline, || async {
        RecordStore::open(system.clone()).await.map_err(|error| match error {
            kiseki_control::ControlError::Client(error) => error,
            other => ClientError::Invalid(other.to_string()),
        })
    })
    .await?;
    Ok((store, keyserver, system_shard, client))
}

#[tokio::main]
async fn run(options: RunOptions) -> anyhow::Result<()> {
    let identity = TlsIdentity::in_dir(&options.tls_dir, &options.tls_name);
    let tls = {
        let ca = kiseki_net::tls::load_certificates(&identity.ca)?;
        let chain = kiseki_net::tls::load_certificates(&identity.certificate)?;
        let key = kiseki_net::tls::load_private_key(&identity.key)?;
        kiseki_net::tls::server_config(&ca, chain, key)?
    };
    let (store, keyserver, system_shard, client) = open_system(&options, &identity).await?;
    let keeper_counters = Arc::new(KeeperCounters::default());
    let keeper = KeeperConfig {
        check_interval_ms: options.keeper_check_interval_ms,
        repair_interval_s: options.repair_interval_s,
        gc_interval_s: options.gc_interval_s,
        gc_grace_s: options.gc_grace_s,
    };
    tokio::spawn(kiseki_control::keeper::keep(
        client,
        keeper,
        Arc::clone(&keeper_counters),
    ));
    let plane = ControlPlane::start(store, keyserver, system_shard).await?;
    let status = plane.status().await;
    let service = Arc::new(ControlService::new(plane));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let admin = tokio::net::TcpListener::bind(options.admin_listen)
        .await
        .with_context(|| format!("listening on {}", options.admin_listen))?;
    println!(
        "kiseki-control: serving on {} (mutual TLS), system shard {system_shard}, {} tenant(s), {} namespace(s); \
         metrics http://{}/metrics",
        listener.local_addr()?,
        status.tenants,
        status.namespaces,
        admin.local_addr()?
    );
    let stopping = kiseki_net::stop_on_signals()?;
    let metrics_service = Arc::clone(&service);
    tokio::spawn(kiseki_net::serve_admin(
        admin,
        move || {
            let service = Arc::clone(&metrics_service);
            let keeper = Arc::clone(&keeper_counters);
            async move { service.metrics_text().await + &keeper.metrics_text() }
        },
        kiseki_net::stopped(stopping.clone()),
    ));
    kiseki_net::serve_tokio(
        listener,
        Some(tls),
        service,
        RpcConfig::default(),
        kiseki_net::stopped(stopping),
    )
    .await?;
    println!("kiseki-control: stopped");
    Ok(())
}
