//! History backfill: weeks of past reports published in seconds.
//!
//! Rules such as the aggregator's idle and over-provisioned VMs need 14 to 35 days of daily
//! usage, which a real-time run never accumulates. With the scenario's `backfill` set, every
//! node, right after its publisher starts and before its real-time loop, publishes the
//! reports of the event times `[start − backfill, start)`, `backfill_interval` apart, from the
//! same workload ([`crate::synth::NodeSim`]) and through the same publisher, so the seqs stay
//! contiguous and the real-time reports follow on. Only reports are backfilled: no guest lists,
//! BMC sweeps or antivirus reports, which describe the present.
//!
//! Back-pressure: the publisher never blocks and drops its *oldest* frames when its buffer is
//! full, so a node sends the next past report only while fewer than [`WINDOW`] frames wait for
//! the broker's acknowledgement. The broker's speed (the aggregator acknowledges a report once
//! it is stored) thus sets the pace, and nothing is dropped.

use std::time::Duration;

/// Most frames a backfilling node lets wait for acknowledgement: twice what the publisher
/// hands to MQTT at a time, so there is always a batch ready. At ~400 bytes for a 64-core
/// host's report, well inside the simulator's 64 KiB buffer per node.
pub const WINDOW: u64 = 32;
/// How often a node whose window is full looks again.
pub const POLL: Duration = Duration::from_millis(2);

/// The event times every node backfills: `count` reports, `interval_ms` apart, from `from_ms`;
/// the last one is before the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backfill {
    pub from_ms: u64,
    pub interval_ms: u64,
    pub count: u64,
}

impl Backfill {
    /// The backfill of `span` before `start_ms` at `interval`; `None` for an empty span.
    pub fn plan(start_ms: u64, span: Duration, interval: Duration) -> Option<Backfill> {
        let span_ms = span.as_millis() as u64;
        let interval_ms = (interval.as_millis() as u64).max(1);
        if span_ms == 0 {
            return None;
        }
        let from_ms = start_ms.saturating_sub(span_ms);
        Some(Backfill {
            from_ms,
            interval_ms,
            count: (start_ms - from_ms).div_ceil(interval_ms),
        })
    }

    /// The event times, oldest first.
    pub fn times(&self) -> impl Iterator<Item = u64> {
        let Backfill {
            from_ms,
            interval_ms,
            count,
        } = *self;
        (0..count).map(move |k| from_ms + k * interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_740_956_400_000;
    const DAY: u64 = 86_400_000;

    #[test]
    fn the_times_fill_the_span_and_end_before_the_start() {
        let b = Backfill::plan(
            START,
            Duration::from_secs(36 * 86_400),
            Duration::from_secs(900),
        )
        .unwrap();
        assert_eq!(b.count, 36 * 96);
        let t: Vec<u64> = b.times().collect();
        assert_eq!(t.len(), 36 * 96);
        assert_eq!(t[0], START - 36 * DAY);
        assert!(t.windows(2).all(|w| w[1] - w[0] == 900_000));
        assert_eq!(*t.last().unwrap(), START - 900_000);
    }

    #[test]
    fn a_span_not_a_multiple_of_the_interval_keeps_its_first_time() {
        // 50 minutes at 15: -50, -35, -20, -5 minutes
        let b =
            Backfill::plan(START, Duration::from_secs(3_000), Duration::from_secs(900)).unwrap();
        let t: Vec<u64> = b.times().map(|t| (START - t) / 60_000).collect();
        assert_eq!(t, [50, 35, 20, 5]);
        assert_eq!(
            Backfill::plan(START, Duration::ZERO, Duration::from_secs(900)),
            None
        );
    }
}
