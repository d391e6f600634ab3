//! Users for the administrator, and one's own account for everyone.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /users` | admin | the page: users, their state and tokens; create, reset, disable |
//! | `GET /api/users` | admin | every user (never a hash) with their tokens |
//! | `POST /api/users` | admin | `{name, display_name, role, unit?}`: create; the initial password is in the answer, once |
//! | `POST /api/users/{name}/password` | admin | reset to a generated password, in the answer once |
//! | `POST /api/users/{name}/disable` | admin | `{disabled}`: disable (sessions end, tokens refused) or enable |
//! | `POST /api/users/{name}/tokens` | admin | `{label, days}`: a token for that user, in the answer once |
//! | `POST /api/tokens/{id}/revoke` | admin | revoke any token |
//! | `GET /account` | anyone signed in | change one's password, one's own tokens |

use super::page::page;
use super::session::{bad_body, failed, issue, token_view, Principal, TokenRequest};
use super::AppState;
use crate::service::identity::{generate_password, IdentityError, NewUser};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::Value;
use serde::Deserialize;
use serde_json::json;
use yunjian_aggregator_core::identity::{Role, User};

pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/users", get(users_page))
        .route("/account", get(account_page))
        .route("/api/users", get(list).post(create))
        .route("/api/users/{name}/password", post(reset_password))
        .route("/api/users/{name}/disable", post(disable))
        .route("/api/users/{name}/tokens", post(issue_for))
        .route("/api/tokens/{id}/revoke", post(revoke_any))
}

async fn users_page(who: Principal) -> Response {
    page("users.html", "users", Some(&who), Value::UNDEFINED)
}

async fn account_page(who: Principal) -> Response {
    page("account.html", "account", Some(&who), Value::UNDEFINED)
}

fn user_view(u: &User) -> serde_json::Value {
    json!({
        "name": u.name,
        "display_name": u.display_name,
        "role": u.role,
        "role_zh": u.role.zh(),
        "unit": u.unit,
        "disabled": u.disabled,
        "created_ms": u.created_ms,
        "password_changed_ms": u.password_changed_ms,
    })
}

async fn list(State(app): State<AppState>) -> Json<serde_json::Value> {
    let now = crate::ratelimit::now_ms();
    let dir = app.auth.directory.read().unwrap_or_else(|e| e.into_inner());
    let users: Vec<_> = dir
        .users()
        .map(|u| {
            let mut v = user_view(u);
            v["tokens"] = dir.tokens_of(&u.name).map(|t| token_view(t, now)).collect();
            v
        })
        .collect();
    Json(json!({ "users": users }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    display_name: String,
    role: String,
    unit: Option<String>,
}

async fn create(
    State(app): State<AppState>,
    who: Principal,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    let Some(role) = Role::of_person(&req.role) else {
        return failed(IdentityError::User(
            yunjian_aggregator_core::identity::UserError::BadRole(req.role),
        ));
    };
    let password = match generate_password() {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let new = NewUser {
        name: req.name.trim().to_string(),
        display_name: req.display_name,
        role,
        unit: req.unit,
        password: password.clone(),
    };
    match app
        .auth
        .service(&app.store)
        .add_user(&who.actor(), new, crate::ratelimit::now_ms())
        .await
    {
        Ok(u) => {
            let mut v = user_view(&u);
            v["password"] = json!(password);
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(e) => failed(e),
    }
}

async fn reset_password(
    State(app): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> Response {
    let password = match generate_password() {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    match app
        .auth
        .service(&app.store)
        .set_password(
            &who.actor(),
            &name,
            None,
            &password,
            crate::ratelimit::now_ms(),
        )
        .await
    {
        Ok(()) => Json(json!({ "name": name, "password": password })).into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableRequest {
    disabled: bool,
}

async fn disable(
    State(app): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    body: Result<Json<DisableRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    match app
        .auth
        .service(&app.store)
        .set_disabled(
            &who.actor(),
            &name,
            req.disabled,
            crate::ratelimit::now_ms(),
        )
        .await
    {
        Ok(u) => Json(user_view(&u)).into_response(),
        Err(e) => failed(e),
    }
}

async fn issue_for(
    State(app): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    issue(&app, &who.actor(), &name, &req).await
}

async fn revoke_any(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Response {
    let now = crate::ratelimit::now_ms();
    match app
        .auth
        .service(&app.store)
        .revoke_token(&who.actor(), &id, now)
        .await
    {
        Ok(t) => Json(token_view(&t, now)).into_response(),
        Err(e) => failed(e),
    }
}
