//! Errors of setting the gateway up (configuration, connecting to the cluster). Errors
//! of S3 requests are S3 errors, mapped in one place: [`crate::s3::errors`].

/// What can go wrong before the gateway serves.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The tenants file is unreadable or invalid.
    #[error("tenants file {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The cluster could not be reached or refused the namespace.
    #[error("tenant {tenant}: {source}")]
    Client {
        /// The tenant.
        tenant: String,
        /// The client's error.
        source: kiseki_client::ClientError,
    },
    /// The listener failed.
    #[error("listening: {0}")]
    Io(#[from] std::io::Error),
}
