//! The allocation register over HTTP, and its page.
//!
//! | route | what |
//! |---|---|
//! | `GET /register` | the page: units → systems → VMs, approved vs observed, the import form |
//! | `GET /api/register` | units (quota, sanction, totals), their VMs (approved, observed, match), unregistered VMs, pools |
//! | `POST /api/register/import?unit=[&format=xlsx\|csv][&file=]` | body: the 附件3 file; 200 `{imported}`, 422 `{errors: [{file,row,column,reason}]}`, 413 `{code: "over_limit", limit}` past a bound of `register::limits` |
//! | `GET /api/register/export.xlsx[?unit=]` | the register in the 附件3 layout (+ 使用单位, 虚拟机UUID) |
//! | `POST /api/register/vms/{uuid}/change` | an approved change request `{approved_by, vcpus?, mem_gb?, sys_disk_gb?, data_disk_gb?, reason}`; 409 while held |
//! | `POST /api/register/units/{name}/sanction` | `{reason, quota?, hold_requests}` |
//! | `DELETE /api/register/units/{name}/sanction` | `{note?}`: lift it |
//! | `PUT /api/register/units/{name}/quota` | `{quota}` (`null` clears) |
//! | `GET /api/quota` | current quota violations (rules `quota_vm`, `quota_unit`) with evidence |
//!
//! A using unit's people read their own unit only: its row and VMs (without the hosts that run
//! them), its quota violations, its export; no unregistered VMs, no pools (capacity is the
//! cloud's). Another unit's export is 404.
//!
//! The import's format: `format=` if given, else the `Content-Type` (`text/csv`, the `.xlsx`
//! type), else the bytes (a workbook is a ZIP or OLE file). Every change is audited and goes
//! through the storage thread before it shows in memory; changes are made one at a time.

use super::scope::Scope;
use super::session::Principal;
use super::{read_fleet, AppState, WebError};
use crate::alarms::Finding;
use crate::policy::rules::{quota_unit::QuotaUnit, quota_vm::QuotaVm};
use crate::policy::{Context, Findings, Rule};
use crate::ratelimit::now_ms;
use crate::register::capacity::{pool_allocated, pool_capacity, pool_used};
use crate::register::changes::{
    beijing_time, ChangeError, ChangeRequest, Import, QuotaInput, SanctionRequest, Update,
};
use crate::register::form::Format;
use crate::register::observe::{excess, Excess, GuestView, HypervisorView, Sightings};
use crate::register::{export, Pool, QuotaSource, Register, Resources, Unit, VmAllocation};
use crate::service::{Holds, RegisterError, RegisterService};
use crate::store::AuditEntry;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{PoisonError, RwLockReadGuard};

/// Largest import accepted (a filled-in form is a few dozen KiB): the register reader's own
/// file bound.
const IMPORT_LIMIT: usize = crate::register::limits::MAX_FILE_BYTES;
const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The routes, for any router state the [`AppState`] can be taken from.
pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/register", get(page))
        .route("/api/register", get(list))
        .route(
            "/api/register/import",
            post(import).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/api/register/export.xlsx", get(export_xlsx))
        .route("/api/register/vms/{uuid}/change", post(change))
        .route(
            "/api/register/units/{name}/sanction",
            post(sanction).delete(lift),
        )
        .route("/api/register/units/{name}/quota", put(quota))
        .route("/api/quota", get(violations))
}

async fn page(State(app): State<AppState>, who: super::session::Principal) -> Response {
    let ctx = minijinja::context! { policy => super::page::policy(&app.profile) };
    super::page::page("register.html", "register", Some(&who), ctx)
}

fn read_register(app: &AppState) -> RwLockReadGuard<'_, Register> {
    app.register.read().unwrap_or_else(PoisonError::into_inner)
}

/// `GET /api/register`.
#[derive(Debug, Serialize)]
pub struct RegisterBody {
    pub now_ms: u64,
    pub units: Vec<UnitView>,
    /// VMs seen (by their agent or a hypervisor) that no unit registered (cloud roles only).
    pub unregistered: Vec<UnregisteredView>,
    /// The pools and their capacity (cloud roles only).
    pub pools: Vec<PoolView>,
}

#[derive(Debug, Serialize)]
pub struct UnitView {
    pub name: String,
    /// The unit's own quota.
    pub quota: Option<Resources>,
    /// The quota in force and where it comes from.
    pub effective_quota: Resources,
    pub quota_source: QuotaSource,
    pub sanction: Option<SanctionView>,
    pub approved: Resources,
    /// The sum of what is observed of its VMs.
    pub observed: Resources,
    pub over_quota: Vec<Excess>,
    pub vms: Vec<VmView>,
}

#[derive(Debug, Serialize)]
pub struct SanctionView {
    pub reason: String,
    pub since_ms: u64,
    /// `since_ms` as Beijing time.
    pub since: String,
    pub quota: Option<Resources>,
    pub hold_requests: bool,
}

/// How a register entry matches what is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchStatus {
    /// Its agent or its hypervisor reports it.
    Matched,
    /// It has a UUID that nothing reports.
    Unseen,
    /// No UUID recorded yet (not provisioned, or not filled in).
    NoUuid,
}

#[derive(Debug, Serialize)]
pub struct VmView {
    pub allocation: VmAllocation,
    pub approved: Resources,
    pub observed: Option<Resources>,
    pub status: MatchStatus,
    pub hypervisor: Option<HypervisorView>,
    pub guest: Option<GuestView>,
    /// Resources above the approved allocation (a `quota_vm` violation).
    pub over: Vec<Excess>,
}

#[derive(Debug, Serialize)]
pub struct UnregisteredView {
    pub uuid: String,
    pub size: Resources,
    pub hypervisor: Option<HypervisorView>,
    pub guest: Option<GuestView>,
}

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub pool: Pool,
    pub capacity: Resources,
    pub allocated: Resources,
    pub used: Resources,
}

async fn list(State(app): State<AppState>, who: Principal) -> Json<RegisterBody> {
    let fleet = read_fleet(&app.fleet);
    let reg = read_register(&app);
    let scope = Scope::of(who.own_unit(), &reg);
    let seen = Sightings::of(&fleet);
    let units = reg
        .vms_by_unit()
        .into_iter()
        .filter(|(name, _)| scope.sees_unit(Some(name)))
        .map(|(name, vms)| {
            let approved: Resources = vms.iter().map(|v| v.approved()).sum();
            let vms: Vec<VmView> = vms.into_iter().map(|v| vm_view(v, &seen, &scope)).collect();
            let observed: Resources = vms.iter().filter_map(|v| v.observed).sum();
            let (effective_quota, quota_source) = reg.effective_quota(name, approved);
            let row = reg.units.get(name);
            UnitView {
                name: name.to_string(),
                quota: row.and_then(|u| u.quota),
                effective_quota,
                quota_source,
                sanction: row.and_then(|u| u.sanction.as_ref()).map(|s| SanctionView {
                    reason: s.reason.clone(),
                    since_ms: s.since_ms,
                    since: beijing_time(s.since_ms),
                    quota: s.quota,
                    hold_requests: s.hold_requests,
                }),
                approved,
                observed,
                over_quota: excess(effective_quota, observed),
                vms,
            }
        })
        .collect();
    let index = reg.uuid_index();
    let unregistered = seen
        .iter()
        .filter(|_| scope.is_cloud())
        .filter(|(uuid, _)| !index.contains_key(*uuid))
        .map(|(uuid, o)| UnregisteredView {
            uuid: uuid.to_string(),
            size: o.size(),
            hypervisor: o.hypervisor.clone(),
            guest: o.guest.clone(),
        })
        .collect();
    let pools = reg
        .pools
        .iter()
        .filter(|_| scope.is_cloud())
        .map(|p| PoolView {
            pool: p.clone(),
            capacity: pool_capacity(p, &fleet),
            allocated: pool_allocated(p, &reg, &fleet),
            used: pool_used(p, &fleet),
        })
        .collect();
    Json(RegisterBody {
        now_ms: now_ms(),
        units,
        unregistered,
        pools,
    })
}

/// A unit's people are not shown the hypervisor view (it names the host).
fn vm_view(v: &VmAllocation, seen: &Sightings, scope: &Scope) -> VmView {
    let o = v.uuid.as_deref().and_then(|u| seen.get(u));
    let observed = o.map(|o| o.size());
    VmView {
        allocation: v.clone(),
        approved: v.approved(),
        observed,
        status: match (&v.uuid, o) {
            (None, _) => MatchStatus::NoUuid,
            (Some(_), None) => MatchStatus::Unseen,
            (Some(_), Some(_)) => MatchStatus::Matched,
        },
        hypervisor: o
            .filter(|_| scope.is_cloud())
            .and_then(|o| o.hypervisor.clone()),
        guest: o.and_then(|o| o.guest.clone()),
        over: observed.map_or_else(Vec::new, |obs| excess(v.approved(), obs)),
    }
}

/// The register's use cases as this request's app sees them.
fn service(app: &AppState) -> RegisterService<'_> {
    RegisterService {
        register: &app.register,
        store: &app.store,
        holds: app.reclaim.as_ref().map_or(Holds::None, Holds::Live),
        turn: &app.register_turn,
        profile: &app.profile,
    }
}

fn register_error(e: RegisterError) -> WebError {
    match e {
        RegisterError::Change(c) => change_error(c),
        RegisterError::Store(s) => WebError::Unavailable(s.to_string()),
    }
}

fn change_error(e: ChangeError) -> WebError {
    let message = e.to_string();
    match e {
        ChangeError::Rows(errors) => WebError::Unprocessable {
            message,
            detail: json!({ "errors": errors }),
        },
        ChangeError::OverLimit { limit, .. } => WebError::OverLimit {
            message,
            limit: limit.code(),
        },
        ChangeError::Invalid(m) => WebError::BadRequest(m),
        ChangeError::UnknownVm(id) => WebError::NotFound {
            what: "已登记的虚拟机",
            id,
        },
        ChangeError::UnknownUnit(id) => WebError::NotFound {
            what: "使用单位",
            id,
        },
        ChangeError::NotSanctioned(_) => WebError::Conflict(message),
        ChangeError::Held {
            unit,
            reason,
            since_ms,
            clause,
        } => WebError::ConflictWith {
            message,
            detail: json!({
                "held": true,
                "clause": clause,
                "unit": unit,
                "reason": reason,
                "since_ms": since_ms,
                "since": beijing_time(since_ms),
            }),
        },
        ChangeError::OverQuota {
            unit,
            resource,
            after,
            quota,
        } => WebError::ConflictWith {
            message,
            detail: json!({ "unit": unit, "resource": resource, "after": after, "quota": quota }),
        },
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    pub unit: String,
    pub format: Option<String>,
    /// The file's name, for the error messages (the page sends it).
    pub file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Imported {
    pub imported: usize,
    pub unit: String,
    /// VMs the unit has after the import.
    pub unit_vms: usize,
}

async fn import(
    State(app): State<AppState>,
    who: Principal,
    query: Result<Query<ImportQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Imported>, WebError> {
    let Query(q) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    let format = match q.format.as_deref() {
        Some(f) => Format::parse(f).ok_or(WebError::BadQueryValue {
            param: "format",
            value: f.to_string(),
            allowed: "xlsx, csv",
        })?,
        None => sniff(&headers, &body),
    };
    let file = q.file.clone().unwrap_or_else(|| match format {
        Format::Xlsx => "upload.xlsx".into(),
        Format::Csv => "upload.csv".into(),
    });
    let actor = who.actor();
    let req = Import {
        unit: &q.unit,
        by: &actor,
        file: &file,
        format,
        bytes: &body,
        form: &app.profile.register,
    };
    let update = service(&app).import(&req, now_ms()).await.map_err(|e| {
        if matches!(e, RegisterError::Change(ChangeError::OverLimit { .. })) {
            app.metrics.imports_refused.fetch_add(1, Relaxed);
        }
        register_error(e)
    })?;
    Ok(Json(Imported {
        imported: update.audit.detail["imported"].as_u64().unwrap_or(0) as usize,
        unit: update.record.unit.name.clone(),
        unit_vms: update.record.vms.len(),
    }))
}

/// A workbook is a ZIP (`.xlsx`) or OLE (`.xls`) file; anything else is taken as CSV, unless
/// the `Content-Type` says which.
fn sniff(headers: &HeaderMap, body: &[u8]) -> Format {
    let ctype = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("text/csv") {
        Format::Csv
    } else if ctype.starts_with(XLSX_TYPE)
        || body.starts_with(b"PK\x03\x04")
        || body.starts_with(b"\xD0\xCF\x11\xE0")
    {
        Format::Xlsx
    } else {
        Format::Csv
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    pub unit: Option<String>,
}

/// A unit's people export their own unit (`?unit=` another one: 404, as for no such unit).
async fn export_xlsx(
    State(app): State<AppState>,
    who: Principal,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<impl IntoResponse, WebError> {
    let Query(q) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    let not_found = |u: String| WebError::NotFound {
        what: "使用单位",
        id: u,
    };
    // a unit's people export their own unit; another unit is no unit for them
    let unit = match (who.own_unit(), q.unit) {
        (Some(own), Some(asked)) if asked != own => return Err(not_found(asked)),
        (Some(own), _) => Some(own.to_string()),
        (None, asked) => asked,
    };
    let bytes = {
        let reg = read_register(&app);
        if let Some(u) = &unit {
            if !reg.unit_names().contains(&u.as_str()) {
                return Err(not_found(u.clone()));
            }
        }
        let mut vms: Vec<&VmAllocation> = reg
            .vms
            .iter()
            .filter(|v| unit.as_ref().is_none_or(|u| *u == v.unit))
            .collect();
        vms.sort_by(|a, b| a.unit.cmp(&b.unit));
        export::to_xlsx(&vms).map_err(|e| WebError::Unavailable(format!("export: {e}")))?
    };
    let name = match &unit {
        Some(u) => format!("{}-{u}.xlsx", export::TITLE),
        None => format!("{}.xlsx", export::TITLE),
    };
    Ok((
        [
            (CONTENT_TYPE, XLSX_TYPE.to_string()),
            (
                CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"register.xlsx\"; filename*=UTF-8''{}",
                    percent_encode(&name)
                ),
            ),
        ],
        bytes,
    ))
}

/// RFC 5987 value characters kept, everything else `%XX` (for `filename*`).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Changed {
    pub vm: Option<VmAllocation>,
    pub unit: Unit,
    pub audit: AuditEntry,
}

fn changed(update: Update, uuid: Option<&str>) -> Json<Changed> {
    Json(Changed {
        vm: uuid.and_then(|u| update.record.vms.iter().find(|v| v.has_uuid(u)).cloned()),
        unit: update.record.unit,
        audit: update.audit,
    })
}

async fn change(
    State(app): State<AppState>,
    who: Principal,
    Path(uuid): Path<String>,
    body: Result<Json<ChangeRequest>, JsonRejection>,
) -> Result<Json<Changed>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let update = service(&app)
        .change(&uuid, &who.actor(), &req, now_ms())
        .await
        .map_err(register_error)?;
    Ok(changed(update, Some(&uuid)))
}

async fn sanction(
    State(app): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    body: Result<Json<SanctionRequest>, JsonRejection>,
) -> Result<Json<Changed>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let update = service(&app)
        .sanction(&name, &who.actor(), &req, now_ms())
        .await
        .map_err(register_error)?;
    Ok(changed(update, None))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiftRequest {
    pub note: Option<String>,
}

async fn lift(
    State(app): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    body: Result<Json<LiftRequest>, JsonRejection>,
) -> Result<Json<Changed>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let update = service(&app)
        .lift(&name, &who.actor(), req.note.as_deref(), now_ms())
        .await
        .map_err(register_error)?;
    Ok(changed(update, None))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRequest {
    /// `null` clears the unit's quota.
    pub quota: Option<QuotaInput>,
}

async fn quota(
    State(app): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    body: Result<Json<QuotaRequest>, JsonRejection>,
) -> Result<Json<Changed>, WebError> {
    let Json(req) = body.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let update = service(&app)
        .set_quota(&name, &who.actor(), req.quota, now_ms())
        .await
        .map_err(register_error)?;
    Ok(changed(update, None))
}

/// `GET /api/quota`.
#[derive(Debug, Serialize)]
pub struct QuotaBody {
    pub now_ms: u64,
    pub violations: Vec<Finding>,
}

/// The quota rules evaluated now (the alarms of the same rules follow on the policy interval).
/// A unit's people see their own unit's violations, without the hosts.
async fn violations(State(app): State<AppState>, who: Principal) -> Json<QuotaBody> {
    let now = now_ms();
    let fleet = read_fleet(&app.fleet);
    let reg = read_register(&app);
    let scope = Scope::of(who.own_unit(), &reg);
    let ctx = Context {
        fleet: &fleet,
        register: &reg,
        profile: &app.profile,
        now_ms: now,
    };
    // fresh rules: a full evaluation each
    let mut violations = Findings::new();
    QuotaVm::default().evaluate(&ctx, &mut violations);
    let mut violations = violations.into_vec();
    let mut units = Findings::new();
    QuotaUnit::default().evaluate(&ctx, &mut units);
    violations.extend(units.into_vec());
    violations.retain(|f| scope.sees_unit(f.unit.as_deref()));
    for f in &mut violations {
        scope.evidence(&mut f.evidence);
    }
    Json(QuotaBody {
        now_ms: now,
        violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_type_or_bytes() {
        let mut h = HeaderMap::new();
        assert_eq!(sniff(&h, b"PK\x03\x04rest"), Format::Xlsx);
        assert_eq!(sniff(&h, b"\xD0\xCF\x11\xE0rest"), Format::Xlsx);
        assert_eq!(sniff(&h, "序号,网络分区".as_bytes()), Format::Csv);
        h.insert(CONTENT_TYPE, "text/csv; charset=utf-8".parse().unwrap());
        assert_eq!(sniff(&h, b"PK\x03\x04"), Format::Csv);
        assert_eq!(
            percent_encode("需求表 a.xlsx"),
            "%E9%9C%80%E6%B1%82%E8%A1%A8%20a.xlsx"
        );
    }
}
