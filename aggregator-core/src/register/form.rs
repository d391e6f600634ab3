//! The 附件3 云资源使用需求表 as units fill it: one row per VM under a header row of Chinese
//! column names. Reading finds the header row (a title and a "申请单位联系人…" line may sit
//! above it), matches the columns by name (spaces and line breaks inside a header cell are
//! ignored, so "堡垒机账  号\n负责人" is 堡垒机账号负责人), skips blank rows (a 序号 alone, or
//! cells of full-width spaces "　"), trims every cell and validates each one. A file with any bad
//! row yields every bad row, each with its file, row number as the spreadsheet shows it,
//! column header and reason.
//!
//! `.xlsx` goes through calamine's cell stream; CSV through [`super::csv`]. Both become a grid
//! of text cells, so the validation is one function on literal rows ([`parse_grid`]). Both are
//! read within the bounds of [`super::limits`]: a file past one is refused with a
//! [`ReadError::Limit`] before it costs more than the bound.

use super::form003::{self, ApplicationHeader};
use super::limits::{self, cell_name, Budget, LimitError};
use super::{csv, ServerType, VmAllocation};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// A column of the form. [`Column::FORM`] is 附件3's own order; the register's export appends
/// 使用单位 and 虚拟机UUID ([`Column::EXPORT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Seq,
    Zone,
    Developer,
    System,
    Subsystem,
    ServerType,
    Owner,
    Email,
    Phone,
    Vcpus,
    MemGb,
    SysDiskGb,
    DataDiskGb,
    Os,
    Clustered,
    ClusterGroup,
    Note,
    Unit,
    Uuid,
}

impl Column {
    pub const FORM: [Column; 17] = [
        Column::Seq,
        Column::Zone,
        Column::Developer,
        Column::System,
        Column::Subsystem,
        Column::ServerType,
        Column::Owner,
        Column::Email,
        Column::Phone,
        Column::Vcpus,
        Column::MemGb,
        Column::SysDiskGb,
        Column::DataDiskGb,
        Column::Os,
        Column::Clustered,
        Column::ClusterGroup,
        Column::Note,
    ];

    pub const EXPORT: [Column; 19] = [
        Column::Seq,
        Column::Zone,
        Column::Developer,
        Column::System,
        Column::Subsystem,
        Column::ServerType,
        Column::Owner,
        Column::Email,
        Column::Phone,
        Column::Vcpus,
        Column::MemGb,
        Column::SysDiskGb,
        Column::DataDiskGb,
        Column::Os,
        Column::Clustered,
        Column::ClusterGroup,
        Column::Note,
        Column::Unit,
        Column::Uuid,
    ];

    /// Columns a file must have (their cells may still be optional).
    const REQUIRED: [Column; 8] = [
        Column::Zone,
        Column::System,
        Column::Subsystem,
        Column::ServerType,
        Column::Vcpus,
        Column::MemGb,
        Column::SysDiskGb,
        Column::DataDiskGb,
    ];

    /// The header as printed in 附件3.
    pub fn header(self) -> &'static str {
        match self {
            Column::Seq => "序号",
            Column::Zone => "网络分区",
            Column::Developer => "开发商",
            Column::System => "系统名称",
            Column::Subsystem => "子系统名称",
            Column::ServerType => "服务器类型",
            Column::Owner => "堡垒机账号负责人",
            Column::Email => "堡垒机账号负责人邮箱",
            Column::Phone => "堡垒机账号负责人手机号码",
            Column::Vcpus => "vCPU核",
            Column::MemGb => "内存GB",
            Column::SysDiskGb => "系统盘GB",
            Column::DataDiskGb => "数据盘GB",
            Column::Os => "操作系统",
            Column::Clustered => "集群部署",
            Column::ClusterGroup => "集群组号",
            Column::Note => "备注",
            Column::Unit => "使用单位",
            Column::Uuid => "虚拟机UUID",
        }
    }

    /// The column a header cell names, if any (compared as it goes: every cell of a sheet
    /// without a header row comes here).
    fn from_header(cell: &str) -> Option<Column> {
        Column::EXPORT
            .into_iter()
            .find(|c| header_chars(cell).eq(header_chars(c.header())))
    }
}

/// A header cell without what people and Excel add around the name: whitespace of any width
/// (line breaks too), required-field stars, parentheses around units (`内存(GB)`), ASCII case.
pub(crate) fn header_chars(cell: &str) -> impl Iterator<Item = char> + '_ {
    cell.chars()
        .filter(|c| !c.is_whitespace() && !"*＊()（）".contains(*c))
        .flat_map(char::to_lowercase)
}

/// The file kinds an import takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A workbook: `.xlsx`. (`.xls`, `.xlsb` and `.ods` are taken as workbooks too, to be refused
    /// with a message that says to save them as `.xlsx`.)
    Xlsx,
    Csv,
}

impl Format {
    /// From a `format=` value or a file extension (`xlsx`, `xls`, `csv`, case-insensitive).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "xlsx" | "xls" | "xlsb" | "ods" => Some(Format::Xlsx),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn of_file(name: &str) -> Option<Format> {
        Format::parse(name.rsplit_once('.')?.1)
    }
}

/// The form a region's units fill (`[register] form` in the policy profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FormKind {
    /// 000 附件3 云资源使用需求表: one row per VM (also the register's own export).
    #[serde(rename = "000-附件3")]
    Attachment3,
    /// 003 附件1 政务云资源使用审批表 with its 附表 虚拟机资源表 ([`super::form003`]).
    #[serde(rename = "003-附件1")]
    Approval003,
}

impl FormKind {
    /// The form's name as the documents print it.
    pub fn zh(self) -> &'static str {
        match self {
            FormKind::Attachment3 => "云资源使用需求表（附件3）",
            FormKind::Approval003 => "政务云资源使用审批表及附表虚拟机资源表（附件1）",
        }
    }
}

/// `[register]` in the policy profile: the region's form and its network zones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormSpec {
    /// The form this region's units fill. The register's own layout (附件3 with 使用单位 and
    /// 虚拟机UUID, what the export writes) is read under every profile as well.
    pub form: FormKind,
    /// The network zones (网络分区, 接入网络, 网络需求) a row may name. A trailing 区 is not
    /// significant (004 writes 政务外网区 where 003 writes 政务外网).
    pub zones: Vec<String>,
}

impl FormSpec {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.zones.iter().all(|z| z.trim().is_empty()) {
            return Err("register.zones: name the region's network zones".into());
        }
        Ok(())
    }

    /// The zone `cell` names, as the profile spells it.
    pub fn zone(&self, cell: &str) -> Option<&str> {
        let key = |s: &str| -> String {
            let t = trim(s);
            t.strip_suffix('区').unwrap_or(t).to_string()
        };
        let k = key(cell);
        self.zones
            .iter()
            .find(|z| !k.is_empty() && key(z) == k)
            .map(String::as_str)
    }

    /// The reason a cell naming an unknown zone is refused.
    pub fn unknown_zone(&self, column: &str, cell: &str) -> String {
        format!(
            "{column}“{cell}”不是本地区的网络分区（可填：{}）",
            self.zones.join("、")
        )
    }
}

/// What a region's form yields: the VM rows and, for a form with a header block (003 附件1),
/// the application's header fields.
#[derive(Debug, Clone, PartialEq)]
pub struct FormFile {
    /// Which form the file was read as.
    pub kind: FormKind,
    pub header: Option<ApplicationHeader>,
    pub rows: Vec<FormRow>,
}

/// Read a file as the active profile's form (or the register's own 附件3 layout): the rows,
/// every zone checked against the profile's zones. The import and the applications call this.
pub fn read_profile_form(
    spec: &FormSpec,
    file: &str,
    format: Format,
    bytes: &[u8],
) -> Result<Vec<FormRow>, ReadError> {
    read_form_file(spec, file, format, bytes).map(|f| f.rows)
}

/// [`read_profile_form`] with the header block of a form that has one (003 附件1).
pub fn read_form_file(
    spec: &FormSpec,
    file: &str,
    format: Format,
    bytes: &[u8],
) -> Result<FormFile, ReadError> {
    let sheets = read_sheets(file, format, bytes)?;
    // the profile's own form first, then the register's layout
    let kinds = [spec.form, FormKind::Attachment3];
    for kind in kinds {
        let found = sheets.iter().find(|g| match kind {
            FormKind::Attachment3 => find_header(g).is_some(),
            FormKind::Approval003 => form003::find_table(g).is_some(),
        });
        let Some(grid) = found else { continue };
        return match kind {
            FormKind::Attachment3 => parse_attachment3(file, grid, Some(spec))
                .map(|rows| FormFile {
                    kind,
                    header: None,
                    rows,
                })
                .map_err(ReadError::Rows),
            FormKind::Approval003 => {
                form003::parse(spec, file, &sheets, grid).map_err(ReadError::Rows)
            }
        };
    }
    let wanted = match spec.form {
        FormKind::Attachment3 => no_header_reason(),
        FormKind::Approval003 => {
            format!("{}；或{}", form003::no_table_reason(), no_header_reason())
        }
    };
    Err(ReadError::file(file, wanted))
}

/// One rejected row (or, with `row: None`, a problem with the whole file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub file: String,
    /// The row number as the spreadsheet shows it (1-based).
    pub row: Option<usize>,
    /// The column's header, as in 附件3.
    pub column: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(r) = self.row {
            write!(f, " row {r}")?;
        }
        if let Some(c) = &self.column {
            write!(f, " column {c}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl RowError {
    pub fn file(file: &str, reason: impl Into<String>) -> Self {
        RowError {
            file: file.to_string(),
            row: None,
            column: None,
            reason: reason.into(),
        }
    }

    /// A cell under a column named by its header text (a form other than 附件3).
    pub fn named(file: &str, row: usize, column: &str, reason: impl Into<String>) -> Self {
        RowError {
            file: file.to_string(),
            row: Some(row),
            column: Some(column.to_string()),
            reason: reason.into(),
        }
    }

    pub fn cell(file: &str, row: usize, column: Column, reason: impl Into<String>) -> Self {
        RowError {
            file: file.to_string(),
            row: Some(row),
            column: Some(column.header().to_string()),
            reason: reason.into(),
        }
    }
}

/// A row that passed validation. `vm.unit` is the 使用单位 cell (empty when the file has no
/// such column: the import names the unit).
#[derive(Debug, Clone, PartialEq)]
pub struct FormRow {
    pub row: usize,
    pub vm: VmAllocation,
    /// What a form asks beyond the register's columns (003 附件1's 附表); empty for 附件3.
    pub extra: RowExtra,
}

/// The columns of 003 附件1's 附表 that the register does not keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowExtra {
    /// 用途.
    pub purpose: String,
    /// 网络需求 as written (every zone checked; the first one is the row's `vm.zone`).
    pub network: String,
    /// 所开端口.
    pub ports: String,
    /// 存储类型 (数据库, 文件, 备份, 其他).
    pub storage_type: String,
    /// 申请类型 (资源申请, 资源变更, 资源退出, 其他).
    pub request_type: String,
}

/// A sheet as text: (row number as shown, cells).
pub type Grid = Vec<(usize, Vec<String>)>;

/// Why a file was not imported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// Every bad row, or (`row: None`) a file that is not the form or not readable.
    #[error("{} problem(s) in the file", .0.len())]
    Rows(Vec<RowError>),
    /// Over one of the bounds of [`super::limits`]: refused before it was read through.
    #[error("{file}：{limit}")]
    Limit { file: String, limit: LimitError },
}

impl ReadError {
    fn file(file: &str, reason: impl Into<String>) -> Self {
        ReadError::Rows(vec![RowError::file(file, reason)])
    }

    fn limit(file: &str, limit: LimitError) -> Self {
        ReadError::Limit {
            file: file.to_string(),
            limit,
        }
    }
}

/// Read a file of the given format as 附件3 into validated rows, within the bounds of
/// [`super::limits`] (zones not checked: [`read_profile_form`] checks them).
pub fn read(file: &str, format: Format, bytes: &[u8]) -> Result<Vec<FormRow>, ReadError> {
    let sheets = read_sheets(file, format, bytes)?;
    // the first sheet with a header row is the form
    match sheets.iter().find(|g| find_header(g).is_some()) {
        Some(grid) => parse_grid(file, grid).map_err(ReadError::Rows),
        None => Err(ReadError::file(file, no_header_reason())),
    }
}

/// A file's sheets as text grids (a CSV is one sheet), within the bounds of [`super::limits`].
fn read_sheets(file: &str, format: Format, bytes: &[u8]) -> Result<Vec<Grid>, ReadError> {
    if bytes.len() > limits::MAX_FILE_BYTES {
        let found = bytes.len();
        return Err(ReadError::limit(file, LimitError::FileSize { found }));
    }
    match format {
        Format::Csv => {
            let text = csv::decode(bytes).map_err(|e| ReadError::file(file, e.to_string()))?;
            let records = csv::parse(&text).map_err(|e| match e {
                csv::CsvError::Limit(l) => ReadError::limit(file, l),
                e => ReadError::file(file, e.to_string()),
            })?;
            Ok(vec![records
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i + 1, r))
                .collect()])
        }
        Format::Xlsx => Ok(read_workbook(file, bytes)?
            .into_iter()
            .map(|(_, g)| g)
            .collect()),
    }
}

/// The start of an OLE compound file (`.xls` of Excel 97-2003, and WPS's `.et`).
const OLE_MAGIC: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

fn unreadable(file: &str, e: impl std::fmt::Display) -> ReadError {
    ReadError::file(
        file,
        format!(
            "不是可读取的 .xlsx 工作簿（.xls、.xlsb、.ods 请在 Excel 或 WPS 中另存为 .xlsx 或 CSV UTF-8）：{e}"
        ),
    )
}

/// Every sheet of an `.xlsx` workbook as text cells, named. The ZIP is checked first
/// ([`check_zip`]); each sheet is then streamed cell by cell, its declared range and every
/// cell's position held to [`limits::MAX_ROWS`] and [`limits::MAX_COLUMNS`] and the cells kept
/// within [`Budget`], so no range is ever allocated from what the file claims. Only rows with
/// a cell are in the grid, each up to its last cell (columns keep their places).
///
/// `.xls` (and `.xlsb`, `.ods`) are refused: their readers build every sheet's whole range
/// when the file is opened, so they cannot be bounded.
fn read_workbook(file: &str, bytes: &[u8]) -> Result<Vec<(String, Grid)>, ReadError> {
    use calamine::Reader;
    if bytes.starts_with(OLE_MAGIC) {
        return Err(unreadable(file, "这是 .xls（Excel 97-2003）文件"));
    }
    check_zip(bytes).map_err(|e| match e {
        ZipCheck::Limit(l) => ReadError::limit(file, l),
        ZipCheck::Unreadable(e) => unreadable(file, e),
    })?;
    let mut book =
        calamine::Xlsx::new(std::io::Cursor::new(bytes)).map_err(|e| unreadable(file, e))?;
    let mut budget = Budget::default();
    let mut out = Vec::new();
    for name in book.sheet_names() {
        let mut cells = match book.worksheet_cells_reader(&name) {
            Ok(c) => c,
            // a chart sheet: no cells
            Err(calamine::XlsxError::NotAWorksheet(_)) => continue,
            Err(e) => return Err(unreadable(file, e)),
        };
        let declared = cells.dimensions();
        if declared.end.0 >= limits::MAX_ROWS || declared.end.1 >= limits::MAX_COLUMNS {
            let range = format!("{}:{}", cell_name(declared.start), cell_name(declared.end));
            let limit = LimitError::DeclaredRange { sheet: name, range };
            return Err(ReadError::limit(file, limit));
        }
        let mut rows: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        while let Some(cell) = cells.next_cell().map_err(|e| unreadable(file, e))? {
            let pos = cell.get_position();
            let (r, c) = pos;
            if r >= limits::MAX_ROWS || c >= limits::MAX_COLUMNS {
                let limit = LimitError::CellOutside {
                    sheet: name,
                    cell: cell_name(pos),
                };
                return Err(ReadError::limit(file, limit));
            }
            let text = cell_text(cell.get_value());
            if text.is_empty() {
                continue;
            }
            let (r, c) = (r as usize, c as usize);
            budget
                .text(&text, r + 1, c)
                .map_err(|l| ReadError::limit(file, l))?;
            let row = rows.entry(pos.0).or_default();
            if row.len() <= c {
                budget
                    .cells(c + 1 - row.len())
                    .map_err(|l| ReadError::limit(file, l))?;
                row.resize(c + 1, String::new());
            }
            row[c] = text.into_owned();
        }
        let grid = rows
            .into_iter()
            .map(|(r, cells)| (r as usize + 1, cells))
            .collect();
        out.push((name, grid));
    }
    Ok(out)
}

/// Every sheet of an `.xlsx` workbook as text cells, named, read as the import reads it (within
/// the same bounds); the error as a person reads it.
pub fn workbook_grids(bytes: &[u8]) -> Result<Vec<(String, Grid)>, String> {
    read_workbook("workbook.xlsx", bytes).map_err(|e| match e {
        ReadError::Rows(rows) => rows
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        e => e.to_string(),
    })
}

/// Why [`check_zip`] refused.
#[derive(Debug)]
enum ZipCheck {
    Limit(LimitError),
    Unreadable(String),
}

/// The workbook's ZIP within [`limits::MAX_ZIP_ENTRIES`], [`limits::MAX_UNPACKED_BYTES`] and
/// [`limits::MAX_RATIO`], measured by unpacking each entry (at most up to the bound: what an
/// entry's header declares is not trusted), so that the reader that follows unpacks no more.
fn check_zip(bytes: &[u8]) -> Result<(), ZipCheck> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| ZipCheck::Unreadable(e.to_string()))?;
    if zip.len() > limits::MAX_ZIP_ENTRIES {
        let found = zip.len();
        return Err(ZipCheck::Limit(LimitError::ZipEntries { found }));
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| ZipCheck::Unreadable(e.to_string()))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let packed = entry.compressed_size();
        let room = limits::MAX_UNPACKED_BYTES - total;
        if entry.size() > room {
            return Err(ZipCheck::Limit(
                if entry.size() > limits::MAX_UNPACKED_BYTES {
                    LimitError::EntryUnpacked { entry: name }
                } else {
                    LimitError::Unpacked
                },
            ));
        }
        // one byte past the room tells that the entry is over it
        let unpacked = std::io::copy(&mut entry.take(room + 1), &mut std::io::sink())
            .map_err(|e| ZipCheck::Unreadable(format!("{name}: {e}")))?;
        if unpacked > room {
            return Err(ZipCheck::Limit(if total == 0 {
                LimitError::EntryUnpacked { entry: name }
            } else {
                LimitError::Unpacked
            }));
        }
        if unpacked > limits::RATIO_FLOOR_BYTES {
            let ratio = unpacked / packed.max(1);
            if ratio > limits::MAX_RATIO {
                return Err(ZipCheck::Limit(LimitError::Ratio { entry: name, ratio }));
            }
        }
        total += unpacked;
    }
    Ok(())
}

/// A cell as the text a person sees: whole numbers without `.0` (a phone number typed as a
/// number stays `13800000000`), errors as Excel shows them. Text is borrowed (a shared
/// string is copied only once the [`Budget`] has room for it).
fn cell_text<'a>(d: &'a calamine::DataRef<'_>) -> Cow<'a, str> {
    use calamine::DataRef;
    match d {
        DataRef::Empty => Cow::Borrowed(""),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Cow::Borrowed(s),
        DataRef::SharedString(s) => Cow::Borrowed(s),
        DataRef::Int(i) => Cow::Owned(i.to_string()),
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Cow::Owned(format!("{f:.0}")),
        DataRef::Float(f) => Cow::Owned(f.to_string()),
        DataRef::Bool(b) => Cow::Borrowed(if *b { "TRUE" } else { "FALSE" }),
        DataRef::DateTime(dt) => Cow::Owned(dt.as_f64().to_string()),
        DataRef::Error(e) => Cow::Owned(e.to_string()),
    }
}

fn no_header_reason() -> String {
    format!(
        "no header row found: the form needs the columns {}",
        Column::REQUIRED.map(Column::header).join(", ")
    )
}

/// The header row: the first row naming at least five of the form's columns.
pub(crate) fn find_header(grid: &Grid) -> Option<usize> {
    grid.iter().position(|(_, cells)| {
        let named: std::collections::HashSet<Column> = cells
            .iter()
            .filter_map(|c| Column::from_header(c))
            .collect();
        named.len() >= 5
    })
}

/// Trim whitespace of any width (the full-width space "　" of the sample rows included).
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}

/// Validate the rows below the header row of `grid` (zones not checked).
pub fn parse_grid(file: &str, grid: &Grid) -> Result<Vec<FormRow>, Vec<RowError>> {
    parse_attachment3(file, grid, None)
}

/// Validate the rows below the header row of `grid`; with `spec`, each 网络分区 must be one of
/// its zones.
fn parse_attachment3(
    file: &str,
    grid: &Grid,
    spec: Option<&FormSpec>,
) -> Result<Vec<FormRow>, Vec<RowError>> {
    let Some(h) = find_header(grid) else {
        return Err(vec![RowError::file(file, no_header_reason())]);
    };
    let (_, header) = &grid[h];
    let mut columns: HashMap<Column, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, cell) in header.iter().enumerate() {
        let Some(col) = Column::from_header(cell) else {
            continue;
        };
        if let Some(first) = columns.insert(col, i) {
            errors.push(RowError::file(
                file,
                format!(
                    "column {} appears twice (columns {} and {})",
                    col.header(),
                    column_letter(first),
                    column_letter(i)
                ),
            ));
        }
    }
    for col in Column::REQUIRED {
        if !columns.contains_key(&col) {
            errors.push(RowError::file(
                file,
                format!("the header row has no column {}", col.header()),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rows = Vec::new();
    let mut uuid_rows: HashMap<String, usize> = HashMap::new();
    for (row, cells) in &grid[h + 1..] {
        let cell = |c: Column| {
            columns
                .get(&c)
                .and_then(|&i| cells.get(i))
                .map_or("", |s| trim(s))
        };
        // a 序号 alone (sample rows 3 and 4) or nothing at all: not a VM
        let blank = columns
            .iter()
            .filter(|(c, _)| **c != Column::Seq)
            .all(|(_, &i)| cells.get(i).is_none_or(|s| trim(s).is_empty()));
        if blank {
            continue;
        }
        let before = errors.len();
        let vm = validate_row(file, *row, &cell, &mut errors);
        if let Some(spec) = spec.filter(|_| !vm.zone.is_empty()) {
            if spec.zone(&vm.zone).is_none() {
                let header = Column::Zone.header();
                let reason = spec.unknown_zone(header, &vm.zone);
                errors.push(RowError::cell(file, *row, Column::Zone, reason));
            }
        }
        if let Some(u) = &vm.uuid {
            if let Some(first) = uuid_rows.insert(u.clone(), *row) {
                errors.push(RowError::cell(
                    file,
                    *row,
                    Column::Uuid,
                    format!("虚拟机UUID \"{u}\" is already on row {first}"),
                ));
            }
        }
        if errors.len() == before {
            rows.push(FormRow {
                row: *row,
                vm,
                extra: RowExtra::default(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if rows.is_empty() {
        return Err(vec![RowError::file(
            file,
            "no VM rows below the header row (one row per VM)",
        )]);
    }
    Ok(rows)
}

/// `A`, `B`, … `AA` for a 0-based column index.
pub(crate) fn column_letter(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

/// One row's cells into an allocation; problems go to `errors`.
fn validate_row<'a>(
    file: &str,
    row: usize,
    cell: &dyn Fn(Column) -> &'a str,
    errors: &mut Vec<RowError>,
) -> VmAllocation {
    let mut err = |c: Column, reason: String| errors.push(RowError::cell(file, row, c, reason));
    let text = |c: Column| cell(c).to_string();
    let zone = text(Column::Zone);
    if zone.is_empty() {
        err(Column::Zone, "网络分区 is required".into());
    }
    let (system, subsystem) = (text(Column::System), text(Column::Subsystem));
    if system.is_empty() && subsystem.is_empty() {
        err(
            Column::Subsystem,
            "系统名称 and 子系统名称 are both empty: fill in at least one".into(),
        );
    }
    let st = cell(Column::ServerType);
    let server_type = if st.is_empty() {
        err(Column::ServerType, "服务器类型 is required".into());
        None
    } else {
        let t = ServerType::parse(st);
        if t.is_none() {
            err(
                Column::ServerType,
                format!(
                    "服务器类型 \"{st}\" is not one of {}",
                    ServerType::ALL.map(ServerType::as_str).join("/")
                ),
            );
        }
        t
    };
    let mut number = |c: Column, min: u32| -> u32 {
        let v = cell(c);
        if v.is_empty() {
            if min > 0 {
                err(c, format!("{} is required", c.header()));
            }
            return 0;
        }
        match whole_number(v) {
            Some(n) if n >= min => n,
            Some(_) => {
                err(c, format!("{} \"{v}\" must be at least {min}", c.header()));
                0
            }
            None => {
                err(c, format!("{} \"{v}\" is not a whole number", c.header()));
                0
            }
        }
    };
    let vcpus = number(Column::Vcpus, 1);
    let mem_gb = number(Column::MemGb, 1);
    let sys_disk_gb = number(Column::SysDiskGb, 1);
    let data_disk_gb = number(Column::DataDiskGb, 0);
    let email = text(Column::Email);
    if !email.is_empty() && !is_email(&email) {
        err(
            Column::Email,
            format!(
                "{} \"{email}\" is not an e-mail address",
                Column::Email.header()
            ),
        );
    }
    let phone = text(Column::Phone);
    if !phone.is_empty() && !is_phone(&phone) {
        err(
            Column::Phone,
            format!(
                "{} \"{phone}\" is not a phone number",
                Column::Phone.header()
            ),
        );
    }
    let clustered = match cell(Column::Clustered) {
        "" | "否" => false,
        "是" => true,
        other => {
            err(
                Column::Clustered,
                format!("集群部署 \"{other}\" is not 是 or 否"),
            );
            false
        }
    };
    let uuid = match cell(Column::Uuid) {
        "" => None,
        u => {
            let n = normalize_uuid(u);
            if n.is_none() {
                err(
                    Column::Uuid,
                    format!("虚拟机UUID \"{u}\" is not a UUID (8-4-4-4-12 hex digits)"),
                );
            }
            n
        }
    };
    VmAllocation {
        zone,
        developer: text(Column::Developer),
        unit: text(Column::Unit),
        system,
        subsystem,
        server_type: server_type.unwrap_or(ServerType::Oth),
        owner: text(Column::Owner),
        email,
        phone,
        vcpus,
        mem_gb,
        sys_disk_gb,
        data_disk_gb,
        os: text(Column::Os),
        clustered,
        cluster_group: text(Column::ClusterGroup),
        note: text(Column::Note),
        uuid,
        term: Default::default(),
    }
}

/// `8`, `８`, `8.0` (a number cell): a whole number; `8.5`, `八`, `-1`: none.
pub(crate) fn whole_number(s: &str) -> Option<u32> {
    let ascii: String = s
        .chars()
        .map(|c| match c {
            '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
            '．' => '.',
            _ => c,
        })
        .collect();
    let int = match ascii.split_once('.') {
        Some((i, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => i,
        Some(_) => return None,
        None => ascii.as_str(),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    int.parse().ok()
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

/// Digits with the usual separators (`+86 138-0000-0000`, `0771-1234567`), 7 to 15 digits.
fn is_phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    s.chars().all(|c| c.is_ascii_digit() || " -+()".contains(c)) && (7..=15).contains(&digits)
}

/// A UUID in lower-case 8-4-4-4-12 form (the form the agents report), from that form in any
/// case or from 32 bare hex digits.
pub fn normalize_uuid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    let dashes_ok = !s.contains('-')
        || (s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-'));
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || !dashes_ok {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 附件3 as printed: the title, the contact line, the header with its line breaks and
    /// spaces, the two sample rows, the blank rows 3 and 4 and the notes below.
    pub(crate) const SAMPLE_CSV: &str = "云资源使用需求表,,,,,,,,,,,,,,,,\n\
申请单位联系人及手机号码、邮箱：,,,,,,,,信息系统厂商联系人及手机号码、邮箱：,,,,,,,,\n\
序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",\"堡垒机账号\n负责人邮箱\",堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注\n\
1,公共网络区,华为,,财务管理系统,APP,张三,zhangsan@sohu.com,13800000000,8,16,60,300,CentOS 7.0,是,集群1,　\n\
2,互联网区,华为,,财务管理系统,APP,李四,lisi@163.com,13988888888,8,16,60,300,CentOS 7.0,是,集群1,　\n\
3,　,　,,　,　,　,　,　,　,　,　,　,,　,　,　\n\
4,,,,,,,,,,,,,,,,\n\
\n\
填写说明：,,,,,,,,,,,,,,,,\n\
1．同一用户申请多个系统的，请另填新申请表；,,,,,,,,,,,,,,,,\n";

    #[test]
    fn the_sample_rows_of_attachment_3_read() {
        let rows = read("需求表.csv", Format::Csv, SAMPLE_CSV.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        let (r1, r2) = (&rows[0], &rows[1]);
        // title, contact line, header (its line breaks stay inside cells): data on rows 4, 5
        assert_eq!((r1.row, r2.row), (4, 5));
        let v = &r1.vm;
        assert_eq!(v.system, "");
        assert_eq!(v.subsystem, "财务管理系统");
        assert_eq!(
            (v.zone.as_str(), v.developer.as_str(), v.server_type),
            ("公共网络区", "华为", ServerType::App)
        );
        assert_eq!(
            (v.owner.as_str(), v.email.as_str(), v.phone.as_str()),
            ("张三", "zhangsan@sohu.com", "13800000000")
        );
        assert_eq!(
            (v.vcpus, v.mem_gb, v.sys_disk_gb, v.data_disk_gb),
            (8, 16, 60, 300)
        );
        assert_eq!((v.os.as_str(), v.clustered), ("CentOS 7.0", true));
        assert_eq!((v.cluster_group.as_str(), v.note.as_str()), ("集群1", ""));
        assert_eq!(v.uuid, None);
        assert_eq!(r2.vm.zone, "互联网区");
        assert_eq!(r2.vm.owner, "李四");
    }

    fn grid(rows: &[&[&str]]) -> Grid {
        rows.iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    const HEADER: &[&str] = &[
        "序号",
        "网络分区",
        "系统名称",
        "子系统名称",
        "服务器类型",
        "vCPU核",
        "内存（GB）",
        "系统盘GB",
        "数据盘GB",
        "集群部署",
        "虚拟机UUID",
    ];

    #[test]
    fn every_bad_cell_is_named_by_row_and_column() {
        let g = grid(&[
            HEADER,
            &[
                "1",
                "政务外网",
                "",
                "OA",
                "XYZ",
                "八",
                "16",
                "60",
                "",
                "是",
                "",
            ],
            &[
                "2", "", "", "", "app", "8.5", "0", "60", "x", "也许", "nope",
            ],
            &[
                "3",
                "政务外网",
                "门户",
                "",
                "web",
                "４",
                "8.0",
                "40",
                "100",
                "否",
                "4C4C4544-0042-3510-8058-B4C04F384D32",
            ],
            &[
                "4",
                "政务外网",
                "门户",
                "",
                "WEB",
                "4",
                "8",
                "40",
                "",
                "",
                "4c4c45440042351080 58b4c04f384d32",
            ],
            &[
                "5",
                "政务外网",
                "门户",
                "",
                "WEB",
                "4",
                "8",
                "40",
                "",
                "",
                "4c4c4544004235108058b4c04f384d32",
            ],
        ]);
        let errs = parse_grid("f.xlsx", &g).unwrap_err();
        let got: Vec<(Option<usize>, Option<&str>, &str)> = errs
            .iter()
            .map(|e| (e.row, e.column.as_deref(), e.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(2), Some("服务器类型"), "服务器类型 \"XYZ\" is not one of APP/WEB/FTP/DAT/MID/TST/OTH"),
                (Some(2), Some("vCPU核"), "vCPU核 \"八\" is not a whole number"),
                (Some(3), Some("网络分区"), "网络分区 is required"),
                (Some(3), Some("子系统名称"), "系统名称 and 子系统名称 are both empty: fill in at least one"),
                (Some(3), Some("vCPU核"), "vCPU核 \"8.5\" is not a whole number"),
                (Some(3), Some("内存GB"), "内存GB \"0\" must be at least 1"),
                (Some(3), Some("数据盘GB"), "数据盘GB \"x\" is not a whole number"),
                (Some(3), Some("集群部署"), "集群部署 \"也许\" is not 是 or 否"),
                (Some(3), Some("虚拟机UUID"), "虚拟机UUID \"nope\" is not a UUID (8-4-4-4-12 hex digits)"),
                (Some(5), Some("虚拟机UUID"), "虚拟机UUID \"4c4c45440042351080 58b4c04f384d32\" is not a UUID (8-4-4-4-12 hex digits)"),
                (Some(6), Some("虚拟机UUID"), "虚拟机UUID \"4c4c4544-0042-3510-8058-b4c04f384d32\" is already on row 4"),
            ]
        );
        assert!(errs.iter().all(|e| e.file == "f.xlsx"));
    }

    #[test]
    fn full_width_digits_float_cells_and_uuid_case_are_normalised() {
        let g = grid(&[
            HEADER,
            &[
                "1",
                "政务外网",
                "门户",
                "",
                "web",
                "４",
                "8.0",
                "40",
                "",
                "否",
                "4C4C4544-0042-3510-8058-B4C04F384D32",
            ],
        ]);
        let rows = parse_grid("f.csv", &g).unwrap();
        let v = &rows[0].vm;
        assert_eq!((v.vcpus, v.mem_gb, v.data_disk_gb), (4, 8, 0));
        assert_eq!(v.server_type, ServerType::Web);
        assert_eq!(
            v.uuid.as_deref(),
            Some("4c4c4544-0042-3510-8058-b4c04f384d32")
        );
    }

    #[test]
    fn files_without_the_form_say_what_is_missing() {
        let e = parse_grid("a.csv", &grid(&[&["姓名", "电话"], &["张三", "1"]])).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].reason.starts_with("no header row found"), "{}", e[0]);
        let e = parse_grid(
            "b.csv",
            &grid(&[&[
                "序号",
                "网络分区",
                "系统名称",
                "子系统名称",
                "服务器类型",
                "vCPU核",
            ]]),
        )
        .unwrap_err();
        let reasons: Vec<&str> = e.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "the header row has no column 内存GB",
                "the header row has no column 系统盘GB",
                "the header row has no column 数据盘GB"
            ]
        );
        let e = parse_grid("c.csv", &grid(&[HEADER, &["1", "　", ""]])).unwrap_err();
        assert_eq!(
            e[0].reason,
            "no VM rows below the header row (one row per VM)"
        );
        let e = read("d.xlsx", Format::Xlsx, b"PK\x03\x04 not really").unwrap_err();
        let ReadError::Rows(e) = e else {
            panic!("{e:?}")
        };
        assert!(
            e[0].reason.contains("不是可读取的 .xlsx 工作簿"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(column_letter(0), "A");
        assert_eq!(column_letter(25), "Z");
        assert_eq!(column_letter(26), "AA");
        assert_eq!(
            header_chars("堡垒机账  号\n负责人").collect::<String>(),
            "堡垒机账号负责人"
        );
        assert_eq!(Column::from_header("*VCPU 核"), Some(Column::Vcpus));
        assert!(is_phone("+86 138-0000-0000") && is_phone("0771-1234567"));
        assert!(!is_phone("手机") && !is_phone("123"));
        assert!(is_email("a.b@gov.cn") && !is_email("a@b") && !is_email("a @b.cn"));
        assert_eq!(Format::of_file("需求表.XLSX"), Some(Format::Xlsx));
        assert_eq!(Format::of_file("需求表.txt"), None);
    }
}
