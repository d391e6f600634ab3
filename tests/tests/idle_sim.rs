//! Thirty accelerated days of a simulated fleet (`simulator/scenarios/idle-30d.toml`) through
//! the real path: simulated agents over MQTT → the aggregator's embedded broker → ingest →
//! utilisation history → `/api/usage/findings`, with exemptions created over the API.
//!
//! Exactly the idle VMs must be flagged idle (the set the scenario marks idle, minus the
//! exempted DR standbys); the weekly-batch, month-end, bursty and office VMs must not be, nor
//! the exempted ones; an idle VM whose exemption ran out is flagged with "exemption expired".

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::identity::Role;
use yunjian_aggregator_core::policy::profile::BUILTIN;
use yunjian_simulator::fleet::{Fleet as SimFleet, NodeKind};
use yunjian_simulator::profile::Profile as Workload;
use yunjian_simulator::{Scenario, SimConfig};
use yunjian_tests::{eventually, free_port, get_json, http_get, post_json, seed_users};

const DAY_MS: u64 = 86_400_000;
/// Days of event time to simulate before judging.
const DAYS: u64 = 30;

/// One guest of the scenario: its UUID, rack and workload.
struct Vm {
    uuid: String,
    rack: String,
    workload: Workload,
}

fn guests(scenario: &Scenario) -> Vec<Vm> {
    let fleet = SimFleet::build(scenario.clone()).expect("scenario expands");
    fleet
        .nodes()
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Guest { uuid, .. } => Some(Vm {
                uuid: uuid.to_ascii_lowercase(),
                rack: scenario.racks[n.rack].name.clone(),
                workload: n.workload.profile(),
            }),
            NodeKind::Host { .. } => None,
        })
        .collect()
}

/// The default profile (003), except that one report may stand for up to six hours: the
/// scenario reports every 90 minutes of event time, and a loaded machine stretches that.
fn profile_file(dir: &std::path::Path) -> String {
    let text = BUILTIN
        .iter()
        .find(|(n, _)| *n == "003")
        .expect("built-in 003")
        .1;
    let usage = "[usage]\nretention_days = 90\n";
    assert_eq!(text.matches(usage).count(), 1, "003.toml's [usage] changed");
    let text = text.replace(usage, &format!("{usage}max_sample_gap = \"6h\"\n"));
    let path = dir.join("profile-idle-sim.toml");
    std::fs::write(&path, text).expect("write profile");
    path.display().to_string()
}

/// The people of the scenario: the 主管部门 person who grants exemptions, and the operator on duty.
const CHIEF: &str = "chief-wang";
const OPERATOR: &str = "ops-zhang";

fn exemption_request(vm: &str, reason: &str, expires: &str) -> Value {
    json!({
        "vm": vm,
        "reason": reason,
        "note": "idle_sim",
        "expires": expires,
    })
}

/// `chief` (the 主管部门's token) grants an exemption; it is recorded under the chief's name.
async fn exempt(http: SocketAddr, chief: &str, vm: &str, reason: &str, expires: &str) -> Value {
    let (status, body) = post_json(
        http,
        chief,
        "/api/exemptions",
        &exemption_request(vm, reason, expires),
    )
    .await;
    assert_eq!(status, 201, "exemption for {vm}: {body}");
    assert_eq!(body["approver"], CHIEF, "{body}");
    assert_eq!(body["created_by"], CHIEF, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_simulated_days_flag_exactly_the_idle_vms() {
    let scenario_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../simulator/scenarios/idle-30d.toml"
    );
    let scenario = Scenario::load(std::path::Path::new(scenario_path)).expect("scenario");
    let start_ms = scenario.start_ms.expect("the scenario has a start");
    let vms = guests(&scenario);
    let in_rack = |rack: &str| -> BTreeSet<String> {
        vms.iter()
            .filter(|v| v.rack == rack)
            .map(|v| v.uuid.clone())
            .collect()
    };
    let standby = in_rack("standby");
    let expected_idle: BTreeSet<String> = vms
        .iter()
        .filter(|v| v.workload == Workload::Idle && v.rack != "standby")
        .map(|v| v.uuid.clone())
        .collect();
    assert_eq!(expected_idle.len(), 4);
    assert!(vms.iter().any(|v| v.workload == Workload::WeeklyBatch));
    assert!(vms.iter().any(|v| v.workload == Workload::MonthEnd));
    // one idle VM is exempted only until 25 March: back under review by day 30
    let lapsed = expected_idle.iter().next().unwrap().clone();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        policy_profile: profile_file(dir.path()),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = SocketAddr::from(([127, 0, 0, 1], port));
    let tokens = seed_users(
        &cfg,
        &[(CHIEF, Role::Authority, None), (OPERATOR, Role::Ops, None)],
    );
    let (chief, ops) = (tokens[0].as_str(), tokens[1].as_str());
    let agg = Aggregator::start(&cfg).await.expect("aggregator starts");
    let http = agg.http_addr;
    let sim = yunjian_simulator::start(
        scenario.clone(),
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: port,
            master_key: agg.master.clone(),
            connect_rate: None,
        },
    )
    .await
    .expect("simulation starts");

    // The exemptions, once the VMs report (an unknown VM is refused).
    for vm in standby.iter().chain([&lapsed]) {
        eventually(
            &format!("{vm} in the history"),
            Duration::from_secs(30),
            || async move {
                let (status, _) = http_get(http, ops, &format!("/api/usage/{vm}/days")).await;
                (status == 200).then_some(())
            },
        )
        .await;
    }
    // only the 主管部门 grants exemptions: the operator is refused, and nothing is recorded
    let first = standby.iter().next().unwrap();
    let (status, body) = post_json(
        http,
        ops,
        "/api/exemptions",
        &exemption_request(first, "dr_standby", "2026-06-30"),
    )
    .await;
    assert_eq!(status, 403, "an operator granting an exemption: {body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let none = get_json(http, ops, "/api/exemptions").await;
    assert_eq!(none["exemptions"].as_array().unwrap().len(), 0, "{none}");
    for vm in &standby {
        exempt(http, chief, vm, "dr_standby", "2026-06-30").await;
    }
    let lapsed_exemption = exempt(http, chief, &lapsed, "test_period", "2026-03-25").await;

    // Thirty days of event time (about 24 s of wall time).
    let until = start_ms + DAYS * DAY_MS + 2 * 3_600_000;
    eventually(
        "30 days of event time",
        Duration::from_secs(150),
        || async move {
            let v = get_json(http, ops, "/api/usage/findings").await;
            (v["now_ms"].as_u64().unwrap_or(0) >= until).then_some(())
        },
    )
    .await;
    sim.stop().await;

    let body = get_json(http, ops, "/api/usage/findings").await;
    assert_eq!(body["today"], "2026-04-15", "{}", body["now_ms"]);
    let findings = body["findings"].as_array().unwrap();
    let kind = |f: &Value| f["kind"]["type"].as_str().unwrap().to_string();
    let flagged_idle: BTreeSet<String> = findings
        .iter()
        .filter(|f| kind(f) == "idle")
        .map(|f| f["vm"].as_str().unwrap().to_string())
        .collect();
    let name = |uuid: &str| {
        let v = vms.iter().find(|v| v.uuid == uuid);
        v.map_or(uuid.to_string(), |v| {
            format!("{} ({}, {})", uuid, v.rack, v.workload)
        })
    };
    assert_eq!(
        flagged_idle,
        expected_idle,
        "flagged but not idle: {:?}; idle but not flagged: {:?}",
        flagged_idle
            .difference(&expected_idle)
            .map(|u| name(u))
            .collect::<Vec<_>>(),
        expected_idle
            .difference(&flagged_idle)
            .map(|u| name(u))
            .collect::<Vec<_>>(),
    );

    for f in findings {
        let vm = f["vm"].as_str().unwrap();
        assert!(
            !standby.contains(vm),
            "an exempted standby has a finding: {f}"
        );
        let ev = &f["evidence"];
        if kind(f) == "idle" {
            assert_eq!(ev["rule"], "idle");
            assert_eq!(ev["window"]["days"], 14);
            assert_eq!(ev["window"]["to"], "2026-04-14");
            assert!(
                ev["coverage"]["days_covered"].as_u64().unwrap() >= 12,
                "{ev}"
            );
            assert!(
                ev["figures"]["cpu_p95_max_pct"].as_f64().unwrap() <= 5.0,
                "{ev}"
            );
            assert!(
                ev["figures"]["net_max_mb_per_day"].as_f64().unwrap() <= 500.0,
                "{ev}"
            );
            let expired = &f["exemption_expired"];
            if vm == lapsed {
                assert_eq!(expired["note"], "exemption expired", "{f}");
                assert_eq!(expired["id"], lapsed_exemption["id"]);
            } else {
                assert!(expired.is_null(), "{f}");
            }
        } else {
            // over-provisioned: only among the VMs that really work, and a smaller size that
            // keeps the busiest p95 and the peak memory under the targets
            assert_eq!(kind(f), "over_provisioned", "{f}");
            let w = vms.iter().find(|v| v.uuid == vm).map(|v| v.workload);
            assert!(
                matches!(
                    w,
                    Some(Workload::Diurnal | Workload::Steady | Workload::Bursty)
                ),
                "{} over-provisioned: {f}",
                name(vm)
            );
            let (cur, rec) = (&f["kind"]["current"], &f["kind"]["recommended"]);
            assert!(
                rec["vcpus"].as_u64() < cur["vcpus"].as_u64()
                    || rec["mem_gib"].as_u64() < cur["mem_gib"].as_u64(),
                "{f}"
            );
            assert!(ev["figures"]["projected_cpu_p95_pct"].as_f64().unwrap() <= 60.0);
            assert!(ev["figures"]["projected_mem_peak_pct"].as_f64().unwrap() <= 70.0);
        }
    }

    // The weekly batch VMs look idle on most days: only the busy days keep them off the list.
    for v in vms.iter().filter(|v| v.workload == Workload::WeeklyBatch) {
        let d = get_json(
            http,
            ops,
            &format!("/api/usage/{}/days?from=2026-03-16&to=2026-04-14", v.uuid),
        )
        .await;
        let days = d["days"].as_array().unwrap();
        assert!(days.len() >= 28, "{}: {} days", v.uuid, days.len());
        let busy = days
            .iter()
            .filter(|d| d["cpu_p99_pct"].as_f64().unwrap() >= 50.0)
            .count();
        let quiet = days
            .iter()
            .filter(|d| d["cpu_p95_pct"].as_f64().unwrap() <= 5.0)
            .count();
        assert!((4..=5).contains(&busy), "{}: {busy} busy days", v.uuid);
        assert!(
            quiet + busy >= days.len() - 1,
            "{}: {quiet} quiet days",
            v.uuid
        );
    }

    // The register shows the standbys active and the lapsed one expired.
    let ex = get_json(http, ops, "/api/exemptions").await;
    let states: Vec<(String, String)> = ex["exemptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["vm"].as_str().unwrap().to_string(),
                e["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(states.len(), 3);
    for (vm, state) in states {
        let want = if vm == lapsed { "expired" } else { "active" };
        assert_eq!(state, want, "{vm}");
    }
    agg.shutdown().await;
}
