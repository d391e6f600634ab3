//! The register back to `.xlsx` in the 附件3 layout: the title row, then the form's header and
//! one row per VM, with 使用单位 and 虚拟机UUID appended after 备注 so the form's own columns stay
//! where units know them. [`super::form::read`] reads it back to the same allocations.

use super::form::Column;
use super::VmAllocation;
use rust_xlsxwriter::{Format, FormatAlign, Workbook, XlsxError};

/// The title above the header row, as in 附件3.
pub const TITLE: &str = "云资源使用需求表";

/// One sheet with `vms` in the order given.
pub fn to_xlsx(vms: &[&VmAllocation]) -> Result<Vec<u8>, XlsxError> {
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("云资源使用需求表")?;
    let title = Format::new().set_bold().set_align(FormatAlign::Center);
    let head = Format::new()
        .set_bold()
        .set_text_wrap()
        .set_align(FormatAlign::Center);
    let last = (Column::EXPORT.len() - 1) as u16;
    sheet.merge_range(0, 0, 0, last, TITLE, &title)?;
    for (c, col) in Column::EXPORT.iter().enumerate() {
        let c = c as u16;
        sheet.write_string_with_format(1, c, col.header(), &head)?;
        sheet.set_column_width(c, width(*col))?;
    }
    sheet.set_freeze_panes(2, 0)?;
    for (i, vm) in vms.iter().enumerate() {
        let r = i as u32 + 2;
        for (c, col) in Column::EXPORT.iter().enumerate() {
            let c = c as u16;
            match cell(vm, i + 1, *col) {
                Cell::Number(n) => {
                    sheet.write_number(r, c, n)?;
                }
                Cell::Text(t) if t.is_empty() => {}
                // phone numbers and codes stay text: no 1.38E+10, no lost leading zeros
                Cell::Text(t) => {
                    sheet.write_string(r, c, t)?;
                }
            }
        }
    }
    book.save_to_buffer()
}

enum Cell {
    Number(f64),
    Text(String),
}

fn cell(vm: &VmAllocation, seq: usize, col: Column) -> Cell {
    let t = |s: &str| Cell::Text(s.to_string());
    match col {
        Column::Seq => Cell::Number(seq as f64),
        Column::Zone => t(&vm.zone),
        Column::Developer => t(&vm.developer),
        Column::System => t(&vm.system),
        Column::Subsystem => t(&vm.subsystem),
        Column::ServerType => t(vm.server_type.as_str()),
        Column::Owner => t(&vm.owner),
        Column::Email => t(&vm.email),
        Column::Phone => t(&vm.phone),
        Column::Vcpus => Cell::Number(vm.vcpus.into()),
        Column::MemGb => Cell::Number(vm.mem_gb.into()),
        Column::SysDiskGb => Cell::Number(vm.sys_disk_gb.into()),
        Column::DataDiskGb => Cell::Number(vm.data_disk_gb.into()),
        Column::Os => t(&vm.os),
        Column::Clustered => t(if vm.clustered { "是" } else { "否" }),
        Column::ClusterGroup => t(&vm.cluster_group),
        Column::Note => t(&vm.note),
        Column::Unit => t(&vm.unit),
        Column::Uuid => t(vm.uuid.as_deref().unwrap_or("")),
    }
}

fn width(col: Column) -> f64 {
    match col {
        Column::Seq | Column::Vcpus | Column::MemGb | Column::Clustered => 7.0,
        Column::SysDiskGb | Column::DataDiskGb | Column::ServerType => 9.0,
        Column::Email | Column::Phone | Column::Os => 20.0,
        Column::Uuid => 38.0,
        _ => 14.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::form::{read, Format};
    use crate::register::ServerType;

    fn vm(n: u32, uuid: Option<&str>) -> VmAllocation {
        VmAllocation {
            zone: "政务外网区".into(),
            developer: "华为".into(),
            unit: "市财政局".into(),
            system: if n == 1 {
                String::new()
            } else {
                "预算一体化".into()
            },
            subsystem: "财务管理系统".into(),
            server_type: if n == 1 {
                ServerType::App
            } else {
                ServerType::Dat
            },
            owner: "张三".into(),
            email: "zhangsan@sohu.com".into(),
            phone: "0771-1234567".into(),
            vcpus: 8 * n,
            mem_gb: 16,
            sys_disk_gb: 60,
            data_disk_gb: if n == 1 { 0 } else { 300 },
            os: "CentOS 7.0".into(),
            clustered: n == 1,
            cluster_group: "集群1".into(),
            note: "第一行\n第二行, \"引号\"".into(),
            uuid: uuid.map(Into::into),
            term: Default::default(),
        }
    }

    #[test]
    fn export_then_read_gives_the_same_allocations() {
        let vms = [
            vm(1, Some("4c4c4544-0042-3510-8058-b4c04f384d32")),
            vm(2, None),
        ];
        let bytes = to_xlsx(&vms.iter().collect::<Vec<_>>()).unwrap();
        let rows = read("export.xlsx", Format::Xlsx, &bytes).unwrap();
        // row 1 is the title, row 2 the header
        assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), [3, 4]);
        let back: Vec<VmAllocation> = rows.into_iter().map(|r| r.vm).collect();
        assert_eq!(back, vms);
    }
}
