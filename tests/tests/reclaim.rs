//! Reclaim cases end to end: the real aggregator (embedded broker, SQLite, JSON API) and a host
//! agent made of the real agent publisher (signature, expiry and replay checks on commands)
//! whose hypervisor is a small in-test model that counts executions per command id.
//!
//! * `a_case_survives_a_restart_between_send_and_result`: the aggregator stops after the
//!   command was stored and sent, before its result; restarted from the same data directory it
//!   resends the SAME id (refused by the agent as a replay), the result that comes afterwards
//!   completes the case, and the VM was stopped exactly once.
//! * `a_full_case_through_the_api_with_rollback_and_release`: detected → notified → agreed →
//!   filed → approved → scheduled → executed (stop with snapshot) → verified (the host's guest
//!   list shows the VM stopped and the VM's own agent went offline); a rollback brings it back; a second case goes on to closed
//!   (release after the hold period). Roles are enforced, every step is in the audit trail,
//!   and while the unit has open cases its requests for more are held (003 第三十条).
//!
//! People are users seeded into the aggregator's storage, each calling with an API token:
//! no token answers 401, another unit's case answers 404 (its existence is not confirmed), an
//! auditor reads cases but takes no step.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use yunjian_agent::publish::config::{BufferConfig, MqttConfig};
use yunjian_agent::publish::{Identity, Publisher};
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_protocol::{Action, Body, CommandResult, GuestView, Inventory, NodeKey, Role};
use yunjian_tests::{eventually, free_port, get_json, http_request, seed_users};

const UUID: &str = "4c4c4544-0052-3510-8052-b4c04f4d3332";
const HOST: &str = "rack1-h01";
/// The VM's own agent.
const VM_NODE: &str = "czj-budget-01";
const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn config(dir: &Path) -> AggregatorConfig {
    // the hold period is the profile's; 0 days here so the release can be walked through
    let profile = yunjian_aggregator_core::policy::profile::BUILTIN
        .iter()
        .find(|(n, _)| *n == "003")
        .unwrap()
        .1
        .replace("hold_days = 92", "hold_days = 0");
    assert!(profile.contains("hold_days = 0"));
    let profile_path = dir.join("profile.toml");
    std::fs::write(&profile_path, profile).unwrap();
    let mut cfg = AggregatorConfig {
        data_dir: dir.join("data"),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        policy_interval: Duration::from_millis(200),
        policy_profile: profile_path.display().to_string(),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.reclaim.tick = Duration::from_millis(100);
    cfg.reclaim.resend_every = Duration::from_millis(500);
    cfg
}

/// The people of the scenario, by their API tokens.
struct People {
    ops: String,
    chief: String,
    /// 财政局's, whose system holds the VM.
    unit: String,
    /// 教育局's: another unit.
    other_unit: String,
    auditor: String,
}

/// Write the people into the storage of `cfg` (before the aggregator starts).
fn people(cfg: &AggregatorConfig) -> People {
    let mut t = seed_users(
        cfg,
        &[
            ("ops-zhang", UserRole::Ops, None),
            ("chief-wang", UserRole::Authority, None),
            ("czj-li", UserRole::Unit, Some("财政局")),
            ("jyj-zhao", UserRole::Unit, Some("教育局")),
            ("audit-sun", UserRole::Auditor, None),
        ],
    )
    .into_iter();
    let mut next = || t.next().unwrap();
    People {
        ops: next(),
        chief: next(),
        unit: next(),
        other_unit: next(),
        auditor: next(),
    }
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

async fn step(addr: SocketAddr, case: u64, step: &str, token: &str, body: Value) -> (u16, Value) {
    http_request(
        addr,
        "POST",
        &format!("/api/reclaim/cases/{case}/{step}"),
        Some(token),
        "application/json",
        body.to_string().as_bytes(),
    )
    .await
}

async fn ok_step(addr: SocketAddr, case: u64, name: &str, token: &str, body: Value) -> Value {
    let (status, v) = step(addr, case, name, token, body).await;
    assert_eq!(status, 200, "{name}: {v}");
    v
}

const CSV_HEADER: &str = "序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID\n";

/// Register 财政局's system with our VM (and `extra` more rows).
async fn import(addr: SocketAddr, ops: &str, extra: usize) -> (u16, Value) {
    let mut csv = format!("\u{feff}{CSV_HEADER}");
    csv.push_str(&format!("1,政务外网区,浪潮,预算一体化,,APP,王五,wangwu@gov.cn,13700000000,8,16,60,300,openEuler 22.03,否,,,{UUID}\n"));
    for i in 0..extra {
        csv.push_str(&format!("{},政务外网区,浪潮,预算一体化,,APP,王五,wangwu@gov.cn,13700000000,8,16,60,300,openEuler 22.03,否,,,\n", i + 2));
    }
    http_request(
        addr,
        "POST",
        &format!("/api/register/import?unit={}&format=csv", pct("财政局")),
        Some(ops),
        "text/csv",
        csv.as_bytes(),
    )
    .await
}

/// The host's hypervisor as the test models it.
#[derive(Debug, Default)]
struct Hypervisor {
    guests: Vec<GuestView>,
    /// Executions per command id.
    executed: HashMap<[u8; 16], u32>,
    snapshots: Vec<String>,
}

/// The VM's own agent: the real publisher, enrolled as a guest, reporting the VM's SMBIOS
/// UUID. It runs while the VM runs (the case is verified when the host lists the VM stopped
/// and this agent has gone offline).
async fn vm_agent(mqtt: &MqttConfig, key: NodeKey) -> Publisher {
    let identity = Identity {
        node: VM_NODE.into(),
        key,
        role: Role::Guest,
        agent_version: "test".into(),
        // short: after the restart the stopped VM counts as silent 3 intervals on
        interval_ms: 1_000,
    };
    let buffer = BufferConfig {
        dir: None,
        max_bytes: 1 << 20,
    };
    let (vm, _commands) = Publisher::start(mqtt, &buffer, identity).await.unwrap();
    vm.set_inventory(Inventory {
        hostname: VM_NODE.into(),
        role: Role::Guest,
        os: "openEuler 22.03".into(),
        kernel: String::new(),
        cpu_model: String::new(),
        cpu_cores: 8,
        mem_total_kib: 16 << 20,
        disks: vec![],
        nics: vec![],
        machine_id: String::new(),
        smbios_uuid: Some(UUID.into()),
        rack: None,
    })
    .await;
    vm
}

/// The host agent: the real publisher; commands executed on the model, answered when `answer`
/// is true (the test holds answers back to stop the aggregator in between). Stopping the VM
/// stops its agent; reverting it to its snapshot starts the agent again.
struct FakeHost {
    publisher: Arc<Publisher>,
    hv: Arc<Mutex<Hypervisor>>,
    answer: watch::Sender<bool>,
}

async fn fake_host(cfg: &AggregatorConfig, agg: &Aggregator) -> FakeHost {
    let mqtt = MqttConfig {
        host: "127.0.0.1".into(),
        port: cfg.broker.listen.port(),
        backoff_min_ms: 50,
        backoff_max_ms: 300,
        ..MqttConfig::default()
    };
    let identity = Identity {
        node: HOST.into(),
        key: agg.master.node_key(HOST, Role::Host),
        role: Role::Host,
        agent_version: "test".into(),
        interval_ms: 10_000,
    };
    let buffer = BufferConfig {
        dir: None,
        max_bytes: 1 << 20,
    };
    let (publisher, mut commands) = Publisher::start(&mqtt, &buffer, identity).await.unwrap();
    let publisher = Arc::new(publisher);
    let hv = Arc::new(Mutex::new(Hypervisor {
        guests: vec![GuestView {
            uuid: UUID.into(),
            name: "czj-budget-01".into(),
            vcpus: 8,
            mem_kib: 16 << 20,
            disk_kib: 360 << 20,
            running: true,
        }],
        ..Hypervisor::default()
    }));
    let (answer, answer_rx) = watch::channel(true);
    let vm_key = agg.master.node_key(VM_NODE, Role::Guest);
    let mut vm = Some(vm_agent(&mqtt, vm_key.clone()).await);
    {
        let (publisher, hv) = (publisher.clone(), hv.clone());
        tokio::spawn(async move {
            while let Some(cmd) = commands.recv().await {
                let (ok, message) = {
                    let mut h = hv.lock().unwrap();
                    *h.executed.entry(cmd.id).or_default() += 1;
                    let find = |h: &mut Hypervisor, uuid: &str| {
                        h.guests
                            .iter()
                            .position(|g| g.uuid.eq_ignore_ascii_case(uuid))
                    };
                    match &cmd.action {
                        Action::Stop(vm, snap) => match find(&mut h, &vm.uuid) {
                            Some(i) => {
                                h.snapshots.push(snap.clone());
                                h.guests[i].running = false;
                                (true, format!("snapshot {snap} taken; {} stopped", vm.name))
                            }
                            None => (false, format!("no domain {}", vm.uuid)),
                        },
                        Action::Rollback(vm, snap) => match find(&mut h, &vm.uuid) {
                            Some(i) if h.snapshots.contains(snap) => {
                                h.guests[i].running = true;
                                (true, format!("reverted to {snap}"))
                            }
                            _ => (false, format!("no snapshot {snap}")),
                        },
                        Action::Release(vm) | Action::ReleaseAndWipe(vm) => {
                            match find(&mut h, &vm.uuid) {
                                Some(i) if !h.guests[i].running => {
                                    h.guests.remove(i);
                                    (true, "undefined".into())
                                }
                                _ => (false, "refused: running or unknown".into()),
                            }
                        }
                        other => (false, format!("{} not modelled", other.kind())),
                    }
                };
                match (&cmd.action, ok) {
                    (Action::Stop(..), true) => {
                        if let Some(vm) = vm.take() {
                            vm.shutdown().await;
                        }
                    }
                    (Action::Rollback(..), true) if vm.is_none() => {
                        vm = Some(vm_agent(&mqtt, vm_key.clone()).await);
                    }
                    _ => {}
                }
                // a wiping release's evidence goes out right before its result, as the agent's
                // hypervisor thread sends it
                if let (Action::ReleaseAndWipe(vm), true) = (&cmd.action, ok) {
                    let evidence = yunjian_protocol::CommandEvidence {
                        id: cmd.id,
                        evidence: yunjian_protocol::Evidence::Wipe(
                            yunjian_protocol::WipeEvidence {
                                vm: vm.clone(),
                                disks: vec![yunjian_protocol::DiskWipe {
                                    target: "vda".into(),
                                    source: "/var/lib/libvirt/images/czj-budget-01.qcow2".into(),
                                    state: yunjian_protocol::DiskWipeState::Wiped {
                                        volume: yunjian_protocol::VolumeInfo {
                                            pool: "default".into(),
                                            name: "czj-budget-01.qcow2".into(),
                                            capacity_bytes: 360 << 30,
                                        },
                                        algorithm: yunjian_protocol::WipeAlgorithm::Zero,
                                        wiped_ms: now_ms(),
                                        deleted: true,
                                    },
                                }],
                            },
                        ),
                    };
                    let _ = publisher
                        .send(now_ms(), Body::CommandEvidence(evidence))
                        .await;
                }
                let mut gate = answer_rx.clone();
                let _ = gate.wait_for(|open| *open).await;
                publisher
                    .send_result(CommandResult {
                        id: cmd.id,
                        ok,
                        message,
                    })
                    .await;
                let guests = hv.lock().unwrap().guests.clone();
                let _ = publisher.send(now_ms(), Body::Guests(guests)).await;
            }
        });
    }
    FakeHost {
        publisher,
        hv,
        answer,
    }
}

async fn case_json(addr: SocketAddr, token: &str, id: u64) -> Value {
    get_json(addr, token, &format!("/api/reclaim/cases/{id}")).await
}

async fn wait_state(addr: SocketAddr, token: &str, id: u64, state: &str) -> Value {
    eventually(
        &format!("case {id} in state {state}"),
        WAIT,
        || async move {
            let v = case_json(addr, token, id).await;
            (v["case"]["case"]["state"] == state).then_some(v)
        },
    )
    .await
}

/// Once the host is connected (a guest list sent earlier could arrive after its Hello and
/// count as late), send its guest list and wait until the aggregator shows it.
async fn wait_host_listed(addr: SocketAddr, token: &str, host: &FakeHost) {
    eventually("the host online at the aggregator", WAIT, || async move {
        let (status, v) = http_request(
            addr,
            "GET",
            &format!("/api/nodes/{HOST}"),
            Some(token),
            "text/plain",
            b"",
        )
        .await;
        (status == 200 && v["state"]["liveness"] == "online").then_some(())
    })
    .await;
    let guests = host.hv.lock().unwrap().guests.clone();
    host.publisher
        .send(now_ms(), Body::Guests(guests))
        .await
        .unwrap();
    eventually(
        "the host's guest list at the aggregator",
        WAIT,
        || async move {
            let v = get_json(addr, token, &format!("/api/nodes/{HOST}")).await;
            v["state"]["guests"]
                .to_string()
                .contains(UUID)
                .then_some(())
        },
    )
    .await;
}

/// Open a case for the VM and walk it to `scheduled` (due now); returns its id.
async fn open_and_schedule(addr: SocketAddr, p: &People) -> u64 {
    open_and_schedule_at(addr, p, now_ms()).await
}

/// Open a case for the VM and walk it to `scheduled`, due at `at_ms`; returns its id.
async fn open_and_schedule_at(addr: SocketAddr, p: &People, at_ms: u64) -> u64 {
    let (status, v) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(&p.ops),
        "application/json",
        json!([{"uuid": UUID.to_uppercase(), "kind": {"kind": "idle"},
                "evidence": {"window_days": 30, "cpu_p95_pct": 0.8}}])
        .to_string()
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["opened"][0].as_u64().expect("a case is opened");
    ok_step(addr, id, "notify", &p.ops, json!({})).await;
    ok_step(addr, id, "agree", &p.unit, json!({"reason": "系统已停用"})).await;
    ok_step(addr, id, "file", &p.ops, json!({})).await;
    ok_step(addr, id, "approve", &p.chief, json!({})).await;
    // the re-check needs a fresh finding: the usage module feeds one every evaluation
    let (status, _) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(&p.ops),
        "application/json",
        json!([{"uuid": UUID, "kind": {"kind": "idle"}, "evidence": {}}])
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    ok_step(addr, id, "schedule", &p.ops, json!({"at_ms": at_ms})).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_survives_a_restart_between_send_and_result() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let p = people(&cfg);
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    let (status, v) = import(addr, ops, 0).await;
    assert_eq!(status, 200, "{v}");
    let host = fake_host(&cfg, &agg).await;
    host.answer.send_replace(false);
    wait_host_listed(addr, ops, &host).await;
    let id = open_and_schedule(addr, &p).await;

    // stored and sent, executed on the host, no result yet: "execution pending"
    let v = wait_state(addr, ops, id, "executing").await;
    let command = v["case"]["case"]["command"].as_str().unwrap().to_string();
    assert_eq!(v["commands"][0]["id"], command.as_str());
    assert_eq!(v["commands"][0]["status"], "outstanding");
    assert_eq!(v["commands"][0]["node"], HOST);
    eventually("the host executes the stop", WAIT, || {
        let hv = host.hv.clone();
        async move { (!hv.lock().unwrap().executed.is_empty()).then_some(()) }
    })
    .await;
    let sends_before = v["commands"][0]["sends"].as_u64().unwrap();
    assert!(sends_before >= 1);

    agg.shutdown().await;
    let rejected_before = host.publisher.stats().commands_rejected;

    // restarted from the same data directory: the case and its command come back from storage
    // (and so do the users and their tokens)
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    let v = case_json(addr, ops, id).await;
    assert_eq!(v["case"]["case"]["state"], "executing");
    assert_eq!(v["case"]["case"]["command"], command.as_str());
    // the same id is published again; the agent refuses it as a replay (not run twice)
    eventually(
        "the same command id resent and refused as a replay",
        WAIT,
        || {
            let p = host.publisher.clone();
            async move { (p.stats().commands_rejected > rejected_before).then_some(()) }
        },
    )
    .await;
    let v = case_json(addr, ops, id).await;
    assert_eq!(v["commands"].as_array().unwrap().len(), 1, "no new id: {v}");
    assert!(v["commands"][0]["sends"].as_u64().unwrap() > sends_before);

    // the held result now arrives: executed, then verified from the host's guest list
    host.answer.send_replace(true);
    let v = wait_state(addr, ops, id, "verified").await;
    assert_eq!(v["commands"][0]["status"], "succeeded");
    assert_eq!(v["case"]["case"]["snapshot"], "yunjian-reclaim-1");
    {
        let hv = host.hv.lock().unwrap();
        assert_eq!(hv.executed.len(), 1, "one command id only");
        assert_eq!(
            hv.executed.values().copied().collect::<Vec<_>>(),
            [1],
            "executed once"
        );
        assert_eq!(
            hv.snapshots,
            ["yunjian-reclaim-1"],
            "snapshot before the stop"
        );
    }
    let steps: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "detect",
            "notify",
            "agree",
            "file",
            "approve",
            "schedule",
            "execute",
            "succeeded",
            "verify"
        ]
    );
    agg.shutdown().await;
}

/// Issue 11 item 8: the finding fed over HTTP lived only in memory, so a case scheduled on it
/// and due after a restart (or a crash) was withdrawn by the re-check. Stored, it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fed_finding_survives_a_restart_and_the_scheduled_case_acts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let p = people(&cfg);
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    let (status, v) = import(addr, ops, 0).await;
    assert_eq!(status, 200, "{v}");
    let host = fake_host(&cfg, &agg).await;
    host.answer.send_replace(false);
    wait_host_listed(addr, ops, &host).await;
    // due once the aggregator has been restarted
    let due = now_ms() + 3_000;
    let id = open_and_schedule_at(addr, &p, due).await;
    assert_eq!(
        case_json(addr, ops, id).await["case"]["case"]["state"],
        "scheduled"
    );
    agg.shutdown().await;

    let db = cfg.data_dir.join("yunjian.db");
    let stored = {
        use yunjian_aggregator_core::store::DetectionStore;
        let mut s = yunjian_store_sqlite::SqliteStorage::open(&db).unwrap();
        s.load_detections().unwrap()
    };
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].detection.uuid, UUID.to_ascii_lowercase());

    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    assert!(now_ms() < due, "restarted before the case was due");
    let v = eventually(
        "the case acted on after its due time",
        WAIT,
        || async move {
            let v = case_json(addr, ops, id).await;
            (v["case"]["case"]["state"] != "scheduled").then_some(v)
        },
    )
    .await;
    assert_eq!(v["case"]["case"]["state"], "executing", "{v}");
    let execute = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["step"] == "execute")
        .cloned()
        .unwrap_or_default();
    assert!(
        execute["detail"]["recheck"]["detected_ms"]
            .as_u64()
            .is_some_and(|t| t < due),
        "the re-check found the finding fed before the restart: {execute}"
    );
    agg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_case_through_the_api_with_rollback_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let p = people(&cfg);
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    let (status, v) = import(addr, ops, 0).await;
    assert_eq!(status, 200, "{v}");
    let host = fake_host(&cfg, &agg).await;
    wait_host_listed(addr, ops, &host).await;

    // who is signed in, as the case steps see them
    let me = get_json(addr, &p.unit, "/api/reclaim/whoami").await;
    assert_eq!(
        me,
        json!({"name": "czj-li", "role": "unit", "unit": "财政局", "source": "127.0.0.1"}),
        "{me}"
    );

    // detection by hand needs an ops token
    let body = json!([{"uuid": UUID, "kind": {"kind": "idle"}, "evidence": {"cpu_p95_pct": 0.8}}])
        .to_string();
    let (status, v) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        None,
        "application/json",
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["code"], "not_signed_in", "{v}");
    let (status, v) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(&p.unit),
        "application/json",
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "forbidden", "{v}");
    assert!(v["error"].as_str().unwrap().contains("运维单位"), "{v}");
    let (status, v) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(&p.ops),
        "application/json",
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["opened"][0].as_u64().unwrap();
    // a second detection of the same VM does not open a second case
    let (_, v) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(&p.ops),
        "application/json",
        body.as_bytes(),
    )
    .await;
    assert_eq!(v["opened"], json!([]));

    // roles and states are enforced, with errors naming them
    let (status, v) = step(addr, id, "agree", &p.unit, json!({})).await;
    assert_eq!(status, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("detected") && e.contains("agree"), "{e}");
    let (status, v) = step(addr, id, "notify", &p.chief, json!({})).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("authority"), "{v}");
    ok_step(
        addr,
        id,
        "notify",
        &p.ops,
        json!({"reason": "连续30天CPU p95 < 5%"}),
    )
    .await;

    // the unit is told: an info notice for 财政局 while its answer is awaited
    let notice = |open: bool| async move {
        let a = get_json(addr, ops, "/api/alarms").await;
        let found = a["open"].as_array().unwrap().iter().any(|x| {
            x["key"]["rule"] == "reclaim_notice"
                && x["unit"] == "财政局"
                && x["key"]["subject"] == "case:1"
        });
        (found == open).then_some(())
    };
    eventually("the notice to the unit", WAIT, || notice(true)).await;
    // notified: 财政局 has an open low-use case, so its requests for more are held
    let (status, v) = import(addr, ops, 1).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["held"], true, "{v}");
    assert!(v["error"].as_str().unwrap().contains("第三十条"), "{v}");
    let q = get_json(addr, ops, "/api/reclaim/cases").await;
    assert_eq!(q["held_units"]["财政局"]["cases"], json!([id]));
    // 财政局's people see their case and hold too
    let q = get_json(addr, &p.unit, "/api/reclaim/cases").await;
    assert_eq!(q["held_units"]["财政局"]["cases"], json!([id]), "{q}");
    assert!(q["cases"].to_string().contains("财政局"), "{q}");

    // another unit neither sees 财政局's case nor acts on it: not found, not confirmed
    let (status, v) = step(addr, id, "agree", &p.other_unit, json!({})).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = http_request(
        addr,
        "GET",
        &format!("/api/reclaim/cases/{id}"),
        Some(&p.other_unit),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let q = get_json(addr, &p.other_unit, "/api/reclaim/cases").await;
    assert_eq!(q["cases"], json!([]), "{q}");
    assert!(!q.to_string().contains("财政局"), "{q}");
    assert!(q["held_units"].get("财政局").is_none(), "{q}");

    // no token: not signed in
    let (status, v) = http_request(
        addr,
        "GET",
        &format!("/api/reclaim/cases/{id}"),
        None,
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["code"], "not_signed_in", "{v}");
    let (status, v) = http_request(
        addr,
        "POST",
        &format!("/api/reclaim/cases/{id}/agree"),
        None,
        "application/json",
        b"{}",
    )
    .await;
    assert_eq!(status, 401, "{v}");

    // an auditor reads the case but takes no step
    let v = case_json(addr, &p.auditor, id).await;
    assert_eq!(v["case"]["case"]["state"], "notified", "{v}");
    let q = get_json(addr, &p.auditor, "/api/reclaim/cases").await;
    assert_eq!(q["held_units"]["财政局"]["cases"], json!([id]), "{q}");
    let (status, v) = step(addr, id, "agree", &p.auditor, json!({})).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "forbidden", "{v}");
    assert_eq!(
        case_json(addr, ops, id).await["case"]["case"]["state"],
        "notified"
    );

    let (status, v) = step(addr, id, "dispute", &p.unit, json!({"reason": ""})).await;
    assert_eq!(status, 400, "a dispute needs a reason: {v}");
    assert_eq!(v["code"], "case_reason_required", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("须填写理由"),
        "the reason in zh-CN: {v}"
    );
    ok_step(
        addr,
        id,
        "agree",
        &p.unit,
        json!({"reason": "数据已备份，同意回收"}),
    )
    .await;
    eventually("the notice cleared once answered", WAIT, || notice(false)).await;
    ok_step(addr, id, "file", &p.ops, json!({})).await;
    let v = case_json(addr, ops, id).await;
    assert_eq!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect::<Vec<_>>(),
        // the unit may already confirm its handover (data migrated or backed up) of a stop
        ["handover", "approve", "reject", "withdraw"]
    );
    assert!(v["case"]["deadline"].is_string());
    ok_step(addr, id, "approve", &p.chief, json!({"reason": "同意"})).await;
    let (status, _) = step(addr, id, "schedule", &p.ops, json!({})).await;
    assert_eq!(status, 400, "schedule needs a time");
    let (_, _) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(&p.ops),
        "application/json",
        body.as_bytes(),
    )
    .await;
    ok_step(addr, id, "schedule", &p.ops, json!({"at_ms": now_ms()})).await;

    // executed (stop with snapshot), then verified from the guest list
    let v = wait_state(addr, ops, id, "verified").await;
    assert_eq!(v["commands"][0]["status"], "succeeded");
    assert!(v["commands"][0]["message"]
        .as_str()
        .unwrap()
        .contains("snapshot"));
    let node = get_json(addr, ops, &format!("/api/nodes/{HOST}")).await;
    assert!(node.to_string().contains("\"running\":false"), "{node}");

    // a rollback restores it (authority, with a reason)
    let (status, _) = step(addr, id, "rollback", &p.chief, json!({})).await;
    assert_eq!(status, 400, "rollback needs a reason");
    ok_step(
        addr,
        id,
        "rollback",
        &p.chief,
        json!({"reason": "单位要求恢复"}),
    )
    .await;
    let v = wait_state(addr, ops, id, "rolled_back").await;
    assert_eq!(v["commands"].as_array().unwrap().len(), 2);
    assert!(
        host.hv.lock().unwrap().guests[0].running,
        "the VM runs again"
    );
    eventually("the guest list shows it running", WAIT, || async move {
        let n = get_json(addr, ops, &format!("/api/nodes/{HOST}")).await;
        n.to_string().contains("\"running\":true").then_some(())
    })
    .await;

    // the audit trail: who, role, when, why for every step
    let audit = get_json(
        addr,
        &p.auditor,
        &format!("/api/audit?subject=reclaim:{id}&limit=100"),
    )
    .await;
    let entries = audit
        .as_array()
        .or(audit["entries"].as_array())
        .expect("audit entries")
        .clone();
    let actions: Vec<String> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "reclaim.detect",
        "reclaim.notify",
        "reclaim.agree",
        "reclaim.file",
        "reclaim.approve",
        "reclaim.schedule",
        "reclaim.execute",
        "reclaim.succeeded",
        "reclaim.verify",
        "reclaim.rollback",
        "reclaim.rolled_back",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let agree = entries
        .iter()
        .find(|e| e["action"] == "reclaim.agree")
        .unwrap();
    assert_eq!(agree["actor"], "czj-li");
    assert_eq!(agree["detail"]["role"], "unit");
    assert_eq!(agree["detail"]["reason"], "数据已备份，同意回收");

    // a second case on the same VM goes on to closed: after the hold (0 days here) the release
    let id2 = open_and_schedule(addr, &p).await;
    assert_ne!(id2, id);
    wait_state(addr, ops, id2, "verified").await;
    let (status, v) = step(addr, id2, "close", &p.unit, json!({})).await;
    assert_eq!(status, 403, "{v}");
    // the release waits for the unit's handover (its data migrated or backed up)
    let (status, v) = step(addr, id2, "close", &p.ops, json!({})).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("case_handover_required")),
        "{v}"
    );
    ok_step(
        addr,
        id2,
        "handover",
        &p.unit,
        json!({"reason": "数据已迁移"}),
    )
    .await;
    ok_step(addr, id2, "close", &p.ops, json!({})).await;
    let v = wait_state(addr, ops, id2, "closed").await;
    let kinds: Vec<Value> = v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].clone())
        .collect();
    assert!(
        kinds[0].get("Stop").is_some() && kinds[1].get("ReleaseAndWipe").is_some(),
        "{kinds:?}"
    );
    // the host's wipe evidence, sent before its result over MQTT, is on the case's timeline
    let released = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["step"] == "released")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    let disk = &released["detail"]["evidence"]["Wipe"]["disks"][0];
    assert_eq!(disk["target"], "vda", "{released}");
    assert_eq!(disk["state"]["Wiped"]["deleted"], true, "{released}");
    assert!(host.hv.lock().unwrap().guests.is_empty(), "released");
    // closed: the hold on 财政局's requests is lifted
    let q = get_json(addr, ops, "/api/reclaim/cases").await;
    assert!(q["held_units"].get("财政局").is_none(), "{q}");
    let (status, v) = import(addr, ops, 1).await;
    assert_eq!(status, 200, "{v}");
    // the pages are served to the signed-in
    for token in [ops, &p.unit, &p.auditor] {
        let (status, _) =
            http_request(addr, "GET", "/reclaim", Some(token), "text/plain", b"").await;
        assert_eq!(status, 200);
        let (status, _) = http_request(
            addr,
            "GET",
            &format!("/reclaim/{id}"),
            Some(token),
            "text/plain",
            b"",
        )
        .await;
        assert_eq!(status, 200);
    }
    agg.shutdown().await;
}
