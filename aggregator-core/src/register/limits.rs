//! The bounds an imported form is read within, checked before and while it is parsed, so that
//! no upload (a 5 KB workbook that declares A1:XFD1048576, a ZIP entry that unpacks to
//! gigabytes, a CSV of sixteen million commas) can make the import allocate more than a few
//! hundred MiB or run for more than a moment. A filled-in 附件3 is a few dozen KiB: one row per
//! VM, 17 columns (19 in the register's export); the bounds leave room for a whole cloud's
//! export and refuse anything far beyond it.
//!
//! Each refusal is a [`LimitError`] naming the bound and what the file had, in zh-CN; its
//! [`LimitError::code`] is the stable machine name beside it.

/// Largest file read (the web import's body limit is the same).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Rows of a sheet (or records of a CSV), counted to the last row that has a cell.
pub const MAX_ROWS: u32 = 100_000;
/// Columns of a sheet (or fields of a CSV record).
pub const MAX_COLUMNS: u32 = 200;
/// Cells kept for the whole file: every row counts up to its last non-empty cell.
pub const MAX_CELLS: usize = 1_000_000;
/// Characters of one cell (Excel's own limit).
pub const MAX_CELL_CHARS: usize = 32_767;
/// Bytes of text in all the cells of a workbook together (a shared string used by many cells
/// counts each time).
pub const MAX_TEXT_BYTES: usize = 32 * 1024 * 1024;
/// Entries of a workbook's ZIP (an `.xlsx` from Excel or WPS has a dozen or two).
pub const MAX_ZIP_ENTRIES: usize = 1_000;
/// Bytes of all the workbook's ZIP entries unpacked together (each entry is bounded by it too).
pub const MAX_UNPACKED_BYTES: u64 = 64 * 1024 * 1024;
/// Unpacked to packed size of one ZIP entry, for entries over [`RATIO_FLOOR_BYTES`] unpacked.
/// Sheet XML packs about 10:1; DEFLATE's limit is about 1032:1.
pub const MAX_RATIO: u64 = 200;
/// Entries smaller than this unpacked are not held to [`MAX_RATIO`].
pub const RATIO_FLOOR_BYTES: u64 = 1024 * 1024;

/// A file over one of the bounds above; nothing of it was imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("文件大小 {found} 字节超出上限（最多 {MAX_FILE_BYTES} 字节）")]
    FileSize { found: usize },
    #[error("工作簿（ZIP）有 {found} 个条目，超出上限（最多 {MAX_ZIP_ENTRIES} 个）")]
    ZipEntries { found: usize },
    #[error("工作簿中的 {entry} 解压后超过 {MAX_UNPACKED_BYTES} 字节，超出上限")]
    EntryUnpacked { entry: String },
    #[error("工作簿解压后的总大小超过 {MAX_UNPACKED_BYTES} 字节，超出上限")]
    Unpacked,
    #[error("工作簿中的 {entry} 压缩比 {ratio}:1 超出上限（最多 {MAX_RATIO}:1），疑似压缩炸弹")]
    Ratio { entry: String, ratio: u64 },
    #[error("工作表“{sheet}”声明的范围 {range} 超出上限（最多 {MAX_COLUMNS} 列、{MAX_ROWS} 行）")]
    DeclaredRange { sheet: String, range: String },
    #[error("工作表“{sheet}”的单元格 {cell} 超出上限（最多 {MAX_COLUMNS} 列、{MAX_ROWS} 行）")]
    CellOutside { sheet: String, cell: String },
    #[error("第 {row} 行有 {found} 列以上，超出上限（最多 {MAX_COLUMNS} 列）")]
    Columns { row: usize, found: usize },
    #[error("文件超过 {MAX_ROWS} 行，超出上限")]
    Rows,
    #[error("文件的单元格超过 {MAX_CELLS} 个，超出上限")]
    Cells,
    #[error("第 {row} 行第 {column} 列的单元格超过 {MAX_CELL_CHARS} 个字符，超出上限")]
    CellChars { row: usize, column: String },
    #[error("单元格文字合计超过 {MAX_TEXT_BYTES} 字节，超出上限")]
    Text,
}

impl LimitError {
    /// The bound's stable machine name.
    pub fn code(&self) -> &'static str {
        match self {
            LimitError::FileSize { .. } => "file_size",
            LimitError::ZipEntries { .. } => "zip_entries",
            LimitError::EntryUnpacked { .. } => "zip_entry_size",
            LimitError::Unpacked => "zip_unpacked_size",
            LimitError::Ratio { .. } => "zip_ratio",
            LimitError::DeclaredRange { .. } => "sheet_range",
            LimitError::CellOutside { .. } => "cell_position",
            LimitError::Columns { .. } => "columns",
            LimitError::Rows => "rows",
            LimitError::Cells => "cells",
            LimitError::CellChars { .. } => "cell_length",
            LimitError::Text => "text_size",
        }
    }
}

/// The cells of a file as it is read, within [`MAX_CELLS`], [`MAX_CELL_CHARS`] and
/// [`MAX_TEXT_BYTES`]: each cell is checked before its text is copied.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    cells: usize,
    text: usize,
}

impl Budget {
    /// Room for `n` more cells.
    pub(crate) fn cells(&mut self, n: usize) -> Result<(), LimitError> {
        self.cells = self.cells.saturating_add(n);
        if self.cells > MAX_CELLS {
            return Err(LimitError::Cells);
        }
        Ok(())
    }

    /// Room for one cell's text (`row` as shown, 0-based `column`).
    pub(crate) fn text(&mut self, s: &str, row: usize, column: usize) -> Result<(), LimitError> {
        self.text = self.text.saturating_add(s.len());
        if self.text > MAX_TEXT_BYTES {
            return Err(LimitError::Text);
        }
        // a character is at most 4 bytes: count only when it could be too long
        if s.len() > MAX_CELL_CHARS && s.chars().count() > MAX_CELL_CHARS {
            return Err(LimitError::CellChars {
                row,
                column: super::form::column_letter(column),
            });
        }
        Ok(())
    }
}

/// `A1`-style name of a 0-based (row, column).
pub(crate) fn cell_name((row, col): (u32, u32)) -> String {
    format!(
        "{}{}",
        super::form::column_letter(col as usize),
        u64::from(row) + 1
    )
}

#[cfg(test)]
mod tests {
    use super::super::form::column_letter;
    use super::super::test_support::{sheet_xml, xlsx_with};
    use super::*;

    #[test]
    fn messages_name_the_bound_and_what_was_found() {
        let e = LimitError::DeclaredRange {
            sheet: "Sheet1".into(),
            range: "A1:XFD1048576".into(),
        };
        assert_eq!(
            e.to_string(),
            "工作表“Sheet1”声明的范围 A1:XFD1048576 超出上限（最多 200 列、100000 行）"
        );
        assert_eq!(e.code(), "sheet_range");
        assert_eq!(cell_name((1_048_575, 16_383)), "XFD1048576");
    }

    #[test]
    fn the_budget_refuses_past_its_bounds() {
        let mut b = Budget::default();
        assert!(b.cells(MAX_CELLS).is_ok());
        assert_eq!(b.cells(1), Err(LimitError::Cells));
        let mut b = Budget::default();
        let long = "长".repeat(MAX_CELL_CHARS);
        assert!(b.text(&long, 1, 0).is_ok());
        let e = b.text(&format!("{long}x"), 2, 27).unwrap_err();
        assert_eq!(
            e.to_string(),
            "第 2 行第 AB 列的单元格超过 32767 个字符，超出上限"
        );
    }

    /// What a hostile workbook gets: the bound it passed, by its code, and the message.
    fn refused(bytes: &[u8]) -> (&'static str, String) {
        use super::super::form::{read, Format, ReadError};
        match read("恶意.xlsx", Format::Xlsx, bytes) {
            Err(ReadError::Limit { file, limit }) => {
                assert_eq!(file, "恶意.xlsx");
                (limit.code(), limit.to_string())
            }
            other => panic!("not refused for a bound: {other:?}"),
        }
    }

    const SHEET: &str = "xl/worksheets/sheet1.xml";

    #[test]
    fn a_sheet_declaring_a1_to_xfd1048576_is_refused_by_its_declaration() {
        let sheet = sheet_xml(
            "A1:XFD1048576",
            r#"<row r="1"><c r="A1"><v>1</v></c></row>"#,
        );
        let file = xlsx_with(&[(SHEET, &sheet)]);
        assert!(file.len() < 8 * 1024, "{} bytes", file.len());
        assert_eq!(
            refused(&file),
            (
                "sheet_range",
                "工作表“Sheet1”声明的范围 A1:XFD1048576 超出上限（最多 200 列、100000 行）".into()
            )
        );
    }

    /// The 512 GiB one: a small declared range, and cells in A1 and XFD1048576 (a reader that
    /// builds the range spanning the cells allocates 2^34 of them).
    #[test]
    fn cells_in_the_corners_of_the_sheet_are_refused_by_their_position() {
        let rows = r#"<row r="1"><c r="A1"><v>1</v></c></row><row r="1048576"><c r="XFD1048576"><v>1</v></c></row>"#;
        let file = xlsx_with(&[(SHEET, &sheet_xml("A1", rows))]);
        assert!(file.len() < 8 * 1024, "{} bytes", file.len());
        assert_eq!(
            refused(&file),
            (
                "cell_position",
                "工作表“Sheet1”的单元格 XFD1048576 超出上限（最多 200 列、100000 行）".into()
            )
        );
    }

    #[test]
    fn many_cells_within_the_range_are_refused_by_their_count() {
        // one cell at the last column of each of 5,001 rows: 1,000,200 places
        let rows: String = (1..=5_001)
            .map(|r| format!(r#"<row r="{r}"><c r="GR{r}"><v>1</v></c></row>"#))
            .collect();
        let file = xlsx_with(&[(SHEET, &sheet_xml("A1:GR5001", &rows))]);
        assert_eq!(
            refused(&file),
            ("cells", "文件的单元格超过 1000000 个，超出上限".into())
        );
    }

    #[test]
    fn a_shared_string_repeated_past_the_text_budget_is_refused() {
        let long = "长".repeat(10_000);
        let strings = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>{long}</t></si></sst>"#
        );
        // 30,000 bytes in each of 1,200 cells: 36 MB of text from a 30 KB string
        let rows: String = (1..=1_200)
            .map(|r| format!(r#"<row r="{r}"><c r="A{r}" t="s"><v>0</v></c></row>"#))
            .collect();
        let file = xlsx_with(&[
            (SHEET, &sheet_xml("A1:A1200", &rows)),
            ("xl/sharedStrings.xml", strings.as_bytes()),
        ]);
        assert_eq!(refused(&file).0, "text_size");
    }

    #[test]
    fn a_zip_bomb_entry_is_refused_by_what_it_unpacks_to() {
        // 65 MiB of empty cells in one sheet, a few hundred KiB packed
        let row = r#"<row r="1"><c r="A1"/><c r="B1"/><c r="C1"/><c r="D1"/></row>"#;
        let rows = row.repeat((MAX_UNPACKED_BYTES as usize) / row.len() + 1);
        let file = xlsx_with(&[(SHEET, &sheet_xml("A1:D1", &rows))]);
        assert!(file.len() < MAX_FILE_BYTES / 8, "{} bytes", file.len());
        assert_eq!(
            refused(&file),
            (
                "zip_entry_size",
                format!("工作簿中的 {SHEET} 解压后超过 67108864 字节，超出上限")
            )
        );
    }

    #[test]
    fn an_entry_packed_past_the_ratio_is_refused() {
        let padding = vec![b' '; 4 * 1024 * 1024];
        let file = xlsx_with(&[("xl/media/padding.bin", &padding)]);
        let (code, message) = refused(&file);
        assert_eq!(code, "zip_ratio");
        assert!(
            message.starts_with("工作簿中的 xl/media/padding.bin 压缩比"),
            "{message}"
        );
    }

    #[test]
    fn a_file_past_the_upload_size_is_refused_unread() {
        let big = vec![b','; MAX_FILE_BYTES + 1];
        assert_eq!(refused(&big).0, "file_size");
    }

    #[test]
    fn an_xls_is_refused_with_how_to_save_it() {
        use super::super::form::{read, Format, ReadError};
        let mut xls = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
        xls.resize(4096, 0);
        let Err(ReadError::Rows(e)) = read("旧表.xls", Format::Xlsx, &xls) else {
            panic!("an .xls was read")
        };
        assert!(e[0].reason.contains("另存为 .xlsx"), "{}", e[0]);
    }

    #[test]
    fn a_form_within_the_bounds_still_reads_from_a_streamed_sheet() {
        use super::super::form::{read, Format};
        // the header and one VM, cells out of order and columns left of the first one empty
        let header = [
            "网络分区",
            "系统名称",
            "子系统名称",
            "服务器类型",
            "vCPU核",
            "内存GB",
            "系统盘GB",
            "数据盘GB",
        ];
        let cells: String = header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let col = column_letter(i + 2);
                format!(r#"<c r="{col}3" t="inlineStr"><is><t>{h}</t></is></c>"#)
            })
            .collect();
        let vm = r#"<row r="5"><c r="E5" t="inlineStr"><is><t>OA</t></is></c><c r="C5" t="inlineStr"><is><t>政务外网</t></is></c><c r="F5" t="inlineStr"><is><t>APP</t></is></c><c r="G5"><v>8</v></c><c r="H5"><v>16</v></c><c r="I5"><v>60</v></c><c r="J5"><v>0</v></c></row>"#;
        let rows = format!(r#"<row r="3">{cells}</row>{vm}"#);
        let file = xlsx_with(&[(SHEET, &sheet_xml("C3:J5", &rows))]);
        let rows = read("oa.xlsx", Format::Xlsx, &file).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].row, 5);
        let v = &rows[0].vm;
        assert_eq!((v.zone.as_str(), v.subsystem.as_str()), ("政务外网", "OA"));
        assert_eq!((v.vcpus, v.mem_gb, v.sys_disk_gb), (8, 16, 60));
    }
}
