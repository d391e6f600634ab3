//! The collectors on this real machine agree with the kernel's own numbers, and can be pointed
//! at a fake `/proc` tree.

use yunjian_agent::collect::{Paths, Sampler, Switches, MIN_SAMPLE_GAP, REGISTRY};

/// `a` within 1 % of `b`.
fn within_1pct(a: u64, b: u64) -> bool {
    a.abs_diff(b) * 100 <= b
}

fn meminfo_total_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// (total, used) in KiB as `df` computes them, straight from statvfs.
fn df_kib(mount: &str) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(mount).unwrap();
    let unit = st.fragment_size();
    (
        st.blocks() * unit / 1024,
        (st.blocks() - st.blocks_free()) * unit / 1024,
    )
}

fn real_sample() -> (yunjian_protocol::Report, Sampler) {
    let mut sampler = Sampler::new(&Paths::default(), &Switches::default());
    sampler.sample();
    std::thread::sleep(MIN_SAMPLE_GAP);
    (sampler.sample(), sampler)
}

#[test]
fn every_collector_succeeds_on_this_host() {
    let (report, sampler) = real_sample();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let names: Vec<&str> = sampler.last_stats().iter().map(|s| s.name).collect();
    let registered: Vec<&str> = REGISTRY.iter().map(|r| r.name).collect();
    assert_eq!(names, registered);
    assert!(sampler
        .last_stats()
        .iter()
        .all(|s| s.ok && s.error.is_none()));

    let cores = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(report.per_core.len(), cores);
    assert!(report.cpu_busy <= 10_000);
    assert!(report.uptime_s > 0);
    assert!(report.nets.iter().all(|n| n.name != "lo"));
}

#[test]
fn memory_total_agrees_with_proc_meminfo() {
    let (report, _) = real_sample();
    let total = meminfo_total_kib();
    assert!(
        within_1pct(report.mem.total_kib, total),
        "{} vs {total}",
        report.mem.total_kib
    );
    assert_eq!(
        report.mem.used_kib + report.mem.available_kib,
        report.mem.total_kib
    );
}

#[test]
fn filesystems_agree_with_statvfs_and_include_root() {
    let (report, _) = real_sample();
    assert!(
        report.disks.iter().any(|d| d.mount == "/"),
        "no / in {:?}",
        report.disks
    );
    for disk in &report.disks {
        let (total, used) = df_kib(&disk.mount);
        assert!(
            within_1pct(disk.total_kib, total),
            "{disk:?}: total {total}"
        );
        assert!(within_1pct(disk.used_kib, used), "{disk:?}: used {used}");
        assert!(disk.used_kib <= disk.total_kib, "{disk:?}");
    }
}

#[test]
fn collectors_read_a_fake_proc_tree() {
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    std::fs::write(proc.join("loadavg"), "3.14 2.72 1.41 5/812 31337\n").unwrap();
    std::fs::write(proc.join("uptime"), "86400.99 170000.00\n").unwrap();
    std::fs::write(
        proc.join("meminfo"),
        "MemTotal: 4096000 kB\nMemAvailable: 1024000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
    )
    .unwrap();
    let paths = Paths {
        proc,
        ..Paths::default()
    };
    let mut switches = Switches::default();
    for name in ["cpu", "filesystem", "network"] {
        assert!(switches.set(name, false));
    }
    let report = Sampler::new(&paths, &switches).sample();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.load, [314, 272, 141]);
    assert_eq!(report.uptime_s, 86_400);
    assert_eq!(report.mem.total_kib, 4_096_000);
    assert_eq!(report.mem.used_kib, 3_072_000);
    assert!(report.per_core.is_empty() && report.disks.is_empty() && report.nets.is_empty());
}
