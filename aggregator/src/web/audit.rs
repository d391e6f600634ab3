//! The audit log for auditors and administrators (001 第十九条; 等保三级 安全审计): the page,
//! the entries with filters, and the same as a workbook.
//!
//! | route | what |
//! |---|---|
//! | `GET /audit` | the page: filters (who, what, object, from, to), newest first, export |
//! | `GET /api/audit` | entries newest first; `?actor=&action=&subject=&from=YYYY-MM-DD&to=YYYY-MM-DD&limit=` (`action`, `subject`: prefixes; `to`: through that day) |
//! | `GET /api/audit/export.xlsx` | the same filters as a workbook |

use super::page::page;
use super::session::Principal;
use super::{AppState, WebError};
use crate::store::AuditEntry;
use crate::time::{Day, BEIJING_OFFSET_MS};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use minijinja::Value;
use serde::Deserialize;
use yunjian_aggregator_core::audit::AuditFilter;

/// Most entries one answer carries; an export takes up to [`EXPORT_LIMIT`].
const LIMIT: usize = 10_000;
const EXPORT_LIMIT: usize = 200_000;

pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/audit", get(audit_page))
        .route("/api/audit", get(list))
        .route("/api/audit/export.xlsx", get(export))
}

async fn audit_page(who: Principal) -> Response {
    page("audit.html", "audit", Some(&who), Value::UNDEFINED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
}

fn day(param: &'static str, v: Option<&str>) -> Result<Option<Day>, WebError> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Day::parse(s).ok_or_else(|| WebError::BadQueryValue {
                param,
                value: s.to_string(),
                allowed: "a date YYYY-MM-DD",
            })
        })
        .transpose()
}

impl AuditQuery {
    fn filter(self, max: usize) -> Result<AuditFilter, WebError> {
        let text = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(AuditFilter {
            from_ms: day("from", self.from.as_deref())?.map(|d| d.start_ms(BEIJING_OFFSET_MS)),
            // through the last day given
            to_ms: day("to", self.to.as_deref())?.map(|d| (d + 1).start_ms(BEIJING_OFFSET_MS)),
            actor: text(self.actor),
            action: text(self.action),
            subject: text(self.subject),
            limit: self.limit.unwrap_or(500).min(max),
        })
    }
}

async fn search(app: &AppState, filter: AuditFilter) -> Result<Vec<AuditEntry>, WebError> {
    let reader = app
        .reader
        .clone()
        .ok_or_else(|| WebError::Unavailable("no storage reader".into()))?;
    tokio::task::spawn_blocking(move || {
        let mut r = reader.lock().unwrap_or_else(|p| p.into_inner());
        r.audit_search(&filter)
    })
    .await
    .map_err(|e| WebError::Unavailable(e.to_string()))?
    .map_err(|e| WebError::Unavailable(e.to_string()))
}

async fn list(
    State(app): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, WebError> {
    let Query(q) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    Ok(Json(search(&app, q.filter(LIMIT)?).await?))
}

async fn export(
    State(app): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(mut q) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    q.limit = Some(q.limit.unwrap_or(EXPORT_LIMIT));
    let entries = search(&app, q.filter(EXPORT_LIMIT)?).await?;
    let bytes = yunjian_aggregator_core::audit::to_xlsx(&entries)
        .map_err(|e| WebError::Unavailable(format!("export: {e}")))?;
    Ok((
        [
            (
                CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_string(),
            ),
            (
                CONTENT_DISPOSITION,
                "attachment; filename=\"audit.xlsx\"; filename*=UTF-8''%E5%AE%A1%E8%AE%A1%E6%97%A5%E5%BF%97.xlsx"
                    .to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}
