//! Reclaim cases (降配 / 回收): the queue, the case page and the steps people take.
//!
//! | route                                   | what                                                   |
//! |-----------------------------------------|--------------------------------------------------------|
//! | `GET /reclaim`, `GET /reclaim/{id}`     | the queue by unit, one case (timeline, evidence chart)  |
//! | `GET /api/reclaim/cases`                | every case with its deadline, overdue flag, command; the units whose requests are held |
//! | `GET /api/reclaim/cases/{id}`           | one case, its timeline, its commands, the steps open now |
//! | `POST /api/reclaim/cases/{id}/{step}`   | take a step: `{"reason", "at_ms"}` (schedule)          |
//! | `POST /api/reclaim/detections`          | feed findings by hand (ops): `[{"uuid", "kind", "evidence"}]` |
//! | `GET /api/reclaim/whoami`               | the signed-in person as the case steps see them        |
//!
//! Steps are taken by the signed-in user (session or API token); the case's state machine says
//! which role may take which step, and a unit acts on and sees only its own cases (another
//! unit's case answers 404). Every step is audited with who, role, when and why.

use super::page::page;
use super::session::Principal;
use super::AppState;
use crate::ratelimit::now_ms;
use crate::reclaim::case::{Role, PERSON_STEPS};
use crate::reclaim::service::{may_feed, CaseView};
use crate::reclaim::{
    Actor, CaseError, CommandRecord, Detection, LogEntry, Reclaim, ReclaimError, Step,
};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::Value;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/reclaim", get(queue_page))
        .route("/reclaim/{id}", get(case_page))
        .route("/api/reclaim/cases", get(list))
        .route("/api/reclaim/cases/{id}", get(one))
        .route("/api/reclaim/cases/{id}/{step}", post(act))
        .route("/api/reclaim/detections", post(detections))
        .route("/api/reclaim/whoami", get(whoami))
}

async fn queue_page(State(app): State<AppState>, who: Principal) -> Response {
    let ctx = minijinja::context! { policy => super::page::policy(&app.profile) };
    page("reclaim.html", "reclaim", Some(&who), ctx)
}

async fn case_page(who: Principal) -> Response {
    page("case.html", "reclaim", Some(&who), Value::UNDEFINED)
}

/// This page's errors: `{ "error": zh-CN message, "code": stable code }` with the matching
/// status.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.2, "code": self.1 }))).into_response()
    }
}

/// A request body that is not what the endpoint takes.
fn bad_request(e: JsonRejection) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("请求无效：{}", e.body_text()),
    )
}

impl From<ReclaimError> for ApiError {
    fn from(e: ReclaimError) -> Self {
        let status = match &e {
            ReclaimError::NotFound(_) => StatusCode::NOT_FOUND,
            ReclaimError::UnknownStep(_) | ReclaimError::NoTime => StatusCode::BAD_REQUEST,
            ReclaimError::Case(CaseError::Forbidden { .. } | CaseError::OtherUnit { .. })
            | ReclaimError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ReclaimError::Case(CaseError::NoReason { .. } | CaseError::PastSchedule { .. }) => {
                StatusCode::BAD_REQUEST
            }
            ReclaimError::Case(_)
            | ReclaimError::NoHost { .. }
            | ReclaimError::Contested { .. }
            | ReclaimError::NoSnapshot { .. }
            | ReclaimError::UnknownVm(_) => StatusCode::CONFLICT,
            ReclaimError::Storage(_) | ReclaimError::Random(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.code(), e.to_string())
    }
}

fn service(app: &AppState) -> Result<&Reclaim, ApiError> {
    app.reclaim.as_ref().ok_or(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "reclaim_unavailable",
        "本部署未启用降配回收".into(),
    ))
}

#[derive(Debug, Serialize)]
pub struct Queue {
    pub now_ms: u64,
    pub cases: Vec<CaseView>,
    /// 003 第三十条: units whose requests for more resources are held, with the open cases.
    pub held_units: BTreeMap<String, serde_json::Value>,
    pub calendar: Vec<String>,
}

/// A unit's people see their own unit's cases and hold only.
async fn list(State(app): State<AppState>, who: Principal) -> Result<Json<Queue>, ApiError> {
    let r = service(&app)?;
    let now = now_ms();
    let mine = |unit: &str| who.own_unit().is_none_or(|own| own == unit);
    let held = r
        .held_units()
        .await
        .into_iter()
        .filter(|(u, _)| mine(u))
        .map(|(u, (cases, since))| (u, json!({"cases": cases, "since_ms": since})))
        .collect();
    let mut cases = r.cases(now).await;
    cases.retain(|c| mine(&c.case.unit));
    Ok(Json(Queue {
        now_ms: now,
        cases,
        held_units: held,
        calendar: r.calendar.names.clone(),
    }))
}

#[derive(Debug, Serialize)]
pub struct CaseBody {
    pub now_ms: u64,
    pub case: CaseView,
    pub timeline: Vec<LogEntry>,
    pub commands: Vec<CommandRecord>,
    /// The steps people may take now, each with the roles allowed.
    pub steps: Vec<StepOffer>,
}

#[derive(Debug, Serialize)]
pub struct StepOffer {
    pub step: &'static str,
    pub roles: Vec<Role>,
}

/// Another unit's case is not found for a unit's people: its existence is not confirmed.
async fn one(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<u64>,
) -> Result<Json<CaseBody>, ApiError> {
    let r = service(&app)?;
    let now = now_ms();
    let (case, timeline, commands) = r.case(id, now).await?;
    if who.own_unit().is_some_and(|own| own != case.case.unit) {
        return Err(ReclaimError::NotFound(id).into());
    }
    let mut steps: Vec<StepOffer> = Vec::new();
    for (name, role) in PERSON_STEPS {
        let probe = match *name {
            "notify" => Step::Notify,
            "agree" => Step::Agree,
            "dispute" => Step::Dispute,
            "settle" => Step::Settle,
            "handover" => Step::Handover,
            "limit" => Step::Limit {
                command: String::new(),
            },
            "unlimit" => Step::Unlimit {
                command: String::new(),
            },
            "file" => Step::File,
            "approve" => Step::Approve,
            "reject" => Step::Reject,
            "schedule" => Step::Schedule { at_ms: now },
            "withdraw" => Step::Withdraw,
            "retry" => Step::Retry {
                command: String::new(),
            },
            "rollback" => Step::Rollback {
                command: String::new(),
            },
            _ => Step::Close {
                command: case.case.is_stop().then(String::new),
            },
        };
        // 004 第十六条's limit: only under a profile with the rung, once the unit refused
        let no_limit = *name == "limit" && (r.policy.limit.is_none() || !case.case.refused(now));
        if no_limit || case.case.target(&probe).is_none() {
            continue;
        }
        match steps.iter_mut().find(|s| s.step == *name) {
            Some(s) => s.roles.push(*role),
            None => steps.push(StepOffer {
                step: name,
                roles: vec![*role],
            }),
        }
    }
    Ok(Json(CaseBody {
        now_ms: now,
        case,
        timeline,
        commands,
        steps,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    #[serde(default)]
    pub reason: String,
    /// For `schedule`: when to act (Unix ms).
    pub at_ms: Option<u64>,
}

async fn act(
    State(app): State<AppState>,
    principal: Principal,
    Path((id, step)): Path<(u64, String)>,
    body: Result<Json<StepRequest>, JsonRejection>,
) -> Result<Json<CaseView>, ApiError> {
    let r = service(&app)?;
    if let Some(own) = principal.own_unit() {
        let (case, _, _) = r.case(id, now_ms()).await?;
        if case.case.unit != own {
            return Err(ReclaimError::NotFound(id).into());
        }
    }
    let who = principal.actor();
    let Json(req) = body.map_err(bad_request)?;
    let view = r
        .act(id, &step, &who, &req.reason, req.at_ms, now_ms())
        .await?;
    Ok(Json(view))
}

async fn detections(
    State(app): State<AppState>,
    principal: Principal,
    body: Result<Json<Vec<Detection>>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = service(&app)?;
    may_feed(principal.role())?;
    let Json(found) = body.map_err(bad_request)?;
    let opened = r.detect(found, now_ms()).await?;
    Ok(Json(json!({ "opened": opened })))
}

/// The signed-in person as the case steps see them.
async fn whoami(principal: Principal) -> Json<Actor> {
    Json(principal.actor())
}
