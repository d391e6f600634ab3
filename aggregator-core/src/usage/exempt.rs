//! The exemption register: VMs that look idle or oversized on purpose, with the reason, who
//! approved it and until when. An exemption replaces bare tags: it expires, and then the VM
//! is back under review (its finding says the exemption expired); it can be revoked earlier.
//! Exemptions are never deleted, so the register is also their history.
//!
//! Times: `expires_ms` is compared with the evaluation's `now` (event time, the history's
//! clock); `created_ms` and revocation times are the wall clock of the operation.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Why a VM may look idle or oversized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExemptReason {
    /// A disaster-recovery standby (灾备): idle until it takes over, at full size.
    DrStandby,
    /// Batch or periodic jobs (weekly, month-end, quarter-end) longer apart than the window.
    Batch,
    /// Capacity reserved for the 等保 grading / assessment (003 第二十八条).
    DengbaoReserve,
    /// Test or trial period (试运行) before going live.
    TestPeriod,
    /// Anything else; the note must say what.
    Other,
}

impl ExemptReason {
    pub fn label(self) -> &'static str {
        match self {
            ExemptReason::DrStandby => "容灾备用",
            ExemptReason::Batch => "批处理/周期性作业",
            ExemptReason::DengbaoReserve => "等保预留",
            ExemptReason::TestPeriod => "测试/试运行期",
            ExemptReason::Other => "其他",
        }
    }
}

/// A revocation: who, when, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub by: String,
    pub at_ms: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exemption {
    pub id: u64,
    /// The VM's SMBIOS UUID, lower case.
    pub vm: String,
    pub reason: ExemptReason,
    pub note: String,
    /// Who approved it (the cloud authority's person).
    pub approver: String,
    pub created_by: String,
    pub created_ms: u64,
    /// Valid while the evaluation's time is before this.
    pub expires_ms: u64,
    pub revoked: Option<Revocation>,
}

/// A new exemption, as the service makes it: the approver and creator are the signed-in
/// authority who grants it, never a name from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExemption {
    pub vm: String,
    pub reason: ExemptReason,
    pub note: String,
    pub approver: String,
    pub created_by: String,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExemptionState {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExemptError {
    #[error("exemption field {0:?} is empty")]
    Empty(&'static str),
    #[error("reason \"other\" needs a note saying what the exemption is for")]
    OtherNeedsNote,
    #[error("exemption expiry {expires_ms} is not after now ({now_ms}): nothing to exempt")]
    ExpiresInPast { expires_ms: u64, now_ms: u64 },
    #[error(
        "exemption would last {days} days; at most {max_days} days, then it is reviewed again"
    )]
    TooLong { days: u64, max_days: u32 },
    #[error("exemption {0} not found")]
    NotFound(u64),
    #[error("exemption {0} is already revoked")]
    AlreadyRevoked(u64),
}

/// The state of one VM's exemptions at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VmExemption<'a> {
    None,
    /// Exempt now (the one expiring last).
    Active(&'a Exemption),
    /// Not exempt now; this one (the latest to expire, not revoked) expired.
    Expired(&'a Exemption),
}

/// A finding's note that the VM's exemption has run out: back under review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpiredExemption {
    pub id: u64,
    pub reason: ExemptReason,
    pub approver: String,
    pub expired_ms: u64,
    /// Always "exemption expired".
    pub note: &'static str,
}

impl ExpiredExemption {
    pub fn of(e: &Exemption) -> Self {
        ExpiredExemption {
            id: e.id,
            reason: e.reason,
            approver: e.approver.clone(),
            expired_ms: e.expires_ms,
            note: "exemption expired",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Exemptions {
    items: Vec<Exemption>,
    /// VM → positions in `items`.
    by_vm: HashMap<String, Vec<usize>>,
    next_id: u64,
}

const DAY_MS: u64 = 86_400_000;

impl Exemption {
    pub fn state(&self, now_ms: u64) -> ExemptionState {
        if self.revoked.is_some() {
            ExemptionState::Revoked
        } else if now_ms < self.expires_ms {
            ExemptionState::Active
        } else {
            ExemptionState::Expired
        }
    }
}

impl Exemptions {
    /// The register as stored.
    pub fn restore(items: Vec<Exemption>) -> Self {
        let mut r = Exemptions::default();
        for e in items {
            r.insert(e);
        }
        r
    }

    pub fn list(&self) -> &[Exemption] {
        &self.items
    }

    pub fn get(&self, id: u64) -> Option<&Exemption> {
        self.items.iter().find(|e| e.id == id)
    }

    /// Check a request and build the exemption with a fresh id (not inserted: insert it once
    /// it is stored). `now_ms` is the evaluation clock; `wall_ms` the time of the operation.
    pub fn create(
        &mut self,
        req: NewExemption,
        now_ms: u64,
        wall_ms: u64,
        max_days: u32,
    ) -> Result<Exemption, ExemptError> {
        let vm = req.vm.trim().to_ascii_lowercase();
        for (field, value) in [
            ("vm", vm.as_str()),
            ("approver", req.approver.trim()),
            ("created_by", req.created_by.trim()),
        ] {
            if value.is_empty() {
                return Err(ExemptError::Empty(field));
            }
        }
        if req.reason == ExemptReason::Other && req.note.trim().is_empty() {
            return Err(ExemptError::OtherNeedsNote);
        }
        if req.expires_ms <= now_ms {
            return Err(ExemptError::ExpiresInPast {
                expires_ms: req.expires_ms,
                now_ms,
            });
        }
        let days = (req.expires_ms - now_ms).div_ceil(DAY_MS);
        if days > u64::from(max_days) {
            return Err(ExemptError::TooLong { days, max_days });
        }
        self.next_id += 1;
        Ok(Exemption {
            id: self.next_id,
            vm,
            reason: req.reason,
            note: req.note.trim().to_string(),
            approver: req.approver.trim().to_string(),
            created_by: req.created_by.trim().to_string(),
            created_ms: wall_ms,
            expires_ms: req.expires_ms,
            revoked: None,
        })
    }

    /// The exemption `id` revoked (not applied: apply it with [`insert`](Self::insert) once
    /// it is stored).
    pub fn revoked(
        &self,
        id: u64,
        by: &str,
        reason: &str,
        wall_ms: u64,
    ) -> Result<Exemption, ExemptError> {
        let e = self.get(id).ok_or(ExemptError::NotFound(id))?;
        if e.revoked.is_some() {
            return Err(ExemptError::AlreadyRevoked(id));
        }
        if by.trim().is_empty() {
            return Err(ExemptError::Empty("by"));
        }
        let mut e = e.clone();
        e.revoked = Some(Revocation {
            by: by.trim().to_string(),
            at_ms: wall_ms,
            reason: reason.trim().to_string(),
        });
        Ok(e)
    }

    /// Add an exemption, or replace the one with the same id.
    pub fn insert(&mut self, e: Exemption) {
        self.next_id = self.next_id.max(e.id);
        if let Some(pos) = self.items.iter().position(|x| x.id == e.id) {
            self.items[pos] = e;
            return;
        }
        self.by_vm
            .entry(e.vm.clone())
            .or_default()
            .push(self.items.len());
        self.items.push(e);
    }

    /// VM `vm`'s exemption state at `now_ms`.
    pub fn for_vm(&self, vm: &str, now_ms: u64) -> VmExemption<'_> {
        let Some(positions) = self.by_vm.get(vm) else {
            return VmExemption::None;
        };
        let live = positions
            .iter()
            .map(|&i| &self.items[i])
            .filter(|e| e.revoked.is_none());
        let mut expired: Option<&Exemption> = None;
        let mut active: Option<&Exemption> = None;
        for e in live {
            let slot = if now_ms < e.expires_ms {
                &mut active
            } else {
                &mut expired
            };
            if slot.is_none_or(|s| s.expires_ms < e.expires_ms) {
                *slot = Some(e);
            }
        }
        match (active, expired) {
            (Some(a), _) => VmExemption::Active(a),
            (None, Some(e)) => VmExemption::Expired(e),
            (None, None) => VmExemption::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_772_380_800_000;

    fn req(vm: &str, days: u64) -> NewExemption {
        NewExemption {
            vm: vm.into(),
            reason: ExemptReason::DrStandby,
            note: String::new(),
            approver: "数据局 王科长".into(),
            created_by: "ops:zhang".into(),
            expires_ms: NOW + days * DAY_MS,
        }
    }

    #[test]
    fn an_exemption_holds_until_it_expires_then_the_vm_is_back_under_review() {
        let mut r = Exemptions::default();
        let e = r.create(req("VM-A", 30), NOW, 5, 365).unwrap();
        assert_eq!(e.vm, "vm-a", "UUIDs are kept lower case");
        r.insert(e.clone());
        assert_eq!(r.for_vm("vm-a", NOW + 29 * DAY_MS), VmExemption::Active(&e));
        assert_eq!(
            r.for_vm("vm-a", NOW + 30 * DAY_MS),
            VmExemption::Expired(&e)
        );
        assert_eq!(e.state(NOW + 30 * DAY_MS), ExemptionState::Expired);
        assert_eq!(r.for_vm("vm-b", NOW), VmExemption::None);
        // a renewal makes it active again
        let renewed = r
            .create(req("vm-a", 60), NOW + 30 * DAY_MS, 6, 365)
            .unwrap();
        r.insert(renewed.clone());
        assert_eq!(
            r.for_vm("vm-a", NOW + 31 * DAY_MS),
            VmExemption::Active(&renewed)
        );
    }

    #[test]
    fn a_revoked_exemption_exempts_nothing() {
        let mut r = Exemptions::default();
        let e = r.create(req("vm-a", 30), NOW, 5, 365).unwrap();
        r.insert(e.clone());
        let rev = r
            .revoked(e.id, "ops:li", "standby decommissioned", 9)
            .unwrap();
        r.insert(rev);
        assert_eq!(r.for_vm("vm-a", NOW), VmExemption::None);
        assert_eq!(r.list().len(), 1, "kept as history");
        assert_eq!(r.list()[0].state(NOW), ExemptionState::Revoked);
        assert_eq!(
            r.revoked(e.id, "ops:li", "", 10),
            Err(ExemptError::AlreadyRevoked(e.id))
        );
        assert_eq!(
            r.revoked(77, "ops:li", "", 10),
            Err(ExemptError::NotFound(77))
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let mut r = Exemptions::default();
        let mut q = req("vm-a", 30);
        q.approver = " ".into();
        assert_eq!(
            r.create(q, NOW, 0, 365),
            Err(ExemptError::Empty("approver"))
        );
        let mut q = req("vm-a", 30);
        q.reason = ExemptReason::Other;
        assert_eq!(r.create(q, NOW, 0, 365), Err(ExemptError::OtherNeedsNote));
        let e = r.create(req("vm-a", 0), NOW, 0, 365).unwrap_err();
        assert!(e.to_string().contains("not after now"), "{e}");
        let e = r.create(req("vm-a", 400), NOW, 0, 365).unwrap_err();
        assert_eq!(
            e,
            ExemptError::TooLong {
                days: 400,
                max_days: 365
            }
        );
    }

    #[test]
    fn reasons_use_snake_case_names() {
        let r: ExemptReason = serde_json::from_value(serde_json::json!("dengbao_reserve")).unwrap();
        assert_eq!(r, ExemptReason::DengbaoReserve);
        assert_eq!(
            serde_json::to_value(ExemptReason::DrStandby).unwrap(),
            "dr_standby"
        );
        assert!(serde_json::from_value::<ExemptReason>(serde_json::json!("holiday")).is_err());
    }
}
