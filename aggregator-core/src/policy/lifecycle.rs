//! A profile's `[lifecycle]` section, the rules of [`crate::lifecycle`]: for each step of an
//! application, who takes it, within how many working days (工作日) and under which clause of
//! the profile's own regulation; the test, trial and temporary periods; the service period;
//! the extension notice.

use crate::identity::Role;
use crate::time::Day;
use serde::{Deserialize, Serialize};

/// One waiting step of an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRule {
    /// The role that takes the step (`ops`, `authority`).
    pub by: Role,
    /// Working days allowed; 0: the regulation sets no deadline for it.
    #[serde(default)]
    pub days: u32,
    /// Count the deadline from the application's submission, not from the step's start (004
    /// 第十七条: "五个工作日内完成审核并回收资源" is one budget for both steps).
    #[serde(default)]
    pub from_submission: bool,
    /// The clause of the profile's regulation that sets the step (shown with its deadline).
    pub clause: String,
}

/// The lifecycle rules of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecyclePolicy {
    /// 受理: the application is complete and reasonable (or 不予受理 with the reason).
    pub accept: StepRule,
    /// 审核 / 评估 / 初审.
    pub review: StepRule,
    /// 审批 / 领导审批.
    pub approve: StepRule,
    /// After approval: the test environment provided, or the approved resources opened.
    pub provision: StepRule,
    /// A change application reviewed (and approved).
    pub change_review: StepRule,
    /// An approved change carried out.
    pub change_do: StepRule,
    /// A termination reviewed.
    pub terminate_review: StepRule,
    /// An approved termination carried out (resources taken back).
    pub terminate_do: StepRule,
    /// The test period of a new system (`15d`; unset: none, the system opens directly).
    #[serde(default)]
    pub test: Option<Period>,
    /// The trial run (试运行) after the test, at least (003 第十四条: `30d`).
    #[serde(default)]
    pub trial_min: Option<Period>,
    /// The longest a test allocation (kind `test`, server type TST) may run (`3mo`); unset: the
    /// regulation sets no limit and the application gives the end date.
    #[serde(default)]
    pub test_max: Option<Period>,
    /// The longest a temporary allocation may run; unset: the regulation has no temporary
    /// resources and such applications are refused.
    #[serde(default)]
    pub temporary_max: Option<Period>,
    /// An extension must be asked at least this many working days before expiry (004 第二十条).
    #[serde(default)]
    pub extension_notice_days: u32,
    /// Calendar months of the service period once opened (001 第二十二条(五): one year); 0: open-ended.
    #[serde(default)]
    pub service_months: u32,
    /// Working days to resolve a shortfall when the pool cannot meet an approved need (002 第十条).
    #[serde(default)]
    pub shortfall_days: u32,
    /// Remind the unit this many calendar days before a test or temporary allocation ends.
    pub remind_days: u32,
    /// Clauses cited by the rules that are not steps.
    pub clauses: LifecycleClauses,
}

/// Clauses of the profile's regulation cited by the lifecycle's other rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleClauses {
    /// The test period (and its allocation's end).
    pub test: String,
    /// The trial run.
    #[serde(default)]
    pub trial: String,
    /// Temporary resources and their extension.
    #[serde(default)]
    pub temporary: String,
    /// A change may not change a resource's use (003 第十五条), where the profile says so.
    #[serde(default)]
    pub change_use: String,
    /// The unit's declaration before termination (data migrated or backed up).
    pub terminate: String,
    /// The service period.
    #[serde(default)]
    pub service: String,
    /// The shortfall rule.
    #[serde(default)]
    pub shortfall: String,
}

impl LifecyclePolicy {
    /// Problems with the numbers (the step roles are typed already).
    pub fn validate(&self) -> Result<(), String> {
        for (name, s) in self.steps() {
            if !matches!(s.by, Role::Ops | Role::Authority) {
                return Err(format!(
                    "lifecycle.{name}: by = \"{}\": a step is taken by ops or authority",
                    s.by.as_str()
                ));
            }
            if s.clause.trim().is_empty() {
                return Err(format!("lifecycle.{name}: clause is empty"));
            }
        }
        if self.extension_notice_days > 0 && self.temporary_max.is_none() {
            return Err("lifecycle.extension_notice_days is set but temporary_max is not".into());
        }
        Ok(())
    }

    /// Every step rule by its key.
    pub fn steps(&self) -> [(&'static str, &StepRule); 8] {
        [
            ("accept", &self.accept),
            ("review", &self.review),
            ("approve", &self.approve),
            ("provision", &self.provision),
            ("change_review", &self.change_review),
            ("change_do", &self.change_do),
            ("terminate_review", &self.terminate_review),
            ("terminate_do", &self.terminate_do),
        ]
    }
}

/// A period in calendar days or calendar months ("三个月" is three months from the day of
/// allocation, not 90 days). Written `15d` or `3mo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Period {
    Days(u32),
    Months(u32),
}

impl TryFrom<String> for Period {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("period {s:?}: expected days (\"15d\") or months (\"3mo\")");
        if let Some(n) = s.strip_suffix("mo") {
            return n.parse().map(Period::Months).map_err(|_| bad());
        }
        if let Some(n) = s.strip_suffix('d') {
            return n.parse().map(Period::Days).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl From<Period> for String {
    fn from(p: Period) -> String {
        match p {
            Period::Days(n) => format!("{n}d"),
            Period::Months(n) => format!("{n}mo"),
        }
    }
}

impl Period {
    /// The day the period starting on `from` ends (the last day it covers is the day before):
    /// 2026-01-31 + 1mo = 2026-02-28 (the month's last day when the day does not exist).
    pub fn end(self, from: Day) -> Day {
        match self {
            Period::Days(n) => from + n as i32,
            Period::Months(n) => {
                let (y, m, d) = from.ymd();
                let months = y * 12 + i64::from(m - 1) + i64::from(n);
                let (y2, m2) = (months.div_euclid(12), months.rem_euclid(12) as u32 + 1);
                let last = (Day::from_ymd(
                    if m2 == 12 { y2 + 1 } else { y2 },
                    if m2 == 12 { 1 } else { m2 + 1 },
                    1,
                ) - 1)
                    .ymd()
                    .2;
                Day::from_ymd(y2, m2, d.min(last))
            }
        }
    }

    /// In Chinese: `15 个日历天`, `3 个月`.
    pub fn zh(self) -> String {
        match self {
            Period::Days(n) => format!("{n} 个日历天"),
            Period::Months(n) => format!("{n} 个月"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_end_on_calendar_dates() {
        let p = |s: &str| Period::try_from(s.to_string());
        assert_eq!(p("15d"), Ok(Period::Days(15)));
        assert_eq!(p("3mo"), Ok(Period::Months(3)));
        assert!(p("3").unwrap_err().contains("3mo"));
        assert!(p("xd").is_err());
        let d = |s: &str| Day::parse(s).unwrap();
        assert_eq!(Period::Months(3).end(d("2026-11-30")), d("2027-02-28"));
        assert_eq!(Period::Months(1).end(d("2028-01-31")), d("2028-02-29"));
        assert_eq!(Period::Months(12).end(d("2026-03-15")), d("2027-03-15"));
        assert_eq!(Period::Days(15).end(d("2026-09-28")), d("2026-10-13"));
    }
}
