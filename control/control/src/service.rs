//! The control plane's RPCs, each authorized by the role of the caller's certificate
//! ([`kiseki_api::Role`]):
//!
//! | request | who may |
//! |---|---|
//! | status, maintenance status | any role |
//! | tenants: create, list, delete, shred | admin |
//! | namespaces: create, delete, set quota | admin |
//! | namespaces: list | admin and gateways (all or one tenant), tenant-NAME (its own) |
//! | namespaces: resolve | admin and gateways (any user tenant), tenant-NAME (its own) |
//! | access keys: create, list, delete | admin, tenant-NAME (its own) |
//! | access keys: look up one, the gateway directory | admin, gateways |
//! | maintenance on/off | admin |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kiseki_api::control::{
    AccessKeyList, AccessKeyRef, MaintenanceRequest, NamespaceCreateRequest, NamespaceList, NamespaceListRequest,
    NamespaceRef, QuotaSetRequest, TenantCreateRequest, TenantList, TenantRef, MSG_ACCESS_KEY_CREATE,
    MSG_ACCESS_KEY_DELETE, MSG_ACCESS_KEY_DIRECTORY, MSG_ACCESS_KEY_LIST, MSG_ACCESS_KEY_LOOKUP, MSG_CONTROL_STATUS,
    MSG_MAINTENANCE_SET, MSG_MAINTENANCE_STATUS, MSG_NAMESPACE_CREATE, MSG_NAMESPACE_DELETE, MSG_NAMESPACE_LIST,
    MSG_NAMESPACE_RESOLVE, MSG_QUOTA_SET, MSG_TENANT_CREATE, MSG_TENANT_DELETE, MSG_TENANT_LIST, MSG_TENANT_SHRED,
};
use kiseki_api::keys::Empty;
use kiseki_api::Role;
use kiseki_net::{decode_body, encode_answer, ErrorCode, RemoteError, TokioPeer, TokioService};

use crate::plane::ControlPlane;

/// Counters of the control plane, for its metrics endpoint.
#[derive(Debug, Default)]
pub struct ControlCounters {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests refused for their caller's role.
    pub refused: AtomicU64,
    /// Requests that failed.
    pub failed: AtomicU64,
}

/// The control plane's RPC service.
#[derive(Debug)]
pub struct ControlService {
    plane: ControlPlane,
    counters: Arc<ControlCounters>,
}

impl ControlService {
    /// The service over `plane`.
    pub fn new(plane: ControlPlane) -> ControlService {
        ControlService {
            plane,
            counters: Arc::new(ControlCounters::default()),
        }
    }

    /// The control plane.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// Prometheus text of the counters and the records' sizes.
    pub async fn metrics_text(&self) -> String {
        let status = self.plane.status().await;
        let counters = &self.counters;
        format!(
            "# TYPE kiseki_control_requests_total counter\nkiseki_control_requests_total {}\n\
             # TYPE kiseki_control_refused_total counter\nkiseki_control_refused_total {}\n\
             # TYPE kiseki_control_failed_total counter\nkiseki_control_failed_total {}\n\
             # TYPE kiseki_control_tenants gauge\nkiseki_control_tenants {}\n\
             # TYPE kiseki_control_namespaces gauge\nkiseki_control_namespaces {}\n\
             # TYPE kiseki_control_access_keys gauge\nkiseki_control_access_keys {}\n\
             # TYPE kiseki_control_shards_free gauge\nkiseki_control_shards_free {}\n",
            counters.requests.load(Ordering::Relaxed),
            counters.refused.load(Ordering::Relaxed),
            counters.failed.load(Ordering::Relaxed),
            status.tenants,
            status.namespaces,
            status.access_keys,
            status.shards_free,
        )
    }

    fn refuse(&self, role: &Role, action: &str) -> RemoteError {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%role, action, "refused");
        RemoteError::new(ErrorCode::PermissionDenied, format!("{role} may not {action}"))
    }

    fn admin_only(&self, role: &Role, action: &str) -> Result<(), RemoteError> {
        match role {
            Role::Admin => Ok(()),
            _ => Err(self.refuse(role, action)),
        }
    }

    fn for_tenant(&self, role: &Role, tenant: &str, action: &str) -> Result<(), RemoteError> {
        match role.may_act_for(tenant) {
            true => Ok(()),
            false => Err(self.refuse(role, &format!("{action} of tenant {tenant}"))),
        }
    }

    async fn answer(&self, message_type: u16, body: &[u8], role: &Role) -> Result<Vec<u8>, RemoteError> {
        let plane = &self.plane;
        match message_type {
            MSG_CONTROL_STATUS => {
                let _: Empty = decode_body(body)?;
                Ok(encode_answer(&plane.status().await)?)
            }
            MSG_TENANT_CREATE => {
                let request: TenantCreateRequest = decode_body(body)?;
                self.admin_only(role, "create tenants")?;
                Ok(encode_answer(&plane.create_tenant(&request.name).await?)?)
            }
            MSG_TENANT_LIST => {
                let _: Empty = decode_body(body)?;
                self.admin_only(role, "list tenants")?;
                Ok(encode_answer(&TenantList {
                    tenants: plane.tenants().await,
                })?)
            }
            MSG_TENANT_DELETE => {
                let request: TenantRef = decode_body(body)?;
                self.admin_only(role, "delete tenants")?;
                Ok(encode_answer(&plane.delete_tenant(&request.name).await?)?)
            }
            MSG_TENANT_SHRED => {
                let request: TenantRef = decode_body(body)?;
                self.admin_only(role, "shred tenants")?;
                Ok(encode_answer(&plane.shred_tenant(&request.name).await?)?)
            }
            _ => self.answer_namespaces(message_type, body, role).await,
        }
    }

    async fn answer_namespaces(&self, message_type: u16, body: &[u8], role: &Role) -> Result<Vec<u8>, RemoteError> {
        let plane = &self.plane;
        match message_type {
            MSG_NAMESPACE_CREATE => {
                let request: NamespaceCreateRequest = decode_body(body)?;
                self.admin_only(role, "create namespaces")?;
                Ok(encode_answer(&plane.create_namespace(&request).await?)?)
            }
            MSG_NAMESPACE_LIST => {
                let request: NamespaceListRequest = decode_body(body)?;
                match (&request.tenant, role) {
                    (None, Role::Admin | Role::Gateway) => {}
                    (None, _) => return Err(self.refuse(role, "list the namespaces of every tenant")),
                    (Some(tenant), _) => self.for_tenant(role, tenant, "list the namespaces")?,
                }
                let namespaces = plane.namespaces(request.tenant.as_deref(), request.usage).await;
                Ok(encode_answer(&NamespaceList { namespaces })?)
            }
            MSG_NAMESPACE_RESOLVE => {
                let request: NamespaceRef = decode_body(body)?;
                self.for_tenant(role, &request.tenant, "open the namespaces")?;
                Ok(encode_answer(&plane.resolve(&request.tenant, &request.name).await?)?)
            }
            MSG_NAMESPACE_DELETE => {
                let request: NamespaceRef = decode_body(body)?;
                self.admin_only(role, "delete namespaces")?;
                Ok(encode_answer(
                    &plane.delete_namespace(&request.tenant, &request.name).await?,
                )?)
            }
            MSG_QUOTA_SET => {
                let request: QuotaSetRequest = decode_body(body)?;
                self.admin_only(role, "set quotas")?;
                Ok(encode_answer(&plane.set_quota(&request).await?)?)
            }
            _ => self.answer_keys(message_type, body, role).await,
        }
    }

    async fn answer_keys(&self, message_type: u16, body: &[u8], role: &Role) -> Result<Vec<u8>, RemoteError> {
        let plane = &self.plane;
        let gateway_or_admin = |action: &str| match role {
            Role::Admin | Role::Gateway => Ok(()),
            _ => Err(self.refuse(role, action)),
        };
        match message_type {
            MSG_ACCESS_KEY_CREATE => {
                let request: TenantRef = decode_body(body)?;
                self.for_tenant(role, &request.name, "create access keys")?;
                if *role == Role::Gateway {
                    return Err(self.refuse(role, "create access keys"));
                }
                Ok(encode_answer(&plane.create_access_key(&request.name).await?)?)
            }
            MSG_ACCESS_KEY_LIST => {
                let request: TenantRef = decode_body(body)?;
                self.for_tenant(role, &request.name, "list the access keys")?;
                Ok(encode_answer(&AccessKeyList {
                    keys: plane.access_keys(&request.name).await?,
                })?)
            }
            MSG_ACCESS_KEY_DELETE => {
                let request: AccessKeyRef = decode_body(body)?;
                // An unknown key is NotFound for whoever may delete keys at all.
                let tenant = plane.access_key_tenant(&request.access_key).await;
                match (&tenant, role) {
                    (_, Role::Admin) => {}
                    (Some(tenant), Role::Tenant(_)) => self.for_tenant(role, tenant, "delete the access keys")?,
                    (None, Role::Tenant(_)) => {}
                    _ => return Err(self.refuse(role, "delete access keys")),
                }
                Ok(encode_answer(&plane.delete_access_key(&request.access_key).await?)?)
            }
            MSG_ACCESS_KEY_LOOKUP => {
                let request: AccessKeyRef = decode_body(body)?;
                gateway_or_admin("look up access keys")?;
                Ok(encode_answer(&plane.lookup_access_key(&request.access_key).await?)?)
            }
            MSG_ACCESS_KEY_DIRECTORY => {
                let _: Empty = decode_body(body)?;
                gateway_or_admin("read the access key directory")?;
                Ok(encode_answer(&AccessKeyList {
                    keys: plane.all_access_keys().await,
                })?)
            }
            MSG_MAINTENANCE_SET => {
                let request: MaintenanceRequest = decode_body(body)?;
                self.admin_only(role, "switch maintenance")?;
                Ok(encode_answer(&plane.set_maintenance(request.read_only).await?)?)
            }
            MSG_MAINTENANCE_STATUS => {
                let _: Empty = decode_body(body)?;
                Ok(encode_answer(&plane.maintenance().await)?)
            }
            other => Err(RemoteError::new(
                ErrorCode::UnknownMethod,
                format!("the control plane has no method {other:#06x}"),
            )),
        }
    }
}

impl TokioService for ControlService {
    async fn handle(&self, message_type: u16, body: Vec<u8>, peer: Arc<TokioPeer>) -> Result<Vec<u8>, RemoteError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let Some(role) = peer.common_name.as_deref().and_then(Role::from_common_name) else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "certificate {:?} gives no role (admin, gateway, tenant-NAME)",
                    peer.common_name
                ),
            ));
        };
        let result = self.answer(message_type, &body, &role).await;
        if let Err(error) = &result {
            if error.code != ErrorCode::PermissionDenied {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%role, message_type, %error, "request failed");
            }
        }
        result
    }
}
