//! TCP sockets driven through the core's ring.
//!
//! A socket belongs to the core that opened or accepted it; its operations are ring
//! submissions that own their buffers (`Vec<u8>`, given back with the result), so a
//! future dropped mid-operation never leaves the kernel writing into freed memory.
//! Dropping a pending `accept`, `recv` or `send` future cancels the kernel operation
//! (`IORING_OP_ASYNC_CANCEL`), so an idle connection never holds up a core's shutdown.
//!
//! Methods take `&self`: one `Rc<TcpStream>` may be shared by a reader task and a writer
//! task of the same core, the usual shape of a multiplexed connection.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use io_uring::{opcode, types};

use crate::executor::OpBuffer;
use crate::io::{result_of, submit};

/// Connections waiting in the kernel's accept queue of a listener.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A listening TCP socket.
#[derive(Debug)]
pub struct TcpListener {
    socket: std::net::TcpListener,
}

impl TcpListener {
    /// Binds `address` (port 0 picks a free one) with `SO_REUSEADDR` and starts listening.
    pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
        let family = match address {
            SocketAddr::V4(_) => rustix::net::AddressFamily::INET,
            SocketAddr::V6(_) => rustix::net::AddressFamily::INET6,
        };
        let fd = rustix::net::socket_with(
            family,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
        rustix::net::bind(&fd, &address)?;
        rustix::net::listen(&fd, LISTEN_BACKLOG)?;
        Ok(TcpListener {
            socket: std::net::TcpListener::from(fd),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let entry = opcode::Accept::new(
            types::Fd(self.socket.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        // SAFETY: accept is given no address buffers; it refers to no memory.
        let op = unsafe { submit(entry, Some(OpBuffer::ResultFd)) }?.cancel_on_drop();
        let (result, _) = op.await;
        let raw = result_of(result)? as i32;
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let stream = TcpStream {
            socket: std::net::TcpStream::from(fd),
        };
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }
}

/// A connected TCP socket.
#[derive(Debug)]
pub struct TcpStream {
    socket: std::net::TcpStream,
}

impl TcpStream {
    /// Connects to `address`.
    pub async fn connect(address: SocketAddr) -> io::Result<TcpStream> {
        let family = match address {
            SocketAddr::V4(_) => rustix::net::AddressFamily::INET,
            SocketAddr::V6(_) => rustix::net::AddressFamily::INET6,
        };
        let fd = rustix::net::socket_with(
            family,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            None,
        )?;
        // A non-blocking connect, then a ring poll for writability: no socket address
        // memory has to outlive a submission.
        match rustix::net::connect(&fd, &address) {
            Ok(()) => {}
            Err(error) if error == rustix::io::Errno::INPROGRESS => {
                let entry = opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), libc::POLLOUT as u32).build();
                // SAFETY: a poll refers to no memory.
                let op = unsafe { submit(entry, None) }?.cancel_on_drop();
                let (result, _) = op.await;
                result_of(result)?;
                if let Some(error) = rustix::net::sockopt::socket_error(&fd)?.err() {
                    return Err(error.into());
                }
            }
            Err(error) => return Err(error.into()),
        }
        // Blocking again: the ring then parks receives and sends in the kernel instead of
        // answering EAGAIN.
        rustix::io::ioctl_fionbio(&fd, false)?;
        let stream = TcpStream {
            socket: std::net::TcpStream::from(fd),
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.peer_addr()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sets `TCP_NODELAY` (on by default for connected streams).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.set_nodelay(nodelay)
    }

    /// Receives into the spare capacity of `buffer`; on success `buffer.len()` grew by the
    /// returned count, and 0 means the peer closed its side. A buffer without spare
    /// capacity gets 64 KiB reserved first.
    pub async fn recv(&self, mut buffer: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buffer.capacity() == buffer.len() {
            buffer.reserve(64 * 1024);
        }
        let start = buffer.len();
        let spare = buffer.capacity() - start;
        // SAFETY: `start` is within the allocation; the pointer stays valid when the Vec
        // moves into the op, since its heap allocation does not move.
        let pointer = unsafe { buffer.as_mut_ptr().add(start) };
        let entry = opcode::Recv::new(types::Fd(self.socket.as_raw_fd()), pointer, spare as u32).build();
        // SAFETY: the entry points only into `buffer`'s spare capacity, owned by the op.
        let op = match unsafe { submit(entry, Some(OpBuffer::Bytes(buffer))) } {
            Ok(op) => op.cancel_on_drop(),
            Err(error) => return (Err(error), Vec::new()),
        };
        let (result, returned) = op.await;
        let mut buffer = match returned {
            Some(OpBuffer::Bytes(buffer)) => buffer,
            _ => Vec::new(),
        };
        let result = result_of(result);
        if let Ok(received) = result {
            assert!(
                start + received <= buffer.capacity(),
                "the kernel received past the buffer"
            );
            // SAFETY: the kernel initialised `received` bytes after `start`, within capacity.
            unsafe { buffer.set_len(start + received) };
        }
        (result, buffer)
    }

    /// Sends `buffer[..]` in one submission; the count sent may be short.
    pub async fn send(&self, buffer: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.send_from(buffer, 0).await
    }

    async fn send_from(&self, buffer: Vec<u8>, start: usize) -> (io::Result<usize>, Vec<u8>) {
        let pointer = buffer[start..].as_ptr();
        let len = (buffer.len() - start).min(u32::MAX as usize) as u32;
        let entry = opcode::Send::new(types::Fd(self.socket.as_raw_fd()), pointer, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: the entry points only into `buffer`, owned by the op until completion.
        let op = match unsafe { submit(entry, Some(OpBuffer::Bytes(buffer))) } {
            Ok(op) => op.cancel_on_drop(),
            Err(error) => return (Err(error), Vec::new()),
        };
        let (result, returned) = op.await;
        let buffer = match returned {
            Some(OpBuffer::Bytes(buffer)) => buffer,
            _ => Vec::new(),
        };
        (result_of(result), buffer)
    }

    /// Sends all of `buffer`, resubmitting after short sends.
    pub async fn send_all(&self, mut buffer: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut sent_total = 0;
        while sent_total < buffer.len() {
            let (result, returned) = self.send_from(buffer, sent_total).await;
            buffer = returned;
            match result {
                Ok(0) => return (Err(io::Error::from(io::ErrorKind::WriteZero)), buffer),
                Ok(sent) => sent_total += sent,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), buffer),
            }
        }
        (Ok(()), buffer)
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket.shutdown(how)
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
