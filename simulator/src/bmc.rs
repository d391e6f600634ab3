//! The physical servers' emulated BMCs: the sensors an IPMI sweep reads, following the
//! server's load, sent as [`Body::Hardware`](yunjian_protocol::Body::Hardware) every few host
//! reports.
//!
//! | sensor                  | follows                                                      |
//! |-------------------------|--------------------------------------------------------------|
//! | `Inlet Temp`            | the machine room: 21–25 °C, a little warmer in the afternoon |
//! | `CPU1 Temp`, `CPU2 Temp`| inlet + 12 °C idle, up to +57 °C at full load (below 85 °C) |
//! | `FAN1`…`FAN4`           | the hotter CPU: 2,400 RPM cool, up to 12,000 RPM hot         |
//! | `PSU1 Status`, `PSU2 Status` | present; occasionally one fails for a while (`psu_fault_rate`) |
//! | `12V`, `5V`, `3.3V`     | their rail, a few millivolts of noise                        |
//! | `Pwr Consumption`       | 160 W idle up to 160 + 360 W at full load                    |
//!
//! The BMC judges each reading against its own thresholds, as a real one does, and logs
//! threshold crossings and PSU failures in its SEL, plus an occasional correctable memory
//! error (`sel_rate`). Everything random is a hash of the node seed and the sweep number:
//! the same scenario gives the same sweeps.
//!
//! `[hardware]` in a scenario sets the sweep spacing and fault rates, and can force a host's
//! CPUs over temperature (`overheat`) or its BMC unreachable (`unreachable`) for a window of
//! event time, e.g. for tests.

use crate::fleet::{Fleet, NodeKind};
use crate::rng::{hash_u64s, unit_f64};
use crate::scenario::{parse_duration, Rack};
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::time::Duration;
use yunjian_protocol::hardware::{
    BmcState, ChassisState, HardwareReport, Milli, SelEntry, SensorReading, SensorStatus,
    Thresholds,
};

/// Sweeps a failed power supply stays failed.
const PSU_FAILED_SWEEPS: u64 = 20;

/// `[hardware]` in a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HardwareKnobs {
    /// Host reports between two BMC sweeps (the agent sweeps less often than it reports).
    /// 0: the servers have no BMC.
    pub every_reports: u32,
    /// Chance per sweep that a power supply of a server fails (it recovers
    /// 20 sweeps later), e.g. `0.001`.
    pub psu_fault_rate: f64,
    /// Chance per sweep of a correctable memory error in the SEL.
    pub sel_rate: f64,
    /// Hosts whose CPUs are forced hot for a window of event time, e.g.
    /// `[{ host = "rack1-h02", after = "10s", for = "30s", cpu_temp_c = 96 }]`.
    pub overheat: Vec<Overheat>,
    /// Hosts whose BMC does not answer for a window of event time (the host itself runs on),
    /// e.g. `[{ host = "rack1-h01", after = "1h", for = "10m" }]`.
    pub unreachable: Vec<Outage>,
}

impl Default for HardwareKnobs {
    fn default() -> Self {
        HardwareKnobs {
            every_reports: 3,
            psu_fault_rate: 0.0,
            sel_rate: 0.0,
            overheat: Vec::new(),
            unreachable: Vec::new(),
        }
    }
}

/// A BMC outage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// The host's node id.
    pub host: String,
    /// Event time after the start when it begins.
    #[serde(deserialize_with = "de_duration")]
    pub after: Duration,
    /// How long it lasts; absent: until the end.
    #[serde(default, rename = "for", deserialize_with = "de_opt_duration")]
    pub duration: Option<Duration>,
}

/// `[from, until)` in event ms of a window starting `after` the start.
fn window(start_ms: u64, after: Duration, duration: Option<Duration>) -> (u64, u64) {
    let from = start_ms + after.as_millis() as u64;
    (
        from,
        duration.map_or(u64::MAX, |d| from + d.as_millis() as u64),
    )
}

/// A forced over-temperature.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overheat {
    /// The host's node id.
    pub host: String,
    /// Event time after the start when it begins.
    #[serde(deserialize_with = "de_duration")]
    pub after: Duration,
    /// How long it lasts; absent: until the end.
    #[serde(default, rename = "for", deserialize_with = "de_opt_duration")]
    pub duration: Option<Duration>,
    /// The CPU temperature meanwhile, degrees C (default 96: above the critical 90).
    #[serde(default = "default_overheat_c")]
    pub cpu_temp_c: f64,
}

fn default_overheat_c() -> f64 {
    96.0
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

impl HardwareKnobs {
    /// Rates are probabilities; every host named is a host of these racks.
    pub fn validate(&self, racks: &[Rack]) -> Result<(), String> {
        for (name, rate) in [
            ("psu_fault_rate", self.psu_fault_rate),
            ("sel_rate", self.sel_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "hardware: {name} must be between 0 and 1, not {rate}"
                ));
            }
        }
        let hosts: HashSet<String> = racks
            .iter()
            .flat_map(|r| (1..=r.hosts).map(move |n| r.host_id(n)))
            .collect();
        let named = self
            .overheat
            .iter()
            .map(|o| ("overheat", &o.host))
            .chain(self.unreachable.iter().map(|o| ("unreachable", &o.host)));
        for (knob, host) in named {
            if !hosts.contains(host) {
                return Err(format!(
                    "hardware: {knob} names {host:?}, not a host of this scenario"
                ));
            }
        }
        for o in &self.overheat {
            if !(-50.0..=150.0).contains(&o.cpu_temp_c) {
                return Err(format!(
                    "hardware: overheat of {} at {} degrees C is not a temperature",
                    o.host, o.cpu_temp_c
                ));
            }
        }
        Ok(())
    }
}

/// A threshold sensor's definition.
struct Def {
    name: &'static str,
    number: u8,
    sensor_type: u8,
    unit: &'static str,
    thresholds: Thresholds,
}

/// Thresholds in thousandths; 0 = not declared.
const fn th(lnr: i64, lc: i64, lnc: i64, unc: i64, uc: i64, unr: i64) -> Thresholds {
    Thresholds {
        lower_non_recoverable: declared(lnr),
        lower_critical: declared(lc),
        lower_non_critical: declared(lnc),
        upper_non_critical: declared(unc),
        upper_critical: declared(uc),
        upper_non_recoverable: declared(unr),
    }
}

const fn declared(v: i64) -> Option<i64> {
    if v == 0 {
        None
    } else {
        Some(v)
    }
}

/// Whether a reading of `milli` is on the upper side of its sensor's range.
fn upper_side(milli: Milli, t: &Thresholds) -> bool {
    match (t.lower_non_critical, t.upper_non_critical) {
        (Some(_), None) => false,
        (Some(l), Some(u)) => milli * 2 > l + u,
        _ => true,
    }
}

/// Index of `FAN1` in [`DEFS`].
const FAN1: usize = 3;

const DEFS: [Def; 11] = [
    Def {
        name: "Inlet Temp",
        number: 0x01,
        sensor_type: 0x01,
        unit: "degrees C",
        thresholds: th(0, 0, 0, 38_000, 42_000, 45_000),
    },
    Def {
        name: "CPU1 Temp",
        number: 0x02,
        sensor_type: 0x01,
        unit: "degrees C",
        thresholds: th(0, 0, 0, 85_000, 90_000, 100_000),
    },
    Def {
        name: "CPU2 Temp",
        number: 0x03,
        sensor_type: 0x01,
        unit: "degrees C",
        thresholds: th(0, 0, 0, 85_000, 90_000, 100_000),
    },
    Def {
        name: "FAN1",
        number: 0x30,
        sensor_type: 0x04,
        unit: "RPM",
        thresholds: th(0, 1_000_000, 1_800_000, 0, 0, 0),
    },
    Def {
        name: "FAN2",
        number: 0x31,
        sensor_type: 0x04,
        unit: "RPM",
        thresholds: th(0, 1_000_000, 1_800_000, 0, 0, 0),
    },
    Def {
        name: "FAN3",
        number: 0x32,
        sensor_type: 0x04,
        unit: "RPM",
        thresholds: th(0, 1_000_000, 1_800_000, 0, 0, 0),
    },
    Def {
        name: "FAN4",
        number: 0x33,
        sensor_type: 0x04,
        unit: "RPM",
        thresholds: th(0, 1_000_000, 1_800_000, 0, 0, 0),
    },
    Def {
        name: "12V",
        number: 0x40,
        sensor_type: 0x02,
        unit: "Volts",
        thresholds: th(0, 10_800, 11_400, 12_600, 13_200, 0),
    },
    Def {
        name: "5V",
        number: 0x41,
        sensor_type: 0x02,
        unit: "Volts",
        thresholds: th(0, 4_500, 4_750, 5_250, 5_500, 0),
    },
    Def {
        name: "3.3V",
        number: 0x42,
        sensor_type: 0x02,
        unit: "Volts",
        thresholds: th(0, 2_970, 3_130, 3_460, 3_630, 0),
    },
    Def {
        name: "Pwr Consumption",
        number: 0x50,
        sensor_type: 0x03,
        unit: "Watts",
        thresholds: th(0, 0, 0, 800_000, 900_000, 0),
    },
];
const PSUS: [(&str, u8); 2] = [("PSU1 Status", 0x60), ("PSU2 Status", 0x61)];
const TYPE_PSU: u8 = 0x08;
const TYPE_MEMORY: u8 = 0x0c;

/// A reading's status against its thresholds, as the BMC judges it.
pub fn status(value: Milli, t: &Thresholds) -> SensorStatus {
    let above = |th: Option<Milli>| th.is_some_and(|x| value >= x);
    let below = |th: Option<Milli>| th.is_some_and(|x| value <= x);
    if above(t.upper_non_recoverable) || below(t.lower_non_recoverable) {
        SensorStatus::NonRecoverable
    } else if above(t.upper_critical) || below(t.lower_critical) {
        SensorStatus::Critical
    } else if above(t.upper_non_critical) || below(t.lower_non_critical) {
        SensorStatus::NonCritical
    } else {
        SensorStatus::Ok
    }
}

/// Threshold event offsets (IPMI 2.0 table 42-2) of going beyond `s` upwards / downwards.
fn threshold_offset(s: SensorStatus, upper: bool) -> Option<(u8, &'static str)> {
    Some(match (s, upper) {
        (SensorStatus::NonCritical, false) => (0, "Lower Non-critical going low"),
        (SensorStatus::Critical, false) => (2, "Lower Critical going low"),
        (SensorStatus::NonRecoverable, false) => (4, "Lower Non-recoverable going low"),
        (SensorStatus::NonCritical, true) => (7, "Upper Non-critical going high"),
        (SensorStatus::Critical, true) => (9, "Upper Critical going high"),
        (SensorStatus::NonRecoverable, true) => (11, "Upper Non-recoverable going high"),
        _ => return None,
    })
}

/// One server's BMC.
#[derive(Debug)]
pub struct BmcSim {
    seed: u64,
    every: u32,
    reports: u32,
    sweeps: u64,
    next_record: u16,
    psu_fault_rate: f64,
    sel_rate: f64,
    /// Per PSU: the sweep number it recovers at, while failed.
    psu_failed_until: [Option<u64>; 2],
    /// Last status of each threshold sensor (for SEL threshold events).
    last_status: [SensorStatus; DEFS.len()],
    /// (from, until) event ms and the forced CPU temperature.
    overheat: Vec<(u64, u64, f64)>,
    /// (from, until) event ms of BMC outages.
    outages: Vec<(u64, u64)>,
}

impl BmcSim {
    /// Node `idx`'s BMC (`None` for a VM, or when the scenario gives servers no BMC).
    pub fn new(fleet: &Fleet, idx: usize, start_ms: u64) -> Option<Self> {
        let spec = &fleet.nodes()[idx];
        let knobs = &fleet.scenario().hardware;
        if !matches!(spec.kind, NodeKind::Host { .. }) || knobs.every_reports == 0 {
            return None;
        }
        let overheat = knobs
            .overheat
            .iter()
            .filter(|o| o.host == spec.id)
            .map(|o| {
                let (from, until) = window(start_ms, o.after, o.duration);
                (from, until, o.cpu_temp_c)
            })
            .collect();
        let outages = knobs
            .unreachable
            .iter()
            .filter(|o| o.host == spec.id)
            .map(|o| window(start_ms, o.after, o.duration))
            .collect();
        Some(BmcSim {
            seed: spec.seed,
            every: knobs.every_reports,
            reports: 0,
            sweeps: 0,
            next_record: 1,
            psu_fault_rate: knobs.psu_fault_rate,
            sel_rate: knobs.sel_rate,
            psu_failed_until: [None; 2],
            last_status: [SensorStatus::Ok; DEFS.len()],
            overheat,
            outages,
        })
    }

    /// Called on every host report with the host's CPU busy share (0–1): a sweep when one
    /// is due (the first report, then every `every_reports`).
    pub fn due(&mut self, ts_ms: u64, cpu_busy: f64) -> Option<HardwareReport> {
        let due = self.reports.is_multiple_of(self.every);
        self.reports += 1;
        due.then(|| self.sweep(ts_ms, cpu_busy))
    }

    fn noise(&self, key: u64) -> f64 {
        unit_f64(hash_u64s(&[self.seed, 0xb4c, self.sweeps, key])) - 0.5
    }

    /// One sweep at event time `ts_ms` with the host's CPU busy share.
    pub fn sweep(&mut self, ts_ms: u64, cpu_busy: f64) -> HardwareReport {
        if self
            .outages
            .iter()
            .any(|(from, until)| (*from..*until).contains(&ts_ms))
        {
            return HardwareReport {
                bmc: BmcState::Unreachable(
                    "simulated lanplus: no answer within 5 s (BMC not responding)".into(),
                ),
                chassis: None,
                sensors: Vec::new(),
                sel: Vec::new(),
            };
        }
        self.sweeps += 1;
        let load = cpu_busy.clamp(0.0, 1.0);
        let mut sel = Vec::new();
        let ts_s = u32::try_from(ts_ms / 1000).unwrap_or(u32::MAX);
        // the machine room: warmer in the afternoon (Beijing time)
        let hour = ((ts_ms / 1000 + 8 * 3600) % 86_400) as f64 / 3600.0;
        let inlet =
            23.0 + 2.0 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin() + self.noise(1) * 0.4;
        let forced = self
            .overheat
            .iter()
            .find(|(from, until, _)| (*from..*until).contains(&ts_ms))
            .map(|o| o.2);
        // at full load still below the 85 °C warning line: only a fault or a forced
        // overheat raises an alarm
        let cpu = |k: u64| forced.unwrap_or(inlet + 12.0 + 45.0 * load + self.noise(k) * 1.5);
        let (cpu1, cpu2) = (cpu(2), cpu(3) - 1.5);
        let hot = cpu1.max(cpu2);
        let fan_rpm = (2_400.0 + (hot - 40.0).max(0.0) * 180.0).min(12_000.0);
        // power supplies: one may fail for a while
        for (i, failed) in self.psu_failed_until.iter_mut().enumerate() {
            match *failed {
                Some(until) if self.sweeps >= until => *failed = None,
                None if unit_f64(hash_u64s(&[self.seed, 0x9505, self.sweeps, i as u64]))
                    < self.psu_fault_rate =>
                {
                    *failed = Some(self.sweeps + PSU_FAILED_SWEEPS)
                }
                _ => continue,
            }
            let asserted = failed.is_some();
            sel.push(SelEntry {
                record_id: 0,
                ts_s,
                sensor_type: TYPE_PSU,
                sensor_number: PSUS[i].1,
                sensor: Some(PSUS[i].0.to_string()),
                event_type: 0x6f,
                asserted,
                offset: 1,
                description: "Power Supply Failure detected".into(),
            });
        }
        let psus_ok = self.psu_failed_until.iter().filter(|f| f.is_none()).count();
        let power = 160.0 + 360.0 * load + self.noise(10) * 6.0;
        let values: [f64; DEFS.len()] = [
            inlet,
            cpu1,
            cpu2,
            fan_rpm + self.noise(4) * 120.0,
            fan_rpm + self.noise(5) * 120.0,
            fan_rpm + self.noise(6) * 120.0,
            fan_rpm + self.noise(7) * 120.0,
            12.0 + self.noise(8) * 0.08,
            5.0 + self.noise(9) * 0.04,
            3.3 + self.noise(11) * 0.03,
            power,
        ];
        let mut sensors = Vec::with_capacity(DEFS.len() + PSUS.len());
        for (i, (d, v)) in DEFS.iter().zip(values).enumerate() {
            let milli = (v * 1000.0).round() as Milli;
            let s = status(milli, &d.thresholds);
            if s != self.last_status[i] {
                // an event for crossing a threshold up (assert) or back (deassert)
                let upper = upper_side(milli, &d.thresholds);
                let (judged, asserted) = if s > self.last_status[i] {
                    (s, true)
                } else {
                    (self.last_status[i], false)
                };
                if let Some((offset, text)) = threshold_offset(judged, upper) {
                    sel.push(SelEntry {
                        record_id: 0,
                        ts_s,
                        sensor_type: d.sensor_type,
                        sensor_number: d.number,
                        sensor: Some(d.name.to_string()),
                        event_type: 0x01,
                        asserted,
                        offset,
                        description: text.into(),
                    });
                }
                self.last_status[i] = s;
            }
            sensors.push(SensorReading {
                name: d.name.into(),
                number: d.number,
                sensor_type: d.sensor_type,
                value: Some(milli),
                unit: d.unit.into(),
                status: s,
                thresholds: d.thresholds,
                states: 0,
            });
        }
        for (i, (name, number)) in PSUS.iter().enumerate() {
            let failed = self.psu_failed_until[i].is_some();
            sensors.push(SensorReading {
                name: (*name).into(),
                number: *number,
                sensor_type: TYPE_PSU,
                value: None,
                unit: String::new(),
                status: if failed {
                    SensorStatus::Critical
                } else {
                    SensorStatus::Ok
                },
                thresholds: Thresholds::default(),
                // bit 0 presence detected, bit 1 failure detected
                states: if failed { 0b11 } else { 0b01 },
            });
        }
        if unit_f64(hash_u64s(&[self.seed, 0x5e1, self.sweeps])) < self.sel_rate {
            sel.push(SelEntry {
                record_id: 0,
                ts_s,
                sensor_type: TYPE_MEMORY,
                sensor_number: 0x70,
                sensor: Some("DIMM Status".into()),
                event_type: 0x6f,
                asserted: true,
                offset: 0,
                description: "Correctable ECC logging".into(),
            });
        }
        for e in &mut sel {
            e.record_id = self.next_record;
            self.next_record = self.next_record.wrapping_add(1).max(1);
        }
        HardwareReport {
            bmc: BmcState::Ok("simulated lanplus".into()),
            chassis: Some(ChassisState {
                power_on: true,
                power_fault: psus_ok == 0,
                intrusion: false,
                drive_fault: false,
                cooling_fault: values[FAN1] < 1_000.0,
            }),
            sensors,
            sel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    /// Index of `CPU1 Temp` in a sweep's sensors.
    const CPU1: usize = 1;

    fn fleet(extra: &str) -> Fleet {
        let text = format!(
            "seed = 3\n[hardware]\n{extra}\n[[rack]]\nname = \"r1\"\nhosts = 2\nvms_per_host = 1\n"
        );
        Fleet::build(Scenario::from_toml_str(&text).unwrap()).unwrap()
    }

    fn value(r: &HardwareReport, name: &str) -> Milli {
        r.sensors
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.value)
            .unwrap()
    }

    #[test]
    fn status_follows_the_thresholds() {
        let t = DEFS[CPU1].thresholds;
        assert_eq!(status(84_999, &t), SensorStatus::Ok);
        assert_eq!(status(85_000, &t), SensorStatus::NonCritical);
        assert_eq!(status(90_000, &t), SensorStatus::Critical);
        assert_eq!(status(100_000, &t), SensorStatus::NonRecoverable);
        let fan = DEFS[FAN1].thresholds;
        assert_eq!(status(1_500_000, &fan), SensorStatus::NonCritical);
        assert_eq!(status(900_000, &fan), SensorStatus::Critical);
    }

    #[test]
    fn temperatures_fans_and_power_follow_load() {
        let f = fleet("");
        let mut idle = BmcSim::new(&f, 0, 0).unwrap();
        let mut busy = BmcSim::new(&f, 0, 0).unwrap();
        let a = idle.sweep(3_600_000, 0.05);
        let b = busy.sweep(3_600_000, 0.95);
        assert!(value(&b, "CPU1 Temp") > value(&a, "CPU1 Temp") + 35_000);
        // full load is warm, not an alarm
        assert!(
            b.sensors.iter().all(|s| s.status == SensorStatus::Ok),
            "{b:?}"
        );
        assert!(value(&b, "FAN1") > value(&a, "FAN1") + 3_000_000);
        assert!(value(&b, "Pwr Consumption") > value(&a, "Pwr Consumption") + 250_000);
        // in range, all sensors fine, both PSUs present, nothing logged
        assert!(
            a.sensors.iter().all(|s| s.status == SensorStatus::Ok),
            "{a:?}"
        );
        assert!(a.sel.is_empty());
        assert!((12_000 - value(&a, "12V")).abs() < 100);
        // VMs have no BMC (hosts come first, then VMs)
        assert!(BmcSim::new(&f, 2, 0).is_none());
    }

    #[test]
    fn same_seed_same_sweeps_and_a_sweep_every_few_reports() {
        let f = fleet("every_reports = 2\npsu_fault_rate = 0.3\nsel_rate = 0.3");
        let run = || {
            let mut b = BmcSim::new(&f, 0, 0).unwrap();
            (0..40u64)
                .map(|i| b.due(i * 10_000, 0.4))
                .collect::<Vec<_>>()
        };
        let (x, y) = (run(), run());
        assert_eq!(x, y);
        assert!(x[0].is_some() && x[1].is_none() && x[2].is_some());
        let sel: Vec<&SelEntry> = x.iter().flatten().flat_map(|r| &r.sel).collect();
        // with these rates some PSU failures and memory errors happen, record ids count up
        assert!(sel.iter().any(|e| e.sensor_type == TYPE_PSU && e.asserted));
        assert!(sel.iter().any(|e| e.sensor_type == TYPE_MEMORY));
        assert!(sel.windows(2).all(|w| w[1].record_id == w[0].record_id + 1));
        // a failed PSU shows its failure bit
        assert!(x.iter().flatten().any(|r| r
            .sensors
            .iter()
            .any(|s| s.sensor_type == TYPE_PSU && s.states & 0b10 != 0)));
    }

    #[test]
    fn a_forced_overheat_is_critical_in_its_window_and_logged() {
        let f = fleet(
            "overheat = [{ host = \"r1-h01\", after = \"10s\", for = \"20s\", cpu_temp_c = 95 }]",
        );
        let mut b = BmcSim::new(&f, 0, 1_000_000).unwrap();
        let before = b.sweep(1_005_000, 0.1);
        assert_eq!(before.sensors[CPU1].status, SensorStatus::Ok);
        let during = b.sweep(1_015_000, 0.1);
        assert_eq!(value(&during, "CPU1 Temp"), 95_000);
        assert_eq!(during.sensors[CPU1].status, SensorStatus::Critical);
        assert!(during
            .sel
            .iter()
            .any(|e| e.sensor.as_deref() == Some("CPU1 Temp") && e.asserted && e.offset == 9));
        // fans spin up with it
        assert!(value(&during, "FAN1") > value(&before, "FAN1"));
        let after = b.sweep(1_031_000, 0.1);
        assert_eq!(after.sensors[CPU1].status, SensorStatus::Ok);
        assert!(after
            .sel
            .iter()
            .any(|e| e.sensor.as_deref() == Some("CPU1 Temp") && !e.asserted && e.offset == 9));
        // the other host is not affected
        let mut other = BmcSim::new(&f, 1, 1_000_000).unwrap();
        assert_eq!(
            other.sweep(1_015_000, 0.1).sensors[CPU1].status,
            SensorStatus::Ok
        );
    }

    #[test]
    fn an_outage_makes_the_bmc_unreachable_in_its_window() {
        let f = fleet("unreachable = [{ host = \"r1-h02\", after = \"10s\", for = \"20s\" }]");
        let mut b = BmcSim::new(&f, 1, 0).unwrap();
        assert!(matches!(b.sweep(5_000, 0.2).bmc, BmcState::Ok(_)));
        let out = b.sweep(15_000, 0.2);
        assert!(matches!(out.bmc, BmcState::Unreachable(_)), "{out:?}");
        assert!(out.sensors.is_empty() && out.chassis.is_none());
        assert_eq!(b.sweep(30_000, 0.2).sensors.len(), DEFS.len() + PSUS.len());
        // the other host answers throughout
        let mut other = BmcSim::new(&f, 0, 0).unwrap();
        assert!(matches!(other.sweep(15_000, 0.2).bmc, BmcState::Ok(_)));
    }

    #[test]
    fn knobs_are_checked() {
        let racks = Scenario::uniform(1, 2, 0, 1).racks;
        let bad = HardwareKnobs {
            overheat: vec![Overheat {
                host: "nope".into(),
                after: Duration::ZERO,
                duration: None,
                cpu_temp_c: 96.0,
            }],
            ..HardwareKnobs::default()
        };
        assert!(bad.validate(&racks).unwrap_err().contains("nope"));
        let outage = HardwareKnobs {
            unreachable: vec![Outage {
                host: "rack1-h09".into(),
                after: Duration::ZERO,
                duration: None,
            }],
            ..HardwareKnobs::default()
        };
        assert!(outage.validate(&racks).unwrap_err().contains("unreachable"));
        let rate = HardwareKnobs {
            psu_fault_rate: 2.0,
            ..HardwareKnobs::default()
        };
        assert!(rate
            .validate(&racks)
            .unwrap_err()
            .contains("psu_fault_rate"));
    }
}
