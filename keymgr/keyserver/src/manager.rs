//! The key server's logic, without the network: system key epochs and tenants' keys over
//! a [`KeyStore`] and a [`KmsProvider`]. Every change is made on a copy of the state,
//! saved, and only then kept and answered (I-K5: nothing is handed out that a restart
//! would not find again).

use kiseki_api::keys::{EpochInfo, KeyStatusReply, TenantKeyInfo};

use crate::provider::{KmsProvider, TenantKeyMaterial};
use crate::secret::Secret32;
use crate::state::{KeyState, TenantRecord};
use crate::store::KeyStore;
use crate::KeyError;

/// System key epochs a key server keeps at most (rotation past it is refused).
pub const EPOCHS_MAX: usize = 4096;
/// Tenants a key server keeps at most (destroyed ones included).
pub const TENANTS_MAX: usize = 100_000;

/// The key server's state and where it is saved.
pub struct KeyManager {
    state: KeyState,
    store: Box<dyn KeyStore>,
    provider: Box<dyn KmsProvider>,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("current_epoch", &self.state.current_epoch())
            .field("tenants", &self.state.tenants.len())
            .field("store", &self.store.describe())
            .field("provider", &self.provider.name())
            .finish()
    }
}

impl KeyManager {
    /// Creates the first state (one system key, epoch 1) and saves it; refused when the
    /// store holds one already.
    pub fn initialize(
        mut store: Box<dyn KeyStore>,
        provider: Box<dyn KmsProvider>,
        now_unix_s: u64,
    ) -> Result<KeyManager, KeyError> {
        if store.load()?.is_some() {
            return Err(KeyError::Invalid(format!(
                "{} holds a key state already; not replacing it",
                store.describe()
            )));
        }
        let mut state = KeyState::new(Secret32::random()?, now_unix_s);
        state.service_root = Some(Secret32::random()?);
        store.save(&state)?;
        Ok(KeyManager { state, store, provider })
    }

    /// Opens the saved state; `NotInitialized` when there is none.
    pub fn open(store: Box<dyn KeyStore>, provider: Box<dyn KmsProvider>) -> Result<KeyManager, KeyError> {
        let state = store.load()?.ok_or_else(|| KeyError::NotInitialized {
            store: store.describe(),
        })?;
        let mut manager = KeyManager { state, store, provider };
        if manager.state.service_root.is_none() {
            let root = Secret32::random()?;
            manager.change(|state, _| {
                state.service_root = Some(root);
                Ok(())
            })?;
        }
        Ok(manager)
    }

    /// Applies `change` to a copy of the state, saves the copy, then keeps it.
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut KeyState, &mut dyn KmsProvider) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let mut next = self.state.clone();
        let result = change(&mut next, self.provider.as_mut())?;
        assert!(next.validate().is_ok(), "I-K5: a change left an invalid key state");
        self.store.save(&next)?;
        self.state = next;
        Ok(result)
    }

    /// Epochs and tenant counts.
    pub fn status(&self) -> KeyStatusReply {
        let destroyed = self
            .state
            .tenants
            .values()
            .filter(|tenant| tenant.destroyed_unix_s.is_some())
            .count() as u64;
        KeyStatusReply {
            current_epoch: self.state.current_epoch(),
            epochs: self
                .state
                .system_keys
                .iter()
                .map(|record| EpochInfo {
                    epoch: record.epoch,
                    created_unix_s: record.created_unix_s,
                })
                .collect(),
            tenants: self.state.tenants.len() as u64 - destroyed,
            tenants_destroyed: destroyed,
            provider: self.provider.name().to_owned(),
        }
    }

    /// Every system key with its epoch, ascending.
    pub fn system_keys(&self) -> Vec<(u32, Secret32)> {
        self.state
            .system_keys
            .iter()
            .map(|record| (record.epoch, record.key.clone()))
            .collect()
    }

    /// The epoch new chunks are sealed under.
    pub fn current_epoch(&self) -> u32 {
        self.state.current_epoch()
    }

    /// `tenant`'s key material: `NoTenant` if it has none, `Destroyed` after a shred.
    pub fn tenant_keys(&self, tenant: &str) -> Result<TenantKeyMaterial, KeyError> {
        let record = self
            .state
            .tenants
            .get(tenant)
            .ok_or_else(|| KeyError::NoTenant(tenant.to_owned()))?;
        if record.destroyed_unix_s.is_some() {
            return Err(KeyError::Destroyed {
                tenant: tenant.to_owned(),
            });
        }
        if record.provider != self.provider.name() {
            return Err(KeyError::Invalid(format!(
                "tenant {tenant}'s keys were sealed by provider {}, this server runs {}",
                record.provider,
                self.provider.name()
            )));
        }
        self.provider.open(tenant, &record.sealed)
    }

    /// Makes `tenant`'s keys unless it has live ones (then returns them as they are, with
    /// `false`). A destroyed tenant's name is not reused: `Destroyed`.
    pub fn create_tenant(&mut self, tenant: &str, now_unix_s: u64) -> Result<(TenantKeyInfo, bool), KeyError> {
        if let Some(record) = self.state.tenants.get(tenant) {
            if record.destroyed_unix_s.is_some() {
                return Err(KeyError::Destroyed {
                    tenant: tenant.to_owned(),
                });
            }
            return Ok((info(tenant, record), false));
        }
        if self.state.tenants.len() >= TENANTS_MAX {
            return Err(KeyError::Invalid(format!(
                "a key server keeps at most {TENANTS_MAX} tenants"
            )));
        }
        let provider_name = self.provider.name().to_owned();
        self.change(|state, provider| {
            let record = TenantRecord {
                provider: provider_name,
                sealed: provider.create(tenant)?,
                created_unix_s: now_unix_s,
                destroyed_unix_s: None,
            };
            let answer = info(tenant, &record);
            state.tenants.insert(tenant.to_owned(), record);
            Ok((answer, true))
        })
    }

    /// Destroys `tenant`'s keys for good (crypto-shred); the saved state no longer holds
    /// them once this returns. Destroying destroyed keys again is a no-op.
    pub fn destroy_tenant(&mut self, tenant: &str, now_unix_s: u64) -> Result<TenantKeyInfo, KeyError> {
        let record = self
            .state
            .tenants
            .get(tenant)
            .ok_or_else(|| KeyError::NoTenant(tenant.to_owned()))?;
        if record.destroyed_unix_s.is_some() {
            return Ok(info(tenant, record));
        }
        self.change(|state, provider| {
            let record = state
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| KeyError::NoTenant(tenant.to_owned()))?;
            provider.destroy(tenant, &mut record.sealed)?;
            record.sealed.wipe();
            record.destroyed_unix_s = Some(now_unix_s);
            Ok(info(tenant, record))
        })
    }

    /// Starts a new system key epoch; new chunks are sealed under it, older epochs stay
    /// readable.
    pub fn rotate(&mut self, now_unix_s: u64) -> Result<u32, KeyError> {
        if self.state.system_keys.len() >= EPOCHS_MAX {
            return Err(KeyError::Invalid(format!(
                "a key server keeps at most {EPOCHS_MAX} epochs"
            )));
        }
        let key = Secret32::random()?;
        self.change(|state, _| {
            let epoch = state.current_epoch() + 1;
            state.system_keys.push(crate::state::SystemKeyRecord {
                epoch,
                key,
                created_unix_s: now_unix_s,
            });
            Ok(epoch)
        })
    }

    /// The service key named `name`: HKDF-SHA256 of the service root with `name` as info,
    /// the same for every gateway and across restarts.
    pub fn service_key(&self, name: &str) -> Result<Secret32, KeyError> {
        use aws_lc_rs::hkdf;
        let root = self
            .state
            .service_root
            .as_ref()
            .ok_or(KeyError::Crypto("no service root"))?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"kiseki/v1/service").extract(root.expose());
        let info = [name.as_bytes()];
        let okm = prk
            .expand(&info, hkdf::HKDF_SHA256)
            .map_err(|_| KeyError::Crypto("service key derivation failed"))?;
        let mut key = [0u8; crate::KEY_BYTES];
        okm.fill(&mut key)
            .map_err(|_| KeyError::Crypto("service key derivation failed"))?;
        let secret = Secret32::new(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(secret)
    }

    /// Every tenant, ascending by name.
    pub fn tenants(&self) -> Vec<TenantKeyInfo> {
        self.state
            .tenants
            .iter()
            .map(|(name, record)| info(name, record))
            .collect()
    }
}

fn info(tenant: &str, record: &TenantRecord) -> TenantKeyInfo {
    TenantKeyInfo {
        tenant: tenant.to_owned(),
        created_unix_s: record.created_unix_s,
        destroyed_unix_s: record.destroyed_unix_s,
    }
}
