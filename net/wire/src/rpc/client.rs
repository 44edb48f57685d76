//! The calling side of a connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use kiseki_runtime::local::{oneshot, Notify, OneshotReceiver, OneshotSender};
use kiseki_runtime::JoinHandle;

use super::connection::{error_body, go_away_header, parse_error_body, FrameReader, Outbox};
use super::RpcConfig;
use crate::error::{ErrorCode, NetError};
use crate::frame::{Frame, FrameHeader, FrameKind};
use crate::stream::{race, ByteStream, Either};

type Answer = Result<Vec<u8>, NetError>;

/// State shared by the handle, the reader task, the writer task and the calls.
struct ClientShared {
    config: RpcConfig,
    stream: Rc<dyn ByteStream>,
    outbox: Outbox,
    next_request_id: Cell<u64>,
    /// Calls waiting for their answer, by request id; at most `in_flight_max`.
    in_flight: RefCell<HashMap<u64, OneshotSender<Answer>>>,
    slot_freed: Notify,
    /// Why the connection closed, once it did.
    closed: RefCell<Option<String>>,
    stop_reader: Notify,
    late_answers: Cell<u64>,
}

/// A multiplexed RPC connection, calling side. Many tasks of its core may call
/// concurrently (share it as `Rc<RpcClient>`); answers are routed back by request id.
///
/// At most `in_flight_max` calls are outstanding; further calls wait for a slot or
/// answer `Busy` (`RpcConfig::wait_for_window`). Every call has a deadline
/// (`call_timeout_ms`). Once the connection fails, every outstanding and later call
/// answers `Closed` (or `GoAway`, with the peer's reason). Dropping the client closes
/// the connection.
pub struct RpcClient {
    shared: Rc<ClientShared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("peer_addr", &self.peer_addr())
            .field("in_flight", &self.in_flight())
            .field("closed", &self.shared.closed.borrow())
            .finish()
    }
}

/// Removes a call from the in-flight set however it ends (answer, timeout, drop).
struct Slot {
    shared: Rc<ClientShared>,
    request_id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.in_flight.borrow_mut().remove(&self.request_id);
        self.shared.slot_freed.notify();
    }
}

impl RpcClient {
    /// Starts a client over a connected stream: spawns its reader and writer tasks on
    /// this core.
    pub fn new(stream: Rc<dyn ByteStream>, config: RpcConfig) -> Result<RpcClient, NetError> {
        let shared = Rc::new(ClientShared {
            outbox: Outbox::new(&config),
            config,
            stream,
            next_request_id: Cell::new(1),
            in_flight: RefCell::new(HashMap::new()),
            slot_freed: Notify::new(),
            closed: RefCell::new(None),
            stop_reader: Notify::new(),
            late_answers: Cell::new(0),
        });
        let writer = Rc::clone(&shared);
        let writer = kiseki_runtime::spawn("rpc-client-writer", async move {
            if let Err(error) = writer.outbox.run_writer(writer.stream.as_ref()).await {
                writer.shut_down(|| NetError::closed(format!("send failed: {error}")));
            }
        })?;
        let reader = Rc::clone(&shared);
        let reader = match kiseki_runtime::spawn("rpc-client-reader", client_reader(reader)) {
            Ok(reader) => reader,
            Err(error) => {
                shared.shut_down(|| NetError::closed("no reader task"));
                return Err(error.into());
            }
        };
        Ok(RpcClient {
            shared,
            tasks: vec![writer, reader],
        })
    }

    /// Calls `message_type` with `body` and returns the answer's body, or the peer's
    /// error answer as `NetError::Remote`.
    pub async fn call(&self, message_type: u16, body: &[u8]) -> Result<Vec<u8>, NetError> {
        let timeout_ms = self.shared.config.call_timeout_ms;
        match kiseki_runtime::timeout(Duration::from_millis(timeout_ms), self.call_inner(message_type, body)).await {
            Some(answer) => answer,
            None => Err(NetError::Timeout {
                what: "call",
                after_ms: timeout_ms,
            }),
        }
    }

    async fn call_inner(&self, message_type: u16, body: &[u8]) -> Answer {
        let (slot, receiver) = self.acquire_slot().await?;
        let header = FrameHeader {
            kind: FrameKind::Request,
            message_type,
            request_id: slot.request_id,
        };
        self.shared
            .outbox
            .push(header, body)
            .await
            .map_err(|error| self.closed_or(error))?;
        let answer = receiver.await;
        drop(slot);
        answer.unwrap_or_else(|| Err(self.closed_or(NetError::closed("connection closed"))))
    }

    /// Sends a one-way message (no answer; delivery ends with the connection).
    pub async fn send_one_way(&self, message_type: u16, body: &[u8]) -> Result<(), NetError> {
        self.check_open()?;
        let header = FrameHeader {
            kind: FrameKind::OneWay,
            message_type,
            request_id: 0,
        };
        self.shared
            .outbox
            .push(header, body)
            .await
            .map_err(|error| self.closed_or(error))
    }

    async fn acquire_slot(&self) -> Result<(Slot, OneshotReceiver<Answer>), NetError> {
        let shared = &self.shared;
        loop {
            self.check_open()?;
            let in_flight = shared.in_flight.borrow().len();
            if in_flight < shared.config.in_flight_max {
                let request_id = shared.next_request_id.get();
                shared.next_request_id.set(request_id.checked_add(1).unwrap_or(1));
                let (sender, receiver) = oneshot();
                shared.in_flight.borrow_mut().insert(request_id, sender);
                let slot = Slot {
                    shared: Rc::clone(shared),
                    request_id,
                };
                return Ok((slot, receiver));
            }
            if !shared.config.wait_for_window {
                return Err(NetError::Busy {
                    what: "requests in flight",
                    limit: shared.config.in_flight_max,
                });
            }
            shared.slot_freed.notified().await;
        }
    }

    fn check_open(&self) -> Result<(), NetError> {
        match &*self.shared.closed.borrow() {
            Some(reason) => Err(NetError::closed(reason.clone())),
            None => Ok(()),
        }
    }

    fn closed_or(&self, error: NetError) -> NetError {
        match &*self.shared.closed.borrow() {
            Some(reason) => NetError::closed(reason.clone()),
            None => error,
        }
    }

    /// Calls waiting for their answer.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.borrow().len()
    }

    /// Whether the connection is closed (by either side or an error).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Why the connection closed, once it did.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.closed.borrow().clone()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.stream.peer_addr()
    }

    /// Frames sent and `send` calls made so far; more frames than sends shows writes
    /// being coalesced.
    pub fn send_counters(&self) -> (u64, u64) {
        self.shared.outbox.counters()
    }

    /// Answers that arrived for calls that had already given up (timed out or dropped).
    pub fn late_answers(&self) -> u64 {
        self.shared.late_answers.get()
    }

    /// Closes the connection: outstanding calls answer `Closed`, queued frames are still
    /// sent, then the sending side is shut.
    pub fn close(&self) {
        self.shared.shut_down(|| NetError::closed("closed by the caller"));
    }

    /// Closes the connection and waits until its tasks have ended (queued frames sent,
    /// sending side shut, reader stopped), so no socket operation of it is left.
    /// A peer that does not read gets `close_timeout_ms` before queued frames are dropped.
    pub async fn shutdown(mut self) {
        self.close();
        let close_timeout = Duration::from_millis(self.shared.config.close_timeout_ms);
        for mut task in std::mem::take(&mut self.tasks) {
            if kiseki_runtime::timeout(close_timeout, &mut task).await.is_none() {
                self.shared.outbox.abort();
                task.await;
            }
        }
    }
}

impl Drop for RpcClient {
    fn drop(&mut self) {
        self.close();
    }
}

impl ClientShared {
    /// Marks the connection closed and fails every outstanding call with `error()`.
    fn shut_down(&self, error: impl Fn() -> NetError) {
        if self.closed.borrow().is_none() {
            *self.closed.borrow_mut() = Some(error().to_string());
        }
        self.outbox.close();
        self.stop_reader.notify();
        let waiting = std::mem::take(&mut *self.in_flight.borrow_mut());
        for (_, sender) in waiting {
            sender.send(Err(error()));
        }
        self.slot_freed.notify();
    }

    /// Routes one frame from the server.
    fn dispatch(&self, frame: Frame) -> Result<(), NetError> {
        let answer = match frame.header.kind {
            FrameKind::Response => Ok(frame.body),
            FrameKind::ErrorResponse => {
                let (code, message) = parse_error_body(&frame.body)?;
                Err(NetError::Remote { code, message })
            }
            FrameKind::GoAway => {
                let (code, message) = parse_error_body(&frame.body)?;
                return Err(NetError::GoAway { code, message });
            }
            FrameKind::Request | FrameKind::OneWay => {
                return Err(NetError::Protocol {
                    reason: format!("a client got a {:?} frame", frame.header.kind),
                })
            }
        };
        let sender = self.in_flight.borrow_mut().remove(&frame.header.request_id);
        match sender {
            Some(sender) => sender.send(answer),
            None => self.late_answers.set(self.late_answers.get() + 1),
        }
        Ok(())
    }
}

/// The reader task: routes answers until the connection ends, then fails what is left.
async fn client_reader(shared: Rc<ClientShared>) {
    let mut reader = FrameReader::new(Rc::clone(&shared.stream), &shared.config);
    let read_all = async {
        loop {
            match reader.next().await {
                Ok(Some(frame)) => {
                    if let Err(error) = shared.dispatch(frame) {
                        return error;
                    }
                }
                Ok(None) => return NetError::closed("the server closed the connection"),
                Err(error) => return error,
            }
        }
    };
    let error = match race(read_all, shared.stop_reader.notified()).await {
        Either::Left(error) => error,
        Either::Right(()) => return shared.shut_down(|| NetError::closed("closed")),
    };
    tracing::debug!(%error, peer = ?shared.stream.peer_addr(), "RPC client connection ends");
    match error {
        NetError::GoAway { code, message } => {
            shared.shut_down(|| NetError::GoAway {
                code,
                message: message.clone(),
            });
        }
        error => {
            // A malformed or unexpected frame: tell the server why before closing (I-W2).
            if !matches!(error, NetError::Io(_) | NetError::Closed { .. }) {
                let code = match error.code() {
                    ErrorCode::BadRequest => ErrorCode::ProtocolViolation,
                    code => code,
                };
                shared
                    .outbox
                    .push_last(go_away_header(), &error_body(code, &error.to_string()));
            }
            let reason = error.to_string();
            shared.shut_down(|| NetError::closed(reason.clone()));
        }
    }
}
