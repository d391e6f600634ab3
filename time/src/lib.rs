//! yunjian-time: calendar days and Beijing time, written once for the whole workspace.
//!
//! [`Day`] (days since 1970-01-01) is the only day type: the aggregator's utilisation history,
//! its working-day calendar, forecasts and pages, and the simulator's business hours, weekly
//! batches and month ends all count in it. The proleptic Gregorian conversions (Howard Hinnant's
//! [`civil_from_days`] / [`days_from_civil`]) and Beijing time (UTC+8, in which every page,
//! message and deadline shows a time) live here too.
//!
//! Why a crate of its own: the aggregator and the simulator both need these dates, and the
//! simulator must not depend on the aggregator. `yunjian-protocol` is the only definition of
//! the wire and carries instants (`ts_ms`), never calendar days, so dates do not belong there
//! either. This crate depends on nothing but serde and holds no clock: every function takes the
//! time it works on. [`duration`] reads and writes durations as config files write them
//! (`90s`, `15m`), for the aggregator's config and the embedded broker's alike.

pub mod duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Beijing time is UTC+8 all year (no daylight saving).
pub const BEIJING_OFFSET_MS: i64 = 8 * 3_600_000;

/// A calendar day: days since 1970-01-01, in the time zone of whoever made it (a UTC offset is
/// given wherever a day meets an instant: [`Day::of_ms`], [`Day::start_ms`]).
///
/// Arithmetic is in days: `day + 1`, `day - 29`, `to - from` (an `i32`). `Display` and serde
/// write `2026-10-08` (what the JSON API and stored evidence hold); the day number itself is
/// what the storage backends keep in their `day` columns, and what [`day_number`] serialises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

impl Day {
    pub const MIN: Day = Day(i32::MIN);
    pub const MAX: Day = Day(i32::MAX);

    /// The day of (year, month 1–12, day 1–31); the day is not checked against the month (use
    /// [`Day::parse`] for text).
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Day {
        Day(days_from_civil(y, m, d) as i32)
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(i64::from(self.0))
    }

    /// `2026-10-08`; `None` for anything else, `2026-02-30` included.
    pub fn parse(text: &str) -> Option<Day> {
        let mut it = text.trim().splitn(3, '-');
        let y: i64 = it.next()?.parse().ok()?;
        let m: u32 = it.next()?.parse().ok()?;
        let d: u32 = it.next()?.parse().ok()?;
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(-9999..=9999).contains(&y) {
            return None;
        }
        let day = Day::from_ymd(y, m, d);
        // reject 2026-02-31 and the like: it must come back as written
        (day.ymd() == (y, m, d)).then_some(day)
    }

    /// Monday = 0 … Sunday = 6 (1970-01-01 was a Thursday).
    pub fn weekday(self) -> u32 {
        (i64::from(self.0) + 3).rem_euclid(7) as u32
    }

    /// The day `ms` (UTC milliseconds) falls on, `offset_ms` east of UTC.
    pub fn of_ms(ms: u64, offset_ms: i64) -> Day {
        Day((ms as i64 + offset_ms).div_euclid(DAY_MS) as i32)
    }

    /// UTC milliseconds of the local midnight that starts this day, `offset_ms` east of UTC
    /// (0 for days before the epoch).
    pub fn start_ms(self, offset_ms: i64) -> u64 {
        (i64::from(self.0) * DAY_MS - offset_ms).max(0) as u64
    }

    /// The days from `self` through `last`, in order (none if `last` is earlier).
    /// The same day of the month `months` calendar months earlier, or that month's last day
    /// when it is shorter (29 February less 12 months is 28 February).
    pub fn months_before(self, months: u32) -> Day {
        let (y, m, d) = self.ymd();
        let index = y * 12 + i64::from(m) - 1 - i64::from(months);
        let (y, m) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
        let last = (28..=31)
            .rev()
            .find(|&d| Day::from_ymd(y, m, d).ymd() == (y, m, d))
            .unwrap_or(28);
        Day::from_ymd(y, m, d.min(last))
    }

    pub fn through(self, last: Day) -> impl DoubleEndedIterator<Item = Day> {
        (self.0..=last.0).map(Day)
    }
}

impl Add<i32> for Day {
    type Output = Day;
    fn add(self, days: i32) -> Day {
        Day(self.0 + days)
    }
}

impl Sub<i32> for Day {
    type Output = Day;
    fn sub(self, days: i32) -> Day {
        Day(self.0 - days)
    }
}

impl AddAssign<i32> for Day {
    fn add_assign(&mut self, days: i32) {
        self.0 += days;
    }
}

impl SubAssign<i32> for Day {
    fn sub_assign(&mut self, days: i32) {
        self.0 -= days;
    }
}

/// Days from `other` to `self`.
impl Sub for Day {
    type Output = i32;
    fn sub(self, other: Day) -> i32 {
        self.0 - other.0
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        let text = String::deserialize(d)?;
        Day::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a date (expected YYYY-MM-DD)"))
        })
    }
}

/// `#[serde(with = "day_number")]`: a [`Day`] as its day number (`20514`) rather than a date.
pub mod day_number {
    use super::Day;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(day: &Day, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(day.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        i32::deserialize(d).map(Day)
    }
}

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

/// The Beijing day of `ms` (UTC milliseconds).
pub fn beijing_day(ms: u64) -> Day {
    Day::of_ms(ms, BEIJING_OFFSET_MS)
}

/// `2026-12-03`: the Beijing date of `ms`.
pub fn beijing_date(ms: u64) -> String {
    beijing_day(ms).to_string()
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

#[cfg(test)]
mod tests {

    #[test]
    fn months_before_counts_calendar_months_and_clamps_to_the_month_end() {
        let d = |y, m, dd| Day::from_ymd(y, m, dd);
        assert_eq!(d(2025, 3, 15).months_before(6), d(2024, 9, 15));
        assert_eq!(d(2025, 1, 31).months_before(2), d(2024, 11, 30));
        assert_eq!(d(2024, 2, 29).months_before(12), d(2023, 2, 28));
        assert_eq!(d(2025, 2, 28).months_before(12), d(2024, 2, 28));
        assert_eq!(d(2024, 3, 31).months_before(1), d(2024, 2, 29));
        assert_eq!(d(2025, 1, 10).months_before(13), d(2023, 12, 10));
    }
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
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2025, 3, 3), 20_150);
        assert_eq!(days_from_civil(2026, 12, 3), 20_790);
    }

    #[test]
    fn beijing_time_is_eight_hours_east_of_utc() {
        // 2026-12-02 16:30:00 UTC is already the 3rd in Beijing
        let ms = (days_from_civil(2026, 12, 2) * DAY_MS + 16 * 3_600_000 + 30 * 60_000) as u64;
        assert_eq!(beijing_date(ms), "2026-12-03");
        assert_eq!(beijing_datetime(ms), "2026-12-03 00:30:00");
        assert_eq!(beijing_time(ms), "2026-12-03 00:30 (UTC+8)");
        assert_eq!(beijing_day(ms), Day::from_ymd(2026, 12, 3));
    }

    #[test]
    fn days_parse_print_and_count() {
        for s in ["1970-01-01", "2000-02-29", "2026-10-01", "2100-03-01"] {
            assert_eq!(Day::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Day::parse("1969-12-31"), Some(Day(-1)));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-0",
            "yesterday",
            "",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
        let d = Day::from_ymd(2026, 2, 27);
        assert_eq!((d + 2).to_string(), "2026-03-01");
        assert_eq!(Day::from_ymd(2026, 3, 1) - d, 2);
        assert_eq!(d.through(d + 2).count(), 3);
        assert_eq!(Day::from_ymd(2026, 10, 1).weekday(), 3, "a Thursday");
        // serde: the date as text, or the day number where a field asks for it
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, "\"2026-02-27\"");
        assert_eq!(serde_json::from_str::<Day>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Day>("\"2026-02-30\"").is_err());
    }

    #[test]
    fn a_day_starts_at_local_midnight() {
        let d = Day::from_ymd(2026, 3, 2);
        let start = d.start_ms(BEIJING_OFFSET_MS);
        assert_eq!(start, 1_772_380_800_000);
        assert_eq!(Day::of_ms(start, BEIJING_OFFSET_MS), d);
        assert_eq!(Day::of_ms(start - 1, BEIJING_OFFSET_MS), d - 1);
        assert_eq!(Day::of_ms(start, 0), d - 1, "still the 1st in UTC");
    }
}
