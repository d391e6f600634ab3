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
        return Outcome::Pending(format!("待核实：宿主机 {host} 的虚拟机列表尚未显示执行结果"));
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
