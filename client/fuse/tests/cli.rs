//! The `kiseki-client-fuse` command's refusals: bad mount options, a cluster that does not
//! answer and a missing key file end with a clear message and nothing mounted. (Mounts
//! themselves are tested against real clusters in `client/cli/tests/fuse.rs`, which also
//! needs this binary built.)

use std::process::Command;

const FUSE: &str = env!("CARGO_BIN_EXE_kiseki-client-fuse");

fn mount(arguments: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(FUSE)
        .arg("mount")
        .arg(dir.path())
        .args(arguments)
        .env_remove("KISEKI_CACHE_MODE")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_options_and_unreachable_clusters_are_refused_clearly() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    let keys = keys.path().to_str().unwrap();
    let (ok, stderr) = mount(&["--keys", keys, "--shard", "1", "-o", "cache_mode=fast"]);
    assert!(!ok && stderr.contains("cache_mode=fast"), "{stderr}");
    let (ok, stderr) = mount(&["--keys", keys, "--shard", "1", "-o", "no_such_option"]);
    assert!(!ok && stderr.contains("unknown option"), "{stderr}");
    let (ok, stderr) = mount(&["--keys", "/nonexistent/keys.json", "--shard", "1"]);
    assert!(!ok && stderr.contains("loading keys"), "{stderr}");
    let (ok, stderr) = mount(&["--keys", keys, "--shard", "1", "--tenant", "someone-else"]);
    assert!(!ok && stderr.contains("tenant someone-else"), "{stderr}");
    let (ok, stderr) = mount(&["--profile", "/nonexistent/client.json"]);
    assert!(!ok && stderr.contains("reading the profile"), "{stderr}");
    let help = Command::new(FUSE).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("unmount"));
}
