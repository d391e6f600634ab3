//! Applications (申请 → 受理 → 审核 → 审批 → 测试 → 开通 → 变更 → 终止): the queue, the
//! application page, and the API behind them.
//!
//! | route                                              | what                                        |
//! |----------------------------------------------------|---------------------------------------------|
//! | `GET /applications`, `GET /applications/{id}`      | the queue per role (due, overdue), one application (timeline, attachments, the steps your role may take) |
//! | `GET /api/applications`                            | the applications you may see, with deadlines and who they wait for |
//! | `POST /api/applications`                           | submit (a unit's people): JSON `{kind, system, purpose, vms \| changes \| uuids, declaration, ends}` |
//! | `POST /api/applications/form?kind=&system=&purpose=&ends=&file=` | submit with the region's form file as the body (`.xlsx` or `.csv`) |
//! | `GET /api/applications/{id}`                       | one application, its timeline, the steps open to you |
//! | `POST /api/applications/{id}/attachments?kind=&name=` | attach a file (the body)                 |
//! | `GET /api/applications/{id}/attachments/{file}`    | download an attached file                   |
//! | `POST /api/applications/{id}/steps/{step}`         | take a step: `{"reason"}`                   |
//!
//! Every action is the signed-in user's (session or API token); the profile says which role
//! takes which step, and a unit's people see and act on their own unit's applications only
//! (another unit's answers 404).

use super::page::page;
use super::session::Principal;
use super::AppState;
use crate::ratelimit::now_ms;
use crate::register::form::{self, Format, ReadError};
use crate::service::applications::{
    ApplicationServiceError, Applications, Draft, View, MAX_FILE_BYTES,
};
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::Value;
use serde::{Deserialize, Serialize};
use serde_json::json;
use yunjian_aggregator_core::lifecycle::{Kind, LifecycleError, LogEntry, Request, SizeChange};
use yunjian_aggregator_core::register::{ServerType, Term, VmAllocation};
use yunjian_aggregator_core::time::Day;

pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/applications", get(queue_page))
        .route("/applications/{id}", get(application_page))
        .route("/api/applications", get(list).post(submit))
        .route(
            "/api/applications/form",
            post(submit_form).layer(DefaultBodyLimit::max(MAX_FILE_BYTES)),
        )
        .route("/api/applications/{id}", get(one))
        .route(
            "/api/applications/{id}/attachments",
            post(attach).layer(DefaultBodyLimit::max(MAX_FILE_BYTES)),
        )
        .route("/api/applications/{id}/attachments/{file}", get(download))
        .route("/api/applications/{id}/steps/{step}", post(act))
}

async fn queue_page(who: Principal) -> Response {
    page(
        "applications.html",
        "applications",
        Some(&who),
        Value::UNDEFINED,
    )
}

async fn application_page(who: Principal) -> Response {
    page(
        "application.html",
        "applications",
        Some(&who),
        Value::UNDEFINED,
    )
}

/// This API's errors: `{ "error": zh-CN message, "code": stable code, ... }`.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String, serde_json::Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.2, "code": self.1 });
        if let (Some(b), serde_json::Value::Object(extra)) = (body.as_object_mut(), self.3) {
            b.extend(extra);
        }
        (self.0, Json(body)).into_response()
    }
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        code,
        message,
        serde_json::Value::Null,
    )
}

impl From<ApplicationServiceError> for ApiError {
    fn from(e: ApplicationServiceError) -> Self {
        use yunjian_aggregator_core::lifecycle::ApplicationError as A;
        let status = match &e {
            ApplicationServiceError::NotFound(_) | ApplicationServiceError::NoFile(..) => {
                StatusCode::NOT_FOUND
            }
            ApplicationServiceError::NotAUnit(_)
            | ApplicationServiceError::Lifecycle(LifecycleError::Step(
                A::Forbidden { .. } | A::OtherUnit { .. },
            )) => StatusCode::FORBIDDEN,
            ApplicationServiceError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApplicationServiceError::UnknownStep(_)
            | ApplicationServiceError::Invalid(_)
            | ApplicationServiceError::Lifecycle(
                LifecycleError::Invalid { .. } | LifecycleError::Step(A::NoReason { .. }),
            ) => StatusCode::BAD_REQUEST,
            ApplicationServiceError::Lifecycle(_) | ApplicationServiceError::Reclaim(_) => {
                StatusCode::CONFLICT
            }
            ApplicationServiceError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.code(), e.to_string(), serde_json::Value::Null)
    }
}

fn service(app: &AppState) -> Result<&Applications, ApiError> {
    app.applications.as_ref().ok_or(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "applications_unavailable",
        "本部署未启用资源申请".into(),
        serde_json::Value::Null,
    ))
}

#[derive(Debug, Serialize)]
pub struct Queue {
    pub now_ms: u64,
    /// The active profile's regulation.
    pub profile: String,
    pub applications: Vec<View>,
    /// The calendars the working days are counted with.
    pub calendar: Vec<String>,
}

async fn list(State(app): State<AppState>, who: Principal) -> Result<Json<Queue>, ApiError> {
    let s = service(&app)?;
    let now = now_ms();
    Ok(Json(Queue {
        now_ms: now,
        profile: s.profile.title.clone(),
        applications: s.list(&who.actor(), now).await,
        calendar: s.calendar.names.clone(),
    }))
}

#[derive(Debug, Serialize)]
pub struct One {
    pub now_ms: u64,
    pub profile: String,
    pub view: View,
    pub timeline: Vec<LogEntry>,
}

async fn one(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<u64>,
) -> Result<Json<One>, ApiError> {
    let s = service(&app)?;
    let now = now_ms();
    let (view, timeline) = s.get(&who.actor(), id, now).await?;
    Ok(Json(One {
        now_ms: now,
        profile: s.profile.title.clone(),
        view,
        timeline,
    }))
}

/// One VM row of a grant, as the JSON API takes it (the form's columns).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRow {
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub subsystem: String,
    pub server_type: String,
    pub vcpus: u32,
    pub mem_gb: u32,
    #[serde(default)]
    pub sys_disk_gb: u32,
    #[serde(default)]
    pub data_disk_gb: u32,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub note: String,
}

/// A submission as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub kind: String,
    pub system: String,
    #[serde(default)]
    pub purpose: String,
    /// new / test / temporary
    #[serde(default)]
    pub vms: Vec<VmRow>,
    /// change
    #[serde(default)]
    pub changes: Vec<SizeChange>,
    /// termination / extension
    #[serde(default)]
    pub uuids: Vec<String>,
    /// termination: the unit's declaration that its data is migrated or backed up
    #[serde(default)]
    pub declaration: String,
    /// test / temporary / extension: the last day (`YYYY-MM-DD`)
    #[serde(default)]
    pub ends: Option<String>,
}

fn kind_of(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).ok_or_else(|| {
        bad(
            "application_unknown_kind",
            format!(
                "申请类型“{s}”无效，可用的类型：{}",
                Kind::ALL
                    .map(|k| format!("{}（{}）", k.as_str(), k.zh()))
                    .join("、")
            ),
        )
    })
}

/// `YYYY-MM-DD` → the end of that day (Beijing), as Unix ms.
fn end_of(s: &str, app: &Applications) -> Result<u64, ApiError> {
    let d = Day::parse(s.trim()).ok_or_else(|| {
        bad(
            "application_bad_date",
            format!("日期“{s}”无效，应为 YYYY-MM-DD"),
        )
    })?;
    Ok(app.calendar.start_of(d + 1))
}

fn request(
    kind: Kind,
    body: &SubmitBody,
    vms: Vec<VmAllocation>,
    app: &Applications,
) -> Result<Request, ApiError> {
    let ends = body.ends.as_deref().map(|e| end_of(e, app)).transpose()?;
    Ok(match kind {
        Kind::New | Kind::Test | Kind::Temporary => Request::Grant { vms, ends_ms: ends },
        Kind::Change => Request::Change {
            changes: body.changes.clone(),
        },
        Kind::Termination => Request::Termination {
            uuids: body.uuids.clone(),
            declaration: body.declaration.clone(),
        },
        Kind::Extension => Request::Extension {
            uuids: body.uuids.clone(),
            ends_ms: ends.ok_or_else(|| {
                bad(
                    "application_bad_date",
                    "延期申请须填写新的截止日期（ends）".into(),
                )
            })?,
        },
    })
}

async fn submit(
    State(app): State<AppState>,
    who: Principal,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<View>), ApiError> {
    let s = service(&app)?;
    let Json(body) =
        body.map_err(|e| bad("bad_request", format!("请求无效：{}", e.body_text())))?;
    let kind = kind_of(&body.kind)?;
    let mut vms = Vec::new();
    for (i, r) in body.vms.iter().enumerate() {
        let server_type = ServerType::parse(&r.server_type).ok_or_else(|| {
            bad(
                "application_bad_row",
                format!(
                    "第 {} 行：服务器类型“{}”无效（APP、WEB、FTP、DAT、MID、TST、OTH）",
                    i + 1,
                    r.server_type
                ),
            )
        })?;
        if r.vcpus == 0 || r.mem_gb == 0 {
            return Err(bad(
                "application_bad_row",
                format!("第 {} 行：vCPU 和内存须大于 0", i + 1),
            ));
        }
        vms.push(VmAllocation {
            zone: r.zone.clone(),
            developer: String::new(),
            unit: String::new(),
            system: body.system.trim().into(),
            subsystem: r.subsystem.clone(),
            server_type,
            owner: String::new(),
            email: String::new(),
            phone: String::new(),
            vcpus: r.vcpus,
            mem_gb: r.mem_gb,
            sys_disk_gb: r.sys_disk_gb,
            data_disk_gb: r.data_disk_gb,
            os: r.os.clone(),
            clustered: false,
            cluster_group: String::new(),
            note: r.note.clone(),
            uuid: None,
            term: Term::default(),
        });
    }
    let request = request(kind, &body, vms, s)?;
    let view = s
        .submit(
            &who.actor(),
            Draft {
                kind,
                system: body.system.clone(),
                purpose: body.purpose.clone(),
                request,
                files: Vec::new(),
            },
            now_ms(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormQuery {
    pub kind: String,
    pub system: String,
    #[serde(default)]
    pub purpose: String,
    pub ends: Option<String>,
    /// The file's name (errors name it; kept with the application).
    pub file: Option<String>,
    pub format: Option<String>,
}

/// Submit with the region's form: its rows become the application's VMs, the file is kept.
async fn submit_form(
    State(app): State<AppState>,
    who: Principal,
    query: Result<Query<FormQuery>, QueryRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<View>), ApiError> {
    let s = service(&app)?;
    let Query(q) =
        query.map_err(|e| bad("bad_query", format!("查询字符串无效：{}", e.body_text())))?;
    let kind = kind_of(&q.kind)?;
    if !matches!(kind, Kind::New | Kind::Test | Kind::Temporary) {
        return Err(bad(
            "application_form_kind",
            format!("{}不通过申请表提交，请用 JSON 填写", kind.zh()),
        ));
    }
    let format = match q.format.as_deref() {
        Some(f) => Format::parse(f)
            .ok_or_else(|| bad("bad_query", format!("format“{f}”无效，可用的值：xlsx、csv")))?,
        None if body.starts_with(b"PK\x03\x04") => Format::Xlsx,
        None => Format::Csv,
    };
    let file = q.file.clone().unwrap_or_else(|| match format {
        Format::Xlsx => "申请表.xlsx".into(),
        Format::Csv => "申请表.csv".into(),
    });
    let read =
        form::read_form_file(&s.profile.register, &file, format, &body).map_err(|e| match e {
            ReadError::Rows(rows) => ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application_form_rows",
                format!("申请表有 {} 处问题，未提交", rows.len()),
                json!({ "rows": rows }),
            ),
            ReadError::Limit { file, limit } => ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                "over_limit",
                format!("{file}：{limit}"),
                serde_json::Value::Null,
            ),
        })?;
    // 003 附件1: the 审批表 names its unit; it must be the applicant's own
    let unit = who.own_unit().unwrap_or_default().to_string();
    if let Some(h) = read
        .header
        .as_ref()
        .filter(|h| !h.unit_name.trim().is_empty())
    {
        if h.unit_name.trim() != unit {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application_form_rows",
                format!(
                    "申请表的单位名称“{}”不是申请单位“{unit}”",
                    h.unit_name.trim()
                ),
                json!({ "rows": [{ "file": file, "row": null, "column": "单位名称",
                    "reason": "单位名称与申请单位不符" }] }),
            ));
        }
    }
    let purpose = match (&read.header, q.purpose.trim()) {
        (Some(h), "") => h.background.trim().to_string(),
        _ => q.purpose.clone(),
    };
    let vms = read
        .rows
        .into_iter()
        .map(|r| VmAllocation {
            system: if r.vm.system.is_empty() {
                q.system.trim().into()
            } else {
                r.vm.system
            },
            ..r.vm
        })
        .collect();
    let request = Request::Grant {
        vms,
        ends_ms: q.ends.as_deref().map(|e| end_of(e, s)).transpose()?,
    };
    let view = s
        .submit(
            &who.actor(),
            Draft {
                kind,
                system: q.system.clone(),
                purpose,
                request,
                files: vec![("申请表".into(), file, body)],
            },
            now_ms(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachQuery {
    /// 批复文件, 上云方案, 测算方案…
    #[serde(default)]
    pub kind: String,
    pub name: String,
}

async fn attach(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<u64>,
    query: Result<Query<AttachQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Json<View>, ApiError> {
    let s = service(&app)?;
    let Query(q) =
        query.map_err(|e| bad("bad_query", format!("查询字符串无效：{}", e.body_text())))?;
    Ok(Json(
        s.attach(&who.actor(), id, &q.kind, &q.name, body, now_ms())
            .await?,
    ))
}

async fn download(
    State(app): State<AppState>,
    who: Principal,
    Path((id, file)): Path<(u64, u64)>,
) -> Result<Response, ApiError> {
    let s = service(&app)?;
    let (name, bytes) = s.file(&who.actor(), id, file).await?;
    // RFC 5987: the name may be Chinese
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename*=UTF-8''{encoded}"),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    #[serde(default)]
    pub reason: String,
}

async fn act(
    State(app): State<AppState>,
    who: Principal,
    Path((id, step)): Path<(u64, String)>,
    body: Result<Json<StepBody>, JsonRejection>,
) -> Result<Json<View>, ApiError> {
    let s = service(&app)?;
    let Json(b) = body.map_err(|e| bad("bad_request", format!("请求无效：{}", e.body_text())))?;
    Ok(Json(
        s.act(&who.actor(), id, &step, &b.reason, now_ms()).await?,
    ))
}
