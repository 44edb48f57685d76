//! The control plane's records and where they live: files of the system namespace (a
//! shard of the cluster map kept for the control plane), encrypted by the native client
//! under the system tenant's KEK like any tenant's files, so secrets (S3 secret keys)
//! never reach a node in the clear.
//!
//! ```text
//! /tenants/NAME.json                 a tenant
//! /namespaces/TENANT/NAME.json       a namespace: its shard and settings
//! /access-keys/ACCESS_KEY.json       an S3 access key and its secret
//! /shards/N                          shard N's claim (made exclusively: one namespace per shard)
//! /.staging/…                        records being written (renamed into place: atomic)
//! ```

use std::collections::BTreeMap;

use kiseki_api::control::{DedupPolicy, NamespaceSettings};
use kiseki_client::{ClientError, Creator, Namespace};
use kiseki_namespace::NamespaceError;
use serde::{Deserialize, Serialize};

use crate::ControlError;

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_unix_s: u64,
    /// When it was crypto-shredded.
    pub shredded_unix_s: Option<u64>,
}

/// A namespace's settings as stored (the API's [`NamespaceSettings`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsRecord {
    /// `Nx` or `K+M`, empty for the cluster default.
    pub durability: String,
    /// Average chunk bytes, 0 for the default.
    pub chunk_bytes_avg: u32,
    /// Whether content keys are shared across tenants.
    pub cross_tenant_dedup: bool,
    /// Bytes at most.
    pub quota_bytes_max: Option<u64>,
    /// Inodes at most.
    pub quota_files_max: Option<u64>,
}

impl SettingsRecord {
    /// The stored form of `settings`.
    pub fn from_api(settings: &NamespaceSettings) -> SettingsRecord {
        SettingsRecord {
            durability: settings.durability.clone(),
            chunk_bytes_avg: settings.chunk_bytes_avg,
            cross_tenant_dedup: settings.dedup == DedupPolicy::CrossTenant,
            quota_bytes_max: settings.quota_bytes_max,
            quota_files_max: settings.quota_files_max,
        }
    }

    /// The API form.
    pub fn to_api(&self) -> NamespaceSettings {
        NamespaceSettings {
            durability: self.durability.clone(),
            chunk_bytes_avg: self.chunk_bytes_avg,
            dedup: if self.cross_tenant_dedup {
                DedupPolicy::CrossTenant
            } else {
                DedupPolicy::TenantOnly
            },
            quota_bytes_max: self.quota_bytes_max,
            quota_files_max: self.quota_files_max,
        }
    }
}

/// A namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// Its shard.
    pub shard: u64,
    /// Its settings.
    pub settings: SettingsRecord,
    /// When it was made.
    pub created_unix_s: u64,
}

/// An S3 access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    /// The key id.
    pub access_key: String,
    /// Its tenant.
    pub tenant: String,
    /// The secret.
    pub secret_key: String,
    /// When it was made.
    pub created_unix_s: u64,
}

/// Everything the control plane knows, as loaded from the system namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Tenants by name.
    pub tenants: BTreeMap<String, TenantRecord>,
    /// Namespaces by (tenant, name).
    pub namespaces: BTreeMap<(String, String), NamespaceRecord>,
    /// Access keys by id.
    pub access_keys: BTreeMap<String, AccessKeyRecord>,
}

const DIRECTORIES: [&str; 5] = ["/tenants", "/namespaces", "/access-keys", "/shards", "/.staging"];

/// Record files of the system namespace, read and written through the native client.
#[derive(Clone, Debug)]
pub struct RecordStore {
    system: Namespace,
}

impl RecordStore {
    /// The store over the opened system namespace; makes its directories.
    pub async fn open(system: Namespace) -> Result<RecordStore, ControlError> {
        for directory in DIRECTORIES {
            system.mkdir_all(directory, 0o700).await?;
        }
        Ok(RecordStore { system })
    }

    /// The system namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.system
    }

    /// Reads every record.
    pub async fn load(&self) -> Result<Records, ControlError> {
        let mut records = Records::default();
        for tenant in self.read_all::<TenantRecord>("/tenants").await? {
            records.tenants.insert(tenant.name.clone(), tenant);
        }
        for directory in self.system.list("/namespaces").await? {
            let Ok(tenant) = String::from_utf8(directory.name) else {
                continue;
            };
            for namespace in self
                .read_all::<NamespaceRecord>(&format!("/namespaces/{tenant}"))
                .await?
            {
                records
                    .namespaces
                    .insert((namespace.tenant.clone(), namespace.name.clone()), namespace);
            }
        }
        for key in self.read_all::<AccessKeyRecord>("/access-keys").await? {
            records.access_keys.insert(key.access_key.clone(), key);
        }
        Ok(records)
    }

    async fn read_all<T: for<'de> Deserialize<'de>>(&self, directory: &str) -> Result<Vec<T>, ControlError> {
        let mut values = Vec::new();
        for entry in self.system.list(directory).await? {
            let Ok(name) = String::from_utf8(entry.name) else {
                continue;
            };
            if !name.ends_with(".json") {
                continue;
            }
            let path = format!("{directory}/{name}");
            let mut bytes = Vec::new();
            self.system.read_file(&path, &mut bytes).await?;
            let value = serde_json::from_slice(&bytes).map_err(|error| ControlError::Corrupt {
                path: path.clone(),
                reason: error.to_string(),
            })?;
            values.push(value);
        }
        Ok(values)
    }

    /// Writes `value` to `path` whole: to a staging file first, then renamed into place
    /// (one atomic delta), so readers see the old record or the new one.
    pub async fn put<T: Serialize>(&self, path: &str, value: &T) -> Result<(), ControlError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|error| ControlError::Invalid(error.to_string()))?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !parent.is_empty() {
                self.system.mkdir_all(parent, 0o700).await?;
            }
        }
        let staging = format!("/.staging/{:016x}.json", rand::random::<u64>());
        self.system.write_file(&staging, bytes.as_slice(), 0o600).await?;
        self.system.rename(&staging, path).await?;
        Ok(())
    }

    /// Removes the record at `path` (absent is fine).
    pub async fn remove(&self, path: &str) -> Result<(), ControlError> {
        match self.system.remove(path).await {
            Ok(()) | Err(ClientError::Namespace(NamespaceError::NotFound)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Claims `shard` for a namespace: `false` if it is claimed already.
    pub async fn claim_shard(&self, shard: u64, owner: &str) -> Result<bool, ControlError> {
        let (shards, _) = self.system.resolve("/shards").await?;
        let creator = Creator {
            mode: 0o600,
            uid: 0,
            gid: 0,
        };
        match self
            .system
            .create_at(shards, shard.to_string().as_bytes(), creator, true)
            .await
        {
            Ok((inode, _)) => {
                self.system.write_at(inode, 0, owner.as_bytes()).await?;
                Ok(true)
            }
            Err(ClientError::Namespace(NamespaceError::AlreadyExists)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Releases `shard`'s claim.
    pub async fn release_shard(&self, shard: u64) -> Result<(), ControlError> {
        self.remove(&format!("/shards/{shard}")).await
    }

    /// The shards claimed.
    pub async fn claimed_shards(&self) -> Result<Vec<u64>, ControlError> {
        Ok(self
            .system
            .list("/shards")
            .await?
            .into_iter()
            .filter_map(|entry| String::from_utf8(entry.name).ok()?.parse().ok())
            .collect())
    }
}

/// The record paths.
pub fn tenant_path(name: &str) -> String {
    format!("/tenants/{name}.json")
}

/// The record path of a namespace.
pub fn namespace_path(tenant: &str, name: &str) -> String {
    format!("/namespaces/{tenant}/{name}.json")
}

/// The record path of an access key.
pub fn access_key_path(access_key: &str) -> String {
    format!("/access-keys/{access_key}.json")
}
