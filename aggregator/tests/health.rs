//! Issue 11 item 10: `/healthz` said "ok" whatever happened. A real aggregator (embedded
//! broker, SQLite, HTTP over TCP) answers its storage, broker and ingest checks; a database
//! another process keeps locked makes the storage thread retry, `/healthz` answer 503 naming
//! storage and `/readyz` 503, and both recover once the lock is gone. `/readyz` also answers
//! 503 while the aggregator is starting or stopping.

use axum::body::Body as HttpBody;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator::health::Phase;
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::web::{router, AppState};
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_protocol::*;
use yunjian_tests::{eventually, http_request};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path) -> AggregatorConfig {
    let mut c = AggregatorConfig {
        data_dir: dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    c.broker.listen = "127.0.0.1:0".parse().unwrap();
    // failing after one second of retrying (the lock below costs SQLite's 5 s busy wait first)
    c.health.storage_failing_after = Duration::from_secs(1);
    c
}

fn report(node: &str, seq: u64) -> Envelope {
    Envelope::new(
        node,
        seq,
        1_795_000_000_000 + seq,
        Body::Report(Report {
            cpu_busy: 4200,
            per_core: vec![4200],
            load: [1, 2, 3],
            mem: Memory {
                total_kib: 1000,
                used_kib: 500,
                ..Memory::default()
            },
            disks: vec![],
            nets: vec![],
            uptime_s: 9,
            failed: vec![],
        }),
    )
}

async fn get(agg: &Aggregator, path: &str) -> (u16, Value) {
    http_request(agg.http_addr, "GET", path, None, "text/plain", b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_failing_storage_and_readyz_follows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let agg = Aggregator::start(&cfg).await.unwrap();

    // healthy: 200, every check ok, no sign-in needed
    let (status, v) = get(&agg, "/healthz").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    for check in ["storage", "broker", "ingest"] {
        assert_eq!(v["checks"][check]["ok"], true, "{check}: {v}");
        assert_eq!(v["checks"][check]["code"], "ok", "{check}: {v}");
    }
    let mqtt = agg.mqtt_addr.unwrap();
    assert!(
        v["checks"]["broker"]["detail"]
            .as_str()
            .unwrap()
            .contains(&mqtt.to_string()),
        "{v}"
    );
    let (status, v) = get(&agg, "/readyz").await;
    assert_eq!((status, &v["code"]), (200, &Value::from("ready")), "{v}");

    // another process holds the database's write lock (an administrator's sqlite3 shell left
    // in a transaction): the storage thread cannot commit and retries
    let lock = rusqlite::Connection::open(cfg.database_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut opts = MqttOptions::new(topics::client_id("h1"), mqtt.ip().to_string(), mqtt.port());
    opts.set_credentials(
        "h1",
        agg.master
            .node_key("h1", yunjian_protocol::Role::Host)
            .mqtt_password(),
    );
    let (client, mut ev) = AsyncClient::new(opts, 10);
    let poll = tokio::spawn(async move {
        let mut acks = 0;
        while let Ok(e) = ev.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = e {
                acks += 1;
            }
            if acks == 1 {
                return;
            }
        }
    });
    let key = agg.master.node_key("h1", yunjian_protocol::Role::Host);
    client
        .publish(
            topics::report("h1"),
            QoS::AtLeastOnce,
            false,
            encode(&report("h1", 1), &key).unwrap(),
        )
        .await
        .unwrap();
    let v = eventually("/healthz failing on storage", WAIT, || async {
        let (status, v) = get(&agg, "/healthz").await;
        (status == 503).then_some(v)
    })
    .await;
    assert_eq!(v["status"], "failing", "{v}");
    assert_eq!(v["checks"]["storage"]["ok"], false, "{v}");
    assert_eq!(
        v["checks"]["storage"]["code"], "storage_write_failing",
        "{v}"
    );
    assert!(
        v["checks"]["storage"]["detail"]
            .as_str()
            .unwrap()
            .contains("存储写入已连续失败"),
        "{v}"
    );
    assert_eq!(
        v["checks"]["broker"]["ok"], true,
        "only storage is named: {v}"
    );
    let (status, v) = get(&agg, "/readyz").await;
    assert_eq!((status, &v["code"]), (503, &Value::from("failing")), "{v}");
    assert!(
        !poll.is_finished(),
        "no PUBACK while the report is not stored"
    );

    // the lock is gone: the retry commits, the report is acknowledged, all is well again
    lock.execute_batch("ROLLBACK").unwrap();
    tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    let (status, v) = get(&agg, "/healthz").await;
    assert_eq!((status, &v["status"]), (200, &Value::from("ok")), "{v}");
    let (status, _) = get(&agg, "/readyz").await;
    assert_eq!(status, 200);
    agg.shutdown().await;
}

async fn ask(app: axum::Router, path: &str) -> (StatusCode, Value) {
    let resp = app
        .oneshot(Request::get(path).body(HttpBody::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn readyz_is_503_while_starting_and_stopping() {
    let metrics = std::sync::Arc::new(Metrics::default());
    let (_changes, changes) = tokio::sync::watch::channel(0);
    let state = AppState::new(Fleet::shared(), metrics.clone(), changes);
    let (status, v) = ask(router(state.clone()), "/readyz").await;
    assert_eq!(
        (status, &v["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &Value::from("starting"))
    );
    assert_eq!(v["ready"], false);
    metrics.health.set_phase(Phase::Ready);
    let (status, v) = ask(router(state.clone()), "/readyz").await;
    assert_eq!(
        (status, &v["code"]),
        (StatusCode::OK, &Value::from("ready"))
    );
    metrics.health.set_phase(Phase::Stopping);
    let (status, v) = ask(router(state.clone()), "/readyz").await;
    assert_eq!(
        (status, &v["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &Value::from("stopping"))
    );
    // liveness stays 200 meanwhile: a stopping process is not a failing one
    let (status, v) = ask(router(state), "/healthz").await;
    assert_eq!((status, &v["status"]), (StatusCode::OK, &Value::from("ok")));
}
