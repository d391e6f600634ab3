//! Fixtures shared by the register's and the rules' unit tests.

use super::{ServerType, VmAllocation};
use crate::alarms::Finding;
use crate::fleet::Fleet;
use crate::policy::{Context, Findings, Profile, Rule};
use crate::register::Register;

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

/// One evaluation of `rule` (a full one for a fresh rule).
pub fn evaluate(rule: &mut dyn Rule, fleet: &Fleet, register: &Register) -> Vec<Finding> {
    let profile = Profile::default();
    let mut out = Findings::new();
    rule.evaluate(
        &Context {
            fleet,
            register,
            profile: &profile,
            now_ms: 0,
        },
        &mut out,
    );
    out.into_vec()
}
