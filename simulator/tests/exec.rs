//! A simulated host carries out VM commands like the real agent, end to end over Mosquitto: an
//! operator client signs each command with the host's key (derived from the master key the
//! simulation shares with the aggregator), publishes it on the host's command topic and reads
//! results, guest lists and reports from the report topics.
//!
//! Stop (snapshot first) → the host's next guest list shows the VM stopped and the VM's own
//! node goes silent; a replay gets the same result and runs nothing; rollback → the VM runs and
//! reports again; downsize → the list shows the new size; release refused while running, then
//! the VM is gone from the list.
//!
//! Needs `/usr/sbin/mosquitto`. Without it the test fails when `CI` is set and is skipped
//! loudly otherwise.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use yunjian_protocol::{
    decode, encode, topics, Action, Body, Command, CommandResult, Envelope, GuestView, MasterKey,
    Role, VmRef, VmSize,
};
use yunjian_simulator::fleet::NodeKind;
use yunjian_simulator::{Scenario, SimConfig};
use yunjian_tests::{eventually, Mosquitto};

const HOST: &str = "rack1-h01";
const VM1: &str = "rack1-h01-vm1";
const VM2: &str = "rack1-h01-vm2";
const WAIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Reads every node's reports (verified with its own key) and sends commands to the host.
struct Operator {
    client: AsyncClient,
    master: MasterKey,
    seen: Arc<Mutex<Vec<Envelope>>>,
}

impl Operator {
    async fn start(port: u16, master: MasterKey) -> Operator {
        let mut options = MqttOptions::new("exec-operator", "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client
            .subscribe(topics::REPORT_FILTER, QoS::AtLeastOnce)
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (store, keys) = (Arc::clone(&seen), master.clone());
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
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
                        let envelope = decode(&p.payload, node, &keys.node_key(node, Role::Host))
                            .or_else(|_| {
                                decode(&p.payload, node, &keys.node_key(node, Role::Guest))
                            })
                            .expect("every node's reports verify with its own key");
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
        Operator {
            client,
            master,
            seen,
        }
    }

    /// A command for the host, signed with the host's key.
    fn frame(&self, id: u8, action: Action) -> Vec<u8> {
        let command = Command {
            id: [id; 16],
            expires_ms: now_ms() + 600_000,
            action,
        };
        encode(
            &Envelope::new(HOST, 0, now_ms(), Body::Command(command)),
            &self.master.node_key(HOST, Role::Host),
        )
        .unwrap()
    }

    async fn publish(&self, frame: Vec<u8>) {
        self.client
            .publish(topics::command(HOST), QoS::AtLeastOnce, false, frame)
            .await
            .unwrap();
    }

    /// The host's results of command `id`, with their seqs.
    fn results(&self, id: u8) -> Vec<(u64, CommandResult)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.node == HOST)
            .filter_map(|e| match &e.body {
                Body::CommandResult(r) if r.id == [id; 16] => Some((e.seq, r.clone())),
                _ => None,
            })
            .collect()
    }

    /// Wait until `count` results of command `id` arrived; return the last with its seq.
    async fn result(&self, id: u8, count: usize) -> (u64, CommandResult) {
        eventually(&format!("result #{count} of command {id}"), WAIT, || {
            let results = self.results(id);
            async move { (results.len() >= count).then(|| results[count - 1].clone()) }
        })
        .await
    }

    /// Send command `id`, wait for its result and for the guest list the host sends right
    /// after it (the next seq: nothing comes in between).
    async fn run(&self, id: u8, action: Action) -> (CommandResult, Vec<GuestView>) {
        self.publish(self.frame(id, action)).await;
        let (seq, result) = self.result(id, 1).await;
        let list = eventually(
            &format!("the guest list right after command {id}"),
            WAIT,
            || {
                let list = self.host_message(seq + 1);
                async move { list }
            },
        )
        .await
        .unwrap_or_else(|| panic!("the host's message after command {id} is not a guest list"));
        (result, list)
    }

    /// The host's message with `seq`: `Some(Some(list))` for a guest list.
    fn host_message(&self, seq: u64) -> Option<Option<Vec<GuestView>>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.node == HOST && e.seq == seq)
            .map(|e| match &e.body {
                Body::Guests(list) => Some(list.clone()),
                _ => None,
            })
    }

    /// Reports received from `node` so far.
    fn reports(&self, node: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.node == node && matches!(e.body, Body::Report(_)))
            .count()
    }

    /// The host's latest guest list.
    fn latest_guests(&self) -> Option<Vec<GuestView>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.node == HOST)
            .filter_map(|e| match &e.body {
                Body::Guests(list) => Some((e.seq, list.clone())),
                _ => None,
            })
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, list)| list)
    }

    /// `node` sends more reports within `window` (after letting one in flight arrive).
    async fn reporting(&self, node: &str, window: Duration) -> bool {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = self.reports(node);
        tokio::time::sleep(window).await;
        self.reports(node) > before
    }
}

fn entry<'a>(list: &'a [GuestView], name: &str) -> Option<&'a GuestView> {
    list.iter().find(|g| g.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_host_stops_rolls_back_downsizes_and_releases_its_vms() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let master = MasterKey::from_bytes([0x3c; 32]);
    let operator = Operator::start(broker.port, master.clone()).await;

    let mut scenario = Scenario::uniform(1, 1, 2, 77);
    scenario.accel = 60.0; // 10 s reports every 167 ms of wall time
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
    assert!(sim.wait_connected(3, WAIT).await, "{:?}", sim.stats());
    let vm_ref = |name: &str| {
        let idx = sim.fleet().index_of(name).unwrap();
        let NodeKind::Guest { uuid, .. } = &sim.fleet().nodes()[idx].kind else {
            panic!("{name} is not a VM")
        };
        VmRef {
            uuid: uuid.clone(),
            name: name.into(),
        }
    };
    let (vm1, vm2) = (vm_ref(VM1), vm_ref(VM2));

    let first = eventually("the host's first guest list", WAIT, || {
        let list = operator.latest_guests();
        async move { list }
    })
    .await;
    assert!(
        first.iter().all(|g| g.running) && first.len() == 2,
        "{first:?}"
    );
    let size = (
        entry(&first, VM1).unwrap().vcpus,
        entry(&first, VM1).unwrap().mem_kib,
    );
    assert_eq!(size, (4, 8 * GIB));
    assert!(operator.reporting(VM1, Duration::from_secs(1)).await);

    // Stop: snapshot first, the VM listed stopped at once, its node silent.
    let stop = operator.frame(1, Action::Stop(vm1.clone(), "yunjian-reclaim-1".into()));
    operator.publish(stop.clone()).await;
    let (seq, stopped) = operator.result(1, 1).await;
    assert!(
        stopped.ok
            && stopped.message.contains(VM1)
            && stopped.message.contains("stopped")
            && stopped
                .message
                .contains("snapshot \"yunjian-reclaim-1\" taken first"),
        "{stopped:?}"
    );
    let list = eventually("the guest list right after the stop", WAIT, || {
        let list = operator.host_message(seq + 1);
        async move { list }
    })
    .await
    .expect("a guest list follows the result");
    assert!(!entry(&list, VM1).unwrap().running, "{list:?}");
    assert!(entry(&list, VM2).unwrap().running, "{list:?}");
    assert!(
        !operator.reporting(VM1, Duration::from_secs(2)).await,
        "a stopped VM reports nothing"
    );
    assert!(operator.reporting(VM2, Duration::from_millis(500)).await);
    assert!(operator.reporting(HOST, Duration::from_millis(500)).await);

    // The same command again: the same result, nothing run.
    operator.publish(stop.clone()).await;
    let (_, replayed) = operator.result(1, 2).await;
    assert_eq!(replayed, stopped);

    // Rollback: running again at its size, reporting again.
    let (back, list) = operator
        .run(2, Action::Rollback(vm1.clone(), "yunjian-reclaim-1".into()))
        .await;
    assert!(back.ok && back.message.contains("running"), "{back:?}");
    let vm1_listed = entry(&list, VM1).unwrap();
    assert!(vm1_listed.running, "{list:?}");
    assert_eq!((vm1_listed.vcpus, vm1_listed.mem_kib), size);
    assert!(
        operator.reporting(VM1, Duration::from_secs(2)).await,
        "a VM rolled back to a running snapshot reports again"
    );

    // A late copy of the stop after the rollback: its journaled result, the VM keeps running.
    operator.publish(stop).await;
    let (_, late) = operator.result(1, 3).await;
    assert_eq!(late, stopped);
    assert!(operator.reporting(VM1, Duration::from_secs(1)).await);
    assert!(
        entry(&operator.latest_guests().unwrap(), VM1)
            .unwrap()
            .running
    );

    // Downsize: the list shows the new size.
    let small = VmSize {
        vcpus: 2,
        mem_kib: 4 * GIB,
    };
    let (down, list) = operator
        .run(
            3,
            Action::Downsize(vm2.clone(), "yunjian-reclaim-2".into(), small),
        )
        .await;
    assert!(down.ok && down.message.contains("downsized"), "{down:?}");
    let vm2_listed = entry(&list, VM2).unwrap();
    assert_eq!(
        (vm2_listed.vcpus, vm2_listed.mem_kib, vm2_listed.running),
        (2, 4 * GIB, true)
    );

    // Release: refused while running; after a stop the VM is gone from the list.
    let (refused, list) = operator.run(4, Action::Release(vm2.clone())).await;
    assert!(
        !refused.ok && refused.message.contains("running"),
        "{refused:?}"
    );
    assert!(entry(&list, VM2).is_some());
    let (ok, _) = operator
        .run(5, Action::Stop(vm2.clone(), "yunjian-reclaim-2".into()))
        .await;
    assert!(ok.ok, "{ok:?}");
    let (released, list) = operator.run(6, Action::Release(vm2)).await;
    assert!(
        released.ok && released.message.contains("released"),
        "{released:?}"
    );
    assert!(entry(&list, VM2).is_none(), "{list:?}");
    assert!(entry(&list, VM1).is_some_and(|g| g.running), "{list:?}");
    assert!(!operator.reporting(VM2, Duration::from_secs(1)).await);

    let stats = sim.stats();
    assert_eq!((stats.send_errors, stats.start_failures), (0, 0));
    sim.stop().await;
}
