//! The capacity API and the capacity and alarm pages, through `ServiceExt::oneshot`: figures
//! from a fleet fed with protocol envelopes and a register with a pool, states from the real
//! engine's alarms, acknowledgement through the alarm API the page calls.

use axum::body::Body as HttpBody;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;
use yunjian_aggregator::ingest::{Pending, StoreHandle};
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::web::{router, AppState};
use yunjian_aggregator_core::alarms::{Alarm, AlarmBook, AlarmKey, AlarmState, Level};
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_aggregator_core::policy::{rules, Context, Engine, Profile};
use yunjian_aggregator_core::register::{Pool, Register, Resources, ServerType, VmAllocation};
use yunjian_protocol::{
    Body, DiskInfo, DiskSample, Envelope, GuestView, Hello, Inventory, Memory, NetSample, Report,
    Role, Status,
};

const GIB: u64 = 1024 * 1024;
const NOW: u64 = 1_772_380_800_000;
const U1: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const U2: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

fn host(fleet: &mut Fleet, id: &str, mem_pct: f64, guests: Vec<GuestView>) {
    fleet.apply(Envelope::new(id, 0, NOW, Body::Status(Status::Online)), NOW);
    let total = 256 * GIB;
    let used = (total as f64 * mem_pct / 100.0) as u64;
    let bodies = [
        Body::Hello(Hello {
            agent_version: "0.1.0".into(),
            role: Role::Host,
            interval_ms: 10_000,
            buffered: 0,
            epoch: 1,
        }),
        Body::Inventory(Inventory {
            hostname: id.into(),
            role: Role::Host,
            os: "openEuler 22.03".into(),
            kernel: "5.10.0".into(),
            cpu_model: "Kunpeng 920".into(),
            cpu_cores: 32,
            mem_total_kib: total,
            disks: vec![DiskInfo {
                mount: "/".into(),
                fs_type: "xfs".into(),
                total_kib: 1000 * GIB,
            }],
            nics: vec!["eno1".into()],
            machine_id: format!("mid-{id}"),
            smbios_uuid: None,
            rack: Some("R1".into()),
        }),
        Body::Report(Report {
            cpu_busy: 2_500,
            per_core: vec![2_500; 32],
            load: [100, 100, 100],
            mem: Memory {
                total_kib: total,
                used_kib: used,
                available_kib: total - used,
                swap_total_kib: 0,
                swap_used_kib: 0,
            },
            disks: vec![DiskSample {
                mount: "/".into(),
                total_kib: 1000 * GIB,
                used_kib: 300 * GIB,
                read_bps: 0,
                write_bps: 0,
            }],
            nets: vec![NetSample {
                name: "eno1".into(),
                rx_bytes: 0,
                tx_bytes: 0,
                rx_bps: 250_000_000,
                tx_bps: 10_000_000,
            }],
            uptime_s: 3_600,
            failed: vec![],
        }),
        Body::Guests(guests),
    ];
    for (i, b) in bodies.into_iter().enumerate() {
        fleet.apply(Envelope::new(id, i as u64 + 1, NOW, b), NOW);
    }
}

fn guest(uuid: &str) -> GuestView {
    GuestView {
        uuid: uuid.into(),
        name: uuid.into(),
        vcpus: 8,
        mem_kib: 32 * GIB,
        disk_kib: 200 * GIB,
        running: true,
    }
}

fn vm(uuid: &str) -> VmAllocation {
    VmAllocation {
        zone: "政务外网".into(),
        developer: "某开发商".into(),
        unit: "市数据局".into(),
        system: "一网通办".into(),
        subsystem: String::new(),
        server_type: ServerType::Web,
        owner: String::new(),
        email: String::new(),
        phone: String::new(),
        vcpus: 8,
        mem_gb: 32,
        sys_disk_gb: 50,
        data_disk_gb: 150,
        os: "Kylin V10".into(),
        clustered: false,
        cluster_group: String::new(),
        note: String::new(),
        uuid: Some(uuid.into()),
        term: Default::default(),
    }
}

/// Pool 甲 (h1, h2) at 72 % memory, h3 outside at 10 %; one registered VM, one not.
struct Setup {
    state: AppState,
    profile: Profile,
    /// An ops user's bearer token (ops reads capacity and acknowledges alarms).
    ops: String,
}

fn setup() -> Setup {
    let mut fleet = Fleet::new();
    host(&mut fleet, "h1", 72.0, vec![guest(U1), guest(U2)]);
    host(&mut fleet, "h2", 72.0, vec![]);
    host(&mut fleet, "h3", 10.0, vec![]);
    let register = Register {
        vms: vec![vm(U1)],
        pools: vec![Pool {
            name: "甲".into(),
            hosts: vec!["h1".into(), "h2".into()],
            reserved: Resources {
                vcpus: 4.0,
                mem_gb: 12.0,
                disk_gb: 0.0,
                net_mbps: 0.0,
            },
            overcommit: Resources {
                vcpus: 3.0,
                mem_gb: 1.0,
                disk_gb: 1.0,
                net_mbps: 1.0,
            },
            nic_mbps: 10_000.0,
        }],
        ..Register::default()
    };
    let profile = Profile::default();
    let (_, changes) = watch::channel(0u64);
    let mut state = AppState::new(
        Arc::new(RwLock::new(fleet)),
        Arc::new(Metrics::default()),
        changes,
    );
    state.register = Arc::new(RwLock::new(register));
    state.policy = Arc::new(Mutex::new(Engine::new(
        rules::build(&profile, &[]),
        AlarmBook::new(),
    )));
    let ops = state.auth.test_bearer("ops-1", UserRole::Ops, None);
    Setup {
        state,
        profile,
        ops,
    }
}

impl Setup {
    /// Evaluate every rule at wall time `now`, as the policy task does.
    fn evaluate(&self, now: u64) {
        let fleet = self.state.fleet.read().unwrap();
        let register = self.state.register.read().unwrap();
        self.state.policy.lock().unwrap().evaluate(&Context {
            fleet: &fleet,
            register: &register,
            profile: &self.profile,
            now_ms: now,
        });
    }
}

async fn send(app: Router, req: Request<HttpBody>) -> (StatusCode, String, String) {
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

/// `GET uri` as the holder of `token`.
fn get(uri: &str, token: &str) -> Request<HttpBody> {
    Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(HttpBody::empty())
        .unwrap()
}

async fn get_json(app: Router, token: &str, uri: &str) -> Value {
    let (status, ctype, body) = send(app, get(uri, token)).await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/json"),
        "{body}"
    );
    serde_json::from_str(&body).unwrap()
}

fn resource<'a>(body: &'a Value, scope: &str, resource: &str) -> &'a Value {
    body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == scope)
        .unwrap_or_else(|| panic!("no scope {scope}: {body}"))["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == resource)
        .unwrap()
}

#[tokio::test]
async fn capacity_api_gives_figures_states_and_forecasts() {
    let s = setup();
    s.evaluate(1_000_000);
    let app = router(s.state.clone());
    let body = get_json(app.clone(), &s.ops, "/api/capacity").await;
    assert_eq!(
        body["clause"],
        yunjian_aggregator_core::policy::Profile::default()
            .clauses
            .capacity
    );
    assert_eq!(body["prewarn_pct"], 65.0);
    assert_eq!(
        (body["warn_pct"].as_f64(), body["recovery_pct"].as_f64()),
        (Some(70.0), Some(65.0))
    );
    assert_eq!(body["hold_s"], 300);
    assert_eq!(body["forecast_horizon_days"], 30);
    let ids: Vec<&str> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pool:甲", "platform"]);
    let pool = &body["scopes"][0];
    assert_eq!(pool["name"], "资源池 甲");
    assert_eq!(
        (pool["hosts"].as_u64(), pool["vms"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(pool["unregistered_vms"], 1);

    let mem = resource(&body, "pool:甲", "memory");
    assert_eq!(mem["label"], "内存");
    assert_eq!(mem["unit"], "GB");
    assert_eq!(mem["total"], 512.0);
    assert_eq!(mem["capacity"], 500.0);
    assert_eq!(mem["allocated"], 32.0);
    assert_eq!(mem["used_pct"], 72.0);
    // at the line, the 5-minute hold running: pending, no alarm yet
    assert_eq!(
        mem["used_state"],
        json!({"state": "pending", "level": null, "alarm_id": null, "acknowledged": false})
    );
    assert_eq!(mem["allocated_state"]["state"], "ok");
    assert_eq!(mem["forecast"], Value::Null);
    let cpu = resource(&body, "pool:甲", "compute");
    assert_eq!(
        (cpu["capacity"].as_f64(), cpu["allocated"].as_f64()),
        (Some(180.0), Some(8.0))
    );
    assert_eq!(cpu["used_pct"], 25.0);
    let net = resource(&body, "pool:甲", "network");
    assert_eq!(net["allocated"], Value::Null);
    assert_eq!(net["allocated_state"], Value::Null);
    assert_eq!(net["used_pct"], 20.0);
    // the platform with h3: (2 × 184.32 + 25.6) / 768
    let pmem = resource(&body, "platform", "memory");
    assert_eq!(pmem["used_pct"], 51.33);
    assert_eq!(pmem["used_state"]["state"], "ok");

    // five minutes later it fires
    s.evaluate(1_300_000);
    let body = get_json(app.clone(), &s.ops, "/api/capacity").await;
    let st = &resource(&body, "pool:甲", "memory")["used_state"];
    assert_eq!(
        (st["state"].as_str(), st["level"].as_str()),
        (Some("firing"), Some("warning"))
    );
    let id = st["alarm_id"].as_u64().unwrap();

    // acknowledged through the API the alarm page calls
    let (tx, mut rx) = mpsc::channel::<Pending>(4);
    let mut state = s.state.clone();
    state.store = StoreHandle::new(tx);
    let stored = tokio::spawn(async move {
        let p = rx.recv().await?;
        if let Some(committed) = p.committed {
            let _ = committed.send(());
        }
        Some(p.batch.audit.len())
    });
    let (status, _, answer) = send(
        router(state),
        Request::builder()
            .method(Method::POST)
            .uri(format!("/api/alarms/{id}/ack"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", s.ops))
            .body(HttpBody::from(r#"{"note":"值班员已处理"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // the signed-in user acknowledged it, under their login name
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["acked_by"], "ops-1");
    assert_eq!(
        stored.await.unwrap(),
        Some(1),
        "the acknowledgement is audited"
    );
    let body = get_json(app.clone(), &s.ops, "/api/capacity").await;
    assert_eq!(
        resource(&body, "pool:甲", "memory")["used_state"]["acknowledged"],
        true
    );

    // a forecast alarm (as restored from storage) shows as the resource's forecast
    s.state.policy.lock().unwrap().book_mut().restore(vec![Alarm {
        id: 90,
        key: AlarmKey {
            rule: "capacity_forecast".into(),
            subject: "pool:甲/storage/used".into(),
        },
        level: Level::Info,
        clause: "003 第十九条".into(),
        unit: None,
        title: "资源池 甲 存储使用率按近 13 天趋势预计 2026-12-03 达到 70%".into(),
        evidence: json!({"date": "2026-12-03", "crossing_ms": 1_796_313_600_000u64, "days_left": 24.5}),
        state: AlarmState::Active,
        raised_ms: 1,
        updated_ms: 1,
        count: 1,
        acked_by: None,
        acked_ms: None,
        cleared_ms: None,
    }], 0);
    let body = get_json(app, &s.ops, "/api/capacity").await;
    assert_eq!(
        resource(&body, "pool:甲", "storage")["forecast"],
        json!({"date": "2026-12-03", "at_ms": 1_796_313_600_000u64, "days_left": 24.5, "level": "info", "alarm_id": 90})
    );
}

/// A page with the scripts it loads from `/assets/` appended: what the browser runs.
async fn with_scripts(app: &Router, token: &str, html: String) -> String {
    let mut all = html.clone();
    for rest in html.split("<script src=\"").skip(1) {
        let src = rest.split_once('"').unwrap().0;
        let resp = app.clone().oneshot(get(src, token)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{src}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        all.push_str(std::str::from_utf8(&body).unwrap());
    }
    all
}

#[tokio::test]
async fn capacity_and_alarm_pages_are_served_self_contained() {
    let s = setup();
    let app = router(s.state.clone());
    for (uri, needles) in [
        ("/capacity", &["/api/capacity", "预警线", "趋势预测"][..]),
        (
            "/alarms",
            &["/api/alarms", "/ack", "确认人", "已解除告警"][..],
        ),
        ("/", &["总览"][..]),
    ] {
        let resp = app.clone().oneshot(get(uri, &s.ops)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("default-src 'none'"), "{uri}: {csp}");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let html = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(html.contains("<html lang=\"zh-CN\">"), "{uri}");
        // the shared look: the dashboard's stylesheet, and the same navigation on every page
        assert!(
            html.contains("<link rel=\"stylesheet\" href=\"/assets/base.css\">"),
            "{uri}"
        );
        for link in [
            "<a href=\"/\"",
            "<a href=\"/capacity\"",
            "<a href=\"/alarms\"",
        ] {
            assert!(html.contains(link), "{uri} lacks {link}");
        }
        assert_eq!(html.matches("aria-current=\"page\"").count(), 1, "{uri}");
        let html = with_scripts(&app, &s.ops, html).await;
        for n in needles {
            assert!(html.contains(n), "{uri} lacks {n}");
        }
        // nothing from elsewhere, and no HTML built from strings
        assert!(
            !html.contains("src=\"http") && !html.contains("href=\"http"),
            "{uri}"
        );
        assert!(!html.contains("innerHTML"), "{uri}");
    }
}
