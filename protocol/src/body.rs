//! Message bodies. Append-only: see the evolution rules in the crate docs.
//!
//! Units are chosen to keep a host report small (varint-encoded integers, no floats):
//! sizes in KiB, rates in bytes per second, percentages in hundredths of a percent
//! ([`Centi`]: 0..=10000), load averages ×100.

use crate::command::{Command, CommandEvidence, CommandResult};
use serde::{Deserialize, Serialize};

/// Hundredths of a percent: 7000 = 70.00 %.
pub type Centi = u16;

/// Convert a percentage (0.0..=100.0) to [`Centi`], clamped.
pub fn centi(percent: f64) -> Centi {
    if percent.is_nan() {
        return 0;
    }
    (percent.clamp(0.0, 100.0) * 100.0).round() as Centi
}

/// What a message carries. Variants go by position on the wire: only append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// First message after every (re)connect.
    Hello(Hello),
    /// Static facts about the node; sent after `Hello` and whenever they change.
    Inventory(Inventory),
    /// The periodic sample.
    Report(Report),
    /// Something happened on the agent (buffer overflow, collector failing...).
    Event(Event),
    /// Aggregator → agent.
    Command(Command),
    /// Agent → aggregator, the answer to a [`Command`].
    CommandResult(CommandResult),
    /// Retained online/offline status and last will (topic `.../status`).
    Status(Status),
    /// A hypervisor host's view of the VMs it runs.
    Guests(Vec<GuestView>),
    /// The mandated antivirus as found on the node (003 附件1 承诺书, 001 第九条(四)).
    Antivirus(AntivirusReport),
    /// The BMC over IPMI: sensors, new SEL entries, chassis (physical hosts only).
    Hardware(crate::hardware::HardwareReport),
    /// Agent → aggregator, what a command did to the data (a wiping release), sent right
    /// before its [`CommandResult`].
    CommandEvidence(CommandEvidence),
}

impl Body {
    /// Short name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Hello(_) => "hello",
            Body::Inventory(_) => "inventory",
            Body::Report(_) => "report",
            Body::Event(_) => "event",
            Body::Command(_) => "command",
            Body::CommandResult(_) => "command_result",
            Body::Status(_) => "status",
            Body::Guests(_) => "guests",
            Body::Antivirus(_) => "antivirus",
            Body::Hardware(_) => "hardware",
            Body::CommandEvidence(_) => "command_evidence",
        }
    }
}

/// Physical server or virtual machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Host,
    Guest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Guest => "guest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's version string (e.g. "0.1.0").
    pub agent_version: String,
    pub role: Role,
    /// Wall-clock time between reports; the aggregator marks the node silent after a few
    /// intervals without a message. (A simulator with an accelerated clock sends its wall
    /// spacing here, not the event-time spacing.)
    pub interval_ms: u32,
    /// Reports waiting in the agent's on-disk buffer at connect time (replayed next).
    pub buffered: u32,
    /// The sequence-number epoch: a random non-zero number the agent draws when it creates its
    /// buffer (kept with it; a memory-only buffer draws one per process). Sequence numbers
    /// count within an epoch, so a reinstalled agent, a wiped buffer or a restarted simulator
    /// starts a new count instead of being taken for a replay. 0 in version-1 frames (no
    /// epoch). Since protocol version 2.
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub hostname: String,
    pub role: Role,
    /// e.g. "Debian GNU/Linux 12".
    pub os: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpu_cores: u16,
    pub mem_total_kib: u64,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<String>,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// In a VM, the SMBIOS system UUID (`/sys/class/dmi/id/product_uuid`), which equals the
    /// hypervisor's domain UUID: the join key between a guest and its host's view.
    pub smbios_uuid: Option<String>,
    /// Rack label from the agent's config (for the rack view); `None` when not configured.
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskInfo {
    pub mount: String,
    pub fs_type: String,
    pub total_kib: u64,
}

/// One periodic sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Busy share of all CPUs together.
    pub cpu_busy: Centi,
    /// Busy share per core, in core order.
    pub per_core: Vec<Centi>,
    /// 1, 5 and 15 minute load averages ×100.
    pub load: [u32; 3],
    pub mem: Memory,
    /// Every real filesystem.
    pub disks: Vec<DiskSample>,
    /// Every network interface except loopback.
    pub nets: Vec<NetSample>,
    pub uptime_s: u64,
    /// Collectors that failed for this sample (the others still reported).
    pub failed: Vec<CollectorFailure>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_kib: u64,
    /// Total minus available (what applications really use).
    pub used_kib: u64,
    pub available_kib: u64,
    pub swap_total_kib: u64,
    pub swap_used_kib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskSample {
    pub mount: String,
    pub total_kib: u64,
    pub used_kib: u64,
    pub read_bps: u64,
    pub write_bps: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetSample {
    pub name: String,
    /// Counters since boot.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Rates over the last interval.
    pub rx_bps: u64,
    pub tx_bps: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorFailure {
    pub collector: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `buffer.dropped`.
    pub code: String,
    pub message: String,
}

/// A node's connection state, retained on its status topic.
///
/// Freshness: a status envelope's `seq` is not a report sequence number but the **connection
/// stamp** of the connection it belongs to: the wall-clock milliseconds at which the agent
/// prepared that connection (the last will is signed then, the `Online` after the ConnAck
/// carries the same stamp, a new connection a larger one). A receiver keeps the largest stamp
/// seen and refuses a status with a smaller one, so a replayed `Offline` of an earlier
/// connection cannot take a reporting node offline. Agents before this rule sent 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Online,
    /// Clean shutdown, or the broker's last will after a lost connection.
    Offline,
}

/// A VM as its hypervisor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestView {
    /// Domain UUID, equal to the guest's SMBIOS UUID.
    pub uuid: String,
    pub name: String,
    pub vcpus: u16,
    pub mem_kib: u64,
    pub disk_kib: u64,
    pub running: bool,
}

/// What the agent's antivirus probe found: one entry per detection profile, found or not, so
/// the receiver knows what was looked for. Sent when it changes, once more at the next probe
/// to confirm a change, and periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntivirusReport {
    pub products: Vec<AntivirusProduct>,
    /// What could not be checked (an unreadable package database, the probe's deadline...).
    pub errors: Vec<String>,
}

/// One detection profile's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntivirusProduct {
    /// The detection profile, e.g. `trend-ds-agent`, `clamav`.
    pub profile: String,
    /// The profile's package in the package database, unless absent or removed (dpkg's
    /// `config-files` and `not-installed` count as absent).
    pub package: Option<AntivirusPackage>,
    /// The profile's install paths that exist (evidence for products not installed by dpkg).
    pub paths: Vec<String>,
    /// The profile's service unit, when a unit file exists.
    pub unit: Option<AntivirusUnit>,
    /// Names of the product's running processes, sorted, without repeats.
    pub processes: Vec<String>,
    /// The product's version from its own files, when it has a version file.
    pub version: Option<String>,
    /// Modification time of the newest signature (pattern) file, Unix seconds.
    pub signatures_s: Option<u64>,
}

impl AntivirusProduct {
    /// Installed: its package, or failing that one of its install paths, is there.
    pub fn installed(&self) -> bool {
        self.package.is_some() || !self.paths.is_empty()
    }

    pub fn running(&self) -> bool {
        !self.processes.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntivirusPackage {
    pub name: String,
    pub version: String,
    pub state: PackageState,
}

/// A package present in the package database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageState {
    /// Fully installed.
    Installed,
    /// Being installed, upgraded or configured (dpkg's `half-installed`, `unpacked`,
    /// `half-configured`, `triggers-awaited`, `triggers-pending`): present, not removed.
    Changing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntivirusUnit {
    /// The unit file's name, e.g. `ds_agent.service`.
    pub name: String,
    /// Linked from a `*.wants/` directory: started at boot.
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centi_clamps_and_rounds() {
        assert_eq!(centi(70.004), 7000);
        assert_eq!(centi(-3.0), 0);
        assert_eq!(centi(250.0), 10000);
        assert_eq!(centi(f64::NAN), 0);
    }
}
