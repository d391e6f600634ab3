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
        term: Default::default(),
    }
}

/// An `.xlsx` written by rust_xlsxwriter (one sheet, one shared string) with the given ZIP
/// entries put in place of its own or added (`xl/worksheets/sheet1.xml`,
/// `xl/sharedStrings.xml`, anything else): the hostile workbooks of the import's bounds tests
/// and the workbook around the `register_sheet` fuzz target's input.
pub fn xlsx_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let packed = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    let base = base_workbook();
    for (name, bytes) in base {
        let given = entries.iter().find(|(n, _)| n == name);
        out.start_file(name.as_str(), packed).expect("start");
        out.write_all(given.map_or(bytes.as_slice(), |(_, b)| b))
            .expect("write");
    }
    for (name, bytes) in entries
        .iter()
        .filter(|(n, _)| !base.iter().any(|(b, _)| b == n))
    {
        out.start_file(*name, packed).expect("start");
        out.write_all(bytes).expect("write");
    }
    out.finish().expect("finish").into_inner()
}

/// The entries of a one-sheet workbook from rust_xlsxwriter, unpacked (written once).
fn base_workbook() -> &'static [(String, Vec<u8>)] {
    use std::io::Read;
    static BASE: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let mut book = rust_xlsxwriter::Workbook::new();
        book.add_worksheet()
            .write_string(0, 0, "序号")
            .expect("a cell");
        let bytes = book.save_to_buffer().expect("a workbook");
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("its ZIP");
        (0..zip.len())
            .map(|i| {
                let mut entry = zip.by_index(i).expect("an entry");
                let name = entry.name().expect("a name").into_owned();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).expect("its bytes");
                (name, bytes)
            })
            .collect()
    })
}

/// A worksheet's XML: `dimension` as declared, then `rows` (each `<row>…</row>` already).
pub fn sheet_xml(dimension: &str, rows: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<worksheet xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\" \
xmlns:r=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships\">\
<dimension ref=\"{dimension}\"/><sheetData>{rows}</sheetData></worksheet>"
    )
    .into_bytes()
}
