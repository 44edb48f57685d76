//! The key manager over a real encrypted file: epochs, tenants, crypto-shred, and what a
//! reopen finds (I-K5), plus the provider conformance suite.

use std::path::Path;

use kiseki_keyserver::{
    EncryptedFileStore, InternalProvider, KeyError, KeyManager, KeyStore, KmsProvider, MasterKey, MemoryStore,
};

fn open(dir: &Path) -> Result<KeyManager, KeyError> {
    let master = MasterKey::load(&dir.join("master.key"))?;
    KeyManager::open(
        Box::new(EncryptedFileStore::new(&dir.join("keys.state"), master)),
        Box::new(InternalProvider),
    )
}

fn initialize(dir: &Path) -> KeyManager {
    let master = MasterKey::create_file(&dir.join("master.key")).unwrap();
    KeyManager::initialize(
        Box::new(EncryptedFileStore::new(&dir.join("keys.state"), master)),
        Box::new(InternalProvider),
        100,
    )
    .unwrap()
}

/// What every provider must do.
fn provider_conformance(provider: &mut dyn KmsProvider) {
    let a = provider.create("a").unwrap();
    let b = provider.create("b").unwrap();
    let opened = provider.open("a", &a).unwrap();
    assert_eq!(provider.open("a", &a).unwrap(), opened, "opening is repeatable");
    assert_ne!(
        provider.open("b", &b).unwrap().kek,
        opened.kek,
        "tenants get their own KEK"
    );
    assert_ne!(opened.kek, opened.dedup_secret);
    let mut destroyed = a.clone();
    provider.destroy("a", &mut destroyed).unwrap();
    assert!(destroyed.is_empty(), "destroy wipes the sealed form");
    assert!(matches!(
        provider.open("a", &destroyed),
        Err(KeyError::Destroyed { .. })
    ));
}

#[test]
fn the_internal_provider_conforms() {
    provider_conformance(&mut InternalProvider);
}

#[test]
fn initialize_once_then_open_finds_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let manager = initialize(dir.path());
    let keys = manager.system_keys();
    assert_eq!(keys.len(), 1);
    drop(manager);
    let master = MasterKey::load(&dir.path().join("master.key")).unwrap();
    let again = KeyManager::initialize(
        Box::new(EncryptedFileStore::new(&dir.path().join("keys.state"), master)),
        Box::new(InternalProvider),
        200,
    );
    assert!(
        matches!(again, Err(KeyError::Invalid(_))),
        "an existing state is never replaced"
    );
    assert_eq!(open(dir.path()).unwrap().system_keys(), keys);
    let empty = tempfile::tempdir().unwrap();
    MasterKey::create_file(&empty.path().join("master.key")).unwrap();
    assert!(matches!(open(empty.path()), Err(KeyError::NotInitialized { .. })));
}

#[test]
fn rotation_and_tenants_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager = initialize(dir.path());
    assert_eq!(manager.rotate(101).unwrap(), 2);
    assert_eq!(manager.current_epoch(), 2);
    let (info, created) = manager.create_tenant("acme", 102).unwrap();
    assert!(created && info.destroyed_unix_s.is_none());
    let (_, created_again) = manager.create_tenant("acme", 103).unwrap();
    assert!(!created_again, "creating live keys again keeps them");
    let acme = manager.tenant_keys("acme").unwrap();
    manager.create_tenant("other", 104).unwrap();
    drop(manager);
    let manager = open(dir.path()).unwrap();
    assert_eq!(manager.current_epoch(), 2);
    assert_eq!(manager.system_keys().len(), 2);
    assert_eq!(manager.tenant_keys("acme").unwrap(), acme);
    assert_eq!(manager.tenants().len(), 2);
    assert!(matches!(manager.tenant_keys("nobody"), Err(KeyError::NoTenant(_))));
}

#[test]
fn a_destroyed_tenant_stays_destroyed_and_leaves_no_key_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager = initialize(dir.path());
    manager.create_tenant("doomed", 1).unwrap();
    manager.create_tenant("kept", 1).unwrap();
    let doomed = manager.tenant_keys("doomed").unwrap();
    let kept = manager.tenant_keys("kept").unwrap();
    let info = manager.destroy_tenant("doomed", 2).unwrap();
    assert_eq!(info.destroyed_unix_s, Some(2));
    assert!(matches!(manager.tenant_keys("doomed"), Err(KeyError::Destroyed { .. })));
    assert!(matches!(
        manager.create_tenant("doomed", 3),
        Err(KeyError::Destroyed { .. })
    ));
    assert!(
        manager.destroy_tenant("doomed", 4).is_ok(),
        "destroying again is a no-op"
    );
    drop(manager);
    let manager = open(dir.path()).unwrap();
    assert!(matches!(manager.tenant_keys("doomed"), Err(KeyError::Destroyed { .. })));
    assert_eq!(manager.tenant_keys("kept").unwrap(), kept);
    // Even with the master key, the saved state no longer holds the destroyed KEK.
    let master = MasterKey::load(&dir.path().join("master.key")).unwrap();
    let bytes = std::fs::read(dir.path().join("keys.state")).unwrap();
    let state = kiseki_keyserver::open_state(&master, &bytes, &dir.path().join("keys.state")).unwrap();
    let plaintext = serde_json::to_vec(&state).unwrap();
    let hex = doomed.kek.to_hex();
    assert!(!plaintext.windows(64).any(|window| window == hex.as_bytes()));
    assert!(state.tenants["doomed"].sealed.is_empty());
}

#[test]
fn a_failed_save_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager = initialize(dir.path());
    manager.create_tenant("acme", 1).unwrap();
    // Make the state file's directory unwritable: the next save fails.
    let state_dir = dir.path().join("keys.tmp");
    std::fs::create_dir(&state_dir).unwrap();
    let error = manager.rotate(2).unwrap_err();
    assert!(matches!(error, KeyError::Io { .. }), "{error}");
    assert_eq!(manager.current_epoch(), 1, "the rotation did not happen");
    assert!(manager.destroy_tenant("acme", 3).is_err());
    assert!(manager.tenant_keys("acme").is_ok(), "the destroy did not happen either");
    std::fs::remove_dir(&state_dir).unwrap();
    assert_eq!(manager.rotate(4).unwrap(), 2);
}

#[test]
fn the_memory_store_backs_a_manager() {
    let mut manager =
        KeyManager::initialize(Box::new(MemoryStore::new().unwrap()), Box::new(InternalProvider), 1).unwrap();
    manager.create_tenant("a", 1).unwrap();
    assert_eq!(manager.status().tenants, 1);
    assert_eq!(manager.status().provider, "internal");
}

#[test]
fn service_keys_are_stable_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let manager = initialize(dir.path());
    let handles = manager.service_key("nfs-file-handles").unwrap();
    assert_ne!(
        handles,
        manager.service_key("other").unwrap(),
        "each name gives another key"
    );
    drop(manager);
    let reopened = open(dir.path()).unwrap();
    assert_eq!(
        reopened.service_key("nfs-file-handles").unwrap(),
        handles,
        "stable across restarts"
    );
    // A state saved before service keys existed gets its root at the first open, once.
    let mut old = kiseki_keyserver::MemoryStore::new().unwrap();
    let state = kiseki_keyserver::KeyState::new(kiseki_keyserver::Secret32::random().unwrap(), 1);
    KeyStore::save(&mut old, &state).unwrap();
    let upgraded = KeyManager::open(Box::new(old), Box::new(InternalProvider)).unwrap();
    assert!(upgraded.service_key("nfs-file-handles").is_ok());
}
