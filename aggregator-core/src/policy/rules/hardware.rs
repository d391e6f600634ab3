//! Hardware faults a server's BMC reports (001 第十六条: automatic alarms on data-centre faults,
//! and telling the units whose systems they affect): sensors beyond the BMC's own thresholds,
//! discrete fault states (power supply, intrusion, drive, processor, memory), chassis faults,
//! fault entries of the System Event Log, and a BMC that stopped answering. What counts and at
//! which level is [`crate::fleet::NodeState::hardware_problems`]; the thresholds are the BMC's, not the profile's.
//!
//! A BMC that stops answering is its own alarm (`…/bmc`), distinct from the host going down
//! (`node_down`): the host still runs and reports, only its hardware is no longer watched.

use crate::alarms::{AlarmKey, Finding};
use crate::policy::{Context, Findings, Profile, Rule};
use std::collections::BTreeSet;
use yunjian_protocol::Role;

pub const NAME: &str = "hardware";

#[derive(Debug, Default)]
pub struct Hardware;

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(Hardware)
}

impl Rule for Hardware {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.hardware
    }

    /// Always a full evaluation: BMC silence and the SEL hold change with time alone, and
    /// only physical servers with a BMC are looked at (a few per hundred nodes).
    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        let mut by_uuid = None;
        for st in ctx.fleet.nodes() {
            if st.role == Some(Role::Guest) || st.hardware.bmc.is_none() {
                continue;
            }
            let problems = st.hardware_problems(ctx.now_ms);
            if problems.is_empty() {
                continue;
            }
            // A hardware fault affects the units of the VMs this server runs: name them once
            // (one unit → the notice goes to it; several → listed in the evidence).
            let index = by_uuid.get_or_insert_with(|| ctx.register.uuid_index());
            let units: BTreeSet<&str> = st
                .guests
                .iter()
                .filter_map(|g| index.get(&g.uuid.to_ascii_lowercase()))
                .map(|v| v.unit.as_str())
                .collect();
            let unit = match units.len() {
                1 => units.first().map(|u| u.to_string()),
                _ => None,
            };
            let rack = st.inventory.as_ref().and_then(|i| i.rack.clone());
            for p in problems {
                out.push(Finding {
                    key: AlarmKey {
                        rule: NAME.into(),
                        subject: format!("node:{}/{}", st.node, p.subject),
                    },
                    level: p.level,
                    clause: ctx.profile.clauses.hardware.clone(),
                    unit: unit.clone(),
                    title: format!("物理服务器 {} {}", st.node, p.what),
                    evidence: serde_json::json!({
                        "node": st.node,
                        "rack": rack,
                        "units": units,
                        "detail": p.evidence,
                    }),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::{AlarmBook, AlarmEvent, Level};
    use crate::fleet::Fleet;
    use crate::hardware::{SEL_ALARM_HOLD_MS, SILENT_SWEEPS};
    use crate::policy::rules::node_down;
    use crate::policy::Engine;
    use crate::register::Register;
    use yunjian_protocol::hardware::{
        BmcState, ChassisState, HardwareReport, SelEntry, SensorReading, SensorStatus, Thresholds,
    };
    use yunjian_protocol::{Body, Envelope, Hello, Report, Status};

    const INTERVAL: u64 = 1_000;

    fn temp(value_c: i64) -> SensorReading {
        let th = Thresholds {
            upper_non_critical: Some(80_000),
            upper_critical: Some(90_000),
            upper_non_recoverable: Some(100_000),
            ..Thresholds::default()
        };
        // the status as the BMC computes it from its thresholds
        let v = value_c * 1000;
        let status = if v >= 100_000 {
            SensorStatus::NonRecoverable
        } else if v >= 90_000 {
            SensorStatus::Critical
        } else if v >= 80_000 {
            SensorStatus::NonCritical
        } else {
            SensorStatus::Ok
        };
        SensorReading {
            name: "CPU Temp".into(),
            number: 1,
            sensor_type: 0x01,
            value: Some(v),
            unit: "degrees C".into(),
            status,
            thresholds: th,
            states: 0,
        }
    }

    fn psu(states: u16) -> SensorReading {
        SensorReading {
            name: "PSU1 Status".into(),
            number: 5,
            sensor_type: 0x08,
            value: None,
            unit: String::new(),
            // the reader may leave a discrete sensor's status at Ok: the states decide
            status: SensorStatus::Ok,
            thresholds: Thresholds::default(),
            states,
        }
    }

    fn sweep(sensors: Vec<SensorReading>, sel: Vec<SelEntry>) -> Body {
        Body::Hardware(HardwareReport {
            bmc: BmcState::Ok("lanplus 127.0.0.1:9001".into()),
            chassis: Some(ChassisState {
                power_on: true,
                power_fault: false,
                intrusion: false,
                drive_fault: false,
                cooling_fault: false,
            }),
            sensors,
            sel,
        })
    }

    fn sel(record_id: u16, offset: u8, asserted: bool) -> SelEntry {
        SelEntry {
            record_id,
            ts_s: 1_700_000_000 + u32::from(record_id),
            sensor_type: 0x08,
            sensor_number: 5,
            sensor: Some("PSU1 Status".into()),
            event_type: 0x6f,
            asserted,
            offset,
            description: "Power Supply Failure detected".into(),
        }
    }

    fn report() -> Body {
        Body::Report(Report {
            cpu_busy: 100,
            per_core: vec![100],
            load: [0; 3],
            mem: Default::default(),
            disks: vec![],
            nets: vec![],
            uptime_s: 1,
            failed: vec![],
        })
    }

    /// A host and an engine with the hardware rule and node_down, as the aggregator runs them.
    struct Bed {
        fleet: Fleet,
        engine: Engine,
        register: Register,
        profile: Profile,
        seq: u64,
    }

    impl Bed {
        fn new() -> Self {
            let mut fleet = Fleet::new();
            fleet.apply(Envelope::new("h1", 0, 0, Body::Status(Status::Online)), 0);
            let hello = Body::Hello(Hello {
                agent_version: "t".into(),
                role: Role::Host,
                interval_ms: INTERVAL as u32,
                buffered: 0,
                epoch: 1,
            });
            fleet.apply(Envelope::new("h1", 1, 0, hello), 0);
            let profile = Profile::default();
            let rules = vec![build(&profile), node_down::build(&profile)];
            Bed {
                fleet,
                engine: Engine::new(rules, AlarmBook::new()),
                register: Register::default(),
                profile,
                seq: 1,
            }
        }

        fn send(&mut self, body: Body, now_ms: u64) {
            self.seq += 1;
            self.fleet
                .apply(Envelope::new("h1", self.seq, now_ms, body), now_ms);
        }

        fn eval(&mut self, now_ms: u64) -> Vec<AlarmEvent> {
            self.engine.evaluate(&Context {
                fleet: &self.fleet,
                register: &self.register,
                profile: &self.profile,
                now_ms,
            })
        }

        /// Open alarms as (rule, subject, level).
        fn open(&self) -> Vec<(String, String, Level)> {
            self.engine
                .book()
                .open()
                .into_iter()
                .map(|a| (a.key.rule.clone(), a.key.subject.clone(), a.level))
                .collect()
        }
    }

    fn changes(events: &[AlarmEvent]) -> Vec<(&'static str, String, Level)> {
        events
            .iter()
            .map(|e| {
                let kind = match e {
                    AlarmEvent::Raised(_) => "raised",
                    AlarmEvent::Escalated(_) => "escalated",
                    AlarmEvent::Acknowledged(_) => "acknowledged",
                    AlarmEvent::Cleared(_) => "cleared",
                };
                (kind, e.alarm().key.subject.clone(), e.alarm().level)
            })
            .collect()
    }

    #[test]
    fn thresholds_map_to_levels_and_recovery_clears() {
        let mut bed = Bed::new();
        let subject = "node:h1/sensor:CPU Temp".to_string();
        bed.send(sweep(vec![temp(60)], vec![]), 1_000);
        assert!(bed.eval(1_000).is_empty());
        // above upper non-critical: warning
        bed.send(sweep(vec![temp(82)], vec![]), 2_000);
        assert_eq!(
            changes(&bed.eval(2_000)),
            [("raised", subject.clone(), Level::Warning)]
        );
        // above upper critical: the same alarm escalates to critical
        bed.send(sweep(vec![temp(93)], vec![]), 3_000);
        assert_eq!(
            changes(&bed.eval(3_000)),
            [("escalated", subject.clone(), Level::Critical)]
        );
        // non-recoverable stays critical, one alarm, no new event
        bed.send(sweep(vec![temp(101)], vec![]), 4_000);
        assert!(bed.eval(4_000).is_empty());
        assert_eq!(
            bed.open(),
            [(NAME.into(), subject.clone(), Level::Critical)]
        );
        let a = &bed.engine.book().open()[0];
        assert_eq!(a.clause, Profile::default().clauses.hardware);
        // under every profile, the alarm cites that profile's own document
        for (p, found) in crate::policy::test_support::under_every_profile(
            build,
            &bed.fleet,
            &bed.register,
            4_000,
        ) {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.hardware);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        assert_eq!(a.evidence["detail"]["value"], 101_000);
        assert_eq!(a.evidence["detail"]["thresholds"]["upper_critical"], 90_000);
        // back in range: cleared
        bed.send(sweep(vec![temp(70)], vec![]), 5_000);
        assert_eq!(
            changes(&bed.eval(5_000)),
            [("cleared", subject, Level::Critical)]
        );
        assert!(bed.open().is_empty());
    }

    #[test]
    fn psu_failure_bit_raises_a_critical_alarm_until_it_deasserts() {
        let mut bed = Bed::new();
        // present (bit 0) only: fine
        bed.send(sweep(vec![psu(0b1)], vec![]), 1_000);
        assert!(bed.eval(1_000).is_empty());
        // failure detected (bit 1)
        bed.send(sweep(vec![psu(0b11)], vec![]), 2_000);
        let ev = bed.eval(2_000);
        assert_eq!(
            changes(&ev),
            [(
                "raised",
                "node:h1/sensor:PSU1 Status".into(),
                Level::Critical
            )]
        );
        assert!(
            ev[0].alarm().title.contains("电源故障"),
            "{}",
            ev[0].alarm().title
        );
        bed.send(sweep(vec![psu(0b1)], vec![]), 3_000);
        assert_eq!(changes(&bed.eval(3_000))[0].0, "cleared");
        // predictive failure (bit 2) is a warning
        bed.send(sweep(vec![psu(0b101)], vec![]), 4_000);
        assert_eq!(changes(&bed.eval(4_000))[0].2, Level::Warning);
    }

    #[test]
    fn chassis_intrusion_and_power_fault_are_alarms() {
        let mut bed = Bed::new();
        let Body::Hardware(mut h) = sweep(vec![temp(50)], vec![]) else {
            unreachable!()
        };
        h.chassis = Some(ChassisState {
            power_on: true,
            power_fault: true,
            intrusion: true,
            drive_fault: false,
            cooling_fault: false,
        });
        bed.send(Body::Hardware(h), 1_000);
        let mut got = changes(&bed.eval(1_000));
        got.sort();
        assert_eq!(
            got,
            [
                ("raised", "node:h1/chassis:intrusion".into(), Level::Major),
                (
                    "raised",
                    "node:h1/chassis:power_fault".into(),
                    Level::Critical
                ),
            ]
        );
    }

    #[test]
    fn an_sel_entry_is_kept_once_and_raises_one_alarm() {
        let mut bed = Bed::new();
        let subject = "node:h1/sel:PSU1 Status:1".to_string();
        bed.send(sweep(vec![], vec![sel(7, 1, true)]), 1_000);
        assert_eq!(
            changes(&bed.eval(1_000)),
            [("raised", subject.clone(), Level::Critical)]
        );
        // the same entry again (a replayed sweep): no second entry, no second alarm
        bed.send(sweep(vec![], vec![sel(7, 1, true)]), 2_000);
        assert!(bed.eval(2_000).is_empty());
        assert_eq!(bed.fleet.get("h1").unwrap().hardware.sel.len(), 1);
        assert_eq!(bed.engine.book().open().len(), 1);
        // a presence event (offset 0) is recorded but is no fault
        bed.send(sweep(vec![], vec![sel(8, 0, true)]), 3_000);
        assert!(bed.eval(3_000).is_empty());
        assert_eq!(bed.fleet.get("h1").unwrap().hardware.sel.len(), 2);
        // the deassertion of the failure clears it
        bed.send(sweep(vec![], vec![sel(9, 1, false)]), 4_000);
        assert_eq!(
            changes(&bed.eval(4_000)),
            [("cleared", subject.clone(), Level::Critical)]
        );
        // a new assertion without a deassertion clears after the hold
        bed.send(sweep(vec![], vec![sel(10, 1, true)]), 5_000);
        assert_eq!(changes(&bed.eval(5_000))[0].0, "raised");
        // (sweeps go on meanwhile, or the BMC would count as silent)
        bed.send(sweep(vec![], vec![]), 5_000 + SEL_ALARM_HOLD_MS - 2);
        assert!(bed.eval(5_000 + SEL_ALARM_HOLD_MS - 1).is_empty());
        assert_eq!(
            changes(&bed.eval(5_000 + SEL_ALARM_HOLD_MS)),
            [("cleared", subject, Level::Critical)]
        );
    }

    #[test]
    fn an_unreachable_bmc_is_a_bmc_alarm_not_node_down() {
        let mut bed = Bed::new();
        bed.send(sweep(vec![temp(95)], vec![]), 1_000);
        bed.eval(1_000);
        bed.send(report(), 1_500);
        bed.send(
            Body::Hardware(HardwareReport {
                bmc: BmcState::Unreachable("10.0.0.5:623: no answer".into()),
                chassis: None,
                sensors: vec![],
                sel: vec![],
            }),
            2_000,
        );
        let ev = bed.eval(2_000);
        assert_eq!(
            changes(&ev),
            [("raised", "node:h1/bmc".into(), Level::Major)]
        );
        assert!(ev[0].alarm().title.contains("10.0.0.5:623"));
        // the temperature alarm stays: no answer is no recovery; and no node_down
        let open = bed.open();
        assert!(open.iter().any(|o| o.1 == "node:h1/sensor:CPU Temp"));
        assert!(open.iter().all(|o| o.0 != node_down::NAME), "{open:?}");
        // the BMC answers again, in range: both clear
        bed.send(sweep(vec![temp(60)], vec![]), 3_000);
        let mut got = changes(&bed.eval(3_000));
        got.sort();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|c| c.0 == "cleared"));
        assert!(bed.open().is_empty());
    }

    #[test]
    fn sweeps_stopping_while_the_host_reports_is_a_bmc_alarm() {
        let mut bed = Bed::new();
        // sweeps every 3 s wall time
        for t in [1_000, 4_000, 7_000] {
            bed.send(sweep(vec![temp(50)], vec![]), t);
        }
        assert_eq!(
            bed.fleet
                .get("h1")
                .unwrap()
                .hardware
                .sweep_interval_ms(INTERVAL),
            3_000
        );
        // the host keeps reporting; sweeps stop after t = 7 s
        let limit = 7_000 + SILENT_SWEEPS * 3_000;
        let mut t = 8_000;
        while t <= limit {
            bed.send(report(), t);
            assert!(bed.eval(t).is_empty(), "at {t}");
            t += 1_000;
        }
        bed.send(report(), limit + 1);
        assert_eq!(
            changes(&bed.eval(limit + 1)),
            [("raised", "node:h1/bmc".into(), Level::Major)]
        );
        // a sweep arrives: cleared
        bed.send(sweep(vec![temp(50)], vec![]), limit + 2);
        assert_eq!(changes(&bed.eval(limit + 2))[0].0, "cleared");
    }

    #[test]
    fn a_host_down_is_node_down_only() {
        let mut bed = Bed::new();
        bed.send(sweep(vec![temp(50)], vec![]), 1_000);
        bed.eval(1_000);
        bed.fleet.apply(
            Envelope::new("h1", 0, 0, Body::Status(Status::Offline)),
            2_000,
        );
        // long after: the sweeps stopped too, but the host is down, so only node_down fires
        let ev = bed.eval(100_000);
        let rules: Vec<&str> = ev.iter().map(|e| e.alarm().key.rule.as_str()).collect();
        assert_eq!(rules, [node_down::NAME]);
    }
}
