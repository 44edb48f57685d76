//! [`TlsTransport`]: TLS 1.3 with mutual authentication over the runtime's TCP.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kiseki_runtime::net::TcpListener;
use rustls::{ClientConfig, ServerConfig};

use super::HANDSHAKE_TIMEOUT_MS_DEFAULT;
use super::{client_config, load_certificates, load_private_key, server_config, TlsFiles, TlsStream};
use crate::error::NetError;
use crate::stream::{ByteStream, LocalBoxFuture};
use crate::transport::{accept_tcp, bind_tcp, Accepted, Listener, TcpTransport, Transport};

/// TLS 1.3 over TCP with mutual authentication.
#[derive(Clone)]
pub struct TlsTransport {
    client: Arc<ClientConfig>,
    server: Option<Arc<ServerConfig>>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl TlsTransport {
    /// A transport from ready configurations; without a server configuration it can
    /// only connect.
    pub fn new(client: Arc<ClientConfig>, server: Option<Arc<ServerConfig>>) -> TlsTransport {
        TlsTransport {
            client,
            server,
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS_DEFAULT),
        }
    }

    /// A transport for a node: serves with its certificate, requires client certificates
    /// from the CA, and calls others presenting the same certificate.
    pub fn from_files(files: &TlsFiles) -> Result<TlsTransport, NetError> {
        let ca = load_certificates(&files.ca_pem)?;
        let chain = load_certificates(&files.certificate_pem)?;
        let key = load_private_key(&files.key_pem)?;
        let server = server_config(&ca, chain.clone(), key.clone_key())?;
        let client = client_config(&ca, Some((chain, key)))?;
        Ok(TlsTransport::new(client, Some(server)))
    }

    /// Sets the handshake deadline.
    pub fn with_handshake_timeout_ms(mut self, handshake_timeout_ms: u64) -> TlsTransport {
        self.handshake_timeout = Duration::from_millis(handshake_timeout_ms);
        self
    }
}

impl Transport for TlsTransport {
    fn connect<'a>(
        &'a self,
        addr: SocketAddr,
        server_name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Rc<dyn ByteStream>, NetError>> {
        Box::pin(async move {
            let tcp: Rc<dyn ByteStream> = Rc::new(TcpTransport::connect_tcp(addr).await?);
            let config = Arc::clone(&self.client);
            let stream = TlsStream::connect(tcp, config, server_name, self.handshake_timeout).await?;
            let stream: Rc<dyn ByteStream> = Rc::new(stream);
            Ok(stream)
        })
    }

    fn listen(&self, addr: SocketAddr) -> Result<Box<dyn Listener>, NetError> {
        let config = self.server.as_ref().ok_or_else(|| NetError::Tls {
            reason: "this transport has no server configuration".into(),
        })?;
        Ok(Box::new(TlsListener {
            listener: bind_tcp(addr)?,
            config: Arc::clone(config),
            handshake_timeout: self.handshake_timeout,
        }))
    }
}

/// The listener of [`TlsTransport`]: accepts TCP, and leaves the handshake to
/// [`Accepted::establish`].
struct TlsListener {
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl Listener for TlsListener {
    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.listener.local_addr()?)
    }

    fn accept(&self) -> LocalBoxFuture<'_, Result<Accepted, NetError>> {
        Box::pin(async move {
            let (tcp, peer_addr) = accept_tcp(&self.listener).await?;
            let config = Arc::clone(&self.config);
            let timeout = self.handshake_timeout;
            let establish = async move {
                let tcp: Rc<dyn ByteStream> = Rc::new(tcp);
                let stream: Rc<dyn ByteStream> = Rc::new(TlsStream::accept(tcp, config, timeout).await?);
                Ok(stream)
            };
            Ok(Accepted::new(peer_addr, Box::pin(establish)))
        })
    }
}
