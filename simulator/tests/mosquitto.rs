//! End to end against a real Mosquitto: every simulated node signs with its own key, hosts
//! list their VMs by the UUIDs the VMs report, and a killed node leaves its last will.
//!
//! Needs `/usr/sbin/mosquitto`. Without it the test fails when `CI` is set and is skipped
//! loudly otherwise.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use yunjian_protocol::{decode, topics, Body, Envelope, MasterKey, Role, Status};
use yunjian_simulator::{Scenario, SimConfig};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto child process on a free loopback port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// `None` (after a loud notice) when Mosquitto is missing outside CI.
    fn start() -> Option<Self> {
        if !Path::new(MOSQUITTO).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{MOSQUITTO} is missing and CI is set: install mosquitto"
            );
            eprintln!(
                "\n***** SKIP: {MOSQUITTO} not found; install mosquitto to run this test *****\n"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let m = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Subscribe to `filter` and forward every publish as (topic, payload).
async fn subscribe(
    port: u16,
    id: &str,
    filter: &str,
) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 1024);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let filter = filter.to_string();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed = Some(subscribed_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The receiver then sees the channel closed, which fails a test still
                // waiting; after the test the broker's exit ends the observer quietly.
                Err(e) => {
                    if !tx.is_closed() {
                        eprintln!("observer {filter}: {e}");
                    }
                    return;
                }
            }
        }
    });
    timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("suback in time")
        .unwrap();
    rx
}

fn open(master: &MasterKey, topic: &str, payload: &[u8]) -> Envelope {
    let (node, _) = topics::parse(topic).unwrap_or_else(|| panic!("unexpected topic {topic}"));
    decode(payload, node, &master.node_key(node, Role::Host))
        .or_else(|_| decode(payload, node, &master.node_key(node, Role::Guest)))
        .unwrap_or_else(|e| panic!("{topic}: frame does not verify with the node's key: {e}"))
}

/// The retained status of `node`, read by a fresh client.
async fn retained_status(port: u16, master: &MasterKey, node: &str) -> Status {
    static READERS: AtomicUsize = AtomicUsize::new(0);
    let id = format!("e2e-status-{}", READERS.fetch_add(1, Ordering::Relaxed));
    let mut rx = subscribe(port, &id, &topics::status(node)).await;
    let (topic, payload) = timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a retained status")
        .expect("observer connection lost");
    match open(master, &topic, &payload).body {
        Body::Status(s) => s,
        other => panic!("status topic carried {}", other.kind()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racks_report_join_and_leave_last_wills_on_mosquitto() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let master = MasterKey::from_bytes([0x5a; 32]);
    let mut reports = subscribe(broker.port, "e2e-observer", topics::REPORT_FILTER).await;

    let mut scenario = Scenario::uniform(2, 3, 2, 2024);
    scenario.accel = 60.0; // 10 s reports every 167 ms of wall time
    let sim = yunjian_simulator::start(
        scenario,
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: broker.port,
            master_key: master.clone(),
            connect_rate: None,
        },
    )
    .await
    .unwrap();
    let nodes = sim.node_ids();
    let hosts = sim.host_ids();
    assert_eq!(nodes.len(), 2 * 3 * 3);
    assert_eq!(hosts.len(), 6);
    assert!(
        sim.wait_connected(nodes.len(), Duration::from_secs(20))
            .await,
        "connected: {:?}",
        sim.stats()
    );

    // Read until every node has reported and every host has listed its guests.
    let mut report_count: HashMap<String, u32> = HashMap::new();
    let mut vm_uuid: BTreeMap<String, String> = BTreeMap::new();
    let mut host_guests: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let vms: Vec<&String> = nodes.iter().filter(|n| !hosts.contains(n)).collect();
    while nodes
        .iter()
        .any(|n| report_count.get(n).copied().unwrap_or(0) < 2)
        || host_guests.len() < hosts.len()
        || vm_uuid.len() < vms.len()
    {
        let (topic, payload) = timeout(deadline - Instant::now(), reports.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not everything arrived: reports {report_count:?}, guest lists {:?}, VM inventories {:?}",
                    host_guests.keys(),
                    vm_uuid.keys()
                )
            })
            .expect("observer connection lost");
        let env = open(&master, &topic, &payload);
        match env.body {
            Body::Report(r) => {
                assert!(!r.per_core.is_empty() && r.mem.total_kib > 0 && !r.disks.is_empty());
                *report_count.entry(env.node).or_default() += 1;
            }
            Body::Inventory(inv) => {
                assert_eq!(inv.hostname, env.node);
                if let Some(uuid) = inv.smbios_uuid {
                    vm_uuid.insert(env.node, uuid);
                }
            }
            Body::Guests(list) => {
                host_guests.insert(
                    env.node,
                    list.into_iter().map(|g| (g.name, g.uuid)).collect(),
                );
            }
            _ => {}
        }
    }

    // Each host lists exactly its two VMs, by the UUIDs those VMs carry in their inventory.
    for host in &hosts {
        let listed = &host_guests[host];
        let expected: Vec<(String, String)> = vms
            .iter()
            .filter(|vm| vm.starts_with(&format!("{host}-vm")))
            .map(|vm| (vm.to_string(), vm_uuid[*vm].clone()))
            .collect();
        assert_eq!(expected.len(), 2, "{host}");
        assert_eq!(
            listed.iter().collect::<BTreeSet<_>>(),
            expected.iter().collect::<BTreeSet<_>>(),
            "{host}"
        );
    }
    let distinct: BTreeSet<&String> = vm_uuid.values().collect();
    assert_eq!(distinct.len(), vms.len(), "VM UUIDs are unique");

    // A killed VM: its last will is the retained Offline, and its host lists it as stopped,
    // while a live node's retained status stays Online.
    let victim = "rack1-h02-vm1";
    assert!(sim.kill_node(victim).await);
    assert!(!sim.kill_node(victim).await, "a node dies once");
    assert!(!sim.kill_node("no-such-node").await);
    assert_eq!(
        retained_status(broker.port, &master, victim).await,
        Status::Offline
    );
    assert_eq!(
        retained_status(broker.port, &master, "rack1-h01").await,
        Status::Online
    );
    let stopped_seen = timeout(Duration::from_secs(20), async {
        loop {
            let (topic, payload) = reports.recv().await.expect("observer connection lost");
            let env = open(&master, &topic, &payload);
            if let (true, Body::Guests(list)) = (env.node == "rack1-h02", env.body) {
                let vm = list.iter().find(|g| g.name == victim).unwrap();
                if !vm.running {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        stopped_seen.is_ok(),
        "rack1-h02 never listed {victim} as stopped"
    );

    let stats = sim.stats();
    assert_eq!(stats.nodes, nodes.len());
    assert_eq!(stats.running, nodes.len() - 1);
    assert!(stats.reports >= 2 * nodes.len() as u64, "{stats:?}");
    assert_eq!(stats.send_errors, 0);
    assert_eq!(stats.start_failures, 0);
    assert!(!sim.node_stats(victim).unwrap().running);

    // A clean stop leaves every node's retained status Offline.
    sim.stop().await;
    assert_eq!(
        retained_status(broker.port, &master, "rack1-h01").await,
        Status::Offline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_spreads_the_connections() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let sim = yunjian_simulator::start(
        Scenario::uniform(1, 12, 0, 3),
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: broker.port,
            master_key: MasterKey::from_bytes([1; 32]),
            connect_rate: Some(20),
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    // Node i may not connect before i / 20 s: at most 5 within the first 0.2 s.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early = sim.stats().connected;
    assert!(
        early <= 5 || started.elapsed() > Duration::from_millis(250),
        "{early} connected after 0.2 s"
    );
    assert_eq!(sim.stats().running, 12, "waiting nodes count as running");
    assert!(sim.wait_connected(12, Duration::from_secs(20)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "12 nodes at 20/s take at least 0.55 s"
    );
    sim.stop().await;
}
