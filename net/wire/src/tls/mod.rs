//! TLS 1.3 (rustls on aws-lc-rs) with mutual authentication between nodes: loading
//! certificates and keys from PEM files, building client and server configurations, the
//! [`TlsStream`] and the [`TlsTransport`], and a development CA ([`generate_dev_ca`],
//! [`issue_certificate`]).
//!
//! Only TLS 1.3 is offered. A server requires a client certificate signed by the cluster
//! CA; a client verifies the server's certificate against the CA and the server name it
//! dialled (a DNS name or an IP address in the certificate's subject alternative names).

mod devca;
#[cfg(feature = "runtime")]
mod stream;
#[cfg(feature = "runtime")]
mod transport;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use devca::{generate_dev_ca, issue_certificate, CertificateFiles, CA_CERTIFICATE_FILE, CA_KEY_FILE};
#[cfg(feature = "runtime")]
pub use stream::TlsStream;
#[cfg(feature = "runtime")]
pub use transport::TlsTransport;

use crate::error::NetError;

/// Default deadline of a TLS handshake.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

pub(crate) fn provider() -> Arc<CryptoProvider> {
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

/// The common name (CN) of a certificate's subject, if it has one: the identity Kiseki's
/// services authorize by (`node-3`, `admin`, `gateway`, `tenant-NAME`, …). `None` for a
/// certificate that does not parse or names no CN.
pub fn common_name(certificate_der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate_der).ok()?;
    let name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|attribute| attribute.as_str().ok())
        .map(str::to_owned);
    name
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
