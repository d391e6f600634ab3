//! A using unit (使用单位) reads its own systems only (004, 003 第十五条): for every read
//! route of the authorisation table a unit user may take, a unit user of 市财政局 gets its
//! own VMs and nothing of 市教育局 (unit name, VM ids, UUIDs, contacts), nothing of the host
//! that runs them and nothing of unregistered VMs; another unit's object answers 404. The
//! same requests from an ops user show 市教育局's data, so the test fails if a filter is lost.

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::web::authz::{Access, Action, ROUTES};
use yunjian_aggregator::web::{router, AppState};
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_aggregator_core::register::{Register, ServerType, VmAllocation};
use yunjian_aggregator_core::usage::{ExemptReason, Exemption};
use yunjian_protocol::{Body, Envelope, GuestView, Hello, Inventory, Memory, Report, Role, Status};

const GIB: u64 = 1024 * 1024;
const DAY_MS: u64 = 86_400_000;
/// Event time of the first usage sample: a Beijing midnight.
const T0: u64 = 1_700_000_000_000 / DAY_MS * DAY_MS - 8 * 3_600_000;

const HOST: &str = "host-jf01";
const A_UNIT: &str = "市财政局";
const A_NODE: &str = "vm-czj-01";
const A_UUID: &str = "4c4c4544-0000-0000-0000-00000000a001";
const B_UNIT: &str = "市教育局";
const B_NODE: &str = "vm-jyj-01";
const B_UUID: &str = "4c4c4544-0000-0000-0000-00000000b001";
const B_PHONE: &str = "13900000002";
const B_EMAIL: &str = "zhao@jyj.gov.cn";
const STRAY_NODE: &str = "vm-stray";
const STRAY_UUID: &str = "4c4c4544-0000-0000-0000-00000000c001";

/// A name nothing has.
const GHOST: &str = "4c4c4544-0000-0000-0000-00000000dead";

/// What a unit user of 市财政局 must never read.
const NOT_A_UNITS: [&str; 8] = [
    B_UNIT, B_NODE, B_UUID, B_PHONE, B_EMAIL, HOST, STRAY_NODE, STRAY_UUID,
];

fn report(cpu_pct: u16) -> Report {
    Report {
        cpu_busy: cpu_pct * 100,
        per_core: vec![cpu_pct * 100; 8],
        load: [0; 3],
        mem: Memory {
            total_kib: 16 * GIB,
            used_kib: 2 * GIB,
            available_kib: 14 * GIB,
            swap_total_kib: 0,
            swap_used_kib: 0,
        },
        disks: vec![],
        nets: vec![],
        uptime_s: 3_600,
        failed: vec![],
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Online, Hello, Inventory, then `rest`.
fn node(fleet: &mut Fleet, id: &str, role: Role, uuid: Option<&str>, rest: Vec<Body>) {
    let at = now_ms();
    fleet.apply(Envelope::new(id, 0, at, Body::Status(Status::Online)), at);
    let hello = Body::Hello(Hello {
        agent_version: "0.1.0".into(),
        role,
        interval_ms: 10_000,
        buffered: 0,
        epoch: 1,
    });
    let inventory = Body::Inventory(Inventory {
        hostname: format!("{id}.local"),
        role,
        os: "openEuler 22.03".into(),
        kernel: "5.10.0".into(),
        cpu_model: "Kunpeng 920".into(),
        cpu_cores: 8,
        mem_total_kib: 16 * GIB,
        disks: vec![],
        nics: vec!["eth0".into()],
        machine_id: format!("mid-{id}"),
        smbios_uuid: uuid.map(Into::into),
        rack: Some("R1".into()),
    });
    for (i, body) in [hello, inventory, Body::Report(report(1))]
        .into_iter()
        .chain(rest)
        .enumerate()
    {
        fleet.apply(Envelope::new(id, i as u64 + 1, at, body), at);
    }
}

fn guest(uuid: &str) -> GuestView {
    GuestView {
        uuid: uuid.into(),
        name: format!("domain-{uuid}"),
        vcpus: 8,
        mem_kib: 16 * GIB,
        disk_kib: 100 * GIB,
        running: true,
    }
}

/// A row of 附件3 approved at 2 vCPUs: the 8 the VM runs with break its allocation.
fn allocation(unit: &str, owner: &str, email: &str, phone: &str, uuid: &str) -> VmAllocation {
    VmAllocation {
        zone: "政务外网区".into(),
        developer: "浪潮".into(),
        unit: unit.into(),
        system: format!("{unit}业务系统"),
        subsystem: String::new(),
        server_type: ServerType::App,
        owner: owner.into(),
        email: email.into(),
        phone: phone.into(),
        vcpus: 2,
        mem_gb: 16,
        sys_disk_gb: 60,
        data_disk_gb: 300,
        os: "openEuler 22.03".into(),
        clustered: false,
        cluster_group: String::new(),
        note: String::new(),
        uuid: Some(uuid.into()),
        term: Default::default(),
    }
}

/// One host running a VM of each unit and one nobody registered; both units' VMs idle for
/// 17 days with an exemption each (expired), and over their approved vCPUs; 市财政局's down.
fn state() -> AppState {
    let mut fleet = Fleet::new();
    node(
        &mut fleet,
        HOST,
        Role::Host,
        None,
        vec![Body::Guests(vec![
            guest(A_UUID),
            guest(B_UUID),
            guest(STRAY_UUID),
        ])],
    );
    for (id, uuid) in [(A_NODE, A_UUID), (B_NODE, B_UUID), (STRAY_NODE, STRAY_UUID)] {
        node(&mut fleet, id, Role::Guest, Some(uuid), vec![]);
    }
    // 市财政局's VM goes down: its alarm's evidence names the host it ran on
    fleet.apply(
        Envelope::new(A_NODE, 9, now_ms(), Body::Status(Status::Offline)),
        now_ms(),
    );
    // the stream ends after its first frame: nothing will change
    let (_, changes) = tokio::sync::watch::channel(0);
    let mut state = AppState::new(
        Arc::new(std::sync::RwLock::new(fleet)),
        Arc::new(Metrics::default()),
        changes,
    );
    let register = Register {
        vms: vec![
            allocation(A_UNIT, "钱一", "qian@czj.gov.cn", "13700000001", A_UUID),
            allocation(B_UNIT, "赵二", B_EMAIL, B_PHONE, B_UUID),
        ],
        ..Register::default()
    };
    // the rules' alarms: both VMs over their approved vCPUs
    state
        .policy
        .lock()
        .unwrap()
        .evaluate(&yunjian_aggregator_core::policy::Context {
            fleet: &state.fleet.read().unwrap(),
            register: &register,
            profile: &state.profile,
            // past the down node's grace
            now_ms: now_ms() + 600_000,
        });
    state.register = Arc::new(std::sync::RwLock::new(register));
    {
        let mut usage = state.usage.write().unwrap();
        let quiet = report(1);
        for vm in [A_UUID, B_UUID] {
            for minute in 0..17 * 24 * 60 {
                usage.history.record(vm, T0 + minute * 60_000, &quiet);
            }
        }
        for (id, vm) in [(1, A_UUID), (2, B_UUID)] {
            usage.exemptions.insert(Exemption {
                id,
                vm: vm.into(),
                reason: ExemptReason::TestPeriod,
                note: "试运行".into(),
                approver: "dsj-liu".into(),
                created_by: "dsj-liu".into(),
                created_ms: T0,
                expires_ms: T0 + DAY_MS,
                revoked: None,
            });
        }
    }
    state
}

/// The requests for one route pattern: the URI, what a unit user of 市财政局 gets, and
/// whether an ops user's answer names 市教育局's VM or unit.
fn requests(pattern: &str) -> Vec<(String, StatusCode, bool)> {
    let ok = StatusCode::OK;
    let missing = StatusCode::NOT_FOUND;
    let one = |uri: &str, shows_b: bool| vec![(uri.to_string(), ok, shows_b)];
    match pattern {
        "/" | "/alarms" | "/register" | "/antivirus" => one(pattern, false),
        "/api/alarms" => one(pattern, true),
        "/api/nodes" => vec![
            ("/api/nodes".into(), ok, true),
            ("/api/nodes?role=guest".into(), ok, true),
            ("/api/nodes?rack=R1".into(), ok, true),
        ],
        "/api/nodes/{id}" => vec![
            (format!("/api/nodes/{A_NODE}"), ok, false),
            (format!("/api/nodes/{B_NODE}"), missing, true),
            (format!("/api/nodes/{HOST}"), missing, true),
        ],
        "/api/events" | "/api/register" | "/api/quota" | "/api/antivirus" => one(pattern, true),
        "/api/register/export.xlsx" => vec![
            ("/api/register/export.xlsx".into(), ok, true),
            (
                format!("/api/register/export.xlsx?unit={}", enc(B_UNIT)),
                missing,
                true,
            ),
        ],
        "/api/usage/findings" | "/api/exemptions" => one(pattern, true),
        "/api/usage/{vm}/days" => vec![
            (format!("/api/usage/{A_UUID}/days"), ok, false),
            (format!("/api/usage/{B_UUID}/days"), missing, true),
        ],
        other => panic!("{other}: a unit may read it; say what it should see of it here"),
    }
}

/// Every byte percent-encoded.
fn enc(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// GET `uri` as the holder of `bearer`: the status and the body as text (a workbook's cells).
async fn get(app: &axum::Router, uri: &str, bearer: &str) -> (StatusCode, String) {
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {bearer}"))
        .body(HttpBody::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = if bytes.starts_with(b"PK\x03\x04") {
        yunjian_aggregator_core::register::form::workbook_grids(&bytes)
            .unwrap()
            .into_iter()
            .flat_map(|(_, grid)| grid.into_iter().flat_map(|(_, cells)| cells))
            .collect::<Vec<_>>()
            .join("\t")
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (status, text)
}

#[tokio::test]
async fn a_unit_user_reads_its_own_vms_only_on_every_read_route() {
    let state = state();
    let unit = state
        .auth
        .test_bearer("czj-qian", UserRole::Unit, Some(A_UNIT));
    let ops = state.auth.test_bearer("ops-zhao", UserRole::Ops, None);
    let app = router(state);
    let mut checked = Vec::new();
    for (method, pattern, action) in ROUTES {
        let unit_reads = *method == Method::GET
            && action.allows(Some(UserRole::Unit))
            && matches!(action.access(), Access::Roles(_))
            // the reclaim cases and the applications need their store; their own tests cover
            // the unit's view (tests/applications.rs: another unit's answers 404, lists nothing)
            && *action != Action::ViewReclaim
            && *action != Action::ViewApplications;
        if !unit_reads {
            continue;
        }
        for (uri, unit_status, shows_b) in requests(pattern) {
            let (status, mut body) = get(&app, &uri, &unit).await;
            assert_eq!(status, unit_status, "unit GET {uri}: {body}");
            if status == StatusCode::NOT_FOUND {
                // the answer is the one for something that never existed, the name asked aside
                let asked = NOT_A_UNITS
                    .into_iter()
                    .find(|l| uri.contains(l) || uri.contains(&enc(l)))
                    .unwrap();
                let ghost = uri.replace(asked, GHOST).replace(&enc(asked), &enc(GHOST));
                let (ghost_status, ghost_body) = get(&app, &ghost, &unit).await;
                body = body.replace(asked, GHOST);
                assert_eq!((status, &body), (ghost_status, &ghost_body), "GET {uri}");
            }
            for leak in NOT_A_UNITS {
                assert!(!body.contains(leak), "unit GET {uri} shows {leak}: {body}");
            }
            if unit_status == StatusCode::OK && shows_b {
                assert!(
                    body.contains(A_UUID) || body.contains(A_UNIT),
                    "unit GET {uri} misses its own VM: {body}"
                );
            }
            let (status, body) = get(&app, &uri, &ops).await;
            assert_eq!(status, StatusCode::OK, "ops GET {uri}: {body}");
            if shows_b {
                assert!(
                    body.contains(B_UUID) || body.contains(B_UNIT),
                    "ops GET {uri} should show the other unit: {body}"
                );
            }
            checked.push(uri);
        }
    }
    assert!(checked.len() >= 20, "{checked:?}");
}

#[tokio::test]
async fn a_units_counts_are_of_its_own_vms() {
    let state = state();
    let unit = state
        .auth
        .test_bearer("czj-qian", UserRole::Unit, Some(A_UNIT));
    let ops = state.auth.test_bearer("ops-zhao", UserRole::Ops, None);
    let app = router(state);
    let json = |text: String| serde_json::from_str::<Value>(&text).unwrap();

    let (_, nodes) = get(&app, "/api/nodes", &unit).await;
    let nodes = json(nodes);
    assert_eq!(nodes["totals"]["hosts"], 0);
    assert_eq!(nodes["totals"]["guests"], 1);
    assert_eq!(nodes["nodes"][0]["node"], A_NODE);
    assert_eq!(
        nodes["nodes"][0]["host"],
        Value::Null,
        "its host is not named"
    );
    let (_, nodes) = get(&app, "/api/nodes", &ops).await;
    let nodes = json(nodes);
    assert_eq!(
        (&nodes["totals"]["hosts"], &nodes["totals"]["guests"]),
        (&1.into(), &3.into())
    );

    let (_, alarms) = get(&app, "/api/alarms", &unit).await;
    let rules: Vec<Value> = json(alarms)["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"]["rule"].clone())
        .collect();
    assert!(rules.contains(&"node_down".into()), "{rules:?}");

    let (_, av) = get(&app, "/api/antivirus", &unit).await;
    let av = json(av);
    let counted: u64 = av["totals"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!((counted, av["vms"].as_array().unwrap().len()), (1, 1));

    let (_, findings) = get(&app, "/api/usage/findings", &unit).await;
    assert_eq!(json(findings)["vms_tracked"], 1);
    let (_, findings) = get(&app, "/api/usage/findings", &ops).await;
    assert_eq!(json(findings)["vms_tracked"], 2);

    let (_, register) = get(&app, "/api/register", &unit).await;
    let register = json(register);
    assert_eq!(register["units"].as_array().unwrap().len(), 1);
    assert_eq!(register["unregistered"], serde_json::json!([]));
    assert_eq!(register["pools"], serde_json::json!([]));
}
