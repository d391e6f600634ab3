//! The accelerated clock: event time runs `accel` times faster than wall time.
//!
//! `event_ms = start_ms + (wall_now − wall_start) × accel`. Report timestamps (`Envelope::ts_ms`)
//! are event times, so a demo at `accel = 1440` shows a whole simulated day per wall minute,
//! with diurnal curves, counters and disk growth all consistent with that day.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shortest wall-clock gap between two reports of one node, whatever `interval / accel`
/// gives. Below it, 10,000 nodes would saturate the broker and the CPU; when the floor applies,
/// consecutive reports are `MIN_WALL_INTERVAL × accel` apart in event time.
pub const MIN_WALL_INTERVAL: Duration = Duration::from_millis(50);

/// Milliseconds since the Unix epoch, now.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Maps wall time to event time.
#[derive(Debug, Clone, Copy)]
pub struct AccelClock {
    start_ms: u64,
    wall_start: Instant,
    accel: f64,
}

impl AccelClock {
    /// A clock whose event time is `start_ms` at `wall_start`.
    pub fn new(start_ms: u64, wall_start: Instant, accel: f64) -> Self {
        AccelClock {
            start_ms,
            wall_start,
            accel,
        }
    }

    /// Event time at the event-time origin.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    pub fn accel(&self) -> f64 {
        self.accel
    }

    /// Event time after `elapsed` wall time since the start.
    pub fn event_ms_after(&self, elapsed: Duration) -> u64 {
        self.start_ms + (elapsed.as_secs_f64() * 1000.0 * self.accel).round() as u64
    }

    /// Event time at wall instant `at` (instants before the start map to the start).
    pub fn event_ms_at(&self, at: Instant) -> u64 {
        self.event_ms_after(at.saturating_duration_since(self.wall_start))
    }

    /// Event time now.
    pub fn now_ms(&self) -> u64 {
        self.event_ms_at(Instant::now())
    }

    /// The wall-clock gap between reports for an event-time `interval`, floored at
    /// [`MIN_WALL_INTERVAL`].
    pub fn wall_interval(&self, interval: Duration) -> Duration {
        interval.div_f64(self.accel).max(MIN_WALL_INTERVAL)
    }

    /// The event time that really passes between two reports (equal to `interval` unless the
    /// wall floor applied).
    pub fn effective_interval(&self, interval: Duration) -> Duration {
        self.wall_interval(interval).mul_f64(self.accel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_time_clock_moves_with_the_wall() {
        let t0 = Instant::now();
        let c = AccelClock::new(1_000_000, t0, 1.0);
        assert_eq!(c.event_ms_at(t0), 1_000_000);
        assert_eq!(c.event_ms_at(t0 + Duration::from_millis(1500)), 1_001_500);
    }

    #[test]
    fn a_day_per_minute() {
        let t0 = Instant::now();
        let c = AccelClock::new(0, t0, 1440.0);
        assert_eq!(c.event_ms_at(t0 + Duration::from_secs(60)), 86_400_000);
        assert_eq!(c.event_ms_after(Duration::from_millis(500)), 720_000);
    }

    #[test]
    fn instants_before_the_start_do_not_go_back_in_time() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let c = AccelClock::new(5_000, t0, 60.0);
        assert_eq!(c.event_ms_at(Instant::now()), 5_000);
    }

    #[test]
    fn now_advances_accel_times_faster() {
        let c = AccelClock::new(0, Instant::now(), 1000.0);
        let a = c.now_ms();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now_ms();
        assert!(b - a >= 20_000, "{a} -> {b}");
    }

    #[test]
    fn wall_interval_is_scaled_and_floored() {
        let c = AccelClock::new(0, Instant::now(), 60.0);
        assert_eq!(
            c.wall_interval(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            c.effective_interval(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        let fast = AccelClock::new(0, Instant::now(), 1440.0);
        assert_eq!(
            fast.wall_interval(Duration::from_secs(10)),
            MIN_WALL_INTERVAL
        );
        assert_eq!(
            fast.effective_interval(Duration::from_secs(10)),
            Duration::from_secs(72)
        );
    }
}
