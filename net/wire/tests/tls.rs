//! Mutual TLS 1.3 with the development CA: what succeeds and what is refused.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use kiseki_net::tls::{client_config, issue_certificate, load_certificates, load_private_key, server_config};
use kiseki_net::tls::{generate_dev_ca, CertificateFiles};
use kiseki_net::{
    serve_connection, ByteStream, MemoryStream, NetError, RpcClient, RpcConfig, RpcServer, TlsFiles, TlsStream,
    TlsTransport, Transport,
};
use kiseki_runtime::{spawn, JoinHandle};

/// Two CAs: the cluster's, with a node and a client certificate, and a foreign one.
struct Pki {
    _dir: tempfile::TempDir,
    ca: CertificateFiles,
    node: CertificateFiles,
    client: CertificateFiles,
    foreign: CertificateFiles,
    foreign_ca: CertificateFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let foreign_dir = dir.path().join("foreign");
    let ca = generate_dev_ca(&ca_dir).unwrap();
    let foreign_ca = generate_dev_ca(&foreign_dir).unwrap();
    let certs = dir.path().join("certs");
    let sans = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
    let node = issue_certificate(&ca_dir, "node1", &sans(&["localhost", "127.0.0.1"]), &certs).unwrap();
    let client = issue_certificate(&ca_dir, "client1", &sans(&["client1"]), &certs).unwrap();
    let foreign = issue_certificate(&foreign_dir, "intruder", &sans(&["localhost", "127.0.0.1"]), &certs).unwrap();
    Pki {
        _dir: dir,
        ca,
        node,
        client,
        foreign,
        foreign_ca,
    }
}

fn files(ca: &CertificateFiles, identity: &CertificateFiles) -> TlsFiles {
    TlsFiles {
        ca_pem: ca.certificate_pem.clone(),
        certificate_pem: identity.certificate_pem.clone(),
        key_pem: identity.key_pem.clone(),
    }
}

/// A connect-only transport trusting `ca` whose client side presents `identity` (or nothing).
fn client_transport(ca: &Path, identity: Option<&CertificateFiles>) -> TlsTransport {
    let roots = load_certificates(ca).unwrap();
    let identity = identity.map(|files| {
        (
            load_certificates(&files.certificate_pem).unwrap(),
            load_private_key(&files.key_pem).unwrap(),
        )
    });
    TlsTransport::new(client_config(&roots, identity).unwrap(), None).with_handshake_timeout_ms(2_000)
}

struct TlsServer {
    addr: SocketAddr,
    server: Rc<RpcServer<TestService>>,
    task: JoinHandle<()>,
}

impl TlsServer {
    async fn stop(self) {
        self.server.stop();
        self.task.await;
    }
}

fn start_server(ca: &CertificateFiles, identity: &CertificateFiles) -> TlsServer {
    let pem = files(ca, identity);
    let transport = TlsTransport::from_files(&pem).unwrap().with_handshake_timeout_ms(2_000);
    let listener = transport.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let server = Rc::new(RpcServer::new(
        listener,
        Rc::new(TestService::default()),
        RpcConfig::default(),
    ));
    let addr = server.local_addr().unwrap();
    let running = Rc::clone(&server);
    let task = spawn("tls-server", async move { running.run().await.unwrap() }).unwrap();
    TlsServer { addr, server, task }
}

/// Connects and makes one call; the first error of either step.
async fn try_call(transport: &TlsTransport, addr: SocketAddr, server_name: &str) -> Result<Vec<u8>, NetError> {
    let stream = transport.connect(addr, server_name).await?;
    let client = RpcClient::new(stream, RpcConfig::default())?;
    let answer = client.call(ECHO, b"hello").await;
    client.shutdown().await;
    answer
}

#[test]
fn mutual_tls_carries_calls_and_shows_the_client_certificate() {
    let pki = pki();
    run(async move {
        let server = start_server(&pki.ca, &pki.node);
        let transport = TlsTransport::from_files(&files(&pki.ca, &pki.client)).unwrap();
        for server_name in ["localhost", "127.0.0.1"] {
            let stream = transport.connect(server.addr, server_name).await.unwrap();
            let client = Rc::new(RpcClient::new(stream, RpcConfig::default()).unwrap());
            let mut calls = Vec::new();
            for index in 0..16usize {
                let client = Rc::clone(&client);
                calls.push(
                    spawn("call", async move {
                        let body: Vec<u8> = (0..index * 70_001).map(|byte| (byte % 251) as u8).collect();
                        assert_eq!(client.call(ECHO, &body).await.unwrap(), body);
                    })
                    .unwrap(),
                );
            }
            for call in calls {
                call.await;
            }
            let seen = client.call(PEER, b"").await.unwrap();
            let expected = load_certificates(&pki.client.certificate_pem).unwrap();
            assert_eq!(
                seen,
                expected[0].as_ref(),
                "the handler sees the verified client certificate"
            );
            Rc::try_unwrap(client).unwrap().shutdown().await;
        }
        server.stop().await;
    });
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let pki = pki();
    run(async move {
        let server = start_server(&pki.ca, &pki.node);
        let transport = client_transport(&pki.ca.certificate_pem, None);
        let result = try_call(&transport, server.addr, "localhost").await;
        match result {
            Err(NetError::Closed { reason }) => assert!(reason.contains("CertificateRequired"), "{reason}"),
            other => panic!("a client without a certificate got {other:?}"),
        }
        let server_ref = Rc::clone(&server.server);
        assert!(wait_until(Duration::from_secs(3), move || server_ref.connections() == 0).await);
        server.stop().await;
    });
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let pki = pki();
    run(async move {
        let server = start_server(&pki.ca, &pki.node);
        // The client trusts the cluster CA but presents a foreign certificate.
        let transport = client_transport(&pki.ca.certificate_pem, Some(&pki.foreign));
        let result = try_call(&transport, server.addr, "localhost").await;
        match result {
            Err(NetError::Closed { reason }) => assert!(reason.contains("alert"), "{reason}"),
            other => panic!("a foreign client certificate got {other:?}"),
        }
        server.stop().await;
    });
}

#[test]
fn a_wrong_server_name_or_a_foreign_server_is_refused() {
    let pki = pki();
    run(async move {
        let server = start_server(&pki.ca, &pki.node);
        let transport = TlsTransport::from_files(&files(&pki.ca, &pki.client)).unwrap();
        match transport.connect(server.addr, "node2.example").await {
            Err(NetError::Tls { reason }) => assert!(reason.contains("certificate"), "{reason}"),
            other => panic!("a wrong server name must be refused, got {:?}", other.err()),
        }
        server.stop().await;

        // A server whose certificate comes from another CA.
        let foreign_server = start_server(&pki.foreign_ca, &pki.foreign);
        let result = transport.connect(foreign_server.addr, "localhost").await;
        assert!(matches!(result, Err(NetError::Tls { .. })));
        foreign_server.stop().await;
    });
}

#[test]
fn tls_runs_over_any_byte_stream() {
    let pki = pki();
    run(async move {
        let roots = load_certificates(&pki.ca.certificate_pem).unwrap();
        let server = server_config(
            &roots,
            load_certificates(&pki.node.certificate_pem).unwrap(),
            load_private_key(&pki.node.key_pem).unwrap(),
        )
        .unwrap();
        let client = client_config(
            &roots,
            Some((
                load_certificates(&pki.client.certificate_pem).unwrap(),
                load_private_key(&pki.client.key_pem).unwrap(),
            )),
        )
        .unwrap();
        // A small pipe: both sides of the handshake and large records must interleave.
        let (client_end, server_end) = MemoryStream::pair(4096);
        let timeout = Duration::from_secs(2);
        let accept = spawn("accept", async move {
            TlsStream::accept(Rc::new(server_end), server, timeout).await
        })
        .unwrap();
        let client_stream = TlsStream::connect(Rc::new(client_end), client, "localhost", timeout)
            .await
            .unwrap();
        let server_stream: Rc<dyn ByteStream> = Rc::new(accept.await.unwrap());
        let service = Rc::new(TestService::default());
        let serving = spawn(
            "serve",
            serve_connection(server_stream, service, RpcConfig::default(), None),
        )
        .unwrap();
        let client = RpcClient::new(Rc::new(client_stream), RpcConfig::default()).unwrap();
        let body = vec![5u8; 1 << 20];
        assert_eq!(client.call(ECHO, &body).await.unwrap(), body);
        client.shutdown().await;
        // The client's close_notify ends the server's connection cleanly.
        assert!(serving.await.is_ok());
    });
}
