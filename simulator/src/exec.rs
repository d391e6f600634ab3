//! The simulated hypervisors: every host's VMs as a hypervisor would hold them (defined or not,
//! running or not, vCPUs, memory, snapshots), so the simulated hosts carry out the aggregator's
//! VM commands with the agent's own semantics.
//!
//! [`SimHypervisors`] is built from the fleet (every VM defined, running, at its template's
//! size) and shared by all node tasks. A host answers a VM command by running the agent's
//! [`execute`](yunjian_agent::hypervisor::execute) over [`SimHypervisors::host`], which
//! implements the agent's [`Domains`] trait: the simulator adds no semantics of its own. What
//! the commands change shows up where the real estate would show it:
//!
//! * the host's guest list ([`SimHypervisors::guests`]): a stopped VM as not running, a
//!   downsized one at its new size, a released one gone;
//! * the VM's own node ([`SimHypervisors::powered`]): it reports nothing while it is stopped or
//!   released, and resumes once started or rolled back to a running snapshot;
//! * the host's load counts only the VMs that run;
//! * a `Limit` is kept with the VM (its caps, [`SimHypervisors::limits`]) and the VM's own
//!   reports show it ([`cap_report`]: no core busier than its vCPU share, no disk faster than
//!   its throughput cap); each simulated disk
//!   is a storage volume of the pool `sim`, so a wiping release wipes and deletes them all and
//!   its evidence names each with its size.
//!
//! A VM whose node the simulation killed ([`crate::Simulation::kill_node`]) counts as not
//! running; it cannot be started again (its node task is gone), so a start, or a rollback to a
//! running snapshot, fails saying so.

use crate::fleet::{Fleet, NodeKind};
use crate::synth::hardware;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use yunjian_agent::hypervisor::{DomainState, Domains, VmDisk};
use yunjian_protocol::{GuestView, Report, VmLimits, VmRef, VmSize, VolumeInfo, WipeAlgorithm};

/// The storage pool the simulated disks are volumes of.
pub const SIM_POOL: &str = "sim";

/// Why a simulated hypervisor operation failed (quoted in the command's result).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("domain not found: no domain with matching uuid")]
    NotDefined,
    #[error("domain snapshot not found: no snapshot with matching name {0:?}")]
    NoSnapshot(String),
    #[error("the simulated VM's node was killed by the simulation and cannot boot again")]
    Killed,
    #[error("storage volume not found: no storage vol with matching name {0:?}")]
    NoVolume(String),
}

/// One simulated VM, as its hypervisor knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SimVm {
    /// Index of the VM's node in [`Fleet::nodes`].
    node: usize,
    uuid: String,
    name: String,
    disk_kib: u64,
    /// Its disks: target and volume, in the pool [`SIM_POOL`].
    disks: Vec<(String, VolumeInfo)>,
    caps: VmLimits,
    state: DomainState,
    /// Snapshot name → the VM's state when it was taken.
    snapshots: BTreeMap<String, DomainState>,
}

impl SimVm {
    fn view(&self, running: bool) -> GuestView {
        GuestView {
            uuid: self.uuid.clone(),
            name: self.name.clone(),
            vcpus: self.state.size.vcpus,
            mem_kib: self.state.size.mem_kib,
            disk_kib: self.disk_kib,
            running,
        }
    }
}

/// The VMs defined on one host, in the fleet's order; a released VM is removed.
#[derive(Debug)]
struct HostVms {
    /// Whether the fleet gave this host any VMs (a host without never lists guests).
    has_guests: bool,
    vms: Vec<SimVm>,
}

impl HostVms {
    fn list(&self, killed: impl Fn(usize) -> bool) -> Vec<GuestView> {
        self.vms
            .iter()
            .map(|vm| vm.view(vm.state.running && !killed(vm.node)))
            .collect()
    }
}

/// Every host's VMs, shared by the simulation's node tasks. One lock per host: a command on one
/// host never waits for another.
#[derive(Debug)]
pub struct SimHypervisors {
    /// Indexed by host ([`Fleet::hosts`] is a prefix of [`Fleet::nodes`]).
    hosts: Box<[Mutex<HostVms>]>,
    /// For every VM node (`idx - hosts.len()`), the index of its host.
    host_of: Box<[usize]>,
}

impl SimHypervisors {
    /// Every VM of `fleet` defined on its host, running, at its template's size, without
    /// snapshots.
    pub fn new(fleet: &Fleet) -> Self {
        let hosts = fleet
            .hosts()
            .iter()
            .map(|h| {
                let NodeKind::Host { guests } = &h.kind else {
                    unreachable!("the fleet's hosts are hosts")
                };
                let vms = guests
                    .clone()
                    .filter_map(|g| {
                        let vm = &fleet.nodes()[g];
                        let NodeKind::Guest { uuid, .. } = &vm.kind else {
                            return None;
                        };
                        let hw = hardware(fleet, g);
                        Some(SimVm {
                            node: g,
                            uuid: uuid.clone(),
                            name: vm.id.clone(),
                            disk_kib: hw.disks.iter().map(|d| d.1).sum(),
                            disks: hw
                                .disks
                                .iter()
                                .enumerate()
                                .map(|(i, (_, kib))| {
                                    let target = format!("vd{}", char::from(b'a' + (i % 26) as u8));
                                    let volume = VolumeInfo {
                                        pool: SIM_POOL.into(),
                                        name: format!("{}-{target}", vm.id),
                                        capacity_bytes: kib * 1024,
                                    };
                                    (target, volume)
                                })
                                .collect(),
                            caps: VmLimits::NONE,
                            state: DomainState {
                                running: true,
                                size: VmSize {
                                    vcpus: hw.cores,
                                    mem_kib: hw.mem_kib,
                                },
                            },
                            snapshots: BTreeMap::new(),
                        })
                    })
                    .collect();
                Mutex::new(HostVms {
                    has_guests: !guests.is_empty(),
                    vms,
                })
            })
            .collect();
        let host_of = fleet.nodes()[fleet.hosts().len()..]
            .iter()
            .map(|n| match n.kind {
                NodeKind::Guest { host, .. } => host,
                NodeKind::Host { .. } => unreachable!("hosts come first in the fleet"),
            })
            .collect();
        SimHypervisors { hosts, host_of }
    }

    fn lock(&self, host: usize) -> Option<MutexGuard<'_, HostVms>> {
        self.hosts
            .get(host)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Host `host`'s VMs as the agent's [`Domains`], for
    /// [`execute`](yunjian_agent::hypervisor::execute); `killed(i)` tells whether the
    /// simulation killed VM node `i`. Holds the host's lock until dropped. `None` when `host`
    /// is not a host.
    pub fn host<K: Fn(usize) -> bool>(&self, host: usize, killed: K) -> Option<HostDomains<'_, K>> {
        Some(HostDomains {
            vms: self.lock(host)?,
            killed,
        })
    }

    /// Whether VM node `node` is powered on: defined on its host and running. `false` for a
    /// host's index.
    pub fn powered(&self, node: usize) -> bool {
        let Some(&host) = node
            .checked_sub(self.hosts.len())
            .and_then(|i| self.host_of.get(i))
        else {
            return false;
        };
        self.lock(host)
            .is_some_and(|h| h.vms.iter().any(|vm| vm.node == node && vm.state.running))
    }

    /// The caps of VM node `node` (no caps for one not defined, or not a VM).
    pub fn limits(&self, node: usize) -> VmLimits {
        let Some(&host) = node
            .checked_sub(self.hosts.len())
            .and_then(|i| self.host_of.get(i))
        else {
            return VmLimits::NONE;
        };
        self.lock(host)
            .and_then(|h| h.vms.iter().find(|vm| vm.node == node).map(|vm| vm.caps))
            .unwrap_or(VmLimits::NONE)
    }

    /// Host `host`'s guest list (every VM defined there); `killed(i)` as in
    /// [`SimHypervisors::host`]. `None` for a node that is not a host, or a host the scenario
    /// gave no VMs; `Some` of an empty list once all its VMs are released.
    pub fn guests(&self, host: usize, killed: impl Fn(usize) -> bool) -> Option<Vec<GuestView>> {
        let h = self.lock(host)?;
        h.has_guests.then(|| h.list(killed))
    }
}

/// A VM's report as its caps let it be: every core at most the vCPU share (`cpu_busy` is their
/// mean again), every disk's read plus write rate at most the throughput cap (scaled down
/// together).
pub fn cap_report(report: &mut Report, caps: VmLimits) {
    if let Some(percent) = caps.vcpu_percent {
        let most = u16::from(percent.min(100)) * 100;
        for core in &mut report.per_core {
            *core = (*core).min(most);
        }
        if !report.per_core.is_empty() {
            let sum: u32 = report.per_core.iter().map(|&c| u32::from(c)).sum();
            report.cpu_busy = (sum / report.per_core.len() as u32) as u16;
        } else {
            report.cpu_busy = report.cpu_busy.min(most);
        }
    }
    if let Some(most) = caps.disk_bytes_sec {
        for disk in &mut report.disks {
            let total = disk.read_bps + disk.write_bps;
            if total > most {
                disk.read_bps = disk.read_bps * most / total;
                disk.write_bps = most - disk.read_bps;
            }
        }
    }
}

/// One host's VMs, locked, as the agent's [`Domains`].
#[derive(Debug)]
pub struct HostDomains<'a, K> {
    vms: MutexGuard<'a, HostVms>,
    killed: K,
}

impl<K: Fn(usize) -> bool> HostDomains<'_, K> {
    fn vm(&mut self, vm: &VmRef) -> Result<&mut SimVm, DomainError> {
        self.vms
            .vms
            .iter_mut()
            .find(|v| v.uuid.eq_ignore_ascii_case(&vm.uuid))
            .ok_or(DomainError::NotDefined)
    }

    /// Boot `vm` into `state`, unless its node is gone.
    fn boot(&mut self, vm: &VmRef, state: DomainState) -> Result<(), DomainError> {
        let node = self.vm(vm)?.node;
        if state.running && (self.killed)(node) {
            return Err(DomainError::Killed);
        }
        self.vm(vm)?.state = state;
        Ok(())
    }
}

impl<K: Fn(usize) -> bool> Domains for HostDomains<'_, K> {
    type Error = DomainError;

    fn find(&mut self, vm: &VmRef) -> Result<Option<DomainState>, DomainError> {
        let killed = &self.killed;
        Ok(self
            .vms
            .vms
            .iter()
            .find(|v| v.uuid.eq_ignore_ascii_case(&vm.uuid))
            .map(|v| DomainState {
                running: v.state.running && !killed(v.node),
                size: v.state.size,
            }))
    }

    fn has_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<bool, DomainError> {
        Ok(self.vm(vm)?.snapshots.contains_key(name))
    }

    fn take_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<(), DomainError> {
        let v = self.vm(vm)?;
        let state = v.state;
        v.snapshots.insert(name.into(), state);
        Ok(())
    }

    fn revert(&mut self, vm: &VmRef, name: &str) -> Result<(), DomainError> {
        let state = *self
            .vm(vm)?
            .snapshots
            .get(name)
            .ok_or_else(|| DomainError::NoSnapshot(name.into()))?;
        self.boot(vm, state)
    }

    fn stop(&mut self, vm: &VmRef) -> Result<String, DomainError> {
        self.vm(vm)?.state.running = false;
        Ok("shut down cleanly in 0 s, simulated".into())
    }

    fn start(&mut self, vm: &VmRef) -> Result<(), DomainError> {
        let size = self.vm(vm)?.state.size;
        self.boot(
            vm,
            DomainState {
                running: true,
                size,
            },
        )
    }

    fn resize(&mut self, vm: &VmRef, size: VmSize) -> Result<String, DomainError> {
        self.vm(vm)?.state.size = size;
        Ok(String::new())
    }

    fn undefine(&mut self, vm: &VmRef) -> Result<(), DomainError> {
        let before = self.vms.vms.len();
        self.vms
            .vms
            .retain(|v| !v.uuid.eq_ignore_ascii_case(&vm.uuid));
        if self.vms.vms.len() == before {
            return Err(DomainError::NotDefined);
        }
        Ok(())
    }

    fn limit(&mut self, vm: &VmRef, caps: VmLimits) -> Result<(VmLimits, String), DomainError> {
        Ok((
            std::mem::replace(&mut self.vm(vm)?.caps, caps),
            String::new(),
        ))
    }

    fn disks(&mut self, vm: &VmRef) -> Result<Vec<VmDisk>, DomainError> {
        Ok(self
            .vm(vm)?
            .disks
            .iter()
            .map(|(target, volume)| VmDisk {
                target: target.clone(),
                source: format!("/sim/{}", volume.name),
                volume: Ok(volume.clone()),
            })
            .collect())
    }

    fn wipe(&mut self, volume: &VolumeInfo, _: WipeAlgorithm) -> Result<(), DomainError> {
        // a simulated volume holds no data; it must still exist (owned by a defined VM)
        let exists = self
            .vms
            .vms
            .iter()
            .any(|v| v.disks.iter().any(|(_, d)| d == volume));
        exists
            .then_some(())
            .ok_or_else(|| DomainError::NoVolume(volume.name.clone()))
    }

    fn delete(&mut self, _: &VolumeInfo) -> Result<(), DomainError> {
        // the volume went with its VM's definition (`undefine` drops the SimVm)
        Ok(())
    }

    fn guests(&mut self) -> Result<Vec<GuestView>, DomainError> {
        Ok(self.vms.list(&self.killed))
    }
}

#[cfg(test)]
mod tests {
    //! The agent's action semantics (its `hypervisor/tests.rs`) hold for the simulated VMs, and
    //! their effects show in the guest list and the VMs' power state.

    use super::*;
    use crate::scenario::Scenario;
    use crate::synth;
    use yunjian_agent::hypervisor::{execute, Outcome};
    use yunjian_protocol::Action;

    const GIB: u64 = 1 << 20;

    /// One host (index 0) with two VMs (nodes 1 and 2).
    fn fleet() -> Fleet {
        Fleet::build(Scenario::uniform(1, 1, 2, 5)).unwrap()
    }

    fn vm_ref(fleet: &Fleet, node: usize) -> VmRef {
        let NodeKind::Guest { uuid, .. } = &fleet.nodes()[node].kind else {
            panic!("node {node} is not a VM")
        };
        VmRef {
            uuid: uuid.clone(),
            name: fleet.nodes()[node].id.clone(),
        }
    }

    fn none_killed(_: usize) -> bool {
        false
    }

    fn run(hv: &SimHypervisors, action: Action) -> Outcome {
        execute(&mut hv.host(0, none_killed).unwrap(), &action)
    }

    fn listed(hv: &SimHypervisors, node: usize) -> Option<GuestView> {
        let name = format!("rack1-h01-vm{node}");
        hv.guests(0, none_killed)
            .unwrap()
            .into_iter()
            .find(|g| g.name == name)
    }

    #[test]
    fn the_initial_guest_list_is_the_fleets() {
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        assert_eq!(
            hv.guests(0, none_killed),
            Some(synth::guests(&fleet, 0, |_| true))
        );
        assert!(hv.powered(1) && hv.powered(2));
        assert!(!hv.powered(0), "a host is not a VM");
        assert!(hv.guests(1, none_killed).is_none(), "a VM lists no guests");
        let bare = Fleet::build(Scenario::uniform(1, 1, 0, 5)).unwrap();
        assert_eq!(SimHypervisors::new(&bare).guests(0, none_killed), None);
    }

    #[test]
    fn stop_takes_the_snapshot_first_powers_the_vm_off_and_a_second_stop_changes_nothing() {
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        let stop = Action::Stop(vm_ref(&fleet, 1), "reclaim-1".into());
        let first = run(&hv, stop.clone());
        assert!(first.ok, "{first:?}");
        assert!(
            first.message.contains("rack1-h01-vm1")
                && first.message.contains("stopped")
                && first.message.contains("taken first"),
            "{first:?}"
        );
        assert!(!hv.powered(1) && hv.powered(2));
        assert!(!listed(&hv, 1).unwrap().running);
        assert!(listed(&hv, 2).unwrap().running);

        let again = run(&hv, stop);
        assert!(
            again.ok
                && again.message.contains("already stopped")
                && again.message.contains("exists"),
            "{again:?}"
        );
        assert!(!hv.powered(1));
    }

    #[test]
    fn downsize_shows_in_the_guest_list_and_rollback_restores_size_and_power() {
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        let vm = vm_ref(&fleet, 1);
        let before = listed(&hv, 1).unwrap();
        let to = VmSize {
            vcpus: 1,
            mem_kib: GIB,
        };
        assert!(before.vcpus > 1 && before.mem_kib > GIB, "{before:?}");

        let down = run(&hv, Action::Downsize(vm.clone(), "pre".into(), to));
        assert!(down.ok && down.message.contains("downsized"), "{down:?}");
        let after = listed(&hv, 1).unwrap();
        assert_eq!((after.vcpus, after.mem_kib, after.running), (1, GIB, true));
        assert_eq!(after.disk_kib, before.disk_kib, "disks untouched");

        let again = run(&hv, Action::Downsize(vm.clone(), "pre".into(), to));
        assert!(
            again.ok && again.message.contains("already has"),
            "{again:?}"
        );
        let up = run(
            &hv,
            Action::Downsize(
                vm.clone(),
                "x".into(),
                VmSize {
                    vcpus: 2,
                    mem_kib: GIB,
                },
            ),
        );
        assert!(!up.ok && up.message.contains("larger"), "{up:?}");

        assert!(run(&hv, Action::Stop(vm.clone(), "pre".into())).ok);
        assert!(!hv.powered(1));
        let back = run(&hv, Action::Rollback(vm.clone(), "pre".into()));
        assert!(back.ok && back.message.contains("running"), "{back:?}");
        assert_eq!(listed(&hv, 1), Some(before));
        assert!(hv.powered(1), "rolled back to a running snapshot: on again");

        let missing = run(&hv, Action::Rollback(vm, "never-taken".into()));
        assert!(
            !missing.ok && missing.message.contains("no snapshot"),
            "{missing:?}"
        );
    }

    #[test]
    fn rollback_to_a_snapshot_of_a_stopped_vm_leaves_it_off() {
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        let vm = vm_ref(&fleet, 2);
        assert!(run(&hv, Action::Stop(vm.clone(), "running-then".into())).ok);
        assert!(run(&hv, Action::Snapshot(vm.clone(), "stopped-then".into())).ok);
        assert!(run(&hv, Action::Start(vm.clone())).ok);
        assert!(hv.powered(2));
        let back = run(&hv, Action::Rollback(vm, "stopped-then".into()));
        assert!(back.ok && back.message.contains("stopped"), "{back:?}");
        assert!(!hv.powered(2));
        assert!(!listed(&hv, 2).unwrap().running);
    }

    #[test]
    fn release_is_refused_while_running_then_the_vm_is_gone_for_good() {
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        let vm = vm_ref(&fleet, 1);
        let refused = run(&hv, Action::Release(vm.clone()));
        assert!(
            !refused.ok && refused.message.contains("running"),
            "{refused:?}"
        );
        assert!(listed(&hv, 1).is_some());

        assert!(run(&hv, Action::Stop(vm.clone(), "s".into())).ok);
        let released = run(&hv, Action::Release(vm.clone()));
        assert!(
            released.ok && released.message.contains("released"),
            "{released:?}"
        );
        assert_eq!(listed(&hv, 1), None);
        assert!(!hv.powered(1));
        let again = run(&hv, Action::Release(vm.clone()));
        assert!(
            again.ok && again.message.contains("already released"),
            "{again:?}"
        );
        let start = run(&hv, Action::Start(vm.clone()));
        assert!(!start.ok && start.message.contains(&vm.uuid), "{start:?}");

        // the last VM released: the host still lists its (empty) guests
        let other = vm_ref(&fleet, 2);
        assert!(run(&hv, Action::Stop(other.clone(), "s".into())).ok);
        assert!(run(&hv, Action::Release(other)).ok);
        assert_eq!(hv.guests(0, none_killed), Some(Vec::new()));
    }

    #[test]
    fn limit_is_kept_with_the_vm_and_lifted_by_no_caps() {
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        let vm = vm_ref(&fleet, 1);
        let caps = VmLimits {
            vcpu_percent: Some(25),
            disk_bytes_sec: None,
            disk_iops_sec: Some(50),
        };
        let out = run(&hv, Action::Limit(vm.clone(), caps));
        assert!(
            out.ok && out.message.contains("limited to vCPU ≤ 25% each"),
            "{out:?}"
        );
        assert_eq!(hv.limits(1), caps);
        assert_eq!(hv.limits(2), VmLimits::NONE, "the other VM is untouched");
        assert!(hv.powered(1), "a limited VM keeps running");
        let lifted = run(&hv, Action::Limit(vm, VmLimits::NONE));
        assert!(lifted.ok && lifted.message.contains("lifted"), "{lifted:?}");
        assert_eq!(hv.limits(1), VmLimits::NONE);
    }

    #[test]
    fn a_limited_vms_reports_stay_within_its_caps() {
        let fleet = fleet();
        let mut sim = synth::NodeSim::new(&fleet, 1, 1_700_000_000_000, 10_000);
        let mut report = sim.report(&fleet, 1_700_000_000_000, |_| true);
        report.per_core = vec![9_000, 1_000];
        report.cpu_busy = 5_000;
        report.disks[0].read_bps = 3_000_000;
        report.disks[0].write_bps = 1_000_000;
        let untouched = report.clone();
        cap_report(&mut report, VmLimits::NONE);
        assert_eq!(report, untouched, "no caps, no change");
        let caps = VmLimits {
            vcpu_percent: Some(30),
            disk_bytes_sec: Some(2_000_000),
            disk_iops_sec: None,
        };
        cap_report(&mut report, caps);
        assert_eq!(
            (report.per_core.as_slice(), report.cpu_busy),
            (&[3_000, 1_000][..], 2_000)
        );
        assert_eq!(
            (report.disks[0].read_bps, report.disks[0].write_bps),
            (1_500_000, 500_000)
        );
    }

    #[test]
    fn release_and_wipe_gives_evidence_for_every_simulated_disk() {
        use yunjian_protocol::{DiskWipeState, Evidence};
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        let vm = vm_ref(&fleet, 1);
        let disks = synth::hardware(&fleet, 1).disks;
        assert!(!disks.is_empty());
        let refused = run(&hv, Action::ReleaseAndWipe(vm.clone()));
        assert!(
            !refused.ok && refused.message.contains("running"),
            "{refused:?}"
        );
        assert!(run(&hv, Action::Stop(vm.clone(), "s".into())).ok);
        let out = run(&hv, Action::ReleaseAndWipe(vm.clone()));
        assert!(out.ok, "{out:?}");
        assert_eq!(listed(&hv, 1), None, "released");
        let Some(Evidence::Wipe(evidence)) = &out.evidence else {
            panic!("no evidence: {out:?}")
        };
        assert!(evidence.complete());
        assert_eq!(evidence.vm, vm);
        assert_eq!(evidence.disks.len(), disks.len());
        for (disk, (_, kib)) in evidence.disks.iter().zip(&disks) {
            let DiskWipeState::Wiped { volume, .. } = &disk.state else {
                panic!("{disk:?}")
            };
            assert_eq!(
                (volume.pool.as_str(), volume.capacity_bytes),
                (SIM_POOL, kib * 1024)
            );
        }
        assert_eq!(evidence.disks[0].target, "vda");
        let again = run(&hv, Action::ReleaseAndWipe(vm));
        assert!(!again.ok && again.evidence.is_none(), "{again:?}");
    }

    #[test]
    fn a_vm_is_found_by_uuid_on_its_own_host_only() {
        let fleet = Fleet::build(Scenario::uniform(1, 2, 1, 5)).unwrap();
        let hv = SimHypervisors::new(&fleet);
        // node 2 is rack1-h01-vm1, node 3 rack1-h02-vm1
        let mut vm = vm_ref(&fleet, 3);
        let elsewhere = execute(
            &mut hv.host(0, none_killed).unwrap(),
            &Action::Stop(vm.clone(), "s".into()),
        );
        assert!(
            !elsewhere.ok && elsewhere.message.contains("no VM with this UUID"),
            "{elsewhere:?}"
        );
        assert!(hv.powered(3));
        vm.uuid = vm.uuid.to_ascii_uppercase();
        let here = execute(
            &mut hv.host(1, none_killed).unwrap(),
            &Action::Stop(vm, "s".into()),
        );
        assert!(here.ok, "{here:?}");
        assert!(!hv.powered(3) && hv.powered(2));
    }

    #[test]
    fn a_killed_vm_is_listed_stopped_and_cannot_be_booted() {
        let fleet = fleet();
        let hv = SimHypervisors::new(&fleet);
        let vm = vm_ref(&fleet, 1);
        let vm1_killed = |n: usize| n == 1;
        assert!(
            execute(
                &mut hv.host(0, vm1_killed).unwrap(),
                &Action::Snapshot(vm.clone(), "on".into())
            )
            .ok
        );
        let list = hv.guests(0, vm1_killed).unwrap();
        assert_eq!(
            list.iter().map(|g| g.running).collect::<Vec<_>>(),
            [false, true]
        );
        for action in [Action::Start(vm.clone()), Action::Rollback(vm, "on".into())] {
            let out = execute(&mut hv.host(0, vm1_killed).unwrap(), &action);
            assert!(!out.ok && out.message.contains("killed"), "{out:?}");
        }
    }
}
