//! The serving side: the per-connection loop and the accept loop.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use kiseki_runtime::local::Notify;

use super::connection::{error_body, go_away_header, parse_error_body, FrameReader, Outbox};
use super::RpcConfig;
use crate::error::{ErrorCode, NetError, RemoteError};
use crate::frame::{Frame, FrameHeader, FrameKind};
use crate::stream::{race, ByteStream, Either};
use crate::transport::Listener;

/// Who sent a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address.
    pub addr: Option<SocketAddr>,
    /// The DER of the peer's verified certificate (mutual TLS), if any.
    pub certificate_der: Option<Vec<u8>>,
}

/// One request handed to a [`Service`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The RPC method.
    pub message_type: u16,
    /// The caller's request id (0 for one-way messages).
    pub request_id: u64,
    /// Whether the sender expects no answer (a OneWay frame).
    pub one_way: bool,
    /// The body, checksum verified but not yet validated: decode it with
    /// [`crate::decode_body`], which validates before use (I-W1).
    pub body: Vec<u8>,
    /// Who sent it.
    pub peer: Rc<PeerInfo>,
}

/// Handles the requests of a connection. Each request runs as its own task on the
/// connection's core, so a slow request does not hold up the others; at most
/// `in_flight_max` run at once per connection.
///
/// Answer with the response body, or a [`RemoteError`] that the caller receives as
/// `NetError::Remote` with the same code. Unknown message types should answer
/// `ErrorCode::UnknownMethod`; bodies that fail [`crate::decode_body`] convert to
/// `ErrorCode::BadRequest` with `RemoteError::from`. The answer to a one-way message is
/// dropped.
// Futures here are `!Send` by design: a connection and its handlers live on one core.
#[allow(async_fn_in_trait)]
pub trait Service: 'static {
    /// Handles one request.
    async fn handle(&self, request: Request) -> Result<Vec<u8>, RemoteError>;
}

/// Where an answer goes: the request's header fields.
#[derive(Debug, Clone, Copy)]
struct AnswerTo {
    message_type: u16,
    request_id: u64,
    one_way: bool,
}

/// State of one served connection, shared by its reader loop, writer task and handlers.
struct ServerConnection {
    config: RpcConfig,
    outbox: Outbox,
    in_flight: Cell<usize>,
    idle: Notify,
    /// Set when the writer failed (the peer stopped reading, or the socket broke).
    writer_failed: Cell<bool>,
    writer_failed_notify: Notify,
}

impl ServerConnection {
    fn answer_header(request: AnswerTo, kind: FrameKind) -> FrameHeader {
        FrameHeader {
            kind,
            message_type: request.message_type,
            request_id: request.request_id,
        }
    }

    async fn answer(&self, request: AnswerTo, result: Result<Vec<u8>, RemoteError>) {
        if request.one_way {
            if let Err(error) = result {
                tracing::debug!(%error, message_type = request.message_type, "one-way message failed");
            }
            return;
        }
        let pushed = match result {
            Ok(body) => match self
                .outbox
                .push(Self::answer_header(request, FrameKind::Response), &body)
                .await
            {
                Err(error @ NetError::FrameTooLarge { .. }) => {
                    let body = error_body(ErrorCode::Internal, &format!("answer not sent: {error}"));
                    let header = Self::answer_header(request, FrameKind::ErrorResponse);
                    self.outbox.push(header, &body).await
                }
                other => other,
            },
            Err(error) => {
                let body = error_body(error.code, &error.message);
                self.outbox
                    .push(Self::answer_header(request, FrameKind::ErrorResponse), &body)
                    .await
            }
        };
        if let Err(error) = pushed {
            tracing::debug!(%error, request_id = request.request_id, "answer dropped");
        }
    }

    fn finish_request(&self) {
        self.in_flight.set(self.in_flight.get() - 1);
        if self.in_flight.get() == 0 {
            self.idle.notify();
        }
    }
}

/// Serves one connection until the peer closes it, it fails, or `shutdown` is notified:
/// requests go to `service`, answers go back in order of completion.
///
/// A malformed frame or a protocol violation from the peer is answered with a GoAway
/// frame carrying the reason, then the connection is closed and the error returned;
/// other connections are not affected (I-W2). Handler tasks still running when the
/// connection ends get `close_timeout_ms` to have their answers sent.
pub async fn serve_connection<S: Service>(
    stream: Rc<dyn ByteStream>,
    service: Rc<S>,
    config: RpcConfig,
    shutdown: Option<Rc<Notify>>,
) -> Result<(), NetError> {
    let peer = Rc::new(PeerInfo {
        addr: stream.peer_addr(),
        certificate_der: stream.peer_certificate(),
    });
    let connection = Rc::new(ServerConnection {
        outbox: Outbox::new(&config),
        config,
        in_flight: Cell::new(0),
        idle: Notify::new(),
        writer_failed: Cell::new(false),
        writer_failed_notify: Notify::new(),
    });
    let writer_connection = Rc::clone(&connection);
    let writer_stream = Rc::clone(&stream);
    let writer = kiseki_runtime::spawn("rpc-server-writer", async move {
        let result = writer_connection.outbox.run_writer(writer_stream.as_ref()).await;
        if result.is_err() {
            writer_connection.writer_failed.set(true);
            writer_connection.writer_failed_notify.notify();
        }
        result
    })?;
    let mut reader = FrameReader::new(stream, &connection.config);
    let read_all = async {
        loop {
            match reader.next().await {
                Ok(Some(frame)) => dispatch(&connection, &service, &peer, frame).await?,
                Ok(None) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    };
    let shutdown_requested = async {
        match &shutdown {
            Some(shutdown) => shutdown.notified().await,
            None => std::future::pending().await,
        }
    };
    let writer_failed = async {
        while !connection.writer_failed.get() {
            connection.writer_failed_notify.notified().await;
        }
    };
    let result = match race(read_all, race(shutdown_requested, writer_failed)).await {
        Either::Left(result) => result,
        Either::Right(Either::Left(())) => Err(NetError::GoAway {
            code: ErrorCode::ShuttingDown,
            message: "the server is shutting down".into(),
        }),
        // The writer's own error is returned below.
        Either::Right(Either::Right(())) => Err(NetError::closed("sending failed")),
    };
    finish(&connection, &result).await;
    let close_timeout = Duration::from_millis(connection.config.close_timeout_ms);
    let mut writer = std::pin::pin!(writer);
    match kiseki_runtime::timeout(close_timeout, writer.as_mut()).await {
        Some(Err(error)) if result.is_ok() || connection.writer_failed.get() => return Err(error),
        Some(_) => {}
        None => {
            tracing::debug!(peer = ?peer.addr, "the peer does not read; closing with answers unsent");
            connection.outbox.abort();
            let _ = writer.await;
        }
    }
    match result {
        // Our own GoAway for a shutdown is a clean end.
        Err(NetError::GoAway {
            code: ErrorCode::ShuttingDown,
            ..
        }) => Ok(()),
        other => other,
    }
}

/// Ends a connection: waits (bounded by `close_timeout_ms`) for running handlers to
/// queue their answers, then closes the outbox, after a GoAway with the reason when the
/// peer sent a bad frame or the server shuts down.
async fn finish(connection: &ServerConnection, result: &Result<(), NetError>) {
    if !matches!(result, Err(NetError::Io(_))) {
        let close_timeout = Duration::from_millis(connection.config.close_timeout_ms);
        let wait_for_handlers = async {
            while connection.in_flight.get() > 0 {
                connection.idle.notified().await;
            }
        };
        kiseki_runtime::timeout(close_timeout, wait_for_handlers).await;
    }
    match result {
        // A clean end, the peer said goodbye, or the socket failed: nothing to tell it.
        Ok(()) | Err(NetError::Io(_) | NetError::Closed { .. }) => connection.outbox.close(),
        Err(NetError::GoAway { code, message }) if *code == ErrorCode::ShuttingDown => {
            connection
                .outbox
                .push_last(go_away_header(), &error_body(*code, message));
        }
        Err(NetError::GoAway { .. }) => connection.outbox.close(),
        Err(error) => {
            tracing::debug!(%error, "closing a connection after a bad frame");
            let code = match error.code() {
                ErrorCode::BadRequest => ErrorCode::ProtocolViolation,
                code => code,
            };
            connection
                .outbox
                .push_last(go_away_header(), &error_body(code, &error.to_string()));
        }
    }
}

/// Hands one frame to the service (or answers it at once).
async fn dispatch<S: Service>(
    connection: &Rc<ServerConnection>,
    service: &Rc<S>,
    peer: &Rc<PeerInfo>,
    frame: Frame,
) -> Result<(), NetError> {
    let one_way = match frame.header.kind {
        FrameKind::Request => false,
        FrameKind::OneWay => true,
        FrameKind::GoAway => {
            let (code, message) = parse_error_body(&frame.body)?;
            return Err(NetError::GoAway { code, message });
        }
        FrameKind::Response | FrameKind::ErrorResponse => {
            return Err(NetError::Protocol {
                reason: format!("a server got a {:?} frame", frame.header.kind),
            })
        }
    };
    let answer_to = AnswerTo {
        message_type: frame.header.message_type,
        request_id: frame.header.request_id,
        one_way,
    };
    let limit = connection.config.in_flight_max;
    if connection.in_flight.get() >= limit {
        let busy = RemoteError::new(
            ErrorCode::Busy,
            format!("{limit} requests in flight on this connection"),
        );
        connection.answer(answer_to, Err(busy)).await;
        return Ok(());
    }
    let request = Request {
        message_type: frame.header.message_type,
        request_id: frame.header.request_id,
        one_way,
        body: frame.body,
        peer: Rc::clone(peer),
    };
    connection.in_flight.set(connection.in_flight.get() + 1);
    let task_connection = Rc::clone(connection);
    let task_service = Rc::clone(service);
    let spawned = kiseki_runtime::spawn("rpc-handler", async move {
        let result = task_service.handle(request).await;
        task_connection.answer(answer_to, result).await;
        task_connection.finish_request();
    });
    if let Err(error) = spawned {
        // The core is at its task limit.
        connection.finish_request();
        connection
            .answer(answer_to, Err(RemoteError::from(NetError::from(error))))
            .await;
    }
    Ok(())
}

/// Accepts connections on a listener and serves each with a [`Service`], on this core.
pub struct RpcServer<S> {
    listener: Box<dyn Listener>,
    service: Rc<S>,
    config: RpcConfig,
    connections: Rc<Cell<usize>>,
    connection_ended: Rc<Notify>,
    refused: Cell<u64>,
    shutdown: Rc<Notify>,
    stopping: Cell<bool>,
}

impl<S: Service> RpcServer<S> {
    /// A server for `listener`; nothing happens until [`RpcServer::run`].
    pub fn new(listener: Box<dyn Listener>, service: Rc<S>, config: RpcConfig) -> RpcServer<S> {
        RpcServer {
            listener,
            service,
            config,
            connections: Rc::new(Cell::new(0)),
            connection_ended: Rc::new(Notify::new()),
            refused: Cell::new(0),
            shutdown: Rc::new(Notify::new()),
            stopping: Cell::new(false),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.listener.local_addr()
    }

    /// Connections being served.
    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Connections closed at once because `connections_max` were being served.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Accepts and serves connections (each on a task of its own) until
    /// [`RpcServer::stop`]; then waits for the connections to end (each gets
    /// `close_timeout_ms` for its running requests, a grace period more is allowed).
    pub async fn run(&self) -> Result<(), NetError> {
        self.accept_until_stopped().await;
        let grace = Duration::from_millis(self.config.close_timeout_ms.saturating_mul(2));
        let all_ended = async {
            while self.connections.get() > 0 {
                self.connection_ended.notified().await;
            }
        };
        if kiseki_runtime::timeout(grace, all_ended).await.is_none() {
            tracing::warn!(
                connections = self.connections.get(),
                "connections outlive the server's stop"
            );
        }
        Ok(())
    }

    async fn accept_until_stopped(&self) {
        while !self.stopping.get() {
            let accepted = match race(self.listener.accept(), self.shutdown.notified()).await {
                Either::Left(accepted) => accepted,
                Either::Right(()) => break,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // A failed accept (a peer that reset, descriptors exhausted) does not
                    // stop the listener; give the core to others before trying again.
                    tracing::warn!(%error, "accept failed");
                    kiseki_runtime::yield_now().await;
                    continue;
                }
            };
            if self.connections.get() >= self.config.connections_max {
                self.refused.set(self.refused.get() + 1);
                tracing::warn!(peer = %accepted.peer_addr(), limit = self.config.connections_max, "connection refused");
                continue;
            }
            self.connections.set(self.connections.get() + 1);
            let connections = Rc::clone(&self.connections);
            let connection_ended = Rc::clone(&self.connection_ended);
            let service = Rc::clone(&self.service);
            let config = self.config.clone();
            let shutdown = Rc::clone(&self.shutdown);
            let peer_addr = accepted.peer_addr();
            let spawned = kiseki_runtime::spawn("rpc-connection", async move {
                let result = match accepted.establish().await {
                    Ok(stream) => serve_connection(stream, service, config, Some(shutdown)).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    tracing::debug!(%error, peer = %peer_addr, "connection ended with an error");
                }
                connections.set(connections.get() - 1);
                connection_ended.notify();
            });
            if spawned.is_err() {
                self.connections.set(self.connections.get() - 1);
                self.refused.set(self.refused.get() + 1);
            }
        }
    }

    /// Stops accepting, and tells every connection to finish its running requests, send
    /// a GoAway (`ShuttingDown`) and close.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.shutdown.notify();
    }
}
