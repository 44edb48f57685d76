//! Random and mutated input never panics (I-W2) and is never taken for valid (I-W1):
//! the property behind the cargo-fuzz target, checked on every `cargo test`.

mod common;

use std::rc::Rc;

use common::*;
use kiseki_net::{
    decode_body, encode_body, serve_connection, ByteStream, ErrorBody, Frame, FrameDecoder, FrameEncoder, FrameHeader,
    FrameKind, MemoryStream, NetError, RpcConfig,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

const FRAME_BYTES_MAX: usize = 4096;

/// Decodes `stream` fed in chunks of the given sizes (cycled); the frames before the
/// first error, and the error.
fn decode_chunked(stream: &[u8], chunk_sizes: &[usize]) -> (Vec<Frame>, Option<NetError>) {
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut frames = Vec::new();
    let mut offset = 0;
    let mut sizes = chunk_sizes.iter().cycle();
    while offset < stream.len() {
        let size = (*sizes.next().unwrap_or(&1)).max(1).min(stream.len() - offset);
        decoder.feed(&stream[offset..offset + size]);
        offset += size;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, decoder.finish().err())
}

fn kind_strategy() -> impl Strategy<Value = FrameKind> {
    prop_oneof![
        Just(FrameKind::Request),
        Just(FrameKind::Response),
        Just(FrameKind::ErrorResponse),
        Just(FrameKind::OneWay),
        Just(FrameKind::GoAway),
    ]
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    (
        kind_strategy(),
        any::<u16>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, message_type, request_id, body)| Frame {
            header: FrameHeader {
                kind,
                message_type,
                request_id,
            },
            body,
        })
}

fn encode_frames(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        FrameEncoder::new(FRAME_BYTES_MAX)
            .encode(&mut out, frame.header, &frame.body)
            .unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic_the_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        chunks in prop::collection::vec(1usize..64, 1..8),
        with_magic in any::<bool>(),
    ) {
        let mut stream = bytes;
        if with_magic && stream.len() >= 5 {
            // Get past the magic and version checks often enough to reach the others.
            stream[..4].copy_from_slice(b"KSKW");
            stream[4] = 1;
        }
        let _ = decode_chunked(&stream, &chunks);
    }

    #[test]
    fn valid_streams_round_trip_and_any_bit_flip_is_caught(
        frames in prop::collection::vec(frame_strategy(), 1..5),
        chunks in prop::collection::vec(1usize..200, 1..6),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let stream = encode_frames(&frames);
        let (decoded, error) = decode_chunked(&stream, &chunks);
        prop_assert!(error.is_none());
        prop_assert_eq!(&decoded, &frames);

        let mut flipped = stream.clone();
        let position = flip.index(flipped.len());
        flipped[position] ^= 1 << bit;
        let (decoded, error) = decode_chunked(&flipped, &chunks);
        // Every frame before the damaged one decodes; the damaged one never does.
        prop_assert!(error.is_some(), "a flipped bit at {} went unnoticed", position);
        prop_assert!(decoded.len() < frames.len());
        prop_assert_eq!(&decoded[..], &frames[..decoded.len()]);
    }

    #[test]
    fn truncated_streams_are_reported(
        frames in prop::collection::vec(frame_strategy(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let stream = encode_frames(&frames);
        let end = cut.index(stream.len());
        let (decoded, error) = decode_chunked(&stream[..end], &[17]);
        let whole_frames_bytes = encode_frames(&decoded).len();
        if whole_frames_bytes == end {
            prop_assert!(error.is_none());
        } else {
            let truncated = matches!(error, Some(NetError::Truncated { .. }));
            prop_assert!(truncated, "{:?}", error);
        }
    }

    #[test]
    fn bodies_are_validated_before_use(
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        random in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let put = sample_put(seed);
        let mut body = encode_body(&put).unwrap();
        prop_assert_eq!(decode_body::<FragmentPut>(&body).unwrap(), put.clone());
        for (index, bit) in &flips {
            let position = index.index(body.len());
            body[position] ^= 1 << bit;
        }
        // A damaged archive is either refused or still a well-formed value: never a panic,
        // never an out-of-bounds read.
        let _ = decode_body::<FragmentPut>(&body);
        let _ = decode_body::<FragmentPut>(&random);
        let _ = decode_body::<ErrorBody>(&random);
        let _ = decode_body::<FragmentPut>(&body[..body.len() / 2]);
    }
}

/// One case of the live-connection property: valid requests, then possibly damage.
#[derive(Debug, Clone)]
struct LiveCase {
    bodies: Vec<Vec<u8>>,
    damage: Option<(usize, u8)>,
    garbage_tail: Vec<u8>,
}

fn live_case_strategy() -> impl Strategy<Value = LiveCase> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..6),
        prop::option::of((any::<usize>(), 0u8..8)),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(bodies, damage, garbage_tail)| LiveCase {
            bodies,
            damage,
            garbage_tail,
        })
}

/// Sends the case's bytes to a served in-memory connection and checks what comes back.
async fn run_live_case(case: LiveCase) {
    let (raw, server_end) = MemoryStream::pair(512);
    let server_end: Rc<dyn ByteStream> = Rc::new(server_end);
    let config = RpcConfig {
        frame_bytes_max: FRAME_BYTES_MAX,
        ..RpcConfig::tiny()
    };
    let serving = kiseki_runtime::spawn(
        "serve",
        serve_connection(server_end, Rc::new(TestService::default()), config, None),
    )
    .unwrap();
    let mut bytes = Vec::new();
    for (index, body) in case.bodies.iter().enumerate() {
        let header = FrameHeader {
            kind: FrameKind::Request,
            message_type: ECHO,
            request_id: index as u64 + 1,
        };
        FrameEncoder::new(FRAME_BYTES_MAX)
            .encode(&mut bytes, header, body)
            .unwrap();
    }
    let damaged = case.damage.is_some() || !case.garbage_tail.is_empty();
    if let Some((position, bit)) = case.damage {
        let position = position % bytes.len();
        bytes[position] ^= 1 << bit;
    }
    bytes.extend_from_slice(&case.garbage_tail);
    let raw = Rc::new(raw);
    let writer = Rc::clone(&raw);
    let sending = kiseki_runtime::spawn("send", async move {
        let (result, _) = writer.send_all(bytes).await;
        let _ = writer.close().await;
        result
    })
    .unwrap();
    // Read every answer until the server closes.
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut answers = Vec::new();
    loop {
        let buffer = decoder.take_read_buffer(256);
        let (received, buffer) = raw.recv(buffer).await;
        decoder.restore_read_buffer(buffer);
        if received.unwrap() == 0 {
            break;
        }
        while let Some(frame) = decoder.next_frame().expect("the server sends well-formed frames") {
            answers.push(frame);
        }
    }
    decoder.finish().expect("the server ends between frames");
    let served = serving.await;
    // The server may stop reading after a bad frame while we still send: either is fine.
    let _ = sending.await;
    // Every answer is a Response echoing its request, or the final GoAway.
    for (index, answer) in answers.iter().enumerate() {
        match answer.header.kind {
            FrameKind::Response => {
                let request = answer.header.request_id as usize;
                assert!(request >= 1 && request <= case.bodies.len());
                assert_eq!(answer.body, case.bodies[request - 1]);
            }
            FrameKind::GoAway => {
                assert_eq!(index, answers.len() - 1, "GoAway comes last");
                decode_body::<ErrorBody>(&answer.body).expect("a valid GoAway body");
            }
            FrameKind::ErrorResponse => {
                let body: ErrorBody = decode_body(&answer.body).unwrap();
                assert_eq!(body.code(), kiseki_net::ErrorCode::Busy, "only the window refuses");
            }
            other => panic!("unexpected {other:?} from the server"),
        }
    }
    if !damaged {
        assert!(served.is_ok(), "{served:?}");
        assert_eq!(answers.len(), case.bodies.len());
    }
}

#[test]
fn a_live_connection_survives_random_and_mutated_frames() {
    run(async {
        let mut runner = TestRunner::deterministic();
        let strategy = live_case_strategy();
        for _ in 0..2000 {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            run_live_case(case).await;
        }
    });
}

/// The checked-in seed corpus of the fuzz target (`fuzz/seeds/decode`) stays valid as the
/// format evolves: every seed is a selector byte, then either frames (`frame-*`) whose
/// bodies decode, or one archived `FragmentPut` (`body-*`).
#[test]
fn the_fuzz_seed_corpus_is_valid() {
    // `cargo test` sets the variable at run time too: a test binary shared through a
    // target directory with another checkout still reads this checkout's files.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let dir = std::path::Path::new(&manifest_dir).join("fuzz/seeds/decode");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let stream = &bytes[1..];
        if name.starts_with("body-") {
            decode_body::<FragmentPut>(stream).unwrap();
        } else {
            let (frames, error) = decode_chunked(stream, &[usize::from(bytes[0] % 64) + 1]);
            assert!(error.is_none() && !frames.is_empty(), "{name}: {error:?}");
            for frame in frames {
                match frame.header.kind {
                    FrameKind::ErrorResponse | FrameKind::GoAway => {
                        decode_body::<ErrorBody>(&frame.body).unwrap();
                    }
                    FrameKind::Request if !frame.body.is_empty() => {
                        decode_body::<FragmentPut>(&frame.body).unwrap();
                    }
                    _ => {}
                }
            }
        }
        seeds += 1;
    }
    assert!(seeds >= 5, "the seed corpus is missing");
}
