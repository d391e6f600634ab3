//! VM commands carried out through libvirt, end to end: a real aggregator (its embedded
//! broker), the real `yunjian-agent` binary built with the `libvirt` feature, and libvirt's
//! test driver (`test:///<tmp>/domains.xml`, written by the test). An operator client plays
//! the aggregator's command sender: it signs each command with the node's key (derived from
//! the aggregator's master key), publishes it on the node's command topic and reads the
//! agent's results and guest lists from its report topic.
//!
//! The test driver keeps its state per connection, so every check goes through the agent's
//! own connection: its command results and its guest reports.
//!
//! Needs `virsh` (libvirt-clients, standing for the libvirt installation) and libvirt-dev to
//! build the agent; without them the test prints SKIP, and fails under CI.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_protocol::{
    decode, encode, topics, Action, Body, Command, CommandResult, DiskWipeState, Envelope,
    Evidence, GuestView, NodeKey, Role, VmLimits, VmRef, VmSize,
};
use yunjian_tests::{eventually, free_port, require_tool};

const NODE: &str = "hv-test-1";
const OPERATOR_PASSWORD: &str = "libvirt-exec-operator";
const WAIT: Duration = Duration::from_secs(30);
const VM_A: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";
const VM_B: &str = "7795eb01-f6a4-8304-79aa-97f2502e1940";
const GIB: u64 = 1 << 20;

/// Two running domains for the test driver; vm-a has a 10 GiB disk image.
fn domains_xml(dir: &Path) -> String {
    let disk = dir.join("vm-a.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(10 << 30))
        .unwrap();
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
    <devices>
      <disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk>
    </devices>
  </domain>
  <domain type='test'>
    <name>vm-b</name>
    <uuid>{VM_B}</uuid>
    <memory unit='KiB'>2097152</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>
",
        disk.display()
    )
}

fn vm_a() -> VmRef {
    VmRef {
        uuid: VM_A.into(),
        name: "vm-a".into(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The agent process, killed on drop; its log is printed when the test fails.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(bin: &Path, config: &Path, log: &Path) -> Agent {
        let child = Process::new(bin)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("the agent starts");
        Agent {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Stop it abruptly (SIGKILL): whatever it journaled must be enough.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- agent log -----\n{log}\n---------------------");
        }
    }
}

/// Reads the node's report topic (as the operator) and sends commands signed with its key.
struct Operator {
    client: AsyncClient,
    key: NodeKey,
    seen: Arc<Mutex<Vec<Envelope>>>,
}

impl Operator {
    async fn start(port: u16, key: NodeKey) -> Operator {
        let mut options = MqttOptions::new("libvirt-exec-operator", "127.0.0.1", port);
        options
            .set_credentials("operator", OPERATOR_PASSWORD)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client
            .subscribe(topics::report(NODE), QoS::AtLeastOnce)
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (store, verify) = (Arc::clone(&seen), key.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let envelope = decode(&p.payload, NODE, &verify)
                            .expect("the agent's reports verify with its key");
                        store.lock().unwrap().push(envelope);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Operator { client, key, seen }
    }

    fn frame(&self, id: u8, action: Action) -> Vec<u8> {
        let command = Command {
            id: [id; 16],
            expires_ms: now_ms() + 600_000,
            action,
        };
        encode(
            &Envelope::new(NODE, 0, now_ms(), Body::Command(command)),
            &self.key,
        )
        .unwrap()
    }

    async fn publish(&self, frame: Vec<u8>) {
        self.client
            .publish(topics::command(NODE), QoS::AtLeastOnce, false, frame)
            .await
            .unwrap();
    }

    fn results(&self, id: u8) -> Vec<CommandResult> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.body {
                Body::CommandResult(r) if r.id == [id; 16] => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Send command `id` and wait for its result.
    async fn run(&self, id: u8, action: Action) -> CommandResult {
        let kind = action.kind();
        self.publish(self.frame(id, action)).await;
        self.result(id, 1, kind).await
    }

    /// Wait until `count` results of command `id` arrived; return the last.
    async fn result(&self, id: u8, count: usize, what: &str) -> CommandResult {
        eventually(
            &format!("result #{count} of {what} (id {id})"),
            WAIT,
            || {
                let results = self.results(id);
                async move { (results.len() >= count).then(|| results[count - 1].clone()) }
            },
        )
        .await
    }

    /// Seq of the newest envelope so far: later guest lists come after it.
    fn mark(&self) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .max()
            .unwrap_or(0)
    }

    /// The first guest list sent after `mark` for which `ok` holds.
    async fn guests_after(
        &self,
        mark: u64,
        what: &str,
        ok: impl Fn(&[GuestView]) -> bool,
    ) -> Vec<GuestView> {
        eventually(what, WAIT, || {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.seq > mark)
                .find_map(|e| match &e.body {
                    Body::Guests(list) if ok(list) => Some(list.clone()),
                    _ => None,
                });
            async move { found }
        })
        .await
    }
}

fn guest<'a>(list: &'a [GuestView], uuid: &str) -> Option<&'a GuestView> {
    list.iter().find(|g| g.uuid == uuid)
}

/// A real aggregator (its embedded broker), the operator client and the real agent on
/// libvirt's test driver with `domains` (the node file's text).
struct Bed {
    dir: tempfile::TempDir,
    agg: Aggregator,
    op: Operator,
    agent: Agent,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

/// `None` (after a SKIP line, or a failure under CI) without libvirt.
async fn bed(domains_xml: impl FnOnce(&Path) -> String) -> Option<Bed> {
    require_tool(&["virsh"], "libvirt-clients libvirt-dev")?;
    let bin = tokio::task::spawn_blocking(|| yunjian_tests::agent_binary(&["libvirt"]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.xml");
    std::fs::write(&domains, domains_xml(dir.path())).unwrap();
    std::fs::create_dir(dir.path().join("buffer")).unwrap();

    let mut cfg = AggregatorConfig {
        data_dir: dir.path().join("aggregator"),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.broker.operator_password = Some(OPERATOR_PASSWORD.into());
    let agg = Aggregator::start(&cfg).await.unwrap();
    let port = cfg.broker.listen.port();
    let key = agg.master.node_key(NODE, Role::Host);
    key.write_file(&dir.path().join("agent.key")).unwrap();
    let config = yunjian_tests::write_hypervisor_agent_config(
        dir.path(),
        NODE,
        port,
        &format!("test://{}", domains.display()),
    );
    let op = Operator::start(port, key).await;
    let log = dir.path().join("agent.log");
    let agent = Agent::start(&bin, &config, &log);
    Some(Bed {
        dir,
        agg,
        op,
        agent,
        bin,
        config,
        log,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_replay_rollback_downsize_and_release_through_the_agents_libvirt_connection() {
    let Some(Bed {
        dir: _dir,
        agg,
        op,
        mut agent,
        bin,
        config,
        log,
    }) = bed(domains_xml).await
    else {
        return;
    };

    // the first guest list: both domains, running, with their sizes and vm-a's disk
    let first = op
        .guests_after(0, "the first guest list", |l| l.len() == 2)
        .await;
    let a = guest(&first, VM_A).unwrap();
    assert_eq!(
        (a.name.as_str(), a.vcpus, a.mem_kib, a.running),
        ("vm-a", 4, 4 * GIB, true)
    );
    assert!(guest(&first, VM_B).unwrap().running);

    // stop: the snapshot first, then the VM goes down
    let stop_frame = op.frame(1, Action::Stop(vm_a(), "reclaim-1".into()));
    op.publish(stop_frame.clone()).await;
    let stopped = op.result(1, 1, "stop").await;
    assert!(stopped.ok, "{stopped:?}");
    assert!(
        stopped.message.contains("vm-a") && stopped.message.contains("\"reclaim-1\" taken first"),
        "{stopped:?}"
    );
    let mark = op.mark();
    let list = op
        .guests_after(mark, "vm-a stopped in the guest list", |l| {
            guest(l, VM_A).is_some_and(|g| !g.running)
        })
        .await;
    assert!(guest(&list, VM_B).unwrap().running, "only vm-a was stopped");
    // the snapshot is there: asking for it again takes nothing
    let snap = op
        .run(2, Action::Snapshot(vm_a(), "reclaim-1".into()))
        .await;
    assert!(
        snap.ok && snap.message.contains("already exists"),
        "{snap:?}"
    );

    // the same stop command again: its result once more, nothing executed (a second run
    // would say "already stopped")
    op.publish(stop_frame.clone()).await;
    let replayed = op.result(1, 2, "replayed stop").await;
    assert_eq!(replayed, stopped);

    // rollback: running again, at its old size
    let back = op
        .run(3, Action::Rollback(vm_a(), "reclaim-1".into()))
        .await;
    assert!(back.ok && back.message.contains("running"), "{back:?}");
    let mark = op.mark();
    op.guests_after(mark, "vm-a running again", |l| {
        guest(l, VM_A).is_some_and(|g| g.running && g.vcpus == 4 && g.mem_kib == 4 * GIB)
    })
    .await;

    // downsize: snapshot, then 2 vCPUs and 2 GiB
    let to = VmSize {
        vcpus: 2,
        mem_kib: 2 * GIB,
    };
    let down = op
        .run(4, Action::Downsize(vm_a(), "reclaim-2".into(), to))
        .await;
    assert!(down.ok, "{down:?}");
    assert!(
        down.message.contains("to 2 vCPU / 2048 MiB") && down.message.contains("taken first"),
        "{down:?}"
    );
    let mark = op.mark();
    op.guests_after(mark, "vm-a at its new size", |l| {
        guest(l, VM_A).is_some_and(|g| g.vcpus == 2 && g.mem_kib == 2 * GIB)
    })
    .await;

    // release is refused while it runs
    let refused = op.run(5, Action::Release(vm_a())).await;
    assert!(
        !refused.ok && refused.message.contains("refused") && refused.message.contains("running"),
        "{refused:?}"
    );
    // stopped, it is released: gone from the guest list
    assert!(op.run(6, Action::Stop(vm_a(), "reclaim-2".into())).await.ok);
    let released = op.run(7, Action::Release(vm_a())).await;
    assert!(released.ok, "{released:?}");
    let mark = op.mark();
    op.guests_after(mark, "vm-a gone from the guest list", |l| {
        guest(l, VM_A).is_none() && guest(l, VM_B).is_some()
    })
    .await;

    // After an abrupt agent restart its libvirt connection starts from the domains file again
    // (vm-a defined and running): a replayed stop gets its journaled result and does not run.
    agent.kill();
    let mark = op.mark();
    let _agent = Agent::start(&bin, &config, &log);
    op.guests_after(mark, "the restarted agent's guest list", |l| {
        guest(l, VM_A).is_some_and(|g| g.running)
    })
    .await;
    op.publish(stop_frame).await;
    let after_restart = op.result(1, 3, "stop replayed after a restart").await;
    assert_eq!(after_restart, stopped);
    // commands run one after the other: once a later one is answered, the guest list that
    // follows shows whatever the replay could have done
    assert!(op.run(8, Action::Snapshot(vm_a(), "probe".into())).await.ok);
    let mark = op.mark();
    let list = op
        .guests_after(mark, "a guest list after the replay", |l| l.len() == 2)
        .await;
    assert!(
        guest(&list, VM_A).unwrap().running,
        "the replayed stop was not executed"
    );

    agg.shutdown().await;
}

const VM_C: &str = "8895eb01-f6a4-8304-79aa-97f2502e1941";

/// vm-c: one disk that is a volume of pool-a, one plain file in no pool.
fn wipe_domains_xml(dir: &Path) -> String {
    let plain = dir.join("plain.img");
    std::fs::File::create(&plain).unwrap();
    format!(
        "<node>
  <cpu><mhz>2000</mhz><model>x86</model><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads><active>8</active></cpu>
  <memory>16777216</memory>
  <domain type='test'>
    <name>vm-c</name>
    <uuid>{VM_C}</uuid>
    <memory unit='KiB'>2097152</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><source file='/pool-a/c.img'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><source file='{}'/><target dev='vdb' bus='virtio'/></disk>
    </devices>
  </domain>
  <pool type='dir'>
    <name>pool-a</name>
    <uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
    <capacity unit='GiB'>500</capacity>
    <allocation>0</allocation>
    <available unit='GiB'>500</available>
    <target><path>/pool-a</path></target>
    <volume type='file'><name>c.img</name><capacity unit='GiB'>8</capacity><allocation>0</allocation><target><path>/pool-a/c.img</path></target></volume>
  </pool>
</node>
",
        plain.display()
    )
}

/// 004 第十六条's "limit service" and the release that clears the data, through the real agent
/// binary: the caps are set and lifted; the wiping release of a VM with a disk outside every
/// storage pool is refused with nothing touched, and its evidence arrives before its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_the_wiping_release_through_the_agents_libvirt_connection() {
    let Some(bed) = bed(wipe_domains_xml).await else {
        return;
    };
    let op = &bed.op;
    let vm_c = VmRef {
        uuid: VM_C.into(),
        name: "vm-c".into(),
    };
    op.guests_after(0, "the first guest list", |l| l.len() == 1)
        .await;

    let caps = VmLimits {
        vcpu_percent: Some(20),
        disk_bytes_sec: Some(1 << 20),
        disk_iops_sec: None,
    };
    let limited = op.run(1, Action::Limit(vm_c.clone(), caps)).await;
    assert!(limited.ok, "{limited:?}");
    assert!(
        limited
            .message
            .contains("limited to vCPU ≤ 20% each, disk ≤ 1048576 B/s per disk")
            && limited.message.contains("before: no caps"),
        "{limited:?}"
    );
    let lifted = op.run(2, Action::Limit(vm_c.clone(), VmLimits::NONE)).await;
    assert!(
        lifted.ok
            && lifted.message.contains("lifted")
            && lifted.message.contains("before: vCPU ≤ 20% each"),
        "{lifted:?}"
    );

    assert!(
        op.run(3, Action::Stop(vm_c.clone(), "before-release".into()))
            .await
            .ok
    );
    let refused = op.run(4, Action::ReleaseAndWipe(vm_c.clone())).await;
    assert!(
        !refused.ok
            && refused
                .message
                .contains("disk vdb cannot be wiped through libvirt"),
        "{refused:?}"
    );
    let (evidence, evidence_seq, result_seq) = {
        let seen = op.seen.lock().unwrap();
        let evidence = seen
            .iter()
            .find_map(|e| match &e.body {
                Body::CommandEvidence(c) if c.id == [4; 16] => Some((c.clone(), e.seq)),
                _ => None,
            })
            .expect("the evidence was published");
        let result_seq = seen
            .iter()
            .find(|e| matches!(&e.body, Body::CommandResult(r) if r.id == [4; 16]))
            .map(|e| e.seq)
            .unwrap();
        (evidence.0, evidence.1, result_seq)
    };
    assert!(evidence_seq < result_seq, "the evidence comes first");
    let Evidence::Wipe(wipe) = evidence.evidence;
    assert_eq!(wipe.vm, vm_c);
    assert!(
        matches!(&wipe.disks[0].state, DiskWipeState::NotWiped(v, _) if v.name == "c.img" && v.capacity_bytes == 8 << 30),
        "{wipe:?}"
    );
    assert!(
        matches!(&wipe.disks[1].state, DiskWipeState::NotWipeable(why) if why.contains("plain.img is in no libvirt storage pool")),
        "{wipe:?}"
    );
    // nothing was touched: still defined
    let mark = op.mark();
    op.guests_after(mark, "vm-c still defined", |l| guest(l, VM_C).is_some())
        .await;
    assert!(op.run(5, Action::Ping).await.ok);
    bed.agg.shutdown().await;
}
