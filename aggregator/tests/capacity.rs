//! The 70% capacity alarm (003 第十九条) end to end: protocol envelopes into a real `Fleet`,
//! every registered rule in the real `Engine` with its `AlarmBook`, wall time under the test's
//! control. A pool's memory climbs past 70%: one warning, raised only after the hold time; a
//! dip to 69% and back raises no second alarm; below the recovery level it clears.

use std::time::Duration;
use yunjian_aggregator_core::alarms::{AlarmBook, AlarmEvent, AlarmState, Level};
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::policy::{rules, Context, Engine, Profile};
use yunjian_aggregator_core::register::{Pool, Register, Resources};
use yunjian_protocol::{
    Body, DiskInfo, DiskSample, Envelope, Hello, Inventory, Memory, Report, Role, Status,
};

const GIB: u64 = 1024 * 1024;
/// Event time of the first report (the agents' clock; hold times do not run on it).
const T0: u64 = 1_772_380_800_000;
const HOLD: Duration = Duration::from_secs(60);

struct Host {
    id: &'static str,
    seq: u64,
}

impl Host {
    fn send(&mut self, fleet: &mut Fleet, body: Body, ts_ms: u64, now_ms: u64) {
        self.seq += 1;
        fleet.apply(Envelope::new(self.id, self.seq, ts_ms, body), now_ms);
    }

    fn start(id: &'static str, fleet: &mut Fleet) -> Host {
        fleet.apply(Envelope::new(id, 0, T0, Body::Status(Status::Online)), 0);
        let mut h = Host { id, seq: 0 };
        let hello = Body::Hello(Hello {
            agent_version: "test".into(),
            role: Role::Host,
            interval_ms: 10_000,
            buffered: 0,
            epoch: 1,
        });
        h.send(fleet, hello, T0, 0);
        let inv = Body::Inventory(Inventory {
            hostname: id.into(),
            role: Role::Host,
            os: "openEuler 22.03".into(),
            kernel: "5.10.0".into(),
            cpu_model: "Hygon C86 7285".into(),
            cpu_cores: 64,
            mem_total_kib: 512 * GIB,
            disks: vec![DiskInfo {
                mount: "/var/lib/libvirt".into(),
                fs_type: "xfs".into(),
                total_kib: 4000 * GIB,
            }],
            nics: vec!["eno1".into()],
            machine_id: format!("mid-{id}"),
            smbios_uuid: None,
            rack: Some("R1".into()),
        });
        h.send(fleet, inv, T0, 0);
        h
    }

    fn report(&mut self, fleet: &mut Fleet, mem_pct: f64, ts_ms: u64, now_ms: u64) {
        let total = 512 * GIB;
        let used = (total as f64 * mem_pct / 100.0) as u64;
        let r = Body::Report(Report {
            cpu_busy: 2_000,
            per_core: vec![2_000; 64],
            load: [800, 700, 600],
            mem: Memory {
                total_kib: total,
                used_kib: used,
                available_kib: total - used,
                swap_total_kib: 8 * GIB,
                swap_used_kib: 0,
            },
            disks: vec![DiskSample {
                mount: "/var/lib/libvirt".into(),
                total_kib: 4000 * GIB,
                used_kib: 1000 * GIB,
                read_bps: 0,
                write_bps: 0,
            }],
            nets: vec![],
            uptime_s: 86_400,
            failed: vec![],
        });
        self.send(fleet, r, ts_ms, now_ms);
    }
}

fn capacity_events(events: Vec<AlarmEvent>) -> Vec<AlarmEvent> {
    events
        .into_iter()
        .filter(|e| e.alarm().key.rule == "capacity")
        .collect()
}

#[test]
fn a_pool_climbing_past_70_percent_raises_one_warning_after_the_hold_and_clears_below_recovery() {
    let mut profile = Profile::default();
    profile.capacity.thresholds.hold = HOLD;
    let t = profile.capacity.thresholds.clone();
    assert_eq!((t.warn_pct, t.recovery_pct), (70.0, 65.0));

    let mut fleet = Fleet::new();
    let mut h1 = Host::start("h1", &mut fleet);
    let mut h2 = Host::start("h2", &mut fleet);
    // a third host outside the pool keeps the platform as a whole under the line
    let mut h3 = Host::start("h3", &mut fleet);
    let register = Register {
        pools: vec![Pool {
            name: "A".into(),
            hosts: vec!["h1".into(), "h2".into()],
            reserved: Resources::default(),
            overcommit: Resources {
                vcpus: 4.0,
                mem_gb: 1.0,
                disk_gb: 1.0,
                net_mbps: 1.0,
            },
            nic_mbps: 10_000.0,
        }],
        ..Register::default()
    };
    let mut engine = Engine::new(rules::build(&profile, &[]), AlarmBook::new());

    // (pool memory %, wall seconds): reports every 10 s, the engine evaluated after each
    let steps: [(f64, u64); 16] = [
        (60.0, 0),
        (66.0, 10),
        (69.9, 20),
        (71.0, 30), // at the line: the hold starts
        (71.5, 40),
        (72.0, 50),
        (72.4, 60),
        (72.8, 70),
        (73.0, 80),
        (73.2, 89), // 59 s held
        (73.4, 90), // 60 s: fires
        (69.0, 100),
        (69.0, 110), // a dip under 70 %, above the 65 % recovery level
        (71.0, 120),
        (66.0, 130),
        (64.9, 140), // under the recovery level: clears
    ];
    let mut log = Vec::new();
    for (i, &(pct, s)) in steps.iter().enumerate() {
        let now = 1_000_000 + s * 1000;
        let ts = T0 + i as u64 * 10_000;
        h1.report(&mut fleet, pct, ts, now);
        h2.report(&mut fleet, pct, ts, now);
        h3.report(&mut fleet, 20.0, ts, now);
        let events = engine.evaluate(&Context {
            fleet: &fleet,
            register: &register,
            profile: &profile,
            now_ms: now,
        });
        log.push((s, capacity_events(events)));
    }

    let raised: Vec<(u64, &AlarmEvent)> = log
        .iter()
        .flat_map(|(s, ev)| ev.iter().map(move |e| (*s, e)))
        .filter(|(_, e)| matches!(e, AlarmEvent::Raised(_)))
        .collect();
    assert_eq!(raised.len(), 1, "exactly one alarm: {log:#?}");
    let (at, AlarmEvent::Raised(a)) = raised[0] else {
        unreachable!()
    };
    assert_eq!(at, 90, "raised only once the hold time has passed");
    assert_eq!(a.key.subject, "pool:A/memory/used");
    assert_eq!(a.level, Level::Warning);
    assert_eq!(
        a.clause,
        yunjian_aggregator_core::policy::Profile::default()
            .clauses
            .capacity
    );
    assert_eq!(
        a.title,
        "资源池 A 内存使用率 73.4%，接近容量 70%，请报请扩容"
    );
    assert_eq!(a.evidence["pool"], "A");
    assert_eq!(a.evidence["resource"], "memory");
    assert_eq!(a.evidence["kind"], "used");
    assert_eq!(a.evidence["pct"], 73.4);
    assert_eq!(a.evidence["capacity"], 1024.0);
    assert_eq!(a.evidence["threshold"], 70.0);
    assert_eq!(a.evidence["hold_s"], 60);
    assert_eq!(a.evidence["since_ms"], 1_030_000);

    // nothing else changed until the fall under the recovery level
    let changes: Vec<(u64, usize)> = log
        .iter()
        .filter(|(_, ev)| !ev.is_empty())
        .map(|(s, ev)| (*s, ev.len()))
        .collect();
    assert_eq!(changes, [(90, 1), (140, 1)], "{log:#?}");
    let (_, last) = log.last().unwrap();
    let AlarmEvent::Cleared(c) = &last[0] else {
        panic!("expected a clear: {last:?}")
    };
    assert_eq!((c.id, c.state), (a.id, AlarmState::Cleared));
    assert_eq!(c.cleared_ms, Some(1_140_000));
    // the one alarm was found on every evaluation from 90 s to 130 s, dip included
    assert_eq!(c.count, 5);
    assert!(engine
        .book()
        .open()
        .iter()
        .all(|a| a.key.rule != "capacity"));
    assert_eq!(
        engine
            .book()
            .cleared()
            .filter(|a| a.key.rule == "capacity")
            .count(),
        1
    );
}
