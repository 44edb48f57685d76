//! Framing shared by records, messages and handoffs: a magic number, a format version,
//! a length and a CRC32C over the postcard-encoded payload.
//!
//! ```text
//! magic (4 bytes) | version (1) | payload length (4, LE) | CRC32C of payload (4, LE) | payload
//! ```

use serde::{de::DeserializeOwned, Serialize};

/// Version of every format this crate writes. Readers refuse any other.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Bytes before the payload.
pub(crate) const FRAME_HEADER_BYTES: usize = 13;

/// Magic of a log record.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"KSCR";
/// Magic of a network message.
pub(crate) const MESSAGE_MAGIC: [u8; 4] = *b"KSCM";
/// Magic of a reconfiguration handoff.
pub(crate) const HANDOFF_MAGIC: [u8; 4] = *b"KSCH";

/// Encodes `value` and frames it.
pub(crate) fn seal<T: Serialize>(magic: [u8; 4], value: &T) -> Vec<u8> {
    seal_with_capacity(magic, value, 0)
}

/// [`seal`] into a buffer sized for `payload_bytes_hint` payload bytes at first, so that a
/// large value (a snapshot) is not copied again each time the buffer doubles.
pub(crate) fn seal_with_capacity<T: Serialize>(magic: [u8; 4], value: &T, payload_bytes_hint: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload_bytes_hint);
    bytes.resize(FRAME_HEADER_BYTES, 0);
    let encoded = postcard::to_extend(value, bytes);
    // Encoding into a Vec cannot fail for the plain data types of this crate.
    let mut bytes = match encoded {
        Ok(bytes) => bytes,
        Err(error) => panic!("postcard failed to encode into memory: {error}"),
    };
    let payload_len = (bytes.len() - FRAME_HEADER_BYTES) as u32;
    let crc = crc32c::crc32c(&bytes[FRAME_HEADER_BYTES..]);
    bytes[0..4].copy_from_slice(&magic);
    bytes[4] = FORMAT_VERSION;
    bytes[5..9].copy_from_slice(&payload_len.to_le_bytes());
    bytes[9..13].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Checks the frame and returns its payload.
pub(crate) fn open(magic: [u8; 4], bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(format!("{} bytes is shorter than a frame header", bytes.len()));
    }
    if bytes[0..4] != magic {
        return Err("bad magic".to_owned());
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(format!("unknown format version {}", bytes[4]));
    }
    let payload_len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let payload = &bytes[FRAME_HEADER_BYTES..];
    if payload.len() != payload_len {
        return Err(format!("payload is {} bytes, header says {payload_len}", payload.len()));
    }
    let crc = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]);
    if crc32c::crc32c(payload) != crc {
        return Err("CRC32C mismatch".to_owned());
    }
    Ok(payload)
}

/// Decodes a whole payload; trailing bytes are an error.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(error) => Err(format!("undecodable: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flipped_bit_is_detected() {
        let sealed = seal(RECORD_MAGIC, &(7u64, "payload".to_owned(), vec![1u8, 2, 3]));
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>(open(RECORD_MAGIC, &sealed).unwrap())
                .unwrap()
                .0,
            7
        );
        for bit in 0..sealed.len() * 8 {
            let mut damaged = sealed.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(open(RECORD_MAGIC, &damaged).is_err(), "bit {bit} not detected");
        }
        assert!(open(MESSAGE_MAGIC, &sealed).is_err());
        assert!(open(RECORD_MAGIC, &sealed[..sealed.len() - 1]).is_err());
        assert!(open(RECORD_MAGIC, &[]).is_err());
    }
}
