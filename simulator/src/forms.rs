//! The simulated estate's allocation register, written as the 附件3 云资源使用需求表 CSV forms
//! units fill in (one form per unit), so the demo's aggregator can import them and match every
//! simulated VM by its SMBIOS UUID. Each rack is one using unit. One VM per unit after the
//! first is registered smaller than it runs (half its vCPUs), so the demo shows a quota
//! violation (003 第十五条).

use crate::fleet::{Fleet, NodeKind};

/// Unit names given to racks in order (then `单位N`).
const UNITS: &[&str] = &[
    "市财政局",
    "市公安局",
    "市教育局",
    "市卫生健康委员会",
    "市人力资源和社会保障局",
    "市市场监督管理局",
];

/// Subsystem names given to VM templates in order.
const SUBSYSTEMS: &[&str] = &["业务办理", "数据库", "接口服务", "统计分析", "门户网站"];

/// The 附件3 header row, plus the UUID column the register accepts.
pub const HEADER: &str = "序号,网络分区,开发商,系统名称,子系统名称,服务器类型,堡垒机账号负责人,堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID";

/// System disk size written in the forms; the rest of a VM's disk is its data disk.
const SYSTEM_DISK_GB: u32 = 50;

/// The unit name of rack `i`.
pub fn unit_name(i: usize) -> String {
    UNITS
        .get(i)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("单位{}", i + 1))
}

/// One (unit, CSV text) per rack that has VMs.
pub fn register_forms(fleet: &Fleet) -> Vec<(String, String)> {
    let scenario = fleet.scenario();
    let mut out = Vec::new();
    for (r, rack) in scenario.racks.iter().enumerate() {
        let unit = unit_name(r);
        let mut csv = format!("{HEADER}\n");
        let mut n = 0;
        for spec in fleet.nodes().iter().filter(|s| s.rack == r) {
            let NodeKind::Guest { template, uuid, .. } = &spec.kind else {
                continue;
            };
            let t = &rack.vms[*template];
            n += 1;
            // the first VM of every unit but the first runs bigger than approved
            let vcpus = if n == 1 && r > 0 {
                (t.vcpus / 2).max(1)
            } else {
                t.vcpus
            };
            let data = t.disk_gib.saturating_sub(SYSTEM_DISK_GB);
            csv.push_str(&format!(
                "{n},政务外网区,华为,{unit}业务系统,{},APP,张三,zhangsan@example.gov.cn,13800000000,{vcpus},{},{},{data},CentOS 7.9,否,,模拟器生成,{uuid}\n",
                SUBSYSTEMS[*template % SUBSYSTEMS.len()],
                t.mem_gib,
                t.disk_gib.min(SYSTEM_DISK_GB),
            ));
        }
        if n > 0 {
            out.push((unit, csv));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn one_form_per_rack_with_every_vm_and_one_undersized() {
        let fleet = Fleet::build(Scenario::uniform(2, 2, 3, 9)).unwrap();
        let forms = register_forms(&fleet);
        assert_eq!(forms.len(), 2);
        assert_eq!(forms[0].0, "市财政局");
        for (_, csv) in &forms {
            assert!(csv.starts_with(HEADER));
            assert_eq!(csv.lines().count(), 1 + 2 * 3, "header + one row per VM");
        }
        // every simulated VM's UUID is in exactly one form
        let all: String = forms.iter().map(|(_, c)| c.as_str()).collect();
        for spec in fleet.nodes() {
            if let NodeKind::Guest { uuid, .. } = &spec.kind {
                assert_eq!(all.matches(uuid.as_str()).count(), 1);
            }
        }
    }
}
