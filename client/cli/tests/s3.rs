//! The S3 gateway as users drive it: `kiseki up` starts it beside one node with six
//! devices (EC 4+2); boto3 runs every operation and error case of `s3_ops.py` for two
//! tenants; the aws CLI and rclone sync a tree both ways and compare checksums; a
//! multi-GiB sparse object goes up and down; objects are files for the native client
//! and the reverse; and a second gateway SIGKILLed mid-upload loses nothing that was
//! acknowledged, while its unfinished upload can be listed and aborted through the first.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{aws, aws_ok, make_tree, same_trees, succeed, with_credentials, Cluster, S3Credentials as Tenant};

/// The tenants of the test: `a` is the default tenant `kiseki up` made (its namespace
/// `default` is the one the data commands use), `b` a second tenant made through the
/// control plane with a namespace of its own and an access key.
fn tenants(cluster: &Cluster) -> (Tenant, Tenant) {
    let (access_key, secret_key) = cluster.default_s3_credentials();
    let a = Tenant { access_key, secret_key };
    cluster.ok(&["tenant", "create", "b"], None);
    cluster.ok(&["namespace", "create", "default", "--tenant", "b"], None);
    let created = cluster.ok(&["key", "create", "--tenant", "b", "--json"], None);
    let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
    let b = Tenant {
        access_key: created["access_key"].as_str().unwrap().to_owned(),
        secret_key: created["secret_key"].as_str().unwrap().to_owned(),
    };
    (a, b)
}

fn rclone(endpoint: &str, tenant: &Tenant, arguments: &[&str]) -> Command {
    let mut command = with_credentials("rclone", tenant);
    command
        .env("RCLONE_CONFIG_KISEKI_TYPE", "s3")
        .env("RCLONE_CONFIG_KISEKI_PROVIDER", "Other")
        .env("RCLONE_CONFIG_KISEKI_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_KISEKI_ACCESS_KEY_ID", &tenant.access_key)
        .env("RCLONE_CONFIG_KISEKI_SECRET_ACCESS_KEY", &tenant.secret_key)
        .env("RCLONE_CONFIG_KISEKI_REGION", "us-east-1")
        .env("RCLONE_CONFIG_KISEKI_FORCE_PATH_STYLE", "true")
        .args(arguments);
    command
}

/// Starts a second gateway on the same control plane; waits until it listens.
fn second_gateway(cluster: &Cluster) -> (Child, String) {
    let binary = Path::new(common::KISEKI).with_file_name("kiseki-gateway");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (control, keyserver) = cluster.services();
    let mut child = Command::new(binary)
        .args([
            "s3",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster",
            &cluster.seed,
        ])
        .args(["--control", &control, "--keyserver", &keyserver])
        .arg("--tls-dir")
        .arg(cluster.data_dir().join("tls"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("kiseki-gateway: S3 on"), "{line}");
    (child, format!("http://127.0.0.1:{port}"))
}

#[test]
fn s3_gateway_serves_real_clients() {
    let started = std::time::Instant::now();
    let step = |what: &str| eprintln!("s3 test: {what} after {:.1} s", started.elapsed().as_secs_f64());
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let cluster = Cluster::start_with_s3(&data_dir, 1, 6);
    let (a, b) = tenants(&cluster);
    let endpoint = cluster.s3_endpoint();

    // Every operation and error case through boto3, for two tenants.
    let script = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/s3_ops.py");
    let mut boto = with_credentials(common::venv().join("bin/python"), &a);
    boto.arg(&script)
        .arg(&endpoint)
        .env("KA_KEY", &a.access_key)
        .env("KA_SECRET", &a.secret_key)
        .env("KB_KEY", &b.access_key)
        .env("KB_SECRET", &b.secret_key);
    let output = succeed(boto, "s3_ops.py");
    assert!(String::from_utf8_lossy(&output.stdout).contains("all s3 checks passed"));

    step("boto3");
    // The aws CLI: sync a tree up and down.
    let tree = scratch.path().join("tree");
    make_tree(&tree);
    aws_ok(&endpoint, &a, &["s3", "mb", "s3://cli-tree"]);
    // One attempt with a short read timeout: a response the CLI cannot read fails here
    // instead of being retried after a minute (an empty file's PUT once left the
    // connection so that botocore misread the next response).
    let mut sync_up = aws(
        &endpoint,
        &a,
        &[
            "s3",
            "sync",
            tree.to_str().unwrap(),
            "s3://cli-tree/",
            "--cli-read-timeout",
            "20",
        ],
    );
    sync_up.env("AWS_MAX_ATTEMPTS", "1").env("AWS_RETRY_MODE", "standard");
    succeed(sync_up, "aws s3 sync up");
    let listing = aws_ok(&endpoint, &a, &["s3", "ls", "--recursive", "s3://cli-tree/"]);
    assert_eq!(listing.lines().count(), 8, "{listing}");
    let down = scratch.path().join("down-aws");
    aws_ok(&endpoint, &a, &["s3", "sync", "s3://cli-tree/", down.to_str().unwrap()]);
    same_trees(&tree, &down);

    step("aws cli sync");
    // rclone: sync up, check checksums against the listing's MD5 ETags, sync down.
    let mut up = rclone(
        &endpoint,
        &a,
        &["sync", "--checksum", tree.to_str().unwrap(), "kiseki:rclone-tree"],
    );
    up.arg("--s3-upload-cutoff").arg("6M").arg("--s3-chunk-size").arg("5M");
    succeed(up, "rclone sync up");
    succeed(
        rclone(&endpoint, &a, &["check", tree.to_str().unwrap(), "kiseki:rclone-tree"]),
        "rclone check",
    );
    let back = scratch.path().join("down-rclone");
    succeed(
        rclone(
            &endpoint,
            &a,
            &["sync", "--checksum", "kiseki:rclone-tree", back.to_str().unwrap()],
        ),
        "rclone sync down",
    );
    same_trees(&tree, &back);

    step("rclone");
    // A multi-GiB object: a sparse file through multipart, back byte for byte.
    let sparse = scratch.path().join("sparse.img");
    let file = std::fs::File::create(&sparse).unwrap();
    file.set_len(2 << 30).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .and_then(|mut file| {
            use std::io::{Seek, Write};
            file.seek(std::io::SeekFrom::Start((1 << 30) + 12345))?;
            file.write_all(b"a marker in the middle of two GiB")
        })
        .unwrap();
    aws_ok(
        &endpoint,
        &a,
        &["s3", "cp", sparse.to_str().unwrap(), "s3://cli-tree/sparse.img"],
    );
    let sparse_back = scratch.path().join("sparse-back.img");
    aws_ok(
        &endpoint,
        &a,
        &["s3", "cp", "s3://cli-tree/sparse.img", sparse_back.to_str().unwrap()],
    );
    let compared = Command::new("cmp").arg(&sparse).arg(&sparse_back).status().unwrap();
    assert!(compared.success(), "the 2 GiB object reads back identical");
    std::fs::remove_file(&sparse_back).unwrap();

    step("2 GiB object");
    // Objects are files and files are objects (tenant a's namespace `default`).
    let through_cli = cluster.ok(&["get", "/cli-tree/notes/readme.md", "-"], None);
    assert_eq!(through_cli, std::fs::read(tree.join("notes/readme.md")).unwrap());
    cluster.ok(
        &["put", "-", "/cli-tree/from-cli/hello.txt"],
        Some(b"written by kiseki put\n"),
    );
    let through_s3 = scratch.path().join("hello.txt");
    aws_ok(
        &endpoint,
        &a,
        &[
            "s3",
            "cp",
            "s3://cli-tree/from-cli/hello.txt",
            through_s3.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&through_s3).unwrap(), b"written by kiseki put\n");
    // Rewriting an object as a file drops its MD5: the ETag S3 shows changes with the bytes.
    let etag = |key: &str| {
        let head = aws_ok(
            &endpoint,
            &a,
            &["s3api", "head-object", "--bucket", "cli-tree", "--key", key],
        );
        let head: serde_json::Value = serde_json::from_str(&head).unwrap();
        head["ETag"].as_str().unwrap().trim_matches('"').to_owned()
    };
    let before = etag("notes/readme.md");
    cluster.ok(
        &["put", "-", "/cli-tree/notes/readme.md"],
        Some(b"rewritten as a file\n"),
    );
    assert_ne!(etag("notes/readme.md"), before, "a stale MD5 is never shown");

    gateway_killed_mid_upload(&cluster, &endpoint, &a, scratch.path());
    step("gateway killed");
    aborted_parts_are_reclaimed(&cluster, &endpoint, &a, scratch.path());
    step("aborted parts");
    cluster.stop();
}

/// A second gateway acknowledges an object and a part, then is SIGKILLed during an upload:
/// the first gateway serves the acknowledged object and the old version of the key being
/// replaced, lists the unfinished upload with its part, and aborts it.
fn gateway_killed_mid_upload(cluster: &Cluster, endpoint: &str, a: &Tenant, scratch: &Path) {
    let (mut doomed, doomed_endpoint) = second_gateway(cluster);
    let original = scratch.join("original.bin");
    std::fs::write(&original, vec![7u8; 3 << 20]).unwrap();
    aws_ok(
        &doomed_endpoint,
        a,
        &["s3", "cp", original.to_str().unwrap(), "s3://cli-tree/crash/key"],
    );
    let upload = aws_ok(
        &doomed_endpoint,
        a,
        &[
            "s3api",
            "create-multipart-upload",
            "--bucket",
            "cli-tree",
            "--key",
            "crash/parts",
            "--output",
            "text",
            "--query",
            "UploadId",
        ],
    );
    let upload_id = upload.trim().to_owned();
    aws_ok(
        &doomed_endpoint,
        a,
        &[
            "s3api",
            "upload-part",
            "--bucket",
            "cli-tree",
            "--key",
            "crash/parts",
            "--part-number",
            "1",
            "--upload-id",
            &upload_id,
            "--body",
            original.to_str().unwrap(),
        ],
    );
    // A large replacement of crash/key, killed while it streams.
    let large = scratch.join("large.bin");
    let data: Vec<u8> = (0..(400usize << 20)).map(|index| (index % 251) as u8).collect();
    std::fs::write(&large, data).unwrap();
    let mut replacing = aws(
        &doomed_endpoint,
        a,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "cli-tree",
            "--key",
            "crash/key",
            "--body",
            large.to_str().unwrap(),
        ],
    );
    let mut replacing = replacing.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .arg("-KILL")
        .arg(doomed.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    doomed.wait().unwrap();
    let _ = replacing.wait();

    let after = scratch.join("after.bin");
    aws_ok(
        endpoint,
        a,
        &["s3", "cp", "s3://cli-tree/crash/key", after.to_str().unwrap()],
    );
    let after = std::fs::read(&after).unwrap();
    assert!(
        after == std::fs::read(&original).unwrap() || after == std::fs::read(&large).unwrap(),
        "the key holds the old object or the whole new one ({} bytes)",
        after.len()
    );
    let uploads = aws_ok(
        endpoint,
        a,
        &["s3api", "list-multipart-uploads", "--bucket", "cli-tree"],
    );
    assert!(uploads.contains(&upload_id), "{uploads}");
    let parts = aws_ok(
        endpoint,
        a,
        &[
            "s3api",
            "list-parts",
            "--bucket",
            "cli-tree",
            "--key",
            "crash/parts",
            "--upload-id",
            &upload_id,
        ],
    );
    assert!(
        parts.contains("\"PartNumber\": 1") && parts.contains("3145728"),
        "{parts}"
    );
    aws_ok(
        endpoint,
        a,
        &[
            "s3api",
            "abort-multipart-upload",
            "--bucket",
            "cli-tree",
            "--key",
            "crash/parts",
            "--upload-id",
            &upload_id,
        ],
    );
    let uploads = aws_ok(
        endpoint,
        a,
        &["s3api", "list-multipart-uploads", "--bucket", "cli-tree"],
    );
    assert!(!uploads.contains(&upload_id), "{uploads}");
}

/// The parts of an aborted upload lose their chunk references: `kiseki gc` deletes their
/// fragments and nothing that an object still names.
fn aborted_parts_are_reclaimed(cluster: &Cluster, endpoint: &str, a: &Tenant, scratch: &Path) {
    // Nothing writes during these collections, so no grace is needed between the walks.
    let gc = |extra: &[&str]| -> serde_json::Value {
        let mut arguments = vec!["gc", "--grace-s", "0", "--json"];
        arguments.extend_from_slice(extra);
        cluster.admin_json(&arguments)
    };
    let unreferenced = |summary: &serde_json::Value| summary["fragments_unreferenced"].as_u64().unwrap();
    // What earlier steps left (the killed gateway's half-written object) goes first.
    gc(&[]);
    // Bytes of its own, so no chunk of the part is shared with an object.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let data = common::file_bytes(6 << 20, seed, b"");
    let part = scratch.join("reclaimed-part.bin");
    std::fs::write(&part, &data).unwrap();
    let key = ["--bucket", "cli-tree", "--key", "reclaimed/object"];
    let mut create = vec!["s3api", "create-multipart-upload"];
    create.extend_from_slice(&key);
    create.extend_from_slice(&["--output", "text", "--query", "UploadId"]);
    let upload_id = aws_ok(endpoint, a, &create).trim().to_owned();
    let mut upload = vec!["s3api", "upload-part", "--part-number", "1", "--upload-id", &upload_id];
    upload.extend_from_slice(&key);
    upload.extend_from_slice(&["--body", part.to_str().unwrap()]);
    aws_ok(endpoint, a, &upload);
    let held = gc(&["--dry-run"]);
    assert_eq!(unreferenced(&held), 0, "a stored part is referenced: {held}");

    let mut abort = vec!["s3api", "abort-multipart-upload", "--upload-id", &upload_id];
    abort.extend_from_slice(&key);
    aws_ok(endpoint, a, &abort);
    let released = gc(&["--dry-run"]);
    // 6 MiB is at least one chunk: at least its 4 + 2 fragments.
    assert!(unreferenced(&released) >= 6, "the aborted part's fragments: {released}");
    let collected = gc(&[]);
    assert_eq!(
        collected["fragments_deleted"], released["fragments_unreferenced"],
        "{collected}"
    );
    let again = gc(&["--dry-run"]);
    assert_eq!(unreferenced(&again), 0, "{again}");
    let status = cluster.admin_json(&["status", "--json"]);
    assert_eq!(
        status["chunks"]["degraded"].as_u64().unwrap(),
        0,
        "gc took a referenced fragment: {status}"
    );
    let listing = aws_ok(endpoint, a, &["s3", "ls", "--recursive", "s3://cli-tree/"]);
    assert!(!listing.contains("reclaimed/"), "{listing}");
}
