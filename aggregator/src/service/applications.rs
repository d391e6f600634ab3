//! Applications (申请 → 受理 → 审核 → 审批 → 测试 → 开通 → 变更 → 终止): submitted by a unit's
//! people, taken through their steps by the roles the active profile names, each step stored
//! with its timeline line, the register change it makes and its audit entry in one
//! transaction, then applied in memory. Register changes take the register's turn, so they
//! are ordered with imports and approved changes.
//!
//! A unit's people see and act on their own unit's applications only: another unit's
//! application is "not found", never "forbidden".

use crate::reclaim::calendar::Calendar;
use crate::reclaim::Reclaim;
use crate::register::{Register, SharedRegister, UnitRecord};
use crate::store::{Storage, StorageError};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use tokio::sync::Mutex;
use yunjian_aggregator_core::alarms::{AlarmKey, Finding, Level};
use yunjian_aggregator_core::audit::AuditEvent;
use yunjian_aggregator_core::identity::{Actor, Role};
use yunjian_aggregator_core::lifecycle::effects::{check_submission, register_change, Holds};
use yunjian_aggregator_core::lifecycle::{
    Application, ApplicationWrite, Attachment, FileRow, Kind, LifecycleError, LogEntry, Request,
    Rules, Step,
};
use yunjian_aggregator_core::policy::Profile;
use yunjian_aggregator_core::time::beijing_date;

/// The alarm of a step past its deadline (rule name).
pub const OVERDUE_RULE: &str = "lifecycle_overdue";
/// A test or temporary allocation about to end, or ended (rule name).
pub const EXPIRY_RULE: &str = "allocation_expiry";
/// The largest attachment taken (a scanned approval document fits).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Why an application action did not happen; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ApplicationServiceError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// Not there, or another unit's (not told apart).
    #[error("申请 {0} 不存在")]
    NotFound(u64),
    #[error("附件 {1} 不在申请 {0} 中")]
    NoFile(u64, u64),
    #[error("只有使用单位的用户可以提交申请（当前角色：{0}）")]
    NotAUnit(&'static str),
    #[error("未知的步骤“{0}”")]
    UnknownStep(String),
    #[error("附件过大：{size} 字节，上限 {max} 字节")]
    TooLarge { size: usize, max: usize },
    #[error("{0}")]
    Invalid(String),
    /// The stop cases of a termination could not be opened.
    #[error("{0}")]
    Reclaim(#[from] crate::reclaim::ReclaimError),
    #[error("存储不可用：{0}")]
    Storage(#[from] StorageError),
}

impl ApplicationServiceError {
    pub fn code(&self) -> &'static str {
        match self {
            ApplicationServiceError::Lifecycle(e) => e.code(),
            ApplicationServiceError::NotFound(_) => "application_not_found",
            ApplicationServiceError::NoFile(..) => "application_file_not_found",
            ApplicationServiceError::NotAUnit(_) => "application_unit_only",
            ApplicationServiceError::UnknownStep(_) => "application_unknown_step",
            ApplicationServiceError::TooLarge { .. } => "application_file_too_large",
            ApplicationServiceError::Invalid(_) => "application_invalid",
            ApplicationServiceError::Reclaim(e) => e.code(),
            ApplicationServiceError::Storage(_) => "storage_unavailable",
        }
    }
}

type Result<T> = std::result::Result<T, ApplicationServiceError>;

/// An application with what the pages show beside it, for one viewer.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub application: Application,
    pub kind_zh: &'static str,
    pub state_zh: &'static str,
    pub overdue: bool,
    /// Working days past the deadline.
    pub overdue_days: u32,
    /// The last day of the current step (Beijing date), if the regulation sets one.
    pub deadline: Option<String>,
    /// Who the application waits for now (`ops`, `authority`, `unit`), and in words.
    pub waiting_for: Option<Role>,
    pub waiting_zh: Option<&'static str>,
    /// The steps the viewer may take now.
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub step: Step,
    pub zh: &'static str,
    pub needs_reason: bool,
    pub clause: String,
}

/// A new application as the unit gives it.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: Kind,
    pub system: String,
    pub purpose: String,
    pub request: Request,
    /// Files to keep with it (the form itself, approval documents…): (kind, name, bytes).
    pub files: Vec<(String, String, bytes::Bytes)>,
}

/// The application service (cheap to clone).
#[derive(Debug, Clone)]
pub struct Applications {
    inner: Arc<Mutex<Inner>>,
    pub profile: Arc<Profile>,
    pub calendar: Arc<Calendar>,
    register: SharedRegister,
    turn: Arc<Mutex<()>>,
    reclaim: Option<Reclaim>,
}

#[derive(Debug)]
struct Inner {
    storage: Box<dyn Storage>,
    apps: BTreeMap<u64, Application>,
    next_id: u64,
}

impl Applications {
    /// Load the applications from `storage` (a connection of its own).
    pub fn start(
        mut storage: Box<dyn Storage>,
        profile: Arc<Profile>,
        calendar: Arc<Calendar>,
        register: SharedRegister,
        turn: Arc<Mutex<()>>,
        reclaim: Option<Reclaim>,
    ) -> std::result::Result<Applications, StorageError> {
        let apps: BTreeMap<u64, Application> = storage
            .applications()?
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
        let next_id = apps.keys().next_back().map_or(1, |m| m + 1);
        tracing::info!(
            applications = apps.len(),
            open = apps.values().filter(|a| !a.state.is_terminal()).count(),
            "applications loaded"
        );
        Ok(Applications {
            inner: Arc::new(Mutex::new(Inner {
                storage,
                apps,
                next_id,
            })),
            profile,
            calendar,
            register,
            turn,
            reclaim,
        })
    }

    fn rules(&self) -> Rules<'_> {
        Rules::of(&self.profile, &self.calendar)
    }

    async fn holds(&self) -> Holds {
        match &self.reclaim {
            Some(r) => r.held_units().await,
            None => Holds::new(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Register> {
        self.register.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The view of `a` for `viewer` at `now_ms`.
    pub fn view(&self, a: &Application, viewer: &Actor, now_ms: u64) -> View {
        let rules = self.rules();
        let overdue = a.overdue(now_ms);
        let waiting_for = a.waiting_for(&rules);
        let mine = viewer.role != Role::Unit || viewer.unit.as_deref() == Some(a.unit.as_str());
        View {
            kind_zh: a.kind.zh(),
            state_zh: a.state_zh(),
            overdue,
            overdue_days: match (overdue, a.deadline_ms) {
                (true, Some(d)) => self.calendar.working_days_between(d - 1, now_ms),
                _ => 0,
            },
            deadline: a.deadline_ms.map(|d| beijing_date(d - 1)),
            waiting_for,
            waiting_zh: waiting_for.map(Role::zh),
            steps: if mine {
                a.steps_for(viewer.role, &rules)
                    .into_iter()
                    .map(|s| StepView {
                        step: s,
                        zh: s.zh(),
                        needs_reason: s.needs_reason(),
                        clause: a.who(s, &rules).1,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            application: a.clone(),
        }
    }

    /// The applications `viewer` may see (a unit: its own), newest first.
    pub async fn list(&self, viewer: &Actor, now_ms: u64) -> Vec<View> {
        let inner = self.inner.lock().await;
        inner
            .apps
            .values()
            .rev()
            .filter(|a| visible(a, viewer))
            .map(|a| self.view(a, viewer, now_ms))
            .collect()
    }

    /// One application with its timeline.
    pub async fn get(&self, viewer: &Actor, id: u64, now_ms: u64) -> Result<(View, Vec<LogEntry>)> {
        let mut inner = self.inner.lock().await;
        let a = inner
            .apps
            .get(&id)
            .filter(|a| visible(a, viewer))
            .cloned()
            .ok_or(ApplicationServiceError::NotFound(id))?;
        let log = inner.storage.application_log(id)?;
        Ok((self.view(&a, viewer, now_ms), log))
    }

    /// An attached file's name and bytes.
    pub async fn file(&self, viewer: &Actor, id: u64, file: u64) -> Result<(String, Vec<u8>)> {
        let mut inner = self.inner.lock().await;
        if !inner.apps.get(&id).is_some_and(|a| visible(a, viewer)) {
            return Err(ApplicationServiceError::NotFound(id));
        }
        inner
            .storage
            .application_file(id, file)?
            .ok_or(ApplicationServiceError::NoFile(id, file))
    }

    /// A unit's person submits an application for their unit.
    #[tracing::instrument(skip_all, fields(by = %by.name, kind = ?draft.kind))]
    pub async fn submit(&self, by: &Actor, draft: Draft, now_ms: u64) -> Result<View> {
        let unit = match (by.role, by.unit.as_deref()) {
            (Role::Unit, Some(u)) => u.to_string(),
            (r, _) => return Err(ApplicationServiceError::NotAUnit(r.zh())),
        };
        if draft.system.trim().is_empty() {
            return Err(ApplicationServiceError::Invalid("请填写系统名称".into()));
        }
        for (_, name, bytes) in &draft.files {
            check_file(name, bytes)?;
        }
        let holds = self.holds().await;
        let rules = self.rules();
        check_submission(
            &self.read(),
            draft.kind,
            &unit,
            &draft.request,
            &holds,
            &rules,
            now_ms,
        )?;
        let mut inner = self.inner.lock().await;
        let id = inner.next_id;
        let (mut a, log) = Application::submit_kind(
            id,
            draft.kind,
            &unit,
            draft.system.trim(),
            &draft.purpose,
            draft.request,
            by,
            &rules,
            now_ms,
        );
        let mut files = Vec::new();
        for (n, (kind, name, bytes)) in draft.files.into_iter().enumerate() {
            let (att, row) = attachment(id, n as u64 + 1, &kind, &name, bytes, by, now_ms);
            a.attachments.push(att);
            files.push(row);
        }
        let audit = audit(&a, &log, None).entry(now_ms, by);
        inner.storage.application_write(&ApplicationWrite {
            applications: vec![a.clone()],
            log: vec![log],
            files,
            register: Vec::new(),
            audit: vec![audit],
        })?;
        inner.next_id += 1;
        inner.apps.insert(id, a.clone());
        tracing::info!(application = id, unit = %a.unit, "application submitted");
        Ok(self.view(&a, by, now_ms))
    }

    /// Take a step (`accept`, `approve`, `carry_out`…) as `by`.
    #[tracing::instrument(skip_all, fields(application = id, step = %step, by = %by.name))]
    pub async fn act(
        &self,
        by: &Actor,
        id: u64,
        step: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<View> {
        let step =
            Step::parse(step).ok_or_else(|| ApplicationServiceError::UnknownStep(step.into()))?;
        let holds = self.holds().await;
        // register changes are ordered with the register's other changes
        let _turn = self.turn.lock().await;
        let mut inner = self.inner.lock().await;
        let before = inner
            .apps
            .get(&id)
            .filter(|a| visible(a, by))
            .cloned()
            .ok_or(ApplicationServiceError::NotFound(id))?;
        let rules = self.rules();
        let (after, mut log) = before
            .apply(step, by, reason, serde_json::Value::Null, &rules, now_ms)
            .map_err(LifecycleError::from)?;
        // a termination goes on through the signed stop → hold → release path: one stop case
        // per VM, opened approved with the unit's declaration as its handover (the release
        // retires the rows and wipes the disks)
        if let (Step::CarryOut, Request::Termination { uuids, declaration }) =
            (step, &before.request)
        {
            let reclaim = self.reclaim.as_ref().ok_or_else(|| {
                ApplicationServiceError::Invalid("本部署未启用回收执行，无法办理终止".into())
            })?;
            let cases = reclaim
                .open_for_application(uuids, id, declaration, by, now_ms)
                .await?;
            log.detail = json!({ "cases": cases });
        }
        let record: Option<UnitRecord> = {
            let reg = self.read();
            register_change(&reg, &before, &after, step, &holds, &rules, now_ms)?
        };
        let diff = record.as_ref().map(|r| {
            let old = self.read().record(&r.unit.name);
            json!({"from": old.vms, "to": r.vms})
        });
        let audit = audit(&after, &log, diff).entry(now_ms, by);
        inner.storage.application_write(&ApplicationWrite {
            applications: vec![after.clone()],
            log: vec![log],
            files: Vec::new(),
            register: record.iter().cloned().collect(),
            audit: vec![audit],
        })?;
        if let Some(r) = record {
            self.register
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .apply(r);
        }
        inner.apps.insert(id, after.clone());
        tracing::info!(state = after.state.as_str(), "application step taken");
        Ok(self.view(&after, by, now_ms))
    }

    /// Attach a file to an application (its unit's people, ops, the authority).
    pub async fn attach(
        &self,
        by: &Actor,
        id: u64,
        kind: &str,
        name: &str,
        bytes: bytes::Bytes,
        now_ms: u64,
    ) -> Result<View> {
        check_file(name, &bytes)?;
        if !matches!(by.role, Role::Unit | Role::Ops | Role::Authority) {
            return Err(ApplicationServiceError::Invalid(format!(
                "{}不能为申请添加附件",
                by.role.zh()
            )));
        }
        let mut inner = self.inner.lock().await;
        let mut a = inner
            .apps
            .get(&id)
            .filter(|a| visible(a, by))
            .cloned()
            .ok_or(ApplicationServiceError::NotFound(id))?;
        let file_id = a.attachments.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        let (att, row) = attachment(id, file_id, kind, name, bytes, by, now_ms);
        let log = LogEntry {
            application: id,
            ts_ms: now_ms,
            actor: by.name.clone(),
            role: by.role,
            step: "attach".into(),
            from: Some(a.state),
            to: a.state,
            reason: String::new(),
            detail: json!({"file": att}),
        };
        a.attachments.push(att);
        a.updated_ms = now_ms;
        let audit = audit(&a, &log, None).entry(now_ms, by);
        inner.storage.application_write(&ApplicationWrite {
            applications: vec![a.clone()],
            log: vec![log],
            files: vec![row],
            register: Vec::new(),
            audit: vec![audit],
        })?;
        inner.apps.insert(id, a.clone());
        Ok(self.view(&a, by, now_ms))
    }

    /// Test and temporary allocations past their end, without an extension under way: a stop
    /// case each through the reclaim (notice first; re-checked before acting). Returns the
    /// cases opened.
    pub async fn reclaim_ended(&self, now_ms: u64) -> Result<Vec<u64>> {
        let Some(reclaim) = &self.reclaim else {
            return Ok(Vec::new());
        };
        let extending: Vec<String> = {
            let inner = self.inner.lock().await;
            inner
                .apps
                .values()
                .filter(|a| a.kind == Kind::Extension && !a.state.is_terminal())
                .flat_map(|a| a.target_uuids())
                .map(|u| u.to_ascii_lowercase())
                .collect()
        };
        let ended: Vec<(String, u64)> = self
            .read()
            .vms
            .iter()
            .filter(|v| v.term.kind.expires())
            .filter_map(|v| Some((v.uuid.clone()?, v.term.ends_ms?)))
            .filter(|(u, end)| *end <= now_ms && !extending.contains(&u.to_ascii_lowercase()))
            .collect();
        if ended.is_empty() {
            return Ok(Vec::new());
        }
        Ok(reclaim.open_for_expiry(&ended, now_ms).await?)
    }

    /// The alarms the lifecycle raises now: each step past its deadline (`lifecycle_overdue`,
    /// citing the active profile's clause), each test or temporary allocation within the
    /// reminder days of its end or past it (`allocation_expiry`).
    pub async fn findings(&self, now_ms: u64) -> Vec<Finding> {
        let rules = self.rules();
        let mut out = Vec::new();
        {
            let inner = self.inner.lock().await;
            for a in inner.apps.values().filter(|a| a.overdue(now_ms)) {
                let days = a
                    .deadline_ms
                    .map_or(0, |d| self.calendar.working_days_between(d - 1, now_ms));
                let who = a.waiting_for(&rules).map_or("运维单位", Role::zh);
                let clause = a.deadline_clause.clone().unwrap_or_default();
                out.push(Finding {
                    key: AlarmKey {
                        rule: OVERDUE_RULE.into(),
                        subject: format!("application:{}", a.id),
                    },
                    level: if days >= 3 {
                        Level::Major
                    } else {
                        Level::Warning
                    },
                    clause: format!("{} {clause}", self.profile.title),
                    unit: Some(a.unit.clone()),
                    title: format!(
                        "{} #{}（{}）{}逾期 {} 个工作日：等待{}办理（{}，截止 {}）",
                        a.kind.zh(),
                        a.id,
                        a.system,
                        a.state_zh(),
                        days.max(1),
                        who,
                        clause,
                        a.deadline_ms
                            .map(|d| beijing_date(d - 1))
                            .unwrap_or_default()
                    ),
                    evidence: json!({
                        "application": a.id, "state": a.state, "kind": a.kind,
                        "deadline_ms": a.deadline_ms, "overdue_working_days": days,
                    }),
                });
            }
        }
        let remind_ms = u64::from(self.profile.lifecycle.remind_days) * 86_400_000;
        let p = &self.profile.lifecycle;
        for v in self.read().vms.iter() {
            let Some(end) = v.term.ends_ms.filter(|_| v.term.kind.expires()) else {
                continue;
            };
            if now_ms + remind_ms < end {
                continue;
            }
            let expired = now_ms >= end;
            let clause = match v.term.kind {
                yunjian_aggregator_core::register::AllocationKind::Temporary => {
                    &p.clauses.temporary
                }
                _ => &p.clauses.test,
            };
            let name = v.uuid.clone().unwrap_or_else(|| v.system.clone());
            out.push(Finding {
                key: AlarmKey {
                    rule: EXPIRY_RULE.into(),
                    subject: format!("vm:{name}"),
                },
                level: if expired {
                    Level::Major
                } else {
                    Level::Warning
                },
                clause: format!("{} {clause}", self.profile.title),
                unit: Some(v.unit.clone()),
                title: if expired {
                    format!(
                        "{}资源已于 {} 到期（{} / {}）：未批准延期或转正式的，按{}回收",
                        v.term.kind.zh(),
                        beijing_date(end - 1),
                        v.system,
                        name,
                        clause
                    )
                } else {
                    format!(
                        "{}资源将于 {} 到期（{} / {}）：如需继续使用，请按{}及时申请延期或转正式",
                        v.term.kind.zh(),
                        beijing_date(end - 1),
                        v.system,
                        name,
                        clause
                    )
                },
                evidence: json!({
                    "uuid": v.uuid, "kind": v.term.kind, "ends_ms": end,
                    "application": v.term.application,
                }),
            });
        }
        out
    }
}

/// A unit's people see their own unit's applications; everyone else (ops, the authority,
/// auditors, administrators) sees all.
fn visible(a: &Application, viewer: &Actor) -> bool {
    viewer.role != Role::Unit || viewer.unit.as_deref() == Some(a.unit.as_str())
}

fn check_file(name: &str, bytes: &[u8]) -> Result<()> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ApplicationServiceError::TooLarge {
            size: bytes.len(),
            max: MAX_FILE_BYTES,
        });
    }
    if name.trim().is_empty() || name.len() > 200 || name.contains(['/', '\\', '\0']) {
        return Err(ApplicationServiceError::Invalid(format!(
            "附件名“{name}”无效：不能为空、不超过 200 字节、不含路径"
        )));
    }
    Ok(())
}

fn attachment(
    application: u64,
    id: u64,
    kind: &str,
    name: &str,
    bytes: bytes::Bytes,
    by: &Actor,
    now_ms: u64,
) -> (Attachment, FileRow) {
    use sha2::Digest;
    let sha = sha2::Sha256::digest(&bytes);
    let att = Attachment {
        id,
        kind: if kind.trim().is_empty() {
            "附件".into()
        } else {
            kind.trim().into()
        },
        name: name.trim().into(),
        size: bytes.len() as u64,
        sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
        by: by.name.clone(),
        ts_ms: now_ms,
    };
    let row = FileRow {
        application,
        id,
        name: att.name.clone(),
        bytes,
    };
    (att, row)
}

fn audit(a: &Application, log: &LogEntry, register: Option<serde_json::Value>) -> AuditEvent {
    AuditEvent::ApplicationStep {
        application: a.id,
        step: log.step.clone(),
        kind: a.kind.as_str().into(),
        unit: a.unit.clone(),
        from: log.from.map(|s| s.as_str().to_string()),
        to: log.to.as_str().into(),
        reason: log.reason.clone(),
        register,
    }
}

/// The lifecycle task: every `tick`, the deadline and expiry alarms reconciled in the alarm
/// book (stored, audited, notified to the units concerned).
pub async fn run(
    apps: Applications,
    policy: crate::policy::SharedPolicy,
    alarms: super::AlarmSink,
    tick: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let now = crate::ratelimit::now_ms();
        if let Err(e) = apps.reclaim_ended(now).await {
            tracing::warn!("ended allocations: {e}");
        }
        let findings = apps.findings(now).await;
        let events = {
            let mut engine = policy.lock().unwrap_or_else(PoisonError::into_inner);
            let rules: std::collections::HashSet<&str> =
                [OVERDUE_RULE, EXPIRY_RULE].into_iter().collect();
            engine.book_mut().reconcile(&rules, findings, now)
        };
        if alarms.publish(events, now).await.is_err() {
            return;
        }
    }
}
