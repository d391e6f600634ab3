//! Utilisation history, the idle / over-provisioned findings and the exemption register.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/usage/{vm}/days` | a VM's daily summaries; `?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: the last 30 days) |
//! | `GET /api/usage/findings` | both rules over every VM; `?now_ms=` (event time, default the history's latest) |
//! | `GET /api/exemptions` | the exemption register with each one's state; `?vm=` |
//! | `POST /api/exemptions` | `{vm, reason, note, expires_ms \| expires: "YYYY-MM-DD"}`: the signed-in authority grants it |
//! | `POST /api/exemptions/{id}/revoke` | `{reason}` |
//!
//! A using unit's people read their own registered VMs only: another unit's VM has no history
//! for them (404), and findings, counts and exemptions are of their VMs.
//!
//! Times are event time (the reports' `ts_ms`), so an accelerated simulation works: "now" is
//! the latest report's time, and an exemption's expiry is checked against it. Exemption changes
//! are stored and audited before they take effect.

use super::scope::Scope;
use super::session::Principal;
use super::{AppState, WebError};
use crate::ratelimit::now_ms;
use crate::service::exemptions::{ExemptionFailure, ExemptionService};
use crate::time::Day;
use crate::usage::{
    DailySummary, ExemptError, ExemptReason, Exemption, ExemptionState, NewExemption, Usage,
    UsageFinding,
};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::RwLockReadGuard;

/// Longest range `/api/usage/{vm}/days` answers, days.
const MAX_RANGE_DAYS: i32 = 400;

pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/usage/findings", get(findings))
        .route("/api/usage/{vm}/days", get(days))
        .route("/api/exemptions", get(list).post(create))
        .route("/api/exemptions/{id}/revoke", post(revoke))
}

fn read(app: &AppState) -> RwLockReadGuard<'_, Usage> {
    app.usage.read().unwrap_or_else(|p| p.into_inner())
}

/// The evaluation clock: the latest report's event time, or the wall clock before any.
fn event_now(u: &Usage) -> u64 {
    match u.history.now_ms() {
        0 => now_ms(),
        t => t,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaysQuery {
    from: Option<String>,
    to: Option<String>,
}

/// A day in natural units, for the evidence chart.
#[derive(Debug, Serialize)]
pub struct DayView {
    pub date: Day,
    /// The day number (days since 1970-01-01).
    #[serde(with = "crate::time::day_number")]
    pub day: Day,
    pub samples: u32,
    pub coverage_pct: f64,
    pub cpu_mean_pct: f64,
    pub cpu_p95_pct: f64,
    pub cpu_p99_pct: f64,
    pub cpu_max_pct: f64,
    pub vcpus: u16,
    pub mem_used_mean_mib: u32,
    pub mem_used_max_mib: u32,
    pub mem_total_mib: u32,
    pub net_rx_bytes: f64,
    pub net_tx_bytes: f64,
    pub disk_read_bytes: f64,
    pub disk_write_bytes: f64,
}

impl From<&DailySummary> for DayView {
    fn from(d: &DailySummary) -> Self {
        let pct = |c: u16| f64::from(c) / 100.0;
        DayView {
            date: d.day,
            day: d.day,
            samples: d.samples,
            coverage_pct: d.coverage() * 100.0,
            cpu_mean_pct: pct(d.cpu_mean),
            cpu_p95_pct: pct(d.cpu_p95),
            cpu_p99_pct: pct(d.cpu_p99),
            cpu_max_pct: pct(d.cpu_max),
            vcpus: d.vcpus,
            mem_used_mean_mib: d.mem_used_mean_mib,
            mem_used_max_mib: d.mem_used_max_mib,
            mem_total_mib: d.mem_total_mib,
            net_rx_bytes: f64::from(d.net_rx_bytes),
            net_tx_bytes: f64::from(d.net_tx_bytes),
            disk_read_bytes: f64::from(d.disk_read_bytes),
            disk_write_bytes: f64::from(d.disk_write_bytes),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DaysBody {
    pub vm: String,
    pub from: Day,
    pub to: Day,
    pub days: Vec<DayView>,
}

fn date_param(param: &'static str, v: Option<&str>) -> Result<Option<Day>, WebError> {
    v.map(|text| {
        Day::parse(text).ok_or(WebError::BadQueryValue {
            param,
            value: text.to_string(),
            allowed: "a date YYYY-MM-DD",
        })
    })
    .transpose()
}

async fn days(
    State(app): State<AppState>,
    who: Principal,
    Path(vm): Path<String>,
    query: Result<Query<DaysQuery>, QueryRejection>,
) -> Result<Json<DaysBody>, WebError> {
    let Query(q) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    let vm = vm.to_ascii_lowercase();
    let scope = Scope::of_request(&who, &app);
    let u = read(&app);
    let h = &u.history;
    let Some(vh) = h.get(&vm).filter(|_| scope.sees_vm(Some(&vm))) else {
        return Err(WebError::NotFound {
            what: "虚拟机利用率历史",
            id: vm,
        });
    };
    let latest = vh.latest_day().unwrap_or_else(|| h.day_of(h.now_ms()));
    let to = date_param("to", q.to.as_deref())?.unwrap_or(latest);
    let from = date_param("from", q.from.as_deref())?.unwrap_or(to - 29);
    if from > to || to - from >= MAX_RANGE_DAYS {
        return Err(WebError::BadRequest(format!(
            "date range {} .. {}: `from` must not be after `to`, and at most {MAX_RANGE_DAYS} days",
            from, to
        )));
    }
    let days = h.days(&vm, from, to).iter().map(DayView::from).collect();
    Ok(Json(DaysBody { vm, from, to, days }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsQuery {
    now_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct FindingsBody {
    /// Event time the rules were evaluated at; `today` is its day (not judged yet).
    pub now_ms: u64,
    pub today: Day,
    pub profile: String,
    /// VMs with history (of those the user may see).
    pub vms_tracked: usize,
    pub findings: Vec<UsageFinding>,
}

async fn findings(
    State(app): State<AppState>,
    who: Principal,
    query: Result<Query<FindingsQuery>, QueryRejection>,
) -> Result<Json<FindingsBody>, WebError> {
    let Query(q) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    let scope = Scope::of_request(&who, &app);
    let u = read(&app);
    let now = q.now_ms.unwrap_or_else(|| event_now(&u));
    let mut findings = u
        .history
        .evaluate(now, app.profile.usage_rules(), &u.exemptions);
    findings.retain(|f| scope.sees_vm(Some(&f.vm)));
    let vms_tracked = match scope {
        Scope::Cloud => u.history.len(),
        Scope::Unit { .. } => u
            .history
            .vms()
            .filter(|(vm, _)| scope.sees_vm(Some(vm)))
            .count(),
    };
    Ok(Json(FindingsBody {
        now_ms: now,
        today: u.history.day_of(now),
        profile: app.profile.name.clone(),
        vms_tracked,
        findings,
    }))
}

#[derive(Debug, Serialize)]
pub struct ExemptionView {
    #[serde(flatten)]
    pub exemption: Exemption,
    pub state: ExemptionState,
    pub reason_label: &'static str,
    pub expires: Day,
}

#[derive(Debug, Serialize)]
pub struct ExemptionList {
    pub now_ms: u64,
    pub exemptions: Vec<ExemptionView>,
}

fn view(e: &Exemption, now: u64, offset_ms: i64) -> ExemptionView {
    ExemptionView {
        exemption: e.clone(),
        state: e.state(now),
        reason_label: e.reason.label(),
        expires: Day::of_ms(e.expires_ms.saturating_sub(1), offset_ms),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    vm: Option<String>,
}

async fn list(
    State(app): State<AppState>,
    who: Principal,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ExemptionList>, WebError> {
    let Query(q) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    let vm = q.vm.map(|v| v.to_ascii_lowercase());
    let scope = Scope::of_request(&who, &app);
    let u = read(&app);
    let now = event_now(&u);
    let offset = u.history.offset_ms();
    let exemptions = u
        .exemptions
        .list()
        .iter()
        .filter(|e| vm.as_deref().is_none_or(|v| e.vm == v))
        .filter(|e| scope.sees_vm(Some(&e.vm)))
        .map(|e| view(e, now, offset))
        .collect();
    Ok(Json(ExemptionList {
        now_ms: now,
        exemptions,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    vm: String,
    reason: ExemptReason,
    #[serde(default)]
    note: String,
    /// Event time at which it expires...
    expires_ms: Option<u64>,
    /// ...or the last day it holds (through local midnight).
    expires: Option<String>,
}

fn exempt_error(e: ExemptError) -> WebError {
    match e {
        ExemptError::NotFound(id) => WebError::NotFound {
            what: "豁免",
            id: id.to_string(),
        },
        ExemptError::AlreadyRevoked(_) => WebError::Conflict(e.to_string()),
        _ => WebError::BadRequest(e.to_string()),
    }
}

fn service(app: &AppState) -> ExemptionService<'_> {
    ExemptionService {
        usage: &app.usage,
        register: &app.register,
        store: &app.store,
        max_days: app.profile.idle.max_exemption_days,
        turn: &app.exemption_turn,
    }
}

fn refused(e: ExemptionFailure) -> WebError {
    match e {
        ExemptionFailure::UnknownVm(vm) => WebError::NotFound {
            what: "虚拟机（既未登记也未上报）",
            id: vm,
        },
        ExemptionFailure::Refused(e) => exempt_error(e),
        ExemptionFailure::Store(e) => WebError::Unavailable(e.to_string()),
    }
}

/// The signed-in 主管部门 person grants it (creator and approver).
async fn create(
    State(app): State<AppState>,
    who: Principal,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ExemptionView>), WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let (now, offset) = {
        let u = read(&app);
        (event_now(&u), u.history.offset_ms())
    };
    let expires_ms = match (req.expires_ms, req.expires.as_deref()) {
        (Some(ms), None) => ms,
        (None, Some(date)) => {
            let day = Day::parse(date).ok_or_else(|| {
                WebError::BadRequest(format!("expires {date:?} is not a date YYYY-MM-DD"))
            })?;
            (day + 1).start_ms(offset)
        }
        _ => {
            return Err(WebError::BadRequest(
                "give exactly one of `expires_ms` and `expires` (YYYY-MM-DD)".into(),
            ))
        }
    };
    let new = NewExemption {
        vm: req.vm,
        reason: req.reason,
        note: req.note,
        approver: who.user.name.clone(),
        created_by: who.user.name.clone(),
        expires_ms,
    };
    let exemption = service(&app)
        .create(&who.actor(), new, now, now_ms())
        .await
        .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(view(&exemption, now, offset))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    reason: String,
}

async fn revoke(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<u64>,
    body: Result<Json<RevokeRequest>, JsonRejection>,
) -> Result<Json<ExemptionView>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let revoked = service(&app)
        .revoke(id, &who.actor(), &req.reason, now_ms())
        .await
        .map_err(refused)?;
    let (now, offset) = {
        let u = read(&app);
        (event_now(&u), u.history.offset_ms())
    };
    Ok(Json(view(&revoked, now, offset)))
}

#[cfg(test)]
mod tests {
    use crate::fleet::Fleet;
    use crate::metrics::Metrics;
    use crate::usage::Sample;
    use crate::web::{router, AppState};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tower::ServiceExt;
    use yunjian_aggregator_core::identity::Role;

    const T0: u64 = 1_772_380_800_000;

    fn app() -> AppState {
        let (_tx, rx) = tokio::sync::watch::channel(0);
        let state = AppState::new(Fleet::shared(), Arc::new(Metrics::default()), rx);
        {
            let mut u = state.usage.write().unwrap();
            for q in 0..(20 * 96u64) {
                let s = Sample {
                    cpu: 120,
                    vcpus: 4,
                    mem_used_kib: 1 << 20,
                    mem_total_kib: 8 << 20,
                    ..Sample::default()
                };
                u.history.record_sample("aa-01", T0 + q * 900_000, &s);
            }
        }
        state
    }

    async fn call(
        state: &AppState,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = router(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn days_and_findings_come_by_event_time() {
        let state = app();
        let ops = state.auth.test_bearer("ops-1", Role::Ops, None);
        let (s, body) = call(
            &state,
            &ops,
            "GET",
            "/api/usage/AA-01/days?from=2026-03-02&to=2026-03-05",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["days"].as_array().unwrap().len(), 4);
        assert_eq!(body["days"][0]["date"], "2026-03-02");
        // the day number too, and the range as dates: the JSON the dashboard reads
        assert_eq!(body["days"][0]["day"], 20_514);
        assert_eq!(
            (&body["from"], &body["to"]),
            (&"2026-03-02".into(), &"2026-03-05".into())
        );
        // every sample at 1.2 %: the bucket edge (1.25) is capped at the max
        assert_eq!(body["days"][1]["cpu_p95_pct"], 1.2);
        assert_eq!(body["days"][1]["coverage_pct"], 100.0);

        // by default the last 30 days up to the VM's latest: all 20 it has
        let (_, body) = call(&state, &ops, "GET", "/api/usage/aa-01/days", None).await;
        assert_eq!(
            (&body["from"], &body["to"]),
            (&"2026-02-20".into(), &"2026-03-21".into())
        );
        assert_eq!(body["days"].as_array().unwrap().len(), 20);

        let (s, body) = call(&state, &ops, "GET", "/api/usage/findings", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body["today"], "2026-03-21");
        let f = &body["findings"][0];
        assert_eq!(f["vm"], "aa-01");
        assert_eq!(f["kind"]["type"], "idle");
        assert_eq!(f["evidence"]["window"]["days"], 14);
        assert_eq!(f["evidence"]["thresholds"]["quiet_cpu_p95_pct"], 5.0);
    }

    #[tokio::test]
    async fn bad_requests_name_the_problem() {
        let state = app();
        let ops = state.auth.test_bearer("ops-1", Role::Ops, None);
        let chief = state.auth.test_bearer("chief-1", Role::Authority, None);
        let (s, body) = call(&state, &ops, "GET", "/api/usage/nope/days", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
        let (s, body) = call(
            &state,
            &ops,
            "GET",
            "/api/usage/aa-01/days?from=March",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(body["parameter"], "from");
        let (s, _) = call(&state, &ops, "GET", "/api/usage/findings?when=now", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        let good = serde_json::json!({
            "vm": "aa-01", "reason": "dr_standby", "expires": "2026-06-30"
        });
        // the request no longer names who grants it: the signed-in authority does
        let mut named = good.clone();
        named["approver"] = "数据局".into();
        let (s, _) = call(&state, &chief, "POST", "/api/exemptions", Some(named)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // only the authority grants one
        let (s, body) = call(&state, &ops, "POST", "/api/exemptions", Some(good.clone())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "forbidden");
        let mut unknown = good.clone();
        unknown["vm"] = "bb-02".into();
        let (s, body) = call(&state, &chief, "POST", "/api/exemptions", Some(unknown)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"].as_str().unwrap().contains("bb-02"));
        let mut both = good.clone();
        both["expires_ms"] = 1.into();
        let (s, body) = call(&state, &chief, "POST", "/api/exemptions", Some(both)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("exactly one"));
        let mut reason = good.clone();
        reason["reason"] = "holiday".into();
        let (s, body) = call(&state, &chief, "POST", "/api/exemptions", Some(reason)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().unwrap().contains("holiday"),
            "{body}"
        );
        let mut past = good.clone();
        past["expires"] = "2026-03-01".into();
        let (s, body) = call(&state, &chief, "POST", "/api/exemptions", Some(past)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().unwrap().contains("not after now"),
            "{body}"
        );
        // a well-formed one needs storage: refused whole, nothing registered
        let (s, _) = call(&state, &chief, "POST", "/api/exemptions", Some(good)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(state.usage.read().unwrap().exemptions.list().is_empty());
    }
}
