//! `kiseki-gateway` refuses bad tenants files with a clear message before it listens.

use std::process::Command;

const GATEWAY: &str = env!("CARGO_BIN_EXE_kiseki-gateway");

fn refused(contents: Option<&str>) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("gateway.json");
    if let Some(contents) = contents {
        std::fs::write(&path, contents).unwrap();
    }
    let output = Command::new(GATEWAY)
        .args(["s3", "--listen", "127.0.0.1:0", "--tenants"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success(), "started with {contents:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_tenants_files_are_refused() {
    assert!(refused(None).contains("No such file"));
    assert!(refused(Some("{not json")).contains("tenants file"));
    assert!(refused(Some(r#"{"tenants": []}"#)).contains("no tenants"));
    let twice = r#"{"tenants": [
        {"name": "a", "access_key": "K1", "secret_key": "S1", "namespace": 1, "keys": "k.json"},
        {"name": "b", "access_key": "K1", "secret_key": "S2", "namespace": 2, "keys": "k.json"}]}"#;
    assert!(refused(Some(twice)).contains("used twice"));
    let shared = r#"{"tenants": [
        {"name": "a", "access_key": "K1", "secret_key": "S1", "namespace": 1, "keys": "k.json"},
        {"name": "b", "access_key": "K2", "secret_key": "S2", "namespace": 1, "keys": "k.json"}]}"#;
    assert!(refused(Some(shared)).contains("two tenants"));
}
