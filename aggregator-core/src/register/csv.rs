//! CSV as units save it from Excel: RFC 4180 fields (quotes, doubled quotes, line breaks inside
//! quotes), CRLF or LF records, UTF-8 with or without BOM ("CSV UTF-8"), or GB18030 (plain
//! "CSV" saved by a Chinese-locale Excel, whose GBK is a subset of GB18030). Pure functions on
//! bytes and text; [`parse`] keeps to the rows, columns, cells and cell length of
//! [`super::limits`] as it goes.

use super::limits::{self, LimitError};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("the file is UTF-16 text, not CSV: in Excel save it as \"CSV UTF-8 (逗号分隔)\"")]
    Utf16,
    #[error(
        "the file is neither UTF-8 nor GB18030 text: in Excel save it as \"CSV UTF-8 (逗号分隔)\""
    )]
    Encoding,
    #[error("row {row}: a quoted field is not closed before the end of the file")]
    UnclosedQuote { row: usize },
    #[error(transparent)]
    Limit(#[from] LimitError),
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The text of a CSV file: UTF-8 (a leading BOM removed), else GB18030.
pub fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, CsvError> {
    if let Some(rest) = bytes.strip_prefix(UTF8_BOM) {
        return std::str::from_utf8(rest)
            .map(Cow::Borrowed)
            .map_err(|_| CsvError::Encoding);
    }
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(CsvError::Utf16);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(Cow::Borrowed(text));
    }
    encoding_rs::GB18030
        .decode_without_bom_handling_and_without_replacement(bytes)
        .ok_or(CsvError::Encoding)
}

/// The records of `text`, in order; record `i` is row `i + 1` as a spreadsheet shows it (a
/// line break inside quotes stays in its cell). An empty line is a record with one empty field,
/// so row numbers stay aligned; a final line break ends the last record. A quote inside an
/// unquoted field, or after a closing quote, is kept as text, as Excel does. A file over
/// [`limits::MAX_ROWS`] records, [`limits::MAX_COLUMNS`] fields in a record,
/// [`limits::MAX_CELLS`] fields in all or [`limits::MAX_CELL_CHARS`] in a field is refused
/// when the parse reaches the excess.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, CsvError> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut field_chars = 0usize;
    let mut cells = 0usize;
    // the field ends: into the record, within the bounds
    let mut end_field = |record: &mut Vec<String>,
                         field: &mut String,
                         field_chars: &mut usize,
                         row: usize|
     -> Result<(), LimitError> {
        if *field_chars > limits::MAX_CELL_CHARS {
            return Err(LimitError::CellChars {
                row,
                column: super::form::column_letter(record.len()),
            });
        }
        if record.len() >= limits::MAX_COLUMNS as usize {
            return Err(LimitError::Columns {
                row,
                found: record.len() + 1,
            });
        }
        cells += 1;
        if cells > limits::MAX_CELLS {
            return Err(LimitError::Cells);
        }
        record.push(std::mem::take(field));
        *field_chars = 0;
        Ok(())
    };
    // the field has begun (a character or an opening quote): a later quote is text
    let mut started = false;
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => {
                    field.push(c);
                    field_chars += 1;
                }
            }
            continue;
        }
        match c {
            '"' if !started => {
                quoted = true;
                started = true;
            }
            ',' => {
                end_field(&mut record, &mut field, &mut field_chars, records.len() + 1)?;
                started = false;
            }
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                end_field(&mut record, &mut field, &mut field_chars, records.len() + 1)?;
                end_record(&mut records, &mut record)?;
                started = false;
            }
            _ => {
                field.push(c);
                field_chars += 1;
                started = true;
            }
        }
    }
    if quoted {
        return Err(CsvError::UnclosedQuote {
            row: records.len() + 1,
        });
    }
    if started || !record.is_empty() {
        end_field(&mut record, &mut field, &mut field_chars, records.len() + 1)?;
        end_record(&mut records, &mut record)?;
    }
    Ok(records)
}

fn end_record(records: &mut Vec<Vec<String>>, record: &mut Vec<String>) -> Result<(), LimitError> {
    if records.len() >= limits::MAX_ROWS as usize {
        return Err(LimitError::Rows);
    }
    records.push(std::mem::take(record));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_commas_and_line_breaks_in_cells() {
        let text =
            "序号,系统名称,备注\r\n1,\"财务,管理\",\"第一行\n第二行\"\r\n2,\"说\"\"明\"\"\",\r\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                vec!["序号", "系统名称", "备注"],
                vec!["1", "财务,管理", "第一行\n第二行"],
                vec!["2", "说\"明\"", ""],
            ]
        );
    }

    #[test]
    fn empty_lines_keep_row_numbers_and_no_trailing_record() {
        let rows = parse("a,b\n\nc,d").unwrap();
        assert_eq!(rows, vec![vec!["a", "b"], vec![""], vec!["c", "d"]]);
        assert_eq!(parse("a\n").unwrap(), vec![vec!["a"]]);
        assert_eq!(parse("").unwrap(), Vec::<Vec<String>>::new());
        // a last empty field is still a field
        assert_eq!(parse("a,").unwrap(), vec![vec!["a", ""]]);
    }

    #[test]
    fn stray_quotes_are_text_and_unclosed_quotes_fail_with_the_row() {
        assert_eq!(parse("ab\"c,\"x\"y\n").unwrap(), vec![vec!["ab\"c", "xy"]]);
        assert_eq!(
            parse("a\nb\n\"open,\n"),
            Err(CsvError::UnclosedQuote { row: 3 })
        );
    }

    #[test]
    fn files_past_the_bounds_are_refused_where_the_excess_is() {
        let wide = ",".repeat(limits::MAX_COLUMNS as usize);
        assert_eq!(
            parse(&format!("a\n{wide}\n")),
            Err(CsvError::Limit(LimitError::Columns { row: 2, found: 201 }))
        );
        assert!(parse(&",".repeat(limits::MAX_COLUMNS as usize - 1)).is_ok());
        let tall = "\n".repeat(limits::MAX_ROWS as usize + 1);
        assert_eq!(parse(&tall), Err(CsvError::Limit(LimitError::Rows)));
        assert!(parse(&"\n".repeat(limits::MAX_ROWS as usize)).is_ok());
        let long = format!("a,\"{}\"", "长".repeat(limits::MAX_CELL_CHARS + 1));
        assert_eq!(
            parse(&long),
            Err(CsvError::Limit(LimitError::CellChars {
                row: 1,
                column: "B".into()
            }))
        );
        // 100 columns in 10,001 rows: within the rows and columns, past the cells
        let row = format!("{}\n", ",".repeat(99));
        let many = row.repeat(limits::MAX_CELLS / 100 + 1);
        assert_eq!(parse(&many), Err(CsvError::Limit(LimitError::Cells)));
    }

    #[test]
    fn utf8_with_bom_gb18030_and_utf16() {
        assert_eq!(decode("\u{feff}序号".as_bytes()).unwrap(), "序号");
        assert_eq!(decode("序号".as_bytes()).unwrap(), "序号");
        // "序号,内存GB" as Excel saves plain CSV in a Chinese locale
        let (gbk, _, bad) = encoding_rs::GB18030.encode("序号,内存GB");
        assert!(!bad);
        assert!(std::str::from_utf8(&gbk).is_err());
        assert_eq!(decode(&gbk).unwrap(), "序号,内存GB");
        assert_eq!(decode(b"\xFF\xFE1\x00"), Err(CsvError::Utf16));
        // a BOM promises UTF-8: what follows must be
        assert_eq!(decode(b"\xEF\xBB\xBF\xC4\xE3\xFF"), Err(CsvError::Encoding));
    }
}
