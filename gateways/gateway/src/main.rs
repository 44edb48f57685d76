//! `kiseki-gateway`: serves S3 for the tenants of a tenants file, over a Kiseki cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kiseki_client::{parse_durability, KeyMaterial, Namespace};
use kiseki_gateway::config::GatewayConfig;
use kiseki_gateway::s3::auth::TenantAuth;
use kiseki_gateway::s3::S3Gateway;
use kiseki_gateway::server::{serve, ServerLimits};
use kiseki_pipeline::Durability;
use s3s::service::S3ServiceBuilder;

/// The Kiseki gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
enum Command {
    /// Serves S3 (HTTP/1.1) until SIGTERM or SIGINT.
    S3(S3Options),
}

#[derive(Debug, clap::Args)]
struct S3Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Any core of any node of the cluster.
    #[arg(long, env = "KISEKI_CLUSTER", default_value = "127.0.0.1:9100")]
    cluster: SocketAddr,
    /// The tenants file (`kiseki up` writes `DATA_DIR/gateway.json`).
    #[arg(long)]
    tenants: PathBuf,
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
            let client =
                kiseki_client::Client::connect(options.cluster, kiseki_client::ClientOptions::default()).await?;
            let devices = client.pool().devices().len();
            let durability = options
                .durability
                .unwrap_or_else(|| kiseki_client::default_durability(devices));
            let namespace = Namespace::new(
                client,
                shard,
                keys.clone(),
                kiseki_client::NamespaceOptions::with_durability(durability),
            )?;
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

#[tokio::main]
async fn run_s3(options: S3Options) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&options.tenants)?;
    let mut namespaces = Vec::new();
    for tenant in &config.tenants {
        let keys = KeyMaterial::load(&tenant.keys).with_context(|| format!("tenant {}: keys", tenant.name))?;
        namespaces.push(
            connect(&options, tenant.namespace, keys)
                .await
                .with_context(|| format!("tenant {}: opening namespace {}", tenant.name, tenant.namespace))?,
        );
    }
    let gateway = S3Gateway::new(&config, namespaces);
    let mut builder = S3ServiceBuilder::new(gateway);
    builder.set_auth(TenantAuth::new(&config));
    if !options.domain.is_empty() {
        let domains: Vec<&str> = options.domain.iter().map(String::as_str).collect();
        builder.set_host(s3s::host::MultiDomain::new(&domains).context("--domain")?);
    }
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let address = listener.local_addr()?;
    println!(
        "kiseki-gateway: S3 on http://{address} for {} tenant(s)",
        config.tenants.len()
    );
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
