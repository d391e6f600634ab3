//! The VMs' synthetic antivirus (003 附件1 承诺书): every VM runs Trend Micro Deep Security
//! Agent with signatures updated daily, except the VMs the scenario's `[antivirus]` section
//! names: one whose agent is uninstalled at some point (the demo's VM flagged "removed") and
//! ones whose agent is stopped ("degraded").
//!
//! Reports follow the agent's rules ([`yunjian_agent::antivirus::Schedule`]): sent on the first
//! report, on every change and once more to confirm it, and every [`RESEND_REPORTS`] reports.

use crate::fleet::{Fleet, NodeKind};
use crate::rng::{hash_u64s, unit_f64};
use crate::scenario::{parse_duration, Rack};
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use yunjian_agent::antivirus::Schedule;
use yunjian_protocol::{
    AntivirusPackage, AntivirusProduct, AntivirusReport, AntivirusUnit, PackageState,
};

/// A report unchanged for this many report intervals is sent again.
pub const RESEND_REPORTS: u32 = 60;
const DAY_S: u64 = 86_400;
const VERSIONS: [&str; 3] = ["20.0.1-3180", "20.0.0-8438", "20.0.1-690"];

/// `[antivirus]` in a scenario: which VMs misbehave. Every other VM is compliant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntivirusKnobs {
    /// VMs whose antivirus is uninstalled `after` this much event time from the start, e.g.
    /// `[{ vm = "gz-a02-h03-vm2", after = "30m" }]`.
    pub removed: Vec<Removal>,
    /// VMs whose antivirus is installed but its service stopped, e.g. `["gz-b01-h05-vm1"]`.
    pub stopped: Vec<String>,
}

/// One uninstallation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removal {
    /// The VM's node id.
    pub vm: String,
    /// Event time after the start, e.g. `"30m"`.
    #[serde(deserialize_with = "de_duration")]
    pub after: Duration,
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

impl AntivirusKnobs {
    /// Every named VM is a VM of these racks, named once.
    pub fn validate(&self, racks: &[Rack]) -> Result<(), String> {
        let named: Vec<&str> = self
            .removed
            .iter()
            .map(|r| r.vm.as_str())
            .chain(self.stopped.iter().map(String::as_str))
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let vms: HashSet<String> = racks
            .iter()
            .flat_map(|r| {
                (1..=r.hosts).flat_map(move |n| (1..=r.vms_per_host).map(move |v| r.vm_id(n, v)))
            })
            .collect();
        let mut seen = HashSet::new();
        for vm in named {
            if !vms.contains(vm) {
                return Err(format!("antivirus: {vm:?} is not a VM of this scenario"));
            }
            if !seen.insert(vm) {
                return Err(format!("antivirus: {vm:?} is named twice"));
            }
        }
        Ok(())
    }
}

/// One VM's antivirus over time, and when its reports go out.
#[derive(Debug, Clone)]
pub struct AvSim {
    version: &'static str,
    /// Seconds into the day when signatures update.
    update_at_s: u64,
    stopped: bool,
    removed_at_ms: Option<u64>,
    schedule: Schedule,
}

impl AvSim {
    /// VM `idx` of `fleet` (`None` for a host), simulated from event time `start_ms`, sending
    /// reports `wall_interval` apart.
    pub fn new(fleet: &Fleet, idx: usize, start_ms: u64, wall_interval: Duration) -> Option<Self> {
        let spec = &fleet.nodes()[idx];
        if !matches!(spec.kind, NodeKind::Guest { .. }) {
            return None;
        }
        let knobs = &fleet.scenario().antivirus;
        let fact = |k| hash_u64s(&[spec.seed, 0xa1, k]);
        Some(AvSim {
            version: VERSIONS[(fact(0) % VERSIONS.len() as u64) as usize],
            update_at_s: (unit_f64(fact(1)) * DAY_S as f64) as u64,
            stopped: knobs.stopped.contains(&spec.id),
            removed_at_ms: knobs
                .removed
                .iter()
                .find(|r| r.vm == spec.id)
                .map(|r| start_ms + r.after.as_millis() as u64),
            schedule: Schedule::new(wall_interval * RESEND_REPORTS),
        })
    }

    /// What the agent's probe finds at event time `ts_ms`.
    pub fn report(&self, ts_ms: u64) -> AntivirusReport {
        let removed = self.removed_at_ms.is_some_and(|at| ts_ms >= at);
        let ts_s = ts_ms / 1000;
        let trend = if removed {
            absent("trend-ds-agent")
        } else {
            let day_start = ts_s.saturating_sub(self.update_at_s) / DAY_S * DAY_S;
            AntivirusProduct {
                profile: "trend-ds-agent".into(),
                package: Some(AntivirusPackage {
                    name: "ds-agent".into(),
                    version: self.version.into(),
                    state: PackageState::Installed,
                }),
                paths: vec!["/opt/ds_agent/ds_agent".into()],
                unit: Some(AntivirusUnit {
                    name: "ds_agent.service".into(),
                    enabled: true,
                }),
                processes: if self.stopped {
                    Vec::new()
                } else {
                    vec!["ds_agent".into(), "ds_am".into()]
                },
                version: None,
                signatures_s: Some(day_start + self.update_at_s),
            }
        };
        AntivirusReport {
            products: vec![trend, absent("clamav")],
            errors: Vec::new(),
        }
    }

    /// The report to send with the report at event time `ts_ms`, if one is due (`now`: wall).
    pub fn due(&mut self, ts_ms: u64, now: Instant) -> Option<AntivirusReport> {
        let report = self.report(ts_ms);
        self.schedule.due(&report, now).then_some(report)
    }
}

fn absent(profile: &str) -> AntivirusProduct {
    AntivirusProduct {
        profile: profile.into(),
        package: None,
        paths: Vec::new(),
        unit: None,
        processes: Vec::new(),
        version: None,
        signatures_s: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    const T0: u64 = 1_740_960_000_000;
    const MIN: u64 = 60_000;

    fn fleet(knobs: &str) -> Fleet {
        let mut s = Scenario::uniform(1, 1, 3, 5);
        s.antivirus = toml::from_str(knobs).unwrap();
        Fleet::build(s).unwrap()
    }

    #[test]
    fn most_vms_are_compliant_one_is_removed_later_one_is_stopped() {
        let f = fleet(
            "removed = [{ vm = \"rack1-h01-vm1\", after = \"30m\" }]\nstopped = [\"rack1-h01-vm2\"]\n",
        );
        let wall = Duration::from_secs(1);
        assert!(AvSim::new(&f, 0, T0, wall).is_none(), "hosts have none");
        let sim = |i| AvSim::new(&f, i, T0, wall).unwrap();
        let (removed, stopped, fine) = (sim(1), sim(2), sim(3));

        let before = removed.report(T0 + 29 * MIN);
        assert!(before.products[0].installed() && before.products[0].running());
        let after = removed.report(T0 + 30 * MIN);
        assert!(!after.products[0].installed() && !after.products[0].running());
        let s = stopped.report(T0);
        assert!(s.products[0].installed() && !s.products[0].running());
        let ok = fine.report(T0);
        assert!(ok.products[0].running());
        // signatures are at most a day old and change once a day
        let sig = ok.products[0].signatures_s.unwrap();
        assert!(T0 / 1000 - sig < DAY_S);
        assert_eq!(fine.report(T0 + MIN).products[0].signatures_s, Some(sig));
        assert!(
            fine.report(T0 + 1440 * MIN).products[0]
                .signatures_s
                .unwrap()
                > sig
        );
    }

    #[test]
    fn reports_go_out_first_on_change_confirmed_and_periodically() {
        let f = fleet("removed = [{ vm = \"rack1-h01-vm1\", after = \"2m\" }]\n");
        let mut av = AvSim::new(&f, 1, T0, Duration::from_secs(1)).unwrap();
        let wall = Instant::now();
        let at = |k: u64| (T0 + k * MIN, wall + Duration::from_secs(k));
        let sent: Vec<bool> = (0..6)
            .map(|k| {
                let (ts, now) = at(k);
                av.due(ts, now).is_some()
            })
            .collect();
        // first + confirmation, then quiet; the removal at 2m + confirmation, then quiet
        assert_eq!(sent, [true, true, true, true, false, false]);
        let (ts, now) = at(2 + u64::from(RESEND_REPORTS) + 1);
        assert!(av.due(ts, now).is_some(), "resent");
    }

    #[test]
    fn knobs_must_name_vms_of_the_scenario_once() {
        let mut s = Scenario::uniform(1, 1, 2, 5);
        s.antivirus.stopped = vec!["rack1-h01".into()];
        assert!(s.validate().unwrap_err().contains("not a VM"));
        s.antivirus.stopped = vec!["rack1-h01-vm2".into()];
        assert_eq!(s.validate(), Ok(()));
        s.antivirus.removed = vec![Removal {
            vm: "rack1-h01-vm2".into(),
            after: Duration::ZERO,
        }];
        assert!(s.validate().unwrap_err().contains("twice"));
        let typo = toml::from_str::<AntivirusKnobs>("remove = []\n");
        assert!(typo.is_err());
    }
}
