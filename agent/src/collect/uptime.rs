//! Seconds since boot from `{proc}/uptime`.

use super::{parse_err, read_into, CollectError, Collector, ParseError, Paths};
use std::path::PathBuf;
use yunjian_protocol::Report;

/// Fills [`Report::uptime_s`].
#[derive(Debug)]
pub struct Uptime {
    path: PathBuf,
    buf: String,
}

impl Uptime {
    pub fn boxed(paths: &Paths) -> Box<dyn Collector> {
        Box::new(Uptime {
            path: paths.proc.join("uptime"),
            buf: String::new(),
        })
    }
}

impl Collector for Uptime {
    fn name(&self) -> &'static str {
        "uptime"
    }

    fn collect(&mut self, out: &mut Report) -> Result<(), CollectError> {
        read_into(&self.path, &mut self.buf)?;
        out.uptime_s = parse_uptime(&self.buf).map_err(parse_err(&self.path))?;
        Ok(())
    }
}

/// Whole seconds since boot from the text of `/proc/uptime` (`"3600.57 7100.12"`: uptime, then
/// the idle time of all CPUs).
pub fn parse_uptime(text: &str) -> Result<u64, ParseError> {
    const FIELD: &str = "uptime seconds";
    let seconds = text
        .split_ascii_whitespace()
        .next()
        .ok_or(ParseError::Missing(FIELD))?;
    let whole = seconds.split_once('.').map_or(seconds, |(whole, _)| whole);
    whole.parse().map_err(|_| ParseError::NotANumber {
        field: FIELD,
        value: seconds.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_whole_seconds_of_the_first_field() {
        assert_eq!(parse_uptime("3600.57 7100.12\n"), Ok(3600));
        assert_eq!(parse_uptime("42 80"), Ok(42));
        assert_eq!(parse_uptime("123456789.99 1.00"), Ok(123_456_789));
    }

    #[test]
    fn rejects_empty_and_garbled_text() {
        assert_eq!(parse_uptime(""), Err(ParseError::Missing("uptime seconds")));
        assert_eq!(
            parse_uptime("-5.0 1"),
            Err(ParseError::NotANumber {
                field: "uptime seconds",
                value: "-5.0".into()
            })
        );
    }
}
