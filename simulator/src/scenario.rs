//! Scenario files: which racks, hosts and VMs to simulate, how fast, from which seed.
//!
//! A scenario is TOML. Every key is documented on the struct field that reads it, and the
//! files in `simulator/scenarios/` are commented examples. Unknown keys are errors, and every
//! error names the file it came from.
//!
//! ```toml
//! seed = 7              # same seed, same fleet, same samples
//! accel = 60            # event time runs 60x faster than wall time
//! interval = "10s"      # report interval in event time
//!
//! [[rack]]
//! name = "rack1"
//! hosts = 6
//! vms_per_host = 4
//! [rack.host]
//! cores = 64
//! mem_gib = 512
//! [[rack.vm]]
//! vcpus = 4
//! mem_gib = 8
//! disk_gib = 100
//! profiles = { diurnal = 5, bursty = 2, idle = 2, steady = 1 }
//! ```

use crate::antivirus::AntivirusKnobs;
use crate::bmc::HardwareKnobs;
use crate::profile::Profile;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;
use yunjian_protocol::topics::valid_node_id;
use yunjian_time::{Day, DAY_MS};

/// Why a scenario could not be used. Every variant names where the scenario came from.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("scenario {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Relative weights of workload profiles, e.g. `{ diurnal = 5, bursty = 2, idle = 2, steady = 1 }`.
/// Each node picks one profile with probability proportional to its weight.
pub type ProfileWeights = BTreeMap<Profile, u32>;

/// A whole simulated estate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Seed of every random choice (VM sizes, profiles, UUIDs, noise). Same seed, same fleet
    /// and same samples at the same event times.
    pub seed: u64,
    /// Time acceleration: event timestamps advance `accel` times faster than wall time
    /// (1 = real time, 60 = an hour per minute, 1440 = a day per minute).
    pub accel: f64,
    /// Report interval in event time, e.g. `"10s"`, `"500ms"`, `"1m"`. The wall-clock interval
    /// is `interval / accel`, floored at 50 ms ([`crate::clock::MIN_WALL_INTERVAL`]); when the
    /// floor applies, reports are `50 ms × accel` apart in event time.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Event time at the start, a TOML offset date-time such as `2025-03-03T08:00:00+08:00`.
    /// Absent: the wall-clock time when the simulation starts.
    #[serde(rename = "start", deserialize_with = "de_start")]
    pub start_ms: Option<u64>,
    /// The racks, each a `[[rack]]` table.
    #[serde(rename = "rack")]
    pub racks: Vec<Rack>,
    /// VMs whose antivirus is removed or stopped (`[antivirus]`); all others are compliant.
    pub antivirus: AntivirusKnobs,
    /// The servers' emulated BMCs (`[hardware]`): sweep spacing, fault rates, forced
    /// over-temperatures. See [`crate::bmc`].
    pub hardware: HardwareKnobs,
    /// History published before the real-time run, e.g. `"35d"`: right after connecting, every
    /// node sends its reports for the event times `[start − backfill, start)`, one every
    /// `backfill_interval`, as fast as its publisher takes them (same seqs, same workloads),
    /// so rules that need weeks of history have it at once. Absent: none. See
    /// [`crate::backfill`].
    #[serde(deserialize_with = "de_opt_duration")]
    pub backfill: Option<Duration>,
    /// Event-time spacing of the backfilled reports. Default `"15m"`: the aggregator counts a
    /// report as covering at most `[usage] max_sample_gap` (15 minutes by default) of its day,
    /// so a wider spacing would leave the history's days partly uncovered.
    #[serde(deserialize_with = "de_duration")]
    pub backfill_interval: Duration,
}

/// Default spacing of backfilled reports: the aggregator's default `[usage] max_sample_gap`.
pub const DEFAULT_BACKFILL_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// The longest backfill accepted (ten years).
pub const MAX_BACKFILL: Duration = Duration::from_secs(3_650 * 86_400);

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            accel: 1.0,
            interval: Duration::from_secs(10),
            start_ms: None,
            racks: Vec::new(),
            antivirus: AntivirusKnobs::default(),
            hardware: HardwareKnobs::default(),
            backfill: None,
            backfill_interval: DEFAULT_BACKFILL_INTERVAL,
        }
    }
}

/// A rack of identical physical servers, each running `vms_per_host` VMs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rack {
    /// Rack label, also the prefix of node ids: hosts are `{name}-h01`, `{name}-h02`...
    /// and their VMs `{name}-h01-vm1`... Characters: `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Number of physical servers.
    pub hosts: u32,
    /// VMs on every server (0 = bare-metal servers).
    #[serde(default)]
    pub vms_per_host: u32,
    /// The servers' hardware and own workload (`[rack.host]`).
    #[serde(default)]
    pub host: HostTemplate,
    /// VM templates (`[[rack.vm]]`); each VM picks one by `weight`. Absent: one default
    /// template.
    #[serde(default = "default_vm_templates", rename = "vm")]
    pub vms: Vec<VmTemplate>,
}

/// The hardware of a rack's servers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostTemplate {
    /// Logical CPUs.
    pub cores: u16,
    /// Memory in GiB.
    pub mem_gib: u32,
    /// Filesystems, e.g. `[{ mount = "/", size_gib = 200 }]`. VM images live on the last one.
    pub disks: Vec<DiskTemplate>,
    /// Network interfaces; the first carries most of the traffic.
    pub nics: Vec<String>,
    /// Workload of the server's own processes. With VMs, the server's figures are this plus
    /// the sum of its VMs' load plus virtualisation overhead; a pure hypervisor is `idle`.
    pub profiles: ProfileWeights,
}

impl Default for HostTemplate {
    fn default() -> Self {
        HostTemplate {
            cores: 32,
            mem_gib: 256,
            disks: vec![
                DiskTemplate {
                    mount: "/".into(),
                    size_gib: 200,
                },
                DiskTemplate {
                    mount: "/var/lib/libvirt/images".into(),
                    size_gib: 3_840,
                },
            ],
            nics: vec!["eno1".into(), "eno2".into()],
            profiles: BTreeMap::from([(Profile::Idle, 1)]),
        }
    }
}

/// One filesystem of a server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskTemplate {
    /// Mount point, e.g. `"/data"`.
    pub mount: String,
    /// Size in GiB.
    pub size_gib: u32,
}

/// A VM size and the workloads it may run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmTemplate {
    /// Relative frequency of this template among the rack's VMs.
    pub weight: u32,
    pub vcpus: u16,
    pub mem_gib: u32,
    /// System disk (`/`) in GiB.
    pub disk_gib: u32,
    /// Workload profile weights.
    pub profiles: ProfileWeights,
}

impl Default for VmTemplate {
    fn default() -> Self {
        VmTemplate {
            weight: 1,
            vcpus: 4,
            mem_gib: 8,
            disk_gib: 100,
            profiles: mixed_profiles(),
        }
    }
}

fn default_vm_templates() -> Vec<VmTemplate> {
    vec![VmTemplate::default()]
}

/// A typical government-cloud mix: mostly office applications, some batch jobs, a share of
/// forgotten machines, a few constant services.
pub fn mixed_profiles() -> ProfileWeights {
    BTreeMap::from([
        (Profile::Diurnal, 5),
        (Profile::Bursty, 2),
        (Profile::Idle, 2),
        (Profile::Steady, 1),
    ])
}

impl Rack {
    /// Digits of the host number in node ids (at least 2, more for big racks).
    pub fn host_digits(&self) -> usize {
        self.hosts.to_string().len().max(2)
    }

    /// Node id of host number `n` (from 1).
    pub fn host_id(&self, n: u32) -> String {
        format!("{}-h{:0width$}", self.name, n, width = self.host_digits())
    }

    /// Node id of VM number `v` (from 1) on host number `n`.
    pub fn vm_id(&self, n: u32, v: u32) -> String {
        format!("{}-vm{v}", self.host_id(n))
    }
}

impl Scenario {
    /// Parse and validate a scenario held in a string (errors say `<inline>`).
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        Self::parse(text, "<inline>")
    }

    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: origin.clone(),
            source,
        })?;
        Self::parse(&text, &origin)
    }

    fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        s.validate().map_err(|message| ScenarioError::Invalid {
            origin: origin.to_string(),
            message,
        })?;
        Ok(s)
    }

    /// `racks` racks named `rack1`, `rack2`... of `hosts_per_rack` default servers, each with
    /// `vms_per_host` default VMs of mixed profiles. Bare-metal servers (no VMs) run the mixed
    /// profiles themselves; hypervisors are idle apart from their VMs. Real time, 10 s reports.
    pub fn uniform(racks: u32, hosts_per_rack: u32, vms_per_host: u32, seed: u64) -> Self {
        let host = HostTemplate {
            profiles: if vms_per_host == 0 {
                mixed_profiles()
            } else {
                HostTemplate::default().profiles
            },
            ..HostTemplate::default()
        };
        Scenario {
            seed,
            racks: (1..=racks)
                .map(|r| Rack {
                    name: format!("rack{r}"),
                    hosts: hosts_per_rack,
                    vms_per_host,
                    host: host.clone(),
                    vms: default_vm_templates(),
                })
                .collect(),
            ..Scenario::default()
        }
    }

    /// Number of simulated nodes (hosts and VMs).
    pub fn node_count(&self) -> usize {
        self.racks
            .iter()
            .map(|r| r.hosts as usize * (1 + r.vms_per_host as usize))
            .sum()
    }

    /// Check everything serde cannot: ranges, names, uniqueness. The message names the rack.
    /// Wall time after which the accelerated event time passes the wall clock, when the run
    /// starts at wall time `now_ms` (`None` when it never does: real time, or a start far
    /// enough back is not needed for `accel` ≤ 1). Aggregators refuse reports from the future.
    pub fn overtakes_wall_clock(&self, now_ms: u64) -> Option<std::time::Duration> {
        if self.accel <= 1.0 {
            return None;
        }
        let lead_ms = now_ms.saturating_sub(self.start_ms.unwrap_or(now_ms)) as f64;
        Some(std::time::Duration::from_secs_f64(
            lead_ms / (self.accel - 1.0) / 1000.0,
        ))
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.accel.is_finite() && self.accel > 0.0) {
            return Err(format!(
                "accel must be a positive number, not {}",
                self.accel
            ));
        }
        if self.interval.is_zero() {
            return Err("interval must be longer than zero".into());
        }
        if self.backfill_interval.is_zero() {
            return Err("backfill_interval must be longer than zero".into());
        }
        if let Some(b) = self.backfill {
            if b > MAX_BACKFILL {
                return Err(format!(
                    "backfill ({} days) is longer than ten years",
                    b.as_secs() / 86_400
                ));
            }
            if !b.is_zero() && b < self.backfill_interval {
                return Err(format!(
                    "backfill ({b:?}) is shorter than backfill_interval ({:?}): not one report",
                    self.backfill_interval
                ));
            }
        }
        if self.racks.is_empty() {
            return Err("no [[rack]]: a scenario needs at least one rack".into());
        }
        let mut names = HashSet::new();
        for (i, rack) in self.racks.iter().enumerate() {
            let at = if rack.name.is_empty() {
                format!("rack #{}", i + 1)
            } else {
                format!("rack {:?}", rack.name)
            };
            rack.validate().map_err(|e| format!("{at}: {e}"))?;
            if !names.insert(rack.name.as_str()) {
                return Err(format!("{at}: the name is used by another rack"));
            }
        }
        self.antivirus.validate(&self.racks)?;
        self.hardware.validate(&self.racks)
    }
}

impl Rack {
    fn validate(&self) -> Result<(), String> {
        if self.hosts == 0 {
            return Err("hosts must be at least 1".into());
        }
        let longest = if self.vms_per_host > 0 {
            self.vm_id(self.hosts, self.vms_per_host)
        } else {
            self.host_id(self.hosts)
        };
        if !valid_node_id(&longest) {
            return Err(format!(
                "name gives the node id {longest:?}, but node ids are 1-64 characters from \
                 A-Z a-z 0-9 . _ -"
            ));
        }
        let h = &self.host;
        if h.cores == 0 || h.mem_gib == 0 {
            return Err("host cores and mem_gib must be at least 1".into());
        }
        if h.disks.is_empty() {
            return Err("host needs at least one disk".into());
        }
        let mut mounts = HashSet::new();
        for d in &h.disks {
            if !d.mount.starts_with('/') {
                return Err(format!("disk mount {:?} must start with '/'", d.mount));
            }
            if d.size_gib == 0 {
                return Err(format!("disk {:?}: size_gib must be at least 1", d.mount));
            }
            if !mounts.insert(d.mount.as_str()) {
                return Err(format!("disk mount {:?} appears twice", d.mount));
            }
        }
        if h.nics.is_empty() || h.nics.iter().any(|n| n.is_empty()) {
            return Err("host needs at least one NIC, each with a name".into());
        }
        if weights_total(&h.profiles) == 0 {
            return Err("host profiles: at least one weight must be above 0".into());
        }
        if self.vms_per_host > 0 {
            if self.vms.iter().map(|v| u64::from(v.weight)).sum::<u64>() == 0 {
                return Err("vms_per_host > 0 needs a [[rack.vm]] with weight above 0".into());
            }
            for (i, v) in self.vms.iter().enumerate() {
                if v.vcpus == 0 || v.mem_gib == 0 || v.disk_gib == 0 {
                    return Err(format!(
                        "vm template #{}: vcpus, mem_gib and disk_gib must be at least 1",
                        i + 1
                    ));
                }
                if v.weight > 0 && weights_total(&v.profiles) == 0 {
                    return Err(format!(
                        "vm template #{}: profiles: at least one weight must be above 0",
                        i + 1
                    ));
                }
            }
        }
        Ok(())
    }
}

fn weights_total(w: &ProfileWeights) -> u64 {
    w.values().map(|&v| u64::from(v)).sum()
}

/// Parse a duration such as `"500ms"`, `"10s"`, `"1.5m"`, `"2h"`, `"1d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {text:?} has no unit (ms, s, m, h or d)"))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("duration {text:?}: {num:?} is not a number"))?;
    let unit_s = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "duration {text:?}: unknown unit {other:?} (ms, s, m, h or d)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * unit_s).map_err(|e| format!("duration {text:?}: {e}"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_start<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let dt = toml::value::Datetime::deserialize(d)?;
    datetime_to_unix_ms(&dt)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Unix milliseconds of a full TOML offset date-time.
fn datetime_to_unix_ms(dt: &toml::value::Datetime) -> Result<u64, String> {
    let (Some(date), Some(time), Some(offset)) = (dt.date, dt.time, dt.offset) else {
        return Err(format!(
            "start {dt} needs a date, a time and an offset, e.g. 2025-03-03T08:00:00+08:00"
        ));
    };
    let offset_min = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let day = Day::from_ymd(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    let ms = i64::from(day.0) * DAY_MS
        + i64::from(time.hour) * 3_600_000
        + i64::from(time.minute) * 60_000
        + i64::from(time.second) * 1_000
        + i64::from(time.nanosecond / 1_000_000)
        - offset_min * 60_000;
    u64::try_from(ms).map_err(|_| format!("start {dt} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_only() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("s").unwrap_err().contains("not a number"));
    }

    #[test]
    fn backfill_is_off_by_default_and_checked() {
        let rack = "[[rack]]\nname = \"r\"\nhosts = 1\n";
        let s = Scenario::from_toml_str(rack).unwrap();
        assert_eq!(
            (s.backfill, s.backfill_interval),
            (None, DEFAULT_BACKFILL_INTERVAL)
        );
        let s = Scenario::from_toml_str(&format!(
            "backfill = \"36d\"\nbackfill_interval = \"10m\"\n{rack}"
        ))
        .unwrap();
        assert_eq!(s.backfill, Some(Duration::from_secs(36 * 86_400)));
        assert_eq!(s.backfill_interval, Duration::from_secs(600));
        for (text, says) in [
            ("backfill_interval = \"0s\"", "longer than zero"),
            ("backfill = \"10m\"", "shorter than backfill_interval"),
            ("backfill = \"4000d\"", "longer than ten years"),
        ] {
            let e = Scenario::from_toml_str(&format!("{text}\n{rack}")).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn an_accelerated_clock_overtakes_the_wall_clock_unless_it_starts_far_back() {
        let mut s = Scenario::default();
        let now = 1_790_000_000_000;
        assert_eq!(s.overtakes_wall_clock(now), None, "real time never does");
        s.accel = 61.0;
        assert_eq!(s.overtakes_wall_clock(now), Some(Duration::ZERO));
        // an hour of event time per wall minute, started a day back: a day of lead is used
        // up in 24 wall minutes
        s.start_ms = Some(now - 86_400_000);
        assert_eq!(
            s.overtakes_wall_clock(now),
            Some(Duration::from_secs(24 * 60))
        );
    }

    #[test]
    fn start_honours_the_offset() {
        let s = Scenario::from_toml_str(
            "start = 2025-03-03T08:00:00+08:00\n[[rack]]\nname = \"r\"\nhosts = 1\n",
        )
        .unwrap();
        assert_eq!(s.start_ms, Some(1_740_960_000_000));
        let z = Scenario::from_toml_str(
            "start = 2025-03-03T00:00:00.250Z\n[[rack]]\nname = \"r\"\nhosts = 1\n",
        )
        .unwrap();
        assert_eq!(z.start_ms, Some(1_740_960_000_250));
        let err = Scenario::from_toml_str(
            "start = 2025-03-03T08:00:00\n[[rack]]\nname = \"r\"\nhosts = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs a date, a time and an offset"), "{err}");
    }

    #[test]
    fn node_ids_are_padded_to_the_rack_size() {
        let mut r = Scenario::uniform(1, 6, 2, 1).racks.remove(0);
        assert_eq!(r.host_id(3), "rack1-h03");
        assert_eq!(r.vm_id(3, 2), "rack1-h03-vm2");
        r.hosts = 10_000;
        assert_eq!(r.host_id(7), "rack1-h00007");
    }

    #[test]
    fn validation_names_the_rack_and_the_problem() {
        let mut s = Scenario::uniform(2, 1, 1, 1);
        s.racks[1].name = "rack1".into();
        assert!(s.validate().unwrap_err().contains("used by another rack"));

        let mut s = Scenario::uniform(1, 1, 1, 1);
        s.racks[0].name = "bad/name".into();
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("rack \"bad/name\"") && e.contains("node id"),
            "{e}"
        );

        let mut s = Scenario::uniform(1, 1, 1, 1);
        s.racks[0].vms[0].profiles = BTreeMap::from([(Profile::Idle, 0)]);
        assert!(s.validate().unwrap_err().contains("vm template #1"));

        let mut s = Scenario::uniform(1, 1, 0, 1);
        s.accel = 0.0;
        assert!(s.validate().unwrap_err().contains("accel"));

        let mut s = Scenario::uniform(1, 1, 0, 1);
        s.racks[0].host.disks[1].mount = "/".into();
        assert!(s.validate().unwrap_err().contains("appears twice"));

        assert!(Scenario::default()
            .validate()
            .unwrap_err()
            .contains("no [[rack]]"));
    }

    #[test]
    fn uniform_counts_nodes() {
        let s = Scenario::uniform(2, 3, 2, 9);
        assert_eq!(s.node_count(), 2 * 3 * 3);
        assert!(s.validate().is_ok());
        assert_eq!(s.racks[0].host.profiles, HostTemplate::default().profiles);
        assert_eq!(
            Scenario::uniform(1, 5, 0, 9).racks[0].host.profiles,
            mixed_profiles()
        );
    }
}
