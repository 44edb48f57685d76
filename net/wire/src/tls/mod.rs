//! TLS 1.3 (rustls on aws-lc-rs) with mutual authentication between nodes: loading
//! certificates and keys from PEM files, building client and server configurations, the
//! [`TlsStream`] and the [`TlsTransport`], and a development CA ([`generate_dev_ca`],
//! [`issue_certificate`]).
//!
//! Only TLS 1.3 is offered. A server requires a client certificate signed by the cluster
//! CA; a client verifies the server's certificate against the CA and the server name it
//! dialled (a DNS name or an IP address in the certificate's subject alternative names).

mod devca;
mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kiseki_runtime::net::TcpListener;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use devca::{generate_dev_ca, issue_certificate, CertificateFiles, CA_CERTIFICATE_FILE, CA_KEY_FILE};
pub use stream::TlsStream;

use crate::error::NetError;
use crate::stream::{ByteStream, LocalBoxFuture};
use crate::transport::{accept_tcp, bind_tcp, Accepted, Listener, TcpTransport, Transport};

/// Default deadline of a TLS handshake.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_config_error(error: impl std::fmt::Display) -> NetError {
    NetError::Tls {
        reason: error.to_string(),
    }
}

/// Reads every certificate of a PEM file (a chain: end entity first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certificate_error = |reason: String| NetError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| certificate_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| certificate_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(certificate_error("no certificate in the file".into()));
    }
    Ok(certificates)
}

/// Reads the private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| NetError::Certificate {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

/// The trust roots: every certificate of the CA file.
fn root_store(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, NetError> {
    let mut roots = RootCertStore::empty();
    for certificate in ca {
        roots.add(certificate.clone()).map_err(tls_config_error)?;
    }
    Ok(Arc::new(roots))
}

/// A server configuration: TLS 1.3 only, presenting `chain`/`key`, and requiring a
/// client certificate that chains to `ca`.
pub fn server_config(
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, NetError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(root_store(ca)?, Arc::clone(&provider))
        .build()
        .map_err(tls_config_error)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_config_error)?;
    // Connections are long-lived; no session tickets to resume them.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client configuration: TLS 1.3 only, trusting `ca`, presenting `identity` (a chain
/// and its key) when given.
pub fn client_config(
    ca: &[CertificateDer<'static>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, NetError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config_error)?
        .with_root_certificates(root_store(ca)?);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(tls_config_error)?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Where a node's TLS material lives: the cluster CA, and this node's certificate chain
/// and key (used both to serve and to call other nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s), PEM.
    pub ca_pem: PathBuf,
    /// This node's certificate chain, PEM.
    pub certificate_pem: PathBuf,
    /// This node's private key, PEM.
    pub key_pem: PathBuf,
}

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
