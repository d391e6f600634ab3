//! Alarms over HTTP.

use super::scope::Scope;
use super::session::Principal;
use super::{AppState, WebError};
use crate::alarms::{AckError, Alarm};
use crate::ratelimit::now_ms;
use crate::service::alarms::AckFailure;
use axum::extract::{FromRef, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// The routes, for any router state the [`AppState`] can be taken from.
pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/alarms", get(list))
        .route("/api/alarms/{id}/ack", post(acknowledge))
}

#[derive(Debug, Serialize)]
pub struct AlarmList {
    pub open: Vec<Alarm>,
    pub cleared: Vec<Alarm>,
}

/// A unit's people see the alarms about their unit only, without the hosts in the evidence;
/// cloud-wide ones (pools, hosts) are not theirs.
async fn list(State(app): State<AppState>, who: Principal) -> Json<AlarmList> {
    let scope = Scope::of_request(&who, &app);
    let engine = app.policy.lock().unwrap_or_else(|p| p.into_inner());
    let book = engine.book();
    let mine = |a: &&Alarm| scope.sees_unit(a.unit.as_deref());
    let shown = |a: &Alarm| {
        let mut a = a.clone();
        scope.evidence(&mut a.evidence);
        a
    };
    Json(AlarmList {
        open: book.open().into_iter().filter(mine).map(shown).collect(),
        cleared: book.cleared().filter(mine).take(100).map(shown).collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub note: Option<String>,
}

/// The signed-in person (运维单位) acknowledges: recorded in the alarm and the audit log.
async fn acknowledge(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<u64>,
    body: Result<Json<AckRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Alarm>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let alarm = crate::service::alarms::acknowledge(
        &app.policy,
        &app.store,
        &who.actor(),
        id,
        req.note.as_deref(),
        now_ms(),
    )
    .await
    .map_err(|e| match e {
        AckFailure::Alarm(AckError::NotFound(_)) => WebError::NotFound {
            what: "未解除的告警",
            id: id.to_string(),
        },
        AckFailure::Alarm(e @ AckError::AlreadyAcknowledged(_)) => {
            WebError::Conflict(e.to_string())
        }
        AckFailure::Store(e) => WebError::Unavailable(e.to_string()),
    })?;
    Ok(Json(alarm))
}
