//! Write → read round trips, degraded reads, loss limits and tampering.

use kiseki_pipeline::{
    ChunkRef, ChunkingParams, Durability, Error, HashAlgorithm, ReadPipeline, StreamChunker, SystemKey, SystemKeyring,
    TenantKek, TenantKeys, TenantSecret, WriteConfig, WritePipeline, FRAGMENT_HEADER_BYTES,
};
use proptest::prelude::*;

const EC_4_2: Durability = Durability::ErasureCoded { data: 4, parity: 2 };
const EC_8_3: Durability = Durability::ErasureCoded { data: 8, parity: 3 };

fn data(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn small_chunking() -> ChunkingParams {
    ChunkingParams {
        chunk_bytes_min: 4 << 10,
        chunk_bytes_avg: 16 << 10,
        chunk_bytes_max: 64 << 10,
        normalization_level: 1,
    }
}

fn keyring() -> SystemKeyring {
    let mut keyring = SystemKeyring::new();
    keyring.insert(SystemKey::new(1, [11; 32]));
    keyring.insert(SystemKey::new(2, [22; 32]));
    keyring
}

/// Encodes one chunk and returns its reference and fragments.
fn encode(config: WriteConfig, tenant: &TenantKeys, plaintext: &[u8]) -> (ChunkRef, Vec<Vec<u8>>) {
    let keyring = keyring();
    let mut pipeline = WritePipeline::new(config).unwrap();
    let encoded = pipeline
        .encode_chunk(plaintext, tenant, keyring.current().unwrap())
        .unwrap();
    let fragments = encoded.fragments().map(|f| f.to_vec()).collect();
    (encoded.chunk_ref(), fragments)
}

fn read(
    hash: HashAlgorithm,
    chunk: &ChunkRef,
    durability: Durability,
    tenant: &TenantKeys,
    fragments: &[Option<&[u8]>],
) -> Result<Vec<u8>, Error> {
    let mut out = vec![0xee; chunk.chunk_bytes as usize + 7];
    ReadPipeline::new(hash).read_chunk(chunk, durability, tenant, &keyring(), fragments, &mut out)?;
    out.truncate(chunk.chunk_bytes as usize);
    Ok(out)
}

fn all(fragments: &[Vec<u8>]) -> Vec<Option<&[u8]>> {
    fragments.iter().map(|f| Some(f.as_slice())).collect()
}

#[test]
fn round_trip_every_scheme_and_hash() {
    let tenant = TenantKeys::cross_tenant(TenantKek::new([3; 32]));
    for hash in [HashAlgorithm::Blake3, HashAlgorithm::Sha256] {
        for durability in [EC_4_2, EC_8_3, Durability::Replicas(3), Durability::Replicas(1)] {
            for length in [1usize, 15, 16, 17, 1000, 65_536] {
                let plaintext = data(length, length as u64);
                let config = WriteConfig {
                    hash,
                    durability,
                    chunking: small_chunking(),
                };
                let (chunk, fragments) = encode(config, &tenant, &plaintext);
                assert_eq!(fragments.len(), durability.fragments_total());
                assert_eq!(chunk.epoch, 2);
                let back = read(hash, &chunk, durability, &tenant, &all(&fragments)).unwrap();
                assert_eq!(back, plaintext, "{hash:?} {durability:?} {length}");
                // No plaintext in any fragment (I-K1): a 16-byte window never appears.
                if length >= 64 {
                    for fragment in &fragments {
                        assert!(!fragment.windows(16).any(|w| w == &plaintext[20..36]));
                    }
                }
            }
        }
    }
}

#[test]
fn identical_content_has_identical_locator_across_tenants_but_not_keyed_tenants() {
    let plaintext = data(5000, 9);
    let a = TenantKeys::cross_tenant(TenantKek::new([1; 32]));
    let b = TenantKeys::cross_tenant(TenantKek::new([2; 32]));
    let c = TenantKeys::tenant_only(TenantKek::new([3; 32]), TenantSecret::new([4; 32]));
    let config = WriteConfig::default();
    let (ra, fa) = encode(config, &a, &plaintext);
    let (rb, fb) = encode(config, &b, &plaintext);
    let (rc, fc) = encode(config, &c, &plaintext);
    assert_eq!(ra.locator, rb.locator);
    assert_eq!(fa, fb, "convergent: same fragments for the same content");
    assert_ne!(ra.wrapped_key, rb.wrapped_key);
    assert_ne!(ra.locator, rc.locator);
    let back = read(HashAlgorithm::Blake3, &rc, EC_4_2, &c, &all(&fc)).unwrap();
    assert_eq!(back, plaintext);
}

#[test]
fn streaming_write_matches_slice_write() {
    let object = data(1 << 20, 5);
    let tenant = TenantKeys::cross_tenant(TenantKek::new([7; 32]));
    let config = WriteConfig {
        chunking: small_chunking(),
        ..WriteConfig::default()
    };
    let system_key = SystemKey::new(2, [22; 32]);
    let mut pipeline = WritePipeline::new(config).unwrap();
    let mut from_slice = Vec::new();
    pipeline
        .write_slice(&object, &tenant, &system_key, |chunk| {
            from_slice.push((chunk.chunk_ref(), chunk.fragment(5).unwrap().to_vec()));
            Ok(())
        })
        .unwrap();
    let mut chunker = StreamChunker::new(&config.chunking, 8 << 10).unwrap();
    let mut from_stream = Vec::new();
    let chunks = pipeline
        .write_stream(&mut chunker, &mut &object[..], &tenant, &system_key, |chunk| {
            from_stream.push((chunk.chunk_ref(), chunk.fragment(5).unwrap().to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(chunks as usize, from_slice.len());
    assert!(chunks > 20);
    assert_eq!(from_slice, from_stream);
    // Reassemble the object from the chunk refs by reading every chunk back.
    let mut rebuilt = Vec::new();
    let mut reader = ReadPipeline::new(HashAlgorithm::Blake3);
    pipeline
        .write_slice(&object, &tenant, &system_key, |chunk| {
            let fragments: Vec<Vec<u8>> = chunk.fragments().map(|f| f.to_vec()).collect();
            let mut out = vec![0; chunk.chunk_bytes as usize];
            reader.read_chunk(
                &chunk.chunk_ref(),
                EC_4_2,
                &tenant,
                &keyring(),
                &all(&fragments),
                &mut out,
            )?;
            rebuilt.extend_from_slice(&out);
            Ok(())
        })
        .unwrap();
    assert_eq!(rebuilt, object);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let tenant = TenantKeys::cross_tenant(TenantKek::new([3; 32]));
    let system_key = SystemKey::new(1, [1; 32]);
    let mut pipeline = WritePipeline::new(WriteConfig {
        chunking: small_chunking(),
        ..WriteConfig::default()
    })
    .unwrap();
    assert!(matches!(
        pipeline.encode_chunk(&[], &tenant, &system_key),
        Err(Error::InvalidParams { .. })
    ));
    assert!(matches!(
        pipeline.encode_chunk(&vec![0; (64 << 10) + 1], &tenant, &system_key),
        Err(Error::InvalidParams { .. })
    ));
    for durability in [
        Durability::ErasureCoded { data: 0, parity: 2 },
        Durability::ErasureCoded { data: 200, parity: 100 },
        Durability::Replicas(0),
    ] {
        assert!(matches!(
            WritePipeline::new(WriteConfig {
                durability,
                ..WriteConfig::default()
            }),
            Err(Error::InvalidParams { .. })
        ));
    }

    let plaintext = data(3000, 1);
    let (chunk, fragments) = encode(WriteConfig::default(), &tenant, &plaintext);
    let mut reader = ReadPipeline::new(HashAlgorithm::Blake3);
    let keyring = keyring();
    // Output buffer too small.
    let mut small = vec![0; 100];
    assert!(matches!(
        reader.read_chunk(&chunk, EC_4_2, &tenant, &keyring, &all(&fragments), &mut small),
        Err(Error::BufferTooSmall {
            needed: 3000,
            available: 100
        })
    ));
    let mut out = vec![0; 3000];
    // Wrong number of fragment slots, wrong durability.
    assert!(matches!(
        reader.read_chunk(&chunk, EC_4_2, &tenant, &keyring, &all(&fragments[..5]), &mut out),
        Err(Error::InvalidParams { .. })
    ));
    let wrong_scheme = Durability::ErasureCoded { data: 3, parity: 3 };
    assert!(matches!(
        reader.read_chunk(&chunk, wrong_scheme, &tenant, &keyring, &all(&fragments), &mut out),
        Err(Error::TooManyLost { .. })
    ));
    // Zero-length chunk reference.
    let empty = ChunkRef {
        chunk_bytes: 0,
        ..chunk
    };
    assert!(matches!(
        reader.read_chunk(&empty, EC_4_2, &tenant, &keyring, &all(&fragments), &mut out),
        Err(Error::InvalidParams { .. })
    ));
    // Truncated fragments and garbage in every slot.
    let truncated: Vec<Vec<u8>> = fragments.iter().map(|f| f[..f.len() / 2].to_vec()).collect();
    assert!(matches!(
        reader.read_chunk(&chunk, EC_4_2, &tenant, &keyring, &all(&truncated), &mut out),
        Err(Error::TooManyLost {
            usable: 0,
            corrupt: 6,
            ..
        })
    ));
    let garbage = [0u8; 10];
    let slots = vec![Some(&garbage[..]); 6];
    assert!(reader
        .read_chunk(&chunk, EC_4_2, &tenant, &keyring, &slots, &mut out)
        .is_err());
    // Unknown epoch.
    let future = ChunkRef { epoch: 9, ..chunk };
    assert!(matches!(
        reader.read_chunk(&future, EC_4_2, &tenant, &keyring, &all(&fragments), &mut out),
        Err(Error::UnknownEpoch { epoch: 9 })
    ));
    // Fragments of another chunk in the right slots.
    let (_, other) = encode(WriteConfig::default(), &tenant, &data(3000, 2));
    assert!(matches!(
        reader.read_chunk(&chunk, EC_4_2, &tenant, &keyring, &all(&other), &mut out),
        Err(Error::TooManyLost { .. })
    ));
    assert!(out.iter().all(|&b| b == 0), "no unauthenticated bytes on error");
}

#[test]
fn every_flipped_header_bit_is_detected_and_tolerated() {
    let tenant = TenantKeys::cross_tenant(TenantKek::new([3; 32]));
    let plaintext = data(2000, 3);
    let (chunk, fragments) = encode(WriteConfig::default(), &tenant, &plaintext);
    let mut reader = ReadPipeline::new(HashAlgorithm::Blake3);
    let keyring = keyring();
    let mut out = vec![0; 2000];
    for bit in 0..FRAGMENT_HEADER_BYTES * 8 {
        let mut tampered = fragments.clone();
        tampered[1][bit / 8] ^= 1 << (bit % 8);
        let outcome = reader
            .read_chunk(&chunk, EC_4_2, &tenant, &keyring, &all(&tampered), &mut out)
            .unwrap();
        assert!(outcome.corrupt.contains(1), "bit {bit}");
        assert!(outcome.degraded);
        assert_eq!(out, plaintext);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Any k of k+m fragments reconstruct the chunk.
    #[test]
    fn any_k_fragments_reconstruct(
        eight_three in any::<bool>(),
        length in 1usize..40_000,
        seed in any::<u64>(),
        order in any::<[u8; 11]>(),
    ) {
        let durability = if eight_three { EC_8_3 } else { EC_4_2 };
        let total = durability.fragments_total();
        let needed = durability.fragments_needed();
        let tenant = TenantKeys::cross_tenant(TenantKek::new([5; 32]));
        let plaintext = data(length, seed);
        let config = WriteConfig { durability, chunking: small_chunking(), ..WriteConfig::default() };
        let (chunk, fragments) = encode(config, &tenant, &plaintext);
        // Keep a pseudo-random k-subset.
        let mut indices: Vec<usize> = (0..total).collect();
        indices.sort_by_key(|&i| (order[i], i));
        let kept = &indices[..needed];
        let slots: Vec<Option<&[u8]>> = (0..total)
            .map(|i| kept.contains(&i).then(|| fragments[i].as_slice()))
            .collect();
        let back = read(HashAlgorithm::Blake3, &chunk, durability, &tenant, &slots).unwrap();
        prop_assert_eq!(back, plaintext);
    }

    /// Any m+1 lost or corrupt fragments are reported, never mis-decoded.
    #[test]
    fn more_than_m_losses_are_reported(
        eight_three in any::<bool>(),
        length in 1usize..20_000,
        order in any::<[u8; 11]>(),
        corrupt_mask in any::<u16>(),
    ) {
        let durability = if eight_three { EC_8_3 } else { EC_4_2 };
        let total = durability.fragments_total();
        let tenant = TenantKeys::cross_tenant(TenantKek::new([5; 32]));
        let plaintext = data(length, length as u64);
        let config = WriteConfig { durability, chunking: small_chunking(), ..WriteConfig::default() };
        let (chunk, mut fragments) = encode(config, &tenant, &plaintext);
        let mut indices: Vec<usize> = (0..total).collect();
        indices.sort_by_key(|&i| (order[i], i));
        let lost = &indices[..durability.losses_tolerated() + 1];
        // Some lost fragments are absent, the others present but corrupt.
        for &i in lost {
            if corrupt_mask & (1 << i) != 0 {
                let middle = fragments[i].len() / 2;
                fragments[i][middle] ^= 0x40;
            }
        }
        let slots: Vec<Option<&[u8]>> = (0..total)
            .map(|i| {
                (!lost.contains(&i) || corrupt_mask & (1 << i) != 0).then(|| fragments[i].as_slice())
            })
            .collect();
        let result = read(HashAlgorithm::Blake3, &chunk, durability, &tenant, &slots);
        let is_too_many_lost = matches!(result, Err(Error::TooManyLost { .. }));
        prop_assert!(is_too_many_lost);
    }

    /// A flipped bit anywhere in any fragment is detected; up to m of them are tolerated.
    #[test]
    fn flipped_payload_bits_are_detected(
        fragment_index in 0usize..6,
        bit in any::<u32>(),
    ) {
        let tenant = TenantKeys::cross_tenant(TenantKek::new([5; 32]));
        let plaintext = data(10_000, 77);
        let (chunk, mut fragments) = encode(WriteConfig::default(), &tenant, &plaintext);
        let fragment = &mut fragments[fragment_index];
        let bit = bit as usize % (fragment.len() * 8);
        fragment[bit / 8] ^= 1 << (bit % 8);
        let mut out = vec![0; plaintext.len()];
        let outcome = ReadPipeline::new(HashAlgorithm::Blake3)
            .read_chunk(&chunk, EC_4_2, &tenant, &keyring(), &all(&fragments), &mut out)
            .unwrap();
        prop_assert!(outcome.corrupt.contains(fragment_index) || fragment_index >= 4);
        prop_assert_eq!(out, plaintext);
    }
}
