//! Ingest throughput, printed as figures (not a timed test).
//!
//! `cargo bench -p yunjian-aggregator --bench ingest`
//!
//! 1. `process`: decode + verify + apply to fleet state, no network (10,000 nodes).
//! 2. Through the embedded broker over loopback TCP, in the same run, four consumers:
//!    the broker's own publish → internal subscriber rate (counts only), publish → an MQTT
//!    subscriber over TCP, ingest without storage, and ingest with SQLite (PUBACK after
//!    commit). The ratios are the figures for `docs/PERFORMANCE.md`.
//!
//! Env: `YJ_BENCH_REPORTS` (default 400000), `YJ_BENCH_CONNS` (default 20).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{self, Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use yunjian_aggregator::ingest::{self, Ingester};
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::store::{Schema, StorageError, WriteBatch};
use yunjian_broker::{Broker, BrokerConfig, Inbound};
use yunjian_protocol::*;
use yunjian_store_postgres::PostgresStorage;
use yunjian_store_sqlite::SqliteStorage;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(i: u64) -> Body {
    let disk = |m: &str| DiskSample {
        mount: m.into(),
        total_kib: 100_000_000,
        used_kib: 40_000_000 + i % 1000,
        read_bps: 1_000_000,
        write_bps: 2_000_000,
    };
    let nic = |n: &str| NetSample {
        name: n.into(),
        rx_bytes: 1_000_000_000 + i * 1000,
        tx_bytes: 500_000_000 + i * 700,
        rx_bps: 10_000_000,
        tx_bps: 4_000_000,
    };
    Body::Report(Report {
        cpu_busy: (i % 10_000) as u16,
        per_core: vec![4000; 8],
        load: [100, 90, 80],
        mem: Memory {
            total_kib: 263_000_000,
            used_kib: 180_000_000,
            available_kib: 83_000_000,
            swap_total_kib: 8_000_000,
            swap_used_kib: 1000,
        },
        disks: vec![disk("/"), disk("/var"), disk("/data"), disk("/backup")],
        nets: vec![nic("eth0"), nic("eth1")],
        uptime_s: 1000 + i,
        failed: vec![],
    })
}

/// Frames for `nodes` nodes, `per_node` each, interleaved as a fleet would send them.
fn frames(master: &MasterKey, nodes: usize, per_node: usize) -> Vec<(String, Bytes)> {
    let keys: Vec<(String, NodeKey)> = (0..nodes)
        .map(|n| {
            let id = format!("bench-h{n:05}");
            let k = master.node_key(&id, Role::Host);
            (id, k)
        })
        .collect();
    let mut out = Vec::with_capacity(nodes * per_node);
    for seq in 1..=per_node as u64 {
        for (id, k) in &keys {
            let env = Envelope::new(
                id.clone(),
                seq,
                1_795_000_000_000 + seq * 10_000,
                report(seq),
            );
            out.push((topics::report(id), Bytes::from(encode(&env, k).unwrap())));
        }
    }
    out
}

fn bench_process(master: &MasterKey, total: usize) -> f64 {
    let nodes = 10_000;
    let fr = frames(master, nodes, total.div_ceil(nodes));
    let fleet = Fleet::shared();
    let mut ing = Ingester::new(fleet.clone(), Arc::new(Metrics::default()), master.clone());
    let start = Instant::now();
    let mut buf = Vec::with_capacity(ingest::BATCH);
    for chunk in fr.chunks(ingest::BATCH) {
        for (t, p) in chunk {
            buf.push(Inbound {
                topic: t.clone(),
                payload: p.clone(),
                received: Instant::now(),
                ack: None,
            });
        }
        let pending = ing.process(&mut buf);
        std::hint::black_box(pending);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(fleet.read().unwrap().len(), nodes);
    fr.len() as f64 / secs
}

/// One publisher connection: log in as each of its nodes in turn is not needed; an operator
/// connection may publish on any node's topic (the MAC still proves the sender).
async fn publisher(
    addr: std::net::SocketAddr,
    id: usize,
    frames: Vec<(String, Bytes)>,
    window: usize,
) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = BytesMut::new();
    let mut c = Connect::new(format!("bench-pub-{id}"));
    c.keep_alive = 60;
    c.write(&mut w).unwrap();
    s.write_all(&w).await.unwrap();
    w.clear();
    let mut r = BytesMut::with_capacity(64 * 1024);
    let read = |r: &mut BytesMut| v4::read(r, 1 << 20);
    loop {
        match read(&mut r) {
            Ok(Packet::ConnAck(_)) => break,
            Ok(p) => panic!("unexpected {p:?}"),
            Err(_) => {
                s.read_buf(&mut r).await.unwrap();
            }
        }
    }
    let total = frames.len();
    let mut sent = 0;
    let mut acked = 0;
    let mut pkid: u16 = 0;
    while acked < total {
        while sent < total && sent - acked < window {
            pkid = pkid.wrapping_add(1).max(1);
            let (t, p) = &frames[sent];
            let mut publish = Publish::new(t.as_str(), QoS::AtLeastOnce, p.clone());
            publish.pkid = pkid;
            publish.write(&mut w).unwrap();
            sent += 1;
        }
        if !w.is_empty() {
            s.write_all(&w).await.unwrap();
            w.clear();
        }
        s.read_buf(&mut r).await.unwrap();
        while let Ok(p) = read(&mut r) {
            if let Packet::PubAck(_) = p {
                acked += 1;
            }
        }
    }
}

/// A storage that keeps nothing: isolates ingest's own cost from SQLite's.
#[derive(Debug)]
struct NoStorage;

impl Schema for NoStorage {
    fn backend(&self) -> &'static str {
        "none"
    }
    fn migrate(&mut self) -> Result<u32, StorageError> {
        Ok(0)
    }
    fn write(&mut self, _: &WriteBatch) -> Result<(), StorageError> {
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Consumer {
    /// The internal subscriber only counts (and acknowledges at once).
    Raw,
    /// An MQTT client subscribed over TCP with QoS 1 receives everything.
    MqttSubscriber,
    /// Ingest with a storage that keeps nothing.
    IngestNoStorage,
    /// Ingest with SQLite; PUBACK after commit.
    IngestSqlite,
    /// Ingest with PostgreSQL (a server the bench starts, a new database per run); PUBACK
    /// after commit.
    IngestPostgres,
}

async fn subscriber(addr: std::net::SocketAddr, expect: usize) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = BytesMut::new();
    let mut c = Connect::new("bench-sub");
    c.keep_alive = 60;
    c.write(&mut w).unwrap();
    let mut sub = v4::Subscribe::new(topics::REPORT_FILTER, QoS::AtLeastOnce);
    sub.pkid = 1;
    sub.write(&mut w).unwrap();
    s.write_all(&w).await.unwrap();
    w.clear();
    let mut r = BytesMut::with_capacity(256 * 1024);
    let mut got = 0;
    while got < expect {
        if r.capacity() - r.len() < 16 * 1024 {
            r.reserve(64 * 1024);
        }
        if s.read_buf(&mut r).await.unwrap() == 0 {
            break;
        }
        while let Ok(p) = v4::read(&mut r, 1 << 20) {
            if let Packet::Publish(p) = p {
                got += 1;
                v4::PubAck::new(p.pkid).write(&mut w).unwrap();
            }
        }
        if !w.is_empty() {
            s.write_all(&w).await.unwrap();
            w.clear();
        }
    }
}

async fn through_broker(
    master: &MasterKey,
    total: usize,
    conns: usize,
    consumer_kind: Consumer,
    postgres_url: Option<String>,
) -> f64 {
    let metrics = Arc::new(Metrics::default());
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(16 * 1024);
    let (_stop_tx, stop) = watch::channel(false);
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_anonymous: true,
        // the MQTT subscriber must see everything: queue all, a wide in-flight window
        session_queue: total + 1,
        max_inflight: 1024,
        ..BrokerConfig::default()
    };
    let broker = Broker::start(
        cfg,
        Some(master.clone()),
        metrics.broker.clone(),
        vec![(topics::REPORT_FILTER.to_string(), in_tx)],
        stop,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::shared();
    let with_ingest = matches!(
        consumer_kind,
        Consumer::IngestNoStorage | Consumer::IngestSqlite | Consumer::IngestPostgres
    );
    let consumer = if with_ingest {
        let sqlite = dir.path().join("bench.db");
        let (store_tx, store_rx) = mpsc::channel(64);
        let m = metrics.clone();
        // opened on the storage thread: the PostgreSQL client must not run on the runtime
        std::thread::spawn(move || {
            let mut st: Box<dyn Schema + Send> = match consumer_kind {
                Consumer::IngestSqlite => Box::new(SqliteStorage::open(&sqlite).unwrap()),
                Consumer::IngestPostgres => Box::new(
                    PostgresStorage::connect(&postgres_url.expect("a PostgreSQL database"))
                        .unwrap(),
                ),
                _ => Box::new(NoStorage),
            };
            st.migrate().unwrap();
            ingest::storage_loop(st.as_mut(), store_rx, m)
        });
        let (changes, _) = watch::channel(0);
        let ing = Ingester::new(fleet.clone(), metrics.clone(), master.clone());
        tokio::spawn(ingest::run(ing, in_rx, store_tx, changes))
    } else {
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(ingest::BATCH);
            while in_rx.recv_many(&mut buf, ingest::BATCH).await > 0 {
                buf.clear(); // dropping the ack tokens sends the PUBACKs
            }
        })
    };
    let nodes = 2_000.max(conns);
    let all = frames(master, nodes, total.div_ceil(nodes));
    // each connection carries whole nodes, so per-node order holds
    let mut per_conn: Vec<Vec<(String, Bytes)>> = vec![Vec::new(); conns];
    for (i, f) in all.into_iter().enumerate() {
        per_conn[(i % nodes) % conns].push(f);
    }
    let n: usize = per_conn.iter().map(|v| v.len()).sum();
    let addr = broker.local_addr().expect("the plain listener");
    let sub = if consumer_kind == Consumer::MqttSubscriber {
        let h = tokio::spawn(subscriber(addr, n));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await; // subscription in place
        Some(h)
    } else {
        None
    };
    let start = Instant::now();
    let hs: Vec<_> = per_conn
        .into_iter()
        .enumerate()
        .map(|(i, f)| tokio::spawn(publisher(addr, i, f, 256)))
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    if let Some(h) = sub {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    drop(broker);
    consumer.abort();
    if with_ingest {
        assert_eq!(
            metrics.applied.load(std::sync::atomic::Ordering::Relaxed) as usize,
            n,
            "every report applied"
        );
    }
    n as f64 / secs
}

fn main() {
    let total = env_usize("YJ_BENCH_REPORTS", 400_000);
    let conns = env_usize("YJ_BENCH_CONNS", 20);
    let master = MasterKey::from_bytes([7; 32]);
    let sample = encode(
        &Envelope::new("bench-h00001", 1, 1, report(1)),
        &master.node_key("bench-h00001", Role::Host),
    )
    .unwrap();
    println!(
        "report frame: {} bytes (4 disks, 2 NICs, 8 cores)",
        sample.len()
    );

    let p = bench_process(&master, total);
    println!("process (decode+verify+apply, no network): {p:.0} reports/s");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // alternate the consumers, 3 runs each, and report medians
    let kinds = [
        (
            Consumer::Raw,
            "embedded broker raw publish -> internal subscriber (counts only)",
        ),
        (
            Consumer::MqttSubscriber,
            "embedded broker raw publish -> MQTT subscriber over TCP",
        ),
        (
            Consumer::IngestNoStorage,
            "embedded broker -> ingest (decode, verify, apply), no storage",
        ),
        (
            Consumer::IngestSqlite,
            "embedded broker -> ingest -> SQLite commit -> PUBACK",
        ),
        (
            Consumer::IngestPostgres,
            "embedded broker -> ingest -> PostgreSQL commit -> PUBACK",
        ),
    ];
    // a private server, as the tests start one (initdb + postgres on a free port)
    let pg = yunjian_tests::postgres::TempPostgres::start().expect("PostgreSQL for the bench");
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for run in 0..3 {
        for (i, (k, _)) in kinds.iter().enumerate() {
            let url = (*k == Consumer::IngestPostgres)
                .then(|| pg.create_database(&format!("bench{run}")));
            runs[i].push(rt.block_on(through_broker(&master, total, conns, *k, url)));
        }
    }
    let mut med = Vec::new();
    for (i, (_, label)) in kinds.iter().enumerate() {
        let mut v = runs[i].clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        med.push(v[v.len() / 2]);
        println!(
            "{label}: {:.0} msg/s (median of 3; runs {:.0?})",
            med[i], runs[i]
        );
    }
    println!("ratio ingest+SQLite / raw internal: {:.2}", med[3] / med[0]);
    println!(
        "ratio ingest+SQLite / raw MQTT subscriber: {:.2}",
        med[3] / med[1]
    );
    println!(
        "ratio ingest (no storage) / raw MQTT subscriber: {:.2}",
        med[2] / med[1]
    );
    println!(
        "ratio ingest+PostgreSQL / ingest+SQLite: {:.2}",
        med[4] / med[3]
    );
    println!(
        "ratio ingest+PostgreSQL / ingest (no storage): {:.2}",
        med[4] / med[2]
    );
}
