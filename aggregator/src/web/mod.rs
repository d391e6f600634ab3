//! The web layer: the dashboard, the JSON API, the SSE stream, `/metrics` and `/healthz`.
//!
//! | route                 | what                                                        |
//! |-----------------------|-------------------------------------------------------------|
//! | `GET /`               | the dashboard (live from `/api/events`)                     |
//! | `GET /assets/{name}`  | the pages' scripts and stylesheets: see `assets.rs`         |
//! | `GET /api/nodes`      | totals and node summaries; `?role=`, `?liveness=`, `?rack=` |
//! | `GET /api/nodes/{id}` | one node's full state and summary                           |
//! | `GET /api/events`     | Server-Sent Events: `nodes` frames, at most one per second  |
//! | `GET /metrics`        | Prometheus text                                             |
//! | `GET /healthz`        | liveness: storage, broker, ingest checks (503 when failing) |
//! | `GET /readyz`         | readiness for load balancers (503 starting, stopping, failing) |
//! | `GET /api/alarms`     | open alarms (worst first) and recently cleared ones         |
//! | `POST /api/alarms/{id}/ack` | acknowledge as the signed-in ops user (`{"note"?}`), audited |
//! | `GET /audit`, `/api/audit`, `/api/audit/export.xlsx` | the audit log with filters: see `audit.rs` |
//! | `GET /reclaim`, `/reclaim/{id}`, `/api/reclaim/...` | low-use reclaim cases: see `reclaim.rs` |
//! | `GET /applications`, `/applications/{id}`, `/api/applications/...` | applications (申请 → 终止): see `applications.rs` |
//! | `/api/usage/...`, `/api/exemptions` | utilisation history, idle / oversized findings, exemptions: see `usage.rs` |
//! | `GET /racks`, `/servers/{id}`, `/api/racks`, `/api/servers/{id}/hardware` | server hardware (BMC): see `hardware.rs` |
//! | `GET /login`, `/api/session`, `/api/account/...` | sign-in, sign-out, own password and tokens: see `session.rs` |
//! | `GET /users`, `/account`, `/api/users/...`, `/api/tokens/...` | users (admin), one's own account: see `users.rs` |
//!
//! Pages are templates on one base layout (`page.rs`, `aggregator/templates/`); their scripts
//! and styles are files (`assets.rs`, `aggregator/assets/`), so no page runs inline code.
//!
//! Every route passes [`session::guard`] first: who asks (session cookie or bearer token) and
//! whether the [`authz`] table lets their role take the route's action. What the handlers then
//! show a using unit's people is its own VMs only (`scope.rs`).
//!
//! [`router`] is the whole app (tests drive it with `tower::ServiceExt::oneshot`); [`serve`]
//! runs it on a listener until the shutdown future completes, [`serve_with`] the same with the
//! configured `[http]` limits (header and request timeouts, a cap on connections) and HTTPS.

mod alarms;
mod antivirus;
mod api;
mod applications;
mod assets;
mod audit;
pub mod authz;
mod capacity;
mod error;
mod hardware;
mod page;
mod reclaim;
mod register;
mod scope;
pub mod session;
mod sse;
mod usage;
mod users;

pub use api::{NodeDetail, NodesBody};
pub use error::WebError;
pub use sse::MIN_GAP;

use crate::alarms::AlarmBook;
use crate::config::HttpConfig;
use crate::fleet::{Fleet, SharedFleet};
use crate::ingest::StoreHandle;
use crate::metrics::Metrics;
use crate::policy::{Engine, Profile};
use crate::ratelimit::{Backoff, LogLimiter};
use crate::store::Storage;
use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError, RwLockReadGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Time a new HTTPS connection has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the web layer reads.
#[derive(Debug, Clone)]
pub struct AppState {
    pub fleet: SharedFleet,
    pub metrics: Arc<Metrics>,
    /// Bumped by ingest after each applied batch; the SSE stream wakes on it.
    pub changes: watch::Receiver<u64>,
    /// The rules and the alarm book.
    pub policy: crate::policy::SharedPolicy,
    pub register: crate::register::SharedRegister,
    pub profile: Arc<Profile>,
    /// Writes (alarm acknowledgements, audit entries) go through the storage thread.
    pub store: StoreHandle,
    /// A read connection for history (audit log); `None` in tests without storage.
    pub reader: Option<SharedReader>,
    /// Low-use reclaim cases; `None` in tests without them.
    pub reclaim: Option<crate::reclaim::Reclaim>,
    /// Applications (申请 → 终止); `None` in tests without them.
    pub applications: Option<crate::service::applications::Applications>,
    /// Utilisation history and exemptions (`/api/usage`, `/api/exemptions`).
    pub usage: crate::usage::SharedUsage,
    /// Register changes take turns (see [`crate::service::RegisterService`]).
    pub register_turn: Arc<tokio::sync::Mutex<()>>,
    /// Exemption changes take turns (see [`crate::service::exemptions`]).
    pub exemption_turn: Arc<tokio::sync::Mutex<()>>,
    /// Users, tokens, sessions: who may ask what (see [`session`]).
    pub auth: session::Auth,
}

/// A storage connection for reads.
pub type SharedReader = Arc<std::sync::Mutex<Box<dyn Storage>>>;

impl AppState {
    /// Fleet-only state (default profile and rules, empty register, no storage): for tests
    /// and tools that only read the fleet.
    pub fn new(fleet: SharedFleet, metrics: Arc<Metrics>, changes: watch::Receiver<u64>) -> Self {
        let profile = Arc::new(Profile::default());
        let engine = Engine::new(crate::policy::rules::build(&profile, &[]), AlarmBook::new());
        AppState {
            usage: crate::usage::Usage::shared(&profile.usage),
            fleet,
            metrics,
            changes,
            policy: Arc::new(std::sync::Mutex::new(engine)),
            register: Arc::default(),
            profile,
            store: StoreHandle::detached(),
            reader: None,
            reclaim: None,
            applications: None,
            register_turn: Arc::default(),
            exemption_turn: Arc::default(),
            auth: session::Auth::default(),
        }
    }
}

/// Completes when [`serve`] begins its graceful shutdown, so that responses which never end on
/// their own (the SSE stream) finish and let the server stop.
#[derive(Debug, Clone)]
struct Closing(Option<watch::Receiver<bool>>);

impl Closing {
    async fn closed(&mut self) {
        match &mut self.0 {
            // a dropped sender means the server is gone as well
            Some(rx) => drop(rx.wait_for(|&closing| closing).await),
            None => std::future::pending().await,
        }
    }
}

#[derive(Debug, Clone)]
struct WebState {
    app: AppState,
    closing: Closing,
}

impl FromRef<WebState> for AppState {
    fn from_ref(web: &WebState) -> Self {
        web.app.clone()
    }
}

impl FromRef<WebState> for Closing {
    fn from_ref(web: &WebState) -> Self {
        web.closing.clone()
    }
}

/// The whole web app. Streams opened through it end only when ingest drops its sender; use
/// [`serve`] to have them end at shutdown.
pub fn router(state: AppState) -> Router {
    routes(WebState {
        app: state,
        closing: Closing(None),
    })
}

fn routes(state: WebState) -> Router {
    let guard = axum::middleware::from_fn_with_state(state.app.clone(), session::guard);
    Router::new()
        .route("/", get(dashboard))
        .route("/assets/{name}", get(assets::asset))
        .route("/api/nodes", get(api::nodes))
        .route("/api/nodes/{id}", get(api::node))
        .route("/api/events", get(sse::events))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .merge(alarms::routes())
        .merge(audit::routes())
        .merge(antivirus::routes())
        .merge(capacity::routes())
        .merge(hardware::routes())
        .merge(reclaim::routes())
        .merge(applications::routes())
        .merge(register::routes())
        .merge(usage::routes())
        .merge(session::routes())
        .merge(users::routes())
        // every routed request passes the authorisation table first
        .route_layer(guard)
        .with_state(state)
}

/// Serve the app on `listener` until `shutdown` completes, then close open event streams and
/// wait for in-flight requests; with `[http]`'s default limits (tests, tools). The aggregator
/// runs [`serve_with`], its configured limits and TLS.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, HttpConfig::default(), None, shutdown).await
}

/// [`serve`] with `http`'s limits and, with `tls`, over HTTPS: each connection does its TLS
/// handshake in its own task, then HTTP/1.1, and the session cookie is marked `Secure`.
pub async fn serve_with(
    listener: TcpListener,
    mut state: AppState,
    http: HttpConfig,
    tls: Option<yunjian_tls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if tls.is_some() {
        state.auth.secure_cookie = true;
    }
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
        tracing::info!(%addr, "web: dashboard and API listening ({scheme})");
    }
    serve_on(listener, state, tls, &http, shutdown).await
}

/// The accept loop of [`serve_with`]: HTTP/1.1 on each connection, with
///
/// * at most `http.max_connections` open: one more is closed at once;
/// * a request's headers within `http.header_timeout` (hyper's header read timeout, which also
///   ends idle kept-alive connections), else the connection is closed;
/// * a request's response started within `http.request_timeout`, else it is answered 408;
/// * failed accepts (out of file descriptors) pausing 10 ms doubling to 1 s;
///
/// each counted in `/metrics` (`yunjian_http_*`) and logged rate-limited. At shutdown: stop
/// accepting, end the event streams, wait for in-flight requests.
async fn serve_on(
    listener: TcpListener,
    state: AppState,
    tls: Option<yunjian_tls::TlsAcceptor>,
    http: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower_service::Service;

    let metrics = state.metrics.clone();
    let (app, closing_tx) = closable(state);
    // the client's address for the sign-in audit
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(http.max_connections));
    let (refuse_log, accept_log) = (LogLimiter::new(10_000), LogLimiter::new(10_000));
    let mut backoff = Backoff::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // out of file descriptors and the like: each retry fails the same way until
                    // a connection closes, so pause, longer while it lasts
                    metrics.http_accept_errors.fetch_add(1, Relaxed);
                    let pause = backoff.failed();
                    if let Some(n) = accept_log.check() {
                        tracing::warn!(suppressed = n, ?pause, "web: accept failed: {e}");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        backoff.succeeded();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.http_refused.fetch_add(1, Relaxed);
            if let Some(n) = refuse_log.check() {
                tracing::warn!(
                    %peer, suppressed = n, max_connections = http.max_connections,
                    "web: connection refused: http.max_connections are open"
                );
            }
            // Dropping `tcp` closes it. No 503: the request the client sent meanwhile would sit
            // unread, and closing over unread data resets the connection, answer and all.
            continue;
        };
        let open = OpenConnection::new(metrics.clone(), slot);
        let service = match make_service.call(peer).await {
            Ok(s) => TowerToHyperService::new(s),
            Err(never) => match never {},
        };
        let service = request_timeout(service, http.request_timeout, metrics.clone());
        let (builder, tls, watcher) = (builder.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let io: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "web: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "web: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                        return;
                    }
                },
            };
            let connection = builder.serve_connection(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(connection).await {
                if e.is_timeout() {
                    open.metrics.http_header_timeouts.fetch_add(1, Relaxed);
                }
                tracing::debug!(%peer, "web: connection ended: {e}");
            }
            drop(open);
        });
    }
    drop(listener);
    closing_tx.send_replace(true);
    graceful.shutdown().await;
    Ok(())
}

/// A plain or TLS connection, served alike.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One of `http.max_connections`, counted in `yunjian_http_connections` while held.
struct OpenConnection {
    metrics: Arc<Metrics>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics.http_connections.fetch_add(1, Relaxed);
        OpenConnection {
            metrics,
            _slot: slot,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.http_connections.fetch_sub(1, Relaxed);
    }
}

/// `service` with each response due within `limit` of the request's headers (the handler,
/// its reading of the body included; a streamed body, once started, is not timed). Past it,
/// 408 and the connection closes: the rest of a slow body is not waited for.
fn request_timeout<S>(
    service: S,
    limit: Duration,
    metrics: Arc<Metrics>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone
       + Send
       + 'static
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    hyper::service::service_fn(move |req| {
        let call = service.call(req);
        let metrics = metrics.clone();
        async move {
            match tokio::time::timeout(limit, call).await {
                Ok(response) => response,
                Err(_) => {
                    metrics.http_request_timeouts.fetch_add(1, Relaxed);
                    let body = serde_json::json!({
                        "error": format!("请求未在 {} 秒内完成，连接已关闭", limit.as_secs()),
                        "code": "request_timeout",
                    });
                    let mut response =
                        (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok(response)
                }
            }
        }
    })
}

/// The app with the closing signal its event streams end on.
fn closable(state: AppState) -> (Router, watch::Sender<bool>) {
    let (closing_tx, closing_rx) = watch::channel(false);
    let app = routes(WebState {
        app: state,
        closing: Closing(Some(closing_rx)),
    });
    (app, closing_tx)
}

async fn dashboard(State(app): State<AppState>, who: session::Principal) -> Response {
    let ctx = minijinja::context! { policy => page::policy(&app.profile) };
    page::page("dashboard.html", "dashboard", Some(&who), ctx)
}

/// Read the fleet even if a writer panicked while holding the lock: the state is a cache of
/// the latest reports, and showing it beats taking the dashboard down with the ingest task.
fn read_fleet(fleet: &SharedFleet) -> RwLockReadGuard<'_, Fleet> {
    fleet.read().unwrap_or_else(PoisonError::into_inner)
}
