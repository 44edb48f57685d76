//! Key bytes in types that zeroize on drop, print `<redacted>`, and travel through the
//! (encrypted) state encoding as hex.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

use crate::KeyError;

/// Bytes of every key the key server holds.
pub const KEY_BYTES: usize = 32;

/// A 32-byte secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret32(Zeroizing<[u8; KEY_BYTES]>);

impl Secret32 {
    /// Wraps `bytes` (the caller zeroizes its own copy).
    pub fn new(bytes: [u8; KEY_BYTES]) -> Secret32 {
        Secret32(Zeroizing::new(bytes))
    }

    /// A new key from the system's random source (aws-lc-rs).
    pub fn random() -> Result<Secret32, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| KeyError::Crypto("random source failed"))?;
        Ok(Secret32(bytes))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Secret32, KeyError> {
        let text = text.trim();
        if text.len() != 2 * KEY_BYTES || !text.is_ascii() {
            return Err(KeyError::Invalid("a key is 64 hex digits".into()));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16)
                .map_err(|_| KeyError::Invalid("a key is 64 hex digits".into()))?;
        }
        Ok(Secret32(bytes))
    }

    /// 64 lowercase hex digits, in a zeroizing string.
    pub fn to_hex(&self) -> Zeroizing<String> {
        hex(self.0.as_ref())
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Lowercase hex of `bytes`, in a zeroizing string.
pub(crate) fn hex(bytes: &[u8]) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = Zeroizing::new(String::with_capacity(2 * bytes.len()));
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

impl Serialize for Secret32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Secret32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut text = String::deserialize(deserializer)?;
        let parsed = Secret32::from_hex(&text);
        text.zeroize();
        parsed.map_err(serde::de::Error::custom)
    }
}

/// Secret bytes of any length (a provider's sealed tenant keys).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Zeroizes and empties the bytes.
    pub fn wipe(&mut self) {
        self.0.zeroize();
        self.0.clear();
    }

    /// Whether there are no bytes (destroyed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut text = String::deserialize(deserializer)?;
        let parsed = parse_hex(&text);
        text.zeroize();
        parsed.map(SecretBytes).map_err(serde::de::Error::custom)
    }
}

fn parse_hex(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return Err("secret bytes are an even number of hex digits".into());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 2));
    for index in (0..text.len()).step_by(2) {
        bytes.push(u8::from_str_radix(&text[index..index + 2], 16).map_err(|_| "not hex".to_string())?);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_never_print() {
        let key = Secret32::random().unwrap();
        assert_eq!(Secret32::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(format!("{key:?}"), "<redacted>");
        assert!(Secret32::from_hex("abc").is_err());
        assert!(Secret32::from_hex(&"zz".repeat(32)).is_err());
        let bytes = SecretBytes::new(vec![1, 2, 0xff]);
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(json, "\"0102ff\"");
        assert_eq!(serde_json::from_str::<SecretBytes>(&json).unwrap(), bytes);
        assert!(!format!("{bytes:?}").contains("ff"));
    }
}
