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
    /// it runs.
    Release(VmRef),
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
            | Action::Release(vm) => Some(vm),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: [u8; 16],
    pub ok: bool,
    /// Human-readable outcome or error.
    pub message: String,
}
