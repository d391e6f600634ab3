//! 003 第十九条: when compute, memory, storage or network of the government cloud approaches 70%
//! of the system's capacity, the operator warns in time and asks for expansion (扩容).
//!
//! Every resource pool of the register and the whole platform (all hosts) are watched, per
//! resource, on two ratios:
//!
//! * **allocated** (分配率): the approved allocations (附件3) of the VMs placed on the scope's
//!   hosts, against capacity = (physical total − reserved) × overcommit;
//! * **used** (使用率): what the hosts report using, against their physical total.
//!
//! Each (scope, resource, ratio) has its own [`Hysteresis`] with the profile's capacity
//! thresholds, so a ratio that hovers at the line raises one alarm, not one per evaluation.
//! Without pools in the register the platform is the only scope.
//!
//! The figures are the register's ([`crate::register::capacity`]: hosts count once their
//! inventory is known; compute in cores, memory and storage in GiB, network in Mbit/s against
//! the pool's `nic_mbps` per host; unregistered VMs allocate nothing). The register approves no
//! bandwidth, so network has a used ratio only, and only where a pool gives a NIC bandwidth.
//!
//! The VM ↔ register join uses a per-evaluation index ([`VmIndex`]), shared with the peak rule.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::fleet::Fleet;
use crate::policy::hysteresis::{Hysteresis, Thresholds};
use crate::policy::{Context, Findings, Profile, Rule};
use crate::register::capacity::{pool_capacity, pool_total, pool_used};
use crate::register::{Pool, Register, Resources, VmAllocation};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use yunjian_protocol::Role;

pub const NAME: &str = "capacity";
/// Scope id of the whole platform.
pub const PLATFORM: &str = "platform";

/// The four resources of 003 第十九条.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Compute,
    Memory,
    Storage,
    Network,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::Compute,
        Resource::Memory,
        Resource::Storage,
        Resource::Network,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Compute => "compute",
            Resource::Memory => "memory",
            Resource::Storage => "storage",
            Resource::Network => "network",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Resource::Compute => "计算",
            Resource::Memory => "内存",
            Resource::Storage => "存储",
            Resource::Network => "网络带宽",
        }
    }

    /// The unit of its figures.
    pub fn unit(self) -> &'static str {
        match self {
            Resource::Compute => "vCPU",
            Resource::Memory | Resource::Storage => "GB",
            Resource::Network => "Mbps",
        }
    }

    fn of(self, r: &Resources) -> f64 {
        match self {
            Resource::Compute => r.vcpus,
            Resource::Memory => r.mem_gb,
            Resource::Storage => r.disk_gb,
            Resource::Network => r.net_mbps,
        }
    }
}

/// Which ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Allocated,
    Used,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Allocated, Kind::Used];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Allocated => "allocated",
            Kind::Used => "used",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Kind::Allocated => "分配率",
            Kind::Used => "使用率",
        }
    }
}

/// One resource of one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Physical total of the scope's hosts.
    pub total: f64,
    /// Kept back (the pools' `reserved`).
    pub reserved: f64,
    /// (total − reserved) × overcommit: what may be allocated.
    pub capacity: f64,
    /// Approved allocations of the registered VMs on the scope's hosts; `None` for network
    /// (the register approves no bandwidth).
    pub allocated: Option<f64>,
    /// In use, from the hosts' reports.
    pub used: f64,
}

impl Figures {
    /// (value, against) for a ratio.
    pub fn parts(&self, kind: Kind) -> Option<(f64, f64)> {
        match kind {
            Kind::Allocated => self.allocated.map(|a| (a, self.capacity)),
            Kind::Used => Some((self.used, self.total)),
        }
    }

    /// The ratio in percent; `None` without a denominator.
    pub fn pct(&self, kind: Kind) -> Option<f64> {
        self.parts(kind)
            .filter(|&(_, of)| of > 0.0)
            .map(|(v, of)| v * 100.0 / of)
    }
}

/// A resource pool, or the platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scope {
    /// `pool:NAME` or [`PLATFORM`]: the first part of the alarm subjects.
    pub id: String,
    /// The pool's name; `None` for the platform.
    pub pool: Option<String>,
    /// Hosts whose inventory is known.
    pub hosts: usize,
    /// Hosts listed in the pool that have not reported their inventory.
    pub hosts_missing: usize,
    /// VMs on the guest lists of the scope's hosts.
    pub vms: usize,
    /// Of those, VMs the register does not know (they allocate nothing).
    pub unregistered_vms: usize,
    /// Event time of the newest host report.
    pub ts_ms: u64,
    /// Per resource, in [`Resource::ALL`] order.
    pub figures: [Figures; 4],
}

impl Scope {
    pub fn figures(&self, r: Resource) -> &Figures {
        &self.figures[r as usize]
    }

    /// `资源池 A` or `全平台`.
    pub fn name_zh(&self) -> String {
        match &self.pool {
            Some(p) => format!("资源池 {p}"),
            None => "全平台".into(),
        }
    }

    /// The alarm subject of one ratio: `pool:A/memory/used`.
    pub fn subject(&self, r: Resource, k: Kind) -> String {
        format!("{}/{}/{}", self.id, r.as_str(), k.as_str())
    }
}

/// A cheap hasher for keys taken from the register (UUID values, unit and system names): a
/// UUID's 128 bits are hashed with one multiply, strings a byte at a time. SipHash would cost
/// more than the rest of a lookup. The register is operators' data, not network input.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterHasher(u64);

/// [`RegisterHasher`] for maps.
pub type RegisterHash = BuildHasherDefault<RegisterHasher>;

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for RegisterHasher {
    fn finish(&self) -> u64 {
        // the multiplies carry low bits up only: fold the high half back for the bucket index
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64 ^ ((v >> 64) as u64).rotate_left(32) ^ self.0).wrapping_mul(MIX);
    }
}

/// Register VMs by SMBIOS UUID: positions in `register.vms`. UUIDs are keyed by their 128-bit
/// value, so case and hyphens do not matter and lookups do not allocate; ids that are not
/// UUIDs fall back to a lower-cased string key. Owned, so a rule can keep it between
/// evaluations ([`KeysCache`]).
#[derive(Debug, Clone, Default)]
pub struct UuidKeys {
    by_uuid: HashMap<u128, usize, RegisterHash>,
    other: HashMap<String, usize>,
}

impl UuidKeys {
    pub fn of(register: &Register) -> Self {
        let mut ix = UuidKeys {
            by_uuid: HashMap::with_capacity_and_hasher(register.vms.len(), Default::default()),
            other: HashMap::new(),
        };
        for (i, v) in register.vms.iter().enumerate() {
            let Some(u) = v.uuid.as_deref() else { continue };
            // the first allocation with a UUID wins, as in `Register::vm_by_uuid`
            match parse_uuid(u) {
                Some(k) => {
                    ix.by_uuid.entry(k).or_insert(i);
                }
                None => {
                    ix.other.entry(u.to_ascii_lowercase()).or_insert(i);
                }
            }
        }
        ix
    }

    /// Position of the VM in the register's list.
    pub fn position(&self, uuid: &str) -> Option<usize> {
        match parse_uuid(uuid) {
            Some(k) => self.by_uuid.get(&k).copied(),
            None if self.other.is_empty() => None,
            None => self.other.get(&uuid.to_ascii_lowercase()).copied(),
        }
    }
}

/// [`UuidKeys`] kept by a rule between evaluations, rebuilt when the register changed
/// ([`crate::register::revision`], or its VM count for registers edited in place).
#[derive(Debug, Default)]
pub struct KeysCache {
    made_for: Option<(u64, usize)>,
    keys: UuidKeys,
}

impl KeysCache {
    pub fn get(&mut self, register: &Register) -> &UuidKeys {
        let now = (register.revision(), register.vms.len());
        if self.made_for != Some(now) {
            self.keys = UuidKeys::of(register);
            self.made_for = Some(now);
        }
        &self.keys
    }
}

/// Register VMs by SMBIOS UUID over the register's list.
#[derive(Debug)]
pub struct VmIndex<'a> {
    vms: &'a [VmAllocation],
    keys: std::borrow::Cow<'a, UuidKeys>,
}

impl<'a> VmIndex<'a> {
    /// Built now, for one use.
    pub fn new(register: &'a Register) -> Self {
        VmIndex {
            vms: &register.vms,
            keys: std::borrow::Cow::Owned(UuidKeys::of(register)),
        }
    }

    /// Over keys kept from an earlier evaluation (they must be of this register).
    pub fn with_keys(register: &'a Register, keys: &'a UuidKeys) -> Self {
        VmIndex {
            vms: &register.vms,
            keys: std::borrow::Cow::Borrowed(keys),
        }
    }

    /// Position of the VM in the register's list.
    pub fn position(&self, uuid: &str) -> Option<usize> {
        self.keys.position(uuid)
    }

    pub fn get(&self, uuid: &str) -> Option<&'a VmAllocation> {
        self.position(uuid).map(|i| &self.vms[i])
    }
}

/// The 128-bit value of a UUID written as 32 hex digits with or without hyphens.
fn parse_uuid(s: &str) -> Option<u128> {
    let mut v: u128 = 0;
    let mut digits = 0;
    for b in s.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b'-' => continue,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
        digits += 1;
        if digits > 32 {
            return None;
        }
    }
    (digits == 32).then_some(v)
}

/// The evaluation's index, and per register VM the last scope that counted its allocation.
struct Alloc<'i, 'a> {
    index: &'i VmIndex<'a>,
    seen: Vec<usize>,
}

/// Figures of one scope (number `n`, unique per call) with the counters shown beside them;
/// without `alloc`, use only.
///
/// The allocation is the sum of `register::capacity::pool_allocated` (the registered VMs on the
/// pool's hosts, each once even if two hosts list it during a migration) over the
/// evaluation's index, where that function builds a string index per pool.
fn scope_of(
    id: String,
    pool: &Pool,
    fleet: &Fleet,
    alloc: Option<&mut Alloc<'_, '_>>,
    n: usize,
) -> Scope {
    let total = pool_total(pool, fleet);
    let capacity = pool_capacity(pool, fleet);
    let used = pool_used(pool, fleet);
    let mut s = Scope {
        id,
        pool: None,
        hosts: 0,
        hosts_missing: 0,
        vms: 0,
        unregistered_vms: 0,
        ts_ms: 0,
        figures: Resource::ALL.map(|r| Figures {
            total: r.of(&total),
            reserved: r.of(&pool.reserved),
            capacity: r.of(&capacity),
            allocated: None,
            used: r.of(&used),
        }),
    };
    let mut allocated = Resources::default();
    let mut alloc = alloc;
    for h in &pool.hosts {
        let Some(st) = fleet.get(h) else {
            s.hosts_missing += 1;
            continue;
        };
        if let Some(a) = alloc.as_deref_mut() {
            for g in &st.guests {
                match a.index.position(&g.uuid) {
                    Some(i) if a.seen[i] != n => {
                        a.seen[i] = n;
                        allocated = allocated.plus(a.index.vms[i].approved());
                    }
                    Some(_) => {}
                    None => s.unregistered_vms += 1,
                }
            }
        }
        s.vms += st.guests.len();
        if st.inventory.is_none() {
            s.hosts_missing += 1;
            continue;
        }
        s.hosts += 1;
        s.ts_ms = s.ts_ms.max(st.last_report_ts_ms);
    }
    if alloc.is_some() {
        for r in Resource::ALL
            .into_iter()
            .filter(|&r| r != Resource::Network)
        {
            s.figures[r as usize].allocated = Some(r.of(&allocated));
        }
    }
    s
}

/// Every pool of the register (in register order), then the platform: the pools plus the
/// hosts in none (without reserve or overcommit, and without network capacity, which only a
/// pool's `nic_mbps` gives). Without pools the platform is the only scope.
///
/// Capacity and use are the register's own sums ([`crate::register::capacity`]); allocation
/// is the same sum as its `pool_allocated` over a shared index.
pub fn measure(fleet: &Fleet, register: &Register) -> Vec<Scope> {
    let index = VmIndex::new(register);
    measure_with(fleet, register, Some(&index))
}

/// [`measure`] over an index kept between evaluations.
pub fn measure_indexed(fleet: &Fleet, register: &Register, index: &VmIndex<'_>) -> Vec<Scope> {
    measure_with(fleet, register, Some(index))
}

/// [`measure`] without the allocations (`allocated` is `None`, `unregistered_vms` 0): what the
/// used ratios need.
pub fn measure_use(fleet: &Fleet, register: &Register) -> Vec<Scope> {
    measure_with(fleet, register, None)
}

fn measure_with(fleet: &Fleet, register: &Register, index: Option<&VmIndex<'_>>) -> Vec<Scope> {
    let mut alloc = index.map(|index| Alloc {
        index,
        seen: vec![usize::MAX; register.vms.len()],
    });
    let mut pooled: HashSet<&str> = HashSet::new();
    let mut scopes = Vec::with_capacity(register.pools.len() + 1);
    for (n, p) in register.pools.iter().enumerate() {
        pooled.extend(p.hosts.iter().map(String::as_str));
        let mut s = scope_of(format!("pool:{}", p.name), p, fleet, alloc.as_mut(), n);
        s.pool = Some(p.name.clone());
        scopes.push(s);
    }
    let rest = Pool {
        name: PLATFORM.into(),
        hosts: fleet
            .nodes()
            .filter(|st| st.role == Some(Role::Host) && !pooled.contains(st.node.as_str()))
            .map(|st| st.node.clone())
            .collect(),
        reserved: Resources::default(),
        overcommit: Resources {
            vcpus: 1.0,
            mem_gb: 1.0,
            disk_gb: 1.0,
            net_mbps: 1.0,
        },
        nic_mbps: 0.0,
    };
    let n = register.pools.len();
    let mut platform = scope_of(PLATFORM.into(), &rest, fleet, alloc.as_mut(), n);
    // traffic of hosts without a network capacity would inflate the platform's ratio
    platform.figures[Resource::Network as usize] = Figures {
        allocated: None,
        ..Figures::default()
    };
    for s in &scopes {
        platform.hosts += s.hosts;
        platform.hosts_missing += s.hosts_missing;
        platform.vms += s.vms;
        platform.unregistered_vms += s.unregistered_vms;
        platform.ts_ms = platform.ts_ms.max(s.ts_ms);
        for (all, f) in platform.figures.iter_mut().zip(&s.figures) {
            all.total += f.total;
            all.reserved += f.reserved;
            all.capacity += f.capacity;
            all.allocated = all.allocated.zip(f.allocated).map(|(a, b)| a + b);
            all.used += f.used;
        }
    }
    scopes.push(platform);
    scopes
}

/// A [`Hysteresis`] that also remembers since when the value has been at or above the line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    h: Hysteresis,
    since_ms: Option<u64>,
}

impl Watch {
    /// Feed the current value; the level to report, `None` when not firing.
    pub fn update(&mut self, t: &Thresholds, pct: f64, now_ms: u64) -> Option<Level> {
        let level = self.h.update(t, pct, now_ms);
        if level.is_some() || pct >= t.warn_pct {
            self.since_ms.get_or_insert(now_ms);
        } else {
            self.since_ms = None;
        }
        level
    }

    /// When the value reached the line (pending or firing).
    pub fn since_ms(&self) -> Option<u64> {
        self.since_ms
    }
}

/// The rule: per (scope, resource, ratio) one [`Watch`] on the line and one on the profile's
/// pre-warning line below it.
#[derive(Debug, Default)]
pub struct Capacity {
    watches: HashMap<String, [[(Watch, Watch); 2]; 4]>,
    keys: KeysCache,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(Capacity::default())
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// The alarm title, e.g. `资源池 A 内存使用率 71.2%，接近容量 70%，请报请扩容` (`全平台 内存…`).
/// A pre-warning's: `资源池 A 内存分配率 67.0%，接近容量 70%（预警线 65%），请提前报请扩容`.
fn title(scope: &Scope, r: Resource, k: Kind, pct: f64, level: Level, t: &Thresholds) -> String {
    let what = format!("{} {}{} {pct:.1}%", scope.name_zh(), r.zh(), k.zh());
    let over = t
        .escalate
        .iter()
        .filter(|e| e.level == level && pct >= e.pct)
        .map(|e| e.pct)
        .reduce(f64::max);
    match over {
        Some(line) => format!("{what}，超过容量 {line}%，请尽快扩容"),
        None => format!("{what}，接近容量 {}%，请报请扩容", t.warn_pct),
    }
}

impl Rule for Capacity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.capacity
    }

    fn interval_ms(&self) -> u64 {
        crate::policy::AGGREGATE_INTERVAL_MS
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        let t = &ctx.profile.capacity.thresholds;
        let pre = ctx.profile.capacity.prewarn.as_ref();
        let keys = self.keys.get(ctx.register);
        let scopes = measure_indexed(
            ctx.fleet,
            ctx.register,
            &VmIndex::with_keys(ctx.register, keys),
        );
        // scopes whose pool left the register forget their state
        self.watches
            .retain(|id, _| scopes.iter().any(|s| &s.id == id));
        for s in &scopes {
            if !self.watches.contains_key(&s.id) {
                self.watches.insert(s.id.clone(), Default::default());
            }
            let Some(watches) = self.watches.get_mut(&s.id) else {
                continue;
            };
            for r in Resource::ALL {
                let f = s.figures(r);
                for k in Kind::ALL {
                    let (Some(pct), Some((value, of))) = (f.pct(k), f.parts(k)) else {
                        continue;
                    };
                    let (w, pw) = &mut watches[r as usize][k as usize];
                    let level = w.update(t, pct, ctx.now_ms);
                    let early = pre.and_then(|p| pw.update(p, pct, ctx.now_ms).map(|_| p));
                    // the line's alarm, else the pre-warning (提示) before it
                    let (level, stage, line, since_ms, title) = match (level, early) {
                        (Some(level), _) => (
                            level,
                            "alarm",
                            t,
                            w.since_ms(),
                            title(s, r, k, pct, level, t),
                        ),
                        (None, Some(p)) => (
                            Level::Info,
                            "prewarn",
                            p,
                            pw.since_ms(),
                            format!(
                                "{} {}{} {pct:.1}%，接近容量 {}%（预警线 {}%），请提前报请扩容",
                                s.name_zh(),
                                r.zh(),
                                k.zh(),
                                t.warn_pct,
                                p.warn_pct
                            ),
                        ),
                        (None, None) => continue,
                    };
                    out.push(Finding {
                        key: AlarmKey {
                            rule: NAME.into(),
                            subject: s.subject(r, k),
                        },
                        level,
                        clause: ctx.profile.clauses.capacity.clone(),
                        unit: None,
                        title,
                        evidence: serde_json::json!({
                            "scope": s.id,
                            "pool": s.pool,
                            "resource": r.as_str(),
                            "kind": k.as_str(),
                            "pct": round(pct, 1),
                            "capacity": round(of, 2),
                            "value": round(value, 2),
                            "unit": r.unit(),
                            "stage": stage,
                            "threshold": line.warn_pct,
                            "recovery": line.recovery_pct,
                            "hold_s": line.hold.as_secs(),
                            "line": t.warn_pct,
                            "since_ms": since_ms,
                            "hosts": s.hosts,
                        }),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::register::{Pool, ServerType};
    use std::time::Duration;
    use yunjian_protocol::{
        Body, DiskInfo, DiskSample, Envelope, GuestView, Hello, Inventory, Memory, NetSample,
        Status,
    };

    pub const GIB: u64 = 1024 * 1024;

    /// An inventory: `cores` CPU threads, `mem_gib` of memory, one filesystem of `disk_gib`.
    pub fn inventory(
        role: Role,
        cores: u16,
        mem_gib: u64,
        disk_gib: u64,
        uuid: Option<&str>,
    ) -> Body {
        Body::Inventory(Inventory {
            hostname: "n".into(),
            role,
            os: String::new(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: cores,
            mem_total_kib: mem_gib * GIB,
            disks: vec![DiskInfo {
                mount: "/".into(),
                fs_type: "xfs".into(),
                total_kib: disk_gib * GIB,
            }],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: uuid.map(Into::into),
            rack: None,
        })
    }

    /// A report: CPU and memory in percent of `mem_gib`, one disk, the given NIC rates.
    pub fn report(cpu_pct: f64, mem_gib: u64, mem_pct: f64, nets: &[(&str, u64)]) -> Body {
        let total = mem_gib * GIB;
        let used = (total as f64 * mem_pct / 100.0) as u64;
        Body::Report(yunjian_protocol::Report {
            cpu_busy: yunjian_protocol::centi(cpu_pct),
            per_core: vec![],
            load: [0; 3],
            mem: Memory {
                total_kib: total,
                used_kib: used,
                available_kib: total - used,
                swap_total_kib: 0,
                swap_used_kib: 0,
            },
            disks: vec![DiskSample {
                mount: "/".into(),
                total_kib: 1000 * GIB,
                used_kib: 400 * GIB,
                read_bps: 0,
                write_bps: 0,
            }],
            nets: nets
                .iter()
                .map(|&(name, bps)| NetSample {
                    name: name.into(),
                    rx_bytes: 0,
                    tx_bytes: 0,
                    rx_bps: bps,
                    tx_bps: bps / 2,
                })
                .collect(),
            uptime_s: 1,
            failed: vec![],
        })
    }

    pub fn guest(uuid: &str, vcpus: u16, mem_gib: u64) -> GuestView {
        GuestView {
            uuid: uuid.into(),
            name: uuid.into(),
            vcpus,
            mem_kib: mem_gib * GIB,
            disk_kib: 50 * GIB,
            running: true,
        }
    }

    pub fn vm(unit: &str, system: &str, uuid: &str, vcpus: u32, mem_gb: u32) -> VmAllocation {
        VmAllocation {
            zone: "政务外网".into(),
            developer: "开发商".into(),
            unit: unit.into(),
            system: system.into(),
            subsystem: String::new(),
            server_type: ServerType::App,
            owner: String::new(),
            email: String::new(),
            phone: String::new(),
            vcpus,
            mem_gb,
            sys_disk_gb: 40,
            data_disk_gb: 100,
            os: String::new(),
            clustered: false,
            cluster_group: String::new(),
            note: String::new(),
            uuid: Some(uuid.into()),
            term: Default::default(),
        }
    }

    /// Apply `bodies` to `node` after an Online status and a Hello.
    pub fn feed(fleet: &mut Fleet, node: &str, role: Role, bodies: Vec<Body>, ts_ms: u64) {
        let seq = fleet.get(node).map_or(0, |s| s.last_seq);
        if seq == 0 {
            fleet.apply(
                Envelope::new(node, 0, ts_ms, Body::Status(Status::Online)),
                ts_ms,
            );
            let hello = Body::Hello(Hello {
                agent_version: "t".into(),
                role,
                interval_ms: 10_000,
                buffered: 0,
                epoch: 1,
            });
            fleet.apply(Envelope::new(node, 1, ts_ms, hello), ts_ms);
        }
        let mut seq = fleet.get(node).map_or(0, |s| s.last_seq);
        for b in bodies {
            seq += 1;
            fleet.apply(Envelope::new(node, seq, ts_ms, b), ts_ms);
        }
    }

    const U1: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const U2: &str = "7C9E6679-7425-40DE-944B-E07FC1F90AE7";
    const U3: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    fn pool(name: &str, hosts: &[&str]) -> Pool {
        Pool {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            reserved: Resources {
                vcpus: 4.0,
                mem_gb: 16.0,
                disk_gb: 0.0,
                net_mbps: 0.0,
            },
            overcommit: Resources {
                vcpus: 2.0,
                mem_gb: 1.0,
                disk_gb: 1.0,
                net_mbps: 1.0,
            },
            nic_mbps: 10_000.0,
        }
    }

    /// Pool A: h1 and h2 (32 threads, 256 GiB each), 3 VMs (two registered); h3 outside.
    fn fixture() -> (Fleet, Register) {
        let mut fleet = Fleet::new();
        for (h, cpu, mem) in [("h1", 50.0, 50.0), ("h2", 30.0, 40.0), ("h3", 10.0, 10.0)] {
            feed(
                &mut fleet,
                h,
                Role::Host,
                vec![
                    inventory(Role::Host, 32, 256, 1000, None),
                    report(
                        cpu,
                        256,
                        mem,
                        &[
                            ("eno1", 125_000_000),
                            ("virbr0", 9_000_000_000),
                            ("vnet3", 1),
                        ],
                    ),
                ],
                1_000,
            );
        }
        feed(
            &mut fleet,
            "h1",
            Role::Host,
            vec![Body::Guests(vec![
                guest(&U1.to_uppercase(), 8, 32),
                guest(U2, 16, 64),
            ])],
            2_000,
        );
        feed(
            &mut fleet,
            "h2",
            Role::Host,
            vec![Body::Guests(vec![guest(U3, 4, 8)])],
            3_000,
        );
        let register = Register {
            vms: vec![
                vm("市数据局", "办公系统", U1, 8, 32),
                vm("市数据局", "办公系统", U2, 16, 128),
            ],
            pools: vec![pool("A", &["h1", "h2", "h9"])],
            ..Register::default()
        };
        (fleet, register)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn figures_per_pool_and_platform() {
        let (fleet, register) = fixture();
        let scopes = measure(&fleet, &register);
        assert_eq!(scopes.len(), 2);
        let a = &scopes[0];
        assert_eq!((a.id.as_str(), a.hosts, a.hosts_missing), ("pool:A", 2, 1));
        assert_eq!((a.vms, a.unregistered_vms, a.ts_ms), (3, 1, 1_000));
        let cpu = a.figures(Resource::Compute);
        assert_eq!(cpu.total, 64.0);
        // (64 − 4) × 2
        assert_eq!(cpu.capacity, 120.0);
        // 8 + 16 approved; the unregistered VM allocates nothing
        assert_eq!(cpu.allocated, Some(24.0));
        assert!(close(cpu.used, 16.0 + 9.6));
        let mem = a.figures(Resource::Memory);
        assert_eq!((mem.total, mem.capacity), (512.0, 496.0));
        // the approved 128 GB counts, not the 64 GiB the hypervisor reports
        assert_eq!(mem.allocated, Some(32.0 + 128.0));
        assert!(close(mem.pct(Kind::Used).unwrap(), 45.0));
        let disk = a.figures(Resource::Storage);
        assert_eq!(
            (disk.total, disk.capacity, disk.used),
            (2000.0, 2000.0, 800.0)
        );
        assert_eq!(disk.allocated, Some(280.0));
        // the pool's NIC bandwidth per host; the bridge and the tap device are the VMs' traffic
        let net = a.figures(Resource::Network);
        assert_eq!((net.total, net.allocated), (20_000.0, None));
        assert!(close(net.used, 2_000.0));
        assert_eq!(net.pct(Kind::Allocated), None);

        let p = &scopes[1];
        assert_eq!(
            (p.id.as_str(), p.pool.as_deref(), p.hosts),
            (PLATFORM, None, 3)
        );
        assert_eq!((p.hosts_missing, p.vms, p.unregistered_vms), (1, 3, 1));
        let cpu = p.figures(Resource::Compute);
        // pool A's capacity plus h3 unpooled (no reserve, no overcommit)
        assert_eq!((cpu.total, cpu.reserved, cpu.capacity), (96.0, 4.0, 152.0));
        assert_eq!(cpu.allocated, Some(24.0));
        // only the pool gives a network capacity, and only its traffic counts against it
        let net = p.figures(Resource::Network);
        assert_eq!(net.total, 20_000.0);
        assert!(close(net.used, 2_000.0));
    }

    #[test]
    fn allocation_is_the_registers_pool_allocated() {
        let (mut fleet, register) = fixture();
        // U1 is also listed by h2 during a migration: it counts once
        feed(
            &mut fleet,
            "h2",
            Role::Host,
            vec![Body::Guests(vec![guest(U3, 4, 8), guest(U1, 8, 32)])],
            4_000,
        );
        let scopes = measure(&fleet, &register);
        let theirs =
            crate::register::capacity::pool_allocated(&register.pools[0], &register, &fleet);
        for r in [Resource::Compute, Resource::Memory, Resource::Storage] {
            assert_eq!(scopes[0].figures(r).allocated, Some(r.of(&theirs)), "{r:?}");
        }
        assert_eq!(scopes[0].figures(Resource::Memory).allocated, Some(160.0));
        assert_eq!((scopes[0].vms, scopes[0].unregistered_vms), (4, 1));
        // the use-only measure leaves allocation out
        let used = measure_use(&fleet, &register);
        assert_eq!(used[0].figures(Resource::Memory).allocated, None);
        assert_eq!(
            used[0].figures(Resource::Memory).used,
            scopes[0].figures(Resource::Memory).used
        );
    }

    #[test]
    fn without_pools_the_platform_is_the_one_scope() {
        let (fleet, mut register) = fixture();
        register.pools.clear();
        let scopes = measure(&fleet, &register);
        assert_eq!(scopes.len(), 1);
        let mem = scopes[0].figures(Resource::Memory);
        assert_eq!((mem.total, mem.capacity), (768.0, 768.0));
        // no pool, no NIC bandwidth: no network ratio
        assert_eq!(scopes[0].figures(Resource::Network).pct(Kind::Used), None);
        assert_eq!(
            scopes[0].subject(Resource::Memory, Kind::Used),
            "platform/memory/used"
        );
    }

    #[test]
    fn the_index_joins_uuids_whatever_their_case() {
        let (_, mut register) = fixture();
        register.vms.push(vm("u", "s", "not-a-uuid", 1, 1));
        let ix = VmIndex::new(&register);
        assert_eq!(ix.get(&U1.to_uppercase()).unwrap().vcpus, 8);
        assert_eq!(
            ix.get(&U2.replace('-', "").to_lowercase()).unwrap().vcpus,
            16
        );
        assert!(ix.get(U3).is_none());
        assert_eq!(ix.get("NOT-A-UUID").unwrap().unit, "u");
        assert_eq!(parse_uuid("0f8fad5b"), None);
        assert_eq!(parse_uuid(&format!("{U1}0")), None);
    }

    fn profile(hold: Duration) -> Profile {
        let mut p = Profile::default();
        p.capacity.thresholds.hold = hold;
        p
    }

    fn eval(
        rule: &mut Capacity,
        fleet: &Fleet,
        register: &Register,
        p: &Profile,
        now: u64,
    ) -> Vec<Finding> {
        let mut out = Findings::new();
        rule.evaluate(
            &Context {
                fleet,
                register,
                profile: p,
                now_ms: now,
            },
            &mut out,
        );
        out.into_vec()
    }

    #[test]
    fn under_every_profile_the_alarm_cites_that_profiles_document() {
        let (fleet, mut register) = fixture();
        register.vms[1].mem_gb = 128 + 200;
        for (name, _) in crate::policy::profile::BUILTIN {
            let mut p = Profile::load(name).unwrap();
            p.capacity.thresholds.hold = Duration::ZERO;
            let f = eval(&mut Capacity::default(), &fleet, &register, &p, 0);
            assert_eq!(f.len(), 1, "under {name}");
            assert_eq!(f[0].clause, p.clauses.capacity);
            crate::policy::test_support::assert_cites_own(&p, &f[0].clause);
        }
    }

    /// 003 第十九条 warns when use *approaches* 70%: a pool at 67% gets the pre-warning (提示),
    /// not the 70% alarm; at the line the same alarm becomes the 70% one; 004 has no such line.
    #[test]
    fn approaching_the_line_under_003_raises_the_pre_warning_first() {
        let (fleet, mut register) = fixture();
        // pool A memory: 496 GB capacity; 32 + 301 = 333 GB approved: 67.1 %
        register.vms[1].mem_gb = 301;
        let p = Profile::load("003").unwrap();
        let pre = p
            .capacity
            .prewarn
            .as_ref()
            .expect("003 has a pre-warning line");
        assert!(pre.warn_pct < p.capacity.thresholds.warn_pct);
        let mut rule = Capacity::default();
        assert!(eval(&mut rule, &fleet, &register, &p, 0).is_empty());
        // held past the pre-warning's hold
        let hold = pre.hold.as_millis() as u64;
        let f = eval(&mut rule, &fleet, &register, &p, hold);
        let [a] = &f[..] else { panic!("{f:?}") };
        assert_eq!(a.key.subject, "pool:A/memory/allocated");
        assert_eq!(a.level, Level::Info);
        assert_eq!(a.evidence["stage"], "prewarn");
        assert_eq!(a.evidence["threshold"], 65.0);
        assert_eq!(a.evidence["line"], 70.0);
        assert_eq!(
            a.title,
            "资源池 A 内存分配率 67.1%，接近容量 70%（预警线 65%），请提前报请扩容"
        );
        assert_eq!(a.clause, p.clauses.capacity);
        // past the line (held): the same alarm, now the 70% one
        register.vms[1].mem_gb = 128 + 200;
        let line_hold = p.capacity.thresholds.hold.as_millis() as u64;
        assert_eq!(
            eval(&mut rule, &fleet, &register, &p, hold + 1)[0].evidence["stage"],
            "prewarn",
            "the line's own hold runs first"
        );
        let f = eval(&mut rule, &fleet, &register, &p, hold + 1 + line_hold);
        let [a] = &f[..] else { panic!("{f:?}") };
        assert_eq!(a.key.subject, "pool:A/memory/allocated");
        assert_eq!(
            (a.level, &a.evidence["stage"]),
            (Level::Warning, &serde_json::json!("alarm"))
        );
        // 004 has no pre-warning line: 67.1 % raises nothing
        register.vms[1].mem_gb = 301;
        let p4 = Profile::load("004").unwrap();
        assert!(p4.capacity.prewarn.is_none());
        let mut rule = Capacity::default();
        assert!(eval(&mut rule, &fleet, &register, &p4, 0).is_empty());
        assert!(eval(&mut rule, &fleet, &register, &p4, 3_600_000).is_empty());
    }

    #[test]
    fn allocated_past_the_line_fires_while_used_is_low() {
        let (fleet, mut register) = fixture();
        // pool A memory: 496 GB capacity; approve 200 GB more on the registered VM (U2)
        register.vms[1].mem_gb = 128 + 200;
        let p = profile(Duration::from_secs(60));
        let mut rule = Capacity::default();
        assert!(eval(&mut rule, &fleet, &register, &p, 0).is_empty());
        let f = eval(&mut rule, &fleet, &register, &p, 60_000);
        let subjects: Vec<&str> = f.iter().map(|f| f.key.subject.as_str()).collect();
        // 360 / 496 = 72.6 % allocated in the pool; used stays at 45 %; on the platform
        // (capacity 752) the same allocation is under the line
        assert_eq!(subjects, ["pool:A/memory/allocated"]);
        let a = &f[0];
        assert_eq!(a.level, Level::Warning);
        assert_eq!(a.clause, p.clauses.capacity);
        assert_eq!(a.evidence["stage"], "alarm");
        assert_eq!(
            a.title,
            "资源池 A 内存分配率 72.6%，接近容量 70%，请报请扩容"
        );
        assert_eq!(a.evidence["kind"], "allocated");
        assert_eq!(a.evidence["pct"], 72.6);
        assert_eq!(a.evidence["capacity"], 496.0);
        assert_eq!(a.evidence["value"], 360.0);
        assert_eq!(a.evidence["since_ms"], 0);
        assert_eq!(a.evidence["hold_s"], 60);
    }

    #[test]
    fn escalation_names_the_line_crossed() {
        let (mut fleet, register) = fixture();
        let p = profile(Duration::ZERO);
        let mut rule = Capacity::default();
        feed(
            &mut fleet,
            "h3",
            Role::Host,
            vec![report(10.0, 256, 96.0, &[("eth0", 0)])],
            5_000,
        );
        let f = eval(&mut rule, &fleet, &register, &p, 0);
        // h3 is outside the pool: only the platform counts it (62.0 % used)
        assert!(f.is_empty(), "{f:?}");
        let mut register = register;
        register.pools.push(pool("B", &["h3"]));
        let f = eval(&mut rule, &fleet, &register, &p, 0);
        let b: Vec<&Finding> = f
            .iter()
            .filter(|f| f.key.subject.starts_with("pool:B/memory/used"))
            .collect();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].level, Level::Critical);
        assert_eq!(
            b[0].title,
            "资源池 B 内存使用率 96.0%，超过容量 95%，请尽快扩容"
        );
    }
}
