//! What is seen of each VM, joined by SMBIOS UUID: the guest's own agent (its inventory's
//! `smbios_uuid`, vCPUs, memory, filesystems) and its hypervisor's view (the host's guest list:
//! vCPUs, memory, virtual disks). Either alone is enough to match a register entry.

use super::Resources;
use crate::fleet::{Claims, Fleet};
use serde::Serialize;
use std::collections::BTreeMap;
use yunjian_protocol::Role;

pub const KIB_PER_GB: f64 = 1024.0 * 1024.0;

/// Memory and disk within this many GB above the allocation are not a violation: hypervisors
/// round sizes (MiB alignment, image metadata) while an allocation moves by whole GB.
pub const GB_TOLERANCE: f64 = 0.5;

/// The VM as its hypervisor lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HypervisorView {
    pub host: String,
    /// The domain name on the host.
    pub domain: String,
    pub running: bool,
    pub vcpus: u32,
    pub mem_gb: f64,
    pub disk_gb: f64,
}

/// The VM as its own agent reports it. Memory is what the kernel sees (a little below the
/// allocation), disk the sum of its local filesystems (below the virtual disks' size).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestView {
    pub node: String,
    pub vcpus: u32,
    pub mem_gb: f64,
    pub disk_gb: f64,
}

/// Everything seen of one VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observation {
    pub hypervisor: Option<HypervisorView>,
    pub guest: Option<GuestView>,
}

impl Observation {
    /// The VM's size: the larger of the two views for vCPUs and memory (both can only show
    /// what the VM has); for disk the hypervisor's virtual disks when listed (filesystems can
    /// share a volume group or pool), else the guest's filesystems.
    pub fn size(&self) -> Resources {
        let h = self.hypervisor.as_ref();
        let g = self.guest.as_ref();
        let max = |a: Option<f64>, b: Option<f64>| a.into_iter().chain(b).fold(0.0, f64::max);
        Resources {
            vcpus: max(h.map(|h| h.vcpus as f64), g.map(|g| g.vcpus as f64)),
            mem_gb: max(h.map(|h| h.mem_gb), g.map(|g| g.mem_gb)),
            disk_gb: h.map(|h| h.disk_gb).or(g.map(|g| g.disk_gb)).unwrap_or(0.0),
            net_mbps: 0.0,
        }
    }
}

/// One resource above what was approved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excess {
    /// `vcpus`, `mem_gb` or `disk_gb`.
    pub resource: &'static str,
    pub approved: f64,
    pub observed: f64,
}

impl Excess {
    /// The resource as the form names it.
    pub fn label(&self) -> &'static str {
        match self.resource {
            "vcpus" => "vCPU",
            "mem_gb" => "内存GB",
            _ => "磁盘GB",
        }
    }
}

/// vCPUs, memory and disk of `observed` above `approved` (memory and disk past
/// [`GB_TOLERANCE`]). Below is never a violation. Network is not compared: 附件3 allocates none
/// and agents report traffic, not a configured limit.
pub fn excess(approved: Resources, observed: Resources) -> Vec<Excess> {
    let checks = [
        ("vcpus", approved.vcpus, observed.vcpus, 0.0),
        ("mem_gb", approved.mem_gb, observed.mem_gb, GB_TOLERANCE),
        ("disk_gb", approved.disk_gb, observed.disk_gb, GB_TOLERANCE),
    ];
    checks
        .into_iter()
        .filter(|&(_, a, o, tol)| o > a + tol)
        .map(|(resource, approved, observed, _)| Excess {
            resource,
            approved,
            observed: round2(observed),
        })
        .collect()
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What is seen of one VM (`uuid` in lower case) from its claimants; `None` when nobody
/// claims it any more. Claimants go in node order, so two nodes claiming one UUID (a cloned
/// VM, a migration under way) resolve the same way every time: the first guest; the first
/// hypervisor, except that a running copy beats a stopped one left behind by a migration.
pub fn observe(fleet: &Fleet, uuid: &str, claims: &Claims) -> Option<Observation> {
    let mut seen = Observation::default();
    for host in &claims.hosts {
        let Some(st) = fleet.get(host) else { continue };
        for g in st
            .guests
            .iter()
            .filter(|g| g.uuid.eq_ignore_ascii_case(uuid))
        {
            if seen
                .hypervisor
                .as_ref()
                .is_some_and(|h| h.running || !g.running)
            {
                continue;
            }
            seen.hypervisor = Some(HypervisorView {
                host: st.node.clone(),
                domain: g.name.clone(),
                running: g.running,
                vcpus: g.vcpus.into(),
                mem_gb: round2(g.mem_kib as f64 / KIB_PER_GB),
                disk_gb: round2(g.disk_kib as f64 / KIB_PER_GB),
            });
        }
    }
    for node in &claims.guests {
        let Some(st) = fleet.get(node).filter(|st| st.role == Some(Role::Guest)) else {
            continue;
        };
        let Some(inv) = st.inventory.as_ref().filter(|i| {
            i.smbios_uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        }) else {
            continue;
        };
        seen.guest = Some(GuestView {
            node: st.node.clone(),
            vcpus: inv.cpu_cores.into(),
            mem_gb: round2(inv.mem_total_kib as f64 / KIB_PER_GB),
            disk_gb: round2(inv.disks.iter().map(|d| d.total_kib).sum::<u64>() as f64 / KIB_PER_GB),
        });
        break;
    }
    (seen.hypervisor.is_some() || seen.guest.is_some()).then_some(seen)
}

/// Every VM seen in the fleet, by lower-case UUID.
#[derive(Debug, Default)]
pub struct Sightings {
    by_uuid: BTreeMap<String, Observation>,
}

impl Sightings {
    /// Every VM the fleet sees.
    pub fn of(fleet: &Fleet) -> Sightings {
        let by_uuid = fleet
            .claims()
            .filter_map(|(uuid, c)| Some((uuid.to_string(), observe(fleet, uuid, c)?)))
            .collect();
        Sightings { by_uuid }
    }

    /// What is seen of the VM with this UUID (any case).
    pub fn get(&self, uuid: &str) -> Option<&Observation> {
        self.by_uuid.get(&uuid.to_ascii_lowercase())
    }

    /// Every VM seen, by lower-case UUID.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Observation)> {
        self.by_uuid.iter().map(|(u, o)| (u.as_str(), o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(vcpus: f64, mem_gb: f64, disk_gb: f64) -> Resources {
        Resources {
            vcpus,
            mem_gb,
            disk_gb,
            net_mbps: 0.0,
        }
    }

    #[test]
    fn only_above_the_allocation_is_an_excess() {
        let approved = res(8.0, 16.0, 360.0);
        // the kernel sees a little less memory, the filesystems less than the disks
        assert!(excess(approved, res(8.0, 15.6, 350.0)).is_empty());
        // rounding within the tolerance
        assert!(excess(approved, res(8.0, 16.4, 360.3)).is_empty());
        let e = excess(approved, res(16.0, 17.0, 360.0));
        assert_eq!(
            e.iter()
                .map(|e| (e.resource, e.observed))
                .collect::<Vec<_>>(),
            [("vcpus", 16.0), ("mem_gb", 17.0)]
        );
        assert_eq!(excess(approved, res(9.0, 0.0, 0.0))[0].label(), "vCPU");
    }

    #[test]
    fn size_takes_the_larger_view_and_the_hypervisor_disks() {
        let o = Observation {
            hypervisor: Some(HypervisorView {
                host: "h1".into(),
                domain: "d".into(),
                running: true,
                vcpus: 8,
                mem_gb: 16.0,
                disk_gb: 360.0,
            }),
            guest: Some(GuestView {
                node: "vm".into(),
                vcpus: 12,
                mem_gb: 15.5,
                disk_gb: 900.0,
            }),
        };
        assert_eq!(o.size(), res(12.0, 16.0, 360.0));
        let guest_only = Observation {
            hypervisor: None,
            ..o
        };
        assert_eq!(guest_only.size(), res(12.0, 15.5, 900.0));
    }
}
