//! History backfill, end to end over Mosquitto: with `backfill = "7d"` at 15 minutes, a host
//! and its VM each publish exactly 672 past reports, 15 minutes apart and ending before the
//! start, through the same publisher as the real-time reports that follow: one contiguous run
//! of seqs, nothing dropped, then reports at the accelerated clock from the start on.
//!
//! Needs `/usr/sbin/mosquitto`. Without it the test fails when `CI` is set and is skipped
//! loudly otherwise.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use yunjian_protocol::{decode, topics, Body, Envelope, MasterKey, Role};
use yunjian_simulator::{Scenario, SimConfig};
use yunjian_tests::{eventually, Mosquitto};

const WAIT: Duration = Duration::from_secs(30);
/// Monday 2025-03-03 07:00 Beijing time.
const START: u64 = 1_740_956_400_000;
const MIN: u64 = 60_000;
/// A week at 15 minutes: far more than the publisher's 64 KiB buffer holds, so without the
/// back-pressure the oldest would be dropped.
const PAST: u64 = 7 * 96;

/// Every envelope of every node, verified with the node's key, in arrival order.
async fn observe(port: u16, master: MasterKey) -> Arc<Mutex<Vec<Envelope>>> {
    let mut options = MqttOptions::new("backfill-observer", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe(topics::REPORT_FILTER, QoS::AtLeastOnce)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&seen);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (node, _) = topics::parse(&p.topic).expect("a report topic");
                    let envelope = decode(&p.payload, node, &master.node_key(node, Role::Host))
                        .or_else(|_| decode(&p.payload, node, &master.node_key(node, Role::Guest)))
                        .expect("every node's messages verify with its own key");
                    store.lock().unwrap().push(envelope);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed_rx)
        .await
        .expect("suback in time")
        .unwrap();
    seen
}

/// `node`'s envelopes on the report topic (status has seq 0), each seq once, by seq.
fn messages(seen: &Mutex<Vec<Envelope>>, node: &str) -> Vec<Envelope> {
    let mut out: Vec<Envelope> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.node == node && e.seq > 0)
        .cloned()
        .collect();
    out.sort_by_key(|e| e.seq);
    out.dedup_by_key(|e| e.seq);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_publishes_its_history_then_runs_on_in_real_time() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let master = MasterKey::from_bytes([0x5b; 32]);
    let seen = observe(broker.port, master.clone()).await;

    let mut scenario = Scenario::from_toml_str(
        "accel = 60\ninterval = \"60s\"\nstart = 2025-03-03T07:00:00+08:00\n\
         backfill = \"7d\"\nbackfill_interval = \"15m\"\n\
         [hardware]\nevery_reports = 0\n\
         [[rack]]\nname = \"bf\"\nhosts = 1\nvms_per_host = 1\n",
    )
    .unwrap();
    scenario.seed = 9;
    let sim = yunjian_simulator::start(
        scenario,
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: broker.port,
            master_key: master,
            connect_rate: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(sim.backfill().map(|b| b.count), Some(PAST));

    for node in ["bf-h01", "bf-h01-vm1"] {
        // the history and then at least three real-time reports
        let msgs = eventually(&format!("{node}: history and real time"), WAIT, || {
            let msgs = messages(&seen, node);
            let reports = msgs
                .iter()
                .filter(|e| matches!(e.body, Body::Report(_)))
                .count() as u64;
            async move { (reports >= PAST + 3).then_some(msgs) }
        })
        .await;

        // one contiguous run of seqs from 1: nothing dropped, nothing skipped
        let seqs: Vec<u64> = msgs.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{node}: seqs"
        );
        let reports: Vec<&Envelope> = msgs
            .iter()
            .filter(|e| matches!(e.body, Body::Report(_)))
            .collect();
        let (past, live) = reports.split_at(PAST as usize);
        let past_ts: Vec<u64> = past.iter().map(|e| e.ts_ms).collect();
        let expected: Vec<u64> = (0..PAST)
            .map(|k| START - 7 * 1440 * MIN + k * 15 * MIN)
            .collect();
        assert_eq!(past_ts, expected, "{node}: the history's event times");
        assert_eq!(*past_ts.last().unwrap(), START - 15 * MIN);
        // the history precedes every real-time report; those are at or after the start and
        // a report interval apart (60 s of event time, a wall second, give or take the
        // first report's phase), not at the history's pace
        assert!(past.last().unwrap().seq < live[0].seq);
        assert!(live.iter().all(|e| e.ts_ms >= START), "{node}");
        let gaps: Vec<u64> = live.windows(2).map(|w| w[1].ts_ms - w[0].ts_ms).collect();
        assert!(
            gaps.iter().all(|g| (MIN / 2..10 * MIN).contains(g)),
            "{node}: real-time gaps {gaps:?}"
        );

        let stats = sim.node_stats(node).unwrap();
        assert_eq!(stats.backfilled, PAST, "{node}: {stats:?}");
        assert!(stats.reports > PAST, "{node}: {stats:?}");
        assert_eq!((stats.dropped, stats.send_errors), (0, 0), "{node}");
    }
    sim.stop().await;
}
