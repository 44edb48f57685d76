//! Who a caller is, read from the common name of its certificate (mutual TLS): the key
//! server and the control plane authorize every request by it.
//!
//! | common name | role |
//! |---|---|
//! | `admin` | the operator: everything |
//! | `control` | the control plane: tenants' keys made and destroyed, its own system tenant |
//! | `gateway`, `gateway-*` | a protocol gateway: encrypts for every tenant, looks up access keys |
//! | `node-N` | storage node N: no key material (nodes never see plaintext, I-K1) |
//! | `tenant-NAME` | a client of tenant NAME: its own keys and namespaces only |

use std::fmt;

/// The tenant the control plane keeps its own records under (a name no user tenant can
/// take: tenant names hold no `_`).
pub const SYSTEM_TENANT: &str = "_system";

/// The role a certificate's common name gives its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The operator.
    Admin,
    /// The control plane.
    Control,
    /// A protocol gateway.
    Gateway,
    /// A storage node.
    Node(u64),
    /// A client of one tenant.
    Tenant(String),
}

impl Role {
    /// The role of a certificate named `common_name`; `None` for a name that gives none.
    pub fn from_common_name(common_name: &str) -> Option<Role> {
        match common_name {
            "admin" => return Some(Role::Admin),
            "control" => return Some(Role::Control),
            "gateway" => return Some(Role::Gateway),
            _ => {}
        }
        if let Some(rest) = common_name.strip_prefix("gateway-") {
            return (!rest.is_empty()).then_some(Role::Gateway);
        }
        if let Some(id) = common_name.strip_prefix("node-") {
            return id.parse().ok().filter(|id| *id > 0).map(Role::Node);
        }
        if let Some(tenant) = common_name.strip_prefix("tenant-") {
            return validate_tenant_name(tenant)
                .is_ok()
                .then(|| Role::Tenant(tenant.to_owned()));
        }
        None
    }

    /// Whether this role may act for `tenant` (its data, keys and namespaces).
    pub fn may_act_for(&self, tenant: &str) -> bool {
        match self {
            Role::Admin | Role::Gateway => tenant != SYSTEM_TENANT,
            Role::Control => tenant == SYSTEM_TENANT,
            Role::Tenant(own) => own == tenant,
            Role::Node(_) => false,
        }
    }

    /// Whether this role administers tenants, namespaces and keys.
    pub fn is_administrator(&self) -> bool {
        matches!(self, Role::Admin | Role::Control)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Control => f.write_str("control"),
            Role::Gateway => f.write_str("gateway"),
            Role::Node(id) => write!(f, "node-{id}"),
            Role::Tenant(name) => write!(f, "tenant-{name}"),
        }
    }
}

/// Checks a tenant or namespace name: 1 to 63 of `a-z 0-9 -`, starting and ending with a
/// letter or digit (so names fit DNS labels, certificate names and paths alike).
pub fn validate_tenant_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let allowed = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-';
    let alphanumeric = |byte: Option<&u8>| byte.is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    if bytes.is_empty() || bytes.len() > 63 {
        return Err(format!("{name:?}: a name has 1 to 63 characters"));
    }
    if !bytes.iter().all(allowed) || !alphanumeric(bytes.first()) || !alphanumeric(bytes.last()) {
        return Err(format!(
            "{name:?}: a name holds only a-z, 0-9 and '-', and starts and ends with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_give_roles() {
        assert_eq!(Role::from_common_name("admin"), Some(Role::Admin));
        assert_eq!(Role::from_common_name("gateway-2"), Some(Role::Gateway));
        assert_eq!(Role::from_common_name("node-3"), Some(Role::Node(3)));
        assert_eq!(Role::from_common_name("tenant-acme"), Some(Role::Tenant("acme".into())));
        for refused in [
            "node-0",
            "node-x",
            "tenant-",
            "tenant-_system",
            "tenant-A",
            "client",
            "gateway-",
            "",
        ] {
            assert_eq!(Role::from_common_name(refused), None, "{refused}");
        }
    }

    #[test]
    fn roles_act_for_their_tenants_only() {
        let tenant = Role::Tenant("a".into());
        assert!(tenant.may_act_for("a"));
        assert!(!tenant.may_act_for("b"));
        assert!(!Role::Node(1).may_act_for("a"));
        assert!(Role::Gateway.may_act_for("a"));
        assert!(!Role::Gateway.may_act_for(SYSTEM_TENANT));
        assert!(Role::Control.may_act_for(SYSTEM_TENANT));
        assert!(!Role::Control.may_act_for("a"));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_tenant_name("default").is_ok());
        assert!(validate_tenant_name("a-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", "..", &"x".repeat(64)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad}");
        }
    }
}
