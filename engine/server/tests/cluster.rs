//! Three `kiseki-server` processes on 127.0.0.1–3 form a cluster from one map.
//!
//! - A client streams creates into a shard; the shard's leader is killed with SIGKILL;
//!   the client goes on at the new leader; every acknowledged create is on every live
//!   replica; the killed node restarts from its device and catches up.
//! - With mutual TLS: clients with a cluster certificate are served (creates, a watch
//!   subscription, typed errors for malformed requests); plain TCP and a certificate from
//!   another CA are refused.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::rc::Rc;

use kiseki_namespace::{Delta, InodeId, NewAttributes, Timestamp, WatchKind};
use kiseki_net::{TlsFiles, TlsTransport, Transport};
use kiseki_shard_host::api::StatusReply;
use kiseki_shard_host::{DeltaOutcome, MetaClient, ReadAnswer, ReadQuery};

const SERVER: &str = env!("CARGO_BIN_EXE_kiseki-server");
const NODES: u64 = 3;
const SHARD: u64 = 1;

struct Cluster {
    directory: tempfile::TempDir,
    map: PathBuf,
    nodes: Vec<Option<Child>>,
    port: u16,
    tls_dir: Option<PathBuf>,
}

impl Cluster {
    fn device(&self, node: u64) -> PathBuf {
        self.directory.path().join(format!("node{node}.dev"))
    }

    fn start(&mut self, node: u64) {
        let mut child = Command::new(SERVER)
            .args([
                "run",
                "--cores",
                "1",
                "--metrics-addr",
                "127.0.0.1:0",
                "--tick-interval-ms",
                "20",
            ])
            .arg("--device")
            .arg(self.device(node))
            .arg("--cluster")
            .arg(&self.map)
            .args(["--node-id", &node.to_string()])
            .args(
                self.tls_dir
                    .iter()
                    .flat_map(|dir| [std::ffi::OsStr::new("--tls-dir"), dir.as_os_str()]),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap() == "ready" {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.nodes[node as usize - 1] = Some(child);
    }

    fn kill(&mut self, node: u64) {
        if let Some(mut child) = self.nodes[node as usize - 1].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn address(&self, node: u64) -> SocketAddr {
        SocketAddr::new(format!("127.0.0.{node}").parse().unwrap(), self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// A free port below the kernel's ephemeral range (32768-60999 by default): one handed
/// out for `127.0.0.1:0` is free again once released, and an outgoing connection of
/// another test may take it before the node binds it. One counter per test process,
/// started where the process id points, so two processes rarely walk the same ports.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn format(device: &Path) {
    let output = Command::new(SERVER)
        .args([
            "format",
            "--cores",
            "1",
            "--segment-size",
            "4MiB",
            "--size",
            "256MiB",
            "--device",
        ])
        .arg(device)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn create(name: &str) -> Delta {
    Delta::Create {
        parent: InodeId(1),
        name: name.as_bytes().to_vec(),
        attributes: NewAttributes {
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            time: Timestamp::new(1_700_000_000, 0),
        },
        exclusive: true,
    }
}

/// Creates `names` one after another; every acknowledged name is returned.
async fn stream_creates(client: &MetaClient, names: std::ops::Range<u32>) -> Vec<String> {
    let session = client.session();
    let mut acknowledged = Vec::new();
    for number in names {
        let name = format!("file-{number:06}");
        let (_, outcome) = client.propose(&session, SHARD, &create(&name)).await.unwrap();
        assert!(matches!(outcome, DeltaOutcome::Done { .. }), "{name}: {outcome:?}");
        acknowledged.push(name);
    }
    acknowledged
}

async fn statuses(client: &MetaClient, nodes: &[u64]) -> Vec<StatusReply> {
    let mut replies = Vec::new();
    for node in nodes {
        replies.push(client.status(*node, 0).await.unwrap());
    }
    replies
}

/// Waits until the shard's replicas on `nodes` report the same applied index and digest.
async fn converged(client: &MetaClient, nodes: &[u64]) -> (u64, Vec<u8>) {
    let started = Instant::now();
    loop {
        let replies = statuses(client, nodes).await;
        let states: Vec<(u64, Vec<u8>)> = replies
            .iter()
            .map(|reply| {
                let replica = reply.replicas.iter().find(|replica| replica.shard == SHARD).unwrap();
                (replica.applied_index, replica.digest.clone())
            })
            .collect();
        if states.windows(2).all(|pair| pair[0] == pair[1]) {
            return states[0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replicas did not converge: {states:?}"
        );
        kiseki_runtime::sleep(Duration::from_millis(50)).await;
    }
}

/// Formats three devices, writes the map and starts the nodes (with mutual TLS when
/// `tls` is set: a dev CA, `node-N` certificates and a `client` certificate).
fn start_cluster(tls: bool) -> Cluster {
    let directory = tempfile::tempdir().unwrap();
    let map = directory.path().join("cluster.json");
    let port = free_port();
    let output = Command::new(SERVER)
        .args([
            "init",
            "--hosts",
            "127.0.0.1,127.0.0.2,127.0.0.3",
            "--cores",
            "1",
            "--shards",
            "2",
        ])
        .args(["--port-base", &port.to_string(), "--out"])
        .arg(&map)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tls_dir = tls.then(|| {
        let dir = directory.path().join("tls");
        kiseki_net::tls::generate_dev_ca(&dir).unwrap();
        for node in 1..=NODES {
            let san = format!("127.0.0.{node}");
            kiseki_net::tls::issue_certificate(&dir, &format!("node-{node}"), &[san], &dir).unwrap();
        }
        kiseki_net::tls::issue_certificate(&dir, "client", &["client".to_string()], &dir).unwrap();
        dir
    });
    let mut cluster = Cluster {
        directory,
        map,
        nodes: vec![None, None, None],
        port,
        tls_dir,
    };
    for node in 1..=NODES {
        format(&cluster.device(node));
        cluster.start(node);
    }
    cluster
}

fn tls_transport(dir: &Path, name: &str) -> Rc<dyn Transport> {
    let files = TlsFiles {
        ca_pem: dir.join("ca.pem"),
        certificate_pem: dir.join(format!("{name}.pem")),
        key_pem: dir.join(format!("{name}.key")),
    };
    Rc::new(TlsTransport::from_files(&files).unwrap())
}

/// Malformed or misdirected requests are answered with typed errors; the connection and
/// the node stay up and the shard's state is untouched.
async fn bad_requests_get_typed_errors(transport: Rc<dyn Transport>, seed: SocketAddr) {
    use kiseki_net::{encode_body, ErrorCode, NetError, RpcClient, RpcConfig};
    use kiseki_shard_host::api::{ProposeReply, ProposeRequest, Redirect, MSG_CONSENSUS, MSG_PROPOSE};
    let stream = transport.connect(seed, "127.0.0.1").await.unwrap();
    let client = RpcClient::new(stream, RpcConfig::default()).unwrap();
    let code = |result: Result<Vec<u8>, NetError>| match result {
        Err(NetError::Remote { code, .. }) => code,
        other => panic!("expected a typed error answer, got {other:?}"),
    };
    assert_eq!(
        code(client.call(MSG_PROPOSE, b"not an archive").await),
        ErrorCode::BadRequest
    );
    let request = |client_id: u64, shard: u64, delta: Vec<u8>| {
        encode_body(&ProposeRequest {
            shard,
            client_id,
            sequence: 1,
            delta,
        })
        .unwrap()
    };
    let garbage_delta = request(7, SHARD, vec![0xff; 40]);
    assert_eq!(
        code(client.call(MSG_PROPOSE, &garbage_delta).await),
        ErrorCode::BadRequest
    );
    let reserved_client = request(0, SHARD, create("x").encode());
    assert_eq!(
        code(client.call(MSG_PROPOSE, &reserved_client).await),
        ErrorCode::BadRequest
    );
    assert_eq!(code(client.call(0x7777, b"").await), ErrorCode::UnknownMethod);
    let bogus_consensus = encode_body(&kiseki_shard_host::api::ConsensusMessage {
        from: 2,
        bytes: vec![1, 2, 3],
    })
    .unwrap();
    assert_eq!(
        code(client.call(MSG_CONSENSUS, &bogus_consensus).await),
        ErrorCode::BadRequest
    );
    // A shard this core does not hold: a redirect, not a failure.
    let answer = client
        .call(MSG_PROPOSE, &request(7, 999, create("x").encode()))
        .await
        .unwrap();
    let reply: ProposeReply = kiseki_net::decode_body(&answer).unwrap();
    assert_eq!(reply, ProposeReply::Redirect(Redirect::WrongCore));
    assert!(!client.is_closed(), "bad requests do not close the connection");
}

#[test]
fn with_mutual_tls_members_and_clients_with_cluster_certificates_are_served_and_others_refused() {
    let cluster = start_cluster(true);
    let dir = cluster.tls_dir.clone().unwrap();
    let seed = cluster.address(1);
    let stranger_ca = cluster.directory.path().join("stranger");
    kiseki_net::tls::generate_dev_ca(&stranger_ca).unwrap();
    kiseki_net::tls::issue_certificate(&stranger_ca, "client", &["client".to_string()], &stranger_ca).unwrap();
    kiseki_runtime::block_on(kiseki_runtime::ExecutorConfig::default(), 0, async move {
        let client = MetaClient::connect_with(seed, tls_transport(&dir, "client"))
            .await
            .unwrap();
        let acknowledged = stream_creates(&client, 0..50).await;
        let (index, _) = converged(&client, &[1, 2, 3]).await;
        println!(
            "{} creates over mutual TLS; replicas agree at index {index}",
            acknowledged.len()
        );
        // A watcher subscribing from the first sequence sees one event per create.
        let query = ReadQuery::WatchSince {
            sequence: 1,
            limit: 1000,
        };
        let (_, answer) = client.read(SHARD, &query).await.unwrap();
        let ReadAnswer::Events(events) = answer else {
            panic!("{answer:?}")
        };
        let created = events.iter().filter(|event| event.kind == WatchKind::Created).count();
        assert_eq!(created, acknowledged.len(), "{events:?}");
        assert!(events.windows(2).all(|pair| pair[0].sequence <= pair[1].sequence));
        bad_requests_get_typed_errors(tls_transport(&dir, "client"), seed).await;
        // Plain TCP, and a certificate from another CA, get nowhere.
        assert!(MetaClient::connect(seed).await.is_err());
        assert!(MetaClient::connect_with(seed, tls_transport(&stranger_ca, "client"))
            .await
            .is_err());
    })
    .unwrap();
    drop(cluster);
}

#[test]
fn a_killed_leader_loses_no_acknowledged_create_and_its_node_catches_up() {
    let mut cluster = start_cluster(false);
    let seed = cluster.address(1);
    let (cluster, killed) = kiseki_runtime::block_on(kiseki_runtime::ExecutorConfig::default(), 0, async move {
        let client = MetaClient::connect(seed).await.unwrap();
        let mut acknowledged = stream_creates(&client, 0..200).await;
        let leader = client.leader_hint(SHARD).expect("a leader answered");
        cluster.kill(leader);
        let failover_started = Instant::now();
        let survivors: Vec<u64> = (1..=NODES).filter(|node| *node != leader).collect();
        let seed = cluster.address(survivors[0]);
        let client = MetaClient::connect(seed).await.unwrap();
        acknowledged.extend(stream_creates(&client, 200..201).await);
        println!(
            "killed leader node {leader}; next create acknowledged after {} ms",
            failover_started.elapsed().as_millis()
        );
        acknowledged.extend(stream_creates(&client, 201..400).await);
        // Every acknowledged create is on every live replica: equal states, and the
        // (linearizable) reads find every name.
        let (index, _) = converged(&client, &survivors).await;
        for name in &acknowledged {
            let query = ReadQuery::Lookup {
                parent: InodeId(1),
                name: name.as_bytes().to_vec(),
            };
            let (_, answer) = client.read(SHARD, &query).await.unwrap();
            assert!(matches!(answer, ReadAnswer::Entry { .. }), "{name}: {answer:?}");
        }
        let (_, answer) = client.read(SHARD, &ReadQuery::StatFs).await.unwrap();
        let ReadAnswer::Stats(stats) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(stats.files, acknowledged.len() as u64);
        println!(
            "{} creates acknowledged; survivors agree at index {index}",
            acknowledged.len()
        );
        // The killed node restarts from its device and catches up.
        cluster.start(leader);
        let (index, _) = converged(&client, &[1, 2, 3]).await;
        println!("restarted node {leader} caught up at index {index}");
        (cluster, leader)
    })
    .unwrap();
    assert!(cluster.nodes[killed as usize - 1].is_some());
    drop(cluster);
}
