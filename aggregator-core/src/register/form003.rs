//! 003 附件1 徽州区数据资源管理局政务云资源使用审批表 and its 附表 虚拟机资源表, as a unit fills
//! them: a header block of labelled cells (单位名称, 负责人 / 联系人 / 技术对接人 with their
//! phones and e-mail, 需求背景描述, 申请类型, 接入网络 …) and the 附表, one row per VM under a
//! header of 序号 | 用途 | vCPU(核) | 内存(GB) | 存储: 硬盘(GB), 存储类型 | 操作系统及版本 | 网络需求 |
//! 所开端口 | 申请类型 | 备注 (存储 spans two sub-columns on a second header row).
//!
//! The 附表 may sit below the block on one sheet or on a sheet of its own. Check boxes are read
//! as people fill them: `☑ 政务外网 □ 互联网` (a ticked box), or the chosen options written
//! alone (`政务外网、互联网`). Each row becomes a [`VmAllocation`] like a 附件3 row (用途 as its
//! 子系统名称, 网络需求's first zone as its 网络分区, 硬盘 as its disk, the 技术对接人 as its
//! contact) plus the 附表 columns the register does not keep ([`RowExtra`]); every zone named
//! (网络需求, 接入网络) must be one of the profile's.

use super::form::{
    header_chars, trim, whole_number, FormFile, FormKind, FormRow, FormSpec, Grid, RowError,
    RowExtra,
};
use super::{ServerType, VmAllocation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A column of the 附表.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Col {
    Seq,
    Purpose,
    Vcpus,
    MemGb,
    DiskGb,
    StorageType,
    Os,
    Network,
    Ports,
    RequestType,
    Note,
}

impl Col {
    const ALL: [Col; 11] = [
        Col::Seq,
        Col::Purpose,
        Col::Vcpus,
        Col::MemGb,
        Col::DiskGb,
        Col::StorageType,
        Col::Os,
        Col::Network,
        Col::Ports,
        Col::RequestType,
        Col::Note,
    ];

    const REQUIRED: [Col; 5] = [
        Col::Purpose,
        Col::Vcpus,
        Col::MemGb,
        Col::DiskGb,
        Col::Network,
    ];

    /// The header as printed in the 附表.
    pub fn header(self) -> &'static str {
        match self {
            Col::Seq => "序号",
            Col::Purpose => "用途",
            Col::Vcpus => "vCPU(核)",
            Col::MemGb => "内存(GB)",
            Col::DiskGb => "硬盘(GB)",
            Col::StorageType => "存储类型",
            Col::Os => "操作系统及版本",
            Col::Network => "网络需求",
            Col::Ports => "所开端口",
            Col::RequestType => "申请类型",
            Col::Note => "备注",
        }
    }

    fn from_header(cell: &str) -> Option<Col> {
        Col::ALL
            .into_iter()
            .find(|c| header_chars(cell).eq(header_chars(c.header())))
    }
}

/// 存储类型's options (附件1 lists 备份 in the block, 其他 everywhere).
pub const STORAGE_TYPES: [&str; 4] = ["数据库", "文件", "备份", "其他"];
/// 申请类型's options.
pub const REQUEST_TYPES: [&str; 4] = ["资源申请", "资源变更", "资源退出", "其他"];

/// A person of the header block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub name: String,
    /// 联系电话.
    pub phone: String,
    /// 手机.
    pub mobile: String,
    /// 邮箱.
    pub email: String,
}

/// The header block of 附件1: who applies, for what, on which network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationHeader {
    /// 单位名称.
    pub unit_name: String,
    /// 地址.
    pub address: String,
    /// 单位性质 (机关单位, 事业单位, 其他).
    pub unit_kind: Vec<String>,
    /// 负责人.
    pub principal: Contact,
    /// 联系人.
    pub contact: Contact,
    /// 技术对接人.
    pub tech_contact: Contact,
    /// 需求背景描述.
    pub background: String,
    /// 申请类型 (资源申请, 资源变更, 资源退出, 其他).
    pub request_types: Vec<String>,
    /// 接入网络 (zones of the profile).
    pub networks: Vec<String>,
    /// 资源类型 (虚拟机, 公共存储, 其他).
    pub resource_types: Vec<String>,
    /// 公共存储 空间大小 as written (T).
    pub storage_size: String,
    /// 虚拟机: the free-text description of the VMs' needs.
    pub vm_needs: String,
    /// 管理和远程需求.
    pub remote_needs: String,
}

/// The labels of the header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    UnitName,
    Address,
    UnitKind,
    CloudType,
    Principal,
    Contact,
    TechContact,
    Phone,
    Mobile,
    Email,
    Background,
    RequestType,
    Network,
    ResourceType,
    StorageNeed,
    StorageType,
    PublicStorage,
    Vm,
    Remote,
}

impl Label {
    fn parse(cell: &str) -> Option<Label> {
        let name: String = header_chars(cell).collect();
        Some(match name.as_str() {
            "单位名称" => Label::UnitName,
            "地址" => Label::Address,
            "单位性质" => Label::UnitKind,
            "云资源类型" => Label::CloudType,
            "负责人" => Label::Principal,
            "联系人" => Label::Contact,
            "技术对接人" => Label::TechContact,
            "联系电话" => Label::Phone,
            "手机" => Label::Mobile,
            "邮箱" => Label::Email,
            "需求背景描述" => Label::Background,
            "申请类型" => Label::RequestType,
            "接入网络" => Label::Network,
            "资源类型" => Label::ResourceType,
            "存储需求" => Label::StorageNeed,
            "存储类型" => Label::StorageType,
            "公共存储" => Label::PublicStorage,
            "虚拟机" => Label::Vm,
            "管理和远程需求" => Label::Remote,
            _ => return None,
        })
    }
}

/// A label cell, with what follows its colon in the same cell (`需求背景描述：…`).
fn label_of(cell: &str) -> Option<(Label, &str)> {
    let cell = trim(cell);
    let (name, rest) = match cell.find(['：', ':']) {
        Some(i) => {
            let colon = cell[i..].chars().next().map_or(1, char::len_utf8);
            (&cell[..i], trim(&cell[i + colon..]))
        }
        None => (cell, ""),
    };
    Label::parse(name).map(|l| (l, rest))
}

/// Marks of a ticked box, and of an empty one.
const TICKED: [char; 7] = ['☑', '☒', '■', '√', '✓', '✔', '▣'];
const EMPTY: [char; 3] = ['□', '☐', '▢'];

/// The options chosen in a check-box cell: those after a ticked box when the cell has one,
/// else every option written (none when only empty boxes are left, as in the blank form).
pub fn chosen(cell: &str) -> Vec<String> {
    let is_sep = |c: char| ",，、;；/|".contains(c) || c.is_whitespace();
    let words = |s: &str| -> Vec<String> {
        s.split(is_sep)
            .map(|w| w.trim_end_matches(['：', ':']))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    if cell.contains(TICKED) {
        cell.split(|c| TICKED.contains(&c))
            .skip(1)
            .filter_map(|part| {
                let upto = part.find(EMPTY).unwrap_or(part.len());
                words(&part[..upto]).into_iter().next()
            })
            .collect()
    } else if cell.contains(EMPTY) {
        Vec::new()
    } else {
        words(cell)
    }
}

/// The 附表's header row: the first row naming at least five of its columns, among them 用途
/// and 网络需求 (so the block's 申请类型 row is never taken for it).
pub(crate) fn find_table(grid: &Grid) -> Option<usize> {
    grid.iter().position(|(_, cells)| {
        let named: std::collections::HashSet<Col> =
            cells.iter().filter_map(|c| Col::from_header(c)).collect();
        named.len() >= 5 && named.contains(&Col::Purpose) && named.contains(&Col::Network)
    })
}

pub(crate) fn no_table_reason() -> String {
    format!(
        "未找到附表（虚拟机资源表）的表头：需要列 {}",
        Col::REQUIRED.map(Col::header).join("、")
    )
}

/// Read the 附表 of `table` (one of `sheets`) and the header block (on whichever sheet has
/// one): every bad row and cell named, or the rows and the block.
pub(crate) fn parse(
    spec: &FormSpec,
    file: &str,
    sheets: &[Grid],
    table: &Grid,
) -> Result<FormFile, Vec<RowError>> {
    let mut errors = Vec::new();
    let h = find_table(table).ok_or_else(|| vec![RowError::file(file, no_table_reason())])?;
    let block = sheets.iter().find(|g| {
        g.iter()
            .any(|(_, cells)| cells.iter().any(|c| is_block_start(c)))
    });
    let header = block.map(|g| {
        // on the 附表's sheet, the block is what lies above the 附表
        let upto = if std::ptr::eq(g, table) { h } else { g.len() };
        parse_block(spec, file, &g[..upto], &mut errors)
    });
    let rows = parse_table(spec, file, table, h, header.as_ref(), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    if rows.is_empty() {
        return Err(vec![RowError::file(
            file,
            "附表（虚拟机资源表）中没有虚拟机行（每台虚拟机一行）",
        )]);
    }
    Ok(FormFile {
        kind: FormKind::Approval003,
        header,
        rows,
    })
}

/// The person a row of the block is about.
fn contact(h: &mut ApplicationHeader, person: Option<Label>) -> Option<&mut Contact> {
    match person {
        Some(Label::Principal) => Some(&mut h.principal),
        Some(Label::Contact) => Some(&mut h.contact),
        Some(Label::TechContact) => Some(&mut h.tech_contact),
        _ => None,
    }
}

fn is_block_start(cell: &str) -> bool {
    matches!(label_of(cell), Some((Label::UnitName, _)))
}

/// The header block: each label's value is the next cell that is not a label (or the text
/// after its colon); 联系电话 / 手机 / 邮箱 belong to the person the row starts with.
fn parse_block(
    spec: &FormSpec,
    file: &str,
    rows: &[(usize, Vec<String>)],
    errors: &mut Vec<RowError>,
) -> ApplicationHeader {
    let mut h = ApplicationHeader::default();
    for (row, cells) in rows {
        let mut person: Option<Label> = None;
        let mut i = 0;
        while i < cells.len() {
            let Some((label, inline)) = label_of(&cells[i]) else {
                i += 1;
                continue;
            };
            // the value: after the colon, else the next non-empty cell that is not a label
            let mut value = inline.to_string();
            let mut j = i + 1;
            while value.is_empty() && j < cells.len() && label_of(&cells[j]).is_none() {
                value = trim(&cells[j]).to_string();
                j += 1;
            }
            match label {
                Label::UnitName => h.unit_name = value,
                Label::Address => h.address = value,
                Label::UnitKind => h.unit_kind = chosen(&value),
                Label::CloudType | Label::PublicStorage | Label::StorageType => {}
                Label::Principal | Label::Contact | Label::TechContact => {
                    person = Some(label);
                    if let Some(c) = contact(&mut h, person) {
                        c.name = value;
                    }
                }
                Label::Phone | Label::Mobile | Label::Email => {
                    if let Some(c) = contact(&mut h, person) {
                        match label {
                            Label::Phone => c.phone = value,
                            Label::Mobile => c.mobile = value,
                            _ => c.email = value,
                        }
                    }
                }
                Label::Background => h.background = value,
                Label::RequestType => h.request_types = chosen(&value),
                Label::Network => {
                    let mut zones = Vec::new();
                    for z in chosen(&value) {
                        match spec.zone(&z) {
                            Some(known) => zones.push(known.to_string()),
                            None => errors.push(RowError::named(
                                file,
                                *row,
                                "接入网络",
                                spec.unknown_zone("接入网络", &z),
                            )),
                        }
                    }
                    h.networks = zones;
                }
                Label::ResourceType => h.resource_types = chosen(&value),
                Label::StorageNeed => {
                    h.storage_size = value
                        .trim_start_matches("空间大小")
                        .trim_start_matches(['：', ':'])
                        .trim()
                        .to_string()
                }
                Label::Vm => h.vm_needs = value,
                Label::Remote => h.remote_needs = value,
            }
            i = j.max(i + 1);
        }
    }
    h
}

/// The 附表's rows below its header (and the 存储 sub-header row, when there is one).
fn parse_table(
    spec: &FormSpec,
    file: &str,
    grid: &Grid,
    h: usize,
    header: Option<&ApplicationHeader>,
    errors: &mut Vec<RowError>,
) -> Vec<FormRow> {
    let mut columns: HashMap<Col, usize> = HashMap::new();
    let mut first = h + 1;
    for (i, cell) in grid[h].1.iter().enumerate() {
        if let Some(c) = Col::from_header(cell) {
            columns.entry(c).or_insert(i);
        }
    }
    // 存储 spans 硬盘(GB) and 存储类型, named on the row below
    if let Some((_, sub)) = grid.get(h + 1) {
        let named: Vec<(usize, Col)> = sub
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Col::from_header(c).map(|col| (i, col)))
            .collect();
        if !named.is_empty() {
            for (i, c) in named {
                columns.entry(c).or_insert(i);
            }
            first = h + 2;
        }
    }
    let missing: Vec<&str> = Col::REQUIRED
        .into_iter()
        .filter(|c| !columns.contains_key(c))
        .map(Col::header)
        .collect();
    if !missing.is_empty() {
        errors.push(RowError::file(
            file,
            format!("附表的表头缺少列 {}", missing.join("、")),
        ));
        return Vec::new();
    }
    let tech = header.map(|h| &h.tech_contact);
    let mut rows = Vec::new();
    for (row, cells) in &grid[first.min(grid.len())..] {
        let cell = |c: Col| {
            columns
                .get(&c)
                .and_then(|&i| cells.get(i))
                .map_or("", |s| trim(s))
        };
        // the blank form's option row, a 序号 alone, notes below: not a VM
        if [Col::Purpose, Col::Vcpus, Col::MemGb, Col::DiskGb]
            .into_iter()
            .all(|c| cell(c).is_empty())
        {
            continue;
        }
        let mut mine: Vec<RowError> = Vec::new();
        let mut err = |c: Col, reason: String| {
            mine.push(RowError::named(file, *row, c.header(), reason));
        };
        let purpose = cell(Col::Purpose).to_string();
        if purpose.is_empty() {
            err(Col::Purpose, "用途为必填项".into());
        }
        let mut number = |c: Col| -> u32 {
            let v = cell(c);
            match whole_number(v) {
                Some(n) if n >= 1 => n,
                _ if v.is_empty() => {
                    err(c, format!("{}为必填项", c.header()));
                    0
                }
                _ => {
                    err(c, format!("{}“{v}”不是正整数", c.header()));
                    0
                }
            }
        };
        let (vcpus, mem_gb, disk_gb) =
            (number(Col::Vcpus), number(Col::MemGb), number(Col::DiskGb));
        let network = cell(Col::Network).to_string();
        let mut zones = Vec::new();
        let named = chosen(&network);
        for z in &named {
            match spec.zone(z) {
                Some(known) => zones.push(known.to_string()),
                None => err(Col::Network, spec.unknown_zone("网络需求", z)),
            }
        }
        if named.is_empty() {
            err(
                Col::Network,
                "网络需求为必填项（勾选或填写网络分区）".into(),
            );
        }
        let mut one_of = |c: Col, options: &[&str]| -> String {
            let picked = chosen(cell(c));
            for p in &picked {
                if !options.contains(&p.as_str()) {
                    err(
                        c,
                        format!("{}“{p}”不是 {} 之一", c.header(), options.join("、")),
                    );
                }
            }
            picked.join("、")
        };
        let storage_type = one_of(Col::StorageType, &STORAGE_TYPES);
        let request_type = one_of(Col::RequestType, &REQUEST_TYPES);
        if !mine.is_empty() {
            errors.append(&mut mine);
            continue;
        }
        let who = tech.cloned().unwrap_or_default();
        rows.push(FormRow {
            row: *row,
            vm: VmAllocation {
                zone: zones[0].clone(),
                developer: String::new(),
                unit: String::new(),
                system: String::new(),
                subsystem: purpose.clone(),
                server_type: ServerType::Oth,
                owner: who.name,
                email: who.email,
                phone: if who.mobile.is_empty() {
                    who.phone
                } else {
                    who.mobile
                },
                vcpus,
                mem_gb,
                sys_disk_gb: disk_gb,
                data_disk_gb: 0,
                os: cell(Col::Os).to_string(),
                clustered: false,
                cluster_group: String::new(),
                note: cell(Col::Note).to_string(),
                uuid: None,
                term: Default::default(),
            },
            extra: RowExtra {
                purpose,
                network,
                ports: cell(Col::Ports).to_string(),
                storage_type,
                request_type,
            },
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Profile;
    use crate::register::form::{read_form_file, read_profile_form, Format, ReadError};

    fn spec() -> FormSpec {
        Profile::load("003").unwrap().register
    }

    /// 附件1 as a unit fills it, saved as CSV: the title, the header block (ticked boxes, the
    /// 需求背景描述 after its colon), the 附表's title, its two header rows (存储 over 硬盘 and
    /// 存储类型) and two VMs.
    const FILLED_CSV: &str = "徽州区数据资源管理局政务云资源使用审批表,,,,,,,,,,\n\
单位名称,徽州区教育局,地址,徽州区文峰西路1号,,,,,,,\n\
单位性质,☑ 机关单位 □ 事业单位 □ 其他,,,,,,,,,\n\
负责人,王明,联系电话,0559-2345671,手机,13900000001,邮箱,wangming@hz.gov.cn,,,\n\
联系人,李华,联系电话,0559-2345672,手机,13900000002,邮箱,lihua@hz.gov.cn,,,\n\
技术对接人,张强,联系电话,0559-2345673,手机,13900000003,邮箱,zhangqiang@hz.gov.cn,,,\n\
需求背景描述：招生系统迁移上云,,,,,,,,,,\n\
申请类型,☑ 资源申请 □ 资源变更 □ 资源退出 □ 其他：,,,,,,,,,\n\
接入网络,☑ 政务外网 □ 互联网 其他：,,,,,,,,,\n\
资源类型,☑ 虚拟机 □ 公共存储 □ 其他：,,,,,,,,,\n\
,,,,,,,,,,\n\
附表：虚拟机资源表,,,,,,,,,,\n\
序号,用途,vCPU (核),内存 (GB),存储,,操作系统及版本,网络需求,所开端口,申请类型,备注\n\
,,,,硬盘 (GB),存储类型,,,,,\n\
1,招生系统应用服务器,8,16,200,文件,麒麟 V10,☑ 政务外网 □ 党政专网 □ 行业专网 □ 互联网,\"80,443\",☑ 资源申请 □ 资源变更,\n\
2,招生系统数据库,16,64,1000,☑ 数据库 □ 文件 □ 其他,麒麟 V10,政务外网、互联网,3306,资源申请,主库\n";

    #[test]
    fn the_filled_approval_form_reads_into_rows_and_its_header() {
        let f = read_form_file(&spec(), "审批表.csv", Format::Csv, FILLED_CSV.as_bytes()).unwrap();
        assert_eq!(f.kind, FormKind::Approval003);
        let h = f.header.expect("the header block");
        assert_eq!(
            (h.unit_name.as_str(), h.address.as_str()),
            ("徽州区教育局", "徽州区文峰西路1号")
        );
        assert_eq!(h.unit_kind, ["机关单位"]);
        assert_eq!(
            h.principal,
            Contact {
                name: "王明".into(),
                phone: "0559-2345671".into(),
                mobile: "13900000001".into(),
                email: "wangming@hz.gov.cn".into(),
            }
        );
        assert_eq!(h.contact.name, "李华");
        assert_eq!(h.tech_contact.mobile, "13900000003");
        assert_eq!(h.background, "招生系统迁移上云");
        assert_eq!(h.request_types, ["资源申请"]);
        assert_eq!(h.networks, ["政务外网"]);
        assert_eq!(h.resource_types, ["虚拟机"]);

        let [a, b] = &f.rows[..] else {
            panic!("{:?}", f.rows)
        };
        // title, 10 block rows, a blank row, the 附表's title and two header rows: data on 15, 16
        assert_eq!((a.row, b.row), (15, 16));
        assert_eq!(
            (a.vm.vcpus, a.vm.mem_gb, a.vm.sys_disk_gb, a.vm.data_disk_gb),
            (8, 16, 200, 0)
        );
        assert_eq!(
            (a.vm.zone.as_str(), a.vm.os.as_str()),
            ("政务外网", "麒麟 V10")
        );
        assert_eq!(a.vm.subsystem, "招生系统应用服务器");
        // the 技术对接人 answers for the VMs
        assert_eq!(
            (
                a.vm.owner.as_str(),
                a.vm.phone.as_str(),
                a.vm.email.as_str()
            ),
            ("张强", "13900000003", "zhangqiang@hz.gov.cn")
        );
        assert_eq!(
            a.extra,
            RowExtra {
                purpose: "招生系统应用服务器".into(),
                network: "☑ 政务外网 □ 党政专网 □ 行业专网 □ 互联网".into(),
                ports: "80,443".into(),
                storage_type: "文件".into(),
                request_type: "资源申请".into(),
            }
        );
        assert_eq!(b.extra.storage_type, "数据库");
        assert_eq!(b.extra.network, "政务外网、互联网");
        assert_eq!(
            (b.vm.zone.as_str(), b.vm.note.as_str()),
            ("政务外网", "主库")
        );
        assert_eq!((b.vm.vcpus, b.vm.mem_gb, b.vm.sys_disk_gb), (16, 64, 1000));
    }

    /// Before this reader the default profile's own form was refused ("no header row found").
    #[test]
    fn the_attachment3_reader_alone_does_not_know_the_approval_form() {
        let e = crate::register::form::read("审批表.csv", Format::Csv, FILLED_CSV.as_bytes())
            .unwrap_err();
        let ReadError::Rows(e) = e else {
            panic!("{e:?}")
        };
        assert!(e[0].reason.starts_with("no header row found"), "{}", e[0]);
    }

    #[test]
    fn an_unknown_zone_or_bad_cell_is_named_by_row_and_column() {
        let bad = FILLED_CSV
            .replace("政务外网、互联网", "电子政务内网")
            .replace(
                "1,招生系统应用服务器,8,16,200",
                "1,招生系统应用服务器,八,16,",
            )
            .replace("接入网络,☑ 政务外网", "接入网络,☑ 视频专网");
        let Err(ReadError::Rows(e)) =
            read_profile_form(&spec(), "审批表.csv", Format::Csv, bad.as_bytes())
        else {
            panic!("accepted")
        };
        let got: Vec<(Option<usize>, Option<&str>, &str)> = e
            .iter()
            .map(|e| (e.row, e.column.as_deref(), e.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(9), Some("接入网络"), "接入网络“视频专网”不是本地区的网络分区（可填：政务外网、党政专网、行业专网、互联网）"),
                (Some(15), Some("vCPU(核)"), "vCPU(核)“八”不是正整数"),
                (Some(15), Some("硬盘(GB)"), "硬盘(GB)为必填项"),
                (Some(16), Some("网络需求"), "网络需求“电子政务内网”不是本地区的网络分区（可填：政务外网、党政专网、行业专网、互联网）"),
            ]
        );
    }

    /// The form as an `.xlsx`: the 审批表 on one sheet, the 附表 on a second with 存储 merged
    /// over its two sub-columns, numbers typed as numbers.
    fn filled_xlsx() -> Vec<u8> {
        use rust_xlsxwriter::{Format as Cell, Workbook};
        let mut book = Workbook::new();
        let s = book.add_worksheet();
        s.set_name("审批表").unwrap();
        s.merge_range(
            0,
            0,
            0,
            7,
            "徽州区数据资源管理局政务云资源使用审批表",
            &Cell::new(),
        )
        .unwrap();
        let block: [&[&str]; 6] = [
            &["单位名称", "徽州区教育局", "地址", "徽州区文峰西路1号"],
            &[
                "负责人",
                "王明",
                "联系电话",
                "0559-2345671",
                "手机",
                "13900000001",
                "邮箱",
                "wangming@hz.gov.cn",
            ],
            &[
                "技术对接人",
                "张强",
                "联系电话",
                "0559-2345673",
                "手机",
                "13900000003",
                "邮箱",
                "zhangqiang@hz.gov.cn",
            ],
            &["需求背景描述：", "招生系统迁移上云"],
            &["申请类型", "■资源申请 □资源变更 □资源退出"],
            &["接入网络", "■政务外网 ■互联网"],
        ];
        for (r, cells) in block.iter().enumerate() {
            for (c, text) in cells.iter().enumerate() {
                s.write_string(r as u32 + 1, c as u16, *text).unwrap();
            }
        }
        let t = book.add_worksheet();
        t.set_name("附表").unwrap();
        t.write_string(0, 0, "附表：虚拟机资源表").unwrap();
        for (c, h) in ["序号", "用途", "vCPU (核)", "内存 (GB)"]
            .iter()
            .enumerate()
        {
            t.write_string(1, c as u16, *h).unwrap();
        }
        t.merge_range(1, 4, 1, 5, "存储", &Cell::new()).unwrap();
        for (c, h) in ["操作系统及版本", "网络需求", "所开端口", "申请类型", "备注"]
            .iter()
            .enumerate()
        {
            t.write_string(1, c as u16 + 6, *h).unwrap();
        }
        t.write_string(2, 4, "硬盘 (GB)").unwrap();
        t.write_string(2, 5, "存储类型").unwrap();
        t.write_number(3, 0, 1.0).unwrap();
        t.write_string(3, 1, "招生系统应用服务器").unwrap();
        for (c, n) in [(2, 8.0), (3, 16.0), (4, 200.0)] {
            t.write_number(3, c, n).unwrap();
        }
        for (c, text) in [
            (5, "文件"),
            (6, "麒麟 V10"),
            (7, "互联网"),
            (8, "443"),
            (9, "资源申请"),
        ] {
            t.write_string(3, c, text).unwrap();
        }
        book.save_to_buffer().unwrap()
    }

    #[test]
    fn the_approval_form_reads_from_a_workbook_of_two_sheets() {
        let f = read_form_file(&spec(), "审批表.xlsx", Format::Xlsx, &filled_xlsx()).unwrap();
        let h = f.header.expect("the header block, from its own sheet");
        assert_eq!(h.unit_name, "徽州区教育局");
        assert_eq!(h.request_types, ["资源申请"]);
        assert_eq!(h.networks, ["政务外网", "互联网"]);
        assert_eq!(h.background, "招生系统迁移上云");
        let [a] = &f.rows[..] else {
            panic!("{:?}", f.rows)
        };
        assert_eq!(a.row, 4);
        assert_eq!((a.vm.vcpus, a.vm.mem_gb, a.vm.sys_disk_gb), (8, 16, 200));
        assert_eq!(
            (a.vm.zone.as_str(), a.extra.ports.as_str()),
            ("互联网", "443")
        );
        assert_eq!(a.vm.owner, "张强");
    }

    #[test]
    fn check_boxes_read_as_people_fill_them() {
        assert_eq!(chosen("☑ 政务外网 □ 互联网 其他："), ["政务外网"]);
        assert_eq!(chosen("■政务外网 ■互联网"), ["政务外网", "互联网"]);
        assert_eq!(chosen("√政务外网□互联网"), ["政务外网"]);
        assert_eq!(chosen("政务外网、互联网"), ["政务外网", "互联网"]);
        assert!(chosen("□ 政务外网 □ 互联网").is_empty(), "the blank form");
        assert!(chosen("").is_empty());
    }
}
