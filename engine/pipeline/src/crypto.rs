//! Chunk identity and convergent envelope encryption (design §5).
//!
//! - content key `K = H(plaintext)`, or `K = MAC(tenant_secret, plaintext)` for a tenant
//!   that opts out of cross-tenant dedup ([`DedupScope`]);
//! - locator `L = H("kiseki/v1/locator" ‖ K)` ([`locator_of`]);
//! - data key `DEK = HKDF-SHA256(salt = K, ikm = system_key[epoch],
//!   info = "kiseki/v1/chunk" ‖ epoch)`;
//! - AES-256-GCM under the DEK, nonce `L[0..12]`, AAD `"kiseki/v1/chunk" ‖ L ‖ epoch`; the
//!   DEK is unique per (content, epoch), so each key seals exactly one plaintext and the
//!   derived nonce is never reused with different data;
//! - `K` wrapped under the tenant KEK with AES-256 key wrap (RFC 3394, [`WrappedKey`]),
//!   stored per chunk in the file's extent map. Unwrapping checks `H(domain ‖ K) == L`, so
//!   a wrapped key moved to another extent is rejected.
//!
//! H is a cluster setting ([`HashAlgorithm`]): BLAKE3 (the `blake3` crate) or SHA-256; the
//! MAC follows H (keyed BLAKE3 or HMAC-SHA256). AEAD, HKDF, HMAC, SHA-256 and key wrap go
//! through aws-lc-rs (its FIPS module with the `fips` feature).
//!
//! Key material (`K`, system keys, KEKs, tenant secrets) lives in types that zeroize on
//! drop and print `<redacted>` in `Debug`. A DEK only exists inside aws-lc-rs key objects.

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrap, AES_256};
use aws_lc_rs::{constant_time, digest, hkdf, hmac};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::Error;
use crate::Locator;

/// Bytes of every key in this module (AES-256, content keys, system keys, KEKs).
pub const KEY_BYTES: usize = 32;
/// Bytes of an AES-256-GCM tag; every sealed chunk is its plaintext plus this.
pub const TAG_BYTES: usize = 16;
/// Bytes of a wrapped content key (RFC 3394 of 32 bytes).
pub const WRAPPED_KEY_BYTES: usize = KEY_BYTES + 8;

const LOCATOR_DOMAIN: &[u8] = b"kiseki/v1/locator";
const CHUNK_DOMAIN: &[u8] = b"kiseki/v1/chunk";

/// The content hash H, a cluster-wide setting.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum HashAlgorithm {
    /// BLAKE3 (default): the fast choice.
    #[default]
    Blake3,
    /// SHA-256 through aws-lc-rs: the FIPS-mode choice.
    Sha256,
}

impl HashAlgorithm {
    /// Wire id in fragment headers.
    pub fn id(self) -> u8 {
        match self {
            HashAlgorithm::Blake3 => 1,
            HashAlgorithm::Sha256 => 2,
        }
    }

    /// Inverse of [`HashAlgorithm::id`].
    pub fn from_id(id: u8) -> Option<HashAlgorithm> {
        match id {
            1 => Some(HashAlgorithm::Blake3),
            2 => Some(HashAlgorithm::Sha256),
            _ => None,
        }
    }

    /// H over the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> [u8; 32] {
        let mut out = [0u8; 32];
        match self {
            HashAlgorithm::Blake3 => {
                let mut hasher = blake3::Hasher::new();
                for part in parts {
                    hasher.update(part);
                }
                out.copy_from_slice(hasher.finalize().as_bytes());
            }
            HashAlgorithm::Sha256 => {
                let mut context = digest::Context::new(&digest::SHA256);
                for part in parts {
                    context.update(part);
                }
                out.copy_from_slice(context.finish().as_ref());
            }
        }
        out
    }

    /// The MAC that follows H: keyed BLAKE3, or HMAC-SHA256.
    pub fn mac(self, key: &[u8; KEY_BYTES], data: &[u8]) -> [u8; 32] {
        match self {
            HashAlgorithm::Blake3 => *blake3::keyed_hash(key, data).as_bytes(),
            HashAlgorithm::Sha256 => hmac_sha256(key, data),
        }
    }
}

/// HMAC-SHA256 through aws-lc-rs.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&key, data).as_ref());
    out
}

/// Output length for HKDF expansion into raw bytes.
struct OkmBytes(usize);

impl hkdf::KeyType for OkmBytes {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (RFC 5869) through aws-lc-rs into `out` (at most 255 * 32 bytes).
pub(crate) fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), Error> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    prk.expand(info, OkmBytes(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| Error::Crypto("HKDF expansion failed"))
}

macro_rules! redacted_debug {
    ($type:ty) => {
        impl fmt::Debug for $type {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(concat!(stringify!($type), "(<redacted>)"))
            }
        }
    };
}

/// A chunk's content key `K`. Never leaves this crate except wrapped.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct ContentKey([u8; KEY_BYTES]);
redacted_debug!(ContentKey);

impl ContentKey {
    /// Constant-time equality.
    fn matches(&self, other: &[u8; KEY_BYTES]) -> bool {
        constant_time::verify_slices_are_equal(&self.0, other).is_ok()
    }
}

/// How a tenant's content keys are derived.
#[derive(Debug)]
pub enum DedupScope {
    /// `K = H(plaintext)`: identical chunks of all such tenants share one locator.
    CrossTenant,
    /// `K = MAC(tenant_secret, plaintext)`: dedup only within the tenant.
    TenantOnly(TenantSecret),
}

/// A tenant's secret for keyed content keys.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TenantSecret([u8; KEY_BYTES]);
redacted_debug!(TenantSecret);

impl TenantSecret {
    /// From raw bytes (from the tenant's KMS).
    pub fn new(bytes: [u8; KEY_BYTES]) -> TenantSecret {
        TenantSecret(bytes)
    }
}

/// Computes `K` for `plaintext`.
pub fn content_key(hash: HashAlgorithm, scope: &DedupScope, plaintext: &[u8]) -> ContentKey {
    match scope {
        DedupScope::CrossTenant => ContentKey(hash.digest(&[plaintext])),
        DedupScope::TenantOnly(secret) => ContentKey(hash.mac(&secret.0, plaintext)),
    }
}

/// The locator of a content key: `L = H("kiseki/v1/locator" ‖ K)`.
pub fn locator_of(hash: HashAlgorithm, key: &ContentKey) -> Locator {
    Locator(hash.digest(&[LOCATOR_DOMAIN, &key.0]))
}

/// A system key of one epoch (from the key server).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SystemKey {
    #[zeroize(skip)]
    epoch: u32,
    key: [u8; KEY_BYTES],
}
redacted_debug!(SystemKey);

impl SystemKey {
    /// A system key from raw bytes.
    pub fn new(epoch: u32, key: [u8; KEY_BYTES]) -> SystemKey {
        SystemKey { epoch, key }
    }

    /// A fresh random system key.
    pub fn generate(epoch: u32) -> Result<SystemKey, Error> {
        let mut key = [0u8; KEY_BYTES];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| Error::Crypto("random source failed"))?;
        Ok(SystemKey { epoch, key })
    }

    /// The epoch this key encrypts under.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}

/// The system keys a reader knows, by epoch.
#[derive(Debug, Default)]
pub struct SystemKeyring {
    keys: Vec<SystemKey>,
}

impl SystemKeyring {
    /// An empty keyring.
    pub fn new() -> SystemKeyring {
        SystemKeyring::default()
    }

    /// Adds (or replaces) the key of its epoch.
    pub fn insert(&mut self, key: SystemKey) {
        self.keys.retain(|existing| existing.epoch != key.epoch);
        self.keys.push(key);
        self.keys.sort_by_key(|key| key.epoch);
    }

    /// The key of `epoch`.
    pub fn get(&self, epoch: u32) -> Result<&SystemKey, Error> {
        self.keys
            .iter()
            .find(|key| key.epoch == epoch)
            .ok_or(Error::UnknownEpoch { epoch })
    }

    /// The newest key (writers encrypt under it).
    pub fn current(&self) -> Option<&SystemKey> {
        self.keys.last()
    }

    /// All keys, oldest epoch first.
    pub fn keys(&self) -> &[SystemKey] {
        &self.keys
    }
}

/// A content key wrapped under a tenant KEK (AES-256 key wrap, RFC 3394): what the extent
/// map stores per chunk. Not secret on its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrappedKey(pub [u8; WRAPPED_KEY_BYTES]);

impl fmt::Debug for WrappedKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("WrappedKey(")?;
        for byte in &self.0 {
            write!(formatter, "{byte:02x}")?;
        }
        formatter.write_str(")")
    }
}

/// A handle on a tenant's key-encryption key. [`TenantKek::destroy`] is crypto-shred:
/// afterwards nothing wrapped under this KEK can be unwrapped through it, and since the
/// KEK exists nowhere else (its KMS destroys its copy too), the tenant's content keys,
/// hence its data, are gone.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TenantKek {
    key: Option<[u8; KEY_BYTES]>,
}
redacted_debug!(TenantKek);

impl TenantKek {
    /// A KEK from raw bytes (from the tenant's KMS).
    pub fn new(key: [u8; KEY_BYTES]) -> TenantKek {
        TenantKek { key: Some(key) }
    }

    /// A fresh random KEK.
    pub fn generate() -> Result<TenantKek, Error> {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| Error::Crypto("random source failed"))?;
        Ok(TenantKek::new(*key))
    }

    /// Destroys the key material (zeroized in place). Irreversible.
    pub fn destroy(&mut self) {
        self.key.zeroize();
        self.key = None;
    }

    /// Whether [`TenantKek::destroy`] ran.
    pub fn is_destroyed(&self) -> bool {
        self.key.is_none()
    }

    /// The raw KEK, for key derivations inside this crate (`KeyDestroyed` once shredded).
    pub(crate) fn secret(&self) -> Result<&[u8; KEY_BYTES], Error> {
        self.key.as_ref().ok_or(Error::KeyDestroyed)
    }

    fn kek(&self) -> Result<KeyEncryptionKey<aws_lc_rs::key_wrap::AesBlockCipher>, Error> {
        let key = self.secret()?;
        KeyEncryptionKey::new(&AES_256, key).map_err(|_| Error::Crypto("bad KEK"))
    }

    /// Wraps `K` (for the extent map).
    pub fn wrap(&self, content_key: &ContentKey) -> Result<WrappedKey, Error> {
        let mut out = [0u8; WRAPPED_KEY_BYTES];
        let written = self
            .kek()?
            .wrap(&content_key.0, &mut out)
            .map_err(|_| Error::Crypto("key wrap failed"))?
            .len();
        if written != WRAPPED_KEY_BYTES {
            return Err(Error::Crypto("key wrap produced an unexpected length"));
        }
        Ok(WrappedKey(out))
    }

    /// Unwraps `K` and checks that it belongs to `locator`.
    pub fn unwrap(&self, wrapped: &WrappedKey, locator: &Locator, hash: HashAlgorithm) -> Result<ContentKey, Error> {
        let mut key = ContentKey([0u8; KEY_BYTES]);
        let written = self
            .kek()?
            .unwrap(&wrapped.0, &mut key.0)
            .map_err(|_| Error::Crypto("key unwrap failed: wrong KEK or tampered wrapped key"))?
            .len();
        if written != KEY_BYTES {
            return Err(Error::Crypto("unwrapped key has an unexpected length"));
        }
        if locator_of(hash, &key) != *locator {
            return Err(Error::Crypto("wrapped key belongs to another chunk"));
        }
        Ok(key)
    }
}

/// Everything a client or gateway holds for one tenant.
#[derive(Debug)]
pub struct TenantKeys {
    /// The tenant's KEK handle.
    pub kek: TenantKek,
    /// How its content keys are derived.
    pub dedup: DedupScope,
}

impl TenantKeys {
    /// A tenant sharing dedup across tenants.
    pub fn cross_tenant(kek: TenantKek) -> TenantKeys {
        TenantKeys {
            kek,
            dedup: DedupScope::CrossTenant,
        }
    }

    /// A tenant with keyed content keys (no cross-tenant dedup).
    pub fn tenant_only(kek: TenantKek, secret: TenantSecret) -> TenantKeys {
        TenantKeys {
            kek,
            dedup: DedupScope::TenantOnly(secret),
        }
    }
}

/// AES-256-GCM through aws-lc-rs: the only AEAD of the data path.
pub(crate) struct Aes256Gcm(LessSafeKey);

impl Aes256Gcm {
    pub(crate) fn new(key: &[u8]) -> Result<Aes256Gcm, Error> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::Crypto("bad AES key"))?;
        Ok(Aes256Gcm(LessSafeKey::new(unbound)))
    }

    /// Seals `plaintext` into `ciphertext` (same length) and `tag`, leaving the input as is.
    pub(crate) fn seal(
        &self,
        nonce: [u8; aead::NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        ciphertext: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), Error> {
        self.0
            .seal_out_of_place_scatter(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                plaintext,
                ciphertext,
                &[],
                tag,
            )
            .map_err(|_| Error::Crypto("AES-GCM seal failed"))
    }

    /// Opens `ciphertext` with `tag` into `plaintext` (same length).
    pub(crate) fn open(
        &self,
        nonce: [u8; aead::NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        plaintext: &mut [u8],
    ) -> Result<(), Error> {
        self.0
            .open_separate_gather(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                ciphertext,
                tag,
                plaintext,
            )
            .map_err(|_| Error::Crypto("AES-GCM authentication failed"))
    }

    /// Opens `in_out` (ciphertext) with `tag` in place.
    pub(crate) fn open_in_place(
        &self,
        nonce: [u8; aead::NONCE_LEN],
        aad: &[u8],
        tag: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), Error> {
        self.0
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), tag, in_out)
            .map(|_| ())
            .map_err(|_| Error::Crypto("AES-GCM authentication failed"))
    }
}

/// The per-chunk cipher: DEK, nonce and AAD of one (content key, epoch). The write and
/// read pipelines use it; it is public for stage benchmarks and for re-encryption to a new
/// epoch.
pub struct ChunkCipher {
    aead: Aes256Gcm,
    nonce: [u8; aead::NONCE_LEN],
    aad: [u8; CHUNK_DOMAIN.len() + 32 + 4],
}

impl ChunkCipher {
    /// Derives the DEK of `K` under `system_key` and binds nonce and AAD to `locator`.
    pub fn new(system_key: &SystemKey, content_key: &ContentKey, locator: &Locator) -> Result<ChunkCipher, Error> {
        let epoch = system_key.epoch.to_be_bytes();
        let mut dek = Zeroizing::new([0u8; KEY_BYTES]);
        hkdf_sha256(&content_key.0, &system_key.key, &[CHUNK_DOMAIN, &epoch], dek.as_mut())?;
        let aead = Aes256Gcm::new(dek.as_ref())?;
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce.copy_from_slice(&locator.0[..aead::NONCE_LEN]);
        let mut aad = [0u8; CHUNK_DOMAIN.len() + 32 + 4];
        aad[..CHUNK_DOMAIN.len()].copy_from_slice(CHUNK_DOMAIN);
        aad[CHUNK_DOMAIN.len()..CHUNK_DOMAIN.len() + 32].copy_from_slice(&locator.0);
        aad[CHUNK_DOMAIN.len() + 32..].copy_from_slice(&epoch);
        Ok(ChunkCipher { aead, nonce, aad })
    }

    /// Seals `plaintext` into `ciphertext` (same length) and `tag` (16 bytes).
    pub fn seal(&self, plaintext: &[u8], ciphertext: &mut [u8], tag: &mut [u8]) -> Result<(), Error> {
        self.aead.seal(self.nonce, &self.aad, plaintext, ciphertext, tag)
    }

    /// Opens `ciphertext` and `tag` into `plaintext` (same length).
    pub fn open(&self, ciphertext: &[u8], tag: &[u8], plaintext: &mut [u8]) -> Result<(), Error> {
        self.aead.open(self.nonce, &self.aad, ciphertext, tag, plaintext)
    }

    /// Opens `in_out` (ciphertext) with `tag` in place.
    pub fn open_in_place(&self, tag: &[u8], in_out: &mut [u8]) -> Result<(), Error> {
        self.aead.open_in_place(self.nonce, &self.aad, tag, in_out)
    }
}

/// Checks a decrypted chunk against its content key (convergent integrity check).
pub(crate) fn verify_content(
    hash: HashAlgorithm,
    scope: &DedupScope,
    plaintext: &[u8],
    expected: &ContentKey,
) -> Result<(), Error> {
    let actual = content_key(hash, scope, plaintext);
    if expected.matches(&actual.0) {
        Ok(())
    } else {
        Err(Error::ContentMismatch)
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::{ContentKey, KEY_BYTES};

    /// A content key from raw bytes (tests that play the attacker).
    pub(crate) fn content_key_from(bytes: [u8; KEY_BYTES]) -> ContentKey {
        ContentKey(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// AES-256-GCM, test cases 13-16 of McGrew and Viega, "The Galois/Counter Mode of
    /// Operation" (the NIST GCM validation vectors), through our wrapper.
    #[test]
    fn aes_256_gcm_known_answers() {
        struct Vector {
            key: &'static str,
            iv: &'static str,
            plaintext: &'static str,
            aad: &'static str,
            ciphertext: &'static str,
            tag: &'static str,
        }
        let vectors = [
            Vector {
                key: "0000000000000000000000000000000000000000000000000000000000000000",
                iv: "000000000000000000000000",
                plaintext: "",
                aad: "",
                ciphertext: "",
                tag: "530f8afbc74536b9a963b4f1c4cb738b",
            },
            Vector {
                key: "0000000000000000000000000000000000000000000000000000000000000000",
                iv: "000000000000000000000000",
                plaintext: "00000000000000000000000000000000",
                aad: "",
                ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
                tag: "d0d1c8a799996bf0265b98b5d48ab919",
            },
            Vector {
                key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                iv: "cafebabefacedbaddecaf888",
                plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
                            1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
                aad: "",
                ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
                             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
                tag: "b094dac5d93471bdec1a502270e3cc6c",
            },
            Vector {
                key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                iv: "cafebabefacedbaddecaf888",
                plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
                            1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
                             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                tag: "76fc6ece0f4e1768cddf8853bb2d551b",
            },
        ];
        for vector in vectors {
            let cipher = Aes256Gcm::new(&hex(vector.key)).unwrap();
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&hex(vector.iv));
            let plaintext = hex(vector.plaintext);
            let aad = hex(vector.aad);
            let mut ciphertext = vec![0u8; plaintext.len()];
            let mut tag = [0u8; TAG_BYTES];
            cipher.seal(nonce, &aad, &plaintext, &mut ciphertext, &mut tag).unwrap();
            assert_eq!(ciphertext, hex(vector.ciphertext));
            assert_eq!(tag.to_vec(), hex(vector.tag));
            let mut opened = vec![0u8; plaintext.len()];
            cipher.open(nonce, &aad, &ciphertext, &tag, &mut opened).unwrap();
            assert_eq!(opened, plaintext);
            let mut in_place = ciphertext.clone();
            cipher.open_in_place(nonce, &aad, &tag, &mut in_place).unwrap();
            assert_eq!(in_place, plaintext);
            tag[0] ^= 1;
            assert!(cipher.open(nonce, &aad, &ciphertext, &tag, &mut opened).is_err());
        }
    }

    /// HKDF-SHA256, RFC 5869 test cases 1 and 3.
    #[test]
    fn hkdf_sha256_rfc5869() {
        let ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let mut okm = [0u8; 42];
        hkdf_sha256(
            &hex("000102030405060708090a0b0c"),
            &ikm,
            &[&hex("f0f1f2f3f4"), &hex("f5f6f7f8f9")],
            &mut okm,
        )
        .unwrap();
        assert_eq!(
            okm.to_vec(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf
                 34007208d5b887185865")
        );
        hkdf_sha256(&[], &ikm, &[], &mut okm).unwrap();
        assert_eq!(
            okm.to_vec(),
            hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d
                 9d201395faa4b61a96c8")
        );
    }

    /// HMAC-SHA256, RFC 4231 test cases 1 and 2, and the MAC of `HashAlgorithm::Sha256`.
    #[test]
    fn hmac_sha256_rfc4231() {
        assert_eq!(
            hmac_sha256(&[0x0b; 20], b"Hi There").to_vec(),
            hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        let key = [0x0b; 32];
        assert_eq!(HashAlgorithm::Sha256.mac(&key, b"x"), hmac_sha256(&key, b"x"));
    }

    /// SHA-256 and BLAKE3 of known inputs.
    #[test]
    fn hash_known_answers() {
        assert_eq!(
            HashAlgorithm::Sha256.digest(&[b"a", b"bc"]).to_vec(),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(
            HashAlgorithm::Blake3.digest(&[]).to_vec(),
            hex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
        );
        assert_eq!(
            HashAlgorithm::from_id(HashAlgorithm::Sha256.id()),
            Some(HashAlgorithm::Sha256)
        );
        assert_eq!(HashAlgorithm::from_id(0), None);
    }

    /// AES-256 key wrap, RFC 3394 section 4.6, through the KEK handle.
    #[test]
    fn key_wrap_rfc3394() {
        let mut kek = [0u8; 32];
        kek.copy_from_slice(&hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"));
        let mut key = [0u8; 32];
        key.copy_from_slice(&hex("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f"));
        let handle = TenantKek::new(kek);
        let wrapped = handle.wrap(&ContentKey(key)).unwrap();
        assert_eq!(
            wrapped.0.to_vec(),
            hex("28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21")
        );
        let locator = locator_of(HashAlgorithm::Blake3, &ContentKey(key));
        let unwrapped = handle.unwrap(&wrapped, &locator, HashAlgorithm::Blake3).unwrap();
        assert_eq!(unwrapped, ContentKey(key));
        // The wrapped key of another chunk is refused.
        let other = Locator([9; 32]);
        assert!(matches!(
            handle.unwrap(&wrapped, &other, HashAlgorithm::Blake3),
            Err(Error::Crypto(_))
        ));
    }

    #[test]
    fn key_material_is_redacted_in_debug() {
        let printed = format!(
            "{:?} {:?} {:?} {:?}",
            ContentKey([0xab; 32]),
            SystemKey::new(3, [0xab; 32]),
            TenantKek::new([0xab; 32]),
            TenantKeys::tenant_only(TenantKek::new([0xab; 32]), TenantSecret::new([0xab; 32])),
        );
        assert!(!printed.contains("ab"), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn destroyed_kek_refuses_to_wrap_and_unwrap() {
        let mut kek = TenantKek::new([1; 32]);
        let key = ContentKey([2; 32]);
        let wrapped = kek.wrap(&key).unwrap();
        kek.destroy();
        assert!(kek.is_destroyed());
        assert!(matches!(kek.wrap(&key), Err(Error::KeyDestroyed)));
        let locator = locator_of(HashAlgorithm::Blake3, &key);
        assert!(matches!(
            kek.unwrap(&wrapped, &locator, HashAlgorithm::Blake3),
            Err(Error::KeyDestroyed)
        ));
    }
}
