//! Echo throughput and latency of the RPC layer over loopback TCP and mutual TLS, with
//! the server on one thread (its own executor) and the client on another: the figures
//! of `docs/decisions/0006-wire-protocol.md`.
//!
//! `cargo run --release -p kiseki-net --example rpc_bench [seconds_per_case]`

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiseki_net::tls::{generate_dev_ca, issue_certificate};
use kiseki_net::{
    RemoteError, Request, RpcClient, RpcConfig, RpcServer, Service, TcpTransport, TlsFiles, TlsTransport, Transport,
};
use kiseki_runtime::{block_on, spawn, ExecutorConfig};

struct Echo;

impl Service for Echo {
    async fn handle(&self, request: Request) -> Result<Vec<u8>, RemoteError> {
        Ok(request.body)
    }
}

fn transport(tls: Option<&TlsFiles>) -> Rc<dyn Transport> {
    match tls {
        Some(files) => Rc::new(TlsTransport::from_files(files).expect("TLS files")),
        None => Rc::new(TcpTransport),
    }
}

/// Starts a server thread; returns its address. The thread runs until the process ends.
fn start_server(tls: Option<TlsFiles>) -> SocketAddr {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        block_on(ExecutorConfig::default(), 1, async move {
            let listener = transport(tls.as_ref()).listen("127.0.0.1:0".parse().unwrap()).unwrap();
            let server = RpcServer::new(listener, Rc::new(Echo), RpcConfig::default());
            sender.send(server.local_addr().unwrap()).unwrap();
            server.run().await.unwrap();
        })
        .unwrap();
    });
    receiver.recv().unwrap()
}

/// Runs `callers` tasks calling echo with `body_bytes` for `duration`; prints the figures.
fn measure(name: &str, addr: SocketAddr, tls: Option<TlsFiles>, body_bytes: usize, callers: usize, duration: Duration) {
    let name = name.to_string();
    block_on(ExecutorConfig::default(), 0, async move {
        let stream = transport(tls.as_ref()).connect(addr, "localhost").await.unwrap();
        let client = Rc::new(RpcClient::new(stream, RpcConfig::default()).unwrap());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let client = Rc::clone(&client);
            tasks.push(
                spawn("caller", async move {
                    let body = vec![7u8; body_bytes];
                    let mut latencies_us = Vec::new();
                    while started.elapsed() < duration {
                        let call_started = Instant::now();
                        let answer = client.call(1, &body).await.unwrap();
                        assert_eq!(answer.len(), body_bytes);
                        latencies_us.push(call_started.elapsed().as_micros() as u64);
                    }
                    latencies_us
                })
                .unwrap(),
            );
        }
        let mut latencies_us = Vec::new();
        for task in tasks {
            latencies_us.extend(task.await);
        }
        let seconds = started.elapsed().as_secs_f64();
        latencies_us.sort_unstable();
        let calls = latencies_us.len();
        let percentile = |p: f64| latencies_us[((calls as f64 * p) as usize).min(calls - 1)];
        println!(
            "{name:<5} {body_bytes:>8} B x{callers:<3} {:>9.0} calls/s {:>8.1} MB/s each way  p50 {:>6} us  p99 {:>6} us",
            calls as f64 / seconds,
            (calls * body_bytes) as f64 / seconds / 1e6,
            percentile(0.50),
            percentile(0.99),
        );
        Rc::try_unwrap(client).unwrap().shutdown().await;
    })
    .unwrap();
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(2.0);
    let duration = Duration::from_secs_f64(seconds);
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = generate_dev_ca(&ca_dir).unwrap();
    let node = issue_certificate(&ca_dir, "node", &["localhost".to_string()], dir.path()).unwrap();
    let files = TlsFiles {
        ca_pem: ca.certificate_pem,
        certificate_pem: node.certificate_pem,
        key_pem: node.key_pem,
    };
    let tcp_server = start_server(None);
    let tls_server = start_server(Some(files.clone()));
    for (body_bytes, callers) in [(64, 1), (64, 32), (4096, 32), (1 << 20, 1), (1 << 20, 8)] {
        measure("tcp", tcp_server, None, body_bytes, callers, duration);
        measure("tls", tls_server, Some(files.clone()), body_bytes, callers, duration);
    }
}
