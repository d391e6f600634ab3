//! Dates and times, written once: day numbers (days since 1970-01-01), the proleptic Gregorian
//! conversions (Howard Hinnant's `civil_from_days` / `days_from_civil`), and Beijing time
//! (UTC+8), in which every page, message and deadline shows a time; and durations as config
//! files write them (`90s`, `15m`, `3d`).

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Beijing time is UTC+8 all year (no daylight saving).
pub const BEIJING_OFFSET_MS: i64 = 8 * 3_600_000;

/// (year, month, day) of a day number.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day number of (year, month, day); month 1–12, day 1–31 (not checked against the month:
/// callers that parse compare [`civil_from_days`] of the result with what was written).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Beijing day number of `ms` (UTC milliseconds).
pub fn beijing_day(ms: u64) -> i64 {
    (ms as i64 + BEIJING_OFFSET_MS).div_euclid(DAY_MS)
}

/// `2026-12-03`: the Beijing date of `ms`.
pub fn beijing_date(ms: u64) -> String {
    let (y, m, d) = civil_from_days(beijing_day(ms));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-12-03 06:13:05`: Beijing date and time of `ms`, for pages.
pub fn beijing_datetime(ms: u64) -> String {
    let local = ms as i64 + BEIJING_OFFSET_MS;
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_MS));
    let s = local.rem_euclid(DAY_MS) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `2026-12-03 06:13 (UTC+8)`: Beijing time of `ms`, for messages.
pub fn beijing_time(ms: u64) -> String {
    let full = beijing_datetime(ms);
    format!("{} (UTC+8)", &full[..16])
}

/// Durations written like "10s", "5m", "2h", "1d", "500ms".
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?}: missing unit (ms, s, m, h, d)"))?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{text:?}: not a number followed by a unit"))?;
        let ms = match unit {
            "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            "d" => n * 86_400_000,
            _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
        };
        Ok(Duration::from_millis(ms))
    }

    pub fn format(d: &Duration) -> String {
        let ms = d.as_millis() as u64;
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms > 0 && ms.is_multiple_of(size) {
                return format!("{}{unit}", ms / size);
            }
        }
        format!("{ms}ms")
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_across_eras_leap_days_and_the_epoch() {
        for (y, m, d) in [
            (1970, 1, 1),
            (1969, 12, 31),
            (2000, 2, 29),
            (2024, 2, 29),
            (2026, 12, 3),
            (2100, 3, 1),
            (1600, 1, 1),
        ] {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 12, 3), 20_790);
    }

    #[test]
    fn beijing_time_is_eight_hours_east_of_utc() {
        // 2026-12-02 16:30:00 UTC is already the 3rd in Beijing
        let ms = (days_from_civil(2026, 12, 2) * DAY_MS + 16 * 3_600_000 + 30 * 60_000) as u64;
        assert_eq!(beijing_date(ms), "2026-12-03");
        assert_eq!(beijing_datetime(ms), "2026-12-03 00:30:00");
        assert_eq!(beijing_time(ms), "2026-12-03 00:30 (UTC+8)");
        assert_eq!(beijing_day(ms), days_from_civil(2026, 12, 3));
    }
}
