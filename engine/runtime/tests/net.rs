//! TCP through the ring: echo, many connections, half-close, refused connects, and
//! cancellation of idle receives so a core can stop.

use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use kiseki_runtime::net::{TcpListener, TcpStream};
use kiseki_runtime::{block_on, spawn, timeout, ExecutorConfig};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            return;
        };
        spawn("echo", async move {
            let mut buffer = Vec::with_capacity(4096);
            loop {
                buffer.clear();
                let (result, returned) = stream.recv(buffer).await;
                buffer = returned;
                match result {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let (result, returned) = stream.send_all(buffer).await;
                        buffer = returned;
                        if result.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .unwrap();
    }
}

async fn read_exactly(stream: &TcpStream, bytes: usize) -> Vec<u8> {
    let mut received = Vec::with_capacity(bytes);
    while received.len() < bytes {
        received.reserve(bytes - received.len());
        let (result, returned) = stream.recv(received).await;
        received = returned;
        assert!(result.unwrap() > 0, "unexpected end of stream");
    }
    received
}

#[test]
fn echo_round_trips_large_and_small_messages_on_many_connections() {
    block_on(ExecutorConfig::default(), 0, async {
        let listener = TcpListener::bind(loopback()).unwrap();
        let address = listener.local_addr().unwrap();
        spawn("server", echo_server(listener)).unwrap();
        let mut clients = Vec::new();
        for client in 0..16u8 {
            clients.push(
                spawn("client", async move {
                    let stream = Rc::new(TcpStream::connect(address).await.unwrap());
                    for size in [1usize, 100, 70_000, 1 << 20] {
                        let message: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_add(client)).collect();
                        // Sent from its own task: the echo comes back while we still send.
                        let sender = Rc::clone(&stream);
                        let copy = message.clone();
                        let sent = spawn("send", async move { sender.send_all(copy).await.0 }).unwrap();
                        assert_eq!(read_exactly(&stream, size).await, message);
                        sent.await.unwrap();
                    }
                })
                .unwrap(),
            );
        }
        for client in clients {
            client.await;
        }
    })
    .unwrap();
}

#[test]
fn a_half_closed_peer_reads_as_end_of_stream() {
    block_on(ExecutorConfig::default(), 0, async {
        let listener = TcpListener::bind(loopback()).unwrap();
        let address = listener.local_addr().unwrap();
        let client = TcpStream::connect(address).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        client.shutdown(Shutdown::Write).unwrap();
        let (result, _) = server.recv(Vec::with_capacity(16)).await;
        assert_eq!(result.unwrap(), 0);
    })
    .unwrap();
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    block_on(ExecutorConfig::default(), 0, async {
        let address = {
            let listener = TcpListener::bind(loopback()).unwrap();
            listener.local_addr().unwrap()
        };
        let error = TcpStream::connect(address).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
    })
    .unwrap();
}

#[test]
fn dropped_receives_and_accepts_are_cancelled_so_the_core_can_stop() {
    block_on(ExecutorConfig::default(), 0, async {
        let listener = Rc::new(TcpListener::bind(loopback()).unwrap());
        let address = listener.local_addr().unwrap();
        // An accept nobody answers, given up after a while.
        assert!(timeout(Duration::from_millis(20), listener.accept()).await.is_none());
        let client = Rc::new(TcpStream::connect(address).await.unwrap());
        let (server, _) = listener.accept().await.unwrap();
        // A receive on an idle connection, given up after a while.
        assert!(timeout(Duration::from_millis(20), server.recv(Vec::with_capacity(64)))
            .await
            .is_none());
        // The connection still works after the cancelled receive.
        let (result, _) = client.send_all(b"after".to_vec()).await;
        result.unwrap();
        assert_eq!(read_exactly(&server, 5).await, b"after");
        // Tasks left parked in accept and recv: block_on must still return.
        let parked = Rc::clone(&listener);
        spawn("parked-accept", async move {
            let _ = parked.accept().await;
        })
        .unwrap();
        spawn("parked-recv", async move {
            let _ = client.recv(Vec::with_capacity(64)).await;
        })
        .unwrap();
        kiseki_runtime::sleep(Duration::from_millis(5)).await;
    })
    .unwrap();
}
