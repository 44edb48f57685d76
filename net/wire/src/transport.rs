//! Transports: how connections are made and accepted. TCP and TLS over TCP today;
//! libfabric and verbs are to come behind cargo features, implementing the same traits.

use std::net::SocketAddr;
use std::rc::Rc;

use kiseki_runtime::net::{TcpListener, TcpStream};

use crate::error::NetError;
use crate::stream::{ByteStream, LocalBoxFuture};

/// Makes outgoing connections and listeners. Implementations live on one core; the
/// streams they return belong to the core that made them.
pub trait Transport {
    /// Connects to `addr`. `server_name` is what the peer's certificate must name (a DNS
    /// name or an IP address); transports without authentication ignore it.
    fn connect<'a>(
        &'a self,
        addr: SocketAddr,
        server_name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Rc<dyn ByteStream>, NetError>>;

    /// Listens on `addr` (port 0 picks a free port).
    fn listen(&self, addr: SocketAddr) -> Result<Box<dyn Listener>, NetError>;
}

/// A listening endpoint of a [`Transport`].
pub trait Listener {
    /// The address it listens on.
    fn local_addr(&self) -> Result<SocketAddr, NetError>;

    /// Waits for the next connection. The connection is not usable yet: run
    /// [`Accepted::establish`] (the TLS handshake, for example) on the connection's own
    /// task, so one slow peer cannot hold up the accept loop.
    fn accept(&self) -> LocalBoxFuture<'_, Result<Accepted, NetError>>;
}

/// A connection accepted by a [`Listener`], before its handshake.
pub struct Accepted {
    peer_addr: SocketAddr,
    establish: LocalBoxFuture<'static, Result<Rc<dyn ByteStream>, NetError>>,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted").field("peer_addr", &self.peer_addr).finish()
    }
}

impl Accepted {
    /// A connection from `peer_addr` that `establish` completes.
    pub fn new(
        peer_addr: SocketAddr,
        establish: LocalBoxFuture<'static, Result<Rc<dyn ByteStream>, NetError>>,
    ) -> Accepted {
        Accepted { peer_addr, establish }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Completes the connection (handshake, authentication) and returns its stream.
    pub async fn establish(self) -> Result<Rc<dyn ByteStream>, NetError> {
        self.establish.await
    }
}

/// Plain TCP on the core's io_uring ring, `TCP_NODELAY` on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl TcpTransport {
    /// Connects a TCP stream (used by the TLS transport too).
    pub(crate) async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, NetError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Transport for TcpTransport {
    fn connect<'a>(
        &'a self,
        addr: SocketAddr,
        _server_name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Rc<dyn ByteStream>, NetError>> {
        Box::pin(async move {
            let stream: Rc<dyn ByteStream> = Rc::new(TcpTransport::connect_tcp(addr).await?);
            Ok(stream)
        })
    }

    fn listen(&self, addr: SocketAddr) -> Result<Box<dyn Listener>, NetError> {
        Ok(Box::new(TcpTransportListener {
            listener: TcpListener::bind(addr)?,
        }))
    }
}

/// The listener of [`TcpTransport`].
struct TcpTransportListener {
    listener: TcpListener,
}

impl Listener for TcpTransportListener {
    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.listener.local_addr()?)
    }

    fn accept(&self) -> LocalBoxFuture<'_, Result<Accepted, NetError>> {
        Box::pin(async move {
            let (stream, peer_addr) = accept_tcp(&self.listener).await?;
            let stream: Rc<dyn ByteStream> = Rc::new(stream);
            Ok(Accepted::new(peer_addr, Box::pin(std::future::ready(Ok(stream)))))
        })
    }
}

/// Binds a TCP listener (used by the TLS transport).
pub(crate) fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, NetError> {
    Ok(TcpListener::bind(addr)?)
}

/// Accepts one TCP connection with `TCP_NODELAY` (used by the TLS transport).
pub(crate) async fn accept_tcp(listener: &TcpListener) -> Result<(TcpStream, SocketAddr), NetError> {
    let (stream, peer_addr) = listener.accept().await?;
    stream.set_nodelay(true)?;
    Ok((stream, peer_addr))
}
