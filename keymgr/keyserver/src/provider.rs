//! Tenant KEKs through a KMS provider (design §10: internal, Vault Transit, AWS KMS,
//! Azure Key Vault, GCP KMS behind one trait).
//!
//! Clients wrap and unwrap a content key per chunk, far too often to call a remote KMS
//! each time, so a tenant's key material (its KEK and dedup secret) is handed to its
//! clients over mutual TLS. A provider decides how that material is kept between uses:
//! it makes it ([`KmsProvider::create`]) and returns an opaque sealed form the key server
//! stores; it opens the sealed form on demand ([`KmsProvider::open`]); and it destroys
//! it for good ([`KmsProvider::destroy`], crypto-shred). An external provider would seal
//! with a key that never leaves the KMS and destroy by deleting that key there, so a
//! destroyed tenant stays destroyed even against a copy of the key server's state.
//!
//! [`InternalProvider`] keeps the material itself: sealed = `KEK ‖ dedup secret`, kept
//! encrypted at rest by the key store; destroy zeroizes it.

use crate::secret::{Secret32, SecretBytes, KEY_BYTES};
use crate::KeyError;

/// A tenant's key material, as handed to its clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantKeyMaterial {
    /// Wraps content keys.
    pub kek: Secret32,
    /// Keys content for namespaces that opt out of cross-tenant dedup.
    pub dedup_secret: Secret32,
}

/// A tenant KMS provider. Every implementation passes the conformance suite in
/// `tests/provider.rs`.
pub trait KmsProvider: Send {
    /// The provider's name, stored with each tenant it sealed.
    fn name(&self) -> &'static str;
    /// Makes new key material for `tenant`; returns its sealed form.
    fn create(&mut self, tenant: &str) -> Result<SecretBytes, KeyError>;
    /// Opens a sealed form made by [`KmsProvider::create`] for `tenant`.
    fn open(&self, tenant: &str, sealed: &SecretBytes) -> Result<TenantKeyMaterial, KeyError>;
    /// Destroys `tenant`'s key material for good; `sealed` is wiped.
    fn destroy(&mut self, tenant: &str, sealed: &mut SecretBytes) -> Result<(), KeyError>;
}

/// The built-in provider: key material kept by the key server itself.
#[derive(Debug, Default)]
pub struct InternalProvider;

impl KmsProvider for InternalProvider {
    fn name(&self) -> &'static str {
        "internal"
    }

    fn create(&mut self, _tenant: &str) -> Result<SecretBytes, KeyError> {
        let kek = Secret32::random()?;
        let secret = Secret32::random()?;
        let mut sealed = Vec::with_capacity(2 * KEY_BYTES);
        sealed.extend_from_slice(kek.expose());
        sealed.extend_from_slice(secret.expose());
        Ok(SecretBytes::new(sealed))
    }

    fn open(&self, tenant: &str, sealed: &SecretBytes) -> Result<TenantKeyMaterial, KeyError> {
        let bytes = sealed.expose();
        if bytes.is_empty() {
            return Err(KeyError::Destroyed {
                tenant: tenant.to_owned(),
            });
        }
        if bytes.len() != 2 * KEY_BYTES {
            return Err(KeyError::Invalid(format!(
                "tenant {tenant}: sealed keys of {} bytes, not {}",
                bytes.len(),
                2 * KEY_BYTES
            )));
        }
        let mut kek = [0u8; KEY_BYTES];
        let mut secret = [0u8; KEY_BYTES];
        kek.copy_from_slice(&bytes[..KEY_BYTES]);
        secret.copy_from_slice(&bytes[KEY_BYTES..]);
        let material = TenantKeyMaterial {
            kek: Secret32::new(kek),
            dedup_secret: Secret32::new(secret),
        };
        zeroize::Zeroize::zeroize(&mut kek);
        zeroize::Zeroize::zeroize(&mut secret);
        Ok(material)
    }

    fn destroy(&mut self, _tenant: &str, sealed: &mut SecretBytes) -> Result<(), KeyError> {
        sealed.wipe();
        Ok(())
    }
}
