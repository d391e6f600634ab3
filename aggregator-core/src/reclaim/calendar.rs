//! Working days (工作日): Monday to Friday, minus statutory holidays, plus make-up working days
//! (调休). The holidays are configuration (`aggregator-core/calendars/*.toml`), never code.
//!
//! A deadline of *n* working days counts from the working day after the start (the start day
//! itself does not count) and ends at midnight (local time) at the end of the *n*-th one.
//! Years no calendar file covers count weekends only; [`Calendar::covers`] tells which (the
//! reclaim service raises the alarm `calendar_year_missing` for a deadline counted in one).
//! The built-in file is always loaded; `[reclaim] calendars` adds files over it (README,
//! "Working-day calendars").

use crate::time::Day;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The calendar shipped with the aggregator (the files of `[reclaim] calendars` go over it).
pub const BUILTIN_CN_2026: &str = include_str!("../../calendars/cn-2026.toml");

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("calendar file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("calendar {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("calendar {origin}: {what} {date:?} is not a date (expected YYYY-MM-DD)")]
    BadDate {
        origin: String,
        what: &'static str,
        date: String,
    },
    #[error("calendar {origin}: holiday {name:?} ends ({to}) before it starts ({from})")]
    Reversed {
        origin: String,
        name: String,
        from: String,
        to: String,
    },
    #[error("calendars {a} and {b} use different UTC offsets ({ha} h, {hb} h)")]
    Offsets {
        a: String,
        b: String,
        ha: i32,
        hb: i32,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    name: String,
    utc_offset_hours: i32,
    /// The years whose holidays the file lists in full.
    years: Vec<i64>,
    #[serde(default)]
    holidays: Vec<HolidayRange>,
    #[serde(default)]
    workdays: Vec<Workday>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayRange {
    name: String,
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Workday {
    name: String,
    date: String,
}

/// The working-day calendar: one or more files merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub names: Vec<String>,
    pub utc_offset_hours: i32,
    years: BTreeSet<i64>,
    /// Statutory days off, with the holiday's name.
    holidays: BTreeMap<Day, String>,
    /// Weekend days that are working days (调休), with why.
    workdays: BTreeMap<Day, String>,
}

impl Calendar {
    /// The built-in 2026 calendar.
    pub fn builtin() -> Calendar {
        Calendar::parse(BUILTIN_CN_2026, "built-in cn-2026").expect("built-in calendar is valid")
    }

    /// The built-in calendar with the files given merged over it, in order (a file that lists
    /// a year replaces what came before for that year: a corrected notice).
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Calendar, CalendarError> {
        let mut merged = Calendar::builtin();
        for p in paths {
            let path = p.as_ref().display().to_string();
            let text =
                std::fs::read_to_string(p.as_ref()).map_err(|source| CalendarError::Read {
                    path: path.clone(),
                    source,
                })?;
            merged.merge(Calendar::parse(&text, &path)?)?;
        }
        Ok(merged)
    }

    /// Merge `other` over this one: the years it lists are taken from it alone.
    pub fn merge(&mut self, other: Calendar) -> Result<(), CalendarError> {
        if self.utc_offset_hours != other.utc_offset_hours {
            return Err(CalendarError::Offsets {
                a: self.names.join("+"),
                b: other.names.join("+"),
                ha: self.utc_offset_hours,
                hb: other.utc_offset_hours,
            });
        }
        let replaced = |d: &Day| other.years.contains(&d.ymd().0);
        self.holidays.retain(|d, _| !replaced(d));
        self.workdays.retain(|d, _| !replaced(d));
        self.names.extend(other.names);
        self.years.extend(other.years);
        self.holidays.extend(other.holidays);
        self.workdays.extend(other.workdays);
        Ok(())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Calendar, CalendarError> {
        let f: CalendarFile = toml::from_str(text).map_err(|e| CalendarError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        let date = |what: &'static str, s: &str| {
            Day::parse(s).ok_or_else(|| CalendarError::BadDate {
                origin: origin.into(),
                what,
                date: s.into(),
            })
        };
        let mut holidays = BTreeMap::new();
        for h in &f.holidays {
            let (from, to) = (date("holiday start", &h.from)?, date("holiday end", &h.to)?);
            if to < from {
                return Err(CalendarError::Reversed {
                    origin: origin.into(),
                    name: h.name.clone(),
                    from: h.from.clone(),
                    to: h.to.clone(),
                });
            }
            let mut d = from;
            while d <= to {
                holidays.insert(d, h.name.clone());
                d += 1;
            }
        }
        let mut workdays = BTreeMap::new();
        for w in &f.workdays {
            workdays.insert(date("make-up working day", &w.date)?, w.name.clone());
        }
        Ok(Calendar {
            names: vec![f.name],
            utc_offset_hours: f.utc_offset_hours,
            years: f.years.into_iter().collect(),
            holidays,
            workdays,
        })
    }

    /// Does a file list this day's year?
    pub fn covers(&self, day: Day) -> bool {
        self.years.contains(&day.ymd().0)
    }

    pub fn is_working_day(&self, day: Day) -> bool {
        if self.workdays.contains_key(&day) {
            return true;
        }
        day.weekday() < 5 && !self.holidays.contains_key(&day)
    }

    /// Why a day is off or on, for pages: `国庆节`, `国庆节调休`, `周末`, or `None` (ordinary).
    pub fn why(&self, day: Day) -> Option<&str> {
        self.workdays
            .get(&day)
            .or_else(|| self.holidays.get(&day))
            .map(String::as_str)
            .or((day.weekday() >= 5).then_some("周末"))
    }

    fn offset_ms(&self) -> i64 {
        i64::from(self.utc_offset_hours) * 3_600_000
    }

    /// The local calendar day of a Unix ms time.
    pub fn day_of(&self, ms: u64) -> Day {
        Day::of_ms(ms, self.offset_ms())
    }

    /// Unix ms of local midnight at the start of `day`.
    pub fn start_of(&self, day: Day) -> u64 {
        day.start_ms(self.offset_ms())
    }

    /// The `n`-th working day after the day of `from_ms`.
    pub fn nth_working_day_after(&self, from_ms: u64, n: u32) -> Day {
        let mut d = self.day_of(from_ms);
        let mut left = n;
        while left > 0 {
            d += 1;
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }

    /// The deadline of `n` working days from `from_ms`: the end (local midnight) of the n-th
    /// working day after it. `n = 0`: the end of the start day.
    pub fn deadline(&self, from_ms: u64, n: u32) -> u64 {
        self.start_of(self.nth_working_day_after(from_ms, n) + 1)
    }

    /// Working days strictly after the day of `from_ms` up to and including the day of `to_ms`
    /// (how late something is, in working days).
    pub fn working_days_between(&self, from_ms: u64, to_ms: u64) -> u32 {
        let (a, b) = (self.day_of(from_ms), self.day_of(to_ms));
        let mut d = a;
        let mut n = 0;
        while d < b {
            d += 1;
            if self.is_working_day(d) {
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    #[test]
    fn dates_roundtrip_and_weekdays() {
        for s in [
            "1970-01-01",
            "2000-02-29",
            "2026-10-01",
            "2026-12-31",
            "2100-03-01",
        ] {
            assert_eq!(day(s).to_string(), s);
        }
        assert_eq!(day("2026-10-01").weekday(), 3, "2026-10-01 is a Thursday");
        assert_eq!(day("2026-09-20").weekday(), 6, "2026-09-20 is a Sunday");
        assert!(Day::parse("2026-02-30").is_none());
        assert!(Day::parse("2026-13-01").is_none());
        assert!(Day::parse("tomorrow").is_none());
    }

    #[test]
    fn the_2026_national_day_week_and_its_make_up_days() {
        let c = Calendar::builtin();
        for d in 1..=7 {
            let d = Day::from_ymd(2026, 10, d);
            assert!(!c.is_working_day(d), "{d} is 国庆节");
            assert_eq!(c.why(d), Some("国庆节"));
        }
        // Saturday 10 October and Sunday 20 September are worked (调休)
        assert!(c.is_working_day(day("2026-10-10")));
        assert!(c.is_working_day(day("2026-09-20")));
        assert_eq!(c.why(day("2026-10-10")), Some("国庆节调休"));
        assert!(!c.is_working_day(day("2026-10-11")), "an ordinary Sunday");
        assert!(c.covers(day("2026-06-01")) && !c.covers(day("2027-01-04")));
    }

    #[test]
    fn working_day_deadlines_across_the_national_day_holiday() {
        let c = Calendar::builtin();
        // approved Tuesday 29 Sep 2026 at 15:00 Beijing time, reclaim within 3 working days:
        // Wed 30 Sep (1), then 1–7 Oct off, Thu 8 (2), Fri 9 (3) → due at the end of 9 Oct
        let approved = c.start_of(day("2026-09-29")) + 15 * 3_600_000;
        assert_eq!(c.nth_working_day_after(approved, 3), day("2026-10-09"));
        assert_eq!(c.deadline(approved, 3), c.start_of(day("2026-10-10")));
        // 5 working days: … Fri 9 (3), Sat 10 (调休, 4), Mon 12 (5)
        assert_eq!(c.nth_working_day_after(approved, 5), day("2026-10-12"));
        // without the make-up Saturday it would be Tuesday 13
        let no_makeup = Calendar::parse(
            &BUILTIN_CN_2026.replace("{ name = \"国庆节调休\", date = \"2026-10-10\" },", ""),
            "test",
        )
        .unwrap();
        assert_eq!(
            no_makeup.nth_working_day_after(approved, 5),
            day("2026-10-13")
        );
        // the make-up Sunday before: notified Fri 18 Sep, 2 working days → Sun 20 (调休), Mon 21
        let notified = c.start_of(day("2026-09-18")) + 9 * 3_600_000;
        assert_eq!(c.nth_working_day_after(notified, 1), day("2026-09-20"));
        assert_eq!(c.nth_working_day_after(notified, 2), day("2026-09-21"));
        // how late: from 29 Sep to 12 Oct is 5 working days
        assert_eq!(
            c.working_days_between(approved, c.start_of(day("2026-10-12")) + 1),
            5
        );
    }

    #[test]
    fn the_day_boundary_is_local_midnight() {
        let c = Calendar::builtin();
        // 2026-10-09 23:30 Beijing = 15:30 UTC the same day; 2026-10-09 00:30 Beijing is
        // still 8 Oct in UTC
        let late = c.start_of(day("2026-10-09")) + 23 * 3_600_000 + 1_800_000;
        assert_eq!(c.day_of(late), day("2026-10-09"));
        let early = c.start_of(day("2026-10-09")) + 1_800_000;
        assert_eq!(c.day_of(early), day("2026-10-09"));
        assert_eq!(c.deadline(early, 0), c.start_of(day("2026-10-10")));
    }

    #[test]
    fn bad_files_are_named_with_the_problem() {
        let e = Calendar::parse("name = \"x\"\nutc_offset_hours = 8\nyears = [2026]\nholidays = [{ name = \"a\", from = \"2026-10-07\", to = \"2026-10-01\" }]", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("ends"), "{e}");
        let e = Calendar::parse("name = \"x\"\nutc_offset_hours = 8\nyears = [2026]\nworkdays = [{ name = \"a\", date = \"2026-9-31\" }]", "y.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.toml") && e.contains("2026-9-31"), "{e}");
        let e = Calendar::parse(
            "name = \"x\"\nutc_offset_hours = 8\nyears = [2026]\nholiday = []",
            "z.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("z.toml") && e.contains("holiday"), "{e}");
        let e = Calendar::load(&["/nonexistent/cal.toml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/cal.toml"), "{e}");
    }

    #[test]
    fn a_next_years_file_is_merged_over_the_built_in_one() {
        let path =
            std::env::temp_dir().join(format!("yunjian-cn-2027-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "name = \"cn-2027\"\nutc_offset_hours = 8\nyears = [2027]\n\
             holidays = [{ name = \"元旦\", from = \"2027-01-01\", to = \"2027-01-01\" }]\n",
        )
        .unwrap();
        let builtin = Calendar::builtin();
        // without it 2027 is not covered and 1 January (a Friday) counts as a working day
        assert!(!builtin.covers(day("2027-01-01")));
        assert!(builtin.is_working_day(day("2027-01-01")));
        let c = Calendar::load(&[&path]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.names, ["cn-2026", "cn-2027"]);
        assert!(c.covers(day("2026-10-01")) && c.covers(day("2027-01-01")));
        assert!(!c.is_working_day(day("2027-01-01")));
        assert!(!c.is_working_day(day("2026-10-01")), "2026 kept");
        // notified Thu 31 Dec 2026, 2 working days: Mon 4 and Tue 5 Jan 2027
        let t = c.start_of(day("2026-12-31")) + 10 * 3_600_000;
        assert_eq!(c.nth_working_day_after(t, 2), day("2027-01-05"));
        assert_eq!(builtin.nth_working_day_after(t, 2), day("2027-01-04"));
        // a file for a year already known replaces that year (a corrected notice)
        let mut fixed = Calendar::builtin();
        fixed
            .merge(
                Calendar::parse(
                    "name = \"fix\"\nutc_offset_hours = 8\nyears = [2026]\n",
                    "fix",
                )
                .unwrap(),
            )
            .unwrap();
        assert!(fixed.is_working_day(day("2026-10-01")));
        let e = fixed
            .merge(
                Calendar::parse(
                    "name = \"utc\"\nutc_offset_hours = 0\nyears = [2028]\n",
                    "utc",
                )
                .unwrap(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("offsets"), "{e}");
    }
}
