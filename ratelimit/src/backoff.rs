//! How long an accept loop pauses after a failed `accept`.
//!
//! `accept` fails when the process is out of file descriptors (EMFILE) or the system is (ENFILE,
//! ENOBUFS): retrying at once spins a core and writes a log line per try, and each try fails
//! again until a connection closes. [`Backoff`] doubles the pause from `min` to `max` while
//! failures continue and starts over after a success; the warning itself goes through a
//! [`crate::LogLimiter`].

use std::time::Duration;

/// Pause after an `accept` failure: 10 ms doubling up to 1 s by default.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// Another failure: how long to pause before trying again.
    pub fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// A success: the next failure pauses `min` again.
    pub fn succeeded(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_ceiling_and_starts_over_after_a_success() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(10));
    }
}
