//! Reconnect delays: exponential back-off with jitter, so that thousands of agents cut off by
//! the same broker restart do not all come back in the same millisecond.

use std::time::Duration;

/// Delays from `[c/2, c]` where the ceiling `c` starts at `min_ms` and doubles after every
/// failure up to `max_ms` ("equal jitter"). [`Backoff::reset`] after a successful connect.
#[derive(Debug)]
pub(crate) struct Backoff {
    min_ms: u64,
    max_ms: u64,
    ceiling_ms: u64,
    rng: Rng,
}

impl Backoff {
    /// `min_ms` ≥ 1 and `min_ms` ≤ `max_ms` are checked by the caller (config validation).
    pub(crate) fn new(min_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        Backoff {
            min_ms,
            max_ms,
            ceiling_ms: min_ms,
            rng: Rng::new(seed),
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling_ms;
        self.ceiling_ms = ceiling.saturating_mul(2).min(self.max_ms);
        let floor = ceiling / 2;
        let jitter = self.rng.next_u64() % (ceiling - floor + 1);
        Duration::from_millis(floor + jitter)
    }

    pub(crate) fn reset(&mut self) {
        self.ceiling_ms = self.min_ms;
    }
}

/// xorshift64*: a few lines, good enough to spread reconnects; not for anything secret.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // splitmix64 scrambles similar seeds (neighbouring node names, close clocks) apart
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A seed that differs between processes (time, pid) and between the publishers of one
/// process (the node id).
pub(crate) fn seed_for(node: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // FNV-1a of the node id
    let name = node.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    });
    nanos ^ (u64::from(std::process::id()) << 32) ^ name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    #[test]
    fn delays_grow_from_min_and_stay_under_max() {
        let mut b = Backoff::new(100, 5_000, 42);
        let delays: Vec<u64> = (0..12).map(|_| ms(b.next_delay())).collect();
        let mut ceiling = 100;
        for d in &delays {
            assert!(
                (ceiling / 2..=ceiling).contains(d),
                "{d} ms outside [{}, {ceiling}]: {delays:?}",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(5_000);
        }
        // after the cap, every delay is in the top band
        assert!(delays[8..].iter().all(|d| (2_500..=5_000).contains(d)));
        assert!(delays[0] <= 100 && delays[7] >= 2_500, "{delays:?}");
    }

    #[test]
    fn reset_starts_again_from_min() {
        let mut b = Backoff::new(200, 60_000, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(ms(b.next_delay()) <= 200);
    }

    #[test]
    fn delays_are_jittered_within_and_across_publishers() {
        let mut one = Backoff::new(1_000, 1_000, seed_for("rack1-host01"));
        let own: std::collections::HashSet<u64> = (0..20).map(|_| ms(one.next_delay())).collect();
        assert!(
            own.len() > 10,
            "one publisher's delays barely vary: {own:?}"
        );

        let first: std::collections::HashSet<u64> = (0..20)
            .map(|i| ms(Backoff::new(1_000, 1_000, seed_for(&format!("host-{i}"))).next_delay()))
            .collect();
        assert!(
            first.len() > 10,
            "publishers would reconnect together: {first:?}"
        );
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let mut b = Backoff::new(u64::MAX / 2, u64::MAX, 1);
        for _ in 0..4 {
            assert!(b.next_delay() >= Duration::from_millis(u64::MAX / 4));
        }
    }
}
