//! Synthetic inventories, reports and guest lists, in the protocol's own types.
//!
//! Static facts (OS, machine id, uptime at the start, disk fill and growth) are hashes of the
//! node seed, so nothing but the network counters and load averages needs to be stored per
//! node. Reports follow the units of [`yunjian_protocol::body`]: KiB, bytes per second,
//! hundredths of a percent, load ×100.

use crate::fleet::{Fleet, NodeKind, NodeSpec};
use crate::profile::Load;
use crate::rng::{hash_str, hash_u64s, unit_f64};
use yunjian_protocol::{
    centi, DiskInfo, DiskSample, GuestView, Inventory, Memory, NetSample, Report, Role,
};

const KIB_PER_GIB: u64 = 1 << 20;
const DAY_MS: f64 = yunjian_time::DAY_MS as f64;
/// Extra host CPU per busy guest vCPU (emulation, vhost threads).
const VIRT_CPU_OVERHEAD: f64 = 1.05;
/// Host memory per GiB of guest memory beyond what the guest uses (QEMU, page tables).
const VIRT_MEM_OVERHEAD: f64 = 0.02;
/// Swap configured on servers; VMs have none.
const HOST_SWAP_KIB: u64 = 8 * KIB_PER_GIB;
/// Share of traffic on the first NIC when there are several.
const FIRST_NIC_SHARE: f64 = 0.85;

const HOST_OS: [(&str, &str); 2] = [
    (
        "openEuler 22.03 (LTS-SP3)",
        "5.10.0-182.0.0.95.oe2203sp3.x86_64",
    ),
    (
        "Kylin Linux Advanced Server V10 (Lance)",
        "4.19.90-52.22.v2207.ky10.x86_64",
    ),
];
const GUEST_OS: [(&str, &str); 5] = [
    (
        "Kylin Linux Advanced Server V10 (Sword)",
        "4.19.90-24.4.v2101.ky10.x86_64",
    ),
    (
        "UnionTech OS Server 20",
        "4.19.90-2211.5.0.0178.22.uel20.x86_64",
    ),
    (
        "openEuler 22.03 (LTS-SP3)",
        "5.10.0-182.0.0.95.oe2203sp3.x86_64",
    ),
    ("CentOS Linux 7 (Core)", "3.10.0-1160.el7.x86_64"),
    ("Debian GNU/Linux 12 (bookworm)", "6.1.0-18-amd64"),
];
const CPU_MODELS: [&str; 3] = [
    "Hygon C86 7285 32-core Processor",
    "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz",
    "Intel(R) Xeon(R) Platinum 8358 CPU @ 2.60GHz",
];

/// A node's hardware as the agent would see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hardware<'a> {
    pub cores: u16,
    pub mem_kib: u64,
    /// Mount point and size in KiB.
    pub disks: Vec<(&'a str, u64)>,
    pub nics: Vec<&'a str>,
}

/// The hardware of node `idx`: its rack's server template, or its VM template.
pub fn hardware(fleet: &Fleet, idx: usize) -> Hardware<'_> {
    let spec = &fleet.nodes()[idx];
    let rack = &fleet.scenario().racks[spec.rack];
    match &spec.kind {
        NodeKind::Host { .. } => Hardware {
            cores: rack.host.cores,
            mem_kib: u64::from(rack.host.mem_gib) * KIB_PER_GIB,
            disks: rack
                .host
                .disks
                .iter()
                .map(|d| (d.mount.as_str(), u64::from(d.size_gib) * KIB_PER_GIB))
                .collect(),
            nics: rack.host.nics.iter().map(String::as_str).collect(),
        },
        NodeKind::Guest { template, .. } => {
            let t = &rack.vms[*template];
            Hardware {
                cores: t.vcpus,
                mem_kib: u64::from(t.mem_gib) * KIB_PER_GIB,
                disks: vec![("/", u64::from(t.disk_gib) * KIB_PER_GIB)],
                nics: vec!["eth0"],
            }
        }
    }
}

/// A fact of this node in `[0, 1)`, fixed for its life.
fn fact(spec: &NodeSpec, key: u64, sub: u64) -> f64 {
    unit_f64(hash_u64s(&[spec.seed, key, sub]))
}

fn pick<T: Copy>(items: &[T], bits: u64) -> T {
    items[(bits % items.len() as u64) as usize]
}

/// The node's inventory, as sent after every connect.
pub fn inventory(fleet: &Fleet, idx: usize) -> Inventory {
    let spec = &fleet.nodes()[idx];
    let scenario = fleet.scenario();
    let rack = &scenario.racks[spec.rack];
    let hw = hardware(fleet, idx);
    // Servers of one rack are alike; a VM sees its host's CPU model.
    let rack_bits = hash_str(scenario.seed, &format!("rack/{}", rack.name));
    let (os, kernel) = match spec.kind {
        NodeKind::Host { .. } => pick(&HOST_OS, rack_bits),
        NodeKind::Guest { .. } => pick(&GUEST_OS, spec.seed),
    };
    let smbios_uuid = match &spec.kind {
        NodeKind::Guest { uuid, .. } => Some(uuid.clone()),
        NodeKind::Host { .. } => None,
    };
    Inventory {
        hostname: spec.id.clone(),
        role: spec.role(),
        os: os.into(),
        kernel: kernel.into(),
        cpu_model: pick(&CPU_MODELS, rack_bits >> 8).into(),
        cpu_cores: hw.cores,
        mem_total_kib: hw.mem_kib,
        disks: hw
            .disks
            .iter()
            .map(|&(mount, total_kib)| DiskInfo {
                mount: mount.into(),
                fs_type: "xfs".into(),
                total_kib,
            })
            .collect(),
        nics: hw.nics.iter().map(|n| n.to_string()).collect(),
        machine_id: format!(
            "{:016x}{:016x}",
            hash_u64s(&[spec.seed, 0x6d69]),
            hash_u64s(&[spec.seed, 0x6964])
        ),
        smbios_uuid,
        rack: Some(rack.name.clone()),
    }
}

/// Host `idx`'s view of its VMs; `running(i)` tells whether VM `i` is up.
pub fn guests(fleet: &Fleet, idx: usize, running: impl Fn(usize) -> bool) -> Vec<GuestView> {
    let NodeKind::Host { guests } = &fleet.nodes()[idx].kind else {
        return Vec::new();
    };
    guests
        .clone()
        .filter_map(|g| {
            let vm = &fleet.nodes()[g];
            let NodeKind::Guest { uuid, .. } = &vm.kind else {
                return None;
            };
            let hw = hardware(fleet, g);
            Some(GuestView {
                uuid: uuid.clone(),
                name: vm.id.clone(),
                vcpus: hw.cores,
                mem_kib: hw.mem_kib,
                disk_kib: hw.disks.iter().map(|d| d.1).sum(),
                running: running(g),
            })
        })
        .collect()
}

/// Load of node `idx` at `ts_ms`, and the part of it due to the node's own processes.
///
/// A VM's load is its workload. A server's is its own workload plus, for every running VM,
/// the VM's busy vCPUs (×1.05 virtualisation overhead), the memory the VM uses plus 2 % of
/// its allocation, and its disk and network traffic.
pub fn load_at(
    fleet: &Fleet,
    idx: usize,
    ts_ms: u64,
    running: impl Fn(usize) -> bool,
) -> (Load, Load) {
    let spec = &fleet.nodes()[idx];
    let own = spec.workload.sample(ts_ms);
    let NodeKind::Host { guests } = &spec.kind else {
        return (own, own);
    };
    if guests.is_empty() {
        return (own, own);
    }
    let hw = hardware(fleet, idx);
    let cores = f64::from(hw.cores);
    let host_mem = hw.mem_kib as f64;
    let mut busy_cores = own.cpu * cores;
    let (mut vm_alloc, mut vm_used) = (0.0, 0.0);
    let mut total = own;
    for g in guests.clone().filter(|&g| running(g)) {
        let l = fleet.nodes()[g].workload.sample(ts_ms);
        let vm = hardware(fleet, g);
        busy_cores += l.cpu * f64::from(vm.cores) * VIRT_CPU_OVERHEAD;
        vm_alloc += vm.mem_kib as f64;
        vm_used += l.mem * vm.mem_kib as f64;
        total.disk_read_bps += l.disk_read_bps;
        total.disk_write_bps += l.disk_write_bps;
        total.net_rx_bps += l.net_rx_bps;
        total.net_tx_bps += l.net_tx_bps;
    }
    let vm_share = (vm_alloc / host_mem).min(1.0);
    let used = own.mem * host_mem * (1.0 - vm_share) + vm_used + VIRT_MEM_OVERHEAD * vm_alloc;
    total.cpu = (busy_cores / cores).clamp(0.001, 1.0);
    total.mem = (used / host_mem).clamp(0.02, 0.97);
    (total, own)
}

/// The moving parts of one node: NIC counters and load averages.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSim {
    idx: usize,
    start_ms: u64,
    /// Event-time spacing of reports, used as the first interval.
    interval_ms: u64,
    last_ts: Option<u64>,
    /// Reports produced so far.
    reports: u64,
    /// rx and tx bytes since boot, per NIC.
    counters: Vec<[u64; 2]>,
    /// 1, 5 and 15 minute load averages.
    load: [f64; 3],
}

impl NodeSim {
    /// Node `idx` of `fleet`, simulated from event time `start_ms` with reports
    /// `interval_ms` apart.
    pub fn new(fleet: &Fleet, idx: usize, start_ms: u64, interval_ms: u64) -> Self {
        let spec = &fleet.nodes()[idx];
        let uptime_s = uptime_at_start_ms(spec) / 1000;
        let nics = hardware(fleet, idx).nics.len();
        let counters = (0..nics as u64)
            .map(|i| {
                let per_s = |k| 1e4 + 5e5 * fact(spec, 0x6e6574 + i, k);
                [
                    (uptime_s as f64 * per_s(0)) as u64,
                    (uptime_s as f64 * per_s(1)) as u64,
                ]
            })
            .collect();
        NodeSim {
            idx,
            start_ms,
            interval_ms: interval_ms.max(1),
            last_ts: None,
            reports: 0,
            counters,
            load: [0.0; 3],
        }
    }

    pub fn index(&self) -> usize {
        self.idx
    }

    /// How many reports this node has produced.
    pub fn reports(&self) -> u64 {
        self.reports
    }

    /// The report at event time `ts_ms` (non-decreasing between calls); `running(i)` tells
    /// whether VM `i` is up (hosts only count running VMs).
    pub fn report(&mut self, fleet: &Fleet, ts_ms: u64, running: impl Fn(usize) -> bool) -> Report {
        let spec = &fleet.nodes()[self.idx];
        let hw = hardware(fleet, self.idx);
        let (load, own) = load_at(fleet, self.idx, ts_ms, running);
        let dt_ms = self
            .last_ts
            .map_or(self.interval_ms, |last| ts_ms.saturating_sub(last))
            .max(1);

        // Per core: the total spread unevenly over the cores, then averaged back so that
        // `cpu_busy` is exactly the mean of `per_core`.
        let weights: Vec<f64> = (0..u64::from(hw.cores))
            .map(|c| 0.5 + unit_f64(hash_u64s(&[spec.seed, ts_ms, 0x100 + c])))
            .collect();
        let mean_w = weights.iter().sum::<f64>() / weights.len() as f64;
        let per_core: Vec<f64> = weights
            .iter()
            .map(|w| (load.cpu * w / mean_w).min(1.0))
            .collect();
        let busy = per_core.iter().sum::<f64>() / per_core.len() as f64;

        let runnable = busy
            * f64::from(hw.cores)
            * (0.9 + 0.3 * unit_f64(hash_u64s(&[spec.seed, ts_ms, 0x10ad])));
        if self.last_ts.is_none() {
            self.load = [runnable; 3];
        } else {
            for (avg, tau_s) in self.load.iter_mut().zip([60.0, 300.0, 900.0]) {
                let a = (-(dt_ms as f64) / 1000.0 / tau_s).exp();
                *avg = *avg * a + runnable * (1.0 - a);
            }
        }

        let used_kib = (load.mem * hw.mem_kib as f64) as u64;
        let swap_total_kib = match spec.role() {
            Role::Host => HOST_SWAP_KIB,
            Role::Guest => 0,
        };
        let mem = Memory {
            total_kib: hw.mem_kib,
            used_kib,
            available_kib: hw.mem_kib - used_kib,
            swap_total_kib,
            swap_used_kib: (swap_total_kib as f64 * 0.004 * fact(spec, 0x5a5a, 0)) as u64,
        };

        // negative before the start (a backfilled history)
        let days = (ts_ms as f64 - self.start_ms as f64) / DAY_MS;
        let n_disks = hw.disks.len();
        let disks = hw
            .disks
            .iter()
            .enumerate()
            .map(|(i, &(mount, total_kib))| {
                // The node's own I/O goes to the first disk, its VMs' to the last.
                let (r, w) = if n_disks == 1 {
                    (load.disk_read_bps, load.disk_write_bps)
                } else if i == 0 {
                    (own.disk_read_bps, own.disk_write_bps)
                } else if i == n_disks - 1 {
                    (
                        load.disk_read_bps - own.disk_read_bps,
                        load.disk_write_bps - own.disk_write_bps,
                    )
                } else {
                    (own.disk_read_bps * 0.05, own.disk_write_bps * 0.05)
                };
                DiskSample {
                    mount: mount.into(),
                    total_kib,
                    used_kib: (disk_fill(spec, i, days) * total_kib as f64) as u64,
                    read_bps: r.max(0.0) as u64,
                    write_bps: w.max(0.0) as u64,
                }
            })
            .collect();

        let n_nics = hw.nics.len();
        let nets = hw
            .nics
            .iter()
            .zip(self.counters.iter_mut())
            .enumerate()
            .map(|(i, (name, counter))| {
                let share = match (n_nics, i) {
                    (1, _) => 1.0,
                    (_, 0) => FIRST_NIC_SHARE,
                    _ => (1.0 - FIRST_NIC_SHARE) / (n_nics - 1) as f64,
                };
                // Counters advance by exactly rate × elapsed time, so a receiver computing
                // the rate from two counters finds the reported one.
                let rx_bps = (load.net_rx_bps * share).round() as u64;
                let tx_bps = (load.net_tx_bps * share).round() as u64;
                counter[0] += rx_bps * dt_ms / 1000;
                counter[1] += tx_bps * dt_ms / 1000;
                NetSample {
                    name: name.to_string(),
                    rx_bytes: counter[0],
                    tx_bytes: counter[1],
                    rx_bps,
                    tx_bps,
                }
            })
            .collect();

        self.last_ts = Some(ts_ms);
        self.reports += 1;
        Report {
            cpu_busy: centi(busy * 100.0),
            per_core: per_core.iter().map(|c| centi(c * 100.0)).collect(),
            load: self.load.map(|l| (l * 100.0).round() as u32),
            mem,
            disks,
            nets,
            uptime_s: uptime_ms(spec, self.start_ms, ts_ms) / 1000,
            failed: Vec::new(),
        }
    }
}

/// How long the node had been up when the simulation started: 1 to 180 days.
fn uptime_at_start_ms(spec: &NodeSpec) -> u64 {
    ((1.0 + 179.0 * fact(spec, 0xb007, 0)) * DAY_MS) as u64
}

/// Uptime at event time `ts_ms`. Before the start (a backfilled history) it counts back to
/// the boot, and before that the node had run up to 180 days since an earlier boot.
fn uptime_ms(spec: &NodeSpec, start_ms: u64, ts_ms: u64) -> u64 {
    let up = i128::from(uptime_at_start_ms(spec)) + i128::from(ts_ms) - i128::from(start_ms);
    if up >= 0 {
        up as u64
    } else {
        up.rem_euclid(180 * DAY_MS as i128) as u64
    }
}

/// Used share of disk `i` after `days` of event time (negative before the start): 15–60 % at
/// the start, growing by 0.1–1.3 % of the capacity per day, at least 5 % (the system itself)
/// and at most 97 %.
fn disk_fill(spec: &NodeSpec, i: usize, days: f64) -> f64 {
    let start = 0.15 + 0.45 * fact(spec, 0xd15c, i as u64);
    let per_day = 0.001 + 0.012 * fact(spec, 0x960e, i as u64);
    (start + per_day * days).clamp(0.05, 0.97)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    const T0: u64 = 1_740_960_000_000;
    const ALL_UP: fn(usize) -> bool = |_| true;

    fn fleet() -> Fleet {
        Fleet::build(Scenario::uniform(1, 2, 3, 5)).unwrap()
    }

    #[test]
    fn inventories_describe_the_templates() {
        let f = fleet();
        let host = inventory(&f, 0);
        assert_eq!(host.hostname, "rack1-h01");
        assert_eq!(host.role, Role::Host);
        assert_eq!(host.cpu_cores, 32);
        assert_eq!(host.mem_total_kib, 256 * KIB_PER_GIB);
        assert_eq!(host.disks.len(), 2);
        assert_eq!(host.nics, ["eno1", "eno2"]);
        assert_eq!(host.smbios_uuid, None);
        assert_eq!(host.rack.as_deref(), Some("rack1"));
        assert_eq!(host.machine_id.len(), 32);
        let vm = inventory(&f, 2);
        assert_eq!(vm.hostname, "rack1-h01-vm1");
        assert_eq!(vm.role, Role::Guest);
        assert_eq!((vm.cpu_cores, vm.mem_total_kib), (4, 8 * KIB_PER_GIB));
        assert_eq!(vm.cpu_model, host.cpu_model);
        assert_ne!(vm.machine_id, host.machine_id);
        assert!(vm.smbios_uuid.is_some());
    }

    #[test]
    fn a_host_lists_its_vms_with_the_uuids_they_report() {
        let f = fleet();
        let list = guests(&f, 1, |g| g != 6);
        let names: Vec<&str> = list.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["rack1-h02-vm1", "rack1-h02-vm2", "rack1-h02-vm3"]);
        for (g, view) in (5..8).zip(&list) {
            assert_eq!(
                inventory(&f, g).smbios_uuid.as_deref(),
                Some(view.uuid.as_str())
            );
            assert_eq!(view.running, g != 6);
            assert_eq!(view.disk_kib, 100 * KIB_PER_GIB);
        }
        assert!(guests(&f, 3, ALL_UP).is_empty());
    }

    #[test]
    fn reports_are_consistent_with_themselves() {
        let f = fleet();
        for idx in 0..f.nodes().len() {
            let mut sim = NodeSim::new(&f, idx, T0, 10_000);
            let mut prev: Option<Report> = None;
            for step in 0..200u64 {
                let ts = T0 + step * 10_000;
                let r = sim.report(&f, ts, ALL_UP);
                let mean =
                    r.per_core.iter().map(|&c| u64::from(c)).sum::<u64>() / r.per_core.len() as u64;
                assert!(mean.abs_diff(u64::from(r.cpu_busy)) <= 1, "{r:?}");
                assert_eq!(r.mem.used_kib + r.mem.available_kib, r.mem.total_kib);
                assert!(r.disks.iter().all(|d| d.used_kib < d.total_kib));
                if let Some(p) = &prev {
                    assert_eq!(r.uptime_s, p.uptime_s + 10);
                    for (n, pn) in r.nets.iter().zip(&p.nets) {
                        assert_eq!(n.rx_bytes - pn.rx_bytes, n.rx_bps * 10);
                        assert_eq!(n.tx_bytes - pn.tx_bytes, n.tx_bps * 10);
                    }
                    for (d, pd) in r.disks.iter().zip(&p.disks) {
                        assert!(d.used_kib >= pd.used_kib);
                    }
                }
                prev = Some(r);
            }
        }
    }

    #[test]
    fn disks_fill_slowly() {
        let f = fleet();
        let mut sim = NodeSim::new(&f, 0, T0, 10_000);
        let day0 = sim.report(&f, T0, ALL_UP);
        let day30 = sim.report(&f, T0 + 30 * 86_400_000, ALL_UP);
        for (a, b) in day0.disks.iter().zip(&day30.disks) {
            let grown = (b.used_kib - a.used_kib) as f64 / a.total_kib as f64;
            assert!((0.03..=0.39).contains(&grown), "{} grew {grown}", a.mount);
        }
    }

    #[test]
    fn before_the_start_disks_were_emptier_and_the_node_had_booted_earlier() {
        let f = fleet();
        let mut sim = NodeSim::new(&f, 0, T0, 10_000);
        let past = sim.report(&f, T0 - 200 * 86_400_000, ALL_UP);
        let now = sim.report(&f, T0, ALL_UP);
        for (a, b) in past.disks.iter().zip(&now.disks) {
            assert!(a.used_kib < b.used_kib, "{}", a.mount);
            assert!(a.used_kib as f64 >= 0.05 * a.total_kib as f64 - 1.0);
        }
        // 200 days back is before the boot of at most 180 days ago: an earlier run
        assert!(now.uptime_s < 180 * 86_400);
        assert!(past.uptime_s < 180 * 86_400);
        assert_ne!(now.uptime_s - past.uptime_s, 200 * 86_400);
        // a day back is a day less, unless that was before the boot
        let mut sim = NodeSim::new(&f, 0, T0, 10_000);
        let day_before = sim.report(&f, T0 - 86_400_000, ALL_UP);
        let now = sim.report(&f, T0, ALL_UP);
        assert!(now.uptime_s >= 86_400);
        assert_eq!(now.uptime_s - day_before.uptime_s, 86_400);
    }

    #[test]
    fn a_host_carries_its_vms_load() {
        let f = fleet();
        let ts = T0 + 6 * 3_600_000; // 14:00 Beijing, Monday
        let (with, own) = load_at(&f, 0, ts, ALL_UP);
        let (without, _) = load_at(&f, 0, ts, |_| false);
        let vm_net: f64 = (2..5)
            .map(|g| load_at(&f, g, ts, ALL_UP).0.net_rx_bps)
            .sum();
        assert!((with.net_rx_bps - own.net_rx_bps - vm_net).abs() < 1.0);
        assert!(with.cpu > without.cpu);
        assert!(with.mem > without.mem);
        assert_eq!(without.net_rx_bps, own.net_rx_bps);
    }

    #[test]
    fn same_inputs_same_reports() {
        let f = fleet();
        let run = || {
            let mut sim = NodeSim::new(&f, 4, T0, 10_000);
            (0..20)
                .map(|i| sim.report(&f, T0 + i * 9_999, ALL_UP))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
