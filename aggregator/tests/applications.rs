//! Applications end to end over the HTTP API, on a real SQLite file: a unit submits with its
//! form, the roles the default profile (003 徽州区) names take the steps, the register follows,
//! every step is audited, another unit learns nothing, an auditor reads and changes nothing,
//! and everything comes back after a restart.

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::reclaim::calendar::Calendar;
use yunjian_aggregator::service::applications::{Applications, OVERDUE_RULE};
use yunjian_aggregator::web::{router, AppState};
use yunjian_aggregator_core::audit::AuditFilter;
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::identity::Role;
use yunjian_aggregator_core::policy::Profile;
use yunjian_aggregator_core::register::test_support::vm;
use yunjian_aggregator_core::register::{AllocationKind, Register, Unit, UnitRecord};
use yunjian_aggregator_core::store::prelude::*;
use yunjian_store_sqlite::SqliteStorage;

const UNIT: &str = "区教育局";
const KEPT: &str = "4c4c4544-0042-3510-8058-b4c04f384d32";

const FORM: &str = "\u{feff}序号,网络分区,开发商,系统名称,子系统名称,服务器类型,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统\n\
1,政务外网区,浪潮,学籍管理,学籍库,DAT,8,32,60,500,openEuler 22.03\n\
2,政务外网区,浪潮,学籍管理,门户,WEB,4,8,60,100,openEuler 22.03\n";

struct Harness {
    app: Router,
    state: AppState,
    db: std::path::PathBuf,
    unit: String,
    other: String,
    ops: String,
    chief: String,
    auditor: String,
    _dir: tempfile::TempDir,
}

fn start(db: &std::path::Path, register: Register) -> (AppState, Applications) {
    let (_tx, rx) = tokio::sync::watch::channel(0);
    let mut state = AppState::new(Fleet::shared(), Arc::new(Metrics::default()), rx);
    state.register = Arc::new(std::sync::RwLock::new(register));
    // the reclaim cases a termination or an ended allocation opens (commands stay stored)
    let reclaim = yunjian_aggregator::reclaim::Reclaim::start(
        Box::new(SqliteStorage::open(db).unwrap()),
        yunjian_aggregator::reclaim::ReclaimConfig::default(),
        state.profile.reclaim.clone(),
        Calendar::builtin(),
        yunjian_protocol::MasterKey::from_bytes([7; 32]),
        yunjian_aggregator::reclaim::Outlet::Detached,
        state.fleet.clone(),
        state.register.clone(),
    )
    .unwrap();
    state.register_turn = reclaim.register_turn.clone();
    let apps = Applications::start(
        Box::new(SqliteStorage::open(db).unwrap()),
        Arc::new(Profile::default()),
        Arc::new(Calendar::builtin()),
        state.register.clone(),
        state.register_turn.clone(),
        Some(reclaim.clone()),
    )
    .unwrap();
    state.reclaim = Some(reclaim);
    state.applications = Some(apps.clone());
    (state, apps)
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("yunjian.db");
    let mut s = SqliteStorage::open(&db).unwrap();
    s.migrate().unwrap();
    // the unit already runs one VM (to terminate later)
    let record = UnitRecord {
        unit: Unit {
            name: UNIT.into(),
            ..Unit::default()
        },
        vms: vec![vm(UNIT, KEPT, 4)],
    };
    s.write(&yunjian_aggregator_core::store::WriteBatch {
        register: vec![record],
        ..Default::default()
    })
    .unwrap();
    let (state, _) = start(&db, s.load_register().unwrap());
    let a = &state.auth;
    Harness {
        unit: a.test_bearer("edu-wang", Role::Unit, Some(UNIT)),
        other: a.test_bearer("health-li", Role::Unit, Some("区卫健委")),
        ops: a.test_bearer("ops-zhao", Role::Ops, None),
        chief: a.test_bearer("dsj-liu", Role::Authority, None),
        auditor: a.test_bearer("audit-sun", Role::Auditor, None),
        app: router(state.clone()),
        state,
        db,
        _dir: dir,
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    bearer: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"));
    let body = match body {
        Some((ctype, bytes)) => {
            req = req.header("content-type", ctype);
            HttpBody::from(bytes)
        }
        None => HttpBody::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

async fn step(h: &Harness, who: &str, id: u64, step: &str, reason: &str) -> (StatusCode, Value) {
    call(
        &h.app,
        Method::POST,
        &format!("/api/applications/{id}/steps/{step}"),
        who,
        Some((
            "application/json",
            json!({ "reason": reason }).to_string().into_bytes(),
        )),
    )
    .await
}

fn form_uri() -> String {
    let q = [
        ("kind", "new"),
        ("system", "学籍管理"),
        ("purpose", "新学期学籍系统上云"),
        ("file", "附件3.csv"),
    ];
    let qs: Vec<String> = q
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.bytes()
                    .map(|b| if b.is_ascii_alphanumeric() || b == b'.' {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    })
                    .collect::<String>()
            )
        })
        .collect();
    format!("/api/applications/form?{}", qs.join("&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_system_walks_through_the_003_steps_and_the_register_follows() {
    let h = harness();
    // only a unit applies
    let (s, b) = call(
        &h.app,
        Method::POST,
        &form_uri(),
        &h.ops,
        Some(("text/csv", FORM.as_bytes().to_vec())),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = call(
        &h.app,
        Method::POST,
        &form_uri(),
        &h.unit,
        Some(("text/csv", FORM.as_bytes().to_vec())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["application"]["id"].as_u64().unwrap();
    assert_eq!(b["state_zh"], "待受理");
    assert_eq!(b["waiting_for"], "authority");
    assert_eq!(b["application"]["deadline_clause"], "第十二条（受理）");
    assert_eq!(
        b["application"]["request"]["vms"].as_array().unwrap().len(),
        2
    );
    assert_eq!(b["application"]["attachments"][0]["name"], "附件3.csv");

    // another unit: not found, and not in its list
    let (s, b) = call(
        &h.app,
        Method::GET,
        &format!("/api/applications/{id}"),
        &h.other,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["code"], "application_not_found");
    let (_, b) = call(&h.app, Method::GET, "/api/applications", &h.other, None).await;
    assert!(b["applications"].as_array().unwrap().is_empty(), "{b}");
    let (s, _) = call(
        &h.app,
        Method::GET,
        &format!("/api/applications/{id}/attachments/1"),
        &h.other,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // 003 第十二条: the authority accepts, not ops; the refusal says who and why, in Chinese
    let (s, b) = step(&h, &h.ops, id, "accept", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["code"], "application_role_forbidden");
    assert!(b["error"].as_str().unwrap().contains("主管部门"), "{b}");
    // an auditor changes nothing
    let (s, _) = step(&h, &h.auditor, id, "accept", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (who, s_) in [(&h.chief, "accept"), (&h.chief, "review")] {
        let (s, b) = step(&h, who, id, s_, "材料齐全").await;
        assert_eq!(s, StatusCode::OK, "{s_}: {b}");
    }
    assert!(
        h.state.register.read().unwrap().vms.len() == 1,
        "nothing registered before approval"
    );
    let (s, b) = step(&h, &h.chief, id, "approve", "同意").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["waiting_for"], "ops");
    // approval writes the register: two rows, test resources of application #id
    {
        let reg = h.state.register.read().unwrap();
        let granted: Vec<_> = reg
            .vms
            .iter()
            .filter(|v| v.term.application == Some(id))
            .collect();
        assert_eq!(granted.len(), 2);
        assert!(granted
            .iter()
            .all(|v| v.term.kind == AllocationKind::Test && v.unit == UNIT));
    }
    let (s, b) = step(&h, &h.ops, id, "provision", "测试资源已配置").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["state_zh"], "测试中");
    let (s, b) = step(&h, &h.chief, id, "pass_test", "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["state_zh"], "试运行");
    // 第十四条: not before 30 days of trial
    let (s, b) = step(&h, &h.chief, id, "go_live", "").await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "application_trial_not_over");
    assert!(b["error"].as_str().unwrap().contains("第十四条"), "{b}");

    // the timeline and the audit log hold every step, by whom
    let (_, b) = call(
        &h.app,
        Method::GET,
        &format!("/api/applications/{id}"),
        &h.auditor,
        None,
    )
    .await;
    let steps: Vec<&str> = b["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "submit",
            "accept",
            "review",
            "approve",
            "provision",
            "pass_test"
        ]
    );
    assert!(
        b["view"]["steps"].as_array().unwrap().is_empty(),
        "an auditor is offered nothing"
    );
    let mut db = SqliteStorage::open(&h.db).unwrap();
    let audit = db
        .audit_search(&AuditFilter {
            subject: Some(format!("application:{id}")),
            limit: 100,
            ..AuditFilter::default()
        })
        .unwrap();
    let mut actions: Vec<(String, String)> = audit
        .iter()
        .map(|e| (e.action.clone(), e.actor.clone()))
        .collect();
    actions.reverse();
    assert_eq!(actions[0], ("application.submit".into(), "edu-wang".into()));
    assert!(actions.contains(&("application.approve".into(), "dsj-liu".into())));
    let approve = audit
        .iter()
        .find(|e| e.action == "application.approve")
        .unwrap();
    assert_eq!(
        approve.detail["register"]["to"].as_array().unwrap().len(),
        3
    );

    // a restart: the application and the register come back as they were
    let (state2, apps2) = start(&h.db, db.load_register().unwrap());
    let unit = state2.auth.test_bearer("edu-wang", Role::Unit, Some(UNIT));
    let (_, views) = (
        (),
        apps2
            .list(
                &yunjian_aggregator_core::identity::Actor::person(
                    "edu-wang",
                    Role::Unit,
                    Some(UNIT.into()),
                ),
                0,
            )
            .await,
    );
    assert_eq!(views[0].application.state.as_str(), "trial");
    assert_eq!(
        state2
            .register
            .read()
            .unwrap()
            .vms
            .iter()
            .filter(|v| v.term.kind == AllocationKind::Trial)
            .count(),
        2,
        "the trial rows are stored with their term"
    );
    let (s, _) = call(
        &router(state2),
        Method::GET,
        &format!("/api/applications/{id}"),
        &unit,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_termination_needs_the_declaration_and_retires_the_rows() {
    let h = harness();
    let body = |decl: &str| {
        json!({
            "kind": "termination", "system": "预算一体化", "uuids": [KEPT], "declaration": decl,
        })
        .to_string()
        .into_bytes()
    };
    let (s, b) = call(
        &h.app,
        Method::POST,
        "/api/applications",
        &h.unit,
        Some(("application/json", body(""))),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], "application_declaration_required");
    assert!(b["error"].as_str().unwrap().contains("第十六条"), "{b}");
    // another unit cannot name this unit's VM
    let (s, b) = call(
        &h.app,
        Method::POST,
        "/api/applications",
        &h.other,
        Some(("application/json", body("已备份"))),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("application_unknown_vm"))
    );
    let (s, b) = call(
        &h.app,
        Method::POST,
        "/api/applications",
        &h.unit,
        Some((
            "application/json",
            body("系统已下线，数据已迁移至新平台并备份"),
        )),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["application"]["id"].as_u64().unwrap();
    assert_eq!(b["application"]["deadline_clause"], "第十六条（终止审核）");
    let (s, b) = step(&h, &h.chief, id, "approve", "同意终止").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(h.state.register.read().unwrap().vm_by_uuid(KEPT).is_some());
    let (s, b) = step(&h, &h.ops, id, "carry_out", "转入停机回收").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["state_zh"], "已办结");
    // the signed stop → hold → release path takes it from here: one stop case, approved by
    // the application, the unit's declaration as its handover; the row stays until release
    assert!(h.state.register.read().unwrap().vm_by_uuid(KEPT).is_some());
    let cases = h.state.reclaim.as_ref().unwrap().cases(0).await;
    assert_eq!(cases.len(), 1);
    let c = &cases[0].case;
    assert_eq!((c.uuid.as_str(), c.state.as_str()), (KEPT, "approved"));
    assert!(c.handover_ms.is_some(), "the declaration is the handover");
    assert_eq!(
        c.basis,
        yunjian_aggregator_core::reclaim::Basis::Application { application: id }
    );
    let (_, b) = call(
        &h.app,
        Method::GET,
        &format!("/api/applications/{id}"),
        &h.unit,
        None,
    )
    .await;
    let last = b["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["detail"]["cases"], json!([c.id]), "{last}");
    // carried out twice: refused, no second case
    let (s, _) = step(&h, &h.ops, id, "carry_out", "").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(h.state.reclaim.as_ref().unwrap().cases(0).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_test_resource_opens_a_stop_case_once_unless_an_extension_is_under_way() {
    let h = harness();
    let apps = h.state.applications.clone().unwrap();
    let now = 1_790_000_000_000;
    // the unit's VM is a test resource (003 第十三条: 15 days) that ended yesterday
    {
        let mut reg = h.state.register.write().unwrap();
        let v = reg.vms.iter_mut().find(|v| v.has_uuid(KEPT)).unwrap();
        v.term.kind = AllocationKind::Test;
        v.term.ends_ms = Some(now - 86_400_000);
    }
    let found = apps.findings(now).await;
    let f = found
        .iter()
        .find(|f| f.key.rule == "allocation_expiry")
        .unwrap();
    assert!(
        f.title.contains("已于") && f.title.contains("到期"),
        "{}",
        f.title
    );
    // while the unit's extension is under way, nothing is reclaimed
    let (st, b) = call(
        &h.app,
        Method::POST,
        "/api/applications",
        &h.unit,
        Some((
            "application/json",
            json!({"kind": "extension", "system": "预算一体化", "uuids": [KEPT], "ends": "2026-12-31"})
                .to_string()
                .into_bytes(),
        )),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let ext = b["application"]["id"].as_u64().unwrap();
    assert!(apps.reclaim_ended(now).await.unwrap().is_empty());
    // withdrawn: the ended resource goes to the reclaim
    let (st, b) = step(&h, &h.unit, ext, "withdraw", "不再需要").await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let opened = apps.reclaim_ended(now).await.unwrap();
    assert_eq!(opened.len(), 1);
    let reclaim = h.state.reclaim.clone().unwrap();
    let c = reclaim.cases(now).await.remove(0).case;
    assert_eq!(c.state.as_str(), "detected", "the unit is told first");
    assert!(matches!(
        c.basis,
        yunjian_aggregator_core::reclaim::Basis::Expired { .. }
    ));
    // once: the open case is not opened again
    assert!(apps.reclaim_ended(now + 60_000).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_step_raises_an_alarm_citing_the_active_profile() {
    let h = harness();
    let (s, b) = call(
        &h.app,
        Method::POST,
        &form_uri(),
        &h.unit,
        Some(("text/csv", FORM.as_bytes().to_vec())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let apps = h.state.applications.clone().unwrap();
    let deadline = b["application"]["deadline_ms"].as_u64().unwrap();
    assert!(
        apps.findings(deadline - 1).await.is_empty(),
        "not before the deadline"
    );
    let found = apps.findings(deadline + 10 * 86_400_000).await;
    let f = found.iter().find(|f| f.key.rule == OVERDUE_RULE).unwrap();
    assert_eq!(f.unit.as_deref(), Some(UNIT));
    assert!(
        f.clause.contains("第十二条") && f.clause.contains("徽州"),
        "{}",
        f.clause
    );
    assert!(f.title.contains("等待主管部门办理"), "{}", f.title);
    assert!(!f.clause.contains("广西") && !f.clause.contains("江苏"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_with_a_code_and_nothing_is_kept() {
    let h = harness();
    let bad_form = "序号,网络分区,系统名称,子系统名称,服务器类型,vCPU核,内存GB,系统盘GB,数据盘GB\n1,政务外网区,学籍管理,库,XYZ,8,32,60,500\n";
    let (s, b) = call(
        &h.app,
        Method::POST,
        &form_uri(),
        &h.unit,
        Some(("text/csv", bad_form.as_bytes().to_vec())),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["code"], "application_form_rows");
    assert_eq!(b["rows"][0]["row"], 2);
    let (s, b) = call(
        &h.app,
        Method::POST,
        "/api/applications",
        &h.unit,
        Some((
            "application/json",
            br#"{"kind":"lease","system":"x"}"#.to_vec(),
        )),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("application_unknown_kind"))
    );
    // 003 has no temporary resources
    let (s, b) = call(
        &h.app,
        Method::POST,
        "/api/applications",
        &h.unit,
        Some((
            "application/json",
            json!({"kind": "temporary", "system": "应急", "vms": [{"server_type": "APP", "vcpus": 2, "mem_gb": 4}]})
                .to_string()
                .into_bytes(),
        )),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("application_no_temporary")),
        "{b}"
    );
    let (_, b) = call(&h.app, Method::GET, "/api/applications", &h.ops, None).await;
    assert!(b["applications"].as_array().unwrap().is_empty(), "{b}");
}

#[test]
fn the_demo_walks_one_application_of_each_kind_and_its_alarms_show() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("yunjian.db");
    let mut s = SqliteStorage::open(&db).unwrap();
    s.migrate().unwrap();
    let mut users = Vec::new();
    let mut register = Vec::new();
    for (i, unit) in ["区财政局", "区教育局", "区卫健委"].into_iter().enumerate() {
        users.push(
            yunjian_aggregator::service::identity::test_user(
                &format!("demo-unit{}", i + 1),
                Role::Unit,
                Some(unit),
            )
            .0,
        );
        register.push(UnitRecord {
            unit: Unit {
                name: unit.into(),
                ..Unit::default()
            },
            vms: vec![vm(
                unit,
                &format!("4c4c4544-0000-0000-0000-00000000000{i}"),
                4,
            )],
        });
    }
    for (name, role) in [("demo-ops", Role::Ops), ("demo-authority", Role::Authority)] {
        users.push(yunjian_aggregator::service::identity::test_user(name, role, None).0);
    }
    s.write(&yunjian_aggregator_core::store::WriteBatch {
        users,
        register,
        ..Default::default()
    })
    .unwrap();
    let now = 1_790_000_000_000; // 2026-09-21, Beijing
    let profile = Arc::new(Profile::default());
    let calendar = Arc::new(Calendar::builtin());
    let done = yunjian_aggregator::offline::demo_applications(
        Box::new(s),
        profile.clone(),
        calendar.clone(),
        now,
    )
    .unwrap()
    .to_string();
    assert!(!done.contains("未完成"), "{done}");
    // what the aggregator finds when it starts on that database
    let mut s = SqliteStorage::open(&db).unwrap();
    let register = s.load_register().unwrap();
    let (_, apps) = start(&db, register);
    let ops = yunjian_aggregator_core::identity::Actor::person("demo-ops", Role::Ops, None);
    let states: Vec<(String, &str)> = apps
        .list(&ops, now)
        .await_blocking()
        .into_iter()
        .map(|v| {
            (
                v.application.kind.as_str().to_string(),
                v.application.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("test".to_string(), "in_service"),
            ("termination".into(), "approved"),
            ("change".into(), "submitted"),
            ("new".into(), "submitted"),
            ("new".into(), "testing"),
        ],
        "{done}"
    );
    let rules: Vec<String> = apps
        .findings(now)
        .await_blocking()
        .into_iter()
        .map(|f| f.key.rule)
        .collect();
    assert!(rules.contains(&OVERDUE_RULE.to_string()), "{rules:?}");
    assert!(
        rules.contains(&"allocation_expiry".to_string()),
        "{rules:?}"
    );
    assert!(s
        .audit(None, 100)
        .unwrap()
        .iter()
        .any(|e| e.action == "application.confirm"
            && e.actor == "demo-unit2"
            && e.source.as_deref() == Some("scripts/demo.sh")));
}

/// Drive a future to completion on a small runtime (for a plain `#[test]`).
trait AwaitBlocking: std::future::Future + Sized {
    fn await_blocking(self) -> Self::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(self)
    }
}

impl<F: std::future::Future> AwaitBlocking for F {}
