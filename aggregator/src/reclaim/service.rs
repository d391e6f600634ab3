//! The reclaim service: the cases (in memory, every change stored first), the drive of due
//! steps, and the results coming back from agents.

use super::calendar::Calendar;
use super::case::{Actor, Basis, Case, CaseError, Kind, LogEntry, Role, Rules, State, Step};
use super::dispatch::{CommandReply, Outlet};
use super::{CommandRecord, CommandStatus};
use super::{Detection, ReclaimConfig, ReclaimWrite};
use crate::alarms::{AlarmKey, Finding, Level};
use crate::fleet::{ClaimConflict, SharedFleet, Unaddressable};
use crate::policy::profile::ReclaimPolicy;
use crate::register::changes::{self, beijing_time, Update};
use crate::register::SharedRegister;
use crate::store::{AuditEntry, DetectionRow, Storage, StorageError};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Mutex;
use yunjian_aggregator_core::audit::AuditEvent;
use yunjian_aggregator_core::reclaim::outcome::{outcome, Outcome};
use yunjian_protocol::{Action, VmLimits, VmRef};

/// The alarm rule name of overdue cases (not a policy rule: the service raises them).
pub const OVERDUE_RULE: &str = "reclaim_overdue";
/// The alarm rule name of the notice to a unit while its answer is awaited: an info alarm for
/// the unit (its webhook notices are grouped per unit), cleared when the case moves on.
pub const NOTICE_RULE: &str = "reclaim_notice";
/// The alarm rule name of a deadline counted in a year no holiday calendar covers (weekends
/// only: statutory holidays and make-up days unknown), one alarm per missing year.
pub const CALENDAR_RULE: &str = "calendar_year_missing";

#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error("降配回收案件 {0} 不存在")]
    NotFound(u64),
    #[error("未知的办理步骤 {0:?}；可用步骤：notify、agree、dispute、settle、handover、file、approve、reject、schedule、withdraw、retry、close、rollback")]
    UnknownStep(String),
    #[error("安排执行须给出 `at_ms`（执行时间）")]
    NoTime,
    #[error("案件 {case}：没有宿主机在其虚拟机清单中列出虚拟机 {uuid}，指令无处下发")]
    NoHost { case: u64, uuid: String },
    #[error("案件 {case}：未做快照，无法回退")]
    NoSnapshot { case: u64 },
    #[error("存储不可用：{0}")]
    Storage(#[from] StorageError),
    #[error("无法生成指令编号：{0}")]
    Random(#[from] std::io::Error),
    #[error("角色 {role} 无权{what}")]
    Forbidden {
        role: &'static str,
        what: &'static str,
    },
    #[error("节点 {0} 不是宿主机所列的虚拟机，无可停机对象")]
    UnknownVm(String),
    #[error("虚拟机 {uuid} 归属冲突：{conflict}；冲突消除前不向该虚拟机下发指令（见告警 vm_claim_conflict）")]
    Contested { uuid: String, conflict: String },
}

impl ReclaimError {
    /// Stable machine code beside the zh-CN message (API errors).
    pub fn code(&self) -> &'static str {
        match self {
            ReclaimError::Case(e) => e.code(),
            ReclaimError::NotFound(_) => "case_not_found",
            ReclaimError::UnknownStep(_) => "unknown_step",
            ReclaimError::NoTime => "schedule_time_required",
            ReclaimError::NoHost { .. } => "vm_no_host",
            ReclaimError::NoSnapshot { .. } => "no_snapshot",
            ReclaimError::Storage(_) => "storage_unavailable",
            ReclaimError::Random(_) => "command_id_failed",
            ReclaimError::Forbidden { .. } => "forbidden",
            ReclaimError::UnknownVm(_) => "unknown_vm",
            ReclaimError::Contested { .. } => "vm_claim_conflict",
        }
    }
}

#[derive(Debug)]
struct Inner {
    storage: Box<dyn Storage>,
    cases: BTreeMap<u64, Case>,
    /// Every command of this process's life plus the outstanding ones from storage.
    commands: BTreeMap<String, CommandRecord>,
    /// The latest detection per VM UUID, with when it was fed.
    detections: HashMap<String, (u64, Detection)>,
    next_id: u64,
}

/// The reclaim service (cheap to clone).
#[derive(Debug, Clone)]
pub struct Reclaim {
    inner: Arc<Mutex<Inner>>,
    pub config: Arc<ReclaimConfig>,
    pub policy: Arc<ReclaimPolicy>,
    pub calendar: Arc<Calendar>,
    master: yunjian_protocol::MasterKey,
    outlet: Outlet,
    fleet: SharedFleet,
    register: SharedRegister,
    /// Register changes take turns (shared with [`crate::service::RegisterService`]): a step
    /// that changes the register is computed, stored and applied in one turn. Taken before
    /// the cases' lock, as the register service takes it before asking for the holds.
    pub register_turn: Arc<Mutex<()>>,
}

/// A case with what the page shows beside it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseView {
    pub case: Case,
    pub overdue: bool,
    /// Working days past the deadline.
    pub overdue_days: u32,
    pub deadline: Option<String>,
    pub command: Option<CommandRecord>,
}

impl Reclaim {
    /// Load the cases and the commands still outstanding from `storage` (a connection of its
    /// own: every change is committed before anything is published).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        mut storage: Box<dyn Storage>,
        config: ReclaimConfig,
        policy: ReclaimPolicy,
        calendar: Calendar,
        master: yunjian_protocol::MasterKey,
        outlet: Outlet,
        fleet: SharedFleet,
        register: SharedRegister,
    ) -> Result<Reclaim, StorageError> {
        let cases: BTreeMap<u64, Case> = storage
            .reclaim_cases()?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let commands = storage
            .commands(true)?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect::<BTreeMap<_, _>>();
        let next_id = cases.keys().next_back().map_or(1, |m| m + 1);
        let detections: HashMap<String, (u64, Detection)> = storage
            .load_detections()?
            .into_iter()
            .map(|r| (r.detection.uuid.clone(), (r.fed_ms, r.detection)))
            .collect();
        {
            // VMs stopped on purpose: not silent (the fleet was restored before)
            let mut f = fleet.write().unwrap_or_else(|p| p.into_inner());
            for c in cases.values() {
                f.mark_stopped_vm(&c.uuid, stop_mark(c));
            }
            let mut all = storage.commands(false)?;
            all.sort_by_key(|c| c.created_ms);
            for cmd in &all {
                if let Some((node, why)) = antivirus_mark(cmd) {
                    f.mark_stopped(node, why);
                }
            }
        }
        tracing::info!(
            cases = cases.len(),
            detections = detections.len(),
            open = cases.values().filter(|c| !c.state.is_terminal()).count(),
            outstanding_commands = commands.len(),
            "reclaim cases loaded"
        );
        Ok(Reclaim {
            inner: Arc::new(Mutex::new(Inner {
                storage,
                cases,
                commands,
                detections,
                next_id,
            })),
            config: Arc::new(config),
            policy: Arc::new(policy),
            calendar: Arc::new(calendar),
            master,
            outlet,
            fleet,
            register,
            register_turn: Arc::default(),
        })
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            policy: &self.policy,
            calendar: &self.calendar,
        }
    }

    fn view(&self, inner: &Inner, c: &Case, now_ms: u64) -> CaseView {
        let overdue = c.overdue(now_ms);
        CaseView {
            overdue,
            overdue_days: match (overdue, c.deadline_ms) {
                (true, Some(d)) => self.calendar.working_days_between(d - 1, now_ms),
                _ => 0,
            },
            deadline: c.deadline_ms.map(|d| beijing_time(d - 1)),
            command: c
                .command
                .as_ref()
                .and_then(|id| inner.commands.get(id).cloned()),
            case: c.clone(),
        }
    }

    /// Every case, newest first.
    pub async fn cases(&self, now_ms: u64) -> Vec<CaseView> {
        let inner = self.inner.lock().await;
        inner
            .cases
            .values()
            .rev()
            .map(|c| self.view(&inner, c, now_ms))
            .collect()
    }

    /// One case with its timeline and every command it sent.
    pub async fn case(
        &self,
        id: u64,
        now_ms: u64,
    ) -> Result<(CaseView, Vec<LogEntry>, Vec<CommandRecord>), ReclaimError> {
        let mut inner = self.inner.lock().await;
        let c = inner
            .cases
            .get(&id)
            .cloned()
            .ok_or(ReclaimError::NotFound(id))?;
        let view = self.view(&inner, &c, now_ms);
        let log = inner.storage.reclaim_log(id)?;
        let mut commands: Vec<CommandRecord> = inner
            .storage
            .commands(false)?
            .into_iter()
            .filter(|x| x.case_id == Some(id))
            .collect();
        commands.sort_by_key(|x| x.created_ms);
        Ok((view, log, commands))
    }

    /// Units with open low-use cases they were told about (003 第三十条: their new requests
    /// are held), with the case ids and since when.
    pub async fn held_units(&self) -> BTreeMap<String, (Vec<u64>, u64)> {
        let inner = self.inner.lock().await;
        super::held_units(inner.cases.values())
    }

    /// Feed the usage module's findings: remembered for the re-check, and a case opened for
    /// every registered VM without an open case.
    pub async fn detect(
        &self,
        found: Vec<Detection>,
        now_ms: u64,
    ) -> Result<Vec<u64>, ReclaimError> {
        let mut inner = self.inner.lock().await;
        // remembered (stored first) for the re-check, which must still find them after a restart
        let found: Vec<Detection> = found
            .into_iter()
            .map(|d| Detection {
                uuid: d.uuid.to_ascii_lowercase(),
                ..d
            })
            .collect();
        let rows: Vec<DetectionRow> = found
            .iter()
            .map(|d| DetectionRow {
                fed_ms: now_ms,
                detection: d.clone(),
            })
            .collect();
        inner.storage.store_detections(&rows)?;
        for r in rows {
            inner
                .detections
                .insert(r.detection.uuid.clone(), (r.fed_ms, r.detection));
        }
        let mut opened = Vec::new();
        for d in found {
            let uuid = d.uuid.clone();
            if inner
                .cases
                .values()
                .any(|c| c.uuid == uuid && !c.state.is_terminal())
            {
                continue;
            }
            let (unit, system, name) = {
                let reg = self.register.read().unwrap_or_else(|p| p.into_inner());
                let Some(v) = reg.vm_by_uuid(&uuid) else {
                    tracing::debug!(%uuid, "low use of an unregistered VM: no unit to tell, no case");
                    continue;
                };
                let name = if v.subsystem.is_empty() {
                    v.system.clone()
                } else {
                    format!("{} / {}", v.system, v.subsystem)
                };
                (v.unit.clone(), v.system.clone(), name)
            };
            let id = inner.next_id;
            let (case, log) = Case::open(
                id,
                &uuid,
                &name,
                &unit,
                &system,
                d.kind,
                d.evidence,
                &self.rules(),
                now_ms,
            );
            let audit = audit_of(&case, &log);
            inner.storage.reclaim_write(&ReclaimWrite {
                cases: vec![case.clone()],
                log: vec![log],
                audit: vec![audit],
                ..ReclaimWrite::default()
            })?;
            inner.next_id += 1;
            tracing::info!(case = id, %uuid, unit = %case.unit, "reclaim case opened");
            inner.cases.insert(id, case);
            opened.push(id);
        }
        Ok(opened)
    }

    /// The unit, system and name a registered VM's case shows (`None`: not registered).
    fn registered(&self, uuid: &str) -> Option<(String, String, String)> {
        let reg = self.register.read().unwrap_or_else(|p| p.into_inner());
        let v = reg.vm_by_uuid(uuid)?;
        let name = if v.subsystem.is_empty() {
            v.system.clone()
        } else {
            format!("{} / {}", v.system, v.subsystem)
        };
        Some((v.unit.clone(), v.system.clone(), name))
    }

    /// The unit's termination application was approved and ops carries it out: one stop case
    /// per VM, opened approved (the application is its approval trail; its declaration the
    /// unit's handover), to be scheduled, snapshotted, stopped, held and released as any other.
    /// A VM with an open case keeps it. Returns the cases opened or already open.
    pub async fn open_for_application(
        &self,
        uuids: &[String],
        application: u64,
        declaration: &str,
        by: &Actor,
        now_ms: u64,
    ) -> Result<Vec<u64>, ReclaimError> {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        for uuid in uuids.iter().map(|u| u.to_ascii_lowercase()) {
            if let Some(c) = inner
                .cases
                .values()
                .find(|c| c.uuid == uuid && !c.state.is_terminal())
            {
                out.push(c.id);
                continue;
            }
            let Some((unit, system, name)) = self.registered(&uuid) else {
                return Err(ReclaimError::UnknownVm(uuid));
            };
            let id = inner.next_id;
            let (case, log) = Case::open_by_application(
                id,
                &uuid,
                &name,
                &unit,
                &system,
                application,
                declaration,
                by,
                &self.rules(),
                now_ms,
            );
            let audit = audit_of(&case, &log);
            inner.storage.reclaim_write(&ReclaimWrite {
                cases: vec![case.clone()],
                log: vec![log],
                audit: vec![audit],
                ..ReclaimWrite::default()
            })?;
            inner.next_id += 1;
            tracing::info!(case = id, %uuid, application, "stop case opened for a termination");
            inner.cases.insert(id, case);
            out.push(id);
        }
        Ok(out)
    }

    /// Test or temporary allocations that ended without an approved extension or conversion:
    /// a stop case each (notice to the unit first, as for low use), re-checked before acting.
    pub async fn open_for_expiry(
        &self,
        ended: &[(String, u64)],
        now_ms: u64,
    ) -> Result<Vec<u64>, ReclaimError> {
        let mut inner = self.inner.lock().await;
        let mut opened = Vec::new();
        for (uuid, ends_ms) in ended {
            let uuid = uuid.to_ascii_lowercase();
            if inner
                .cases
                .values()
                .any(|c| c.uuid == uuid && !c.state.is_terminal())
            {
                continue;
            }
            let Some((unit, system, name)) = self.registered(&uuid) else {
                continue;
            };
            let id = inner.next_id;
            let (mut case, log) = Case::open(
                id,
                &uuid,
                &name,
                &unit,
                &system,
                Kind::Idle,
                json!({"expired_ms": ends_ms}),
                &self.rules(),
                now_ms,
            );
            case.basis = Basis::Expired { ends_ms: *ends_ms };
            let audit = audit_of(&case, &log);
            inner.storage.reclaim_write(&ReclaimWrite {
                cases: vec![case.clone()],
                log: vec![log],
                audit: vec![audit],
                ..ReclaimWrite::default()
            })?;
            inner.next_id += 1;
            tracing::info!(case = id, %uuid, "stop case opened for an ended allocation");
            inner.cases.insert(id, case);
            opened.push(id);
        }
        Ok(opened)
    }

    /// A person takes a step by name (`notify`, `agree`, … see [`ReclaimError::UnknownStep`]).
    pub async fn act(
        &self,
        id: u64,
        step: &str,
        actor: &Actor,
        reason: &str,
        at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<CaseView, ReclaimError> {
        let mut inner = self.inner.lock().await;
        let case = inner
            .cases
            .get(&id)
            .cloned()
            .ok_or(ReclaimError::NotFound(id))?;
        let (step, command) = match step {
            "notify" => (Step::Notify, None),
            "agree" => (Step::Agree, None),
            "settle" => (Step::Settle, None),
            "handover" => (Step::Handover, None),
            "dispute" => (Step::Dispute, None),
            "file" => (Step::File, None),
            "approve" => (Step::Approve, None),
            "reject" => (Step::Reject, None),
            "withdraw" => (Step::Withdraw, None),
            "schedule" => (
                Step::Schedule {
                    at_ms: at_ms.ok_or(ReclaimError::NoTime)?,
                },
                None,
            ),
            "close" if !case.is_stop() => (Step::Close { command: None }, None),
            // 004 第十六条: the unit refused; its service is limited (or the limit lifted)
            "limit" | "unlimit" => {
                let probe = if step == "limit" {
                    Step::Limit {
                        command: String::new(),
                    }
                } else {
                    Step::Unlimit {
                        command: String::new(),
                    }
                };
                case.apply(
                    probe,
                    actor,
                    reason,
                    serde_json::Value::Null,
                    &self.rules(),
                    now_ms,
                )?;
                let caps = match (step, &self.policy.limit) {
                    ("limit", None) => return Err(CaseError::NoLimitRung { case: id }.into()),
                    ("limit", Some(p)) if !case.refused(now_ms) => {
                        return Err(CaseError::NotRefused {
                            case: id,
                            clause: p.clause.clone(),
                        }
                        .into())
                    }
                    ("limit", Some(p)) => VmLimits {
                        vcpu_percent: Some(p.vcpu_percent),
                        disk_bytes_sec: p.disk_bytes_sec,
                        disk_iops_sec: p.disk_iops_sec,
                    },
                    _ => VmLimits::NONE,
                };
                let (host, vm) = self.locate(&case)?;
                let rec = CommandRecord::new(
                    &host,
                    Some(id),
                    format!("reclaim:{id}"),
                    Action::Limit(vm, caps),
                    now_ms,
                    self.config.command_ttl,
                )?;
                let step = if step == "limit" {
                    Step::Limit {
                        command: rec.id.clone(),
                    }
                } else {
                    Step::Unlimit {
                        command: rec.id.clone(),
                    }
                };
                (step, Some(rec))
            }
            "retry" | "close" | "rollback" => {
                // check the step (with a placeholder id) before making a command for it
                let probe = match step {
                    "retry" => Step::Retry {
                        command: String::new(),
                    },
                    "rollback" => Step::Rollback {
                        command: String::new(),
                    },
                    _ => Step::Close {
                        command: Some(String::new()),
                    },
                };
                case.apply(
                    probe,
                    actor,
                    reason,
                    serde_json::Value::Null,
                    &self.rules(),
                    now_ms,
                )?;
                // where the VM is listed now (it may have moved), else where it was acted on;
                // never while its claims conflict
                let (host, vm) = match (self.locate(&case), &case.host) {
                    (Ok(found), _) => found,
                    (Err(ReclaimError::NoHost { .. }), Some(h)) => (h.clone(), self.vm_ref(&case)),
                    (Err(e), _) => return Err(e),
                };
                let action = match step {
                    "retry" => self.action_for(&case, vm),
                    "rollback" => Action::Rollback(
                        vm,
                        case.snapshot
                            .clone()
                            .ok_or(ReclaimError::NoSnapshot { case: id })?,
                    ),
                    // after the unit's handover: the data goes with the VM
                    _ if self.config.wipe_on_release => Action::ReleaseAndWipe(vm),
                    _ => Action::Release(vm),
                };
                let rec = CommandRecord::new(
                    &host,
                    Some(id),
                    format!("reclaim:{id}"),
                    action,
                    now_ms,
                    self.config.command_ttl,
                )?;
                let step = match step {
                    "retry" => Step::Retry {
                        command: rec.id.clone(),
                    },
                    "rollback" => Step::Rollback {
                        command: rec.id.clone(),
                    },
                    _ => Step::Close {
                        command: Some(rec.id.clone()),
                    },
                };
                (step, Some(rec))
            }
            other => return Err(ReclaimError::UnknownStep(other.into())),
        };
        let c = self
            .transition(
                &mut inner,
                &case,
                step,
                actor,
                reason,
                serde_json::Value::Null,
                command,
                now_ms,
            )
            .await?;
        Ok(self.view(&inner, &c, now_ms))
    }

    /// Apply a step, store the case, its log line, the audit entry and the command in one
    /// transaction, then publish the command.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        inner: &mut Inner,
        case: &Case,
        step: Step,
        actor: &Actor,
        reason: &str,
        detail: serde_json::Value,
        command: Option<CommandRecord>,
        now_ms: u64,
    ) -> Result<Case, ReclaimError> {
        let register_step = matches!(step, Step::Verify) && !case.is_stop();
        let (mut c, mut log) = case.apply(step, actor, reason, detail, &self.rules(), now_ms)?;
        if let Some(cmd) = &command {
            c.host = Some(cmd.node.clone());
        }
        let update = if register_step {
            self.register_change(&c, &mut log, now_ms)
        } else {
            None
        };
        let mut audit = audit_of(&c, &log);
        // a person's step: from where they asked
        audit.source = actor.source.clone().or(audit.source);
        inner.storage.reclaim_write(&ReclaimWrite {
            cases: vec![c.clone()],
            log: vec![log],
            commands: command.iter().cloned().collect(),
            audit: std::iter::once(audit)
                .chain(update.iter().map(|u| u.audit.clone()))
                .collect(),
            register: update.iter().map(|u| u.record.clone()).collect(),
        })?;
        inner.cases.insert(c.id, c.clone());
        self.apply_register(update);
        self.mark(&c);
        if let Some(cmd) = command {
            tracing::info!(case = c.id, command = %cmd.id, node = %cmd.node, action = cmd.action.kind(), "command stored; publishing");
            inner.commands.insert(cmd.id.clone(), cmd.clone());
            self.send(inner, &cmd.id, now_ms).await;
        }
        Ok(c)
    }

    /// The register change a step closes the loop with: a verified downsize lowers the VM's
    /// approved size, a released VM's row is retired. Computed from the register as it is (the
    /// caller holds the register turn), noted on the step's log entry; `None` when the register
    /// has nothing to change (the VM is no longer registered, or already at that size).
    fn register_change(&self, c: &Case, log: &mut LogEntry, now_ms: u64) -> Option<Update> {
        let by = Actor::job("job:reclaim");
        let made = {
            let reg = self.register.read().unwrap_or_else(|p| p.into_inner());
            match &c.kind {
                Kind::OverProvisioned { recommended } => {
                    changes::reclaim_downsize(&reg, c.id, &c.uuid, *recommended, &by, now_ms)
                }
                Kind::Idle => changes::retire(&reg, c.id, &c.uuid, &by, now_ms),
            }
        };
        note_register(log, &made);
        made.ok()
    }

    /// Keep the fleet's "stopped on purpose" mark of the case's VM in step with the case.
    fn mark(&self, c: &Case) {
        self.fleet
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .mark_stopped_vm(&c.uuid, stop_mark(c));
    }

    /// A rolled-back downsize whose verification had lowered the approved size: the size
    /// before it, from the verify step's timeline entry, comes back.
    fn register_restore(
        &self,
        inner: &mut Inner,
        c: &Case,
        log: &mut LogEntry,
        now_ms: u64,
    ) -> Option<Update> {
        let timeline = match inner.storage.reclaim_log(c.id) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(
                    case = c.id,
                    "timeline not readable, the register keeps the downsized size: {e}"
                );
                return None;
            }
        };
        let from = timeline
            .iter()
            .rev()
            .find(|l| l.step == "verify" && l.detail["register"]["action"] == "register.downsize")
            .map(|l| l.detail["register"]["from"].clone())?;
        let size = |k: &str| from[k].as_u64().and_then(|v| u32::try_from(v).ok());
        let (vcpus, mem_gb) = (size("vcpus")?, size("mem_gb")?);
        let by = Actor::job("job:reclaim");
        let made = {
            let reg = self.register.read().unwrap_or_else(|p| p.into_inner());
            changes::reclaim_restore(&reg, c.id, &c.uuid, vcpus, mem_gb, &by, now_ms)
        };
        note_register(log, &made);
        made.ok()
    }

    /// Apply a stored register change in memory: the revision moves, so the capacity rules
    /// look at the pools again.
    fn apply_register(&self, update: Option<Update>) {
        if let Some(u) = update {
            tracing::info!(action = %u.audit.action, subject = %u.audit.subject, "register changed by a reclaim case");
            self.register
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(u.record);
        }
    }

    /// Publish a stored command (again), counting the send.
    async fn send(&self, inner: &mut Inner, id: &str, now_ms: u64) {
        let Some(cmd) = inner.commands.get(id).cloned() else {
            return;
        };
        let Some(frame) = cmd.frame(&self.master, now_ms) else {
            tracing::error!(command = %cmd.id, "stored command cannot be encoded");
            return;
        };
        if self.outlet.publish(&cmd.node, frame).await {
            let mut cmd = cmd;
            cmd.sends += 1;
            cmd.last_sent_ms = now_ms;
            // the send count is informative: a lost update only means one more resend
            if let Err(e) = inner.storage.reclaim_write(&ReclaimWrite {
                commands: vec![cmd.clone()],
                ..ReclaimWrite::default()
            }) {
                tracing::warn!(command = %cmd.id, "send count not stored: {e}");
            }
            inner.commands.insert(cmd.id.clone(), cmd);
        }
    }

    fn vm_ref(&self, case: &Case) -> VmRef {
        let name = self
            .command_host(&case.uuid)
            .ok()
            .map(|(_, g)| g.name)
            .unwrap_or_else(|| case.vm_name.clone());
        VmRef {
            uuid: case.uuid.clone(),
            name,
        }
    }

    /// The host listing the VM, and the VM as the host names it.
    fn locate(&self, case: &Case) -> Result<(String, VmRef), ReclaimError> {
        let (host, g) = self.command_host(&case.uuid).map_err(|e| match e {
            Unaddressable::NoHost => ReclaimError::NoHost {
                case: case.id,
                uuid: case.uuid.clone(),
            },
            Unaddressable::Conflict(c) => contested(&case.uuid, c),
        })?;
        Ok((
            host,
            VmRef {
                uuid: case.uuid.clone(),
                name: g.name,
            },
        ))
    }

    /// The one host a command for the VM goes to (none while its claims conflict).
    fn command_host(
        &self,
        uuid: &str,
    ) -> Result<(String, yunjian_protocol::GuestView), Unaddressable> {
        let fleet = self.fleet.read().unwrap_or_else(|p| p.into_inner());
        fleet.command_host(uuid)
    }

    fn action_for(&self, case: &Case, vm: VmRef) -> Action {
        let snap = case
            .snapshot
            .clone()
            .unwrap_or_else(|| snapshot_name(case.id));
        match &case.kind {
            Kind::Idle => Action::Stop(vm, snap),
            Kind::OverProvisioned { recommended } => Action::Downsize(vm, snap, *recommended),
        }
    }

    /// A result from an agent (routed by ingest). Stored, then its PUBACK released.
    pub async fn on_reply(&self, reply: CommandReply, now_ms: u64) {
        let CommandReply {
            node,
            result,
            ack,
            evidence,
        } = reply;
        // the evidence's PUBACK goes with the result's, once stored
        let (evidence, evidence_ack) = match evidence {
            Some((e, a)) => (Some(e), a),
            None => (None, None),
        };
        let _evidence_ack = evidence_ack;
        let id = super::command::hex(&result.id);
        let _turn = self.register_turn.lock().await;
        let mut inner = self.inner.lock().await;
        let known = match inner.commands.get(&id) {
            Some(c) => Some(c.clone()),
            None => inner
                .storage
                .commands(false)
                .ok()
                .and_then(|all| all.into_iter().find(|c| c.id == id)),
        };
        let Some(mut cmd) = known else {
            tracing::warn!(%node, command = %id, "result for a command this aggregator never sent: ignored");
            drop(ack);
            return;
        };
        if cmd.node != node {
            tracing::warn!(%node, command = %id, expected = %cmd.node, "result from another node than the command's: ignored");
            drop(ack);
            return;
        }
        if matches!(cmd.status, CommandStatus::Succeeded | CommandStatus::Failed) {
            drop(ack); // a re-delivered result: already recorded
            return;
        }
        let late = cmd.status == CommandStatus::Expired;
        cmd.status = if result.ok {
            CommandStatus::Succeeded
        } else {
            CommandStatus::Failed
        };
        cmd.result_ms = Some(now_ms);
        cmd.message = result.message.clone();
        tracing::info!(%node, command = %id, ok = result.ok, message = %result.message, late, "command result");
        let case = cmd.case_id.and_then(|i| inner.cases.get(&i).cloned());
        let detail = json!({"command": id, "node": node, "ok": result.ok, "message": result.message, "late": late, "evidence": evidence});
        let step = match &case {
            Some(c) if c.command.as_deref() == Some(&id) && !late => match (c.state, result.ok) {
                (State::Executing, true) => Some(Step::Succeeded),
                (State::Releasing, true) => Some(Step::Released),
                (State::RollingBack, true) => Some(Step::RolledBack),
                (State::Executing | State::Releasing | State::RollingBack, false) => {
                    Some(Step::Failed)
                }
                _ => None,
            },
            _ => None,
        };
        let stored = match (case, step) {
            (Some(c), Some(step)) => {
                let mut c2 = c.clone();
                if matches!(step, Step::Succeeded) {
                    c2.snapshot = snapshot_of(&cmd.action);
                }
                let reason = if result.ok {
                    String::new()
                } else {
                    result.message.clone()
                };
                match c2.apply(
                    step,
                    &Actor::system(),
                    &reason,
                    detail.clone(),
                    &self.rules(),
                    now_ms,
                ) {
                    Ok((next, mut log)) => {
                        let update = match next.state {
                            State::Closed if next.is_stop() => {
                                self.register_change(&next, &mut log, now_ms)
                            }
                            State::RolledBack if !next.is_stop() => {
                                self.register_restore(&mut inner, &next, &mut log, now_ms)
                            }
                            _ => None,
                        };
                        let audit = audit_of(&next, &log);
                        let w = ReclaimWrite {
                            cases: vec![next.clone()],
                            log: vec![log],
                            commands: vec![cmd.clone()],
                            audit: std::iter::once(audit)
                                .chain(update.iter().map(|u| u.audit.clone()))
                                .collect(),
                            register: update.iter().map(|u| u.record.clone()).collect(),
                        };
                        inner.storage.reclaim_write(&w).map(|_| {
                            self.mark(&next);
                            inner.cases.insert(next.id, next);
                            self.apply_register(update);
                        })
                    }
                    Err(e) => {
                        tracing::error!("result not applicable: {e}");
                        Ok(())
                    }
                }
            }
            (case, _) => {
                // a late result or one without a case (the antivirus stop): recorded on the
                // command and in the audit log, and on the case's timeline if it has one
                let log = case.map(|c| LogEntry {
                    case_id: c.id,
                    ts_ms: now_ms,
                    actor: "system".into(),
                    role: Role::System,
                    // a limit's result is not a step of the case; anything else is late
                    step: if matches!(cmd.action, Action::Limit(..)) {
                        "limit_result".into()
                    } else {
                        "late_result".into()
                    },
                    from: Some(c.state),
                    to: c.state,
                    reason: result.message.clone(),
                    detail: detail.clone(),
                });
                inner.storage.reclaim_write(&ReclaimWrite {
                    log: log.into_iter().collect(),
                    commands: vec![cmd.clone()],
                    audit: vec![AuditEvent::CommandResult {
                        purpose: cmd.purpose.clone(),
                        ok: result.ok,
                        detail,
                    }
                    .entry(now_ms, &Actor::job("job:reclaim"))],
                    ..ReclaimWrite::default()
                })
            }
        };
        match stored {
            Ok(()) => {
                if let Some((node, why)) = antivirus_mark(&cmd) {
                    self.fleet
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .mark_stopped(node, why);
                }
                inner.commands.insert(id, cmd);
                drop(ack); // durable: acknowledge
            }
            Err(e) => {
                // not acknowledged: the agent sends the result again
                tracing::error!(command = %id, "command result not stored: {e}");
                if let Some(a) = ack {
                    std::mem::forget(a);
                }
            }
        }
    }

    /// Drive the cases once: resend or expire commands, re-check and execute due ones,
    /// verify executed ones. Returns the overdue findings (the caller reconciles them in the
    /// alarm book under [`OVERDUE_RULE`]).
    pub async fn tick(&self, now_ms: u64) -> Vec<Finding> {
        let _turn = self.register_turn.lock().await;
        let mut inner = self.inner.lock().await;
        let resend = self.config.resend_every.as_millis() as u64;
        // commands: resend the same id, or expire
        let ids: Vec<String> = inner
            .commands
            .values()
            .filter(|c| c.status == CommandStatus::Outstanding)
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            let cmd = inner.commands[&id].clone();
            if now_ms >= cmd.expires_ms {
                self.expire(&mut inner, cmd, now_ms);
            } else if cmd.sends == 0 || now_ms.saturating_sub(cmd.last_sent_ms) >= resend {
                self.send(&mut inner, &id, now_ms).await;
            }
        }
        let open: Vec<Case> = inner
            .cases
            .values()
            .filter(|c| !c.state.is_terminal())
            .cloned()
            .collect();
        for c in open {
            let r = match c.state {
                State::Scheduled if c.scheduled_ms.is_some_and(|t| t <= now_ms) => {
                    self.execute_due(&mut inner, &c, now_ms).await
                }
                State::Executed => self.verify(&mut inner, &c, now_ms).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(case = c.id, "reclaim drive: {e}");
            }
        }
        let mut out: Vec<Finding> = inner
            .cases
            .values()
            .filter(|c| c.overdue(now_ms))
            .map(|c| self.overdue_finding(c, now_ms))
            .collect();
        out.extend(
            inner
                .cases
                .values()
                .filter(|c| c.state == State::Notified)
                .map(|c| notice_finding(c, &self.policy.clause)),
        );
        out.extend(self.calendar_findings(inner.cases.values()));
        out
    }

    /// One alarm per year that an open case's deadline is counted through and no calendar
    /// file covers ([`Calendar::covers`]): those working days are weekdays only.
    fn calendar_findings<'a>(&self, cases: impl Iterator<Item = &'a Case>) -> Vec<Finding> {
        let mut missing: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
        for c in cases.filter(|c| !c.state.is_terminal()) {
            for d in [c.deadline_ms, c.total_deadline_ms].into_iter().flatten() {
                let from = self.calendar.day_of(c.state_since_ms).ymd().0;
                let to = self.calendar.day_of(d.saturating_sub(1)).ymd().0;
                for y in from..=to {
                    let jan1 = crate::time::Day::from_ymd(y, 1, 1);
                    if !self.calendar.covers(jan1) {
                        let ids = missing.entry(y).or_default();
                        if !ids.contains(&c.id) {
                            ids.push(c.id);
                        }
                    }
                }
            }
        }
        missing
            .into_iter()
            .map(|(year, ids)| Finding {
                key: AlarmKey {
                    rule: CALENDAR_RULE.into(),
                    subject: format!("calendar:{year}"),
                },
                level: Level::Warning,
                clause: self.policy.clause.clone(),
                unit: None,
                title: format!(
                    "工作日历缺少 {year} 年：回收工单 {} 的期限按仅排除周末计算（未计法定节假日与调休），请依国务院办公厅关于{year}年部分节假日安排的通知补充日历文件（[reclaim] calendars）",
                    ids.iter()
                        .map(|i| format!("#{i}"))
                        .collect::<Vec<_>>()
                        .join("、")
                ),
                evidence: json!({
                    "year": year,
                    "cases": ids,
                    "calendars": self.calendar.names,
                }),
            })
            .collect()
    }

    fn expire(&self, inner: &mut Inner, mut cmd: CommandRecord, now_ms: u64) {
        cmd.status = CommandStatus::Expired;
        cmd.message = format!(
            "no result from {} before the command expired at {}: the outcome is unknown until the host answers",
            cmd.node,
            beijing_time(cmd.expires_ms)
        );
        let mut w = ReclaimWrite {
            commands: vec![cmd.clone()],
            ..ReclaimWrite::default()
        };
        let case = cmd
            .case_id
            .and_then(|i| inner.cases.get(&i).cloned())
            .filter(|c| c.command.as_deref() == Some(&cmd.id) && c.state.awaits_command());
        let mut next = None;
        if let Some(c) = case {
            match c.apply(
                Step::Failed,
                &Actor::system(),
                &cmd.message,
                json!({"command": cmd.id, "node": cmd.node, "expired": true}),
                &self.rules(),
                now_ms,
            ) {
                Ok((n, log)) => {
                    w.audit.push(audit_of(&n, &log));
                    w.cases.push(n.clone());
                    w.log.push(log);
                    next = Some(n);
                }
                Err(e) => tracing::error!("expiry not applicable: {e}"),
            }
        } else {
            w.audit.push(
                AuditEvent::CommandExpired {
                    purpose: cmd.purpose.clone(),
                    command: cmd.id.clone(),
                    node: cmd.node.clone(),
                }
                .entry(now_ms, &Actor::job("job:reclaim")),
            );
        }
        match inner.storage.reclaim_write(&w) {
            Ok(()) => {
                tracing::warn!(command = %cmd.id, node = %cmd.node, "command expired without a result");
                if let Some((node, why)) = antivirus_mark(&cmd) {
                    self.fleet
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .mark_stopped(node, why);
                }
                inner.commands.insert(cmd.id.clone(), cmd);
                if let Some(n) = next {
                    self.mark(&n);
                    inner.cases.insert(n.id, n);
                }
            }
            Err(e) => tracing::error!(command = %cmd.id, "expiry not stored: {e}"),
        }
    }

    /// A scheduled case is due: re-check that the finding still holds, then send the command.
    async fn execute_due(
        &self,
        inner: &mut Inner,
        c: &Case,
        now_ms: u64,
    ) -> Result<(), ReclaimError> {
        if c.disputed && self.policy.agreement_required {
            // scheduled before the profile asked for the agreement: it waits, saying why
            let e = CaseError::NoAgreement {
                case: c.id,
                clause: self.policy.agreement_clause.clone(),
            };
            note(inner, c, e.to_string())?;
            return Err(e.into());
        }
        let recheck = match &c.basis {
            // the unit's approved termination: the application is the basis, nothing to re-check
            Basis::Application { application } => json!({"application": application}),
            // an ended allocation: still ended (no extension or conversion since)
            Basis::Expired { .. } => {
                let ends = {
                    let reg = self.register.read().unwrap_or_else(|p| p.into_inner());
                    reg.vm_by_uuid(&c.uuid)
                        .filter(|v| v.term.kind.expires())
                        .and_then(|v| v.term.ends_ms)
                };
                match ends {
                    Some(e) if e <= now_ms => json!({"expired_ms": e}),
                    _ => {
                        let reason = "执行前复核：该资源已延期或转为正式使用，不再回收";
                        self.transition(
                            inner,
                            c,
                            Step::Withdraw,
                            &Actor::system(),
                            reason,
                            serde_json::Value::Null,
                            None,
                            now_ms,
                        )
                        .await?;
                        return Ok(());
                    }
                }
            }
            Basis::LowUse => {
                let window = self.policy.recheck_within.as_millis() as u64;
                let fresh = inner.detections.get(&c.uuid).filter(|(ts, d)| {
                    now_ms.saturating_sub(*ts) <= window
                        && std::mem::discriminant(&d.kind) == std::mem::discriminant(&c.kind)
                });
                let Some((ts, d)) = fresh.cloned() else {
                    let reason = format!(
                        "re-check before acting: the VM was not found low-use within the last {}; not acted on",
                        crate::time::duration::format(&self.policy.recheck_within)
                    );
                    self.transition(
                        inner,
                        c,
                        Step::Withdraw,
                        &Actor::system(),
                        &reason,
                        serde_json::Value::Null,
                        None,
                        now_ms,
                    )
                    .await?;
                    return Ok(());
                };
                json!({"detected_ms": ts, "evidence": d.evidence})
            }
        };
        let (host, vm) = match self.locate(c) {
            Ok(x) => x,
            Err(e) => {
                // the step waits (the next tick tries again), saying why on the case
                note(inner, c, e.to_string())?;
                return Err(e);
            }
        };
        let mut c2 = c.clone();
        c2.snapshot = Some(snapshot_name(c.id));
        let action = self.action_for(&c2, vm);
        let rec = CommandRecord::new(
            &host,
            Some(c.id),
            format!("reclaim:{}", c.id),
            action,
            now_ms,
            self.config.command_ttl,
        )?;
        let detail = json!({"recheck": recheck, "command": rec.id, "node": host, "action": rec.action.kind()});
        self.transition(
            inner,
            &c2,
            Step::Execute {
                command: rec.id.clone(),
            },
            &Actor::system(),
            "",
            detail,
            Some(rec),
            now_ms,
        )
        .await?;
        Ok(())
    }

    /// An executed case: verified when the host it went through and the VM's own agent both
    /// show the VM stopped (or at the new size), see [`outcome`]; failed when they do not agree
    /// within `verify_within` of the result (the host's "ok" alone is not a done stop).
    async fn verify(&self, inner: &mut Inner, c: &Case, now_ms: u64) -> Result<(), ReclaimError> {
        let sent_ms = c
            .command
            .as_ref()
            .and_then(|id| inner.commands.get(id))
            .map_or(c.state_since_ms, |cmd| cmd.created_ms);
        let verdict = {
            let fleet = self.fleet.read().unwrap_or_else(|p| p.into_inner());
            outcome(&fleet, c, sent_ms, now_ms)
        };
        match verdict {
            Outcome::Confirmed(detail) => {
                self.transition(
                    inner,
                    c,
                    Step::Verify,
                    &Actor::system(),
                    "",
                    detail,
                    None,
                    now_ms,
                )
                .await?;
            }
            Outcome::Pending(why) => {
                let within = self.config.verify_within;
                if now_ms.saturating_sub(c.state_since_ms) < within.as_millis() as u64 {
                    note(inner, c, why)?;
                } else {
                    let reason = format!(
                        "执行结果未获证实：宿主机报告成功后 {} 内，宿主机与虚拟机自身的上报未一致显示已执行（{why}）；请核查后重试或回滚",
                        crate::time::duration::format(&within)
                    );
                    self.transition(
                        inner,
                        c,
                        Step::Failed,
                        &Actor::system(),
                        &reason,
                        json!({"command": c.command, "host": c.host, "unconfirmed": true}),
                        None,
                        now_ms,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    fn overdue_finding(&self, c: &Case, now_ms: u64) -> Finding {
        let waiting = match c.state {
            State::Detected => "等待运维单位通知使用单位",
            State::Notified => "等待使用单位答复",
            State::Agreed | State::Disputed => "等待运维单位报主管部门备案",
            State::Filed => "等待主管部门审批",
            _ => "等待实施回收/降配",
        };
        let days = c
            .deadline_ms
            .map_or(0, |d| self.calendar.working_days_between(d - 1, now_ms));
        Finding {
            key: AlarmKey {
                rule: OVERDUE_RULE.into(),
                subject: format!("case:{}", c.id),
            },
            level: if days >= 3 {
                Level::Major
            } else {
                Level::Warning
            },
            // the active profile's clause (004 第十七条 for its total of review and reclaim)
            clause: self.policy.clause.clone(),
            unit: Some(c.unit.clone()),
            title: format!(
                "回收工单 #{} 逾期 {} 个工作日: {} ({})",
                c.id, days, waiting, c.vm_name
            ),
            evidence: json!({
                "case": c.id,
                "state": c.state,
                "deadline": c.deadline_ms.map(|d| beijing_time(d - 1)),
                "overdue_working_days": days,
                "uuid": c.uuid,
            }),
        }
    }

    /// The antivirus stop (承诺书): after the authority's approval, stop the VM behind agent
    /// node `vm_node` with a snapshot first, through the same command path. Returns the command.
    pub async fn stop_for_antivirus(
        &self,
        vm_node: &str,
        by: &Actor,
        now_ms: u64,
    ) -> Result<CommandRecord, ReclaimError> {
        let purpose = format!("antivirus:{vm_node}");
        let located = self.locate_node(vm_node).and_then(|(host, vm)| {
            let rec = CommandRecord::new(
                &host,
                None,
                purpose.clone(),
                Action::Stop(vm, format!("yunjian-antivirus-{}", now_ms / 1000)),
                now_ms,
                self.config.command_ttl,
            )?;
            Ok((host, rec))
        });
        let mut inner = self.inner.lock().await;
        let (host, rec) = match located {
            Ok(x) => x,
            Err(e) => {
                // visible in the audit log: the approval stands, the stop could not be sent
                inner.storage.reclaim_write(&ReclaimWrite {
                    audit: vec![AuditEvent::AntivirusStopCommandFailed {
                        purpose,
                        error: e.to_string(),
                        approved_by: by.name.clone(),
                    }
                    .entry(now_ms, &Actor::job("job:reclaim"))],
                    ..ReclaimWrite::default()
                })?;
                return Err(e);
            }
        };
        inner.storage.reclaim_write(&ReclaimWrite {
            commands: vec![rec.clone()],
            audit: vec![AuditEvent::AntivirusStopCommand {
                purpose,
                command: rec.id.clone(),
                host: host.clone(),
                snapshot: snapshot_of(&rec.action),
            }
            .entry(now_ms, by)],
            ..ReclaimWrite::default()
        })?;
        inner.commands.insert(rec.id.clone(), rec.clone());
        if let Some((node, why)) = antivirus_mark(&rec) {
            self.fleet
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .mark_stopped(node, why);
        }
        self.send(&mut inner, &rec.id, now_ms).await;
        Ok(inner.commands[&rec.id].clone())
    }

    /// The host listing the VM whose own agent is `vm_node` (joined by SMBIOS UUID).
    fn locate_node(&self, vm_node: &str) -> Result<(String, VmRef), ReclaimError> {
        let uuid = {
            let fleet = self.fleet.read().unwrap_or_else(|p| p.into_inner());
            fleet
                .get(vm_node)
                .and_then(|st| st.inventory.as_ref())
                .and_then(|i| i.smbios_uuid.clone())
        }
        .ok_or_else(|| ReclaimError::UnknownVm(vm_node.into()))?;
        let (host, g) = self.command_host(&uuid).map_err(|e| match e {
            Unaddressable::NoHost => ReclaimError::UnknownVm(vm_node.into()),
            Unaddressable::Conflict(c) => contested(&uuid, c),
        })?;
        Ok((
            host,
            VmRef {
                uuid: uuid.to_ascii_lowercase(),
                name: g.name,
            },
        ))
    }

    /// Commands sent for a purpose (e.g. `antivirus:vm-07`), newest first.
    pub async fn commands_for(&self, purpose: &str) -> Result<Vec<CommandRecord>, ReclaimError> {
        let mut inner = self.inner.lock().await;
        let mut v: Vec<CommandRecord> = inner
            .storage
            .commands(false)?
            .into_iter()
            .filter(|c| c.purpose == purpose)
            .collect();
        v.reverse();
        Ok(v)
    }
}

/// The notice to the unit (003 第二十一条, 002 第十一条: the plan is settled with the unit),
/// citing the active profile's `[reclaim] clause`.
fn notice_finding(c: &Case, clause: &str) -> Finding {
    let what = match &c.kind {
        Kind::Idle => "闲置，拟停机回收".to_string(),
        Kind::OverProvisioned { recommended } => format!(
            "配置过度，拟降配至 {} 核 / {} GiB",
            recommended.vcpus,
            recommended.mem_kib / (1024 * 1024)
        ),
    };
    Finding {
        key: AlarmKey {
            rule: NOTICE_RULE.into(),
            subject: format!("case:{}", c.id),
        },
        level: Level::Info,
        // the active profile's own clause, never another region's
        clause: clause.to_string(),
        unit: Some(c.unit.clone()),
        title: format!(
            "回收工单 #{}: {} {}，请使用单位在截止前答复（同意或提出异议）",
            c.id, c.vm_name, what
        ),
        evidence: json!({
            "case": c.id,
            "uuid": c.uuid,
            "deadline": c.deadline_ms.map(|d| beijing_time(d - 1)),
            "evidence": c.evidence,
        }),
    }
}

/// Say on the step's timeline entry what it changed in the register, or why nothing.
fn note_register(log: &mut LogEntry, made: &Result<Update, changes::ChangeError>) {
    let note = match made {
        Ok(u) => {
            json!({"action": u.audit.action, "from": u.audit.detail["from"], "to": u.audit.detail["to"]})
        }
        Err(e) => json!({"unchanged": e.to_string()}),
    };
    match &mut log.detail {
        serde_json::Value::Object(m) => {
            m.insert("register".into(), note);
        }
        other => {
            let d = other.take();
            *other = json!({"detail": d, "register": note});
        }
    }
}

/// Why the case's VM is stopped on purpose, if it is: a stop from the moment its command is
/// out until the command fails or the case is rolled back (then released, closed).
fn stop_mark(c: &Case) -> Option<String> {
    let stopped = c.is_stop()
        && matches!(
            c.state,
            State::Executing
                | State::Executed
                | State::Verified
                | State::Releasing
                | State::RollingBack
                | State::Closed
        );
    stopped.then(|| format!("回收工单 #{} 停机", c.id))
}

/// The VM agent an antivirus stop command is for, and its mark: set while the command is out
/// or done, withdrawn when it failed or expired unanswered.
fn antivirus_mark(cmd: &CommandRecord) -> Option<(&str, Option<String>)> {
    let node = cmd.purpose.strip_prefix("antivirus:")?;
    let why = match cmd.status {
        CommandStatus::Outstanding | CommandStatus::Succeeded => {
            Some(format!("防病毒卸载停机（指令 {}）", cmd.id))
        }
        _ => None,
    };
    Some((node, why))
}

fn contested(uuid: &str, c: ClaimConflict) -> ReclaimError {
    ReclaimError::Contested {
        uuid: uuid.to_ascii_lowercase(),
        conflict: c.to_string(),
    }
}

/// Say on the case why it waits (stored only when the reason changed).
fn note(inner: &mut Inner, c: &Case, why: String) -> Result<(), ReclaimError> {
    if c.note.as_deref() != Some(why.as_str()) {
        let mut n = c.clone();
        n.note = Some(why);
        inner.storage.reclaim_write(&ReclaimWrite {
            cases: vec![n.clone()],
            ..ReclaimWrite::default()
        })?;
        inner.cases.insert(n.id, n);
    }
    Ok(())
}

pub fn snapshot_name(case: u64) -> String {
    format!("yunjian-reclaim-{case}")
}

fn snapshot_of(a: &Action) -> Option<String> {
    match a {
        Action::Snapshot(_, s) | Action::Stop(_, s) | Action::Downsize(_, s, _) => Some(s.clone()),
        _ => None,
    }
}

/// Every case change is an operation: audited with who, role, when and why.
fn audit_of(c: &Case, l: &LogEntry) -> AuditEntry {
    AuditEvent::ReclaimStep {
        case: c.id,
        step: l.step.clone(),
        detail: json!({
            "role": l.role,
            "from": l.from,
            "to": l.to,
            "reason": l.reason,
            "unit": c.unit,
            "uuid": c.uuid,
            "detail": l.detail,
        }),
    }
    .entry(
        l.ts_ms,
        &match l.role {
            Role::System => Actor::job("job:reclaim"),
            role => Actor::person(
                l.actor.clone(),
                role,
                (role == Role::Unit).then(|| c.unit.clone()),
            ),
        },
    )
}

/// Only people with these roles may feed detections by hand (the usage module feeds directly).
pub fn may_feed(role: Role) -> Result<(), ReclaimError> {
    match role {
        Role::Ops => Ok(()),
        r => Err(ReclaimError::Forbidden {
            role: r.as_str(),
            what: "录入降配回收发现",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::register::test_support::vm;
    use crate::register::{Register, Unit, UnitRecord};
    use crate::store::prelude::*;
    use yunjian_protocol::{
        Body, CommandResult, Envelope, GuestView, Inventory, MasterKey, VmSize,
    };
    use yunjian_store_sqlite::SqliteStorage;

    /// The people acting in these tests.
    fn ops() -> Actor {
        Actor::person("ops-zhang", Role::Ops, None)
    }

    fn unit() -> Actor {
        Actor::person("li", Role::Unit, Some("财政局".into()))
    }

    fn chief() -> Actor {
        Actor::person("wang", Role::Authority, None)
    }

    const UUID: &str = "4c4c4544-0001-0002-0003-000000000004";
    const T0: u64 = 1_790_000_000_000;

    struct Setup {
        reclaim: Reclaim,
        db: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        setup_with(ReclaimPolicy::default())
    }

    fn setup_with(policy: ReclaimPolicy) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("y.db");
        let mut s = SqliteStorage::open(&db).unwrap();
        s.migrate().unwrap();
        let fleet = Fleet::shared();
        {
            let mut f = fleet.write().unwrap();
            let inv = Inventory {
                hostname: "vm1".into(),
                role: yunjian_protocol::Role::Guest,
                os: String::new(),
                kernel: String::new(),
                cpu_model: String::new(),
                cpu_cores: 2,
                mem_total_kib: 1 << 20,
                disks: vec![],
                nics: vec![],
                machine_id: String::new(),
                smbios_uuid: Some(UUID.to_uppercase()),
                rack: None,
            };
            f.apply(Envelope::new("vm1", 1, T0, Body::Inventory(inv)), T0);
            let g = GuestView {
                uuid: UUID.into(),
                name: "cz-app-01".into(),
                vcpus: 4,
                mem_kib: 8 << 20,
                disk_kib: 0,
                running: true,
            };
            f.apply(Envelope::new("h1", 1, T0, Body::Guests(vec![g])), T0);
        }
        let mut reg = Register::default();
        reg.apply(UnitRecord {
            unit: Unit {
                name: "财政局".into(),
                ..Unit::default()
            },
            vms: vec![vm("财政局", UUID, 4)],
        });
        let reclaim = Reclaim::start(
            Box::new(s),
            ReclaimConfig::default(),
            policy,
            Calendar::builtin(),
            MasterKey::from_bytes([1; 32]),
            Outlet::Detached,
            fleet,
            Arc::new(std::sync::RwLock::new(reg)),
        )
        .unwrap();
        Setup {
            reclaim,
            db,
            _dir: dir,
        }
    }

    fn reply(node: &str, id: &str, ok: bool) -> CommandReply {
        CommandReply {
            node: node.into(),
            result: CommandResult {
                id: super::super::command::unhex(id).unwrap(),
                ok,
                message: if ok {
                    "done".into()
                } else {
                    "libvirt: domain busy".into()
                },
            },
            ack: None,
            evidence: None,
        }
    }

    fn audit(db: &std::path::Path, subject: &str) -> Vec<String> {
        let mut s = SqliteStorage::open(db).unwrap();
        s.audit(Some(subject), 100)
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect()
    }

    #[tokio::test]
    async fn the_antivirus_stop_goes_to_the_vms_host_and_its_result_is_recorded() {
        let s = setup();
        let cmd = s
            .reclaim
            .stop_for_antivirus(
                "vm1",
                &Actor::person("chief-wang", Role::Authority, None),
                T0,
            )
            .await
            .unwrap();
        assert_eq!(cmd.node, "h1", "sent to the host listing the VM");
        assert!(
            s.reclaim
                .fleet
                .read()
                .unwrap()
                .get("vm1")
                .unwrap()
                .stopped_on_purpose
                .is_some(),
            "the stop decision: its silence is not a fault"
        );
        assert!(
            matches!(&cmd.action, Action::Stop(vm, snap) if vm.uuid == UUID && snap.starts_with("yunjian-antivirus-"))
        );
        assert_eq!(cmd.status, CommandStatus::Outstanding);
        assert_eq!(cmd.sends, 0, "no broker here: stays outstanding, visibly");
        // a result from another node is not taken
        s.reclaim.on_reply(reply("h2", &cmd.id, true), T0 + 1).await;
        let listed = s.reclaim.commands_for("antivirus:vm1").await.unwrap();
        assert_eq!(listed[0].status, CommandStatus::Outstanding);
        s.reclaim.on_reply(reply("h1", &cmd.id, true), T0 + 2).await;
        let listed = s.reclaim.commands_for("antivirus:vm1").await.unwrap();
        assert_eq!(
            (listed[0].status, listed[0].message.as_str()),
            (CommandStatus::Succeeded, "done")
        );
        assert_eq!(
            audit(&s.db, "antivirus:vm1"),
            ["command.succeeded", "antivirus.stop_command"]
        );
        // a VM no host lists: refused, and the failure is in the audit log
        let e = s
            .reclaim
            .stop_for_antivirus("vm-unknown", &chief(), T0)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("vm-unknown"), "{e}");
        assert_eq!(
            audit(&s.db, "antivirus:vm-unknown"),
            ["antivirus.stop_command_failed"]
        );
    }

    async fn to_executing(r: &Reclaim) -> u64 {
        let ops = ops();
        let unit = unit();
        let chief = chief();
        let d = Detection {
            uuid: UUID.to_uppercase(),
            kind: Kind::Idle,
            evidence: json!({"p95": 0.4}),
        };
        let id = r.detect(vec![d.clone()], T0).await.unwrap()[0];
        assert!(
            r.held_units().await.is_empty(),
            "not told yet: nothing held"
        );
        r.act(id, "notify", &ops, "", None, T0).await.unwrap();
        assert_eq!(r.held_units().await["财政局"].0, [id]);
        r.act(id, "agree", &unit, "", None, T0).await.unwrap();
        r.act(id, "file", &ops, "", None, T0).await.unwrap();
        r.act(id, "approve", &chief, "", None, T0).await.unwrap();
        r.act(id, "schedule", &ops, "", Some(T0 + 1000), T0)
            .await
            .unwrap();
        // not due yet
        r.tick(T0 + 500).await;
        assert_eq!(r.cases(T0).await[0].case.state, State::Scheduled);
        r.detect(vec![d], T0 + 900).await.unwrap();
        r.tick(T0 + 1000).await;
        id
    }

    /// Walk a case of `kind` from detection to `scheduled`, due now, with a fresh finding.
    async fn scheduled(r: &Reclaim, kind: Kind, t: u64) -> u64 {
        let d = Detection {
            uuid: UUID.into(),
            kind,
            evidence: json!({}),
        };
        let id = r.detect(vec![d.clone()], t).await.unwrap()[0];
        for (step, who) in [
            ("notify", ops()),
            ("agree", unit()),
            ("file", ops()),
            ("approve", chief()),
        ] {
            r.act(id, step, &who, "", None, t).await.unwrap();
        }
        r.act(id, "schedule", &ops(), "", Some(t + 1000), t)
            .await
            .unwrap();
        r.detect(vec![d], t + 900).await.unwrap();
        id
    }

    fn guest_list(r: &Reclaim, seq: u64, vcpus: u16, mem_gib: u64, running: bool, t: u64) {
        let g = GuestView {
            uuid: UUID.into(),
            name: "cz-app-01".into(),
            vcpus,
            mem_kib: mem_gib << 20,
            disk_kib: 0,
            running,
        };
        r.fleet
            .write()
            .unwrap()
            .apply(Envelope::new("h1", seq, t, Body::Guests(vec![g])), t);
    }

    #[tokio::test]
    async fn a_verified_downsize_lowers_the_approved_size_and_the_pools_70_percent_alarm_clears() {
        use std::time::Duration;
        use yunjian_aggregator_core::alarms::{AlarmBook, AlarmEvent};
        use yunjian_aggregator_core::policy::{rules, Context, Engine, Profile};
        let s = setup();
        let r = &s.reclaim;
        // pool A is host h1 alone: 8 cores, 20 GiB, 1 TiB; the VM is approved 4 vCPU / 16 GB,
        // so the pool's memory is 80% allocated
        {
            let inv = Inventory {
                hostname: "h1".into(),
                role: yunjian_protocol::Role::Host,
                os: String::new(),
                kernel: String::new(),
                cpu_model: String::new(),
                cpu_cores: 8,
                mem_total_kib: 20 << 20,
                disks: vec![yunjian_protocol::DiskInfo {
                    mount: "/".into(),
                    fs_type: "xfs".into(),
                    total_kib: 1024 << 20,
                }],
                nics: vec![],
                machine_id: String::new(),
                smbios_uuid: None,
                rack: None,
            };
            r.fleet
                .write()
                .unwrap()
                .apply(Envelope::new("h1", 2, T0, Body::Inventory(inv)), T0);
            let mut reg = r.register.write().unwrap();
            reg.pools = vec![crate::register::Pool {
                name: "A".into(),
                hosts: vec!["h1".into()],
                reserved: crate::register::Resources::default(),
                overcommit: crate::register::Resources {
                    vcpus: 1.0,
                    mem_gb: 1.0,
                    disk_gb: 1.0,
                    net_mbps: 1.0,
                },
                nic_mbps: 0.0,
            }];
            reg.touch();
        }
        let mut profile = Profile::default();
        profile.capacity.thresholds.hold = Duration::ZERO;
        let mut engine = Engine::new(rules::build(&profile, &[]), AlarmBook::new());
        let mut evaluate = |r: &Reclaim, now_ms: u64| -> Vec<AlarmEvent> {
            let fleet = r.fleet.read().unwrap();
            let reg = r.register.read().unwrap();
            engine
                .evaluate(&Context {
                    fleet: &fleet,
                    register: &reg,
                    profile: &profile,
                    now_ms,
                })
                .into_iter()
                .filter(|e| e.alarm().key.subject == "pool:A/memory/allocated")
                .collect()
        };
        let raised = evaluate(r, T0);
        assert!(
            matches!(&raised[..], [AlarmEvent::Raised(a)] if a.title.contains("80.0%")),
            "{raised:?}"
        );

        // downsized to 2 vCPU / 4 GiB: executed, then shown by the host and the VM itself
        let size = VmSize {
            vcpus: 2,
            mem_kib: 4 << 20,
        };
        let id = scheduled(r, Kind::OverProvisioned { recommended: size }, T0).await;
        r.tick(T0 + 1000).await;
        let cmd = r.cases(T0).await[0].command.clone().unwrap();
        r.on_reply(reply("h1", &cmd.id, true), T0 + 2000).await;
        assert_eq!(
            r.register.read().unwrap().vm_by_uuid(UUID).unwrap().vcpus,
            4,
            "executed is not verified: the register waits"
        );
        guest_list(r, 3, 2, 4, true, T0 + 3000);
        r.tick(T0 + 4000).await;
        let (v, log, _) = r.case(id, T0 + 4000).await.unwrap();
        assert_eq!(v.case.state, State::Verified);
        // the register: the approved size is the new one, in memory and in storage
        let vm = r
            .register
            .read()
            .unwrap()
            .vm_by_uuid(UUID)
            .cloned()
            .unwrap();
        assert_eq!((vm.vcpus, vm.mem_gb, vm.data_disk_gb), (2, 4, 300));
        let stored = SqliteStorage::open(&s.db).unwrap().load_register().unwrap();
        assert_eq!(stored.vm_by_uuid(UUID), Some(&vm));
        // one audited register change naming the case, and the case's timeline says so
        let mut db = SqliteStorage::open(&s.db).unwrap();
        let a = db.audit(Some(&format!("vm:{UUID}")), 10).unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(
            (a[0].action.as_str(), &a[0].detail["case"]),
            ("register.downsize", &json!(id))
        );
        assert_eq!(a[0].detail["from"], json!({"vcpus": 4, "mem_gb": 16}));
        assert_eq!(a[0].detail["to"], json!({"vcpus": 2, "mem_gb": 4}));
        let verify = log.iter().find(|l| l.step == "verify").unwrap();
        assert_eq!(verify.detail["register"]["action"], "register.downsize");
        // the pool's allocation follows (4 of 20 GiB: 20%) and the alarm clears
        // (the capacity rule runs every 10 s)
        let after = evaluate(r, T0 + 60_000);
        assert!(matches!(&after[..], [AlarmEvent::Cleared(_)]), "{after:?}");
        // rolled back: the VM runs at its old size again, and so is it approved
        let v = r
            .act(
                id,
                "rollback",
                &ops(),
                "业务高峰需要原配置",
                None,
                T0 + 70_000,
            )
            .await
            .unwrap();
        let back = v.command.unwrap();
        r.on_reply(reply("h1", &back.id, true), T0 + 71_000).await;
        assert_eq!(r.cases(T0).await[0].case.state, State::RolledBack);
        let vm = r
            .register
            .read()
            .unwrap()
            .vm_by_uuid(UUID)
            .cloned()
            .unwrap();
        assert_eq!((vm.vcpus, vm.mem_gb), (4, 16));
        assert_eq!(
            audit(&s.db, &format!("vm:{UUID}")),
            ["register.restore", "register.downsize"]
        );
    }

    #[tokio::test]
    async fn a_released_vm_leaves_the_register_in_the_step_that_closes_the_case() {
        let s = setup();
        let r = &s.reclaim;
        let status = |s| Body::Status(s);
        // the VM's own agent is online before the stop
        r.fleet.write().unwrap().apply(
            Envelope::new("vm1", 8, T0, status(yunjian_protocol::Status::Online)),
            T0,
        );
        let id = scheduled(r, Kind::Idle, T0).await;
        r.tick(T0 + 1000).await;
        let cmd = r.cases(T0).await[0].command.clone().unwrap();
        r.on_reply(reply("h1", &cmd.id, true), T0 + 2000).await;
        // the host lists it shut off, the VM's own agent went offline
        guest_list(r, 2, 4, 8, false, T0 + 3000);
        r.fleet.write().unwrap().apply(
            Envelope::new(
                "vm1",
                9,
                T0 + 3000,
                status(yunjian_protocol::Status::Offline),
            ),
            T0 + 3000,
        );
        r.tick(T0 + 4000).await;
        assert_eq!(r.cases(T0).await[0].case.state, State::Verified);
        assert!(
            r.register.read().unwrap().vm_by_uuid(UUID).is_some(),
            "stopped and held: still registered"
        );
        assert_eq!(
            r.fleet
                .read()
                .unwrap()
                .get("vm1")
                .unwrap()
                .stopped_on_purpose
                .as_deref(),
            Some("回收工单 #1 停机"),
            "stopped on purpose: not silent"
        );
        let after_hold = T0 + 93 * 86_400_000;
        // no release before the unit's handover
        let e = r
            .act(id, "close", &ops(), "", None, after_hold)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "case_handover_required");
        r.act(id, "handover", &unit(), "数据已备份", None, after_hold)
            .await
            .unwrap();
        let v = r
            .act(id, "close", &ops(), "", None, after_hold)
            .await
            .unwrap();
        let release = v.command.unwrap();
        // after the handover the data goes: every volume wiped, then deleted
        assert!(matches!(release.action, Action::ReleaseAndWipe(_)));
        // the host's evidence came right before its result: stored on the case's timeline
        let evidence = yunjian_protocol::Evidence::Wipe(yunjian_protocol::WipeEvidence {
            vm: VmRef {
                uuid: UUID.into(),
                name: "cz-app-01".into(),
            },
            disks: vec![yunjian_protocol::DiskWipe {
                target: "vda".into(),
                source: "/var/lib/libvirt/images/cz-app-01.qcow2".into(),
                state: yunjian_protocol::DiskWipeState::Wiped {
                    volume: yunjian_protocol::VolumeInfo {
                        pool: "default".into(),
                        name: "cz-app-01.qcow2".into(),
                        capacity_bytes: 64 << 30,
                    },
                    algorithm: yunjian_protocol::WipeAlgorithm::Zero,
                    wiped_ms: after_hold + 500,
                    deleted: true,
                },
            }],
        });
        let mut done = reply("h1", &release.id, true);
        done.evidence = Some((evidence, None));
        r.on_reply(done, after_hold + 1000).await;
        assert_eq!(r.cases(T0).await[0].case.state, State::Closed);
        let (_, log, _) = r.case(id, after_hold + 2000).await.unwrap();
        let released = log.iter().find(|l| l.step == "released").unwrap();
        let disk = &released.detail["evidence"]["Wipe"]["disks"][0];
        assert_eq!(disk["target"], "vda", "{}", released.detail);
        assert_eq!(
            disk["state"]["Wiped"]["deleted"], true,
            "{}",
            released.detail
        );
        assert!(r.register.read().unwrap().vm_by_uuid(UUID).is_none());
        let stored = SqliteStorage::open(&s.db).unwrap().load_register().unwrap();
        assert!(stored.vm_by_uuid(UUID).is_none(), "retired in storage too");
        assert_eq!(
            audit(&s.db, &format!("vm:{UUID}")),
            ["register.retire"],
            "one audited change"
        );
        let mut db = SqliteStorage::open(&s.db).unwrap();
        assert_eq!(
            db.audit(Some(&format!("vm:{UUID}")), 1).unwrap()[0].detail["case"],
            json!(id)
        );
    }

    #[tokio::test]
    async fn a_deadline_in_a_year_no_calendar_covers_raises_an_alarm_naming_the_year() {
        let s = setup();
        let r = &s.reclaim;
        let cal = Calendar::builtin();
        let day = |d: &str| crate::time::Day::parse(d).unwrap();
        // notified Tuesday 29 Dec 2026: the unit's 5 working days run into 2027, which the
        // built-in calendar does not cover (1 January would count as a working day)
        let t = cal.start_of(day("2026-12-29")) + 10 * 3_600_000;
        let d = Detection {
            uuid: UUID.into(),
            kind: Kind::Idle,
            evidence: json!({}),
        };
        let id = r.detect(vec![d], t).await.unwrap()[0];
        assert!(
            r.tick(t).await.iter().all(|f| f.key.rule != CALENDAR_RULE),
            "notify within 2026: nothing missing"
        );
        r.act(id, "notify", &ops(), "", None, t).await.unwrap();
        let f = r.tick(t).await;
        let missing: Vec<&Finding> = f.iter().filter(|f| f.key.rule == CALENDAR_RULE).collect();
        assert_eq!(missing.len(), 1, "{f:?}");
        let m = missing[0];
        assert_eq!(
            (m.key.subject.as_str(), m.level),
            ("calendar:2027", Level::Warning)
        );
        assert!(
            m.title.contains("缺少 2027 年")
                && m.title.contains("#1")
                && m.title
                    .contains("国务院办公厅关于2027年部分节假日安排的通知"),
            "{}",
            m.title
        );
        assert_eq!(
            m.clause,
            ReclaimPolicy::default().clause,
            "the active profile's"
        );
        assert_eq!(m.evidence["cases"], json!([id]));
        // with next year's calendar added there is nothing to say
        let mut with_2027 = Calendar::builtin();
        with_2027
            .merge(
                Calendar::parse(
                    "name = \"cn-2027\"\nutc_offset_hours = 8\nyears = [2027]\nholidays = [{ name = \"元旦\", from = \"2027-01-01\", to = \"2027-01-01\" }]",
                    "cn-2027",
                )
                .unwrap(),
            )
            .unwrap();
        let again = Reclaim::start(
            Box::new(SqliteStorage::open(&s.db).unwrap()),
            ReclaimConfig::default(),
            ReclaimPolicy::default(),
            with_2027,
            MasterKey::from_bytes([1; 32]),
            Outlet::Detached,
            r.fleet.clone(),
            r.register.clone(),
        )
        .unwrap();
        assert!(again
            .tick(t)
            .await
            .iter()
            .all(|f| f.key.rule != CALENDAR_RULE));
    }

    #[tokio::test]
    async fn under_004_a_unit_that_refuses_has_its_service_limited_before_the_reclaim() {
        let d = Detection {
            uuid: UUID.into(),
            kind: Kind::Idle,
            evidence: json!({}),
        };
        // 003 has no such rung
        let s = setup();
        let id = s.reclaim.detect(vec![d.clone()], T0).await.unwrap()[0];
        s.reclaim
            .act(id, "notify", &ops(), "", None, T0)
            .await
            .unwrap();
        let e = s
            .reclaim
            .act(id, "limit", &ops(), "拒不整改", None, T0 + 30 * 86_400_000)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "case_no_limit_rung");

        let s = setup_with(crate::policy::Profile::load("004").unwrap().reclaim);
        let r = &s.reclaim;
        let id = r.detect(vec![d], T0).await.unwrap()[0];
        let v = r.act(id, "notify", &ops(), "", None, T0).await.unwrap();
        let reply_by = v.case.deadline_ms.unwrap();
        // within the reply deadline the unit has not refused
        let e = r
            .act(id, "limit", &ops(), "拒不整改", None, reply_by - 1000)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "case_not_refused");
        assert!(e.to_string().contains("004 第十六条"), "{e}");
        // only ops limits, with a reason
        let late = reply_by + 1000;
        let e = r
            .act(id, "limit", &chief(), "x", None, late)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "case_role_forbidden");
        let e = r
            .act(id, "limit", &ops(), " ", None, late)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "case_reason_required");
        // silent past the deadline: refused; the caps go to the VM's host as a signed command
        let v = r
            .act(id, "limit", &ops(), "逾期未答复，视为拒不整改", None, late)
            .await
            .unwrap();
        assert_eq!(
            (v.case.state, v.case.limited_ms),
            (State::Notified, Some(late))
        );
        // newest first
        let sent = r.commands_for(&format!("reclaim:{id}")).await.unwrap();
        let limit = sent[0].clone();
        assert_eq!(limit.node, "h1");
        match &limit.action {
            Action::Limit(vm, caps) => {
                assert!(vm.uuid.eq_ignore_ascii_case(UUID));
                assert_eq!(
                    (caps.vcpu_percent, caps.disk_iops_sec, caps.disk_bytes_sec),
                    (Some(50), Some(500), None)
                );
            }
            other => panic!("{other:?}"),
        }
        // once
        let e = r
            .act(id, "limit", &ops(), "再次", None, late)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "case_illegal_step");
        // its result is recorded on the timeline; the case does not move
        r.on_reply(reply("h1", &limit.id, true), late + 10).await;
        let (v, log, _) = r.case(id, late + 20).await.unwrap();
        assert_eq!(v.case.state, State::Notified);
        assert!(log.iter().any(|l| l.step == "limit_result"));
        // lifted: the same command without caps
        let v = r
            .act(id, "unlimit", &ops(), "", None, late + 30)
            .await
            .unwrap();
        assert_eq!(v.case.limited_ms, None);
        let sent = r.commands_for(&format!("reclaim:{id}")).await.unwrap();
        assert!(matches!(
            &sent[0].action,
            Action::Limit(_, caps) if caps.is_none()
        ));
    }

    #[tokio::test]
    async fn under_002_a_disputed_case_waits_for_the_units_agreement_before_it_is_executed() {
        let p002 = crate::policy::Profile::load("002").unwrap().reclaim;
        for (policy, refused) in [(p002, true), (ReclaimPolicy::default(), false)] {
            let s = setup_with(policy);
            let r = &s.reclaim;
            let d = Detection {
                uuid: UUID.into(),
                kind: Kind::Idle,
                evidence: json!({}),
            };
            let id = r.detect(vec![d.clone()], T0).await.unwrap()[0];
            r.act(id, "notify", &ops(), "", None, T0).await.unwrap();
            r.act(id, "dispute", &unit(), "该系统月底结算时使用", None, T0)
                .await
                .unwrap();
            r.act(id, "file", &ops(), "", None, T0).await.unwrap();
            r.act(id, "approve", &chief(), "", None, T0).await.unwrap();
            let schedule = r.act(id, "schedule", &ops(), "", Some(T0 + 1000), T0).await;
            if refused {
                let e = schedule.unwrap_err();
                assert_eq!(e.code(), "case_agreement_required");
                assert!(e.to_string().contains("002 第十一条"), "{e}");
                // ops cannot say the unit agreed; the unit records it itself
                let e = r.act(id, "settle", &ops(), "", None, T0).await.unwrap_err();
                assert_eq!(e.code(), "case_role_forbidden");
                let v = r
                    .act(id, "settle", &unit(), "经协商同意月底后回收", None, T0)
                    .await
                    .unwrap();
                assert_eq!((v.case.state, v.case.disputed), (State::Approved, false));
                r.act(id, "schedule", &ops(), "", Some(T0 + 1000), T0)
                    .await
                    .unwrap();
            } else {
                schedule.unwrap();
            }
            r.detect(vec![d], T0 + 900).await.unwrap();
            r.tick(T0 + 1000).await;
            assert_eq!(r.cases(T0).await[0].case.state, State::Executing);
        }
    }

    #[tokio::test]
    async fn a_disputed_case_scheduled_before_002_applied_waits_saying_why() {
        let s = setup();
        let r = &s.reclaim;
        let d = Detection {
            uuid: UUID.into(),
            kind: Kind::Idle,
            evidence: json!({}),
        };
        let id = r.detect(vec![d.clone()], T0).await.unwrap()[0];
        r.act(id, "notify", &ops(), "", None, T0).await.unwrap();
        r.act(id, "dispute", &unit(), "仍在使用", None, T0)
            .await
            .unwrap();
        r.act(id, "file", &ops(), "", None, T0).await.unwrap();
        r.act(id, "approve", &chief(), "", None, T0).await.unwrap();
        r.act(id, "schedule", &ops(), "", Some(T0 + 1000), T0)
            .await
            .unwrap();
        // the deployment moves to profile 002 before the case is due
        let again = Reclaim::start(
            Box::new(SqliteStorage::open(&s.db).unwrap()),
            ReclaimConfig::default(),
            crate::policy::Profile::load("002").unwrap().reclaim,
            Calendar::builtin(),
            MasterKey::from_bytes([1; 32]),
            Outlet::Detached,
            r.fleet.clone(),
            r.register.clone(),
        )
        .unwrap();
        again.detect(vec![d], T0 + 900).await.unwrap();
        again.tick(T0 + 1000).await;
        let (v, _, cmds) = again.case(id, T0 + 1000).await.unwrap();
        assert_eq!(v.case.state, State::Scheduled);
        assert!(cmds.is_empty(), "nothing sent");
        let note = v.case.note.unwrap_or_default();
        assert!(
            note.contains("002 第十一条") && note.contains("协商一致"),
            "{note}"
        );
    }

    #[tokio::test]
    async fn an_unanswered_command_expires_into_a_visible_failure_and_a_retry_gets_a_new_id() {
        let s = setup();
        let r = &s.reclaim;
        let id = to_executing(r).await;
        let v = &r.cases(T0).await[0];
        assert_eq!(v.case.state, State::Executing);
        let first = v.command.clone().unwrap();
        assert_eq!(first.status, CommandStatus::Outstanding);
        assert_eq!(v.case.snapshot.as_deref(), Some("yunjian-reclaim-1"));
        // a day later, no answer: expired, the case shows the failure with the reason
        let later = T0 + 1000 + 24 * 3_600_000;
        r.tick(later).await;
        let v = &r.cases(later).await[0];
        assert_eq!(v.case.state, State::ExecutionFailed);
        assert_eq!(v.command.as_ref().unwrap().status, CommandStatus::Expired);
        let (_, log, _) = r.case(id, later).await.unwrap();
        let last = log.last().unwrap();
        assert_eq!((last.step.as_str(), last.role), ("failed", Role::System));
        assert!(
            last.reason.contains("h1") && last.reason.contains("unknown"),
            "{}",
            last.reason
        );
        // a late answer is recorded on the command and the timeline, the state stays
        r.on_reply(reply("h1", &first.id, true), later + 1).await;
        let (v, log, cmds) = r.case(id, later + 1).await.unwrap();
        assert_eq!(v.case.state, State::ExecutionFailed);
        assert_eq!(log.last().unwrap().step, "late_result");
        assert_eq!(cmds[0].status, CommandStatus::Succeeded);
        // the unit may not retry
        let unit = unit();
        let e = r
            .act(id, "retry", &unit, "", None, later + 2)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unit"), "{e}");
        // ops retries: a new step, a new id, same snapshot name
        let ops = ops();
        let v = r.act(id, "retry", &ops, "", None, later + 2).await.unwrap();
        let second = v.command.unwrap();
        assert_ne!(second.id, first.id);
        assert!(matches!(&second.action, Action::Stop(_, snap) if snap == "yunjian-reclaim-1"));
    }

    #[tokio::test]
    async fn a_notified_unit_gets_a_notice_and_an_unanswered_one_is_escalated_in_working_days() {
        let s = setup();
        let r = &s.reclaim;
        let cal = Calendar::builtin();
        let day = |d: &str| crate::time::Day::parse(d).unwrap();
        // notified Tuesday 29 Sep 2026 10:00 Beijing: 5 working days → 30 Sep, 8, 9, 10 (调休), 12 Oct
        let t = cal.start_of(day("2026-09-29")) + 10 * 3_600_000;
        let ops = ops();
        let d = Detection {
            uuid: UUID.into(),
            kind: Kind::Idle,
            evidence: json!({}),
        };
        let id = r.detect(vec![d], t).await.unwrap()[0];
        r.act(id, "notify", &ops, "", None, t).await.unwrap();
        let f = r.tick(t).await;
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].key.rule.as_str(), f[0].level),
            (NOTICE_RULE, Level::Info)
        );
        assert_eq!(f[0].unit.as_deref(), Some("财政局"));
        assert_eq!(
            f[0].clause, "003 第二十一条",
            "the active profile's clause only"
        );
        assert_eq!(
            r.cases(t).await[0].case.deadline_ms,
            Some(cal.start_of(day("2026-10-13")))
        );
        // the last minute of 12 Oct is in time; 13 Oct is one working day late
        assert!(r
            .tick(cal.start_of(day("2026-10-13")) - 60_000)
            .await
            .iter()
            .all(|f| f.key.rule != OVERDUE_RULE));
        let late = r.tick(cal.start_of(day("2026-10-13")) + 3_600_000).await;
        let o = late.iter().find(|f| f.key.rule == OVERDUE_RULE).unwrap();
        assert_eq!(
            (o.key.subject.as_str(), o.level),
            ("case:1", Level::Warning)
        );
        assert_eq!(o.clause, "003 第二十一条");
        assert!(
            o.title.contains("等待使用单位答复") && o.title.contains("逾期 1 个工作日"),
            "{}",
            o.title
        );
        // three working days late (13, 14, 15 Oct): major
        let later = r.tick(cal.start_of(day("2026-10-15")) + 3_600_000).await;
        let o = later.iter().find(|f| f.key.rule == OVERDUE_RULE).unwrap();
        assert_eq!(o.level, Level::Major, "{}", o.title);
        let v = &r.cases(cal.start_of(day("2026-10-15")) + 3_600_000).await[0];
        assert!(v.overdue && v.overdue_days == 3);
    }

    #[tokio::test]
    async fn the_recheck_withdraws_a_case_whose_vm_is_no_longer_idle() {
        let s = setup();
        let r = &s.reclaim;
        let ops = ops();
        let unit = unit();
        let chief = chief();
        let d = Detection {
            uuid: UUID.into(),
            kind: Kind::Idle,
            evidence: json!({}),
        };
        let id = r.detect(vec![d], T0).await.unwrap()[0];
        for (step, who) in [
            ("notify", &ops),
            ("agree", &unit),
            ("file", &ops),
            ("approve", &chief),
        ] {
            r.act(id, step, who, "", None, T0).await.unwrap();
        }
        // due two days later; the last finding is from T0, older than the 1-day window
        let due = T0 + 2 * 86_400_000;
        r.act(id, "schedule", &ops, "", Some(due), T0)
            .await
            .unwrap();
        r.tick(due).await;
        let (v, log, cmds) = r.case(id, due).await.unwrap();
        assert_eq!(v.case.state, State::Withdrawn);
        assert!(cmds.is_empty(), "nothing was sent");
        assert!(log.last().unwrap().reason.contains("re-check"));
        assert!(r.held_units().await.is_empty(), "closed cases hold nothing");
    }

    #[tokio::test]
    async fn a_fed_finding_comes_back_from_storage_for_the_recheck() {
        let s = setup();
        let r = &s.reclaim;
        let d = Detection {
            uuid: UUID.to_uppercase(),
            kind: Kind::Idle,
            evidence: json!({"p95": 0.4}),
        };
        let id = r.detect(vec![d], T0).await.unwrap()[0];
        for (step, who) in [
            ("notify", ops()),
            ("agree", unit()),
            ("file", ops()),
            ("approve", chief()),
        ] {
            r.act(id, step, &who, "", None, T0).await.unwrap();
        }
        r.act(id, "schedule", &ops(), "", Some(T0 + 1000), T0)
            .await
            .unwrap();
        // a crash before the case is due: the finding comes back with the cases
        let again = Reclaim::start(
            Box::new(SqliteStorage::open(&s.db).unwrap()),
            ReclaimConfig::default(),
            ReclaimPolicy::default(),
            Calendar::builtin(),
            MasterKey::from_bytes([1; 32]),
            Outlet::Detached,
            r.fleet.clone(),
            r.register.clone(),
        )
        .unwrap();
        again.tick(T0 + 1000).await;
        let (v, log, _) = again.case(id, T0 + 1000).await.unwrap();
        assert_eq!(v.case.state, State::Executing, "{log:?}");
        assert_eq!(log.last().unwrap().detail["recheck"]["detected_ms"], T0);
    }

    #[tokio::test]
    async fn cases_and_outstanding_commands_come_back_from_storage() {
        let s = setup();
        let id = to_executing(&s.reclaim).await;
        let cmd = s.reclaim.cases(T0).await[0].command.clone().unwrap();
        let again = Reclaim::start(
            Box::new(SqliteStorage::open(&s.db).unwrap()),
            ReclaimConfig::default(),
            ReclaimPolicy::default(),
            Calendar::builtin(),
            MasterKey::from_bytes([1; 32]),
            Outlet::Detached,
            Fleet::shared(),
            Arc::default(),
        )
        .unwrap();
        let v = &again.cases(T0).await[0];
        assert_eq!((v.case.id, v.case.state), (id, State::Executing));
        assert_eq!(
            v.command.as_ref().unwrap().id,
            cmd.id,
            "same command, same id"
        );
        again.on_reply(reply("h1", &cmd.id, true), T0 + 5).await;
        assert_eq!(again.cases(T0).await[0].case.state, State::Executed);
        // the timeline is append-only in the database itself
        let conn = rusqlite::Connection::open(&s.db).unwrap();
        let e = conn.execute("DELETE FROM reclaim_log", []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        let e = conn
            .execute("UPDATE reclaim_log SET ts_ms = 0", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
    }
}
