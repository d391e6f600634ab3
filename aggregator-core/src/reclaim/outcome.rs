//! Is an executed case's action really done? A host answering "ok" is not enough: the host that
//! took the command could be lying or could be the wrong host. The case is verified only when
//! two independent witnesses agree, both after the command went out:
//!
//! * the hypervisor host the command was sent to, still the only host listing the VM, lists
//!   it stopped (a stop) or at no more than the new size (a downsize);
//! * the VM's own agent (the one guest identity reporting the VM's SMBIOS UUID) agrees: for a
//!   stop it went offline (its Offline status or last will) or silent after the command was
//!   sent; for a downsize its inventory shows no more vCPUs and memory than the new size.
//!
//! Pure: reads the fleet, returns the verdict; the service records it (and fails the case when
//! no agreement came within its deadline).

use super::case::{Case, Kind};
use crate::fleet::{Fleet, Liveness, Unaddressable, SILENCE_FACTOR};

/// The verdict on an executed case now.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The host and the VM itself show the action done: what each shows, for the case log.
    Confirmed(serde_json::Value),
    /// Not (yet) shown by both: why, in words for the case page (zh-CN).
    Pending(String),
}

/// The verdict at `now_ms` on `case` (executed through its `host`), whose command was sent at
/// `sent_ms`.
pub fn outcome(fleet: &Fleet, case: &Case, sent_ms: u64, now_ms: u64) -> Outcome {
    let uuid = &case.uuid;
    let (host, g) = match fleet.command_host(uuid) {
        Ok(x) => x,
        Err(Unaddressable::NoHost) => {
            return Outcome::Pending(format!("待核实：没有宿主机列出虚拟机 {uuid}"))
        }
        Err(Unaddressable::Conflict(c)) => {
            return Outcome::Pending(format!("待核实：虚拟机 {uuid} 归属冲突（{c}）"))
        }
    };
    if case.host.as_deref() != Some(host.as_str()) {
        return Outcome::Pending(format!(
            "待核实：指令发往宿主机 {}，而现在列出该虚拟机的是 {host}",
            case.host.as_deref().unwrap_or("（无）")
        ));
    }
    let host_done = match &case.kind {
        Kind::Idle => !g.running,
        Kind::OverProvisioned { recommended } => {
            g.vcpus <= recommended.vcpus && g.mem_kib <= recommended.mem_kib
        }
    };
    if !host_done {
        return Outcome::Pending(format!(
            "待核实：宿主机 {host} 的虚拟机列表尚未显示执行结果"
        ));
    }
    let Some(vm) = fleet
        .claims_of(uuid)
        .and_then(|c| c.guests.first())
        .and_then(|n| fleet.get(n))
    else {
        return Outcome::Pending(format!(
            "待核实：宿主机 {host} 报告已执行，但虚拟机 {uuid} 没有自身代理的上报可以印证"
        ));
    };
    let vm_done = match &case.kind {
        // offline since after the command: its own Offline status (clean stop or last will)
        // came after it, or it fell silent after it. A node restored offline at an aggregator
        // restart shows neither: it counts once it stayed unheard for as long as silence takes
        // (a running VM's agent reconnects well before).
        Kind::Idle => {
            vm.liveness != Liveness::Online
                && vm.liveness_since_ms >= sent_ms
                && (vm.liveness == Liveness::Silent
                    || vm.last_seen_ms >= sent_ms
                    || now_ms.saturating_sub(vm.liveness_since_ms.max(vm.last_seen_ms))
                        > SILENCE_FACTOR * vm.interval_ms())
        }
        Kind::OverProvisioned { recommended } => vm.inventory.as_ref().is_some_and(|i| {
            i.cpu_cores <= recommended.vcpus && i.mem_total_kib <= recommended.mem_kib
        }),
    };
    if !vm_done {
        let what = if case.is_stop() {
            "仍在线"
        } else {
            "上报的配置仍大于目标配置"
        };
        return Outcome::Pending(format!(
            "待核实：宿主机 {host} 报告已执行，但虚拟机自身代理 {} {what}",
            vm.node
        ));
    }
    Outcome::Confirmed(serde_json::json!({
        "host": host,
        "guest": {"name": g.name, "running": g.running, "vcpus": g.vcpus, "mem_kib": g.mem_kib},
        "vm_agent": {
            "node": vm.node,
            "liveness": vm.liveness,
            "since_ms": vm.liveness_since_ms,
            "cpu_cores": vm.inventory.as_ref().map(|i| i.cpu_cores),
            "mem_total_kib": vm.inventory.as_ref().map(|i| i.mem_total_kib),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reclaim::case::State;
    use yunjian_protocol::{Body, Envelope, GuestView, Inventory, Role, Status, VmSize};

    const UUID: &str = "4c4c4544-0001-0002-0003-000000000001";
    const SENT: u64 = 10_000;

    fn listed(running: bool, vcpus: u16) -> Body {
        Body::Guests(vec![GuestView {
            uuid: UUID.into(),
            name: "czj-app-01".into(),
            vcpus,
            mem_kib: u64::from(vcpus) << 20,
            disk_kib: 1,
            running,
        }])
    }

    fn inventory(cores: u16) -> Body {
        Body::Inventory(Inventory {
            hostname: "vm".into(),
            role: Role::Guest,
            os: String::new(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: cores,
            mem_total_kib: u64::from(cores) << 20,
            disks: vec![],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: Some(UUID.into()),
            rack: None,
        })
    }

    fn case(kind: Kind) -> Case {
        let c = serde_json::json!({
            "id": 1, "uuid": UUID, "vm_name": "czj-app-01", "unit": "财政局", "system": "s",
            "kind": kind, "evidence": null, "state": State::Executed, "opened_ms": 0,
            "state_since_ms": SENT, "deadline_ms": null, "scheduled_ms": null, "host": "h1",
            "snapshot": null, "command": null, "hold_until_ms": null, "updated_ms": SENT,
        });
        serde_json::from_value(c).unwrap()
    }

    /// h1 lists the VM; the VM's agent is online with 8 cores.
    fn fleet() -> Fleet {
        let mut f = Fleet::new();
        f.apply(Envelope::new("h1", 1, 0, listed(true, 8)), 1_000);
        f.apply(
            Envelope::new("vm", 0, 0, Body::Status(Status::Online)),
            1_000,
        );
        f.apply(Envelope::new("vm", 1, 0, inventory(8)), 1_000);
        f
    }

    fn confirmed(o: &Outcome) -> bool {
        matches!(o, Outcome::Confirmed(_))
    }

    #[test]
    fn a_stop_is_confirmed_by_the_host_and_the_vms_own_agent_only() {
        let mut f = fleet();
        let stop = case(Kind::Idle);
        // the host says stopped, the VM still reports: not done
        f.apply(Envelope::new("h1", 2, 0, listed(false, 8)), 11_000);
        let o = outcome(&f, &stop, SENT, 12_000);
        assert!(
            matches!(&o, Outcome::Pending(why) if why.contains("仍在线")),
            "{o:?}"
        );
        // the VM's agent goes offline after the command: done
        f.apply(
            Envelope::new("vm", 0, 0, Body::Status(Status::Offline)),
            11_500,
        );
        assert!(confirmed(&outcome(&f, &stop, SENT, 12_000)));
        // ... but not when the command went to another host than the one listing it
        let mut elsewhere = stop.clone();
        elsewhere.host = Some("h2".into());
        assert!(!confirmed(&outcome(&f, &elsewhere, SENT, 12_000)));
        // ... nor while a second host lists the VM
        f.apply(Envelope::new("h2", 1, 0, listed(false, 8)), 11_600);
        let o = outcome(&f, &stop, SENT, 12_000);
        assert!(
            matches!(&o, Outcome::Pending(why) if why.contains("归属冲突")),
            "{o:?}"
        );
    }

    #[test]
    fn an_agent_offline_since_before_the_command_proves_nothing() {
        let mut f = fleet();
        f.apply(
            Envelope::new("vm", 0, 0, Body::Status(Status::Offline)),
            5_000,
        );
        f.apply(Envelope::new("h1", 2, 0, listed(false, 8)), 11_000);
        assert!(!confirmed(&outcome(&f, &case(Kind::Idle), SENT, 12_000)));
    }

    #[test]
    fn a_downsize_is_confirmed_when_the_vm_reports_the_new_size() {
        let mut f = fleet();
        let down = case(Kind::OverProvisioned {
            recommended: VmSize {
                vcpus: 2,
                mem_kib: 2 << 20,
            },
        });
        f.apply(Envelope::new("h1", 2, 0, listed(true, 2)), 11_000);
        assert!(!confirmed(&outcome(&f, &down, SENT, 12_000)));
        f.apply(Envelope::new("vm", 2, 0, inventory(2)), 11_500);
        assert!(confirmed(&outcome(&f, &down, SENT, 12_000)));
    }

    #[test]
    fn a_vm_without_its_own_agent_cannot_be_confirmed() {
        let mut f = Fleet::new();
        f.apply(Envelope::new("h1", 1, 0, listed(false, 8)), 11_000);
        let o = outcome(&f, &case(Kind::Idle), SENT, 12_000);
        assert!(
            matches!(&o, Outcome::Pending(why) if why.contains("没有自身代理")),
            "{o:?}"
        );
    }
}
