//! Exports: every namespace the control plane knows is served at `/TENANT/NAMESPACE`,
//! with options (allowed clients, squashing, anonymous ids, read-only) from the exports
//! file: its `defaults`, overridden per export path.
//!
//! ```json
//! { "defaults": { "clients": ["127.0.0.0/8", "::1/128"], "squash": "root",
//!                 "anon_uid": 65534, "anon_gid": 65534, "read_only": false },
//!   "exports": { "/acme/archive": { "read_only": true, "squash": "all" } } }
//! ```
//!
//! The table is read from the control plane at start, every `refresh_ms`, and at once
//! (at most every [`REFRESH_INTERVAL_MIN`]) for a handle naming an export not known yet.
//! Requests read it through an [`ArcSwap`]; a refresh builds a new one and swaps it in.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kiseki_api::control::NamespaceInfo;
use kiseki_client::cache::{CacheConfig, CacheMode, ChunkCache};
use kiseki_client::profile::{fetch_keys, namespace_options};
use kiseki_client::{Client, ClientError, ControlClient, KeyServerClient, Namespace};
use serde::Deserialize;

use crate::GatewayError;

/// Fewest time between two refreshes asked for by unknown exports.
pub const REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(500);

/// Whose ids are mapped to the anonymous ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Squash {
    /// Nobody's: ids are taken as the client sends them (`no_root_squash`).
    None,
    /// Root's (uid 0, gid 0): the NFS default.
    Root,
    /// Everybody's.
    All,
}

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `A.B.C.D/N`, `::1/128`, or an address alone (all its bits).
    pub fn parse(text: &str) -> Result<Network, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| format!("{text}: not an address"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("{text}: prefix length 0 to {bits}"))?,
            None => bits,
        };
        Ok(Network { address, prefix })
    }

    /// Whether `address` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let mask = |bits: u32, width: u32| -> u128 {
            match bits {
                0 => 0,
                bits => (u128::MAX << (width - bits)) & (u128::MAX >> (128 - width)),
            }
        };
        match (self.address, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = mask(u32::from(self.prefix), 32);
                u128::from(u32::from(network)) & mask == u128::from(u32::from(address)) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = mask(u32::from(self.prefix), 128);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The options of one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Clients allowed (by source address).
    pub clients: Vec<Network>,
    /// Squashing.
    pub squash: Squash,
    /// The uid squashed callers get.
    pub anon_uid: u32,
    /// The gid squashed callers get.
    pub anon_gid: u32,
    /// Whether every change is refused (`ROFS`).
    pub read_only: bool,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            clients: vec![
                Network::parse("127.0.0.0/8").unwrap_or(Network {
                    address: IpAddr::from([127, 0, 0, 0]),
                    prefix: 8,
                }),
                Network {
                    address: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                    prefix: 128,
                },
            ],
            squash: Squash::Root,
            anon_uid: 65534,
            anon_gid: 65534,
            read_only: false,
        }
    }
}

/// Options as written in the file: every field may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsFile {
    clients: Option<Vec<String>>,
    squash: Option<Squash>,
    anon_uid: Option<u32>,
    anon_gid: Option<u32>,
    read_only: Option<bool>,
}

impl OptionsFile {
    fn apply(&self, mut options: ExportOptions) -> Result<ExportOptions, String> {
        if let Some(clients) = &self.clients {
            options.clients = clients
                .iter()
                .map(|client| Network::parse(client))
                .collect::<Result<_, _>>()?;
        }
        options.squash = self.squash.unwrap_or(options.squash);
        options.anon_uid = self.anon_uid.unwrap_or(options.anon_uid);
        options.anon_gid = self.anon_gid.unwrap_or(options.anon_gid);
        options.read_only = self.read_only.unwrap_or(options.read_only);
        Ok(options)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportsFile {
    #[serde(default)]
    defaults: OptionsFile,
    #[serde(default)]
    exports: BTreeMap<String, OptionsFile>,
}

/// The options of every export path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportsConfig {
    defaults: ExportOptions,
    by_path: BTreeMap<String, ExportOptions>,
}

impl ExportsConfig {
    /// Reads an exports file.
    pub fn load(path: &Path) -> Result<ExportsConfig, GatewayError> {
        let invalid = |reason: String| GatewayError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| invalid(error.to_string()))?;
        ExportsConfig::parse(&text).map_err(invalid)
    }

    /// Parses the JSON of an exports file.
    pub fn parse(text: &str) -> Result<ExportsConfig, String> {
        let file: ExportsFile = serde_json::from_str(text).map_err(|error| error.to_string())?;
        let defaults = file.defaults.apply(ExportOptions::default())?;
        let mut by_path = BTreeMap::new();
        for (path, options) in &file.exports {
            by_path.insert(path.clone(), options.apply(defaults.clone())?);
        }
        Ok(ExportsConfig { defaults, by_path })
    }

    /// The options of the export at `path`.
    pub fn options(&self, path: &str) -> ExportOptions {
        self.by_path.get(path).cloned().unwrap_or_else(|| self.defaults.clone())
    }
}

/// One export: a namespace opened with its tenant's keys.
#[derive(Debug)]
pub struct Export {
    /// Its id in file handles.
    pub id: u32,
    /// Its path, `/TENANT/NAMESPACE`.
    pub path: String,
    /// The namespace as the control plane describes it.
    pub info: NamespaceInfo,
    /// Changes when the namespace is deleted and made again.
    pub incarnation: u64,
    /// Its options.
    pub options: ExportOptions,
    /// The namespace.
    pub namespace: Namespace,
    /// Its decoded chunks for reads: one cache per export, so a chunk is served only to
    /// the export whose extent named it (tenants never share plaintext through it).
    pub cache: ChunkCache,
    /// Read-aheads running at once at most (more are skipped).
    pub read_aheads: Arc<tokio::sync::Semaphore>,
}

/// Read-aheads one export runs at once at most.
pub const READ_AHEADS_MAX: usize = 4;

impl Export {
    /// The file system id NFS attributes carry.
    pub fn fsid(&self) -> u64 {
        u64::from(self.id)
    }
}

/// The stable export id of a tenant's namespace.
pub fn export_id(tenant: &str, namespace: &str) -> u32 {
    let hash = blake3::hash(format!("kiseki/nfs/export/{tenant}/{namespace}").as_bytes());
    let bytes = hash.as_bytes();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).max(1)
}

/// The incarnation of a namespace: its identity and its creation.
pub fn incarnation(info: &NamespaceInfo) -> u64 {
    let text = format!("{}/{}/{}/{}", info.tenant, info.name, info.shard, info.created_unix_s);
    let hash = blake3::hash(text.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(bytes)
}

/// The exports at one moment.
#[derive(Debug, Default)]
pub struct ExportTable {
    /// By id.
    pub by_id: HashMap<u32, Arc<Export>>,
    /// By path.
    pub by_path: BTreeMap<String, Arc<Export>>,
    /// Namespaces not served, and why (logged once).
    unserved: HashMap<String, String>,
}

impl ExportTable {
    /// The export whose path is the longest prefix of `path` (on `/` boundaries), with
    /// the rest of the path.
    pub fn by_mount_path<'p>(&self, path: &'p str) -> Option<(Arc<Export>, &'p str)> {
        let trimmed = path.trim_end_matches('/');
        self.by_path
            .iter()
            .filter(|(export, _)| {
                trimmed == export.as_str()
                    || trimmed
                        .strip_prefix(export.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(export, _)| export.len())
            .map(|(export, found)| (Arc::clone(found), &trimmed[export.len()..]))
    }
}

/// Where and how much each export caches decoded chunks.
#[derive(Debug, Clone)]
pub struct ReadCacheSettings {
    /// The directory the caches' pools are made in (they hold nothing on disk: memory
    /// only).
    pub dir: std::path::PathBuf,
    /// Bytes of decoded chunks per export.
    pub bytes_per_export: u64,
}

/// The gateway's exports, kept up to date from the control plane.
#[derive(Debug)]
pub struct Exports {
    table: ArcSwap<ExportTable>,
    config: ExportsConfig,
    cache: ReadCacheSettings,
    control: ControlClient,
    keyserver: KeyServerClient,
    client: Client,
    last_refresh: tokio::sync::Mutex<Instant>,
}

impl Exports {
    /// The exports of the control plane's namespaces; the first refresh runs before this
    /// returns.
    pub async fn start(
        control: ControlClient,
        keyserver: KeyServerClient,
        client: Client,
        config: ExportsConfig,
        cache: ReadCacheSettings,
    ) -> Result<Exports, ClientError> {
        let exports = Exports {
            table: ArcSwap::from_pointee(ExportTable::default()),
            config,
            cache,
            control,
            keyserver,
            client,
            last_refresh: tokio::sync::Mutex::new(Instant::now()),
        };
        exports.refresh().await?;
        Ok(exports)
    }

    /// The current table.
    pub fn table(&self) -> Arc<ExportTable> {
        self.table.load_full()
    }

    /// The export with `id`; refreshes first when it is not known (rate-limited).
    pub async fn by_id(&self, id: u32) -> Option<Arc<Export>> {
        if let Some(found) = self.table().by_id.get(&id) {
            return Some(Arc::clone(found));
        }
        self.refresh_soon().await;
        self.table().by_id.get(&id).cloned()
    }

    /// The export of a MOUNT path; refreshes first when none matches (rate-limited).
    pub async fn by_mount_path(&self, path: &str) -> Option<(Arc<Export>, String)> {
        if let Some((export, rest)) = self.table().by_mount_path(path) {
            return Some((export, rest.to_owned()));
        }
        self.refresh_soon().await;
        self.table()
            .by_mount_path(path)
            .map(|(export, rest)| (export, rest.to_owned()))
    }

    async fn refresh_soon(&self) {
        let asked = Instant::now();
        {
            let last = self.last_refresh.lock().await;
            if last.elapsed() < REFRESH_INTERVAL_MIN || *last > asked {
                return;
            }
        }
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "refreshing exports failed");
        }
    }

    /// Reads every namespace from the control plane, opens the ones new to the table, and
    /// swaps the new table in.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let mut last = self.last_refresh.lock().await;
        let namespaces = self.control.namespaces(None, false).await?.namespaces;
        let current = self.table();
        let mut table = ExportTable::default();
        for info in namespaces {
            let path = format!("/{}/{}", info.tenant, info.name);
            let id = export_id(&info.tenant, &info.name);
            let known = current
                .by_path
                .get(&path)
                .filter(|export| export.incarnation == incarnation(&info))
                .cloned();
            let export = match known {
                Some(export) => export,
                None => match self.open(&info, &path, id).await {
                    Ok(export) => Arc::new(export),
                    Err(error) => {
                        let reason = error.to_string();
                        if current.unserved.get(&path) != Some(&reason) {
                            tracing::warn!(export = %path, %reason, "namespace not exported");
                        }
                        table.unserved.insert(path, reason);
                        continue;
                    }
                },
            };
            if table.by_id.contains_key(&id) {
                tracing::warn!(export = %path, id, "export id collides with another; not exported");
                continue;
            }
            table.by_id.insert(id, Arc::clone(&export));
            table.by_path.insert(path, export);
        }
        self.table.store(Arc::new(table));
        *last = Instant::now();
        Ok(())
    }

    async fn open(&self, info: &NamespaceInfo, path: &str, id: u32) -> Result<Export, ClientError> {
        let info = self.control.resolve_namespace(&info.tenant, &info.name).await?;
        let keys = fetch_keys(&self.keyserver, &info.tenant, info.settings.dedup).await?;
        let options = namespace_options(&info, self.client.pool().devices().len())?;
        let namespace = Namespace::new(self.client.clone(), info.shard, Arc::new(keys), options)?;
        let (cache, _) = ChunkCache::open(&CacheConfig {
            mode: CacheMode::Pinned,
            dir: self.cache.dir.clone(),
            l1_max_bytes: self.cache.bytes_per_export,
            l2_max_bytes: 0,
        })?;
        tracing::info!(export = %path, shard = info.shard, "exporting");
        Ok(Export {
            cache,
            read_aheads: Arc::new(tokio::sync::Semaphore::new(READ_AHEADS_MAX)),
            id,
            path: path.to_owned(),
            incarnation: incarnation(&info),
            options: self.config.options(path),
            info,
            namespace,
        })
    }

    /// Refreshes every `interval` until the process ends.
    pub async fn refresh_every(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "refreshing exports failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_addresses() {
        let loopback = Network::parse("127.0.0.0/8").unwrap();
        assert!(loopback.contains("127.1.2.3".parse().unwrap()));
        assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!loopback.contains("10.0.0.1".parse().unwrap()));
        assert!(Network::parse("10.1.2.3")
            .unwrap()
            .contains("10.1.2.3".parse().unwrap()));
        assert!(!Network::parse("10.1.2.3")
            .unwrap()
            .contains("10.1.2.4".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Network::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Network::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        for bad in ["300.1.1.1/8", "10.0.0.0/33", "x/1", "::1/129"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_exports_file_sets_defaults_and_overrides() {
        let config = ExportsConfig::parse(
            r#"{ "defaults": { "squash": "none", "clients": ["10.0.0.0/8"] },
                 "exports": { "/acme/archive": { "read_only": true, "squash": "all", "anon_uid": 7 } } }"#,
        )
        .unwrap();
        let archive = config.options("/acme/archive");
        assert!(archive.read_only);
        assert_eq!(
            (archive.squash, archive.anon_uid, archive.anon_gid),
            (Squash::All, 7, 65534)
        );
        assert_eq!(archive.clients, vec![Network::parse("10.0.0.0/8").unwrap()]);
        let other = config.options("/acme/other");
        assert!(!other.read_only && other.squash == Squash::None);
        assert!(ExportsConfig::parse(r#"{ "defaults": { "squash": "sometimes" } }"#).is_err());
        assert!(ExportsConfig::parse(r#"{ "defaults": { "clients": ["nonsense"] } }"#).is_err());
        assert!(ExportsConfig::parse(r#"{ "unknown": 1 }"#).is_err());
        assert_eq!(ExportsConfig::parse("{}").unwrap().options("/x").squash, Squash::Root);
    }

    #[test]
    fn mount_paths_find_the_longest_export() {
        let table = ExportTable::default();
        assert!(table.by_mount_path("/a/b").is_none());
        assert_eq!(export_id("a", "b"), export_id("a", "b"));
        assert_ne!(export_id("a", "b"), export_id("a", "c"));
    }
}
