//! Tenants the gateway serves: for each, its S3 access key and secret, its namespace and
//! its key material. Until the control plane and key server exist (issue 5), they come
//! from a JSON file (`kiseki up` writes `DATA_DIR/gateway.json`, mode 0600):
//!
//! ```json
//! { "tenants": [ { "name": "default", "access_key": "KSK…", "secret_key": "…",
//!                  "namespace": 1, "keys": "kiseki-data/keys.json" } ] }
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// The gateway's tenants.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// Every tenant, each with its own namespace.
    pub tenants: Vec<TenantConfig>,
}

/// One tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantConfig {
    /// Its name (shown in logs; owner of its buckets).
    pub name: String,
    /// The S3 access key id.
    pub access_key: String,
    /// The S3 secret access key.
    pub secret_key: String,
    /// Its namespace (for now a shard of the cluster map, decision 0007); no two tenants
    /// share one.
    pub namespace: u64,
    /// Its key file (system keys and the tenant KEK, `kiseki_client::KeyMaterial`).
    pub keys: PathBuf,
}

impl GatewayConfig {
    /// Reads and checks a tenants file.
    pub fn load(path: &Path) -> Result<GatewayConfig, GatewayError> {
        let invalid = |reason: String| GatewayError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| invalid(error.to_string()))?;
        let config: GatewayConfig = serde_json::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Writes the file (mode 0600: it holds secrets).
    pub fn save(&self, path: &Path) -> Result<(), GatewayError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |error: std::io::Error| GatewayError::Config {
            path: path.display().to_string(),
            reason: error.to_string(),
        };
        let text = serde_json::to_string_pretty(self).map_err(|error| GatewayError::Config {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        file.write_all(text.as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)
    }

    /// Checks that names, access keys and namespaces are unique and present.
    pub fn validate(&self) -> Result<(), String> {
        if self.tenants.is_empty() {
            return Err("no tenants".into());
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        let mut namespaces = HashSet::new();
        for tenant in &self.tenants {
            if tenant.name.is_empty() || tenant.access_key.is_empty() || tenant.secret_key.is_empty() {
                return Err("a tenant needs a name, an access key and a secret key".into());
            }
            if !names.insert(&tenant.name) {
                return Err(format!("tenant {} appears twice", tenant.name));
            }
            if !keys.insert(&tenant.access_key) {
                return Err(format!("access key of {} is used twice", tenant.name));
            }
            if !namespaces.insert(tenant.namespace) {
                return Err(format!("namespace {} is given to two tenants", tenant.namespace));
            }
        }
        Ok(())
    }
}

/// A new random access key id (20 characters, as AWS's) and secret (40).
pub fn new_credentials() -> (String, String) {
    kiseki_client::services::new_access_key()
}
