//! The `kiseki-control` binary as an operator runs it: its default configuration, and a
//! clear refusal (no panic) when its TLS files are missing.
//!
//! This file also makes `cargo test` build the `kiseki-control` executable in
//! `target/debug`, where `kiseki up` (and so the CLI's cluster tests) looks for it beside
//! `kiseki`: cargo builds a package's plain binaries for its integration tests only.

use std::process::Command;

fn control() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiseki-control"));
    command.env("RUST_BACKTRACE", "0");
    command
}

#[test]
fn print_config_shows_the_defaults() {
    let output = control().arg("print-config").output().unwrap();
    assert!(output.status.success(), "print-config exits 0: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    for line in [
        "listen = 127.0.0.1:9200",
        "cluster = 127.0.0.1:9100",
        "keyserver = 127.0.0.1:9300",
        "tls_name = control",
    ] {
        assert!(text.lines().any(|shown| shown == line), "{line:?} in {text}");
    }
}

#[test]
fn missing_tls_files_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = control()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "refused with exit code 1: {output:?}");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("ca.pem"), "the error names the missing file: {error}");
    assert!(!error.contains("panicked"), "no panic: {error}");
}

#[test]
fn unknown_arguments_are_refused() {
    let output = control().args(["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "clap's usage error: {output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-flag"));
}
