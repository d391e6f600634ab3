//! The allocation register: using units (使用单位) → information systems (信息系统/子系统) →
//! VMs with their approved allocation (the columns of 000 附件3 云资源使用需求表), and the
//! physical hosts grouped into resource pools with capacity, reserved amounts and overcommit.
//!
//! This module holds the model; beside it:
//!
//! | module       | what                                                                     |
//! |--------------|--------------------------------------------------------------------------|
//! | [`csv`]      | RFC 4180 CSV and its text encodings (UTF-8, GB18030), pure on bytes      |
//! | [`form`]     | the 附件3 form: header row, columns, row validation; `.xlsx` via calamine |
//! | [`limits`]   | the bounds an imported file is read within (size, ZIP, range, cells)     |
//! | [`export`]   | the register back to `.xlsx` in the 附件3 layout                          |
//! | [`changes`]  | every change (import, change request, sanction, quota) as a unit record  |
//! | [`observe`]  | what agents and hypervisors report of each VM, joined by SMBIOS UUID     |
//! | [`capacity`] | pool capacity, allocation and use (read by the capacity alarms)          |
//! | [`pools`]    | the pools file (`pools_file` in the config)                              |
//!
//! Units and VMs persist in storage (one [`UnitRecord`] per changed unit, written through the
//! storage thread); pools come from the pools file at start.

pub mod capacity;
pub mod changes;
pub mod csv;
pub mod export;
pub mod form;
pub mod form003;
pub mod limits;
pub mod observe;
pub mod pools;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Server type column of 附件3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServerType {
    App,
    Web,
    Ftp,
    Dat,
    Mid,
    Tst,
    Oth,
}

impl ServerType {
    pub const ALL: [ServerType; 7] = [
        ServerType::App,
        ServerType::Web,
        ServerType::Ftp,
        ServerType::Dat,
        ServerType::Mid,
        ServerType::Tst,
        ServerType::Oth,
    ];

    /// The code as written in the form (`APP`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServerType::App => "APP",
            ServerType::Web => "WEB",
            ServerType::Ftp => "FTP",
            ServerType::Dat => "DAT",
            ServerType::Mid => "MID",
            ServerType::Tst => "TST",
            ServerType::Oth => "OTH",
        }
    }

    /// Parse a code, ignoring ASCII case (`app`, `App`).
    pub fn parse(code: &str) -> Option<ServerType> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(code))
    }
}

/// Amounts of the four resources of 003 第十九条.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus: f64,
    pub mem_gb: f64,
    pub disk_gb: f64,
    pub net_mbps: f64,
}

impl Resources {
    /// Element-wise sum.
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus + o.vcpus,
            mem_gb: self.mem_gb + o.mem_gb,
            disk_gb: self.disk_gb + o.disk_gb,
            net_mbps: self.net_mbps + o.net_mbps,
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::default(), Resources::plus)
    }
}

/// One VM's approved allocation (one row of 附件3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmAllocation {
    /// 网络分区
    pub zone: String,
    /// 开发商
    pub developer: String,
    /// 使用单位
    pub unit: String,
    /// 系统名称
    pub system: String,
    /// 子系统名称
    pub subsystem: String,
    /// 服务器类型
    pub server_type: ServerType,
    /// 堡垒机账号负责人 / 邮箱 / 手机号码
    pub owner: String,
    pub email: String,
    pub phone: String,
    pub vcpus: u32,
    pub mem_gb: u32,
    pub sys_disk_gb: u32,
    pub data_disk_gb: u32,
    /// 操作系统
    pub os: String,
    /// 集群部署 / 集群组号
    pub clustered: bool,
    pub cluster_group: String,
    /// 备注
    pub note: String,
    /// SMBIOS UUID of the VM once provisioned (the join key with agents); `None` before.
    pub uuid: Option<String>,
    /// Formal, test, trial or temporary, with its dates and the application behind it.
    #[serde(default)]
    pub term: Term,
}

/// What kind of allocation a VM is (正式 / 测试 / 试运行 / 临时), since when and until when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub kind: AllocationKind,
    /// When the resources were provided (开通 / test environment provided).
    #[serde(default)]
    pub starts_ms: Option<u64>,
    /// When a test or temporary allocation ends (an approved extension moves it).
    #[serde(default)]
    pub ends_ms: Option<u64>,
    /// The application that granted it (imported rows: none).
    #[serde(default)]
    pub application: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationKind {
    /// 正式
    #[default]
    Formal,
    /// 测试 (004 第十九条; the test period of 000 / 001 / 003)
    Test,
    /// 试运行 (003 第十四条)
    Trial,
    /// 临时 (004 第二十条)
    Temporary,
}

impl AllocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationKind::Formal => "formal",
            AllocationKind::Test => "test",
            AllocationKind::Trial => "trial",
            AllocationKind::Temporary => "temporary",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            AllocationKind::Formal => "正式",
            AllocationKind::Test => "测试",
            AllocationKind::Trial => "试运行",
            AllocationKind::Temporary => "临时",
        }
    }

    /// Ends on a date (test and temporary resources).
    pub fn expires(self) -> bool {
        matches!(self, AllocationKind::Test | AllocationKind::Temporary)
    }
}

impl VmAllocation {
    /// The approved amounts: vCPU核, 内存GB, 系统盘GB + 数据盘GB (附件3 has no bandwidth).
    pub fn approved(&self) -> Resources {
        Resources {
            vcpus: self.vcpus as f64,
            mem_gb: self.mem_gb as f64,
            disk_gb: self.sys_disk_gb as f64 + self.data_disk_gb as f64,
            net_mbps: 0.0,
        }
    }

    /// Whether this row is the VM with SMBIOS UUID `uuid` (case-insensitive).
    pub fn has_uuid(&self, uuid: &str) -> bool {
        self.uuid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
    }
}

/// A unit under sanction (004 第十六条, 003 第三十条): lowered quota, new requests held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sanction {
    pub reason: String,
    pub since_ms: u64,
    /// The lowered quota while the sanction lasts.
    pub quota: Option<Resources>,
    pub hold_requests: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub name: String,
    /// The unit's total quota; `None`: the sum of its approved VMs.
    pub quota: Option<Resources>,
    pub sanction: Option<Sanction>,
}

/// Where a unit's effective quota comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaSource {
    /// The lowered quota of a sanction in force.
    Sanction,
    /// The unit's own quota.
    Unit,
    /// No quota set: the sum of the unit's approved VMs.
    ApprovedSum,
}

/// One unit as stored: its row and all its VMs, as they are after a change. Every register
/// change is one of these per unit touched, written through the storage thread in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub unit: Unit,
    pub vms: Vec<VmAllocation>,
}

/// A resource pool (cluster) of physical hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    /// Node ids of its hosts.
    pub hosts: Vec<String>,
    /// Kept back from the hosts' totals.
    pub reserved: Resources,
    /// Overcommit ratio per resource (1.0 = none); capacity = (total − reserved) × ratio.
    pub overcommit: Resources,
    /// Bandwidth of one host's NIC(s) in Mbit/s: the pool's network total is hosts × this
    /// (agents report interface names, not link speeds). 0: no network capacity configured.
    #[serde(default)]
    pub nic_mbps: f64,
}

/// The allocation register, shared by the rules, the services and the pages.
pub type SharedRegister = std::sync::Arc<std::sync::RwLock<Register>>;

/// Everything registered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Register {
    pub units: BTreeMap<String, Unit>,
    pub vms: Vec<VmAllocation>,
    pub pools: Vec<Pool>,
    /// Moves whenever the register is changed through [`Register::apply`] or
    /// [`Register::touch`]: rules that evaluate incrementally look at everything again when it
    /// moved. Not stored, not compared.
    #[serde(skip)]
    pub revision: Revision,
}

/// The change counter of a [`Register`]: only [`Register::apply`], [`Register::touch`] and
/// [`Register::replace`] move it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(u64);

impl PartialEq for Register {
    fn eq(&self, other: &Self) -> bool {
        self.units == other.units && self.vms == other.vms && self.pools == other.pools
    }
}

impl Register {
    /// A register of these units, VMs and pools.
    pub fn new(units: BTreeMap<String, Unit>, vms: Vec<VmAllocation>, pools: Vec<Pool>) -> Self {
        Register {
            units,
            vms,
            pools,
            revision: Revision::default(),
        }
    }

    /// The change counter (see the field).
    pub fn revision(&self) -> u64 {
        self.revision.0
    }

    /// Note a change made to the register's fields directly (not through [`Register::apply`]).
    pub fn touch(&mut self) {
        self.revision.0 += 1;
    }

    /// Take `newer`'s content, keeping the change counter moving (a rule that cached the old
    /// revision must see a change, never the same number again).
    pub fn replace(&mut self, newer: Register) {
        let revision = self.revision.0.max(newer.revision.0) + 1;
        *self = newer;
        self.revision = Revision(revision);
    }

    /// The allocation whose SMBIOS UUID is `uuid` (case-insensitive).
    pub fn vm_by_uuid(&self, uuid: &str) -> Option<&VmAllocation> {
        self.vms.iter().find(|v| v.has_uuid(uuid))
    }

    /// Registered VMs by lower-case UUID, for rules that look many up per evaluation.
    pub fn uuid_index(&self) -> std::collections::HashMap<String, &VmAllocation> {
        self.vms
            .iter()
            .filter_map(|v| Some((v.uuid.as_deref()?.to_ascii_lowercase(), v)))
            .collect()
    }

    /// Every unit name: those with a unit row and those only named by VMs.
    pub fn unit_names(&self) -> Vec<&str> {
        self.vms_by_unit().into_keys().collect()
    }

    /// Every unit's VMs in register order, by unit name (units without VMs too), in one pass.
    pub fn vms_by_unit(&self) -> BTreeMap<&str, Vec<&VmAllocation>> {
        let mut out: BTreeMap<&str, Vec<&VmAllocation>> = self
            .units
            .keys()
            .map(|u| (u.as_str(), Vec::new()))
            .collect();
        for v in &self.vms {
            out.entry(v.unit.as_str()).or_default().push(v);
        }
        out
    }

    /// The unit's row and VMs as they are now (a default row if it has none yet).
    pub fn record(&self, unit: &str) -> UnitRecord {
        UnitRecord {
            unit: self.units.get(unit).cloned().unwrap_or_else(|| Unit {
                name: unit.to_string(),
                ..Unit::default()
            }),
            vms: self
                .vms
                .iter()
                .filter(|v| v.unit == unit)
                .cloned()
                .collect(),
        }
    }

    /// The quota in force for `unit` and where it comes from: a sanction's lowered quota,
    /// else the unit's own, else `approved` (the sum of its approved VMs).
    pub fn effective_quota(&self, unit: &str, approved: Resources) -> (Resources, QuotaSource) {
        let row = self.units.get(unit);
        if let Some(q) = row.and_then(|u| u.sanction.as_ref()?.quota) {
            return (q, QuotaSource::Sanction);
        }
        if let Some(q) = row.and_then(|u| u.quota) {
            return (q, QuotaSource::Unit);
        }
        (approved, QuotaSource::ApprovedSum)
    }

    /// Replace the unit's row and VMs by `record` (the in-memory side of a stored change).
    /// The unit's VMs keep their place in the list; new ones go at the end.
    pub fn apply(&mut self, record: UnitRecord) {
        self.touch();
        let name = record.unit.name.clone();
        let at = self
            .vms
            .iter()
            .position(|v| v.unit == name)
            .unwrap_or(self.vms.len());
        // the unit's VMs all sit at or after `at`: removing them leaves `at` in place
        self.vms.retain(|v| v.unit != name);
        self.vms.splice(at..at, record.vms);
        self.units.insert(name, record.unit);
    }

    /// The pool a host belongs to.
    pub fn pool_of(&self, host: &str) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|p| p.hosts.iter().any(|h| h == host))
    }
}

/// The register as stored (units and VMs) with the pools of `pools_file` (none when unset).
pub fn with_pools(
    mut register: Register,
    pools_file: Option<&Path>,
) -> Result<Register, pools::PoolsError> {
    if let Some(path) = pools_file {
        register.pools = pools::load(path)?;
        register.touch();
    }
    tracing::info!(
        units = register.units.len(),
        vms = register.vms.len(),
        pools = register.pools.len(),
        "register loaded"
    );
    Ok(register)
}
