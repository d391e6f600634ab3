//! The mandated antivirus over HTTP (003 附件1 承诺书): every VM's state with its evidence, and
//! the stop-VM decision for a removed antivirus.
//!
//! | route                                             | what                                  |
//! |---------------------------------------------------|---------------------------------------|
//! | `GET /antivirus`                                  | the page (removed first)              |
//! | `GET /api/antivirus`                              | every VM: state, evidence, decision   |
//! | `POST /api/antivirus/{node}/stop-request`         | `{"reason"}`: ops requests the stop   |
//! | `POST /api/antivirus/{node}/stop-request/approve` | `{"note"?}`: the authority approves   |
//!
//! A using unit's people see their own registered VMs, counted among themselves, without the
//! stop commands (they go to the VM's host).
//!
//! Both POSTs go through [`AntivirusService`]: audited (subject `antivirus:{node}`) and stored
//! with the node in one transaction, undone if storage cannot take it; an approved stop goes
//! out as a signed command to the VM's host.

use super::scope::Scope;
use super::session::Principal;
use super::{read_fleet, AppState, WebError};
use crate::antivirus::{AvState, Removal, StopDecision};
use crate::fleet::Liveness;
use crate::ratelimit::now_ms;
use crate::service::antivirus::{AntivirusService, StopFailure};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use yunjian_protocol::AntivirusProduct;

/// The routes, for any router state the [`AppState`] can be taken from.
pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/antivirus", get(page))
        .route("/api/antivirus", get(list))
        .route("/api/antivirus/{node}/stop-request", post(request_stop))
        .route(
            "/api/antivirus/{node}/stop-request/approve",
            post(approve_stop),
        )
}

async fn page(State(app): State<AppState>, who: Principal) -> Response {
    let ctx = minijinja::context! { policy => super::page::policy(&app.profile) };
    super::page::page("antivirus.html", "antivirus", Some(&who), ctx)
}

/// One VM on the antivirus page.
#[derive(Debug, Serialize)]
pub struct AvVm {
    pub node: String,
    pub hostname: Option<String>,
    pub smbios_uuid: Option<String>,
    /// The using unit and system from the register, when the VM is registered.
    pub unit: Option<String>,
    pub system: Option<String>,
    pub liveness: Liveness,
    pub state: AvState,
    pub state_zh: &'static str,
    pub notes: Vec<String>,
    /// Evidence of each removal: what was there, when last seen, what disappeared.
    pub removals: Vec<Removal>,
    /// The latest report's findings and its event time.
    pub products: Vec<AntivirusProduct>,
    pub report_ts_ms: Option<u64>,
    pub stop: Option<StopDecision>,
    /// A stop can be requested now (removed, nothing requested yet).
    pub stop_offered: bool,
    /// The stop commands sent to the VM's host after approval, newest first, with their result
    /// (cloud roles only: they name the host).
    pub stop_commands: Vec<crate::reclaim::CommandRecord>,
}

/// VMs per state.
#[derive(Debug, Default, Serialize)]
pub struct AvTotals {
    pub removed: usize,
    pub degraded: usize,
    pub missing: usize,
    pub unknown: usize,
    pub compliant: usize,
}

#[derive(Debug, Serialize)]
pub struct AvList {
    pub now_ms: u64,
    pub signature_max_age_days: u32,
    pub stop_requires_approval: bool,
    /// Over the VMs listed.
    pub totals: AvTotals,
    /// Removed first, then degraded, missing, unknown, compliant; by node id within a state.
    pub vms: Vec<AvVm>,
}

async fn list(State(app): State<AppState>, who: Principal) -> Json<AvList> {
    let policy = &app.profile.antivirus;
    let now = now_ms();
    let mut totals = AvTotals::default();
    let (scope, mut vms): (Scope, Vec<AvVm>) = {
        let fleet = read_fleet(&app.fleet);
        let register = app.register.read().unwrap_or_else(|p| p.into_inner());
        let scope = Scope::of(who.own_unit(), &register);
        let vms = fleet
            .nodes()
            .filter_map(|st| {
                let uuid = st.inventory.as_ref().and_then(|i| i.smbios_uuid.clone());
                if !scope.sees_vm(uuid.as_deref()) {
                    return None;
                }
                let a = st.antivirus_assessment(policy.signature_max_age_days, now)?;
                let reg = uuid.as_deref().and_then(|u| register.vm_by_uuid(u));
                let stop = st.antivirus.history.stop.clone();
                Some(AvVm {
                    node: st.node.clone(),
                    hostname: st.inventory.as_ref().map(|i| i.hostname.clone()),
                    smbios_uuid: uuid,
                    unit: reg.map(|v| v.unit.clone()),
                    system: reg.map(|v| v.system.clone()),
                    liveness: st.liveness,
                    state: a.state,
                    state_zh: a.state.zh(),
                    notes: a.notes,
                    removals: a.removals,
                    products: st
                        .antivirus
                        .latest
                        .as_ref()
                        .map(|(_, r)| r.products.clone())
                        .unwrap_or_default(),
                    report_ts_ms: st.antivirus.latest.as_ref().map(|(ts, _)| *ts),
                    stop_offered: a.state == AvState::Removed && stop.is_none(),
                    stop,
                    stop_commands: Vec::new(),
                })
            })
            .collect();
        (scope, vms)
    };
    vms.sort_by(|a, b| (a.state, &a.node).cmp(&(b.state, &b.node)));
    if let Some(r) = app.reclaim.as_ref().filter(|_| scope.is_cloud()) {
        for v in vms
            .iter_mut()
            .filter(|v| v.stop.as_ref().is_some_and(|d| d.approved_ms.is_some()))
        {
            v.stop_commands = r
                .commands_for(&format!("antivirus:{}", v.node))
                .await
                .unwrap_or_default();
        }
    }
    for v in &vms {
        *match v.state {
            AvState::Removed => &mut totals.removed,
            AvState::Degraded => &mut totals.degraded,
            AvState::Missing => &mut totals.missing,
            AvState::Unknown => &mut totals.unknown,
            AvState::Compliant => &mut totals.compliant,
        } += 1;
    }
    Json(AvList {
        now_ms: now,
        signature_max_age_days: policy.signature_max_age_days,
        stop_requires_approval: policy.stop_requires_approval,
        totals,
        vms,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Why, for the authority and the audit log.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub note: Option<String>,
}

fn required<'a>(value: &'a str, what: &str) -> Result<&'a str, WebError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(WebError::BadRequest(format!("`{what}` must not be empty")));
    }
    Ok(v)
}

fn service(app: &AppState) -> AntivirusService<'_> {
    AntivirusService {
        fleet: &app.fleet,
        store: &app.store,
        reclaim: app.reclaim.as_ref(),
        approval_required: app.profile.antivirus.stop_requires_approval,
        clause: &app.profile.clauses.antivirus_removed,
    }
}

fn refused(e: StopFailure) -> WebError {
    match e {
        StopFailure::UnknownNode(node) => WebError::NodeNotFound(node),
        StopFailure::Refused(e) => WebError::Conflict(e.to_string()),
        StopFailure::Store(e) => WebError::Unavailable(e.to_string()),
    }
}

/// The signed-in 运维单位 person requests the stop.
async fn request_stop(
    State(app): State<AppState>,
    who: Principal,
    Path(node): Path<String>,
    body: Result<Json<StopRequest>, JsonRejection>,
) -> Result<Json<StopDecision>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let reason = required(&req.reason, "reason")?;
    service(&app)
        .request_stop(&node, &who.actor(), reason, now_ms())
        .await
        .map(Json)
        .map_err(refused)
}

/// The signed-in 主管部门 person approves (never the requester).
async fn approve_stop(
    State(app): State<AppState>,
    who: Principal,
    Path(node): Path<String>,
    body: Result<Json<ApproveRequest>, JsonRejection>,
) -> Result<Json<StopDecision>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    service(&app)
        .approve_stop(&node, &who.actor(), req.note.as_deref(), now_ms())
        .await
        .map(Json)
        .map_err(refused)
}
