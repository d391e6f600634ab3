//! The action semantics of [`execute`] over an in-memory hypervisor that records every change.

use super::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
struct Vm {
    state: DomainState,
    /// name → the state when it was taken
    snapshots: BTreeMap<String, DomainState>,
}

#[derive(Debug, Default)]
struct Fake {
    vms: BTreeMap<String, Vm>,
    /// every change made, in order
    log: Vec<String>,
    fail_snapshots: bool,
}

const UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

fn vm() -> VmRef {
    VmRef {
        uuid: UUID.into(),
        name: "web-01".into(),
    }
}

fn size(vcpus: u16, gib: u64) -> VmSize {
    VmSize {
        vcpus,
        mem_kib: gib << 20,
    }
}

impl Fake {
    fn with_running_vm() -> Fake {
        let mut fake = Fake::default();
        fake.vms.insert(
            UUID.into(),
            Vm {
                state: DomainState {
                    running: true,
                    size: size(4, 8),
                },
                snapshots: BTreeMap::new(),
            },
        );
        fake
    }

    fn vm(&mut self, vm: &VmRef) -> Result<&mut Vm, String> {
        self.vms.get_mut(&vm.uuid).ok_or("gone".to_string())
    }

    fn state(&self) -> DomainState {
        self.vms[UUID].state
    }
}

impl Domains for Fake {
    type Error = String;
    fn find(&mut self, vm: &VmRef) -> Result<Option<DomainState>, String> {
        Ok(self.vms.get(&vm.uuid).map(|v| v.state))
    }
    fn has_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<bool, String> {
        Ok(self.vm(vm)?.snapshots.contains_key(name))
    }
    fn take_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<(), String> {
        if self.fail_snapshots {
            return Err("disk is raw, no snapshots".into());
        }
        let v = self.vm(vm)?;
        let state = v.state;
        v.snapshots.insert(name.into(), state);
        self.log.push(format!("snapshot {name}"));
        Ok(())
    }
    fn revert(&mut self, vm: &VmRef, name: &str) -> Result<(), String> {
        let v = self.vm(vm)?;
        v.state = v.snapshots[name];
        self.log.push(format!("revert {name}"));
        Ok(())
    }
    fn stop(&mut self, vm: &VmRef) -> Result<String, String> {
        self.vm(vm)?.state.running = false;
        self.log.push("stop".into());
        Ok("shut down cleanly in 0 s".into())
    }
    fn start(&mut self, vm: &VmRef) -> Result<(), String> {
        self.vm(vm)?.state.running = true;
        self.log.push("start".into());
        Ok(())
    }
    fn resize(&mut self, vm: &VmRef, to: VmSize) -> Result<String, String> {
        self.vm(vm)?.state.size = to;
        self.log.push(format!("resize {}/{}", to.vcpus, to.mem_kib));
        Ok(String::new())
    }
    fn undefine(&mut self, vm: &VmRef) -> Result<(), String> {
        self.vms.remove(&vm.uuid);
        self.log.push("undefine".into());
        Ok(())
    }
    fn guests(&mut self) -> Result<Vec<GuestView>, String> {
        unreachable!("execute never lists guests")
    }
}

#[test]
fn stop_takes_the_snapshot_first_and_a_second_stop_changes_nothing() {
    let mut fake = Fake::with_running_vm();
    let stop = Action::Stop(vm(), "reclaim-1".into());
    let first = execute(&mut fake, &stop);
    assert!(first.ok, "{first:?}");
    assert_eq!(fake.log, ["snapshot reclaim-1", "stop"]);
    assert!(first.message.contains("web-01") && first.message.contains("taken first"));
    assert!(!fake.state().running);

    let again = execute(&mut fake, &stop);
    assert!(
        again.ok && again.message.contains("already stopped"),
        "{again:?}"
    );
    assert_eq!(fake.log.len(), 2, "nothing more was done");
}

#[test]
fn nothing_is_taken_away_without_a_snapshot() {
    let mut fake = Fake::with_running_vm();
    fake.fail_snapshots = true;
    for action in [
        Action::Stop(vm(), "s".into()),
        Action::Downsize(vm(), "s".into(), size(2, 4)),
    ] {
        let out = execute(&mut fake, &action);
        assert!(!out.ok);
        assert!(
            out.message.contains("refused") && out.message.contains("disk is raw"),
            "{out:?}"
        );
    }
    assert!(fake.log.is_empty());
    assert_eq!(fake.state().size, size(4, 8));
}

#[test]
fn downsize_then_rollback_restores_size_and_running_state() {
    let mut fake = Fake::with_running_vm();
    let down = execute(
        &mut fake,
        &Action::Downsize(vm(), "before-downsize".into(), size(2, 4)),
    );
    assert!(down.ok, "{down:?}");
    assert_eq!(fake.state().size, size(2, 4));
    assert!(down
        .message
        .contains("from 4 vCPU / 8192 MiB to 2 vCPU / 4096 MiB"));
    // the same downsize again: already there
    let again = execute(
        &mut fake,
        &Action::Downsize(vm(), "before-downsize".into(), size(2, 4)),
    );
    assert!(
        again.ok && again.message.contains("already has"),
        "{again:?}"
    );
    // growing is not a downsize
    let up = execute(&mut fake, &Action::Downsize(vm(), "x".into(), size(8, 4)));
    assert!(!up.ok && up.message.contains("larger"), "{up:?}");
    execute(&mut fake, &Action::Stop(vm(), "before-downsize".into()));

    let back = execute(&mut fake, &Action::Rollback(vm(), "before-downsize".into()));
    assert!(back.ok, "{back:?}");
    assert_eq!(
        fake.state(),
        DomainState {
            running: true,
            size: size(4, 8)
        }
    );
    assert!(
        back.message.contains("running, 4 vCPU / 8192 MiB"),
        "{back:?}"
    );
    let missing = execute(&mut fake, &Action::Rollback(vm(), "never-taken".into()));
    assert!(
        !missing.ok && missing.message.contains("no snapshot"),
        "{missing:?}"
    );
}

#[test]
fn release_is_refused_while_running_and_idempotent_once_done() {
    let mut fake = Fake::with_running_vm();
    let refused = execute(&mut fake, &Action::Release(vm()));
    assert!(
        !refused.ok && refused.message.contains("running"),
        "{refused:?}"
    );
    assert!(fake.vms.contains_key(UUID));

    execute(&mut fake, &Action::Stop(vm(), "s".into()));
    let released = execute(&mut fake, &Action::Release(vm()));
    assert!(released.ok, "{released:?}");
    assert!(fake.vms.is_empty());
    let again = execute(&mut fake, &Action::Release(vm()));
    assert!(
        again.ok && again.message.contains("already released"),
        "{again:?}"
    );
    // other actions on a VM that is not here fail, naming it
    let start = execute(&mut fake, &Action::Start(vm()));
    assert!(!start.ok && start.message.contains("web-01") && start.message.contains(UUID));
}

#[test]
fn snapshot_and_start_are_idempotent() {
    let mut fake = Fake::with_running_vm();
    let snap = Action::Snapshot(vm(), "s1".into());
    assert!(execute(&mut fake, &snap).message.contains("taken"));
    assert!(execute(&mut fake, &snap).message.contains("already exists"));
    assert!(execute(&mut fake, &Action::Start(vm()))
        .message
        .contains("already running"));
    assert_eq!(fake.log, ["snapshot s1"]);
}

#[test]
fn config_is_off_by_default_and_checked_when_on() {
    let cfg = HypervisorConfig::default();
    assert!(!cfg.enabled);
    assert!(cfg.validate().is_ok());
    let bad = HypervisorConfig {
        enabled: true,
        uri: " ".into(),
        ..HypervisorConfig::default()
    };
    assert!(bad.validate().unwrap_err().contains("hypervisor.uri"));
}
