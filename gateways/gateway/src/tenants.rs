//! The tenants the gateway serves, each with its namespace opened with its keys, found by
//! S3 access key.
//!
//! Two sources: a tenants file ([`crate::config`], fixed for the process's life; the
//! benchmark uses it), or the control plane (`kiseki up` and deployments): the gateway
//! reads every live tenant's access keys from it (its `gateway` certificate allows
//! that), opens each tenant's namespace through the control plane and the key server,
//! and refreshes that every `refresh_ms`, and at once (at most every
//! [`REFRESH_INTERVAL_MIN`]) when a request names an access key it does not know. A
//! tenant that is shredded, or whose keys are all deleted, drops out at the next refresh
//! together with its keys.
//!
//! Requests read the current table through an [`ArcSwap`] (no lock); a refresh builds a
//! new table and swaps it in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kiseki_api::control::AccessKeyInfo;
use kiseki_client::profile::{fetch_keys, namespace_options};
use kiseki_client::{Client, ClientError, ControlClient, KeyServerClient, Namespace};

use crate::config::GatewayConfig;

/// Fewest time between two refreshes asked for by unknown access keys.
pub const REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(500);

/// One tenant as the gateway serves it.
#[derive(Debug)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// Its namespace, opened with its keys.
    pub namespace: Namespace,
}

/// Tenants and access keys at one moment.
#[derive(Debug, Default)]
pub struct TenantTable {
    /// Every tenant served.
    pub tenants: Vec<Arc<Tenant>>,
    /// Access key → (tenant, secret).
    by_access_key: HashMap<String, (Arc<Tenant>, String)>,
    /// Tenants with access keys that could not be served, and why (logged once).
    unserved: HashMap<String, String>,
}

impl TenantTable {
    /// The tenant and secret of `access_key`.
    pub fn get(&self, access_key: &str) -> Option<&(Arc<Tenant>, String)> {
        self.by_access_key.get(access_key)
    }
}

/// Where tenants come from when they change.
#[derive(Debug)]
struct ControlSource {
    control: ControlClient,
    keyserver: KeyServerClient,
    client: Client,
    /// The namespace of each tenant that holds its buckets.
    namespace: String,
}

/// The gateway's tenants.
#[derive(Debug)]
pub struct Tenants {
    table: ArcSwap<TenantTable>,
    source: Option<ControlSource>,
    /// Serializes refreshes and remembers when the last one ran.
    last_refresh: tokio::sync::Mutex<Instant>,
}

impl Tenants {
    /// The fixed tenants of a tenants file, each opened on its namespace (same order).
    pub fn from_file(config: &GatewayConfig, namespaces: Vec<Namespace>) -> Tenants {
        let mut table = TenantTable::default();
        for (tenant, namespace) in config.tenants.iter().zip(namespaces) {
            let served = Arc::new(Tenant {
                name: tenant.name.clone(),
                namespace,
            });
            table.by_access_key.insert(
                tenant.access_key.clone(),
                (Arc::clone(&served), tenant.secret_key.clone()),
            );
            table.tenants.push(served);
        }
        Tenants {
            table: ArcSwap::from_pointee(table),
            source: None,
            last_refresh: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Tenants from the control plane; the first refresh runs before this returns.
    pub async fn from_control(
        control: ControlClient,
        keyserver: KeyServerClient,
        client: Client,
        namespace: &str,
    ) -> Result<Tenants, ClientError> {
        let tenants = Tenants {
            table: ArcSwap::from_pointee(TenantTable::default()),
            source: Some(ControlSource {
                control,
                keyserver,
                client,
                namespace: namespace.to_owned(),
            }),
            last_refresh: tokio::sync::Mutex::new(Instant::now()),
        };
        tenants.refresh().await?;
        Ok(tenants)
    }

    /// The current table.
    pub fn table(&self) -> Arc<TenantTable> {
        self.table.load_full()
    }

    /// The tenant and secret of `access_key`; for an unknown key, refreshes from the
    /// control plane first (unless a refresh ran within [`REFRESH_INTERVAL_MIN`]).
    pub async fn lookup(&self, access_key: &str) -> Option<(Arc<Tenant>, String)> {
        if let Some(found) = self.table().get(access_key) {
            return Some(found.clone());
        }
        self.source.as_ref()?;
        let asked = Instant::now();
        {
            let last = self.last_refresh.lock().await;
            if last.elapsed() < REFRESH_INTERVAL_MIN || *last > asked {
                return self.table().get(access_key).cloned();
            }
        }
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "refreshing tenants failed");
        }
        self.table().get(access_key).cloned()
    }

    /// Reads the access keys of every live tenant from the control plane, opens the
    /// namespaces of tenants new to the table, and swaps the new table in.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let mut last = self.last_refresh.lock().await;
        let directory = source.control.access_key_directory().await?.keys;
        let current = self.table();
        let mut by_tenant: HashMap<String, Vec<AccessKeyInfo>> = HashMap::new();
        for key in directory {
            by_tenant.entry(key.tenant.clone()).or_default().push(key);
        }
        let mut table = TenantTable::default();
        for (name, keys) in by_tenant {
            let known = current.tenants.iter().find(|tenant| tenant.name == name).cloned();
            let tenant = match known {
                Some(tenant) => tenant,
                None => match self.open(source, &name).await {
                    Ok(tenant) => tenant,
                    Err(error) => {
                        let reason = error.to_string();
                        if current.unserved.get(&name) != Some(&reason) {
                            tracing::warn!(tenant = %name, %reason, "tenant not served");
                        }
                        table.unserved.insert(name, reason);
                        continue;
                    }
                },
            };
            for key in keys {
                table
                    .by_access_key
                    .insert(key.access_key, (Arc::clone(&tenant), key.secret_key));
            }
            table.tenants.push(tenant);
        }
        table.tenants.sort_by(|a, b| a.name.cmp(&b.name));
        self.table.store(Arc::new(table));
        *last = Instant::now();
        Ok(())
    }

    async fn open(&self, source: &ControlSource, tenant: &str) -> Result<Arc<Tenant>, ClientError> {
        let info = source.control.resolve_namespace(tenant, &source.namespace).await?;
        let keys = fetch_keys(&source.keyserver, tenant, info.settings.dedup).await?;
        let mut options = namespace_options(&info, source.client.pool().devices().len())?;
        options.chunks_in_flight_max = crate::s3::CHUNKS_IN_FLIGHT_PER_REQUEST;
        let namespace = Namespace::new(source.client.clone(), info.shard, Arc::new(keys), options)?;
        tracing::info!(tenant, namespace = %source.namespace, shard = info.shard, "serving tenant");
        Ok(Arc::new(Tenant {
            name: tenant.to_owned(),
            namespace,
        }))
    }

    /// Refreshes every `interval` until the process ends.
    pub async fn refresh_every(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "refreshing tenants failed");
            }
        }
    }
}
