//! When will a used ratio reach the line? A trend of (event time, %) samples and a least-squares
//! line through it: pure, no I/O, no clock of its own.
//!
//! Samples go into one bucket per event-time hour, kept for the profile's
//! `forecast_window_days`. The line is fitted on *daily means* of those buckets (Beijing days,
//! complete days only): fitted on hours, the daily business cycle tilts the line by several
//! percent a day depending on the hour the window ends, which would announce a crossing every
//! morning. Dates are event time, so a simulator's accelerated clock gives accelerated dates.

use crate::time::{beijing_day, Day};
use std::collections::VecDeque;

pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 86_400_000;
/// Complete days of history needed before a line is fitted.
pub const MIN_DAYS: usize = 3;
/// Slopes below this (percentage points a day) are flat: no crossing.
const FLAT_PER_DAY: f64 = 1e-6;

/// The samples of one event-time hour.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    hour: u64,
    sum: f64,
    /// Sum of the samples' offsets into the hour (ms).
    sum_offset: f64,
    n: u32,
}

impl Bucket {
    fn mean(&self) -> f64 {
        self.sum / f64::from(self.n)
    }

    /// Mean time of the samples, ms since the epoch.
    fn mean_ms(&self) -> f64 {
        (self.hour * HOUR_MS) as f64 + self.sum_offset / f64::from(self.n)
    }

    fn add(&mut self, ts_ms: u64, pct: f64) {
        self.sum += pct;
        self.sum_offset += (ts_ms - self.hour * HOUR_MS) as f64;
        self.n += 1;
    }

    fn day(&self) -> Day {
        beijing_day(self.hour * HOUR_MS)
    }
}

/// A bounded history of one ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    window_hours: u64,
    buckets: VecDeque<Bucket>,
    /// Event time of the newest sample.
    last_ms: u64,
}

/// Where the fitted line meets the warning line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Event time of the crossing.
    pub at_ms: u64,
    /// Days from the newest sample to the crossing.
    pub days_left: f64,
    /// Percentage points per day.
    pub slope_per_day: f64,
    /// The fitted value at the newest sample.
    pub now_pct: f64,
    /// Daily means the line was fitted on.
    pub days: usize,
}

/// `y = intercept + slope · x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub intercept: f64,
    pub slope: f64,
}

impl Trend {
    pub fn new(window_days: u32) -> Self {
        let window_hours = u64::from(window_days.max(1)) * 24;
        Trend {
            window_hours,
            buckets: VecDeque::with_capacity(window_hours as usize + 1),
            last_ms: 0,
        }
    }

    /// Add a sample taken at event time `ts_ms`. A sample from an hour before the newest is
    /// late and ignored; a clock that goes back further (a restarted simulation) starts the
    /// trend again.
    pub fn push(&mut self, ts_ms: u64, pct: f64) {
        if !pct.is_finite() {
            return;
        }
        let hour = ts_ms / HOUR_MS;
        if let Some(b) = self.buckets.back_mut() {
            if b.hour == hour {
                b.add(ts_ms, pct);
                self.last_ms = self.last_ms.max(ts_ms);
                return;
            }
            if hour < b.hour {
                if b.hour - hour == 1 {
                    return;
                }
                self.buckets.clear();
            }
        }
        let mut b = Bucket {
            hour,
            sum: 0.0,
            sum_offset: 0.0,
            n: 0,
        };
        b.add(ts_ms, pct);
        self.buckets.push_back(b);
        self.last_ms = ts_ms;
        let oldest = hour.saturating_sub(self.window_hours);
        while self.buckets.front().is_some_and(|b| b.hour < oldest) {
            self.buckets.pop_front();
        }
    }

    /// Hourly buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The crossing of `line` by the trend, if the trend climbs and the crossing is ahead.
    pub fn forecast(&self, line: f64) -> Option<Forecast> {
        let today = beijing_day(self.last_ms);
        let now = self.last_ms as f64;
        // x: days relative to the newest sample (negative), y: the day's mean.
        let mut fit = Fit::default();
        let mut day: Option<(Day, Fit)> = None;
        for b in self.buckets.iter().take_while(|b| b.day() < today) {
            let x = (b.mean_ms() - now) / DAY_MS as f64;
            match &mut day {
                Some((d, acc)) if *d == b.day() => acc.add(x, b.mean()),
                _ => {
                    if let Some((_, acc)) = day.take() {
                        fit.add_mean(&acc);
                    }
                    let mut acc = Fit::default();
                    acc.add(x, b.mean());
                    day = Some((b.day(), acc));
                }
            }
        }
        if let Some((_, acc)) = day {
            fit.add_mean(&acc);
        }
        if (fit.n as usize) < MIN_DAYS {
            return None;
        }
        let l = fit.line()?;
        crossing(l, line).map(|days_left| Forecast {
            at_ms: self.last_ms + (days_left * DAY_MS as f64) as u64,
            days_left,
            slope_per_day: l.slope,
            now_pct: l.intercept,
            days: fit.n as usize,
        })
    }
}

/// Running sums for a least-squares line.
#[derive(Debug, Clone, Copy, Default)]
struct Fit {
    n: u32,
    sx: f64,
    sy: f64,
    sxy: f64,
    sxx: f64,
}

impl Fit {
    fn add(&mut self, x: f64, y: f64) {
        self.n += 1;
        self.sx += x;
        self.sy += y;
        self.sxy += x * y;
        self.sxx += x * x;
    }

    /// Add the centre of another set of points (its mean x, mean y) as one point.
    fn add_mean(&mut self, other: &Fit) {
        let n = f64::from(other.n);
        self.add(other.sx / n, other.sy / n);
    }

    fn line(&self) -> Option<Line> {
        let n = f64::from(self.n);
        let d = n * self.sxx - self.sx * self.sx;
        if self.n < 2 || d.abs() < f64::EPSILON {
            return None;
        }
        let slope = (n * self.sxy - self.sx * self.sy) / d;
        Some(Line {
            intercept: (self.sy - slope * self.sx) / n,
            slope,
        })
    }
}

/// The least-squares line through `points` (`None` for fewer than two distinct x).
pub fn fit(points: impl IntoIterator<Item = (f64, f64)>) -> Option<Line> {
    let mut f = Fit::default();
    for (x, y) in points {
        f.add(x, y);
    }
    f.line()
}

/// How far ahead of x = 0 the line reaches `level`: `None` if it is flat or falling, or already
/// at or above `level` at x = 0.
pub fn crossing(l: Line, level: f64) -> Option<f64> {
    if l.slope < FLAT_PER_DAY || l.intercept >= level {
        return None;
    }
    Some((level - l.intercept) / l.slope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::beijing_date;

    /// 2026-03-02 00:00 Beijing time.
    const T0: u64 = 1_772_380_800_000;

    fn trend_of(days: u64, every_ms: u64, pct: impl Fn(u64) -> f64) -> Trend {
        let mut t = Trend::new(14);
        let mut ts = T0;
        while ts < T0 + days * DAY_MS {
            t.push(ts, pct(ts));
            ts += every_ms;
        }
        t
    }

    #[test]
    fn dates_are_beijing_calendar_days() {
        assert_eq!(beijing_date(T0), "2026-03-02");
        assert_eq!(beijing_date(T0 - 1), "2026-03-01");
        assert_eq!(beijing_date(0), "1970-01-01");
        // 2024 is a leap year
        assert_eq!(crate::time::civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(crate::time::civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn a_least_squares_line_through_points() {
        let l = fit([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((l.slope - 2.0).abs() < 1e-12 && (l.intercept - 1.0).abs() < 1e-12);
        // noise around y = 10 + x: the fit finds the trend
        let l = fit((0..10).map(|x| {
            (
                x as f64,
                10.0 + x as f64 + if x % 2 == 0 { 0.5 } else { -0.5 },
            )
        }))
        .unwrap();
        assert!((l.slope - 1.0).abs() < 0.1, "{l:?}");
        assert_eq!(fit([(1.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(
            crossing(
                Line {
                    intercept: 50.0,
                    slope: 2.0
                },
                70.0
            ),
            Some(10.0)
        );
        assert_eq!(
            crossing(
                Line {
                    intercept: 71.0,
                    slope: 2.0
                },
                70.0
            ),
            None
        );
    }

    #[test]
    fn a_linear_climb_crosses_on_the_right_day() {
        // 40.5 % at T0, +1 point a day, sampled every 10 minutes for 10 days
        let per_ms = 1.0 / DAY_MS as f64;
        let t = trend_of(10, 600_000, |ts| 40.5 + (ts - T0) as f64 * per_ms);
        let f = t.forecast(70.0).expect("a climb crosses");
        // 70 % is reached 29.5 days after T0: 2026-03-31 at noon
        let exact = T0 + 29 * DAY_MS + DAY_MS / 2;
        assert!(f.at_ms.abs_diff(exact) < 60_000, "{f:?}");
        assert_eq!(beijing_date(f.at_ms), "2026-03-31");
        assert!((f.slope_per_day - 1.0).abs() < 1e-6);
        // the newest sample is 10 minutes before day 10
        assert!((f.days_left - 19.507).abs() < 0.001, "{f:?}");
        assert!((f.now_pct - 50.493).abs() < 0.001, "{f:?}");
        // the running day is left out: nine complete days
        assert_eq!(f.days, 9);
    }

    #[test]
    fn the_daily_cycle_does_not_tilt_the_line() {
        // flat at 55 % with a ±15 point business-hours swing, ending mid-morning
        let swing = |ts: u64| {
            let h = ((ts + crate::time::BEIJING_OFFSET_MS as u64) % DAY_MS) as f64 / HOUR_MS as f64;
            55.0 + 15.0 * (std::f64::consts::TAU * (h - 8.0) / 24.0).sin()
        };
        let t = trend_of(5, 900_000, |ts| swing(ts + 10 * HOUR_MS));
        assert_eq!(t.forecast(70.0), None);
        // the same cycle on a climb of 2 points a day is still found
        let t = trend_of(5, 900_000, |ts| {
            swing(ts) + 2.0 * (ts - T0) as f64 / DAY_MS as f64
        });
        let f = t.forecast(70.0).unwrap();
        assert!((f.slope_per_day - 2.0).abs() < 0.05, "{f:?}");
    }

    #[test]
    fn flat_or_falling_never_crosses() {
        assert_eq!(trend_of(10, 600_000, |_| 60.0).forecast(70.0), None);
        let falling = trend_of(10, 600_000, |ts| 65.0 - (ts - T0) as f64 / DAY_MS as f64);
        assert_eq!(falling.forecast(70.0), None);
        // already above the line: the capacity alarm's business, not a forecast
        let above = trend_of(10, 600_000, |ts| 72.0 + (ts - T0) as f64 / DAY_MS as f64);
        assert_eq!(above.forecast(70.0), None);
    }

    #[test]
    fn too_little_history_gives_no_forecast() {
        let t = trend_of(3, 600_000, |ts| {
            40.0 + 5.0 * (ts - T0) as f64 / DAY_MS as f64
        });
        // days 1 and 2 complete, day 3 running
        assert_eq!(t.forecast(70.0), None);
        let t = trend_of(4, 600_000, |ts| {
            40.0 + 5.0 * (ts - T0) as f64 / DAY_MS as f64
        });
        assert!(t.forecast(70.0).is_some());
    }

    #[test]
    fn history_is_bounded_hourly_and_restarts_when_the_clock_goes_back() {
        let t = trend_of(30, 600_000, |_| 50.0);
        assert_eq!(t.len(), 14 * 24 + 1);
        let mut t = Trend::new(14);
        t.push(T0 + 10 * HOUR_MS, 50.0);
        t.push(T0 + 10 * HOUR_MS + 60_000, 60.0);
        assert_eq!(t.len(), 1);
        // a late sample from the previous hour is ignored
        t.push(T0 + 9 * HOUR_MS, 10.0);
        assert_eq!(t.len(), 1);
        // a clock that jumps back a day starts over
        t.push(T0 - DAY_MS, 10.0);
        assert_eq!(t.len(), 1);
        t.push(T0 - DAY_MS + HOUR_MS, 10.0);
        assert_eq!(t.len(), 2);
        t.push(T0, f64::NAN);
        assert_eq!(t.len(), 2);
    }
}
