//! Load averages from `{proc}/loadavg`.

use super::{number, parse_err, read_into, CollectError, Collector, ParseError, Paths};
use std::path::PathBuf;
use yunjian_protocol::Report;

/// Fills [`Report::load`].
#[derive(Debug)]
pub struct Load {
    path: PathBuf,
    buf: String,
}

impl Load {
    pub fn boxed(paths: &Paths) -> Box<dyn Collector> {
        Box::new(Load {
            path: paths.proc.join("loadavg"),
            buf: String::new(),
        })
    }
}

impl Collector for Load {
    fn name(&self) -> &'static str {
        "load"
    }

    fn collect(&mut self, out: &mut Report) -> Result<(), CollectError> {
        read_into(&self.path, &mut self.buf)?;
        out.load = parse_loadavg(&self.buf).map_err(parse_err(&self.path))?;
        Ok(())
    }
}

/// The 1, 5 and 15 minute load averages ×100 from the text of `/proc/loadavg`
/// (`"0.52 0.58 0.59 1/467 12345"`).
pub fn parse_loadavg(text: &str) -> Result<[u32; 3], ParseError> {
    const FIELDS: [&str; 3] = ["1 minute load", "5 minute load", "15 minute load"];
    let mut fields = text.split_ascii_whitespace();
    let mut out = [0; 3];
    for (slot, field) in out.iter_mut().zip(FIELDS) {
        let value: f64 = number(field, fields.next())?;
        if !(value.is_finite() && value >= 0.0) {
            return Err(ParseError::NotANumber {
                field,
                value: value.to_string(),
            });
        }
        *slot = (value * 100.0).round() as u32;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_averages_times_100() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n"),
            Ok([52, 58, 59])
        );
        assert_eq!(parse_loadavg("12.07 3.10 0.00 9/900 1"), Ok([1207, 310, 0]));
    }

    #[test]
    fn short_or_garbled_text_names_the_field() {
        assert_eq!(
            parse_loadavg("0.52 0.58"),
            Err(ParseError::Missing("15 minute load"))
        );
        assert_eq!(
            parse_loadavg("0.52 x 0.1"),
            Err(ParseError::NotANumber {
                field: "5 minute load",
                value: "x".into()
            })
        );
        assert!(parse_loadavg("nan 1 1").is_err());
        assert!(parse_loadavg("-1 1 1").is_err());
    }
}
