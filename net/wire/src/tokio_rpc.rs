//! The calling side of a connection for tokio processes (clients and gateways): the same
//! frames, bodies, limits and error answers as the runtime's [`crate::RpcClient`].
//!
//! **Shape.** A connection is three parts that share no lock:
//! - callers take a slot of the call window (`in_flight_max`, a semaphore) and bytes of
//!   the outbox (`outbox_bytes_max`, a semaphore), register their answer channel with the
//!   reader task, then queue the encoded frame for the writer task;
//! - the writer task owns the write half and sends queued frames, coalescing those that
//!   are waiting into one write;
//! - the reader task owns the read half and the map of calls waiting for an answer; it
//!   takes registrations before it routes each frame, and a registration is always queued
//!   before its frame is written, so an answer never arrives before its caller is known.
//!
//! A caller that gives up (timeout, dropped future) frees its slot at once; its entry in
//! the reader's map goes when the answer arrives or when the map is pruned. When either
//! task ends, the connection is closed: every waiting and later call answers `Closed` (or
//! `GoAway` with the server's reason).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::body::{decode_body, ErrorBody};
use crate::error::NetError;
use crate::frame::{Frame, FrameDecoder, FrameEncoder, FrameHeader, FrameKind};
use crate::RpcConfig;

type Answer = Result<Vec<u8>, NetError>;

/// What callers tell the reader task: route the answer to this request id here.
type Registration = (u64, oneshot::Sender<Answer>);

/// A frame for the writer, with the outbox bytes it holds until written.
struct Outgoing {
    bytes: Vec<u8>,
    _outbox_bytes: OwnedSemaphorePermit,
}

struct Shared {
    config: RpcConfig,
    encoder: FrameEncoder,
    next_request_id: AtomicU64,
    window: Arc<Semaphore>,
    outbox_bytes: Arc<Semaphore>,
    closed: AtomicBool,
    close_reason: OnceLock<NetError>,
    /// Tells both tasks that the connection is closing.
    closing: watch::Sender<bool>,
    peer_addr: Option<SocketAddr>,
}

impl Shared {
    fn close_with(&self, error: NetError) {
        let _ = self.close_reason.set(error);
        self.closed.store(true, Ordering::Release);
        self.window.close();
        self.outbox_bytes.close();
        self.closing.send_replace(true);
    }

    fn closed_error(&self) -> NetError {
        match self.close_reason.get() {
            Some(NetError::GoAway { code, message }) => NetError::GoAway {
                code: *code,
                message: message.clone(),
            },
            Some(error) => NetError::closed(error.to_string()),
            None => NetError::closed("connection closed"),
        }
    }
}

/// A multiplexed RPC connection, calling side, for tokio. Cheap to clone; every clone
/// calls over the same connection, from any task or thread.
#[derive(Clone)]
pub struct RpcClient {
    shared: Arc<Shared>,
    registrations: mpsc::Sender<Registration>,
    outgoing: mpsc::Sender<Outgoing>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("peer_addr", &self.shared.peer_addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl RpcClient {
    /// Connects over plain TCP (no delay) within `connect_timeout_ms`.
    pub async fn connect_tcp(
        address: SocketAddr,
        connect_timeout_ms: u64,
        config: RpcConfig,
    ) -> Result<RpcClient, NetError> {
        let stream = tokio::time::timeout(
            Duration::from_millis(connect_timeout_ms),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| NetError::Timeout {
            what: "connect",
            after_ms: connect_timeout_ms,
        })??;
        stream.set_nodelay(true)?;
        Ok(RpcClient::from_stream(stream, Some(address), config))
    }

    /// Connects over TLS 1.3 (`client_config` from [`crate::tls::client_config`]),
    /// checking the server's certificate against `server_name`.
    pub async fn connect_tls(
        address: SocketAddr,
        server_name: &str,
        client_config: Arc<rustls::ClientConfig>,
        connect_timeout_ms: u64,
        config: RpcConfig,
    ) -> Result<RpcClient, NetError> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|error| NetError::Tls {
            reason: format!("server name {server_name}: {error}"),
        })?;
        let connecting = async {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(client_config);
            connector.connect(name, tcp).await.map_err(|error| NetError::Tls {
                reason: error.to_string(),
            })
        };
        let stream = tokio::time::timeout(Duration::from_millis(connect_timeout_ms), connecting)
            .await
            .map_err(|_| NetError::Timeout {
                what: "connect",
                after_ms: connect_timeout_ms,
            })??;
        Ok(RpcClient::from_stream(stream, Some(address), config))
    }

    /// Starts a client over a connected stream: spawns its reader and writer tasks on
    /// the current tokio runtime.
    pub fn from_stream<S>(stream: S, peer_addr: Option<SocketAddr>, config: RpcConfig) -> RpcClient
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let in_flight_max = config.in_flight_max.max(1);
        let outbox_bytes_max = config.outbox_bytes_max.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            encoder: FrameEncoder::new(config.frame_bytes_max),
            next_request_id: AtomicU64::new(1),
            window: Arc::new(Semaphore::new(in_flight_max)),
            outbox_bytes: Arc::new(Semaphore::new(outbox_bytes_max)),
            closed: AtomicBool::new(false),
            close_reason: OnceLock::new(),
            closing: watch::Sender::new(false),
            peer_addr,
            config,
        });
        let (registrations, registered) = mpsc::channel(in_flight_max);
        let (outgoing, queued) = mpsc::channel(in_flight_max);
        let (read_half, write_half) = tokio::io::split(stream);
        tokio::spawn(writer_task(Arc::clone(&shared), write_half, queued));
        tokio::spawn(reader_task(Arc::clone(&shared), read_half, registered));
        RpcClient {
            shared,
            registrations,
            outgoing,
        }
    }

    /// Calls `message_type` with `body` and returns the answer's body, or the server's
    /// error answer as `NetError::Remote`, within `call_timeout_ms`.
    pub async fn call(&self, message_type: u16, body: &[u8]) -> Result<Vec<u8>, NetError> {
        let timeout_ms = self.shared.config.call_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), self.call_inner(message_type, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(NetError::Timeout {
                what: "call",
                after_ms: timeout_ms,
            }),
        }
    }

    async fn call_inner(&self, message_type: u16, body: &[u8]) -> Answer {
        let shared = &self.shared;
        self.check_open()?;
        let _slot = if shared.config.wait_for_window {
            Arc::clone(&shared.window)
                .acquire_owned()
                .await
                .map_err(|_| shared.closed_error())?
        } else {
            Arc::clone(&shared.window)
                .try_acquire_owned()
                .map_err(|error| match error {
                    tokio::sync::TryAcquireError::NoPermits => NetError::Busy {
                        what: "requests in flight",
                        limit: shared.config.in_flight_max,
                    },
                    tokio::sync::TryAcquireError::Closed => shared.closed_error(),
                })?
        };
        let request_id = shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(
            FrameHeader {
                kind: FrameKind::Request,
                message_type,
                request_id,
            },
            body,
        )?;
        let (sender, receiver) = oneshot::channel();
        self.registrations
            .send((request_id, sender))
            .await
            .map_err(|_| shared.closed_error())?;
        self.queue(frame).await?;
        receiver.await.unwrap_or_else(|_| Err(shared.closed_error()))
    }

    /// Sends a one-way message (no answer; delivery ends with the connection).
    pub async fn send_one_way(&self, message_type: u16, body: &[u8]) -> Result<(), NetError> {
        self.check_open()?;
        let frame = self.encode(
            FrameHeader {
                kind: FrameKind::OneWay,
                message_type,
                request_id: 0,
            },
            body,
        )?;
        self.queue(frame).await
    }

    fn encode(&self, header: FrameHeader, body: &[u8]) -> Result<Vec<u8>, NetError> {
        let mut frame = Vec::with_capacity(self.shared.encoder.frame_bytes(body.len())?);
        self.shared.encoder.encode(&mut frame, header, body)?;
        Ok(frame)
    }

    async fn queue(&self, bytes: Vec<u8>) -> Result<(), NetError> {
        let shared = &self.shared;
        // A frame larger than the whole outbox waits for all of it, then goes alone.
        let permits = bytes
            .len()
            .clamp(1, shared.config.outbox_bytes_max.clamp(1, Semaphore::MAX_PERMITS));
        let permits = u32::try_from(permits).unwrap_or(u32::MAX);
        let outbox_bytes = Arc::clone(&shared.outbox_bytes)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| shared.closed_error())?;
        self.outgoing
            .send(Outgoing {
                bytes,
                _outbox_bytes: outbox_bytes,
            })
            .await
            .map_err(|_| shared.closed_error())
    }

    fn check_open(&self) -> Result<(), NetError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(self.shared.closed_error());
        }
        Ok(())
    }

    /// Whether the connection is closed (by either side or an error).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Why the connection closed, once it did.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.close_reason.get().map(|error| error.to_string())
    }

    /// The server's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.peer_addr
    }

    /// Closes the connection: waiting and later calls answer `Closed`.
    pub fn close(&self) {
        self.shared.close_with(NetError::closed("closed by the caller"));
    }
}

/// Sends queued frames, coalescing what is waiting into one write of at most
/// `outbox_bytes_max`.
async fn writer_task<W: AsyncWrite>(shared: Arc<Shared>, write_half: W, mut queued: mpsc::Receiver<Outgoing>) {
    tokio::pin!(write_half);
    let send_timeout = Duration::from_millis(shared.config.send_timeout_ms);
    let mut batch: Vec<u8> = Vec::new();
    let mut closing = shared.closing.subscribe();
    loop {
        let first = tokio::select! {
            first = queued.recv() => first,
            _ = closing.wait_for(|closing| *closing) => None,
        };
        let Some(first) = first else { break };
        batch.clear();
        batch.extend_from_slice(&first.bytes);
        let mut held = vec![first];
        while batch.len() < shared.config.outbox_bytes_max {
            match queued.try_recv() {
                Ok(next) => {
                    batch.extend_from_slice(&next.bytes);
                    held.push(next);
                }
                Err(_) => break,
            }
        }
        let written = tokio::time::timeout(send_timeout, write_half.write_all(&batch)).await;
        drop(held);
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return shared.close_with(NetError::closed(format!("send failed: {error}"))),
            Err(_) => {
                return shared.close_with(NetError::Timeout {
                    what: "send",
                    after_ms: shared.config.send_timeout_ms,
                })
            }
        }
    }
    let _ = write_half.shutdown().await;
}

/// Routes answers to their callers until the connection ends, then fails what is left.
async fn reader_task<R: AsyncRead>(shared: Arc<Shared>, read_half: R, mut registered: mpsc::Receiver<Registration>) {
    tokio::pin!(read_half);
    let mut decoder = FrameDecoder::new(shared.config.frame_bytes_max);
    let mut waiting: HashMap<u64, oneshot::Sender<Answer>> = HashMap::new();
    let mut closing = shared.closing.subscribe();
    let recv_bytes = shared.config.recv_bytes.max(4096);
    let error = loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                while let Ok((id, sender)) = registered.try_recv() {
                    waiting.insert(id, sender);
                }
                if let Err(error) = route(frame, &mut waiting) {
                    break error;
                }
                if waiting.len() > 2 * shared.config.in_flight_max.max(1) {
                    waiting.retain(|_, sender| !sender.is_closed());
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => break error,
        }
        let mut buffer = decoder.take_read_buffer(recv_bytes);
        let read = tokio::select! {
            read = read_half.read_buf(&mut buffer) => Some(read),
            _ = closing.wait_for(|closing| *closing) => None,
        };
        decoder.restore_read_buffer(buffer);
        let Some(read) = read else {
            break shared.closed_error();
        };
        match read {
            Ok(0) => {
                break match decoder.finish() {
                    Ok(()) => NetError::closed("the server closed the connection"),
                    Err(error) => error,
                };
            }
            Ok(_) => {}
            Err(error) => break NetError::Io(error),
        }
    };
    tracing::debug!(%error, peer = ?shared.peer_addr, "RPC client connection ends");
    shared.close_with(error);
    registered.close();
    while let Ok((id, sender)) = registered.try_recv() {
        waiting.insert(id, sender);
    }
    for (_, sender) in waiting {
        let _ = sender.send(Err(shared.closed_error()));
    }
}

/// Routes one frame from the server to its caller.
fn route(frame: Frame, waiting: &mut HashMap<u64, oneshot::Sender<Answer>>) -> Result<(), NetError> {
    let answer = match frame.header.kind {
        FrameKind::Response => Ok(frame.body),
        FrameKind::ErrorResponse => {
            let error: ErrorBody = decode_body(&frame.body)?;
            Err(NetError::Remote {
                code: error.code(),
                message: error.message,
            })
        }
        FrameKind::GoAway => {
            let error: ErrorBody = decode_body(&frame.body)?;
            return Err(NetError::GoAway {
                code: error.code(),
                message: error.message,
            });
        }
        FrameKind::Request | FrameKind::OneWay => {
            return Err(NetError::Protocol {
                reason: format!("a client got a {:?} frame", frame.header.kind),
            })
        }
    };
    if let Some(sender) = waiting.remove(&frame.header.request_id) {
        let _ = sender.send(answer);
    }
    Ok(())
}
