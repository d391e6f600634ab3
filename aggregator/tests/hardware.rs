//! Server hardware: SEL entries stored once and restored, and the rack and server pages and
//! their JSON over a fleet filled with real protocol envelopes and a real policy evaluation.

use axum::body::Body as HttpBody;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::watch;
use tower::ServiceExt;
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::web::{router, AppState};
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::hardware::SelRecord;
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_aggregator_core::policy::Context;
use yunjian_aggregator_core::store::prelude::*;
use yunjian_aggregator_core::store::{SelRow, WriteBatch};
use yunjian_protocol::hardware::{
    BmcState, ChassisState, HardwareReport, SelEntry, SensorReading, SensorStatus, Thresholds,
};
use yunjian_protocol::{Body, Envelope, Hello, Inventory, Role, Status};
use yunjian_store_sqlite::SqliteStorage;

const NOW: u64 = 1_700_000_000_000;

fn sel(record_id: u16, description: &str) -> SelEntry {
    SelEntry {
        record_id,
        ts_s: 1_699_999_000 + u32::from(record_id),
        sensor_type: 0x01,
        sensor_number: 2,
        sensor: Some("CPU1 Temp".into()),
        event_type: 0x01,
        asserted: true,
        offset: 9,
        description: description.into(),
    }
}

fn row(node: &str, received_ms: u64, entry: SelEntry) -> SelRow {
    SelRow {
        node: node.into(),
        record: SelRecord { received_ms, entry },
    }
}

#[test]
fn sel_entries_are_stored_once_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("yunjian.db");
    {
        let mut db = SqliteStorage::open(&path).unwrap();
        db.migrate().unwrap();
        db.write(&WriteBatch {
            sel: vec![
                row("h1", 10, sel(1, "Upper Critical going high")),
                row("h1", 20, sel(2, "Upper Non-recoverable going high")),
                row("h2", 15, sel(1, "Upper Critical going high")),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
        // a replayed sweep brings entry 2 again, received later: stored once, first copy kept
        db.write(&WriteBatch {
            sel: vec![row("h1", 99, sel(2, "Upper Non-recoverable going high"))],
            ..WriteBatch::default()
        })
        .unwrap();
    }
    let mut db = SqliteStorage::open(&path).unwrap();
    db.migrate().unwrap();
    let all = db.load_sel(100).unwrap();
    let got: Vec<(&str, u16, u64)> = all
        .iter()
        .map(|r| {
            (
                r.node.as_str(),
                r.record.entry.record_id,
                r.record.received_ms,
            )
        })
        .collect();
    assert_eq!(got, [("h1", 1, 10), ("h1", 2, 20), ("h2", 1, 15)]);
    assert_eq!(
        all[1].record.entry,
        sel(2, "Upper Non-recoverable going high")
    );
    // only the newest per node when asked for one
    let newest: Vec<(String, u16)> = db
        .load_sel(1)
        .unwrap()
        .into_iter()
        .map(|r| (r.node, r.record.entry.record_id))
        .collect();
    assert_eq!(newest, [("h1".to_string(), 2), ("h2".to_string(), 1)]);
}

fn temp(name: &str, number: u8, value: i64, status: SensorStatus) -> SensorReading {
    SensorReading {
        name: name.into(),
        number,
        sensor_type: 0x01,
        value: Some(value),
        unit: "degrees C".into(),
        status,
        thresholds: Thresholds {
            upper_non_critical: Some(85_000),
            upper_critical: Some(90_000),
            upper_non_recoverable: Some(100_000),
            ..Thresholds::default()
        },
        states: 0,
    }
}

fn host(fleet: &mut Fleet, id: &str, rack: &str, sweeps: Vec<(u64, HardwareReport)>) {
    fleet.apply(Envelope::new(id, 0, NOW, Body::Status(Status::Online)), NOW);
    let hello = Body::Hello(Hello {
        agent_version: "t".into(),
        role: Role::Host,
        interval_ms: 10_000,
        buffered: 0,
        epoch: 1,
    });
    let inv = Body::Inventory(Inventory {
        hostname: id.into(),
        role: Role::Host,
        os: "openEuler 22.03".into(),
        kernel: "5.10".into(),
        cpu_model: "Kunpeng 920".into(),
        cpu_cores: 64,
        mem_total_kib: 1 << 30,
        disks: vec![],
        nics: vec![],
        machine_id: format!("mid-{id}"),
        smbios_uuid: None,
        rack: Some(rack.into()),
    });
    fleet.apply(Envelope::new(id, 1, NOW, hello), NOW);
    fleet.apply(Envelope::new(id, 2, NOW, inv), NOW);
    for (i, (ts, h)) in sweeps.into_iter().enumerate() {
        fleet.apply(Envelope::new(id, 3 + i as u64, ts, Body::Hardware(h)), NOW);
    }
}

fn sweep(cpu_c: i64, sel: Vec<SelEntry>) -> HardwareReport {
    let status = if cpu_c >= 90 {
        SensorStatus::Critical
    } else {
        SensorStatus::Ok
    };
    HardwareReport {
        bmc: BmcState::Ok("lanplus 10.0.0.5:623".into()),
        chassis: Some(ChassisState {
            power_on: true,
            power_fault: false,
            intrusion: false,
            drive_fault: false,
            cooling_fault: false,
        }),
        sensors: vec![
            temp("CPU1 Temp", 2, cpu_c * 1000, status),
            temp("Inlet <Temp>", 1, 24_000, SensorStatus::Ok),
        ],
        sel,
    }
}

/// Rack A01: hot-1 (CPU at 95 °C, an SEL entry) and cool-1; rack B02: cool-2 without BMC
/// data. The policy engine has evaluated once. With an ops user's bearer token.
fn app() -> (Router, String) {
    let mut fleet = Fleet::new();
    let ts = NOW - 3_600_000;
    host(
        &mut fleet,
        "hot-1",
        "A01",
        vec![
            (ts, sweep(60, vec![])),
            (ts + 600_000, sweep(75, vec![])),
            (
                ts + 1_200_000,
                sweep(95, vec![sel(41, "Upper Critical going high")]),
            ),
        ],
    );
    host(&mut fleet, "cool-1", "A01", vec![(ts, sweep(50, vec![]))]);
    host(&mut fleet, "cool-2", "B02", vec![]);
    let fleet = Arc::new(std::sync::RwLock::new(fleet));
    let (_tx, rx) = watch::channel(0);
    let state = AppState::new(fleet.clone(), Arc::new(Metrics::default()), rx);
    {
        let f = fleet.read().unwrap();
        let register = state.register.read().unwrap();
        let mut engine = state.policy.lock().unwrap();
        engine.evaluate(&Context {
            fleet: &f,
            register: &register,
            profile: &state.profile,
            now_ms: NOW,
        });
    }
    let token = state.auth.test_bearer("ops-1", UserRole::Ops, None);
    (router(state), token)
}

/// `GET uri` on the router as the ops user whose token comes with it.
async fn get((app, token): (Router, String), uri: &str) -> (StatusCode, String, String) {
    let resp = app
        .oneshot(
            Request::get(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A server in `/api/racks`: node, worst alarm level, BMC state.
type Tile<'a> = (&'a str, &'a Value, &'a str);

#[tokio::test]
async fn the_rack_api_colours_servers_by_their_worst_alarm() {
    let (status, _, body) = get(app(), "/api/racks").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    let racks: Vec<(&str, Vec<Tile>)> = v["racks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rack"].as_str().unwrap(),
                r["servers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        (
                            s["node"].as_str().unwrap(),
                            &s["worst"],
                            s["bmc"].as_str().unwrap(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let critical = Value::from("critical");
    assert_eq!(
        racks,
        [
            (
                "A01",
                vec![("cool-1", &Value::Null, "ok"), ("hot-1", &critical, "ok")]
            ),
            ("B02", vec![("cool-2", &Value::Null, "none")]),
        ]
    );
}

#[tokio::test]
async fn the_rack_page_shows_every_server_in_its_rack_and_colour() {
    let (status, ctype, html) = get(app(), "/racks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(html.contains("<a href=\"/racks\" aria-current=\"page\">机柜</a>"));
    assert!(
        html.contains("<li class=\"slot critical\" data-node=\"hot-1\">"),
        "{html}"
    );
    assert!(
        html.contains("<li class=\"slot ok\" data-node=\"cool-1\">"),
        "{html}"
    );
    assert!(
        html.contains("<li class=\"slot nodata\" data-node=\"cool-2\">"),
        "{html}"
    );
    assert!(html.contains(">A01<") && html.contains(">B02<"));
    // the dashboard's stylesheet, no template slot left
    assert!(
        html.contains("href=\"/assets/base.css\"") && !html.contains("/*"),
        "{html}"
    );
}

#[tokio::test]
async fn the_server_page_shows_sensors_thresholds_history_and_sel() {
    let (status, _, html) = get(app(), "/servers/hot-1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<tr data-sensor=\"CPU1 Temp\">"), "{html}");
    // thresholds: lower ones absent, upper 85 / 90 / 100
    assert!(html.contains("— / — / — · 85.0 / 90.0 / 100.0"), "{html}");
    assert!(html.contains("95.0") && html.contains("超出严重阈值"));
    // history chart: three sweeps ten minutes apart give a three-point line
    let row = html.split("<tr data-sensor=\"CPU1 Temp\">").nth(1).unwrap();
    let points = row
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(points.split(' ').count(), 3, "{points}");
    // a name from the BMC is escaped
    assert!(html.contains("Inlet &lt;Temp&gt;") && !html.contains("Inlet <Temp>"));
    // the SEL and the open alarm
    assert!(html.contains("Upper Critical going high"));
    assert!(
        html.contains("物理服务器 hot-1 温度传感器 CPU1 Temp 超出严重阈值"),
        "{html}"
    );

    let (status, _, body) = get(app(), "/api/servers/hot-1/hardware").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["worst"], "critical");
    assert_eq!(v["rack"], "A01");
    assert_eq!(v["sensors"][0]["reading"]["name"], "CPU1 Temp");
    assert_eq!(v["sensors"][0]["history"].as_array().unwrap().len(), 3);
    assert_eq!(v["sel"][0]["entry"]["record_id"], 41);
    // the SEL entry says what the sensor says now: one alarm, not two
    assert_eq!(v["alarms"].as_array().unwrap().len(), 1, "{}", v["alarms"]);
    assert_eq!(
        v["alarms"][0]["key"]["subject"],
        "node:hot-1/sensor:CPU1 Temp"
    );

    let (status, _, _) = get(app(), "/servers/no-such-host").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(app(), "/api/servers/no-such-host/hardware").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
