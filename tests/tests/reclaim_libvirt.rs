//! Reclaim cases carried out by a REAL host agent: the real aggregator (embedded broker, JSON
//! API), the `yunjian-agent` binary built with the `libvirt` feature, and libvirt's test driver
//! (`test:///<tmp>/domains.xml`). Three cases on one VM, each walked through the API:
//! idle → stop (snapshot first) → verified from the agent's guest list and the VM's own agent
//! going offline → rollback → running; over-provisioned → downsize → verified at the new size
//! (host and VM agree) → closed; idle → stop → closed after the hold → released (gone from
//! libvirt). The VM's own agent is played by the test (the test driver runs no guest).
//!
//! The agent start-up follows `libvirt_exec.rs`. Needs `virsh` (libvirt-clients) and
//! libvirt-dev; without them the test prints SKIP, and fails under CI. People are users seeded
//! into the aggregator's storage, calling with API tokens.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use yunjian_agent::publish::config::{BufferConfig, MqttConfig};
use yunjian_agent::publish::{Identity, Publisher};
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator::reclaim::Role;
use yunjian_protocol::{Inventory, NodeKey, Role as ProtoRole};
use yunjian_tests::{eventually, free_port, get_json, http_request, require_tool, seed_users};

const NODE: &str = "hv-reclaim-1";
const VM_A: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";
const WAIT: Duration = Duration::from_secs(30);
const GIB: u64 = 1 << 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

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

/// The agent process, killed on drop (its log printed when the test fails).
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- agent log -----\n{log}\n---------------------");
        }
    }
}

/// The VM's own agent (the real publisher, enrolled as a guest, reporting VM_A's SMBIOS UUID).
/// libvirt's test driver runs no guest, so the test plays the VM: its agent runs while the
/// domain runs, as the host reports it, and reports the domain's size (a downsized VM comes
/// back with its new size). A case is verified only when this agent agrees with the host.
fn follow_the_domain(addr: SocketAddr, ops: String, mqtt: MqttConfig, key: NodeKey) {
    tokio::spawn(async move {
        let inventory = |(vcpus, mem_kib): (u64, u64)| Inventory {
            hostname: "vm-a".into(),
            role: ProtoRole::Guest,
            os: "openEuler 22.03".into(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: vcpus as u16,
            mem_total_kib: mem_kib,
            disks: vec![],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: Some(VM_A.into()),
            rack: None,
        };
        let mut vm: Option<(Publisher, (u64, u64))> = None;
        loop {
            let g = guest(addr, &ops).await;
            let running = g.as_ref().is_some_and(|g| g["running"] == true);
            let size = g.as_ref().map_or((0, 0), |g| {
                (g["vcpus"].as_u64().unwrap(), g["mem_kib"].as_u64().unwrap())
            });
            match vm.take() {
                Some((agent, _)) if !running => agent.shutdown().await,
                Some((agent, was)) if was != size => {
                    agent.set_inventory(inventory(size)).await;
                    vm = Some((agent, size));
                }
                other => vm = other,
            }
            if running && vm.is_none() {
                let identity = Identity {
                    node: "vm-a".into(),
                    key: key.clone(),
                    role: ProtoRole::Guest,
                    agent_version: "test".into(),
                    interval_ms: 1_000,
                };
                let buffer = BufferConfig {
                    dir: None,
                    max_bytes: 1 << 20,
                };
                let (agent, _commands) = Publisher::start(&mqtt, &buffer, identity).await.unwrap();
                agent.set_inventory(inventory(size)).await;
                vm = Some((agent, size));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

fn start_agent(bin: &Path, dir: &Path, broker_port: u16, uri: &str) -> Agent {
    let config = yunjian_tests::write_hypervisor_agent_config(dir, NODE, broker_port, uri);
    let log = dir.join("agent.log");
    let child = Process::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the agent starts");
    Agent { child, log }
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

async fn ok_step(addr: SocketAddr, case: u64, step: &str, token: &str, body: Value) {
    let (status, v) = http_request(
        addr,
        "POST",
        &format!("/api/reclaim/cases/{case}/{step}"),
        Some(token),
        "application/json",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{step}: {v}");
}

/// The people of the scenario, by their API tokens.
struct People {
    ops: String,
    chief: String,
    /// 财政局's, whose system holds the VM.
    unit: String,
}

async fn detect(addr: SocketAddr, ops: &str, kind: Value) -> Option<u64> {
    let (status, v) = http_request(
        addr,
        "POST",
        "/api/reclaim/detections",
        Some(ops),
        "application/json",
        json!([{"uuid": VM_A, "kind": kind, "evidence": {"cpu_p95_pct": 0.5}}])
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["opened"][0].as_u64()
}

/// Open a case of `kind` and walk it to `scheduled`, due now.
async fn walk_to_schedule(addr: SocketAddr, p: &People, kind: Value) -> u64 {
    let id = detect(addr, &p.ops, kind.clone())
        .await
        .expect("a case is opened");
    ok_step(addr, id, "notify", &p.ops, json!({})).await;
    ok_step(addr, id, "agree", &p.unit, json!({"reason": "同意"})).await;
    ok_step(addr, id, "file", &p.ops, json!({})).await;
    ok_step(addr, id, "approve", &p.chief, json!({})).await;
    assert_eq!(
        detect(addr, &p.ops, kind).await,
        None,
        "fresh finding, no new case"
    );
    ok_step(addr, id, "schedule", &p.ops, json!({"at_ms": now_ms()})).await;
    id
}

async fn wait_state(addr: SocketAddr, token: &str, id: u64, state: &str) -> Value {
    eventually(&format!("case {id} {state}"), WAIT, || async move {
        let v = get_json(addr, token, &format!("/api/reclaim/cases/{id}")).await;
        let now = v["case"]["case"]["state"].clone();
        assert!(
            now != "execution_failed",
            "the agent refused or failed: {v}"
        );
        (now == state).then_some(v)
    })
    .await
}

async fn guest(addr: SocketAddr, token: &str) -> Option<Value> {
    let v = get_json(addr, token, &format!("/api/nodes/{NODE}")).await;
    v["state"]["guests"]
        .as_array()?
        .iter()
        .find(|g| g["uuid"] == VM_A)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_cases_run_against_a_real_agent_and_libvirts_test_driver() {
    if require_tool(&["virsh"], "libvirt-clients libvirt-dev").is_none() {
        return;
    }
    let bin = tokio::task::spawn_blocking(|| yunjian_tests::agent_binary(&["libvirt"]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.xml");
    std::fs::write(&domains, domains_xml()).unwrap();
    std::fs::create_dir(dir.path().join("buffer")).unwrap();
    let profile = yunjian_aggregator_core::policy::profile::BUILTIN
        .iter()
        .find(|(n, _)| *n == "003")
        .unwrap()
        .1
        .replace("hold_days = 92", "hold_days = 0");
    std::fs::write(dir.path().join("profile.toml"), profile).unwrap();

    let mut cfg = AggregatorConfig {
        data_dir: dir.path().join("aggregator"),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        policy_profile: dir.path().join("profile.toml").display().to_string(),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.reclaim.tick = Duration::from_millis(200);
    // libvirt's test driver has no volume wipe: released as before (the wiping release runs
    // against it in tests/tests/libvirt_exec.rs, where its refusal is the expected answer)
    cfg.reclaim.wipe_on_release = false;
    cfg.reclaim.resend_every = Duration::from_secs(2);
    let tokens = seed_users(
        &cfg,
        &[
            ("ops-zhang", Role::Ops, None),
            ("chief-wang", Role::Authority, None),
            ("czj-li", Role::Unit, Some("财政局")),
            ("audit-sun", Role::Auditor, None),
        ],
    );
    let p = People {
        ops: tokens[0].clone(),
        chief: tokens[1].clone(),
        unit: tokens[2].clone(),
    };
    let auditor = tokens[3].as_str();
    let ops = p.ops.as_str();
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    agg.master
        .node_key(NODE, ProtoRole::Host)
        .write_file(&dir.path().join("agent.key"))
        .unwrap();
    let csv = format!(
        "\u{feff}序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID\n1,政务外网区,浪潮,预算一体化,,APP,王五,wangwu@gov.cn,13700000000,4,4,60,300,openEuler 22.03,否,,,{VM_A}\n"
    );
    let (status, v) = http_request(
        addr,
        "POST",
        &format!("/api/register/import?unit={}&format=csv", pct("财政局")),
        Some(ops),
        "text/csv",
        csv.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let _agent = start_agent(
        &bin,
        dir.path(),
        cfg.broker.listen.port(),
        &format!("test://{}", domains.display()),
    );
    eventually("vm-a in the agent's guest list", WAIT, || async move {
        let (status, _) = yunjian_tests::http_get(addr, ops, &format!("/api/nodes/{NODE}")).await;
        if status != 200 {
            return None;
        }
        guest(addr, ops).await.filter(|g| g["running"] == true)
    })
    .await;
    let mqtt = MqttConfig {
        host: "127.0.0.1".into(),
        port: cfg.broker.listen.port(),
        backoff_min_ms: 50,
        backoff_max_ms: 300,
        ..MqttConfig::default()
    };
    follow_the_domain(
        addr,
        p.ops.clone(),
        mqtt,
        agg.master.node_key("vm-a", ProtoRole::Guest),
    );

    // 1. idle: stop with a snapshot, verified from the guest list, then rolled back
    let id = walk_to_schedule(addr, &p, json!({"kind": "idle"})).await;
    let v = wait_state(addr, ops, id, "verified").await;
    let cmd = &v["commands"][0];
    assert_eq!(
        (cmd["status"].as_str(), cmd["node"].as_str()),
        (Some("succeeded"), Some(NODE))
    );
    assert!(
        cmd["message"].as_str().unwrap().contains("taken first"),
        "{cmd}"
    );
    assert_eq!(guest(addr, ops).await.unwrap()["running"], false);
    // no token: not signed in; an auditor reads the case but takes no step
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
    let v = get_json(addr, auditor, &format!("/api/reclaim/cases/{id}")).await;
    assert_eq!(v["case"]["case"]["state"], "verified", "{v}");
    let (status, v) = http_request(
        addr,
        "POST",
        &format!("/api/reclaim/cases/{id}/rollback"),
        Some(auditor),
        "application/json",
        json!({"reason": "单位要求恢复"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "forbidden", "{v}");
    ok_step(
        addr,
        id,
        "rollback",
        &p.chief,
        json!({"reason": "单位要求恢复"}),
    )
    .await;
    wait_state(addr, ops, id, "rolled_back").await;
    eventually("vm-a running again", WAIT, || async move {
        guest(addr, ops).await.filter(|g| g["running"] == true)
    })
    .await;

    // 2. over-provisioned: downsized to 2 vCPU / 2 GiB, verified, closed
    let id = walk_to_schedule(
        addr,
        &p,
        json!({"kind": "over_provisioned", "recommended": {"vcpus": 2, "mem_kib": 2 * GIB}}),
    )
    .await;
    wait_state(addr, ops, id, "verified").await;
    let g = guest(addr, ops).await.unwrap();
    assert_eq!(
        (g["vcpus"].as_u64(), g["mem_kib"].as_u64()),
        (Some(2), Some(2 * GIB))
    );
    ok_step(addr, id, "close", ops, json!({})).await;
    wait_state(addr, ops, id, "closed").await;

    // 3. idle again: stopped, then closed after the hold (0 days here): released
    let id = walk_to_schedule(addr, &p, json!({"kind": "idle"})).await;
    wait_state(addr, ops, id, "verified").await;
    // the unit's handover (data migrated or backed up) before anything is destroyed
    ok_step(
        addr,
        id,
        "handover",
        &p.unit,
        json!({"reason": "数据已备份"}),
    )
    .await;
    ok_step(addr, id, "close", ops, json!({})).await;
    let v = wait_state(addr, ops, id, "closed").await;
    assert!(v["commands"][1]["action"].get("Release").is_some(), "{v}");
    eventually("vm-a gone from libvirt", WAIT, || async move {
        guest(addr, ops).await.is_none().then_some(())
    })
    .await;
    agg.shutdown().await;
}
