//! The web layer's one error type: every failure becomes `{ "error": message, ... }` with the
//! matching HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `/api/nodes/{id}` for a node the aggregator has never heard from.
    #[error("unknown node {0:?}")]
    NodeNotFound(String),
    /// A known query parameter with a value outside its allowed set.
    #[error("bad value {value:?} for query parameter {param:?}: allowed values are {allowed}")]
    BadQueryValue {
        param: &'static str,
        value: String,
        allowed: &'static str,
    },
    /// A query parameter the endpoint does not take.
    #[error("unknown query parameter {param:?}: allowed parameters are {allowed}")]
    UnknownQueryParameter {
        param: String,
        allowed: &'static str,
    },
    /// A query string that does not decode as `key=value` pairs.
    #[error("malformed query string: {0}")]
    MalformedQuery(String),
    /// A request body that is not what the endpoint takes.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Something addressed by id that does not exist (alarm, case...).
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The action does not fit the current state (already acknowledged...).
    #[error("{0}")]
    Conflict(String),
    /// Storage could not take the write; nothing was changed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Refused because of the current state, with the facts behind it (a unit's requests held
    /// since when and why); `detail`'s fields join `error` in the body.
    #[error("{message}")]
    ConflictWith {
        message: String,
        detail: serde_json::Value,
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
        (self.status(), Json(body)).into_response()
    }
}
