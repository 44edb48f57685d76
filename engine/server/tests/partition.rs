//! Three nodes, each in its own network namespace behind a bridge; the client in a fourth.
//! The shard leader is cut off (its link on the bridge goes down): the other two elect a
//! new leader and go on acknowledging creates; after the link comes back, the cut-off
//! node catches up, and every acknowledged create is on all three replicas.
//!
//! Needs root and `ip netns`; when namespaces cannot be created the test says so on
//! stderr and passes without running.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiseki_namespace::{Delta, InodeId, NewAttributes, Timestamp};
use kiseki_shard_host::{DeltaOutcome, MetaClient, ReadAnswer, ReadQuery};

const SERVER: &str = env!("CARGO_BIN_EXE_kiseki-server");
const SHARD: u64 = 1;
const PORT: u16 = 9100;

/// The namespaces and links of one run; removed on drop.
struct Network {
    prefix: String,
}

impl Network {
    fn ip(&self, arguments: &[&str]) -> bool {
        Command::new("ip")
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn in_namespace(&self, namespace: &str, arguments: &[&str]) -> bool {
        let mut all = vec!["netns", "exec", namespace, "ip"];
        all.extend_from_slice(arguments);
        self.ip(&all)
    }

    fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// The switch namespace with a bridge, and one namespace per host attached to it.
    fn build(prefix: &str, hosts: &[(&str, IpAddr)]) -> Option<Network> {
        let network = Network {
            prefix: prefix.to_string(),
        };
        let switch = network.name("sw");
        if !network.ip(&["netns", "add", &switch]) {
            return None;
        }
        let ok = network.in_namespace(&switch, &["link", "add", "br0", "type", "bridge"])
            && network.in_namespace(&switch, &["link", "set", "br0", "up"]);
        if !ok {
            return None;
        }
        for (host, address) in hosts {
            let namespace = network.name(host);
            let outside = format!("{prefix}{host}p");
            let inside = format!("{prefix}{host}v");
            let cidr = format!("{address}/24");
            let ok = network.ip(&["netns", "add", &namespace])
                && network.ip(&["link", "add", &inside, "type", "veth", "peer", "name", &outside])
                && network.ip(&["link", "set", &inside, "netns", &namespace])
                && network.ip(&["link", "set", &outside, "netns", &switch])
                && network.in_namespace(&switch, &["link", "set", &outside, "master", "br0"])
                && network.in_namespace(&switch, &["link", "set", &outside, "up"])
                && network.in_namespace(&namespace, &["link", "set", "lo", "up"])
                && network.in_namespace(&namespace, &["addr", "add", &cidr, "dev", &inside])
                && network.in_namespace(&namespace, &["link", "set", &inside, "up"]);
            if !ok {
                return None;
            }
        }
        Some(network)
    }

    /// Takes `host`'s port on the bridge down or up.
    fn set_link(&self, host: &str, up: bool) {
        let outside = format!("{}{host}p", self.prefix);
        let state = if up { "up" } else { "down" };
        assert!(self.in_namespace(&self.name("sw"), &["link", "set", &outside, state]));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for what in ["n1", "n2", "n3", "cl", "sw"] {
            self.ip(&["netns", "del", &self.name(what)]);
        }
    }
}

fn node_address(node: u64) -> IpAddr {
    format!("10.231.0.{node}").parse().unwrap()
}

fn start_node(network: &Network, directory: &Path, map: &Path, node: u64) -> Child {
    let device = directory.join(format!("node{node}.dev"));
    let mut child = Command::new("ip")
        .args(["netns", "exec", &network.name(&format!("n{node}")), SERVER])
        .args(["run", "--cores", "1", "--metrics-addr", "127.0.0.1:0", "--device"])
        .arg(&device)
        .arg("--cluster")
        .arg(map)
        .args(["--node-id", &node.to_string()])
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
    child
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

async fn creates(client: &MetaClient, numbers: std::ops::Range<u32>, acknowledged: &mut Vec<String>) {
    let session = client.session();
    for number in numbers {
        let name = format!("file-{number:06}");
        let delta = Delta::Create {
            parent: InodeId(1),
            name: name.clone().into_bytes(),
            attributes: NewAttributes {
                mode: 0o644,
                uid: 0,
                gid: 0,
                time: Timestamp::new(1_700_000_000, 0),
            },
            exclusive: true,
        };
        let (_, outcome) = client.propose(&session, SHARD, &delta).await.unwrap();
        assert!(matches!(outcome, DeltaOutcome::Done { .. }), "{name}: {outcome:?}");
        acknowledged.push(name);
    }
}

/// Waits until the replicas on `nodes` agree on applied index and digest.
async fn converged(client: &MetaClient, nodes: &[u64]) -> u64 {
    let started = Instant::now();
    loop {
        let mut states = Vec::new();
        for node in nodes {
            if let Ok(reply) = client.status(*node, 0).await {
                if let Some(replica) = reply.replicas.iter().find(|replica| replica.shard == SHARD) {
                    states.push((replica.applied_index, replica.digest.clone()));
                }
            }
        }
        if states.len() == nodes.len() && states.windows(2).all(|pair| pair[0] == pair[1]) {
            return states[0].0;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no convergence: {states:?}"
        );
        kiseki_runtime::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `body` on a thread that entered network namespace `namespace`.
fn in_namespace<T: Send + 'static>(namespace: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from("/var/run/netns").join(namespace);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        let kind = Some(rustix::thread::LinkNameSpaceType::Network);
        rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&file), kind).unwrap();
        body()
    })
    .join()
    .unwrap()
}

#[test]
fn a_cut_off_leader_is_replaced_and_catches_up_after_the_link_returns() {
    let prefix = format!("ks{}", std::process::id() % 100_000);
    let hosts = [
        ("n1", node_address(1)),
        ("n2", node_address(2)),
        ("n3", node_address(3)),
        ("cl", "10.231.0.100".parse().unwrap()),
    ];
    let Some(network) = Network::build(&prefix, &hosts) else {
        eprintln!("SKIPPED: network namespaces cannot be created here (needs root and iproute2)");
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let map = directory.path().join("cluster.json");
    let output = Command::new(SERVER)
        .args([
            "init",
            "--hosts",
            "10.231.0.1,10.231.0.2,10.231.0.3",
            "--cores",
            "1",
            "--shards",
            "1",
        ])
        .args(["--port-base", &PORT.to_string(), "--out"])
        .arg(&map)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut nodes = Nodes(Vec::new());
    for node in 1..=3 {
        format(&directory.path().join(format!("node{node}.dev")));
        nodes.0.push(start_node(&network, directory.path(), &map, node));
    }
    let network = std::sync::Arc::new(network);
    let control = std::sync::Arc::clone(&network);
    let client_namespace = network.name("cl");
    let report = in_namespace(&client_namespace, move || {
        kiseki_runtime::block_on(kiseki_runtime::ExecutorConfig::default(), 0, async move {
            let seed = SocketAddr::new(node_address(1), PORT);
            let client = MetaClient::connect(seed).await.unwrap();
            let mut acknowledged = Vec::new();
            creates(&client, 0..100, &mut acknowledged).await;
            let leader = client.leader_hint(SHARD).unwrap();
            control.set_link(&format!("n{leader}"), false);
            let cut = Instant::now();
            let survivors: Vec<u64> = (1..=3).filter(|node| *node != leader).collect();
            let client = MetaClient::connect(SocketAddr::new(node_address(survivors[0]), PORT))
                .await
                .unwrap();
            creates(&client, 100..101, &mut acknowledged).await;
            let failover_ms = cut.elapsed().as_millis();
            creates(&client, 101..200, &mut acknowledged).await;
            converged(&client, &survivors).await;
            control.set_link(&format!("n{leader}"), true);
            let index = converged(&client, &[1, 2, 3]).await;
            for name in &acknowledged {
                let query = ReadQuery::Lookup {
                    parent: InodeId(1),
                    name: name.as_bytes().to_vec(),
                };
                let (_, answer) = client.read(SHARD, &query).await.unwrap();
                assert!(matches!(answer, ReadAnswer::Entry { .. }), "{name}: {answer:?}");
            }
            format!(
                "cut off leader node {leader}; first create after the cut acknowledged in {failover_ms} ms; \
                 {} creates acknowledged; all three replicas agree at index {index}",
                acknowledged.len()
            )
        })
        .unwrap()
    });
    println!("{report}");
    drop(nodes);
}

/// The node processes; stopped (SIGTERM) on drop, before their namespaces go.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}
