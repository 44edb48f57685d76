//! Arbitrary bytes as an NFS connection's stream of records: nothing may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiseki_gateway::nfs::fuzz_stream(data);
});
