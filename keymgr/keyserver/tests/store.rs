//! The conformance suite every [`KeyStore`] passes, run against the encrypted file store
//! and the memory store, plus what only the file store must do (encryption at rest, the
//! master key's checks, atomic replacement).

use kiseki_keyserver::{
    EncryptedFileStore, KeyError, KeyState, KeyStore, MasterKey, MemoryStore, Secret32, SecretBytes, TenantRecord,
};

fn sample_state(tenants: usize) -> KeyState {
    let mut state = KeyState::new(Secret32::random().unwrap(), 1_700_000_000);
    for index in 0..tenants {
        state.tenants.insert(
            format!("tenant-{index}"),
            TenantRecord {
                provider: "internal".into(),
                sealed: SecretBytes::new(vec![index as u8; 64]),
                created_unix_s: 1_700_000_000 + index as u64,
                destroyed_unix_s: None,
            },
        );
    }
    state
}

/// What every store must do.
fn conformance(store: &mut dyn KeyStore) {
    assert!(store.load().unwrap().is_none(), "a new store holds nothing");
    let first = sample_state(2);
    store.save(&first).unwrap();
    assert_eq!(
        store.load().unwrap().as_ref(),
        Some(&first),
        "a save is loaded back whole"
    );
    let mut second = sample_state(3);
    second.system_keys.push(kiseki_keyserver::SystemKeyRecord {
        epoch: 2,
        key: Secret32::random().unwrap(),
        created_unix_s: 1_700_000_100,
    });
    store.save(&second).unwrap();
    assert_eq!(
        store.load().unwrap().as_ref(),
        Some(&second),
        "a save replaces the previous one"
    );
    assert!(!store.describe().is_empty());
}

#[test]
fn the_memory_store_conforms() {
    conformance(&mut MemoryStore::new().unwrap());
}

#[test]
fn the_encrypted_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
    conformance(&mut EncryptedFileStore::new(&dir.path().join("keys.state"), master));
}

#[test]
fn the_state_file_holds_no_key_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.state");
    let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
    let mut store = EncryptedFileStore::new(&path, master);
    let state = sample_state(1);
    store.save(&state).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let key = state.system_keys[0].key.expose();
    let hex = state.system_keys[0].key.to_hex();
    assert!(!bytes.windows(32).any(|window| window == key), "raw system key on disk");
    assert!(
        !bytes.windows(64).any(|window| window == hex.as_bytes()),
        "hex system key on disk"
    );
    assert!(
        !bytes.windows(8).any(|window| window == b"internal"),
        "the state is encrypted whole"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_wrong_master_key_or_a_damaged_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.state");
    let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
    EncryptedFileStore::new(&path, master.clone())
        .save(&sample_state(1))
        .unwrap();
    let other = MasterKey::create_file(&dir.path().join("other.key")).unwrap();
    assert!(matches!(
        EncryptedFileStore::new(&path, other).load(),
        Err(KeyError::WrongMasterKey { .. })
    ));
    let original = std::fs::read(&path).unwrap();
    let mut flipped = original.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        EncryptedFileStore::new(&path, master.clone()).load(),
        Err(KeyError::WrongMasterKey { .. })
    ));
    std::fs::write(&path, &original[..20]).unwrap();
    assert!(matches!(
        EncryptedFileStore::new(&path, master.clone()).load(),
        Err(KeyError::Corrupt { .. })
    ));
    std::fs::write(&path, b"{\"format_version\": 1}").unwrap();
    assert!(matches!(
        EncryptedFileStore::new(&path, master).load(),
        Err(KeyError::Corrupt { .. })
    ));
}

#[test]
fn master_key_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    MasterKey::create_file(&path).unwrap();
    assert!(
        MasterKey::create_file(&path).is_err(),
        "an existing master key is never replaced"
    );
    assert!(MasterKey::load(&path).is_ok());
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let error = MasterKey::load(&path).unwrap_err().to_string();
    assert!(error.contains("chmod 600"), "{error}");
    let short = dir.path().join("short.key");
    std::fs::write(&short, "abcd").unwrap();
    std::fs::set_permissions(&short, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(matches!(MasterKey::load(&short), Err(KeyError::MasterKey { .. })));
    assert!(MasterKey::load(&dir.path().join("missing.key")).is_err());
}
