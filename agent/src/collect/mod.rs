//! Collectors: each one fills its part of a [`Report`]; the [`Sampler`] runs the enabled ones.
//!
//! Adding a collector adds one file with a type implementing [`Collector`] and one line in
//! [`REGISTRY`]; its on/off switch in `[collectors]`, its name in failures and its line in the
//! `--once` output follow from that line.
//!
//! Parsing is kept apart from I/O: every file format (`/proc/loadavg`, `/proc/mounts`...) has a
//! pure function taking the text, unit-tested on literal inputs. The roots `/proc`, `/sys` and
//! `/etc` come from [`Paths`], so a collector can be pointed at a fake tree.
//!
//! Footprint: collectors keep their file paths, read buffers and previous counters between
//! ticks, so a tick allocates little beyond the report itself. Lists that rarely change (mounts)
//! are rebuilt every [`RELIST_EVERY`] ticks, not on every tick.

pub mod cpu;
pub mod filesystem;
pub mod inventory;
pub mod load;
pub mod memory;
pub mod network;
pub mod uptime;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use yunjian_protocol::{CollectorFailure, Memory, Report};

/// One source of metrics.
pub trait Collector {
    /// Stable name: the key in `[collectors]` and in [`CollectorFailure::collector`].
    fn name(&self) -> &'static str;
    /// Fill this collector's fields of `out`. On error, whatever was already written stays (a
    /// filesystem collector that cannot `statvfs` one mount still reports the others).
    fn collect(&mut self, out: &mut Report) -> Result<(), CollectError>;
}

/// A line of the registry: how to build a collector and whether it runs by default.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub name: &'static str,
    /// One line for `print-default-config`.
    pub help: &'static str,
    pub enabled_by_default: bool,
    pub build: fn(&Paths) -> Box<dyn Collector>,
}

/// Every collector, in the order they run.
pub const REGISTRY: &[Registration] = &[
    Registration {
        name: "cpu",
        help: "Busy share of all CPUs and of each core.",
        enabled_by_default: true,
        build: cpu::Cpu::boxed,
    },
    Registration {
        name: "load",
        help: "1, 5 and 15 minute load averages.",
        enabled_by_default: true,
        build: load::Load::boxed,
    },
    Registration {
        name: "memory",
        help: "Memory and swap: total, used (total - available), available.",
        enabled_by_default: true,
        build: memory::MemoryCollector::boxed,
    },
    Registration {
        name: "filesystem",
        help: "Space and read/write rates of every local, real filesystem.",
        enabled_by_default: true,
        build: filesystem::Filesystems::boxed,
    },
    Registration {
        name: "network",
        help: "Byte counters and rates of every interface except lo.",
        enabled_by_default: true,
        build: network::Network::boxed,
    },
    Registration {
        name: "uptime",
        help: "Seconds since boot.",
        enabled_by_default: true,
        build: uptime::Uptime::boxed,
    },
];

/// The registered names, for "expected one of" in config errors.
const NAMES: [&str; REGISTRY.len()] = {
    let mut names = [""; REGISTRY.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = REGISTRY[i].name;
        i += 1;
    }
    names
};

/// Slowly changing lists (mounts, inventory) are rebuilt every this many ticks.
pub const RELIST_EVERY: u32 = 60;

/// Shortest useful gap between two samples: CPU busy shares come from the difference of two
/// readings of `/proc/stat`, which sysinfo refuses to re-read sooner than
/// [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] (200 ms).
pub const MIN_SAMPLE_GAP: Duration = Duration::from_millis(250);

/// `[paths]`: where the kernel's and the system's files are. Point them at a copy (e.g. the
/// host's `/proc` mounted at `/host/proc` in a container) to observe another tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// procfs: `loadavg`, `uptime`, `meminfo`, `mounts`, `diskstats`, `net/dev`. CPU busy
    /// shares and the CPU model are read by sysinfo, which always uses the live `/proc`.
    pub proc: PathBuf,
    /// sysfs: `class/dmi/id/product_uuid` (the SMBIOS UUID of a VM).
    pub sys: PathBuf,
    /// `os-release` and `machine-id`.
    pub etc: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            etc: PathBuf::from("/etc"),
        }
    }
}

/// `[collectors]`: one switch per collector, by name (`cpu = false`). A collector not listed
/// keeps its default (every collector is on by default); an unknown name is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Switches(BTreeMap<&'static str, bool>);

impl Default for Switches {
    fn default() -> Self {
        Switches(
            REGISTRY
                .iter()
                .map(|r| (r.name, r.enabled_by_default))
                .collect(),
        )
    }
}

impl Switches {
    /// Is the collector `name` switched on? Unknown names are off.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.0.get(name).copied().unwrap_or(false)
    }

    /// Switch a collector on or off; `false` if no collector has that name.
    pub fn set(&mut self, name: &str, on: bool) -> bool {
        match self.0.get_mut(name) {
            Some(slot) => {
                *slot = on;
                true
            }
            None => false,
        }
    }
}

impl<'de> Deserialize<'de> for Switches {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SwitchVisitor;
        impl<'de> Visitor<'de> for SwitchVisitor {
            type Value = Switches;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of collector names to true/false")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Switches, A::Error> {
                let mut switches = Switches::default();
                while let Some(name) = map.next_key::<String>()? {
                    let on: bool = map.next_value()?;
                    if !switches.set(&name, on) {
                        return Err(de::Error::unknown_field(&name, &NAMES));
                    }
                }
                Ok(switches)
            }
        }
        deserializer.deserialize_map(SwitchVisitor)
    }
}

/// Why a collector could not produce its values.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
    #[error("statvfs {mount}: {source}{}", also_failed(*others))]
    Statvfs {
        mount: String,
        source: nix::Error,
        others: usize,
    },
    #[error("{0}")]
    Unavailable(&'static str),
}

fn also_failed(others: usize) -> String {
    match others {
        0 => String::new(),
        n => format!(" (and {n} more mounts)"),
    }
}

/// What is wrong with the text of a kernel or system file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{field}: not a number: {value:?}")]
    NotANumber { field: &'static str, value: String },
}

/// Parse one whitespace-free number field of a kernel file.
fn number<T: std::str::FromStr>(field: &'static str, text: Option<&str>) -> Result<T, ParseError> {
    let text = text.ok_or(ParseError::Missing(field))?;
    text.parse().map_err(|_| ParseError::NotANumber {
        field,
        value: text.to_string(),
    })
}

/// Read a whole file into a reused buffer (procfs files report size 0, so no pre-sizing).
fn read_into(path: &Path, buf: &mut String) -> Result<(), CollectError> {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .map(drop)
        .map_err(|source| CollectError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Attach the file's path to a parser error.
fn parse_err(path: &Path) -> impl FnOnce(ParseError) -> CollectError + '_ {
    move |source| CollectError::Parse {
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes per second from two counter readings `secs` apart; 0 without a previous reading or
/// when the counter went backwards (reset, device replaced).
fn rate(previous: Option<u64>, now: u64, secs: f64) -> u64 {
    match previous {
        Some(p) if secs > 0.0 && now >= p => ((now - p) as f64 / secs).round() as u64,
        _ => 0,
    }
}

/// A report with nothing collected yet.
fn empty_report() -> Report {
    Report {
        cpu_busy: 0,
        per_core: Vec::new(),
        load: [0; 3],
        mem: Memory::default(),
        disks: Vec::new(),
        nets: Vec::new(),
        uptime_s: 0,
        failed: Vec::new(),
    }
}

/// How one collector did in the last sample (`--once` prints these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectorStats {
    pub name: &'static str,
    pub ok: bool,
    pub duration_us: u64,
    pub error: Option<String>,
}

/// Owns the enabled collectors and builds one [`Report`] per call to [`Sampler::sample`].
pub struct Sampler {
    collectors: Vec<Box<dyn Collector>>,
    stats: Vec<CollectorStats>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// The registered collectors that `switches` enables, reading under `paths`.
    pub fn new(paths: &Paths, switches: &Switches) -> Self {
        Self::with_collectors(
            REGISTRY
                .iter()
                .filter(|r| switches.is_enabled(r.name))
                .map(|r| (r.build)(paths))
                .collect(),
        )
    }

    /// A sampler over the given collectors, run in order.
    pub fn with_collectors(collectors: Vec<Box<dyn Collector>>) -> Self {
        let stats = collectors
            .iter()
            .map(|c| CollectorStats {
                name: c.name(),
                ok: true,
                duration_us: 0,
                error: None,
            })
            .collect();
        Sampler { collectors, stats }
    }

    /// Take one sample. A failing collector is listed in `failed` and never stops the others.
    /// Rates and CPU shares are over the time since the previous call, so the first sample of a
    /// new sampler has them at 0: take one and discard it, [`MIN_SAMPLE_GAP`] or more earlier.
    pub fn sample(&mut self) -> Report {
        let mut report = empty_report();
        for (collector, stats) in self.collectors.iter_mut().zip(&mut self.stats) {
            let name = collector.name();
            let started = Instant::now();
            let result = collector.collect(&mut report);
            let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let was_ok = stats.ok;
            stats.duration_us = duration_us;
            match result {
                Ok(()) => {
                    if !was_ok {
                        tracing::info!(collector = name, "collector recovered");
                    }
                    tracing::debug!(collector = name, duration_us, ok = true, "collected");
                    stats.ok = true;
                    stats.error = None;
                }
                Err(e) => {
                    let error = e.to_string();
                    // Logged once when it starts failing; every report still carries it.
                    if was_ok {
                        tracing::warn!(collector = name, %error, "collector failed");
                    }
                    tracing::debug!(collector = name, duration_us, ok = false, "collected");
                    stats.ok = false;
                    report.failed.push(CollectorFailure {
                        collector: name.to_string(),
                        error: error.clone(),
                    });
                    stats.error = Some(error);
                }
            }
        }
        report
    }

    /// One entry per enabled collector, as of the last [`Sampler::sample`].
    pub fn last_stats(&self) -> &[CollectorStats] {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;
    impl Collector for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn collect(&mut self, out: &mut Report) -> Result<(), CollectError> {
            out.uptime_s = 99;
            Err(CollectError::Unavailable("sensor on fire"))
        }
    }

    fn fake_root() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            etc: dir.path().join("etc"),
        };
        std::fs::create_dir_all(&paths.proc).unwrap();
        (dir, paths)
    }

    #[test]
    fn a_failing_collector_is_reported_and_the_others_still_run() {
        let (_dir, paths) = fake_root();
        std::fs::write(paths.proc.join("loadavg"), "1.50 0.75 0.25 2/300 4242\n").unwrap();
        let mut sampler = Sampler::with_collectors(vec![
            Box::new(Broken),
            load::Load::boxed(&paths),
            uptime::Uptime::boxed(&paths), // no fake `uptime` file: fails
        ]);
        let report = sampler.sample();
        assert_eq!(report.load, [150, 75, 25]);
        assert_eq!(report.uptime_s, 99, "what a failing collector wrote stays");
        let failed: Vec<&str> = report.failed.iter().map(|f| f.collector.as_str()).collect();
        assert_eq!(failed, ["broken", "uptime"]);
        assert_eq!(report.failed[0].error, "sensor on fire");
        assert!(
            report.failed[1].error.contains("uptime"),
            "{:?}",
            report.failed[1]
        );

        let stats = sampler.last_stats();
        let ok: Vec<(&str, bool)> = stats.iter().map(|s| (s.name, s.ok)).collect();
        assert_eq!(ok, [("broken", false), ("load", true), ("uptime", false)]);
        assert_eq!(stats[1].error, None);
        assert_eq!(stats[0].error.as_deref(), Some("sensor on fire"));
    }

    #[test]
    fn a_collector_that_recovers_is_no_longer_listed_as_failed() {
        let (_dir, paths) = fake_root();
        let mut sampler = Sampler::with_collectors(vec![uptime::Uptime::boxed(&paths)]);
        assert_eq!(sampler.sample().failed.len(), 1);
        std::fs::write(paths.proc.join("uptime"), "360.5 700.25\n").unwrap();
        let report = sampler.sample();
        assert!(report.failed.is_empty());
        assert_eq!(report.uptime_s, 360);
        assert!(sampler.last_stats()[0].ok);
    }

    #[test]
    fn every_registered_collector_carries_its_registry_name() {
        let paths = Paths::default();
        for r in REGISTRY {
            assert_eq!((r.build)(&paths).name(), r.name);
        }
        let mut names = NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "duplicate collector name");
    }

    #[test]
    fn switches_select_collectors_by_name() {
        let mut switches = Switches::default();
        assert!(REGISTRY.iter().all(|r| switches.is_enabled(r.name)));
        assert!(switches.set("cpu", false));
        assert!(!switches.set("gpu", true));
        assert!(!switches.is_enabled("gpu"));
        let sampler = Sampler::new(&Paths::default(), &switches);
        let names: Vec<&str> = sampler.last_stats().iter().map(|s| s.name).collect();
        assert_eq!(names, ["load", "memory", "filesystem", "network", "uptime"]);
    }

    #[test]
    fn rates_need_a_previous_reading_and_a_forward_counter() {
        assert_eq!(rate(None, 1000, 1.0), 0);
        assert_eq!(rate(Some(1000), 3000, 2.0), 1000);
        assert_eq!(rate(Some(3000), 1000, 2.0), 0, "counter reset");
        assert_eq!(rate(Some(0), 1000, 0.0), 0);
    }
}
