//! Alarms end to end: a simulated host dies → the node_down alarm is raised once, a grouped
//! notice reaches the webhook, an operator acknowledges it (audited), and the alarm survives
//! an aggregator restart.

use serde_json::json;
use std::time::Duration;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator::notify::{Format, Webhook};
use yunjian_aggregator_core::identity::Role;
use yunjian_simulator::{Scenario, SimConfig};
use yunjian_tests::{
    eventually, free_port, get_json, http_request, post_json, seed_users, WebhookSink,
};

/// The operator on duty, who acknowledges, and the auditor, who reads the log.
const OPERATOR: &str = "ops-zhang";
const AUDITOR: &str = "audit-liu";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_host_raises_one_alarm_notifies_is_acknowledged_and_persists() {
    let sink = WebhookSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        policy_interval: Duration::from_millis(200),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.notify.group_window = Duration::from_millis(500);
    cfg.notify.webhooks = vec![Webhook {
        name: "ops".into(),
        url: format!("http://{}/hook?key=s3cret", sink.addr),
        format: Format::Generic,
        units: vec![],
        min_level: yunjian_aggregator_core::alarms::Level::Warning,
    }];
    let tokens = seed_users(
        &cfg,
        &[(OPERATOR, Role::Ops, None), (AUDITOR, Role::Auditor, None)],
    );
    let (ops, auditor) = (tokens[0].as_str(), tokens[1].as_str());
    let agg = Aggregator::start(&cfg).await.unwrap();
    let mut scenario = Scenario::uniform(1, 3, 0, 5);
    scenario.interval = Duration::from_secs(1);
    let sim = yunjian_simulator::start(
        scenario,
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: cfg.broker.listen.port(),
            master_key: agg.master.clone(),
            connect_rate: None,
        },
    )
    .await
    .unwrap();
    assert!(sim.wait_connected(3, Duration::from_secs(20)).await);
    let http = agg.http_addr;
    eventually("3 hosts known", Duration::from_secs(20), || async {
        let v = get_json(http, ops, "/api/nodes?role=host&liveness=online").await;
        (v["nodes"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    assert!(get_json(http, ops, "/api/alarms").await["open"]
        .as_array()
        .unwrap()
        .is_empty());

    let victim = sim.host_ids()[1].clone();
    assert!(sim.kill_node(&victim).await);
    let alarm = eventually("node_down alarm", Duration::from_secs(15), || async {
        let v = get_json(http, ops, "/api/alarms").await;
        v["open"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(alarm["key"]["rule"], "node_down");
    assert_eq!(alarm["key"]["subject"], format!("node:{victim}"));
    assert_eq!(alarm["level"], "major");
    assert_eq!(
        alarm["clause"],
        yunjian_aggregator_core::policy::Profile::default()
            .clauses
            .liveness
    );
    let id = alarm["id"].as_u64().unwrap();
    // evaluated many times since: still one alarm, counted
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v = get_json(http, ops, "/api/alarms").await;
    assert_eq!(v["open"].as_array().unwrap().len(), 1);
    assert!(v["open"][0]["count"].as_u64().unwrap() > 1);

    // one grouped notice for the operators' group, naming the alarm
    let msg = eventually("webhook notice", Duration::from_secs(10), || async {
        sink.messages().into_iter().next()
    })
    .await;
    assert_eq!(msg["group"], "运维");
    assert_eq!(msg["events"][0]["change"], "raised");
    assert_eq!(msg["events"][0]["id"].as_u64(), Some(id));

    // only a signed-in operator acknowledges: anonymous 401, the auditor 403, and the alarm
    // stays unacknowledged
    let ack = format!("/api/alarms/{id}/ack");
    let (status, body) = http_request(http, "POST", &ack, None, "application/json", b"{}").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "not_signed_in", "{body}");
    let (status, body) = post_json(http, auditor, &ack, &json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let v = get_json(http, auditor, "/api/alarms").await;
    assert_eq!(v["open"][0]["id"].as_u64(), Some(id));
    assert_eq!(v["open"][0]["state"], "active", "{v}");
    assert!(v["open"][0]["acked_by"].is_null(), "{v}");
    // the body cannot name someone else as the actor
    let (status, _) = post_json(http, ops, &ack, &json!({"by": "someone-else"})).await;
    assert_eq!(status, 400);

    // acknowledge: recorded who (the signed-in operator), refused twice, audited
    let (status, body) = post_json(http, ops, &ack, &json!({"note": "机房已派人"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acked_by"], OPERATOR);
    let (status, _) = post_json(http, ops, &ack, &json!({})).await;
    assert_eq!(status, 409);
    let (status, body) = post_json(http, ops, "/api/alarms/999999/ack", &json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = post_json(http, ops, &ack, &json!({"who": "x"})).await;
    assert_eq!(status, 400);
    let audit = eventually("audit entry", Duration::from_secs(5), || async {
        let v = get_json(http, auditor, &format!("/api/audit?subject=alarm:{id}")).await;
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "alarm.acknowledge")
            .cloned()
    })
    .await;
    assert_eq!(audit["actor"], OPERATOR);

    // restart: the alarm is still open and acknowledged
    sim.stop().await;
    agg.shutdown().await;
    let agg = Aggregator::start(&cfg).await.unwrap();
    let v = get_json(agg.http_addr, ops, "/api/alarms").await;
    let restored = v["open"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"].as_u64() == Some(id))
        .cloned()
        .expect("alarm restored");
    assert_eq!(restored["acked_by"], OPERATOR);
    agg.shutdown().await;
}
