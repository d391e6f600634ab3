//! Fixtures for the register's unit tests and for other modules' and crates' tests that need
//! a registered VM (feature `test-support`).

use super::{ServerType, VmAllocation};

/// A registered VM of `unit`: `vcpus` vCPU, 16 GB, 60 + 300 GB.
pub fn vm(unit: &str, uuid: &str, vcpus: u32) -> VmAllocation {
    VmAllocation {
        zone: "政务外网区".into(),
        developer: "华为".into(),
        unit: unit.into(),
        system: "预算一体化".into(),
        subsystem: "财务管理系统".into(),
        server_type: ServerType::App,
        owner: "张三".into(),
        email: "zhangsan@sohu.com".into(),
        phone: "13800000000".into(),
        vcpus,
        mem_gb: 16,
        sys_disk_gb: 60,
        data_disk_gb: 300,
        os: "CentOS 7.0".into(),
        clustered: false,
        cluster_group: String::new(),
        note: String::new(),
        uuid: Some(uuid.into()),
    }
}
