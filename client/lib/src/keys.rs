//! The key material a client encrypts and decrypts with: the cluster's system keys (by
//! epoch) and the tenant's KEK (plus its dedup secret when the tenant opts out of
//! cross-tenant dedup).
//!
//! Until the key server exists (issue 5), `kiseki up` writes this material to a
//! development key file in its data directory (`keys.json`, mode 0600) and clients read
//! it from there. The file holds every secret in hex: it is a development stand-in, never
//! a deployment's key store (see `docs/decisions/0008-native-client.md`).

use std::path::Path;

use kiseki_pipeline::{DedupScope, SystemKey, SystemKeyring, TenantKek, TenantKeys, TenantSecret};
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// System keys and one tenant's keys.
pub struct KeyMaterial {
    /// System keys by epoch; new chunks are sealed under the newest.
    pub system: SystemKeyring,
    /// The tenant's KEK and dedup scope.
    pub tenant: TenantKeys,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field(
                "epochs",
                &self.system.keys().iter().map(SystemKey::epoch).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    system_keys: Vec<SystemKeyEntry>,
    tenant_kek: String,
    /// Present when the tenant opts out of cross-tenant dedup.
    tenant_secret: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SystemKeyEntry {
    epoch: u32,
    key: String,
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex32(text: &str) -> Result<[u8; 32], ClientError> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return Err(ClientError::Keys("a key is 64 hex digits".into()));
    }
    let mut key = [0u8; 32];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16)
            .map_err(|_| ClientError::Keys("a key is 64 hex digits".into()))?;
    }
    Ok(key)
}

fn random_key() -> [u8; 32] {
    rand::random()
}

impl KeyMaterial {
    /// Reads a key file written by [`KeyMaterial::create_file`].
    pub fn load(path: &Path) -> Result<KeyMaterial, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ClientError::Keys(format!("reading {}: {error}", path.display())))?;
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|error| ClientError::Keys(format!("{}: {error}", path.display())))?;
        let mut system = SystemKeyring::new();
        for entry in &file.system_keys {
            system.insert(SystemKey::new(entry.epoch, from_hex32(&entry.key)?));
        }
        if system.current().is_none() {
            return Err(ClientError::Keys(format!("{}: no system key", path.display())));
        }
        let kek = TenantKek::new(from_hex32(&file.tenant_kek)?);
        let tenant = match &file.tenant_secret {
            Some(secret) => TenantKeys::tenant_only(kek, TenantSecret::new(from_hex32(secret)?)),
            None => TenantKeys::cross_tenant(kek),
        };
        Ok(KeyMaterial { system, tenant })
    }

    /// Writes a new development key file at `path` (refusing to overwrite one): one
    /// system key of epoch 1 and a tenant KEK, all random.
    pub fn create_file(path: &Path) -> Result<(), ClientError> {
        let file = KeyFile {
            system_keys: vec![SystemKeyEntry {
                epoch: 1,
                key: to_hex(&random_key()),
            }],
            tenant_kek: to_hex(&random_key()),
            tenant_secret: None,
        };
        let text = serde_json::to_string_pretty(&file).map_err(|error| ClientError::Keys(error.to_string()))?;
        write_private(path, text.as_bytes())
    }

    /// Loads the key file at `path`, creating it first if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<KeyMaterial, ClientError> {
        if !path.exists() {
            Self::create_file(path)?;
        }
        Self::load(path)
    }

    /// Whether the tenant dedups across tenants.
    pub fn cross_tenant(&self) -> bool {
        matches!(self.tenant.dedup, DedupScope::CrossTenant)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| ClientError::Keys(format!("creating {}: {error}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| ClientError::Keys(format!("writing {}: {error}", path.display())))
}
