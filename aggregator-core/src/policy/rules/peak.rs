//! 002 第十一条: when a unit's resources reach the warning peak (预警峰值), upgrade them and
//! tell the unit, so that its use stays in a reasonable range.
//!
//! VMs are grouped by the register's unit and system (joined by SMBIOS UUID; VMs the register
//! does not know, and VMs that are offline, are left out). Per system, CPU (busy vCPUs over its
//! VMs' vCPUs) and memory (used over total, as the guests report them) each have a
//! [`Hysteresis`](crate::policy::hysteresis::Hysteresis) with the profile's `peak` thresholds.
//! A finding names the unit (so the notice goes to it) and suggests the size at which today's
//! use would sit at the *target*: the recovery level minus the gap between the warning and the
//! recovery level (60% for 80/70), the middle of the reasonable range.

use super::capacity::{KeysCache, RegisterHash, VmIndex, Watch};
use crate::alarms::{AlarmKey, Finding, Level};
use crate::fleet::Liveness;
use crate::policy::hysteresis::Thresholds;
use crate::policy::{Context, Findings, Profile, Rule};
use crate::register::Register;
use std::collections::HashMap;
use yunjian_protocol::Role;

pub const NAME: &str = "peak";

const KIB_PER_GIB: f64 = 1024.0 * 1024.0;

/// The two watched figures of a system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Cpu,
    Memory,
}

impl Metric {
    const ALL: [Metric; 2] = [Metric::Cpu, Metric::Memory];

    fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
        }
    }

    fn zh(self) -> &'static str {
        match self {
            Metric::Cpu => "CPU",
            Metric::Memory => "内存",
        }
    }
}

/// A unit system's VMs, summed for one evaluation.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    vms: usize,
    vcpus: f64,
    busy_vcpus: f64,
    mem_gib: f64,
    used_gib: f64,
}

impl Usage {
    /// (in use, size) of a metric.
    fn parts(&self, m: Metric) -> (f64, f64) {
        match m {
            Metric::Cpu => (self.busy_vcpus, self.vcpus),
            Metric::Memory => (self.used_gib, self.mem_gib),
        }
    }
}

/// The hysteresis of one system, and the evaluation that last saw it.
#[derive(Debug, Default)]
struct SystemState {
    watches: [Watch; 2],
    seen: u64,
}

/// The rule: state per unit, then per system.
#[derive(Debug, Default)]
pub struct Peak {
    systems: HashMap<String, HashMap<String, SystemState, RegisterHash>, RegisterHash>,
    generation: u64,
    /// The register's UUID index and each VM's (unit, system) group, kept between
    /// evaluations and rebuilt when the register changed.
    keys: KeysCache,
    groups: Groups,
}

/// Each register VM's (unit, system) group, assigned in register order.
#[derive(Debug, Default)]
struct Groups {
    made_for: Option<(u64, usize)>,
    names: Vec<(String, String)>,
    of_vm: Vec<usize>,
}

impl Groups {
    fn update(&mut self, register: &Register) {
        let now = (register.revision(), register.vms.len());
        if self.made_for == Some(now) {
            return;
        }
        self.made_for = Some(now);
        self.names.clear();
        self.of_vm.clear();
        let mut known: HashMap<(&str, &str), usize, RegisterHash> = HashMap::default();
        for v in &register.vms {
            let key = (v.unit.as_str(), v.system.as_str());
            let names = &mut self.names;
            // a unit's VMs are usually listed together: most VMs join the previous group
            let g = match names.last() {
                Some((u, s)) if (u.as_str(), s.as_str()) == key => names.len() - 1,
                _ => *known.entry(key).or_insert_with(|| {
                    names.push((key.0.to_string(), key.1.to_string()));
                    names.len() - 1
                }),
            };
            self.of_vm.push(g);
        }
    }
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(Peak::default())
}

/// The use level an upgrade aims at: as far under the recovery level as the warning is over it
/// (at least half the recovery level).
fn target_pct(t: &Thresholds) -> f64 {
    (2.0 * t.recovery_pct - t.warn_pct).max(t.recovery_pct / 2.0)
}

/// The size at which `used` is `target` percent, rounded up to whole vCPUs / GB, and at least
/// one more than `size`.
fn suggest(used: f64, size: f64, target: f64) -> u64 {
    let need = (used * 100.0 / target).ceil() as u64;
    need.max(size.round() as u64 + 1)
}

impl Rule for Peak {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.peak
    }

    fn interval_ms(&self) -> u64 {
        crate::policy::AGGREGATE_INTERVAL_MS
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        let t = &ctx.profile.peak.thresholds;
        self.groups.update(ctx.register);
        let index = VmIndex::with_keys(ctx.register, self.keys.get(ctx.register));
        let group_of = &self.groups.of_vm;
        let mut groups: Vec<((&str, &str), Usage)> = self
            .groups
            .names
            .iter()
            .map(|(u, s)| ((u.as_str(), s.as_str()), Usage::default()))
            .collect();
        for st in ctx.fleet.nodes() {
            if st.role != Some(Role::Guest) || st.liveness == Liveness::Offline {
                continue;
            }
            let (Some(r), Some(inv)) = (st.report.as_ref(), st.inventory.as_ref()) else {
                continue;
            };
            let Some(pos) = inv.smbios_uuid.as_deref().and_then(|u| index.position(u)) else {
                continue;
            };
            let cores = if inv.cpu_cores > 0 {
                f64::from(inv.cpu_cores)
            } else {
                r.per_core.len() as f64
            };
            let u = &mut groups[group_of[pos]].1;
            u.vms += 1;
            u.vcpus += cores;
            u.busy_vcpus += cores * f64::from(r.cpu_busy) / 10_000.0;
            u.mem_gib += r.mem.total_kib as f64 / KIB_PER_GIB;
            u.used_gib += r.mem.used_kib as f64 / KIB_PER_GIB;
        }

        self.generation += 1;
        let target = target_pct(t);
        for ((unit, system), u) in groups.iter().filter(|(_, u)| u.vms > 0) {
            let (unit, system) = (*unit, *system);
            if !self
                .systems
                .get(unit)
                .is_some_and(|s| s.contains_key(system))
            {
                self.systems
                    .entry(unit.to_string())
                    .or_default()
                    .insert(system.to_string(), SystemState::default());
            }
            let Some(st) = self.systems.get_mut(unit).and_then(|s| s.get_mut(system)) else {
                continue;
            };
            st.seen = self.generation;
            for m in Metric::ALL {
                let (used, size) = u.parts(m);
                if size <= 0.0 {
                    continue;
                }
                let pct = used * 100.0 / size;
                let w = &mut st.watches[m as usize];
                let Some(level) = w.update(t, pct, ctx.now_ms) else {
                    continue;
                };
                let to = suggest(used, size, target);
                let (advice, unit_name) = match m {
                    Metric::Cpu => (format!("{to} vCPU（当前 {size:.0} vCPU）"), "vCPU"),
                    Metric::Memory => (format!("{to} GB（当前 {size:.0} GB）"), "GB"),
                };
                let reached = if level > Level::Warning {
                    "超过预警峰值"
                } else {
                    "达到预警峰值"
                };
                out.push(Finding {
                    key: AlarmKey {
                        rule: NAME.into(),
                        subject: format!("system:{unit}/{system}/{}", m.as_str()),
                    },
                    level,
                    clause: ctx.profile.clauses.peak.clone(),
                    unit: Some(unit.to_string()),
                    title: format!(
                        "{unit}「{system}」{}使用率 {pct:.1}%，{reached} {}%，建议扩容至 {advice}",
                        m.zh(),
                        t.warn_pct
                    ),
                    evidence: serde_json::json!({
                        "unit": unit,
                        "system": system,
                        "metric": m.as_str(),
                        "pct": (pct * 10.0).round() / 10.0,
                        "threshold": t.warn_pct,
                        "recovery": t.recovery_pct,
                        "hold_s": t.hold.as_secs(),
                        "since_ms": w.since_ms(),
                        "vms": u.vms,
                        "size": (size * 100.0).round() / 100.0,
                        "used": (used * 100.0).round() / 100.0,
                        "size_unit": unit_name,
                        "suggest": to,
                        "target_pct": target,
                    }),
                });
            }
        }
        let generation = self.generation;
        self.systems.retain(|_, systems| {
            systems.retain(|_, s| s.seen == generation);
            !systems.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::policy::rules::capacity::tests::{feed, inventory, report, vm};
    use crate::register::Register;
    use std::time::Duration;
    use yunjian_protocol::{Body, Envelope, Status};

    const A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    const C: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    const X: &str = "6fa459ea-ee8a-3ca4-894e-db77e160355e";

    /// Two VMs of 市数据局「办公系统」, one of 市教育局「招生系统」, one unregistered.
    fn setup(office_cpu: f64) -> (Fleet, Register) {
        let mut fleet = Fleet::new();
        for (node, uuid, cpu) in [
            ("vm-a", A, office_cpu),
            ("vm-b", B, office_cpu),
            ("vm-c", C, 90.0),
            ("vm-x", X, 99.0),
        ] {
            feed(
                &mut fleet,
                node,
                Role::Guest,
                vec![
                    inventory(Role::Guest, 4, 16, 100, Some(uuid)),
                    report(cpu, 16, 50.0, &[]),
                ],
                1_000,
            );
        }
        let register = Register {
            vms: vec![
                vm("市数据局", "办公系统", A, 4, 16),
                vm("市数据局", "办公系统", &B.to_uppercase(), 4, 16),
                vm("市教育局", "招生系统", C, 4, 16),
            ],
            ..Register::default()
        };
        (fleet, register)
    }

    fn eval(
        rule: &mut Peak,
        fleet: &Fleet,
        register: &Register,
        p: &Profile,
        now: u64,
    ) -> Vec<Finding> {
        let mut out = Findings::new();
        rule.evaluate(
            &Context {
                fleet,
                register,
                profile: p,
                now_ms: now,
            },
            &mut out,
        );
        let mut out = out.into_vec();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    #[test]
    fn a_system_at_its_peak_is_told_what_to_upgrade_to() {
        let (fleet, register) = setup(85.0);
        let mut p = Profile::default();
        p.peak.thresholds.hold = Duration::from_secs(900);
        let mut rule = Peak::default();
        assert!(eval(&mut rule, &fleet, &register, &p, 0).is_empty());
        assert!(eval(&mut rule, &fleet, &register, &p, 899_999).is_empty());
        let f = eval(&mut rule, &fleet, &register, &p, 900_000);
        // the unregistered VM at 99 % is skipped; memory (50 %) is under the peak
        let subjects: Vec<&str> = f.iter().map(|f| f.key.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "system:市教育局/招生系统/cpu",
                "system:市数据局/办公系统/cpu"
            ]
        );
        let office = &f[1];
        assert_eq!(office.unit.as_deref(), Some("市数据局"));
        assert_eq!(office.clause, p.clauses.peak);
        // under every profile, the alarm cites that profile's own document
        for (name, _) in crate::policy::profile::BUILTIN {
            let mut p = Profile::load(name).unwrap();
            p.peak.thresholds.hold = Duration::ZERO;
            let f = eval(&mut Peak::default(), &fleet, &register, &p, 0);
            assert_eq!(f.len(), 2, "under {name}");
            for x in &f {
                assert_eq!(x.clause, p.clauses.peak);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        assert_eq!(office.level, Level::Warning);
        // 8 vCPUs 85 % busy = 6.8 busy vCPUs; at 60 % that is 11.33 → 12
        assert_eq!(
            office.title,
            "市数据局「办公系统」CPU使用率 85.0%，达到预警峰值 80%，建议扩容至 12 vCPU（当前 8 vCPU）"
        );
        assert_eq!(office.evidence["suggest"], 12);
        assert_eq!(office.evidence["vms"], 2);
        assert_eq!(office.evidence["since_ms"], 0);
        // 4 vCPUs at 90 %: 3.6 / 0.6 = 6
        assert_eq!(f[0].evidence["suggest"], 6);
        assert_eq!(f[0].unit.as_deref(), Some("市教育局"));
    }

    #[test]
    fn below_the_peak_or_offline_is_quiet_and_escalation_names_it() {
        let (mut fleet, register) = setup(75.0);
        let mut p = Profile::default();
        p.peak.thresholds.hold = Duration::ZERO;
        let mut rule = Peak::default();
        let f = eval(&mut rule, &fleet, &register, &p, 0);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].key.subject, "system:市教育局/招生系统/cpu");
        // the 招生系统 VM goes to 97 %: major
        feed(
            &mut fleet,
            "vm-c",
            Role::Guest,
            vec![report(97.0, 16, 50.0, &[])],
            2_000,
        );
        let f = eval(&mut rule, &fleet, &register, &p, 1);
        assert_eq!(f[0].level, Level::Major);
        assert!(f[0].title.contains("超过预警峰值 80%"), "{}", f[0].title);
        // it shuts down: no data, no finding, and its state is forgotten
        fleet.apply(
            Envelope::new("vm-c", 0, 3_000, Body::Status(Status::Offline)),
            3_000,
        );
        assert!(eval(&mut rule, &fleet, &register, &p, 2).is_empty());
        assert!(!rule.systems.contains_key("市教育局"));
    }

    #[test]
    fn suggestions_round_up_and_always_grow() {
        let t = Profile::default().peak.thresholds;
        assert_eq!(target_pct(&t), 60.0);
        assert_eq!(suggest(6.8, 8.0, 60.0), 12);
        // memory: 13.6 of 16 GB → 22.67 → 23
        assert_eq!(suggest(13.6, 16.0, 60.0), 23);
        // a tiny system still grows by one
        assert_eq!(suggest(0.5, 1.0, 60.0), 2);
    }
}
