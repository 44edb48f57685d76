//! Calls to the key server and the control plane, over mutual TLS 1.3 with the caller's
//! certificate: the [`KeyServerClient`] and the [`ControlClient`], plus the TLS identity
//! they present ([`TlsIdentity`]).
//!
//! Both services authorize by the common name of that certificate (`admin`, `gateway`,
//! `tenant-NAME`, …); a refusal comes back as [`ClientError::Denied`] with the service's
//! reason, any other refusal as [`ClientError::Service`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kiseki_api::control::{
    AccessKeyInfo, AccessKeyList, AccessKeyRef, ControlStatusReply, MaintenanceReply, MaintenanceRequest,
    NamespaceCreateRequest, NamespaceInfo, NamespaceList, NamespaceListRequest, NamespaceRef, QuotaSetRequest,
    TenantCreateRequest, TenantInfo, TenantList, TenantRef, MSG_ACCESS_KEY_CREATE, MSG_ACCESS_KEY_DELETE,
    MSG_ACCESS_KEY_DIRECTORY, MSG_ACCESS_KEY_LIST, MSG_ACCESS_KEY_LOOKUP, MSG_CONTROL_STATUS, MSG_MAINTENANCE_SET,
    MSG_MAINTENANCE_STATUS, MSG_NAMESPACE_CREATE, MSG_NAMESPACE_DELETE, MSG_NAMESPACE_LIST, MSG_NAMESPACE_RESOLVE,
    MSG_QUOTA_SET, MSG_TENANT_CREATE, MSG_TENANT_DELETE, MSG_TENANT_LIST, MSG_TENANT_SHRED,
};
use kiseki_api::keys::{
    Empty, KeyStatusReply, ServiceKeyReply, ServiceKeyRequest, SystemKeysReply, TenantKeyInfo, TenantKeyList,
    TenantKeysReply, TenantRequest, MSG_KEYS_ROTATE, MSG_KEYS_SERVICE, MSG_KEYS_STATUS, MSG_KEYS_SYSTEM,
    MSG_KEYS_TENANT, MSG_KEYS_TENANT_CREATE, MSG_KEYS_TENANT_DESTROY, MSG_KEYS_TENANT_LIST,
};
use kiseki_net::rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use kiseki_net::rkyv::bytecheck::CheckBytes;
use kiseki_net::rkyv::rancor;
use kiseki_net::rkyv::ser::allocator::ArenaHandle;
use kiseki_net::rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize};
use kiseki_net::tokio_rpc::RpcClient;
use kiseki_net::{ErrorCode, NetError, RpcConfig};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};

use crate::ClientError;

/// A certificate, its key and the CA that signed the services' certificates (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize)]
pub struct TlsIdentity {
    /// The cluster CA (`ca.pem`).
    pub ca: PathBuf,
    /// This caller's certificate.
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TlsIdentity {
    /// `NAME.pem` and `NAME.key` with `ca.pem` in `dir` (as `kiseki certs` writes them).
    pub fn in_dir(dir: &std::path::Path, name: &str) -> TlsIdentity {
        TlsIdentity {
            ca: dir.join(kiseki_net::tls::CA_CERTIFICATE_FILE),
            certificate: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// The rustls client configuration presenting this identity.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let ca = kiseki_net::tls::load_certificates(&self.ca)?;
        let chain = kiseki_net::tls::load_certificates(&self.certificate)?;
        let key = kiseki_net::tls::load_private_key(&self.key)?;
        Ok(kiseki_net::tls::client_config(&ca, Some((chain, key)))?)
    }

    /// The common name of this identity's certificate.
    pub fn common_name(&self) -> Option<String> {
        let chain = kiseki_net::tls::load_certificates(&self.certificate).ok()?;
        kiseki_net::tls::common_name(chain.first()?.as_ref())
    }
}

/// Connection deadline for the services.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// One mutual-TLS connection to a service, made again when it is lost (a service that
/// restarted): a call on a closed connection reconnects first, and a call whose
/// connection closed under it is sent once more on a new one.
#[derive(Clone, Debug)]
struct ServiceConnection {
    rpc: Arc<arc_swap::ArcSwap<RpcClient>>,
    service: &'static str,
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl ServiceConnection {
    async fn connect(
        service: &'static str,
        address: SocketAddr,
        identity: &TlsIdentity,
    ) -> Result<ServiceConnection, ClientError> {
        let config = identity.client_config()?;
        let rpc = Self::open(service, address, Arc::clone(&config)).await?;
        Ok(ServiceConnection {
            rpc: Arc::new(arc_swap::ArcSwap::from_pointee(rpc)),
            service,
            address,
            config,
        })
    }

    async fn open(
        service: &'static str,
        address: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<RpcClient, ClientError> {
        let rpc_config = RpcConfig {
            call_timeout_ms: 30_000,
            ..RpcConfig::default()
        };
        // The services' certificates name their address (`kiseki up` issues them so).
        let server_name = address.ip().to_string();
        RpcClient::connect_tls(address, &server_name, config, CONNECT_TIMEOUT_MS, rpc_config)
            .await
            .map_err(|error| ClientError::Unavailable(format!("{service} at {address}: {error}")))
    }

    /// The connection, made again if it closed.
    async fn live(&self) -> Result<Arc<RpcClient>, ClientError> {
        let current = self.rpc.load_full();
        if !current.is_closed() {
            return Ok(current);
        }
        let fresh = Arc::new(Self::open(self.service, self.address, Arc::clone(&self.config)).await?);
        self.rpc.store(Arc::clone(&fresh));
        Ok(fresh)
    }

    async fn call<Request, Reply>(&self, message_type: u16, request: &Request) -> Result<Reply, ClientError>
    where
        Request: for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>,
        Reply: Archive,
        Reply::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
            + RkyvDeserialize<Reply, HighDeserializer<rancor::Error>>,
    {
        let body = kiseki_net::encode_body(request)?;
        let mut answer = self.live().await?.call(message_type, &body).await;
        if matches!(answer, Err(NetError::Closed { .. } | NetError::GoAway { .. })) {
            answer = self.live().await?.call(message_type, &body).await;
        }
        let answer = answer.map_err(|error| self.service_error(error))?;
        Ok(kiseki_net::decode_body(&answer)?)
    }

    fn service_error(&self, error: NetError) -> ClientError {
        match error {
            NetError::Remote {
                code: ErrorCode::PermissionDenied,
                message,
            } => ClientError::Denied(format!("{}: {message}", self.service)),
            NetError::Remote { code, message } => ClientError::Service {
                service: self.service,
                code,
                message,
            },
            other => ClientError::Unavailable(format!("{}: {other}", self.service)),
        }
    }
}

/// A connection to the key server.
#[derive(Clone, Debug)]
pub struct KeyServerClient {
    connection: ServiceConnection,
}

impl KeyServerClient {
    /// Connects to the key server at `address` presenting `identity`.
    pub async fn connect(address: SocketAddr, identity: &TlsIdentity) -> Result<KeyServerClient, ClientError> {
        Ok(KeyServerClient {
            connection: ServiceConnection::connect("key server", address, identity).await?,
        })
    }

    /// Epochs, tenant counts and the provider.
    pub async fn status(&self) -> Result<KeyStatusReply, ClientError> {
        self.connection.call(MSG_KEYS_STATUS, &Empty {}).await
    }

    /// Every live system key.
    pub async fn system_keys(&self) -> Result<SystemKeysReply, ClientError> {
        self.connection.call(MSG_KEYS_SYSTEM, &Empty {}).await
    }

    /// A tenant's KEK and dedup secret.
    pub async fn tenant_keys(&self, tenant: &str) -> Result<TenantKeysReply, ClientError> {
        let request = TenantRequest {
            tenant: tenant.to_owned(),
        };
        self.connection.call(MSG_KEYS_TENANT, &request).await
    }

    /// Makes a tenant's keys unless it has them.
    pub async fn create_tenant(&self, tenant: &str) -> Result<TenantKeyInfo, ClientError> {
        let request = TenantRequest {
            tenant: tenant.to_owned(),
        };
        self.connection.call(MSG_KEYS_TENANT_CREATE, &request).await
    }

    /// Destroys a tenant's keys for good (crypto-shred).
    pub async fn destroy_tenant(&self, tenant: &str) -> Result<TenantKeyInfo, ClientError> {
        let request = TenantRequest {
            tenant: tenant.to_owned(),
        };
        self.connection.call(MSG_KEYS_TENANT_DESTROY, &request).await
    }

    /// Starts a new system key epoch.
    pub async fn rotate(&self) -> Result<KeyStatusReply, ClientError> {
        self.connection.call(MSG_KEYS_ROTATE, &Empty {}).await
    }

    /// The service key named `name` (gateways).
    pub async fn service_key(&self, name: &str) -> Result<[u8; 32], ClientError> {
        let request = ServiceKeyRequest { name: name.to_owned() };
        let reply: ServiceKeyReply = self.connection.call(MSG_KEYS_SERVICE, &request).await?;
        Ok(reply.key)
    }

    /// Every tenant the provider knows.
    pub async fn tenants(&self) -> Result<TenantKeyList, ClientError> {
        self.connection.call(MSG_KEYS_TENANT_LIST, &Empty {}).await
    }
}

/// A connection to the control plane.
#[derive(Clone, Debug)]
pub struct ControlClient {
    connection: ServiceConnection,
}

impl ControlClient {
    /// Connects to the control plane at `address` presenting `identity`.
    pub async fn connect(address: SocketAddr, identity: &TlsIdentity) -> Result<ControlClient, ClientError> {
        Ok(ControlClient {
            connection: ServiceConnection::connect("control plane", address, identity).await?,
        })
    }

    /// Counts and the system shard.
    pub async fn status(&self) -> Result<ControlStatusReply, ClientError> {
        self.connection.call(MSG_CONTROL_STATUS, &Empty {}).await
    }

    /// Creates a tenant (and its keys).
    pub async fn create_tenant(&self, name: &str) -> Result<TenantInfo, ClientError> {
        let request = TenantCreateRequest { name: name.to_owned() };
        self.connection.call(MSG_TENANT_CREATE, &request).await
    }

    /// Every tenant.
    pub async fn tenants(&self) -> Result<TenantList, ClientError> {
        self.connection.call(MSG_TENANT_LIST, &Empty {}).await
    }

    /// Deletes a tenant that has no namespaces left.
    pub async fn delete_tenant(&self, name: &str) -> Result<TenantInfo, ClientError> {
        self.connection
            .call(MSG_TENANT_DELETE, &TenantRef { name: name.to_owned() })
            .await
    }

    /// Crypto-shreds a tenant.
    pub async fn shred_tenant(&self, name: &str) -> Result<TenantInfo, ClientError> {
        self.connection
            .call(MSG_TENANT_SHRED, &TenantRef { name: name.to_owned() })
            .await
    }

    /// Creates a namespace.
    pub async fn create_namespace(&self, request: &NamespaceCreateRequest) -> Result<NamespaceInfo, ClientError> {
        self.connection.call(MSG_NAMESPACE_CREATE, request).await
    }

    /// Namespaces of `tenant` (all with `None`), with their usage when `usage`.
    pub async fn namespaces(&self, tenant: Option<&str>, usage: bool) -> Result<NamespaceList, ClientError> {
        let request = NamespaceListRequest {
            tenant: tenant.map(str::to_owned),
            usage,
        };
        self.connection.call(MSG_NAMESPACE_LIST, &request).await
    }

    /// One namespace with its shard and settings.
    pub async fn resolve_namespace(&self, tenant: &str, name: &str) -> Result<NamespaceInfo, ClientError> {
        let request = NamespaceRef {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        };
        self.connection.call(MSG_NAMESPACE_RESOLVE, &request).await
    }

    /// Deletes an empty namespace.
    pub async fn delete_namespace(&self, tenant: &str, name: &str) -> Result<NamespaceInfo, ClientError> {
        let request = NamespaceRef {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        };
        self.connection.call(MSG_NAMESPACE_DELETE, &request).await
    }

    /// Sets a namespace's quota.
    pub async fn set_quota(&self, request: &QuotaSetRequest) -> Result<NamespaceInfo, ClientError> {
        self.connection.call(MSG_QUOTA_SET, request).await
    }

    /// Makes an S3 access key for `tenant` (the answer holds the secret).
    pub async fn create_access_key(&self, tenant: &str) -> Result<AccessKeyInfo, ClientError> {
        self.connection
            .call(
                MSG_ACCESS_KEY_CREATE,
                &TenantRef {
                    name: tenant.to_owned(),
                },
            )
            .await
    }

    /// `tenant`'s access keys, without secrets.
    pub async fn access_keys(&self, tenant: &str) -> Result<AccessKeyList, ClientError> {
        self.connection
            .call(
                MSG_ACCESS_KEY_LIST,
                &TenantRef {
                    name: tenant.to_owned(),
                },
            )
            .await
    }

    /// Removes an access key.
    pub async fn delete_access_key(&self, access_key: &str) -> Result<AccessKeyInfo, ClientError> {
        let request = AccessKeyRef {
            access_key: access_key.to_owned(),
        };
        self.connection.call(MSG_ACCESS_KEY_DELETE, &request).await
    }

    /// An access key's tenant and secret (gateways).
    pub async fn lookup_access_key(&self, access_key: &str) -> Result<AccessKeyInfo, ClientError> {
        let request = AccessKeyRef {
            access_key: access_key.to_owned(),
        };
        self.connection.call(MSG_ACCESS_KEY_LOOKUP, &request).await
    }

    /// Every live tenant's access keys with their secrets (gateways).
    pub async fn access_key_directory(&self) -> Result<AccessKeyList, ClientError> {
        self.connection.call(MSG_ACCESS_KEY_DIRECTORY, &Empty {}).await
    }

    /// Turns maintenance (a read-only cluster) on or off.
    pub async fn set_maintenance(&self, read_only: bool) -> Result<MaintenanceReply, ClientError> {
        self.connection
            .call(MSG_MAINTENANCE_SET, &MaintenanceRequest { read_only })
            .await
    }

    /// Whether each shard is read-only.
    pub async fn maintenance(&self) -> Result<MaintenanceReply, ClientError> {
        self.connection.call(MSG_MAINTENANCE_STATUS, &Empty {}).await
    }
}

/// A new random S3 access key id (20 characters, as AWS's, starting `KSK`) and secret
/// (40 characters).
pub fn new_access_key() -> (String, String) {
    use rand::Rng;
    const KEY_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    let mut pick = |alphabet: &[u8], count: usize| -> String {
        (0..count)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
            .collect()
    };
    let access = format!("KSK{}", pick(KEY_CHARS, 17));
    let secret = pick(SECRET_CHARS, 40);
    (access, secret)
}
