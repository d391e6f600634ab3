//! The authorisation table against the router: every route the web layer declares is in the
//! table, and for every route, anonymous callers and each role get what the table says — 401
//! (or the sign-in page) without a session, 403 naming the role needed without the role, and
//! never a refusal with it. A unit user reads no other unit's alarms.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use tower::ServiceExt;
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::web::authz::{Access, ROUTES};
use yunjian_aggregator::web::{router, AppState};
use yunjian_aggregator_core::alarms::{AlarmKey, Finding, Level};
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::identity::Role;

/// Every `.route("…"` the web modules declare, read from their source.
fn declared_routes() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for rest in text.split(".route(").skip(1) {
            let rest = rest.trim_start();
            if let Some(quoted) = rest.strip_prefix('"') {
                if let Some((pattern, _)) = quoted.split_once('"') {
                    found.insert(pattern.to_string());
                }
            }
        }
    }
    found
}

/// A concrete path for a pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{id}", "1")
        .replace("{node}", "vm-1")
        .replace("{uuid}", "4c4c4544-0000-0000-0000-000000000001")
        .replace("{name}", "%E8%B4%A2%E6%94%BF%E5%B1%80")
        .replace("{vm}", "4c4c4544-0000-0000-0000-000000000001")
        .replace("{step}", "agree")
}

fn state() -> AppState {
    let (_tx, rx) = tokio::sync::watch::channel(0);
    AppState::new(Fleet::shared(), Arc::new(Metrics::default()), rx)
}

/// The same with a SQLite store behind it (sign-in is audited, so it needs one).
fn state_with_store(dir: &tempfile::TempDir) -> AppState {
    use yunjian_aggregator_core::store::Schema;
    let mut db = yunjian_store_sqlite::SqliteStorage::open(&dir.path().join("y.db")).unwrap();
    db.migrate().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        yunjian_aggregator::ingest::storage_loop(&mut db, rx, Arc::new(Metrics::default()))
    });
    AppState {
        store: yunjian_aggregator::ingest::StoreHandle::new(tx),
        ..state()
    }
}

async fn call(
    app: &axum::Router,
    method: &Method,
    uri: &str,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    if *method != Method::GET {
        req = req.header("content-type", "application/json");
    }
    let body = if *method == Method::GET {
        Body::empty()
    } else {
        Body::from("{}")
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

#[test]
fn the_table_lists_every_route_the_web_layer_declares() {
    let declared = declared_routes();
    let listed: BTreeSet<String> = ROUTES.iter().map(|(_, p, _)| p.to_string()).collect();
    assert!(declared.len() > 30, "{declared:?}");
    assert_eq!(
        declared, listed,
        "routes and the authorisation table differ"
    );
}

#[tokio::test]
async fn each_role_gets_what_the_table_says_on_every_route() {
    let state = state();
    let people: Vec<(Role, String)> = Role::PEOPLE
        .iter()
        .map(|&r| {
            let unit = (r == Role::Unit).then_some("财政局");
            (r, state.auth.test_bearer(&format!("{r}-1"), r, unit))
        })
        .collect();
    let app = router(state);
    let mut checked = 0;
    for (method, pattern, action) in ROUTES {
        let uri = concrete(pattern);
        let (status, body) = call(&app, method, &uri, None).await;
        match action.access() {
            Access::Public => assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "anonymous {method} {pattern}: {status} {body}"
            ),
            _ => {
                let page = *method == Method::GET
                    && !pattern.starts_with("/api/")
                    && *pattern != "/metrics";
                let expected = if page {
                    StatusCode::SEE_OTHER
                } else {
                    StatusCode::UNAUTHORIZED
                };
                assert_eq!(status, expected, "anonymous {method} {pattern}: {body}");
                if !page {
                    assert_eq!(body["code"], "not_signed_in", "{method} {pattern}");
                    assert_eq!(body["error"], "请先登录");
                }
            }
        }
        for (role, bearer) in &people {
            let (status, body) = call(&app, method, &uri, Some(bearer)).await;
            if action.allows(Some(*role)) {
                assert!(
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{role} {method} {pattern}: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} {method} {pattern}: {body}"
                );
                if !body.is_null() {
                    assert_eq!(body["code"], "forbidden", "{role} {method} {pattern}");
                    let needed = action.needed_zh();
                    assert_eq!(body["error"], format!("无权执行此操作：需要{needed}角色"));
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * Role::PEOPLE.len());
}

#[tokio::test]
async fn a_unit_user_reads_only_its_own_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_store(&dir);
    let finding = |unit: &str, subject: &str| Finding {
        key: AlarmKey {
            rule: "quota.unit".into(),
            subject: subject.into(),
        },
        level: Level::Major,
        clause: "003 第十五条".into(),
        unit: Some(unit.into()),
        title: format!("{unit} 超出配额"),
        evidence: serde_json::json!({}),
    };
    state.policy.lock().unwrap().book_mut().reconcile(
        &HashSet::from(["quota.unit"]),
        vec![
            finding("财政局", "unit:财政局"),
            finding("教育局", "unit:教育局"),
        ],
        1_000,
    );
    let caizheng = state.auth.test_bearer("czj-li", Role::Unit, Some("财政局"));
    let ops = state.auth.test_bearer("ops-zhang", Role::Ops, None);
    let app = router(state);

    let (status, body) = call(&app, &Method::GET, "/api/alarms", Some(&caizheng)).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.to_string();
    assert!(text.contains("财政局 超出配额"), "{text}");
    assert!(
        !text.contains("教育局"),
        "another unit's alarm leaked: {text}"
    );

    let (_, body) = call(&app, &Method::GET, "/api/alarms", Some(&ops)).await;
    assert_eq!(
        body["open"].as_array().unwrap().len(),
        2,
        "ops sees every unit's"
    );

    // a session's write without its CSRF token is refused
    let (status, body) = sign_in_and_post_without_csrf(&app).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "csrf");
}

/// Sign in as the ops user through `POST /api/session` and acknowledge with the cookie but
/// without `X-CSRF-Token`.
async fn sign_in_and_post_without_csrf(app: &axum::Router) -> (StatusCode, Value) {
    let req = Request::post("/api/session")
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"name":"ops-zhang","password":"{}"}}"#,
            yunjian_aggregator::service::identity::TEST_PASSWORD
        )))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let req = Request::post("/api/alarms/1/ack")
        .header("content-type", "application/json")
        .header("cookie", pair)
        .body(Body::from("{}"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_and_are_counted_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_store(&dir);
    let auditor = state.auth.test_bearer("audit-1", Role::Auditor, None);
    state.auth.test_bearer("ops-zhang", Role::Ops, None);
    let app = router(state);
    let attempt = |password: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::post("/api/session")
                .header("content-type", "application/json")
                .body(Body::from(format!(
                    r#"{{"name":"ops-zhang","password":"{password}"}}"#
                )))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    for _ in 0..4 {
        let (status, body) = attempt("wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "用户名或密码错误");
    }
    let (status, body) = attempt("wrong").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "account_locked");
    // the right password is refused while locked
    let (status, _) = attempt(yunjian_aggregator::service::identity::TEST_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let req = Request::get("/metrics")
        .header("authorization", format!("Bearer {auditor}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for line in [
        "yunjian_sign_in_failures_total 5",
        "yunjian_sign_in_lockouts_total 1",
        "yunjian_sign_ins_refused_locked_total 1",
        "yunjian_sign_ins_total 0",
    ] {
        assert!(text.contains(line), "{line} missing");
    }

    // an expired or revoked token is refused: a token that was never issued is the same
    let (status, body) = call(
        &app,
        &Method::GET,
        "/api/alarms",
        Some("yj_000000000000_00"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "bad_token");
}

#[tokio::test]
async fn the_administrator_creates_resets_and_disables_users() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_store(&dir);
    let admin = state.auth.test_bearer("admin-1", Role::Admin, None);
    let app = router(state);
    let post = |uri: &'static str, body: Value| {
        let app = app.clone();
        let admin = admin.clone();
        async move {
            let req = Request::post(uri)
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let sign_in = |name: &'static str, password: String| {
        let app = app.clone();
        async move {
            let req = Request::post("/api/session")
                .header("content-type", "application/json")
                .body(Body::from(
                    serde_json::json!({ "name": name, "password": password }).to_string(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };

    let (status, created) = post(
        "/api/users",
        serde_json::json!({ "name": "cz-wang", "display_name": "王科长", "role": "unit", "unit": "财政局" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (created["role"].as_str(), created["unit"].as_str()),
        (Some("unit"), Some("财政局"))
    );
    let password = created["password"].as_str().unwrap().to_string();
    assert_eq!(sign_in("cz-wang", password.clone()).await, StatusCode::OK);

    let (status, body) = post(
        "/api/users",
        serde_json::json!({ "name": "x", "role": "unit" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "使用单位角色（unit）的用户必须指定所属单位");

    let (status, reset) = post("/api/users/cz-wang/password", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    assert_eq!(
        sign_in("cz-wang", password).await,
        StatusCode::UNAUTHORIZED,
        "the old one is gone"
    );
    let new_password = reset["password"].as_str().unwrap().to_string();

    let (status, token) = post(
        "/api/users/cz-wang/tokens",
        serde_json::json!({ "label": "报表", "days": 7 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let bearer = token["token"].as_str().unwrap().to_string();
    let (status, _) = call(&app, &Method::GET, "/api/alarms", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = post(
        "/api/users/cz-wang/disable",
        serde_json::json!({ "disabled": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, &Method::GET, "/api/alarms", Some(&bearer)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a disabled user's token is refused"
    );
    assert_eq!(
        sign_in("cz-wang", new_password).await,
        StatusCode::UNAUTHORIZED
    );

    let (status, body) = post(
        "/api/users/admin-1/disable",
        serde_json::json!({ "disabled": true }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "own_account");
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_store(&dir);
    let ops = state.auth.test_bearer("ops-zhang", Role::Ops, None);
    let app = router(state);
    let post = |uri: String, bearer: String, body: Value| {
        let app = app.clone();
        async move {
            let req = Request::post(uri)
                .header("authorization", format!("Bearer {bearer}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, issued) = post(
        "/api/account/tokens".into(),
        ops.clone(),
        serde_json::json!({ "label": "巡检脚本", "days": 30 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let script = issued["token"].as_str().unwrap().to_string();
    let (status, _) = call(&app, &Method::GET, "/api/alarms", Some(&script)).await;
    assert_eq!(status, StatusCode::OK);
    let id = issued["id"].as_str().unwrap();
    let (status, _) = post(
        format!("/api/account/tokens/{id}/revoke"),
        ops.clone(),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, &Method::GET, "/api/alarms", Some(&script)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "API 令牌无效、已过期或已吊销");
    // the other token of the same user still works
    let (status, _) = call(&app, &Method::GET, "/api/alarms", Some(&ops)).await;
    assert_eq!(status, StatusCode::OK);
}
