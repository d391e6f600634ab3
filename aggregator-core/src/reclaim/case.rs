//! A reclaim case (降配 / 回收 of a low-use VM): its states, the steps between them, who may
//! take each step, and the deadline of each waiting state.
//!
//! ```text
//! detected ─notify─▶ notified ─agree──▶ agreed ──file─▶ filed ─approve─▶ approved ─schedule─▶ scheduled
//!                          └──dispute─▶ disputed ─file─┘    └─reject─▶ rejected                 │ recheck
//!                                          │ settle (the unit agrees after all) ─▶ agreed
//!                                                                                                ▼
//!  closed ◀─released─ releasing ◀─close─ verified ◀─verify─ executed ◀─succeeded─ executing ◀─execute
//!                                         │  (downsize: close → closed)          │ failed/expired
//!                                         └─rollback─▶ rolling_back ─▶ rolled_back   ▼
//!                                                                            execution_failed ─retry─▶ executing
//! ```
//! Every step before execution can be withdrawn (by ops or the authority, or by the system when
//! the re-check finds the VM busy again). The step functions are pure: they return the new
//! case and a log entry; the service persists both in one transaction.
//!
//! Per profile ([`ReclaimPolicy`]):
//! * `agreement_required` (002 第十一条: 备案 **and** 协商一致): a disputed case is not
//!   scheduled or executed until the unit's agreement is recorded (`settle`, by the unit,
//!   from `disputed`, `filed`, `approved` or `scheduled`);
//! * `total_days` (004 第十七条: 审核 and 回收 within 5 working days in total): from the
//!   unit's agreement, every later waiting state's deadline is at most the total's.
//!
//! No data loss: a stop case is released (its disks destroyed) only after the snapshot, the
//! approval trail and the unit's own **handover** (`handover`: its data is migrated or backed
//! up, 003 第十六条 / 004 第十七条 数据迁移备份), recorded on the case without moving it.

use super::calendar::Calendar;
use crate::policy::profile::ReclaimPolicy;
use serde::{Deserialize, Serialize};
use yunjian_protocol::VmSize;

pub use crate::identity::{Actor, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Detected,
    Notified,
    Agreed,
    Disputed,
    Filed,
    Approved,
    Scheduled,
    /// The command is persisted and sent; no result yet ("execution pending").
    Executing,
    /// The command failed, or expired without an answer (outcome unknown): ops retries or
    /// rolls back.
    ExecutionFailed,
    Executed,
    Verified,
    /// The hold period is over and the release command is out.
    Releasing,
    Closed,
    Withdrawn,
    Rejected,
    RollingBack,
    RolledBack,
}

pub const ALL_STATES: [State; 17] = [
    State::Detected,
    State::Notified,
    State::Agreed,
    State::Disputed,
    State::Filed,
    State::Approved,
    State::Scheduled,
    State::Executing,
    State::ExecutionFailed,
    State::Executed,
    State::Verified,
    State::Releasing,
    State::Closed,
    State::Withdrawn,
    State::Rejected,
    State::RollingBack,
    State::RolledBack,
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Detected => "detected",
            State::Notified => "notified",
            State::Agreed => "agreed",
            State::Disputed => "disputed",
            State::Filed => "filed",
            State::Approved => "approved",
            State::Scheduled => "scheduled",
            State::Executing => "executing",
            State::ExecutionFailed => "execution_failed",
            State::Executed => "executed",
            State::Verified => "verified",
            State::Releasing => "releasing",
            State::Closed => "closed",
            State::Withdrawn => "withdrawn",
            State::Rejected => "rejected",
            State::RollingBack => "rolling_back",
            State::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        ALL_STATES.into_iter().find(|x| x.as_str() == s)
    }

    /// No step leaves it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Closed | State::Withdrawn | State::Rejected | State::RolledBack
        )
    }

    /// A command for this case may be out.
    pub fn awaits_command(self) -> bool {
        matches!(
            self,
            State::Executing | State::Releasing | State::RollingBack
        )
    }
}

/// What was found (from the usage module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    /// 闲置: reclaim (stop, hold, release).
    Idle,
    /// 配置过度: downsize to the recommended size.
    OverProvisioned { recommended: VmSize },
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    Notify,
    Agree,
    Dispute,
    /// The unit agrees after its dispute (协商一致 reached): recorded on the case.
    Settle,
    /// The unit confirms its data is migrated or backed up (stop cases, before the release).
    Handover,
    /// 004 第十六条: the unit refused; its VM's service is limited (the `Limit` command).
    Limit {
        command: String,
    },
    /// The limit lifted (the `Limit` command without caps).
    Unlimit {
        command: String,
    },
    File,
    Approve,
    Reject,
    /// Act at `at_ms` (not before the re-check).
    Schedule {
        at_ms: u64,
    },
    Withdraw,
    /// The re-check confirmed the finding; the command goes out.
    Execute {
        command: String,
    },
    Succeeded,
    Failed,
    /// A new command (new id) for the same step after a failure.
    Retry {
        command: String,
    },
    /// The host's guest list and the VM's own agent show the VM stopped / downsized.
    Verify,
    /// Close a verified case: a downsize closes; a stop sends the release command once the
    /// hold period is over.
    Close {
        command: Option<String>,
    },
    Released,
    Rollback {
        command: String,
    },
    RolledBack,
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Notify => "notify",
            Step::Agree => "agree",
            Step::Dispute => "dispute",
            Step::Settle => "settle",
            Step::Handover => "handover",
            Step::Limit { .. } => "limit",
            Step::Unlimit { .. } => "unlimit",
            Step::File => "file",
            Step::Approve => "approve",
            Step::Reject => "reject",
            Step::Schedule { .. } => "schedule",
            Step::Withdraw => "withdraw",
            Step::Execute { .. } => "execute",
            Step::Succeeded => "succeeded",
            Step::Failed => "failed",
            Step::Retry { .. } => "retry",
            Step::Verify => "verify",
            Step::Close { .. } => "close",
            Step::Released => "released",
            Step::Rollback { .. } => "rollback",
            Step::RolledBack => "rolled_back",
        }
    }

    /// The roles that may take the step.
    pub fn roles(&self) -> &'static [Role] {
        match self {
            Step::Notify => &[Role::Ops, Role::System],
            Step::Agree | Step::Dispute | Step::Settle | Step::Handover => &[Role::Unit],
            Step::Limit { .. } | Step::Unlimit { .. } => &[Role::Ops],
            Step::File | Step::Schedule { .. } | Step::Retry { .. } => &[Role::Ops],
            Step::Close { .. } => &[Role::Ops],
            Step::Approve | Step::Reject => &[Role::Authority],
            Step::Withdraw => &[Role::Ops, Role::Authority, Role::System],
            Step::Rollback { .. } => &[Role::Ops, Role::Authority],
            Step::Execute { .. }
            | Step::Succeeded
            | Step::Failed
            | Step::Verify
            | Step::Released
            | Step::RolledBack => &[Role::System],
        }
    }

    /// A reason is required (disputes, rejections, withdrawals, rollbacks, failures).
    pub fn needs_reason(&self) -> bool {
        matches!(
            self,
            Step::Dispute
                | Step::Reject
                | Step::Withdraw
                | Step::Rollback { .. }
                | Step::Failed
                | Step::Limit { .. }
        )
    }
}

/// The steps a person may take from the page (by name), for a role.
pub const PERSON_STEPS: &[(&str, Role)] = &[
    ("notify", Role::Ops),
    ("agree", Role::Unit),
    ("dispute", Role::Unit),
    ("settle", Role::Unit),
    ("handover", Role::Unit),
    ("limit", Role::Ops),
    ("unlimit", Role::Ops),
    ("file", Role::Ops),
    ("approve", Role::Authority),
    ("reject", Role::Authority),
    ("schedule", Role::Ops),
    ("withdraw", Role::Ops),
    ("withdraw", Role::Authority),
    ("retry", Role::Ops),
    ("close", Role::Ops),
    ("rollback", Role::Ops),
    ("rollback", Role::Authority),
];

/// A reclaim case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: u64,
    /// The VM's SMBIOS / domain UUID (lower case).
    pub uuid: String,
    /// The VM's name in the register (domain name for messages).
    pub vm_name: String,
    pub unit: String,
    pub system: String,
    pub kind: Kind,
    /// What the usage module found (figures of the window).
    pub evidence: serde_json::Value,
    pub state: State,
    pub opened_ms: u64,
    pub state_since_ms: u64,
    /// When the current waiting state must be left (working days per the profile).
    pub deadline_ms: Option<u64>,
    /// Why the case cannot move on by itself right now (e.g. no host lists the VM).
    #[serde(default)]
    pub note: Option<String>,
    pub scheduled_ms: Option<u64>,
    /// The hypervisor host the command went to.
    pub host: Option<String>,
    /// The snapshot taken before acting (kept until release).
    pub snapshot: Option<String>,
    /// The command in flight or last sent (hex id).
    pub command: Option<String>,
    /// Stop cases: the VM is kept stopped until then, released after.
    pub hold_until_ms: Option<u64>,
    pub updated_ms: u64,
    /// The unit disputed and has not agreed since (see `agreement_required`).
    #[serde(default)]
    pub disputed: bool,
    /// The end of the profile's `total_days` from the unit's agreement, once it agreed.
    #[serde(default)]
    pub total_deadline_ms: Option<u64>,
    /// When the unit confirmed its data migrated or backed up (stop cases): the release waits
    /// for it.
    #[serde(default)]
    pub handover_ms: Option<u64>,
    /// Why the VM is taken back: low use (the default), the unit's approved termination, or a
    /// test / temporary allocation that ended. The re-check before acting checks this basis.
    #[serde(default)]
    pub basis: Basis,
    /// Since when the VM's service is limited (004 第十六条: after the unit refused); lifted by
    /// `unlimit`.
    #[serde(default)]
    pub limited_ms: Option<u64>,
}

/// What a case rests on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "basis")]
pub enum Basis {
    /// The usage module found the VM idle or over-provisioned (re-checked before acting).
    #[default]
    LowUse,
    /// The unit's termination application, approved (its approval trail is the application's).
    Application { application: u64 },
    /// A test or temporary allocation ended without an approved extension or conversion
    /// (re-checked: still ended).
    Expired { ends_ms: u64 },
}

/// One line of a case's timeline (append-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub case_id: u64,
    pub ts_ms: u64,
    pub actor: String,
    pub role: Role,
    pub step: String,
    pub from: Option<State>,
    pub to: State,
    pub reason: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    #[error("案件 {case}：当前状态（{state}）下不能执行“{step}”")]
    Illegal {
        case: u64,
        state: &'static str,
        step: &'static str,
    },
    #[error("案件 {case}：角色 {role} 无权执行“{step}”（可执行的角色：{allowed}）")]
    Forbidden {
        case: u64,
        role: &'static str,
        step: &'static str,
        allowed: String,
    },
    #[error("案件 {case} 属于单位“{owner}”，{actor}（单位“{unit}”）无权办理")]
    OtherUnit {
        case: u64,
        owner: String,
        actor: String,
        unit: String,
    },
    #[error("案件 {case}：“{step}”须填写理由")]
    NoReason { case: u64, step: &'static str },
    #[error("案件 {case}：已停机的虚拟机保留至 {until}（保留期），尚不能释放")]
    HoldNotOver { case: u64, until: String },
    #[error("案件 {case}：执行时间不能早于当前时间")]
    PastSchedule { case: u64 },
    #[error("案件 {case}：使用单位提出异议后尚未记录协商一致；依据{clause}，须报备案并与使用单位协商一致后方可降配或回收，不能安排或执行")]
    NoAgreement { case: u64, clause: String },
    #[error("案件 {case}：使用单位尚未确认数据已迁移或备份（交接确认），不能释放虚拟机")]
    NoHandover { case: u64 },
    #[error("案件 {case}：本地区管理办法未规定限制服务")]
    NoLimitRung { case: u64 },
    #[error(
        "案件 {case}：使用单位未拒不整改（未提出异议，答复期也未过），依据{clause}尚不能限制服务"
    )]
    NotRefused { case: u64, clause: String },
}

impl CaseError {
    /// Stable machine code beside the zh-CN message (API errors).
    pub fn code(&self) -> &'static str {
        match self {
            CaseError::Illegal { .. } => "case_illegal_step",
            CaseError::Forbidden { .. } => "case_role_forbidden",
            CaseError::OtherUnit { .. } => "case_other_unit",
            CaseError::NoReason { .. } => "case_reason_required",
            CaseError::HoldNotOver { .. } => "case_hold_not_over",
            CaseError::PastSchedule { .. } => "case_schedule_in_past",
            CaseError::NoAgreement { .. } => "case_agreement_required",
            CaseError::NoHandover { .. } => "case_handover_required",
            CaseError::NoLimitRung { .. } => "case_no_limit_rung",
            CaseError::NotRefused { .. } => "case_not_refused",
        }
    }
}

/// What the step functions need besides the case.
#[derive(Debug)]
pub struct Rules<'a> {
    pub policy: &'a ReclaimPolicy,
    pub calendar: &'a Calendar,
}

impl Case {
    /// A new case from a detection.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        id: u64,
        uuid: &str,
        vm_name: &str,
        unit: &str,
        system: &str,
        kind: Kind,
        evidence: serde_json::Value,
        rules: &Rules<'_>,
        now_ms: u64,
    ) -> (Case, LogEntry) {
        let case = Case {
            id,
            uuid: uuid.to_ascii_lowercase(),
            vm_name: vm_name.into(),
            unit: unit.into(),
            system: system.into(),
            kind,
            evidence,
            state: State::Detected,
            opened_ms: now_ms,
            state_since_ms: now_ms,
            deadline_ms: deadline_for(State::Detected, rules, now_ms),
            note: None,
            scheduled_ms: None,
            host: None,
            snapshot: None,
            command: None,
            hold_until_ms: None,
            updated_ms: now_ms,
            disputed: false,
            total_deadline_ms: None,
            handover_ms: None,
            basis: Basis::LowUse,
            limited_ms: None,
        };
        let log = LogEntry {
            case_id: id,
            ts_ms: now_ms,
            actor: "system".into(),
            role: Role::System,
            step: "detect".into(),
            from: None,
            to: State::Detected,
            reason: String::new(),
            detail: serde_json::json!({"kind": case.kind, "evidence": case.evidence}),
        };
        (case, log)
    }

    /// A stop case opened by the unit's approved termination application: already approved
    /// (the application holds the approval trail), the unit's handover given by its declaration
    /// that the data is migrated or backed up. Ops schedules it as any other.
    #[allow(clippy::too_many_arguments)]
    pub fn open_by_application(
        id: u64,
        uuid: &str,
        vm_name: &str,
        unit: &str,
        system: &str,
        application: u64,
        declaration: &str,
        by: &Actor,
        rules: &Rules<'_>,
        now_ms: u64,
    ) -> (Case, LogEntry) {
        let evidence = serde_json::json!({"application": application, "declaration": declaration});
        let (mut case, _) = Case::open(
            id,
            uuid,
            vm_name,
            unit,
            system,
            Kind::Idle,
            evidence.clone(),
            rules,
            now_ms,
        );
        case.state = State::Approved;
        case.deadline_ms = deadline_for(State::Approved, rules, now_ms);
        case.handover_ms = Some(now_ms);
        case.basis = Basis::Application { application };
        let log = LogEntry {
            case_id: id,
            ts_ms: now_ms,
            actor: by.name.clone(),
            role: by.role,
            step: "terminate".into(),
            from: None,
            to: State::Approved,
            reason: format!("终止申请 #{application} 已批准"),
            detail: evidence,
        };
        (case, log)
    }

    /// The unit refuses to fix (004 第十六条 拒不整改): it disputed and has not agreed since, or
    /// it was notified and stayed silent past the reply deadline.
    pub fn refused(&self, now_ms: u64) -> bool {
        self.disputed
            || self.state == State::Disputed
            || (self.state == State::Notified && self.overdue(now_ms))
    }

    pub fn is_stop(&self) -> bool {
        matches!(self.kind, Kind::Idle)
    }

    /// Where `step` leads from the current state, if it is legal (role aside).
    pub fn target(&self, step: &Step) -> Option<State> {
        use State::*;
        Some(match (self.state, step) {
            (Detected, Step::Notify) => Notified,
            (Notified, Step::Agree) => Agreed,
            (Notified, Step::Dispute) => Disputed,
            (Disputed, Step::Settle) => Agreed,
            (Filed | Approved | Scheduled, Step::Settle) if self.disputed => self.state,
            (
                Agreed | Filed | Approved | Scheduled | Executing | ExecutionFailed | Executed
                | Verified,
                Step::Handover,
            ) if self.is_stop() && self.handover_ms.is_none() => self.state,
            // the refusal itself (a dispute, or silence past the reply deadline) is checked with
            // the clock by the service ([`Case::refused`])
            (Notified | Disputed | Filed | Approved | Scheduled, Step::Limit { .. })
                if self.limited_ms.is_none() =>
            {
                self.state
            }
            (_, Step::Unlimit { .. }) if self.limited_ms.is_some() => self.state,
            (Agreed | Disputed, Step::File) => Filed,
            (Filed, Step::Approve) => Approved,
            (Filed, Step::Reject) => Rejected,
            (Approved | Scheduled, Step::Schedule { .. }) => Scheduled,
            (
                Detected | Notified | Agreed | Disputed | Filed | Approved | Scheduled,
                Step::Withdraw,
            ) => Withdrawn,
            (Scheduled, Step::Execute { .. }) => Executing,
            (ExecutionFailed, Step::Retry { .. }) => Executing,
            (Executing, Step::Succeeded) => Executed,
            (Executing, Step::Failed) => ExecutionFailed,
            (Executed, Step::Verify) => Verified,
            // the host said done but the VM's own reports did not agree in time
            (Executed, Step::Failed) => ExecutionFailed,
            (Verified, Step::Close { command: None }) if !self.is_stop() => Closed,
            (Verified, Step::Close { command: Some(_) }) if self.is_stop() => Releasing,
            (Releasing, Step::Released) => Closed,
            (Releasing, Step::Failed) => Verified,
            (Executed | Verified | ExecutionFailed, Step::Rollback { .. }) => RollingBack,
            (RollingBack, Step::RolledBack) => RolledBack,
            (RollingBack, Step::Failed) => ExecutionFailed,
            _ => return None,
        })
    }

    /// Take a step: checks legality, role, unit and reason; returns the new case and its log
    /// entry. The case itself is unchanged on error.
    pub fn apply(
        &self,
        step: Step,
        actor: &Actor,
        reason: &str,
        detail: serde_json::Value,
        rules: &Rules<'_>,
        now_ms: u64,
    ) -> Result<(Case, LogEntry), CaseError> {
        let name = step.name();
        let Some(to) = self.target(&step) else {
            return Err(CaseError::Illegal {
                case: self.id,
                state: self.state.as_str(),
                step: name,
            });
        };
        if !step.roles().contains(&actor.role) {
            return Err(CaseError::Forbidden {
                case: self.id,
                role: actor.role.as_str(),
                step: name,
                allowed: step
                    .roles()
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if actor.role == Role::Unit && actor.unit.as_deref() != Some(self.unit.as_str()) {
            return Err(CaseError::OtherUnit {
                case: self.id,
                owner: self.unit.clone(),
                actor: actor.name.clone(),
                unit: actor.unit.clone().unwrap_or_default(),
            });
        }
        if step.needs_reason() && reason.trim().is_empty() {
            return Err(CaseError::NoReason {
                case: self.id,
                step: name,
            });
        }
        if matches!(step, Step::Schedule { .. } | Step::Execute { .. })
            && self.disputed
            && rules.policy.agreement_required
        {
            return Err(CaseError::NoAgreement {
                case: self.id,
                clause: rules.policy.agreement_clause.clone(),
            });
        }
        let mut c = self.clone();
        match &step {
            Step::Dispute => c.disputed = true,
            Step::Agree | Step::Settle => {
                c.disputed = false;
                if rules.policy.total_days > 0 && c.total_deadline_ms.is_none() {
                    c.total_deadline_ms =
                        Some(rules.calendar.deadline(now_ms, rules.policy.total_days));
                }
            }
            Step::Schedule { at_ms } => {
                if *at_ms + 60_000 < now_ms {
                    return Err(CaseError::PastSchedule { case: self.id });
                }
                c.scheduled_ms = Some(*at_ms);
            }
            Step::Execute { command } | Step::Retry { command } | Step::Rollback { command } => {
                c.command = Some(command.clone());
            }
            Step::Handover => c.handover_ms = Some(now_ms),
            Step::Limit { .. } => c.limited_ms = Some(now_ms),
            Step::Unlimit { .. } => c.limited_ms = None,
            Step::Close { command } => {
                if command.is_some() && c.handover_ms.is_none() {
                    return Err(CaseError::NoHandover { case: self.id });
                }
                if let Some(until) = c.hold_until_ms.filter(|u| *u > now_ms) {
                    return Err(CaseError::HoldNotOver {
                        case: self.id,
                        until: crate::register::changes::beijing_time(until),
                    });
                }
                c.command = command.clone();
            }
            Step::Verify if self.is_stop() => {
                c.hold_until_ms = Some(now_ms + rules.policy.hold_days as u64 * 86_400_000);
            }
            _ => {}
        }
        let from = c.state;
        if to != from {
            c.state = to;
            c.state_since_ms = now_ms;
            c.note = None;
            c.deadline_ms = match to {
                // the execution deadline runs from the approval through scheduling and retries
                Scheduled | Executing | ExecutionFailed => self.deadline_ms,
                _ => deadline_for(to, rules, now_ms),
            };
        }
        // review and reclaim within the profile's total, whatever each step allows
        if let (Some(t), Agreed | Filed | Approved | Scheduled | Executing | ExecutionFailed) =
            (c.total_deadline_ms, c.state)
        {
            c.deadline_ms = Some(c.deadline_ms.map_or(t, |d| d.min(t)));
        }
        c.updated_ms = now_ms;
        let log = LogEntry {
            case_id: c.id,
            ts_ms: now_ms,
            actor: actor.name.clone(),
            role: actor.role,
            step: name.into(),
            from: Some(from),
            to,
            reason: reason.trim().into(),
            detail: match (&step, detail) {
                (Step::Schedule { at_ms }, serde_json::Value::Null) => {
                    serde_json::json!({"at_ms": at_ms})
                }
                (_, d) => d,
            },
        };
        Ok((c, log))
    }

    /// Past its deadline now.
    pub fn overdue(&self, now_ms: u64) -> bool {
        !self.state.is_terminal() && self.deadline_ms.is_some_and(|d| now_ms > d)
    }
}

use State::*;

/// The deadline of a waiting state entered at `since_ms`.
pub fn deadline_for(state: State, rules: &Rules<'_>, since_ms: u64) -> Option<u64> {
    let p = rules.policy;
    let days = match state {
        Detected => p.notify_days,
        Notified => p.reply_days,
        Agreed | Disputed => p.file_days,
        Filed => p.approve_days,
        Approved => p.execute_days,
        _ => return None,
    };
    Some(rules.calendar.deadline(since_ms, days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Day;

    fn policy() -> ReclaimPolicy {
        ReclaimPolicy {
            notify_days: 2,
            reply_days: 5,
            file_days: 3,
            approve_days: 5,
            execute_days: 3,
            hold_days: 90,
            recheck_within: std::time::Duration::from_secs(86_400),
            ..ReclaimPolicy::default()
        }
    }

    fn actor(role: Role) -> Actor {
        Actor {
            name: format!("{}-zhang", role.as_str()),
            role,
            unit: (role == Role::Unit).then(|| "财政局".to_string()),
            source: None,
        }
    }

    fn case(kind: Kind, state: State) -> Case {
        let p = policy();
        let cal = Calendar::builtin();
        let rules = Rules {
            policy: &p,
            calendar: &cal,
        };
        let (mut c, _) = Case::open(
            7,
            "4C4C4544-0001",
            "cz-app-01",
            "财政局",
            "预算系统",
            kind,
            serde_json::json!({"cpu_p95": 1.2}),
            &rules,
            T0,
        );
        c.state = state;
        // the unit's handover is tested on its own
        c.handover_ms = Some(T0);
        c
    }

    const T0: u64 = 1_790_000_000_000;

    /// Every (state, step, role) that must succeed, with where it leads.
    fn legal() -> Vec<(Kind, State, Step, Role, State)> {
        let cmd = || "00ff".to_string();
        let idle = Kind::Idle;
        let over = Kind::OverProvisioned {
            recommended: VmSize {
                vcpus: 2,
                mem_kib: 4 << 20,
            },
        };
        let mut v = vec![
            (idle.clone(), Detected, Step::Notify, Role::Ops, Notified),
            (idle.clone(), Detected, Step::Notify, Role::System, Notified),
            (idle.clone(), Notified, Step::Agree, Role::Unit, Agreed),
            (idle.clone(), Notified, Step::Dispute, Role::Unit, Disputed),
            (idle.clone(), Disputed, Step::Settle, Role::Unit, Agreed),
            (idle.clone(), Agreed, Step::File, Role::Ops, Filed),
            (idle.clone(), Disputed, Step::File, Role::Ops, Filed),
            (
                idle.clone(),
                Filed,
                Step::Approve,
                Role::Authority,
                Approved,
            ),
            (idle.clone(), Filed, Step::Reject, Role::Authority, Rejected),
            (
                idle.clone(),
                Approved,
                Step::Schedule { at_ms: T0 },
                Role::Ops,
                Scheduled,
            ),
            (
                idle.clone(),
                Scheduled,
                Step::Schedule { at_ms: T0 },
                Role::Ops,
                Scheduled,
            ),
            (
                idle.clone(),
                Scheduled,
                Step::Execute { command: cmd() },
                Role::System,
                Executing,
            ),
            (
                idle.clone(),
                ExecutionFailed,
                Step::Retry { command: cmd() },
                Role::Ops,
                Executing,
            ),
            (
                idle.clone(),
                Executing,
                Step::Succeeded,
                Role::System,
                Executed,
            ),
            (
                idle.clone(),
                Executing,
                Step::Failed,
                Role::System,
                ExecutionFailed,
            ),
            (idle.clone(), Executed, Step::Verify, Role::System, Verified),
            (
                over.clone(),
                Executed,
                Step::Failed,
                Role::System,
                ExecutionFailed,
            ),
            (
                idle.clone(),
                Verified,
                Step::Close {
                    command: Some(cmd()),
                },
                Role::Ops,
                Releasing,
            ),
            (
                over.clone(),
                Verified,
                Step::Close { command: None },
                Role::Ops,
                Closed,
            ),
            (
                idle.clone(),
                Releasing,
                Step::Released,
                Role::System,
                Closed,
            ),
            (
                idle.clone(),
                Releasing,
                Step::Failed,
                Role::System,
                Verified,
            ),
            (
                idle.clone(),
                RollingBack,
                Step::RolledBack,
                Role::System,
                RolledBack,
            ),
            (
                idle.clone(),
                RollingBack,
                Step::Failed,
                Role::System,
                ExecutionFailed,
            ),
        ];
        for s in [
            Detected, Notified, Agreed, Disputed, Filed, Approved, Scheduled,
        ] {
            for r in [Role::Ops, Role::Authority, Role::System] {
                v.push((idle.clone(), s, Step::Withdraw, r, Withdrawn));
            }
        }
        for s in [Executed, Verified, ExecutionFailed] {
            for r in [Role::Ops, Role::Authority] {
                v.push((
                    over.clone(),
                    s,
                    Step::Rollback { command: cmd() },
                    r,
                    RollingBack,
                ));
            }
        }
        v
    }

    fn all_steps() -> Vec<Step> {
        let c = || "00ff".to_string();
        vec![
            Step::Notify,
            Step::Agree,
            Step::Dispute,
            Step::Settle,
            Step::Handover,
            Step::File,
            Step::Approve,
            Step::Reject,
            Step::Schedule { at_ms: T0 },
            Step::Withdraw,
            Step::Execute { command: c() },
            Step::Succeeded,
            Step::Failed,
            Step::Retry { command: c() },
            Step::Verify,
            Step::Close { command: None },
            Step::Close { command: Some(c()) },
            Step::Released,
            Step::Rollback { command: c() },
            Step::RolledBack,
        ]
    }

    #[test]
    fn every_legal_transition_succeeds_and_is_logged() {
        let p = policy();
        let cal = Calendar::builtin();
        let rules = Rules {
            policy: &p,
            calendar: &cal,
        };
        for (kind, from, step, role, to) in legal() {
            let c = case(kind, from);
            let (n, log) = c
                .apply(
                    step.clone(),
                    &actor(role),
                    "因为",
                    serde_json::Value::Null,
                    &rules,
                    T0 + 1000,
                )
                .unwrap_or_else(|e| panic!("{from:?} {step:?} by {role:?}: {e}"));
            assert_eq!(n.state, to, "{from:?} --{step:?}--> ");
            assert_eq!((log.from, log.to, log.role), (Some(from), to, role));
            assert_eq!(log.reason, "因为");
            assert_eq!(log.actor, actor(role).name);
            assert_eq!(log.step, step.name());
        }
    }

    #[test]
    fn every_other_combination_is_refused_naming_state_and_step() {
        let p = policy();
        let cal = Calendar::builtin();
        let rules = Rules {
            policy: &p,
            calendar: &cal,
        };
        let legal = legal();
        let over = Kind::OverProvisioned {
            recommended: VmSize {
                vcpus: 2,
                mem_kib: 1 << 20,
            },
        };
        let mut refused = 0;
        for kind in [Kind::Idle, over] {
            for state in ALL_STATES {
                for step in all_steps() {
                    for role in [Role::Ops, Role::Authority, Role::Unit, Role::System] {
                        // only closing depends on the kind (stop: release; downsize: close)
                        let is_legal = legal.iter().any(|(k, s, st, r, _)| {
                            *s == state
                                && *st == step
                                && *r == role
                                && (std::mem::discriminant(k) == std::mem::discriminant(&kind)
                                    || !matches!(step, Step::Close { .. }))
                        });
                        let c = case(kind.clone(), state);
                        let r = c.apply(
                            step.clone(),
                            &actor(role),
                            "r",
                            serde_json::Value::Null,
                            &rules,
                            T0,
                        );
                        if is_legal {
                            assert!(r.is_ok(), "{kind:?} {state:?} {step:?} {role:?}: {r:?}");
                            continue;
                        }
                        let e = r.expect_err(&format!(
                            "{kind:?} {state:?} {step:?} {role:?} must be refused"
                        ));
                        refused += 1;
                        let text = e.to_string();
                        match e {
                            CaseError::Illegal {
                                state: s, step: st, ..
                            } => {
                                assert_eq!((s, st), (state.as_str(), step.name()));
                                assert!(
                                    text.contains(state.as_str()) && text.contains(step.name()),
                                    "{text}"
                                );
                            }
                            CaseError::Forbidden { role: r, .. } => {
                                assert_eq!(r, role.as_str());
                                assert!(text.contains(role.as_str()), "{text}");
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
            }
        }
        assert!(refused > 1000, "{refused}");
        // terminal states take no step at all
        for s in [Closed, Withdrawn, Rejected, RolledBack] {
            assert!(all_steps()
                .iter()
                .all(|st| case(Kind::Idle, s).target(st).is_none()));
        }
    }

    #[test]
    fn a_unit_acts_only_on_its_own_cases_and_reasons_are_required() {
        let p = policy();
        let cal = Calendar::builtin();
        let rules = Rules {
            policy: &p,
            calendar: &cal,
        };
        let c = case(Kind::Idle, Notified);
        let other = Actor {
            name: "li".into(),
            role: Role::Unit,
            unit: Some("教育局".into()),
            source: None,
        };
        let e = c
            .apply(Step::Agree, &other, "", serde_json::Value::Null, &rules, T0)
            .unwrap_err();
        assert!(matches!(e, CaseError::OtherUnit { .. }));
        assert!(
            e.to_string().contains("教育局") && e.to_string().contains("财政局"),
            "{e}"
        );
        let e = c
            .apply(
                Step::Dispute,
                &actor(Role::Unit),
                "  ",
                serde_json::Value::Null,
                &rules,
                T0,
            )
            .unwrap_err();
        assert_eq!(
            e,
            CaseError::NoReason {
                case: 7,
                step: "dispute"
            }
        );
        // agreeing needs no reason
        c.apply(
            Step::Agree,
            &actor(Role::Unit),
            "",
            serde_json::Value::Null,
            &rules,
            T0,
        )
        .unwrap();
    }

    #[test]
    fn deadlines_follow_the_profile_in_working_days() {
        let p = policy();
        let cal = Calendar::builtin();
        let rules = Rules {
            policy: &p,
            calendar: &cal,
        };
        let day = |s: &str| Day::parse(s).unwrap();
        // filed on Monday 28 Sep 2026; approved Tuesday 29 Sep 10:00 Beijing
        let approved_at = cal.start_of(day("2026-09-29")) + 10 * 3_600_000;
        let c = case(Kind::Idle, Filed);
        let (c, _) = c
            .apply(
                Step::Approve,
                &actor(Role::Authority),
                "",
                serde_json::Value::Null,
                &rules,
                approved_at,
            )
            .unwrap();
        // 3 working days: 30 Sep, 8 Oct, 9 Oct
        assert_eq!(c.deadline_ms, Some(cal.start_of(day("2026-10-10"))));
        // scheduling keeps the execution deadline
        let (s, _) = c
            .apply(
                Step::Schedule {
                    at_ms: approved_at + 3_600_000,
                },
                &actor(Role::Ops),
                "",
                serde_json::Value::Null,
                &rules,
                approved_at + 1,
            )
            .unwrap();
        assert_eq!(s.deadline_ms, c.deadline_ms);
        assert!(!s.overdue(cal.start_of(day("2026-10-09"))));
        assert!(s.overdue(cal.start_of(day("2026-10-10")) + 1));
        // a stop case verified is held 90 days before it may be closed (released)
        let v = case(Kind::Idle, Executed);
        let (v, _) = v
            .apply(
                Step::Verify,
                &Actor::system(),
                "",
                serde_json::Value::Null,
                &rules,
                T0,
            )
            .unwrap();
        assert_eq!(v.hold_until_ms, Some(T0 + 90 * 86_400_000));
        let e = v
            .apply(
                Step::Close {
                    command: Some("00ff".into()),
                },
                &actor(Role::Ops),
                "",
                serde_json::Value::Null,
                &rules,
                T0 + 86_400_000,
            )
            .unwrap_err();
        assert!(matches!(e, CaseError::HoldNotOver { .. }), "{e}");
        v.apply(
            Step::Close {
                command: Some("00ff".into()),
            },
            &actor(Role::Ops),
            "",
            serde_json::Value::Null,
            &rules,
            T0 + 90 * 86_400_000,
        )
        .unwrap();
    }

    fn profile(name: &str) -> ReclaimPolicy {
        crate::policy::Profile::load(name).unwrap().reclaim
    }

    /// Take `steps` in order from `c` at `t`, each by its natural role.
    fn walk(c: Case, steps: &[Step], rules: &Rules<'_>, t: u64) -> Result<Case, CaseError> {
        let mut c = c;
        for st in steps {
            let role = st.roles()[0];
            c = c
                .apply(
                    st.clone(),
                    &actor(role),
                    "理由",
                    serde_json::Value::Null,
                    rules,
                    t,
                )?
                .0;
        }
        Ok(c)
    }

    #[test]
    fn under_002_a_disputed_case_is_executed_only_after_the_recorded_agreement() {
        let cal = Calendar::builtin();
        let p002 = profile("002");
        assert!(p002.agreement_required && profile("000").agreement_required);
        let rules = Rules {
            policy: &p002,
            calendar: &cal,
        };
        let at = Step::Schedule { at_ms: T0 + 1000 };
        let filed = walk(
            case(Kind::Idle, Notified),
            &[Step::Dispute, Step::File, Step::Approve],
            &rules,
            T0,
        )
        .unwrap();
        assert!(filed.disputed);
        let e = walk(filed.clone(), std::slice::from_ref(&at), &rules, T0).unwrap_err();
        assert_eq!(e.code(), "case_agreement_required");
        assert!(
            e.to_string().contains("002 第十一条") && e.to_string().contains("协商一致"),
            "{e}"
        );
        // nor does the system execute a case scheduled before the profile asked for it
        let mut scheduled = filed.clone();
        scheduled.state = Scheduled;
        let e = walk(
            scheduled,
            &[Step::Execute {
                command: "00ff".into(),
            }],
            &rules,
            T0,
        )
        .unwrap_err();
        assert!(matches!(e, CaseError::NoAgreement { .. }), "{e}");
        // only the unit records its agreement, and only on its own case
        let e = filed
            .apply(
                Step::Settle,
                &actor(Role::Ops),
                "",
                serde_json::Value::Null,
                &rules,
                T0,
            )
            .unwrap_err();
        assert!(matches!(e, CaseError::Forbidden { .. }), "{e}");
        let (settled, log) = filed
            .apply(
                Step::Settle,
                &actor(Role::Unit),
                "经协商同意回收",
                serde_json::Value::Null,
                &rules,
                T0 + 10,
            )
            .unwrap();
        assert_eq!((settled.state, settled.disputed), (Approved, false));
        assert_eq!((log.step.as_str(), log.role), ("settle", Role::Unit));
        assert_eq!(
            settled.deadline_ms, filed.deadline_ms,
            "still the same step"
        );
        let done = walk(
            settled,
            &[
                at.clone(),
                Step::Execute {
                    command: "00ff".into(),
                },
            ],
            &rules,
            T0 + 20,
        )
        .unwrap();
        assert_eq!(done.state, Executing);
        // settling before filing: the case is agreed
        let d = walk(
            case(Kind::Idle, Notified),
            &[Step::Dispute, Step::Settle],
            &rules,
            T0,
        )
        .unwrap();
        assert_eq!((d.state, d.disputed), (Agreed, false));
        // a case agreed from the start needs no second agreement: settle is not offered
        let a = walk(
            case(Kind::Idle, Notified),
            &[Step::Agree, Step::File],
            &rules,
            T0,
        )
        .unwrap();
        assert!(a.target(&Step::Settle).is_none());
        // under 003 a disputed case goes on as before: the authority decides
        let p003 = profile("003");
        assert!(!p003.agreement_required);
        let r003 = Rules {
            policy: &p003,
            calendar: &cal,
        };
        let c = walk(
            case(Kind::Idle, Notified),
            &[
                Step::Dispute,
                Step::File,
                Step::Approve,
                at,
                Step::Execute {
                    command: "00ff".into(),
                },
            ],
            &r003,
            T0,
        )
        .unwrap();
        assert_eq!((c.state, c.disputed), (Executing, true));
    }

    #[test]
    fn under_004_review_and_reclaim_take_5_working_days_in_total_from_the_agreement() {
        let cal = Calendar::builtin();
        let day = |s: &str| Day::parse(s).unwrap();
        let at = |d: &str, h: u64| cal.start_of(day(d)) + h * 3_600_000;
        let p004 = profile("004");
        assert_eq!((p004.total_days, p004.clause.as_str()), (5, "004 第十七条"));
        let rules = Rules {
            policy: &p004,
            calendar: &cal,
        };
        let step = |c: &Case, st: Step, t: u64| -> Case {
            let role = st.roles()[0];
            c.apply(st, &actor(role), "", serde_json::Value::Null, &rules, t)
                .unwrap()
                .0
        };
        // the unit agrees (asks to give it back) Tuesday 29 Sep 2026: 5 working days are
        // 30 Sep, 8, 9, 10 (调休), 12 Oct → due at the end of 12 Oct
        let end = cal.start_of(day("2026-10-13"));
        let agreed = step(
            &case(Kind::Idle, Notified),
            Step::Agree,
            at("2026-09-29", 10),
        );
        assert_eq!(agreed.total_deadline_ms, Some(end));
        assert_eq!(
            agreed.deadline_ms,
            Some(cal.start_of(day("2026-10-10"))),
            "filing: 3 wd"
        );
        // filed 30 Sep: approval alone would have until the end of 13 Oct; the total ends first
        let filed = step(&agreed, Step::File, at("2026-09-30", 9));
        assert_eq!(filed.deadline_ms, Some(end));
        // approved 9 Oct: execution alone would have 5 more working days (to 15 Oct)
        let approved = step(&filed, Step::Approve, at("2026-10-09", 16));
        assert_eq!(approved.deadline_ms, Some(end));
        let scheduled = step(
            &approved,
            Step::Schedule {
                at_ms: at("2026-10-12", 9),
            },
            at("2026-10-09", 17),
        );
        assert_eq!(scheduled.deadline_ms, Some(end));
        assert!(!scheduled.overdue(end - 1) && scheduled.overdue(end + 1));
        // under 003 the steps count on their own: approved 9 Oct + 3 wd = end of 13 Oct
        let p003 = profile("003");
        let r003 = Rules {
            policy: &p003,
            calendar: &cal,
        };
        let c = walk(
            case(Kind::Idle, Notified),
            &[Step::Agree, Step::File],
            &r003,
            at("2026-09-29", 10),
        )
        .unwrap();
        assert_eq!(c.total_deadline_ms, None);
        let a = c
            .apply(
                Step::Approve,
                &actor(Role::Authority),
                "",
                serde_json::Value::Null,
                &r003,
                at("2026-10-09", 16),
            )
            .unwrap()
            .0;
        assert_eq!(a.deadline_ms, Some(cal.start_of(day("2026-10-14"))));
    }

    #[test]
    fn a_stop_is_released_only_after_the_units_handover() {
        let p = policy();
        let cal = Calendar::builtin();
        let rules = Rules {
            policy: &p,
            calendar: &cal,
        };
        let mut v = case(Kind::Idle, Verified);
        v.handover_ms = None;
        let release = Step::Close {
            command: Some("00ff".into()),
        };
        let after_hold = T0 + 100 * 86_400_000;
        let e = v
            .apply(
                release.clone(),
                &actor(Role::Ops),
                "",
                serde_json::Value::Null,
                &rules,
                after_hold,
            )
            .unwrap_err();
        assert_eq!(e.code(), "case_handover_required");
        assert!(e.to_string().contains("数据已迁移或备份"), "{e}");
        // only the unit confirms, once, and the case stays where it is
        let e = v
            .apply(
                Step::Handover,
                &actor(Role::Ops),
                "",
                serde_json::Value::Null,
                &rules,
                T0,
            )
            .unwrap_err();
        assert!(matches!(e, CaseError::Forbidden { .. }), "{e}");
        let (h, log) = v
            .apply(
                Step::Handover,
                &actor(Role::Unit),
                "数据已迁移至新平台",
                serde_json::Value::Null,
                &rules,
                T0 + 5,
            )
            .unwrap();
        assert_eq!((h.state, h.handover_ms), (Verified, Some(T0 + 5)));
        assert_eq!(
            (log.step.as_str(), log.reason.as_str()),
            ("handover", "数据已迁移至新平台")
        );
        assert!(h.target(&Step::Handover).is_none(), "confirmed once");
        let (r, _) = h
            .apply(
                release,
                &actor(Role::Ops),
                "",
                serde_json::Value::Null,
                &rules,
                after_hold,
            )
            .unwrap();
        assert_eq!(r.state, Releasing);
        // it may come early (with the agreement), never for a downsize, which destroys nothing
        let mut agreed = case(Kind::Idle, Agreed);
        agreed.handover_ms = None;
        assert_eq!(agreed.target(&Step::Handover), Some(Agreed));
        let mut down = case(
            Kind::OverProvisioned {
                recommended: VmSize {
                    vcpus: 1,
                    mem_kib: 1 << 20,
                },
            },
            Verified,
        );
        down.handover_ms = None;
        assert!(down.target(&Step::Handover).is_none());
    }
}
