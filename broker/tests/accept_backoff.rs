//! Out of file descriptors, on the real embedded broker: its accept loop backs off (10 ms
//! doubling to 1 s) rather than retrying every 50 ms with a log line each (issue 11, item 7:
//! 978 unthrottled "accept failed" lines), and serves again once descriptors are free.
//!
//! A file of its own: the open-file limit it lowers is the whole test process's.

use bytes::BytesMut;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use rumqttc::mqttbytes::v4::{self, ConnAck, Connect, ConnectReturnCode, Packet};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use yunjian_broker::{Broker, BrokerConfig, BrokerMetrics};
use yunjian_protocol::{topics, MasterKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_failures_back_off_and_the_broker_serves_again_after() {
    let master = MasterKey::from_bytes([9; 32]);
    let metrics = Arc::new(BrokerMetrics::default());
    let (_stop, stop_rx) = watch::channel(false);
    let broker = Broker::start(
        BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..BrokerConfig::default()
        },
        Some(master.clone()),
        metrics.clone(),
        Vec::new(),
        stop_rx,
    )
    .await
    .unwrap();
    let addr = broker.local_addr().unwrap();

    // The clients' sockets exist before the limit drops; connecting them takes no descriptor,
    // accepting them takes one each, which the broker cannot get.
    let sockets: Vec<TcpSocket> = (0..4).map(|_| TcpSocket::new_v4().unwrap()).collect();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free, hard).unwrap();
    let mut streams = Vec::new();
    for s in sockets {
        streams.push(s.connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failures = metrics.accept_errors.load(Relaxed);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();

    // 10 + 20 + 40 + ... ms: 8 tries in 1.5 s; a fixed 50 ms pause would make 30
    assert!(
        (4..=12).contains(&failures),
        "{failures} failed accepts in 1.5 s"
    );
    assert_eq!(metrics.connects_total.load(Relaxed), 0);

    // descriptors free again: the waiting connections are served within the longest pause
    let node = "n-1";
    let mut connect = Connect::new(topics::client_id(node));
    connect.set_login(
        node,
        master
            .node_key(node, yunjian_protocol::Role::Host)
            .mqtt_password(),
    );
    let mut packet = BytesMut::new();
    connect.write(&mut packet).unwrap();
    let s = &mut streams[0];
    s.write_all(&packet).await.unwrap();
    let mut buf = BytesMut::new();
    let code = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(Packet::ConnAck(ConnAck { code, .. })) = v4::read(&mut buf, 1024) {
                return code;
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0, "closed");
        }
    })
    .await
    .expect("CONNACK once descriptors are free");
    assert_eq!(code, ConnectReturnCode::Success);
    for _ in 0..100 {
        if metrics.connects_total.load(Relaxed) == 4 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("all 4 waiting connections accepted");
}
