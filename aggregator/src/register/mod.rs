//! The allocation register: using units (使用单位) → information systems (信息系统/子系统) →
//! VMs with their approved allocation (the columns of 000 附件3 云资源使用需求表), and the
//! physical hosts grouped into resource pools with capacity, reserved amounts and overcommit.
//!
//! This module holds the model; import/export and persistence live beside it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// Amounts of the four resources of 003 第十九条.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus: f64,
    pub mem_gb: f64,
    pub disk_gb: f64,
    pub net_mbps: f64,
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
}

/// Everything registered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub units: BTreeMap<String, Unit>,
    pub vms: Vec<VmAllocation>,
    pub pools: Vec<Pool>,
}

impl Register {
    /// The allocation whose SMBIOS UUID is `uuid` (case-insensitive).
    pub fn vm_by_uuid(&self, uuid: &str) -> Option<&VmAllocation> {
        self.vms.iter().find(|v| {
            v.uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        })
    }

    /// The pool a host belongs to.
    pub fn pool_of(&self, host: &str) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|p| p.hosts.iter().any(|h| h == host))
    }
}
