//! JSON endpoints, `/metrics`, `/healthz` and `/readyz`.
//!
//! Every handler copies what it needs out of the fleet under the read lock and serializes after
//! releasing it: ingest takes the write lock for every batch.

use super::error::WebError;
use super::scope::Scope;
use super::session::Principal;
use super::{read_fleet, AppState};
use crate::fleet::{FleetTotals, Liveness, NodeState, NodeSummary, SharedFleet};
use crate::health::{Phase, Status};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

const FILTER_PARAMS: &str = "role, liveness, rack";

/// Body of `/api/nodes` and of each `nodes` event on `/api/events`.
#[derive(Debug, Serialize)]
pub struct NodesBody {
    /// The aggregator's wall clock when the snapshot was taken (ms since the Unix epoch), so a
    /// client computes "last seen" ages against the same clock as `last_seen_ms`.
    pub now_ms: u64,
    /// Counts over what the user may see (a unit: its own VMs; the cloud: the whole fleet),
    /// whatever the filter.
    pub totals: FleetTotals,
    /// The nodes the user may see that pass the filter: hosts first, then by rack and node id.
    pub nodes: Vec<NodeSummary>,
}

/// `/api/nodes` query: `role=host|guest`, `liveness=online|silent|offline`, `rack=NAME`.
#[derive(Debug, Default)]
pub struct NodeFilter {
    role: Option<&'static str>,
    liveness: Option<Liveness>,
    rack: Option<String>,
}

impl NodeFilter {
    /// Parse decoded query pairs; an unknown parameter or value is an error naming it.
    pub fn parse(pairs: Vec<(String, String)>) -> Result<Self, WebError> {
        let mut filter = NodeFilter::default();
        for (key, value) in pairs {
            match key.as_str() {
                "role" => {
                    filter.role = Some(match value.as_str() {
                        "host" => "host",
                        "guest" => "guest",
                        _ => return Err(bad_value("role", value, "host, guest")),
                    })
                }
                "liveness" => {
                    filter.liveness = Some(match value.as_str() {
                        "online" => Liveness::Online,
                        "silent" => Liveness::Silent,
                        "offline" => Liveness::Offline,
                        _ => {
                            return Err(bad_value("liveness", value, "online, silent, offline"));
                        }
                    })
                }
                "rack" if value.is_empty() => {
                    return Err(bad_value("rack", value, "any non-empty rack name"));
                }
                "rack" => filter.rack = Some(value),
                _ => {
                    return Err(WebError::UnknownQueryParameter {
                        param: key,
                        allowed: FILTER_PARAMS,
                    })
                }
            }
        }
        Ok(filter)
    }

    /// Keep the matching nodes. A VM is in the rack of the host that runs it (its own
    /// configured rack only counts when no host lists it).
    fn apply(&self, nodes: Vec<NodeSummary>) -> Vec<NodeSummary> {
        let host_rack: HashMap<String, String> = match &self.rack {
            Some(_) => nodes
                .iter()
                .filter_map(|n| Some((n.node.clone(), n.rack.clone()?)))
                .collect(),
            None => HashMap::new(),
        };
        nodes
            .into_iter()
            .filter(|n| self.role.is_none() || n.role == self.role)
            .filter(|n| self.liveness.is_none_or(|l| n.liveness == l))
            .filter(|n| {
                self.rack.as_ref().is_none_or(|want| {
                    let via_host = n.host.as_ref().and_then(|h| host_rack.get(h));
                    via_host.or(n.rack.as_ref()) == Some(want)
                })
            })
            .collect()
    }
}

fn bad_value(param: &'static str, value: String, allowed: &'static str) -> WebError {
    WebError::BadQueryValue {
        param,
        value,
        allowed,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Copy totals and summaries under the read lock; filter after releasing it.
pub fn snapshot(fleet: &SharedFleet, scope: &Scope, filter: &NodeFilter) -> NodesBody {
    let (totals, nodes) = {
        let fleet = read_fleet(fleet);
        (scope.is_cloud().then(|| fleet.totals()), fleet.summaries())
    };
    let nodes: Vec<NodeSummary> = nodes.into_iter().filter_map(|n| scope.node(n)).collect();
    let totals = totals.unwrap_or_else(|| FleetTotals::of(&nodes));
    NodesBody {
        now_ms: now_ms(),
        totals,
        nodes: filter.apply(nodes),
    }
}

pub async fn nodes(
    State(app): State<AppState>,
    who: Principal,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<NodesBody>, WebError> {
    let Query(pairs) = query.map_err(|e| WebError::MalformedQuery(e.body_text()))?;
    let filter = NodeFilter::parse(pairs)?;
    Ok(Json(snapshot(
        &app.fleet,
        &Scope::of_request(&who, &app),
        &filter,
    )))
}

/// `/api/nodes/{id}`: everything the aggregator holds about one node.
#[derive(Debug, Serialize)]
pub struct NodeDetail {
    pub summary: NodeSummary,
    pub state: NodeState,
}

/// Another unit's node, or a host, is not found for a unit's people.
pub async fn node(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<NodeDetail>, WebError> {
    let scope = Scope::of_request(&who, &app);
    let detail = {
        let fleet = read_fleet(&app.fleet);
        fleet.get(&id).and_then(|st| {
            Some(NodeDetail {
                summary: scope.node(fleet.summary(st))?,
                state: st.clone(),
            })
        })
    };
    detail.map(Json).ok_or(WebError::NodeNotFound(id))
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let mut text = app.metrics.render(&read_fleet(&app.fleet));
    let c = &app.auth.counters;
    for (name, help, v) in [
        (
            "yunjian_sign_ins_total",
            "Sign-ins that succeeded.",
            &c.succeeded,
        ),
        (
            "yunjian_sign_in_failures_total",
            "Sign-ins refused for a wrong name or password (等保 登录失败处理).",
            &c.failed,
        ),
        (
            "yunjian_sign_in_lockouts_total",
            "Accounts locked after repeated failed sign-ins.",
            &c.locked_out,
        ),
        (
            "yunjian_sign_ins_refused_locked_total",
            "Sign-ins refused because the account was locked.",
            &c.refused_while_locked,
        ),
    ] {
        let v = v.load(std::sync::atomic::Ordering::Relaxed);
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], text)
}

/// Liveness for a supervisor (`crate::health`): the storage, broker and ingest checks with the
/// node counts; 503 when one is failing.
pub async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let (nodes, totals) = {
        let fleet = read_fleet(&app.fleet);
        (fleet.len(), fleet.totals())
    };
    let report = app.metrics.health.report(now_ms());
    let code = match report.status {
        Status::Failing => StatusCode::SERVICE_UNAVAILABLE,
        Status::Ok | Status::Degraded => StatusCode::OK,
    };
    let body = json!({
        "status": report.status,
        "checks": {
            "storage": report.storage,
            "broker": report.broker,
            "ingest": report.ingest,
        },
        "nodes": nodes,
        "totals": totals,
    });
    (code, Json(body))
}

/// Readiness for a load balancer: 200 once started (migrations ran, history loaded, listeners
/// up) while no check is failing; 503 while starting, shutting down or failing.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let health = &app.metrics.health;
    let report = health.report(now_ms());
    let (code, detail) = match (health.phase(), report.status) {
        (Phase::Starting, _) => ("starting", "正在启动：迁移与数据加载尚未完成"),
        (Phase::Stopping, _) => ("stopping", "正在停止，不再接收新请求"),
        (Phase::Ready, Status::Failing) => ("failing", "健康检查失败，详见 /healthz"),
        (Phase::Ready, _) => ("ready", "就绪"),
    };
    let status = if code == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": code == "ready", "code": code, "detail": detail })),
    )
}
