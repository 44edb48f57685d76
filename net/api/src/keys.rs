//! The messages of the key server (`kiseki-keyserver`): system key epochs and tenant key
//! material, served over mutual TLS 1.3. Who may ask what is decided by the common name
//! of the caller's certificate (see `keymgr/keyserver`, `docs/keys.md`).
//!
//! Key bytes travel only inside TLS; the answers carrying them are dropped by callers
//! once the keys are in their zeroizing types.

// rkyv's derive generates resolver types whose fields carry no docs; every item written
// here is documented.
#![allow(missing_docs)]

use kiseki_net::rkyv::{Archive, Deserialize, Serialize};

/// Epochs, tenants and the provider: [`Empty`] → [`KeyStatusReply`].
pub const MSG_KEYS_STATUS: u16 = 0x0301;
/// The system keys of every live epoch: [`Empty`] → [`SystemKeysReply`].
pub const MSG_KEYS_SYSTEM: u16 = 0x0302;
/// One tenant's KEK and dedup secret: [`TenantRequest`] → [`TenantKeysReply`].
pub const MSG_KEYS_TENANT: u16 = 0x0303;
/// Creates a tenant's keys if it has none: [`TenantRequest`] → [`TenantKeyInfo`].
pub const MSG_KEYS_TENANT_CREATE: u16 = 0x0304;
/// Destroys a tenant's keys for good (crypto-shred): [`TenantRequest`] → [`TenantKeyInfo`].
pub const MSG_KEYS_TENANT_DESTROY: u16 = 0x0305;
/// Starts a new system key epoch: [`Empty`] → [`KeyStatusReply`].
pub const MSG_KEYS_ROTATE: u16 = 0x0306;
/// Every tenant known to the provider: [`Empty`] → [`TenantKeyList`].
pub const MSG_KEYS_TENANT_LIST: u16 = 0x0307;

/// A key of the gateways' own (such as the MAC key of NFS file handles), derived from a
/// secret the key server keeps: [`ServiceKeyRequest`] → [`ServiceKeyReply`].
pub const MSG_KEYS_SERVICE: u16 = 0x0308;

/// A request with no fields.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct Empty {}

/// One system key epoch, without its key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct EpochInfo {
    /// The epoch (from 1).
    pub epoch: u32,
    /// When it was generated (seconds since the Unix epoch).
    pub created_unix_s: u64,
}

/// What the key server holds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct KeyStatusReply {
    /// The epoch new chunks are sealed under.
    pub current_epoch: u32,
    /// Every live epoch, ascending.
    pub epochs: Vec<EpochInfo>,
    /// Tenants with live keys.
    pub tenants: u64,
    /// Tenants whose keys were destroyed.
    pub tenants_destroyed: u64,
    /// The tenant KMS provider (`internal`).
    pub provider: String,
}

/// One system key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct SystemKeyEntry {
    /// Its epoch.
    pub epoch: u32,
    /// The key.
    pub key: [u8; 32],
}

/// The system keys.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct SystemKeysReply {
    /// The epoch new chunks are sealed under.
    pub current_epoch: u32,
    /// Every live epoch's key, ascending by epoch.
    pub keys: Vec<SystemKeyEntry>,
}

/// Names a tenant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantRequest {
    /// The tenant's name.
    pub tenant: String,
}

/// A tenant's key material.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantKeysReply {
    /// The tenant.
    pub tenant: String,
    /// Its key-encryption key (wraps content keys).
    pub kek: [u8; 32],
    /// Its dedup secret (keys content for namespaces that opt out of cross-tenant dedup).
    pub dedup_secret: [u8; 32],
}

/// A tenant as the provider knows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantKeyInfo {
    /// The tenant.
    pub tenant: String,
    /// When its keys were made.
    pub created_unix_s: u64,
    /// When they were destroyed, if they were.
    pub destroyed_unix_s: Option<u64>,
}

/// Every tenant the provider knows.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct TenantKeyList {
    /// Ascending by name.
    pub tenants: Vec<TenantKeyInfo>,
}

/// Names a service key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ServiceKeyRequest {
    /// What the key is for (`nfs-file-handles`); each name gives another key.
    pub name: String,
}

/// A service key: the same for every gateway and across restarts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct ServiceKeyReply {
    /// The key.
    pub key: [u8; 32],
}
