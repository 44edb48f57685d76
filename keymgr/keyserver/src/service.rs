//! The key server's RPCs: each request is authorized by the role its certificate's common
//! name gives ([`kiseki_api::Role`]), then answered from the [`KeyManager`].
//!
//! | request | who may |
//! |---|---|
//! | status | any role |
//! | system keys | admin, control, gateway, tenant-* (never a node: I-K1) |
//! | a tenant's keys | admin and gateways (any user tenant), tenant-NAME (its own), control (its system tenant) |
//! | create, destroy a tenant's keys, list tenants | admin, control |
//! | rotate the system key | admin |
//! | a service key (NFS file handles) | admin, gateways |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kiseki_api::keys::{
    Empty, ServiceKeyReply, ServiceKeyRequest, SystemKeyEntry, SystemKeysReply, TenantKeyList, TenantKeysReply,
    TenantRequest, MSG_KEYS_ROTATE, MSG_KEYS_SERVICE, MSG_KEYS_STATUS, MSG_KEYS_SYSTEM, MSG_KEYS_TENANT,
    MSG_KEYS_TENANT_CREATE, MSG_KEYS_TENANT_DESTROY, MSG_KEYS_TENANT_LIST,
};
use kiseki_api::{validate_tenant_name, Role, SYSTEM_TENANT};
use kiseki_net::{decode_body, encode_answer, ErrorCode, RemoteError, TokioPeer, TokioService};

use crate::manager::KeyManager;
use crate::KeyError;

/// Counters of the key server, for its metrics endpoint.
#[derive(Debug, Default)]
pub struct KeyServerCounters {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests refused for their caller's role.
    pub refused: AtomicU64,
    /// Tenant key material handed out.
    pub tenant_keys_served: AtomicU64,
}

/// The key server's RPC service.
pub struct KeyService {
    manager: tokio::sync::Mutex<KeyManager>,
    counters: Arc<KeyServerCounters>,
}

impl KeyService {
    /// A service over `manager`.
    pub fn new(manager: KeyManager) -> KeyService {
        KeyService {
            manager: tokio::sync::Mutex::new(manager),
            counters: Arc::new(KeyServerCounters::default()),
        }
    }

    /// Its counters.
    pub fn counters(&self) -> Arc<KeyServerCounters> {
        Arc::clone(&self.counters)
    }

    /// Prometheus text of the counters and the state's sizes.
    pub async fn metrics_text(&self) -> String {
        let status = self.manager.lock().await.status();
        let counters = &self.counters;
        format!(
            "# TYPE kiseki_keyserver_requests_total counter\nkiseki_keyserver_requests_total {}\n\
             # TYPE kiseki_keyserver_refused_total counter\nkiseki_keyserver_refused_total {}\n\
             # TYPE kiseki_keyserver_tenant_keys_served_total counter\nkiseki_keyserver_tenant_keys_served_total {}\n\
             # TYPE kiseki_keyserver_epoch gauge\nkiseki_keyserver_epoch {}\n\
             # TYPE kiseki_keyserver_tenants gauge\nkiseki_keyserver_tenants {}\n\
             # TYPE kiseki_keyserver_tenants_destroyed gauge\nkiseki_keyserver_tenants_destroyed {}\n",
            counters.requests.load(Ordering::Relaxed),
            counters.refused.load(Ordering::Relaxed),
            counters.tenant_keys_served.load(Ordering::Relaxed),
            status.current_epoch,
            status.tenants,
            status.tenants_destroyed,
        )
    }

    fn refuse(&self, role: &Role, action: &str) -> RemoteError {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%role, action, "refused");
        RemoteError::new(ErrorCode::PermissionDenied, format!("{role} may not {action}"))
    }

    async fn answer(&self, message_type: u16, body: &[u8], role: &Role) -> Result<Vec<u8>, RemoteError> {
        let now = now_unix_s();
        match message_type {
            MSG_KEYS_STATUS => {
                let _: Empty = decode_body(body)?;
                Ok(encode_answer(&self.manager.lock().await.status())?)
            }
            MSG_KEYS_SYSTEM => {
                let _: Empty = decode_body(body)?;
                if matches!(role, Role::Node(_)) {
                    return Err(self.refuse(role, "read system keys: nodes never hold key material"));
                }
                let manager = self.manager.lock().await;
                let reply = SystemKeysReply {
                    current_epoch: manager.current_epoch(),
                    keys: manager
                        .system_keys()
                        .into_iter()
                        .map(|(epoch, key)| SystemKeyEntry {
                            epoch,
                            key: *key.expose(),
                        })
                        .collect(),
                };
                Ok(encode_answer(&reply)?)
            }
            MSG_KEYS_TENANT => {
                let request: TenantRequest = decode_body(body)?;
                if !role.may_act_for(&request.tenant) {
                    return Err(self.refuse(role, &format!("read the keys of tenant {}", request.tenant)));
                }
                let material = self.manager.lock().await.tenant_keys(&request.tenant)?;
                self.counters.tenant_keys_served.fetch_add(1, Ordering::Relaxed);
                Ok(encode_answer(&TenantKeysReply {
                    tenant: request.tenant,
                    kek: *material.kek.expose(),
                    dedup_secret: *material.dedup_secret.expose(),
                })?)
            }
            MSG_KEYS_TENANT_CREATE => {
                let request: TenantRequest = decode_body(body)?;
                if !role.is_administrator() {
                    return Err(self.refuse(role, "create tenant keys"));
                }
                if request.tenant != SYSTEM_TENANT {
                    validate_tenant_name(&request.tenant).map_err(KeyError::Invalid)?;
                }
                let (info, created) = self.manager.lock().await.create_tenant(&request.tenant, now)?;
                if created {
                    tracing::info!(tenant = %request.tenant, %role, "tenant keys created");
                }
                Ok(encode_answer(&info)?)
            }
            MSG_KEYS_TENANT_DESTROY => {
                let request: TenantRequest = decode_body(body)?;
                if !role.is_administrator() || request.tenant == SYSTEM_TENANT {
                    return Err(self.refuse(role, &format!("destroy the keys of tenant {}", request.tenant)));
                }
                let info = self.manager.lock().await.destroy_tenant(&request.tenant, now)?;
                tracing::warn!(tenant = %request.tenant, %role, "tenant keys destroyed (crypto-shred)");
                Ok(encode_answer(&info)?)
            }
            MSG_KEYS_ROTATE => {
                let _: Empty = decode_body(body)?;
                if *role != Role::Admin {
                    return Err(self.refuse(role, "rotate the system key"));
                }
                let mut manager = self.manager.lock().await;
                let epoch = manager.rotate(now)?;
                tracing::info!(epoch, "system key rotated");
                Ok(encode_answer(&manager.status())?)
            }
            MSG_KEYS_SERVICE => {
                let request: ServiceKeyRequest = decode_body(body)?;
                if !matches!(role, Role::Admin | Role::Gateway) {
                    return Err(self.refuse(role, "read service keys"));
                }
                if request.name.is_empty() || request.name.len() > 64 {
                    return Err(KeyError::Invalid("a service key name has 1 to 64 bytes".into()).into());
                }
                let key = self.manager.lock().await.service_key(&request.name)?;
                Ok(encode_answer(&ServiceKeyReply { key: *key.expose() })?)
            }
            MSG_KEYS_TENANT_LIST => {
                let _: Empty = decode_body(body)?;
                if !role.is_administrator() {
                    return Err(self.refuse(role, "list tenants"));
                }
                let tenants = self.manager.lock().await.tenants();
                Ok(encode_answer(&TenantKeyList { tenants })?)
            }
            other => Err(RemoteError::new(
                ErrorCode::UnknownMethod,
                format!("the key server has no method {other:#06x}"),
            )),
        }
    }
}

impl TokioService for KeyService {
    async fn handle(&self, message_type: u16, body: Vec<u8>, peer: Arc<TokioPeer>) -> Result<Vec<u8>, RemoteError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let role = peer.common_name.as_deref().and_then(Role::from_common_name);
        let Some(role) = role else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "certificate {:?} gives no role (admin, control, gateway, node-N, tenant-NAME)",
                    peer.common_name
                ),
            ));
        };
        self.answer(message_type, &body, &role).await
    }
}

impl From<KeyError> for RemoteError {
    fn from(error: KeyError) -> RemoteError {
        let code = match &error {
            KeyError::NoTenant(_) => ErrorCode::NotFound,
            KeyError::Destroyed { .. } => ErrorCode::NotFound,
            KeyError::Invalid(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        };
        RemoteError::new(code, error.to_string())
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
