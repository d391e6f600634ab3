//! Per-VM utilisation history: one compact [`DailySummary`] per VM and day, by event time.
//!
//! Samples (one per guest report) go into a day accumulator ([`DayAcc`]: sums, maxima and a
//! fixed 67-bucket CPU histogram, 268 bytes) keyed by the day the report's `ts_ms` falls on in
//! the deployment's time zone. An accumulator is closed into a [`DailySummary`] (52 bytes) once
//! the VM reports `close_after` past the end of its day, or the whole history's event time
//! does (a VM that stopped reporting); closed days go to the dirty list that storage persists.
//!
//! Late reports (an agent replaying its on-disk buffer): a day still open is exact; a day
//! already closed gets a new accumulator that is merged into the summary when the replay
//! moves on to another day. That merge is exact for every figure except the CPU p95 and p99,
//! which become an upper bound (the closed day's distribution is only known through its p95,
//! p99 and max): a merged day never looks quieter than it was.
//!
//! Retention: days older than `retention_days` before a VM's latest report are dropped; the
//! store drops them too (`UsageStore::expire_usage`, called by the aggregator at start-up).

use super::UsagePolicy;
use crate::time::Day;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use yunjian_protocol::Report;

/// Buckets of the CPU histogram: 0.25 % wide up to 5 %, 1 % up to 20 %, 2.5 % up to 100 %.
pub const CPU_BUCKETS: usize = 67;
/// Weight of a VM's first sample, before a gap between two reports is known.
const FIRST_STEP_MS: u64 = 10_000;

/// The histogram bucket of a CPU value in hundredths of a percent (0..=10000).
pub fn cpu_bucket(centi: u16) -> usize {
    let v = centi.min(10_000) as usize;
    if v <= 500 {
        v.saturating_sub(1) / 25
    } else if v <= 2_000 {
        20 + (v - 501) / 100
    } else {
        35 + (v - 2_001) / 250
    }
}

/// The upper edge (centi-percent) of bucket `i`.
pub fn cpu_bucket_upper(i: usize) -> u16 {
    (if i < 20 {
        (i + 1) * 25
    } else if i < 35 {
        500 + (i - 19) * 100
    } else {
        2_000 + (i - 34) * 250
    }) as u16
}

/// What one report contributes: extracted before the report moves into the fleet state.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Busy share of all CPUs, hundredths of a percent.
    pub cpu: u16,
    pub vcpus: u16,
    pub mem_used_kib: u64,
    pub mem_total_kib: u64,
    /// Summed over NICs / filesystems, bytes per second.
    pub net_rx_bps: u64,
    pub net_tx_bps: u64,
    pub disk_read_bps: u64,
    pub disk_write_bps: u64,
}

impl Sample {
    pub fn from_report(r: &Report) -> Self {
        Sample {
            cpu: r.cpu_busy.min(10_000),
            vcpus: r.per_core.len().min(u16::MAX as usize) as u16,
            mem_used_kib: r.mem.used_kib,
            mem_total_kib: r.mem.total_kib,
            net_rx_bps: r.nets.iter().map(|n| n.rx_bps).sum(),
            net_tx_bps: r.nets.iter().map(|n| n.tx_bps).sum(),
            disk_read_bps: r.disks.iter().map(|d| d.read_bps).sum(),
            disk_write_bps: r.disks.iter().map(|d| d.write_bps).sum(),
        }
    }
}

/// One VM's day, compact (52 bytes). CPU figures are hundredths of a percent of all the VM's
/// vCPUs; p95 and p99 are the upper edge of their histogram bucket (never below the true value,
/// at most 0.25 points above it under 5 %, 1 point under 20 %, 2.5 points above).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct DailySummary {
    #[serde(with = "crate::time::day_number")]
    pub day: Day,
    /// Reports the day rests on.
    pub samples: u32,
    /// Seconds of the day the samples cover (each sample stands for the gap since the previous
    /// one, at most `max_sample_gap`).
    pub covered_s: u32,
    /// Memory really used (total − available), mean and peak, MiB.
    pub mem_used_mean_mib: u32,
    pub mem_used_max_mib: u32,
    /// Memory the VM has (latest sample of the day), MiB.
    pub mem_total_mib: u32,
    /// Bytes over the day (rate × covered time), summed over NICs and filesystems.
    pub net_rx_bytes: f32,
    pub net_tx_bytes: f32,
    pub disk_read_bytes: f32,
    pub disk_write_bytes: f32,
    pub cpu_mean: u16,
    pub cpu_p95: u16,
    pub cpu_p99: u16,
    pub cpu_max: u16,
    /// vCPUs the VM has (latest sample of the day).
    pub vcpus: u16,
}

/// Bytes of [`DailySummary::encode`].
pub const ENCODED_LEN: usize = 49;
const ENCODING_VERSION: u8 = 1;

impl DailySummary {
    /// Share of the day covered by samples, 0..=1.
    pub fn coverage(&self) -> f64 {
        (f64::from(self.covered_s) / 86_400.0).min(1.0)
    }

    pub fn net_bytes(&self) -> f64 {
        f64::from(self.net_rx_bytes) + f64::from(self.net_tx_bytes)
    }

    /// Fixed little-endian layout with a version byte (the stored blob; `day` is the row key).
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut b = [0u8; ENCODED_LEN];
        b[0] = ENCODING_VERSION;
        let mut at = 1;
        let mut put = |bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.samples.to_le_bytes());
        put(&self.covered_s.to_le_bytes());
        put(&self.mem_used_mean_mib.to_le_bytes());
        put(&self.mem_used_max_mib.to_le_bytes());
        put(&self.mem_total_mib.to_le_bytes());
        put(&self.net_rx_bytes.to_le_bytes());
        put(&self.net_tx_bytes.to_le_bytes());
        put(&self.disk_read_bytes.to_le_bytes());
        put(&self.disk_write_bytes.to_le_bytes());
        put(&self.cpu_mean.to_le_bytes());
        put(&self.cpu_p95.to_le_bytes());
        put(&self.cpu_p99.to_le_bytes());
        put(&self.cpu_max.to_le_bytes());
        put(&self.vcpus.to_le_bytes());
        b
    }

    /// The inverse of [`encode`](Self::encode); `None` for a blob of another length or version.
    pub fn decode(day: Day, b: &[u8]) -> Option<Self> {
        if b.len() != ENCODED_LEN || b[0] != ENCODING_VERSION {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let f32_at = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(DailySummary {
            day,
            samples: u32_at(1),
            covered_s: u32_at(5),
            mem_used_mean_mib: u32_at(9),
            mem_used_max_mib: u32_at(13),
            mem_total_mib: u32_at(17),
            net_rx_bytes: f32_at(21),
            net_tx_bytes: f32_at(25),
            disk_read_bytes: f32_at(29),
            disk_write_bytes: f32_at(33),
            cpu_mean: u16_at(37),
            cpu_p95: u16_at(39),
            cpu_p99: u16_at(41),
            cpu_max: u16_at(43),
            vcpus: u16_at(45),
        })
    }
}

/// A day being accumulated (exact).
#[derive(Debug, Clone, PartialEq)]
pub struct DayAcc {
    pub day: Day,
    samples: u32,
    covered_ms: u64,
    cpu_sum: u64,
    cpu_max: u16,
    hist: [u32; CPU_BUCKETS],
    mem_used_sum_kib: u64,
    mem_used_max_kib: u64,
    mem_total_kib: u64,
    vcpus: u16,
    /// Byte-milliseconds (rate × ms), divided by 1000 at the end.
    net_rx: u128,
    net_tx: u128,
    disk_read: u128,
    disk_write: u128,
    /// Started for a day that was already closed: merged into its summary when closed.
    late: bool,
}

impl DayAcc {
    fn new(day: Day, late: bool) -> Self {
        DayAcc {
            day,
            samples: 0,
            covered_ms: 0,
            cpu_sum: 0,
            cpu_max: 0,
            hist: [0; CPU_BUCKETS],
            mem_used_sum_kib: 0,
            mem_used_max_kib: 0,
            mem_total_kib: 0,
            vcpus: 0,
            net_rx: 0,
            net_tx: 0,
            disk_read: 0,
            disk_write: 0,
            late,
        }
    }

    fn add(&mut self, s: &Sample, weight_ms: u64) {
        self.samples = self.samples.saturating_add(1);
        self.covered_ms += weight_ms;
        self.cpu_sum += u64::from(s.cpu);
        self.cpu_max = self.cpu_max.max(s.cpu);
        self.hist[cpu_bucket(s.cpu)] += 1;
        self.mem_used_sum_kib += s.mem_used_kib;
        self.mem_used_max_kib = self.mem_used_max_kib.max(s.mem_used_kib);
        self.mem_total_kib = s.mem_total_kib;
        self.vcpus = s.vcpus;
        let w = u128::from(weight_ms);
        self.net_rx += u128::from(s.net_rx_bps) * w;
        self.net_tx += u128::from(s.net_tx_bps) * w;
        self.disk_read += u128::from(s.disk_read_bps) * w;
        self.disk_write += u128::from(s.disk_write_bps) * w;
    }

    /// The `q` quantile: the upper edge of the bucket holding rank ⌈q·n⌉, capped at the max.
    pub fn quantile(&self, q: f64) -> u16 {
        let n = u64::from(self.samples);
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return cpu_bucket_upper(i).min(self.cpu_max);
            }
        }
        self.cpu_max
    }

    /// The day as a summary.
    pub fn summary(&self) -> DailySummary {
        let n = u64::from(self.samples.max(1));
        let mib = |kib: u64| (kib / 1024).min(u64::from(u32::MAX)) as u32;
        DailySummary {
            day: self.day,
            samples: self.samples,
            covered_s: (self.covered_ms / 1000).min(86_400) as u32,
            mem_used_mean_mib: mib(self.mem_used_sum_kib / n),
            mem_used_max_mib: mib(self.mem_used_max_kib),
            mem_total_mib: mib(self.mem_total_kib),
            net_rx_bytes: (self.net_rx / 1000) as f32,
            net_tx_bytes: (self.net_tx / 1000) as f32,
            disk_read_bytes: (self.disk_read / 1000) as f32,
            disk_write_bytes: (self.disk_write / 1000) as f32,
            cpu_mean: (self.cpu_sum / n) as u16,
            cpu_p95: self.quantile(0.95),
            cpu_p99: self.quantile(0.99),
            cpu_max: self.cpu_max,
            vcpus: self.vcpus,
        }
    }

    /// Fold this (late) accumulator into the closed summary `old` of the same day. Exact for
    /// counts, sums, maxima and bytes; p95 and p99 become upper bounds (see the module docs).
    fn merge_into(&self, old: &DailySummary) -> DailySummary {
        let new = self.summary();
        let (n1, n2) = (u64::from(old.samples), u64::from(self.samples));
        if n1 == 0 {
            return new;
        }
        let n = n1 + n2;
        let wmean = |a: u64, b: u64| ((a * n1 + b * n2) / n.max(1)) as u32;
        let bound = |q: f64| {
            // Lower bounds of how many of the old day's samples lie at or below v.
            let old_steps = [
                (old.cpu_p95, (0.95 * n1 as f64).ceil() as u64),
                (old.cpu_p99, (0.99 * n1 as f64).ceil() as u64),
                (old.cpu_max, n1),
            ];
            let old_le = |v: u16| {
                old_steps
                    .iter()
                    .filter(|(edge, _)| *edge <= v)
                    .map(|(_, c)| *c)
                    .max()
                    .unwrap_or(0)
            };
            let new_le = |v: u16| -> u64 {
                self.hist
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| cpu_bucket_upper(*i).min(self.cpu_max) <= v)
                    .map(|(_, &c)| u64::from(c))
                    .sum()
            };
            let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
            let mut candidates: Vec<u16> = (0..CPU_BUCKETS)
                .filter(|&i| self.hist[i] > 0)
                .map(|i| cpu_bucket_upper(i).min(self.cpu_max))
                .chain(old_steps.iter().map(|s| s.0))
                .collect();
            candidates.sort_unstable();
            candidates
                .into_iter()
                .find(|&v| old_le(v) + new_le(v) >= rank)
                .unwrap_or(old.cpu_max.max(self.cpu_max))
        };
        DailySummary {
            day: old.day,
            samples: old.samples.saturating_add(self.samples),
            covered_s: old.covered_s.saturating_add(new.covered_s).min(86_400),
            mem_used_mean_mib: wmean(
                u64::from(old.mem_used_mean_mib),
                u64::from(new.mem_used_mean_mib),
            ),
            mem_used_max_mib: old.mem_used_max_mib.max(new.mem_used_max_mib),
            mem_total_mib: new.mem_total_mib,
            net_rx_bytes: old.net_rx_bytes + new.net_rx_bytes,
            net_tx_bytes: old.net_tx_bytes + new.net_tx_bytes,
            disk_read_bytes: old.disk_read_bytes + new.disk_read_bytes,
            disk_write_bytes: old.disk_write_bytes + new.disk_write_bytes,
            cpu_mean: wmean(u64::from(old.cpu_mean), u64::from(new.cpu_mean)) as u16,
            cpu_p95: bound(0.95),
            cpu_p99: bound(0.99),
            cpu_max: old.cpu_max.max(new.cpu_max),
            vcpus: new.vcpus,
        }
    }
}

/// One VM's history: closed days in a ring indexed by day (missing days are empty entries),
/// at most two accumulators open.
#[derive(Debug, Clone, Default)]
pub struct VmHistory {
    /// Closed days, ascending and contiguous from `days[0].day`.
    days: VecDeque<DailySummary>,
    open: Vec<DayAcc>,
    /// First day with data ever seen (kept when old days are dropped): the VM's age.
    since_day: Option<Day>,
    last_ts: u64,
    /// The latest gap between two reports in order (not counting outages).
    step_ms: u64,
    /// Event time of the previous replayed (late) report.
    late_ts: u64,
}

impl VmHistory {
    /// The first day this VM had data.
    pub fn since_day(&self) -> Option<Day> {
        self.since_day
    }

    /// Event time of its latest report since start-up (0 if none yet).
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// The latest day with data, stored or being accumulated.
    pub fn latest_day(&self) -> Option<Day> {
        let stored = self
            .days
            .iter()
            .rev()
            .find(|d| d.samples > 0)
            .map(|d| d.day);
        self.open.iter().map(|a| a.day).chain(stored).max()
    }

    /// The closed summary of `day`, if any (empty days count as none).
    pub fn closed(&self, day: Day) -> Option<&DailySummary> {
        let first = self.days.front()?.day;
        let i = usize::try_from(day - first).ok()?;
        self.days.get(i).filter(|d| d.samples > 0)
    }

    /// Every day in `from..=to` that has data, closed or still open, in order. Days open and
    /// closed at once (a late replay) show the merged figures.
    pub fn visit(&self, from: Day, to: Day, mut f: impl FnMut(&DailySummary)) {
        if self.open.is_empty() {
            if let Some(first) = self.days.front().map(|d| d.day) {
                let lo = (from - first).max(0) as usize;
                let hi = (to - first + 1).max(0) as usize;
                for d in self
                    .days
                    .range(lo.min(self.days.len())..hi.min(self.days.len()))
                {
                    if d.samples > 0 {
                        f(d);
                    }
                }
            }
            return;
        }
        let known = self
            .days
            .front()
            .map(|d| (d.day, d.day + self.days.len() as i32 - 1));
        let (lo, hi) = self
            .open
            .iter()
            .fold(known.unwrap_or((Day::MAX, Day::MIN)), |(lo, hi), a| {
                (lo.min(a.day), hi.max(a.day))
            });
        for day in from.max(lo).through(to.min(hi)) {
            if let Some(s) = self.view(day) {
                f(&s);
            }
        }
    }

    fn view(&self, day: Day) -> Option<DailySummary> {
        let acc = self.open.iter().find(|a| a.day == day);
        match (self.closed(day), acc) {
            (Some(c), Some(a)) => Some(a.merge_into(c)),
            (Some(c), None) => Some(*c),
            (None, Some(a)) => Some(a.summary()),
            (None, None) => None,
        }
    }

    fn slot_mut(&mut self, day: Day, retention_days: u32) -> &mut DailySummary {
        let empty = |day| DailySummary {
            day,
            ..DailySummary::default()
        };
        match self.days.front().map(|d| d.day) {
            None => self.days.push_back(empty(day)),
            Some(first) if day < first => {
                for d in day.through(first - 1).rev() {
                    self.days.push_front(empty(d));
                }
            }
            Some(first) => {
                let last = first + self.days.len() as i32 - 1;
                for d in (last + 1).through(day) {
                    if self.days.len() == self.days.capacity() {
                        // grow in small steps: a VM's ring never holds more than the retention
                        let room = (retention_days as usize).saturating_sub(self.days.len());
                        self.days.reserve_exact(room.clamp(1, 8));
                    }
                    self.days.push_back(empty(d));
                }
            }
        }
        let first = self.days[0].day;
        &mut self.days[(day - first) as usize]
    }

    /// Insert a stored summary (start-up).
    fn restore(&mut self, s: DailySummary, retention_days: u32) {
        self.since_day = Some(self.since_day.map_or(s.day, |d| d.min(s.day)));
        *self.slot_mut(s.day, retention_days) = s;
    }

    fn close(&mut self, i: usize, retention_days: u32) -> Day {
        let acc = self.open.swap_remove(i);
        let merged = match self.closed(acc.day) {
            Some(old) => acc.merge_into(old),
            None => acc.summary(),
        };
        *self.slot_mut(acc.day, retention_days) = merged;
        acc.day
    }

    fn prune(&mut self, keep_from: Day) {
        while self.days.front().is_some_and(|d| d.day < keep_from) {
            self.days.pop_front();
        }
        if self.days.capacity() > self.days.len() + 16 {
            self.days.shrink_to_fit();
        }
    }

    /// Bytes this VM's history holds in memory (for the figures in the benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.days.capacity() * std::mem::size_of::<DailySummary>()
            + self.open.capacity() * std::mem::size_of::<DayAcc>()
    }
}

/// A closed day to persist.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageDayRow {
    pub vm: String,
    pub summary: DailySummary,
}

/// Every VM's history.
#[derive(Debug, Clone)]
pub struct UsageHistory {
    vms: HashMap<String, VmHistory>,
    offset_ms: i64,
    retention_days: u32,
    close_after_ms: u64,
    max_gap_ms: u64,
    /// Latest event time seen from any VM.
    now_ms: u64,
    /// The day (of `now_ms − close_after`) up to which every VM's open days were closed.
    rolled_day: Day,
    /// Closed or re-merged days not yet handed to storage.
    dirty: Vec<(String, Day)>,
    /// Samples dropped for falling before the retention.
    too_old: u64,
}

impl UsageHistory {
    pub fn new(policy: &UsagePolicy) -> Self {
        UsageHistory {
            vms: HashMap::new(),
            offset_ms: i64::from(policy.utc_offset_minutes) * 60_000,
            retention_days: policy.retention_days,
            close_after_ms: policy.close_after.as_millis() as u64,
            max_gap_ms: (policy.max_sample_gap.as_millis() as u64).max(1),
            now_ms: 0,
            rolled_day: Day::MIN,
            dirty: Vec::new(),
            too_old: 0,
        }
    }

    /// Offset of the deployment's time zone east of UTC, ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// The latest event time seen (the history's own clock; use it as `now` in the simulator).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn day_of(&self, ts_ms: u64) -> Day {
        Day::of_ms(ts_ms, self.offset_ms)
    }

    pub fn len(&self) -> usize {
        self.vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vms.is_empty()
    }

    pub fn get(&self, vm: &str) -> Option<&VmHistory> {
        self.vms.get(vm)
    }

    pub fn vms(&self) -> impl Iterator<Item = (&str, &VmHistory)> {
        self.vms.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Samples dropped because their day was older than the retention.
    pub fn dropped_too_old(&self) -> u64 {
        self.too_old
    }

    /// Record one guest report of VM `vm` (lower-case SMBIOS UUID, or node id) at event time
    /// `ts_ms`.
    pub fn record(&mut self, vm: &str, ts_ms: u64, report: &Report) {
        self.record_sample(vm, ts_ms, &Sample::from_report(report));
    }

    /// [`record`](Self::record) with the figures already extracted.
    pub fn record_sample(&mut self, vm: &str, ts_ms: u64, s: &Sample) {
        let day = Day::of_ms(ts_ms, self.offset_ms);
        let retention = self.retention_days;
        let (offset, close_after, max_gap) = (self.offset_ms, self.close_after_ms, self.max_gap_ms);
        if !self.vms.contains_key(vm) {
            self.vms.insert(vm.to_string(), VmHistory::default());
        }
        let Some(h) = self.vms.get_mut(vm) else {
            return;
        };
        let newest_day = Day::of_ms(h.last_ts.max(ts_ms), offset);
        if day <= newest_day - retention as i32 {
            self.too_old += 1;
            return;
        }
        // Each sample stands for the gap since the previous one (capped); a late one, or the
        // first, for the VM's usual gap.
        let weight = if h.last_ts == 0 {
            FIRST_STEP_MS.min(max_gap)
        } else if ts_ms > h.last_ts {
            let gap = ts_ms - h.last_ts;
            if gap <= max_gap {
                h.step_ms = gap;
            }
            gap.min(max_gap)
        } else {
            // a replay: the gap since the previous replayed sample, else the usual gap
            let gap = ts_ms.saturating_sub(h.late_ts);
            h.late_ts = ts_ms;
            if gap > 0 && gap <= max_gap {
                gap
            } else if h.step_ms > 0 {
                h.step_ms
            } else {
                FIRST_STEP_MS.min(max_gap)
            }
        };
        h.last_ts = h.last_ts.max(ts_ms);
        h.since_day = Some(h.since_day.map_or(day, |d| d.min(day)));
        // A replay that moved on closes its late day.
        let mut closed = Vec::new();
        let mut i = 0;
        while i < h.open.len() {
            let a = &h.open[i];
            let stale = (a.day + 1).start_ms(offset) + close_after <= h.last_ts;
            if a.day != day && (a.late || stale) {
                closed.push(h.close(i, retention));
            } else {
                i += 1;
            }
        }
        match h.open.iter_mut().find(|a| a.day == day) {
            Some(acc) => acc.add(s, weight),
            None => {
                let late = h.closed(day).is_some();
                let mut acc = DayAcc::new(day, late);
                acc.add(s, weight);
                h.open.push(acc);
            }
        }
        let keep_from = Day::of_ms(h.last_ts, offset) - retention as i32 + 1;
        h.prune(keep_from);
        for d in closed {
            self.dirty.push((vm.to_string(), d));
        }
        if ts_ms > self.now_ms {
            self.now_ms = ts_ms;
            self.roll();
        }
    }

    /// Close every open day that ended `close_after` before the history's clock (VMs that
    /// stopped reporting). Runs once per day of event time.
    fn roll(&mut self) {
        let cutoff = Day::of_ms(
            self.now_ms.saturating_sub(self.close_after_ms),
            self.offset_ms,
        );
        if cutoff <= self.rolled_day {
            return;
        }
        self.rolled_day = cutoff;
        let retention = self.retention_days;
        for (vm, h) in self.vms.iter_mut() {
            let mut i = 0;
            while i < h.open.len() {
                if h.open[i].day < cutoff {
                    let d = h.close(i, retention);
                    self.dirty.push((vm.clone(), d));
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Close every open day, finished or not (clean shutdown): nothing accumulated is lost; a
    /// day closed early and continued after the restart is merged as a late day.
    pub fn close_all(&mut self) {
        let retention = self.retention_days;
        for (vm, h) in self.vms.iter_mut() {
            while !h.open.is_empty() {
                let d = h.close(0, retention);
                self.dirty.push((vm.clone(), d));
            }
        }
    }

    /// The closed days changed since the last call, for storage.
    pub fn take_dirty(&mut self) -> Vec<UsageDayRow> {
        if self.dirty.is_empty() {
            return Vec::new();
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        dirty
            .into_iter()
            .filter_map(|(vm, day)| {
                let summary = *self.vms.get(&vm)?.closed(day)?;
                Some(UsageDayRow { vm, summary })
            })
            .collect()
    }

    /// Put back stored days at start-up (those older than the retention are skipped).
    pub fn restore(&mut self, rows: impl IntoIterator<Item = UsageDayRow>) {
        let retention = self.retention_days;
        for r in rows {
            // the history's clock resumes at the end of the latest stored day
            let end = (r.summary.day + 1)
                .start_ms(self.offset_ms)
                .saturating_sub(1);
            self.now_ms = self.now_ms.max(end);
            self.vms
                .entry(r.vm)
                .or_default()
                .restore(r.summary, retention);
        }
        for h in self.vms.values_mut() {
            if let Some(last) = h.days.back().map(|d| d.day) {
                h.prune(last - retention as i32 + 1);
            }
        }
    }

    /// VM `vm`'s days in `from..=to` that have data (closed, or still being accumulated).
    pub fn days(&self, vm: &str, from: Day, to: Day) -> Vec<DailySummary> {
        let mut out = Vec::new();
        if let Some(h) = self.vms.get(vm) {
            h.visit(from, to, |d| out.push(*d));
        }
        out
    }

    /// Bytes held in memory: the map, its keys and every VM's days.
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(String, VmHistory)>() + 8;
        self.vms
            .iter()
            .map(|(k, h)| entry + k.capacity() + h.heap_bytes())
            .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2026-03-02 00:00 Beijing time (a Monday).
    const T0: u64 = 1_772_380_800_000;
    const HOUR: u64 = 3_600_000;
    const MIN: u64 = 60_000;

    fn policy() -> UsagePolicy {
        UsagePolicy {
            retention_days: 90,
            utc_offset_minutes: 480,
            close_after: Duration::from_secs(3600),
            max_sample_gap: Duration::from_secs(900),
        }
    }

    fn sample(cpu_pct: f64) -> Sample {
        Sample {
            cpu: (cpu_pct * 100.0).round() as u16,
            vcpus: 4,
            mem_used_kib: 2 << 20,
            mem_total_kib: 8 << 20,
            net_rx_bps: 1_000,
            net_tx_bps: 500,
            disk_read_bps: 0,
            disk_write_bps: 0,
        }
    }

    #[test]
    fn buckets_cover_the_range_and_their_edges() {
        assert_eq!(cpu_bucket(0), 0);
        assert_eq!(cpu_bucket(25), 0);
        assert_eq!(cpu_bucket(26), 1);
        assert_eq!(cpu_bucket(500), 19);
        assert_eq!(cpu_bucket(501), 20);
        assert_eq!(cpu_bucket(2_000), 34);
        assert_eq!(cpu_bucket(10_000), CPU_BUCKETS - 1);
        for v in (0..=10_000u16).step_by(7) {
            let i = cpu_bucket(v);
            assert!(cpu_bucket_upper(i) >= v, "{v}");
            assert!(i == 0 || cpu_bucket_upper(i - 1) < v, "{v}");
        }
        assert_eq!(cpu_bucket_upper(CPU_BUCKETS - 1), 10_000);
    }

    #[test]
    fn histogram_p95_is_at_or_just_above_the_true_value() {
        // 0.00 %, 0.05 %, ... 49.95 %: the true p95 is the 950th value, 47.45 %
        let mut acc = DayAcc::new(Day(0), false);
        for i in 0..1000u64 {
            acc.add(
                &Sample {
                    cpu: (i * 5) as u16,
                    ..sample(0.0)
                },
                10_000,
            );
        }
        let p95 = acc.quantile(0.95);
        assert!((4745..=4745 + 250).contains(&p95), "{p95}");
        // low values are resolved to 0.25 points: 95 % of samples at 1 %, 5 % at 2.6 %
        let mut acc = DayAcc::new(Day(0), false);
        for i in 0..100 {
            acc.add(&sample(if i < 95 { 1.0 } else { 2.6 }), 10_000);
        }
        assert_eq!(acc.quantile(0.95), 100);
        assert_eq!(acc.quantile(0.99), 260, "capped at the max");
        assert_eq!(acc.summary().cpu_max, 260);
        assert_eq!(acc.summary().cpu_mean, (95 * 100 + 5 * 260) / 100);
    }

    #[test]
    fn days_roll_over_at_midnight_beijing_time_by_event_time() {
        let mut h = UsageHistory::new(&policy());
        // Sunday 23:00 to Monday 03:00 Beijing, every 10 minutes
        let start = T0 - HOUR;
        for i in 0..=24 {
            h.record_sample("vm", start + i * 10 * MIN, &sample(2.0));
        }
        let sunday = h.day_of(T0 - 1);
        assert_eq!(h.day_of(T0), sunday + 1);
        assert_eq!((sunday + 1).to_string(), "2026-03-02");
        // an hour after midnight (close_after) Sunday closed: 6 samples, 23:00..23:50
        let rows = h.take_dirty();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].summary.day, sunday);
        assert_eq!(rows[0].summary.samples, 6);
        // the first sample weighs 10 s, the next five 10 minutes each
        assert_eq!(rows[0].summary.covered_s, 10 + 5 * 600);
        // bytes are rate × covered time
        assert_eq!(rows[0].summary.net_rx_bytes, 1_000.0 * 3_010.0);
        // Monday is still open but visible
        let days = h.days("vm", sunday, sunday + 1);
        assert_eq!(days.len(), 2);
        assert_eq!(days[1].samples, 19);
        assert!(h.take_dirty().is_empty());
        h.close_all();
        assert_eq!(h.take_dirty()[0].summary.day, sunday + 1);
    }

    #[test]
    fn a_late_replay_is_merged_into_its_closed_day() {
        let mut h = UsageHistory::new(&policy());
        let day = h.day_of(T0);
        // Monday 00:00-11:50 at 1 % every 10 min; Tuesday 02:00 closes Monday
        for i in 0..72 {
            h.record_sample("vm", T0 + i * 10 * MIN, &sample(1.0));
        }
        h.record_sample("vm", T0 + 26 * HOUR, &sample(1.0));
        let closed = h.take_dirty();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].summary.samples, 72);
        assert_eq!(closed[0].summary.cpu_p95, 100);
        // the buffered afternoon arrives: 72 samples at 60 %
        for i in 72..144 {
            h.record_sample("vm", T0 + i * 10 * MIN, &sample(60.0));
        }
        // still accumulating (exactly) until the replay moves on
        let view = h.days("vm", day, day)[0];
        assert_eq!(view.samples, 144);
        assert!(view.cpu_p95 >= 6_000, "{view:?}");
        h.record_sample("vm", T0 + 26 * HOUR + 10 * MIN, &sample(1.0));
        let merged = h.take_dirty();
        assert_eq!(merged.len(), 1, "{merged:?}");
        let m = merged[0].summary;
        assert_eq!((m.day, m.samples), (day, 144));
        assert_eq!(m.cpu_max, 6_000);
        assert_eq!(m.cpu_mean, (100 + 6_000) / 2);
        // half the day at 60 %: the merged p95 is at least the true 60 %
        assert!(m.cpu_p95 >= 6_000 && m.cpu_p99 >= 6_000, "{m:?}");
        assert_eq!(m.covered_s, 86_400 - 600 + 10);
        assert_eq!(h.days("vm", day, day), vec![m]);
    }

    #[test]
    fn days_older_than_the_retention_are_dropped() {
        let mut p = policy();
        p.retention_days = 5;
        let mut h = UsageHistory::new(&p);
        for d in 0..12u64 {
            for i in 0..4 {
                h.record_sample("vm", T0 + d * 24 * HOUR + i * 6 * HOUR, &sample(1.0));
            }
        }
        let today = h.day_of(T0 + 11 * 24 * HOUR);
        let days = h.days("vm", today - 20, today);
        assert_eq!(days.first().unwrap().day, today - 4);
        assert_eq!(days.len(), 5);
        // the VM's age survives the pruning
        assert_eq!(h.get("vm").unwrap().since_day(), Some(h.day_of(T0)));
        h.record_sample("vm", T0, &sample(1.0));
        assert_eq!(h.dropped_too_old(), 1);
    }

    #[test]
    fn summaries_encode_to_a_fixed_blob_and_back() {
        let mut acc = DayAcc::new(Day(20_500), false);
        for i in 0..50 {
            acc.add(&sample(i as f64), 60_000);
        }
        let s = acc.summary();
        let blob = s.encode();
        assert_eq!(blob.len(), ENCODED_LEN);
        assert_eq!(DailySummary::decode(Day(20_500), &blob), Some(s));
        assert_eq!(DailySummary::decode(Day(20_500), &blob[1..]), None);
        let mut other = blob;
        other[0] = 9;
        assert_eq!(DailySummary::decode(Day(20_500), &other), None);
        assert_eq!(std::mem::size_of::<DailySummary>(), 52);
    }

    #[test]
    fn stored_days_come_back_after_a_restart() {
        let mut h = UsageHistory::new(&policy());
        for i in 0..(48 * 6) {
            h.record_sample("vm", T0 + i * 10 * MIN, &sample(3.0));
        }
        h.close_all();
        let rows = h.take_dirty();
        assert_eq!(rows.len(), 2);
        let mut again = UsageHistory::new(&policy());
        again.restore(rows.clone());
        let day = again.day_of(T0);
        assert_eq!(again.get("vm").unwrap().latest_day(), Some(day + 1));
        assert_eq!(again.day_of(again.now_ms()), day + 1);
        assert_eq!(
            again.days("vm", day, day + 1),
            rows.iter().map(|r| r.summary).collect::<Vec<_>>()
        );
        assert_eq!(again.get("vm").unwrap().since_day(), Some(day));
    }

    #[test]
    fn dates_convert_both_ways() {
        assert_eq!(Day(0).to_string(), "1970-01-01");
        assert_eq!(
            Day::parse("2026-03-02"),
            Some(Day::of_ms(T0, 8 * 3_600_000))
        );
        assert_eq!(Day::parse("2026-02-31"), None);
        assert_eq!(Day::parse("2026-13-01"), None);
        assert_eq!(Day::parse("yesterday"), None);
    }
}
