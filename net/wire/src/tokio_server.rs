//! The serving side of a connection for tokio processes (the key server, the control
//! plane): the same frames, bodies, limits and error answers as the runtime's
//! [`crate::RpcServer`], with mutual TLS 1.3 when a server configuration is given.
//!
//! **Shape.** One accept loop; per connection, a reader (this task) that decodes frames
//! and starts one handler task per request, and a writer task that owns the write half
//! and sends answers in order of completion. Everything is bounded: connections
//! (`connections_max`, further ones are closed when accepted), requests in flight per
//! connection (`in_flight_max`, further ones are answered `Busy` without running), frame
//! size (`frame_bytes_max`), answers queued for the writer (`in_flight_max`). A
//! malformed frame is answered with a GoAway carrying the reason and closes only that
//! connection (I-W2).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::body::{encode_body, ErrorBody};
use crate::error::{ErrorCode, NetError, RemoteError};
use crate::frame::{Frame, FrameDecoder, FrameEncoder, FrameHeader, FrameKind};
use crate::RpcConfig;

/// Who sent a request to a tokio server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokioPeer {
    /// The peer's address.
    pub addr: Option<SocketAddr>,
    /// The common name of the peer's verified certificate (mutual TLS), if any.
    pub common_name: Option<String>,
}

/// Handles the requests of a tokio server. Each request runs as its own task; answer
/// with the response body or a [`RemoteError`] (the caller receives it as
/// `NetError::Remote` with the same code). Unknown message types should answer
/// `ErrorCode::UnknownMethod`, bodies that fail [`crate::decode_body`] convert to
/// `ErrorCode::BadRequest` with `RemoteError::from`.
pub trait TokioService: Send + Sync + 'static {
    /// Handles one request of type `message_type` from `peer`.
    fn handle(
        &self,
        message_type: u16,
        body: Vec<u8>,
        peer: Arc<TokioPeer>,
    ) -> impl Future<Output = Result<Vec<u8>, RemoteError>> + Send;
}

/// Serves `listener` until `shutdown` completes: plain TCP without `tls`, mutual TLS 1.3
/// with it (a server configuration from [`crate::tls::server_config`], which requires a
/// client certificate of the cluster CA).
pub async fn serve_tokio<S: TokioService>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: Arc<S>,
    config: RpcConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetError> {
    let connections = Arc::new(Semaphore::new(config.connections_max.max(1)));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%addr, limit = config.connections_max, "too many connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        let config = config.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match acceptor {
                None => {
                    let peer = TokioPeer {
                        addr: Some(addr),
                        common_name: None,
                    };
                    serve_stream(stream, peer, service, config).await
                }
                Some(acceptor) => {
                    let handshake = Duration::from_millis(crate::tls::HANDSHAKE_TIMEOUT_MS_DEFAULT);
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let common_name = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|certificate| crate::tls::common_name(certificate.as_ref()));
                            let peer = TokioPeer {
                                addr: Some(addr),
                                common_name,
                            };
                            serve_stream(stream, peer, service, config).await
                        }
                        Ok(Err(error)) => Err(NetError::Tls {
                            reason: error.to_string(),
                        }),
                        Err(_) => Err(NetError::Timeout {
                            what: "TLS handshake",
                            after_ms: crate::tls::HANDSHAKE_TIMEOUT_MS_DEFAULT,
                        }),
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %addr, "connection ended");
            }
        });
    }
}

/// An encoded frame for the writer.
type Outgoing = Vec<u8>;

fn encode(encoder: &FrameEncoder, header: FrameHeader, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    match encoder.encode(&mut frame, header, body) {
        Ok(()) => frame,
        Err(error) => {
            // Only an answer too large for a frame fails; say so instead.
            frame.clear();
            let body = error_body(ErrorCode::Internal, &format!("answer not sent: {error}"));
            let header = FrameHeader {
                kind: FrameKind::ErrorResponse,
                ..header
            };
            let _ = encoder.encode(&mut frame, header, &body);
            frame
        }
    }
}

fn error_body(code: ErrorCode, message: &str) -> Vec<u8> {
    encode_body(&ErrorBody::new(code, message)).unwrap_or_default()
}

/// Serves one connection until the peer closes it or sends something malformed.
async fn serve_stream<T, S>(stream: T, peer: TokioPeer, service: Arc<S>, config: RpcConfig) -> Result<(), NetError>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
    S: TokioService,
{
    let peer = Arc::new(peer);
    let encoder = Arc::new(FrameEncoder::new(config.frame_bytes_max));
    let in_flight = Arc::new(Semaphore::new(config.in_flight_max.max(1)));
    let (read_half, write_half) = tokio::io::split(stream);
    let (outgoing, queued) = mpsc::channel::<Outgoing>(config.in_flight_max.max(1) * 2);
    let writer = tokio::spawn(writer_task(write_half, queued, config.send_timeout_ms));
    let result = read_requests(read_half, &peer, &service, &config, &encoder, &in_flight, &outgoing).await;
    if let Err(error) = &result {
        if !matches!(error, NetError::Closed { .. }) {
            let header = FrameHeader {
                kind: FrameKind::GoAway,
                message_type: 0,
                request_id: 0,
            };
            let frame = encode(&encoder, header, &error_body(error.code(), &error.to_string()));
            let _ = outgoing.send(frame).await;
        }
    }
    // Handlers still running get `close_timeout_ms` to have their answers sent.
    let permits = u32::try_from(config.in_flight_max.max(1)).unwrap_or(u32::MAX);
    let close_timeout = Duration::from_millis(config.close_timeout_ms);
    let _ = tokio::time::timeout(close_timeout, in_flight.acquire_many(permits)).await;
    drop(outgoing);
    let _ = tokio::time::timeout(close_timeout, writer).await;
    result
}

async fn read_requests<R, S>(
    read_half: R,
    peer: &Arc<TokioPeer>,
    service: &Arc<S>,
    config: &RpcConfig,
    encoder: &Arc<FrameEncoder>,
    in_flight: &Arc<Semaphore>,
    outgoing: &mpsc::Sender<Outgoing>,
) -> Result<(), NetError>
where
    R: AsyncRead,
    S: TokioService,
{
    tokio::pin!(read_half);
    let mut decoder = FrameDecoder::new(config.frame_bytes_max);
    let recv_bytes = config.recv_bytes.max(4096);
    loop {
        while let Some(frame) = decoder.next_frame()? {
            dispatch(frame, peer, service, config, encoder, in_flight, outgoing).await?;
        }
        let mut buffer = decoder.take_read_buffer(recv_bytes);
        let read = if decoder.buffered_bytes() > 0 {
            let partial = Duration::from_millis(config.partial_frame_timeout_ms);
            match tokio::time::timeout(partial, read_half.read_buf(&mut buffer)).await {
                Ok(read) => read,
                Err(_) => {
                    return Err(NetError::Timeout {
                        what: "rest of a frame",
                        after_ms: config.partial_frame_timeout_ms,
                    })
                }
            }
        } else {
            read_half.read_buf(&mut buffer).await
        };
        decoder.restore_read_buffer(buffer);
        match read {
            Ok(0) => {
                decoder.finish()?;
                return Err(NetError::closed("the peer closed the connection"));
            }
            Ok(_) => {}
            Err(error) => return Err(NetError::Io(error)),
        }
    }
}

async fn dispatch<S: TokioService>(
    frame: Frame,
    peer: &Arc<TokioPeer>,
    service: &Arc<S>,
    config: &RpcConfig,
    encoder: &Arc<FrameEncoder>,
    in_flight: &Arc<Semaphore>,
    outgoing: &mpsc::Sender<Outgoing>,
) -> Result<(), NetError> {
    let header = frame.header;
    let one_way = match header.kind {
        FrameKind::Request => false,
        FrameKind::OneWay => true,
        FrameKind::GoAway => return Err(NetError::closed("the peer said goodbye")),
        kind => {
            return Err(NetError::Protocol {
                reason: format!("a server got a {kind:?} frame"),
            })
        }
    };
    let answer_header = move |kind| FrameHeader {
        kind,
        message_type: header.message_type,
        request_id: header.request_id,
    };
    let Ok(permit) = Arc::clone(in_flight).try_acquire_owned() else {
        if !one_way {
            let body = error_body(
                ErrorCode::Busy,
                &format!("more than {} requests in flight", config.in_flight_max),
            );
            let frame = encode(encoder, answer_header(FrameKind::ErrorResponse), &body);
            outgoing
                .send(frame)
                .await
                .map_err(|_| NetError::closed("sending failed"))?;
        }
        return Ok(());
    };
    let (service, peer, encoder, outgoing) = (
        Arc::clone(service),
        Arc::clone(peer),
        Arc::clone(encoder),
        outgoing.clone(),
    );
    tokio::spawn(async move {
        let _permit = permit;
        let result = service.handle(header.message_type, frame.body, peer).await;
        if one_way {
            return;
        }
        let frame = match result {
            Ok(body) => encode(&encoder, answer_header(FrameKind::Response), &body),
            Err(error) => encode(
                &encoder,
                answer_header(FrameKind::ErrorResponse),
                &error_body(error.code, &error.message),
            ),
        };
        let _ = outgoing.send(frame).await;
    });
    Ok(())
}

async fn writer_task<W: AsyncWrite>(write_half: W, mut queued: mpsc::Receiver<Outgoing>, send_timeout_ms: u64) {
    tokio::pin!(write_half);
    let send_timeout = Duration::from_millis(send_timeout_ms);
    let mut batch: Vec<u8> = Vec::new();
    while let Some(first) = queued.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 1 << 20 {
            match queued.try_recv() {
                Ok(next) => batch.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(send_timeout, write_half.write_all(&batch)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = write_half.shutdown().await;
}

/// Serves a tokio process's admin endpoint until `shutdown` completes: `GET /health`
/// answers `ok`, `GET /metrics` the Prometheus text `metrics` produces; anything else is
/// 404 (or 400 when it is not an HTTP request). One request per connection, requests of
/// at most 8 KiB, 16 connections at once.
pub async fn serve_admin<F, Fut>(listener: tokio::net::TcpListener, metrics: F, shutdown: impl Future<Output = ()>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    const REQUEST_BYTES_MAX: usize = 8 << 10;
    let metrics = Arc::new(metrics);
    let connections = Arc::new(Semaphore::new(16));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let Ok((mut stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            let read = async {
                while !request.windows(4).any(|window| window == b"\r\n\r\n") && request.len() < REQUEST_BYTES_MAX {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(count) => request.extend_from_slice(&buffer[..count]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read).await.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&request);
            let mut words = line.split_whitespace();
            let (status, body) = match (words.next(), words.next()) {
                (Some("GET"), Some("/health")) => ("200 OK", "ok\n".to_string()),
                (Some("GET"), Some("/metrics")) => ("200 OK", metrics().await),
                (Some(_), Some(_)) => ("404 Not Found", "try /metrics or /health\n".to_string()),
                _ => ("400 Bad Request", "not an HTTP request\n".to_string()),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(answer.as_bytes())).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// A flag that turns true on the first SIGTERM or SIGINT: hand [`stopped`] of it to
/// every server loop of a process so they all stop on one signal.
pub fn stop_on_signals() -> Result<tokio::sync::watch::Receiver<bool>, NetError> {
    let (sender, receiver) = tokio::sync::watch::channel(false);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        sender.send_replace(true);
    });
    Ok(receiver)
}

/// Completes once `flag` is true (or its sender is gone).
pub async fn stopped(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
