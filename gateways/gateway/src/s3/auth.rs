//! SigV4 (headers, presigned URLs, streaming `aws-chunked` bodies) is checked by s3s
//! against the secret this looks up; the access key then names the tenant.

use std::sync::Arc;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use crate::tenants::Tenants;

/// The secrets of every tenant, by access key.
#[derive(Debug)]
pub struct TenantAuth {
    tenants: Arc<Tenants>,
}

impl TenantAuth {
    /// The secrets of `tenants`.
    pub fn new(tenants: Arc<Tenants>) -> TenantAuth {
        TenantAuth { tenants }
    }
}

#[async_trait::async_trait]
impl S3Auth for TenantAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.tenants.lookup(access_key).await {
            Some((_, secret)) => Ok(SecretKey::from(secret.as_str())),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}
