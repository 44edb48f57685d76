//! Byte streams the RPC layer runs over: the runtime's TCP stream, TLS over any stream,
//! and an in-memory pipe for tests and simulations.
//!
//! A stream is shared by a connection's reader task and writer task on one core
//! (`Rc<dyn ByteStream>`): at most one `recv` and one `send_all` are in flight at a time.
//! Buffers are owned and handed back with the result, as the io_uring runtime needs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use kiseki_runtime::local::Notify;
use kiseki_runtime::net::TcpStream;

/// A boxed, core-local future.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The future of a buffer-owning operation: the result and the buffer back.
pub type BufferFuture<'a, T> = LocalBoxFuture<'a, (io::Result<T>, Vec<u8>)>;

/// Bytes reserved for a receive when the caller's buffer has no spare capacity.
pub const RECV_BYTES_DEFAULT: usize = 64 * 1024;

/// A connected, reliable, ordered byte stream of one core.
pub trait ByteStream {
    /// Receives into the spare capacity of `buffer` (reserving [`RECV_BYTES_DEFAULT`] if it
    /// has none); on success `buffer.len()` grew by the count returned, and 0 means the
    /// peer closed its sending side.
    fn recv(&self, buffer: Vec<u8>) -> BufferFuture<'_, usize>;

    /// Sends all of `buffer`; the buffer comes back (its content sent) for reuse.
    /// Dropping the future part way leaves the stream unusable.
    fn send_all(&self, buffer: Vec<u8>) -> BufferFuture<'_, ()>;

    /// Ends this side's sending (TLS: after a close_notify); receiving goes on.
    fn close(&self) -> LocalBoxFuture<'_, io::Result<()>>;

    /// The peer's address, if it has one.
    fn peer_addr(&self) -> Option<SocketAddr>;

    /// The DER of the peer's verified end-entity certificate (TLS with client
    /// certificates), if any.
    fn peer_certificate(&self) -> Option<Vec<u8>> {
        None
    }
}

impl ByteStream for TcpStream {
    fn recv(&self, buffer: Vec<u8>) -> BufferFuture<'_, usize> {
        Box::pin(TcpStream::recv(self, buffer))
    }

    fn send_all(&self, buffer: Vec<u8>) -> BufferFuture<'_, ()> {
        Box::pin(TcpStream::send_all(self, buffer))
    }

    fn close(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        let result = match self.shutdown(std::net::Shutdown::Write) {
            // The peer may have closed first; the side is shut either way.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        };
        Box::pin(std::future::ready(result))
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        TcpStream::peer_addr(self).ok()
    }
}

/// Either of two outputs.
#[derive(Debug)]
pub(crate) enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures, `first` first, and returns the output of whichever finishes
/// first; the other is dropped (which cancels a pending socket operation).
pub(crate) async fn race<A: Future, B: Future>(first: A, second: B) -> Either<A::Output, B::Output> {
    let mut first = std::pin::pin!(first);
    let mut second = std::pin::pin!(second);
    std::future::poll_fn(move |context| {
        if let Poll::Ready(output) = first.as_mut().poll(context) {
            return Poll::Ready(Either::Left(output));
        }
        if let Poll::Ready(output) = second.as_mut().poll(context) {
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    })
    .await
}

/// One direction of a [`MemoryStream`] pair: a bounded byte queue.
#[derive(Debug)]
struct Pipe {
    bytes: RefCell<VecDeque<u8>>,
    capacity_bytes: usize,
    writer_closed: Cell<bool>,
    reader_closed: Cell<bool>,
    readable: Notify,
    writable: Notify,
}

impl Pipe {
    fn new(capacity_bytes: usize) -> Rc<Pipe> {
        Rc::new(Pipe {
            bytes: RefCell::new(VecDeque::new()),
            capacity_bytes: capacity_bytes.max(1),
            writer_closed: Cell::new(false),
            reader_closed: Cell::new(false),
            readable: Notify::new(),
            writable: Notify::new(),
        })
    }
}

/// An in-memory stream: one end of a pair made by [`MemoryStream::pair`]. Each direction
/// holds at most `capacity_bytes` unread bytes (a full pipe makes the sender wait), so
/// it behaves like a socket with a small kernel buffer. Dropping an end closes both of
/// its directions.
#[derive(Debug)]
pub struct MemoryStream {
    incoming: Rc<Pipe>,
    outgoing: Rc<Pipe>,
    local_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
}

impl MemoryStream {
    /// Two connected ends.
    pub fn pair(capacity_bytes: usize) -> (MemoryStream, MemoryStream) {
        let forward = Pipe::new(capacity_bytes);
        let backward = Pipe::new(capacity_bytes);
        let a: SocketAddr = ([127, 0, 0, 1], 1).into();
        let b: SocketAddr = ([127, 0, 0, 1], 2).into();
        (
            MemoryStream {
                incoming: Rc::clone(&backward),
                outgoing: Rc::clone(&forward),
                local_addr: Some(a),
                peer_addr: Some(b),
            },
            MemoryStream {
                incoming: forward,
                outgoing: backward,
                local_addr: Some(b),
                peer_addr: Some(a),
            },
        )
    }

    /// This end's (made-up) address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    async fn recv_bytes(&self, mut buffer: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buffer.capacity() == buffer.len() {
            buffer.reserve(RECV_BYTES_DEFAULT);
        }
        loop {
            {
                let mut bytes = self.incoming.bytes.borrow_mut();
                if !bytes.is_empty() {
                    let count = bytes.len().min(buffer.capacity() - buffer.len());
                    buffer.extend(bytes.drain(..count));
                    drop(bytes);
                    self.incoming.writable.notify();
                    return (Ok(count), buffer);
                }
            }
            if self.incoming.writer_closed.get() {
                return (Ok(0), buffer);
            }
            self.incoming.readable.notified().await;
        }
    }

    async fn send_bytes(&self, buffer: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut sent = 0;
        while sent < buffer.len() {
            if self.outgoing.reader_closed.get() {
                return (Err(io::ErrorKind::BrokenPipe.into()), buffer);
            }
            if self.outgoing.writer_closed.get() {
                return (Err(io::ErrorKind::NotConnected.into()), buffer);
            }
            let space = {
                let mut bytes = self.outgoing.bytes.borrow_mut();
                let space = self.outgoing.capacity_bytes.saturating_sub(bytes.len());
                let count = space.min(buffer.len() - sent);
                bytes.extend(&buffer[sent..sent + count]);
                sent += count;
                space
            };
            if space > 0 {
                self.outgoing.readable.notify();
            } else {
                self.outgoing.writable.notified().await;
            }
        }
        (Ok(()), buffer)
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        self.outgoing.writer_closed.set(true);
        self.outgoing.readable.notify();
        self.incoming.reader_closed.set(true);
        self.incoming.writable.notify();
    }
}

impl ByteStream for MemoryStream {
    fn recv(&self, buffer: Vec<u8>) -> BufferFuture<'_, usize> {
        Box::pin(self.recv_bytes(buffer))
    }

    fn send_all(&self, buffer: Vec<u8>) -> BufferFuture<'_, ()> {
        Box::pin(self.send_bytes(buffer))
    }

    fn close(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        self.outgoing.writer_closed.set(true);
        self.outgoing.readable.notify();
        Box::pin(std::future::ready(Ok(())))
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }
}
