//! The NFS gateway as users drive it: `kiseki up` runs one beside one node with six
//! devices (EC 4+2), and the test runs a second with its own exports file (read-only,
//! root-squashed, all-squashed and address-restricted exports, and a namespace with a
//! files quota). `nfs_ops.py` drives every procedure through libnfs and a raw client with
//! the NFS3ERR code of each error case and the RPC-level refusals of bad input; the
//! libnfs tools (nfs-cp, nfs-ls, nfs-cat) copy a tree in and out; the tree is read
//! byte-identical over S3 and through a FUSE mount, and trees written there are read over
//! NFS; and after a SIGKILL of the gateway, handles and cookie verifiers still work,
//! committed data is there, an uncommitted write is gone and the write verifier changed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{aws_ok, free_port, make_tree, same_trees, succeed, Cluster, S3Credentials};

fn script() -> PathBuf {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    Path::new(&manifest_dir).join("tests/nfs_ops.py")
}

fn python(arguments: &[&str]) -> String {
    let mut command = Command::new("python3");
    command.arg(script()).args(arguments);
    let output = succeed(command, &format!("nfs_ops.py {arguments:?}"));
    String::from_utf8(output.stdout).unwrap()
}

/// A child process killed (SIGKILL) when dropped, also when a test fails half-way.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kiseki-gateway nfs` of the test's own, with `exports`; waits until it listens.
fn gateway(cluster: &Cluster, port: u16, exports: &Path) -> Killed {
    let binary = Path::new(common::KISEKI).with_file_name("kiseki-gateway");
    let (control, keyserver) = cluster.services();
    let mut child = Command::new(binary)
        .args([
            "nfs",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster",
            &cluster.seed,
        ])
        .args(["--control", &control, "--keyserver", &keyserver])
        .arg("--tls-dir")
        .arg(cluster.data_dir().join("tls"))
        .arg("--exports")
        .arg(exports)
        .arg("--cache-dir")
        .arg(cluster.data_dir().join("test-gateway-cache"))
        .env("KISEKI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("kiseki-gateway: NFS on"), "{line}");
    Killed(child)
}

fn url(port: u16, path: &str) -> String {
    format!("nfs://127.0.0.1{path}?version=3&nfsport={port}&mountport={port}")
}

/// Runs a libnfs tool that must succeed; its standard output.
fn libnfs_tool(tool: &str, arguments: &[&str]) -> Vec<u8> {
    let mut command = Command::new(tool);
    command.args(arguments);
    succeed(command, &format!("{tool} {arguments:?}")).stdout
}

/// Copies the files of `local` (relative paths `files`) into the export with nfs-cp,
/// making their directories through the CLI first (nfs-cp makes none).
fn copy_in(cluster: &Cluster, port: u16, local: &Path, remote: &str, files: &[String]) {
    for file in files {
        if let Some((directory, _)) = file.rsplit_once('/') {
            cluster.ok(&["mkdir", "-p", &format!("{remote}/{directory}")], None);
        }
        let target = url(port, &format!("/default/default{remote}/{file}"));
        libnfs_tool("nfs-cp", &[local.join(file).to_str().unwrap(), &target]);
    }
}

/// Every file under `root`, relative, sorted.
fn files_of(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    found.sort();
    found
}

fn fuse_available() -> bool {
    let root = std::fs::metadata("/proc/self").is_ok_and(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0);
    root && Path::new("/dev/fuse").exists() && Path::new(common::KISEKI).with_file_name("kiseki-client-fuse").is_file()
}

/// Mounts the default namespace through FUSE; the mount process (stopped with SIGTERM).
fn mount(cluster: &Cluster, point: &Path) -> Child {
    std::fs::create_dir_all(point).unwrap();
    let mut child = Command::new(Path::new(common::KISEKI).with_file_name("kiseki-client-fuse"))
        .arg("mount")
        .arg(point)
        .arg("--profile")
        .arg(&cluster.profile)
        .arg("-o")
        .arg(format!("cache_dir={}", point.with_extension("cache").display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("mounted "), "{line}");
    child
}

fn unmount(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// A tree written over NFS reads identical over S3 and through FUSE; trees written over
/// S3 and through FUSE read identical over NFS.
fn cross_protocol(cluster: &Cluster, port: u16, scratch: &Path) {
    let tree = scratch.join("tree");
    make_tree(&tree);
    let files = files_of(&tree);
    copy_in(cluster, port, &tree, "/nfs-tree", &files);
    let listing = String::from_utf8(libnfs_tool("nfs-ls", &[&url(port, "/default/default/nfs-tree/data")])).unwrap();
    assert!(listing.contains("blob-9m"), "{listing}");
    for file in &files {
        let read = libnfs_tool("nfs-cat", &[&url(port, &format!("/default/default/nfs-tree/{file}"))]);
        assert_eq!(read, std::fs::read(tree.join(file)).unwrap(), "nfs-cat {file}");
    }
    // Over S3: the namespace's top directory is a bucket.
    let (access_key, secret_key) = cluster.default_s3_credentials();
    let tenant = S3Credentials { access_key, secret_key };
    let endpoint = cluster.s3_endpoint();
    let down = scratch.join("down-s3");
    aws_ok(
        &endpoint,
        &tenant,
        &["s3", "sync", "s3://nfs-tree/", down.to_str().unwrap()],
    );
    same_trees(&tree, &down);
    // And the reverse: written over S3, read over NFS.
    aws_ok(&endpoint, &tenant, &["s3", "mb", "s3://s3-tree"]);
    aws_ok(
        &endpoint,
        &tenant,
        &["s3", "sync", tree.to_str().unwrap(), "s3://s3-tree/"],
    );
    for file in &files {
        let read = libnfs_tool("nfs-cat", &[&url(port, &format!("/default/default/s3-tree/{file}"))]);
        assert_eq!(read, std::fs::read(tree.join(file)).unwrap(), "S3 → NFS {file}");
    }
    if !fuse_available() {
        eprintln!("SKIPPED: the FUSE side of the cross-protocol check needs root and /dev/fuse");
        return;
    }
    let point = scratch.join("mnt");
    let mounted = mount(cluster, &point);
    same_trees(&tree, &point.join("nfs-tree"));
    let from_fuse = point.join("fuse-tree");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&tree)
        .arg(&from_fuse)
        .status()
        .unwrap();
    assert!(copied.success());
    unmount(mounted);
    for file in &files {
        let read = libnfs_tool("nfs-cat", &[&url(port, &format!("/default/default/fuse-tree/{file}"))]);
        assert_eq!(read, std::fs::read(tree.join(file)).unwrap(), "FUSE → NFS {file}");
    }
}

#[test]
fn nfs_gateway_serves_real_clients() {
    let scratch = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with_s3(&scratch.path().join("data"), 1, 6);
    for name in ["ro", "squashed", "everyone", "narrow"] {
        cluster.ok(&["namespace", "create", name], None);
    }
    cluster.ok(&["namespace", "create", "quota", "--quota-files", "5"], None);
    let exports = scratch.path().join("exports.json");
    let options = serde_json::json!({
        "defaults": { "clients": ["127.0.0.0/8"], "squash": "none" },
        "exports": {
            "/default/ro": { "read_only": true },
            "/default/squashed": { "squash": "root" },
            "/default/everyone": { "squash": "all", "anon_uid": 4242, "anon_gid": 4343 },
            "/default/narrow": { "clients": ["127.0.0.1/32"] }
        }
    });
    std::fs::write(&exports, options.to_string()).unwrap();
    let port = free_port();
    let own = gateway(&cluster, port, &exports);

    let output = python(&["checks", &port.to_string(), &cluster.nfs_port().to_string()]);
    assert!(output.contains("all nfs checks passed"), "{output}");
    cross_protocol(&cluster, port, scratch.path());

    // SIGKILL of the gateway: handles and cookies survive, uncommitted writes do not.
    let state = scratch.path().join("state.json");
    python(&["before-restart", &port.to_string(), state.to_str().unwrap()]);
    drop(own);
    let restarted = gateway(&cluster, port, &exports);
    let output = python(&["after-restart", &port.to_string(), state.to_str().unwrap()]);
    assert!(output.contains("all restart checks passed"), "{output}");
    drop(restarted);
    cluster.stop();
}
