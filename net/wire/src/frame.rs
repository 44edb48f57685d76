//! Frames: the fixed 32-byte header, the encoder and the incremental decoder.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  bytes  field
//!  0      4      magic "KSKW"
//!  4      1      protocol version (1)
//!  5      1      frame kind (1 Request, 2 Response, 3 ErrorResponse, 4 OneWay, 5 GoAway)
//!  6      2      message type (the RPC method)
//!  8      8      request id
//! 16      4      body length in bytes
//! 20      4      reserved, zero
//! 24      4      CRC32C of the body
//! 28      4      CRC32C of bytes 0..28 (so it covers every header field and the body CRC)
//! 32      n      body
//! ```
//!
//! The header checksum is checked as soon as the header is in, before the length is
//! trusted, so a corrupted length can neither make the decoder wait for bytes that never
//! come nor allocate for them. The decoder never panics on any input (I-W2).

use crate::error::NetError;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// The magic bytes every frame starts with.
pub const FRAME_MAGIC: [u8; 4] = *b"KSKW";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest body a connection accepts by default.
pub const BODY_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Largest frame (header and body) a connection accepts by default.
pub const FRAME_BYTES_MAX_DEFAULT: usize = BODY_BYTES_MAX_DEFAULT + FRAME_HEADER_BYTES;

/// Most bytes the decoder reserves ahead of a large frame's received part.
pub const RESERVE_AHEAD_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(
    FRAME_BYTES_MAX_DEFAULT <= u32::MAX as usize,
    "body lengths are u32 on the wire"
);
const _: () = assert!(
    FRAME_HEADER_BYTES.is_multiple_of(16),
    "bodies keep the 16-byte alignment of a frame start"
);

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A call expecting a Response or ErrorResponse with the same request id.
    Request,
    /// The answer to a Request.
    Response,
    /// A typed error answer to a Request (body: [`crate::ErrorBody`]).
    ErrorResponse,
    /// A message expecting no answer.
    OneWay,
    /// The sender closes the connection (body: [`crate::ErrorBody`] with the reason).
    GoAway,
}

impl FrameKind {
    /// The wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            FrameKind::Request => 1,
            FrameKind::Response => 2,
            FrameKind::ErrorResponse => 3,
            FrameKind::OneWay => 4,
            FrameKind::GoAway => 5,
        }
    }

    /// The kind of a wire value.
    pub fn from_wire(kind: u8) -> Result<FrameKind, NetError> {
        match kind {
            1 => Ok(FrameKind::Request),
            2 => Ok(FrameKind::Response),
            3 => Ok(FrameKind::ErrorResponse),
            4 => Ok(FrameKind::OneWay),
            5 => Ok(FrameKind::GoAway),
            kind => Err(NetError::UnknownKind { kind }),
        }
    }
}

/// The fields of a frame header that the caller chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame is.
    pub kind: FrameKind,
    /// The RPC method (echoed in answers).
    pub message_type: u16,
    /// Matches answers to requests (0 for OneWay and GoAway by convention).
    pub request_id: u64,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Kind, message type and request id.
    pub header: FrameHeader,
    /// The body, checksum verified; its content is validated when decoded (I-W1).
    pub body: Vec<u8>,
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A parsed and checked header: the caller's fields plus the body length and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WireHeader {
    header: FrameHeader,
    body_bytes: usize,
    body_crc: u32,
}

/// Checks a complete header. `bytes` holds at least [`FRAME_HEADER_BYTES`].
fn parse_header(bytes: &[u8], frame_bytes_max: usize) -> Result<WireHeader, NetError> {
    check_magic(bytes)?;
    if bytes[4] != PROTOCOL_VERSION {
        return Err(NetError::UnsupportedVersion { version: bytes[4] });
    }
    if crc32c::crc32c(&bytes[..28]) != read_u32(bytes, 28) {
        return Err(NetError::BadChecksum { part: "header" });
    }
    let kind = FrameKind::from_wire(bytes[5])?;
    if read_u32(bytes, 20) != 0 {
        return Err(NetError::BadHeader {
            reason: "reserved field is not zero",
        });
    }
    let body_bytes = read_u32(bytes, 16) as usize;
    let frame_bytes = FRAME_HEADER_BYTES as u64 + body_bytes as u64;
    if frame_bytes > frame_bytes_max as u64 {
        return Err(NetError::FrameTooLarge {
            frame_bytes,
            frame_bytes_max,
        });
    }
    Ok(WireHeader {
        header: FrameHeader {
            kind,
            message_type: read_u16(bytes, 6),
            request_id: read_u64(bytes, 8),
        },
        body_bytes,
        body_crc: read_u32(bytes, 24),
    })
}

/// Checks the magic of a frame start (as many of its bytes as `bytes` holds, up to 4).
fn check_magic(bytes: &[u8]) -> Result<(), NetError> {
    let have = bytes.len().min(FRAME_MAGIC.len());
    if bytes[..have] != FRAME_MAGIC[..have] {
        let mut found = [0u8; 4];
        found[..have].copy_from_slice(&bytes[..have]);
        return Err(NetError::BadMagic { found });
    }
    Ok(())
}

/// Writes frames into a caller's reusable buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameEncoder {
    frame_bytes_max: usize,
}

impl Default for FrameEncoder {
    fn default() -> FrameEncoder {
        FrameEncoder::new(FRAME_BYTES_MAX_DEFAULT)
    }
}

impl FrameEncoder {
    /// An encoder refusing frames over `frame_bytes_max` (header included).
    pub fn new(frame_bytes_max: usize) -> FrameEncoder {
        FrameEncoder { frame_bytes_max }
    }

    /// The largest frame it writes.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Bytes a frame with `body_bytes` of body takes, or `FrameTooLarge`.
    pub fn frame_bytes(&self, body_bytes: usize) -> Result<usize, NetError> {
        let frame_bytes = FRAME_HEADER_BYTES.saturating_add(body_bytes);
        if frame_bytes > self.frame_bytes_max || body_bytes > u32::MAX as usize {
            return Err(NetError::FrameTooLarge {
                frame_bytes: frame_bytes as u64,
                frame_bytes_max: self.frame_bytes_max,
            });
        }
        Ok(frame_bytes)
    }

    /// Appends one frame to `out`. On error `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>, header: FrameHeader, body: &[u8]) -> Result<(), NetError> {
        let frame_bytes = self.frame_bytes(body.len())?;
        out.reserve(frame_bytes);
        let mut head = [0u8; FRAME_HEADER_BYTES];
        head[..4].copy_from_slice(&FRAME_MAGIC);
        head[4] = PROTOCOL_VERSION;
        head[5] = header.kind.to_wire();
        head[6..8].copy_from_slice(&header.message_type.to_le_bytes());
        head[8..16].copy_from_slice(&header.request_id.to_le_bytes());
        head[16..20].copy_from_slice(&(body.len() as u32).to_le_bytes());
        head[24..28].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
        let header_crc = crc32c::crc32c(&head[..28]);
        head[28..32].copy_from_slice(&header_crc.to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(body);
        Ok(())
    }
}

/// Turns a byte stream cut at arbitrary places into frames.
///
/// Feed bytes with [`FrameDecoder::feed`] (or receive straight into its buffer with
/// [`FrameDecoder::take_read_buffer`] / [`FrameDecoder::restore_read_buffer`]), then call
/// [`FrameDecoder::next_frame`] until it yields `None`. After an error the stream cannot
/// be resynchronized: the decoder answers `Closed` from then on and the connection must
/// be closed.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    consumed: usize,
    frame_bytes_max: usize,
    failed: bool,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames over `frame_bytes_max` (header included).
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            frame_bytes_max,
            failed: false,
        }
    }

    /// Bytes received and not yet yielded as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buffer.extend_from_slice(bytes);
    }

    /// Hands out the receive buffer with at least `spare_bytes_min` bytes of spare
    /// capacity (more when a large frame is partly in: up to the rest of that frame, at
    /// most [`RESERVE_AHEAD_BYTES_MAX`] ahead of what arrived, so a peer announcing a
    /// large frame holds memory only in proportion to what it sent), for a socket to
    /// receive into. Give it back with `restore_read_buffer`.
    pub fn take_read_buffer(&mut self, spare_bytes_min: usize) -> Vec<u8> {
        self.compact();
        let rest_of_frame = self.bytes_missing_for_current_frame();
        let spare = spare_bytes_min.max(rest_of_frame.min(RESERVE_AHEAD_BYTES_MAX));
        self.buffer.reserve(spare);
        std::mem::take(&mut self.buffer)
    }

    /// Takes back the buffer lent by `take_read_buffer`, with received bytes appended.
    pub fn restore_read_buffer(&mut self, buffer: Vec<u8>) {
        self.buffer = buffer;
    }

    /// At the end of the stream: `Truncated` if a partial frame is left.
    pub fn finish(&self) -> Result<(), NetError> {
        let have = self.buffered_bytes();
        if have == 0 {
            return Ok(());
        }
        let needed = have + self.bytes_missing_for_current_frame().max(1);
        Err(NetError::Truncated {
            bytes_have: have,
            bytes_needed: needed,
        })
    }

    /// The next complete frame, `None` if more bytes are needed, or the error that makes
    /// the stream unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, NetError> {
        if self.failed {
            return Err(NetError::closed("the frame decoder failed earlier"));
        }
        match self.try_next_frame() {
            Ok(frame) => Ok(frame),
            Err(error) => {
                self.failed = true;
                Err(error)
            }
        }
    }

    fn try_next_frame(&mut self) -> Result<Option<Frame>, NetError> {
        let pending = &self.buffer[self.consumed..];
        if pending.len() < FRAME_HEADER_BYTES {
            if !pending.is_empty() {
                check_magic(pending)?;
            }
            return Ok(None);
        }
        let wire = parse_header(pending, self.frame_bytes_max)?;
        let frame_bytes = FRAME_HEADER_BYTES + wire.body_bytes;
        if pending.len() < frame_bytes {
            return Ok(None);
        }
        let body = &pending[FRAME_HEADER_BYTES..frame_bytes];
        if crc32c::crc32c(body) != wire.body_crc {
            return Err(NetError::BadChecksum { part: "body" });
        }
        let frame = Frame {
            header: wire.header,
            body: body.to_vec(),
        };
        self.consumed += frame_bytes;
        if self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        }
        Ok(Some(frame))
    }

    /// Bytes still missing for the frame whose start is buffered (0 if the header is
    /// not complete or does not parse).
    fn bytes_missing_for_current_frame(&self) -> usize {
        let pending = &self.buffer[self.consumed..];
        if pending.len() < FRAME_HEADER_BYTES {
            return FRAME_HEADER_BYTES - pending.len();
        }
        match parse_header(pending, self.frame_bytes_max) {
            Ok(wire) => (FRAME_HEADER_BYTES + wire.body_bytes).saturating_sub(pending.len()),
            Err(_) => 0,
        }
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: FrameKind, request_id: u64) -> FrameHeader {
        FrameHeader {
            kind,
            message_type: 7,
            request_id,
        }
    }

    fn encoded(kind: FrameKind, request_id: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameEncoder::default()
            .encode(&mut out, header(kind, request_id), body)
            .unwrap();
        out
    }

    fn decode_all(decoder: &mut FrameDecoder) -> Result<Vec<Frame>, NetError> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn frames_round_trip_through_any_split() {
        let kinds = [
            FrameKind::Request,
            FrameKind::Response,
            FrameKind::ErrorResponse,
            FrameKind::OneWay,
            FrameKind::GoAway,
        ];
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (index, kind) in kinds.iter().enumerate() {
            let body: Vec<u8> = (0..index * 37).map(|byte| byte as u8).collect();
            stream.extend_from_slice(&encoded(*kind, index as u64 + 1, &body));
            expected.push(Frame {
                header: header(*kind, index as u64 + 1),
                body,
            });
        }
        for chunk_bytes in [1, 2, 3, 31, 32, 33, 100, stream.len()] {
            let mut decoder = FrameDecoder::default();
            let mut frames = Vec::new();
            for chunk in stream.chunks(chunk_bytes) {
                decoder.feed(chunk);
                frames.extend(decode_all(&mut decoder).unwrap());
            }
            assert_eq!(frames, expected, "chunks of {chunk_bytes}");
            decoder.finish().unwrap();
        }
    }

    #[test]
    fn read_buffer_lending_keeps_partial_frames() {
        let stream = [
            encoded(FrameKind::Request, 1, &[9; 1000]),
            encoded(FrameKind::OneWay, 0, b"x"),
        ]
        .concat();
        let mut decoder = FrameDecoder::default();
        decoder.feed(&stream[..40]);
        assert!(decoder.next_frame().unwrap().is_none());
        let mut buffer = decoder.take_read_buffer(16);
        assert!(
            buffer.capacity() - buffer.len() >= 1032 - 40,
            "reserves the rest of the frame"
        );
        buffer.extend_from_slice(&stream[40..]);
        decoder.restore_read_buffer(buffer);
        let frames = decode_all(&mut decoder).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].body, vec![9; 1000]);
        assert_eq!(frames[1].body, b"x");
    }

    #[test]
    fn bad_magic_is_reported_from_the_first_byte() {
        let mut decoder = FrameDecoder::default();
        decoder.feed(b"G");
        assert!(matches!(decoder.next_frame(), Err(NetError::BadMagic { .. })));
        // A failed decoder stays failed.
        assert!(matches!(decoder.next_frame(), Err(NetError::Closed { .. })));
    }

    fn decode_error(bytes: &[u8], frame_bytes_max: usize) -> NetError {
        let mut decoder = FrameDecoder::new(frame_bytes_max);
        decoder.feed(bytes);
        decode_all(&mut decoder).unwrap_err()
    }

    /// Rewrites the header checksum after a header field was changed.
    fn reseal(frame: &mut [u8]) {
        let crc = crc32c::crc32c(&frame[..28]);
        frame[28..32].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn every_decoder_error_is_typed() {
        let good = encoded(FrameKind::Request, 5, b"hello");
        let mut version = good.clone();
        version[4] = 2;
        assert!(matches!(
            decode_error(&version, 1024),
            NetError::UnsupportedVersion { version: 2 }
        ));
        let mut header_bit = good.clone();
        header_bit[9] ^= 1;
        assert!(matches!(
            decode_error(&header_bit, 1024),
            NetError::BadChecksum { part: "header" }
        ));
        let mut body_bit = good.clone();
        body_bit[33] ^= 0x80;
        assert!(matches!(
            decode_error(&body_bit, 1024),
            NetError::BadChecksum { part: "body" }
        ));
        let mut kind = good.clone();
        kind[5] = 9;
        reseal(&mut kind);
        assert!(matches!(decode_error(&kind, 1024), NetError::UnknownKind { kind: 9 }));
        let mut reserved = good.clone();
        reserved[21] = 1;
        reseal(&mut reserved);
        assert!(matches!(decode_error(&reserved, 1024), NetError::BadHeader { .. }));
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut huge);
        assert!(matches!(
            decode_error(&huge, FRAME_BYTES_MAX_DEFAULT),
            NetError::FrameTooLarge { .. }
        ));
        assert!(matches!(
            decode_error(&good, FRAME_HEADER_BYTES + 4),
            NetError::FrameTooLarge { frame_bytes: 37, .. }
        ));
        let mut decoder = FrameDecoder::default();
        decoder.feed(&good[..good.len() - 1]);
        assert!(decode_all(&mut decoder).unwrap().is_empty());
        assert!(matches!(
            decoder.finish(),
            Err(NetError::Truncated {
                bytes_have: 36,
                bytes_needed: 37
            })
        ));
        let mut decoder = FrameDecoder::default();
        decoder.feed(&good[..10]);
        assert!(matches!(
            decoder.finish(),
            Err(NetError::Truncated { bytes_have: 10, .. })
        ));
    }

    #[test]
    fn the_encoder_refuses_oversized_bodies_and_leaves_the_buffer_alone() {
        let encoder = FrameEncoder::new(FRAME_HEADER_BYTES + 8);
        let mut out = vec![1, 2, 3];
        encoder
            .encode(&mut out, header(FrameKind::Request, 1), &[0; 8])
            .unwrap();
        assert_eq!(out.len(), 3 + 40);
        let error = encoder
            .encode(&mut out, header(FrameKind::Request, 2), &[0; 9])
            .unwrap_err();
        assert!(matches!(error, NetError::FrameTooLarge { frame_bytes: 41, .. }));
        assert_eq!(out.len(), 43);
    }
}
