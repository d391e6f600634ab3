//! Carrying out the aggregator's VM commands on this host's hypervisor, and reporting its
//! guests.
//!
//! Off by default (`[hypervisor] enabled = false`); when on, the agent holds **one** libvirt
//! connection (`hypervisor.uri`) on a dedicated thread, reopened when it drops. Commands run
//! one at a time, in arrival order. Each [`Action`] has the semantics in [`execute`], written
//! once over the [`Domains`] trait: the libvirt backend implements it for real VMs, the
//! simulator for its simulated ones.
//!
//! * every action that takes something away (stop, downsize) first ensures the named snapshot:
//!   taken when missing, the action refused when that fails;
//! * every action is idempotent on the VM's state: stopping a stopped VM, snapshotting under a
//!   name that exists, downsizing to the size the VM has, releasing a VM that is gone report
//!   success and change nothing;
//! * `Limit` writes the whole set of caps (none: lifted) into the persistent definition and
//!   applies them live where the hypervisor allows, saying what waits for the next start;
//! * `ReleaseAndWipe` wipes every disk volume (libvirt storage volume wipe), undefines the VM,
//!   then deletes the volumes, and sends the evidence ([`Body::CommandEvidence`]) before its
//!   result. It never pretends: a disk that cannot be wiped through libvirt (not a storage
//!   volume, or shared with other VMs) refuses the whole
//!   release before anything is touched, and every disk's fate is in the evidence;
//! * results are journaled before they are published (see
//!   [`Publisher::send_result`](crate::publish::Publisher::send_result)), so a replayed command
//!   gets the same result and runs nothing twice.
//!
//! The guest list ([`Body::Guests`]) is sent every `hypervisor.guests_interval` and right after
//! each command, so the aggregator sees the effect of what it asked for.
//!
//! The libvirt backend needs the cargo feature `libvirt` (and libvirt's client library at
//! build and run time); an agent built without it refuses to start with the hypervisor
//! enabled.

pub mod domain_xml;
#[cfg(feature = "libvirt")]
mod libvirt;

use crate::publish::Publisher;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::time::Duration;
use tokio::task::JoinHandle;
use yunjian_protocol::{
    Action, Body, Command, CommandEvidence, CommandResult, DiskWipe, DiskWipeState, Evidence,
    GuestView, VmLimits, VmRef, VmSize, VolumeInfo, WipeAlgorithm, WipeEvidence,
};

/// Commands waiting for the hypervisor thread, at most; more are answered as refused.
pub const QUEUE: usize = 32;

/// `[hypervisor]`: carry out the aggregator's VM commands through libvirt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HypervisorConfig {
    /// Connect to the hypervisor, report its guests and carry out VM commands. Needs an agent
    /// built with the `libvirt` feature.
    pub enabled: bool,
    /// libvirt connection URI, e.g. `"qemu:///system"`, or `"test:///path/domains.xml"` for
    /// libvirt's test driver.
    pub uri: String,
    /// How long a VM gets to shut down cleanly before it is forced off, e.g. `"2m"`.
    #[serde(with = "crate::config::duration_text")]
    pub shutdown_timeout: Duration,
    /// Time between two guest lists (one also follows every command), e.g. `"1m"`.
    #[serde(with = "crate::config::duration_text")]
    pub guests_interval: Duration,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        HypervisorConfig {
            enabled: false,
            uri: "qemu:///system".into(),
            shutdown_timeout: Duration::from_secs(120),
            guests_interval: Duration::from_secs(60),
        }
    }
}

impl HypervisorConfig {
    /// Check the values (only when enabled).
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.uri.trim().is_empty() {
            return Err(
                "hypervisor.uri is empty: name the libvirt connection, e.g. \"qemu:///system\""
                    .into(),
            );
        }
        if self.guests_interval < Duration::from_secs(1) {
            return Err("hypervisor.guests_interval must be at least 1s".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("[hypervisor] is enabled but this agent was built without libvirt support (rebuild with `--features libvirt`, which needs libvirt-dev)")]
    NotBuiltIn,
    #[error("cannot start the hypervisor thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A VM's state as the actions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainState {
    pub running: bool,
    /// Its size in the persistent definition.
    pub size: VmSize,
}

/// The VMs of one hypervisor, as [`execute`] needs them. `Error` is the hypervisor's own cause,
/// quoted in results after the VM and the action.
pub trait Domains {
    type Error: Display;
    /// The VM's state; `None` when no VM has `vm.uuid` here.
    fn find(&mut self, vm: &VmRef) -> Result<Option<DomainState>, Self::Error>;
    fn has_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<bool, Self::Error>;
    fn take_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<(), Self::Error>;
    /// Revert to an existing snapshot (its size and its running state come back).
    fn revert(&mut self, vm: &VmRef, name: &str) -> Result<(), Self::Error>;
    /// Stop a running VM; returns how, e.g. "shut down cleanly in 3 s".
    fn stop(&mut self, vm: &VmRef) -> Result<String, Self::Error>;
    fn start(&mut self, vm: &VmRef) -> Result<(), Self::Error>;
    /// Set the size in the persistent definition and, when running, live where possible;
    /// returns a note on what could not be changed live (empty when everything was).
    fn resize(&mut self, vm: &VmRef, size: VmSize) -> Result<String, Self::Error>;
    /// Remove the (stopped) VM's definition and snapshots; its disks stay.
    fn undefine(&mut self, vm: &VmRef) -> Result<(), Self::Error>;
    /// Write `caps` (the whole set; `None` lifts) into the persistent definition and, when the
    /// VM runs, live where possible. Returns the caps it had and a note on what could not be
    /// applied live (empty when everything was).
    fn limit(&mut self, vm: &VmRef, caps: VmLimits) -> Result<(VmLimits, String), Self::Error>;
    /// Every disk of the VM (`<disk device='disk'>`), with its storage volume, or why it is
    /// not one.
    fn disks(&mut self, vm: &VmRef) -> Result<Vec<VmDisk>, Self::Error>;
    /// Overwrite a storage volume with `algorithm`.
    fn wipe(&mut self, volume: &VolumeInfo, algorithm: WipeAlgorithm) -> Result<(), Self::Error>;
    /// Delete a storage volume.
    fn delete(&mut self, volume: &VolumeInfo) -> Result<(), Self::Error>;
    /// Every VM defined here.
    fn guests(&mut self) -> Result<Vec<GuestView>, Self::Error>;
}

/// The algorithm a wiping release overwrites volumes with: one pass of zeroes, which every
/// libvirt storage backend that wipes at all supports.
pub const WIPE_ALGORITHM: WipeAlgorithm = WipeAlgorithm::Zero;

/// One disk of a VM, as a wiping release needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// Its target in the VM, e.g. `vda`.
    pub target: String,
    /// Its source as the evidence shows it (path, `pool/volume`, or empty).
    pub source: String,
    /// The storage volume holding it, or why it is not one.
    pub volume: Result<VolumeInfo, String>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
    /// Sent before the result, when the command leaves evidence.
    pub evidence: Option<Evidence>,
}

impl Outcome {
    pub fn done(message: String) -> Outcome {
        Outcome {
            ok: true,
            message,
            evidence: None,
        }
    }
    pub fn failed(message: String) -> Outcome {
        Outcome {
            ok: false,
            message,
            evidence: None,
        }
    }
}

/// "VM web-01 (6695eb01-…)", for messages.
pub fn label(vm: &VmRef) -> String {
    format!("VM {} ({})", vm.name, vm.uuid)
}

fn describe(size: VmSize) -> String {
    format!("{} vCPU / {} MiB", size.vcpus, size.mem_kib / 1024)
}

/// Carry out `action` on `domains` with the semantics of [`Action`].
pub fn execute<D: Domains>(domains: &mut D, action: &Action) -> Outcome {
    let Some(vm) = action.vm() else {
        return Outcome::done("pong".into());
    };
    let kind = action.kind();
    let vm_label = label(vm);
    let state = match domains.find(vm) {
        Ok(Some(state)) => state,
        Ok(None) if matches!(action, Action::Release(_)) => {
            return Outcome::done(format!(
                "{vm_label} is not defined on this host: already released"
            ))
        }
        Ok(None) if matches!(action, Action::ReleaseAndWipe(_)) => {
            return Outcome::failed(format!(
                "{kind} of {vm_label} failed: no VM with this UUID is defined on this host, so \
                 its disks cannot be found from here: nothing was wiped (if it was released \
                 without wiping, its disks are still on the host and must be wiped by hand)"
            ))
        }
        Ok(None) => {
            return Outcome::failed(format!(
                "{kind} of {vm_label} failed: no VM with this UUID is defined on this host"
            ))
        }
        Err(e) => return Outcome::failed(format!("{kind} of {vm_label} failed: {e}")),
    };
    if let Action::ReleaseAndWipe(_) = action {
        return release_and_wipe(domains, vm, state);
    }
    let result = match action {
        Action::Ping => unreachable!("Ping names no VM"),
        Action::ReleaseAndWipe(_) => unreachable!("carried out above"),
        Action::Limit(_, caps) => limit(domains, vm, state, *caps),
        Action::Snapshot(_, name) => ensure_snapshot(domains, vm, name).map(|taken| {
            if taken {
                format!("snapshot {name:?} of {vm_label} taken")
            } else {
                format!("snapshot {name:?} of {vm_label} already exists")
            }
        }),
        Action::Stop(_, name) => {
            ensure_snapshot_or_refuse(domains, vm, name, kind).and_then(|note| {
                if !state.running {
                    return Ok(format!("{vm_label} is already stopped{note}"));
                }
                domains
                    .stop(vm)
                    .map(|how| format!("{vm_label} stopped ({how}){note}"))
                    .map_err(|e| format!("stop of {vm_label} failed: {e}"))
            })
        }
        Action::Downsize(_, name, size) => downsize(domains, vm, name, state, *size),
        Action::Start(_) => {
            if state.running {
                Ok(format!("{vm_label} is already running"))
            } else {
                domains
                    .start(vm)
                    .map(|()| format!("{vm_label} started"))
                    .map_err(|e| format!("start of {vm_label} failed: {e}"))
            }
        }
        Action::Rollback(_, name) => match domains.has_snapshot(vm, name) {
            Ok(true) => domains
                .revert(vm, name)
                .map_err(|e| format!("rollback of {vm_label} to snapshot {name:?} failed: {e}"))
                .and_then(|()| match domains.find(vm) {
                    Ok(Some(now)) => Ok(format!(
                        "{vm_label} reverted to snapshot {name:?}: {}, {}",
                        if now.running { "running" } else { "stopped" },
                        describe(now.size)
                    )),
                    Ok(None) => Err(format!(
                        "{vm_label} is gone after its rollback to snapshot {name:?}"
                    )),
                    Err(e) => Ok(format!(
                        "{vm_label} reverted to snapshot {name:?} (its state could not be read back: {e})"
                    )),
                }),
            Ok(false) => Err(format!(
                "rollback of {vm_label} refused: it has no snapshot {name:?}"
            )),
            Err(e) => Err(format!(
                "rollback of {vm_label} failed: cannot look up snapshot {name:?}: {e}"
            )),
        },
        Action::Release(_) => {
            if state.running {
                Err(format!(
                    "release of {vm_label} refused: it is running (stop it first)"
                ))
            } else {
                domains
                    .undefine(vm)
                    .map(|()| format!("{vm_label} released: definition and snapshots removed, disks kept"))
                    .map_err(|e| format!("release of {vm_label} failed: {e}"))
            }
        }
    };
    match result {
        Ok(message) => Outcome::done(message),
        Err(message) => Outcome::failed(message),
    }
}

/// "vCPU ≤ 50% each, disk ≤ 10485760 B/s and ≤ 200 IOPS per disk", or "no caps".
pub fn describe_limits(caps: VmLimits) -> String {
    let mut parts = Vec::new();
    if let Some(p) = caps.vcpu_percent {
        parts.push(format!("vCPU ≤ {p}% each"));
    }
    match (caps.disk_bytes_sec, caps.disk_iops_sec) {
        (Some(b), Some(i)) => parts.push(format!("disk ≤ {b} B/s and ≤ {i} IOPS per disk")),
        (Some(b), None) => parts.push(format!("disk ≤ {b} B/s per disk")),
        (None, Some(i)) => parts.push(format!("disk ≤ {i} IOPS per disk")),
        (None, None) => {}
    }
    if parts.is_empty() {
        "no caps".into()
    } else {
        parts.join(", ")
    }
}

fn limit<D: Domains>(
    domains: &mut D,
    vm: &VmRef,
    state: DomainState,
    caps: VmLimits,
) -> Result<String, String> {
    let vm_label = label(vm);
    if caps.vcpu_percent.is_some_and(|p| !(1..=100).contains(&p)) {
        return Err(format!(
            "limit of {vm_label} refused: a vCPU cap is a share of 1 to 100 percent"
        ));
    }
    if caps.disk_bytes_sec == Some(0) || caps.disk_iops_sec == Some(0) {
        return Err(format!(
            "limit of {vm_label} refused: a disk cap of 0 would stop its I/O (no cap is None)"
        ));
    }
    let (before, note) = domains
        .limit(vm, caps)
        .map_err(|e| format!("limit of {vm_label} failed: {e}"))?;
    let live = match (state.running, note.is_empty()) {
        (false, _) => " (stopped: the caps apply from its next start)".to_string(),
        (true, true) => " (live and in its definition)".to_string(),
        (true, false) => format!(" ({note}; the caps apply in full from its next start)"),
    };
    let what = if caps.is_none() {
        format!("caps of {vm_label} lifted")
    } else {
        format!("{vm_label} limited to {}", describe_limits(caps))
    };
    Ok(format!("{what}{live}; before: {}", describe_limits(before)))
}

/// [`Action::ReleaseAndWipe`]: see the module docs. The evidence goes with every outcome
/// past the VM's lookup, so what was and was not wiped is on record either way.
fn release_and_wipe<D: Domains>(domains: &mut D, vm: &VmRef, state: DomainState) -> Outcome {
    let vm_label = label(vm);
    if state.running {
        return Outcome::failed(format!(
            "release of {vm_label} refused: it is running (stop it first); nothing was wiped"
        ));
    }
    let disks = match domains.disks(vm) {
        Ok(disks) => disks,
        Err(e) => {
            return Outcome::failed(format!(
                "release of {vm_label} failed, nothing was wiped: cannot read its disks: {e}"
            ))
        }
    };
    let mut evidence: Vec<DiskWipe> = disks
        .iter()
        .map(|d| DiskWipe {
            target: d.target.clone(),
            source: d.source.clone(),
            state: match &d.volume {
                Ok(v) => DiskWipeState::NotWiped(v.clone(), "not reached".into()),
                Err(why) => DiskWipeState::NotWipeable(why.clone()),
            },
        })
        .collect();
    let finish = |ok: bool, message: String, disks: Vec<DiskWipe>| Outcome {
        ok,
        message,
        evidence: Some(Evidence::Wipe(WipeEvidence {
            vm: vm.clone(),
            disks,
        })),
    };
    let unwipeable: Vec<(&str, &str)> = disks
        .iter()
        .filter_map(|d| {
            d.volume
                .as_ref()
                .err()
                .map(|why| (d.target.as_str(), why.as_str()))
        })
        .collect();
    if !unwipeable.is_empty() {
        let targets: Vec<&str> = unwipeable.iter().map(|(t, _)| *t).collect();
        let reason = format!("not wiped: {} cannot be wiped", targets.join(", "));
        for d in &mut evidence {
            if let DiskWipeState::NotWiped(_, why) = &mut d.state {
                why.clone_from(&reason);
            }
        }
        return finish(
            false,
            format!(
                "release of {vm_label} refused, nothing was wiped or removed: {} (put a plain \
                 file or device into a storage pool, or wipe it by hand and release without \
                 wiping; detach a shared disk first)",
                unwipeable
                    .iter()
                    .map(|(target, why)| format!(
                        "disk {target} cannot be wiped through libvirt: {why}"
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            evidence,
        );
    }
    let volumes: Vec<VolumeInfo> = disks.into_iter().filter_map(|d| d.volume.ok()).collect();
    for (i, volume) in volumes.iter().enumerate() {
        if let Err(e) = domains.wipe(volume, WIPE_ALGORITHM) {
            let failed = evidence[i].target.clone();
            evidence[i].state =
                DiskWipeState::NotWiped(volume.clone(), format!("wipe failed: {e}"));
            for later in &mut evidence[i + 1..] {
                if let DiskWipeState::NotWiped(_, reason) = &mut later.state {
                    *reason = format!("not reached: the wipe of {failed} failed");
                }
            }
            return finish(
                false,
                format!(
                    "release of {vm_label} failed at disk {failed}: its wipe failed: {e}; {i} \
                     volume(s) before it were wiped, none deleted, the VM is still defined \
                     (send the release again to retry)"
                ),
                evidence,
            );
        }
        evidence[i].state = DiskWipeState::Wiped {
            volume: volume.clone(),
            algorithm: WIPE_ALGORITHM,
            wiped_ms: now_ms(),
            deleted: false,
        };
    }
    if let Err(e) = domains.undefine(vm) {
        return finish(
            false,
            format!(
                "release of {vm_label} failed after wiping all {} volume(s): cannot undefine \
                 it: {e}; its volumes are wiped, not deleted (send the release again to \
                 retry)",
                volumes.len()
            ),
            evidence,
        );
    }
    let mut undeleted = Vec::new();
    for (i, volume) in volumes.iter().enumerate() {
        match domains.delete(volume) {
            Ok(()) => {
                if let DiskWipeState::Wiped { deleted, .. } = &mut evidence[i].state {
                    *deleted = true;
                }
            }
            Err(e) => undeleted.push(format!("{}/{}: {e}", volume.pool, volume.name)),
        }
    }
    let bytes: u64 = volumes.iter().map(|v| v.capacity_bytes).sum();
    let wiped = format!(
        "{} volume(s), {} MiB, overwritten ({})",
        volumes.len(),
        bytes >> 20,
        WIPE_ALGORITHM.as_str()
    );
    if undeleted.is_empty() {
        finish(
            true,
            format!(
                "{vm_label} released and its data wiped: {wiped} and deleted; definition and \
                 snapshots removed"
            ),
            evidence,
        )
    } else {
        finish(
            false,
            format!(
                "{vm_label} released and its data wiped ({wiped}), but volume(s) not deleted \
                 (they hold only the wipe's pattern): {}",
                undeleted.join("; ")
            ),
            evidence,
        )
    }
}

/// Take snapshot `name` unless it exists; `Ok(true)` when it was taken now.
fn ensure_snapshot<D: Domains>(domains: &mut D, vm: &VmRef, name: &str) -> Result<bool, String> {
    let vm_label = label(vm);
    match domains.has_snapshot(vm, name) {
        Ok(true) => Ok(false),
        Ok(false) => domains
            .take_snapshot(vm, name)
            .map(|()| true)
            .map_err(|e| format!("snapshot {name:?} of {vm_label} failed: {e}")),
        Err(e) => Err(format!(
            "snapshot {name:?} of {vm_label} failed: cannot look up snapshots: {e}"
        )),
    }
}

/// [`ensure_snapshot`] before an action that takes something away: on failure the action is
/// refused. Returns a note for the result message.
fn ensure_snapshot_or_refuse<D: Domains>(
    domains: &mut D,
    vm: &VmRef,
    name: &str,
    kind: &str,
) -> Result<String, String> {
    match ensure_snapshot(domains, vm, name) {
        Ok(true) => Ok(format!("; snapshot {name:?} taken first")),
        Ok(false) => Ok(format!("; snapshot {name:?} exists")),
        Err(e) => Err(format!(
            "{kind} of {} refused, nothing changed: {e}",
            label(vm)
        )),
    }
}

fn downsize<D: Domains>(
    domains: &mut D,
    vm: &VmRef,
    name: &str,
    state: DomainState,
    to: VmSize,
) -> Result<String, String> {
    let vm_label = label(vm);
    if to.vcpus == 0 || to.mem_kib < 1024 {
        return Err(format!(
            "downsize of {vm_label} refused: {} is not a usable size",
            describe(to)
        ));
    }
    let from = state.size;
    if to.vcpus > from.vcpus || to.mem_kib > from.mem_kib {
        return Err(format!(
            "downsize of {vm_label} refused: {} is larger than its current {} in vCPUs or memory",
            describe(to),
            describe(from)
        ));
    }
    let note = ensure_snapshot_or_refuse(domains, vm, name, "downsize")?;
    if to == from {
        return Ok(format!("{vm_label} already has {}{note}", describe(to)));
    }
    let live = domains
        .resize(vm, to)
        .map_err(|e| format!("downsize of {vm_label} failed: {e}"))?;
    let live = if live.is_empty() {
        String::new()
    } else {
        format!(" ({live})")
    };
    Ok(format!(
        "{vm_label} downsized from {} to {}{live}{note}",
        describe(from),
        describe(to)
    ))
}

/// What the hypervisor thread hands back to be published.
#[derive(Debug)]
enum Out {
    /// Queued before its command's result, on the same ordered stream.
    Evidence(CommandEvidence),
    Result(CommandResult),
    Guests(Vec<GuestView>),
}

/// The running hypervisor side of the agent: a thread that owns the libvirt connection and a
/// task that publishes its results and guest lists.
#[derive(Debug)]
pub struct Hypervisor {
    commands: std::sync::mpsc::SyncSender<Command>,
    publisher_task: JoinHandle<()>,
}

impl Hypervisor {
    /// Start the hypervisor thread (it connects, and reconnects, on its own: an unreachable
    /// libvirt does not stop the agent) and the task publishing what it produces.
    pub fn start(
        cfg: &HypervisorConfig,
        publisher: Publisher,
    ) -> Result<Hypervisor, HypervisorError> {
        let (commands, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
        spawn_thread(cfg.clone(), queue, out_tx)?;
        let publisher_task = tokio::spawn(async move {
            while let Some(out) = out_rx.recv().await {
                match out {
                    Out::Evidence(evidence) => {
                        let body = Body::CommandEvidence(evidence);
                        if let Err(error) = publisher.send(now_ms(), body).await {
                            tracing::warn!(%error, "cannot queue a command's evidence");
                        }
                    }
                    Out::Result(result) => publisher.send_result(result).await,
                    Out::Guests(list) => {
                        if let Err(error) = publisher.send(now_ms(), Body::Guests(list)).await {
                            tracing::warn!(%error, "cannot queue the guest list");
                        }
                    }
                }
            }
        });
        Ok(Hypervisor {
            commands,
            publisher_task,
        })
    }

    /// Queue a VM command; it is answered when carried out. `Err` with the reason when the
    /// queue is full or the thread is gone (the caller answers the command as refused).
    pub fn submit(&self, command: Command) -> Result<(), String> {
        match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(_)) => Err(format!(
                "{QUEUE} VM commands are already waiting on this host; send it again later"
            )),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                Err("the hypervisor thread of this agent has stopped".into())
            }
        }
    }

    /// Stop publishing. The thread ends after the command it is carrying out, if any.
    pub fn stop(self) {
        self.publisher_task.abort();
    }
}

#[cfg(feature = "libvirt")]
fn spawn_thread(
    cfg: HypervisorConfig,
    queue: std::sync::mpsc::Receiver<Command>,
    out: tokio::sync::mpsc::UnboundedSender<Out>,
) -> Result<(), HypervisorError> {
    let span = tracing::info_span!("hypervisor", uri = %cfg.uri);
    std::thread::Builder::new()
        .name("libvirt".into())
        .spawn(move || span.in_scope(|| serve(libvirt::Libvirt::new(&cfg), &cfg, &queue, &out)))?;
    Ok(())
}

#[cfg(not(feature = "libvirt"))]
fn spawn_thread(
    _: HypervisorConfig,
    _: std::sync::mpsc::Receiver<Command>,
    _: tokio::sync::mpsc::UnboundedSender<Out>,
) -> Result<(), HypervisorError> {
    Err(HypervisorError::NotBuiltIn)
}

/// The hypervisor thread's loop: commands one at a time, the guest list after each and every
/// `guests_interval`. Ends when the agent drops its [`Hypervisor`].
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
fn serve<D: Domains>(
    mut domains: D,
    cfg: &HypervisorConfig,
    queue: &std::sync::mpsc::Receiver<Command>,
    out: &tokio::sync::mpsc::UnboundedSender<Out>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut next_list = std::time::Instant::now();
    let mut listing_failed = false;
    loop {
        let wait = next_list.saturating_duration_since(std::time::Instant::now());
        match queue.recv_timeout(wait) {
            Ok(command) => {
                let id = crate::publish::command_id_hex(&command.id);
                let outcome = execute(&mut domains, &command.action);
                if outcome.ok {
                    tracing::info!(%id, action = command.action.kind(), message = %outcome.message, "command carried out");
                } else {
                    tracing::warn!(%id, action = command.action.kind(), message = %outcome.message, "command failed");
                }
                if let Some(evidence) = outcome.evidence {
                    let evidence = CommandEvidence {
                        id: command.id,
                        evidence,
                    };
                    if out.send(Out::Evidence(evidence)).is_err() {
                        return;
                    }
                }
                let result = CommandResult {
                    id: command.id,
                    ok: outcome.ok,
                    message: outcome.message,
                };
                if out.send(Out::Result(result)).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        match domains.guests() {
            Ok(list) => {
                if std::mem::take(&mut listing_failed) {
                    tracing::info!("guest list readable again");
                }
                if out.send(Out::Guests(list)).is_err() {
                    return;
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut listing_failed, true) {
                    tracing::warn!(%error, "cannot list the guests; retrying");
                }
            }
        }
        next_list = std::time::Instant::now() + cfg.guests_interval;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
