//! The chunk locator: the only chunk identity devices, logs and placement ever see.

use std::fmt;

/// A chunk locator `L = H(domain ‖ K)`, 32 bytes. It reveals nothing of the content key
/// `K`; fragment stores, placement and logs address chunks by it. Displayed as lowercase
/// hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Locator(pub [u8; 32]);

impl Locator {
    /// Length of a locator in bytes.
    pub const BYTES: usize = 32;

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Locator> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            *byte = (high * 16 + low) as u8;
        }
        Some(Locator(bytes))
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Locator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Locator({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (i * 37) as u8;
        }
        let locator = Locator(bytes);
        let text = locator.to_string();
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("00254a6f"));
        assert_eq!(Locator::from_hex(&text), Some(locator));
        assert_eq!(Locator::from_hex("zz"), None);
        assert_eq!(Locator::from_hex(&text[..62]), None);
    }
}
