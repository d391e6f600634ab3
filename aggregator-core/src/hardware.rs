//! A physical server's BMC as the aggregator remembers it: the latest sweep, a short history of
//! every sensor, the System Event Log, and what of it is a problem now.
//!
//! **Sweeps.** The host agent reads the BMC over IPMI every few host intervals and sends a
//! [`HardwareReport`]. A sweep in which the BMC did not answer carries no sensors; the sensors
//! of the last sweep that did answer are kept ([`HardwareTrack::sensors`]) so that a BMC going
//! quiet neither clears a temperature alarm nor invents a recovery.
//!
//! **History.** Each sensor keeps at most [`HISTORY_POINTS`] readings, one per
//! [`HISTORY_STEP_MS`] of event time (the latest reading of each step), so the last
//! [`HISTORY_POINTS`] × [`HISTORY_STEP_MS`] = 4 hours. At 16 bytes a point and ~20 sensors a
//! server that is about 38 KiB per server, whatever the sweep rate.
//!
//! **SEL.** Entries arrive once (the agent sends only entries newer than the last it sent);
//! a replayed sweep repeats them, so an entry already held is not added again. The newest
//! [`SEL_KEPT`] entries per server are in memory; every entry is stored (`hardware_sel`,
//! keyed by node, record id and BMC timestamp) and the newest are restored after a restart.
//!
//! **Problems** ([`assess`]) are what the `hardware` rule turns into alarms:
//!
//! | subject suffix          | when                                                              | level |
//! |-------------------------|-------------------------------------------------------------------|-------|
//! | `sensor:{name}`         | threshold status non-critical                                     | warning |
//! |                         | threshold status critical or non-recoverable                      | critical |
//! |                         | power supply: failure detected (critical), input lost (major), predictive failure (warning); physical security: intrusion (major); drive: fault (major); processor: IERR or thermal trip (critical); memory: uncorrectable ECC (critical), correctable (warning) | as said |
//! | `chassis:{fault}`       | chassis status: power fault (critical), cooling/fan fault, drive fault, intrusion (major) | as said |
//! | `sel:{sensor}:{offset}` | an SEL assertion that means a fault ([`sel_level`]), for [`SEL_ALARM_HOLD_MS`] after the latest such entry or until the matching deassertion, unless the sensor shows it now | by the event |
//! | `bmc`                   | the BMC did not answer the latest sweep, or no sweep for [`SILENT_SWEEPS`] sweep intervals while the host itself reports | major |

use crate::alarms::Level;
use crate::liveness::Liveness;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use yunjian_protocol::hardware::{
    BmcState, ChassisState, HardwareReport, Milli, SelEntry, SensorReading, SensorStatus,
};

/// Readings kept per sensor.
pub const HISTORY_POINTS: usize = 120;
/// Event time covered by one history point.
pub const HISTORY_STEP_MS: u64 = 120_000;
/// SEL entries kept in memory per server (all are stored).
pub const SEL_KEPT: usize = 200;
/// Sweep intervals without a sweep, while the host reports, before the BMC counts as silent.
pub const SILENT_SWEEPS: u64 = 3;
/// Host report intervals assumed between sweeps until two sweeps have been seen.
pub const DEFAULT_SWEEP_INTERVALS: u64 = 6;
/// How long an SEL fault stays an alarm after its latest assertion when no deassertion comes.
pub const SEL_ALARM_HOLD_MS: u64 = 3_600_000;
/// Sweep gaps remembered to estimate the sweep interval.
const GAPS_KEPT: usize = 4;

// IPMI sensor type codes (IPMI 2.0 table 42-3).
pub const TYPE_TEMPERATURE: u8 = 0x01;
pub const TYPE_VOLTAGE: u8 = 0x02;
pub const TYPE_CURRENT: u8 = 0x03;
pub const TYPE_FAN: u8 = 0x04;
pub const TYPE_PHYSICAL_SECURITY: u8 = 0x05;
pub const TYPE_PROCESSOR: u8 = 0x07;
pub const TYPE_POWER_SUPPLY: u8 = 0x08;
pub const TYPE_MEMORY: u8 = 0x0c;
pub const TYPE_DRIVE_SLOT: u8 = 0x0d;
/// Event/reading type of threshold events.
pub const EVENT_THRESHOLD: u8 = 0x01;
/// Event/reading type of sensor-specific events.
pub const EVENT_SENSOR_SPECIFIC: u8 = 0x6f;

/// One SEL entry and when it reached the aggregator (wall ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelRecord {
    pub received_ms: u64,
    pub entry: SelEntry,
}

/// One history point: event time (ms) and the reading in thousandths of the unit.
pub type Point = (u64, Milli);

/// Everything known of one server's BMC.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HardwareTrack {
    /// Whether the BMC answered the latest sweep (`None`: no sweep since the start).
    pub bmc: Option<BmcState>,
    /// Wall ms of the latest sweep, answered or not.
    pub last_sweep_ms: u64,
    /// Event time of the latest sweep.
    pub last_sweep_ts_ms: u64,
    /// Sensors of the latest sweep the BMC answered.
    pub sensors: Vec<SensorReading>,
    /// Event time of [`Self::sensors`].
    pub sensors_ts_ms: u64,
    /// Chassis status of the latest sweep that carried one.
    pub chassis: Option<ChassisState>,
    /// Wall-clock gaps between recent sweeps (newest last).
    #[serde(skip)]
    gaps: VecDeque<u64>,
    /// Per sensor name, oldest first.
    #[serde(skip)]
    pub history: BTreeMap<String, VecDeque<Point>>,
    /// The newest SEL entries, oldest first.
    pub sel: VecDeque<SelRecord>,
}

impl HardwareTrack {
    /// Take in a sweep received at wall time `now_ms`, event time `ts_ms`. Returns the SEL
    /// entries it added (those not held already).
    pub fn observe(&mut self, ts_ms: u64, report: HardwareReport, now_ms: u64) -> Vec<SelEntry> {
        if self.last_sweep_ms > 0 && now_ms >= self.last_sweep_ms {
            if self.gaps.len() == GAPS_KEPT {
                self.gaps.pop_front();
            }
            self.gaps.push_back(now_ms - self.last_sweep_ms);
        }
        self.last_sweep_ms = now_ms;
        self.last_sweep_ts_ms = ts_ms;
        if report.chassis.is_some() {
            self.chassis = report.chassis;
        }
        if matches!(report.bmc, BmcState::Ok(_)) {
            self.record_history(ts_ms, &report.sensors);
            self.sensors = report.sensors;
            self.sensors_ts_ms = ts_ms;
        }
        self.bmc = Some(report.bmc);
        self.add_sel(report.sel, now_ms)
    }

    /// A sweep older than the latest one (a replay after a reconnect): only its SEL entries.
    pub fn observe_late(&mut self, report: HardwareReport, now_ms: u64) -> Vec<SelEntry> {
        self.add_sel(report.sel, now_ms)
    }

    /// Put back stored SEL entries (start-up), oldest first.
    pub fn restore_sel(&mut self, records: impl IntoIterator<Item = SelRecord>) {
        for r in records {
            if !self.holds(&r.entry) {
                self.push_sel(r);
            }
        }
    }

    fn add_sel(&mut self, entries: Vec<SelEntry>, now_ms: u64) -> Vec<SelEntry> {
        let mut added = Vec::new();
        for entry in entries {
            if self.holds(&entry) {
                continue;
            }
            added.push(entry.clone());
            self.push_sel(SelRecord {
                received_ms: now_ms,
                entry,
            });
        }
        added
    }

    fn push_sel(&mut self, r: SelRecord) {
        if self.sel.len() == SEL_KEPT {
            self.sel.pop_front();
        }
        self.sel.push_back(r);
    }

    fn holds(&self, e: &SelEntry) -> bool {
        self.sel
            .iter()
            .any(|r| r.entry.record_id == e.record_id && r.entry.ts_s == e.ts_s)
    }

    fn record_history(&mut self, ts_ms: u64, sensors: &[SensorReading]) {
        self.history
            .retain(|name, _| sensors.iter().any(|s| &s.name == name));
        for s in sensors {
            let Some(v) = s.value else { continue };
            let h = self.history.entry(s.name.clone()).or_default();
            match h.back_mut() {
                Some(last) if last.0 / HISTORY_STEP_MS == ts_ms / HISTORY_STEP_MS => {
                    *last = (ts_ms, v);
                }
                Some(last) if last.0 > ts_ms => {} // out of order: keep the newer
                _ => h.push_back((ts_ms, v)),
            }
            let oldest = ts_ms.saturating_sub(HISTORY_POINTS as u64 * HISTORY_STEP_MS);
            while h.len() > HISTORY_POINTS || h.front().is_some_and(|p| p.0 < oldest) {
                h.pop_front();
            }
        }
    }

    /// The expected wall time between sweeps: the longest recent gap, at least one host
    /// interval; before two sweeps, [`DEFAULT_SWEEP_INTERVALS`] host intervals.
    pub fn sweep_interval_ms(&self, host_interval_ms: u64) -> u64 {
        match self.gaps.iter().max() {
            Some(&g) => g.max(host_interval_ms),
            None => DEFAULT_SWEEP_INTERVALS * host_interval_ms,
        }
    }
}

/// One thing wrong with a server's hardware now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// Appended to `node:{id}/` to form the alarm subject.
    pub subject: String,
    pub level: Level,
    /// zh-CN, without the server's name.
    pub what: String,
    pub evidence: serde_json::Value,
}

/// The level of a threshold status (`None`: nothing wrong).
pub fn status_level(s: SensorStatus) -> Option<Level> {
    match s {
        SensorStatus::NonCritical => Some(Level::Warning),
        SensorStatus::Critical | SensorStatus::NonRecoverable => Some(Level::Critical),
        SensorStatus::Ok | SensorStatus::NotAvailable => None,
    }
}

/// zh-CN name of a status.
pub fn status_zh(s: SensorStatus) -> &'static str {
    match s {
        SensorStatus::Ok => "正常",
        SensorStatus::NonCritical => "超出非严重阈值",
        SensorStatus::Critical => "超出严重阈值",
        SensorStatus::NonRecoverable => "超出不可恢复阈值",
        SensorStatus::NotAvailable => "无读数",
    }
}

/// zh-CN name of a sensor type.
pub fn type_zh(t: u8) -> &'static str {
    match t {
        TYPE_TEMPERATURE => "温度",
        TYPE_VOLTAGE => "电压",
        TYPE_CURRENT => "电流",
        TYPE_FAN => "风扇",
        TYPE_PHYSICAL_SECURITY => "机箱安全",
        TYPE_PROCESSOR => "处理器",
        TYPE_POWER_SUPPLY => "电源",
        TYPE_MEMORY => "内存",
        TYPE_DRIVE_SLOT => "硬盘槽位",
        _ => "其他",
    }
}

/// Faults a discrete sensor's asserted states mean: (level, zh-CN) per asserted state that
/// matters, worst first.
pub fn discrete_faults(sensor_type: u8, states: u16) -> Vec<(Level, &'static str)> {
    let table: &[(u16, Level, &str)] = match sensor_type {
        TYPE_POWER_SUPPLY => &[
            (1, Level::Critical, "电源故障"),
            (3, Level::Major, "电源输入断电"),
            (4, Level::Major, "电源输入断电或超范围"),
            (2, Level::Warning, "电源预测性故障"),
            (6, Level::Warning, "电源配置错误"),
        ],
        TYPE_PHYSICAL_SECURITY => &[
            (0, Level::Major, "机箱被打开（入侵）"),
            (1, Level::Major, "硬盘仓被打开（入侵）"),
        ],
        TYPE_PROCESSOR => &[
            (0, Level::Critical, "处理器内部错误（IERR）"),
            (1, Level::Critical, "处理器过热保护（Thermal Trip）"),
        ],
        TYPE_MEMORY => &[
            (1, Level::Critical, "内存不可纠正错误（ECC）"),
            (0, Level::Warning, "内存可纠正错误（ECC）"),
        ],
        TYPE_DRIVE_SLOT => &[(1, Level::Major, "硬盘故障")],
        _ => &[],
    };
    table
        .iter()
        .filter(|(bit, _, _)| states & (1 << bit) != 0)
        .map(|&(_, level, what)| (level, what))
        .collect()
}

/// The level and meaning of an SEL entry when it reports a fault (assertions only).
pub fn sel_level(e: &SelEntry) -> Option<(Level, String)> {
    if !e.asserted {
        return None;
    }
    if e.event_type == EVENT_THRESHOLD {
        // offsets 0–5 lower, 6–11 upper; within each pair: non-critical, critical,
        // non-recoverable
        let level = match e.offset {
            0..=1 | 6..=7 => Level::Warning,
            2..=5 | 8..=11 => Level::Critical,
            _ => return None,
        };
        return Some((level, e.description.clone()));
    }
    if e.event_type == EVENT_SENSOR_SPECIFIC && e.offset < 16 {
        return discrete_faults(e.sensor_type, 1 << e.offset)
            .first()
            .map(|&(level, what)| (level, what.to_string()));
    }
    None
}

/// A sensor's own problem: its threshold status and the faults its discrete states mean.
fn sensor_problem(s: &SensorReading) -> Option<Problem> {
    let faults = discrete_faults(s.sensor_type, s.states);
    let by_status = status_level(s.status);
    let level = faults.iter().map(|f| f.0).chain(by_status).max()?;
    let what = if faults.is_empty() {
        format!(
            "{}传感器 {} {}",
            type_zh(s.sensor_type),
            s.name,
            status_zh(s.status)
        )
    } else {
        let names: Vec<&str> = faults.iter().map(|f| f.1).collect();
        format!("{} {}", s.name, names.join("、"))
    };
    Some(Problem {
        subject: format!("sensor:{}", s.name),
        level,
        what,
        evidence: serde_json::json!({
            "kind": "sensor",
            "sensor": s.name,
            "number": s.number,
            "sensor_type": s.sensor_type,
            "value": s.value,
            "unit": s.unit,
            "status": s.status,
            "thresholds": s.thresholds,
            "states": s.states,
        }),
    })
}

fn chassis_problems(c: &ChassisState, out: &mut Vec<Problem>) {
    let faults = [
        (
            c.power_fault,
            "power_fault",
            Level::Critical,
            "机箱电源故障",
        ),
        (
            c.cooling_fault,
            "cooling_fault",
            Level::Major,
            "散热（风扇）故障",
        ),
        (c.drive_fault, "drive_fault", Level::Major, "硬盘故障"),
        (c.intrusion, "intrusion", Level::Major, "机箱被打开（入侵）"),
    ];
    for (on, key, level, what) in faults {
        if on {
            out.push(Problem {
                subject: format!("chassis:{key}"),
                level,
                what: what.into(),
                evidence: serde_json::json!({ "kind": "chassis", "chassis": c }),
            });
        }
    }
}

/// SEL faults still standing: per sensor and offset, the latest assertion younger than
/// [`SEL_ALARM_HOLD_MS`] with no deassertion after it, unless the sensor's current reading
/// already shows a fault as bad (an excursion between two sweeps is seen only here).
fn sel_problems(t: &HardwareTrack, now_ms: u64, out: &mut Vec<Problem>) {
    let mut latest: BTreeMap<(u8, u8, u8), &SelRecord> = BTreeMap::new();
    for r in &t.sel {
        let e = &r.entry;
        let key = (e.sensor_number, e.event_type, e.offset);
        latest.insert(key, r);
    }
    for ((number, _, offset), r) in latest {
        let Some((level, what)) = sel_level(&r.entry) else {
            continue; // a deassertion (or no fault) is the latest word
        };
        if now_ms.saturating_sub(r.received_ms) >= SEL_ALARM_HOLD_MS {
            continue;
        }
        // the sensor itself shows the fault now: its own alarm says it, once
        let live = t
            .sensors
            .iter()
            .filter(|s| s.number == number)
            .filter_map(sensor_problem)
            .map(|p| p.level)
            .max();
        if live.is_some_and(|l| l >= level) {
            continue;
        }
        let sensor = r
            .entry
            .sensor
            .clone()
            .unwrap_or_else(|| format!("#{number}"));
        out.push(Problem {
            subject: format!("sel:{sensor}:{offset}"),
            level,
            what: format!("系统事件日志：{sensor} {what}"),
            evidence: serde_json::json!({ "kind": "sel", "entry": r }),
        });
    }
}

/// Everything wrong with a node's hardware now (nothing when it never sent a sweep), given
/// its report interval and liveness.
pub fn assess(
    t: &HardwareTrack,
    interval_ms: u64,
    liveness: Liveness,
    now_ms: u64,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(bmc) = &t.bmc else {
        return out;
    };
    out.extend(t.sensors.iter().filter_map(sensor_problem));
    if let Some(c) = &t.chassis {
        chassis_problems(c, &mut out);
    }
    sel_problems(t, now_ms, &mut out);
    let interval = t.sweep_interval_ms(interval_ms);
    let silent_for = now_ms.saturating_sub(t.last_sweep_ms);
    let bmc_problem = match bmc {
        BmcState::Unreachable(cause) => Some(format!("BMC 无响应：{cause}")),
        // the host reports but its sweeps stopped: the BMC (or the agent's IPMI reader)
        // is stuck; a host that is itself down is node_down's alarm
        BmcState::Ok(_)
            if liveness == Liveness::Online && silent_for > SILENT_SWEEPS * interval =>
        {
            Some(format!(
                "BMC 已 {} 秒无传感器数据（主机仍在上报）",
                silent_for / 1000
            ))
        }
        BmcState::Ok(_) => None,
    };
    if let Some(what) = bmc_problem {
        out.push(Problem {
            subject: "bmc".into(),
            level: Level::Major,
            what,
            evidence: serde_json::json!({
                "kind": "bmc",
                "bmc": bmc,
                "last_sweep_ms": t.last_sweep_ms,
                "sweep_interval_ms": interval,
                "host_liveness": liveness,
            }),
        });
    }
    out
}
