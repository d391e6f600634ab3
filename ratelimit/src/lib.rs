//! yunjian-ratelimit: rate-limited warnings. A flood of bad input must not flood the log. Each
//! kind of warning has one [`LogLimiter`], owned by what does the work and created with it
//! (the broker's router, the ingester, the notifier...), never a `static`: no process-global
//! mutable state (hence `new` is not `const`). At most one line per period, with the number of
//! suppressed events.
//!
//! Its own crate, depending on nothing, so that the embedded MQTT broker (`yunjian-broker`:
//! transport, no domain) logs the same way as the aggregator (ingest, notifications, command
//! dispatch, the external client) without depending on the aggregator or its core, and without
//! a second copy. [`now_ms`] is the wall clock it counts periods in; the aggregator and the
//! storage backends read the time from it too.
//!
//! [`Backoff`] paces what keeps failing in a loop (an accept loop out of file descriptors) so
//! that it neither spins nor floods the log.

mod backoff;

pub use backoff::Backoff;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct LogLimiter {
    period_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub fn new(period_ms: u64) -> Self {
        LogLimiter {
            period_ms,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` = events suppressed since the last line),
    /// `None` when this one should stay quiet.
    pub fn check(&self) -> Option<u64> {
        self.check_at(now_ms())
    }

    pub fn check_at(&self, now: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.period_ms, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_suppressed_count() {
        let l = LogLimiter::new(1000);
        assert_eq!(l.check_at(5_000), Some(0));
        assert_eq!(l.check_at(5_001), None);
        assert_eq!(l.check_at(5_999), None);
        assert_eq!(l.check_at(6_000), Some(2));
    }
}
