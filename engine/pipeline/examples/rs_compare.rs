//! Measures the Reed-Solomon candidates of decision record 0003 on chunk-sized inputs:
//! encode and degraded decode (1 and 2 lost data shards) with a reused codec.
//!
//! `cargo run --release -p kiseki-pipeline --example rs_compare`

use std::time::Instant;

fn main() {
    let chunk_sizes = [1usize << 20, 4 << 20];
    let schemes = [(4usize, 2usize), (8, 3)];
    for &(k, m) in &schemes {
        for &chunk_bytes in &chunk_sizes {
            let shard_bytes = (chunk_bytes / k + 63) & !63;
            let data: Vec<Vec<u8>> = (0..k)
                .map(|i| (0..shard_bytes).map(|j| (j * 31 + i * 7) as u8).collect())
                .collect();
            erasure(k, m, shard_bytes, &data, chunk_bytes);
            simd(k, m, shard_bytes, &data, chunk_bytes);
        }
    }
}

fn rate(bytes: usize, iterations: usize, start: Instant) -> f64 {
    (bytes * iterations) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn iterations_for(chunk_bytes: usize) -> usize {
    (2usize << 30) / chunk_bytes
}

fn erasure(k: usize, m: usize, shard_bytes: usize, data: &[Vec<u8>], chunk_bytes: usize) {
    let codec = reed_solomon_erasure::galois_8::ReedSolomon::new(k, m).unwrap();
    let mut parity = vec![vec![0u8; shard_bytes]; m];
    let iterations = iterations_for(chunk_bytes);
    let start = Instant::now();
    for _ in 0..iterations {
        codec.encode_sep(data, &mut parity).unwrap();
    }
    let encode = rate(chunk_bytes, iterations, start);
    let mut decode = [0.0; 2];
    let mut call_us = [0.0; 2];
    for lost in 1..=2 {
        let mut shards: Vec<Vec<u8>> = data.iter().chain(parity.iter()).cloned().collect();
        let start = Instant::now();
        for _ in 0..iterations {
            let mut slots: Vec<(&mut [u8], bool)> = shards
                .iter_mut()
                .enumerate()
                .map(|(i, s)| (s.as_mut_slice(), i >= lost))
                .collect();
            codec.reconstruct_data(&mut slots).unwrap();
        }
        decode[lost - 1] = rate(chunk_bytes, iterations, start);
        call_us[lost - 1] = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        assert_eq!(shards[0], data[0]);
    }
    // Small stripes: per-call fixed cost.
    let small = small_stripe_erasure(k, m);
    println!(
        "reed-solomon-erasure {k}+{m} chunk {} KiB: encode {encode:.2} GB/s, decode 1 lost {:.2} GB/s ({:.0} us/call), 2 lost {:.2} GB/s ({:.0} us/call), 4 KiB stripe decode {small:.2} us",
        chunk_bytes >> 10, decode[0], call_us[0], decode[1], call_us[1]
    );
}

fn small_stripe_erasure(k: usize, m: usize) -> f64 {
    let codec = reed_solomon_erasure::galois_8::ReedSolomon::new(k, m).unwrap();
    let shard_bytes = 4096 / k;
    let mut shards = vec![vec![7u8; shard_bytes]; k + m];
    let iterations = 20_000;
    let start = Instant::now();
    for _ in 0..iterations {
        let mut slots: Vec<(&mut [u8], bool)> = shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| (s.as_mut_slice(), i != 0))
            .collect();
        codec.reconstruct_data(&mut slots).unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / iterations as f64
}

fn simd(k: usize, m: usize, shard_bytes: usize, data: &[Vec<u8>], chunk_bytes: usize) {
    let mut encoder = reed_solomon_simd::ReedSolomonEncoder::new(k, m, shard_bytes).unwrap();
    let mut parity = vec![vec![0u8; shard_bytes]; m];
    let iterations = iterations_for(chunk_bytes);
    let start = Instant::now();
    for _ in 0..iterations {
        encoder.reset(k, m, shard_bytes).unwrap();
        for shard in data {
            encoder.add_original_shard(shard).unwrap();
        }
        let result = encoder.encode().unwrap();
        for (out, recovery) in parity.iter_mut().zip(result.recovery_iter()) {
            out.copy_from_slice(recovery);
        }
    }
    let encode = rate(chunk_bytes, iterations, start);
    let mut decoder = reed_solomon_simd::ReedSolomonDecoder::new(k, m, shard_bytes).unwrap();
    let mut decode = [0.0; 2];
    let mut call_us = [0.0; 2];
    let mut restored = vec![vec![0u8; shard_bytes]; 2];
    for lost in 1..=2 {
        let start = Instant::now();
        for _ in 0..iterations {
            decoder.reset(k, m, shard_bytes).unwrap();
            for (i, shard) in data.iter().enumerate().skip(lost) {
                decoder.add_original_shard(i, shard).unwrap();
            }
            for (i, shard) in parity.iter().enumerate().take(lost) {
                decoder.add_recovery_shard(i, shard).unwrap();
            }
            let result = decoder.decode().unwrap();
            for (i, out) in restored.iter_mut().enumerate().take(lost) {
                out.copy_from_slice(result.restored_original(i).unwrap());
            }
        }
        decode[lost - 1] = rate(chunk_bytes, iterations, start);
        call_us[lost - 1] = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        assert_eq!(restored[0], data[0]);
    }
    let small = small_stripe_simd(k, m);
    println!(
        "reed-solomon-simd    {k}+{m} chunk {} KiB: encode {encode:.2} GB/s, decode 1 lost {:.2} GB/s ({:.0} us/call), 2 lost {:.2} GB/s ({:.0} us/call), 4 KiB stripe decode {small:.2} us",
        chunk_bytes >> 10, decode[0], call_us[0], decode[1], call_us[1]
    );
}

fn small_stripe_simd(k: usize, m: usize) -> f64 {
    let shard_bytes = 4096 / k;
    let data = vec![vec![7u8; shard_bytes]; k];
    let mut encoder = reed_solomon_simd::ReedSolomonEncoder::new(k, m, shard_bytes).unwrap();
    for shard in &data {
        encoder.add_original_shard(shard).unwrap();
    }
    let parity: Vec<Vec<u8>> = encoder.encode().unwrap().recovery_iter().map(|s| s.to_vec()).collect();
    let mut decoder = reed_solomon_simd::ReedSolomonDecoder::new(k, m, shard_bytes).unwrap();
    let iterations = 2_000;
    let start = Instant::now();
    for _ in 0..iterations {
        decoder.reset(k, m, shard_bytes).unwrap();
        for (i, shard) in data.iter().enumerate().skip(1) {
            decoder.add_original_shard(i, shard).unwrap();
        }
        decoder.add_recovery_shard(0, &parity[0]).unwrap();
        let _ = decoder.decode().unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / iterations as f64
}
