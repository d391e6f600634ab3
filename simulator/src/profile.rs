//! Workload profiles: what a simulated machine is doing at a given event time.
//!
//! A [`Workload`] is one node's profile plus parameters drawn once from the node's generator
//! (its base level, its peak, its I/O appetite...). [`Workload::sample`] is then a pure function
//! of the event time: the noise is a hash of (node seed, time), so the same seed gives the same
//! samples whatever the wall-clock jitter or the order in which nodes run.

use crate::rng::{hash_u64s, unit_f64, Rng};
use serde::{Deserialize, Serialize};
use std::fmt;
use yunjian_time::{Day, BEIJING_OFFSET_MS, DAY_MS};

/// Event-time length of one bursty slot: a burst lasts a whole slot.
const BURST_SLOT_MS: u64 = 5 * 60_000;

/// The kind of work a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Office application: a daily sine peaking in the Beijing afternoon, quiet at night and
    /// on weekends.
    Diurnal,
    /// Batch or report jobs: a low base with bursts of 60–97 % CPU lasting five minutes.
    Bursty,
    /// Forgotten or over-provisioned machine: CPU 0.5–2 %, a trickle of network (a few
    /// KB/s: monitoring, updates).
    Idle,
    /// Constant service load (25–60 % CPU) with small noise.
    Steady,
    /// A weekly batch job: idle six days a week, 60–95 % CPU from 01:00 to 07:00 Beijing time
    /// on its own weekday (the idle rule must not reclaim it).
    #[serde(rename = "weekly_batch")]
    WeeklyBatch,
    /// Month-end reporting: idle except 09:00–18:00 Beijing time on the last two days of each
    /// month, at 50–90 % CPU.
    #[serde(rename = "month_end")]
    MonthEnd,
}

impl Profile {
    pub const ALL: [Profile; 6] = [
        Profile::Diurnal,
        Profile::Bursty,
        Profile::Idle,
        Profile::Steady,
        Profile::WeeklyBatch,
        Profile::MonthEnd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Diurnal => "diurnal",
            Profile::Bursty => "bursty",
            Profile::Idle => "idle",
            Profile::Steady => "steady",
            Profile::WeeklyBatch => "weekly_batch",
            Profile::MonthEnd => "month_end",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The load of one node at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Busy share of all CPUs, 0.0..=1.0.
    pub cpu: f64,
    /// Used share of memory, 0.0..=1.0.
    pub mem: f64,
    pub disk_read_bps: f64,
    pub disk_write_bps: f64,
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
}

/// One node's workload: a profile with per-node parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    profile: Profile,
    /// Seed of the per-sample noise.
    seed: u64,
    /// CPU share at rest (night, between bursts) or the steady level.
    base: f64,
    /// CPU share at the peak (diurnal noon, inside a burst).
    peak: f64,
    /// Memory share at rest and its swing at the peak.
    mem_base: f64,
    mem_swing: f64,
    /// Disk and network bytes per second at 100 % CPU.
    io_scale: f64,
    net_scale: f64,
    /// Diurnal: shift of the daily curve in hours. Bursty: probability of a burst per slot.
    /// Weekly batch: the weekday of the run (0 = Sunday).
    shape: f64,
}

impl Workload {
    /// Draw this node's parameters for `profile` from its generator.
    pub fn new(profile: Profile, rng: &mut Rng) -> Self {
        let seed = rng.next_u64();
        let io_scale = rng.range(2e6, 40e6);
        let net_scale = rng.range(1e6, 25e6);
        let (base, peak, mem_base, mem_swing, shape) = match profile {
            Profile::Diurnal => (
                rng.range(0.04, 0.12),
                rng.range(0.45, 0.88),
                rng.range(0.35, 0.50),
                rng.range(0.10, 0.25),
                rng.range(-1.0, 1.0),
            ),
            Profile::Bursty => (
                rng.range(0.03, 0.10),
                rng.range(0.60, 0.97),
                rng.range(0.25, 0.40),
                rng.range(0.20, 0.35),
                rng.range(0.08, 0.20),
            ),
            Profile::Idle => (0.005, 0.02, rng.range(0.10, 0.22), 0.0, 0.0),
            Profile::Steady => (rng.range(0.25, 0.60), 0.0, rng.range(0.50, 0.70), 0.0, 0.0),
            Profile::WeeklyBatch => (
                rng.range(0.005, 0.02),
                rng.range(0.60, 0.95),
                rng.range(0.12, 0.25),
                rng.range(0.20, 0.40),
                (rng.next_u64() % 7) as f64,
            ),
            Profile::MonthEnd => (
                rng.range(0.005, 0.02),
                rng.range(0.50, 0.90),
                rng.range(0.12, 0.25),
                rng.range(0.20, 0.40),
                0.0,
            ),
        };
        // Machines idle most of the time only trickle on the network (KB/s, not MB/s).
        let net_scale = match profile {
            Profile::Idle | Profile::WeeklyBatch | Profile::MonthEnd => net_scale * QUIET_NET,
            _ => net_scale,
        };
        Workload {
            profile,
            seed,
            base,
            peak,
            mem_base,
            mem_swing,
            io_scale,
            net_scale,
            shape,
        }
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// A value in `[0, 1)` that depends only on this node, the time and the channel.
    fn noise(&self, ts_ms: u64, channel: u64) -> f64 {
        unit_f64(hash_u64s(&[self.seed, ts_ms, channel]))
    }

    /// Centred noise in `[-amp, amp)`.
    fn jitter(&self, ts_ms: u64, channel: u64, amp: f64) -> f64 {
        (self.noise(ts_ms, channel) * 2.0 - 1.0) * amp
    }

    /// The load at event time `ts_ms` (Unix milliseconds).
    pub fn sample(&self, ts_ms: u64) -> Load {
        let (cpu, activity, mem) = match self.profile {
            Profile::Diurnal => {
                let a = business_curve(ts_ms, self.shape);
                let cpu = self.base + (self.peak - self.base) * a + self.jitter(ts_ms, 1, 0.03);
                (cpu, a, self.mem_base + self.mem_swing * a)
            }
            Profile::Bursty => {
                let slot = ts_ms / BURST_SLOT_MS;
                let in_burst = unit_f64(hash_u64s(&[self.seed, slot, 0xb0b5])) < self.shape;
                if in_burst {
                    let cpu = self.peak + self.jitter(ts_ms, 1, 0.03);
                    (cpu, 1.0, self.mem_base + self.mem_swing)
                } else {
                    let cpu = self.base + self.jitter(ts_ms, 1, 0.015);
                    (cpu, 0.05, self.mem_base)
                }
            }
            Profile::Idle => {
                let cpu = self.base + (self.peak - self.base) * self.noise(ts_ms, 1);
                (cpu, 0.0, self.mem_base)
            }
            Profile::Steady => {
                let cpu = self.base + self.jitter(ts_ms, 1, 0.02);
                (cpu, 0.5, self.mem_base)
            }
            Profile::WeeklyBatch | Profile::MonthEnd => {
                let busy = match self.profile {
                    Profile::WeeklyBatch => weekly_batch_hours(ts_ms, self.shape as i64),
                    _ => month_end_hours(ts_ms),
                };
                if busy {
                    let cpu = self.peak + self.jitter(ts_ms, 1, 0.03);
                    (cpu, 1.0, self.mem_base + self.mem_swing)
                } else {
                    let cpu = self.base + (0.02 - self.base).max(0.0) * self.noise(ts_ms, 1);
                    (cpu, 0.0, self.mem_base)
                }
            }
        };
        let cpu = cpu.clamp(0.001, 1.0);
        let mem = (mem + self.jitter(ts_ms, 2, 0.01)).clamp(0.02, 0.98);
        // I/O follows the work done, with a floor of background activity (logs, monitoring).
        let io = self.io_scale * (0.02 + cpu * (0.4 + 0.6 * activity));
        let net = self.net_scale * (0.01 + cpu * (0.5 + 0.5 * activity));
        Load {
            cpu,
            mem,
            disk_read_bps: io * (0.4 + 0.4 * self.noise(ts_ms, 3)),
            disk_write_bps: io * (0.3 + 0.3 * self.noise(ts_ms, 4)),
            net_rx_bps: net * (0.6 + 0.4 * self.noise(ts_ms, 5)),
            net_tx_bps: net * (0.4 + 0.4 * self.noise(ts_ms, 6)),
        }
    }
}

/// Share of the network scale kept by the mostly idle profiles.
const QUIET_NET: f64 = 0.002;

/// Beijing day and hour (0–23) of `ts_ms`.
fn beijing_day_hour(ts_ms: u64) -> (Day, i64) {
    let local = ts_ms as i64 + BEIJING_OFFSET_MS;
    (
        Day::of_ms(ts_ms, BEIJING_OFFSET_MS),
        local.rem_euclid(DAY_MS) / 3_600_000,
    )
}

/// Inside the weekly batch run: 01:00–07:00 Beijing time on `weekday` (0 = Sunday).
pub fn weekly_batch_hours(ts_ms: u64, weekday: i64) -> bool {
    let (day, hour) = beijing_day_hour(ts_ms);
    // Day::weekday counts from Monday = 0
    i64::from((day.weekday() + 1) % 7) == weekday && (1..7).contains(&hour)
}

/// Inside the month-end peak: 09:00–18:00 Beijing time on the last two days of a month.
pub fn month_end_hours(ts_ms: u64) -> bool {
    let (day, hour) = beijing_day_hour(ts_ms);
    (9..18).contains(&hour) && (day + 2).ymd().1 != day.ymd().1
}

/// Office activity in `[0, 1]` at `ts_ms`: a daily sine with its minimum at 02:00 and maximum
/// at 14:00 Beijing time (shifted by `shift_h` hours), squared to narrow the peak to business
/// hours, and damped to 35 % on Saturdays and Sundays.
pub fn business_curve(ts_ms: u64, shift_h: f64) -> f64 {
    let local = ts_ms as i64 + BEIJING_OFFSET_MS;
    let hour = local.rem_euclid(DAY_MS) as f64 / 3_600_000.0;
    let sine = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * (hour - 2.0 - shift_h) / 24.0).cos();
    // Saturday and Sunday (Day::weekday 5 and 6)
    let weekend = Day::of_ms(ts_ms, BEIJING_OFFSET_MS).weekday() >= 5;
    let week = if weekend { 0.35 } else { 1.0 };
    sine * sine * week
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2025-03-03 00:00 Beijing time, in Unix ms.
    const MONDAY_BJ: u64 = 1_740_931_200_000;
    const HOUR: u64 = 3_600_000;

    fn workload(p: Profile, seed: u64) -> Workload {
        Workload::new(p, &mut Rng::new(seed))
    }

    #[test]
    fn same_seed_same_samples() {
        for p in Profile::ALL {
            let a = workload(p, 11);
            let b = workload(p, 11);
            let c = workload(p, 12);
            let ts: Vec<u64> = (0..50).map(|i| MONDAY_BJ + i * 10_000).collect();
            let sa: Vec<Load> = ts.iter().map(|&t| a.sample(t)).collect();
            let sb: Vec<Load> = ts.iter().map(|&t| b.sample(t)).collect();
            let sc: Vec<Load> = ts.iter().map(|&t| c.sample(t)).collect();
            assert_eq!(sa, sb, "{p}");
            assert_ne!(sa, sc, "{p}");
        }
    }

    #[test]
    fn business_curve_peaks_in_the_beijing_afternoon_on_weekdays() {
        let at = |h: u64| business_curve(MONDAY_BJ + h * HOUR, 0.0);
        assert!(at(14) > 0.99);
        assert!(at(2) < 0.01);
        assert!(at(10) > 0.5 && at(10) < at(14));
        assert!(at(22) < 0.2);
        // Saturday afternoon is quieter than Monday afternoon.
        let saturday = business_curve(MONDAY_BJ + 5 * 24 * HOUR + 14 * HOUR, 0.0);
        assert!((saturday - 0.35).abs() < 0.01, "{saturday}");
    }

    #[test]
    fn diurnal_is_busier_at_office_hours_than_at_night() {
        for seed in 0..20 {
            let w = workload(Profile::Diurnal, seed);
            let day = w.sample(MONDAY_BJ + 14 * HOUR);
            let night = w.sample(MONDAY_BJ + 3 * HOUR);
            assert!(day.cpu > night.cpu + 0.2, "seed {seed}: {day:?} {night:?}");
            assert!(day.mem > night.mem, "seed {seed}");
            assert!(day.net_rx_bps > night.net_rx_bps, "seed {seed}");
        }
    }

    #[test]
    fn idle_stays_between_half_and_two_percent() {
        let w = workload(Profile::Idle, 3);
        for i in 0..2000 {
            let l = w.sample(MONDAY_BJ + i * 60_000);
            assert!((0.005..=0.02).contains(&l.cpu), "{l:?}");
            assert!(l.net_rx_bps < 0.02 * 25e6, "{l:?}");
        }
    }

    #[test]
    fn steady_stays_near_its_level() {
        let w = workload(Profile::Steady, 4);
        let cpus: Vec<f64> = (0..500)
            .map(|i| w.sample(MONDAY_BJ + i * 3_600_000).cpu)
            .collect();
        let lo = cpus.iter().cloned().fold(1.0, f64::min);
        let hi = cpus.iter().cloned().fold(0.0, f64::max);
        assert!(hi - lo <= 0.04 + 1e-9, "{lo}..{hi}");
        assert!(lo >= 0.23 && hi <= 0.62);
    }

    #[test]
    fn bursty_has_bursts_and_a_low_base() {
        let w = workload(Profile::Bursty, 5);
        let cpus: Vec<f64> = (0..2000)
            .map(|i| w.sample(MONDAY_BJ + i * BURST_SLOT_MS).cpu)
            .collect();
        let bursts = cpus.iter().filter(|&&c| c > 0.5).count();
        let low = cpus.iter().filter(|&&c| c < 0.15).count();
        assert!((50..500).contains(&bursts), "{bursts} bursts");
        assert_eq!(bursts + low, cpus.len());
        // A burst covers its whole slot.
        let slot = (0..2000u64).find(|&i| cpus[i as usize] > 0.5).unwrap();
        let inside = w.sample(MONDAY_BJ + slot * BURST_SLOT_MS + BURST_SLOT_MS / 2);
        assert!(inside.cpu > 0.5);
    }

    #[test]
    fn samples_are_within_physical_bounds() {
        for p in Profile::ALL {
            for seed in 0..10 {
                let w = workload(p, seed);
                for i in 0..300 {
                    let l = w.sample(MONDAY_BJ + i * 7 * 60_000);
                    assert!(l.cpu > 0.0 && l.cpu <= 1.0);
                    assert!(l.mem > 0.0 && l.mem < 1.0);
                    for r in [
                        l.disk_read_bps,
                        l.disk_write_bps,
                        l.net_rx_bps,
                        l.net_tx_bps,
                    ] {
                        assert!(r > 0.0 && r < 1e9, "{p}: {l:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_weekly_batch_runs_on_its_weekday_only() {
        for seed in 0..10 {
            let w = workload(Profile::WeeklyBatch, seed);
            let weekday = w.shape as u64; // MONDAY_BJ is weekday 1
            let busy: Vec<u64> = (0..7)
                .filter(|d| w.sample(MONDAY_BJ + d * 24 * HOUR + 3 * HOUR).cpu > 0.5)
                .collect();
            assert_eq!(busy, [(weekday + 6) % 7], "seed {seed}");
            for d in 0..7 {
                // quiet outside 01:00-07:00, and the network stays a trickle
                let l = w.sample(MONDAY_BJ + d * 24 * HOUR + 12 * HOUR);
                assert!(l.cpu <= 0.02, "seed {seed} day {d}: {l:?}");
                assert!(l.net_rx_bps + l.net_tx_bps < 5_000.0, "{l:?}");
            }
        }
    }

    #[test]
    fn the_month_end_peak_is_on_the_last_two_days_of_the_month() {
        let w = workload(Profile::MonthEnd, 1);
        // 2025-03-03 is MONDAY_BJ; March has 31 days: 30 and 31 are busy, 29 and April 1 not
        let at = |day_of_march: u64, hour: u64| {
            w.sample(MONDAY_BJ + (day_of_march - 3) * 24 * HOUR + hour * HOUR)
                .cpu
        };
        assert!(at(30, 10) > 0.45 && at(31, 17) > 0.45);
        assert!(at(29, 10) < 0.03 && at(32, 10) < 0.03 && at(31, 20) < 0.03);
        // February 2025 has 28 days
        let feb27 = MONDAY_BJ - 4 * 24 * HOUR + 12 * HOUR;
        assert!(w.sample(feb27).cpu > 0.45);
        assert!(w.sample(feb27 - 24 * HOUR).cpu < 0.03);
    }

    #[test]
    fn idle_network_is_a_trickle_of_under_200_mb_a_day() {
        for seed in 0..20 {
            let w = workload(Profile::Idle, seed);
            let per_day: f64 = (0..1440)
                .map(|m| {
                    let l = w.sample(MONDAY_BJ + m * 60_000);
                    (l.net_rx_bps + l.net_tx_bps) * 60.0
                })
                .sum();
            assert!(per_day < 200e6, "seed {seed}: {per_day}");
        }
    }

    #[test]
    fn profile_names_parse_from_lowercase() {
        #[derive(Deserialize)]
        struct W {
            p: Profile,
        }
        let w: W = toml::from_str("p = \"bursty\"").unwrap();
        assert_eq!(w.p, Profile::Bursty);
        for p in Profile::ALL {
            let w: W = toml::from_str(&format!("p = \"{p}\"")).unwrap();
            assert_eq!(w.p, p);
        }
        assert!(toml::from_str::<W>("p = \"Bursty\"").is_err());
    }
}
