//! Arbitrary bytes as one S3 request: nothing may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiseki_gateway::fuzzing::serve_bytes(data);
});
