//! Commands from the aggregator to an agent and their results.
//!
//! A command travels inside an [`Envelope`](crate::Envelope) signed with the target node's key
//! (only the aggregator, which holds the master key, can produce it) on the node's command
//! topic. It has a unique id (so a replay is recognised and not executed twice) and an expiry
//! (so a command delayed past it is refused).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id (random), used for idempotence and to match the result.
    pub id: [u8; 16],
    /// Unix ms after which the agent must refuse the command.
    pub expires_ms: u64,
    pub action: Action,
}

/// What to do. Only append.
///
/// The VM actions go to the agent on the VM's hypervisor host, which carries them out through
/// libvirt. Every action that takes something away names the snapshot that must exist first:
/// the agent takes it when it is missing and refuses to act when it cannot, so no data is lost
/// without a way back. Each action is idempotent on the VM's state as well as on the command
/// id (stopping a stopped VM, or snapshotting under a name that exists, reports success and
/// changes nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Answer with a result at once (liveness of the command path).
    Ping,
    /// Take a snapshot of the VM under `name` (kept until the VM is released).
    Snapshot(VmRef, String),
    /// Ensure the snapshot, then stop the VM (graceful shutdown, forced after the agent's
    /// timeout). The VM stays defined: its disks are untouched.
    Stop(VmRef, String),
    /// Ensure the snapshot, then lower the VM's vCPU count and memory (persistent config; live
    /// too where the hypervisor allows).
    Downsize(VmRef, String, VmSize),
    /// Start a stopped VM.
    Start(VmRef),
    /// Revert the VM to the named snapshot (its size and, when it was running then, its
    /// running state come back).
    Rollback(VmRef, String),
    /// After the hold period: undefine the stopped VM, returning its resources. Refused while
    /// it runs. Its disks are kept (see [`Action::ReleaseAndWipe`] for the release that clears
    /// the data).
    Release(VmRef),
    /// 004 第十六条's last step before reclaiming everything, "limit service": cap the VM's vCPU
    /// time and disk I/O (persistent definition, and live where the hypervisor allows), or,
    /// with every cap `None` ([`VmLimits::NONE`]), lift the caps again. Each `Limit` states the
    /// whole set of caps: a cap left `None` is lifted. Takes nothing away, so it names no
    /// snapshot. Since the `Limit` action was appended (no protocol version change: an older
    /// agent refuses it as an undecodable command).
    Limit(VmRef, VmLimits),
    /// After the unit's handover is confirmed: wipe every disk volume of the stopped VM (libvirt
    /// storage volume wipe, then delete) and undefine it. Refused while it runs, and refused
    /// with nothing changed when any disk cannot be wiped through libvirt (a plain file or
    /// device outside every storage pool, or a disk shared with other VMs: the evidence names
    /// it). The agent sends a [`CommandEvidence`] with what was wiped before the
    /// [`CommandResult`].
    ReleaseAndWipe(VmRef),
}

impl Action {
    /// Short name for logs, the audit trail and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Ping => "ping",
            Action::Snapshot(..) => "snapshot",
            Action::Stop(..) => "stop",
            Action::Downsize(..) => "downsize",
            Action::Start(..) => "start",
            Action::Rollback(..) => "rollback",
            Action::Release(..) => "release",
            Action::Limit(..) => "limit",
            Action::ReleaseAndWipe(..) => "release_wipe",
        }
    }

    /// The VM the action is about, if any.
    pub fn vm(&self) -> Option<&VmRef> {
        match self {
            Action::Ping => None,
            Action::Snapshot(vm, _)
            | Action::Stop(vm, _)
            | Action::Downsize(vm, _, _)
            | Action::Start(vm)
            | Action::Rollback(vm, _)
            | Action::Release(vm)
            | Action::Limit(vm, _)
            | Action::ReleaseAndWipe(vm) => Some(vm),
        }
    }
}

/// Which VM: its domain UUID (equal to the guest's SMBIOS UUID and the register's key), plus
/// the domain name as the register knows it, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRef {
    pub uuid: String,
    pub name: String,
}

/// A VM size for [`Action::Downsize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSize {
    pub vcpus: u16,
    pub mem_kib: u64,
}

/// The caps of [`Action::Limit`]; `None` is "no cap".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmLimits {
    /// Share of each vCPU's time the VM may use, in percent (1..=100): libvirt's
    /// `vcpu_quota` over a `vcpu_period` of [`VmLimits::VCPU_PERIOD_US`] µs
    /// (`<cputune><period>/<quota>`).
    pub vcpu_percent: Option<u8>,
    /// Disk throughput per disk, bytes per second (`<iotune><total_bytes_sec>`).
    pub disk_bytes_sec: Option<u64>,
    /// Disk operations per disk, per second (`<iotune><total_iops_sec>`).
    pub disk_iops_sec: Option<u64>,
}

impl VmLimits {
    /// No cap at all: a `Limit` with these lifts every cap.
    pub const NONE: VmLimits = VmLimits {
        vcpu_percent: None,
        disk_bytes_sec: None,
        disk_iops_sec: None,
    };
    /// The scheduler period the vCPU cap is set over, in microseconds (libvirt's default).
    pub const VCPU_PERIOD_US: u64 = 100_000;

    /// Whether this lifts every cap.
    pub fn is_none(&self) -> bool {
        *self == VmLimits::NONE
    }

    /// The vCPU quota for [`VmLimits::VCPU_PERIOD_US`], in microseconds.
    pub fn vcpu_quota_us(&self) -> Option<u64> {
        self.vcpu_percent
            .map(|p| u64::from(p) * VmLimits::VCPU_PERIOD_US / 100)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: [u8; 16],
    pub ok: bool,
    /// Human-readable outcome or error.
    pub message: String,
}

/// Agent → aggregator: the evidence of what a command did to the data, sent (as
/// [`Body::CommandEvidence`](crate::Body::CommandEvidence)) right before the command's
/// [`CommandResult`] on the same ordered stream. A replayed command gets its journaled result
/// again, not a second evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEvidence {
    /// The command's id, as in its [`CommandResult`].
    pub id: [u8; 16],
    pub evidence: Evidence,
}

/// What a command left as evidence. Only append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Evidence {
    /// [`Action::ReleaseAndWipe`]: every disk of the VM and what happened to it.
    Wipe(WipeEvidence),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WipeEvidence {
    pub vm: VmRef,
    /// Every disk of the VM (`<disk device='disk'>`), in definition order.
    pub disks: Vec<DiskWipe>,
}

impl WipeEvidence {
    /// Every disk was wiped and its volume deleted.
    pub fn complete(&self) -> bool {
        self.disks
            .iter()
            .all(|d| matches!(d.state, DiskWipeState::Wiped { deleted: true, .. }))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskWipe {
    /// The disk's target in the VM, e.g. `vda`.
    pub target: String,
    /// Its source: a file or device path, or `pool/volume`; empty when it has none.
    pub source: String,
    pub state: DiskWipeState,
}

/// What happened to one disk. Only append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DiskWipeState {
    /// Cannot be wiped through libvirt: not a storage volume (a file or device outside every
    /// storage pool, a network disk...), or shared with other VMs (`<shareable/>`,
    /// `<readonly/>`). It was not wiped, and because of it nothing of the VM was. The reason.
    NotWipeable(String),
    /// A storage volume that was not wiped: the release stopped before it or its wipe failed.
    /// The reason.
    NotWiped(VolumeInfo, String),
    /// Overwritten with `algorithm`, completed at `wiped_ms` (Unix ms, the agent's clock);
    /// `deleted`: the volume was deleted afterwards (false: the release stopped after the
    /// wipe, the result's message says why).
    Wiped {
        volume: VolumeInfo,
        algorithm: WipeAlgorithm,
        wiped_ms: u64,
        deleted: bool,
    },
}

/// A libvirt storage volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub pool: String,
    pub name: String,
    /// Its capacity (the size the guest saw), bytes.
    pub capacity_bytes: u64,
}

/// libvirt's wipe algorithms (`virStorageVolWipeAlgorithm`) the agent uses. Only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WipeAlgorithm {
    /// One pass of zeroes (`VIR_STORAGE_VOL_WIPE_ALG_ZERO`).
    Zero,
}

impl WipeAlgorithm {
    /// libvirt's (and `virsh vol-wipe --algorithm`'s) name.
    pub fn as_str(self) -> &'static str {
        match self {
            WipeAlgorithm::Zero => "zero",
        }
    }
}
