//! An application (申请) for resources: its kinds, states, the steps between them, who takes
//! each step under the active profile, and the deadline of each waiting state in working days.
//!
//! ```text
//!  new / test / temporary:
//!  submitted ─accept─▶ accepted ─review─▶ reviewed ─approve─▶ approved ─provision─▶ testing ─pass_test─▶ trial ─go_live─┐
//!     │  └─refuse─▶ returned ─resubmit─┘      └──────reject──────┴─▶ rejected          └─(no test)──────────────────────┤
//!     │                                                                                                                 ▼
//!     └─withdraw─▶ withdrawn (before approval)                                       in_service ◀─confirm (unit)─ opened
//!
//!  change / termination / extension:
//!  submitted ─approve─▶ approved ─carry_out─▶ done          (submitted ─reject─▶ rejected)
//! ```
//!
//! The step functions are pure: [`Application::apply`] returns the new application and its
//! timeline entry, the service persists both (with the register change the step makes and the
//! audit entry) in one transaction.

use crate::identity::{Actor, Role};
use crate::policy::lifecycle::{LifecyclePolicy, Period, StepRule};
use crate::reclaim::calendar::Calendar;
use crate::register::VmAllocation;
use serde::{Deserialize, Serialize};

/// What is applied for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 资源申请: a new system's resources (test, then trial where the profile has one, then formal).
    New,
    /// 资源变更: new sizes for registered VMs.
    Change,
    /// 资源退出 / 终止: the unit no longer uses the VMs.
    Termination,
    /// 测试资源: for a system in development, with an end date (004 第十九条).
    Test,
    /// 临时资源: urgent, with an end date (004 第二十条).
    Temporary,
    /// 延期: a test or temporary allocation's end moved.
    Extension,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::New,
        Kind::Change,
        Kind::Termination,
        Kind::Test,
        Kind::Temporary,
        Kind::Extension,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::Change => "change",
            Kind::Termination => "termination",
            Kind::Test => "test",
            Kind::Temporary => "temporary",
            Kind::Extension => "extension",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn zh(self) -> &'static str {
        match self {
            Kind::New => "资源申请",
            Kind::Change => "资源变更",
            Kind::Termination => "资源终止",
            Kind::Test => "测试资源",
            Kind::Temporary => "临时资源",
            Kind::Extension => "延期申请",
        }
    }

    /// Goes through 受理 → 审核 → 审批 (new resources); the others are reviewed once.
    pub fn is_grant(self) -> bool {
        matches!(self, Kind::New | Kind::Test | Kind::Temporary)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Submitted,
    /// 不予受理: back with the unit, who fixes and resubmits (or withdraws).
    Returned,
    Accepted,
    Reviewed,
    Approved,
    /// Approved, but the pool cannot meet the need: the shortfall is being resolved (002 第十条:
    /// within 10 working days).
    Shortfall,
    /// The test environment is provided; the test period runs.
    Testing,
    /// 试运行 (003 第十四条).
    Trial,
    /// Opened; the unit confirms.
    Opened,
    InService,
    /// A change, termination or extension carried out.
    Done,
    Rejected,
    Withdrawn,
}

pub const ALL_STATES: [State; 13] = [
    State::Submitted,
    State::Returned,
    State::Accepted,
    State::Reviewed,
    State::Approved,
    State::Shortfall,
    State::Testing,
    State::Trial,
    State::Opened,
    State::InService,
    State::Done,
    State::Rejected,
    State::Withdrawn,
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "submitted",
            State::Returned => "returned",
            State::Accepted => "accepted",
            State::Reviewed => "reviewed",
            State::Approved => "approved",
            State::Shortfall => "shortfall",
            State::Testing => "testing",
            State::Trial => "trial",
            State::Opened => "opened",
            State::InService => "in_service",
            State::Done => "done",
            State::Rejected => "rejected",
            State::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        ALL_STATES.into_iter().find(|x| x.as_str() == s)
    }

    pub fn zh(self) -> &'static str {
        match self {
            State::Submitted => "待受理",
            State::Returned => "不予受理（待整改）",
            State::Accepted => "待审核",
            State::Reviewed => "待审批",
            State::Approved => "待开通",
            State::Shortfall => "资源不足，调整中",
            State::Testing => "测试中",
            State::Trial => "试运行",
            State::Opened => "待使用单位确认",
            State::InService => "正式运行",
            State::Done => "已办结",
            State::Rejected => "未通过",
            State::Withdrawn => "已撤回",
        }
    }

    /// No step leaves it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::InService | State::Done | State::Rejected | State::Withdrawn
        )
    }
}

/// One step of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Accept,
    /// 不予受理, with the reason.
    Refuse,
    Resubmit,
    Review,
    Approve,
    Reject,
    Provision,
    /// The pool cannot meet the approved need now (002 第十条): tracked until provided.
    Shortfall,
    PassTest,
    GoLive,
    Confirm,
    CarryOut,
    Withdraw,
}

impl Step {
    pub const ALL: [Step; 13] = [
        Step::Accept,
        Step::Refuse,
        Step::Resubmit,
        Step::Review,
        Step::Approve,
        Step::Reject,
        Step::Provision,
        Step::Shortfall,
        Step::PassTest,
        Step::GoLive,
        Step::Confirm,
        Step::CarryOut,
        Step::Withdraw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Accept => "accept",
            Step::Refuse => "refuse",
            Step::Resubmit => "resubmit",
            Step::Review => "review",
            Step::Approve => "approve",
            Step::Reject => "reject",
            Step::Provision => "provision",
            Step::Shortfall => "shortfall",
            Step::PassTest => "pass_test",
            Step::GoLive => "go_live",
            Step::Confirm => "confirm",
            Step::CarryOut => "carry_out",
            Step::Withdraw => "withdraw",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn zh(self) -> &'static str {
        match self {
            Step::Accept => "受理",
            Step::Refuse => "不予受理",
            Step::Resubmit => "整改后重新提交",
            Step::Review => "审核通过",
            Step::Approve => "审批通过",
            Step::Reject => "不予通过",
            Step::Provision => "开通（提供资源）",
            Step::Shortfall => "资源不足，登记调整",
            Step::PassTest => "测试通过",
            Step::GoLive => "转为正式运行",
            Step::Confirm => "确认开通",
            Step::CarryOut => "办理完成",
            Step::Withdraw => "撤回申请",
        }
    }

    /// A reason is required (refusal, rejection, withdrawal).
    pub fn needs_reason(self) -> bool {
        matches!(
            self,
            Step::Refuse | Step::Reject | Step::Withdraw | Step::Shortfall
        )
    }
}

/// New sizes for one registered VM (a change application). Sizes not given stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeChange {
    pub uuid: String,
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub mem_gb: Option<u32>,
    #[serde(default)]
    pub sys_disk_gb: Option<u32>,
    #[serde(default)]
    pub data_disk_gb: Option<u32>,
    /// A new use (用途 / server type) asked for: refused where the profile forbids it.
    #[serde(default)]
    pub server_type: Option<crate::register::ServerType>,
}

/// A file attached to an application (stored apart; this is its description).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: u64,
    /// 批复文件, 上云方案, 测算方案, 申请表…
    pub kind: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub by: String,
    pub ts_ms: u64,
}

/// What the application asks for, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Request {
    /// New, test and temporary: the form's VM rows (to be registered on approval).
    Grant {
        vms: Vec<VmAllocation>,
        /// Test / temporary: the end asked for (Unix ms); the profile's maximum bounds it.
        #[serde(default)]
        ends_ms: Option<u64>,
    },
    Change {
        changes: Vec<SizeChange>,
    },
    /// The unit declares its data migrated or backed up (the clause requires it first).
    Termination {
        uuids: Vec<String>,
        declaration: String,
    },
    Extension {
        uuids: Vec<String>,
        ends_ms: u64,
    },
}

/// An application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    pub id: u64,
    pub kind: Kind,
    pub unit: String,
    /// 系统名称 (for a grant: the form's; otherwise the VMs').
    pub system: String,
    /// 需求背景描述 / why.
    pub purpose: String,
    pub request: Request,
    pub state: State,
    pub submitted_ms: u64,
    pub state_since_ms: u64,
    /// When the current waiting state must be left (working days per the profile), if the
    /// regulation sets a deadline for it.
    pub deadline_ms: Option<u64>,
    /// The clause behind the current deadline (of the active profile).
    pub deadline_clause: Option<String>,
    /// The test period's end, the trial's earliest end.
    pub period_until_ms: Option<u64>,
    /// Once opened: the service period's end (001 第十条（五）: one year), or the test /
    /// temporary allocation's end.
    pub ends_ms: Option<u64>,
    pub attachments: Vec<Attachment>,
    pub updated_ms: u64,
}

/// One line of an application's timeline (append-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub application: u64,
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
pub enum ApplicationError {
    #[error("申请 {id}：当前状态（{state}）下不能执行“{step}”")]
    Illegal {
        id: u64,
        state: &'static str,
        step: &'static str,
    },
    #[error("申请 {id}：“{step}”由{allowed}办理（{clause}），{role}无权办理")]
    Forbidden {
        id: u64,
        step: &'static str,
        role: &'static str,
        allowed: &'static str,
        clause: String,
    },
    #[error("申请 {id} 属于单位“{owner}”，不能由其他单位办理")]
    OtherUnit { id: u64, owner: String },
    #[error("申请 {id}：“{step}”须填写理由")]
    NoReason { id: u64, step: &'static str },
    #[error("申请 {id}：试运行不少于 {min}（{clause}），{until} 前不能转为正式运行")]
    TrialNotOver {
        id: u64,
        min: String,
        clause: String,
        until: String,
    },
}

impl ApplicationError {
    /// Stable machine code beside the zh-CN message.
    pub fn code(&self) -> &'static str {
        match self {
            ApplicationError::Illegal { .. } => "application_illegal_step",
            ApplicationError::Forbidden { .. } => "application_role_forbidden",
            ApplicationError::OtherUnit { .. } => "application_other_unit",
            ApplicationError::NoReason { .. } => "application_reason_required",
            ApplicationError::TrialNotOver { .. } => "application_trial_not_over",
        }
    }
}

/// What the step functions need besides the application.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub policy: &'a LifecyclePolicy,
    pub calendar: &'a Calendar,
    /// The clause that holds a unit's requests for more while it has open low-use cases (the
    /// profile's `[clauses] low_use_hold`: 003 第三十条, 004 第十六条…).
    pub hold: &'a str,
}

impl<'a> Rules<'a> {
    /// The rules of `profile`, deadlines counted on `calendar`.
    pub fn of(profile: &'a crate::policy::Profile, calendar: &'a Calendar) -> Rules<'a> {
        Rules {
            policy: &profile.lifecycle,
            calendar,
            hold: &profile.clauses.low_use_hold,
        }
    }
}

impl Rules<'_> {
    /// The step rule of a waiting state for this kind (who acts, working days, clause).
    pub fn waiting(&self, kind: Kind, state: State) -> Option<&StepRule> {
        let p = self.policy;
        Some(match (kind.is_grant(), kind, state) {
            (true, _, State::Submitted) => &p.accept,
            (true, _, State::Accepted) => &p.review,
            (true, _, State::Reviewed) => &p.approve,
            (true, _, State::Approved) => &p.provision,
            (false, Kind::Termination, State::Submitted) => &p.terminate_review,
            (false, Kind::Termination, State::Approved) => &p.terminate_do,
            (false, _, State::Submitted) => &p.change_review,
            (false, _, State::Approved) => &p.change_do,
            _ => return None,
        })
    }
}

fn role_zh(r: Role) -> &'static str {
    match r {
        Role::Ops => "运维单位（运行管理机构）",
        Role::Authority => "主管部门",
        Role::Unit => "使用单位",
        Role::Admin => "系统管理员",
        Role::Auditor => "审计人员",
        Role::System => "系统",
    }
}

/// The Beijing date of a Unix ms time, `2026-10-09`.
fn date(ms: u64) -> String {
    crate::time::beijing_date(ms)
}

impl Application {
    /// A new application (state `submitted`, deadline per the profile).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        id: u64,
        unit: &str,
        system: &str,
        purpose: &str,
        request: Request,
        by: &Actor,
        rules: &Rules<'_>,
        now_ms: u64,
    ) -> (Application, LogEntry) {
        let kind = match &request {
            Request::Grant { .. } => Kind::New,
            Request::Change { .. } => Kind::Change,
            Request::Termination { .. } => Kind::Termination,
            Request::Extension { .. } => Kind::Extension,
        };
        Self::submit_kind(id, kind, unit, system, purpose, request, by, rules, now_ms)
    }

    /// As [`Application::submit`], for a grant of a given kind (new, test, temporary).
    #[allow(clippy::too_many_arguments)]
    pub fn submit_kind(
        id: u64,
        kind: Kind,
        unit: &str,
        system: &str,
        purpose: &str,
        request: Request,
        by: &Actor,
        rules: &Rules<'_>,
        now_ms: u64,
    ) -> (Application, LogEntry) {
        let mut a = Application {
            id,
            kind,
            unit: unit.into(),
            system: system.into(),
            purpose: purpose.trim().into(),
            request,
            state: State::Submitted,
            submitted_ms: now_ms,
            state_since_ms: now_ms,
            deadline_ms: None,
            deadline_clause: None,
            period_until_ms: None,
            ends_ms: None,
            attachments: Vec::new(),
            updated_ms: now_ms,
        };
        a.set_deadline(rules, now_ms);
        let log = LogEntry {
            application: id,
            ts_ms: now_ms,
            actor: by.name.clone(),
            role: by.role,
            step: "submit".into(),
            from: None,
            to: State::Submitted,
            reason: String::new(),
            detail: serde_json::json!({"kind": kind, "request": a.request}),
        };
        (a, log)
    }

    fn set_deadline(&mut self, rules: &Rules<'_>, now_ms: u64) {
        let rule = rules.waiting(self.kind, self.state);
        self.deadline_ms = rule.filter(|r| r.days > 0).map(|r| {
            let from = if r.from_submission {
                self.submitted_ms
            } else {
                now_ms
            };
            rules.calendar.deadline(from, r.days)
        });
        self.deadline_clause = rule.filter(|r| r.days > 0).map(|r| r.clause.clone());
        if self.state == State::Shortfall {
            let p = rules.policy;
            self.deadline_ms = Some(rules.calendar.deadline(now_ms, p.shortfall_days));
            self.deadline_clause = Some(p.clauses.shortfall.clone());
        }
        if self.state == State::Testing {
            self.deadline_ms = self.period_until_ms;
            self.deadline_clause = Some(rules.policy.clauses.test.clone());
        }
    }

    /// Where `step` leads from the current state, if it is legal (role aside).
    pub fn target(&self, step: Step, rules: &Rules<'_>) -> Option<State> {
        use State::*;
        let grant = self.kind.is_grant();
        Some(match (self.state, step) {
            (Submitted, Step::Accept) if grant => Accepted,
            (Submitted, Step::Refuse) if grant => Returned,
            (Returned, Step::Resubmit) => Submitted,
            (Accepted, Step::Review) => Reviewed,
            (Reviewed, Step::Approve) => Approved,
            (Submitted, Step::Approve) if !grant => Approved,
            (Accepted | Reviewed, Step::Reject) => Rejected,
            (Submitted, Step::Reject) if !grant => Rejected,
            (Approved, Step::Shortfall) if grant && rules.policy.shortfall_days > 0 => Shortfall,
            (Approved | Shortfall, Step::Provision) if grant => {
                if self.kind == Kind::New && rules.policy.test.is_some() {
                    Testing
                } else {
                    Opened
                }
            }
            (Testing, Step::PassTest) => {
                if rules.policy.trial_min.is_some() {
                    Trial
                } else {
                    Opened
                }
            }
            (Trial, Step::GoLive) => Opened,
            (Opened, Step::Confirm) => InService,
            (Approved, Step::CarryOut) if !grant => Done,
            (Submitted | Returned | Accepted | Reviewed, Step::Withdraw) => Withdrawn,
            _ => return None,
        })
    }

    /// Who takes `step` now, and under which clause.
    pub fn who(&self, step: Step, rules: &Rules<'_>) -> (Role, String) {
        let p = rules.policy;
        match step {
            Step::Resubmit | Step::Confirm | Step::Withdraw => (
                Role::Unit,
                rules
                    .waiting(self.kind, State::Submitted)
                    .map(|r| r.clause.clone())
                    .unwrap_or_default(),
            ),
            // the test's end and the trial's: the authority decides (003 第十四条 经云主管部门审定)
            Step::PassTest | Step::GoLive => (
                p.approve.by,
                if step == Step::GoLive {
                    p.clauses.trial.clone()
                } else {
                    p.clauses.test.clone()
                },
            ),
            Step::Shortfall => (p.provision.by, p.clauses.shortfall.clone()),
            _ if self.state == State::Shortfall => (p.provision.by, p.clauses.shortfall.clone()),
            _ => rules
                .waiting(self.kind, self.state)
                .map(|r| (r.by, r.clause.clone()))
                .unwrap_or((Role::Ops, String::new())),
        }
    }

    /// Whose turn it is: the role of the step that moves the application on (refusals,
    /// rejections and withdrawals aside); `None` once it is finished.
    pub fn waiting_for(&self, rules: &Rules<'_>) -> Option<Role> {
        Step::ALL
            .into_iter()
            .filter(|s| !matches!(s, Step::Withdraw | Step::Refuse | Step::Reject))
            .find(|s| self.target(*s, rules).is_some())
            .map(|s| self.who(s, rules).0)
    }

    /// The steps `role` may take now (for pages and the API).
    pub fn steps_for(&self, role: Role, rules: &Rules<'_>) -> Vec<Step> {
        Step::ALL
            .into_iter()
            .filter(|s| self.target(*s, rules).is_some() && self.who(*s, rules).0 == role)
            .collect()
    }

    /// Take a step: checks legality, role, unit and reason; returns the new application and its
    /// timeline entry. The application is unchanged on error. Register effects are the
    /// caller's ([`super::effects`]), decided from the step and the states.
    pub fn apply(
        &self,
        step: Step,
        actor: &Actor,
        reason: &str,
        detail: serde_json::Value,
        rules: &Rules<'_>,
        now_ms: u64,
    ) -> Result<(Application, LogEntry), ApplicationError> {
        let name = step.zh();
        let Some(to) = self.target(step, rules) else {
            return Err(ApplicationError::Illegal {
                id: self.id,
                state: self.state.zh(),
                step: name,
            });
        };
        let (role, clause) = self.who(step, rules);
        if actor.role != role {
            return Err(ApplicationError::Forbidden {
                id: self.id,
                step: name,
                role: role_zh(actor.role),
                allowed: role_zh(role),
                clause,
            });
        }
        if role == Role::Unit && actor.unit.as_deref() != Some(self.unit.as_str()) {
            return Err(ApplicationError::OtherUnit {
                id: self.id,
                owner: self.unit.clone(),
            });
        }
        if step.needs_reason() && reason.trim().is_empty() {
            return Err(ApplicationError::NoReason {
                id: self.id,
                step: name,
            });
        }
        if step == Step::GoLive {
            if let Some(until) = self.period_until_ms.filter(|u| *u > now_ms) {
                return Err(ApplicationError::TrialNotOver {
                    id: self.id,
                    min: rules.policy.trial_min.map(|p| p.zh()).unwrap_or_default(),
                    clause: rules.policy.clauses.trial.clone(),
                    until: date(until),
                });
            }
        }
        let mut a = self.clone();
        let from = a.state;
        a.state = to;
        a.state_since_ms = now_ms;
        a.updated_ms = now_ms;
        if step == Step::Resubmit {
            // a new submission: the 受理 deadline starts again
            a.submitted_ms = now_ms;
        }
        let cal = rules.calendar;
        let today = cal.day_of(now_ms);
        a.period_until_ms = match to {
            State::Testing => rules.policy.test.map(|p| cal.start_of(p.end(today))),
            State::Trial => rules.policy.trial_min.map(|p| cal.start_of(p.end(today))),
            _ => None,
        };
        if to == State::Opened {
            a.ends_ms = match (self.kind, &self.request) {
                (Kind::Test | Kind::Temporary, Request::Grant { ends_ms, .. }) => {
                    let max = if self.kind == Kind::Test {
                        rules.policy.test_max
                    } else {
                        rules.policy.temporary_max
                    };
                    let cap = max.map(|p| cal.start_of(p.end(today)));
                    match (ends_ms, cap) {
                        (Some(e), Some(c)) => Some((*e).min(c)),
                        (e, c) => e.or(c),
                    }
                }
                (Kind::New, _) if rules.policy.service_months > 0 => {
                    Some(cal.start_of(Period::Months(rules.policy.service_months).end(today)))
                }
                _ => None,
            };
        }
        a.set_deadline(rules, now_ms);
        let log = LogEntry {
            application: a.id,
            ts_ms: now_ms,
            actor: actor.name.clone(),
            role: actor.role,
            step: step.as_str().into(),
            from: Some(from),
            to,
            reason: reason.trim().into(),
            detail,
        };
        Ok((a, log))
    }

    /// The state in words for this kind: a change, termination or extension is reviewed once
    /// (待审核) and then carried out (待办理).
    pub fn state_zh(&self) -> &'static str {
        match (self.kind.is_grant(), self.state) {
            (false, State::Submitted) => "待审核",
            (false, State::Approved) => "待办理",
            (_, s) => s.zh(),
        }
    }

    /// Past its deadline now.
    pub fn overdue(&self, now_ms: u64) -> bool {
        !self.state.is_terminal() && self.deadline_ms.is_some_and(|d| now_ms > d)
    }

    /// The VMs (UUIDs) a change, termination or extension is about.
    pub fn target_uuids(&self) -> Vec<String> {
        match &self.request {
            Request::Grant { vms, .. } => vms.iter().filter_map(|v| v.uuid.clone()).collect(),
            Request::Change { changes } => changes.iter().map(|c| c.uuid.clone()).collect(),
            Request::Termination { uuids, .. } | Request::Extension { uuids, .. } => uuids.clone(),
        }
    }
}
