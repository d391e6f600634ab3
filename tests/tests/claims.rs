//! Who may claim a VM, end to end: the real aggregator (embedded broker, SQLite, JSON API) and
//! agents made of the real agent publisher, each enrolled with a key bound to its role (host or
//! guest), sending real signed frames. A reclaim case for one VM is walked to its stop command.
//!
//! * `a_vm_listing_another_vm_is_refused_and_the_stop_goes_to_the_real_host`: a node enrolled as
//!   a guest sends a guest list naming the VM (and a Hello claiming to be a host): both refused
//!   and counted; the stop goes to the real host only.
//! * `a_vm_claiming_another_vms_smbios_uuid_does_not_capture_it`: two VMs report one SMBIOS
//!   UUID: an alarm, no host shown for the impostor, the stop held until the claim is gone.
//! * `two_hosts_listing_one_vm_raise_an_alarm_and_hold_the_command`: the same for two hosts.
//! * `a_host_answering_ok_without_the_vm_agreeing_is_not_a_done_stop`: the host says "ok" and
//!   even lists the VM stopped, but the VM's own agent keeps reporting: the case is not
//!   verified; past the verification deadline it is `execution_failed`. The honest path (the
//!   VM's agent goes offline with the VM) is verified in `reclaim.rs`.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use yunjian_agent::publish::config::{BufferConfig, MqttConfig};
use yunjian_agent::publish::{Identity, Publisher};
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_protocol::{Action, Body, CommandResult, GuestView, Inventory, Role};
use yunjian_tests::{eventually, free_port, get_json, http_get, http_request, seed_users};

const UUID: &str = "4c4c4544-0052-3510-8052-b4c04f4d3332";
const HOST: &str = "rack1-h01";
const VM: &str = "czj-budget-01";
const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn config(dir: &Path, verify_within: Duration) -> AggregatorConfig {
    let mut cfg = AggregatorConfig {
        data_dir: dir.join("data"),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        policy_interval: Duration::from_millis(200),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.reclaim.tick = Duration::from_millis(100);
    cfg.reclaim.resend_every = Duration::from_millis(500);
    cfg.reclaim.verify_within = verify_within;
    cfg
}

struct People {
    ops: String,
    chief: String,
    unit: String,
}

fn people(cfg: &AggregatorConfig) -> People {
    let mut t = seed_users(
        cfg,
        &[
            ("ops-zhang", UserRole::Ops, None),
            ("chief-wang", UserRole::Authority, None),
            ("czj-li", UserRole::Unit, Some("财政局")),
        ],
    )
    .into_iter();
    let mut next = || t.next().unwrap();
    People {
        ops: next(),
        chief: next(),
        unit: next(),
    }
}

const CSV_HEADER: &str = "序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID\n";

/// Register 财政局's system holding the VM.
async fn import(addr: SocketAddr, ops: &str) {
    let csv = format!("\u{feff}{CSV_HEADER}1,政务外网区,浪潮,预算一体化,,APP,王五,wangwu@gov.cn,13700000000,8,16,60,300,openEuler 22.03,否,,,{UUID}\n");
    let (status, v) = http_request(
        addr,
        "POST",
        "/api/register/import?unit=%E8%B4%A2%E6%94%BF%E5%B1%80&format=csv",
        Some(ops),
        "text/csv",
        csv.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

async fn ok_step(addr: SocketAddr, case: u64, name: &str, token: &str, body: Value) {
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

/// Open a stop case for the VM and walk it to `scheduled` (due now); returns its id.
async fn open_and_schedule(addr: SocketAddr, p: &People) -> u64 {
    let detect = || async {
        let (status, v) = http_request(
            addr,
            "POST",
            "/api/reclaim/detections",
            Some(&p.ops),
            "application/json",
            json!([{"uuid": UUID, "kind": {"kind": "idle"}, "evidence": {"cpu_p95_pct": 0.8}}])
                .to_string()
                .as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        v
    };
    let id = detect().await["opened"][0]
        .as_u64()
        .expect("a case is opened");
    ok_step(addr, id, "notify", &p.ops, json!({})).await;
    ok_step(addr, id, "agree", &p.unit, json!({"reason": "系统已停用"})).await;
    ok_step(addr, id, "file", &p.ops, json!({})).await;
    ok_step(addr, id, "approve", &p.chief, json!({})).await;
    // the re-check before acting needs a fresh finding
    detect().await;
    ok_step(addr, id, "schedule", &p.ops, json!({"at_ms": now_ms()})).await;
    id
}

async fn case_json(addr: SocketAddr, token: &str, id: u64) -> Value {
    get_json(addr, token, &format!("/api/reclaim/cases/{id}")).await
}

async fn wait_case(
    addr: SocketAddr,
    token: &str,
    id: u64,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("case {id}: {what}"), WAIT, || {
        let ok = &ok;
        async move {
            let v = case_json(addr, token, id).await;
            ok(&v).then_some(v)
        }
    })
    .await
}

/// An agent: the real publisher, signing with the key of `node` enrolled as `enrolled`, and
/// declaring itself `declared` (a hostile agent may lie about its role).
async fn agent(
    cfg: &AggregatorConfig,
    agg: &Aggregator,
    node: &str,
    enrolled: Role,
    declared: Role,
) -> (
    Publisher,
    tokio::sync::mpsc::Receiver<yunjian_protocol::Command>,
) {
    let mqtt = MqttConfig {
        host: "127.0.0.1".into(),
        port: cfg.broker.listen.port(),
        backoff_min_ms: 50,
        backoff_max_ms: 300,
        ..MqttConfig::default()
    };
    let identity = Identity {
        node: node.into(),
        key: agg.master.node_key(node, enrolled),
        role: declared,
        agent_version: "test".into(),
        interval_ms: 10_000,
    };
    let buffer = BufferConfig {
        dir: None,
        max_bytes: 1 << 20,
    };
    Publisher::start(&mqtt, &buffer, identity).await.unwrap()
}

fn listed(running: bool) -> GuestView {
    GuestView {
        uuid: UUID.into(),
        name: VM.into(),
        vcpus: 8,
        mem_kib: 16 << 20,
        disk_kib: 360 << 20,
        running,
    }
}

fn vm_inventory(hostname: &str, uuid: &str) -> Inventory {
    Inventory {
        hostname: hostname.into(),
        role: Role::Guest,
        os: "openEuler 22.03".into(),
        kernel: String::new(),
        cpu_model: String::new(),
        cpu_cores: 8,
        mem_total_kib: 16 << 20,
        disks: vec![],
        nics: vec![],
        machine_id: String::new(),
        smbios_uuid: Some(uuid.into()),
        rack: None,
    }
}

/// The VM's own agent (enrolled as a guest, reporting the VM's SMBIOS UUID).
async fn vm_agent(cfg: &AggregatorConfig, agg: &Aggregator, node: &str, uuid: &str) -> Publisher {
    let (p, _commands) = agent(cfg, agg, node, Role::Guest, Role::Guest).await;
    p.set_inventory(vm_inventory(node, uuid)).await;
    p
}

/// A hypervisor host listing the VM. On a stop it answers "ok" and lists the VM stopped; an
/// honest host really stops it, which takes the VM's agent (`vm`) offline with it. Returns
/// the actions it received.
async fn host(
    cfg: &AggregatorConfig,
    agg: &Aggregator,
    node: &str,
    vm: Option<Publisher>,
    honest: bool,
) -> (Arc<Publisher>, Arc<Mutex<Vec<Action>>>) {
    let (publisher, mut commands) = agent(cfg, agg, node, Role::Host, Role::Host).await;
    let publisher = Arc::new(publisher);
    let received = Arc::new(Mutex::new(Vec::new()));
    let (p, r) = (publisher.clone(), received.clone());
    tokio::spawn(async move {
        let mut vm = vm;
        while let Some(cmd) = commands.recv().await {
            r.lock().unwrap().push(cmd.action.clone());
            if honest {
                if let Some(vm) = vm.take() {
                    vm.shutdown().await;
                }
            }
            p.send_result(CommandResult {
                id: cmd.id,
                ok: true,
                message: "stopped".into(),
            })
            .await;
            let _ = p.send(now_ms(), Body::Guests(vec![listed(false)])).await;
        }
    });
    (publisher, received)
}

async fn node_json(addr: SocketAddr, token: &str, node: &str) -> Value {
    get_json(addr, token, &format!("/api/nodes/{node}")).await
}

/// Wait until `node` is online at the aggregator and `check` holds of its JSON.
async fn wait_node(
    addr: SocketAddr,
    token: &str,
    node: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("{node}: {what}"), WAIT, || {
        let check = &check;
        async move {
            let (status, body) = http_get(addr, token, &format!("/api/nodes/{node}")).await;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (status == 200 && v["state"]["liveness"] == "online" && check(&v)).then_some(v)
        }
    })
    .await
}

fn lists_vm(v: &Value) -> bool {
    v["state"]["guests"].to_string().contains(UUID)
}

/// Once `node` is online (a guest list sent before could arrive after its Hello and count as
/// late), have it list the VM, and wait until the aggregator shows it.
async fn list_vm(addr: SocketAddr, token: &str, node: &str, host: &Publisher) {
    wait_node(addr, token, node, "online", |_| true).await;
    host.send(now_ms(), Body::Guests(vec![listed(true)]))
        .await
        .unwrap();
    wait_node(addr, token, node, "lists the VM", lists_vm).await;
}

async fn metric(addr: SocketAddr, token: &str, name: &str) -> u64 {
    let (status, text) = http_get(addr, token, "/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics"))
}

async fn open_alarms(addr: SocketAddr, token: &str, rule: &str) -> Vec<Value> {
    let v = get_json(addr, token, "/api/alarms").await;
    v["open"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["key"]["rule"] == rule)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_listing_another_vm_is_refused_and_the_stop_goes_to_the_real_host() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Duration::from_secs(60));
    let p = people(&cfg);
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    import(addr, ops).await;
    let vm = vm_agent(&cfg, &agg, VM, UUID).await;
    let (h, at_host) = host(&cfg, &agg, HOST, Some(vm), true).await;
    list_vm(addr, ops, HOST, &h).await;

    // a VM (enrolled as a guest) names the VM in a guest list, once as a guest and once
    // pretending to be a host in its Hello: everything that claims is refused and counted
    let (evil, mut evil_commands) = agent(&cfg, &agg, "vm-evil", Role::Guest, Role::Guest).await;
    let (liar, mut liar_commands) = agent(&cfg, &agg, "vm-liar", Role::Guest, Role::Host).await;
    for a in [&evil, &liar] {
        a.send(now_ms(), Body::Guests(vec![listed(true)]))
            .await
            .unwrap();
    }
    wait_node(addr, ops, "vm-evil", "its Hello applied", |v| {
        v["summary"]["role"] == "guest"
    })
    .await;
    eventually("3 refusals counted", WAIT, || async {
        // vm-evil's guest list; vm-liar's Hello and guest list
        (metric(addr, ops, "yunjian_role_refused_total").await >= 3).then_some(())
    })
    .await;
    let evil_seen = node_json(addr, ops, "vm-evil").await;
    assert!(
        !lists_vm(&evil_seen),
        "a VM's guest list was applied: {evil_seen}"
    );
    let liar_seen = node_json(addr, ops, "vm-liar").await;
    assert_eq!(liar_seen["summary"]["role"], Value::Null, "{liar_seen}");
    assert!(!lists_vm(&liar_seen), "{liar_seen}");

    let id = open_and_schedule(addr, &p).await;
    let v = wait_case(addr, ops, id, "verified", |v| {
        v["case"]["case"]["state"] == "verified"
    })
    .await;
    assert_eq!(v["case"]["case"]["host"], HOST, "{v}");
    let actions = at_host.lock().unwrap().clone();
    assert!(
        matches!(actions.as_slice(), [Action::Stop(vm, _)] if vm.uuid == UUID),
        "{actions:?}"
    );
    assert!(evil_commands.try_recv().is_err() && liar_commands.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_claiming_another_vms_smbios_uuid_does_not_capture_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Duration::from_secs(60));
    let p = people(&cfg);
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    import(addr, ops).await;
    let vm = vm_agent(&cfg, &agg, VM, UUID).await;
    let (h, at_host) = host(&cfg, &agg, HOST, Some(vm), true).await;
    list_vm(addr, ops, HOST, &h).await;
    wait_node(addr, ops, VM, "joined to its host", |v| {
        v["summary"]["host"] == HOST
    })
    .await;

    // another VM reports the same SMBIOS UUID as its own
    let evil = vm_agent(&cfg, &agg, "vm-evil", UUID).await;
    let alarm = eventually("the claim conflict alarm", WAIT, || async {
        open_alarms(addr, ops, "vm_claim_conflict").await.pop()
    })
    .await;
    assert_eq!(alarm["key"]["subject"], format!("vm:{UUID}"));
    assert_eq!(alarm["level"], "major");
    let title = alarm["title"].as_str().unwrap();
    assert!(title.contains("czj-budget-01、vm-evil"), "{title}");
    // the impostor is not shown on the VM's host (nor is the VM while contested)
    let seen = wait_node(addr, ops, "vm-evil", "its inventory applied", |v| {
        v["state"]["inventory"]["smbios_uuid"] == UUID
    })
    .await;
    assert_eq!(seen["summary"]["host"], Value::Null, "{seen}");
    let real = node_json(addr, ops, VM).await;
    assert_eq!(real["summary"]["host"], Value::Null, "{real}");

    // the stop waits, saying why on the case; nothing reaches the host
    let id = open_and_schedule(addr, &p).await;
    let v = wait_case(addr, ops, id, "held with a reason", |v| {
        v["case"]["case"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("归属冲突"))
    })
    .await;
    assert_eq!(v["case"]["case"]["state"], "scheduled", "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(at_host.lock().unwrap().is_empty(), "a command went out");

    // resolved (the impostor reports its own UUID): the alarm clears, the stop goes out
    evil.set_inventory(vm_inventory(
        "vm-evil",
        "4c4c4544-0000-0000-0000-00000000e711",
    ))
    .await;
    eventually("the alarm cleared", WAIT, || async {
        open_alarms(addr, ops, "vm_claim_conflict")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    wait_case(addr, ops, id, "verified", |v| {
        v["case"]["case"]["state"] == "verified"
    })
    .await;
    assert_eq!(at_host.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_listing_one_vm_raise_an_alarm_and_hold_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Duration::from_secs(60));
    let p = people(&cfg);
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    import(addr, ops).await;
    let vm = vm_agent(&cfg, &agg, VM, UUID).await;
    let (h1, at_h1) = host(&cfg, &agg, HOST, Some(vm), true).await;
    let (h2, at_h2) = host(&cfg, &agg, "rack9-h09", None, false).await;
    list_vm(addr, ops, HOST, &h1).await;
    list_vm(addr, ops, "rack9-h09", &h2).await;

    let alarm = eventually("the claim conflict alarm", WAIT, || async {
        open_alarms(addr, ops, "vm_claim_conflict").await.pop()
    })
    .await;
    let title = alarm["title"].as_str().unwrap();
    assert!(title.contains("rack1-h01、rack9-h09"), "{title}");

    let id = open_and_schedule(addr, &p).await;
    let v = wait_case(addr, ops, id, "held with a reason", |v| {
        v["case"]["case"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("归属冲突") && n.contains("rack9-h09"))
    })
    .await;
    assert_eq!(v["case"]["case"]["state"], "scheduled", "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(at_h1.lock().unwrap().is_empty() && at_h2.lock().unwrap().is_empty());

    // the second host lets go: the stop goes to the one host left
    h2.send(now_ms(), Body::Guests(vec![])).await.unwrap();
    wait_case(addr, ops, id, "verified", |v| {
        v["case"]["case"]["state"] == "verified"
    })
    .await;
    assert_eq!(at_h1.lock().unwrap().len(), 1);
    assert!(at_h2.lock().unwrap().is_empty());
    eventually("the alarm cleared", WAIT, || async {
        open_alarms(addr, ops, "vm_claim_conflict")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_answering_ok_without_the_vm_agreeing_is_not_a_done_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Duration::from_secs(3));
    let p = people(&cfg);
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    import(addr, ops).await;
    // the VM's agent keeps running: the host never stops it, yet says it did
    let _vm = vm_agent(&cfg, &agg, VM, UUID).await;
    let (h, at_host) = host(&cfg, &agg, HOST, None, false).await;
    list_vm(addr, ops, HOST, &h).await;
    wait_node(addr, ops, VM, "online", |_| true).await;

    let id = open_and_schedule(addr, &p).await;
    let v = wait_case(
        addr,
        ops,
        id,
        "executed, waiting for the VM to agree",
        |v| {
            v["case"]["case"]["state"] == "executed"
                && v["case"]["case"]["note"]
                    .as_str()
                    .is_some_and(|n| n.contains(VM) && n.contains("仍在线"))
        },
    )
    .await;
    assert_eq!(v["commands"][0]["status"], "succeeded", "{v}");
    let v = wait_case(addr, ops, id, "execution_failed", |v| {
        v["case"]["case"]["state"] == "execution_failed"
    })
    .await;
    let text = v.to_string();
    assert!(text.contains("执行结果未获证实"), "{text}");
    assert!(!text.contains("\"verified\""), "never verified: {text}");
    assert_eq!(at_host.lock().unwrap().len(), 1);
}
