//! The capacity rules on the simulator's own reports: a rack's hypervisors whose VM image
//! filesystems fill day by day (the simulator's disk growth), fed as protocol envelopes into
//! the aggregator's fleet, every registered rule evaluated by the real engine. Event time
//! advances two hours per step, wall time ten seconds, so the forecast sees weeks and the hold
//! time minutes.
//!
//! The forecast must name the day the pool really crosses 70% before it does; under the default
//! profile (003, whose 第十九条 warns when use *approaches* 70%) the storage alarm is raised
//! first as a pre-warning at 65%, and the crossing turns it into the 70% alarm after the hold
//! time; it stays raised.

use std::time::Duration;
use yunjian_aggregator_core::alarms::{AlarmBook, AlarmEvent, AlarmKey, Level};
use yunjian_aggregator_core::fleet::Fleet as AggFleet;
use yunjian_aggregator_core::policy::forecast::{DAY_MS, HOUR_MS};
use yunjian_aggregator_core::policy::{rules, Context, Engine, Profile};
use yunjian_aggregator_core::register::{Pool, Register, Resources, ServerType, VmAllocation};
use yunjian_aggregator_core::time::beijing_date;
use yunjian_protocol::{Body, Envelope, Hello, Status};
use yunjian_simulator::fleet::{Fleet as SimFleet, NodeKind};
use yunjian_simulator::synth::{self, NodeSim};
use yunjian_simulator::Scenario;

/// 2026-03-02 00:00 Beijing time.
const T0: u64 = 1_772_380_800_000;
const STEP_EVENT_MS: u64 = 2 * HOUR_MS;
const STEP_WALL_MS: u64 = 10_000;
const HOLD: Duration = Duration::from_secs(300);
/// Seed of a rack whose storage starts near 34% and crosses 70% after seven weeks.
const SEED: u64 = 3;

fn register(sim: &SimFleet) -> Register {
    let vms = sim
        .nodes()
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let NodeKind::Guest { uuid, .. } = &n.kind else {
                return None;
            };
            let hw = synth::hardware(sim, i);
            Some(VmAllocation {
                zone: "政务外网".into(),
                developer: "开发商".into(),
                unit: "市数据局".into(),
                system: "一网通办".into(),
                subsystem: String::new(),
                server_type: ServerType::App,
                owner: String::new(),
                email: String::new(),
                phone: String::new(),
                vcpus: hw.cores.into(),
                mem_gb: (hw.mem_kib >> 20) as u32,
                sys_disk_gb: 100,
                data_disk_gb: 0,
                os: String::new(),
                clustered: false,
                cluster_group: String::new(),
                note: String::new(),
                uuid: Some(uuid.clone()),
                term: Default::default(),
            })
        })
        .collect();
    Register {
        vms,
        pools: vec![Pool {
            name: "A".into(),
            hosts: sim.hosts().iter().map(|h| h.id.clone()).collect(),
            reserved: Resources::default(),
            overcommit: Resources {
                vcpus: 3.0,
                mem_gb: 1.0,
                disk_gb: 1.0,
                net_mbps: 1.0,
            },
            nic_mbps: 10_000.0,
        }],
        ..Register::default()
    }
}

#[test]
fn the_forecast_names_the_day_a_filling_pool_crosses_70_percent_and_the_alarm_follows() {
    let sim = SimFleet::build(Scenario::uniform(1, 4, 3, SEED)).unwrap();
    let register = register(&sim);
    let mut profile = Profile::default();
    profile.capacity.thresholds.hold = HOLD;
    let mut engine = Engine::new(rules::build(&profile, &[]), AlarmBook::new());

    let mut fleet = AggFleet::new();
    let hosts = sim.hosts().len();
    let mut sims: Vec<NodeSim> = (0..hosts)
        .map(|i| NodeSim::new(&sim, i, T0, STEP_EVENT_MS))
        .collect();
    let mut seqs = vec![0u64; hosts];
    let mut send = |fleet: &mut AggFleet, i: usize, body: Body, ts: u64, now: u64| {
        seqs[i] += 1;
        let env = Envelope::new(sim.nodes()[i].id.clone(), seqs[i], ts, body);
        fleet.apply(env, now);
    };
    for i in 0..hosts {
        let id = sim.nodes()[i].id.clone();
        fleet.apply(Envelope::new(id, 0, T0, Body::Status(Status::Online)), 0);
        let hello = Body::Hello(Hello {
            agent_version: yunjian_simulator::AGENT_VERSION.into(),
            role: sim.nodes()[i].role(),
            interval_ms: 10_000,
            buffered: 0,
            epoch: 1,
        });
        send(&mut fleet, i, hello, T0, 0);
        send(
            &mut fleet,
            i,
            Body::Inventory(synth::inventory(&sim, i)),
            T0,
            0,
        );
        send(
            &mut fleet,
            i,
            Body::Guests(synth::guests(&sim, i, |_| true)),
            T0,
            0,
        );
    }

    let storage = AlarmKey {
        rule: "capacity".into(),
        subject: "pool:A/storage/used".into(),
    };
    let forecast = AlarmKey {
        rule: "capacity_forecast".into(),
        subject: "pool:A/storage/used".into(),
    };
    let mut crossed: Option<(usize, u64)> = None;
    let mut first_pct = None;
    let mut predicted: Option<(u64, String)> = None;
    let mut raised = Vec::new();
    for step in 0..120 * 12 {
        let ts = T0 + step as u64 * STEP_EVENT_MS;
        let now = 1_000_000 + step as u64 * STEP_WALL_MS;
        let (mut used, mut total) = (0u64, 0u64);
        for (i, s) in sims.iter_mut().enumerate() {
            let r = s.report(&sim, ts, |_| true);
            used += r.disks.iter().map(|d| d.used_kib).sum::<u64>();
            total += r.disks.iter().map(|d| d.total_kib).sum::<u64>();
            send(&mut fleet, i, Body::Report(r), ts, now);
        }
        let pct = used as f64 * 100.0 / total as f64;
        first_pct.get_or_insert(pct);
        if crossed.is_none() && pct >= 70.0 {
            crossed = Some((step, ts));
        }
        let events = engine.evaluate(&Context {
            fleet: &fleet,
            register: &register,
            profile: &profile,
            now_ms: now,
        });
        raised.extend(events.into_iter().filter_map(|e| match e {
            AlarmEvent::Raised(a) | AlarmEvent::Escalated(a) if a.key == storage => Some((
                step,
                a.level,
                a.evidence["stage"].as_str().map(str::to_string),
            )),
            _ => None,
        }));
        if crossed.is_none() {
            if let Some(a) = engine.book().get_open(&forecast) {
                let date = a.evidence["date"].as_str().unwrap().to_string();
                predicted = Some((a.evidence["crossing_ms"].as_u64().unwrap(), date));
            }
        }
        if crossed.is_some_and(|(c, _)| step >= c + 40) {
            break;
        }
    }

    let first_pct = first_pct.unwrap();
    let (cross_step, cross_ts) = crossed.unwrap_or_else(|| {
        panic!("seed {SEED}: the pool never reached 70% (started at {first_pct:.1}%)")
    });
    assert!(
        first_pct < 60.0 && cross_ts - T0 > 20 * DAY_MS,
        "seed {SEED} no longer starts well under the line: {first_pct:.1}% on day 0, 70% on day {}",
        (cross_ts - T0) / DAY_MS
    );
    let (at_ms, date) = predicted.expect("a forecast before the crossing");
    assert!(
        at_ms.abs_diff(cross_ts) <= DAY_MS,
        "forecast {date}, crossed {}",
        beijing_date(cross_ts)
    );
    // one alarm: the pre-warning before the line, the 70% alarm once the line has held for five
    // minutes of wall time
    let hold_steps = (HOLD.as_millis() as u64 / STEP_WALL_MS) as usize;
    let [(pre_step, Level::Info, pre), (step, Level::Warning, line)] = &raised[..] else {
        panic!("{raised:?}")
    };
    assert!(*pre_step < cross_step, "{raised:?}");
    assert_eq!(
        (pre.as_deref(), line.as_deref()),
        (Some("prewarn"), Some("alarm"))
    );
    assert_eq!(*step, cross_step + hold_steps);
    assert!(engine.book().get_open(&storage).is_some());
}
