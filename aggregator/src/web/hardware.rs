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
//! The pages are rendered here (no script: the charts are inline SVG) and reload every 15 s.
//! Every text that comes from an agent or a BMC is escaped.

use super::{AppState, WebError, DASHBOARD_CSP};
use crate::alarms::{Alarm, Level};
use crate::fleet::{Liveness, NodeState};
use crate::hardware::{status_zh, type_zh, Point, SelRecord};
use axum::extract::{FromRef, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use yunjian_protocol::hardware::{BmcState, ChassisState, SensorReading, SensorStatus, Thresholds};
use yunjian_protocol::Role;

/// Servers whose inventory names no rack.
const NO_RACK: &str = "未标注机柜";
const TEMPLATE: &str = include_str!("hardware.html");

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
            what: "physical server",
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

fn page(title: &str, subtitle: &str, racks_current: bool, body: &str) -> impl IntoResponse {
    let html = TEMPLATE
        .replace("/*DASHBOARD_CSS*/", super::capacity::dashboard_css())
        .replace("/*TITLE*/", &esc(title))
        .replace("/*SUBTITLE*/", &esc(subtitle))
        .replace(
            "/*RACKS_CURRENT*/",
            if racks_current {
                " aria-current=\"page\""
            } else {
                ""
            },
        )
        .replace("/*BODY*/", body);
    (
        [
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(html),
    )
}

/// HTML-escape text from agents and BMCs.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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

fn racks_html(racks: &[RackView]) -> String {
    let mut h = String::new();
    h.push_str(
        "<div class=\"toolbar\">\
         <span class=\"legend\"><span class=\"swatch ok\"></span>正常</span>\
         <span class=\"legend\"><span class=\"swatch info\"></span>提示</span>\
         <span class=\"legend\"><span class=\"swatch warn\"></span>预警</span>\
         <span class=\"legend\"><span class=\"swatch major\"></span>严重</span>\
         <span class=\"legend\"><span class=\"swatch crit\"></span>紧急</span>\
         <span class=\"legend\"><span class=\"swatch nodata\"></span>无 BMC 数据</span>\
         </div>\
         <p class=\"note\">每台物理服务器按其最严重的未关闭告警着色（硬件、离线、容量等全部规则）；\
         点击服务器查看传感器、阈值、历史曲线与系统事件日志（SEL）。</p>",
    );
    if racks.is_empty() {
        h.push_str("<div class=\"empty\">尚无物理服务器上报</div>");
        return h;
    }
    h.push_str("<div class=\"racks\">");
    for r in racks {
        let _ = write!(
            h,
            "<section class=\"rack\"><h2>{}<span class=\"meta\">{} 台</span></h2><ol>",
            esc(&r.rack),
            r.servers.len()
        );
        for s in &r.servers {
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
            let _ = write!(
                h,
                "<li class=\"slot {class}\" data-node=\"{id}\"><a href=\"/servers/{href}\">\
                 <span class=\"id\">{id}</span><span class=\"facts\">{facts}</span></a></li>",
                id = esc(&s.node),
                href = seg(&s.node),
                facts = esc(&facts.join(" · ")),
            );
        }
        h.push_str("</ol></section>");
    }
    h.push_str("</div>");
    h
}

async fn racks_page(State(app): State<AppState>) -> impl IntoResponse {
    let body = racks_html(&racks(&app));
    page("机柜", "机柜与物理服务器硬件状态（BMC）", true, &body)
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

fn server_html(s: &ServerBody) -> String {
    let mut h = String::new();
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
    let _ = write!(
        h,
        "<p class=\"note\"><a href=\"/racks\">← 机柜</a></p>\
         <section class=\"group\"><h2>{node}<span class=\"meta\">{rack}</span>\
         <span class=\"meta\"><span class=\"level {lc}\">{lz}</span></span></h2>\
         <dl class=\"facts-grid\"><dt>主机状态</dt><dd>{live}</dd><dt>BMC</dt><dd>{bmc}</dd>\
         <dt>机箱</dt><dd>{chassis}</dd><dt>最近一次读取</dt><dd>{sweep}</dd></dl></section>",
        node = esc(&s.node),
        rack = esc(s.rack.as_deref().unwrap_or(NO_RACK)),
        lc = level_class(s.worst),
        lz = level_zh(s.worst),
        live = liveness_zh(s.liveness),
        bmc = esc(&bmc),
        chassis = esc(&chassis),
        sweep = fmt_time_ms(s.last_sweep_ms),
    );
    // open alarms
    h.push_str("<section class=\"group\"><h2>未关闭告警</h2>");
    if s.alarms.is_empty() {
        h.push_str("<div class=\"empty\">无</div>");
    } else {
        h.push_str("<table><tr><th>级别</th><th>告警</th><th>依据</th><th>产生时间</th></tr>");
        for a in &s.alarms {
            let _ = write!(
                h,
                "<tr><td><span class=\"level {}\">{}</span></td><td class=\"desc\">{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                level_class(Some(a.level)),
                a.level.zh(),
                esc(&a.title),
                esc(&a.clause),
                fmt_time_ms(a.raised_ms)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
    // sensors
    h.push_str("<section class=\"group\"><h2>传感器<span class=\"meta\">阈值：下限 不可恢复 / 严重 / 非严重 · 上限 非严重 / 严重 / 不可恢复；曲线为近 4 小时</span></h2>");
    if s.sensors.is_empty() {
        h.push_str("<div class=\"empty\">无传感器数据</div>");
    } else {
        h.push_str(
            "<table><tr><th>传感器</th><th>类型</th><th>读数</th><th>单位</th><th>阈值</th>\
             <th>状态</th><th>历史</th></tr>",
        );
        for v in &s.sensors {
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
            let _ = write!(
                h,
                "<tr data-sensor=\"{name}\"><td class=\"name\">{name}</td><td>{ty}</td>\
                 <td class=\"num\">{value}</td><td>{unit}</td><td class=\"th\">{th}</td>\
                 <td><span class=\"level {sc}\">{status}</span></td><td class=\"chart\">{chart}</td></tr>",
                name = esc(&r.name),
                ty = if r.unit == "Watts" {
                    "功率"
                } else {
                    type_zh(r.sensor_type)
                },
                value = esc(&value),
                unit = esc(unit_zh(&r.unit)),
                th = if r.value.is_some() {
                    esc(&thresholds_text(&r.thresholds, &r.unit))
                } else {
                    "—".into()
                },
                sc = status_class(r.status, level),
                status = esc(&status),
                chart = chart(&v.history, &r.thresholds),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
    // SEL
    let _ = write!(
        h,
        "<section class=\"group\"><h2>系统事件日志（SEL）<span class=\"meta\">最近 {} 条，新的在前</span></h2>",
        s.sel.len()
    );
    if s.sel.is_empty() {
        h.push_str("<div class=\"empty\">无事件</div>");
    } else {
        h.push_str(
            "<table><tr><th>记录号</th><th>BMC 时间</th><th>传感器</th><th>事件</th>\
             <th>断言</th><th>收到时间</th></tr>",
        );
        for r in &s.sel {
            let e = &r.entry;
            let sensor = e
                .sensor
                .clone()
                .unwrap_or_else(|| format!("#{}", e.sensor_number));
            let _ = write!(
                h,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}（{}）</td><td class=\"desc\">{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                e.record_id,
                fmt_time_ms(u64::from(e.ts_s) * 1000),
                esc(&sensor),
                type_zh(e.sensor_type),
                esc(&e.description),
                if e.asserted { "发生" } else { "恢复" },
                fmt_time_ms(r.received_ms)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
    h
}

async fn server_page(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, WebError> {
    let s = server(&app, &id)?;
    let body = server_html(&s);
    Ok(page(
        &format!("服务器 {}", s.node),
        &format!("物理服务器 {} 的 BMC 传感器与系统事件日志", s.node),
        false,
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_bmcs_is_escaped() {
        assert_eq!(
            esc("<b>\"x\" & 'y'"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
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
