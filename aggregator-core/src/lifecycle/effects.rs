//! What an application must satisfy to be submitted, and what each step changes in the
//! allocation register (pure: the service stores the unit record with the step, in one
//! transaction).
//!
//! | step                       | register                                                   |
//! |----------------------------|------------------------------------------------------------|
//! | approve (new/test/temp)    | the form's rows registered (test / temporary / formal)     |
//! | provision                  | start date; a test or temporary allocation's end date      |
//! | pass_test / go_live        | test → trial → formal                                      |
//! | carry_out (change)         | the VMs' new sizes                                         |
//! | carry_out (termination)    | none here: stop cases open, their release retires the rows |
//! | carry_out (extension)      | the allocation's new end date                              |
//!
//! Growth is checked against the unit's quota and its sanction (register rules), and against
//! open low-use cases where the profile's clause holds requests (003 第三十条), both at
//! submission and when the register changes.

use super::application::{Application, ApplicationError, Kind, Request, Rules, State, Step};
use crate::register::changes::{self, ChangeError};
use crate::register::{AllocationKind, Register, ServerType, UnitRecord, VmAllocation};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Step(#[from] ApplicationError),
    /// The register refuses the change (quota, sanction, a held unit…).
    #[error("{}", register_zh(.0))]
    Register(ChangeError),
    /// The application itself is not acceptable; `code` is stable, the text zh-CN.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
}

impl LifecycleError {
    pub fn code(&self) -> &'static str {
        match self {
            LifecycleError::Step(e) => e.code(),
            LifecycleError::Register(ChangeError::Held { .. }) => "application_held",
            LifecycleError::Register(ChangeError::OverQuota { .. }) => "application_over_quota",
            LifecycleError::Register(_) => "application_register_refused",
            LifecycleError::Invalid { code, .. } => code,
        }
    }
}

/// A register refusal in the words the applicant reads.
fn register_zh(e: &ChangeError) -> String {
    match e {
        ChangeError::Held {
            unit,
            reason,
            since_ms,
            clause,
        } => format!(
            "单位“{unit}”自 {} 起暂停新增资源申请（{clause}）：{reason}",
            crate::time::beijing_date(*since_ms)
        ),
        ChangeError::OverQuota {
            unit,
            resource,
            after,
            quota,
        } => {
            let what = match *resource {
                "vcpus" => "vCPU（核）",
                "mem_gb" => "内存（GB）",
                "disk_gb" => "磁盘（GB）",
                other => other,
            };
            format!("单位“{unit}”核定的{what}将增至 {after}，超过其配额 {quota}")
        }
        other => other.to_string(),
    }
}

fn invalid(code: &'static str, message: String) -> LifecycleError {
    LifecycleError::Invalid { code, message }
}

/// Units with open low-use cases (from the reclaim service): unit → case ids and since when.
pub type Holds = BTreeMap<String, (Vec<u64>, u64)>;

/// Check a new application of `kind` by `unit` against the register and the profile.
pub fn check_submission(
    reg: &Register,
    kind: Kind,
    unit: &str,
    request: &Request,
    holds: &Holds,
    rules: &Rules<'_>,
    now_ms: u64,
) -> Result<(), LifecycleError> {
    let p = rules.policy;
    let cal = rules.calendar;
    if matches!(kind, Kind::New | Kind::Change) {
        if let Some((cases, _)) = holds.get(unit) {
            return Err(invalid(
                "application_held",
                format!(
                    "单位“{unit}”有未结的低利用率资源降配/回收工单（{}），按{}暂停其新的资源申请和扩容变更",
                    cases.iter().map(|c| format!("#{c}")).collect::<Vec<_>>().join("、"),
                    rules.hold
                ),
            ));
        }
    }
    let registered = |uuid: &str| -> Result<&VmAllocation, LifecycleError> {
        match reg.vm_by_uuid(uuid) {
            Some(v) if v.unit == unit => Ok(v),
            // another unit's VM: told apart from an unknown one to nobody
            _ => Err(invalid(
                "application_unknown_vm",
                format!("本单位没有登记 UUID 为 {uuid} 的虚拟机"),
            )),
        }
    };
    match (kind, request) {
        (Kind::New | Kind::Test | Kind::Temporary, Request::Grant { vms, ends_ms }) => {
            if vms.is_empty() {
                return Err(invalid(
                    "application_no_rows",
                    "申请未列出任何虚拟机（附表的资源行）".into(),
                ));
            }
            if let Some(v) = vms.iter().find(|v| !v.unit.is_empty() && v.unit != unit) {
                return Err(invalid(
                    "application_other_unit_row",
                    format!("资源行的使用单位“{}”不是申请单位“{unit}”", v.unit),
                ));
            }
            if kind == Kind::Temporary && p.temporary_max.is_none() {
                return Err(invalid(
                    "application_no_temporary",
                    "本地区管理办法未设临时资源，请按资源申请办理".into(),
                ));
            }
            let max = match kind {
                Kind::Test => p.test_max.map(|m| (m, &p.clauses.test)),
                Kind::Temporary => p.temporary_max.map(|m| (m, &p.clauses.temporary)),
                _ => None,
            };
            if let (Some((max, clause)), Some(e)) = (max, ends_ms) {
                let cap = cal.start_of(max.end(cal.day_of(now_ms)));
                if *e > cap {
                    return Err(invalid(
                        "application_term_too_long",
                        format!(
                            "使用期限至 {} 超过{}规定的 {}（自分配之日起）",
                            crate::time::beijing_date(*e),
                            clause,
                            max.zh()
                        ),
                    ));
                }
            }
            if kind == Kind::Test && max.is_none() && ends_ms.is_none() {
                return Err(invalid(
                    "application_term_required",
                    "本地区管理办法未规定测试资源的最长期限：请填写使用截止日期".into(),
                ));
            }
            Ok(())
        }
        (Kind::Change, Request::Change { changes }) => {
            if changes.is_empty() {
                return Err(invalid(
                    "application_no_rows",
                    "变更申请未列出任何虚拟机".into(),
                ));
            }
            for c in changes {
                let v = registered(&c.uuid)?;
                if let Some(t) = c.server_type.filter(|t| *t != v.server_type) {
                    if !p.clauses.change_use.is_empty() {
                        return Err(invalid(
                            "application_change_of_use",
                            format!(
                                "虚拟机 {} 的用途由 {} 改为 {}：{}，须另行提交资源申请",
                                c.uuid,
                                v.server_type.as_str(),
                                t.as_str(),
                                p.clauses.change_use
                            ),
                        ));
                    }
                }
                if [c.vcpus, c.mem_gb, c.sys_disk_gb, c.data_disk_gb]
                    .iter()
                    .all(Option::is_none)
                    && c.server_type.is_none()
                {
                    return Err(invalid(
                        "application_change_nothing",
                        format!("虚拟机 {} 的变更未给出新的配置", c.uuid),
                    ));
                }
            }
            Ok(())
        }
        (Kind::Termination, Request::Termination { uuids, declaration }) => {
            if declaration.trim().is_empty() {
                return Err(invalid(
                    "application_declaration_required",
                    format!(
                        "终止前须声明已完成系统下线和数据迁移备份（{}）",
                        p.clauses.terminate
                    ),
                ));
            }
            if uuids.is_empty() {
                return Err(invalid(
                    "application_no_rows",
                    "终止申请未列出任何虚拟机".into(),
                ));
            }
            for u in uuids {
                registered(u)?;
            }
            Ok(())
        }
        (Kind::Extension, Request::Extension { uuids, ends_ms }) => {
            if uuids.is_empty() {
                return Err(invalid(
                    "application_no_rows",
                    "延期申请未列出任何虚拟机".into(),
                ));
            }
            for u in uuids {
                let v = registered(u)?;
                let Some(end) = v.term.ends_ms.filter(|_| v.term.kind.expires()) else {
                    return Err(invalid(
                        "application_not_expiring",
                        format!("虚拟机 {u} 不是有使用期限的测试或临时资源，无需延期"),
                    ));
                };
                if *ends_ms <= end {
                    return Err(invalid(
                        "application_extension_not_later",
                        format!(
                            "延期后的截止日期须晚于现在的 {}",
                            crate::time::beijing_date(end)
                        ),
                    ));
                }
                let notice = p.extension_notice_days;
                if v.term.kind == AllocationKind::Temporary && notice > 0 {
                    let left = cal.working_days_between(now_ms, end);
                    if left < notice {
                        return Err(invalid(
                            "application_extension_late",
                            format!(
                                "临时资源 {u} 于 {} 到期，距今仅 {left} 个工作日：{}要求至少提前 {notice} 个工作日申请延期，本申请不予受理",
                                crate::time::beijing_date(end),
                                p.clauses.temporary
                            ),
                        ));
                    }
                }
            }
            Ok(())
        }
        (k, _) => Err(invalid(
            "application_kind_mismatch",
            format!("申请类型“{}”与所填内容不符", k.zh()),
        )),
    }
}

/// The allocation kind of a granted row.
fn grant_kind(kind: Kind, v: &VmAllocation, rules: &Rules<'_>) -> AllocationKind {
    match kind {
        Kind::Temporary => AllocationKind::Temporary,
        Kind::Test => AllocationKind::Test,
        // a TST server is a test server whatever the application
        _ if v.server_type == ServerType::Tst => AllocationKind::Test,
        _ if rules.policy.test.is_some() => AllocationKind::Test,
        _ => AllocationKind::Formal,
    }
}

/// The unit record as the step from `before` to `after` leaves it, if the step changes the
/// register. `holds` as in [`check_submission`].
pub fn register_change(
    reg: &Register,
    before: &Application,
    after: &Application,
    step: Step,
    holds: &Holds,
    rules: &Rules<'_>,
    now_ms: u64,
) -> Result<Option<UnitRecord>, LifecycleError> {
    let unit = &before.unit;
    let old = reg.record(unit);
    let mut record = old.clone();
    let mine = |v: &VmAllocation| v.term.application == Some(before.id);
    match (step, &before.request, after.state) {
        (Step::Approve, Request::Grant { vms, .. }, State::Approved) => {
            for v in vms {
                let mut row = v.clone();
                row.unit = unit.clone();
                row.term.kind = grant_kind(before.kind, v, rules);
                row.term.application = Some(before.id);
                row.term.starts_ms = None;
                row.term.ends_ms = None;
                record.vms.push(row);
            }
        }
        (Step::Provision, Request::Grant { .. }, _) => {
            for v in record.vms.iter_mut().filter(|v| mine(v)) {
                v.term.starts_ms = Some(now_ms);
                match after.state {
                    State::Testing => v.term.ends_ms = after.period_until_ms,
                    _ if v.term.kind.expires() => v.term.ends_ms = after.ends_ms,
                    _ => {}
                }
            }
        }
        (Step::PassTest | Step::GoLive, Request::Grant { .. }, to) => {
            for v in record.vms.iter_mut().filter(|v| mine(v)) {
                if v.server_type == ServerType::Tst {
                    continue;
                }
                v.term.kind = if to == State::Trial {
                    AllocationKind::Trial
                } else {
                    AllocationKind::Formal
                };
                v.term.ends_ms = None;
                v.term.starts_ms = Some(now_ms);
            }
        }
        (Step::CarryOut, Request::Change { changes }, _) => {
            for c in changes {
                let Some(v) = record.vms.iter_mut().find(|v| v.has_uuid(&c.uuid)) else {
                    return Err(invalid(
                        "application_unknown_vm",
                        format!("虚拟机 {} 已不在登记表中", c.uuid),
                    ));
                };
                for (value, slot) in [
                    (c.vcpus, &mut v.vcpus),
                    (c.mem_gb, &mut v.mem_gb),
                    (c.sys_disk_gb, &mut v.sys_disk_gb),
                    (c.data_disk_gb, &mut v.data_disk_gb),
                ] {
                    if let Some(x) = value {
                        *slot = x;
                    }
                }
                if let Some(t) = c.server_type {
                    v.server_type = t;
                }
            }
        }
        // a termination is carried out through the reclaim's stop → hold → release path, whose
        // release retires the rows: nothing changes here
        (Step::CarryOut, Request::Extension { uuids, ends_ms }, _) => {
            for v in record
                .vms
                .iter_mut()
                .filter(|v| uuids.iter().any(|u| v.has_uuid(u)))
            {
                v.term.ends_ms = Some(*ends_ms);
            }
        }
        _ => return Ok(None),
    }
    if record == old {
        return Ok(None);
    }
    changes::check_growth(&old, &record).map_err(LifecycleError::Register)?;
    changes::check_low_use_hold(reg, &record, holds)
        .map_err(|e| LifecycleError::Register(e.citing(rules.hold)))?;
    Ok(Some(record))
}
