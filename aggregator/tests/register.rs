//! The allocation register end to end: the 附件3 form imported over the API (as an `.xlsx`
//! built here the way units fill it, and as CSV), bad files refused whole, export → import,
//! quota violations found by the policy engine from a hypervisor's guest list, change requests,
//! sanctions, and the register surviving a restart of the aggregator.
//!
//! The router runs with a real storage thread on a SQLite file (writes go through it as in
//! production); the restart scenario runs a whole aggregator over TCP.

use axum::body::Body as HttpBody;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use rust_xlsxwriter::{Format, Workbook};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator::ingest::{self, StoreHandle};
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::offline::import_file;
use yunjian_aggregator::web::{router, AppState};
use yunjian_aggregator_core::alarms::{AlarmEvent, Level};
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_aggregator_core::policy::{Context, Profile};
use yunjian_aggregator_core::store::prelude::*;
use yunjian_protocol::{Body, Envelope, GuestView, Hello, Role};
use yunjian_store_sqlite::SqliteStorage;
use yunjian_tests::seed_users;

const GIB: u64 = 1024 * 1024;
const UNIT: &str = "市财政局";
const UUID: &str = "4c4c4544-0042-3510-8058-b4c04f384d32";

/// 附件3 as a unit fills it in Excel: the title, the contact line, the header (line breaks and
/// spaces inside two cells), the two sample rows (系统名称 left blank; the phone typed as a
/// number), rows 3 and 4 with nothing but 序号 and full-width spaces, and the notes below.
fn attachment3_xlsx() -> Vec<u8> {
    attachment3_xlsx_in(["公共网络区", "互联网区"])
}

/// [`attachment3_xlsx`] with its two rows in the given zones (the sample's are 000's).
fn attachment3_xlsx_in(zones: [&str; 2]) -> Vec<u8> {
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    s.merge_range(0, 0, 0, 16, "云资源使用需求表", &Format::new())
        .unwrap();
    s.write_string(1, 0, "申请单位联系人及手机号码、邮箱：")
        .unwrap();
    s.write_string(1, 8, "信息系统厂商联系人及手机号码、邮箱：")
        .unwrap();
    let header = [
        "序号",
        "网络分区",
        "开发商",
        "系统名称",
        "子系统名称",
        "服务器类型",
        "堡垒机账  号\n负责人",
        "堡垒机账号\n负责人邮箱",
        "堡垒机账号负责人手机号码",
        "vCPU核",
        "内存GB",
        "系统盘GB",
        "数据盘GB",
        "操作系统",
        "集群部署",
        "集群组号",
        "备注",
    ];
    for (c, h) in header.iter().enumerate() {
        s.write_string(2, c as u16, *h).unwrap();
    }
    let samples = [
        (zones[0], "张三", "zhangsan@sohu.com", 13800000000.0),
        (zones[1], "李四", "lisi@163.com", 13988888888.0),
    ];
    for (i, (zone, owner, email, phone)) in samples.iter().enumerate() {
        let r = 3 + i as u32;
        s.write_number(r, 0, i as f64 + 1.0).unwrap();
        for (c, text) in [
            (1, *zone),
            (2, "华为"),
            (4, "财务管理系统"),
            (5, "APP"),
            (6, *owner),
            (7, *email),
            (13, "CentOS 7.0"),
            (14, "是"),
            (15, "集群1"),
            (16, "　"),
        ] {
            s.write_string(r, c, text).unwrap();
        }
        s.write_number(r, 8, *phone).unwrap();
        for (c, n) in [(9, 8.0), (10, 16.0), (11, 60.0), (12, 300.0)] {
            s.write_number(r, c, n).unwrap();
        }
    }
    s.write_number(5, 0, 3.0).unwrap();
    for c in [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16] {
        s.write_string(5, c, "　").unwrap();
    }
    s.write_number(6, 0, 4.0).unwrap();
    s.write_string(8, 0, "填写说明：").unwrap();
    s.write_string(9, 0, "1．同一用户申请多个系统的，请另填新申请表；")
        .unwrap();
    book.save_to_buffer().unwrap()
}

const CSV_HEADER: &str = "序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID\n";

/// A CSV form of one system (`OA`) with the given rows after the header.
fn oa_csv(rows: &[&str]) -> Vec<u8> {
    let mut s = format!("\u{feff}{CSV_HEADER}");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

fn oa_row(seq: u32, server_type: &str, vcpus: &str, uuid: &str) -> String {
    format!("{seq},政务外网区,浪潮,OA,公文流转,{server_type},王五,wangwu@gov.cn,13700000000,{vcpus},16,60,300,openEuler 22.03,否,,,{uuid}")
}

struct Harness {
    app: Router,
    state: AppState,
    /// Bearer tokens: `ops-zhao` (运维单位: imports, change requests) and `dsj-liu` (主管部门:
    /// quotas and sanctions).
    ops: String,
    chief: String,
    _dir: tempfile::TempDir,
}

/// The web app with an empty fleet and register, writing through a real storage thread, under
/// the default profile (003).
fn harness() -> Harness {
    harness_with(Profile::default())
}

/// [`harness`] under `profile`.
fn harness_with(profile: Profile) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("yunjian.db");
    let mut writer = SqliteStorage::open(&db).unwrap();
    writer.migrate().unwrap();
    let reader: Box<dyn Storage> = Box::new(SqliteStorage::open(&db).unwrap());
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = mpsc::channel(64);
    let m = metrics.clone();
    std::thread::spawn(move || {
        let mut writer = writer;
        ingest::storage_loop(&mut writer, rx, m)
    });
    let (_, changes) = watch::channel(0);
    let mut state = AppState::new(Fleet::shared(), metrics, changes);
    state.profile = Arc::new(profile);
    state.store = StoreHandle::new(tx);
    state.reader = Some(Arc::new(Mutex::new(reader)));
    let ops = state.auth.test_bearer("ops-zhao", UserRole::Ops, None);
    let chief = state.auth.test_bearer("dsj-liu", UserRole::Authority, None);
    Harness {
        app: router(state.clone()),
        state,
        ops,
        chief,
        _dir: dir,
    }
}

/// `METHOD uri` as the holder of `token`.
async fn call(
    h: &Harness,
    token: &str,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(HttpBody::from(body))
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

async fn call_json(
    h: &Harness,
    token: &str,
    method: &str,
    uri: &str,
    body: Value,
) -> (StatusCode, Value) {
    let (s, b) = call(
        h,
        token,
        method,
        uri,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Import as the ops user.
async fn import(h: &Harness, query: &str, ctype: &str, file: Vec<u8>) -> (StatusCode, Value) {
    let (s, b) = call(
        h,
        &h.ops,
        "POST",
        &format!("/api/register/import?{query}"),
        ctype,
        file,
    )
    .await;
    (s, serde_json::from_slice(&b).unwrap())
}

/// Every byte percent-encoded (unit names in paths and queries).
fn enc(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// `unit=…` (who imports is the signed-in user).
fn who(unit: &str) -> String {
    format!("unit={}", enc(unit))
}

async fn register(h: &Harness) -> Value {
    let (s, b) = call(h, &h.ops, "GET", "/api/register", "", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    serde_json::from_slice(&b).unwrap()
}

fn allocations(reg: &Value) -> Vec<Value> {
    reg["units"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| u["vms"].as_array().unwrap().iter())
        .map(|v| v["allocation"].clone())
        .collect()
}

#[tokio::test]
async fn the_sample_rows_of_attachment_3_import_from_xlsx_and_csv() {
    // 附件3 is 000's form; its sample rows' zones (公共网络区, 互联网区) are 000's
    let h = harness_with(Profile::load("000").unwrap());
    let xlsx = XLSX_TYPE;
    let (s, body) = import(&h, &who(UNIT), xlsx, attachment3_xlsx()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 2);
    let reg = register(&h).await;
    let vms = allocations(&reg);
    assert_eq!(vms.len(), 2);
    let v = &vms[0];
    assert_eq!(v["unit"], UNIT);
    assert_eq!(
        (v["system"].as_str(), v["subsystem"].as_str()),
        (Some(""), Some("财务管理系统"))
    );
    assert_eq!(
        (v["zone"].as_str(), v["developer"].as_str()),
        (Some("公共网络区"), Some("华为"))
    );
    assert_eq!(
        (v["server_type"].as_str(), v["owner"].as_str()),
        (Some("APP"), Some("张三"))
    );
    assert_eq!(
        (v["email"].as_str(), v["phone"].as_str()),
        (Some("zhangsan@sohu.com"), Some("13800000000"))
    );
    assert_eq!(
        [
            &v["vcpus"],
            &v["mem_gb"],
            &v["sys_disk_gb"],
            &v["data_disk_gb"]
        ],
        [&json!(8), &json!(16), &json!(60), &json!(300)]
    );
    assert_eq!(
        (v["os"].as_str(), v["clustered"].as_bool()),
        (Some("CentOS 7.0"), Some(true))
    );
    assert_eq!(
        (v["cluster_group"].as_str(), v["note"].as_str()),
        (Some("集群1"), Some(""))
    );
    assert_eq!(vms[1]["owner"], "李四");
    assert_eq!(vms[1]["phone"], "13988888888");
    let unit = &reg["units"][0];
    assert_eq!(unit["approved"]["vcpus"], 16.0);
    assert_eq!(unit["vms"][0]["status"], "no_uuid");

    // the same form saved as CSV (UTF-8 with BOM) gives the same allocations
    let csv = format!(
        "\u{feff}云资源使用需求表\n申请单位联系人及手机号码、邮箱：\n{}\
         1,公共网络区,华为,,财务管理系统,APP,张三,zhangsan@sohu.com,13800000000,8,16,60,300,CentOS 7.0,是,集群1,　,\n\
         2,互联网区,华为,,财务管理系统,APP,李四,lisi@163.com,13988888888,8,16,60,300,CentOS 7.0,是,集群1,　,\n\
         3,　,　,,　,　,　,　,　,　,　,　,　,,　,　,　,\n4,,,,,,,,,,,,,,,,,\n",
        CSV_HEADER
    );
    let other = harness_with(Profile::load("000").unwrap());
    let (s, body) = import(&other, &who(UNIT), "text/csv", csv.into_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(allocations(&register(&other).await), vms);
}

const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

#[tokio::test]
async fn a_file_with_bad_rows_changes_nothing_and_names_every_row_and_column() {
    let h = harness();
    let good = oa_csv(&[&oa_row(1, "APP", "8", ""), &oa_row(2, "DAT", "8", "")]);
    assert_eq!(
        import(&h, &who(UNIT), "text/csv", good).await.0,
        StatusCode::OK
    );
    let before = register(&h).await;

    // one bad row: the row number as the sheet shows it (header on row 1), its column, why
    let one_bad = oa_csv(&[&oa_row(1, "APP", "16", ""), &oa_row(2, "XYZ", "8", "")]);
    let (s, body) = import(
        &h,
        &format!("{}&file=oa.csv", who(UNIT)),
        "text/csv",
        one_bad,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["errors"],
        json!([{
            "file": "oa.csv", "row": 3, "column": "服务器类型",
            "reason": "服务器类型 \"XYZ\" is not one of APP/WEB/FTP/DAT/MID/TST/OTH"
        }])
    );
    // every bad row is reported, not only the first
    let two_bad = oa_csv(&[
        &oa_row(1, "APP", "八", ""),
        &oa_row(2, "DAT", "8", ""),
        &oa_row(3, "WEB", "", ""),
    ]);
    let (s, body) = import(&h, &who(UNIT), "text/csv", two_bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let rows: Vec<(u64, &str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["column"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (2, "vCPU核", "vCPU核 \"八\" is not a whole number"),
            (4, "vCPU核", "vCPU核 is required"),
        ]
    );
    assert_eq!(
        register(&h).await["units"],
        before["units"],
        "nothing changed"
    );
}

/// A 网络分区 that is not one of the active profile's zones is refused with its row and column,
/// over HTTP and on the command line, and nothing is imported; the same zone is fine under the
/// profile that names it.
#[tokio::test]
async fn an_unknown_network_zone_is_refused_with_its_row_and_column() {
    let h = harness();
    let file = oa_csv(&[
        &oa_row(1, "APP", "8", ""),
        &oa_row(2, "DAT", "8", "").replace("政务外网区", "视频专网"),
    ]);
    let (s, body) = import(
        &h,
        &format!("{}&file=oa.csv", who(UNIT)),
        "text/csv",
        file.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["errors"],
        json!([{
            "file": "oa.csv", "row": 3, "column": "网络分区",
            "reason": "网络分区“视频专网”不是本地区的网络分区（可填：政务外网、党政专网、行业专网、互联网）"
        }])
    );
    assert!(
        allocations(&register(&h).await).is_empty(),
        "nothing imported"
    );

    // the command line: the same check
    let e = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let mut db = SqliteStorage::open(&dir.path().join("cli.db")).unwrap();
        db.migrate().unwrap();
        let path = dir.path().join("oa.csv");
        std::fs::write(&path, &file).unwrap();
        import_file(&mut db, &Profile::default(), UNIT, "ops-zhao", &path, None)
            .unwrap_err()
            .to_string()
    })
    .await
    .unwrap();
    assert!(
        e.contains("oa.csv row 3 column 网络分区: 网络分区“视频专网”"),
        "{e}"
    );

    // 000's 附件3 zones are not 003's: its sample row's 公共网络区 is refused under 003 ...
    let sample = oa_csv(&[&oa_row(1, "APP", "8", "").replace("政务外网区", "公共网络区")]);
    let (s, _) = import(&h, &who(UNIT), "text/csv", sample.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // ... and taken under 000
    let g = harness_with(Profile::load("000").unwrap());
    let (s, body) = import(&g, &who(UNIT), "text/csv", sample).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// The default profile's own form, 003 附件1 审批表 with its 附表, imported over the API (it was
/// refused with "no header row found"): one register row per 附表 row.
#[tokio::test]
async fn the_approval_form_of_003_imports_over_http() {
    let h = harness();
    let csv = "徽州区数据资源管理局政务云资源使用审批表\n\
单位名称,市财政局,地址,徽州区文峰西路1号\n\
技术对接人,张强,联系电话,0559-2345673,手机,13900000003,邮箱,zhangqiang@hz.gov.cn\n\
需求背景描述：预算一体化系统上云\n\
申请类型,☑ 资源申请 □ 资源变更 □ 资源退出\n\
接入网络,☑ 政务外网 □ 互联网\n\
附表：虚拟机资源表\n\
序号,用途,vCPU (核),内存 (GB),存储,,操作系统及版本,网络需求,所开端口,申请类型,备注\n\
,,,,硬盘 (GB),存储类型,,,,,\n\
1,预算一体化应用,8,16,200,文件,麒麟 V10,☑ 政务外网 □ 互联网,443,资源申请,\n\
2,预算一体化数据库,16,64,1000,数据库,麒麟 V10,政务外网,3306,资源申请,主库\n";
    let (s, body) = import(&h, &who(UNIT), "text/csv", csv.as_bytes().to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 2);
    let vms = allocations(&register(&h).await);
    let got: Vec<(&str, &str, u64, u64, u64, &str)> = vms
        .iter()
        .map(|v| {
            (
                v["subsystem"].as_str().unwrap(),
                v["zone"].as_str().unwrap(),
                v["vcpus"].as_u64().unwrap(),
                v["mem_gb"].as_u64().unwrap(),
                v["sys_disk_gb"].as_u64().unwrap(),
                v["owner"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("预算一体化应用", "政务外网", 8, 16, 200, "张强"),
            ("预算一体化数据库", "政务外网", 16, 64, 1000, "张强")
        ]
    );
    // the 审批表 of another unit is not imported for this one
    let (s, body) = import(&h, &who("市教育局"), "text/csv", csv.as_bytes().to_vec()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["column"], "单位名称");
    // an unknown 网络需求 in the 附表: row and column
    let bad = csv.replace(",政务外网,3306", ",外联专网,3306");
    let (s, body) = import(&h, &who(UNIT), "text/csv", bad.into_bytes()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["row"], 11);
    assert_eq!(body["errors"][0]["column"], "网络需求");
}

#[tokio::test]
async fn export_then_import_gives_the_same_allocations() {
    let h = harness();
    let form = oa_csv(&[&oa_row(1, "APP", "8", UUID), &oa_row(2, "DAT", "4", "")]);
    assert_eq!(
        import(&h, &who(UNIT), "text/csv", form).await.0,
        StatusCode::OK
    );
    let in_003 = attachment3_xlsx_in(["政务外网", "互联网"]);
    let (s, body) = import(&h, &who("市教育局"), XLSX_TYPE, in_003).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let before = allocations(&register(&h).await);
    assert_eq!(before.len(), 4);

    let export = |unit: &str| format!("/api/register/export.xlsx?unit={}", enc(unit));
    let (s, bytes) = call(&h, &h.ops, "GET", &export(UNIT), "", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    // importing the unit's export (its 使用单位 and 虚拟机UUID columns included) changes nothing
    let (s, body) = import(&h, &who(UNIT), XLSX_TYPE, bytes).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 2);
    assert_eq!(allocations(&register(&h).await), before);

    // the whole register's export into a fresh register, unit by unit: the same allocations
    let (_, all) = call(&h, &h.ops, "GET", "/api/register/export.xlsx", "", vec![]).await;
    let fresh = harness();
    let (s, body) = import(&fresh, &who(UNIT), XLSX_TYPE, all.clone()).await;
    // the file holds both units: the other unit's rows are named, nothing is imported
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["column"] == "使用单位"));
    for unit in ["市教育局", UNIT] {
        let (s, one) = call(&h, &h.ops, "GET", &export(unit), "", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            import(&fresh, &who(unit), XLSX_TYPE, one).await.0,
            StatusCode::OK
        );
    }
    let mut a = allocations(&register(&fresh).await);
    let mut b = before.clone();
    let key = |v: &Value| {
        (
            v["unit"].to_string(),
            v["system"].to_string(),
            v["server_type"].to_string(),
            v["zone"].to_string(),
        )
    };
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a, b);
}

/// The hypervisor `h1` lists the VM with `vcpus` vCPUs.
fn hypervisor_lists(state: &AppState, seq: u64, vcpus: u16) {
    let mut f = state.fleet.write().unwrap();
    if seq == 1 {
        let hello = Body::Hello(Hello {
            agent_version: "test".into(),
            role: Role::Host,
            interval_ms: 10_000,
            buffered: 0,
            epoch: 1,
        });
        f.apply(Envelope::new("h1", 1, 0, hello), 0);
    }
    let guests = Body::Guests(vec![GuestView {
        uuid: UUID.to_uppercase(),
        name: "oa-app-01".into(),
        vcpus,
        mem_kib: 16 * GIB,
        disk_kib: 360 * GIB,
        running: true,
    }]);
    f.apply(Envelope::new("h1", seq + 1, 0, guests), 0);
}

/// One evaluation of every enabled rule, as the policy task runs it.
fn evaluate(state: &AppState, now_ms: u64) -> Vec<AlarmEvent> {
    let fleet = state.fleet.read().unwrap();
    let register = state.register.read().unwrap();
    let mut engine = state.policy.lock().unwrap();
    engine.evaluate(&Context {
        fleet: &fleet,
        register: &register,
        profile: &state.profile,
        now_ms,
    })
}

fn of_rule<'a>(events: &'a [AlarmEvent], rule: &str) -> Vec<&'a AlarmEvent> {
    events
        .iter()
        .filter(|e| e.alarm().key.rule == rule)
        .collect()
}

/// The events of the quota rules (other rules look at the same fleet).
fn quota_events(events: &[AlarmEvent]) -> Vec<&AlarmEvent> {
    events
        .iter()
        .filter(|e| e.alarm().key.rule.starts_with("quota_"))
        .collect()
}

#[tokio::test]
async fn growth_without_a_change_request_quota_and_sanctions() {
    let h = harness();
    let form = oa_csv(&[&oa_row(1, "APP", "8", UUID)]);
    assert_eq!(
        import(&h, &who(UNIT), "text/csv", form).await.0,
        StatusCode::OK
    );
    hypervisor_lists(&h.state, 1, 8);
    assert!(
        quota_events(&evaluate(&h.state, 1)).is_empty(),
        "as approved: nothing"
    );

    // someone grows the VM from 8 to 16 vCPUs on the hypervisor, without a change request
    hypervisor_lists(&h.state, 2, 16);
    let ev = evaluate(&h.state, 2);
    let raised = of_rule(&ev, "quota_vm");
    assert_eq!(raised.len(), 1, "{ev:?}");
    let AlarmEvent::Raised(a) = raised[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(a.key.subject, format!("vm:{UUID}"));
    assert_eq!(
        (a.level, a.unit.as_deref(), a.clause.as_str()),
        (
            Level::Major,
            Some(UNIT),
            Profile::default().clauses.quota_vm.as_str()
        )
    );
    assert_eq!(a.evidence["approved"]["vcpus"], 8.0);
    assert_eq!(a.evidence["observed"]["vcpus"], 16.0);
    assert_eq!(a.evidence["register_row"]["system"], "OA");
    // the unit is also above its quota (the sum of its approved allocations)
    assert_eq!(of_rule(&ev, "quota_unit").len(), 1);
    let (_, q) = call_json(&h, &h.ops, "GET", "/api/quota", Value::Null).await;
    assert_eq!(q["violations"].as_array().unwrap().len(), 2);
    let reg = register(&h).await;
    assert_eq!(reg["units"][0]["vms"][0]["status"], "matched");
    assert_eq!(reg["units"][0]["vms"][0]["over"][0]["resource"], "vcpus");

    // the approved change request to 16: recorded, and the violations clear
    let change = format!("/api/register/vms/{UUID}/change");
    let req = json!({"approved_by": "市大数据局 刘", "vcpus": 16, "reason": "业务高峰扩容"});
    let (s, body) = call_json(&h, &h.ops, "POST", &change, req.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // recorded under the signed-in user's login name
    assert_eq!(body["audit"]["actor"], "ops-zhao");
    assert_eq!(body["vm"]["vcpus"], 16);
    assert_eq!(
        (
            body["audit"]["detail"]["from"]["vcpus"].as_u64(),
            body["audit"]["detail"]["to"]["vcpus"].as_u64()
        ),
        (Some(8), Some(16))
    );
    let ev = evaluate(&h.state, 3);
    let cleared = quota_events(&ev);
    assert!(
        cleared.len() == 2 && cleared.iter().all(|e| matches!(e, AlarmEvent::Cleared(_))),
        "{ev:?}"
    );
    assert!(quota_events(&evaluate(&h.state, 4)).is_empty());
    let (_, q) = call_json(&h, &h.ops, "GET", "/api/quota", Value::Null).await;
    assert_eq!(q["violations"], json!([]));

    // the unit's quota set below what it runs: a major finding naming the unit
    let quota_uri = format!("/api/register/units/{}/quota", enc(UNIT));
    let quota = json!({"quota": {"vcpus": 12, "mem_gb": 64, "disk_gb": 1000}});
    // a quota is the 主管部门's to set, not the 运维单位's
    let (s, body) = call_json(&h, &h.ops, "PUT", &quota_uri, quota.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = call_json(&h, &h.chief, "PUT", &quota_uri, quota).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["audit"]["actor"], "dsj-liu");
    let ev = evaluate(&h.state, 5);
    let unit = of_rule(&ev, "quota_unit");
    assert_eq!(unit.len(), 1, "{ev:?}");
    let u = unit[0].alarm();
    assert_eq!((u.level, u.unit.as_deref()), (Level::Major, Some(UNIT)));
    assert_eq!(u.evidence["quota"]["vcpus"], 12.0);
    assert_eq!(u.evidence["observed"]["vcpus"], 16.0);

    // under sanction with requests held (003 第三十条): a request for more is held, 409
    let sanction_uri = format!("/api/register/units/{}/sanction", enc(UNIT));
    let (s, body) = call_json(
        &h,
        &h.chief,
        "POST",
        &sanction_uri,
        json!({"reason": "资源使用率长期低于 10%", "hold_requests": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let since = body["unit"]["sanction"]["since_ms"].as_u64().unwrap();
    let more = json!({"approved_by": "刘", "vcpus": 24, "reason": "再扩容"});
    let (s, body) = call_json(&h, &h.ops, "POST", &change, more.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["held"], true);
    assert_eq!(body["reason"], "资源使用率长期低于 10%");
    assert_eq!(body["since_ms"].as_u64(), Some(since));
    assert!(body["error"].as_str().unwrap().contains("003 第三十条"));
    let reg = register(&h).await;
    assert_eq!(
        reg["units"][0]["sanction"]["reason"],
        "资源使用率长期低于 10%"
    );
    assert_eq!(
        reg["units"][0]["sanction"]["since_ms"].as_u64(),
        Some(since)
    );
    assert_eq!(
        reg["units"][0]["vms"][0]["allocation"]["vcpus"], 16,
        "unchanged"
    );
    // an import that asks for more is held too
    let (s, _) = import(
        &h,
        &who(UNIT),
        "text/csv",
        oa_csv(&[&oa_row(1, "APP", "32", UUID)]),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // lifted: the request goes through
    let (s, _) = call_json(
        &h,
        &h.chief,
        "DELETE",
        &sanction_uri,
        json!({"note": "已整改"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = call_json(&h, &h.ops, "POST", &change, more).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "the unit's own quota of 12 still holds: {body}"
    );
    assert_eq!(body["resource"], "vcpus");
    let (s, _) = call_json(
        &h,
        &h.ops,
        "POST",
        "/api/register/vms/00000000-0000-0000-0000-000000000000/change",
        req,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `METHOD path` over HTTP/1.1 as the holder of `token`, with an optional body; the status and
/// the body.
async fn http(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding: chunked"), "{head}");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

#[tokio::test]
async fn the_register_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = "127.0.0.1:0".parse().unwrap();
    let pools = dir.path().join("pools.toml");
    std::fs::write(
        &pools,
        "[[pool]]\nname = \"A区\"\nhosts = [\"h1\"]\nnic_mbps = 10000\n",
    )
    .unwrap();
    cfg.pools_file = Some(pools);
    let tokens = seed_users(
        &cfg,
        &[
            ("ops-zhao", UserRole::Ops, None),
            ("dsj-liu", UserRole::Authority, None),
            ("audit-sun", UserRole::Auditor, None),
        ],
    );
    let (ops, chief, auditor) = (&tokens[0], &tokens[1], &tokens[2]);

    let agg = Aggregator::start(&cfg).await.unwrap();
    let q = format!("/api/register/import?{}", who(UNIT));
    let (s, body) = http(
        agg.http_addr,
        ops,
        "POST",
        &q,
        "text/csv",
        &oa_csv(&[&oa_row(1, "APP", "8", UUID)]),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let sanction = format!("/api/register/units/{}/sanction", enc(UNIT));
    let req = json!({"reason": "使用率低", "quota": {"vcpus": 4, "mem_gb": 8, "disk_gb": 100}, "hold_requests": true});
    let (s, _) = http(
        agg.http_addr,
        chief,
        "POST",
        &sanction,
        "application/json",
        req.to_string().as_bytes(),
    )
    .await;
    assert_eq!(s, 200);
    let (_, before) = http(agg.http_addr, ops, "GET", "/api/register", "", b"").await;
    let before: Value = serde_json::from_slice(&before).unwrap();
    agg.shutdown().await;

    let agg = Aggregator::start(&cfg).await.unwrap();
    let (s, after) = http(agg.http_addr, ops, "GET", "/api/register", "", b"").await;
    assert_eq!(s, 200);
    let after: Value = serde_json::from_slice(&after).unwrap();
    assert_eq!(after["units"], before["units"]);
    assert_eq!(after["units"][0]["vms"][0]["allocation"]["uuid"], UUID);
    assert_eq!(after["units"][0]["sanction"]["reason"], "使用率低");
    assert_eq!(after["pools"][0]["pool"]["name"], "A区");
    // and the changes are in the audit log, who (the signed-in users' login names) and what
    let subject = format!("/api/audit?subject={}", enc(&format!("unit:{UNIT}")));
    let (_, audit) = http(agg.http_addr, auditor, "GET", &subject, "", b"").await;
    let audit: Value = serde_json::from_slice(&audit).unwrap();
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("register.sanction", "dsj-liu"),
            ("register.import", "ops-zhao")
        ]
    );
    tokio::time::timeout(Duration::from_secs(10), agg.shutdown())
        .await
        .unwrap();
}

#[test]
fn the_command_line_import_writes_the_database_with_the_same_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStorage::open(&dir.path().join("yunjian.db")).unwrap();
    db.migrate().unwrap();
    let good = dir.path().join("oa.csv");
    std::fs::write(&good, oa_csv(&[&oa_row(1, "APP", "8", UUID)])).unwrap();
    let done = import_file(&mut db, &Profile::default(), UNIT, "ops-zhao", &good, None).unwrap();
    assert_eq!(
        done,
        "imported 1 VM(s) of 市财政局 from oa.csv; the unit now has 1 VM(s)"
    );

    // plain "CSV" from a Chinese-locale Excel is GB18030; its bad row is named, nothing written
    let text = format!("{CSV_HEADER}{}\n", oa_row(1, "XYZ", "8", UUID));
    let (gbk, _, _) = encoding_rs::GB18030.encode(&text);
    let bad = dir.path().join("坏表.txt");
    std::fs::write(&bad, &gbk).unwrap();
    let e = import_file(&mut db, &Profile::default(), UNIT, "ops-zhao", &bad, None).unwrap_err();
    assert!(
        e.to_string().contains("give --format xlsx or --format csv"),
        "{e}"
    );
    let e = import_file(
        &mut db,
        &Profile::default(),
        UNIT,
        "ops-zhao",
        &bad,
        Some("csv"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "1 problem(s) in the file; nothing was imported\n  坏表.txt row 2 column 服务器类型: 服务器类型 \"XYZ\" is not one of APP/WEB/FTP/DAT/MID/TST/OTH"
    );
    let reg = db.load_register().unwrap();
    assert_eq!(reg.vms.len(), 1);
    assert_eq!(reg.vms[0].server_type.as_str(), "APP");
    let audit = db.audit(Some("unit:市财政局"), 10).unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str()))
            .collect::<Vec<_>>(),
        [("register.import", "ops-zhao")]
    );
}

/// A page with the scripts it loads from `/assets/` appended: what the browser runs.
async fn with_scripts(app: &Router, token: &str, html: String) -> String {
    let mut all = html.clone();
    for rest in html.split("<script src=\"").skip(1) {
        let src = rest.split_once('"').unwrap().0;
        let resp = app
            .clone()
            .oneshot(
                Request::get(src)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(HttpBody::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{src}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        all.push_str(std::str::from_utf8(&body).unwrap());
    }
    all
}

#[tokio::test]
async fn the_register_page_is_self_contained() {
    let h = harness();
    let req = Request::get("/register")
        .header(header::AUTHORIZATION, format!("Bearer {}", h.ops))
        .body(HttpBody::empty())
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let html = with_scripts(&h.app, &h.ops, String::from_utf8(body.to_vec()).unwrap()).await;
    for needed in [
        "lang=\"zh-CN\"",
        "/api/register",
        "/api/register/import",
        "export.xlsx",
        "<a href=\"/register\" aria-current=\"page\">",
    ] {
        assert!(html.contains(needed), "page lacks {needed}");
    }
    // nothing from elsewhere, and API text never parsed as HTML
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!html.contains(banned), "page has {banned}");
    }
}

#[test]
fn migrate_storage_copies_a_site_into_an_empty_database_and_refuses_a_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut from = SqliteStorage::open(&dir.path().join("old.db")).unwrap();
    from.migrate().unwrap();
    let form = dir.path().join("oa.csv");
    std::fs::write(&form, oa_csv(&[&oa_row(1, "APP", "8", UUID)])).unwrap();
    yunjian_aggregator::offline::import_file(
        &mut from,
        &Profile::default(),
        UNIT,
        "ops-zhao",
        &form,
        None,
    )
    .unwrap();

    let mut to = SqliteStorage::open(&dir.path().join("new.db")).unwrap();
    let mut seen = Vec::new();
    let copied = yunjian_aggregator::offline::migrate_storage(&mut from, &mut to, |what, n| {
        seen.push((what.to_string(), n))
    })
    .unwrap();
    assert_eq!((copied.units, copied.audit), (1, 1));
    assert!(
        seen.contains(&("register units".to_string(), 1)),
        "{seen:?}"
    );
    // what the aggregator would load after the switch is what it had
    assert_eq!(to.load_register().unwrap(), from.load_register().unwrap());
    assert_eq!(to.audit(None, 10).unwrap(), from.audit(None, 10).unwrap());

    // a second copy into the now-full target is refused before anything is written
    let e =
        yunjian_aggregator::offline::migrate_storage(&mut from, &mut to, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("already holds data"), "{e}");
    assert_eq!(to.audit(None, 10).unwrap().len(), 1);
}

#[test]
fn the_command_line_import_is_held_like_the_api_while_the_unit_has_an_open_low_use_case() {
    use yunjian_aggregator_core::policy::Profile;
    use yunjian_aggregator_core::reclaim::calendar::Calendar;
    use yunjian_aggregator_core::reclaim::case::Rules;
    use yunjian_aggregator_core::reclaim::{Case, Kind, ReclaimWrite, State};
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStorage::open(&dir.path().join("yunjian.db")).unwrap();
    db.migrate().unwrap();
    let one = dir.path().join("one.csv");
    std::fs::write(&one, oa_csv(&[&oa_row(1, "APP", "8", UUID)])).unwrap();
    import_file(&mut db, &Profile::default(), UNIT, "ops-zhao", &one, None).unwrap();

    // the unit was told about a low-use case of its VM (003 第三十条)
    let profile = Profile::default();
    let calendar = Calendar::builtin();
    let rules = Rules {
        policy: &profile.reclaim,
        calendar: &calendar,
    };
    let (mut case, log) = Case::open(
        1,
        UUID,
        "oa-app-01",
        UNIT,
        "OA",
        Kind::Idle,
        serde_json::json!({}),
        &rules,
        1_790_000_000_000,
    );
    case.state = State::Notified;
    db.reclaim_write(&ReclaimWrite {
        cases: vec![case],
        log: vec![log],
        ..ReclaimWrite::default()
    })
    .unwrap();

    // asking for more through the command line is held, as through the API
    let two = dir.path().join("two.csv");
    std::fs::write(
        &two,
        oa_csv(&[&oa_row(1, "APP", "8", UUID), &oa_row(2, "WEB", "8", "")]),
    )
    .unwrap();
    let e = import_file(&mut db, &Profile::default(), UNIT, "ops-zhao", &two, None).unwrap_err();
    assert!(e.to_string().contains("003 第三十条"), "{e}");
    assert_eq!(db.load_register().unwrap().vms.len(), 1, "nothing imported");
}

/// The 4.7 KB workbook of issue 11: a cell in A1 and one in XFD1048576 (a reader that builds
/// the range spanning its cells allocates 512 GiB and aborts).
fn corner_workbook() -> Vec<u8> {
    use yunjian_aggregator_core::register::test_support::{sheet_xml, xlsx_with};
    let rows = r#"<row r="1"><c r="A1"><v>1</v></c></row><row r="1048576"><c r="XFD1048576"><v>1</v></c></row>"#;
    xlsx_with(&[("xl/worksheets/sheet1.xml", &sheet_xml("A1", rows))])
}

#[tokio::test]
async fn a_workbook_past_the_import_bounds_is_refused_over_http_and_the_aggregator_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = "127.0.0.1:0".parse().unwrap();
    let tokens = seed_users(&cfg, &[("ops-zhao", UserRole::Ops, None)]);
    let ops = &tokens[0];
    let agg = Aggregator::start(&cfg).await.unwrap();
    let q = format!("/api/register/import?{}&file=bomb.xlsx", who(UNIT));

    let bomb = corner_workbook();
    assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
    let (s, body) = http(agg.http_addr, ops, "POST", &q, XLSX_TYPE, &bomb).await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "over_limit");
    assert_eq!(body["limit"], "cell_position");
    assert_eq!(
        body["error"],
        "bomb.xlsx：工作表“Sheet1”的单元格 XFD1048576 超出上限（最多 200 列、100000 行）；未导入任何内容"
    );

    // a whole sheet's worth of columns in a CSV: refused the same way
    let wide = format!("{CSV_HEADER}{}\n", ",".repeat(300));
    let (s, body) = http(agg.http_addr, ops, "POST", &q, "text/csv", wide.as_bytes()).await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["limit"], "columns");

    // the aggregator still imports a real form, and counts the refusals
    let (s, body) = http(
        agg.http_addr,
        ops,
        "POST",
        &q,
        XLSX_TYPE,
        &attachment3_xlsx_in(["政务外网", "互联网"]),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let (s, metrics) = http(agg.http_addr, ops, "GET", "/metrics", "", b"").await;
    assert_eq!(s, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("\nyunjian_register_imports_refused_total 2\n"),
        "{metrics}"
    );
    tokio::time::timeout(Duration::from_secs(10), agg.shutdown())
        .await
        .unwrap();
}

#[test]
fn the_command_line_import_refuses_a_workbook_past_the_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStorage::open(&dir.path().join("yunjian.db")).unwrap();
    db.migrate().unwrap();
    let bomb = dir.path().join("bomb.xlsx");
    std::fs::write(&bomb, corner_workbook()).unwrap();
    let e = import_file(&mut db, &Profile::default(), UNIT, "ops-zhao", &bomb, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bomb.xlsx：工作表“Sheet1”的单元格 XFD1048576 超出上限（最多 200 列、100000 行）；未导入任何内容"
    );
    assert!(db.load_register().unwrap().vms.is_empty());
}
