//! Who is asking: the session cookie of a signed-in browser or the bearer token of a script,
//! checked on every request against the authorisation table ([`super::authz`]) before the
//! handler runs.
//!
//! | route | what |
//! |---|---|
//! | `GET /login` | the sign-in page |
//! | `POST /api/session` | `{name, password}`: sign in; sets the session cookie, returns the CSRF token |
//! | `GET /api/session` | who is signed in (name, role, unit, CSRF token) |
//! | `DELETE /api/session` | sign out |
//! | `POST /api/account/password` | `{old, new}`: change one's own password |
//! | `GET /api/account/tokens`, `POST /api/account/tokens` `{label, days}`, `POST /api/account/tokens/{id}/revoke` | one's own API tokens |
//!
//! Not signed in: 401 (a browser asking for a page is sent to `/login`). Signed in without the
//! role: 403 naming the role needed. A write from a session must carry its CSRF token in
//! `X-CSRF-Token`; a bearer token needs none (no browser sends it by itself).

use super::authz::{self, Action};
use super::page::page;
use super::AppState;
use crate::service::identity::{
    IdentityError, IdentityService, SharedDirectory, SignInCounters, SignInPolicy, SignIns,
};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use yunjian_aggregator_core::identity::{Actor, Role, User};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "yj_session";
/// The header a session's writes carry their CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The sign-in state the web layer shares: users and tokens, open sessions, failure counts.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub directory: SharedDirectory,
    pub sign_ins: Arc<Mutex<SignIns>>,
    pub counters: Arc<SignInCounters>,
    pub policy: Arc<SignInPolicy>,
    /// Mark the cookie `Secure` (the dashboard is served over HTTPS).
    pub secure_cookie: bool,
}

impl Auth {
    pub fn service<'a>(&'a self, store: &'a crate::ingest::StoreHandle) -> IdentityService<'a> {
        IdentityService {
            directory: &self.directory,
            store,
            sign_ins: &self.sign_ins,
            counters: &self.counters,
            policy: &self.policy,
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Auth {
    /// Load a [`test_user`](crate::service::identity::test_user) into memory and return their
    /// bearer token: for tests that drive the router without storage.
    pub fn test_bearer(&self, name: &str, role: Role, unit: Option<&str>) -> String {
        let (user, bearer, token) = crate::service::identity::test_user(name, role, unit);
        self.directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .load(vec![user], vec![token]);
        bearer
    }
}

/// The signed-in user behind a request, put there by [`guard`].
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The session's CSRF token; `None` for a bearer token.
    pub csrf: Option<String>,
    /// The client's address, for the audit log.
    pub source: String,
}

impl Principal {
    /// The user acting, from the request's address.
    pub fn actor(&self) -> Actor {
        self.user.actor().from_source(self.source.clone())
    }

    pub fn role(&self) -> Role {
        self.user.role
    }

    /// The unit whose objects alone this user may see; `None`: not a unit user.
    pub fn own_unit(&self) -> Option<&str> {
        match self.user.role {
            Role::Unit => self.user.unit.as_deref(),
            _ => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| refusal(StatusCode::UNAUTHORIZED, "not_signed_in", "请先登录", None))
    }
}

/// A refusal: `{error, code}` (and the roles needed), zh-CN.
fn refusal(status: StatusCode, code: &str, message: &str, needed: Option<String>) -> Response {
    let mut body = json!({ "error": message, "code": code });
    if let Some(n) = needed {
        body["needed"] = json!(n);
    }
    (status, Json(body)).into_response()
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn source_of(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "local".to_string(), |c| c.0.ip().to_string())
}

/// A browser asking for a page (not the API) is sent to the sign-in page instead of a 401.
fn wants_page(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == Method::GET && !path.starts_with("/api/") && path != "/metrics"
}

/// Runs before every routed handler: finds who asks, checks the table, and hands the handler
/// a [`Principal`]. Unlisted routes are refused.
pub async fn guard(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let now = crate::ratelimit::now_ms();
    let Some(pattern) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return next.run(req).await;
    };
    let Some(action) = authz::action(req.method(), &pattern) else {
        tracing::warn!(method = %req.method(), route = %pattern, "web: route missing from the authorisation table, refused");
        return refusal(
            StatusCode::FORBIDDEN,
            "not_in_table",
            "此操作未列入授权表，已拒绝",
            None,
        );
    };
    let service = app.auth.service(&app.store);
    let source = source_of(&req);
    let principal = if let Some(token) = bearer(req.headers()) {
        match service.token_user(token, now) {
            Ok(user) => Some(Principal {
                user,
                csrf: None,
                source,
            }),
            Err(e) => return refusal(StatusCode::UNAUTHORIZED, e.code(), &e.to_string(), None),
        }
    } else {
        cookie_value(req.headers())
            .and_then(|c| service.session(c, now))
            .map(|(user, session)| Principal {
                user,
                csrf: Some(session.csrf),
                source,
            })
    };
    if !action.allows(principal.as_ref().map(Principal::role)) {
        return match principal {
            None if wants_page(&req) => {
                let next_path = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                let location = format!("/login?next={}", encode(&next_path));
                (
                    StatusCode::SEE_OTHER,
                    [(
                        LOCATION,
                        HeaderValue::from_str(&location)
                            .unwrap_or(HeaderValue::from_static("/login")),
                    )],
                )
                    .into_response()
            }
            None => refusal(StatusCode::UNAUTHORIZED, "not_signed_in", "请先登录", None),
            Some(p) if wants_page(&req) => {
                tracing::info!(user = %p.user.name, role = %p.role(), route = %pattern, "web: page refused, role not allowed");
                let mut resp = page(
                    "forbidden.html",
                    "",
                    Some(&p),
                    context! { needed => action.needed_zh() },
                );
                *resp.status_mut() = StatusCode::FORBIDDEN;
                resp
            }
            Some(p) => {
                tracing::info!(user = %p.user.name, role = %p.role(), route = %pattern, "web: refused, role not allowed");
                refusal(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("无权执行此操作：需要{}角色", action.needed_zh()),
                    Some(action.needed_zh()),
                )
            }
        };
    }
    if let Some(p) = &principal {
        let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if writes && action != Action::SignIn {
            if let Some(expected) = &p.csrf {
                let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                if given != Some(expected.as_str()) {
                    return refusal(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "请求缺少有效的 CSRF 令牌，请刷新页面后重试",
                        None,
                    );
                }
            }
        }
        req.extensions_mut().insert(p.clone());
    }
    next.run(req).await
}

/// Percent-encode a path for a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/login", get(login_page))
        .route("/api/session", post(sign_in).get(me).delete(sign_out))
        .route("/api/account/password", post(change_password))
        .route("/api/account/tokens", get(tokens).post(issue_token))
        .route("/api/account/tokens/{id}/revoke", post(revoke_token))
}

async fn login_page() -> Response {
    page("login.html", "", None, context! {})
}

pub(super) fn failed(e: IdentityError) -> Response {
    let status = match &e {
        IdentityError::BadCredentials | IdentityError::BadToken => StatusCode::UNAUTHORIZED,
        IdentityError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
        IdentityError::Forbidden { .. } => StatusCode::FORBIDDEN,
        IdentityError::UnknownUser(_) | IdentityError::UnknownToken(_) => StatusCode::NOT_FOUND,
        IdentityError::Exists(_) => StatusCode::CONFLICT,
        IdentityError::Store(_) | IdentityError::Random(_) => StatusCode::SERVICE_UNAVAILABLE,
        IdentityError::User(_)
        | IdentityError::WeakPassword(_)
        | IdentityError::WrongOldPassword
        | IdentityError::BadTokenLifetime
        | IdentityError::OwnAccount => StatusCode::BAD_REQUEST,
    };
    refusal(status, e.code(), &e.to_string(), None)
}

pub(super) fn bad_body(e: JsonRejection) -> Response {
    refusal(
        StatusCode::BAD_REQUEST,
        "bad_request",
        &format!("请求内容无效：{}", e.body_text()),
        None,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInRequest {
    name: String,
    password: String,
}

fn whoami(user: &User, csrf: Option<&str>) -> serde_json::Value {
    json!({
        "name": user.name,
        "display_name": user.display_name,
        "role": user.role,
        "role_zh": user.role.zh(),
        "unit": user.unit,
        "csrf": csrf,
    })
}

async fn sign_in(State(app): State<AppState>, req: Request) -> Response {
    let source = source_of(&req);
    let body = match axum::extract::Json::<SignInRequest>::from_request(req, &()).await {
        Ok(Json(b)) => b,
        Err(e) => return bad_body(e),
    };
    let now = crate::ratelimit::now_ms();
    match app
        .auth
        .service(&app.store)
        .sign_in(body.name.trim(), &body.password, &source, now)
        .await
    {
        Ok(s) => {
            let secure = if app.auth.secure_cookie {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
                s.cookie
            );
            let mut resp = Json(whoami(&s.user, Some(&s.csrf))).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(SET_COOKIE, v);
            }
            resp
        }
        Err(e) => failed(e),
    }
}

use axum::extract::FromRequest;

async fn me(p: Principal) -> Json<serde_json::Value> {
    Json(whoami(&p.user, p.csrf.as_deref()))
}

async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(cookie) = cookie_value(&headers) {
        if let Err(e) = app
            .auth
            .service(&app.store)
            .sign_out(cookie, crate::ratelimit::now_ms())
            .await
        {
            return failed(e);
        }
    }
    let secure = if app.auth.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    (
        StatusCode::NO_CONTENT,
        [(
            SET_COOKIE,
            format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        )],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    old: String,
    new: String,
}

async fn change_password(
    State(app): State<AppState>,
    p: Principal,
    body: Result<Json<PasswordRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    match app
        .auth
        .service(&app.store)
        .set_password(
            &p.actor(),
            &p.user.name,
            Some(&req.old),
            &req.new,
            crate::ratelimit::now_ms(),
        )
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failed(e),
    }
}

pub(super) fn token_view(
    t: &yunjian_aggregator_core::identity::ApiToken,
    now: u64,
) -> serde_json::Value {
    json!({
        "id": t.id,
        "label": t.label,
        "created_ms": t.created_ms,
        "expires_ms": t.expires_ms,
        "revoked_ms": t.revoked_ms,
        "valid": t.valid_at(now),
    })
}

async fn tokens(State(app): State<AppState>, p: Principal) -> Json<serde_json::Value> {
    let now = crate::ratelimit::now_ms();
    let dir = app.auth.directory.read().unwrap_or_else(|e| e.into_inner());
    let list: Vec<_> = dir
        .tokens_of(&p.user.name)
        .map(|t| token_view(t, now))
        .collect();
    Json(json!({ "tokens": list }))
}

/// A token to issue: what it is for and for how many days.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    label: String,
    days: u32,
}

async fn issue_token(
    State(app): State<AppState>,
    p: Principal,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    issue(&app, &p.actor(), &p.user.name, &req).await
}

/// Issue a token for `user` as `actor`: 201 with the token, shown this once.
pub(super) async fn issue(
    app: &AppState,
    actor: &Actor,
    user: &str,
    req: &TokenRequest,
) -> Response {
    let now = crate::ratelimit::now_ms();
    match app
        .auth
        .service(&app.store)
        .issue_token(actor, user, &req.label, req.days, now)
        .await
    {
        Ok((secret, t)) => {
            let mut v = token_view(&t, now);
            v["token"] = json!(secret);
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(e) => failed(e),
    }
}

async fn revoke_token(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Response {
    let now = crate::ratelimit::now_ms();
    // another user's token is not found, not forbidden: nothing is confirmed
    let owned = app
        .auth
        .directory
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .token(&id)
        .is_some_and(|t| t.user == p.user.name);
    if !owned {
        return failed(IdentityError::UnknownToken(id));
    }
    match app
        .auth
        .service(&app.store)
        .revoke_token(&p.actor(), &id, now)
        .await
    {
        Ok(t) => Json(token_view(&t, now)).into_response(),
        Err(e) => failed(e),
    }
}
