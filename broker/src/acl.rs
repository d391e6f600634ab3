//! Who may connect, publish and subscribe on the embedded broker. Pure functions.

use yunjian_protocol::{topics, MasterKey, Role};

/// The identity a connection was accepted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An agent, by node id: may publish on its own report and status topics and subscribe to
    /// its own command topic.
    Agent(String),
    /// An operator tool or an anonymous client where allowed: may do anything.
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("client id {0:?} is not `yj-` followed by a valid node id")]
    BadClientId(String),
    #[error("agent {node}: no login given")]
    MissingLogin { node: String },
    #[error("agent {node}: user name {user:?} does not match the node id")]
    UserMismatch { node: String, user: String },
    #[error("agent {node}: wrong password (not enrolled with this aggregator's master key?)")]
    BadPassword { node: String },
    #[error("client {0:?}: only agents and the operator may connect")]
    NotAllowed(String),
}

/// Decide whether a CONNECT is accepted.
pub fn login(
    client_id: &str,
    user: Option<(&str, &str)>,
    master: Option<&MasterKey>,
    require_login: bool,
    operator_password: Option<&str>,
    allow_anonymous: bool,
) -> Result<Principal, LoginError> {
    if let Some(rest) = client_id.strip_prefix("yj-") {
        if !topics::valid_node_id(rest) {
            return Err(LoginError::BadClientId(client_id.to_string()));
        }
        let node = rest.to_string();
        if let (true, Some(master)) = (require_login, master) {
            let Some((u, p)) = user else {
                return Err(LoginError::MissingLogin { node });
            };
            if u != node {
                return Err(LoginError::UserMismatch {
                    node,
                    user: u.to_string(),
                });
            }
            // the node's key is bound to the role it was enrolled with; either role may log
            // in (ingest tells them apart by the key that verifies the node's frames)
            let enrolled = [Role::Host, Role::Guest].into_iter().any(|role| {
                constant_time_eq(
                    p.as_bytes(),
                    master.node_key(&node, role).mqtt_password().as_bytes(),
                )
            });
            if !enrolled {
                return Err(LoginError::BadPassword { node });
            }
        }
        return Ok(Principal::Agent(node));
    }
    match (user, operator_password) {
        (Some(("operator", p)), Some(op)) if constant_time_eq(p.as_bytes(), op.as_bytes()) => {
            Ok(Principal::Operator)
        }
        _ if allow_anonymous => Ok(Principal::Operator),
        _ => Err(LoginError::NotAllowed(client_id.to_string())),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// May `who` publish on `topic`?
pub fn may_publish(who: &Principal, topic: &str) -> bool {
    match who {
        Principal::Operator => true,
        Principal::Agent(node) => matches!(
            topics::parse(topic),
            Some((n, topics::TopicKind::Report | topics::TopicKind::Status)) if n == node
        ),
    }
}

/// May `who` subscribe to `filter`?
pub fn may_subscribe(who: &Principal, filter: &str) -> bool {
    match who {
        Principal::Operator => true,
        Principal::Agent(node) => filter == topics::command(node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes([5; 32])
    }

    #[test]
    fn agents_log_in_with_their_derived_password_only() {
        let m = master();
        let pw = m.node_key("h1", Role::Host).mqtt_password();
        assert_eq!(
            login("yj-h1", Some(("h1", &pw)), Some(&m), true, None, false),
            Ok(Principal::Agent("h1".into()))
        );
        // enrolled as a guest: logs in too
        let vm_pw = m.node_key("vm1", Role::Guest).mqtt_password();
        assert!(login("yj-vm1", Some(("vm1", &vm_pw)), Some(&m), true, None, false).is_ok());
        // h2's password does not open h1
        let pw2 = m.node_key("h2", Role::Guest).mqtt_password();
        assert_eq!(
            login("yj-h1", Some(("h1", &pw2)), Some(&m), true, None, false),
            Err(LoginError::BadPassword { node: "h1".into() })
        );
        assert!(matches!(
            login("yj-h1", Some(("h2", &pw2)), Some(&m), true, None, false),
            Err(LoginError::UserMismatch { .. })
        ));
        assert!(matches!(
            login("yj-h1", None, Some(&m), true, None, false),
            Err(LoginError::MissingLogin { .. })
        ));
        assert!(matches!(
            login("yj-a/b", None, Some(&m), true, None, false),
            Err(LoginError::BadClientId(_))
        ));
        // login checks can be switched off (external auth in front)
        assert!(login("yj-h1", None, Some(&m), false, None, false).is_ok());
    }

    #[test]
    fn other_clients_need_the_operator_password_or_anonymous_mode() {
        let m = master();
        assert!(matches!(
            login("tool", None, Some(&m), true, Some("s3cret"), false),
            Err(LoginError::NotAllowed(_))
        ));
        assert_eq!(
            login(
                "tool",
                Some(("operator", "s3cret")),
                Some(&m),
                true,
                Some("s3cret"),
                false
            ),
            Ok(Principal::Operator)
        );
        assert!(login(
            "tool",
            Some(("operator", "nope")),
            Some(&m),
            true,
            Some("s3cret"),
            false
        )
        .is_err());
        assert_eq!(
            login("tool", None, Some(&m), true, None, true),
            Ok(Principal::Operator)
        );
    }

    #[test]
    fn agents_publish_and_subscribe_only_on_their_own_topics() {
        let a = Principal::Agent("h1".into());
        assert!(may_publish(&a, "yunjian/v1/h1/report"));
        assert!(may_publish(&a, "yunjian/v1/h1/status"));
        assert!(!may_publish(&a, "yunjian/v1/h2/report"));
        assert!(!may_publish(&a, "yunjian/v1/h1/cmd"));
        assert!(!may_publish(&a, "elsewhere"));
        assert!(may_subscribe(&a, "yunjian/v1/h1/cmd"));
        assert!(!may_subscribe(&a, "yunjian/v1/+/cmd"));
        assert!(!may_subscribe(&a, "#"));
        assert!(may_subscribe(&Principal::Operator, "#"));
    }
}
