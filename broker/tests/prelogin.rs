//! What a client that never logs in can hold on the real embedded broker, over TCP (issue 11,
//! item 4: 2,000 CONNECTs of about 250 KB that never completed took the aggregator from 78 to
//! 535 MB and kept it). Attackers and agents connect from different loopback addresses
//! (127.0.0.x), which the per-address cap tells apart.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{self, ConnAck, Connect, ConnectReturnCode, LastWill, Packet};
use rumqttc::mqttbytes::QoS;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use yunjian_broker::{Broker, BrokerConfig, BrokerMetrics, Refused};
use yunjian_protocol::{encode, topics, Body, Envelope, MasterKey, Status};

struct Running {
    addr: SocketAddr,
    metrics: Arc<BrokerMetrics>,
    master: MasterKey,
    _stop: watch::Sender<bool>,
}

async fn start(config: BrokerConfig) -> Running {
    let master = MasterKey::from_bytes([7; 32]);
    let metrics = Arc::new(BrokerMetrics::default());
    let (stop, stop_rx) = watch::channel(false);
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let broker = Broker::start(
        config,
        Some(master.clone()),
        metrics.clone(),
        Vec::new(),
        stop_rx,
    )
    .await
    .expect("broker starts");
    Running {
        addr: broker.local_addr().unwrap(),
        metrics,
        master,
        _stop: stop,
    }
}

/// A TCP connection to the broker from the loopback address `127.0.0.{from}`.
async fn connect_from(from: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, from], 0)))?;
    socket.connect(to).await
}

/// The CONNECT of an agent with the longest node id the protocol allows, with its login and
/// its signed last will (an `Offline` status frame), as `agent/src/publish/mod.rs` sends it.
fn agent_connect(master: &MasterKey) -> (String, BytesMut) {
    let node = "n".repeat(64);
    assert!(topics::valid_node_id(&node));
    let key = master.node_key(&node, yunjian_protocol::Role::Host);
    let will = encode(
        &Envelope::new(
            node.clone(),
            0,
            1_795_000_000_000,
            Body::Status(Status::Offline),
        ),
        &key,
    )
    .unwrap();
    let mut connect = Connect::new(topics::client_id(&node));
    connect.keep_alive = 60;
    connect.clean_session = false;
    connect.set_login(node.clone(), key.mqtt_password());
    connect.last_will = Some(LastWill::new(
        topics::status(&node),
        will,
        QoS::AtLeastOnce,
        true,
    ));
    let mut buf = BytesMut::new();
    connect.write(&mut buf).unwrap();
    (node, buf)
}

/// Log in as that agent from `127.0.0.{from}`; the connection stays open.
async fn agent_login(b: &Running, from: u8) -> (TcpStream, ConnectReturnCode) {
    let (_, packet) = agent_connect(&b.master);
    let mut s = connect_from(from, b.addr).await.unwrap();
    s.write_all(&packet).await.unwrap();
    let mut buf = BytesMut::with_capacity(64);
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match v4::read(&mut buf, 1024) {
                Ok(Packet::ConnAck(ConnAck { code, .. })) => return code,
                Ok(p) => panic!("expected CONNACK, got {p:?}"),
                Err(_) => assert!(s.read_buf(&mut buf).await.unwrap() > 0, "closed"),
            }
        }
    })
    .await
    .expect("CONNACK in time");
    (s, code)
}

/// Whether the broker closes `s` within `within` (EOF or reset; anything it sent is skipped).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 256];
    tokio::time::timeout(within, async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .is_ok()
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

#[test]
fn an_agents_connect_with_its_signed_will_is_well_under_the_pre_login_cap() {
    let (_, packet) = agent_connect(&MasterKey::from_bytes([7; 32]));
    let cap = BrokerConfig::default().max_connect_bytes;
    assert!(
        packet.len() * 4 <= cap,
        "agent CONNECT {} bytes, cap {cap}",
        packet.len()
    );
}

/// The attack, scaled down: 400 connections each announce a CONNECT of about 250 KB,
/// send 200 KB of it and stall. Each is closed as soon as its fixed header is read, and the
/// broker's memory does not grow by what they sent: the peak resident size (VmHWM, reset
/// before the attack) stays within 32 MB of the start, where holding what they sent would take
/// 80 MB or more. The resident size is what the issue measured; the bound is generous because
/// it also holds the test's own 400 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_connects_are_closed_at_the_header_and_leave_no_memory_behind() {
    const CLIENTS: usize = 400;
    const SENT: usize = 200 * 1024;
    let b = start(BrokerConfig::default()).await;
    // fixed header: CONNECT, remaining length 250,000 (4-byte varint), then the body's bytes
    let mut attack = vec![0x10, 0x90, 0xA1, 0x0F];
    attack.resize(SENT, b'x');
    let attack: Arc<[u8]> = attack.into();

    let rss_before = proc_status_kib("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM to the current RSS
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (addr, attack) = (b.addr, attack.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect_from(10 + (i % 4) as u8, addr).await.unwrap();
            // the broker may close before all of it is sent: that is the point
            let _ = s.write_all(&attack).await;
            // generous for a loaded 2-core machine; that the close is the size check's and
            // not the 10 s connect timeout is shown by the counters below
            closed_within(&mut s, Duration::from_secs(30)).await
        }));
    }
    let mut closed = 0;
    for t in tasks {
        closed += t.await.unwrap() as usize;
    }
    let peak_growth_mb = proc_status_kib("VmHWM:").saturating_sub(rss_before) / 1024;
    let rss_growth_mb = proc_status_kib("VmRSS:").saturating_sub(rss_before) / 1024;

    assert_eq!(closed, CLIENTS, "every oversized CONNECT is closed at once");
    assert_eq!(b.metrics.refused(Refused::ConnectTooLarge), CLIENTS as u64);
    assert_eq!(
        b.metrics.refused(Refused::ConnectTimeout),
        0,
        "closed by the size check, not by the connect timeout"
    );
    assert!(
        peak_growth_mb < 32,
        "peak resident size grew by {peak_growth_mb} MB during the attack"
    );
    assert!(
        rss_growth_mb < 32,
        "resident size still {rss_growth_mb} MB above the start after the attack"
    );
    let (_agent, code) = agent_login(&b, 2).await;
    assert_eq!(code, ConnectReturnCode::Success);
}

/// Connections that stall in their CONNECT: one address gets `max_connections_per_address`
/// of them and no more, they are closed after `connect_timeout`, and meanwhile an agent from
/// another address logs in and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connects_are_capped_per_address_and_closed_at_the_deadline() {
    let b = start(BrokerConfig {
        max_connections_per_address: 20,
        connect_timeout: Duration::from_secs(1),
        ..BrokerConfig::default()
    })
    .await;
    let t0 = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..25 {
        let mut s = connect_from(20, b.addr).await.unwrap();
        // a CONNECT announcing 32 bytes, of which 1 is sent
        let _ = s.write_all(&[0x10, 0x20, 0x00]).await;
        stalled.push(tokio::spawn(async move {
            assert!(closed_within(&mut s, Duration::from_secs(5)).await);
            t0.elapsed()
        }));
    }
    let (mut agent, code) = agent_login(&b, 21).await;
    assert_eq!(
        code,
        ConnectReturnCode::Success,
        "an agent logs in meanwhile"
    );

    let mut closed_after = Vec::new();
    for t in stalled {
        closed_after.push(t.await.unwrap());
    }
    let at_once = closed_after
        .iter()
        .filter(|t| **t < Duration::from_millis(900))
        .count();
    let at_deadline = closed_after
        .iter()
        .filter(|t| **t >= Duration::from_millis(900))
        .count();
    assert_eq!(
        (at_once, at_deadline),
        (5, 20),
        "5 beyond the cap of 20 closed at once, the others at the deadline: {closed_after:?}"
    );
    assert_eq!(b.metrics.refused(Refused::PerAddress), 5);
    assert_eq!(b.metrics.refused(Refused::ConnectTimeout), 20);

    // their slots are free again, and the agent was not touched
    let mut again = connect_from(20, b.addr).await.unwrap();
    assert!(!closed_within(&mut again, Duration::from_millis(300)).await);
    assert!(!closed_within(&mut agent, Duration::from_millis(100)).await);
    assert_eq!(b.metrics.refused(Refused::PerAddress), 5);
}

/// `max_connections` holds for every address, the per-address exempt ones included.
#[tokio::test]
async fn the_total_cap_refuses_beyond_max_connections() {
    let b = start(BrokerConfig {
        max_connections: 10,
        unlimited_addresses: vec![IpAddr::from([127, 0, 0, 30])],
        ..BrokerConfig::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(connect_from(30, b.addr).await.unwrap());
    }
    let mut extra = connect_from(31, b.addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(1)).await);
    assert_eq!(b.metrics.refused(Refused::MaxConnections), 1);
    for s in &mut open {
        assert!(!closed_within(s, Duration::from_millis(20)).await);
    }
}
