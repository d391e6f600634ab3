//! Utilisation history: the cost of the idle and over-provisioned rules, and the size of the
//! history in memory and on disk. Figures printed, not a timed test.
//!
//! `cargo bench -p yunjian-aggregator --bench usage`
//!
//! * **evaluate**: a history of `YJ_BENCH_VMS` VMs (default 100,000) × `YJ_BENCH_DAYS` days
//!   (default 30) of daily summaries (a mix: 20 % idle, 10 % idle but busy one day a week,
//!   30 % oversized, 40 % busy), then `UsageHistory::evaluate` with the default profile (both
//!   rules, no exemptions, then with an exemption for every tenth VM); median of 7 runs.
//! * **record**: `record_sample` for 10,000 VMs × one day of 15-minute reports (day roll-over
//!   and storage hand-off included); ns per report.
//! * **memory**: the history's heap bytes (map, keys, rings) per VM per day.
//! * **disk**: `YJ_BENCH_DISK_VMS` VMs (default 10,000) × the days written to SQLite through the
//!   storage backend, one transaction per day; file growth per VM per day.

use std::time::Instant;
use yunjian_aggregator_core::policy::Profile;
use yunjian_aggregator_core::store::prelude::*;
use yunjian_aggregator_core::store::WriteBatch;
use yunjian_aggregator_core::time::Day;
use yunjian_aggregator_core::usage::{
    DailySummary, ExemptReason, Exemptions, FindingKind, NewExemption, Sample, UsageDayRow,
    UsageHistory,
};
use yunjian_store_sqlite::SqliteStorage;

const RUNS: usize = 7;
/// 2026-03-02, a Monday, as a day number.
const DAY0: Day = Day(20_514);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn uuid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919)
}

fn mix(i: usize, d: usize) -> u32 {
    let x = (i as u64 * 6_364_136_223_846_793_005 + d as u64 * 1_442_695_040_888_963_407) >> 33;
    (x % 1000) as u32
}

/// A plausible day of VM `i`.
fn summary(i: usize, d: usize) -> DailySummary {
    let jitter = mix(i, d) as u16;
    let (p95, p99, mem_used, mem_total, vcpus) = match i % 10 {
        0 | 1 => (100 + jitter / 5, 200 + jitter / 4, 1_024, 8_192, 4),
        2 if d % 7 == 3 => (6_000, 8_500, 3_000, 8_192, 4),
        2 => (150, 220, 1_024, 8_192, 4),
        3..=5 => (1_000 + jitter, 1_400 + jitter, 3_072, 16_384, 8),
        _ => (5_000 + jitter * 2, 7_000 + jitter * 2, 12_288, 16_384, 8),
    };
    DailySummary {
        day: DAY0 + d as i32,
        samples: 8_640,
        covered_s: 86_400,
        mem_used_mean_mib: mem_used * 9 / 10,
        mem_used_max_mib: mem_used,
        mem_total_mib: mem_total,
        net_rx_bytes: 20e6 + jitter as f32 * 1e5,
        net_tx_bytes: 10e6,
        disk_read_bytes: 1e9,
        disk_write_bytes: 2e9,
        cpu_mean: p95 / 2,
        cpu_p95: p95,
        cpu_p99: p99,
        cpu_max: p99 + 300,
        vcpus,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let vms = env_usize("YJ_BENCH_VMS", 100_000);
    let days = env_usize("YJ_BENCH_DAYS", 30);
    let disk_vms = env_usize("YJ_BENCH_DISK_VMS", 10_000).min(vms);
    let profile = Profile::default();
    println!(
        "usage history: {vms} VMs × {days} days, profile {}",
        profile.name
    );

    let names: Vec<String> = (0..vms).map(uuid).collect();
    let t = Instant::now();
    let mut history = UsageHistory::new(&profile.usage);
    history.restore(names.iter().enumerate().flat_map(|(i, vm)| {
        (0..days).map(move |d| UsageDayRow {
            vm: vm.clone(),
            summary: summary(i, d),
        })
    }));
    println!(
        "  restore (start-up load) {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let offset = history.offset_ms();
    let now = (DAY0 + days as i32).start_ms(offset) + 3_600_000;

    let mut exemptions = Exemptions::default();
    let none = Exemptions::default();
    for (i, vm) in names.iter().enumerate().step_by(10) {
        let e = exemptions
            .create(
                NewExemption {
                    vm: vm.clone(),
                    reason: ExemptReason::Batch,
                    note: String::new(),
                    approver: "bench".into(),
                    created_by: "bench".into(),
                    expires_ms: now + (i as u64 % 3) * 86_400_000,
                },
                now - 86_400_000,
                0,
                365,
            )
            .expect("valid exemption");
        exemptions.insert(e);
    }
    for (label, ex) in [("no exemptions", &none), ("10% exempt", &exemptions)] {
        let mut times = Vec::new();
        let mut found = (0, 0);
        for _ in 0..RUNS {
            let t = Instant::now();
            let f = history.evaluate(now, profile.usage_rules(), ex);
            times.push(t.elapsed().as_secs_f64());
            let idle = f.iter().filter(|f| f.kind == FindingKind::Idle).count();
            found = (idle, f.len() - idle);
        }
        println!(
            "  evaluate idle + over-provisioned, {label}: median {:.1} ms ({:.2} µs per VM), {} idle, {} over-provisioned",
            median(times.clone()) * 1e3,
            median(times) * 1e6 / vms as f64,
            found.0,
            found.1
        );
    }

    let heap = history.heap_bytes();
    println!(
        "  memory: {:.1} MiB, {:.1} bytes per VM per day (DailySummary is {} bytes)",
        heap as f64 / (1 << 20) as f64,
        heap as f64 / (vms * days) as f64,
        std::mem::size_of::<DailySummary>()
    );
    drop(history);

    // record: one day of 15-minute reports for 10,000 VMs, starting the day after a full one
    let rec_vms = 10_000.min(vms);
    let mut h = UsageHistory::new(&profile.usage);
    let t0 = DAY0.start_ms(offset);
    let mut times = Vec::new();
    for run in 0..RUNS as u64 {
        let start = t0 + run * 86_400_000;
        let t = Instant::now();
        for q in 0..96u64 {
            for (i, vm) in names.iter().take(rec_vms).enumerate() {
                let s = Sample {
                    cpu: (mix(i, q as usize) * 3) as u16,
                    vcpus: 4,
                    mem_used_kib: 1 << 20,
                    mem_total_kib: 8 << 20,
                    net_rx_bps: 2_000,
                    net_tx_bps: 1_000,
                    disk_read_bps: 10_000,
                    disk_write_bps: 40_000,
                };
                h.record_sample(vm, start + q * 900_000, &s);
            }
            std::hint::black_box(h.take_dirty());
        }
        times.push(t.elapsed().as_secs_f64() / (96 * rec_vms) as f64);
    }
    println!(
        "  record: median {:.0} ns per report ({rec_vms} VMs × 96 reports a day)",
        median(times) * 1e9
    );

    // disk
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let mut store = SqliteStorage::open(&path).expect("open sqlite");
    store.migrate().expect("migrate");
    let size = |p: &std::path::Path| {
        ["", "-wal"]
            .iter()
            .map(|s| {
                std::fs::metadata(format!("{}{s}", p.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = size(&path);
    let t = Instant::now();
    for d in 0..days {
        let rows = names
            .iter()
            .take(disk_vms)
            .enumerate()
            .map(|(i, vm)| UsageDayRow {
                vm: vm.clone(),
                summary: summary(i, d),
            })
            .collect();
        store
            .write(&WriteBatch {
                usage_days: rows,
                ..WriteBatch::default()
            })
            .expect("write");
    }
    let write_s = t.elapsed().as_secs_f64();
    drop(store); // checkpoints the WAL into the file
    let after = size(&path);
    println!(
        "  disk: {disk_vms} VMs × {days} days in {:.1} s ({:.1} µs per row), {:.1} MiB, {:.1} bytes per VM per day",
        write_s,
        write_s * 1e6 / (disk_vms * days) as f64,
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / (disk_vms * days) as f64
    );
}
