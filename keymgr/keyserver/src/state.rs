//! What the key server keeps: system keys by epoch and, per tenant, the key material its
//! KMS provider sealed. The whole state is small (a few hundred bytes per tenant) and is
//! saved whole, encrypted, after every change ([`crate::store`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::{Secret32, SecretBytes};

/// The version of the state encoding.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// One system key epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemKeyRecord {
    /// The epoch (from 1, consecutive).
    pub epoch: u32,
    /// The key.
    pub key: Secret32,
    /// When it was generated (seconds since the Unix epoch).
    pub created_unix_s: u64,
}

/// One tenant's keys as the key server keeps them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The provider that sealed them (`internal`).
    pub provider: String,
    /// What the provider returned when it made them; empty once destroyed.
    pub sealed: SecretBytes,
    /// When they were made.
    pub created_unix_s: u64,
    /// When they were destroyed (crypto-shred), if they were.
    pub destroyed_unix_s: Option<u64>,
}

/// The key server's whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// [`STATE_FORMAT_VERSION`].
    pub format_version: u32,
    /// System keys, ascending by epoch; the last is current.
    pub system_keys: Vec<SystemKeyRecord>,
    /// Tenants by name.
    pub tenants: BTreeMap<String, TenantRecord>,
    /// The secret service keys are derived from (made at the first open of a state that
    /// has none).
    #[serde(default)]
    pub service_root: Option<Secret32>,
}

impl KeyState {
    /// A new state with one system key, epoch 1.
    pub fn new(first_key: Secret32, now_unix_s: u64) -> KeyState {
        KeyState {
            format_version: STATE_FORMAT_VERSION,
            system_keys: vec![SystemKeyRecord {
                epoch: 1,
                key: first_key,
                created_unix_s: now_unix_s,
            }],
            tenants: BTreeMap::new(),
            service_root: None,
        }
    }

    /// The epoch new chunks are sealed under.
    pub fn current_epoch(&self) -> u32 {
        self.system_keys.last().map_or(0, |record| record.epoch)
    }

    /// Checks what a decoded state must hold: a known version, at least one system key,
    /// epochs from 1 and consecutive, destroyed tenants with nothing sealed left.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != STATE_FORMAT_VERSION {
            return Err(format!(
                "state format {} is not {STATE_FORMAT_VERSION}",
                self.format_version
            ));
        }
        if self.system_keys.is_empty() {
            return Err("no system key".into());
        }
        for (index, record) in self.system_keys.iter().enumerate() {
            if u64::from(record.epoch) != index as u64 + 1 {
                return Err(format!("system key epochs are not 1, 2, …: found {}", record.epoch));
            }
        }
        for (name, tenant) in &self.tenants {
            if tenant.destroyed_unix_s.is_some() != tenant.sealed.is_empty() {
                return Err(format!(
                    "tenant {name}: destroyed keys must hold nothing and live ones something"
                ));
            }
        }
        Ok(())
    }
}
