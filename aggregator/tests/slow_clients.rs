//! Slow HTTP clients against the real aggregator over TCP (issue 11, item 7: 1,000 requests
//! that never finished their headers stayed open past 62 s, and 1,100 of them blocked MQTT
//! logins and `/healthz`). The timeouts are set to about a second so the tests stay short.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_protocol::topics;
use yunjian_tests::http_get;

fn config(dir: &std::path::Path) -> AggregatorConfig {
    let mut c = AggregatorConfig {
        data_dir: dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    c.broker.listen = "127.0.0.1:0".parse().unwrap();
    c.http.header_timeout = Duration::from_secs(1);
    c.http.request_timeout = Duration::from_secs(1);
    c
}

/// A connection that sends `bytes` and then nothing more.
async fn stall(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Everything the server sends until it closes `s`, or `None` if it is still open after
/// `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

async fn agent_logs_in(agg: &Aggregator, node: &str) {
    let addr = agg.mqtt_addr.unwrap();
    let mut o = MqttOptions::new(topics::client_id(node), addr.ip().to_string(), addr.port());
    o.set_credentials(
        node,
        agg.master
            .node_key(node, yunjian_protocol::Role::Host)
            .mqtt_password(),
    );
    let (_client, mut ev) = AsyncClient::new(o, 10);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return,
            Ok(Ok(_)) => {}
            other => panic!("agent {node} could not log in: {other:?}"),
        }
    }
}

/// 300 connections send part of a request line and stall. Meanwhile `/healthz` answers on a
/// fresh connection and an agent logs in over MQTT; then the server closes the 300 at the
/// header timeout and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_heads_block_nothing_and_are_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();
    let t0 = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = stall(agg.http_addr, b"GET /healthz HT").await;
        stalled.push(tokio::spawn(async move {
            let closed = read_until_closed(&mut s, Duration::from_secs(10)).await;
            (closed, t0.elapsed())
        }));
    }

    let (status, body) = http_get(agg.http_addr, "", "/healthz").await;
    assert_eq!(status, 200, "{body}");
    agent_logs_in(&agg, "n-1").await;
    // both were served while the stalled connections were still open
    assert_eq!(agg.metrics.http_header_timeouts.load(Relaxed), 0);
    assert!(agg.metrics.http_connections.load(Relaxed) >= 300);

    for t in stalled {
        let (closed, after) = t.await.unwrap();
        assert!(
            closed.is_some(),
            "a stalled connection is still open after 10 s"
        );
        assert!(
            after >= Duration::from_millis(900),
            "closed after {after:?}"
        );
    }
    assert_eq!(agg.metrics.http_header_timeouts.load(Relaxed), 300);
    let (status, _) = http_get(agg.http_addr, "", "/healthz").await;
    assert_eq!(status, 200);
    agg.shutdown().await;
}

/// A request whose body never finishes is answered 408 at the request timeout and its
/// connection closed.
#[tokio::test]
async fn a_body_that_never_finishes_is_answered_408_at_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&config(dir.path())).await.unwrap();
    let mut s = stall(
        agg.http_addr,
        b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 200\r\n\r\n{\"user\":",
    )
    .await;
    let answer = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("closed by the server");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert_eq!(agg.metrics.http_request_timeouts.load(Relaxed), 1);
    agg.shutdown().await;
}

/// Beyond `http.max_connections`, a new connection is closed at once, unanswered; the slots
/// come back when the stalled connections are closed.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http.max_connections = 20;
    let agg = Aggregator::start(&cfg).await.unwrap();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(stall(agg.http_addr, b"GET / HTTP/1.1\r\n").await);
    }
    let mut extra = stall(agg.http_addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut extra, Duration::from_secs(5))
        .await
        .expect("closed, unanswered (an accepted one would be answered 200)");
    assert!(answer.is_empty(), "{answer}");
    assert_eq!(agg.metrics.http_refused.load(Relaxed), 1);

    for s in &mut stalled {
        assert!(read_until_closed(s, Duration::from_secs(5)).await.is_some());
    }
    // the server counts a connection out just after closing it
    for _ in 0..100 {
        if agg.metrics.http_connections.load(Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = http_get(agg.http_addr, "", "/healthz").await;
    assert_eq!(status, 200);
    agg.shutdown().await;
}
