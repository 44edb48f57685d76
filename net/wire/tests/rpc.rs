//! The RPC layer over real TCP sockets on 127.0.0.1 and over in-memory streams.

mod common;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use kiseki_net::frame::{FRAME_HEADER_BYTES, FRAME_MAGIC};
use kiseki_net::{
    decode_body, encode_body, serve_connection, ByteStream, ErrorBody, ErrorCode, FrameDecoder, FrameEncoder,
    FrameHeader, FrameKind, MemoryStream, NetError, RpcClient, RpcConfig, RpcServer, TcpTransport, Transport,
};
use kiseki_runtime::net::TcpStream;
use kiseki_runtime::{spawn, JoinHandle};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct TestServer {
    addr: SocketAddr,
    service: Rc<TestService>,
    server: Rc<RpcServer<TestService>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Stops the server and waits for its connections to end, so that no socket
    /// operation is left when the test's executor stops.
    async fn stop(self) {
        self.server.stop();
        self.task.await;
        assert_eq!(self.server.connections(), 0);
    }
}

fn start_server(config: RpcConfig) -> TestServer {
    let listener = TcpTransport.listen(loopback()).unwrap();
    let service = Rc::new(TestService::default());
    let server = Rc::new(RpcServer::new(listener, Rc::clone(&service), config));
    let addr = server.local_addr().unwrap();
    let running = Rc::clone(&server);
    let task = spawn("test-server", async move { running.run().await.unwrap() }).unwrap();
    TestServer {
        addr,
        service,
        server,
        task,
    }
}

/// Closes a shared client and waits for its tasks.
async fn shut(client: Rc<RpcClient>) {
    Rc::try_unwrap(client).expect("the last handle").shutdown().await;
}

async fn connect(addr: SocketAddr, config: RpcConfig) -> RpcClient {
    let stream = TcpTransport.connect(addr, "localhost").await.unwrap();
    RpcClient::new(stream, config).unwrap()
}

#[test]
fn many_concurrent_calls_from_several_connections_and_tasks() {
    run(async {
        let server = start_server(RpcConfig::default());
        let mut tasks = Vec::new();
        let mut clients = Vec::new();
        for connection in 0..3u64 {
            let client = Rc::new(connect(server.addr, RpcConfig::default()).await);
            clients.push(Rc::clone(&client));
            for task in 0..8u64 {
                let client = Rc::clone(&client);
                tasks.push(
                    spawn("caller", async move {
                        for call in 0..40u64 {
                            let seed = connection * 10_000 + task * 100 + call;
                            let size = (seed * 7919 % 20_000) as usize;
                            let body: Vec<u8> = (0..size).map(|index| (index as u64 ^ seed) as u8).collect();
                            let answer = client.call(ECHO, &body).await.unwrap();
                            assert_eq!(answer, body);
                            let put = sample_put(seed);
                            let answer = client.call(PUT, &encode_body(&put).unwrap()).await.unwrap();
                            assert_eq!(decode_body::<u64>(&answer).unwrap(), put.offset);
                        }
                    })
                    .unwrap(),
                );
            }
        }
        for task in tasks {
            task.await;
        }
        for client in &clients {
            let (frames, sends) = client.send_counters();
            assert_eq!(frames, 8 * 40 * 2);
            assert!(
                sends < frames,
                "frames queued during a send go out together ({frames} in {sends})"
            );
            assert_eq!(client.in_flight(), 0);
        }
        assert_eq!(server.server.connections(), 3);
        for client in clients {
            shut(client).await;
        }
        server.stop().await;
    });
}

#[test]
fn error_answers_arrive_typed_and_the_connection_stays_usable() {
    run(async {
        let server = start_server(RpcConfig::default());
        let client = connect(server.addr, RpcConfig::default()).await;
        match client.call(FAIL, b"").await {
            Err(NetError::Remote { code, message }) => {
                assert_eq!(code, ErrorCode::NotFound);
                assert_eq!(message, "no such fragment");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
        match client.call(999, b"").await {
            Err(NetError::Remote { code, .. }) => assert_eq!(code, ErrorCode::UnknownMethod),
            other => panic!("expected UnknownMethod, got {other:?}"),
        }
        // A body that fails validation is the handler's BadRequest, not a broken connection.
        match client.call(PUT, &[0xff; 40]).await {
            Err(NetError::Remote { code, .. }) => assert_eq!(code, ErrorCode::BadRequest),
            other => panic!("expected BadRequest, got {other:?}"),
        }
        assert_eq!(client.call(ECHO, b"still here").await.unwrap(), b"still here");
        client.send_one_way(COUNT, b"").await.unwrap();
        let service = Rc::clone(&server.service);
        assert!(wait_until(Duration::from_secs(2), move || service.counted.get() == 1).await);
        client.shutdown().await;
        server.stop().await;
    });
}

#[test]
fn a_full_window_waits_or_answers_busy() {
    run(async {
        let server = start_server(RpcConfig::tiny());
        let busy_config = RpcConfig {
            wait_for_window: false,
            ..RpcConfig::tiny()
        };
        let client = Rc::new(connect(server.addr, busy_config).await);
        let mut gated = Vec::new();
        for _ in 0..2 {
            let client = Rc::clone(&client);
            gated.push(spawn("gated", async move { client.call(GATE, b"g").await }).unwrap());
        }
        let service = Rc::clone(&server.service);
        assert!(wait_until(Duration::from_secs(2), move || service.gated.get() == 2).await);
        assert_eq!(client.in_flight(), 2);
        assert!(matches!(
            client.call(ECHO, b"x").await,
            Err(NetError::Busy { limit: 2, .. })
        ));

        // A waiting client queues the call until a slot frees.
        let waiting_client = Rc::new(connect(server.addr, RpcConfig::tiny()).await);
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let client = Rc::clone(&waiting_client);
            waiting.push(spawn("gated", async move { client.call(GATE, b"g").await }).unwrap());
        }
        let third_client = Rc::clone(&waiting_client);
        let third = spawn("third", async move { third_client.call(ECHO, b"third").await }).unwrap();
        kiseki_runtime::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "the third call waits for a slot");
        server.service.open_gate();
        for call in gated.into_iter().chain(waiting) {
            assert_eq!(call.await.unwrap(), b"g");
        }
        assert_eq!(third.await.unwrap(), b"third");
        shut(client).await;
        shut(waiting_client).await;
        server.stop().await;
    });
}

/// Sends raw bytes on a fresh TCP connection and returns every frame answered until the
/// server closes, with the decoder's final error if any.
async fn raw_exchange(addr: SocketAddr, bytes: Vec<u8>) -> (Vec<kiseki_net::Frame>, Option<NetError>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sent, _) = stream.send_all(bytes).await;
    sent.unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    loop {
        let buffer = decoder.take_read_buffer(4096);
        let (received, buffer) = kiseki_runtime::timeout(Duration::from_secs(5), stream.recv(buffer))
            .await
            .expect("the server answers or closes");
        decoder.restore_read_buffer(buffer);
        match received {
            Ok(0) | Err(_) => return (frames, decoder.finish().err()),
            Ok(_) => {}
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
}

fn request_frame(message_type: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let header = FrameHeader {
        kind: FrameKind::Request,
        message_type,
        request_id,
    };
    FrameEncoder::default().encode(&mut out, header, body).unwrap();
    out
}

fn go_away_reason(frames: &[kiseki_net::Frame]) -> (ErrorCode, String) {
    let last = frames.last().expect("a GoAway frame");
    assert_eq!(last.header.kind, FrameKind::GoAway);
    let body: ErrorBody = decode_body(&last.body).unwrap();
    (body.code(), body.message)
}

#[test]
fn a_malformed_frame_closes_only_its_connection_with_a_reason() {
    run(async {
        let server = start_server(RpcConfig::default());
        let good = connect(server.addr, RpcConfig::default()).await;
        assert_eq!(good.call(ECHO, b"before").await.unwrap(), b"before");

        // A valid request, then a frame with a flipped body bit: the first is answered,
        // then a GoAway names the reason and the server closes.
        let mut bytes = request_frame(ECHO, 1, b"fine");
        let mut corrupt = request_frame(ECHO, 2, b"corrupt");
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        bytes.extend_from_slice(&corrupt);
        let (frames, error) = raw_exchange(server.addr, bytes).await;
        assert!(error.is_none(), "the server's frames are well formed: {error:?}");
        assert_eq!(frames[0].header.kind, FrameKind::Response);
        assert_eq!(frames[0].body, b"fine");
        let (code, message) = go_away_reason(&frames);
        assert_eq!(code, ErrorCode::BadFrame);
        assert!(message.contains("checksum"), "{message}");

        // Garbage from the first byte, a frame announcing 4 GiB, an unknown kind.
        let (frames, _) = raw_exchange(server.addr, b"GET / HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(go_away_reason(&frames).1.contains("magic"));
        let mut huge = request_frame(ECHO, 3, b"");
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&huge[..28]);
        huge[28..32].copy_from_slice(&crc.to_le_bytes());
        let (frames, _) = raw_exchange(server.addr, huge).await;
        assert!(go_away_reason(&frames).1.contains("exceeds"));
        // A Response sent to a server breaks the protocol.
        let mut response = Vec::new();
        let header = FrameHeader {
            kind: FrameKind::Response,
            message_type: ECHO,
            request_id: 9,
        };
        FrameEncoder::default().encode(&mut response, header, b"").unwrap();
        let (frames, _) = raw_exchange(server.addr, response).await;
        assert_eq!(go_away_reason(&frames).0, ErrorCode::ProtocolViolation);
        // A connection that ends inside a frame is answered with the reason too.
        let (frames, _) = raw_exchange(server.addr, FRAME_MAGIC[..3].to_vec()).await;
        assert!(go_away_reason(&frames).1.contains("truncated"));

        assert_eq!(good.call(ECHO, b"after").await.unwrap(), b"after");
        let server_ref = Rc::clone(&server.server);
        assert!(wait_until(Duration::from_secs(2), move || server_ref.connections() == 1).await);
        good.shutdown().await;
        server.stop().await;
    });
}

#[test]
fn a_peer_stalling_inside_a_frame_is_cut_off() {
    run(async {
        let server = start_server(RpcConfig {
            partial_frame_timeout_ms: 50,
            ..RpcConfig::default()
        });
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let frame = request_frame(ECHO, 1, b"never finished");
        let (sent, _) = stream.send_all(frame[..40].to_vec()).await;
        sent.unwrap();
        let mut decoder = FrameDecoder::default();
        loop {
            let buffer = decoder.take_read_buffer(4096);
            let (received, buffer) = stream.recv(buffer).await;
            decoder.restore_read_buffer(buffer);
            if received.unwrap() == 0 {
                break;
            }
        }
        let frame = decoder.next_frame().unwrap().expect("a GoAway");
        let body: ErrorBody = decode_body(&frame.body).unwrap();
        assert_eq!(body.code(), ErrorCode::Timeout);
        server.stop().await;
    });
}

#[test]
fn a_peer_that_does_not_read_cannot_hold_a_connection() {
    run(async {
        let server = start_server(RpcConfig {
            close_timeout_ms: 100,
            ..RpcConfig::tiny()
        });
        let stream = TcpStream::connect(server.addr).await.unwrap();
        // Far more answer bytes than the socket buffers hold; never read any of them.
        let body = vec![1u8; 60_000];
        // The server stops reading once its window and outbox are full (back pressure),
        // so sending stalls too; the server's send timeout must end the standoff.
        for request_id in 1..=200 {
            let frame = request_frame(ECHO, request_id, &body);
            match kiseki_runtime::timeout(Duration::from_millis(200), stream.send_all(frame)).await {
                Some((Ok(()), _)) => {}
                _ => break,
            }
        }
        let server_ref = Rc::clone(&server.server);
        assert!(wait_until(Duration::from_secs(5), move || server_ref.connections() == 0).await);
        drop(stream);
        server.stop().await;
    });
}

#[test]
fn a_server_with_a_tiny_window_answers_excess_requests_busy() {
    run(async {
        let server = start_server(RpcConfig::tiny());
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let mut bytes = Vec::new();
        for request_id in 1..=3 {
            bytes.extend_from_slice(&request_frame(GATE, request_id, b"g"));
        }
        let (sent, _) = stream.send_all(bytes).await;
        sent.unwrap();
        let mut decoder = FrameDecoder::default();
        let mut frames = Vec::new();
        while frames.len() < 3 {
            if frames.len() == 1 {
                server.service.open_gate();
            }
            let buffer = decoder.take_read_buffer(4096);
            let (received, buffer) = stream.recv(buffer).await;
            decoder.restore_read_buffer(buffer);
            assert!(received.unwrap() > 0);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        // The third request arrived while two ran: answered Busy at once, first.
        assert_eq!(frames[0].header.request_id, 3);
        assert_eq!(frames[0].header.kind, FrameKind::ErrorResponse);
        let busy: ErrorBody = decode_body(&frames[0].body).unwrap();
        assert_eq!(busy.code(), ErrorCode::Busy);
        assert!(frames[1..].iter().all(|frame| frame.header.kind == FrameKind::Response));
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        server.stop().await;
    });
}

#[test]
fn calls_time_out_and_late_answers_are_dropped() {
    run(async {
        let server = start_server(RpcConfig::default());
        let config = RpcConfig {
            call_timeout_ms: 20,
            ..RpcConfig::default()
        };
        let client = connect(server.addr, config).await;
        assert!(matches!(
            client.call(SLOW, &[100]).await,
            Err(NetError::Timeout { after_ms: 20, .. })
        ));
        assert_eq!(client.in_flight(), 0);
        assert_eq!(client.call(SLOW, &[1]).await.unwrap(), vec![1]);
        let late = Rc::new(client);
        let watched = Rc::clone(&late);
        assert!(wait_until(Duration::from_secs(2), move || watched.late_answers() == 1).await);
        let client = Rc::try_unwrap(late).unwrap();
        client.shutdown().await;
        server.stop().await;
    });
}

#[test]
fn oversized_calls_fail_locally() {
    run(async {
        let server = start_server(RpcConfig::tiny());
        let client = connect(server.addr, RpcConfig::tiny()).await;
        let body = vec![0u8; RpcConfig::tiny().frame_bytes_max - FRAME_HEADER_BYTES + 1];
        assert!(matches!(
            client.call(ECHO, &body).await,
            Err(NetError::FrameTooLarge { .. })
        ));
        // The largest allowed body goes through, larger than the outbox limit.
        let body = vec![7u8; RpcConfig::tiny().frame_bytes_max - FRAME_HEADER_BYTES];
        assert_eq!(client.call(ECHO, &body).await.unwrap(), body);
        client.shutdown().await;
        server.stop().await;
    });
}

#[test]
fn stopping_a_server_sends_go_away_to_its_clients() {
    run(async {
        let server = start_server(RpcConfig::default());
        let client = connect(server.addr, RpcConfig::default()).await;
        assert_eq!(client.call(ECHO, b"x").await.unwrap(), b"x");
        let slow = Rc::new(client);
        let caller = Rc::clone(&slow);
        let running = spawn("slow", async move { caller.call(SLOW, &[30]).await }).unwrap();
        kiseki_runtime::sleep(Duration::from_millis(5)).await;
        server.server.stop();
        // Running requests finish before the GoAway.
        assert_eq!(running.await.unwrap(), vec![30]);
        let client = Rc::clone(&slow);
        assert!(wait_until(Duration::from_secs(2), move || client.is_closed()).await);
        assert!(slow.close_reason().unwrap().contains("shutting down"));
        assert!(matches!(slow.call(ECHO, b"x").await, Err(NetError::Closed { .. })));
        shut(slow).await;
        server.stop().await;
    });
}

#[test]
fn rpc_over_memory_streams() {
    run(async {
        let (client_end, server_end) = MemoryStream::pair(1024);
        let service = Rc::new(TestService::default());
        let server_end: Rc<dyn ByteStream> = Rc::new(server_end);
        let serving = spawn(
            "serve",
            serve_connection(server_end, Rc::clone(&service), RpcConfig::tiny(), None),
        )
        .unwrap();
        let client = Rc::new(RpcClient::new(Rc::new(client_end), RpcConfig::tiny()).unwrap());
        let mut calls = Vec::new();
        for index in 0..20u8 {
            let client = Rc::clone(&client);
            calls.push(spawn("call", async move { client.call(ECHO, &vec![index; 3000]).await }).unwrap());
        }
        for (index, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), vec![index as u8; 3000]);
        }
        shut(client).await;
        assert!(serving.await.is_ok(), "a client closing is a clean end");
    });
}
