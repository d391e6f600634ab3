//! Server hardware over HTTP: racks of servers coloured by their worst open alarm, each
//! server's BMC sensors with thresholds, status and a 4-hour history chart, and its SEL.
//!
//! | route                          | what                                                    |
//! |--------------------------------|---------------------------------------------------------|
//! | `GET /racks`                   | the rack page: racks → servers, coloured by worst alarm |
//! | `GET /servers/{id}`            | one server: BMC, chassis, sensors with charts, SEL      |
//! | `GET /api/racks`               | the same as JSON                                        |
//! | `GET /api/servers/{id}/hardware` | one server's BMC track as JSON, with sensor history   |
//!
//! The pages are rendered here from `templates/racks.html` and `templates/server.html` (no
//! script: the charts are inline SVG) and reload every 15 s. Every text that comes from an
//! agent or a BMC reaches the page through a template variable, escaped.

use super::page::page;
use super::session::Principal;
use super::{AppState, WebError};
use crate::alarms::{Alarm, Level};
use crate::fleet::{Liveness, NodeState};
use crate::hardware::{status_zh, type_zh, Point, SelRecord};
use axum::extract::{FromRef, Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use minijinja::value::Serde;
use minijinja::{context, Value};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use yunjian_protocol::hardware::{BmcState, ChassisState, SensorReading, SensorStatus, Thresholds};
use yunjian_protocol::Role;

/// Servers whose inventory names no rack.
const NO_RACK: &str = "未标注机柜";

/// The routes, for any router state the [`AppState`] can be taken from.
pub fn routes<S>() -> Router<S>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/racks", get(racks_page))
        .route("/servers/{id}", get(server_page))
        .route("/api/racks", get(racks_api))
        .route("/api/servers/{id}/hardware", get(server_api))
}

/// `GET /api/racks`.
#[derive(Debug, Serialize)]
pub struct RacksBody {
    pub racks: Vec<RackView>,
}

#[derive(Debug, Serialize)]
pub struct RackView {
    pub rack: String,
    pub servers: Vec<ServerTile>,
}

/// One server in its rack.
#[derive(Debug, Serialize)]
pub struct ServerTile {
    pub node: String,
    pub liveness: Liveness,
    /// The worst open alarm of the server (any rule), `None` when it has none.
    pub worst: Option<Level>,
    pub open_alarms: usize,
    /// `ok`, `unreachable`, or `none` (no sweep received).
    pub bmc: &'static str,
    /// The hottest temperature sensor, degrees C.
    pub max_temp_c: Option<f64>,
    /// Sum of the power sensors (unit Watts).
    pub power_w: Option<f64>,
    pub vm_count: usize,
}

/// `GET /api/servers/{id}/hardware`.
#[derive(Debug, Serialize)]
pub struct ServerBody {
    pub node: String,
    pub rack: Option<String>,
    pub liveness: Liveness,
    pub worst: Option<Level>,
    /// Open alarms of this server, worst first.
    pub alarms: Vec<Alarm>,
    pub bmc: Option<BmcState>,
    pub last_sweep_ms: u64,
    pub sensors_ts_ms: u64,
    pub chassis: Option<ChassisState>,
    pub sensors: Vec<SensorView>,
    /// Newest first.
    pub sel: Vec<SelRecord>,
}

#[derive(Debug, Serialize)]
pub struct SensorView {
    pub reading: SensorReading,
    /// (event time ms, value in thousandths), oldest first.
    pub history: Vec<Point>,
}

/// Open alarms per node: `node:{id}` and `node:{id}/…` subjects of any rule.
fn alarms_by_node(app: &AppState) -> HashMap<String, Vec<Alarm>> {
    let engine = app.policy.lock().unwrap_or_else(|p| p.into_inner());
    let mut by: HashMap<String, Vec<Alarm>> = HashMap::new();
    for a in engine.book().open() {
        let Some(rest) = a.key.subject.strip_prefix("node:") else {
            continue;
        };
        let node = rest.split_once('/').map_or(rest, |(n, _)| n);
        by.entry(node.to_string()).or_default().push(a.clone());
    }
    by
}

fn tile(st: &NodeState, alarms: Option<&Vec<Alarm>>) -> ServerTile {
    let t = &st.hardware;
    let sum = |pred: &dyn Fn(&SensorReading) -> bool| -> Vec<f64> {
        t.sensors
            .iter()
            .filter(|s| pred(s))
            .filter_map(|s| s.value)
            .map(|v| v as f64 / 1000.0)
            .collect()
    };
    let temps = sum(&|s| s.sensor_type == crate::hardware::TYPE_TEMPERATURE);
    let power = sum(&|s| s.unit == "Watts");
    ServerTile {
        node: st.node.clone(),
        liveness: st.liveness,
        worst: alarms.and_then(|v| v.iter().map(|a| a.level).max()),
        open_alarms: alarms.map_or(0, Vec::len),
        bmc: match &t.bmc {
            Some(BmcState::Ok(_)) => "ok",
            Some(BmcState::Unreachable(_)) => "unreachable",
            None => "none",
        },
        max_temp_c: temps.into_iter().reduce(f64::max),
        power_w: (!power.is_empty()).then(|| power.iter().sum()),
        vm_count: st.guests.len(),
    }
}

fn racks(app: &AppState) -> Vec<RackView> {
    let alarms = alarms_by_node(app);
    let fleet = super::read_fleet(&app.fleet);
    let mut racks: BTreeMap<String, Vec<ServerTile>> = BTreeMap::new();
    for st in fleet.nodes().filter(|s| s.role == Some(Role::Host)) {
        let rack = st
            .inventory
            .as_ref()
            .and_then(|i| i.rack.clone())
            .unwrap_or_else(|| NO_RACK.to_string());
        racks
            .entry(rack)
            .or_default()
            .push(tile(st, alarms.get(&st.node)));
    }
    racks
        .into_iter()
        .map(|(rack, mut servers)| {
            servers.sort_by(|a, b| a.node.cmp(&b.node));
            RackView { rack, servers }
        })
        .collect()
}

async fn racks_api(State(app): State<AppState>) -> Json<RacksBody> {
    Json(RacksBody { racks: racks(&app) })
}

fn server(app: &AppState, id: &str) -> Result<ServerBody, WebError> {
    let mut alarms = alarms_by_node(app).remove(id).unwrap_or_default();
    alarms.sort_by(|a, b| b.level.cmp(&a.level).then(a.raised_ms.cmp(&b.raised_ms)));
    let fleet = super::read_fleet(&app.fleet);
    let st = fleet
        .get(id)
        .filter(|s| s.role != Some(Role::Guest))
        .ok_or_else(|| WebError::NotFound {
            what: "物理服务器",
            id: id.to_string(),
        })?;
    let t = &st.hardware;
    Ok(ServerBody {
        node: st.node.clone(),
        rack: st.inventory.as_ref().and_then(|i| i.rack.clone()),
        liveness: st.liveness,
        worst: alarms.iter().map(|a| a.level).max(),
        alarms,
        bmc: t.bmc.clone(),
        last_sweep_ms: t.last_sweep_ms,
        sensors_ts_ms: t.sensors_ts_ms,
        chassis: t.chassis,
        sensors: t
            .sensors
            .iter()
            .map(|s| SensorView {
                reading: s.clone(),
                history: t
                    .history
                    .get(&s.name)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect(),
        sel: t.sel.iter().rev().cloned().collect(),
    })
}

async fn server_api(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ServerBody>, WebError> {
    server(&app, &id).map(Json)
}

// ---- pages ----

/// A hardware page: `racks.html` or `server.html` with its title and subtitle.
fn hardware_page(
    template: &str,
    current: &str,
    who: &Principal,
    title: &str,
    subtitle: &str,
    ctx: Value,
) -> Response {
    page(
        template,
        current,
        Some(who),
        context! { title, subtitle, ..ctx },
    )
}

/// A path segment (node ids are `A-Z a-z 0-9 . _ -`, but escape anyway).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn level_class(l: Option<Level>) -> &'static str {
    match l {
        None => "ok",
        Some(Level::Info) => "info",
        Some(Level::Warning) => "warning",
        Some(Level::Major) => "major",
        Some(Level::Critical) => "critical",
    }
}

fn level_zh(l: Option<Level>) -> &'static str {
    l.map_or("正常", Level::zh)
}

fn liveness_zh(l: Liveness) -> &'static str {
    match l {
        Liveness::Online => "在线",
        Liveness::Silent => "静默",
        Liveness::Offline => "离线",
    }
}

/// A value in thousandths, in the sensor's unit.
fn fmt_milli(v: i64, unit: &str) -> String {
    let x = v as f64 / 1000.0;
    let digits = match unit {
        "RPM" | "Watts" => 0,
        "Volts" | "Amps" => 2,
        _ => 1,
    };
    format!("{x:.digits$}")
}

fn unit_zh(unit: &str) -> &str {
    match unit {
        "degrees C" => "°C",
        "Volts" => "V",
        "Amps" => "A",
        "Watts" => "W",
        other => other,
    }
}

fn fmt_time_ms(ms: u64) -> String {
    if ms == 0 {
        return "—".into();
    }
    // Beijing time (UTC+8), as every page shows it
    crate::time::beijing_datetime(ms)
}

/// One server in its rack on the rack page.
#[derive(Debug, Serialize)]
struct SlotView {
    node: String,
    /// The link's path segment.
    href: String,
    /// The worst alarm's level class, `nodata`, plus ` offline`.
    class: String,
    facts: String,
}

fn slot(s: &ServerTile) -> SlotView {
    let mut class = level_class(s.worst).to_string();
    if s.worst.is_none() && s.bmc == "none" {
        class = "nodata".into();
    }
    if s.liveness != Liveness::Online {
        class.push_str(" offline");
    }
    let mut facts = vec![liveness_zh(s.liveness).to_string()];
    if let Some(t) = s.max_temp_c {
        facts.push(format!("{t:.0}°C"));
    }
    if let Some(p) = s.power_w {
        facts.push(format!("{p:.0} W"));
    }
    match s.bmc {
        "unreachable" => facts.push("BMC 无响应".into()),
        "none" => facts.push("无 BMC 数据".into()),
        _ => {}
    }
    if s.open_alarms > 0 {
        facts.push(format!("{} 条告警（{}）", s.open_alarms, level_zh(s.worst)));
    }
    SlotView {
        node: s.node.clone(),
        href: seg(&s.node),
        class,
        facts: facts.join(" · "),
    }
}

async fn racks_page(State(app): State<AppState>, who: Principal) -> Response {
    let racks: Vec<Value> = racks(&app)
        .iter()
        .map(|r| {
            context! {
                name => r.rack.clone(),
                count => r.servers.len(),
                slots => Value::from(Serde(r.servers.iter().map(slot).collect::<Vec<_>>())),
            }
        })
        .collect();
    hardware_page(
        "racks.html",
        "racks",
        &who,
        "机柜",
        "机柜与物理服务器硬件状态（BMC）",
        context! { racks },
    )
}

/// A small line chart of one sensor's history with its upper and lower thresholds.
fn chart(history: &[Point], th: &Thresholds) -> String {
    const W: f64 = 240.0;
    const H: f64 = 48.0;
    if history.is_empty() {
        return "<span class=\"th\">—</span>".into();
    }
    let lines = [
        (th.upper_critical, "#c53030"),
        (th.upper_non_critical, "#d97706"),
        (th.lower_non_critical, "#d97706"),
        (th.lower_critical, "#c53030"),
    ];
    let vals = history.iter().map(|p| p.1);
    let lo = vals.clone().min().unwrap_or(0);
    let hi = vals.max().unwrap_or(0);
    // thresholds near the data are drawn; the scale stretches to include them. The scale
    // spans at least a tenth of the reading, so a rail's millivolts of noise stay flat.
    let span = (hi - lo).max(hi.abs() / 10).max(1);
    let near = |t: i64| t >= lo - span && t <= hi + span;
    let mut lo_s = lo;
    let mut hi_s = hi;
    for t in lines.iter().filter_map(|l| l.0).filter(|&t| near(t)) {
        lo_s = lo_s.min(t);
        hi_s = hi_s.max(t);
    }
    if hi_s - lo_s < span {
        let pad = (span - (hi_s - lo_s)) / 2;
        lo_s -= pad;
        hi_s += pad;
    }
    let range = (hi_s - lo_s).max(1) as f64;
    let y = |v: i64| H - 2.0 - (v - lo_s) as f64 / range * (H - 4.0);
    let t0 = history[0].0;
    let tspan = (history[history.len() - 1].0 - t0).max(1) as f64;
    let x = |t: u64| (t - t0) as f64 / tspan * (W - 2.0) + 1.0;
    let mut svg = format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"历史曲线\"><rect width=\"{W}\" height=\"{H}\" fill=\"#f9fafb\"/>"
    );
    for (t, colour) in lines {
        if let Some(t) = t.filter(|&t| near(t)) {
            let _ = write!(
                svg,
                "<line x1=\"0\" x2=\"{W}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{colour}\" \
                 stroke-dasharray=\"4 3\" stroke-width=\"1\"/>",
                yy = y(t)
            );
        }
    }
    if history.len() == 1 {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#1d4f91\"/>",
            W / 2.0,
            y(history[0].1)
        );
    } else {
        let pts: Vec<String> = history
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#1d4f91\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    svg.push_str("</svg>");
    svg
}

fn status_class(s: SensorStatus, faulty: Option<Level>) -> &'static str {
    match (faulty, s) {
        (Some(l), _) => level_class(Some(l)),
        (None, SensorStatus::NotAvailable) => "na",
        (None, _) => "ok",
    }
}

fn thresholds_text(th: &Thresholds, unit: &str) -> String {
    let f = |v: Option<i64>| v.map_or("—".to_string(), |v| fmt_milli(v, unit));
    format!(
        "{} / {} / {} · {} / {} / {}",
        f(th.lower_non_recoverable),
        f(th.lower_critical),
        f(th.lower_non_critical),
        f(th.upper_non_critical),
        f(th.upper_critical),
        f(th.upper_non_recoverable)
    )
}

/// One server's page context: every text as it is (the template escapes it), the charts as
/// markup built from numbers only.
fn server_context(s: &ServerBody) -> Value {
    let bmc = match &s.bmc {
        Some(BmcState::Ok(t)) => format!("正常（{t}）"),
        Some(BmcState::Unreachable(c)) => format!("无响应：{c}"),
        None => "尚无数据（主机未配置 IPMI 或尚未上报）".into(),
    };
    let chassis = match &s.chassis {
        None => "—".to_string(),
        Some(c) => {
            let mut v = vec![if c.power_on { "已上电" } else { "已断电" }];
            for (on, what) in [
                (c.power_fault, "电源故障"),
                (c.cooling_fault, "散热故障"),
                (c.drive_fault, "硬盘故障"),
                (c.intrusion, "机箱被打开"),
            ] {
                if on {
                    v.push(what);
                }
            }
            v.join("、")
        }
    };
    let alarms: Vec<Value> = s
        .alarms
        .iter()
        .map(|a| {
            context! {
                class => level_class(Some(a.level)),
                level => a.level.zh(),
                title => a.title.clone(),
                clause => a.clause.clone(),
                raised => fmt_time_ms(a.raised_ms),
            }
        })
        .collect();
    let sensors: Vec<Value> = s
        .sensors
        .iter()
        .map(|v| {
            let r = &v.reading;
            let faults = crate::hardware::discrete_faults(r.sensor_type, r.states);
            let level = faults
                .iter()
                .map(|f| f.0)
                .chain(crate::hardware::status_level(r.status))
                .max();
            let status = if faults.is_empty() {
                status_zh(r.status).to_string()
            } else {
                faults.iter().map(|f| f.1).collect::<Vec<_>>().join("、")
            };
            let value = match r.value {
                Some(x) => fmt_milli(x, &r.unit),
                None if r.unit.is_empty() => format!("状态 0x{:04x}", r.states),
                None => "—".into(),
            };
            context! {
                name => r.name.clone(),
                type => if r.unit == "Watts" { "功率" } else { type_zh(r.sensor_type) },
                value,
                unit => unit_zh(&r.unit),
                thresholds => if r.value.is_some() {
                    thresholds_text(&r.thresholds, &r.unit)
                } else {
                    "—".into()
                },
                class => status_class(r.status, level),
                status,
                chart => Value::from_safe_string(chart(&v.history, &r.thresholds)),
            }
        })
        .collect();
    let sel: Vec<Value> = s
        .sel
        .iter()
        .map(|r| {
            let e = &r.entry;
            context! {
                record => e.record_id,
                bmc_time => fmt_time_ms(u64::from(e.ts_s) * 1000),
                sensor => e.sensor.clone().unwrap_or_else(|| format!("#{}", e.sensor_number)),
                type => type_zh(e.sensor_type),
                description => e.description.clone(),
                event => if e.asserted { "发生" } else { "恢复" },
                received => fmt_time_ms(r.received_ms),
            }
        })
        .collect();
    context! {
        node => s.node.clone(),
        rack => s.rack.as_deref().unwrap_or(NO_RACK),
        level_class => level_class(s.worst),
        level => level_zh(s.worst),
        liveness => liveness_zh(s.liveness),
        bmc,
        chassis,
        sweep => fmt_time_ms(s.last_sweep_ms),
        alarms,
        sensors,
        sel_count => s.sel.len(),
        sel,
    }
}

async fn server_page(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let s = server(&app, &id)?;
    Ok(hardware_page(
        "server.html",
        "server",
        &who,
        &format!("服务器 {}", s.node),
        &format!("物理服务器 {} 的 BMC 传感器与系统事件日志", s.node),
        server_context(&s),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_in_links_are_path_segments() {
        assert_eq!(seg("h1 /x"), "h1%20%2Fx");
    }

    #[test]
    fn times_are_beijing_time() {
        // 2025-03-03T00:00:00Z is 08:00 in Beijing
        assert_eq!(fmt_time_ms(1_740_960_000_000), "2025-03-03 08:00:00");
        assert_eq!(fmt_time_ms(0), "—");
    }

    #[test]
    fn the_chart_draws_the_history_and_the_thresholds_near_it() {
        let th = Thresholds {
            upper_non_critical: Some(80_000),
            upper_critical: Some(90_000),
            lower_critical: Some(-50_000_000), // far away: not drawn
            ..Thresholds::default()
        };
        let svg = chart(&[(0, 40_000), (60_000, 60_000), (120_000, 85_000)], &th);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<line").count(), 2, "{svg}");
        // the highest reading is near the top, the first at the bottom
        assert!(svg.contains("points=\"1.0,46.0 "), "{svg}");
        assert_eq!(chart(&[], &th), "<span class=\"th\">—</span>");
        // a 12 V rail's noise is a flat line between its thresholds, not a zigzag
        let rail = Thresholds {
            lower_non_critical: Some(11_400),
            upper_non_critical: Some(12_600),
            ..Thresholds::default()
        };
        let svg = chart(&[(0, 11_980), (60_000, 12_020)], &rail);
        let ys: Vec<f64> = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!((ys[0] - ys[1]).abs() < 4.0, "{svg}");
        assert_eq!(svg.matches("<line").count(), 2, "{svg}");
    }
}
