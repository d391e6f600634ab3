//! Who acts: the kinds of people the regulations name, and the system itself. Every change is
//! made by an [`Actor`] and audited under it.

use serde::{Deserialize, Serialize};

/// What someone may do is decided by their role (004 第二十四条: no unauthorised operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 系统管理员: users and settings.
    Admin,
    /// 运维单位 / 云管理机构: accepts, reviews, proposes, files, schedules, executes.
    Ops,
    /// 主管部门: approves or rejects.
    Authority,
    /// 使用单位: applies, agrees or disputes; sees only its own systems.
    Unit,
    /// 审计人员: reads everything, the audit log included; changes nothing.
    Auditor,
    /// The aggregator itself (rules, detection, re-checks, command results).
    System,
}

impl Role {
    pub const PEOPLE: [Role; 5] = [
        Role::Admin,
        Role::Ops,
        Role::Authority,
        Role::Unit,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Ops => "ops",
            Role::Authority => "authority",
            Role::Unit => "unit",
            Role::Auditor => "auditor",
            Role::System => "system",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Role::Admin => "系统管理员",
            Role::Ops => "运维单位",
            Role::Authority => "主管部门",
            Role::Unit => "使用单位",
            Role::Auditor => "审计人员",
            Role::System => "系统",
        }
    }

    /// The role a person can hold, from its name (`ops`, `authority`...); not `system`.
    pub fn of_person(name: &str) -> Option<Role> {
        Role::PEOPLE.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Someone acting: a person with a role (a unit's people with their unit), or the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    /// For a unit's people: which unit.
    pub unit: Option<String>,
    /// Where the request came from (the client's address), for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            name: "system".into(),
            role: Role::System,
            unit: None,
            source: None,
        }
    }

    /// The system acting through one of its rules or jobs (`rule:capacity.memory`,
    /// `job:reclaim`, `command line`): named in the audit log's source.
    pub fn job(what: impl Into<String>) -> Actor {
        Actor::system().from_source(what)
    }

    pub fn person(name: impl Into<String>, role: Role, unit: Option<String>) -> Actor {
        Actor {
            name: name.into(),
            role,
            unit,
            source: None,
        }
    }

    /// The same person, acting from `source`.
    pub fn from_source(self, source: impl Into<String>) -> Actor {
        Actor {
            source: Some(source.into()),
            ..self
        }
    }

    pub fn is_system(&self) -> bool {
        self.role == Role::System
    }
}

/// A person who signs in: a login name, the role that decides what they may do and, for a
/// unit's people, their unit.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login name: 1–64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// 姓名, shown beside the login name.
    pub display_name: String,
    pub role: Role,
    /// The unit of a `unit` user; none for the other roles.
    pub unit: Option<String>,
    /// The password's argon2id hash (PHC string).
    pub password_hash: String,
    pub created_ms: u64,
    pub password_changed_ms: u64,
    /// A disabled user cannot sign in and their tokens are refused.
    pub disabled: bool,
}

/// The hash is not shown: secrets never appear in `Debug` output.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("unit", &self.unit)
            .field("password_hash", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .field("password_changed_ms", &self.password_changed_ms)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Why a user cannot be made as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("登录名 {0:?} 无效：须为 1–64 个字母、数字、点、下划线或连字符")]
    BadName(String),
    #[error("角色 {0:?} 不存在：可选 admin、ops、authority、unit、auditor")]
    BadRole(String),
    #[error("使用单位角色（unit）的用户必须指定所属单位")]
    UnitRequired,
    #[error("只有使用单位角色（unit）的用户才有所属单位，{0} 角色不应指定单位")]
    UnitNotAllowed(Role),
}

impl User {
    /// The user acting.
    pub fn actor(&self) -> Actor {
        Actor::person(self.name.clone(), self.role, self.unit.clone())
    }

    /// Check a name, role and unit fit together: a unit user has a unit, nobody else has one.
    pub fn check(name: &str, role: Role, unit: Option<&str>) -> Result<(), UserError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(UserError::BadName(name.to_string()));
        }
        if role == Role::System {
            return Err(UserError::BadRole(role.as_str().into()));
        }
        match (role, unit.map(str::trim).filter(|u| !u.is_empty())) {
            (Role::Unit, None) => Err(UserError::UnitRequired),
            (Role::Unit, Some(_)) | (_, None) => Ok(()),
            (r, Some(_)) => Err(UserError::UnitNotAllowed(r)),
        }
    }
}

/// An API token for scripts and integrations: acts as its user, with their role and unit.
/// Only a hash of the secret is kept; the secret is shown once, when issued.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public part of the token (`yj_<id>_<secret>`), for listing and revoking.
    pub id: String,
    pub user: String,
    /// What it is for (`备份脚本`...).
    pub label: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub revoked_ms: Option<u64>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("label", &self.label)
            .field("secret_hash", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .field("revoked_ms", &self.revoked_ms)
            .finish()
    }
}

impl ApiToken {
    /// Usable at `now_ms`: not revoked, not expired.
    pub fn valid_at(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && now_ms < self.expires_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip_and_system_is_no_persons_role() {
        for r in Role::PEOPLE {
            assert_eq!(Role::of_person(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(Role::of_person("system"), None);
        assert_eq!(Role::of_person("root"), None);
    }

    #[test]
    fn a_unit_user_has_a_unit_and_nobody_else_does() {
        assert_eq!(User::check("li.na", Role::Unit, Some("财政局")), Ok(()));
        assert_eq!(
            User::check("li.na", Role::Unit, Some("  ")),
            Err(UserError::UnitRequired)
        );
        assert_eq!(User::check("wang", Role::Authority, None), Ok(()));
        assert_eq!(
            User::check("wang", Role::Ops, Some("财政局")),
            Err(UserError::UnitNotAllowed(Role::Ops))
        );
        assert!(matches!(
            User::check("王局长", Role::Ops, None),
            Err(UserError::BadName(_))
        ));
        assert!(matches!(
            User::check("", Role::Ops, None),
            Err(UserError::BadName(_))
        ));
        assert!(matches!(
            User::check("sys", Role::System, None),
            Err(UserError::BadRole(_))
        ));
    }

    #[test]
    fn debug_output_hides_the_hashes() {
        let u = User {
            name: "ops".into(),
            display_name: "运维".into(),
            role: Role::Ops,
            unit: None,
            password_hash: "$argon2id$v=19$secret".into(),
            created_ms: 0,
            password_changed_ms: 0,
            disabled: false,
        };
        assert!(!format!("{u:?}").contains("argon2id"));
    }
}
