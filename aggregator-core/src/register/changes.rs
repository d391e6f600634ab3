//! Every change to the register, as pure functions of the register as it is: an import of the
//! 附件3 form, an approved change request (003 第十五条), a sanction and its lifting (004 第十六条,
//! 003 第三十条), a unit's quota. Each yields an [`Update`]: the unit as it becomes (to store,
//! then apply in memory) and its audit entry (who, when, what, from → to). Nothing is changed
//! when one fails.
//!
//! An import replaces the unit's VMs of the systems (系统名称 + 子系统名称) the file lists: one
//! form per system (附件3 填写说明 1), and importing the same form twice changes nothing. A VM
//! whose UUID is registered must keep it: an import that would drop one is refused (export the
//! register to get the 虚拟机UUID column, fill it in, import that).
//!
//! While a unit is sanctioned with `hold_requests`, a change or import that would give it more
//! of any resource is held (003 第三十条 暂停后期该单位云资源申请); one that gives back
//! (降配) goes through. With an explicit quota (the unit's, or a sanction's lowered one), a
//! resource may not grow past it.

use super::form::{self, Column, Format, ReadError, RowError};
use super::limits::LimitError;
use super::{Register, Resources, Sanction, Unit, UnitRecord, VmAllocation};
use crate::audit::{AuditEntry, AuditEvent, UnitChange};
use crate::identity::Actor;
pub use crate::time::beijing_time;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeSet;

/// A change ready to be stored and applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub record: UnitRecord,
    pub audit: AuditEntry,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    /// Bad rows of an import (all of them), or a file that is not the form.
    #[error("{} problem(s) in the file; nothing was imported", .0.len())]
    Rows(Vec<RowError>),
    /// A file over one of the import's bounds (size, ZIP, sheet range, cells), refused before
    /// it was read through.
    #[error("{file}：{limit}；未导入任何内容")]
    OverLimit { file: String, limit: LimitError },
    /// A request missing what it needs.
    #[error("{0}")]
    Invalid(String),
    #[error("no registered VM has UUID {0}")]
    UnknownVm(String),
    #[error("unit {0:?} is not in the register")]
    UnknownUnit(String),
    #[error("unit {0:?} is not under sanction")]
    NotSanctioned(String),
    #[error("unit {unit:?}: requests for more resources are held since {} ({clause}): {reason}", beijing_time(*since_ms))]
    Held {
        unit: String,
        reason: String,
        since_ms: u64,
        /// The active profile's clause (`[clauses] low_use_hold`).
        clause: String,
    },
    #[error(
        "unit {unit:?}: approved {resource} would grow to {after}, above its quota of {quota}"
    )]
    OverQuota {
        unit: String,
        resource: &'static str,
        after: f64,
        quota: f64,
    },
}

impl ChangeError {
    /// The error citing the active profile's clause where it cites one (a held request: `[clauses]
    /// low_use_hold`); the pure functions leave it to the caller, who knows the profile.
    pub fn citing(self, low_use_hold: &str) -> Self {
        match self {
            ChangeError::Held {
                unit,
                reason,
                since_ms,
                ..
            } => ChangeError::Held {
                unit,
                reason,
                since_ms,
                clause: low_use_hold.to_string(),
            },
            e => e,
        }
    }
}

/// An import: the file as uploaded and for whom.
#[derive(Debug, Clone, Copy)]
pub struct Import<'a> {
    /// 使用单位: not a column of the form, so the import names it.
    pub unit: &'a str,
    /// Who imports (audited).
    pub by: &'a Actor,
    /// The file's name, for error messages.
    pub file: &'a str,
    pub format: Format,
    pub bytes: &'a [u8],
    /// The active profile's form and network zones.
    pub form: &'a form::FormSpec,
}

/// Import a filled-in form for a unit.
pub fn import(reg: &Register, req: &Import<'_>, now_ms: u64) -> Result<Update, ChangeError> {
    let unit = required(req.unit, "unit")?;
    let by = req.by;
    let file = req.file;
    let read =
        form::read_form_file(req.form, file, req.format, req.bytes).map_err(|e| match e {
            ReadError::Rows(rows) => ChangeError::Rows(rows),
            ReadError::Limit { file, limit } => ChangeError::OverLimit { file, limit },
        })?;
    // a form with a header block (003 附件1) names its unit: it must be the one imported
    if let Some(named) = read
        .header
        .as_ref()
        .map(|h| h.unit_name.as_str())
        .filter(|n| !n.is_empty() && *n != unit)
    {
        return Err(ChangeError::Rows(vec![RowError {
            file: file.to_string(),
            row: None,
            column: Some("单位名称".into()),
            reason: format!("审批表的单位名称“{named}”不是导入的使用单位“{unit}”"),
        }]));
    }
    let rows = read.rows;
    let systems: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.vm.system.clone(), r.vm.subsystem.clone()))
        .collect();
    let replaced = |v: &VmAllocation| {
        v.unit == unit
            && systems
                .iter()
                .any(|(s, sub)| *s == v.system && *sub == v.subsystem)
    };
    let mut errors = Vec::new();
    for r in &rows {
        if !r.vm.unit.is_empty() && r.vm.unit != unit {
            errors.push(RowError::cell(
                file,
                r.row,
                Column::Unit,
                format!(
                    "使用单位 \"{}\" is not the unit being imported (\"{unit}\")",
                    r.vm.unit
                ),
            ));
        }
        let Some(u) = &r.vm.uuid else { continue };
        if let Some(other) = reg.vms.iter().find(|v| v.has_uuid(u) && !replaced(v)) {
            errors.push(RowError::cell(
                file,
                r.row,
                Column::Uuid,
                format!(
                    "虚拟机UUID \"{u}\" is already registered to {} / {}",
                    other.unit,
                    system_name(other)
                ),
            ));
        }
    }
    for v in reg.vms.iter().filter(|v| replaced(v)) {
        let Some(u) = &v.uuid else { continue };
        if !rows.iter().any(|r| r.vm.has_uuid(u)) {
            errors.push(RowError {
                file: file.to_string(),
                row: None,
                column: Some(Column::Uuid.header().to_string()),
                reason: format!(
                    "the registered VM {u} of {} is not in the file: keep its row with its 虚拟机UUID (export the register to get it)",
                    system_name(v)
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ChangeError::Rows(errors));
    }
    let old = reg.record(unit);
    let from: Vec<&VmAllocation> = old.vms.iter().filter(|v| replaced(v)).collect();
    let to: Vec<VmAllocation> = rows
        .into_iter()
        .map(|r| VmAllocation {
            unit: unit.to_string(),
            ..r.vm
        })
        .collect();
    let mut vms: Vec<VmAllocation> = old.vms.iter().filter(|v| !replaced(v)).cloned().collect();
    // the new rows take the place of the system's old ones (every VM before the first replaced
    // one is kept), or go at the end for a new system
    let at = old.vms.iter().position(&replaced).unwrap_or(vms.len());
    vms.splice(at..at, to.iter().cloned());
    let record = UnitRecord {
        unit: old.unit.clone(),
        vms,
    };
    check_growth(&old, &record)?;
    let audit = AuditEvent::RegisterImported {
        unit: unit.to_string(),
        file: file.to_string(),
        format: json!(req.format),
        systems: systems
            .iter()
            .map(|(s, sub)| [s.to_string(), sub.to_string()])
            .collect(),
        imported: to.len(),
        from: json!(from),
        to: json!(to),
    }
    .entry(now_ms, by);
    Ok(Update { record, audit })
}

/// An approved change request for one VM (003 第十五条: no change without one). Sizes not
/// given stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// Who approved it (the authority's approver).
    pub approved_by: String,
    pub vcpus: Option<u32>,
    pub mem_gb: Option<u32>,
    pub sys_disk_gb: Option<u32>,
    pub data_disk_gb: Option<u32>,
    pub reason: String,
}

/// Apply an approved change request to the VM with SMBIOS UUID `uuid`.
pub fn change(
    reg: &Register,
    uuid: &str,
    by: &Actor,
    req: &ChangeRequest,
    now_ms: u64,
) -> Result<Update, ChangeError> {
    let approved_by = required(&req.approved_by, "approved_by")?;
    let reason = required(&req.reason, "reason")?;
    let vm = reg
        .vm_by_uuid(uuid)
        .ok_or_else(|| ChangeError::UnknownVm(uuid.to_string()))?;
    let mut new = vm.clone();
    for (value, min, slot, name) in [
        (req.vcpus, 1, &mut new.vcpus, "vcpus"),
        (req.mem_gb, 1, &mut new.mem_gb, "mem_gb"),
        (req.sys_disk_gb, 1, &mut new.sys_disk_gb, "sys_disk_gb"),
        (req.data_disk_gb, 0, &mut new.data_disk_gb, "data_disk_gb"),
    ] {
        if let Some(v) = value {
            if v < min {
                return Err(ChangeError::Invalid(format!(
                    "{name} must be at least {min}"
                )));
            }
            *slot = v;
        }
    }
    if new == *vm {
        return Err(ChangeError::Invalid(
            "the request changes nothing: give vcpus, mem_gb, sys_disk_gb or data_disk_gb".into(),
        ));
    }
    let old = reg.record(&vm.unit);
    let mut record = old.clone();
    for v in record.vms.iter_mut().filter(|v| v.has_uuid(uuid)) {
        *v = new.clone();
    }
    check_growth(&old, &record)?;
    let sizes = |v: &VmAllocation| {
        json!({
            "vcpus": v.vcpus, "mem_gb": v.mem_gb,
            "sys_disk_gb": v.sys_disk_gb, "data_disk_gb": v.data_disk_gb,
        })
    };
    let audit = AuditEvent::RegisterChanged {
        uuid: uuid.to_string(),
        unit: vm.unit.clone(),
        system: vm.system.clone(),
        subsystem: vm.subsystem.clone(),
        approved_by: approved_by.to_string(),
        reason: reason.to_string(),
        from: sizes(vm),
        to: sizes(&new),
    }
    .entry(now_ms, by);
    Ok(Update { record, audit })
}

/// A verified downsize of reclaim case `case` (降配, 002 第十一条 / 003 第二十一条): the VM's
/// approved size becomes the size it was downsized to (never more than it was), so the unit's
/// approved total and its pool's allocated ratio follow. Disks are not touched.
pub fn reclaim_downsize(
    reg: &Register,
    case: u64,
    uuid: &str,
    size: yunjian_protocol::VmSize,
    by: &Actor,
    now_ms: u64,
) -> Result<Update, ChangeError> {
    let vm = reg
        .vm_by_uuid(uuid)
        .ok_or_else(|| ChangeError::UnknownVm(uuid.to_string()))?;
    let mem_gb = u32::try_from(size.mem_kib.div_ceil(1024 * 1024)).unwrap_or(u32::MAX);
    let mut new = vm.clone();
    new.vcpus = vm.vcpus.min(u32::from(size.vcpus.max(1)));
    new.mem_gb = vm.mem_gb.min(mem_gb.max(1));
    if new == *vm {
        return Err(ChangeError::Invalid(format!(
            "虚拟机 {uuid} 的核定配置已不大于降配后的配置，无需变更"
        )));
    }
    let mut record = reg.record(&vm.unit);
    for v in record.vms.iter_mut().filter(|v| v.has_uuid(uuid)) {
        *v = new.clone();
    }
    let audit = AuditEvent::RegisterReclaimed {
        case,
        uuid: uuid.to_ascii_lowercase(),
        unit: vm.unit.clone(),
        system: vm.system.clone(),
        subsystem: vm.subsystem.clone(),
        change: "downsize",
        from: json!({"vcpus": vm.vcpus, "mem_gb": vm.mem_gb}),
        to: json!({"vcpus": new.vcpus, "mem_gb": new.mem_gb}),
    }
    .entry(now_ms, by);
    Ok(Update { record, audit })
}

/// A rolled-back downsize of reclaim case `case`: the VM runs at its old size again, so its
/// approved size goes back to `vcpus` / `mem_gb` (what the downsize changed, from its audit).
pub fn reclaim_restore(
    reg: &Register,
    case: u64,
    uuid: &str,
    vcpus: u32,
    mem_gb: u32,
    by: &Actor,
    now_ms: u64,
) -> Result<Update, ChangeError> {
    let vm = reg
        .vm_by_uuid(uuid)
        .ok_or_else(|| ChangeError::UnknownVm(uuid.to_string()))?;
    let mut new = vm.clone();
    new.vcpus = vcpus;
    new.mem_gb = mem_gb;
    if new == *vm {
        return Err(ChangeError::Invalid(format!(
            "虚拟机 {uuid} 的核定配置已是回退后的配置，无需变更"
        )));
    }
    let mut record = reg.record(&vm.unit);
    for v in record.vms.iter_mut().filter(|v| v.has_uuid(uuid)) {
        *v = new.clone();
    }
    let audit = AuditEvent::RegisterReclaimed {
        case,
        uuid: uuid.to_ascii_lowercase(),
        unit: vm.unit.clone(),
        system: vm.system.clone(),
        subsystem: vm.subsystem.clone(),
        change: "restore",
        from: json!({"vcpus": vm.vcpus, "mem_gb": vm.mem_gb}),
        to: json!({"vcpus": new.vcpus, "mem_gb": new.mem_gb}),
    }
    .entry(now_ms, by);
    Ok(Update { record, audit })
}

/// A VM released by reclaim case `case` (回收): its row leaves the register (retired), so it
/// no longer counts in the unit's approved total nor in its pool's allocation. The audit entry
/// keeps the whole row.
pub fn retire(
    reg: &Register,
    case: u64,
    uuid: &str,
    by: &Actor,
    now_ms: u64,
) -> Result<Update, ChangeError> {
    let vm = reg
        .vm_by_uuid(uuid)
        .ok_or_else(|| ChangeError::UnknownVm(uuid.to_string()))?;
    let mut record = reg.record(&vm.unit);
    record.vms.retain(|v| !v.has_uuid(uuid));
    let audit = AuditEvent::RegisterReclaimed {
        case,
        uuid: uuid.to_ascii_lowercase(),
        unit: vm.unit.clone(),
        system: vm.system.clone(),
        subsystem: vm.subsystem.clone(),
        change: "retire",
        from: json!(vm),
        to: json!(null),
    }
    .entry(now_ms, by);
    Ok(Update { record, audit })
}

/// A quota as requests give it. Network is optional and recorded, not enforced (agents report
/// traffic, not a configured bandwidth).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaInput {
    pub vcpus: f64,
    pub mem_gb: f64,
    pub disk_gb: f64,
    #[serde(default)]
    pub net_mbps: f64,
}

impl QuotaInput {
    fn resources(self) -> Result<Resources, ChangeError> {
        let r = Resources {
            vcpus: self.vcpus,
            mem_gb: self.mem_gb,
            disk_gb: self.disk_gb,
            net_mbps: self.net_mbps,
        };
        if [r.vcpus, r.mem_gb, r.disk_gb, r.net_mbps]
            .iter()
            .any(|a| !a.is_finite() || *a < 0.0)
        {
            return Err(ChangeError::Invalid(
                "quota amounts must be numbers of 0 or more".into(),
            ));
        }
        Ok(r)
    }
}

/// Sanction a unit (004 第十六条: 降低配额, 限制服务; 003 第三十条: hold its requests).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanctionRequest {
    pub reason: String,
    /// The lowered quota while it lasts.
    pub quota: Option<QuotaInput>,
    /// Hold the unit's requests for more resources.
    pub hold_requests: bool,
}

/// Put a unit under sanction, or change the terms of its sanction (it keeps its start).
pub fn sanction(
    reg: &Register,
    unit: &str,
    by: &Actor,
    req: &SanctionRequest,
    now_ms: u64,
) -> Result<Update, ChangeError> {
    let reason = required(&req.reason, "reason")?;
    let mut record = known_unit(reg, unit)?;
    let from = record.unit.sanction.clone();
    let to = Sanction {
        reason: reason.to_string(),
        since_ms: from.as_ref().map_or(now_ms, |s| s.since_ms),
        quota: req.quota.map(QuotaInput::resources).transpose()?,
        hold_requests: req.hold_requests,
    };
    record.unit.sanction = Some(to.clone());
    let audit = unit_audit(
        by,
        UnitChange::Sanction,
        unit,
        now_ms,
        json!(from),
        json!(to),
    );
    Ok(Update { record, audit })
}

/// Lift a unit's sanction.
pub fn lift(
    reg: &Register,
    unit: &str,
    by: &Actor,
    note: Option<&str>,
    now_ms: u64,
) -> Result<Update, ChangeError> {
    let mut record = known_unit(reg, unit)?;
    let from = record
        .unit
        .sanction
        .take()
        .ok_or_else(|| ChangeError::NotSanctioned(unit.to_string()))?;
    let audit = AuditEvent::UnitChanged {
        change: UnitChange::LiftSanction,
        unit: unit.to_string(),
        from: json!(from),
        to: json!(null),
        note: note.map(str::to_string),
    }
    .entry(now_ms, by);
    Ok(Update { record, audit })
}

/// Set (or with `None` clear) a unit's own quota.
pub fn set_quota(
    reg: &Register,
    unit: &str,
    by: &Actor,
    quota: Option<QuotaInput>,
    now_ms: u64,
) -> Result<Update, ChangeError> {
    let mut record = known_unit(reg, unit)?;
    let from = record.unit.quota;
    record.unit.quota = quota.map(QuotaInput::resources).transpose()?;
    let audit = unit_audit(
        by,
        UnitChange::Quota,
        unit,
        now_ms,
        json!(from),
        json!(record.unit.quota),
    );
    Ok(Update { record, audit })
}

fn unit_audit(
    by: &Actor,
    change: UnitChange,
    unit: &str,
    now_ms: u64,
    from: serde_json::Value,
    to: serde_json::Value,
) -> AuditEntry {
    AuditEvent::UnitChanged {
        change,
        unit: unit.to_string(),
        from,
        to,
        note: None,
    }
    .entry(now_ms, by)
}

fn known_unit(reg: &Register, unit: &str) -> Result<UnitRecord, ChangeError> {
    if reg.unit_names().contains(&unit) {
        Ok(reg.record(unit))
    } else {
        Err(ChangeError::UnknownUnit(unit.to_string()))
    }
}

fn required<'a>(value: &'a str, name: &str) -> Result<&'a str, ChangeError> {
    let v = value.trim();
    if v.is_empty() {
        Err(ChangeError::Invalid(format!("`{name}` is required")))
    } else {
        Ok(v)
    }
}

/// `系统名称 / 子系统名称`, or whichever is filled in.
fn system_name(v: &VmAllocation) -> String {
    match (v.system.as_str(), v.subsystem.as_str()) {
        (s, "") => s.to_string(),
        ("", sub) => sub.to_string(),
        (s, sub) => format!("{s} / {sub}"),
    }
}

/// A unit going from `old` to `new`: held if it grows while requests are held; refused if a
/// resource grows past an explicit quota.
pub(crate) fn check_growth(old: &UnitRecord, new: &UnitRecord) -> Result<(), ChangeError> {
    let grown = growth(old, new);
    if grown.is_empty() {
        return Ok(());
    }
    let unit = &old.unit;
    if let Some(s) = unit.sanction.as_ref().filter(|s| s.hold_requests) {
        return Err(ChangeError::Held {
            unit: unit.name.clone(),
            reason: s.reason.clone(),
            since_ms: s.since_ms,
            clause: String::new(),
        });
    }
    let Some(quota) = explicit_quota(unit) else {
        return Ok(());
    };
    for (resource, _, after) in grown {
        let q = match resource {
            "vcpus" => quota.vcpus,
            "mem_gb" => quota.mem_gb,
            _ => quota.disk_gb,
        };
        if after > q {
            return Err(ChangeError::OverQuota {
                unit: unit.name.clone(),
                resource,
                after,
                quota: q,
            });
        }
    }
    Ok(())
}

/// The resources whose approved total grows from `old` to `new`: (name, before, after).
fn growth(old: &UnitRecord, new: &UnitRecord) -> Vec<(&'static str, f64, f64)> {
    let total = |r: &UnitRecord| r.vms.iter().map(VmAllocation::approved).sum::<Resources>();
    let (before, after) = (total(old), total(new));
    [
        ("vcpus", before.vcpus, after.vcpus),
        ("mem_gb", before.mem_gb, after.mem_gb),
        ("disk_gb", before.disk_gb, after.disk_gb),
    ]
    .into_iter()
    .filter(|(_, b, a)| a > b)
    .collect()
}

/// 003 第三十条 (暂停后期该单位云资源申请): while a unit has open low-use reclaim cases
/// (`holds`: unit → case ids and since when, from the reclaim service), an update that gives it
/// more of any resource is held; one that gives back goes through.
pub fn check_low_use_hold(
    reg: &Register,
    record: &UnitRecord,
    holds: &std::collections::BTreeMap<String, (Vec<u64>, u64)>,
) -> Result<(), ChangeError> {
    let unit = &record.unit.name;
    let Some((cases, since_ms)) = holds.get(unit) else {
        return Ok(());
    };
    if growth(&reg.record(unit), record).is_empty() {
        return Ok(());
    }
    Err(ChangeError::Held {
        unit: unit.clone(),
        reason: format!(
            "低利用率资源降配/回收工单未结（{}）",
            cases
                .iter()
                .map(|c| format!("#{c}"))
                .collect::<Vec<_>>()
                .join("、")
        ),
        since_ms: *since_ms,
        clause: String::new(),
    })
}

/// A sanction's lowered quota, else the unit's own.
fn explicit_quota(unit: &Unit) -> Option<Resources> {
    unit.sanction.as_ref().and_then(|s| s.quota).or(unit.quota)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::form::Format;

    const UUID_A: &str = "4c4c4544-0042-3510-8058-b4c04f384d32";

    fn ops() -> Actor {
        Actor::person("ops-li", crate::identity::Role::Ops, None)
    }

    fn authority() -> Actor {
        Actor::person("authority", crate::identity::Role::Authority, None)
    }

    fn form(rows: &[&str]) -> String {
        let mut s = String::from("序号,网络分区,系统名称,子系统名称,服务器类型,vCPU核,内存GB,系统盘GB,数据盘GB,虚拟机UUID\n");
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s
    }

    fn imp(reg: &Register, unit: &str, text: &str) -> Result<Update, ChangeError> {
        import(
            reg,
            &Import {
                unit,
                by: &ops(),
                file: "f.csv",
                format: Format::Csv,
                bytes: text.as_bytes(),
                form: &crate::policy::Profile::default().register,
            },
            1_000,
        )
    }

    fn imported(reg: &mut Register, unit: &str, text: &str) {
        let u = imp(reg, unit, text).unwrap();
        reg.apply(u.record);
    }

    #[test]
    fn import_replaces_the_systems_in_the_file_only() {
        let mut reg = Register::default();
        imported(
            &mut reg,
            "财政局",
            &form(&[
                "1,政务外网,OA,,APP,4,8,60,0,",
                "2,政务外网,OA,,DAT,8,16,60,100,",
            ]),
        );
        imported(
            &mut reg,
            "财政局",
            &form(&["1,政务外网,门户,,WEB,2,4,40,0,"]),
        );
        assert_eq!(reg.vms.len(), 3);
        // the same OA form again: nothing changes
        let before = reg.clone();
        imported(
            &mut reg,
            "财政局",
            &form(&[
                "1,政务外网,OA,,APP,4,8,60,0,",
                "2,政务外网,OA,,DAT,8,16,60,100,",
            ]),
        );
        assert_eq!(reg, before);
        // a new OA form with one VM replaces both
        let u = imp(&reg, "财政局", &form(&["1,政务外网,OA,,APP,4,8,60,0,"])).unwrap();
        assert_eq!(u.audit.action, "register.import");
        assert_eq!(u.audit.detail["from"].as_array().unwrap().len(), 2);
        assert_eq!(u.audit.detail["to"].as_array().unwrap().len(), 1);
        reg.apply(u.record);
        assert_eq!(reg.vms.len(), 2);
        assert!(reg.units.contains_key("财政局"));
    }

    #[test]
    fn uuids_stay_with_their_vm_and_their_unit() {
        let mut reg = Register::default();
        imported(
            &mut reg,
            "财政局",
            &form(&[&format!("1,政务外网,OA,,APP,4,8,60,0,{UUID_A}")]),
        );
        // dropping the registered UUID of a replaced system is refused
        let e = imp(&reg, "财政局", &form(&["1,政务外网,OA,,APP,4,8,60,0,"])).unwrap_err();
        let ChangeError::Rows(rows) = e else {
            panic!("{e:?}")
        };
        assert_eq!(rows[0].row, None);
        assert!(rows[0].reason.contains(UUID_A), "{}", rows[0].reason);
        // another unit cannot take it
        let e = imp(
            &reg,
            "教育局",
            &form(&[&format!("1,政务外网,教务,,APP,4,8,60,0,{UUID_A}")]),
        )
        .unwrap_err();
        let ChangeError::Rows(rows) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (rows[0].row, rows[0].column.as_deref()),
            (Some(2), Some("虚拟机UUID"))
        );
        assert!(rows[0].reason.contains("already registered to 财政局 / OA"));
        // a 使用单位 column must name the unit imported
        let text = "序号,使用单位,网络分区,系统名称,子系统名称,服务器类型,vCPU核,内存GB,系统盘GB,数据盘GB\n1,教育局,政务外网,教务,,APP,4,8,60,0\n";
        let ChangeError::Rows(rows) = imp(&reg, "财政局", text).unwrap_err() else {
            panic!()
        };
        assert_eq!(rows[0].column.as_deref(), Some("使用单位"));
    }

    #[test]
    fn change_requests_and_sanctions() {
        let mut reg = Register::default();
        imported(
            &mut reg,
            "财政局",
            &form(&[&format!("1,政务外网,OA,,APP,8,16,60,100,{UUID_A}")]),
        );
        let req = ChangeRequest {
            approved_by: "局长王".into(),
            vcpus: Some(16),
            reason: "业务量增长".into(),
            ..ChangeRequest::default()
        };
        let u = change(&reg, &UUID_A.to_uppercase(), &ops(), &req, 5).unwrap();
        assert_eq!(u.audit.subject, format!("vm:{UUID_A}"));
        assert_eq!(
            (
                u.audit.detail["from"]["vcpus"].as_u64(),
                u.audit.detail["to"]["vcpus"].as_u64()
            ),
            (Some(8), Some(16))
        );
        assert_eq!(u.audit.detail["approved_by"], "局长王");
        reg.apply(u.record);
        assert_eq!(reg.vm_by_uuid(UUID_A).unwrap().vcpus, 16);
        assert!(matches!(
            change(&reg, UUID_A, &ops(), &req, 6),
            Err(ChangeError::Invalid(_))
        ));
        assert!(matches!(
            change(&reg, "nope", &ops(), &req, 6),
            Err(ChangeError::UnknownVm(_))
        ));

        // sanctioned with requests held: growth is held, giving back goes through
        let s = SanctionRequest {
            reason: "资源使用率长期偏低".into(),
            quota: Some(QuotaInput {
                vcpus: 12.0,
                mem_gb: 64.0,
                disk_gb: 1000.0,
                net_mbps: 0.0,
            }),
            hold_requests: true,
        };
        let u = sanction(&reg, "财政局", &authority(), &s, 1_700_000_000_000).unwrap();
        assert_eq!(u.audit.detail["from"], json!(null));
        reg.apply(u.record);
        let more = ChangeRequest {
            vcpus: Some(24),
            ..req.clone()
        };
        let clause = &crate::policy::Profile::default().clauses.low_use_hold;
        let e = change(&reg, UUID_A, &ops(), &more, 7)
            .unwrap_err()
            .citing(clause);
        assert_eq!(
            e.to_string(),
            "unit \"财政局\": requests for more resources are held since 2023-11-15 06:13 (UTC+8) (003 第三十条（暂停后期该单位云资源申请）): 资源使用率长期偏低"
        );
        // still above the lowered quota of 12, but giving back is allowed
        let less = ChangeRequest {
            vcpus: Some(14),
            ..req.clone()
        };
        reg.apply(change(&reg, UUID_A, &ops(), &less, 8).unwrap().record);
        assert_eq!(reg.vm_by_uuid(UUID_A).unwrap().vcpus, 14);
        // without the hold, growth past the lowered quota is refused
        let s2 = SanctionRequest {
            hold_requests: false,
            ..s
        };
        let u = sanction(&reg, "财政局", &authority(), &s2, 1_800_000_000_000).unwrap();
        assert_eq!(
            u.record.unit.sanction.as_ref().unwrap().since_ms,
            1_700_000_000_000,
            "keeps its start"
        );
        reg.apply(u.record);
        assert!(matches!(
            change(&reg, UUID_A, &ops(), &more, 9),
            Err(ChangeError::OverQuota {
                resource: "vcpus",
                ..
            })
        ));
        // lifted: free again
        let u = lift(&reg, "财政局", &authority(), Some("整改完成"), 10).unwrap();
        assert_eq!(u.audit.detail["note"], "整改完成");
        reg.apply(u.record);
        assert!(change(&reg, UUID_A, &ops(), &more, 11).is_ok());
        assert!(matches!(
            lift(&reg, "财政局", &authority(), None, 12),
            Err(ChangeError::NotSanctioned(_))
        ));
        assert!(matches!(
            lift(&reg, "无此单位", &authority(), None, 12),
            Err(ChangeError::UnknownUnit(_))
        ));
    }

    #[test]
    fn a_reclaim_downsize_and_a_release_change_the_register_naming_the_case() {
        use crate::register::test_support::vm;
        const B: &str = "4c4c4544-0042-3510-8058-b4c04f384d33";
        let mut reg = Register::default();
        reg.apply(UnitRecord {
            unit: Unit {
                name: "财政局".into(),
                ..Unit::default()
            },
            vms: vec![vm("财政局", UUID_A, 8), vm("财政局", B, 4)],
        });
        let total = |reg: &Register| -> Resources {
            reg.vms
                .iter()
                .filter(|v| v.unit == "财政局")
                .map(VmAllocation::approved)
                .sum()
        };
        assert_eq!((total(&reg).vcpus, total(&reg).mem_gb), (12.0, 32.0));
        let system = Actor::job("job:reclaim");
        // downsized to 2 vCPU / 4 GiB by case 7
        let size = yunjian_protocol::VmSize {
            vcpus: 2,
            mem_kib: 4 << 20,
        };
        let u = reclaim_downsize(&reg, 7, &UUID_A.to_uppercase(), size, &system, 5_000).unwrap();
        assert_eq!(u.audit.action, "register.downsize");
        assert_eq!(u.audit.subject, format!("vm:{UUID_A}"));
        assert_eq!(u.audit.detail["case"], 7);
        assert_eq!(u.audit.detail["from"], json!({"vcpus": 8, "mem_gb": 16}));
        assert_eq!(u.audit.detail["to"], json!({"vcpus": 2, "mem_gb": 4}));
        reg.apply(u.record);
        let a = reg.vm_by_uuid(UUID_A).unwrap();
        assert_eq!((a.vcpus, a.mem_gb, a.data_disk_gb), (2, 4, 300));
        assert_eq!((total(&reg).vcpus, total(&reg).mem_gb), (6.0, 20.0));
        // rolled back: the old size again, audited as a restore of the case
        let back = reclaim_restore(&reg, 7, UUID_A, 8, 16, &system, 5_500).unwrap();
        assert_eq!(
            (back.audit.action.as_str(), &back.audit.detail["case"]),
            ("register.restore", &json!(7))
        );
        let mut undone = reg.clone();
        undone.apply(back.record);
        assert_eq!(undone.vm_by_uuid(UUID_A).unwrap().vcpus, 8);
        assert_eq!((total(&undone).vcpus, total(&undone).mem_gb), (12.0, 32.0));
        // the same size again changes nothing and says so
        let e = reclaim_downsize(&reg, 7, UUID_A, size, &system, 6_000).unwrap_err();
        assert!(e.to_string().contains("无需变更"), "{e}");
        // never grows: a "downsize" to more memory keeps the approved memory
        let more = yunjian_protocol::VmSize {
            vcpus: 1,
            mem_kib: 64 << 20,
        };
        let u = reclaim_downsize(&reg, 8, B, more, &system, 6_000).unwrap();
        reg.apply(u.record);
        let b = reg.vm_by_uuid(B).unwrap();
        assert_eq!((b.vcpus, b.mem_gb), (1, 16));
        // released by case 9: the row leaves the register, the audit keeps it whole
        let r = retire(&reg, 9, B, &system, 7_000).unwrap();
        assert_eq!(r.audit.action, "register.retire");
        assert_eq!(r.audit.detail["case"], 9);
        assert_eq!(r.audit.detail["from"]["uuid"], B);
        reg.apply(r.record);
        assert!(reg.vm_by_uuid(B).is_none());
        assert_eq!(reg.vms.len(), 1);
        assert_eq!((total(&reg).vcpus, total(&reg).mem_gb), (2.0, 4.0));
        assert!(matches!(
            retire(&reg, 9, B, &system, 8_000),
            Err(ChangeError::UnknownVm(_))
        ));
    }

    #[test]
    fn beijing_time_formats() {
        assert_eq!(beijing_time(0), "1970-01-01 08:00 (UTC+8)");
        assert_eq!(beijing_time(1_700_000_000_000), "2023-11-15 06:13 (UTC+8)");
        // a leap day
        assert_eq!(beijing_time(1_709_164_800_000), "2024-02-29 08:00 (UTC+8)");
    }
}
