//! Tenancy end to end, as an operator and tenants run it through the `kiseki` command, the
//! S3 gateway and the key server (3 nodes × 2 devices, EC 4+2, under `kiseki up`):
//! tenants, namespaces and access keys made through the control plane; a tenant's
//! certificate opens its own namespace and nothing of another tenant's (control plane and
//! key server both refuse); quotas refuse writes past them with a clear error (EDQUOT,
//! S3 `QuotaExceeded`); maintenance makes the cluster read-only while reads go on; and
//! crypto-shred makes a tenant's files unreadable by any means while another tenant's
//! identical file (the same deduplicated chunks) still reads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{file_bytes, Cluster};
use kiseki_client::{ClientError, KeyServerClient, Profile, TlsIdentity};

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `kiseki` with `profile`; the output, success or not.
fn kiseki_as(profile: &Path, arguments: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(common::KISEKI)
        .args(arguments)
        .arg("--profile")
        .arg(profile)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A profile for tenant `tenant` with a certificate `tenant-NAME` issued by the
/// cluster's development CA.
fn tenant_profile(cluster: &Cluster, tenant: &str, namespace: &str) -> PathBuf {
    let tls = cluster.data_dir().join("tls");
    let name = format!("tenant-{tenant}");
    kiseki_net::tls::issue_certificate(&tls, &name, &["127.0.0.1".to_owned()], &tls).unwrap();
    let mut profile = Profile::load(&cluster.profile).unwrap();
    profile.tls = TlsIdentity::in_dir(&tls, &name);
    profile.tenant = tenant.into();
    profile.namespace = namespace.into();
    let path = cluster.data_dir().join(format!("{tenant}.json"));
    profile.save(&path).unwrap();
    path
}

fn refused(output: &std::process::Output, needle: &str) {
    assert!(!output.status.success(), "should have failed: {needle}");
    let stderr = stderr_of(output);
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn tenants_quotas_maintenance_and_crypto_shred() {
    let data_dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_sized(data_dir.path(), 3, 2, "1GiB");
    let admin = cluster.profile.clone();

    // The operator makes a tenant with a namespace under a quota.
    cluster.ok(&["tenant", "create", "acme"], None);
    cluster.ok(
        &[
            "namespace",
            "create",
            "data",
            "--tenant",
            "acme",
            "--durability",
            "4+2",
            "--quota-bytes",
            "4MiB",
            "--quota-files",
            "6",
        ],
        None,
    );
    refused(&cluster.kiseki(&["tenant", "create", "acme"], None), "exists already");
    refused(
        &cluster.kiseki(&["tenant", "create", "Bad_Name"], None),
        "a name holds only",
    );
    refused(
        &cluster.kiseki(&["namespace", "create", "x", "--tenant", "nobody"], None),
        "no such tenant nobody",
    );
    refused(
        &cluster.kiseki(&["namespace", "create", "x", "--durability", "abc"], None),
        "invalid",
    );
    let acme = tenant_profile(&cluster, "acme", "data");

    // Wrong-tenant access: acme's certificate opens acme's namespace only.
    let secret = file_bytes(3 << 20, 7, b"KISEKI-TENANT-MARKER");
    let written = kiseki_as(&acme, &["put", "-", "/same.bin"], Some(&secret));
    assert!(written.status.success(), "{}", stderr_of(&written));
    refused(
        &kiseki_as(
            &acme,
            &["ls", "/", "--tenant", "default", "--namespace", "default"],
            None,
        ),
        "tenant-acme may not open the namespaces of tenant default",
    );
    refused(
        &kiseki_as(&acme, &["tenant", "create", "evil"], None),
        "permission denied",
    );
    refused(&kiseki_as(&acme, &["maintenance", "on"], None), "permission denied");
    refused(
        &kiseki_as(&acme, &["key", "list", "--tenant", "default"], None),
        "permission denied",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acme_identity = Profile::load(&acme).unwrap();
    let keys_of = |profile: &Profile, tenant: &str| {
        runtime.block_on(async {
            let keyserver = KeyServerClient::connect(profile.keyserver, &profile.tls).await?;
            keyserver.tenant_keys(tenant).await
        })
    };
    assert!(matches!(
        keys_of(&acme_identity, "default"),
        Err(ClientError::Denied(_))
    ));
    assert!(keys_of(&acme_identity, "acme").is_ok());
    // A certificate of the CA that gives no role is refused outright.
    let tls = cluster.data_dir().join("tls");
    kiseki_net::tls::issue_certificate(&tls, "stranger", &["127.0.0.1".to_owned()], &tls).unwrap();
    let mut stranger = acme_identity.clone();
    stranger.tls = TlsIdentity::in_dir(&tls, "stranger");
    assert!(matches!(keys_of(&stranger, "acme"), Err(ClientError::Denied(_))));

    // Quotas: 4 MiB and 6 inodes. A second 3 MiB file is refused whole.
    let over = kiseki_as(&acme, &["put", "-", "/second.bin"], Some(&secret));
    refused(&over, "quota exceeded");
    let listed = String::from_utf8(cluster.ok(&["namespace", "list", "--tenant", "acme", "--json"], None)).unwrap();
    let usage: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(usage["used_bytes"], 3 << 20, "{listed}");
    for index in 0..4 {
        let made = kiseki_as(&acme, &["mkdir", &format!("/dir-{index}")], None);
        assert!(made.status.success(), "{}", stderr_of(&made));
    }
    refused(&kiseki_as(&acme, &["mkdir", "/one-too-many"], None), "quota exceeded");
    cluster.ok(
        &[
            "namespace",
            "quota",
            "data",
            "--tenant",
            "acme",
            "--bytes",
            "none",
            "--files",
            "none",
        ],
        None,
    );
    let lifted = kiseki_as(&acme, &["mkdir", "/one-too-many"], None);
    assert!(lifted.status.success(), "{}", stderr_of(&lifted));

    // Maintenance: every change is refused, reads go on, then writes come back.
    cluster.ok(&["maintenance", "on"], None);
    let status = String::from_utf8(cluster.ok(&["maintenance", "status", "--json"], None)).unwrap();
    assert!(!status.contains("writable") && status.contains("read-only"), "{status}");
    refused(
        &kiseki_as(&admin, &["put", "-", "/during.bin"], Some(b"no")),
        "read-only",
    );
    refused(&kiseki_as(&acme, &["rm", "/one-too-many"], None), "read-only");
    refused(&cluster.kiseki(&["tenant", "create", "late"], None), "read-only");
    let read = kiseki_as(&acme, &["get", "/same.bin"], None);
    assert!(
        read.status.success() && read.stdout == secret,
        "reads go on in maintenance"
    );
    cluster.ok(&["maintenance", "off"], None);
    cluster.ok(&["put", "-", "/same.bin"], Some(&secret));
    // A small file lives inline in its inode, sealed under acme's KEK.
    let small = file_bytes(2_000, 8, b"KISEKI-INLINE-MARKER");
    let written = kiseki_as(&acme, &["put", "-", "/small.txt"], Some(&small));
    assert!(written.status.success(), "{}", stderr_of(&written));
    let stat = String::from_utf8(kiseki_as(&acme, &["stat", "/small.txt", "--json"], None).stdout).unwrap();
    assert!(stat.contains("\"inline_bytes\":2000"), "{stat}");
    assert_eq!(kiseki_as(&acme, &["get", "/small.txt"], None).stdout, small);

    // Crypto-shred: acme's file and the default tenant's identical file share their
    // chunks (cross-tenant dedup); after the shred, acme's cannot be read by any means,
    // the default tenant's still can.
    refused(&cluster.kiseki(&["tenant", "shred", "acme"], None), "add --yes");
    cluster.ok(&["tenant", "shred", "acme", "--yes"], None);
    refused(&kiseki_as(&acme, &["get", "/same.bin"], None), "crypto-shredded");
    refused(
        &cluster.kiseki(&["get", "/same.bin", "--tenant", "acme", "--namespace", "data"], None),
        "crypto-shredded",
    );
    refused(
        &cluster.kiseki(&["get", "/small.txt", "--tenant", "acme", "--namespace", "data"], None),
        "crypto-shredded",
    );
    let admin_identity = Profile::load(&admin).unwrap();
    match keys_of(&admin_identity, "acme") {
        Err(ClientError::Service { message, .. }) => assert!(message.contains("destroyed"), "{message}"),
        other => panic!("the key server still serves a shredded tenant's keys: {other:?}"),
    }
    assert_eq!(
        cluster.ok(&["get", "/same.bin"], None),
        secret,
        "another tenant's copy reads"
    );
    let tenants = String::from_utf8(cluster.ok(&["tenant", "list"], None)).unwrap();
    assert!(tenants.contains("acme  shredded"), "{tenants}");
    let keyserver = String::from_utf8(cluster.ok(&["keyserver", "status", "--json"], None)).unwrap();
    assert!(keyserver.contains("\"tenants_destroyed\":1"), "{keyserver}");
    // No plaintext of either copy on any device, log or state file (I-K1).
    assert_eq!(
        common::any_file_holds(cluster.data_dir(), b"KISEKI-TENANT-MARKER"),
        None
    );
    // Nor of the inline file in any shard log, snapshot or device (I-K7).
    assert_eq!(
        common::any_file_holds(cluster.data_dir(), b"KISEKI-INLINE-MARKER"),
        None
    );

    // Restarted, everything is as it was left: records, keys, the shred.
    let cluster = cluster.restart_after(|_| {});
    assert_eq!(cluster.ok(&["get", "/same.bin"], None), secret);
    refused(&kiseki_as(&acme, &["get", "/same.bin"], None), "crypto-shredded");
    let namespaces = String::from_utf8(cluster.ok(&["namespace", "list"], None)).unwrap();
    assert!(
        namespaces.contains("acme/data") && namespaces.contains("default/default"),
        "{namespaces}"
    );
    cluster.stop();
}
