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
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            name: "system".into(),
            role: Role::System,
            unit: None,
        }
    }

    pub fn person(name: impl Into<String>, role: Role, unit: Option<String>) -> Actor {
        Actor {
            name: name.into(),
            role,
            unit,
        }
    }

    pub fn is_system(&self) -> bool {
        self.role == Role::System
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
}
