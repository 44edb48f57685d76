//! The administration commands, through the control plane and the key server with the
//! profile's certificate: `kiseki tenant`, `kiseki namespace`, `kiseki key` (S3 access
//! keys), `kiseki maintenance` and `kiseki keyserver`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use kiseki_api::control::{
    AccessKeyInfo, DedupPolicy, NamespaceCreateRequest, NamespaceInfo, NamespaceSettings, QuotaSetRequest, TenantInfo,
};
use kiseki_client::Profile;
use kiseki_store::units::parse_bytes;

/// The profile to act with.
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArg {
    /// The client profile (`kiseki up` writes `DATA_DIR/client.json`, with the operator's
    /// `admin` certificate).
    #[arg(long, env = "KISEKI_PROFILE", default_value = "./kiseki-data/client.json")]
    pub profile: PathBuf,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

impl ProfileArg {
    fn load(&self) -> anyhow::Result<Profile> {
        Profile::load(&self.profile).with_context(|| "reading the profile (is `kiseki up` running here?)")
    }
}

/// `kiseki tenant`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant and its keys.
    Create {
        /// 1 to 63 of a-z, 0-9 and '-'.
        name: String,
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Lists tenants.
    List {
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Deletes a tenant that has no namespaces (its access keys go too).
    Delete {
        /// The tenant.
        name: String,
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Crypto-shreds a tenant: its KEK is destroyed, so none of its files can be read
    /// again by anyone; its access keys are removed. Cannot be undone.
    Shred {
        /// The tenant.
        name: String,
        /// Confirms that the tenant's data is to become unreadable for good.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        profile: ProfileArg,
    },
}

/// A quota limit on the command line: a value, or `none` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(Option<u64>);

/// A byte limit: a size (`10GiB`) or `none`.
fn parse_limit_bytes(text: &str) -> Result<Limit, String> {
    match text {
        "none" | "unlimited" => Ok(Limit(None)),
        _ => parse_bytes(text).map(|bytes| Limit(Some(bytes))),
    }
}

/// A count limit: a number or `none`.
fn parse_limit_count(text: &str) -> Result<Limit, String> {
    match text {
        "none" | "unlimited" => Ok(Limit(None)),
        _ => text
            .parse()
            .map(|count| Limit(Some(count)))
            .map_err(|_| format!("{text}: a count or `none`")),
    }
}

/// `kiseki namespace`.
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Creates a namespace of a tenant on a free shard.
    Create {
        /// Its name within the tenant.
        name: String,
        /// The tenant; default: the profile's.
        #[arg(long)]
        tenant: Option<String>,
        /// Durability of its chunks: `Nx` or `K+M`; default: by the cluster's devices.
        #[arg(long, default_value = "")]
        durability: String,
        /// Average chunk size (FastCDC; a quarter to four times it); default 1MiB.
        #[arg(long, value_parser = parse_bytes)]
        chunk_size: Option<u64>,
        /// Share chunks only within the tenant (keyed content keys) instead of across
        /// tenants.
        #[arg(long)]
        no_cross_tenant_dedup: bool,
        /// Bytes it may store (`10GiB`), or `none`.
        #[arg(long, value_parser = parse_limit_bytes, default_value = "none")]
        quota_bytes: Limit,
        /// Inodes it may hold, or `none`.
        #[arg(long, value_parser = parse_limit_count, default_value = "none")]
        quota_files: Limit,
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Lists namespaces with their usage.
    List {
        /// Only this tenant's; default: every tenant's.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Deletes an empty namespace (its shard becomes free).
    Delete {
        /// The namespace.
        name: String,
        /// The tenant; default: the profile's.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Sets a namespace's quota; writes past it fail with "quota exceeded" (EDQUOT).
    Quota {
        /// The namespace.
        name: String,
        /// The tenant; default: the profile's.
        #[arg(long)]
        tenant: Option<String>,
        /// Bytes it may store (`10GiB`), or `none`.
        #[arg(long, value_parser = parse_limit_bytes)]
        bytes: Option<Limit>,
        /// Inodes it may hold, or `none`.
        #[arg(long, value_parser = parse_limit_count)]
        files: Option<Limit>,
        #[command(flatten)]
        profile: ProfileArg,
    },
}

/// `kiseki key` (S3 access keys).
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Makes an access key for a tenant and prints it with its secret (shown once).
    Create {
        /// The tenant; default: the profile's.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Lists a tenant's access keys (without secrets).
    List {
        /// The tenant; default: the profile's.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Removes an access key.
    Delete {
        /// The access key id.
        access_key: String,
        #[command(flatten)]
        profile: ProfileArg,
    },
}

/// `kiseki maintenance`.
#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Makes the cluster read-only: every change is refused ("read-only", EROFS).
    On {
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Makes the cluster writable again.
    Off {
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Shows whether each shard is read-only.
    Status {
        #[command(flatten)]
        profile: ProfileArg,
    },
}

/// `kiseki keyserver`.
#[derive(Debug, Subcommand)]
pub enum KeyServerCommand {
    /// System key epochs and tenant counts.
    Status {
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Starts a new system key epoch (new chunks are sealed under it).
    Rotate {
        #[command(flatten)]
        profile: ProfileArg,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the client runtime")
}

fn print_tenant(tenant: &TenantInfo, json: bool) {
    if json {
        let line = serde_json::json!({
            "name": tenant.name,
            "created_unix_s": tenant.created_unix_s,
            "shredded_unix_s": tenant.shredded_unix_s,
            "namespaces": tenant.namespaces,
            "access_keys": tenant.access_keys,
        });
        println!("{line}");
    } else {
        let state = match tenant.shredded_unix_s {
            Some(_) => "shredded",
            None => "active",
        };
        println!(
            "{}  {state}  {} namespace(s)  {} access key(s)",
            tenant.name, tenant.namespaces, tenant.access_keys
        );
    }
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "none".to_owned(), |value| value.to_string())
}

fn print_namespace(namespace: &NamespaceInfo, json: bool) {
    let settings = &namespace.settings;
    let dedup = match settings.dedup {
        DedupPolicy::CrossTenant => "cross-tenant",
        DedupPolicy::TenantOnly => "tenant-only",
    };
    if json {
        let line = serde_json::json!({
            "tenant": namespace.tenant,
            "name": namespace.name,
            "shard": namespace.shard,
            "durability": settings.durability,
            "chunk_bytes_avg": settings.chunk_bytes_avg,
            "dedup": dedup,
            "quota_bytes_max": settings.quota_bytes_max,
            "quota_files_max": settings.quota_files_max,
            "used_bytes": namespace.usage.as_ref().map(|usage| usage.bytes),
            "used_files": namespace.usage.as_ref().map(|usage| usage.files),
            "read_only": namespace.usage.as_ref().map(|usage| usage.read_only),
        });
        println!("{line}");
    } else {
        let usage = namespace.usage.as_ref().map_or_else(
            || "usage unknown (shard did not answer)".to_owned(),
            |usage| format!("{} bytes, {} inodes used", usage.bytes, usage.files),
        );
        println!(
            "{}/{}  shard {}  durability {}  dedup {dedup}  quota {} bytes, {} inodes  {usage}",
            namespace.tenant,
            namespace.name,
            namespace.shard,
            if settings.durability.is_empty() {
                "default"
            } else {
                &settings.durability
            },
            limit_text(settings.quota_bytes_max),
            limit_text(settings.quota_files_max),
        );
    }
}

fn print_key(key: &AccessKeyInfo, json: bool) {
    if json {
        let mut line = serde_json::json!({
            "access_key": key.access_key,
            "tenant": key.tenant,
            "created_unix_s": key.created_unix_s,
        });
        if !key.secret_key.is_empty() {
            line["secret_key"] = serde_json::Value::String(key.secret_key.clone());
        }
        println!("{line}");
    } else if key.secret_key.is_empty() {
        println!("{}  tenant {}", key.access_key, key.tenant);
    } else {
        println!(
            "AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={}  (tenant {}; the secret is shown once)",
            key.access_key, key.secret_key, key.tenant
        );
    }
}

/// Runs `kiseki tenant`.
pub fn run_tenant(command: TenantCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match command {
            TenantCommand::Create { name, profile } => {
                let control = profile.load()?.control().await?;
                print_tenant(&control.create_tenant(&name).await?, profile.json);
            }
            TenantCommand::List { profile } => {
                let control = profile.load()?.control().await?;
                for tenant in control.tenants().await?.tenants {
                    print_tenant(&tenant, profile.json);
                }
            }
            TenantCommand::Delete { name, profile } => {
                let control = profile.load()?.control().await?;
                print_tenant(&control.delete_tenant(&name).await?, profile.json);
            }
            TenantCommand::Shred { name, yes, profile } => {
                if !yes {
                    anyhow::bail!("shredding makes every file of tenant {name} unreadable for good; add --yes");
                }
                let control = profile.load()?.control().await?;
                print_tenant(&control.shred_tenant(&name).await?, profile.json);
            }
        }
        Ok(())
    })
}

/// Runs `kiseki namespace`.
pub fn run_namespace(command: NamespaceCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match command {
            NamespaceCommand::Create {
                name,
                tenant,
                durability,
                chunk_size,
                no_cross_tenant_dedup,
                quota_bytes,
                quota_files,
                profile,
            } => {
                let loaded = profile.load()?;
                let chunk_bytes_avg = match chunk_size {
                    None => 0,
                    Some(bytes) => u32::try_from(bytes).context("--chunk-size is too large")?,
                };
                let request = NamespaceCreateRequest {
                    tenant: tenant.unwrap_or_else(|| loaded.tenant.clone()),
                    name,
                    settings: NamespaceSettings {
                        durability,
                        chunk_bytes_avg,
                        dedup: if no_cross_tenant_dedup {
                            DedupPolicy::TenantOnly
                        } else {
                            DedupPolicy::CrossTenant
                        },
                        quota_bytes_max: quota_bytes.0,
                        quota_files_max: quota_files.0,
                    },
                };
                let control = loaded.control().await?;
                print_namespace(&control.create_namespace(&request).await?, profile.json);
            }
            NamespaceCommand::List { tenant, profile } => {
                let control = profile.load()?.control().await?;
                for namespace in control.namespaces(tenant.as_deref(), true).await?.namespaces {
                    print_namespace(&namespace, profile.json);
                }
            }
            NamespaceCommand::Delete { name, tenant, profile } => {
                let loaded = profile.load()?;
                let tenant = tenant.unwrap_or_else(|| loaded.tenant.clone());
                let control = loaded.control().await?;
                print_namespace(&control.delete_namespace(&tenant, &name).await?, profile.json);
            }
            NamespaceCommand::Quota {
                name,
                tenant,
                bytes,
                files,
                profile,
            } => {
                let loaded = profile.load()?;
                let tenant = tenant.unwrap_or_else(|| loaded.tenant.clone());
                let control = loaded.control().await?;
                let current = control.resolve_namespace(&tenant, &name).await?;
                let request = QuotaSetRequest {
                    tenant,
                    name,
                    bytes_max: bytes.map_or(current.settings.quota_bytes_max, |limit| limit.0),
                    files_max: files.map_or(current.settings.quota_files_max, |limit| limit.0),
                };
                print_namespace(&control.set_quota(&request).await?, profile.json);
            }
        }
        Ok(())
    })
}

/// Runs `kiseki key`.
pub fn run_key(command: KeyCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match command {
            KeyCommand::Create { tenant, profile } => {
                let loaded = profile.load()?;
                let tenant = tenant.unwrap_or_else(|| loaded.tenant.clone());
                let control = loaded.control().await?;
                print_key(&control.create_access_key(&tenant).await?, profile.json);
            }
            KeyCommand::List { tenant, profile } => {
                let loaded = profile.load()?;
                let tenant = tenant.unwrap_or_else(|| loaded.tenant.clone());
                let control = loaded.control().await?;
                for key in control.access_keys(&tenant).await?.keys {
                    print_key(&key, profile.json);
                }
            }
            KeyCommand::Delete { access_key, profile } => {
                let control = profile.load()?.control().await?;
                print_key(&control.delete_access_key(&access_key).await?, profile.json);
            }
        }
        Ok(())
    })
}

/// Runs `kiseki maintenance`.
pub fn run_maintenance(command: MaintenanceCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (reply, profile) = match command {
            MaintenanceCommand::On { profile } => {
                (profile.load()?.control().await?.set_maintenance(true).await?, profile)
            }
            MaintenanceCommand::Off { profile } => {
                (profile.load()?.control().await?.set_maintenance(false).await?, profile)
            }
            MaintenanceCommand::Status { profile } => (profile.load()?.control().await?.maintenance().await?, profile),
        };
        for shard in &reply.shards {
            let state = match shard.read_only {
                Some(true) => "read-only",
                Some(false) => "writable",
                None => "unreachable",
            };
            if profile.json {
                println!("{}", serde_json::json!({ "shard": shard.shard, "state": state }));
            } else {
                println!("shard {}: {state}", shard.shard);
            }
        }
        Ok(())
    })
}

/// Runs `kiseki keyserver`.
pub fn run_keyserver(command: KeyServerCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (status, profile) = match command {
            KeyServerCommand::Status { profile } => (profile.load()?.keyserver().await?.status().await?, profile),
            KeyServerCommand::Rotate { profile } => (profile.load()?.keyserver().await?.rotate().await?, profile),
        };
        if profile.json {
            let epochs: Vec<u32> = status.epochs.iter().map(|epoch| epoch.epoch).collect();
            let line = serde_json::json!({
                "current_epoch": status.current_epoch,
                "epochs": epochs,
                "tenants": status.tenants,
                "tenants_destroyed": status.tenants_destroyed,
                "provider": status.provider,
            });
            println!("{line}");
        } else {
            println!(
                "current epoch {} ({} epoch(s)), {} tenant(s), {} shredded, provider {}",
                status.current_epoch,
                status.epochs.len(),
                status.tenants,
                status.tenants_destroyed,
                status.provider
            );
        }
        Ok(())
    })
}
