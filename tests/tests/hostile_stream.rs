//! Hostile streams (issue 11, items 2, 5 and 6), replayed against the real aggregator with its
//! embedded broker, over MQTT, with correctly signed frames — what a compromised or broken node
//! can send:
//!
//! * a report stamped 400 days ahead (it used to move the usage history's "today" for the whole
//!   fleet, across restarts);
//! * a sequence number of `u64::MAX` (it used to freeze the node's stream for good), and a
//!   restarted count (a reinstalled agent, a wiped buffer) that used to be ignored until it
//!   caught up;
//! * a replayed `Offline` status of an earlier connection (it used to take a reporting node
//!   offline).
//!
//! Each is refused and counted in `yunjian_frames_refused_total{reason=...}`, and the node's
//! real stream goes on.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use std::time::Duration;
use yunjian_agent::publish::config::{BufferConfig, MqttConfig};
use yunjian_agent::publish::{Identity, Publisher};
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::fleet::Liveness;
use yunjian_aggregator_core::identity::Role as PersonRole;
use yunjian_aggregator_core::store::prelude::*;
use yunjian_aggregator_core::store::WriteBatch;
use yunjian_aggregator_core::time::beijing_day;
use yunjian_aggregator_core::usage::{DailySummary, UsageDayRow};
use yunjian_protocol::*;
use yunjian_tests::{free_port, get_json, seed_users};

const DAY_MS: u64 = 86_400_000;

fn config(dir: &std::path::Path) -> AggregatorConfig {
    let mut cfg = AggregatorConfig {
        data_dir: dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A raw MQTT client logged in as `node`: the test signs and sends whatever it likes.
struct Raw {
    client: AsyncClient,
    key: NodeKey,
    node: String,
    _poll: tokio::task::JoinHandle<()>,
}

fn options(agg: &Aggregator, node: &str, role: Role) -> MqttOptions {
    let addr = agg.mqtt_addr.unwrap();
    let mut o = MqttOptions::new(topics::client_id(node), addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5))
        .set_credentials(node, agg.master.node_key(node, role).mqtt_password());
    o
}

async fn connected(mut ev: EventLoop) -> tokio::task::JoinHandle<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no ConnAck: {other:?}"),
        }
    }
    tokio::spawn(async move { while ev.poll().await.is_ok() {} })
}

impl Raw {
    async fn connect(agg: &Aggregator, node: &str, role: Role) -> Raw {
        Raw::connect_with(agg, node, role, options(agg, node, role)).await
    }

    async fn connect_with(agg: &Aggregator, node: &str, role: Role, opts: MqttOptions) -> Raw {
        let (client, ev) = AsyncClient::new(opts, 64);
        Raw {
            client,
            key: agg.master.node_key(node, role),
            node: node.into(),
            _poll: connected(ev).await,
        }
    }

    fn frame(&self, seq: u64, ts_ms: u64, body: Body) -> Vec<u8> {
        encode(
            &Envelope::new(self.node.clone(), seq, ts_ms, body),
            &self.key,
        )
        .unwrap()
    }

    async fn send(&self, seq: u64, ts_ms: u64, body: Body) {
        let frame = self.frame(seq, ts_ms, body);
        self.client
            .publish(topics::report(&self.node), QoS::AtLeastOnce, false, frame)
            .await
            .unwrap();
    }

    async fn status(&self, stamp: u64, status: Status) {
        let frame = self.frame(stamp, now_ms(), Body::Status(status));
        self.client
            .publish(topics::status(&self.node), QoS::AtLeastOnce, true, frame)
            .await
            .unwrap();
    }
}

fn hello(role: Role, epoch: u64, buffered: u32) -> Body {
    Body::Hello(Hello {
        agent_version: "test".into(),
        role,
        interval_ms: 10_000,
        buffered,
        epoch,
    })
}

fn report(cpu: Centi) -> Body {
    Body::Report(Report {
        cpu_busy: cpu,
        per_core: vec![cpu],
        load: [1, 1, 1],
        mem: Memory {
            total_kib: 8 << 20,
            used_kib: 1 << 20,
            available_kib: 7 << 20,
            ..Memory::default()
        },
        disks: vec![],
        nets: vec![],
        uptime_s: 100,
        failed: vec![],
    })
}

fn guest_inventory(uuid: &str) -> Body {
    Body::Inventory(Inventory {
        hostname: "vm".into(),
        role: Role::Guest,
        os: "Debian GNU/Linux 12".into(),
        kernel: "6.1".into(),
        cpu_model: "x".into(),
        cpu_cores: 2,
        mem_total_kib: 8 << 20,
        disks: vec![],
        nics: vec![],
        machine_id: "m".into(),
        smbios_uuid: Some(uuid.into()),
        rack: None,
    })
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn node<T>(
    agg: &Aggregator,
    id: &str,
    f: impl FnOnce(&yunjian_aggregator_core::fleet::NodeState) -> T,
) -> Option<T> {
    agg.fleet.read().unwrap().get(id).map(f)
}

/// The usage history's "today" (the day the rules judge up to), as the findings API shows it.
async fn usage_today(agg: &Aggregator, token: &str) -> String {
    let v = get_json(agg.http_addr, token, "/api/usage/findings").await;
    v["today"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_from_400_days_ahead_moves_no_clock() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let tokens = seed_users(&cfg, &[("ops-1", PersonRole::Ops, None)]);
    let today = beijing_day(now_ms()).to_string();
    // A day stored 400 days ahead before ingest checked event times: ignored at start.
    {
        let mut db =
            yunjian_store_sqlite::SqliteStorage::open(&dir.path().join("yunjian.db")).unwrap();
        db.migrate().unwrap();
        let ahead = beijing_day(now_ms() + 400 * DAY_MS);
        db.write(&WriteBatch {
            usage_days: vec![UsageDayRow {
                vm: "0a0a0a0a-0000-4000-8000-00000000aaaa".into(),
                summary: DailySummary {
                    day: ahead,
                    samples: 10,
                    covered_s: 3_600,
                    cpu_mean: 100,
                    ..DailySummary::default()
                },
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    }
    let agg = Aggregator::start(&cfg).await.unwrap();
    let vm = Raw::connect(&agg, "vm-a", Role::Guest).await;
    let t = now_ms();
    vm.send(1, t, hello(Role::Guest, 11, 0)).await;
    vm.send(
        2,
        t,
        guest_inventory("0A0A0A0A-0000-4000-8000-000000000001"),
    )
    .await;
    vm.send(3, t, report(500)).await;
    until("the VM's first report", || {
        node(&agg, "vm-a", |s| s.last_seq) == Some(3)
    })
    .await;
    assert_eq!(
        usage_today(&agg, &tokens[0]).await,
        today,
        "the stored future day was ignored"
    );

    // 400 days ahead: refused and counted; the stream and the clock go on
    vm.send(4, t + 400 * DAY_MS, report(9_900)).await;
    vm.send(5, t + 1_000, report(600)).await;
    until("the report after the refused one", || {
        node(&agg, "vm-a", |s| s.last_seq) == Some(5)
    })
    .await;
    assert_eq!(agg.metrics.refusals("time_ahead"), 1);
    assert_eq!(
        node(&agg, "vm-a", |s| (
            s.last_report_ts_ms,
            s.report.as_ref().unwrap().cpu_busy
        )),
        Some((t + 1_000, 600))
    );
    assert_eq!(usage_today(&agg, &tokens[0]).await, today);
    let metrics = yunjian_tests::http_get(agg.http_addr, &tokens[0], "/metrics")
        .await
        .1;
    assert!(
        metrics.contains("yunjian_frames_refused_total{reason=\"time_ahead\"} 1"),
        "{metrics}"
    );

    // across a restart too: nothing of the refused report was stored
    agg.shutdown().await;
    let agg = Aggregator::start(&cfg).await.unwrap();
    assert_eq!(usage_today(&agg, &tokens[0]).await, today);
    agg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_leap_is_refused_and_a_new_epoch_restarts_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();
    let h = Raw::connect(&agg, "h1", Role::Host).await;
    let t = now_ms();
    h.send(1, t, hello(Role::Host, 0xA, 0)).await;
    for seq in 2..=4 {
        h.send(seq, t + seq, report(1_000)).await;
    }
    // u64::MAX (and any leap of more than MAX_SEQ_STEP): refused, nothing frozen
    h.send(u64::MAX, t + 5, report(9_000)).await;
    h.send(100_000_004 + 4, t + 6, report(9_000)).await;
    h.send(5, t + 7, report(2_000)).await;
    until("report 5 applied after the leaps", || {
        node(&agg, "h1", |s| s.last_seq) == Some(5)
    })
    .await;
    assert_eq!(agg.metrics.refusals("seq_jump"), 2);
    assert_eq!(
        node(&agg, "h1", |s| (
            s.report.as_ref().unwrap().cpu_busy,
            s.missing
        )),
        Some((2_000, 0))
    );

    // The agent is reinstalled (its buffer wiped): epoch B counts from 1 again, and its
    // reports count at once instead of being taken for replays of 1..5.
    h.send(1, t + 10, hello(Role::Host, 0xB, 0)).await;
    h.send(2, t + 11, report(7_700)).await;
    until("the new epoch's report", || {
        node(&agg, "h1", |s| s.report.as_ref().unwrap().cpu_busy) == Some(7_700)
    })
    .await;
    // A new epoch whose agent buffered three frames before connecting: they come after the
    // hello and fill the gap it announced.
    h.send(4, t + 20, hello(Role::Host, 0xC, 3)).await;
    for seq in 1..=3 {
        h.send(seq, t + 12 + seq, report(3_000 + seq as u16)).await;
    }
    h.send(5, t + 21, report(4_400)).await;
    until("the buffered frames and the next report", || {
        node(&agg, "h1", |s| (s.last_seq, s.missing)) == Some((5, 0))
    })
    .await;
    assert_eq!(
        node(&agg, "h1", |s| s.report.as_ref().unwrap().cpu_busy),
        Some(4_400),
        "late frames do not replace newer state"
    );
    // A replayed hello of a retired epoch: refused; the stream stays where it is.
    h.send(1, t + 30, hello(Role::Host, 0xA, 0)).await;
    h.send(6, t + 31, report(4_500)).await;
    until("report 6", || node(&agg, "h1", |s| s.last_seq) == Some(6)).await;
    assert_eq!(agg.metrics.refusals("retired_epoch"), 1);
    assert_eq!(
        node(&agg, "h1", |s| s.hello.as_ref().unwrap().epoch),
        Some(0xC)
    );
    agg.shutdown().await;
}

/// The real agent publisher, its buffer directory wiped between two runs (a reinstall): the
/// second run's reports are applied at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_agent_is_heard_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let agg = Aggregator::start(&cfg).await.unwrap();
    let mqtt = MqttConfig {
        host: "127.0.0.1".into(),
        port: cfg.broker.listen.port(),
        backoff_min_ms: 50,
        backoff_max_ms: 500,
        ..MqttConfig::default()
    };
    let buf_dir = tempfile::tempdir().unwrap();
    let buffer = BufferConfig {
        dir: Some(buf_dir.path().join("buffer")),
        max_bytes: 1 << 20,
    };
    let identity = || Identity {
        node: "h2".into(),
        key: agg.master.node_key("h2", Role::Host),
        role: Role::Host,
        agent_version: "test".into(),
        interval_ms: 10_000,
    };
    let (first, _c) = Publisher::start(&mqtt, &buffer, identity()).await.unwrap();
    let t = now_ms();
    for i in 0..20 {
        first.send(t + i, report(1_000)).await.unwrap();
    }
    until("the first install's 20 reports", || {
        node(&agg, "h2", |s| s.last_seq) == Some(21)
    })
    .await;
    first.shutdown().await;
    std::fs::remove_dir_all(buf_dir.path().join("buffer")).unwrap();

    let (second, _c) = Publisher::start(&mqtt, &buffer, identity()).await.unwrap();
    // (a frame buffered before the hello would arrive after it, as a late one that does not
    // replace state: wait for the connection, as a running agent's next report would)
    until("the reinstalled agent connected", || {
        second.stats().connected
    })
    .await;
    second.send(t + 100, report(6_600)).await.unwrap();
    until("the reinstalled agent's first report", || {
        node(&agg, "h2", |s| s.report.as_ref().map(|r| r.cpu_busy)) == Some(Some(6_600))
    })
    .await;
    assert_eq!(node(&agg, "h2", |s| s.liveness), Some(Liveness::Online));
    second.shutdown().await;
    agg.shutdown().await;
}

/// A connection's last will, published by the broker when the connection breaks, takes the
/// node offline; replayed after the node reconnected, it is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_offline_status_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();
    let key = agg.master.node_key("h3", Role::Host);
    let stamp1 = now_ms();
    let will = encode(
        &Envelope::new("h3", stamp1, now_ms(), Body::Status(Status::Offline)),
        &key,
    )
    .unwrap();
    let mut opts = options(&agg, "h3", Role::Host);
    opts.set_last_will(LastWill::new(
        topics::status("h3"),
        will.clone(),
        QoS::AtLeastOnce,
        true,
    ));
    let first = Raw::connect_with(&agg, "h3", Role::Host, opts).await;
    first.status(stamp1, Status::Online).await;
    first.send(1, now_ms(), hello(Role::Host, 5, 0)).await;
    until("online", || {
        node(&agg, "h3", |s| s.liveness) == Some(Liveness::Online)
    })
    .await;
    // the connection breaks: the broker publishes the will, which is fresh
    first._poll.abort();
    drop(first);
    until("offline by the last will", || {
        node(&agg, "h3", |s| s.liveness) == Some(Liveness::Offline)
    })
    .await;

    let second = Raw::connect(&agg, "h3", Role::Host).await;
    let stamp2 = stamp1 + 1_000;
    second.status(stamp2, Status::Online).await;
    second.send(2, now_ms(), hello(Role::Host, 5, 0)).await;
    until("online again", || {
        node(&agg, "h3", |s| s.liveness) == Some(Liveness::Online)
    })
    .await;
    // the old will, replayed by anyone who kept it: refused, the node stays online
    second
        .client
        .publish(topics::status("h3"), QoS::AtLeastOnce, true, will)
        .await
        .unwrap();
    second.send(3, now_ms(), report(1_200)).await;
    until("the report after the replay", || {
        node(&agg, "h3", |s| s.last_seq) == Some(3)
    })
    .await;
    assert_eq!(agg.metrics.refusals("stale_status"), 1);
    assert_eq!(node(&agg, "h3", |s| s.liveness), Some(Liveness::Online));
    // a clean shutdown's Offline of the current connection still counts
    second.status(stamp2, Status::Offline).await;
    until("offline by its own word", || {
        node(&agg, "h3", |s| s.liveness) == Some(Liveness::Offline)
    })
    .await;
    agg.shutdown().await;
}
