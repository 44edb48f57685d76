//! Message bodies: rkyv 0.8 archives, validated with bytecheck before any use (I-W1).
//!
//! The archive format is pinned in `Cargo.toml` (little-endian, 32-bit relative
//! pointers). rkyv reads an archive in place, so its bytes must be aligned to
//! [`BODY_ALIGN_BYTES`]; [`decode_body`] copies a misaligned body into an aligned buffer
//! first instead of failing.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{ErrorCode, NetError, RemoteError};

/// Alignment an archived body needs to be read in place.
pub const BODY_ALIGN_BYTES: usize = 16;

/// Serializes `value` into a new body.
pub fn encode_body<T>(value: &T) -> Result<Vec<u8>, NetError>
where
    T: for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, Vec::new()).map_err(|error| NetError::Encode {
        reason: error.to_string(),
    })
}

/// Serializes a service's answer: as [`encode_body`], with a failure to encode turned
/// into the `Internal` error answer a handler returns.
pub fn encode_answer<T>(value: &T) -> Result<Vec<u8>, RemoteError>
where
    T: for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>,
{
    encode_body(value).map_err(|error| RemoteError::new(ErrorCode::Internal, error.to_string()))
}

/// Validates `bytes` as an archived `T` and deserializes it. Any input that is not a
/// valid archive of `T` is `BadBody`, never a panic (I-W1, I-W2).
pub fn decode_body<T>(bytes: &[u8]) -> Result<T, NetError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let result = if bytes.as_ptr().addr().is_multiple_of(BODY_ALIGN_BYTES) {
        rkyv::from_bytes::<T, rancor::Error>(bytes)
    } else {
        let mut aligned = AlignedVec::<BODY_ALIGN_BYTES>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<T, rancor::Error>(&aligned)
    };
    result.map_err(|error| NetError::BadBody {
        reason: error.to_string(),
    })
}

/// The body of ErrorResponse and GoAway frames.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct ErrorBody {
    /// [`ErrorCode`] on the wire.
    pub code: u16,
    /// A message for the peer's logs.
    pub message: String,
}

impl ErrorBody {
    /// The body for `code` and `message` (messages are cut to `MESSAGE_BYTES_MAX`).
    pub fn new(code: ErrorCode, message: &str) -> ErrorBody {
        let mut end = message.len().min(ErrorBody::MESSAGE_BYTES_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        ErrorBody {
            code: code.to_wire(),
            message: message[..end].to_string(),
        }
    }

    /// Longest message sent in an error answer.
    pub const MESSAGE_BYTES_MAX: usize = 4096;

    /// The typed code.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::from_wire(self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Archive, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        parts: Vec<u32>,
        flag: Option<bool>,
    }

    fn sample() -> Sample {
        Sample {
            id: 42,
            name: "fragment".into(),
            parts: vec![1, 2, 3],
            flag: Some(true),
        }
    }

    #[test]
    fn bodies_round_trip_aligned_and_misaligned() {
        let body = encode_body(&sample()).unwrap();
        assert_eq!(decode_body::<Sample>(&body).unwrap(), sample());
        let mut shifted = vec![0u8; body.len() + 1];
        shifted[1..].copy_from_slice(&body);
        assert_eq!(decode_body::<Sample>(&shifted[1..]).unwrap(), sample());
    }

    #[test]
    fn invalid_bodies_are_errors() {
        let body = encode_body(&sample()).unwrap();
        assert!(matches!(decode_body::<Sample>(&[]), Err(NetError::BadBody { .. })));
        assert!(matches!(
            decode_body::<Sample>(&body[..body.len() - 3]),
            Err(NetError::BadBody { .. })
        ));
        let mut flipped = body.clone();
        // The option's tag byte lives near the end of the root; a wild value is refused.
        let last = flipped.len() - 1;
        flipped[last] = 0x7f;
        let _ = decode_body::<Sample>(&flipped);
        let garbage = vec![0xffu8; 64];
        assert!(decode_body::<Sample>(&garbage).is_err());
    }

    #[test]
    fn error_bodies_cut_long_messages_on_a_char_boundary() {
        let long = "é".repeat(ErrorBody::MESSAGE_BYTES_MAX);
        let body = ErrorBody::new(ErrorCode::Busy, &long);
        assert!(body.message.len() <= ErrorBody::MESSAGE_BYTES_MAX);
        assert_eq!(body.code(), ErrorCode::Busy);
        let decoded: ErrorBody = decode_body(&encode_body(&body).unwrap()).unwrap();
        assert_eq!(decoded, body);
    }
}
