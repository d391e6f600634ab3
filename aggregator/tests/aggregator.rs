//! The aggregator with its embedded broker, driven by real MQTT clients (rumqttc): login and
//! ACLs, last will, persistent sessions, bad payloads, ack after persist, restart from storage.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::fleet::Liveness;
use yunjian_aggregator_core::store::prelude::*;
use yunjian_protocol::*;
use yunjian_store_sqlite::SqliteStorage;

fn config(dir: &std::path::Path) -> AggregatorConfig {
    let mut c = AggregatorConfig {
        data_dir: dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    c.broker.listen = "127.0.0.1:0".parse().unwrap();
    c.broker.operator_password = Some("op-secret".into());
    c
}

fn agent_opts(agg: &Aggregator, node: &str, password: Option<String>) -> MqttOptions {
    let addr = agg.mqtt_addr.unwrap();
    let mut o = MqttOptions::new(topics::client_id(node), addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1 << 20, 1 << 20);
    let pw = password.unwrap_or_else(|| agg.master.node_key(node, Role::Host).mqtt_password());
    o.set_credentials(node, pw);
    o
}

/// Poll until ConnAck (Ok) or a connection error (Err with its text).
async fn connect(ev: &mut EventLoop) -> Result<(), String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("{e:?}")),
            Err(_) => return Err("timeout".into()),
        }
    }
}

fn spawn_poll(mut ev: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while ev.poll().await.is_ok() {} })
}

fn report_env(node: &str, seq: u64) -> Envelope {
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

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

fn liveness(agg: &Aggregator, node: &str) -> Option<Liveness> {
    agg.fleet.read().unwrap().get(node).map(|s| s.liveness)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_must_log_in_as_themselves_and_stay_on_their_topics() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();

    // wrong password: refused with a clear reason
    let (_c, mut ev) = AsyncClient::new(agent_opts(&agg, "h1", Some("0".repeat(32))), 10);
    let e = connect(&mut ev).await.unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "{e}");
    // h2's password does not open h1
    let pw2 = agg.master.node_key("h2", Role::Host).mqtt_password();
    let (_c, mut ev) = AsyncClient::new(agent_opts(&agg, "h1", Some(pw2)), 10);
    assert!(connect(&mut ev).await.is_err());
    // an unknown client without the operator password
    let addr = agg.mqtt_addr.unwrap();
    let (_c, mut ev) = AsyncClient::new(MqttOptions::new("tool", "127.0.0.1", addr.port()), 10);
    let e = connect(&mut ev).await.unwrap_err();
    assert!(e.contains("NotAuthorized"), "{e}");
    assert!(agg.metrics.broker.auth_failures.load(Relaxed) >= 3);

    // h1 logs in, then tries to speak for h2 on h2's topic: refused by the ACL, never ingested
    let (c, mut ev) = AsyncClient::new(agent_opts(&agg, "h1", None), 10);
    connect(&mut ev).await.unwrap();
    let poll = spawn_poll(ev);
    let k1 = agg.master.node_key("h1", Role::Host);
    let forged = encode(&report_env("h2", 1), &k1).unwrap();
    c.publish(topics::report("h2"), QoS::AtLeastOnce, false, forged)
        .await
        .unwrap();
    c.publish(
        topics::report("h1"),
        QoS::AtLeastOnce,
        false,
        encode(&report_env("h1", 1), &k1).unwrap(),
    )
    .await
    .unwrap();
    assert!(wait_for(|| agg.fleet.read().unwrap().get("h1").is_some()).await);
    assert!(agg.fleet.read().unwrap().get("h2").is_none());
    assert_eq!(agg.metrics.broker.acl_denied.load(Relaxed), 1);
    poll.abort();
    agg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_wrong_version_and_forged_are_counted_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();
    let (c, mut ev) = AsyncClient::new(agent_opts(&agg, "h1", None), 10);
    connect(&mut ev).await.unwrap();
    let poll = spawn_poll(ev);
    let k = agg.master.node_key("h1", Role::Host);
    let good = encode(&report_env("h1", 1), &k).unwrap();
    let mut wrong_version = good.clone();
    wrong_version[0] = 9;
    let other_key = MasterKey::from_bytes([1; 32]).node_key("h1", Role::Host);
    let bad: Vec<Vec<u8>> = vec![
        vec![0xde, 0xad, 0xbe, 0xef, 0x01, 0x02],
        std::iter::once(1u8).chain([0xff; 40]).collect(),
        good[..good.len() / 2].to_vec(),
        wrong_version,
        encode(&report_env("h1", 2), &other_key).unwrap(),
        vec![1u8; MAX_FRAME_LEN + 10],
        Vec::new(),
    ];
    for b in bad {
        c.publish(topics::report("h1"), QoS::AtLeastOnce, false, b)
            .await
            .unwrap();
    }
    c.publish(topics::report("h1"), QoS::AtLeastOnce, false, good)
        .await
        .unwrap();
    let m = agg.metrics.clone();
    assert!(
        wait_for(|| m.decode_errors_total() == 7 && m.applied.load(Relaxed) == 1).await,
        "errors {} applied {}",
        m.decode_errors_total(),
        m.applied.load(Relaxed)
    );
    // random bytes whose first byte is not a known version are reported as such
    assert_eq!(m.decode_errors("unknown_version"), 2);
    assert_eq!(m.decode_errors("bad_mac"), 1);
    assert_eq!(m.decode_errors("oversized"), 1);
    assert_eq!(m.decode_errors("empty"), 1);
    assert_eq!(
        m.decode_errors("malformed") + m.decode_errors("truncated"),
        2
    );
    // still serving: the good report is in the fleet and /metrics has the counters
    let st = agg.fleet.read().unwrap().get("h1").unwrap().clone();
    assert_eq!(st.report.unwrap().cpu_busy, 4200);
    let text = m.render(&agg.fleet.read().unwrap());
    assert!(text.contains("yunjian_decode_errors_total{kind=\"bad_mac\"} 1"));
    poll.abort();
    agg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_marks_offline_and_persistent_sessions_keep_messages() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();
    let addr = agg.mqtt_addr.unwrap();
    let k = agg.master.node_key("h1", Role::Host);

    // an operator tool with a persistent session watches statuses, then goes away
    let mut oo = MqttOptions::new("watcher", "127.0.0.1", addr.port());
    oo.set_credentials("operator", "op-secret")
        .set_clean_session(false);
    let (oc, mut oev) = AsyncClient::new(oo.clone(), 10);
    connect(&mut oev).await.unwrap();
    oc.subscribe(topics::STATUS_FILTER, QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(5), oev.poll()).await
        {
            break;
        }
    }
    drop(oev);

    // the agent connects with a will, says online, then its connection dies
    let mut o = agent_opts(&agg, "h1", None);
    let will = encode(
        &Envelope::new("h1", 0, 2, Body::Status(Status::Offline)),
        &k,
    )
    .unwrap();
    o.set_last_will(LastWill::new(
        topics::status("h1"),
        will,
        QoS::AtLeastOnce,
        true,
    ));
    let (c, mut ev) = AsyncClient::new(o, 10);
    connect(&mut ev).await.unwrap();
    let online = encode(&Envelope::new("h1", 0, 1, Body::Status(Status::Online)), &k).unwrap();
    c.publish(topics::status("h1"), QoS::AtLeastOnce, true, online)
        .await
        .unwrap();
    let poll = spawn_poll(ev);
    assert!(wait_for(|| liveness(&agg, "h1") == Some(Liveness::Online)).await);
    poll.abort(); // drops the socket without DISCONNECT: the broker fires the will
    assert!(wait_for(|| liveness(&agg, "h1") == Some(Liveness::Offline)).await);

    // the watcher comes back: its session kept both status messages for it
    let (_oc, mut oev) = AsyncClient::new(oo, 10);
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while statuses.len() < 2 && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(500), oev.poll()).await
        {
            statuses.push(decode(&p.payload, "h1", &k).unwrap().body);
        }
    }
    assert_eq!(
        statuses,
        vec![Body::Status(Status::Online), Body::Status(Status::Offline)]
    );
    agg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_reports_are_in_storage_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let agg = Aggregator::start(&cfg).await.unwrap();
    let k = agg.master.node_key("h1", Role::Host);
    let (c, mut ev) = AsyncClient::new(agent_opts(&agg, "h1", None), 10);
    connect(&mut ev).await.unwrap();
    for seq in 1..=7 {
        c.publish(
            topics::report("h1"),
            QoS::AtLeastOnce,
            false,
            encode(&report_env("h1", seq), &k).unwrap(),
        )
        .await
        .unwrap();
    }
    // wait for the 7 PUBACKs, then look in the database directly
    let mut acks = 0;
    while acks < 7 {
        match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
            Ok(Ok(_)) => {}
            other => panic!("no PUBACK: {other:?}"),
        }
    }
    let mut db = SqliteStorage::open(&cfg.database_path()).unwrap();
    let rows = db.load_nodes().unwrap();
    assert_eq!(rows.len(), 1, "acknowledged means stored");
    assert_eq!(rows[0].last_seq, 7);
    drop(ev);
    agg.shutdown().await;

    // a restarted aggregator knows h1 (offline until it speaks) and de-duplicates a replay
    let agg = Aggregator::start(&cfg).await.unwrap();
    {
        let f = agg.fleet.read().unwrap();
        let st = f.get("h1").unwrap();
        assert_eq!((st.last_seq, st.liveness), (7, Liveness::Offline));
        assert_eq!(st.report.as_ref().unwrap().cpu_busy, 4200);
    }
    let (c, mut ev) = AsyncClient::new(agent_opts(&agg, "h1", None), 10);
    connect(&mut ev).await.unwrap();
    let poll = spawn_poll(ev);
    for seq in [7, 8] {
        c.publish(
            topics::report("h1"),
            QoS::AtLeastOnce,
            false,
            encode(&report_env("h1", seq), &k).unwrap(),
        )
        .await
        .unwrap();
    }
    assert!(wait_for(|| agg.fleet.read().unwrap().get("h1").unwrap().last_seq == 8).await);
    let st = agg.fleet.read().unwrap().get("h1").unwrap().clone();
    assert_eq!((st.duplicates, st.missing), (1, 0));
    poll.abort();
    agg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_subscriber_receives_every_message_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.broker.session_queue = 20_000;
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.mqtt_addr.unwrap();
    let mut so = MqttOptions::new("watcher", "127.0.0.1", addr.port());
    so.set_credentials("operator", "op-secret")
        .set_max_packet_size(1 << 20, 1 << 20);
    let (sc, mut sev) = AsyncClient::new(so, 100);
    connect(&mut sev).await.unwrap();
    sc.subscribe(topics::REPORT_FILTER, QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(5), sev.poll()).await
        {
            break;
        }
    }
    const N: u64 = 5_000;
    let k = agg.master.node_key("h1", Role::Host);
    let (c, mut ev) = AsyncClient::new(agent_opts(&agg, "h1", None), 100);
    connect(&mut ev).await.unwrap();
    let poll = spawn_poll(ev);
    let publisher = tokio::spawn(async move {
        for seq in 1..=N {
            c.publish(
                topics::report("h1"),
                QoS::AtLeastOnce,
                false,
                encode(&report_env("h1", seq), &k).unwrap(),
            )
            .await
            .unwrap();
        }
    });
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got < N && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(_)))) =
            tokio::time::timeout(Duration::from_secs(1), sev.poll()).await
        {
            got += 1;
        }
    }
    assert_eq!(got, N, "every message reaches the subscriber");
    assert_eq!(agg.metrics.broker.dropped.load(Relaxed), 0);
    publisher.await.unwrap();
    poll.abort();
    agg.shutdown().await;
}

/// A client may send SUBSCRIBE right behind CONNECT in the same TCP segment, without waiting
/// for CONNACK: the broker must answer both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_pipelined_behind_connect_are_handled() {
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(agg.mqtt_addr.unwrap())
        .await
        .unwrap();
    let mut w = BytesMut::new();
    let mut c = v4::Connect::new("pipeliner");
    c.set_login("operator", "op-secret");
    c.write(&mut w).unwrap();
    let mut sub = v4::Subscribe::new(topics::STATUS_FILTER, QoS::AtLeastOnce);
    sub.pkid = 7;
    sub.write(&mut w).unwrap();
    s.write_all(&w).await.unwrap(); // one write: CONNECT + SUBSCRIBE
    let mut r = BytesMut::new();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read_buf(&mut r)).await;
        while let Ok(p) = v4::read(&mut r, 1 << 20) {
            got.push(p);
        }
    }
    assert!(
        matches!(got.first(), Some(v4::Packet::ConnAck(_))),
        "{got:?}"
    );
    assert!(
        matches!(got.get(1), Some(v4::Packet::SubAck(a)) if a.pkid == 7),
        "{got:?}"
    );
    agg.shutdown().await;
}
