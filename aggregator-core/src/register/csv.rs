//! CSV as units save it from Excel: RFC 4180 fields (quotes, doubled quotes, line breaks inside
//! quotes), CRLF or LF records, UTF-8 with or without BOM ("CSV UTF-8"), or GB18030 (plain
//! "CSV" saved by a Chinese-locale Excel, whose GBK is a subset of GB18030). Pure functions on
//! bytes and text.

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
/// unquoted field, or after a closing quote, is kept as text, as Excel does.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, CsvError> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
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
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if !started => {
                quoted = true;
                started = true;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                started = false;
            }
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                started = false;
            }
            _ => {
                field.push(c);
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
        record.push(field);
        records.push(record);
    }
    Ok(records)
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
