//! SigV4 (headers, presigned URLs, streaming `aws-chunked` bodies) is checked by s3s
//! against the secret this looks up; the access key then names the tenant.

use std::collections::HashMap;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use crate::config::GatewayConfig;

/// The secrets of every tenant, by access key.
#[derive(Debug)]
pub struct TenantAuth {
    secrets: HashMap<String, String>,
}

impl TenantAuth {
    /// The secrets of `config`'s tenants.
    pub fn new(config: &GatewayConfig) -> TenantAuth {
        TenantAuth {
            secrets: config
                .tenants
                .iter()
                .map(|tenant| (tenant.access_key.clone(), tenant.secret_key.clone()))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for TenantAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.secrets.get(access_key) {
            Some(secret) => Ok(SecretKey::from(secret.as_str())),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}
