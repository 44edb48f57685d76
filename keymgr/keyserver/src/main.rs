//! `kiseki-keyserver`: `init` makes the master key and the first key state, `run` serves
//! them over mutual TLS 1.3, `print-config` prints the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kiseki_keyserver::{now_unix_s, EncryptedFileStore, InternalProvider, KeyManager, KeyService, MasterKey};
use kiseki_net::RpcConfig;

/// The Kiseki key server.
#[derive(Debug, Parser)]
#[command(name = "kiseki-keyserver", version, about)]
enum Command {
    /// Creates the master key (unless it exists) and the first key state (system key
    /// epoch 1); refuses to replace a state.
    Init(StateFiles),
    /// Serves the keys until SIGTERM or SIGINT.
    Run(RunOptions),
    /// Prints the default configuration.
    PrintConfig,
}

#[derive(Debug, Clone, clap::Args)]
struct StateFiles {
    /// The encrypted key state.
    #[arg(long, default_value = "keyserver/keys.state")]
    state: PathBuf,
    /// The master key (64 hex digits, mode 0600) that encrypts the state at rest.
    #[arg(long, default_value = "keyserver/master.key")]
    master_key: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunOptions {
    #[command(flatten)]
    files: StateFiles,
    /// Address to serve on (mutual TLS 1.3).
    #[arg(long, default_value = "127.0.0.1:9300")]
    listen: SocketAddr,
    /// Address of the metrics and health endpoint (`/metrics`, `/health`).
    #[arg(long, default_value = "127.0.0.1:9301")]
    admin_listen: SocketAddr,
    /// Directory with the cluster CA (`ca.pem`) and this server's `NAME.pem`/`NAME.key`.
    #[arg(long)]
    tls_dir: PathBuf,
    /// The certificate name to serve with.
    #[arg(long, default_value = "keyserver")]
    tls_name: String,
    /// Connections served at once; more are closed.
    #[arg(long, default_value_t = 1024)]
    connections_max: usize,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KISEKI_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Command::parse() {
        Command::Init(files) => init(&files),
        Command::Run(options) => run(options),
        Command::PrintConfig => {
            println!(
                "listen = 127.0.0.1:9300\nadmin_listen = 127.0.0.1:9301\nstate = keyserver/keys.state\n\
                 master_key = keyserver/master.key\ntls_name = keyserver\nconnections_max = 1024\n\
                 provider = internal\nepochs_max = {}\ntenants_max = {}",
                kiseki_keyserver::EPOCHS_MAX,
                kiseki_keyserver::TENANTS_MAX
            );
            Ok(())
        }
    }
}

fn init(files: &StateFiles) -> anyhow::Result<()> {
    if let Some(parent) = files.state.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let master = if files.master_key.exists() {
        MasterKey::load(&files.master_key)?
    } else {
        let master = MasterKey::create_file(&files.master_key)?;
        println!(
            "master key {} (mode 0600; keep it apart from the state)",
            files.master_key.display()
        );
        master
    };
    let store = EncryptedFileStore::new(&files.state, master);
    let manager = KeyManager::initialize(Box::new(store), Box::new(InternalProvider), now_unix_s())?;
    println!(
        "key state {} initialized: system key epoch {}",
        files.state.display(),
        manager.current_epoch()
    );
    Ok(())
}

#[tokio::main]
async fn run(options: RunOptions) -> anyhow::Result<()> {
    let master = MasterKey::load(&options.files.master_key)?;
    let store = EncryptedFileStore::new(&options.files.state, master);
    let manager = KeyManager::open(Box::new(store), Box::new(InternalProvider))?;
    let status = manager.status();
    let service = Arc::new(KeyService::new(manager));
    let tls_dir = &options.tls_dir;
    let ca = kiseki_net::tls::load_certificates(&tls_dir.join(kiseki_net::tls::CA_CERTIFICATE_FILE))?;
    let chain = kiseki_net::tls::load_certificates(&tls_dir.join(format!("{}.pem", options.tls_name)))?;
    let key = kiseki_net::tls::load_private_key(&tls_dir.join(format!("{}.key", options.tls_name)))?;
    let tls = kiseki_net::tls::server_config(&ca, chain, key)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let admin = tokio::net::TcpListener::bind(options.admin_listen)
        .await
        .with_context(|| format!("listening on {}", options.admin_listen))?;
    println!(
        "kiseki-keyserver: serving on {} (mutual TLS), epoch {}, {} tenant(s), provider {}; metrics http://{}/metrics",
        listener.local_addr()?,
        status.current_epoch,
        status.tenants,
        status.provider,
        admin.local_addr()?
    );
    let stopping = kiseki_net::stop_on_signals()?;
    let metrics_service = Arc::clone(&service);
    tokio::spawn(kiseki_net::serve_admin(
        admin,
        move || {
            let service = Arc::clone(&metrics_service);
            async move { service.metrics_text().await }
        },
        kiseki_net::stopped(stopping.clone()),
    ));
    let config = RpcConfig {
        connections_max: options.connections_max,
        ..RpcConfig::default()
    };
    kiseki_net::serve_tokio(listener, Some(tls), service, config, kiseki_net::stopped(stopping)).await?;
    println!("kiseki-keyserver: stopped");
    Ok(())
}
