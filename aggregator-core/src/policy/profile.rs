//! Policy profiles: the same engine, different numbers. One file per regulation in
//! `aggregator-core/profiles/` (embedded in the binary); a deployment picks one with
//! `policy_profile = "003"` or a path to its own file. Defaults come from 003 (the 70% rule).

use super::hysteresis::Thresholds;
use crate::time::duration;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The built-in profiles, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("000", include_str!("../../profiles/000.toml")),
    ("001", include_str!("../../profiles/001.toml")),
    ("002", include_str!("../../profiles/002.toml")),
    ("003", include_str!("../../profiles/003.toml")),
    ("004", include_str!("../../profiles/004.toml")),
];

/// The default profile: 徽州区 (003), whose 第十九条 sets the 70% capacity warning.
pub const DEFAULT: &str = "003";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name (`000`…`004` for the built-ins).
    pub name: String,
    /// The regulation's title, as the document itself prints it (one title per document: pages
    /// and alarms show this one).
    pub title: String,
    /// The clause each rule cites under this profile: always this document's own (see
    /// [`Clauses`]).
    pub clauses: Clauses,
    /// The region's application form and network zones, read by the register import and the
    /// applications ([`crate::register::form::FormSpec`]).
    pub register: crate::register::form::FormSpec,
    /// Pool and platform capacity (compute, memory, storage, network): 003 第十九条.
    pub capacity: CapacityPolicy,
    /// A unit system's own use reaching its warning peak: 002 第十一条.
    pub peak: PeakPolicy,
    /// The mandated antivirus: 003 附件1 承诺书, 001 第九条(四).
    pub antivirus: AntivirusPolicy,
    /// Retention of operation and audit logs: 000 第二十三条 (≥ 6 months), 001 第十九条 (≥ 1 year).
    pub retention: RetentionPolicy,
    /// The resource lifecycle (申请 → 受理 → 审核 → 审批 → 测试 → 开通 → 变更 → 终止): who takes
    /// each step, its deadline in working days (工作日) and its clause; test, trial and
    /// temporary periods ([`super::lifecycle`]).
    pub lifecycle: super::lifecycle::LifecyclePolicy,
    /// Low-use reclaim cases (降配 / 回收): 002 第十一条, 003 第二十一条, 003 第二十条.
    #[serde(default)]
    pub reclaim: ReclaimPolicy,
    /// Utilisation history kept per VM (retention, time zone): [`crate::usage`].
    #[serde(default)]
    pub usage: crate::usage::UsagePolicy,
    /// Idle VMs, candidates for reclaim: 002 第十一条, 003 第二十一条 / 第三十条, 004 第十六条.
    #[serde(default)]
    pub idle: crate::usage::IdlePolicy,
    /// Over-provisioned VMs, candidates for downsizing (降配): same clauses, 001 第三十七条.
    #[serde(default)]
    pub rightsizing: crate::usage::RightsizingPolicy,
}

/// Deadlines and periods of a reclaim case (see `docs/RECLAIM.md`). Working days (工作日) are
/// counted with the holiday calendar (`[reclaim] calendars` in the aggregator config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReclaimPolicy {
    /// Ops notifies the unit of a detected case within this many working days.
    pub notify_days: u32,
    /// The unit answers the notice (agrees, or disputes with a reason) within this many.
    pub reply_days: u32,
    /// Ops files the plan with the authority (备案) within this many after the answer.
    pub file_days: u32,
    /// The authority approves or rejects within this many (the profile's terminate review).
    pub approve_days: u32,
    /// The resources are taken back within this many after approval (000, 001, 003: 3; 004: 5).
    pub execute_days: u32,
    /// A stopped VM is kept (not released) for this many calendar days (003 第二十条: ≥ 3 months).
    pub hold_days: u32,
    /// Just before acting the finding must have been confirmed this recently (still idle).
    #[serde(with = "duration")]
    pub recheck_within: std::time::Duration,
    /// The profile's own clause on reclaiming (cited by the overdue, total-deadline and
    /// calendar alarms), e.g. `003 第二十一条`.
    pub clause: String,
    /// A disputed case is executed only after the unit's agreement is recorded (002 第十一条:
    /// 报备案 **and** 协商一致 before 降配 or 回收).
    pub agreement_required: bool,
    /// The clause that requires the agreement (cited when an execution is refused).
    pub agreement_clause: String,
    /// Review and reclaim together within this many working days, counted from the unit's
    /// agreement (its request to give the resources back), e.g. 004 第十七条: 5. 0: no total.
    pub total_days: u32,
    /// 004 第十六条's ladder (通报 → 整改 → 拒不整改: 降低配额、限制服务 → 回收): once the unit refuses
    /// (disputes, or stays silent past the reply deadline) ops may limit the VM's service with
    /// these caps before it is reclaimed. `None`: the regulation has no such rung.
    pub limit: Option<LimitPolicy>,
}

/// The caps of a limited service (sent as `Action::Limit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitPolicy {
    /// The VM's vCPU time, percent of its vCPUs (1–100).
    pub vcpu_percent: u8,
    /// Disk throughput per disk, bytes per second.
    #[serde(default)]
    pub disk_bytes_sec: Option<u64>,
    /// Disk I/O operations per disk per second.
    #[serde(default)]
    pub disk_iops_sec: Option<u64>,
    /// The clause cited on the case.
    pub clause: String,
}

impl Default for ReclaimPolicy {
    fn default() -> Self {
        ReclaimPolicy {
            notify_days: 2,
            reply_days: 5,
            file_days: 3,
            approve_days: 5,
            execute_days: 3,
            hold_days: 92,
            recheck_within: std::time::Duration::from_secs(86_400),
            clause: "003 第二十一条".into(),
            agreement_required: false,
            agreement_clause: String::new(),
            total_days: 0,
            limit: None,
        }
    }
}

/// What each rule cites under a profile: the clause of the profile's own document (`003
/// 第十九条`, with a short gloss in brackets where it helps). Where a document has no clause of
/// its own for a rule, the profile cites the clause of that document closest to it (its
/// monitoring, security or adjustment clause) and its comment says why and which region's
/// rule the numbers follow; an alarm never cites another region's document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clauses {
    /// Pool and platform capacity against the 70% line (`capacity`, `capacity_forecast`).
    pub capacity: String,
    /// A unit system's own use at its warning peak (`peak`).
    pub peak: String,
    /// The mandated antivirus removed (`antivirus`, critical; the stop decision).
    pub antivirus_removed: String,
    /// The mandated antivirus missing or degraded (`antivirus`, warning).
    pub antivirus_missing: String,
    /// A node offline or silent (`node_down`).
    pub liveness: String,
    /// A hardware fault reported by a host's BMC (`hardware`).
    pub hardware: String,
    /// A running VM without an entry in the register (`unregistered_vm`).
    pub unregistered_vm: String,
    /// A VM claimed by two hosts or two guests (`vm_claim_conflict`).
    pub vm_claim_conflict: String,
    /// A VM running above its approved configuration (`quota_vm`; the register page's
    /// "超出核准配置").
    pub quota_vm: String,
    /// A unit above its approved total or quota (`quota_unit`; sanctions).
    pub quota_unit: String,
    /// A unit's requests for more resources held while it has open low-use cases.
    pub low_use_hold: String,
    /// Low-use reclaim cases (降配 / 回收) and their steps.
    pub reclaim: String,
    /// Retention of the operation and audit logs.
    pub retention: String,
}

impl Clauses {
    /// Every rule's citation, named by its field.
    pub fn all(&self) -> [(&'static str, &str); 13] {
        [
            ("capacity", &self.capacity),
            ("peak", &self.peak),
            ("antivirus_removed", &self.antivirus_removed),
            ("antivirus_missing", &self.antivirus_missing),
            ("liveness", &self.liveness),
            ("hardware", &self.hardware),
            ("unregistered_vm", &self.unregistered_vm),
            ("vm_claim_conflict", &self.vm_claim_conflict),
            ("quota_vm", &self.quota_vm),
            ("quota_unit", &self.quota_unit),
            ("low_use_hold", &self.low_use_hold),
            ("reclaim", &self.reclaim),
            ("retention", &self.retention),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityPolicy {
    /// The allocated and the used ratio against capacity.
    pub thresholds: Thresholds,
    /// The pre-warning line below `thresholds` (003 第十九条 asks for the warning when use
    /// *approaches* 70%, 接近): at or above it (after its hold) the scope's capacity alarm is
    /// raised as a pre-warning (提示), which becomes the 70% alarm at the line. Absent: no
    /// pre-warning.
    #[serde(default)]
    pub prewarn: Option<Thresholds>,
    /// Warn when the trend crosses `thresholds.warn_pct` within this many days.
    pub forecast_horizon_days: u32,
    /// Days of history the trend is fitted on.
    pub forecast_window_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakPolicy {
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AntivirusPolicy {
    /// Signatures older than this make the VM "degraded".
    pub signature_max_age_days: u32,
    /// Stopping a VM whose antivirus was removed needs the authority's approval.
    pub stop_requires_approval: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Calendar months the audit log is kept (000: at least 6; 001 第十九条: at least a year).
    pub audit_months: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("policy profile {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("policy profile file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy profile {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Profile {
    pub fn parse(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        p.validate(origin)?;
        Ok(p)
    }

    /// A built-in profile by name (`003`), or a profile file by path.
    pub fn load(name_or_path: &str) -> Result<Self, ProfileError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, &format!("built-in {name_or_path}"));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: format!(
                "{name_or_path} (not a built-in profile: {})",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            source,
        })?;
        Self::parse(&text, name_or_path)
    }

    fn validate(&self, origin: &str) -> Result<(), ProfileError> {
        let bad = |message: String| ProfileError::Invalid {
            origin: origin.to_string(),
            message,
        };
        for (what, t) in [
            ("capacity", &self.capacity.thresholds),
            ("peak", &self.peak.thresholds),
        ] {
            if !(0.0..=100.0).contains(&t.warn_pct) || t.recovery_pct > t.warn_pct {
                return Err(bad(format!(
                    "{what}: need 0 ≤ recovery_pct ({}) ≤ warn_pct ({}) ≤ 100",
                    t.recovery_pct, t.warn_pct
                )));
            }
            if t.escalate.iter().any(|e| e.pct < t.warn_pct) {
                return Err(bad(format!("{what}: escalation levels must be ≥ warn_pct")));
            }
        }
        if let Some(p) = &self.capacity.prewarn {
            let line = self.capacity.thresholds.warn_pct;
            if !(0.0..line).contains(&p.warn_pct) || p.recovery_pct > p.warn_pct {
                return Err(bad(format!(
                    "capacity.prewarn: need 0 ≤ recovery_pct ({}) ≤ warn_pct ({}) < the line ({line})",
                    p.recovery_pct, p.warn_pct
                )));
            }
            if !p.escalate.is_empty() {
                return Err(bad(
                    "capacity.prewarn: a pre-warning does not escalate".into()
                ));
            }
        }
        // every citation is this document's own: it starts with the profile's name
        let own = format!("{} ", self.name);
        let cited = self.clauses.all().into_iter().chain([
            ("idle.clause", self.idle.clause.as_str()),
            ("rightsizing.clause", self.rightsizing.clause.as_str()),
        ]);
        for (what, text) in cited {
            if !text.starts_with(&own) {
                return Err(bad(format!(
                    "{what} = \"{text}\": cite this profile's own document (start with \"{own}\")"
                )));
            }
        }
        self.register.validate().map_err(bad)?;
        crate::usage::validate(&self.usage, &self.idle, &self.rightsizing).map_err(bad)?;
        self.lifecycle.validate().map_err(bad)?;
        Ok(())
    }
}

impl Profile {
    /// The idle and over-provisioned rules' settings, for [`crate::usage::UsageHistory::evaluate`].
    pub fn usage_rules(&self) -> crate::usage::UsageRules<'_> {
        crate::usage::UsageRules {
            profile: &self.name,
            idle: &self.idle,
            rightsizing: &self.rightsizing,
        }
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::load(DEFAULT).expect("the built-in default profile is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_loads() {
        for (name, _) in BUILTIN {
            let p = Profile::load(name).unwrap();
            assert_eq!(&p.name, name);
        }
        let p = Profile::default();
        assert_eq!(p.capacity.thresholds.warn_pct, 70.0);
        assert!(p.retention.audit_months >= 6);
    }

    #[test]
    fn errors_name_the_profile_and_problem() {
        let e = Profile::load("/nonexistent/p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/p.toml") && e.contains("003"),
            "{e}"
        );
        let mut text = BUILTIN[3]
            .1
            .replace("recovery_pct = 65.0", "recovery_pct = 75.0");
        let e = Profile::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("recovery_pct"), "{e}");
        text = BUILTIN[3].1.replace("[retention]", "[retention]\nfoo = 1");
        let e = Profile::parse(&text, "y.toml").unwrap_err().to_string();
        assert!(e.contains("foo"), "{e}");
    }

    #[test]
    fn durations_roundtrip() {
        for s in ["500ms", "10s", "5m", "2h", "3d"] {
            assert_eq!(duration::format(&duration::parse(s).unwrap()), s);
        }
        assert!(duration::parse("5").is_err());
        assert!(duration::parse("5y").is_err());
    }
}
