//! Inline small-file data (design §5): bytes of a small file travel inside the metadata
//! delta instead of a chunk, sealed under a tenant key before they enter the log.
//!
//! Sealed form: `version (1) ‖ salt (16) ‖ ciphertext ‖ tag (16)`, so
//! [`INLINE_SEAL_OVERHEAD_BYTES`] more than the plaintext.
//!
//! - key `= HKDF-SHA256(salt, ikm = tenant KEK, info = "kiseki/v1/inline" ‖ scope)`: a
//!   fresh random 128-bit salt per seal gives every seal its own key, so the fixed zero
//!   nonce never repeats under one key;
//! - AES-256-GCM, AAD `"kiseki/v1/inline" ‖ scope ‖ version ‖ plaintext length`;
//! - `scope` names where the bytes live (the namespace): a seal moved to another
//!   namespace does not open.
//!
//! Destroying the tenant KEK (crypto-shred) makes every inline seal unopenable, as it does
//! every wrapped chunk key. Runs on the client or gateway that writes or reads the file.

use aws_lc_rs::aead;
use zeroize::Zeroizing;

use crate::crypto::{hkdf_sha256, Aes256Gcm, TenantKek, KEY_BYTES, TAG_BYTES};
use crate::error::Error;

const INLINE_DOMAIN: &[u8] = b"kiseki/v1/inline";
const INLINE_VERSION: u8 = 1;
const SALT_BYTES: usize = 16;

/// Bytes a seal adds to its plaintext (version, salt and tag).
pub const INLINE_SEAL_OVERHEAD_BYTES: usize = 1 + SALT_BYTES + TAG_BYTES;

fn cipher(kek: &TenantKek, scope: &[u8], salt: &[u8]) -> Result<Aes256Gcm, Error> {
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    hkdf_sha256(salt, kek.secret()?, &[INLINE_DOMAIN, scope], key.as_mut())?;
    Aes256Gcm::new(key.as_ref())
}

fn aad(scope: &[u8], plaintext_bytes: usize) -> Vec<u8> {
    let mut aad = Vec::with_capacity(INLINE_DOMAIN.len() + scope.len() + 5);
    aad.extend_from_slice(INLINE_DOMAIN);
    aad.extend_from_slice(scope);
    aad.push(INLINE_VERSION);
    aad.extend_from_slice(&(plaintext_bytes as u32).to_le_bytes());
    aad
}

/// Seals `plaintext` (at most 4 GiB) for `scope` under the tenant KEK.
pub fn seal_inline(kek: &TenantKek, scope: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    if u32::try_from(plaintext.len()).is_err() {
        return Err(Error::InvalidParams {
            reason: "inline data is at most 4 GiB".into(),
        });
    }
    let mut sealed = vec![0u8; INLINE_SEAL_OVERHEAD_BYTES + plaintext.len()];
    sealed[0] = INLINE_VERSION;
    aws_lc_rs::rand::fill(&mut sealed[1..1 + SALT_BYTES]).map_err(|_| Error::Crypto("random source failed"))?;
    let cipher = cipher(kek, scope, &sealed[1..1 + SALT_BYTES])?;
    let (ciphertext, tag) = sealed[1 + SALT_BYTES..].split_at_mut(plaintext.len());
    cipher.seal(
        [0u8; aead::NONCE_LEN],
        &aad(scope, plaintext.len()),
        plaintext,
        ciphertext,
        tag,
    )?;
    Ok(sealed)
}

/// Opens a seal made by [`seal_inline`] for the same `scope` (`Corrupt` when malformed,
/// `Crypto` when it fails to authenticate, `KeyDestroyed` after a crypto-shred).
pub fn open_inline(kek: &TenantKek, scope: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    if sealed.len() < INLINE_SEAL_OVERHEAD_BYTES {
        return Err(Error::Corrupt {
            reason: "inline seal shorter than its overhead",
        });
    }
    if sealed[0] != INLINE_VERSION {
        return Err(Error::Corrupt {
            reason: "unknown inline seal version",
        });
    }
    let plaintext_bytes = sealed.len() - INLINE_SEAL_OVERHEAD_BYTES;
    let cipher = cipher(kek, scope, &sealed[1..1 + SALT_BYTES])?;
    let (ciphertext, tag) = sealed[1 + SALT_BYTES..].split_at(plaintext_bytes);
    let mut plaintext = vec![0u8; plaintext_bytes];
    cipher.open(
        [0u8; aead::NONCE_LEN],
        &aad(scope, plaintext_bytes),
        ciphertext,
        tag,
        &mut plaintext,
    )?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> TenantKek {
        TenantKek::new([byte; KEY_BYTES])
    }

    #[test]
    fn seals_open_to_their_plaintext() {
        for length in [0usize, 1, 15, 16, 17, 4096] {
            let plaintext: Vec<u8> = (0..length).map(|index| index as u8).collect();
            let sealed = seal_inline(&kek(1), b"ns-1", &plaintext).unwrap();
            assert_eq!(sealed.len(), length + INLINE_SEAL_OVERHEAD_BYTES);
            assert_eq!(open_inline(&kek(1), b"ns-1", &sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn equal_plaintexts_seal_differently() {
        let one = seal_inline(&kek(1), b"ns", b"same bytes").unwrap();
        let two = seal_inline(&kek(1), b"ns", b"same bytes").unwrap();
        assert_ne!(one, two, "each seal has its own salt, hence its own key");
    }

    #[test]
    fn a_wrong_key_scope_or_flipped_bit_does_not_open() {
        let sealed = seal_inline(&kek(1), b"ns-1", b"secret small file").unwrap();
        assert!(matches!(open_inline(&kek(2), b"ns-1", &sealed), Err(Error::Crypto(_))));
        assert!(matches!(open_inline(&kek(1), b"ns-2", &sealed), Err(Error::Crypto(_))));
        for index in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x40;
            assert!(open_inline(&kek(1), b"ns-1", &tampered).is_err(), "byte {index}");
        }
        let mut truncated = sealed.clone();
        truncated.pop();
        assert!(open_inline(&kek(1), b"ns-1", &truncated).is_err());
        assert!(matches!(
            open_inline(&kek(1), b"ns-1", &sealed[..10]),
            Err(Error::Corrupt { .. })
        ));
        let mut version = sealed;
        version[0] = 9;
        assert!(matches!(
            open_inline(&kek(1), b"ns-1", &version),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_destroyed_kek_opens_nothing() {
        let mut key = kek(1);
        let sealed = seal_inline(&key, b"ns", b"data").unwrap();
        key.destroy();
        assert!(matches!(open_inline(&key, b"ns", &sealed), Err(Error::KeyDestroyed)));
        assert!(matches!(seal_inline(&key, b"ns", b"data"), Err(Error::KeyDestroyed)));
    }
}
