//! Capacity over HTTP (003 第十九条), and the capacity and alarm pages.
//!
//! | route               | what                                                              |
//! |---------------------|-------------------------------------------------------------------|
//! | `GET /api/capacity` | per pool and platform, per resource: capacity, allocated, used, ratios against the 70% line, alarm state, forecast date |
//! | `GET /capacity`     | the capacity page (bars against the 70% line, forecasts)          |
//! | `GET /alarms`       | the alarm page: open alarms with 确认 (acknowledge), cleared below |
//!
//! The figures are computed on request from the fleet and the register (the same
//! [`measure`] the capacity rule runs); the state of each ratio and the forecast come from the
//! open alarms of the `capacity` and `capacity_forecast` rules. A ratio at or above the line
//! that has not fired yet is `pending` (the hold time runs).
//!
//! The pages are `templates/capacity.html` and `templates/alarms.html` on the base layout.

use super::page::page;
use super::session::Principal;
use super::AppState;
use crate::alarms::{Alarm, AlarmKey, AlarmState, Level};
use crate::policy::hysteresis::Escalation;
use crate::policy::rules::capacity::{self, measure, Kind, Resource, Scope};
use crate::policy::rules::capacity_forecast;
use crate::ratelimit::now_ms;
use axum::extract::{FromRef, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use minijinja::Value;
use serde::Serialize;

/// The routes, for any router state the [`AppState`] can be taken from.
pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/capacity", get(api))
        .route("/capacity", get(capacity_page))
        .route("/alarms", get(alarms_page))
}

/// `GET /api/capacity`.
#[derive(Debug, Serialize)]
pub struct CapacityBody {
    pub now_ms: u64,
    /// The active profile's clause (`[clauses] capacity`).
    pub clause: String,
    pub warn_pct: f64,
    /// The pre-warning line below `warn_pct`, if the profile has one (003 第十九条 接近).
    pub prewarn_pct: Option<f64>,
    pub recovery_pct: f64,
    pub hold_s: u64,
    pub escalate: Vec<Escalation>,
    pub forecast_horizon_days: u32,
    pub forecast_window_days: u32,
    /// Pools in register order, then the platform.
    pub scopes: Vec<ScopeView>,
}

#[derive(Debug, Serialize)]
pub struct ScopeView {
    /// `pool:A` or `platform`.
    pub id: String,
    /// `资源池 A` or `全平台`.
    pub name: String,
    pub pool: Option<String>,
    pub hosts: usize,
    pub hosts_missing: usize,
    pub vms: usize,
    pub unregistered_vms: usize,
    /// Event time of the newest host report.
    pub ts_ms: u64,
    pub resources: Vec<ResourceView>,
}

#[derive(Debug, Serialize)]
pub struct ResourceView {
    pub resource: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub total: f64,
    pub reserved: f64,
    pub capacity: f64,
    pub allocated: Option<f64>,
    pub used: f64,
    pub allocated_pct: Option<f64>,
    pub used_pct: Option<f64>,
    /// `None` when the ratio has no denominator (no hosts, no NIC bandwidth configured).
    pub allocated_state: Option<RatioState>,
    pub used_state: Option<RatioState>,
    /// When the used ratio is expected to reach the line (within the horizon).
    pub forecast: Option<ForecastView>,
}

#[derive(Debug, Serialize)]
pub struct RatioState {
    /// `ok`, `pending` (at or above the line, hold time running) or `firing`.
    pub state: &'static str,
    pub level: Option<Level>,
    pub alarm_id: Option<u64>,
    pub acknowledged: bool,
}

#[derive(Debug, Serialize)]
pub struct ForecastView {
    /// Beijing date, `2026-12-03`.
    pub date: String,
    pub at_ms: u64,
    pub days_left: f64,
    pub level: Level,
    pub alarm_id: u64,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn ratio_state(pct: Option<f64>, warn: f64, alarm: Option<&Alarm>) -> Option<RatioState> {
    let pct = pct?;
    Some(match alarm {
        Some(a) => RatioState {
            state: "firing",
            level: Some(a.level),
            alarm_id: Some(a.id),
            acknowledged: a.state == AlarmState::Acknowledged,
        },
        None => RatioState {
            state: if pct >= warn { "pending" } else { "ok" },
            level: None,
            alarm_id: None,
            acknowledged: false,
        },
    })
}

fn forecast_of(a: &Alarm) -> Option<ForecastView> {
    let e = &a.evidence;
    Some(ForecastView {
        date: e["date"].as_str()?.to_string(),
        at_ms: e["crossing_ms"].as_u64()?,
        days_left: e["days_left"].as_f64()?,
        level: a.level,
        alarm_id: a.id,
    })
}

fn view(s: &Scope, warn: f64, open: &dyn Fn(&str, String) -> Option<Alarm>) -> ScopeView {
    let resources = Resource::ALL
        .iter()
        .map(|&r| {
            let f = s.figures(r);
            let (a_pct, u_pct) = (f.pct(Kind::Allocated), f.pct(Kind::Used));
            let alarm = |k| open(capacity::NAME, s.subject(r, k));
            ResourceView {
                resource: r.as_str(),
                label: r.zh(),
                unit: r.unit(),
                total: round2(f.total),
                reserved: round2(f.reserved),
                capacity: round2(f.capacity),
                allocated: f.allocated.map(round2),
                used: round2(f.used),
                allocated_pct: a_pct.map(round2),
                used_pct: u_pct.map(round2),
                allocated_state: ratio_state(a_pct, warn, alarm(Kind::Allocated).as_ref()),
                used_state: ratio_state(u_pct, warn, alarm(Kind::Used).as_ref()),
                forecast: open(capacity_forecast::NAME, s.subject(r, Kind::Used))
                    .as_ref()
                    .and_then(forecast_of),
            }
        })
        .collect();
    ScopeView {
        id: s.id.clone(),
        name: s.name_zh(),
        pool: s.pool.clone(),
        hosts: s.hosts,
        hosts_missing: s.hosts_missing,
        vms: s.vms,
        unregistered_vms: s.unregistered_vms,
        ts_ms: s.ts_ms,
        resources,
    }
}

async fn api(State(app): State<AppState>) -> Json<CapacityBody> {
    let scopes = {
        let fleet = super::read_fleet(&app.fleet);
        let register = app.register.read().unwrap_or_else(|p| p.into_inner());
        measure(&fleet, &register)
    };
    let cap = &app.profile.capacity;
    let cap_clause = app.profile.clauses.capacity.clone();
    let warn = cap.thresholds.warn_pct;
    let views = {
        let engine = app.policy.lock().unwrap_or_else(|p| p.into_inner());
        let book = engine.book();
        let open = |rule: &str, subject: String| {
            book.get_open(&AlarmKey {
                rule: rule.to_string(),
                subject,
            })
            .cloned()
        };
        scopes.iter().map(|s| view(s, warn, &open)).collect()
    };
    Json(CapacityBody {
        now_ms: now_ms(),
        clause: cap_clause,
        warn_pct: warn,
        prewarn_pct: cap.prewarn.as_ref().map(|p| p.warn_pct),
        recovery_pct: cap.thresholds.recovery_pct,
        hold_s: cap.thresholds.hold.as_secs(),
        escalate: cap.thresholds.escalate.clone(),
        forecast_horizon_days: cap.forecast_horizon_days,
        forecast_window_days: cap.forecast_window_days,
        scopes: views,
    })
}

async fn capacity_page(who: Principal) -> Response {
    page("capacity.html", "capacity", Some(&who), Value::UNDEFINED)
}

async fn alarms_page(who: Principal) -> Response {
    page("alarms.html", "alarms", Some(&who), Value::UNDEFINED)
}
