//! A pool's capacity, what is allocated on it and what is used (003 第十九条: compute, memory,
//! storage and network against system capacity). The capacity alarms call these.
//!
//! Units: `vcpus` in cores (vCPUs for capacity and allocation: cores × overcommit), memory and
//! disk in GB (GiB, as the form's 内存GB), network in Mbit/s. Hosts count once their inventory
//! is known, whether online or not (an offline host's capacity is still the pool's design).

use super::observe::KIB_PER_GB;
use super::{Pool, Register, Resources};
use crate::fleet::{Fleet, NodeState};
use std::collections::HashSet;

/// The hosts' raw totals: cores, memory, local filesystems, `nic_mbps` per host.
pub fn pool_total(pool: &Pool, fleet: &Fleet) -> Resources {
    hosts(pool, fleet)
        .filter_map(|st| st.inventory.as_ref())
        .map(|inv| Resources {
            vcpus: inv.cpu_cores.into(),
            mem_gb: inv.mem_total_kib as f64 / KIB_PER_GB,
            disk_gb: inv.disks.iter().map(|d| d.total_kib).sum::<u64>() as f64 / KIB_PER_GB,
            net_mbps: pool.nic_mbps,
        })
        .sum()
}

/// (total − reserved) × overcommit, per resource, never below 0.
pub fn pool_capacity(pool: &Pool, fleet: &Fleet) -> Resources {
    let t = pool_total(pool, fleet);
    let (r, o) = (pool.reserved, pool.overcommit);
    let cap = |total: f64, reserved: f64, ratio: f64| (total - reserved).max(0.0) * ratio;
    Resources {
        vcpus: cap(t.vcpus, r.vcpus, o.vcpus),
        mem_gb: cap(t.mem_gb, r.mem_gb, o.mem_gb),
        disk_gb: cap(t.disk_gb, r.disk_gb, o.disk_gb),
        net_mbps: cap(t.net_mbps, r.net_mbps, o.net_mbps),
    }
}

/// The approved allocations of the registered VMs placed on the pool's hosts (by UUID in the
/// hosts' guest lists; a shut-off VM keeps its allocation). Each VM counts once even if two
/// hosts list it during a migration. Unregistered VMs add nothing: they have no allocation.
pub fn pool_allocated(pool: &Pool, register: &Register, fleet: &Fleet) -> Resources {
    let index = register.uuid_index();
    let mut seen = HashSet::new();
    hosts(pool, fleet)
        .flat_map(|st| st.guests.iter())
        .map(|g| g.uuid.to_ascii_lowercase())
        .filter(|u| seen.insert(u.clone()))
        .filter_map(|u| index.get(&u).map(|v| v.approved()))
        .sum()
}

/// What the hosts' latest reports show in use: busy cores (busy share × cores), used memory,
/// used space of local filesystems, and per host the busiest direction of its busiest
/// interface other than the VMs' own (`vnet*`, `tap*`, `veth*`, `virbr*`), as the uplink's load.
pub fn pool_used(pool: &Pool, fleet: &Fleet) -> Resources {
    hosts(pool, fleet)
        .filter_map(|st| Some((st, st.report.as_ref()?)))
        .map(|(st, r)| {
            let cores = st
                .inventory
                .as_ref()
                .map_or(r.per_core.len() as f64, |i| f64::from(i.cpu_cores));
            let uplink_bps = r
                .nets
                .iter()
                .filter(|n| !is_guest_interface(&n.name))
                .map(|n| n.rx_bps.max(n.tx_bps))
                .max()
                .unwrap_or(0);
            Resources {
                vcpus: f64::from(r.cpu_busy) / 10_000.0 * cores,
                mem_gb: r.mem.used_kib as f64 / KIB_PER_GB,
                disk_gb: r.disks.iter().map(|d| d.used_kib).sum::<u64>() as f64 / KIB_PER_GB,
                net_mbps: uplink_bps as f64 * 8.0 / 1e6,
            }
        })
        .sum()
}

fn hosts<'a>(pool: &'a Pool, fleet: &'a Fleet) -> impl Iterator<Item = &'a NodeState> + 'a {
    pool.hosts.iter().filter_map(|h| fleet.get(h))
}

/// Interfaces a hypervisor creates for its VMs and containers: their traffic is the guests',
/// already counted on the uplink.
fn is_guest_interface(name: &str) -> bool {
    ["vnet", "tap", "veth", "virbr", "docker"]
        .iter()
        .any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::test_support::vm;
    use yunjian_protocol::{
        Body, DiskInfo, DiskSample, Envelope, GuestView, Inventory, Memory, NetSample, Report, Role,
    };

    const GIB: u64 = 1024 * 1024;

    fn host_inventory() -> Body {
        Body::Inventory(Inventory {
            hostname: "h".into(),
            role: Role::Host,
            os: String::new(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: 64,
            mem_total_kib: 512 * GIB,
            disks: vec![DiskInfo {
                mount: "/var/lib/libvirt".into(),
                fs_type: "xfs".into(),
                total_kib: 4000 * GIB,
            }],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: None,
            rack: None,
        })
    }

    fn guest(uuid: &str) -> GuestView {
        GuestView {
            uuid: uuid.into(),
            name: uuid.into(),
            vcpus: 16,
            mem_kib: 32 * GIB,
            disk_kib: 500 * GIB,
            running: false,
        }
    }

    fn pool() -> Pool {
        Pool {
            name: "A".into(),
            hosts: vec!["h1".into(), "h2".into(), "h-missing".into()],
            reserved: Resources {
                vcpus: 8.0,
                mem_gb: 64.0,
                disk_gb: 0.0,
                net_mbps: 0.0,
            },
            overcommit: Resources {
                vcpus: 4.0,
                mem_gb: 1.0,
                disk_gb: 1.0,
                net_mbps: 1.0,
            },
            nic_mbps: 10_000.0,
        }
    }

    fn fleet() -> Fleet {
        let mut f = Fleet::new();
        for h in ["h1", "h2"] {
            f.apply(Envelope::new(h, 1, 0, host_inventory()), 0);
        }
        // VM "a" is registered; "b" is not; "a" shows on both hosts (a migration)
        f.apply(
            Envelope::new("h1", 2, 0, Body::Guests(vec![guest("A"), guest("b")])),
            0,
        );
        f.apply(Envelope::new("h2", 2, 0, Body::Guests(vec![guest("a")])), 0);
        f.apply(
            Envelope::new(
                "h1",
                3,
                0,
                Body::Report(Report {
                    cpu_busy: 2_500,
                    per_core: vec![],
                    load: [0; 3],
                    mem: Memory {
                        total_kib: 512 * GIB,
                        used_kib: 100 * GIB,
                        ..Memory::default()
                    },
                    disks: vec![DiskSample {
                        mount: "/".into(),
                        total_kib: 4000 * GIB,
                        used_kib: 1000 * GIB,
                        read_bps: 0,
                        write_bps: 0,
                    }],
                    nets: ["bond0", "vnet3"]
                        .iter()
                        .map(|n| NetSample {
                            name: n.to_string(),
                            rx_bytes: 0,
                            tx_bytes: 0,
                            rx_bps: 125_000_000,
                            tx_bps: if *n == "vnet3" { 900_000_000 } else { 1 },
                        })
                        .collect(),
                    uptime_s: 1,
                    failed: vec![],
                }),
            ),
            0,
        );
        f
    }

    #[test]
    fn capacity_is_total_less_reserved_times_overcommit() {
        let f = fleet();
        let total = pool_total(&pool(), &f);
        assert_eq!(
            total,
            Resources {
                vcpus: 128.0,
                mem_gb: 1024.0,
                disk_gb: 8000.0,
                net_mbps: 20_000.0
            }
        );
        assert_eq!(
            pool_capacity(&pool(), &f),
            Resources {
                vcpus: 480.0,
                mem_gb: 960.0,
                disk_gb: 8000.0,
                net_mbps: 20_000.0
            }
        );
    }

    #[test]
    fn allocated_counts_registered_vms_on_the_hosts_once() {
        let reg = Register {
            vms: vec![vm("u", "a", 8), vm("u", "c", 8)],
            ..Register::default()
        };
        assert_eq!(
            pool_allocated(&pool(), &reg, &fleet()),
            Resources {
                vcpus: 8.0,
                mem_gb: 16.0,
                disk_gb: 360.0,
                net_mbps: 0.0
            }
        );
    }

    #[test]
    fn used_comes_from_the_hosts_reports() {
        assert_eq!(
            pool_used(&pool(), &fleet()),
            Resources {
                vcpus: 16.0,
                mem_gb: 100.0,
                disk_gb: 1000.0,
                net_mbps: 1000.0
            }
        );
    }
}
