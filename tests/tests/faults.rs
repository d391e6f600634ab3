//! The fault suite of issue 11: the real `yunjian-aggregator` binary (embedded broker, SQLite in
//! a temporary data directory) as a child process, under the faults a site meets: SIGKILL (no
//! shutdown path runs), a broker partition and a full disk. The nodes are the agent's own
//! publisher (`yunjian_agent::publish`, with its on-disk buffer: the code the agent binary runs)
//! sending known streams of reports and events, numbered 1, 2, 3… per node; the reclaim
//! scenario runs the agent binary itself against libvirt's test driver.
//!
//! After each fault the aggregator is killed once more and its database is read directly: every
//! node's messages are stored exactly once (the node's `received` equals its last seq equals
//! what it sent, none missing) and nothing is left in the nodes' buffers: 0 reports lost.
//!
//! 1. SIGKILL during ingest, twice: in the middle of the stream, then again just as the agents
//!    come back and replay.
//! 2. SIGKILL during a register import (an HTTP upload of 30,000 rows, then the offline
//!    `yunjian-aggregator import`), while the rows are being written: the register holds all of
//!    them or none, the other unit's rows are intact, and the import done again holds them all.
//! 3. SIGKILL while a reclaim command is in flight (the agent has received it): after the
//!    restart the command has run exactly once (the agent's log, the VM's state in libvirt, one
//!    stored command with its result) and the case reaches `verified` (the host and the VM's
//!    own agent, played by the test, agree).
//! 4. A broker partition: a TCP proxy between the nodes and the broker freezes every connection
//!    and answers no new one for [`partition_length`] (20 s by default; the 10 minutes
//!    with `YJ_FAULT_FULL=1`); the nodes buffer meanwhile and after healing everything arrives
//!    once. The long mode: `YJ_FAULT_FULL=1 cargo test -p yunjian-tests --test faults partition`.
//! 5. A full disk: the data directory on a 16 MiB tmpfs that a filler file fills while the
//!    nodes publish: the aggregator keeps running, counts storage errors and stops acknowledging
//!    (the nodes' buffers grow); once the filler is gone everything is stored, once. Mounting
//!    needs root: without it the scenario prints SKIP, and fails under CI.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::{block_in_place, JoinHandle};
use yunjian_agent::publish::config::{BufferConfig, MqttConfig};
use yunjian_agent::publish::{Identity, Publisher, PublisherStats};
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::identity::Role as Person;
use yunjian_aggregator_core::store::NodeRow;
use yunjian_protocol::{Body, Command, Event, MasterKey, Memory, NodeKey, Report, Role, Severity};
use yunjian_tests::{
    eventually, get_json, http_request, metric, require_tool, seed_users, AggregatorConfigFile,
    AggregatorProcess, TcpProxy,
};

const WAIT: Duration = Duration::from_secs(60);

/// How long the broker stays partitioned: the 10 minutes with `YJ_FAULT_FULL=1`, 20 s
/// otherwise (the default, for CI).
fn partition_length() -> Duration {
    if std::env::var("YJ_FAULT_FULL").is_ok_and(|v| v == "1") {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(20)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The aggregator binary, built once per test binary run.
async fn aggregator_binary() -> PathBuf {
    tokio::task::spawn_blocking(yunjian_tests::aggregator_binary)
        .await
        .unwrap()
}

/// A site in `dir`: the aggregator's config (data directory `dir/aggregator`, free ports),
/// its master key, and an operator's API token.
fn site(dir: &Path) -> (AggregatorConfig, AggregatorConfigFile, MasterKey, String) {
    let mut cfg = AggregatorConfig {
        data_dir: dir.join("aggregator"),
        ..AggregatorConfig::default()
    };
    let file = AggregatorConfigFile::on_free_ports(&mut cfg);
    let ops = seed_users(&cfg, &[("ops-zhang", Person::Ops, None)]).remove(0);
    let master = MasterKey::load_or_create(&cfg.master_key_path()).expect("the master key");
    (cfg, file, master, ops)
}

/// A node's key, as `yunjian-aggregator enroll --role host` writes it: the one place this
/// suite enrols (every node of the suite is a host).
fn enrol(master: &MasterKey, node: &str) -> NodeKey {
    master.node_key(node, Role::Host)
}

// ---------------------------------------------------------------------------------------------
// the nodes

/// One node: the agent's publisher with its buffer on disk.
struct Node {
    id: String,
    publisher: Publisher,
    _commands: mpsc::Receiver<Command>,
}

/// `count` nodes `{prefix}-01`… publishing to the broker at `127.0.0.1:port`, each buffering
/// in `dir/{node}`; a broken connection is noticed within a few seconds (2 s keep-alive).
async fn start_nodes(
    master: &MasterKey,
    prefix: &str,
    count: usize,
    port: u16,
    dir: &Path,
) -> Vec<Node> {
    let mqtt = MqttConfig {
        host: "127.0.0.1".into(),
        port,
        keep_alive_s: 2,
        backoff_min_ms: 50,
        backoff_max_ms: 500,
        ..MqttConfig::default()
    };
    let mut nodes = Vec::new();
    for i in 1..=count {
        let id = format!("{prefix}-{i:02}");
        let buffer = BufferConfig {
            dir: Some(dir.join(&id)),
            max_bytes: 64 << 20,
        };
        let identity = Identity {
            node: id.clone(),
            key: enrol(master, &id),
            role: Role::Host,
            agent_version: "fault-suite".into(),
            interval_ms: 1000,
        };
        let (publisher, commands) = Publisher::start(&mqtt, &buffer, identity)
            .await
            .expect("the publisher starts");
        nodes.push(Node {
            id,
            publisher,
            _commands: commands,
        });
    }
    nodes
}

/// The `i`-th message of a stream: mostly reports; every third an event whose row the database
/// keeps (so that storage grows as the stream goes on).
fn message(i: u64) -> Body {
    if i.is_multiple_of(3) {
        return Body::Event(Event {
            severity: Severity::Warning,
            code: "fault.suite".into(),
            message: format!("第 {i} 条事件：{}", "磁盘".repeat(60)),
        });
    }
    let busy = (i * 37 % 10_000) as u16;
    Body::Report(Report {
        cpu_busy: busy,
        per_core: vec![busy; 8],
        load: [100, 90, 80],
        mem: Memory {
            total_kib: 64 << 20,
            used_kib: 20 << 20,
            available_kib: 44 << 20,
            swap_total_kib: 0,
            swap_used_kib: 0,
        },
        disks: vec![],
        nets: vec![],
        uptime_s: 86_400 + i,
        failed: vec![],
    })
}

/// Each node sends `count` messages, one every `every`, in a task of its own.
fn send_streams(nodes: &[Node], count: u64, every: Duration) -> Vec<JoinHandle<()>> {
    nodes
        .iter()
        .map(|n| {
            let publisher = n.publisher.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                for i in 1..=count {
                    tick.tick().await;
                    publisher
                        .send(now_ms(), message(i))
                        .await
                        .expect("the publisher takes the message");
                }
            })
        })
        .collect()
}

/// The nodes' counters added up.
fn totals(nodes: &[Node]) -> PublisherStats {
    nodes
        .iter()
        .map(|n| n.publisher.stats())
        .fold(PublisherStats::default(), |mut t, s| {
            t.sent += s.sent;
            t.acked += s.acked;
            t.buffered += s.buffered;
            t.dropped_overflow += s.dropped_overflow;
            t.replayed += s.replayed;
            t.reconnects += s.reconnects;
            t
        })
}

/// Wait for the senders to finish and every node's buffer to empty (all acknowledged).
async fn delivered(nodes: &[Node], senders: Vec<JoinHandle<()>>) {
    for s in senders {
        s.await.expect("a sender");
    }
    eventually("every node's buffer empty", WAIT, || async {
        (totals(nodes).buffered == 0).then_some(())
    })
    .await;
}

/// Stop the aggregator with SIGKILL and read what its database holds of each node: every
/// message the node sent is stored exactly once, none missing. Returns the duplicates the
/// aggregator recognised (replays after the faults).
fn assert_stored_exactly_once(
    agg: &mut AggregatorProcess,
    cfg: &AggregatorConfig,
    nodes: &[Node],
) -> u64 {
    agg.kill();
    let rows: HashMap<String, NodeRow> = {
        let mut db = cfg.storage_url().open().expect("open the database");
        db.load_nodes()
            .expect("read the nodes")
            .into_iter()
            .map(|r| (r.node.clone(), r))
            .collect()
    };
    let mut duplicates = 0;
    for n in nodes {
        let s = n.publisher.stats();
        assert_eq!(
            (s.buffered, s.dropped_overflow),
            (0, 0),
            "{}: everything acknowledged, nothing dropped",
            n.id
        );
        let row = rows
            .get(&n.id)
            .unwrap_or_else(|| panic!("{} is not in the database", n.id));
        assert_eq!(
            (row.last_seq, row.received, row.missing),
            (s.sent, s.sent, 0),
            "{}: sent seqs 1..={}; stored (last seq, received, missing) — 0 lost, 0 twice",
            n.id,
            s.sent
        );
        duplicates += row.duplicates;
    }
    duplicates
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL during ingest

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_nothing_and_stores_nothing_twice() {
    let bin = aggregator_binary().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file, master, ops) = site(dir.path());
    let mut agg = block_in_place(|| AggregatorProcess::start(&bin, &file, dir.path()));
    let nodes = start_nodes(&master, "kill", 6, file.mqtt_port, dir.path()).await;
    let senders = send_streams(&nodes, 300, Duration::from_millis(20));

    // the first kill, in the middle of the stream
    eventually("a third of the stream acknowledged", WAIT, || async {
        (totals(&nodes).acked >= 600).then_some(())
    })
    .await;
    block_in_place(|| agg.kill());
    let acked = totals(&nodes).acked;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dead = totals(&nodes);
    assert_eq!(
        dead.acked, acked,
        "nothing is acknowledged by a dead aggregator"
    );
    assert!(dead.buffered > 0, "the nodes keep what they send: {dead:?}");

    // the second, as soon as the restarted aggregator acknowledges again: the nodes are
    // replaying their buffers after a Hello that opened a gap
    block_in_place(|| agg.restart());
    let start = Instant::now();
    while totals(&nodes).acked == acked {
        assert!(start.elapsed() < WAIT, "the nodes did not come back");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    block_in_place(|| {
        agg.kill();
        agg.restart();
    });

    delivered(&nodes, senders).await;
    assert_eq!(
        metric(file.http, &ops, "yunjian_seq_missing").await,
        Some(0.0),
        "no seq missing in the fleet"
    );
    let duplicates = block_in_place(|| assert_stored_exactly_once(&mut agg, &cfg, &nodes));
    let t = totals(&nodes);
    eprintln!(
        "ingest killed twice: {} messages of {} nodes stored once each; {} replayed, {duplicates} recognised as duplicates",
        t.sent,
        nodes.len(),
        t.replayed
    );
}

/// A node speaking MQTT itself, so that the test chooses each envelope's seq: a reconnect's
/// Hello ahead of the replay it announces, as the agent sends them.
struct RawNode {
    node: String,
    key: NodeKey,
    client: rumqttc::AsyncClient,
    acks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    events: JoinHandle<()>,
}

impl RawNode {
    async fn connect(master: &MasterKey, node: &str, port: u16) -> RawNode {
        use rumqttc::{Event as MqttEvent, MqttOptions, Packet};
        let key = enrol(master, node);
        let mut options =
            MqttOptions::new(yunjian_protocol::topics::client_id(node), "127.0.0.1", port);
        options
            .set_credentials(node, key.mqtt_password())
            .set_clean_session(false);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        let acks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = acks.clone();
        let events = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        RawNode {
            node: node.into(),
            key,
            client,
            acks,
            events,
        }
    }

    /// Publish `(seq, body)` each and wait until the broker acknowledged them all.
    async fn send(&self, frames: impl IntoIterator<Item = (u64, Body)>) {
        let before = self.acks.load(std::sync::atomic::Ordering::SeqCst);
        let mut n = 0;
        for (seq, body) in frames {
            let env = yunjian_protocol::Envelope::new(self.node.clone(), seq, now_ms(), body);
            let frame = yunjian_protocol::encode(&env, &self.key).unwrap();
            self.client
                .publish(
                    yunjian_protocol::topics::report(&self.node),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    frame,
                )
                .await
                .unwrap();
            n += 1;
        }
        eventually("the frames acknowledged", WAIT, || async {
            (self.acks.load(std::sync::atomic::Ordering::SeqCst) >= before + n).then_some(())
        })
        .await;
    }
}

impl Drop for RawNode {
    fn drop(&mut self) {
        self.events.abort();
    }
}

fn hello(buffered: u32) -> Body {
    Body::Hello(yunjian_protocol::Hello {
        agent_version: "fault-suite".into(),
        role: Role::Host,
        interval_ms: 1000,
        buffered,
        // one epoch for the node's whole life: its count continues across reconnects
        epoch: 1,
    })
}

/// The window the double kill above can only hit by chance, made certain: a reconnect's Hello
/// (seq 10) is stored while seqs 6–9 are still to be replayed, the aggregator is killed, and
/// the replay comes to the restarted one. The replayed reports fill the gap: stored once,
/// none missing, none taken for a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_crash_fills_the_gap_its_hello_opened() {
    let bin = aggregator_binary().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file, master, ops) = site(dir.path());
    let mut agg = block_in_place(|| AggregatorProcess::start(&bin, &file, dir.path()));
    let node = RawNode::connect(&master, "gap-01", file.mqtt_port).await;
    node.send(std::iter::once((1, hello(0))).chain((2..=5).map(|i| (i, message(i)))))
        .await;
    // the connection broke with 6..=9 unacknowledged; the reconnect's Hello comes first
    node.send([(10, hello(4))]).await;
    assert_eq!(
        metric(file.http, &ops, "yunjian_seq_missing").await,
        Some(4.0),
        "6..=9 are awaited"
    );
    drop(node);
    block_in_place(|| {
        agg.kill();
        agg.restart();
    });
    let node = RawNode::connect(&master, "gap-01", file.mqtt_port).await;
    node.send((6..=9).map(|i| (i, message(i)))).await;
    let missing = metric(file.http, &ops, "yunjian_seq_missing").await;
    let duplicates = metric(file.http, &ops, "yunjian_duplicates_total").await;
    block_in_place(|| agg.kill());
    let mut db = cfg.storage_url().open().expect("open the database");
    let row = db
        .load_nodes()
        .unwrap()
        .into_iter()
        .find(|r| r.node == "gap-01")
        .expect("gap-01 stored");
    assert_eq!(
        (row.last_seq, row.received, row.missing, row.duplicates),
        (10, 10, 0, 0),
        "the replay after the crash filled the gap (fleet: {missing:?} missing, {duplicates:?} duplicates)"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. SIGKILL during a register import

const ROWS: usize = 30_000;

/// A filled-in 附件3 of `rows` VMs (CSV), their UUIDs numbered from `first`.
fn form(first: usize, rows: usize) -> Vec<u8> {
    let mut csv = String::from(
        "\u{feff}序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID\n",
    );
    for i in 0..rows {
        let n = first + i;
        csv.push_str(&format!(
            "{},政务外网区,浪潮,预算一体化,子系统{},APP,王五,wangwu@gov.cn,13700000000,4,8,60,300,openEuler 22.03,否,,,{:08x}-0000-4000-8000-{:012x}\n",
            i + 1,
            n % 50,
            n,
            n
        ));
    }
    csv.into_bytes()
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The number of VMs each unit holds in the database.
fn units_in_database(cfg: &AggregatorConfig) -> HashMap<String, usize> {
    let mut db = cfg.storage_url().open().expect("open the database");
    let register = db.load_register().expect("read the register");
    register
        .vms_by_unit()
        .into_iter()
        .map(|(unit, vms)| (unit.to_string(), vms.len()))
        .collect()
}

/// The SQLite WAL's size (0 before it exists).
fn wal_size(cfg: &AggregatorConfig) -> u64 {
    let mut wal = cfg.database_path().into_os_string();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// Wait until the WAL has grown 1 MiB past `base` (a large transaction is being written), or
/// `done` says the work finished first (then the kill would come too late: a failure).
fn wait_for_the_write(cfg: &AggregatorConfig, base: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while wal_size(cfg) < base + (1 << 20) {
        assert!(
            !done(),
            "the import finished before its rows reached the WAL; make the form larger"
        );
        assert!(start.elapsed() < WAIT, "the import never started writing");
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn upload(addr: SocketAddr, ops: &str, unit: &str, csv: Vec<u8>) -> (u16, Value) {
    http_request(
        addr,
        "POST",
        &format!("/api/register/import?unit={}&format=csv", pct(unit)),
        Some(ops),
        "text/csv",
        &csv,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_import_killed_while_writing_leaves_all_rows_or_none() {
    let bin = aggregator_binary().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file, _master, ops) = site(dir.path());
    let mut agg = block_in_place(|| AggregatorProcess::start(&bin, &file, dir.path()));
    let (status, v) = upload(file.http, &ops, "财政局", form(0, 3)).await;
    assert_eq!(status, 200, "{v}");

    // over HTTP: killed while the rows are being written
    let base = wal_size(&cfg);
    let big = tokio::spawn({
        let ops = ops.clone();
        async move { upload(file.http, &ops, "教育局", form(1_000_000, ROWS)).await }
    });
    block_in_place(|| {
        wait_for_the_write(&cfg, base, || big.is_finished());
        agg.kill();
    });
    // the connection ends without an answer (or is reset: the request task panics)
    let answered = big.await.ok().map(|(status, _)| status);
    assert_ne!(answered, Some(200), "the aggregator died before answering");
    let units = block_in_place(|| units_in_database(&cfg));
    let after_kill = units.get("教育局").copied().unwrap_or(0);
    assert!(
        after_kill == 0 || after_kill == ROWS,
        "an import killed midway left {after_kill} of its {ROWS} rows"
    );
    assert_eq!(units.get("财政局"), Some(&3), "the other unit is intact");

    // the aggregator comes back on that database and the import done again holds every row
    block_in_place(|| agg.restart());
    let (status, v) = upload(file.http, &ops, "教育局", form(1_000_000, ROWS)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["unit_vms"], ROWS, "{v}");
    block_in_place(|| agg.kill());
    let units = block_in_place(|| units_in_database(&cfg));
    assert_eq!(
        (units.get("教育局"), units.get("财政局")),
        (Some(&ROWS), Some(&3))
    );
    eprintln!("HTTP import killed while writing: {after_kill} of {ROWS} rows stored; redone: all");

    // offline (`yunjian-aggregator import`, the aggregator stopped), on a new database
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file, _, _) = site(dir.path());
    let csv = dir.path().join("附件3.csv");
    std::fs::write(&csv, form(2_000_000, ROWS)).unwrap();
    std::fs::write(dir.path().join("aggregator.toml"), &file.toml).unwrap();
    let import = || {
        Process::new(&bin)
            .arg("--config")
            .arg(dir.path().join("aggregator.toml"))
            .args(["import", "--unit", "卫健委", "--by", "ops-zhang"])
            .arg(&csv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the import starts")
    };
    let base = wal_size(&cfg);
    let mut killed: Child = import();
    block_in_place(|| {
        wait_for_the_write(&cfg, base, || matches!(killed.try_wait(), Ok(Some(_))));
        killed.kill().unwrap();
        killed.wait().unwrap();
    });
    let after_kill = block_in_place(|| units_in_database(&cfg))
        .get("卫健委")
        .copied()
        .unwrap_or(0);
    assert!(
        after_kill == 0 || after_kill == ROWS,
        "an offline import killed midway left {after_kill} of its {ROWS} rows"
    );
    let status = block_in_place(|| import().wait().unwrap());
    assert!(status.success(), "the import done again: {status}");
    assert_eq!(
        block_in_place(|| units_in_database(&cfg)).get("卫健委"),
        Some(&ROWS)
    );
    eprintln!(
        "offline import killed while writing: {after_kill} of {ROWS} rows stored; redone: all"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL while a reclaim command is in flight

const HOST: &str = "hv-fault-1";
const VM_A: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

fn domains_xml() -> String {
    format!(
        "<node>
  <cpu><mhz>2000</mhz><model>x86</model><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads><active>8</active></cpu>
  <memory>16777216</memory>
  <domain type='test'>
    <name>vm-a</name>
    <uuid>{VM_A}</uuid>
    <memory unit='KiB'>4194304</memory>
    <currentMemory unit='KiB'>4194304</currentMemory>
    <vcpu placement='static'>4</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>
"
    )
}

/// The agent binary, killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- agent log -----\n{}\n---------------------",
                self.log()
            );
        }
    }
}

async fn step(addr: SocketAddr, case: u64, name: &str, token: &str, body: Value) {
    let (status, v) = http_request(
        addr,
        "POST",
        &format!("/api/reclaim/cases/{case}/{name}"),
        Some(token),
        "application/json",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{name}: {v}");
}

async fn guest(addr: SocketAddr, token: &str) -> Option<Value> {
    let (status, body) = yunjian_tests::http_get(addr, token, &format!("/api/nodes/{HOST}")).await;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["state"]["guests"]
        .as_array()?
        .iter()
        .find(|g| g["uuid"] == VM_A)
        .cloned()
}

/// The VM's own agent (libvirt's test driver runs no guest, so the test plays it): the real
/// publisher enrolled as a guest, reporting VM_A's SMBIOS UUID, running until the host lists
/// the VM stopped, then shut down like a guest that powers off. A stop is verified only when
/// the host and this agent agree. While the aggregator is down, what the host lists is unknown
/// and the agent keeps running (and reconnecting).
fn play_the_vm(addr: SocketAddr, ops: String, port: u16, key: NodeKey) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mqtt = MqttConfig {
            host: "127.0.0.1".into(),
            port,
            backoff_min_ms: 50,
            backoff_max_ms: 500,
            ..MqttConfig::default()
        };
        let identity = Identity {
            node: "vm-a".into(),
            key,
            role: Role::Guest,
            agent_version: "fault-suite".into(),
            interval_ms: 1_000,
        };
        let buffer = BufferConfig {
            dir: None,
            max_bytes: 1 << 20,
        };
        let (vm, _commands) = Publisher::start(&mqtt, &buffer, identity)
            .await
            .expect("the VM's agent starts");
        vm.set_inventory(yunjian_protocol::Inventory {
            hostname: "vm-a".into(),
            role: Role::Guest,
            os: "openEuler 22.03".into(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: 4,
            mem_total_kib: 4 << 20,
            disks: vec![],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: Some(VM_A.into()),
            rack: None,
        })
        .await;
        loop {
            if guest(addr, &ops)
                .await
                .is_some_and(|g| g["running"] == false)
            {
                vm.shutdown().await;
                return;
            }
            let _ = vm.send(now_ms(), message(1)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaim_command_in_flight_when_the_aggregator_is_killed_runs_once() {
    if require_tool(&["virsh"], "libvirt-clients libvirt-dev").is_none() {
        return;
    }
    let bin = aggregator_binary().await;
    let agent_bin = tokio::task::spawn_blocking(|| yunjian_tests::agent_binary(&["libvirt"]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.xml");
    std::fs::write(&domains, domains_xml()).unwrap();
    std::fs::create_dir(dir.path().join("buffer")).unwrap();
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().join("aggregator"),
        ..AggregatorConfig::default()
    };
    cfg.reclaim.tick = Duration::from_millis(200);
    cfg.reclaim.resend_every = Duration::from_secs(2);
    let file = AggregatorConfigFile::on_free_ports(&mut cfg);
    let tokens = seed_users(
        &cfg,
        &[
            ("ops-zhang", Person::Ops, None),
            ("chief-wang", Person::Authority, None),
            ("czj-li", Person::Unit, Some("财政局")),
        ],
    );
    let (ops, chief, unit) = (&tokens[0], &tokens[1], &tokens[2]);
    let master = MasterKey::load_or_create(&cfg.master_key_path()).unwrap();
    enrol(&master, HOST)
        .write_file(&dir.path().join("agent.key"))
        .unwrap();
    let mut agg = block_in_place(|| AggregatorProcess::start(&bin, &file, dir.path()));
    let addr = file.http;
    let csv = format!(
        "\u{feff}序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID\n1,政务外网区,浪潮,预算一体化,,APP,王五,wangwu@gov.cn,13700000000,4,4,60,300,openEuler 22.03,否,,,{VM_A}\n"
    );
    let (status, v) = upload(addr, ops, "财政局", csv.into_bytes()).await;
    assert_eq!(status, 200, "{v}");

    let config = yunjian_tests::write_hypervisor_agent_config(
        dir.path(),
        HOST,
        file.mqtt_port,
        &format!("test://{}", domains.display()),
    );
    let log = dir.path().join("agent.log");
    let agent = Agent {
        child: Process::new(&agent_bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the agent starts"),
        log,
    };
    eventually("vm-a running in the agent's guest list", WAIT, || async {
        guest(addr, ops).await.filter(|g| g["running"] == true)
    })
    .await;
    let vm = play_the_vm(
        addr,
        ops.clone(),
        file.mqtt_port,
        master.node_key("vm-a", Role::Guest),
    );

    // an idle VM's case walked to its execution, due now
    let (status, v) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(ops),
        "application/json",
        json!([{"uuid": VM_A, "kind": {"kind": "idle"}, "evidence": {"cpu_p95_pct": 0.5}}])
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["opened"][0].as_u64().expect("a case is opened");
    step(addr, id, "notify", ops, json!({})).await;
    step(addr, id, "agree", unit, json!({"reason": "同意"})).await;
    step(addr, id, "file", ops, json!({})).await;
    step(addr, id, "approve", chief, json!({})).await;
    step(addr, id, "schedule", ops, json!({"at_ms": now_ms()})).await;

    // killed the moment the agent has the command: its result has nowhere to go
    block_in_place(|| {
        let start = Instant::now();
        while !agent.log().contains("command received") {
            assert!(
                start.elapsed() < WAIT,
                "the command never reached the agent"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        agg.kill();
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    block_in_place(|| agg.restart());

    let v = eventually(&format!("case {id} verified"), WAIT, || async {
        let v = get_json(addr, ops, &format!("/api/reclaim/cases/{id}")).await;
        let state = v["case"]["case"]["state"].clone();
        assert_ne!(state, "execution_failed", "{v}");
        (state == "verified").then_some(v)
    })
    .await;
    vm.abort();
    let commands = v["commands"].as_array().expect("the case's commands");
    assert_eq!(commands.len(), 1, "one command for the case: {v}");
    assert_eq!(
        (commands[0]["status"].as_str(), commands[0]["node"].as_str()),
        (Some("succeeded"), Some(HOST)),
        "{v}"
    );
    assert!(
        commands[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("taken first")),
        "the stored result names the snapshot: {v}"
    );
    let g = guest(addr, ops).await.expect("vm-a in the guest list");
    assert_eq!(g["running"], false, "vm-a is stopped in libvirt");
    let log = agent.log();
    let received = log.matches("command received").count();
    assert_eq!(
        log.matches("command carried out").count(),
        1,
        "the stop ran exactly once though the command arrived {received} times:\n{log}"
    );
    eprintln!("reclaim command: received {received} times by the agent, carried out once");
    block_in_place(|| agg.kill());
}

// ---------------------------------------------------------------------------------------------
// 4. broker partition

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_broker_loses_nothing_the_nodes_buffered() {
    let bin = aggregator_binary().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file, master, ops) = site(dir.path());
    let mut agg = block_in_place(|| AggregatorProcess::start(&bin, &file, dir.path()));
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], file.mqtt_port))).await;
    let nodes = start_nodes(&master, "part", 4, proxy.port, dir.path()).await;
    let every = Duration::from_millis(200);
    let length = partition_length();
    // 3 s before, the partition, 4 s after
    let count = ((length + Duration::from_secs(7)).as_millis() / every.as_millis()) as u64;
    let senders = send_streams(&nodes, count, every);

    eventually("the nodes acknowledged", WAIT, || async {
        (totals(&nodes).acked >= 4 * 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.partition();
    eprintln!("broker partitioned for {length:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = totals(&nodes);
    tokio::time::sleep(length - Duration::from_secs(2)).await;
    let late = totals(&nodes);
    assert_eq!(late.acked, early.acked, "nothing crosses the partition");
    assert!(
        late.buffered >= early.buffered + 4 * 10,
        "the nodes buffer what they cannot deliver: {early:?} → {late:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.heal();

    delivered(&nodes, senders).await;
    assert_eq!(
        metric(file.http, &ops, "yunjian_seq_missing").await,
        Some(0.0)
    );
    let duplicates = block_in_place(|| assert_stored_exactly_once(&mut agg, &cfg, &nodes));
    let t = totals(&nodes);
    eprintln!(
        "partition of {length:?}: {} buffered at its end; {} messages stored once each, {duplicates} duplicates recognised, {} reconnects",
        late.buffered, t.sent, t.reconnects
    );
}

// ---------------------------------------------------------------------------------------------
// 5. disk full

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount `size` at `dir`; `None` (after a loud SKIP) when this is not permitted and `CI` is
    /// not set; under CI a failure.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "cannot mount a tmpfs for the disk-full scenario (run as root): {why}"
                );
                eprintln!("\n***** SKIP: cannot mount a tmpfs ({why}); run as root for the disk-full scenario *****\n");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the filesystem of `path` with a file there until it refuses another byte.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_acknowledgements_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&dir.path().join("aggregator"), "16m") else {
        return;
    };
    let bin = aggregator_binary().await;
    let (cfg, file, master, ops) = site(dir.path());
    let mut agg = block_in_place(|| AggregatorProcess::start(&bin, &file, dir.path()));
    let nodes = start_nodes(&master, "full", 4, file.mqtt_port, dir.path()).await;
    let senders = send_streams(&nodes, 400, Duration::from_millis(40));
    eventually("the nodes acknowledged", WAIT, || async {
        (totals(&nodes).acked >= 4 * 20).then_some(())
    })
    .await;

    let filler = cfg.data_dir.join("filler");
    let filled = block_in_place(|| fill(&filler));
    eprintln!("filled the data directory's last {filled} bytes");
    eventually("storage errors counted", WAIT, || async {
        metric(file.http, &ops, "yunjian_storage_errors_total")
            .await
            .filter(|e| *e > 0.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = totals(&nodes);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = totals(&nodes);
    assert!(agg.running(), "the aggregator keeps running on a full disk");
    assert_eq!(
        late.acked, early.acked,
        "nothing is acknowledged that could not be stored"
    );
    assert!(
        late.buffered > early.buffered,
        "the nodes keep what is not acknowledged: {early:?} → {late:?}"
    );
    assert!(
        metric(file.http, &ops, "yunjian_storage_errors_total")
            .await
            .is_some_and(|e| e > 1.0),
        "the failing writes are retried and counted"
    );

    std::fs::remove_file(&filler).unwrap();
    delivered(&nodes, senders).await;
    assert_eq!(
        metric(file.http, &ops, "yunjian_seq_missing").await,
        Some(0.0)
    );
    let duplicates = block_in_place(|| assert_stored_exactly_once(&mut agg, &cfg, &nodes));
    eprintln!(
        "disk full: {} buffered at most seen; {} messages stored once each; {duplicates} duplicates",
        late.buffered,
        totals(&nodes).sent
    );
}
