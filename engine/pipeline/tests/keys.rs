//! Key separation: I-K2 (no tenant KEK, no data) and crypto-shred.

use kiseki_pipeline::{
    ChunkRef, Durability, Error, HashAlgorithm, ReadPipeline, SystemKey, SystemKeyring, TenantKek, TenantKeys,
    WriteConfig, WritePipeline,
};

const EC_4_2: Durability = Durability::ErasureCoded { data: 4, parity: 2 };

fn every_system_key() -> SystemKeyring {
    let mut keyring = SystemKeyring::new();
    for epoch in 0..8u32 {
        keyring.insert(SystemKey::new(epoch, [epoch as u8 + 100; 32]));
    }
    keyring
}

fn write(tenant: &TenantKeys, plaintext: &[u8]) -> (ChunkRef, Vec<Vec<u8>>) {
    let keyring = every_system_key();
    let mut pipeline = WritePipeline::new(WriteConfig::default()).unwrap();
    let chunk = pipeline
        .encode_chunk(plaintext, tenant, keyring.current().unwrap())
        .unwrap();
    (chunk.chunk_ref(), chunk.fragments().map(|f| f.to_vec()).collect())
}

fn read_with(tenant: &TenantKeys, chunk: &ChunkRef, fragments: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let slots: Vec<Option<&[u8]>> = fragments.iter().map(|f| Some(f.as_slice())).collect();
    let mut out = vec![0; chunk.chunk_bytes as usize];
    ReadPipeline::new(HashAlgorithm::Blake3).read_chunk(
        chunk,
        EC_4_2,
        tenant,
        &every_system_key(),
        &slots,
        &mut out,
    )?;
    Ok(out)
}

/// I-K2: a holder of every system key, the fragments and the extent map entry (locator,
/// wrapped key, epoch), but not the tenant KEK, decrypts nothing: other KEKs (random, of
/// other tenants, all-zero) fail to unwrap the content key, at every epoch.
#[test]
fn every_system_key_without_the_tenant_kek_decrypts_nothing() {
    let owner = TenantKeys::cross_tenant(TenantKek::new([42; 32]));
    let plaintext = b"tenant data that must stay private".repeat(100);
    let (chunk, fragments) = write(&owner, &plaintext);
    assert_eq!(read_with(&owner, &chunk, &fragments).unwrap(), plaintext);

    let mut attackers = vec![
        TenantKeys::cross_tenant(TenantKek::new([0; 32])),
        TenantKeys::cross_tenant(TenantKek::new([43; 32])),
    ];
    for _ in 0..8 {
        attackers.push(TenantKeys::cross_tenant(TenantKek::generate().unwrap()));
    }
    for attacker in &attackers {
        for epoch in 0..8 {
            let at_epoch = ChunkRef { epoch, ..chunk };
            let result = read_with(attacker, &at_epoch, &fragments);
            assert!(matches!(result, Err(Error::Crypto(_))), "{result:?}");
        }
    }
}

/// Crypto-shred: destroying tenant A's KEK makes A's chunks unreadable, while tenant B,
/// which stored the same content (same locator, same fragments, its own wrapped key),
/// still reads it.
#[test]
fn shredding_one_tenant_leaves_the_other_readable() {
    let mut tenant_a = TenantKeys::cross_tenant(TenantKek::new([1; 32]));
    let tenant_b = TenantKeys::cross_tenant(TenantKek::new([2; 32]));
    let plaintext = b"shared dataset shard".repeat(500);
    let (chunk_a, fragments) = write(&tenant_a, &plaintext);
    let (chunk_b, fragments_b) = write(&tenant_b, &plaintext);
    assert_eq!(chunk_a.locator, chunk_b.locator);
    assert_eq!(fragments, fragments_b, "stored once: dedup across tenants");

    tenant_a.kek.destroy();
    assert!(matches!(
        read_with(&tenant_a, &chunk_a, &fragments),
        Err(Error::KeyDestroyed)
    ));
    // A's wrapped key is useless to B's KEK as well.
    assert!(matches!(
        read_with(&tenant_b, &chunk_a, &fragments),
        Err(Error::Crypto(_))
    ));
    assert_eq!(read_with(&tenant_b, &chunk_b, &fragments).unwrap(), plaintext);
    // A destroyed KEK writes nothing new either.
    let mut pipeline = WritePipeline::new(WriteConfig::default()).unwrap();
    assert!(matches!(
        pipeline.encode_chunk(b"more", &tenant_a, &SystemKey::new(1, [1; 32])),
        Err(Error::KeyDestroyed)
    ));
}
