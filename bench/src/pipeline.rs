//! `kiseki bench pipeline`: the chunk pipeline per core, against its stages alone.
//!
//! One in-memory object of pseudo-random (incompressible, never deduplicated) bytes is
//! cut into FastCDC chunks once; every figure is GB/s of plaintext over that same chunk
//! list, so stage and pipeline figures compare directly. Measured in one run:
//!
//! - baselines: `memcpy`, and each stage alone: chunking, content key (H, locator, key
//!   wrap), encrypt (DEK derivation + AES-256-GCM), Reed-Solomon encode, CRC32C of all
//!   fragments, fragment verification, decrypt, reconstruction;
//! - `write-<k+m>-<hash>`: chunk → key → encrypt → encode → CRC through `WritePipeline`,
//!   against the harmonic combination of its stages alone `1 / Σ(1 / stage)` (target
//!   ratio ≥ 0.85: nothing wasted between stages);
//! - `write-stream-...`: the same through `StreamChunker` reading a `Read`, against the
//!   harmonic combination of the stages plus one memcpy (the copy into the window);
//! - `read-<k+m>-<hash>`: verify → decrypt → `H(plaintext) == K`, against its stages;
//! - `read-degraded<n>-...`: with `n` data fragments lost, against the healthy read
//!   (absolute target: ≥ 1.5 GB/s per core with BLAKE3);
//! - `write-4+2-blake3-<N>core`: N threads, each with its own data and pipeline, against
//!   N × the 1-core figure (target ≥ 0.9, i.e. 2 cores ≥ 1.8 × 1 core).
//!
//! Each figure is the median of several passes after a warm-up pass.

use std::hint::black_box;
use std::time::Instant;

use kiseki_pipeline::chunking::chunk_slice;
use kiseki_pipeline::crypto::TAG_BYTES;
use kiseki_pipeline::{
    content_key, locator_of, ChunkCipher, ChunkRef, ChunkingParams, Codec, Durability, FragmentHeader, HashAlgorithm,
    ReadPipeline, StreamChunker, SystemKey, SystemKeyring, TenantKek, TenantKeys, WriteConfig, WritePipeline,
};

use crate::report::Case;

const SUITE: &str = "pipeline";
const GB: f64 = 1e9;

/// Options of the pipeline suite.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Cores to measure on (1 and this count); 0 means all available.
    pub cores: usize,
    /// Short run for CI smoke tests (a few seconds).
    pub quick: bool,
}

/// Sizes of one run.
#[derive(Clone, Copy)]
struct Plan {
    object_bytes: usize,
    passes: usize,
}

impl Plan {
    fn new(options: &PipelineOptions) -> Plan {
        if options.quick {
            Plan {
                object_bytes: 16 << 20,
                passes: 1,
            }
        } else {
            Plan {
                object_bytes: 256 << 20,
                passes: 3,
            }
        }
    }
}

/// Runs the pipeline suite and returns its cases.
pub fn run(options: &PipelineOptions) -> anyhow::Result<Vec<Case>> {
    let plan = Plan::new(options);
    let cores = match options.cores {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let bench = Bench::new(plan, 1)?;
    let mut cases = Vec::new();
    let stages = bench.stages(&mut cases)?;
    let mut write_4_2_blake3 = 0.0;
    for durability in [EC_4_2, EC_8_3] {
        for hash in [HashAlgorithm::Blake3, HashAlgorithm::Sha256] {
            let rate = bench.write_case(durability, hash, &stages, &mut cases)?;
            if durability == EC_4_2 && hash == HashAlgorithm::Blake3 {
                write_4_2_blake3 = rate;
            }
            bench.read_cases(durability, hash, &stages, &mut cases)?;
        }
    }
    bench.write_stream_case(EC_4_2, HashAlgorithm::Blake3, &stages, &mut cases)?;
    if cores > 1 {
        let rate = scaling(plan, cores)?;
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("write-4+2-blake3-{cores}core"),
            rate,
            "GB/s",
            &format!("1core×{cores}"),
            write_4_2_blake3 * cores as f64,
        ));
    }
    Ok(cases)
}

const EC_4_2: Durability = Durability::ErasureCoded { data: 4, parity: 2 };
const EC_8_3: Durability = Durability::ErasureCoded { data: 8, parity: 3 };

fn scheme_name(durability: Durability) -> String {
    match durability {
        Durability::Replicas(n) => format!("{n}x"),
        Durability::ErasureCoded { data, parity } => format!("{data}+{parity}"),
    }
}

fn hash_name(hash: HashAlgorithm) -> &'static str {
    match hash {
        HashAlgorithm::Blake3 => "blake3",
        HashAlgorithm::Sha256 => "sha256",
    }
}

/// 1 / Σ(1 / rate).
fn harmonic(rates: &[f64]) -> f64 {
    let inverse: f64 = rates.iter().map(|rate| 1.0 / rate).sum();
    if inverse > 0.0 {
        1.0 / inverse
    } else {
        0.0
    }
}

/// Pseudo-random bytes (xorshift; incompressible, distinct per seed).
fn object(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = vec![0u8; bytes];
    for word in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
    data
}

/// Median GB/s of `passes` timed runs of `pass` (after one warm-up), each processing
/// `bytes`.
fn measure<F>(passes: usize, bytes: usize, mut pass: F) -> anyhow::Result<f64>
where
    F: FnMut() -> anyhow::Result<()>,
{
    pass()?;
    let mut rates = Vec::with_capacity(passes);
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        pass()?;
        rates.push(bytes as f64 / start.elapsed().as_secs_f64() / GB);
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Stage rates of this run, GB/s of plaintext.
struct Stages {
    memcpy: f64,
    chunking: f64,
    key: [f64; 2],
    encrypt: f64,
    decrypt: f64,
    encode: [f64; 2],
    crc: [f64; 2],
    verify: [f64; 2],
}

fn hash_slot(hash: HashAlgorithm) -> usize {
    match hash {
        HashAlgorithm::Blake3 => 0,
        HashAlgorithm::Sha256 => 1,
    }
}

fn scheme_slot(durability: Durability) -> usize {
    usize::from(durability != EC_4_2)
}

/// One thread's data and keys.
struct Bench {
    plan: Plan,
    data: Vec<u8>,
    /// (offset, length) of every chunk of `data`.
    chunks: Vec<(usize, usize)>,
    chunking: ChunkingParams,
    tenant: TenantKeys,
    keyring: SystemKeyring,
}

impl Bench {
    fn new(plan: Plan, seed: u64) -> anyhow::Result<Bench> {
        let data = object(plan.object_bytes, seed);
        let chunking = ChunkingParams::default();
        let mut chunks = Vec::new();
        let mut offset = 0;
        for chunk in chunk_slice(&chunking, &data)? {
            chunks.push((offset, chunk.len()));
            offset += chunk.len();
        }
        let mut keyring = SystemKeyring::new();
        keyring.insert(SystemKey::new(1, [0x5a; 32]));
        Ok(Bench {
            plan,
            data,
            chunks,
            chunking,
            tenant: TenantKeys::cross_tenant(TenantKek::new([0xa5; 32])),
            keyring,
        })
    }

    fn system_key(&self) -> anyhow::Result<&SystemKey> {
        Ok(self.keyring.get(1)?)
    }

    fn chunk(&self, offset: usize, length: usize) -> &[u8] {
        &self.data[offset..offset + length]
    }

    fn stage(&self, cases: &mut Vec<Case>, name: &str, rate: f64, memcpy: f64) -> f64 {
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("stage-{name}"),
            rate,
            "GB/s",
            "memcpy",
            memcpy,
        ));
        rate
    }

    /// Measures every stage alone.
    fn stages(&self, cases: &mut Vec<Case>) -> anyhow::Result<Stages> {
        let bytes = self.data.len();
        let passes = self.plan.passes;
        let chunk_bytes_max = self.chunking.chunk_bytes_max as usize;
        let mut buffer = vec![0u8; chunk_bytes_max + TAG_BYTES];
        let memcpy = measure(passes, bytes, || {
            for &(offset, length) in &self.chunks {
                buffer[..length].copy_from_slice(self.chunk(offset, length));
            }
            black_box(&buffer);
            Ok(())
        })?;
        cases.push(Case::higher_is_better(
            SUITE, "memcpy", memcpy, "GB/s", "memcpy", memcpy,
        ));
        let chunking = measure(passes, bytes, || {
            black_box(chunk_slice(&self.chunking, &self.data)?.count());
            Ok(())
        })?;
        let chunking = self.stage(cases, "chunking", chunking, memcpy);
        let mut key = [0.0; 2];
        for hash in [HashAlgorithm::Blake3, HashAlgorithm::Sha256] {
            let rate = measure(passes, bytes, || {
                for &(offset, length) in &self.chunks {
                    let content = content_key(hash, &self.tenant.dedup, self.chunk(offset, length));
                    black_box(locator_of(hash, &content));
                    black_box(self.tenant.kek.wrap(&content)?);
                }
                Ok(())
            })?;
            key[hash_slot(hash)] = self.stage(cases, &format!("key-{}", hash_name(hash)), rate, memcpy);
        }
        let (encrypt, decrypt) = self.crypto_stages(cases, memcpy)?;
        let mut encode = [0.0; 2];
        let mut crc = [0.0; 2];
        let mut verify = [0.0; 2];
        for durability in [EC_4_2, EC_8_3] {
            let (e, c, v) = self.erasure_stages(durability, cases, memcpy)?;
            encode[scheme_slot(durability)] = e;
            crc[scheme_slot(durability)] = c;
            verify[scheme_slot(durability)] = v;
        }
        Ok(Stages {
            memcpy,
            chunking,
            key,
            encrypt,
            decrypt,
            encode,
            crc,
            verify,
        })
    }

    /// DEK derivation + AES-256-GCM seal (out of place), and open (out of place).
    fn crypto_stages(&self, cases: &mut Vec<Case>, memcpy: f64) -> anyhow::Result<(f64, f64)> {
        let bytes = self.data.len();
        let hash = HashAlgorithm::Blake3;
        let system_key = self.system_key()?;
        // Keys derived up front: the key stage is measured on its own.
        let keys: Vec<_> = self
            .chunks
            .iter()
            .map(|&(offset, length)| {
                let content = content_key(hash, &self.tenant.dedup, self.chunk(offset, length));
                let locator = locator_of(hash, &content);
                (content, locator)
            })
            .collect();
        let sealed_max = self.chunking.chunk_bytes_max as usize + TAG_BYTES;
        let mut sealed: Vec<Vec<u8>> = Vec::with_capacity(self.chunks.len());
        let mut buffer = vec![0u8; sealed_max];
        let encrypt = measure(self.plan.passes, bytes, || {
            for (&(offset, length), (content, locator)) in self.chunks.iter().zip(&keys) {
                let cipher = ChunkCipher::new(system_key, content, locator)?;
                let (ciphertext, tag) = buffer.split_at_mut(length);
                cipher.seal(self.chunk(offset, length), ciphertext, &mut tag[..TAG_BYTES])?;
            }
            black_box(&buffer);
            Ok(())
        })?;
        for (&(offset, length), (content, locator)) in self.chunks.iter().zip(&keys) {
            let cipher = ChunkCipher::new(system_key, content, locator)?;
            let mut out = vec![0u8; length + TAG_BYTES];
            let (ciphertext, tag) = out.split_at_mut(length);
            cipher.seal(self.chunk(offset, length), ciphertext, tag)?;
            sealed.push(out);
        }
        let decrypt = measure(self.plan.passes, bytes, || {
            for ((&(_, length), (content, locator)), sealed) in self.chunks.iter().zip(&keys).zip(&sealed) {
                let cipher = ChunkCipher::new(system_key, content, locator)?;
                cipher.open(&sealed[..length], &sealed[length..], &mut buffer[..length])?;
            }
            black_box(&buffer);
            Ok(())
        })?;
        Ok((
            self.stage(cases, "encrypt", encrypt, memcpy),
            self.stage(cases, "decrypt", decrypt, memcpy),
        ))
    }

    /// Reed-Solomon encode, CRC32C of all fragments, and verification of k fragments.
    fn erasure_stages(
        &self,
        durability: Durability,
        cases: &mut Vec<Case>,
        memcpy: f64,
    ) -> anyhow::Result<(f64, f64, f64)> {
        let bytes = self.data.len();
        let (data, parity) = match durability {
            Durability::ErasureCoded { data, parity } => (usize::from(data), usize::from(parity)),
            Durability::Replicas(_) => (1, 0),
        };
        let total = data + parity;
        let codec = Codec::new(data, parity)?;
        let shard_max = durability.shard_bytes(self.chunking.chunk_bytes_max as usize + TAG_BYTES);
        let mut shards = object(shard_max * total, 99);
        let name = scheme_name(durability);
        let encode = measure(self.plan.passes, bytes, || {
            for &(_, length) in &self.chunks {
                let shard = durability.shard_bytes(length + TAG_BYTES);
                codec.encode(&mut shards[..shard * total], shard)?;
            }
            black_box(&shards);
            Ok(())
        })?;
        let header = FragmentHeader {
            locator: kiseki_pipeline::Locator([1; 32]),
            durability,
            hash: HashAlgorithm::Blake3,
            index: 0,
            epoch: 1,
            payload_bytes: 0,
            chunk_bytes: 0,
        };
        let crc = measure(self.plan.passes, bytes, || {
            for &(_, length) in &self.chunks {
                let shard = durability.shard_bytes(length + TAG_BYTES);
                for payload in shards[..shard * total].chunks_exact(shard) {
                    black_box(header.encode(payload));
                }
            }
            Ok(())
        })?;
        // Verification parses whole fragments: build one per shard size in use.
        let fragments: Vec<Vec<Vec<u8>>> = self
            .chunks
            .iter()
            .take(64)
            .map(|&(_, length)| {
                let shard = durability.shard_bytes(length + TAG_BYTES);
                let header = FragmentHeader {
                    payload_bytes: shard as u32,
                    chunk_bytes: length as u32,
                    ..header
                };
                (0..data).map(|_| header.to_fragment(&shards[..shard])).collect()
            })
            .collect();
        let verified_bytes: usize = self.chunks.iter().take(64).map(|&(_, l)| l).sum();
        let verify = measure(self.plan.passes, verified_bytes, || {
            for chunk in &fragments {
                for fragment in chunk {
                    black_box(FragmentHeader::parse(fragment)?);
                }
            }
            Ok(())
        })?;
        Ok((
            self.stage(cases, &format!("encode-{name}"), encode, memcpy),
            self.stage(cases, &format!("crc-{name}"), crc, memcpy),
            self.stage(cases, &format!("verify-{name}"), verify, memcpy),
        ))
    }

    fn write_config(&self, durability: Durability, hash: HashAlgorithm) -> WriteConfig {
        WriteConfig {
            hash,
            durability,
            chunking: self.chunking,
        }
    }

    /// The write pipeline over the in-memory object; returns its rate.
    fn write_rate(&self, durability: Durability, hash: HashAlgorithm) -> anyhow::Result<f64> {
        let mut pipeline = WritePipeline::new(self.write_config(durability, hash))?;
        let system_key = self.system_key()?;
        measure(self.plan.passes, self.data.len(), || {
            pipeline.write_slice(&self.data, &self.tenant, system_key, |chunk| {
                black_box(chunk.fragment(0));
                Ok(())
            })?;
            Ok(())
        })
    }

    fn write_case(
        &self,
        durability: Durability,
        hash: HashAlgorithm,
        stages: &Stages,
        cases: &mut Vec<Case>,
    ) -> anyhow::Result<f64> {
        let rate = self.write_rate(durability, hash)?;
        let slot = scheme_slot(durability);
        let baseline = harmonic(&[
            stages.chunking,
            stages.key[hash_slot(hash)],
            stages.encrypt,
            stages.encode[slot],
            stages.crc[slot],
        ]);
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("write-{}-{}", scheme_name(durability), hash_name(hash)),
            rate,
            "GB/s",
            "harmonic(stages)",
            baseline,
        ));
        Ok(rate)
    }

    fn write_stream_case(
        &self,
        durability: Durability,
        hash: HashAlgorithm,
        stages: &Stages,
        cases: &mut Vec<Case>,
    ) -> anyhow::Result<()> {
        let mut pipeline = WritePipeline::new(self.write_config(durability, hash))?;
        let mut chunker = StreamChunker::new(&self.chunking, StreamChunker::READ_BUFFER_BYTES_DEFAULT)?;
        let system_key = self.system_key()?;
        let rate = measure(self.plan.passes, self.data.len(), || {
            let mut reader = &self.data[..];
            pipeline.write_stream(&mut chunker, &mut reader, &self.tenant, system_key, |chunk| {
                black_box(chunk.fragment(0));
                Ok(())
            })?;
            Ok(())
        })?;
        let slot = scheme_slot(durability);
        let baseline = harmonic(&[
            stages.chunking,
            stages.key[hash_slot(hash)],
            stages.encrypt,
            stages.encode[slot],
            stages.crc[slot],
            stages.memcpy,
        ]);
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("write-stream-{}-{}", scheme_name(durability), hash_name(hash)),
            rate,
            "GB/s",
            "harmonic(stages+memcpy)",
            baseline,
        ));
        Ok(())
    }

    /// Encodes the object and keeps every chunk's reference and fragments.
    fn encode_all(&self, durability: Durability, hash: HashAlgorithm) -> anyhow::Result<Vec<(ChunkRef, Vec<Vec<u8>>)>> {
        let mut pipeline = WritePipeline::new(self.write_config(durability, hash))?;
        let mut encoded = Vec::with_capacity(self.chunks.len());
        pipeline.write_slice(&self.data, &self.tenant, self.system_key()?, |chunk| {
            encoded.push((chunk.chunk_ref(), chunk.fragments().map(|f| f.to_vec()).collect()));
            Ok(())
        })?;
        Ok(encoded)
    }

    /// Reads every chunk with the first `lost` fragments missing; returns the rate.
    fn read_rate(
        &self,
        encoded: &[(ChunkRef, Vec<Vec<u8>>)],
        durability: Durability,
        hash: HashAlgorithm,
        lost: usize,
    ) -> anyhow::Result<f64> {
        let mut reader = ReadPipeline::new(hash);
        let mut out = vec![0u8; self.chunking.chunk_bytes_max as usize];
        let slots: Vec<Vec<Option<&[u8]>>> = encoded
            .iter()
            .map(|(_, fragments)| {
                fragments
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (i >= lost).then_some(f.as_slice()))
                    .collect()
            })
            .collect();
        measure(self.plan.passes, self.data.len(), || {
            for ((chunk, _), slots) in encoded.iter().zip(&slots) {
                reader.read_chunk(chunk, durability, &self.tenant, &self.keyring, slots, &mut out)?;
            }
            black_box(&out);
            Ok(())
        })
    }

    fn read_cases(
        &self,
        durability: Durability,
        hash: HashAlgorithm,
        stages: &Stages,
        cases: &mut Vec<Case>,
    ) -> anyhow::Result<()> {
        let encoded = self.encode_all(durability, hash)?;
        let name = format!("{}-{}", scheme_name(durability), hash_name(hash));
        let healthy = self.read_rate(&encoded, durability, hash, 0)?;
        let slot = scheme_slot(durability);
        let baseline = harmonic(&[stages.verify[slot], stages.decrypt, stages.key[hash_slot(hash)]]);
        cases.push(Case::higher_is_better(
            SUITE,
            &format!("read-{name}"),
            healthy,
            "GB/s",
            "harmonic(stages)",
            baseline,
        ));
        for lost in 1..=2 {
            let degraded = self.read_rate(&encoded, durability, hash, lost)?;
            cases.push(Case::higher_is_better(
                SUITE,
                &format!("read-degraded{lost}-{name}"),
                degraded,
                "GB/s",
                &format!("read-{name}"),
                healthy,
            ));
        }
        Ok(())
    }
}

/// The 4+2 BLAKE3 write pipeline on `cores` threads, each with its own data; aggregate
/// GB/s over the wall time of the slowest thread.
fn scaling(plan: Plan, cores: usize) -> anyhow::Result<f64> {
    let barrier = std::sync::Barrier::new(cores);
    let results: Vec<anyhow::Result<(usize, f64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cores)
            .map(|core| {
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<(usize, f64)> {
                    let bench = Bench::new(plan, 100 + core as u64)?;
                    let mut pipeline = WritePipeline::new(bench.write_config(EC_4_2, HashAlgorithm::Blake3))?;
                    let system_key = bench.system_key()?;
                    let mut pass = || -> anyhow::Result<()> {
                        pipeline.write_slice(&bench.data, &bench.tenant, system_key, |chunk| {
                            black_box(chunk.fragment(0));
                            Ok(())
                        })?;
                        Ok(())
                    };
                    pass()?;
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..plan.passes {
                        pass()?;
                    }
                    let seconds = start.elapsed().as_secs_f64();
                    Ok((bench.data.len() * plan.passes, seconds))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("bench thread panicked")))
            })
            .collect()
    });
    let mut bytes = 0;
    let mut seconds: f64 = 0.0;
    for result in results {
        let (thread_bytes, thread_seconds) = result?;
        bytes += thread_bytes;
        seconds = seconds.max(thread_seconds);
    }
    Ok(bytes as f64 / seconds / GB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmonic_of_equal_rates() {
        assert!((harmonic(&[2.0, 2.0]) - 1.0).abs() < 1e-12);
        assert_eq!(harmonic(&[]), 0.0);
    }

    /// `cargo test -p kiseki-bench --release -- --ignored --nocapture pipeline_full`
    #[test]
    #[ignore]
    fn pipeline_full() {
        let quick = std::env::var("KISEKI_BENCH_QUICK").is_ok();
        let cases = run(&PipelineOptions { cores: 2, quick }).unwrap();
        for case in &cases {
            crate::report::print_case(case, std::env::var("KISEKI_BENCH_JSON").is_ok());
        }
    }
}
