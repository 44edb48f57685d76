//! The control plane's operations over its records, the key server and the shards.
//!
//! Mutations are serialized (one async mutex around the records: the control plane is
//! off every data path, and one instance runs per cluster) and each writes its records
//! to the system namespace before it answers. Reads are served from the records loaded
//! at start and kept up to date by the mutations.

use kiseki_api::control::{
    AccessKeyInfo, ControlStatusReply, MaintenanceReply, NamespaceCreateRequest, NamespaceInfo, NamespaceUsage,
    QuotaSetRequest, ShardMaintenance, TenantInfo,
};
use kiseki_api::{validate_tenant_name, ClusterMap, DeltaOutcome, ReadAnswer, ReadQuery};
use kiseki_client::{parse_durability, Client, ClientError, KeyServerClient};
use kiseki_namespace::{Delta, NamespaceStats};

use crate::records::{
    access_key_path, namespace_path, tenant_path, AccessKeyRecord, NamespaceRecord, RecordStore, Records,
    SettingsRecord, TenantRecord,
};
use crate::ControlError;

/// Namespaces one tenant may have at most.
pub const NAMESPACES_PER_TENANT_MAX: usize = 1024;
/// Access keys one tenant may have at most.
pub const ACCESS_KEYS_PER_TENANT_MAX: usize = 64;
/// Tenants at most.
pub const TENANTS_MAX: usize = 100_000;

/// The control plane.
pub struct ControlPlane {
    store: RecordStore,
    client: Client,
    keyserver: KeyServerClient,
    map: ClusterMap,
    system_shard: u64,
    records: tokio::sync::Mutex<Records>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("system_shard", &self.system_shard)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl ControlPlane {
    /// The control plane over its record store (the opened system namespace on shard
    /// `system_shard`), the cluster and the key server; loads every record.
    pub async fn start(
        store: RecordStore,
        keyserver: KeyServerClient,
        system_shard: u64,
    ) -> Result<ControlPlane, ControlError> {
        let client = store.namespace().client().clone();
        let map = client.map().clone();
        let records = store.load().await?;
        tracing::info!(
            tenants = records.tenants.len(),
            namespaces = records.namespaces.len(),
            access_keys = records.access_keys.len(),
            system_shard,
            "control plane records loaded"
        );
        Ok(ControlPlane {
            store,
            client,
            keyserver,
            map,
            system_shard,
            records: tokio::sync::Mutex::new(records),
        })
    }

    /// The shard holding the control plane's records.
    pub fn system_shard(&self) -> u64 {
        self.system_shard
    }

    /// Counts.
    pub async fn status(&self) -> ControlStatusReply {
        let records = self.records.lock().await;
        let claimed = records.namespaces.len() as u64;
        ControlStatusReply {
            tenants: records.tenants.len() as u64,
            namespaces: claimed,
            access_keys: records.access_keys.len() as u64,
            system_shard: self.system_shard,
            shards_free: (self.map.shards - 1).saturating_sub(claimed),
        }
    }

    fn tenant_info(records: &Records, tenant: &TenantRecord) -> TenantInfo {
        TenantInfo {
            name: tenant.name.clone(),
            created_unix_s: tenant.created_unix_s,
            shredded_unix_s: tenant.shredded_unix_s,
            namespaces: records
                .namespaces
                .keys()
                .filter(|(owner, _)| *owner == tenant.name)
                .count() as u32,
            access_keys: records
                .access_keys
                .values()
                .filter(|key| key.tenant == tenant.name)
                .count() as u32,
        }
    }

    /// Creates a tenant and its keys.
    pub async fn create_tenant(&self, name: &str) -> Result<TenantInfo, ControlError> {
        validate_tenant_name(name).map_err(ControlError::Invalid)?;
        let mut records = self.records.lock().await;
        if records.tenants.contains_key(name) {
            return Err(ControlError::AlreadyExists(format!("tenant {name}")));
        }
        if records.tenants.len() >= TENANTS_MAX {
            return Err(ControlError::Limit(format!("at most {TENANTS_MAX} tenants")));
        }
        self.keyserver.create_tenant(name).await?;
        let record = TenantRecord {
            name: name.to_owned(),
            created_unix_s: now_unix_s(),
            shredded_unix_s: None,
        };
        self.store.put(&tenant_path(name), &record).await?;
        records.tenants.insert(name.to_owned(), record.clone());
        tracing::info!(tenant = name, "tenant created");
        Ok(Self::tenant_info(&records, &record))
    }

    /// Every tenant.
    pub async fn tenants(&self) -> Vec<TenantInfo> {
        let records = self.records.lock().await;
        records
            .tenants
            .values()
            .map(|tenant| Self::tenant_info(&records, tenant))
            .collect()
    }

    fn tenant<'r>(records: &'r Records, name: &str) -> Result<&'r TenantRecord, ControlError> {
        records
            .tenants
            .get(name)
            .ok_or_else(|| ControlError::NotFound(format!("tenant {name}")))
    }

    fn live_tenant<'r>(records: &'r Records, name: &str) -> Result<&'r TenantRecord, ControlError> {
        let tenant = Self::tenant(records, name)?;
        if tenant.shredded_unix_s.is_some() {
            return Err(ControlError::Shredded(name.to_owned()));
        }
        Ok(tenant)
    }

    /// Deletes a tenant with no namespaces: its access keys go too; its keys stay with
    /// the key server (a tenant made again under the name gets them back).
    pub async fn delete_tenant(&self, name: &str) -> Result<TenantInfo, ControlError> {
        let mut records = self.records.lock().await;
        let tenant = Self::tenant(&records, name)?.clone();
        let info = Self::tenant_info(&records, &tenant);
        if info.namespaces > 0 {
            return Err(ControlError::NotEmpty(format!(
                "tenant {name} still has {} namespace(s); delete them first",
                info.namespaces
            )));
        }
        self.remove_access_keys(&mut records, name).await?;
        self.store.remove(&tenant_path(name)).await?;
        records.tenants.remove(name);
        tracing::info!(tenant = name, "tenant deleted");
        Ok(info)
    }

    async fn remove_access_keys(&self, records: &mut Records, tenant: &str) -> Result<(), ControlError> {
        let keys: Vec<String> = records
            .access_keys
            .values()
            .filter(|key| key.tenant == tenant)
            .map(|key| key.access_key.clone())
            .collect();
        for key in keys {
            self.store.remove(&access_key_path(&key)).await?;
            records.access_keys.remove(&key);
        }
        Ok(())
    }

    /// Crypto-shreds a tenant: its KEK is destroyed by the key server (so none of its
    /// chunks can be decrypted by anyone, I-K2), its access keys are removed, and the
    /// tenant stays listed as shredded. Its namespaces keep their (now unreadable)
    /// files until deleted.
    pub async fn shred_tenant(&self, name: &str) -> Result<TenantInfo, ControlError> {
        let mut records = self.records.lock().await;
        let mut tenant = Self::tenant(&records, name)?.clone();
        self.keyserver.destroy_tenant(name).await?;
        self.remove_access_keys(&mut records, name).await?;
        if tenant.shredded_unix_s.is_none() {
            tenant.shredded_unix_s = Some(now_unix_s());
            self.store.put(&tenant_path(name), &tenant).await?;
        }
        records.tenants.insert(name.to_owned(), tenant.clone());
        tracing::warn!(tenant = name, "tenant crypto-shredded");
        Ok(Self::tenant_info(&records, &tenant))
    }

    /// Creates a namespace on a free shard, with its quota set in the shard before it is
    /// handed out.
    pub async fn create_namespace(&self, request: &NamespaceCreateRequest) -> Result<NamespaceInfo, ControlError> {
        validate_tenant_name(&request.name).map_err(ControlError::Invalid)?;
        let settings = SettingsRecord::from_api(&request.settings);
        check_settings(&settings)?;
        let mut records = self.records.lock().await;
        Self::live_tenant(&records, &request.tenant)?;
        let key = (request.tenant.clone(), request.name.clone());
        if records.namespaces.contains_key(&key) {
            return Err(ControlError::AlreadyExists(format!(
                "namespace {}/{}",
                request.tenant, request.name
            )));
        }
        let owned = records
            .namespaces
            .keys()
            .filter(|(tenant, _)| *tenant == request.tenant)
            .count();
        if owned >= NAMESPACES_PER_TENANT_MAX {
            return Err(ControlError::Limit(format!(
                "a tenant has at most {NAMESPACES_PER_TENANT_MAX} namespaces"
            )));
        }
        let shard = self.claim_free_shard(&records, &request.tenant, &request.name).await?;
        let created = async {
            self.propose(shard, &quota_delta(&settings)).await?;
            let record = NamespaceRecord {
                tenant: request.tenant.clone(),
                name: request.name.clone(),
                shard,
                settings,
                created_unix_s: now_unix_s(),
            };
            self.store
                .put(&namespace_path(&request.tenant, &request.name), &record)
                .await?;
            Ok::<_, ControlError>(record)
        }
        .await;
        let record = match created {
            Ok(record) => record,
            Err(error) => {
                let _ = self.store.release_shard(shard).await;
                return Err(error);
            }
        };
        records.namespaces.insert(key, record.clone());
        tracing::info!(tenant = %request.tenant, namespace = %request.name, shard, "namespace created");
        Ok(self.info(&record, None))
    }

    /// Claims the lowest shard that is neither claimed, nor the system shard, nor holding
    /// anything (a shard used before the control plane existed is left alone).
    async fn claim_free_shard(&self, records: &Records, tenant: &str, name: &str) -> Result<u64, ControlError> {
        let claimed = self.store.claimed_shards().await?;
        for shard in 1..=self.map.shards {
            let taken = shard == self.system_shard
                || claimed.contains(&shard)
                || records.namespaces.values().any(|namespace| namespace.shard == shard);
            if taken {
                continue;
            }
            let stats = self.stats(shard).await?;
            if stats.dentries > 0 || stats.multipart_uploads > 0 {
                tracing::warn!(shard, "shard holds entries but no namespace; not using it");
                continue;
            }
            if self.store.claim_shard(shard, &format!("{tenant}/{name}")).await? {
                return Ok(shard);
            }
        }
        Err(ControlError::Limit(format!(
            "every shard of the cluster map holds a namespace ({} shards, one for the control plane)",
            self.map.shards
        )))
    }

    /// `tenant`'s namespaces (all with `None`), with usage when `usage`.
    pub async fn namespaces(&self, tenant: Option<&str>, usage: bool) -> Vec<NamespaceInfo> {
        let selected: Vec<NamespaceRecord> = {
            let records = self.records.lock().await;
            records
                .namespaces
                .values()
                .filter(|record| tenant.is_none_or(|tenant| record.tenant == tenant))
                .cloned()
                .collect()
        };
        let mut infos = Vec::with_capacity(selected.len());
        for record in &selected {
            let stats = match usage {
                true => self.stats(record.shard).await.ok(),
                false => None,
            };
            infos.push(self.info(record, stats.as_ref()));
        }
        infos
    }

    /// One namespace; refused for a shredded tenant.
    pub async fn resolve(&self, tenant: &str, name: &str) -> Result<NamespaceInfo, ControlError> {
        let record = {
            let records = self.records.lock().await;
            Self::live_tenant(&records, tenant)?;
            records
                .namespaces
                .get(&(tenant.to_owned(), name.to_owned()))
                .cloned()
                .ok_or_else(|| ControlError::NotFound(format!("namespace {tenant}/{name}")))?
        };
        let stats = self.stats(record.shard).await.ok();
        Ok(self.info(&record, stats.as_ref()))
    }

    /// Deletes a namespace whose root is empty and that has no upload in progress; its
    /// shard is free again.
    pub async fn delete_namespace(&self, tenant: &str, name: &str) -> Result<NamespaceInfo, ControlError> {
        let mut records = self.records.lock().await;
        let key = (tenant.to_owned(), name.to_owned());
        let record = records
            .namespaces
            .get(&key)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("namespace {tenant}/{name}")))?;
        let stats = self.stats(record.shard).await?;
        if stats.dentries > 0 || stats.multipart_uploads > 0 {
            return Err(ControlError::NotEmpty(format!(
                "namespace {tenant}/{name} holds {} entries and {} uploads; remove them first",
                stats.dentries, stats.multipart_uploads
            )));
        }
        self.propose(
            record.shard,
            &Delta::SetQuota {
                bytes_max: None,
                files_max: None,
            },
        )
        .await?;
        self.store.remove(&namespace_path(tenant, name)).await?;
        self.store.release_shard(record.shard).await?;
        records.namespaces.remove(&key);
        tracing::info!(tenant, namespace = name, shard = record.shard, "namespace deleted");
        Ok(self.info(&record, Some(&stats)))
    }

    /// Sets a namespace's quota: in its shard first (enforced from then on), then in its
    /// record.
    pub async fn set_quota(&self, request: &QuotaSetRequest) -> Result<NamespaceInfo, ControlError> {
        let mut records = self.records.lock().await;
        let key = (request.tenant.clone(), request.name.clone());
        let mut record = records
            .namespaces
            .get(&key)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("namespace {}/{}", request.tenant, request.name)))?;
        record.settings.quota_bytes_max = request.bytes_max;
        record.settings.quota_files_max = request.files_max;
        self.propose(record.shard, &quota_delta(&record.settings)).await?;
        self.store
            .put(&namespace_path(&request.tenant, &request.name), &record)
            .await?;
        records.namespaces.insert(key, record.clone());
        let stats = self.stats(record.shard).await.ok();
        Ok(self.info(&record, stats.as_ref()))
    }

    /// Makes an S3 access key for a live tenant.
    pub async fn create_access_key(&self, tenant: &str) -> Result<AccessKeyInfo, ControlError> {
        let mut records = self.records.lock().await;
        Self::live_tenant(&records, tenant)?;
        let owned = records.access_keys.values().filter(|key| key.tenant == tenant).count();
        if owned >= ACCESS_KEYS_PER_TENANT_MAX {
            return Err(ControlError::Limit(format!(
                "a tenant has at most {ACCESS_KEYS_PER_TENANT_MAX} access keys"
            )));
        }
        let (access_key, secret_key) = kiseki_client::services::new_access_key();
        let record = AccessKeyRecord {
            access_key: access_key.clone(),
            tenant: tenant.to_owned(),
            secret_key,
            created_unix_s: now_unix_s(),
        };
        self.store.put(&access_key_path(&access_key), &record).await?;
        records.access_keys.insert(access_key, record.clone());
        Ok(key_info(&record, true))
    }

    /// `tenant`'s access keys, without secrets.
    pub async fn access_keys(&self, tenant: &str) -> Result<Vec<AccessKeyInfo>, ControlError> {
        let records = self.records.lock().await;
        Self::tenant(&records, tenant)?;
        Ok(records
            .access_keys
            .values()
            .filter(|key| key.tenant == tenant)
            .map(|key| key_info(key, false))
            .collect())
    }

    /// The tenant of an access key (for authorization before a delete).
    pub async fn access_key_tenant(&self, access_key: &str) -> Option<String> {
        let records = self.records.lock().await;
        records.access_keys.get(access_key).map(|key| key.tenant.clone())
    }

    /// Removes an access key.
    pub async fn delete_access_key(&self, access_key: &str) -> Result<AccessKeyInfo, ControlError> {
        let mut records = self.records.lock().await;
        let record = records
            .access_keys
            .get(access_key)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("access key {access_key}")))?;
        self.store.remove(&access_key_path(access_key)).await?;
        records.access_keys.remove(access_key);
        Ok(key_info(&record, false))
    }

    /// An access key with its secret (gateways).
    pub async fn lookup_access_key(&self, access_key: &str) -> Result<AccessKeyInfo, ControlError> {
        let records = self.records.lock().await;
        let record = records
            .access_keys
            .get(access_key)
            .ok_or_else(|| ControlError::NotFound(format!("access key {access_key}")))?;
        Self::live_tenant(&records, &record.tenant)?;
        Ok(key_info(record, true))
    }

    /// Every live tenant's access keys with their secrets (gateways refresh from this).
    pub async fn all_access_keys(&self) -> Vec<AccessKeyInfo> {
        let records = self.records.lock().await;
        records
            .access_keys
            .values()
            .filter(|key| {
                records
                    .tenants
                    .get(&key.tenant)
                    .is_some_and(|tenant| tenant.shredded_unix_s.is_none())
            })
            .map(|key| key_info(key, true))
            .collect()
    }

    /// Turns maintenance on or off on every shard (the system shard last when turning it
    /// on, first when turning it off, so the control plane's own records stay writable
    /// for as long as possible).
    pub async fn set_maintenance(&self, read_only: bool) -> Result<MaintenanceReply, ControlError> {
        let _serialized = self.records.lock().await;
        let mut shards: Vec<u64> = (1..=self.map.shards)
            .filter(|shard| *shard != self.system_shard)
            .collect();
        if read_only {
            shards.push(self.system_shard);
        } else {
            shards.insert(0, self.system_shard);
        }
        for shard in shards {
            self.propose(shard, &Delta::SetReadOnly { read_only }).await?;
        }
        tracing::warn!(read_only, "maintenance switched");
        Ok(self.maintenance().await)
    }

    /// Whether each shard is read-only.
    pub async fn maintenance(&self) -> MaintenanceReply {
        let mut shards = Vec::new();
        for shard in 1..=self.map.shards {
            let read_only = self.stats(shard).await.ok().map(|stats| stats.policy.read_only);
            shards.push(ShardMaintenance { shard, read_only });
        }
        MaintenanceReply { shards }
    }

    fn info(&self, record: &NamespaceRecord, stats: Option<&NamespaceStats>) -> NamespaceInfo {
        NamespaceInfo {
            tenant: record.tenant.clone(),
            name: record.name.clone(),
            shard: record.shard,
            settings: record.settings.to_api(),
            created_unix_s: record.created_unix_s,
            usage: stats.map(|stats| NamespaceUsage {
                bytes: stats.quota_bytes_used,
                files: stats.quota_files_used,
                read_only: stats.policy.read_only,
            }),
        }
    }

    async fn stats(&self, shard: u64) -> Result<NamespaceStats, ControlError> {
        match self.client.read(shard, &ReadQuery::StatFs).await? {
            ReadAnswer::Stats(stats) => Ok(stats),
            ReadAnswer::Failed(error) => Err(ClientError::Namespace(error).into()),
            other => Err(ControlError::Invalid(format!(
                "shard {shard} answered {other:?} to StatFs"
            ))),
        }
    }

    async fn propose(&self, shard: u64, delta: &Delta) -> Result<(), ControlError> {
        match self.client.propose(shard, delta).await?.1 {
            DeltaOutcome::Refused(error) => Err(ClientError::Namespace(error).into()),
            _ => Ok(()),
        }
    }
}

fn quota_delta(settings: &SettingsRecord) -> Delta {
    Delta::SetQuota {
        bytes_max: settings.quota_bytes_max,
        files_max: settings.quota_files_max,
    }
}

fn key_info(record: &AccessKeyRecord, with_secret: bool) -> AccessKeyInfo {
    AccessKeyInfo {
        access_key: record.access_key.clone(),
        tenant: record.tenant.clone(),
        secret_key: if with_secret {
            record.secret_key.clone()
        } else {
            String::new()
        },
        created_unix_s: record.created_unix_s,
    }
}

/// Checks a namespace's settings: a durability the client can parse, a chunk size
/// FastCDC accepts.
fn check_settings(settings: &SettingsRecord) -> Result<(), ControlError> {
    if !settings.durability.is_empty() {
        parse_durability(&settings.durability).map_err(ControlError::Invalid)?;
    }
    if settings.chunk_bytes_avg != 0 {
        let average = settings.chunk_bytes_avg;
        let params = kiseki_pipeline::ChunkingParams {
            chunk_bytes_min: average / 4,
            chunk_bytes_avg: average,
            chunk_bytes_max: average.saturating_mul(4),
            ..kiseki_pipeline::ChunkingParams::default()
        };
        params
            .validate()
            .map_err(|error| ControlError::Invalid(format!("chunk size: {error}")))?;
    }
    Ok(())
}
