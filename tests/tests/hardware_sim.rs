//! Server hardware end to end: the simulator's emulated BMCs → MQTT → the aggregator's
//! hardware rule → `/api/alarms`, the rack page, and the SEL after a restart.
//!
//! One rack of two servers sweeping their BMC on every report; `rack1-h02` is forced to
//! 96 °C (above its upper critical 90 °C) for a few seconds. Its critical hardware alarm must
//! appear, the rack page must show the server red meanwhile, the alarm must clear when the
//! temperature is back, the other server must raise no sensor alarm, and the threshold events
//! the BMC logged must still be on the server's SEL after an aggregator restart. Later
//! `rack1-h01`'s BMC stops answering for a few seconds while the host runs on: a BMC alarm,
//! not `node_down`, cleared when the BMC answers again.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::identity::Role;
use yunjian_simulator::bmc::{HardwareKnobs, Outage, Overheat};
use yunjian_tests::{eventually, free_port, get_json, http_get, seed_users};

const HOT: &str = "rack1-h02";
const SUBJECT: &str = "node:rack1-h02/sensor:CPU1 Temp";

fn aggregator_config(dir: &Path) -> AggregatorConfig {
    let mut cfg = AggregatorConfig {
        data_dir: dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        policy_interval: Duration::from_millis(200),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg
}

fn find<'a>(alarms: &'a Value, list: &str, subject: &str) -> Option<&'a Value> {
    alarms[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"]["subject"] == subject)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overheated_server_raises_a_critical_alarm_that_clears_and_shows_on_the_rack_page() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aggregator_config(dir.path());
    // the operator on duty, and a unit's person (hosts' hardware is not theirs to see)
    let tokens = seed_users(
        &cfg,
        &[
            ("ops-zhang", Role::Ops, None),
            ("czj-li", Role::Unit, Some("财政局")),
        ],
    );
    let (ops, unit) = (tokens[0].as_str(), tokens[1].as_str());
    let agg = Aggregator::start(&cfg).await.unwrap();
    let mut scenario = yunjian_simulator::Scenario::uniform(1, 2, 1, 7);
    scenario.interval = Duration::from_millis(500);
    scenario.hardware = HardwareKnobs {
        every_reports: 1,
        overheat: vec![Overheat {
            host: HOT.into(),
            after: Duration::from_secs(3),
            duration: Some(Duration::from_secs(5)),
            cpu_temp_c: 96.0,
        }],
        unreachable: vec![Outage {
            host: "rack1-h01".into(),
            after: Duration::from_secs(12),
            duration: Some(Duration::from_secs(6)),
        }],
        ..HardwareKnobs::default()
    };
    let sim = yunjian_simulator::start(
        scenario,
        yunjian_simulator::SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: cfg.broker.listen.port(),
            master_key: agg.master.clone(),
            connect_rate: None,
        },
    )
    .await
    .unwrap();
    let http = agg.http_addr;

    let alarm = eventually(
        "the critical CPU temperature alarm",
        Duration::from_secs(30),
        || async {
            let alarms = get_json(http, ops, "/api/alarms").await;
            find(&alarms, "open", SUBJECT).cloned()
        },
    )
    .await;
    assert_eq!(alarm["key"]["rule"], "hardware");
    assert_eq!(alarm["level"], "critical", "{alarm}");
    assert_eq!(alarm["evidence"]["detail"]["value"], 96_000);
    assert_eq!(
        alarm["evidence"]["detail"]["thresholds"]["upper_critical"],
        90_000
    );
    assert_eq!(alarm["evidence"]["rack"], "rack1");

    // the rack page: both servers in rack1, the hot one red while its alarm is open
    let (status, html) = http_get(http, ops, "/racks").await;
    assert_eq!(status, 200);
    assert!(html.contains(">rack1<"), "{html}");
    assert!(
        html.contains("<li class=\"slot critical\" data-node=\"rack1-h02\">"),
        "{html}"
    );
    assert!(html.contains("data-node=\"rack1-h01\""), "{html}");
    let (status, page) = http_get(http, ops, "/servers/rack1-h02").await;
    assert_eq!(status, 200);
    assert!(page.contains("<tr data-sensor=\"CPU1 Temp\">") && page.contains("96.0"));
    // a unit's person sees neither the hosts' hardware nor the cloud-wide alarm
    let (status, body) = http_get(http, unit, "/api/servers/rack1-h02/hardware").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    let (status, _) = http_get(http, unit, "/racks").await;
    assert_eq!(status, 403);
    let theirs = get_json(http, unit, "/api/alarms").await;
    assert!(find(&theirs, "open", SUBJECT).is_none(), "{theirs}");

    // back below: cleared
    let cleared = eventually("the alarm cleared", Duration::from_secs(30), || async {
        let alarms = get_json(http, ops, "/api/alarms").await;
        if find(&alarms, "open", SUBJECT).is_some() {
            return None;
        }
        find(&alarms, "cleared", SUBJECT).cloned()
    })
    .await;
    assert_eq!(cleared["state"], "cleared");
    let alarms = get_json(http, ops, "/api/alarms").await;
    for list in ["open", "cleared"] {
        let others: Vec<&Value> = alarms[list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                a["key"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("node:rack1-h01/sensor:"))
            })
            .collect();
        assert!(others.is_empty(), "the cool server raised {others:?}");
    }
    let server = get_json(http, ops, "/api/servers/rack1-h02/hardware").await;
    let sel: Vec<(&str, bool)> = server["sel"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entry"]["sensor"] == "CPU1 Temp")
        .map(|r| {
            (
                r["entry"]["description"].as_str().unwrap(),
                r["entry"]["asserted"].as_bool().unwrap(),
            )
        })
        .collect();
    // newest first: recovery, then the excursion
    assert_eq!(
        sel,
        [
            ("Upper Critical going high", false),
            ("Upper Critical going high", true)
        ]
    );

    // the BMC of rack1-h01 stops answering; the host itself keeps reporting
    let bmc = "node:rack1-h01/bmc";
    let alarm = eventually("the BMC alarm", Duration::from_secs(30), || async {
        let alarms = get_json(http, ops, "/api/alarms").await;
        find(&alarms, "open", bmc).cloned()
    })
    .await;
    assert_eq!(alarm["key"]["rule"], "hardware");
    assert_eq!(alarm["level"], "major");
    assert!(
        alarm["title"].as_str().unwrap().contains("BMC 无响应"),
        "{alarm}"
    );
    let alarms = get_json(http, ops, "/api/alarms").await;
    assert!(
        find(&alarms, "open", "node:rack1-h01").is_none(),
        "{alarms}"
    );
    let nodes = get_json(http, ops, "/api/nodes/rack1-h01").await;
    assert_eq!(nodes["summary"]["liveness"], "online", "{nodes}");
    eventually("the BMC alarm cleared", Duration::from_secs(30), || async {
        let alarms = get_json(http, ops, "/api/alarms").await;
        find(&alarms, "open", bmc)
            .is_none()
            .then(|| find(&alarms, "cleared", bmc).cloned())
            .flatten()
    })
    .await;

    sim.stop().await;
    agg.shutdown().await;

    // the SEL survives a restart
    let agg = Aggregator::start(&cfg).await.unwrap();
    let server = get_json(agg.http_addr, ops, "/api/servers/rack1-h02/hardware").await;
    let restored: Vec<&str> = server["sel"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entry"]["sensor"] == "CPU1 Temp")
        .map(|r| r["entry"]["description"].as_str().unwrap())
        .collect();
    assert_eq!(restored.len(), 2, "{server}");
    agg.shutdown().await;
}
