//! The web layer's one error type: every failure becomes `{ "error": message, "code": code,
//! ... }` with the matching HTTP status; the message is for people (zh-CN), the code for
//! programs (stable).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `/api/nodes/{id}` for a node the aggregator has never heard from.
    #[error("节点 {0:?} 不存在（本系统从未收到它的报告）")]
    NodeNotFound(String),
    /// A known query parameter with a value outside its allowed set.
    #[error("查询参数 {param:?} 的值 {value:?} 无效，可用的值：{allowed}")]
    BadQueryValue {
        param: &'static str,
        value: String,
        allowed: &'static str,
    },
    /// A query parameter the endpoint does not take.
    #[error("不支持查询参数 {param:?}，可用的参数：{allowed}")]
    UnknownQueryParameter {
        param: String,
        allowed: &'static str,
    },
    /// A query string that does not decode as `key=value` pairs.
    #[error("查询字符串格式错误：{0}")]
    MalformedQuery(String),
    /// A request body that is not what the endpoint takes.
    #[error("请求无效：{0}")]
    BadRequest(String),
    /// Something addressed by id that does not exist (alarm, case...).
    #[error("{what} {id} 不存在")]
    NotFound { what: &'static str, id: String },
    /// The action does not fit the current state (already acknowledged...).
    #[error("{0}")]
    Conflict(String),
    /// Storage could not take the write; nothing was changed.
    #[error("存储暂不可用，操作未执行：{0}")]
    Unavailable(String),
    /// Refused because of the current state, with the facts behind it (a unit's requests held
    /// since when and why); `detail`'s fields join `error` in the body.
    #[error("{message}")]
    ConflictWith {
        message: String,
        detail: serde_json::Value,
    },
    /// An upload past one of the bounds its reader keeps (the register import's file size,
    /// ZIP entries and unpacked size, sheet range, cells), refused before it was read through;
    /// `limit` names the bound.
    #[error("{message}")]
    OverLimit {
        message: String,
        limit: &'static str,
    },
    /// Content that cannot be taken as it is (an import's bad rows, all of them); `detail`'s
    /// fields join `error` in the body.
    #[error("{message}")]
    Unprocessable {
        message: String,
        detail: serde_json::Value,
    },
}

impl WebError {
    /// A stable machine code beside the message.
    pub fn code(&self) -> &'static str {
        match self {
            WebError::NodeNotFound(_) => "node_not_found",
            WebError::BadQueryValue { .. } => "bad_query_value",
            WebError::UnknownQueryParameter { .. } => "unknown_query_parameter",
            WebError::MalformedQuery(_) => "malformed_query",
            WebError::BadRequest(_) => "bad_request",
            WebError::NotFound { .. } => "not_found",
            WebError::Conflict(_) | WebError::ConflictWith { .. } => "conflict",
            WebError::Unavailable(_) => "unavailable",
            WebError::Unprocessable { .. } => "unprocessable",
            WebError::OverLimit { .. } => "over_limit",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            WebError::NodeNotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadQueryValue { .. }
            | WebError::UnknownQueryParameter { .. }
            | WebError::MalformedQuery(_)
            | WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound { .. } => StatusCode::NOT_FOUND,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::ConflictWith { .. } => StatusCode::CONFLICT,
            WebError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::OverLimit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let error = self.to_string();
        let body = match &self {
            WebError::NodeNotFound(node) => json!({ "error": error, "node": node }),
            WebError::BadQueryValue { param, allowed, .. } => {
                json!({ "error": error, "parameter": param, "allowed": allowed })
            }
            WebError::UnknownQueryParameter { param, allowed } => {
                json!({ "error": error, "parameter": param, "allowed": allowed })
            }
            WebError::NotFound { what, id } => json!({ "error": error, "what": what, "id": id }),
            WebError::OverLimit { limit, .. } => json!({ "error": error, "limit": limit }),
            WebError::MalformedQuery(_)
            | WebError::BadRequest(_)
            | WebError::Conflict(_)
            | WebError::Unavailable(_) => json!({ "error": error }),
            WebError::ConflictWith { detail, .. } | WebError::Unprocessable { detail, .. } => {
                let mut body = json!({ "error": error });
                if let (Some(b), Some(d)) = (body.as_object_mut(), detail.as_object()) {
                    b.extend(d.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                body
            }
        };
        let mut body = body;
        if let Some(b) = body.as_object_mut() {
            b.insert("code".into(), json!(self.code()));
        }
        (self.status(), Json(body)).into_response()
    }
}
