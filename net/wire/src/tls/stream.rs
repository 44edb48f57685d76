//! A TLS 1.3 stream over any [`ByteStream`], driving a rustls connection by hand.
//!
//! The rustls connection is shared (`RefCell`, one core) by the connection's reader
//! task and its writer task; it is never borrowed across an await. Ciphertext goes out
//! through one flush at a time (`writing`), so records leave in the order rustls made
//! them even when the reader has to send an alert while the writer is sending data.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kiseki_runtime::local::Notify;
use rustls::pki_types::ServerName;

use crate::error::NetError;
use crate::stream::{BufferFuture, ByteStream, LocalBoxFuture, RECV_BYTES_DEFAULT};

/// Plaintext copied out of rustls at a time.
const SCRATCH_BYTES: usize = 64 * 1024;

/// What `drain_plaintext` found.
enum Plaintext {
    Received(usize),
    /// The peer's close_notify: the end of the stream.
    Closed,
    NoneYet,
}
/// Ciphertext rustls may hold unsent (and plaintext before the handshake).
const TLS_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// A TLS 1.3 connection over a byte stream; itself a [`ByteStream`].
pub struct TlsStream {
    inner: Rc<dyn ByteStream>,
    connection: RefCell<rustls::Connection>,
    /// Ciphertext received and not yet handed to rustls.
    ciphertext_in: RefCell<Vec<u8>>,
    /// A reusable buffer for outgoing ciphertext.
    ciphertext_out: RefCell<Vec<u8>>,
    writing: Cell<bool>,
    write_done: Notify,
    /// The inner stream ended.
    ended: Cell<bool>,
    scratch: RefCell<Vec<u8>>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer_addr", &self.inner.peer_addr())
            .finish()
    }
}

/// Clears the `writing` flag however a flush ends.
struct WritingGuard<'a>(&'a TlsStream);

impl Drop for WritingGuard<'_> {
    fn drop(&mut self) {
        self.0.writing.set(false);
        self.0.write_done.notify();
    }
}

fn tls_error(error: rustls::Error) -> NetError {
    NetError::Tls {
        reason: error.to_string(),
    }
}

impl TlsStream {
    fn new(inner: Rc<dyn ByteStream>, mut connection: rustls::Connection) -> TlsStream {
        connection.set_buffer_limit(Some(TLS_BUFFER_BYTES_MAX));
        TlsStream {
            inner,
            connection: RefCell::new(connection),
            ciphertext_in: RefCell::new(Vec::new()),
            ciphertext_out: RefCell::new(Vec::new()),
            writing: Cell::new(false),
            write_done: Notify::new(),
            ended: Cell::new(false),
            scratch: RefCell::new(vec![0; SCRATCH_BYTES]),
        }
    }

    /// Runs the client handshake over `inner`, verifying the server against `config`'s
    /// roots and `server_name`, within `timeout`.
    pub async fn connect(
        inner: Rc<dyn ByteStream>,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        timeout: Duration,
    ) -> Result<TlsStream, NetError> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|error| NetError::Tls {
            reason: format!("bad server name {server_name:?}: {error}"),
        })?;
        let connection = rustls::ClientConnection::new(config, name).map_err(tls_error)?;
        let stream = TlsStream::new(inner, connection.into());
        stream.handshake_within(timeout).await?;
        Ok(stream)
    }

    /// Runs the server handshake over `inner` (requiring a client certificate if
    /// `config` does), within `timeout`.
    pub async fn accept(
        inner: Rc<dyn ByteStream>,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> Result<TlsStream, NetError> {
        let connection = rustls::ServerConnection::new(config).map_err(tls_error)?;
        let stream = TlsStream::new(inner, connection.into());
        stream.handshake_within(timeout).await?;
        Ok(stream)
    }

    async fn handshake_within(&self, timeout: Duration) -> Result<(), NetError> {
        match kiseki_runtime::timeout(timeout, self.handshake()).await {
            Some(result) => result,
            None => Err(NetError::Timeout {
                what: "TLS handshake",
                after_ms: timeout.as_millis() as u64,
            }),
        }
    }

    async fn handshake(&self) -> Result<(), NetError> {
        loop {
            let (handshaking, wants_write) = {
                let connection = self.connection.borrow();
                (connection.is_handshaking(), connection.wants_write())
            };
            if wants_write {
                self.flush().await?;
                continue;
            }
            if !handshaking {
                return Ok(());
            }
            if !self.receive_ciphertext().await? {
                return Err(NetError::Tls {
                    reason: "the peer closed the connection during the handshake".into(),
                });
            }
        }
    }

    /// The peer's end-entity certificate (DER), once verified.
    pub fn peer_certificate_der(&self) -> Option<Vec<u8>> {
        let connection = self.connection.borrow();
        let certificates = connection.peer_certificates()?;
        certificates.first().map(|certificate| certificate.as_ref().to_vec())
    }

    /// Receives ciphertext from the inner stream and hands it to rustls. `false` at the
    /// end of the inner stream. A TLS error is sent to the peer as an alert first.
    async fn receive_ciphertext(&self) -> Result<bool, NetError> {
        let buffer = std::mem::take(&mut *self.ciphertext_in.borrow_mut());
        let (result, buffer) = self.inner.recv(buffer).await;
        *self.ciphertext_in.borrow_mut() = buffer;
        let received = result?;
        if received == 0 {
            // Tell rustls the transport ended, so a missing close_notify is reported.
            let _ = self.connection.borrow_mut().read_tls(&mut io::empty());
        }
        self.process_ciphertext().await?;
        Ok(received > 0)
    }

    /// Feeds buffered ciphertext to rustls and processes it, stopping early once
    /// plaintext is ready to be read (rustls bounds the plaintext it holds). Returns the
    /// bytes consumed. On a TLS error rustls has queued an alert: flush it.
    fn process_buffered(&self) -> Result<usize, NetError> {
        let mut connection = self.connection.borrow_mut();
        let mut ciphertext = self.ciphertext_in.borrow_mut();
        let mut consumed = 0;
        while !ciphertext.is_empty() {
            let taken = connection.read_tls(&mut &ciphertext[..])?;
            ciphertext.drain(..taken);
            consumed += taken;
            let state = connection.process_new_packets().map_err(tls_error)?;
            if state.plaintext_bytes_to_read() > 0 || taken == 0 {
                break;
            }
        }
        Ok(consumed)
    }

    /// `process_buffered`, sending the alert that explains a failure.
    async fn process_ciphertext(&self) -> Result<usize, NetError> {
        let result = self.process_buffered();
        if result.is_err() {
            // rustls queued an alert telling the peer why; send it, best effort.
            let _ = self.flush().await;
        }
        result
    }

    /// Sends whatever ciphertext rustls has queued.
    async fn flush(&self) -> io::Result<()> {
        loop {
            if self.writing.get() {
                self.write_done.notified().await;
                continue;
            }
            let mut out = std::mem::take(&mut *self.ciphertext_out.borrow_mut());
            {
                let mut connection = self.connection.borrow_mut();
                while connection.wants_write() {
                    connection.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                *self.ciphertext_out.borrow_mut() = out;
                return Ok(());
            }
            self.writing.set(true);
            let guard = WritingGuard(self);
            let (result, mut out) = self.inner.send_all(out).await;
            drop(guard);
            out.clear();
            *self.ciphertext_out.borrow_mut() = out;
            result?;
        }
    }

    async fn recv_plaintext(&self, mut buffer: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buffer.capacity() == buffer.len() {
            buffer.reserve(RECV_BYTES_DEFAULT);
        }
        loop {
            match self.drain_plaintext(&mut buffer) {
                Ok(Plaintext::Received(count)) => return (Ok(count), buffer),
                Ok(Plaintext::Closed) => return (Ok(0), buffer),
                Ok(Plaintext::NoneYet) if self.ended.get() => {
                    return (Err(io::ErrorKind::UnexpectedEof.into()), buffer);
                }
                Ok(Plaintext::NoneYet) => {}
                Err(error) => {
                    // A TLS error: rustls queued an alert telling the peer why.
                    let _ = self.flush().await;
                    return (Err(io::Error::new(io::ErrorKind::InvalidData, error)), buffer);
                }
            }
            if let Err(error) = self.refill().await {
                return (Err(error), buffer);
            }
        }
    }

    /// Moves all plaintext available without waiting into the spare capacity of
    /// `buffer`, processing buffered ciphertext as needed. Plaintext goes through a
    /// small scratch buffer so the caller's spare capacity is never zeroed.
    fn drain_plaintext(&self, buffer: &mut Vec<u8>) -> Result<Plaintext, NetError> {
        let mut scratch = self.scratch.borrow_mut();
        let mut received = 0;
        loop {
            let room = (buffer.capacity() - buffer.len()).min(scratch.len());
            if room == 0 {
                break;
            }
            let read = self.connection.borrow_mut().reader().read(&mut scratch[..room]);
            match read {
                Ok(0) if received == 0 => return Ok(Plaintext::Closed),
                Ok(0) => break,
                Ok(count) => {
                    buffer.extend_from_slice(&scratch[..count]);
                    received += count;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if self.ciphertext_in.borrow().is_empty() || self.process_buffered()? == 0 {
                        break;
                    }
                }
                Err(error) => return Err(NetError::Io(error)),
            }
        }
        Ok(if received > 0 {
            Plaintext::Received(received)
        } else {
            Plaintext::NoneYet
        })
    }

    /// Makes progress towards more plaintext once the buffered ciphertext is used up:
    /// sends what rustls queued (alerts, key updates), then receives more.
    async fn refill(&self) -> io::Result<()> {
        let pending_output = self.connection.borrow().wants_write();
        if pending_output {
            self.flush().await?;
        }
        match self.receive_ciphertext().await {
            Ok(more) => {
                self.ended.set(!more);
                Ok(())
            }
            Err(NetError::Io(error)) => Err(error),
            Err(error) => Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
    }

    async fn send_plaintext(&self, buffer: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut offset = 0;
        while offset < buffer.len() {
            let written = self.connection.borrow_mut().writer().write(&buffer[offset..]);
            match written {
                Ok(count) => offset += count,
                Err(error) => return (Err(error), buffer),
            }
            // Send as soon as rustls's buffer is full, and at the end.
            if offset < buffer.len() || self.connection.borrow().wants_write() {
                if let Err(error) = self.flush().await {
                    return (Err(error), buffer);
                }
            }
        }
        (Ok(()), buffer)
    }

    async fn close_tls(&self) -> io::Result<()> {
        self.connection.borrow_mut().send_close_notify();
        self.flush().await?;
        self.inner.close().await
    }
}

impl ByteStream for TlsStream {
    fn recv(&self, buffer: Vec<u8>) -> BufferFuture<'_, usize> {
        Box::pin(self.recv_plaintext(buffer))
    }

    fn send_all(&self, buffer: Vec<u8>) -> BufferFuture<'_, ()> {
        Box::pin(self.send_plaintext(buffer))
    }

    fn close(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        Box::pin(self.close_tls())
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr()
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.peer_certificate_der()
    }
}
