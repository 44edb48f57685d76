//! A client profile: where a cluster's nodes, control plane and key server are, the TLS
//! identity to present, and the tenant and namespace to work in. `kiseki up` writes one
//! for the operator (`DATA_DIR/client.json`); the CLI, the FUSE mount and the gateway read
//! it, and every field can be overridden on their command lines.
//!
//! ```json
//! { "cluster": "127.0.0.1:9100", "control": "127.0.0.1:9200", "keyserver": "127.0.0.1:9300",
//!   "tls": { "ca": "kiseki-data/tls/ca.pem", "certificate": "kiseki-data/tls/admin.pem",
//!            "key": "kiseki-data/tls/admin.key" },
//!   "tenant": "default", "namespace": "default" }
//! ```
//!
//! [`open_namespace`] is how a client goes from a profile to a [`Namespace`]: the control
//! plane resolves the namespace (and refuses another tenant's), the key server hands out
//! the tenant's keys (and refuses another tenant's, or a shredded one's), and the
//! namespace's settings (durability, chunk size, dedup) become the write options.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kiseki_api::control::{DedupPolicy, NamespaceInfo};
use kiseki_pipeline::{ChunkingParams, SystemKey, SystemKeyring, TenantKek, TenantKeys, TenantSecret};
use serde::{Deserialize, Serialize};

use crate::services::{ControlClient, KeyServerClient, TlsIdentity};
use crate::{
    default_durability, parse_durability, Client, ClientError, ClientOptions, KeyMaterial, Namespace, NamespaceOptions,
};

/// Where a cluster's services are and who the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Any core of any node.
    pub cluster: SocketAddr,
    /// The control plane.
    pub control: SocketAddr,
    /// The key server.
    pub keyserver: SocketAddr,
    /// The certificate to present to both.
    pub tls: TlsIdentity,
    /// The tenant to work as.
    pub tenant: String,
    /// The namespace to work in.
    pub namespace: String,
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ClientError::Invalid(format!("profile {}: {error}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|error| ClientError::Invalid(format!("profile {}: {error}", path.display())))
    }

    /// Writes the profile (mode 0600: it names key files).
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = serde_json::to_string_pretty(self).map_err(|error| ClientError::Invalid(error.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(())
    }

    /// A connection to the control plane.
    pub async fn control(&self) -> Result<ControlClient, ClientError> {
        ControlClient::connect(self.control, &self.tls).await
    }

    /// A connection to the key server.
    pub async fn keyserver(&self) -> Result<KeyServerClient, ClientError> {
        KeyServerClient::connect(self.keyserver, &self.tls).await
    }
}

/// The system keys and `tenant`'s keys from the key server, with content keys derived as
/// `dedup` says.
pub async fn fetch_keys(
    keyserver: &KeyServerClient,
    tenant: &str,
    dedup: DedupPolicy,
) -> Result<KeyMaterial, ClientError> {
    let system = keyserver.system_keys().await?;
    let mut ring = SystemKeyring::new();
    for entry in &system.keys {
        ring.insert(SystemKey::new(entry.epoch, entry.key));
    }
    if ring.current().map(SystemKey::epoch) != Some(system.current_epoch) {
        return Err(ClientError::Keys(format!(
            "the key server's current epoch {} is not among its keys",
            system.current_epoch
        )));
    }
    let tenant_keys = keyserver.tenant_keys(tenant).await?;
    let kek = TenantKek::new(tenant_keys.kek);
    let tenant = match dedup {
        DedupPolicy::CrossTenant => TenantKeys::cross_tenant(kek),
        DedupPolicy::TenantOnly => TenantKeys::tenant_only(kek, TenantSecret::new(tenant_keys.dedup_secret)),
    };
    Ok(KeyMaterial { system: ring, tenant })
}

/// The write options a namespace's settings give on a cluster of `devices` devices.
pub fn namespace_options(info: &NamespaceInfo, devices: usize) -> Result<NamespaceOptions, ClientError> {
    let durability = match info.settings.durability.as_str() {
        "" => default_durability(devices),
        text => parse_durability(text).map_err(ClientError::Invalid)?,
    };
    let mut options = NamespaceOptions::with_durability(durability);
    if info.settings.chunk_bytes_avg != 0 {
        let average = info.settings.chunk_bytes_avg;
        options.write.chunking = ChunkingParams {
            chunk_bytes_min: average / 4,
            chunk_bytes_avg: average,
            chunk_bytes_max: average.saturating_mul(4),
            ..ChunkingParams::default()
        };
    }
    Ok(options)
}

/// Opens `tenant`'s namespace `name` as the profile's identity: resolved by the control
/// plane, keys from the key server, settings as write options. The caller may override
/// the durability (`durability`).
pub async fn open_namespace(
    profile: &Profile,
    tenant: &str,
    name: &str,
    durability: Option<kiseki_pipeline::Durability>,
) -> Result<(Namespace, NamespaceInfo), ClientError> {
    open_namespace_with(profile, tenant, name, durability, ClientOptions::default()).await
}

/// [`open_namespace`] through a client with `client_options` (a metadata cache, say).
pub async fn open_namespace_with(
    profile: &Profile,
    tenant: &str,
    name: &str,
    durability: Option<kiseki_pipeline::Durability>,
    client_options: ClientOptions,
) -> Result<(Namespace, NamespaceInfo), ClientError> {
    let control = profile.control().await?;
    let info = control.resolve_namespace(tenant, name).await?;
    let keyserver = profile.keyserver().await?;
    let keys = fetch_keys(&keyserver, tenant, info.settings.dedup).await?;
    let client = Client::connect(profile.cluster, client_options).await?;
    let mut options = namespace_options(&info, client.pool().devices().len())?;
    if let Some(durability) = durability {
        options.write.durability = durability;
    }
    let namespace = Namespace::new(client, info.shard, Arc::new(keys), options)?;
    Ok((namespace, info))
}
