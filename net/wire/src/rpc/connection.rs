//! What client and server connections share: the outbox with its writer loop (write
//! coalescing) and the frame reader.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use kiseki_runtime::local::Notify;

use super::RpcConfig;
use crate::body::{decode_body, encode_body, ErrorBody};
use crate::error::{ErrorCode, NetError};
use crate::frame::{Frame, FrameDecoder, FrameEncoder, FrameHeader, FrameKind};
use crate::stream::{race, ByteStream, Either};

/// A send buffer larger than this is not kept for reuse after it went out.
const SPARE_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// Encoded frames waiting for the socket.
///
/// Producers append frames to `pending`; the writer loop swaps `pending` with an empty
/// buffer and sends everything in one `send_all`. Frames queued while a send is in
/// flight therefore go out together in the next one (write coalescing). `pending` holds
/// at most `bytes_max` bytes (one larger frame alone is accepted); producers wait for
/// space above that.
pub(crate) struct Outbox {
    pending: RefCell<Vec<u8>>,
    spare: RefCell<Vec<u8>>,
    encoder: FrameEncoder,
    bytes_max: usize,
    send_timeout_ms: u64,
    closed: Cell<bool>,
    aborted: Cell<bool>,
    has_data: Notify,
    has_space: Notify,
    abort: Notify,
    sends: Cell<u64>,
    frames: Cell<u64>,
}

impl Outbox {
    pub(crate) fn new(config: &RpcConfig) -> Outbox {
        Outbox {
            pending: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
            encoder: FrameEncoder::new(config.frame_bytes_max),
            bytes_max: config.outbox_bytes_max,
            send_timeout_ms: config.send_timeout_ms,
            closed: Cell::new(false),
            aborted: Cell::new(false),
            has_data: Notify::new(),
            has_space: Notify::new(),
            abort: Notify::new(),
            sends: Cell::new(0),
            frames: Cell::new(0),
        }
    }

    /// Queues one frame, waiting while the outbox is full. `Closed` once closed.
    pub(crate) async fn push(&self, header: FrameHeader, body: &[u8]) -> Result<(), NetError> {
        let frame_bytes = self.encoder.frame_bytes(body.len())?;
        loop {
            if self.closed.get() {
                return Err(NetError::closed("connection is closing"));
            }
            let queued_bytes = self.pending.borrow().len();
            if queued_bytes == 0 || queued_bytes + frame_bytes <= self.bytes_max {
                self.encode(header, body)?;
                return Ok(());
            }
            self.has_space.notified().await;
        }
    }

    /// Queues a last frame regardless of the limit, then closes the outbox.
    pub(crate) fn push_last(&self, header: FrameHeader, body: &[u8]) {
        if !self.closed.get() {
            // Only a body over the frame limit fails, and error bodies are small.
            if let Err(error) = self.encode(header, body) {
                tracing::warn!(%error, "cannot queue the last frame");
            }
        }
        self.close();
    }

    fn encode(&self, header: FrameHeader, body: &[u8]) -> Result<(), NetError> {
        self.encoder.encode(&mut self.pending.borrow_mut(), header, body)?;
        self.frames.set(self.frames.get() + 1);
        self.has_data.notify();
        Ok(())
    }

    /// No more frames are accepted; the writer sends what is queued, then stops.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.has_data.notify();
        self.has_space.notify();
    }

    /// Closes and makes the writer give up at once, dropping what is queued and
    /// cancelling a send in flight (a peer that stopped reading cannot hold it).
    pub(crate) fn abort(&self) {
        self.aborted.set(true);
        self.close();
        self.abort.notify();
    }

    /// Frames queued and `send_all` calls made so far (frames / sends is the coalescing).
    pub(crate) fn counters(&self) -> (u64, u64) {
        (self.frames.get(), self.sends.get())
    }

    /// The writer loop: sends queued frames until the outbox is closed and empty, or a
    /// send fails. Then ends the stream's sending side (best effort).
    pub(crate) async fn run_writer(&self, stream: &dyn ByteStream) -> Result<(), NetError> {
        let result = match race(self.write_until_closed(stream), self.aborted()).await {
            Either::Left(result) => result,
            Either::Right(()) => {
                self.close();
                return Err(NetError::closed("sending was aborted"));
            }
        };
        // Producers waiting for space must see the end.
        self.close();
        // The peer may be gone already (it closed first): nothing is lost then.
        if let Err(error) = stream.close().await {
            tracing::debug!(%error, "closing the sending side failed");
        }
        result
    }

    async fn aborted(&self) {
        while !self.aborted.get() {
            self.abort.notified().await;
        }
    }

    async fn write_until_closed(&self, stream: &dyn ByteStream) -> Result<(), NetError> {
        loop {
            let batch = {
                let mut pending = self.pending.borrow_mut();
                let spare = std::mem::take(&mut *self.spare.borrow_mut());
                std::mem::replace(&mut *pending, spare)
            };
            if batch.is_empty() {
                *self.spare.borrow_mut() = batch;
                if self.closed.get() {
                    return Ok(());
                }
                self.has_data.notified().await;
                continue;
            }
            self.has_space.notify();
            self.sends.set(self.sends.get() + 1);
            let send_timeout = Duration::from_millis(self.send_timeout_ms);
            let Some((result, mut buffer)) = kiseki_runtime::timeout(send_timeout, stream.send_all(batch)).await else {
                return Err(NetError::Timeout {
                    what: "a send (the peer does not read)",
                    after_ms: self.send_timeout_ms,
                });
            };
            result.map_err(unwrap_io_error)?;
            if buffer.capacity() <= SPARE_BUFFER_BYTES_MAX {
                buffer.clear();
                *self.spare.borrow_mut() = buffer;
            }
        }
    }
}

/// Reads frames from a stream.
pub(crate) struct FrameReader {
    stream: Rc<dyn ByteStream>,
    decoder: FrameDecoder,
    recv_bytes: usize,
    partial_frame_timeout_ms: u64,
}

impl FrameReader {
    pub(crate) fn new(stream: Rc<dyn ByteStream>, config: &RpcConfig) -> FrameReader {
        FrameReader {
            stream,
            decoder: FrameDecoder::new(config.frame_bytes_max),
            recv_bytes: config.recv_bytes.max(64),
            partial_frame_timeout_ms: config.partial_frame_timeout_ms,
        }
    }

    /// The next frame; `None` when the peer closed cleanly between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, NetError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let inside_frame = self.decoder.buffered_bytes() > 0;
            let buffer = self.decoder.take_read_buffer(self.recv_bytes);
            let (result, buffer) = if inside_frame {
                let limit = Duration::from_millis(self.partial_frame_timeout_ms);
                match kiseki_runtime::timeout(limit, self.stream.recv(buffer)).await {
                    Some(received) => received,
                    None => {
                        return Err(NetError::Timeout {
                            what: "the rest of a frame",
                            after_ms: self.partial_frame_timeout_ms,
                        })
                    }
                }
            } else {
                self.stream.recv(buffer).await
            };
            self.decoder.restore_read_buffer(buffer);
            if result.map_err(unwrap_io_error)? == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
        }
    }
}

/// The stream's own error when it travelled inside an `io::Error` (TLS failures do).
pub(crate) fn unwrap_io_error(error: std::io::Error) -> NetError {
    if error.get_ref().is_some_and(|inner| inner.is::<NetError>()) {
        if let Some(inner) = error.into_inner() {
            if let Ok(net_error) = inner.downcast::<NetError>() {
                return *net_error;
            }
        }
        return NetError::closed("stream error");
    }
    NetError::Io(error)
}

/// The body of an error answer.
pub(crate) fn error_body(code: ErrorCode, message: &str) -> Vec<u8> {
    // An ErrorBody is plain data; its serialization cannot fail.
    encode_body(&ErrorBody::new(code, message)).unwrap_or_default()
}

/// The code and message of an error answer's body (validated first, I-W1).
pub(crate) fn parse_error_body(body: &[u8]) -> Result<(ErrorCode, String), NetError> {
    let error: ErrorBody = decode_body(body)?;
    Ok((error.code(), error.message))
}

/// The GoAway frame header.
pub(crate) fn go_away_header() -> FrameHeader {
    FrameHeader {
        kind: FrameKind::GoAway,
        message_type: 0,
        request_id: 0,
    }
}
