//! End to end: simulator → MQTT → aggregator → JSON API, on the embedded broker and on a real
//! Mosquitto (external-broker mode), plus a broker restart in the middle of a run.

use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::identity::Role;
use yunjian_simulator::{Scenario, SimConfig, Simulation};
use yunjian_tests::{eventually, free_port, get_json, http_request, seed_users, Mosquitto};

fn aggregator_config(dir: &std::path::Path, mqtt_port: u16) -> AggregatorConfig {
    let mut c = AggregatorConfig {
        data_dir: dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    c.broker.listen = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
    c
}

/// The operator on duty who watches the fleet; returns their API token. Call once the
/// storage of `cfg` is final.
/// (`seed_users` blocks, and the PostgreSQL client runs its own runtime: off the async worker.)
fn seed_operator(cfg: &AggregatorConfig) -> String {
    tokio::task::block_in_place(|| seed_users(cfg, &[("ops-zhang", Role::Ops, None)])).remove(0)
}

/// 50 bare-metal hosts (5 racks × 10) reporting every second.
fn fifty_hosts() -> Scenario {
    let mut s = Scenario::uniform(5, 10, 0, 42);
    s.interval = Duration::from_secs(1);
    s
}

async fn start_sim(scenario: Scenario, agg: &Aggregator, port: u16) -> Simulation {
    yunjian_simulator::start(
        scenario,
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: port,
            master_key: agg.master.clone(),
            connect_rate: None,
        },
    )
    .await
    .expect("simulation starts")
}

fn nodes_by_id(v: &Value) -> HashMap<String, Value> {
    v["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| (n["node"].as_str().unwrap().to_string(), n.clone()))
        .collect()
}

/// The API lists every simulated host online with its figures.
async fn fifty_online_with_figures(http: SocketAddr, token: &str) {
    eventually(
        "50 online hosts with figures",
        Duration::from_secs(30),
        || async {
            let v = get_json(http, token, "/api/nodes?role=host&liveness=online").await;
            let nodes = v["nodes"].as_array().unwrap();
            let with_figures = nodes
                .iter()
                .filter(|n| {
                    n["cpu_pct"].is_number()
                        && n["mem_pct"].is_number()
                        && n["disk_pct"].is_number()
                })
                .count();
            (with_figures == 50).then_some(())
        },
    )
    .await;
}

async fn killed_host_goes_offline(sim: &Simulation, http: SocketAddr, token: &str) {
    let victim = sim.host_ids()[0].clone();
    assert!(sim.kill_node(&victim).await, "kill {victim}");
    eventually(
        "the killed host offline",
        Duration::from_secs(15),
        || async {
            let v = get_json(http, token, &format!("/api/nodes/{victim}")).await;
            let live = v["summary"]["liveness"]
                .as_str()
                .or(v["liveness"].as_str())
                .map(str::to_string);
            (live.as_deref() == Some("offline")).then_some(())
        },
    )
    .await;
    // the others stay online
    let v = get_json(http, token, "/api/nodes?role=host&liveness=online").await;
    assert_eq!(v["nodes"].as_array().unwrap().len(), 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hosts_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aggregator_config(dir.path(), 0);
    let token = seed_operator(&cfg);
    let agg = Aggregator::start(&cfg).await.unwrap();
    let port = agg.mqtt_addr.unwrap().port();
    let sim = start_sim(fifty_hosts(), &agg, port).await;
    fifty_online_with_figures(agg.http_addr, &token).await;
    // the fleet is not shown to someone who has not signed in
    let (status, body) = http_request(
        agg.http_addr,
        "GET",
        "/api/nodes",
        None,
        "application/json",
        b"",
    )
    .await;
    assert_eq!(status, 401, "anonymous /api/nodes: {body}");
    assert_eq!(body["code"], "not_signed_in", "{body}");
    killed_host_goes_offline(&sim, agg.http_addr, &token).await;
    sim.stop().await;
    agg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hosts_through_mosquitto_in_external_broker_mode() {
    let Some(mosq) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = aggregator_config(dir.path(), 0);
    cfg.broker_url = Some(format!("mqtt://127.0.0.1:{}", mosq.port));
    let token = seed_operator(&cfg);
    let agg = Aggregator::start(&cfg).await.unwrap();
    assert!(
        agg.mqtt_addr.is_none(),
        "no embedded broker in external mode"
    );
    let sim = start_sim(fifty_hosts(), &agg, mosq.port).await;
    fifty_online_with_figures(agg.http_addr, &token).await;
    killed_host_goes_offline(&sim, agg.http_addr, &token).await;
    sim.stop().await;
    agg.shutdown().await;
}

/// The embedded broker lives in the aggregator: restarting the aggregator restarts the broker.
/// Agents buffer while it is away and replay; the aggregator acknowledged only what it stored.
/// Every node's sequence numbers must be contiguous afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_loses_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = aggregator_config(dir.path(), port);
    let mut scenario = Scenario::uniform(2, 5, 0, 7);
    scenario.interval = Duration::from_millis(200);
    restart_loses_no_report(&cfg, scenario, 10, 20).await;
}

/// The same on PostgreSQL, with the 50 hosts: the restarted aggregator shows the fleet it
/// stored before the agents are back, and nothing is lost across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hosts_on_postgresql_restart_and_lose_no_report() {
    let Some(pg) = yunjian_tests::postgres::TempPostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = aggregator_config(dir.path(), port);
    cfg.storage = Some(pg.create_database("fleet").parse().unwrap());
    let mut scenario = fifty_hosts();
    scenario.interval = Duration::from_millis(500);
    restart_loses_no_report(&cfg, scenario, 50, 10).await;
    assert!(
        !dir.path().join("yunjian.db").exists(),
        "nothing went to the embedded SQLite file"
    );
}

/// Run `scenario` (`hosts` hosts), restart the aggregator mid-run, and check every node sent
/// more than `min_last` reports with none lost.
async fn restart_loses_no_report(
    cfg: &AggregatorConfig,
    scenario: Scenario,
    hosts: usize,
    min_last: u64,
) {
    let port = cfg.broker.listen.port();
    let token = seed_operator(cfg);
    let agg = Aggregator::start(cfg).await.unwrap();
    let sim = start_sim(scenario, &agg, port).await;
    assert!(sim.wait_connected(hosts, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;

    agg.shutdown().await; // broker gone: reports pile up in the agents' buffers
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agg = Aggregator::start(cfg).await.unwrap();
    // what storage kept: every host, before any agent is back
    let restored = get_json(agg.http_addr, &token, "/api/nodes?role=host").await;
    assert_eq!(
        restored["nodes"].as_array().unwrap().len(),
        hosts,
        "restored from storage"
    );
    assert!(
        sim.wait_connected(hosts, Duration::from_secs(30)).await,
        "agents reconnect"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sim_stats = sim.stats();
    assert!(
        sim_stats.reconnects >= hosts as u64,
        "every agent reconnected: {sim_stats:?}"
    );
    sim.stop().await; // clean stop: flushes what is buffered

    let http = agg.http_addr;
    let v = eventually(
        "every report of every node applied",
        Duration::from_secs(30),
        || async {
            let v = get_json(http, &token, "/api/nodes?role=host").await;
            let all_caught_up = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["last_seq"].as_u64() == n["received"].as_u64());
            (v["nodes"].as_array().unwrap().len() == hosts && all_caught_up).then_some(v)
        },
    )
    .await;
    for (id, n) in nodes_by_id(&v) {
        let last = n["last_seq"].as_u64().unwrap();
        assert!(
            last > min_last,
            "{id} sent across the outage: last_seq {last}"
        );
        assert_eq!(
            n["missing"].as_u64(),
            Some(0),
            "{id}: no gap in its sequence"
        );
        assert_eq!(
            n["received"].as_u64(),
            Some(last),
            "{id}: 1..={last} all applied"
        );
    }
    agg.shutdown().await;
}
