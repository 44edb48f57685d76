//! NFS file handles: opaque to clients, stable across gateway restarts, and authenticated,
//! so that a client cannot make one up for an export (or a file) it was not given.
//!
//! ```text
//! byte 0      format version (1)
//! byte 1      reserved (0)
//! bytes 2..6  export id (big-endian u32; stable, derived from tenant and namespace)
//! bytes 6..14 namespace incarnation (changes if the namespace is deleted and made again)
//! bytes 14..22 inode number
//! bytes 22..38 MAC: keyed BLAKE3 of bytes 0..22, truncated to 16 bytes
//! ```
//!
//! No generation number is needed beside the inode: a namespace never reuses an inode
//! number (I-N7), so a handle names one object for as long as that object lives and
//! `STALE` after. The MAC key comes from the key server (`nfs-file-handles`, the same
//! for every gateway and across restarts), so any gateway of the cluster accepts a handle
//! any other gave out (I-H1).

use kiseki_namespace::InodeId;

/// Bytes of a handle.
pub const HANDLE_BYTES: usize = 38;
const VERSION: u8 = 1;
const MAC_BYTES: usize = 16;
const BODY_BYTES: usize = HANDLE_BYTES - MAC_BYTES;

/// The name of the key server's service key that signs handles.
pub const HANDLE_KEY_NAME: &str = "nfs-file-handles";

/// What a valid handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle {
    /// The export.
    pub export_id: u32,
    /// The namespace's incarnation when the handle was made.
    pub incarnation: u64,
    /// The inode.
    pub inode: InodeId,
}

/// Why a handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// Not a handle this server makes, or one whose MAC does not match (`BADHANDLE`).
    Bad,
}

/// Makes and checks handles with one key.
#[derive(Clone)]
pub struct HandleKey {
    key: [u8; 32],
}

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(<redacted>)")
    }
}

impl Drop for HandleKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl HandleKey {
    /// A key (the key server's `nfs-file-handles` service key).
    pub fn new(key: [u8; 32]) -> HandleKey {
        HandleKey { key }
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_BYTES] {
        let hash = blake3::keyed_hash(&self.key, body);
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(&hash.as_bytes()[..MAC_BYTES]);
        mac
    }

    /// The handle of `handle`.
    pub fn encode(&self, handle: FileHandle) -> [u8; HANDLE_BYTES] {
        let mut bytes = [0u8; HANDLE_BYTES];
        bytes[0] = VERSION;
        bytes[2..6].copy_from_slice(&handle.export_id.to_be_bytes());
        bytes[6..14].copy_from_slice(&handle.incarnation.to_be_bytes());
        bytes[14..22].copy_from_slice(&handle.inode.0.to_be_bytes());
        let mac = self.mac(&bytes[..BODY_BYTES]);
        bytes[BODY_BYTES..].copy_from_slice(&mac);
        bytes
    }

    /// What `bytes` names, if it is a handle this key made.
    pub fn decode(&self, bytes: &[u8]) -> Result<FileHandle, HandleError> {
        if bytes.len() != HANDLE_BYTES || bytes[0] != VERSION || bytes[1] != 0 {
            return Err(HandleError::Bad);
        }
        let expected = self.mac(&bytes[..BODY_BYTES]);
        // Constant time: every byte is compared whatever the first difference.
        let difference = expected
            .iter()
            .zip(&bytes[BODY_BYTES..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return Err(HandleError::Bad);
        }
        let word = |range: std::ops::Range<usize>| {
            let mut value = [0u8; 8];
            value[8 - range.len()..].copy_from_slice(&bytes[range]);
            u64::from_be_bytes(value)
        };
        Ok(FileHandle {
            export_id: word(2..6) as u32,
            incarnation: word(6..14),
            inode: InodeId(word(14..22)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_forgeries_are_refused() {
        let key = HandleKey::new([7; 32]);
        let handle = FileHandle {
            export_id: 3,
            incarnation: 0x1234_5678_9abc_def0,
            inode: InodeId(42),
        };
        let bytes = key.encode(handle);
        assert_eq!(key.decode(&bytes), Ok(handle));
        // Any changed bit, another export, a truncation, another key: refused.
        for position in 0..HANDLE_BYTES {
            let mut changed = bytes;
            changed[position] ^= 1;
            assert_eq!(key.decode(&changed), Err(HandleError::Bad), "byte {position}");
        }
        assert_eq!(key.decode(&bytes[..20]), Err(HandleError::Bad));
        assert_eq!(HandleKey::new([8; 32]).decode(&bytes), Err(HandleError::Bad));
        let mut other_export = handle;
        other_export.export_id = 4;
        assert_ne!(key.encode(other_export)[22..], bytes[22..]);
        assert!(!format!("{key:?}").contains('7'));
    }
}
