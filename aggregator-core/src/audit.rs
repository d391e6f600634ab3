//! The audit log: who did what, when, to what. Services describe each operation as an
//! [`AuditEvent`]; [`AuditEvent::entry`] turns it, with the acting [`Actor`], into the stored
//! [`AuditEntry`], so every action name, subject and detail is written in this one place.
//! Entries are written with the change they record, in the same transaction, and kept
//! append-only by the storage backends.

use crate::alarms::Alarm;
use crate::identity::Actor;
use serde_json::{json, Value};

/// One entry of the append-only audit log: who did what, when, to what (001 第十九条: every
/// operation logged and kept; 004 第二十四条: no unauthorised operations).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub ts_ms: u64,
    /// A person's name, or `system` for automatic actions.
    pub actor: String,
    /// e.g. `alarm.acknowledge`, `register.import`.
    pub action: String,
    /// What it was done to, e.g. `alarm:12`.
    pub subject: String,
    pub detail: Value,
}

/// A change to a unit's standing in the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitChange {
    Sanction,
    LiftSanction,
    Quota,
}

/// One audited operation, typed. The stored action names are stable: reports and the audit
/// page filter on them.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditEvent {
    /// A rule raised, escalated or cleared an alarm (or recorded an acknowledgement); `change`
    /// is the lifecycle step (`raised`, `escalated`, `acknowledged`, `cleared`).
    AlarmChanged {
        change: &'static str,
        alarm: Alarm,
    },
    /// A person acknowledged an open alarm.
    AlarmAcknowledged {
        alarm: Alarm,
        note: Option<String>,
    },
    /// A unit's register form was imported (`from`/`to`: the replaced and the new rows).
    RegisterImported {
        unit: String,
        file: String,
        format: Value,
        systems: Vec<[String; 2]>,
        imported: usize,
        from: Value,
        to: Value,
    },
    /// An approved change of one VM's size.
    RegisterChanged {
        uuid: String,
        unit: String,
        system: String,
        subsystem: String,
        approved_by: String,
        reason: String,
        from: Value,
        to: Value,
    },
    /// A unit's sanction or quota changed.
    UnitChanged {
        change: UnitChange,
        unit: String,
        from: Value,
        to: Value,
        note: Option<String>,
    },
    /// An exemption from the idle rule (`reason`: the exemption's reason code).
    ExemptionCreated {
        id: u64,
        vm: String,
        reason: Value,
        approver: String,
        expires_ms: u64,
        note: String,
    },
    ExemptionRevoked {
        id: u64,
        vm: String,
        reason: String,
    },
    /// Stopping a VM whose antivirus was removed was requested (承诺书).
    AntivirusStopRequested {
        node: String,
        reason: String,
        approval_required: bool,
        clause: String,
        removals: Value,
    },
    AntivirusStopApproved {
        node: String,
        requested_by: String,
        reason: String,
        note: Option<String>,
    },
    /// The approved stop went out as a signed command to the VM's host.
    AntivirusStopCommand {
        purpose: String,
        command: String,
        host: String,
        snapshot: Option<String>,
    },
    /// The approved stop could not be sent.
    AntivirusStopCommandFailed {
        purpose: String,
        error: String,
        approved_by: String,
    },
    /// A command's result came back (without a case step to record it).
    CommandResult {
        purpose: String,
        ok: bool,
        detail: Value,
    },
    /// A command expired without an answer.
    CommandExpired {
        purpose: String,
        command: String,
        node: String,
    },
    /// A user was created (by an administrator, or on the command line).
    UserCreated {
        user: String,
        role: String,
        unit: Option<String>,
    },
    /// A password was changed (by its owner, or reset by an administrator).
    PasswordChanged {
        user: String,
    },
    /// A user was disabled or enabled again.
    UserDisabled {
        user: String,
        disabled: bool,
    },
    /// Someone signed in, from `source` (an address).
    SignedIn {
        user: String,
        source: String,
    },
    /// A sign-in was refused (等保 登录失败处理); `locked` when it locked the account.
    SignInRefused {
        user: String,
        source: String,
        locked: bool,
    },
    SignedOut {
        user: String,
    },
    /// An API token was issued (the secret is never recorded).
    TokenIssued {
        id: String,
        user: String,
        label: String,
        expires_ms: u64,
    },
    TokenRevoked {
        id: String,
        user: String,
    },
    /// A reclaim case took a step (`step`: `notify`, `approve`...).
    ReclaimStep {
        case: u64,
        step: String,
        detail: Value,
    },
}

impl AuditEvent {
    /// The stored entry of this operation by `actor` at `ts_ms`.
    pub fn entry(self, ts_ms: u64, actor: &Actor) -> AuditEntry {
        self.entry_by(ts_ms, &actor.name)
    }

    /// The stored entry of this operation by the person named `by` (a request field until
    /// sign-in lands) at `ts_ms`.
    pub fn entry_by(self, ts_ms: u64, by: &str) -> AuditEntry {
        let (action, subject, detail) = self.parts();
        AuditEntry {
            ts_ms,
            actor: by.to_string(),
            action,
            subject,
            detail,
        }
    }

    /// `(action, subject, detail)`.
    fn parts(self) -> (String, String, Value) {
        match self {
            AuditEvent::AlarmChanged { change, alarm: a } => (
                format!("alarm.{change}"),
                format!("alarm:{}", a.id),
                json!({
                    "rule": a.key.rule, "subject": a.key.subject, "level": a.level,
                    "clause": a.clause, "unit": a.unit, "title": a.title,
                }),
            ),
            AuditEvent::AlarmAcknowledged { alarm: a, note } => (
                "alarm.acknowledge".into(),
                format!("alarm:{}", a.id),
                json!({
                    "rule": a.key.rule, "subject": a.key.subject, "clause": a.clause,
                    "note": note,
                }),
            ),
            AuditEvent::RegisterImported {
                unit,
                file,
                format,
                systems,
                imported,
                from,
                to,
            } => (
                "register.import".into(),
                format!("unit:{unit}"),
                json!({
                    "file": file, "format": format, "systems": systems, "imported": imported,
                    "from": from, "to": to,
                }),
            ),
            AuditEvent::RegisterChanged {
                uuid,
                unit,
                system,
                subsystem,
                approved_by,
                reason,
                from,
                to,
            } => (
                "register.change".into(),
                format!("vm:{}", uuid.to_ascii_lowercase()),
                json!({
                    "unit": unit, "system": system, "subsystem": subsystem,
                    "approved_by": approved_by, "reason": reason, "from": from, "to": to,
                }),
            ),
            AuditEvent::UnitChanged {
                change,
                unit,
                from,
                to,
                note,
            } => {
                let action = match change {
                    UnitChange::Sanction => "register.sanction",
                    UnitChange::LiftSanction => "register.lift_sanction",
                    UnitChange::Quota => "register.quota",
                };
                let mut detail = json!({ "from": from, "to": to });
                if change == UnitChange::LiftSanction {
                    detail["note"] = json!(note);
                }
                (action.into(), format!("unit:{unit}"), detail)
            }
            AuditEvent::ExemptionCreated {
                id,
                vm,
                reason,
                approver,
                expires_ms,
                note,
            } => (
                "exemption.create".into(),
                format!("exemption:{id}"),
                json!({
                    "vm": vm, "reason": reason, "approver": approver,
                    "expires_ms": expires_ms, "note": note,
                }),
            ),
            AuditEvent::ExemptionRevoked { id, vm, reason } => (
                "exemption.revoke".into(),
                format!("exemption:{id}"),
                json!({ "vm": vm, "reason": reason }),
            ),
            AuditEvent::AntivirusStopRequested {
                node,
                reason,
                approval_required,
                clause,
                removals,
            } => (
                "antivirus.stop_request".into(),
                format!("antivirus:{node}"),
                json!({
                    "reason": reason, "approval_required": approval_required,
                    "clause": clause, "removals": removals,
                }),
            ),
            AuditEvent::AntivirusStopApproved {
                node,
                requested_by,
                reason,
                note,
            } => (
                "antivirus.stop_approve".into(),
                format!("antivirus:{node}"),
                json!({ "requested_by": requested_by, "reason": reason, "note": note }),
            ),
            AuditEvent::AntivirusStopCommand {
                purpose,
                command,
                host,
                snapshot,
            } => (
                "antivirus.stop_command".into(),
                purpose,
                json!({ "command": command, "host": host, "action": "stop", "snapshot": snapshot }),
            ),
            AuditEvent::AntivirusStopCommandFailed {
                purpose,
                error,
                approved_by,
            } => (
                "antivirus.stop_command_failed".into(),
                purpose,
                json!({ "error": error, "approved_by": approved_by }),
            ),
            AuditEvent::CommandResult {
                purpose,
                ok,
                detail,
            } => (
                format!("command.{}", if ok { "succeeded" } else { "failed" }),
                purpose,
                detail,
            ),
            AuditEvent::CommandExpired {
                purpose,
                command,
                node,
            } => (
                "command.expired".into(),
                purpose,
                json!({ "command": command, "node": node }),
            ),
            AuditEvent::UserCreated { user, role, unit } => (
                "user.create".into(),
                format!("user:{user}"),
                json!({ "role": role, "unit": unit }),
            ),
            AuditEvent::PasswordChanged { user } => {
                ("user.password".into(), format!("user:{user}"), json!({}))
            }
            AuditEvent::UserDisabled { user, disabled } => (
                if disabled {
                    "user.disable"
                } else {
                    "user.enable"
                }
                .into(),
                format!("user:{user}"),
                json!({}),
            ),
            AuditEvent::SignedIn { user, source } => (
                "session.sign_in".into(),
                format!("user:{user}"),
                json!({ "source": source }),
            ),
            AuditEvent::SignInRefused {
                user,
                source,
                locked,
            } => (
                "session.sign_in_refused".into(),
                format!("user:{user}"),
                json!({ "source": source, "locked": locked }),
            ),
            AuditEvent::SignedOut { user } => {
                ("session.sign_out".into(), format!("user:{user}"), json!({}))
            }
            AuditEvent::TokenIssued {
                id,
                user,
                label,
                expires_ms,
            } => (
                "token.issue".into(),
                format!("token:{id}"),
                json!({ "user": user, "label": label, "expires_ms": expires_ms }),
            ),
            AuditEvent::TokenRevoked { id, user } => (
                "token.revoke".into(),
                format!("token:{id}"),
                json!({ "user": user }),
            ),
            AuditEvent::ReclaimStep { case, step, detail } => {
                (format!("reclaim.{step}"), format!("reclaim:{case}"), detail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit page, reports and `audit verify` filter on these names: they must not drift.
    #[test]
    fn action_names_and_subjects_are_stable() {
        let cases = [
            (
                AuditEvent::ExemptionRevoked {
                    id: 7,
                    vm: "vm-1".into(),
                    reason: "不再需要".into(),
                },
                "exemption.revoke",
                "exemption:7",
            ),
            (
                AuditEvent::UnitChanged {
                    change: UnitChange::LiftSanction,
                    unit: "财政局".into(),
                    from: json!({"reason": "x"}),
                    to: Value::Null,
                    note: Some("已整改".into()),
                },
                "register.lift_sanction",
                "unit:财政局",
            ),
            (
                AuditEvent::CommandResult {
                    purpose: "reclaim:3".into(),
                    ok: false,
                    detail: json!({}),
                },
                "command.failed",
                "reclaim:3",
            ),
            (
                AuditEvent::RegisterChanged {
                    uuid: "ABC".into(),
                    unit: "u".into(),
                    system: "s".into(),
                    subsystem: String::new(),
                    approved_by: "a".into(),
                    reason: "r".into(),
                    from: json!({}),
                    to: json!({}),
                },
                "register.change",
                "vm:abc",
            ),
        ];
        for (event, action, subject) in cases {
            let e = event.entry_by(5, "ops-li");
            assert_eq!((e.action.as_str(), e.subject.as_str()), (action, subject));
            assert_eq!((e.ts_ms, e.actor.as_str()), (5, "ops-li"));
        }
        let lifted = AuditEvent::UnitChanged {
            change: UnitChange::LiftSanction,
            unit: "u".into(),
            from: Value::Null,
            to: Value::Null,
            note: Some("已整改".into()),
        }
        .entry(1, &Actor::system());
        assert_eq!(lifted.detail["note"], "已整改");
        assert_eq!(lifted.actor, "system");
    }
}
