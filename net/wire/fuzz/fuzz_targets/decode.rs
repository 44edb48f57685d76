//! Fuzz target: arbitrary bytes through the frame decoder (cut into chunks of a size
//! taken from the first byte) and every frame body, and the whole input, through
//! `decode_body` of a representative message and of `ErrorBody`. Any panic is a bug
//! (I-W2); anything `decode_body` accepts has passed validation (I-W1).
#![no_main]

use kiseki_net::{decode_body, ErrorBody, FrameDecoder};
use libfuzzer_sys::fuzz_target;
use rkyv::{Archive, Deserialize, Serialize};

/// Frames larger than this are refused; keeps each run's memory small.
const FRAME_BYTES_MAX: usize = 64 * 1024;

/// A representative request, kept identical to `FragmentPut` in
/// `net/wire/tests/common/mod.rs` so that the seed corpus stays meaningful.
#[derive(Debug, Archive, Serialize, Deserialize)]
pub struct FragmentPut {
    pub locator: [u8; 32],
    pub epoch: u32,
    pub offset: u64,
    pub data: Vec<u8>,
    pub tags: Vec<String>,
    pub expected_generation: Option<u64>,
    pub durability: Durability,
}

/// A representative enum with data.
#[derive(Debug, Archive, Serialize, Deserialize)]
pub enum Durability {
    Replicas(u8),
    ErasureCoded { data: u8, parity: u8 },
}

fn decode_bodies(body: &[u8]) {
    let _ = decode_body::<FragmentPut>(body);
    let _ = decode_body::<ErrorBody>(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let chunk_bytes = usize::from(selector % 64) + 1;
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    'feeding: for chunk in stream.chunks(chunk_bytes) {
        decoder.feed(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => decode_bodies(&frame.body),
                Ok(None) => break,
                Err(_) => break 'feeding,
            }
        }
    }
    let _ = decoder.finish();
    decode_bodies(stream);
});
