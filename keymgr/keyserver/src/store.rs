//! Where the key server's state lives between runs, behind the [`KeyStore`] trait so a
//! replicated store can replace the file later.
//!
//! [`EncryptedFileStore`] keeps the state in one file, encrypted at rest with AES-256-GCM
//! under a master key from its own file (mode 0600):
//!
//! ```text
//! "KISEKIKS" (8) | format version u32 LE (4) | nonce (12) | ciphertext | tag (16)
//! AAD = the first 12 bytes; plaintext = the state as JSON (keys in hex)
//! ```
//!
//! A save writes a temporary file beside the state, syncs it, renames it over the state
//! and syncs the directory, so a crash leaves the old state or the new one, never a mix.
//! Every save draws a fresh random nonce. Plaintext buffers are zeroized after use.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

use crate::secret::Secret32;
use crate::state::KeyState;
use crate::KeyError;

const MAGIC: &[u8; 8] = b"KISEKIKS";
const FILE_FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4;
const TAG_BYTES: usize = 16;

/// Keeps the key server's state between runs. Every implementation passes the
/// conformance suite in `tests/store.rs`.
pub trait KeyStore: Send {
    /// The saved state, or `None` when nothing was saved yet.
    fn load(&self) -> Result<Option<KeyState>, KeyError>;
    /// Saves `state` durably, replacing what was saved; on error the previous state stays.
    fn save(&mut self, state: &KeyState) -> Result<(), KeyError>;
    /// Where the state lives, for logs.
    fn describe(&self) -> String;
}

/// The master key that encrypts the state at rest.
#[derive(Clone, Debug)]
pub struct MasterKey(Secret32);

impl MasterKey {
    /// Wraps a key.
    pub fn new(key: Secret32) -> MasterKey {
        MasterKey(key)
    }

    /// Reads a master key file: 64 hex digits. Refused when others than the owner may
    /// read it.
    pub fn load(path: &Path) -> Result<MasterKey, KeyError> {
        let failed = |reason: String| KeyError::MasterKey {
            path: path.to_path_buf(),
            reason,
        };
        let metadata = std::fs::metadata(path).map_err(|error| failed(error.to_string()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(failed(format!(
                "mode {:o} lets others read it; chmod 600",
                metadata.permissions().mode() & 0o777
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?);
        Secret32::from_hex(&text)
            .map(MasterKey)
            .map_err(|error| failed(error.to_string()))
    }

    /// Writes a new random master key file (mode 0600), refusing to replace one.
    pub fn create_file(path: &Path) -> Result<MasterKey, KeyError> {
        let key = Secret32::random()?;
        let failed = |error: std::io::Error| KeyError::MasterKey {
            path: path.to_path_buf(),
            reason: error.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        file.write_all(key.to_hex().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(failed)?;
        Ok(MasterKey(key))
    }

    fn aead(&self) -> Result<LessSafeKey, KeyError> {
        UnboundKey::new(&AES_256_GCM, self.0.expose())
            .map(LessSafeKey::new)
            .map_err(|_| KeyError::Crypto("bad master key"))
    }
}

/// Encodes `state` as the encrypted file body.
pub fn seal_state(master: &MasterKey, state: &KeyState) -> Result<Vec<u8>, KeyError> {
    let mut plaintext = Zeroizing::new(Vec::new());
    serde_json::to_writer(&mut *plaintext, state).map_err(|error| KeyError::Invalid(error.to_string()))?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Crypto("random source failed"))?;
    let mut out = Vec::with_capacity(HEADER_BYTES + NONCE_LEN + plaintext.len() + TAG_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FILE_FORMAT_VERSION.to_le_bytes());
    let aad: [u8; HEADER_BYTES] = out[..HEADER_BYTES].try_into().unwrap_or([0; HEADER_BYTES]);
    out.extend_from_slice(&nonce);
    let mut sealed = plaintext.to_vec();
    master
        .aead()?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut sealed)
        .map_err(|_| KeyError::Crypto("sealing the state failed"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decodes what [`seal_state`] wrote; `where_` names the source in errors.
pub fn open_state(master: &MasterKey, bytes: &[u8], where_: &Path) -> Result<KeyState, KeyError> {
    let corrupt = |reason: &str| KeyError::Corrupt {
        path: where_.to_path_buf(),
        reason: reason.to_owned(),
    };
    if bytes.len() < HEADER_BYTES + NONCE_LEN + TAG_BYTES || &bytes[..8] != MAGIC {
        return Err(corrupt("not a Kiseki key state file"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if version != FILE_FORMAT_VERSION {
        return Err(corrupt(&format!("file format {version} is not {FILE_FORMAT_VERSION}")));
    }
    let aad: [u8; HEADER_BYTES] = bytes[..HEADER_BYTES].try_into().unwrap_or([0; HEADER_BYTES]);
    let nonce: [u8; NONCE_LEN] = bytes[HEADER_BYTES..HEADER_BYTES + NONCE_LEN]
        .try_into()
        .unwrap_or([0; NONCE_LEN]);
    let mut in_out = Zeroizing::new(bytes[HEADER_BYTES + NONCE_LEN..].to_vec());
    let plaintext = master
        .aead()?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
        .map_err(|_| KeyError::WrongMasterKey {
            path: where_.to_path_buf(),
        })?;
    let state: KeyState = serde_json::from_slice(plaintext).map_err(|error| corrupt(&error.to_string()))?;
    state.validate().map_err(|reason| corrupt(&reason))?;
    Ok(state)
}

/// The state in one encrypted file.
#[derive(Debug)]
pub struct EncryptedFileStore {
    path: PathBuf,
    master: MasterKey,
}

impl EncryptedFileStore {
    /// A store at `path` encrypted under `master`.
    pub fn new(path: &Path, master: MasterKey) -> EncryptedFileStore {
        EncryptedFileStore {
            path: path.to_path_buf(),
            master,
        }
    }
}

impl KeyStore for EncryptedFileStore {
    fn load(&self) -> Result<Option<KeyState>, KeyError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        open_state(&self.master, &bytes, &self.path).map(Some)
    }

    fn save(&mut self, state: &KeyState) -> Result<(), KeyError> {
        let sealed = seal_state(&self.master, state)?;
        let io = |source: std::io::Error| KeyError::Io {
            path: self.path.clone(),
            source,
        };
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io)?;
        file.write_all(&sealed).and_then(|()| file.sync_all()).map_err(io)?;
        drop(file);
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        let directory = self.path.parent().filter(|parent| !parent.as_os_str().is_empty());
        let directory = directory.unwrap_or(Path::new("."));
        std::fs::File::open(directory)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("encrypted file {}", self.path.display())
    }
}

/// The state in memory only, encoded and encrypted as the file store does it: for tests
/// of code above the store. It loses everything when dropped.
#[derive(Debug)]
pub struct MemoryStore {
    master: MasterKey,
    sealed: Option<Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Result<MemoryStore, KeyError> {
        Ok(MemoryStore {
            master: MasterKey::new(Secret32::random()?),
            sealed: None,
        })
    }
}

impl KeyStore for MemoryStore {
    fn load(&self) -> Result<Option<KeyState>, KeyError> {
        self.sealed
            .as_ref()
            .map(|bytes| open_state(&self.master, bytes, Path::new("<memory>")))
            .transpose()
    }

    fn save(&mut self, state: &KeyState) -> Result<(), KeyError> {
        self.sealed = Some(seal_state(&self.master, state)?);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory (tests only)".into()
    }
}
