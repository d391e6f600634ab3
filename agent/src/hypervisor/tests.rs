//! The action semantics of [`execute`] over an in-memory hypervisor that records every change.

use super::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
struct Vm {
    state: DomainState,
    caps: VmLimits,
    disks: Vec<VmDisk>,
    /// name → the state when it was taken
    snapshots: BTreeMap<String, DomainState>,
}

#[derive(Debug, Default)]
struct Fake {
    vms: BTreeMap<String, Vm>,
    /// every change made, in order
    log: Vec<String>,
    fail_snapshots: bool,
    /// volumes whose wipe fails, and whose delete fails
    fail_wipe: Vec<String>,
    fail_delete: Vec<String>,
    /// what `limit` reports as not applied live
    live_note: String,
}

fn volume(name: &str, gib: u64) -> VolumeInfo {
    VolumeInfo {
        pool: "default".into(),
        name: name.into(),
        capacity_bytes: gib << 30,
    }
}

fn volume_disk(target: &str, name: &str, gib: u64) -> VmDisk {
    VmDisk {
        target: target.into(),
        source: format!("/var/lib/libvirt/images/{name}"),
        volume: Ok(volume(name, gib)),
    }
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
                caps: VmLimits::NONE,
                disks: vec![
                    volume_disk("vda", "web-01-root", 20),
                    volume_disk("vdb", "web-01-data", 100),
                ],
            },
        );
        fake
    }

    fn with_stopped_vm() -> Fake {
        let mut fake = Fake::with_running_vm();
        fake.vms.get_mut(UUID).unwrap().state.running = false;
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
    fn limit(&mut self, vm: &VmRef, caps: VmLimits) -> Result<(VmLimits, String), String> {
        let before = std::mem::replace(&mut self.vm(vm)?.caps, caps);
        self.log.push(format!("limit {}", describe_limits(caps)));
        Ok((before, self.live_note.clone()))
    }
    fn disks(&mut self, vm: &VmRef) -> Result<Vec<VmDisk>, String> {
        Ok(self.vm(vm)?.disks.clone())
    }
    fn wipe(&mut self, volume: &VolumeInfo, algorithm: WipeAlgorithm) -> Result<(), String> {
        if self.fail_wipe.contains(&volume.name) {
            return Err("wiping is not supported by this pool".into());
        }
        self.log
            .push(format!("wipe {} {}", volume.name, algorithm.as_str()));
        Ok(())
    }
    fn delete(&mut self, volume: &VolumeInfo) -> Result<(), String> {
        if self.fail_delete.contains(&volume.name) {
            return Err("volume is busy".into());
        }
        self.log.push(format!("delete {}", volume.name));
        Ok(())
    }
    fn guests(&mut self) -> Result<Vec<GuestView>, String> {
        Ok(Vec::new())
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
fn limit_sets_the_whole_set_of_caps_and_no_caps_lifts_them() {
    let mut fake = Fake::with_running_vm();
    let caps = VmLimits {
        vcpu_percent: Some(30),
        disk_bytes_sec: Some(5 << 20),
        disk_iops_sec: Some(100),
    };
    let out = execute(&mut fake, &Action::Limit(vm(), caps));
    assert!(out.ok, "{out:?}");
    assert_eq!(fake.vms[UUID].caps, caps);
    assert_eq!(
        out.message,
        "VM web-01 (6695eb01-f6a4-8304-79aa-97f2502e193f) limited to vCPU ≤ 30% each, disk ≤ \
         5242880 B/s and ≤ 100 IOPS per disk (live and in its definition); before: no caps"
    );
    assert!(out.evidence.is_none());
    // a hypervisor that cannot apply a cap live says so, and the VM keeps running
    fake.live_note = "vCPU cap not applied live: unsupported".into();
    let cpu_only = VmLimits {
        vcpu_percent: Some(50),
        ..VmLimits::NONE
    };
    let out = execute(&mut fake, &Action::Limit(vm(), cpu_only));
    assert!(out.ok, "{out:?}");
    assert!(
        out.message
            .contains("not applied live: unsupported; the caps apply in full from its next start")
            && out
                .message
                .contains("before: vCPU ≤ 30% each, disk ≤ 5242880 B/s"),
        "{out:?}"
    );
    assert!(fake.state().running);
    // no caps: lifted
    fake.live_note.clear();
    let lifted = execute(&mut fake, &Action::Limit(vm(), VmLimits::NONE));
    assert!(
        lifted.ok && lifted.message.contains("caps of VM web-01"),
        "{lifted:?}"
    );
    assert!(
        lifted.message.contains("lifted") && lifted.message.contains("before: vCPU ≤ 50% each")
    );
    assert_eq!(fake.vms[UUID].caps, VmLimits::NONE);
    // nonsense caps are refused before anything changes
    let changes = fake.log.len();
    for bad in [
        VmLimits {
            vcpu_percent: Some(0),
            ..VmLimits::NONE
        },
        VmLimits {
            vcpu_percent: Some(101),
            ..VmLimits::NONE
        },
        VmLimits {
            disk_iops_sec: Some(0),
            ..VmLimits::NONE
        },
    ] {
        let out = execute(&mut fake, &Action::Limit(vm(), bad));
        assert!(!out.ok && out.message.contains("refused"), "{out:?}");
    }
    assert_eq!(fake.log.len(), changes);
    // a stopped VM is limited in its definition, from its next start
    execute(&mut fake, &Action::Stop(vm(), "s".into()));
    let out = execute(&mut fake, &Action::Limit(vm(), cpu_only));
    assert!(
        out.ok && out.message.contains("from its next start"),
        "{out:?}"
    );
}

fn wipe_evidence(out: &Outcome) -> &WipeEvidence {
    match &out.evidence {
        Some(Evidence::Wipe(w)) => w,
        None => panic!("no evidence: {out:?}"),
    }
}

#[test]
fn release_and_wipe_wipes_every_volume_then_undefines_then_deletes() {
    let mut fake = Fake::with_stopped_vm();
    let before = now_ms();
    let out = execute(&mut fake, &Action::ReleaseAndWipe(vm()));
    let after = now_ms();
    assert!(out.ok, "{out:?}");
    assert_eq!(
        fake.log,
        [
            "wipe web-01-root zero",
            "wipe web-01-data zero",
            "undefine",
            "delete web-01-root",
            "delete web-01-data"
        ]
    );
    assert!(fake.vms.is_empty());
    assert!(
        out.message
            .contains("2 volume(s), 122880 MiB, overwritten (zero) and deleted"),
        "{out:?}"
    );
    let evidence = wipe_evidence(&out);
    assert!(evidence.complete());
    assert_eq!(evidence.vm, vm());
    assert_eq!(evidence.disks.len(), 2);
    let DiskWipeState::Wiped {
        volume: v,
        algorithm,
        wiped_ms,
        deleted,
    } = &evidence.disks[1].state
    else {
        panic!("{evidence:?}")
    };
    assert_eq!(
        (v, *algorithm, *deleted),
        (&volume("web-01-data", 100), WipeAlgorithm::Zero, true)
    );
    assert!((before..=after).contains(wiped_ms));
    assert_eq!(evidence.disks[1].target, "vdb");
    assert_eq!(
        evidence.disks[1].source,
        "/var/lib/libvirt/images/web-01-data"
    );

    // once released there is nothing to find the disks by: said, not pretended
    let again = execute(&mut fake, &Action::ReleaseAndWipe(vm()));
    assert!(
        !again.ok && again.message.contains("nothing was wiped"),
        "{again:?}"
    );
    assert!(again.evidence.is_none());
}

#[test]
fn release_and_wipe_is_refused_while_running_or_with_a_disk_outside_every_pool() {
    let mut fake = Fake::with_running_vm();
    let running = execute(&mut fake, &Action::ReleaseAndWipe(vm()));
    assert!(
        !running.ok && running.message.contains("running"),
        "{running:?}"
    );

    let mut fake = Fake::with_stopped_vm();
    fake.vms.get_mut(UUID).unwrap().disks.push(VmDisk {
        target: "vdc".into(),
        source: "/srv/old.img".into(),
        volume: Err("/srv/old.img is in no libvirt storage pool".into()),
    });
    let out = execute(&mut fake, &Action::ReleaseAndWipe(vm()));
    assert!(!out.ok, "{out:?}");
    assert!(
        out.message
            .contains("refused, nothing was wiped or removed: disk vdc cannot be wiped through libvirt: /srv/old.img is in no libvirt storage pool"),
        "{out:?}"
    );
    assert!(fake.log.is_empty(), "nothing touched: {:?}", fake.log);
    assert!(fake.vms.contains_key(UUID));
    let evidence = wipe_evidence(&out);
    assert!(!evidence.complete());
    assert_eq!(
        evidence.disks[2].state,
        DiskWipeState::NotWipeable("/srv/old.img is in no libvirt storage pool".into())
    );
    assert_eq!(
        evidence.disks[0].state,
        DiskWipeState::NotWiped(
            volume("web-01-root", 20),
            "not wiped: vdc cannot be wiped".into()
        )
    );
}

#[test]
fn a_failed_wipe_stops_the_release_and_a_failed_delete_is_reported() {
    let mut fake = Fake::with_stopped_vm();
    fake.fail_wipe = vec!["web-01-data".into()];
    let out = execute(&mut fake, &Action::ReleaseAndWipe(vm()));
    assert!(!out.ok, "{out:?}");
    assert!(out.message.contains("failed at disk vdb") && out.message.contains("still defined"));
    assert_eq!(
        fake.log,
        ["wipe web-01-root zero"],
        "no undefine, no delete"
    );
    assert!(fake.vms.contains_key(UUID));
    let evidence = wipe_evidence(&out);
    assert!(matches!(
        evidence.disks[0].state,
        DiskWipeState::Wiped { deleted: false, .. }
    ));
    assert_eq!(
        evidence.disks[1].state,
        DiskWipeState::NotWiped(
            volume("web-01-data", 100),
            "wipe failed: wiping is not supported by this pool".into()
        )
    );

    // the retry wipes both; one volume cannot be deleted: the data is gone, the space is not
    fake.fail_wipe.clear();
    fake.fail_delete = vec!["web-01-root".into()];
    fake.log.clear();
    let out = execute(&mut fake, &Action::ReleaseAndWipe(vm()));
    assert!(!out.ok, "{out:?}");
    assert!(
        out.message.contains("not deleted")
            && out.message.contains("default/web-01-root: volume is busy"),
        "{out:?}"
    );
    assert!(fake.vms.is_empty());
    let evidence = wipe_evidence(&out);
    assert!(matches!(
        evidence.disks[0].state,
        DiskWipeState::Wiped { deleted: false, .. }
    ));
    assert!(matches!(
        evidence.disks[1].state,
        DiskWipeState::Wiped { deleted: true, .. }
    ));
}

/// The hypervisor thread's loop queues a command's evidence right before its result (the
/// publisher keeps that order on the wire), and a command without evidence sends none.
#[test]
fn the_evidence_goes_out_right_before_its_result() {
    let (commands, queue) = std::sync::mpsc::sync_channel(2);
    let (out, mut outs) = tokio::sync::mpsc::unbounded_channel();
    let cfg = HypervisorConfig {
        guests_interval: Duration::from_secs(3600),
        ..HypervisorConfig::default()
    };
    let thread = std::thread::spawn(move || serve(Fake::with_running_vm(), &cfg, &queue, &out));
    for (id, action) in [
        (1, Action::Stop(vm(), "s".into())),
        (2, Action::ReleaseAndWipe(vm())),
    ] {
        let command = Command {
            id: [id; 16],
            expires_ms: u64::MAX,
            action,
        };
        commands.send(command).unwrap();
    }
    drop(commands);
    thread.join().unwrap();
    let mut sent = Vec::new();
    while let Ok(o) = outs.try_recv() {
        match o {
            Out::Guests(_) => {}
            Out::Evidence(e) => sent.push(format!("evidence {}", e.id[0])),
            Out::Result(r) => sent.push(format!("result {} {}", r.id[0], r.ok)),
        }
    }
    assert_eq!(
        sent,
        ["result 1 true", "evidence 2", "result 2 true"],
        "the stop leaves no evidence; the release's comes first"
    );
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
