//! XDR (RFC 4506) reading and writing, bounded: every length read from the wire is
//! checked against what is left of the message and against the limit of the field
//! before anything is allocated, and every failure is a typed [`XdrError`], never a
//! panic (I-W2 for the NFS gateway).

use std::fmt;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdrError {
    /// The message ended inside a field.
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A length is larger than the field allows.
    TooLong {
        /// The field.
        what: &'static str,
        /// The length announced.
        length: usize,
        /// The most the field allows.
        max: usize,
    },
    /// An enum or boolean holds a value the protocol does not define.
    BadValue {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u32,
    },
}

impl fmt::Display for XdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdrError::Truncated { what } => write!(f, "message ends inside {what}"),
            XdrError::TooLong { what, length, max } => write!(f, "{what} of {length} bytes (at most {max})"),
            XdrError::BadValue { what, value } => write!(f, "{what}: undefined value {value}"),
        }
    }
}

impl std::error::Error for XdrError {}

/// Reads XDR values from a message held in memory.
#[derive(Debug, Clone)]
pub struct XdrReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> XdrReader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> XdrReader<'a> {
        XdrReader { bytes, position: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.position
    }

    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], XdrError> {
        if count > self.remaining() {
            return Err(XdrError::Truncated { what });
        }
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    /// A 32-bit unsigned integer.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, XdrError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A 64-bit unsigned integer.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, XdrError> {
        let high = u64::from(self.u32(what)?);
        let low = u64::from(self.u32(what)?);
        Ok(high << 32 | low)
    }

    /// A boolean (0 or 1).
    pub fn bool(&mut self, what: &'static str) -> Result<bool, XdrError> {
        match self.u32(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(XdrError::BadValue { what, value }),
        }
    }

    /// Fixed-length opaque data of `N` bytes (padded to a multiple of 4).
    pub fn fixed<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], XdrError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        self.take(padding(N), what)?;
        Ok(out)
    }

    /// Variable-length opaque data of at most `max` bytes, borrowed from the message.
    pub fn opaque(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], XdrError> {
        let length = self.u32(what)? as usize;
        if length > max {
            return Err(XdrError::TooLong { what, length, max });
        }
        let bytes = self.take(length, what)?;
        self.take(padding(length), what)?;
        Ok(bytes)
    }

    /// A count of array elements, at most `max`, each needing at least `element_bytes_min`
    /// bytes of what is left (so a count cannot ask for more memory than the message
    /// could fill).
    pub fn count(&mut self, what: &'static str, max: usize, element_bytes_min: usize) -> Result<usize, XdrError> {
        let count = self.u32(what)? as usize;
        if count > max {
            return Err(XdrError::TooLong {
                what,
                length: count,
                max,
            });
        }
        if count.saturating_mul(element_bytes_min.max(1)) > self.remaining() {
            return Err(XdrError::Truncated { what });
        }
        Ok(count)
    }
}

/// Bytes of padding after `length` bytes of opaque data.
pub fn padding(length: usize) -> usize {
    (4 - length % 4) % 4
}

/// Writes XDR values to a growing buffer.
#[derive(Debug, Default, Clone)]
pub struct XdrWriter {
    bytes: Vec<u8>,
}

impl XdrWriter {
    /// An empty writer.
    pub fn new() -> XdrWriter {
        XdrWriter::default()
    }

    /// A writer whose buffer starts with `capacity` bytes reserved.
    pub fn with_capacity(capacity: usize) -> XdrWriter {
        XdrWriter {
            bytes: Vec::with_capacity(capacity),
        }
    }

    /// A 32-bit unsigned integer.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// A 64-bit unsigned integer.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// A boolean.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u32(u32::from(value))
    }

    /// Fixed-length opaque data.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self.bytes.extend_from_slice(&[0u8; 3][..padding(bytes.len())]);
        self
    }

    /// Variable-length opaque data.
    pub fn opaque(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(bytes.len() as u32);
        self.fixed(bytes)
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The bytes written, as a slice.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_padding() {
        let mut writer = XdrWriter::new();
        writer
            .u32(7)
            .u64(u64::MAX - 1)
            .bool(true)
            .opaque(b"abcde")
            .fixed(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let bytes = writer.into_bytes();
        assert_eq!(bytes.len(), 4 + 8 + 4 + 4 + 8 + 8);
        let mut reader = XdrReader::new(&bytes);
        assert_eq!(reader.u32("a").unwrap(), 7);
        assert_eq!(reader.u64("b").unwrap(), u64::MAX - 1);
        assert!(reader.bool("c").unwrap());
        assert_eq!(reader.opaque("d", 8).unwrap(), b"abcde");
        assert_eq!(reader.fixed::<8>("e").unwrap(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn lengths_are_bounded_before_anything_is_allocated() {
        let mut writer = XdrWriter::new();
        writer.u32(0xffff_fff0);
        let bytes = writer.into_bytes();
        assert!(matches!(
            XdrReader::new(&bytes).opaque("name", 255),
            Err(XdrError::TooLong { .. })
        ));
        assert!(matches!(
            XdrReader::new(&bytes).opaque("data", usize::MAX),
            Err(XdrError::Truncated { .. })
        ));
        assert!(matches!(
            XdrReader::new(&bytes).count("gids", 16, 4),
            Err(XdrError::TooLong { .. })
        ));
        let mut two = XdrWriter::new();
        two.u32(2);
        assert!(matches!(
            XdrReader::new(two.as_bytes()).count("gids", 16, 4),
            Err(XdrError::Truncated { .. })
        ));
        assert!(matches!(
            XdrReader::new(&[0, 0, 0, 2]).bool("flag"),
            Err(XdrError::BadValue { value: 2, .. })
        ));
        assert!(matches!(
            XdrReader::new(&[0, 0]).u32("x"),
            Err(XdrError::Truncated { .. })
        ));
    }
}
