//! The messages of the control plane (`kiseki-control`): tenants, their namespaces with
//! durability, chunking, dedup and quotas, S3 access keys, and maintenance (a read-only
//! cluster). Served over mutual TLS 1.3; who may ask what is decided by the common name
//! of the caller's certificate (see `control/control`, `docs/control.md`).

// rkyv's derive generates resolver types whose fields carry no docs; every item written
// here is documented.
#![allow(missing_docs)]

use kiseki_net::rkyv::{Archive, Deserialize, Serialize};

/// Counts and the system shard: [`crate::keys::Empty`] → [`ControlStatusReply`].
pub const MSG_CONTROL_STATUS: u16 = 0x0401;
/// Creates a tenant and its keys: [`TenantCreateRequest`] → [`TenantInfo`].
pub const MSG_TENANT_CREATE: u16 = 0x0410;
/// Every tenant: [`crate::keys::Empty`] → [`TenantList`].
pub const MSG_TENANT_LIST: u16 = 0x0411;
/// Deletes a tenant with no namespaces left: [`TenantRef`] → [`TenantInfo`].
pub const MSG_TENANT_DELETE: u16 = 0x0412;
/// Crypto-shreds a tenant (its KEK destroyed, its access keys removed): [`TenantRef`] →
/// [`TenantInfo`].
pub const MSG_TENANT_SHRED: u16 = 0x0413;
/// Creates a namespace of a tenant on a free shard: [`NamespaceCreateRequest`] →
/// [`NamespaceInfo`].
pub const MSG_NAMESPACE_CREATE: u16 = 0x0420;
/// Namespaces, of one tenant or all: [`NamespaceListRequest`] → [`NamespaceList`].
pub const MSG_NAMESPACE_LIST: u16 = 0x0421;
/// One namespace, with its shard and settings: [`NamespaceRef`] → [`NamespaceInfo`].
pub const MSG_NAMESPACE_RESOLVE: u16 = 0x0422;
/// Deletes an empty namespace, freeing its shard: [`NamespaceRef`] → [`NamespaceInfo`].
pub const MSG_NAMESPACE_DELETE: u16 = 0x0423;
/// Sets a namespace's quota: [`QuotaSetRequest`] → [`NamespaceInfo`].
pub const MSG_QUOTA_SET: u16 = 0x0424;
/// Makes an S3 access key for a tenant: [`TenantRef`] → [`AccessKeyInfo`] (with the secret).
pub const MSG_ACCESS_KEY_CREATE: u16 = 0x0430;
/// A tenant's access keys, without secrets: [`TenantRef`] → [`AccessKeyList`].
pub const MSG_ACCESS_KEY_LIST: u16 = 0x0431;
/// Removes an access key: [`AccessKeyRef`] → [`AccessKeyInfo`] (without the secret).
pub const MSG_ACCESS_KEY_DELETE: u16 = 0x0432;
/// An access key's tenant and secret, for gateways: [`AccessKeyRef`] → [`AccessKeyInfo`].
pub const MSG_ACCESS_KEY_LOOKUP: u16 = 0x0433;
/// Every live tenant's access keys with secrets, for gateways: [`crate::keys::Empty`] →
/// [`AccessKeyList`].
pub const MSG_ACCESS_KEY_DIRECTORY: u16 = 0x0434;
/// Turns maintenance (read-only cluster) on or off: [`MaintenanceRequest`] →
/// [`MaintenanceReply`].
pub const MSG_MAINTENANCE_SET: u16 = 0x0440;
/// Whether each shard is read-only: [`crate::keys::Empty`] → [`MaintenanceReply`].
pub const MSG_MAINTENANCE_STATUS: u16 = 0x0441;

/// How a namespace's content keys are derived.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub enum DedupPolicy {
    /// `K = H(plaintext)`: identical chunks of any tenant are stored once.
    CrossTenant,
    /// `K = MAC(tenant secret, plaintext)`: chunks are shared only within the tenant.
    TenantOnly,
}

/// A tenant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantInfo {
    /// Its name.
    pub name: String,
    /// When it was created (seconds since the Unix epoch).
    pub created_unix_s: u64,
    /// When it was crypto-shredded, if it was.
    pub shredded_unix_s: Option<u64>,
    /// Its namespaces.
    pub namespaces: u32,
    /// Its S3 access keys.
    pub access_keys: u32,
}

/// Creates a tenant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantCreateRequest {
    /// 1 to 63 of `a-z 0-9 -`, starting with a letter or digit.
    pub name: String,
}

/// Names a tenant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantRef {
    /// The tenant's name.
    pub name: String,
}

/// Every tenant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantList {
    /// Ascending by name.
    pub tenants: Vec<TenantInfo>,
}

/// A namespace's settings, fixed at creation except the quota.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct NamespaceSettings {
    /// Durability of new chunks: `Nx` copies or `K+M` erasure coding; empty: by the
    /// cluster's devices (4+2 on six or more).
    pub durability: String,
    /// Target average chunk size in bytes (FastCDC; min a quarter, max four times); 0:
    /// the default (1 MiB).
    pub chunk_bytes_avg: u32,
    /// Content key derivation.
    pub dedup: DedupPolicy,
    /// Bytes stored (file extents, inline data and multipart parts, before redundancy)
    /// at most; `None`: no limit.
    pub quota_bytes_max: Option<u64>,
    /// Inodes (files, directories, links, …) at most; `None`: no limit.
    pub quota_files_max: Option<u64>,
}

/// Creates a namespace.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct NamespaceCreateRequest {
    /// Its tenant.
    pub tenant: String,
    /// Its name, unique within the tenant (as a tenant name).
    pub name: String,
    /// Its settings.
    pub settings: NamespaceSettings,
}

/// A namespace's usage, as its shard counts it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct NamespaceUsage {
    /// Bytes stored (as the quota counts them).
    pub bytes: u64,
    /// Inodes (as the quota counts them).
    pub files: u64,
    /// Whether the shard is read-only (maintenance).
    pub read_only: bool,
}

/// A namespace.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct NamespaceInfo {
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// The shard of the cluster map that holds it.
    pub shard: u64,
    /// Its settings.
    pub settings: NamespaceSettings,
    /// When it was created.
    pub created_unix_s: u64,
    /// Its usage, when its shard answered.
    pub usage: Option<NamespaceUsage>,
}

/// Names a namespace.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct NamespaceRef {
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
}

/// Lists namespaces.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct NamespaceListRequest {
    /// Only this tenant's; `None`: every tenant's (administrators only).
    pub tenant: Option<String>,
    /// Ask each namespace's shard for its usage.
    pub usage: bool,
}

/// Namespaces.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct NamespaceList {
    /// Ascending by tenant, then name.
    pub namespaces: Vec<NamespaceInfo>,
}

/// Sets a namespace's quota (enforced by its shard from the moment this returns).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct QuotaSetRequest {
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// Bytes at most; `None`: no limit.
    pub bytes_max: Option<u64>,
    /// Inodes at most; `None`: no limit.
    pub files_max: Option<u64>,
}

/// An S3 access key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct AccessKeyInfo {
    /// The access key id.
    pub access_key: String,
    /// Its tenant.
    pub tenant: String,
    /// The secret; empty where it is not shown (lists, deletes).
    pub secret_key: String,
    /// When it was made.
    pub created_unix_s: u64,
}

/// Names an access key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct AccessKeyRef {
    /// The access key id.
    pub access_key: String,
}

/// Access keys.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct AccessKeyList {
    /// Ascending by access key id, secrets empty.
    pub keys: Vec<AccessKeyInfo>,
}

/// Turns maintenance on (`read_only`) or off.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct MaintenanceRequest {
    /// Whether every shard refuses changes.
    pub read_only: bool,
}

/// One shard's maintenance state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ShardMaintenance {
    /// The shard.
    pub shard: u64,
    /// Whether it refuses changes; `None` when it did not answer.
    pub read_only: Option<bool>,
}

/// Every shard's maintenance state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct MaintenanceReply {
    /// Ascending by shard.
    pub shards: Vec<ShardMaintenance>,
}

/// The control plane's counts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ControlStatusReply {
    /// Tenants (shredded ones included).
    pub tenants: u64,
    /// Namespaces.
    pub namespaces: u64,
    /// S3 access keys.
    pub access_keys: u64,
    /// The shard holding the control plane's own records.
    pub system_shard: u64,
    /// Shards no namespace holds yet.
    pub shards_free: u64,
}
