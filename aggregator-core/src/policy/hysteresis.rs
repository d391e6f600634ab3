//! Threshold alarms that do not flap: a hold time before firing, a lower recovery level before
//! clearing, and escalation levels. Used by every "ratio against a line" rule.

use crate::alarms::Level;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The numbers, from the policy profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Fire at or above this percentage (after `hold`).
    pub warn_pct: f64,
    /// Clear only below this percentage (lower than `warn_pct`).
    pub recovery_pct: f64,
    /// How long the value must stay at or above `warn_pct` before the alarm fires.
    #[serde(with = "crate::time::duration")]
    pub hold: Duration,
    /// Escalation: at or above `pct`, the alarm takes `level` (checked while firing).
    #[serde(default)]
    pub escalate: Vec<Escalation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub pct: f64,
    pub level: Level,
}

/// The state of one watched value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hysteresis {
    /// Since when the value has been at or above the warning line, not yet firing.
    pending_since_ms: Option<u64>,
    firing: bool,
}

impl Hysteresis {
    /// Feed the current value; returns the level to report, `None` when not firing.
    pub fn update(&mut self, t: &Thresholds, pct: f64, now_ms: u64) -> Option<Level> {
        if self.firing {
            if pct < t.recovery_pct {
                self.firing = false;
                self.pending_since_ms = None;
            }
        } else if pct >= t.warn_pct {
            let since = *self.pending_since_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) >= t.hold.as_millis() as u64 {
                self.firing = true;
            }
        } else {
            self.pending_since_ms = None;
        }
        self.firing.then(|| {
            t.escalate
                .iter()
                .filter(|e| pct >= e.pct)
                .map(|e| e.level)
                .max()
                .unwrap_or(Level::Warning)
        })
    }

    pub fn firing(&self) -> bool {
        self.firing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            warn_pct: 70.0,
            recovery_pct: 65.0,
            hold: Duration::from_secs(60),
            escalate: vec![
                Escalation {
                    pct: 85.0,
                    level: Level::Major,
                },
                Escalation {
                    pct: 95.0,
                    level: Level::Critical,
                },
            ],
        }
    }

    #[test]
    fn holds_then_fires_survives_a_dip_then_recovers() {
        let t = t();
        let mut h = Hysteresis::default();
        assert_eq!(h.update(&t, 69.9, 0), None);
        assert_eq!(h.update(&t, 71.0, 1_000), None); // pending
        assert_eq!(h.update(&t, 72.0, 60_999), None); // 59.999 s held
        assert_eq!(h.update(&t, 72.0, 61_000), Some(Level::Warning));
        assert_eq!(h.update(&t, 69.0, 62_000), Some(Level::Warning)); // dip above recovery
        assert_eq!(h.update(&t, 71.0, 63_000), Some(Level::Warning));
        assert_eq!(h.update(&t, 90.0, 64_000), Some(Level::Major));
        assert_eq!(h.update(&t, 96.0, 65_000), Some(Level::Critical));
        assert_eq!(h.update(&t, 64.9, 66_000), None); // below recovery: cleared
                                                      // a new climb waits for the hold again
        assert_eq!(h.update(&t, 75.0, 67_000), None);
    }

    #[test]
    fn a_spike_shorter_than_the_hold_never_fires() {
        let t = t();
        let mut h = Hysteresis::default();
        assert_eq!(h.update(&t, 80.0, 0), None);
        assert_eq!(h.update(&t, 60.0, 30_000), None);
        assert_eq!(h.update(&t, 80.0, 40_000), None);
        assert_eq!(h.update(&t, 80.0, 99_999), None);
        assert_eq!(h.update(&t, 80.0, 100_000), Some(Level::Warning));
    }
}
