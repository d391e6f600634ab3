//! The idle and over-provisioned rules over the daily summaries.
//!
//! **Idle** (candidate for reclaim, 回收): the VM is at least `window_days` old; at least
//! `min_coverage_pct` of the window's days are covered (samples over ≥ `day_min_coverage_pct`
//! of the day); *every* covered day of the window is quiet (CPU p95 ≤ `quiet_cpu_p95_pct` and
//! network in+out ≤ `quiet_net_mb_per_day`); and *no* day of the last `lookback_days`
//! (today included) is busy (CPU p99 ≥ `busy_cpu_p99_pct`, about a quarter of an hour of real
//! work, or network ≥ `busy_net_mb_per_day`).
//!
//! Why every day and a look-back, rather than AWS's "quiet on 4 of 14 days": a count of quiet
//! days flags a VM that runs a job one day a week (12 quiet days of 14) and, with a 14-day
//! window, one that works only at month-end. A reclaim takes a unit's system away, so one busy
//! day in the look-back (35 days: a month-end and five weekly cycles) keeps a VM off the list.
//! A daily p99 (not the max) decides "busy", so a few minutes of updates or an antivirus scan do
//! not; a daily p95 decides "quiet", like Azure's P95 < 3 %.
//!
//! **Over-provisioned** (candidate for downsizing, 降配): over `[rightsizing] window_days`
//! with the same coverage rule, the busiest day's p95 (as busy vCPUs: p95 × that day's vCPUs)
//! and the peak memory really used would stay under `cpu_p95_target_pct` and
//! `mem_peak_target_pct` on a smaller size from `vcpu_steps` / `mem_steps_gib`. The maximum of
//! daily p95s is never below the window's p95, so the recommendation errs on the large side.
//! A VM found idle is not also reported over-provisioned.
//!
//! A VM with an active exemption gets no finding; one whose exemption expired gets its finding
//! with `exemption_expired` set.

use super::exempt::{Exemptions, ExpiredExemption, VmExemption};
use super::history::{DailySummary, UsageHistory};
use crate::time::Day;
use serde::{Deserialize, Serialize};

/// Version of the idle rule's logic (the evidence carries it; bump on any change of meaning).
pub const IDLE_RULE_VERSION: u32 = 1;
pub const RIGHTSIZING_RULE_VERSION: u32 = 1;

/// `[idle]` in the policy profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdlePolicy {
    pub enabled: bool,
    /// The clause a finding cites.
    pub clause: String,
    /// Days that must all be quiet (ending yesterday).
    pub window_days: u32,
    /// Days (ending today) in which a single busy day keeps the VM off the list.
    pub lookback_days: u32,
    /// A quiet day's CPU p95 at most, % of the VM's vCPUs.
    pub quiet_cpu_p95_pct: f64,
    /// A quiet day's network in + out at most, MB (10⁶ bytes).
    pub quiet_net_mb_per_day: f64,
    /// A day whose CPU p99 reaches this is busy.
    pub busy_cpu_p99_pct: f64,
    /// A day with this much network in + out is busy, MB.
    pub busy_net_mb_per_day: f64,
    /// A day counts as covered when its samples cover at least this share of it, %.
    pub day_min_coverage_pct: f64,
    /// Covered days needed, % of the window.
    pub min_coverage_pct: f64,
    /// Longest exemption allowed before it must be reviewed again, days.
    pub max_exemption_days: u32,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            enabled: true,
            clause: "003 第二十一条, 第三十条".into(),
            window_days: 14,
            lookback_days: 35,
            quiet_cpu_p95_pct: 5.0,
            quiet_net_mb_per_day: 500.0,
            busy_cpu_p99_pct: 20.0,
            busy_net_mb_per_day: 5_000.0,
            day_min_coverage_pct: 50.0,
            min_coverage_pct: 80.0,
            max_exemption_days: 365,
        }
    }
}

/// `[rightsizing]` in the policy profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RightsizingPolicy {
    pub enabled: bool,
    pub clause: String,
    pub window_days: u32,
    /// The busiest day's CPU p95 on the new size at most, %.
    pub cpu_p95_target_pct: f64,
    /// The peak memory really used on the new size at most, %.
    pub mem_peak_target_pct: f64,
    pub day_min_coverage_pct: f64,
    pub min_coverage_pct: f64,
    /// Sizes a VM may be given, ascending.
    pub vcpu_steps: Vec<u16>,
    pub mem_steps_gib: Vec<u32>,
}

impl Default for RightsizingPolicy {
    fn default() -> Self {
        RightsizingPolicy {
            enabled: true,
            clause: "003 第二十一条, 第三十条".into(),
            window_days: 30,
            cpu_p95_target_pct: 60.0,
            mem_peak_target_pct: 70.0,
            day_min_coverage_pct: 50.0,
            min_coverage_pct: 80.0,
            vcpu_steps: vec![1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128],
            mem_steps_gib: vec![
                1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
            ],
        }
    }
}

fn pct_ok(what: &str, v: f64) -> Result<(), String> {
    if v > 0.0 && v <= 100.0 {
        Ok(())
    } else {
        Err(format!("{what} ({v}) must be above 0 and at most 100"))
    }
}

fn ascending<T: PartialOrd + Default + Copy>(what: &str, steps: &[T]) -> Result<(), String> {
    if steps.is_empty() || steps[0] <= T::default() || steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("{what} must be positive and ascending"));
    }
    Ok(())
}

impl IdlePolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.window_days == 0 || self.lookback_days < self.window_days {
            return Err(format!(
                "idle: need 1 ≤ window_days ({}) ≤ lookback_days ({})",
                self.window_days, self.lookback_days
            ));
        }
        pct_ok("idle.quiet_cpu_p95_pct", self.quiet_cpu_p95_pct)?;
        pct_ok("idle.busy_cpu_p99_pct", self.busy_cpu_p99_pct)?;
        pct_ok("idle.day_min_coverage_pct", self.day_min_coverage_pct)?;
        pct_ok("idle.min_coverage_pct", self.min_coverage_pct)?;
        if self.busy_cpu_p99_pct <= self.quiet_cpu_p95_pct
            || self.busy_net_mb_per_day < self.quiet_net_mb_per_day
            || self.quiet_net_mb_per_day < 0.0
        {
            return Err("idle: the busy thresholds must be above the quiet ones".into());
        }
        Ok(())
    }
}

impl RightsizingPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.window_days == 0 {
            return Err("rightsizing.window_days must be at least 1".into());
        }
        pct_ok("rightsizing.cpu_p95_target_pct", self.cpu_p95_target_pct)?;
        pct_ok("rightsizing.mem_peak_target_pct", self.mem_peak_target_pct)?;
        pct_ok(
            "rightsizing.day_min_coverage_pct",
            self.day_min_coverage_pct,
        )?;
        pct_ok("rightsizing.min_coverage_pct", self.min_coverage_pct)?;
        ascending("rightsizing.vcpu_steps", &self.vcpu_steps)?;
        ascending("rightsizing.mem_steps_gib", &self.mem_steps_gib)
    }
}

/// What the two rules are evaluated with: the policy profile's `[idle]` and `[rightsizing]`
/// sections and its name (the evidence cites it). The profile hands them over
/// (`Profile::usage_rules`), so this module needs nothing of the policy engine.
#[derive(Debug, Clone, Copy)]
pub struct UsageRules<'a> {
    pub profile: &'a str,
    pub idle: &'a IdlePolicy,
    pub rightsizing: &'a RightsizingPolicy,
}

/// A VM size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size {
    pub vcpus: u16,
    pub mem_gib: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FindingKind {
    /// Candidate for reclaim.
    Idle,
    /// Candidate for downsizing.
    OverProvisioned { current: Size, recommended: Size },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub from: Day,
    pub to: Day,
    pub days: u32,
    /// Idle only: the first day of the look-back for busy days.
    pub lookback_from: Option<Day>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Thresholds {
    Idle(IdlePolicy),
    Rightsizing(RightsizingPolicy),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    /// Days of the window covered enough to count.
    pub days_covered: u32,
    pub days_required: u32,
    /// Share of the window's time covered by samples.
    pub coverage_pct: f64,
    /// First day with data (the VM's age).
    pub first_day: Day,
    pub age_days: u32,
}

/// The window's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub cpu_p95_max_pct: f64,
    pub cpu_p99_max_pct: f64,
    pub cpu_mean_pct: f64,
    /// The busiest day's p95 in vCPUs.
    pub busy_vcpus_p95: f64,
    pub mem_peak_mib: u32,
    pub net_max_mb_per_day: f64,
    /// The VM's current size (latest day).
    pub vcpus: u16,
    pub mem_total_mib: u32,
    /// Over-provisioned only: the busiest p95 and the memory peak on the recommended size, %.
    pub projected_cpu_p95_pct: Option<f64>,
    pub projected_mem_peak_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// `idle` or `rightsizing`.
    pub rule: &'static str,
    pub rule_version: u32,
    pub clause: String,
    /// The policy profile the thresholds came from.
    pub profile: String,
    pub window: Window,
    pub thresholds: Thresholds,
    pub coverage: Coverage,
    /// The days that qualified (quiet for idle; covered and under target for rightsizing).
    pub qualifying_days: Vec<Day>,
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageFinding {
    /// SMBIOS UUID (lower case), or the node id of a VM whose inventory is unknown.
    pub vm: String,
    pub kind: FindingKind,
    pub evidence: Evidence,
    /// Set when the VM was exempt and its exemption ran out: back under review.
    pub exemption_expired: Option<ExpiredExemption>,
}

const MB: f64 = 1e6;

/// Figures over the days of a window.
#[derive(Debug, Default)]
struct Acc {
    days_covered: u32,
    covered_s: u64,
    p95: u16,
    p99: u16,
    busy_vcpus: f64,
    cpu_sum: f64,
    n: u32,
    mem_peak: u32,
    net_max: f64,
    latest: Option<DailySummary>,
}

impl Acc {
    fn add(&mut self, d: &DailySummary) {
        self.covered_s += u64::from(d.covered_s);
        self.p95 = self.p95.max(d.cpu_p95);
        self.p99 = self.p99.max(d.cpu_p99);
        self.busy_vcpus = self
            .busy_vcpus
            .max(f64::from(d.cpu_p95) / 10_000.0 * f64::from(d.vcpus));
        self.cpu_sum += f64::from(d.cpu_mean);
        self.n += 1;
        self.mem_peak = self.mem_peak.max(d.mem_used_max_mib);
        self.net_max = self.net_max.max(d.net_bytes());
        if self.latest.is_none_or(|l| l.day < d.day) {
            self.latest = Some(*d);
        }
    }

    fn figures(&self) -> Figures {
        let latest = self.latest.unwrap_or_default();
        Figures {
            cpu_p95_max_pct: f64::from(self.p95) / 100.0,
            cpu_p99_max_pct: f64::from(self.p99) / 100.0,
            cpu_mean_pct: self.cpu_sum / f64::from(self.n.max(1)) / 100.0,
            busy_vcpus_p95: self.busy_vcpus,
            mem_peak_mib: self.mem_peak,
            net_max_mb_per_day: self.net_max / MB,
            vcpus: latest.vcpus,
            mem_total_mib: latest.mem_total_mib,
            projected_cpu_p95_pct: None,
            projected_mem_peak_pct: None,
        }
    }

    fn coverage(&self, window: u32, required: u32, since: Day, today: Day) -> Coverage {
        Coverage {
            days_covered: self.days_covered,
            days_required: required,
            coverage_pct: self.covered_s as f64 * 100.0 / (f64::from(window) * 86_400.0),
            first_day: since,
            age_days: (today - since).max(0) as u32,
        }
    }
}

fn required_days(window: u32, pct: f64) -> u32 {
    (f64::from(window) * pct / 100.0).ceil() as u32
}

fn window(from: Day, to: Day, lookback_from: Option<Day>) -> Window {
    Window {
        from,
        to,
        days: (to - from + 1) as u32,
        lookback_from,
    }
}

/// The idle rule on one VM's days (ascending, any range covering the look-back).
fn idle(
    days: &[DailySummary],
    since: Day,
    today: Day,
    p: &IdlePolicy,
    profile: &str,
    qualifying: &mut Vec<Day>,
) -> Option<Evidence> {
    let (from, to) = (today - p.window_days as i32, today - 1);
    if since > from {
        return None; // younger than the window
    }
    let lookback_from = today - p.lookback_days as i32;
    let busy_cpu = (p.busy_cpu_p99_pct * 100.0) as u16;
    let quiet_cpu = (p.quiet_cpu_p95_pct * 100.0) as u16;
    let mut acc = Acc::default();
    qualifying.clear();
    for d in days
        .iter()
        .filter(|d| d.day >= lookback_from && d.day <= today)
    {
        let net = d.net_bytes();
        if d.cpu_p99 >= busy_cpu || net >= p.busy_net_mb_per_day * MB {
            return None; // a busy day in the look-back
        }
        if d.day < from || d.day > to {
            continue;
        }
        acc.add(d);
        if d.coverage() * 100.0 >= p.day_min_coverage_pct {
            acc.days_covered += 1;
            if d.cpu_p95 > quiet_cpu || net > p.quiet_net_mb_per_day * MB {
                return None; // a covered day that is not quiet
            }
            qualifying.push(d.day);
        }
    }
    let required = required_days(p.window_days, p.min_coverage_pct);
    if acc.days_covered < required || acc.days_covered == 0 {
        return None;
    }
    Some(Evidence {
        rule: "idle",
        rule_version: IDLE_RULE_VERSION,
        clause: p.clause.clone(),
        profile: profile.to_string(),
        window: window(from, to, Some(lookback_from)),
        thresholds: Thresholds::Idle(p.clone()),
        coverage: acc.coverage(p.window_days, required, since, today),
        qualifying_days: qualifying.clone(),
        figures: acc.figures(),
    })
}

/// The smallest step at or above `need`, if any.
fn step_up<T: PartialOrd + Copy>(steps: &[T], need: T) -> Option<T> {
    steps.iter().copied().find(|&s| s >= need)
}

/// The size that keeps the window's busiest p95 and peak memory under the targets.
pub fn recommend(busy_vcpus: f64, mem_peak_mib: u32, current: Size, p: &RightsizingPolicy) -> Size {
    let need_vcpus = (busy_vcpus / (p.cpu_p95_target_pct / 100.0))
        .ceil()
        .max(1.0);
    let need_vcpus = need_vcpus.min(f64::from(u16::MAX)) as u16;
    let vcpus = step_up(&p.vcpu_steps, need_vcpus)
        .unwrap_or(current.vcpus)
        .min(current.vcpus);
    let need_gib = (f64::from(mem_peak_mib) / (p.mem_peak_target_pct / 100.0) / 1024.0)
        .ceil()
        .max(1.0) as u32;
    let mem_gib = step_up(&p.mem_steps_gib, need_gib)
        .unwrap_or(current.mem_gib)
        .min(current.mem_gib);
    Size { vcpus, mem_gib }
}

fn rightsizing(
    days: &[DailySummary],
    since: Day,
    today: Day,
    p: &RightsizingPolicy,
    profile: &str,
    qualifying: &mut Vec<Day>,
) -> Option<(Size, Size, Evidence)> {
    let (from, to) = (today - p.window_days as i32, today - 1);
    if since > from {
        return None;
    }
    let mut acc = Acc::default();
    qualifying.clear();
    for d in days.iter().filter(|d| d.day >= from && d.day <= to) {
        acc.add(d);
        if d.coverage() * 100.0 >= p.day_min_coverage_pct {
            acc.days_covered += 1;
            qualifying.push(d.day);
        }
    }
    let required = required_days(p.window_days, p.min_coverage_pct);
    let latest = acc.latest?;
    if acc.days_covered < required || acc.days_covered == 0 || latest.vcpus == 0 {
        return None;
    }
    let current = Size {
        vcpus: latest.vcpus,
        mem_gib: latest.mem_total_mib.div_ceil(1024).max(1),
    };
    let rec = recommend(acc.busy_vcpus, acc.mem_peak, current, p);
    if rec == current {
        return None;
    }
    let mut figures = acc.figures();
    figures.projected_cpu_p95_pct = Some(acc.busy_vcpus / f64::from(rec.vcpus) * 100.0);
    figures.projected_mem_peak_pct =
        Some(f64::from(acc.mem_peak) / (f64::from(rec.mem_gib) * 1024.0) * 100.0);
    let evidence = Evidence {
        rule: "rightsizing",
        rule_version: RIGHTSIZING_RULE_VERSION,
        clause: p.clause.clone(),
        profile: profile.to_string(),
        window: window(from, to, None),
        thresholds: Thresholds::Rightsizing(p.clone()),
        coverage: acc.coverage(p.window_days, required, since, today),
        qualifying_days: qualifying.clone(),
        figures,
    };
    Some((current, rec, evidence))
}

impl UsageHistory {
    /// Both rules over every VM at event time `now_ms` (days before today's count), with the
    /// profile's `[idle]` and `[rightsizing]`. Sorted by VM. Exempt VMs are left out.
    pub fn evaluate(
        &self,
        now_ms: u64,
        rules: UsageRules<'_>,
        exemptions: &Exemptions,
    ) -> Vec<UsageFinding> {
        let (ip, rp) = (rules.idle, rules.rightsizing);
        if !ip.enabled && !rp.enabled {
            return Vec::new();
        }
        let today = self.day_of(now_ms);
        let span = ip.lookback_days.max(ip.window_days).max(rp.window_days) as i32;
        let mut days = Vec::with_capacity(span as usize + 1);
        let mut qualifying = Vec::with_capacity(span as usize + 1);
        let mut out = Vec::new();
        for (vm, h) in self.vms() {
            let Some(since) = h.since_day() else {
                continue;
            };
            let expired = match exemptions.for_vm(vm, now_ms) {
                VmExemption::Active(_) => continue,
                VmExemption::Expired(e) => Some(ExpiredExemption::of(e)),
                VmExemption::None => None,
            };
            days.clear();
            h.visit(today - span, today, |d| days.push(*d));
            if ip.enabled {
                if let Some(evidence) =
                    idle(&days, since, today, ip, rules.profile, &mut qualifying)
                {
                    out.push(UsageFinding {
                        vm: vm.to_string(),
                        kind: FindingKind::Idle,
                        evidence,
                        exemption_expired: expired,
                    });
                    continue;
                }
            }
            if rp.enabled {
                if let Some((current, recommended, evidence)) =
                    rightsizing(&days, since, today, rp, rules.profile, &mut qualifying)
                {
                    out.push(UsageFinding {
                        vm: vm.to_string(),
                        kind: FindingKind::OverProvisioned {
                            current,
                            recommended,
                        },
                        evidence,
                        exemption_expired: expired,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.vm.cmp(&b.vm));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::exempt::{ExemptReason, NewExemption};
    use super::super::history::Sample;
    use super::super::UsagePolicy;
    use super::*;

    /// The usage sections of a policy profile named `003`, with the sections' defaults (the
    /// built-in 003 profile's numbers).
    struct Sections {
        name: String,
        usage: UsagePolicy,
        idle: IdlePolicy,
        rightsizing: RightsizingPolicy,
    }

    impl Sections {
        fn of_003() -> Sections {
            Sections {
                name: "003".into(),
                usage: UsagePolicy::default(),
                idle: IdlePolicy::default(),
                rightsizing: RightsizingPolicy::default(),
            }
        }

        fn rules(&self) -> UsageRules<'_> {
            UsageRules {
                profile: &self.name,
                idle: &self.idle,
                rightsizing: &self.rightsizing,
            }
        }
    }

    /// 2026-03-02 00:00 Beijing time (a Monday).
    const T0: u64 = 1_772_380_800_000;
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    fn quiet() -> Sample {
        Sample {
            cpu: 150,
            vcpus: 8,
            mem_used_kib: 3 << 20,
            mem_total_kib: 16 << 20,
            net_rx_bps: 500,
            net_tx_bps: 300,
            disk_read_bps: 1_000,
            disk_write_bps: 4_000,
        }
    }

    /// `days` days of reports every 15 minutes from T0; `cpu(day, hour)` in percent.
    fn feed(h: &mut UsageHistory, vm: &str, days: u64, cpu: impl Fn(u64, u64) -> f64) {
        feed_with(h, vm, days, quiet(), cpu)
    }

    fn feed_with(
        h: &mut UsageHistory,
        vm: &str,
        days: u64,
        base: Sample,
        cpu: impl Fn(u64, u64) -> f64,
    ) {
        for d in 0..days {
            for q in 0..96 {
                let s = Sample {
                    cpu: (cpu(d, q / 4) * 100.0) as u16,
                    ..base
                };
                h.record_sample(vm, T0 + d * DAY + q * 15 * 60_000, &s);
            }
        }
    }

    fn kinds(f: &[UsageFinding]) -> Vec<(&str, &FindingKind)> {
        f.iter().map(|f| (f.vm.as_str(), &f.kind)).collect()
    }

    fn idle_vms(f: &[UsageFinding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.kind == FindingKind::Idle)
            .map(|f| f.vm.as_str())
            .collect()
    }

    #[test]
    fn a_quiet_vm_is_idle_with_its_evidence_and_a_weekly_job_is_not() {
        let p = Sections::of_003();
        let mut h = UsageHistory::new(&p.usage);
        feed(&mut h, "idle", 30, |_, _| 1.5);
        // busy four hours every Monday night
        feed(&mut h, "weekly", 30, |d, hr| {
            if d % 7 == 0 && hr < 4 {
                80.0
            } else {
                1.5
            }
        });
        // busy on the last day of March only (day 29 of the run)
        feed(&mut h, "month-end", 31, |d, hr| {
            if d == 29 && (9..17).contains(&hr) {
                70.0
            } else {
                1.5
            }
        });
        let now = T0 + 30 * DAY + HOUR;
        let f = h.evaluate(now, p.rules(), &Exemptions::default());
        assert_eq!(idle_vms(&f), ["idle"]);
        let e = &f.iter().find(|f| f.vm == "idle").unwrap().evidence;
        assert_eq!((e.rule, e.rule_version), ("idle", IDLE_RULE_VERSION));
        assert_eq!(e.profile, "003");
        assert_eq!(e.window.days, 14);
        assert_eq!(e.window.to.to_string(), "2026-03-31");
        // evidence is stored with the case: its dates are text
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(json["window"]["to"], "2026-03-31");
        assert_eq!(json["window"]["lookback_from"], "2026-02-25");
        assert_eq!(json["coverage"]["first_day"], "2026-03-02");
        assert_eq!(json["qualifying_days"][13], "2026-03-31");
        assert_eq!(e.qualifying_days.len(), 14);
        assert_eq!(e.coverage.days_covered, 14);
        assert!(e.coverage.coverage_pct > 99.0, "{:?}", e.coverage);
        assert!((e.figures.cpu_p95_max_pct - 1.5).abs() <= 0.25);
        assert!(matches!(e.thresholds, Thresholds::Idle(ref t) if t.window_days == 14));
        // the batch VMs are not idle, but 3 GiB used of 16 is oversized memory; their
        // vCPUs stay (80 % p95 on the batch day)
        for vm in ["month-end", "weekly"] {
            let f = f.iter().find(|f| f.vm == vm).unwrap();
            let want = FindingKind::OverProvisioned {
                current: Size {
                    vcpus: 8,
                    mem_gib: 16,
                },
                recommended: Size {
                    vcpus: 8,
                    mem_gib: 8,
                },
            };
            assert_eq!(f.kind, want, "{vm}");
        }
    }

    #[test]
    fn the_month_end_peak_vetoes_for_the_whole_look_back() {
        let p = Sections::of_003();
        let mut h = UsageHistory::new(&p.usage);
        feed(
            &mut h,
            "m",
            45,
            |d, hr| if d == 10 && hr < 6 { 90.0 } else { 1.0 },
        );
        // 34 days after the peak it still counts, 36 days after it no longer does
        assert!(idle_vms(&h.evaluate(T0 + 44 * DAY, p.rules(), &Exemptions::default())).is_empty());
        let mut h2 = UsageHistory::new(&p.usage);
        feed(
            &mut h2,
            "m",
            47,
            |d, hr| if d == 10 && hr < 6 { 90.0 } else { 1.0 },
        );
        let f = h2.evaluate(T0 + 46 * DAY, p.rules(), &Exemptions::default());
        assert_eq!(idle_vms(&f), ["m"]);
    }

    #[test]
    fn too_young_or_too_thinly_covered_vms_are_not_judged() {
        let p = Sections::of_003();
        let mut h = UsageHistory::new(&p.usage);
        feed(&mut h, "young", 13, |_, _| 1.0);
        let now = T0 + 13 * DAY + HOUR;
        assert!(h
            .evaluate(now, p.rules(), &Exemptions::default())
            .is_empty());
        // 14 days old: judged
        let mut h = UsageHistory::new(&p.usage);
        feed(&mut h, "old", 14, |_, _| 1.0);
        let now = T0 + 14 * DAY + HOUR;
        assert_eq!(
            idle_vms(&h.evaluate(now, p.rules(), &Exemptions::default())),
            ["old"]
        );

        // reports on only 10 of 14 days (the agent was down): 71 % < 80 % coverage
        let mut h = UsageHistory::new(&p.usage);
        for d in (0..14u64).filter(|d| !(3..7).contains(d)) {
            for q in 0..96 {
                h.record_sample("gappy", T0 + d * DAY + q * 15 * 60_000, &quiet());
            }
        }
        assert!(h
            .evaluate(T0 + 14 * DAY + HOUR, p.rules(), &Exemptions::default())
            .is_empty());
        // reports every 15 minutes but only four hours a day: each day 17 % covered
        let mut h = UsageHistory::new(&p.usage);
        feed(&mut h, "sparse", 15, |_, _| 1.0);
        let mut h2 = UsageHistory::new(&p.usage);
        for d in 0..15u64 {
            for q in 0..16 {
                h2.record_sample("sparse", T0 + d * DAY + q * 15 * 60_000, &quiet());
            }
        }
        assert_eq!(
            h.evaluate(T0 + 15 * DAY, p.rules(), &Exemptions::default())
                .len(),
            1
        );
        assert!(h2
            .evaluate(T0 + 15 * DAY, p.rules(), &Exemptions::default())
            .is_empty());
    }

    #[test]
    fn exempt_vms_are_left_out_until_the_exemption_expires() {
        let p = Sections::of_003();
        let mut h = UsageHistory::new(&p.usage);
        feed(&mut h, "standby", 20, |_, _| 1.0);
        let mut ex = Exemptions::default();
        let e = ex
            .create(
                NewExemption {
                    vm: "STANDBY".into(),
                    reason: ExemptReason::DrStandby,
                    note: "同城灾备".into(),
                    approver: "数据局".into(),
                    created_by: "ops:zhang".into(),
                    expires_ms: T0 + 18 * DAY,
                },
                T0,
                T0,
                365,
            )
            .unwrap();
        ex.insert(e.clone());
        assert!(h.evaluate(T0 + 17 * DAY, p.rules(), &ex).is_empty());
        let f = h.evaluate(T0 + 19 * DAY, p.rules(), &ex);
        assert_eq!(f.len(), 1);
        let note = f[0].exemption_expired.as_ref().unwrap();
        assert_eq!((note.id, note.note), (e.id, "exemption expired"));
    }

    #[test]
    fn the_recommended_size_keeps_p95_and_peak_memory_under_the_targets() {
        let p = RightsizingPolicy::default();
        let cur = Size {
            vcpus: 16,
            mem_gib: 64,
        };
        // 16 vCPUs at 12 % p95 = 1.92 busy vCPUs → 3.2 needed at 60 % → 4; 10 GiB peak → 14.3
        // GiB at 70 % → 16 GiB
        let r = recommend(1.92, 10 * 1024, cur, &p);
        assert_eq!(
            r,
            Size {
                vcpus: 4,
                mem_gib: 16
            }
        );
        // exactly at the target stays on that step
        let half = RightsizingPolicy {
            cpu_p95_target_pct: 50.0,
            ..p.clone()
        };
        assert_eq!(recommend(2.0, 0, cur, &half).vcpus, 4);
        assert_eq!(recommend(2.01, 0, cur, &half).vcpus, 8);
        // never bigger than now, never below one step
        assert_eq!(recommend(30.0, 200 * 1024, cur, &p), cur);
        assert_eq!(
            recommend(0.0, 0, cur, &p),
            Size {
                vcpus: 1,
                mem_gib: 1
            }
        );
    }

    #[test]
    fn an_oversized_vm_is_reported_with_a_smaller_size_and_a_busy_one_is_not() {
        let p = Sections::of_003();
        let mut h = UsageHistory::new(&p.usage);
        // 8 vCPUs, 16 GiB, 3 GiB used; p95 12 % weekdays (not idle, not busy either)
        feed(&mut h, "big", 31, |d, hr| {
            if (8..18).contains(&hr) && d % 7 < 5 {
                15.0
            } else {
                6.0
            }
        });
        // busy, and 12 GiB of 16 used
        let heavy = Sample {
            mem_used_kib: 12 << 20,
            ..quiet()
        };
        feed_with(&mut h, "busy", 31, heavy, |_, hr| {
            if (8..18).contains(&hr) {
                70.0
            } else {
                20.0
            }
        });
        let f = h.evaluate(T0 + 31 * DAY, p.rules(), &Exemptions::default());
        assert_eq!(f.len(), 1, "{:?}", kinds(&f));
        let FindingKind::OverProvisioned {
            current,
            recommended,
        } = f[0].kind
        else {
            panic!("{:?}", f[0].kind)
        };
        assert_eq!(f[0].vm, "big");
        assert_eq!(
            current,
            Size {
                vcpus: 8,
                mem_gib: 16
            }
        );
        // p95 15 % of 8 = 1.2 vCPUs → 2; 3 GiB peak / 0.7 = 4.3 → 8 GiB
        assert_eq!(
            recommended,
            Size {
                vcpus: 2,
                mem_gib: 8
            }
        );
        let fig = &f[0].evidence.figures;
        assert!(fig.projected_cpu_p95_pct.unwrap() <= 60.0);
        assert!(fig.projected_mem_peak_pct.unwrap() <= 70.0);
        assert_eq!(f[0].evidence.rule, "rightsizing");
        assert_eq!(f[0].evidence.window.days, 30);
    }

    #[test]
    fn evaluation_runs_on_event_time_not_the_wall_clock() {
        // a history from 2031: "today" is the day of the given now, whatever the wall says
        let p = Sections::of_003();
        let mut h = UsageHistory::new(&UsagePolicy::default());
        let t = T0 + 5 * 365 * DAY;
        for q in 0..(20 * 96) {
            h.record_sample("vm", t + q * 15 * 60_000, &quiet());
        }
        let now = h.now_ms();
        assert_eq!(h.day_of(now), h.day_of(t) + 19);
        assert_eq!(h.evaluate(now, p.rules(), &Exemptions::default()).len(), 1);
        assert!(h.day_of(now).start_ms(h.offset_ms()) <= now);
    }
}
