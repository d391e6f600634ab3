//! A tiny deterministic PRNG (xoshiro256**, seeded with splitmix64) and stable hashing.
//!
//! The simulator must give the same fleet and the same samples for the same seed on every
//! machine and every build, so it carries its own generator instead of a crate whose streams
//! may change between versions.

/// One step of splitmix64: a good 64-bit mixer, used to seed and to hash.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of `seed` and a string (FNV-1a over the bytes, then mixed).
pub fn hash_str(seed: u64, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ splitmix64(seed);
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h)
}

/// A stable hash of several integers, for noise that is a pure function of its inputs.
pub fn hash_u64s(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x6a09_e667_f3bc_c908, |h, &p| splitmix64(h ^ p))
}

/// Map 64 random bits to a float in `[0, 1)`.
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// xoshiro256**: small state (32 bytes), fast, good statistical quality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut s = [0u64; 4];
        for slot in &mut s {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *slot = splitmix64(x);
        }
        Rng { s }
    }

    /// A generator for one named thing (a node, a template...) under a scenario seed.
    pub fn for_key(seed: u64, key: &str) -> Self {
        Rng::new(hash_str(seed, key))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: bias is below 2^-32 for the small `n` used here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Pick an index with probability proportional to its weight. `None` if all weights are 0.
    pub fn weighted(&mut self, weights: &[u32]) -> Option<usize> {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let mut pick = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            let w = u64::from(w);
            if pick < w {
                return Some(i);
            }
            pick -= w;
        }
        None
    }
}

/// A version-4 style UUID string (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`) from 128 bits.
pub fn uuid_string(hi: u64, lo: u64) -> String {
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(43);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn stream_is_pinned() {
        // A change here changes every simulated fleet: only on purpose.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        let mut r = Rng::new(1);
        assert_eq!(r.next_u64(), 0xf9d2_0113_ec80_c6d5);
        assert_eq!(r.next_u64(), 0xd16e_236e_5cdc_6563);
        assert_eq!(hash_str(7, "r1-h01"), 0x4d1f_1cc5_adfd_415d);
        assert_ne!(hash_str(7, "r1-h01"), hash_str(7, "r1-h02"));
        assert_ne!(hash_str(7, "r1-h01"), hash_str(8, "r1-h01"));
    }

    #[test]
    fn floats_stay_in_range_and_spread() {
        let mut r = Rng::new(9);
        let xs: Vec<f64> = (0..10_000).map(|_| r.range(2.0, 3.0)).collect();
        assert!(xs.iter().all(|&x| (2.0..3.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 2.5).abs() < 0.02, "mean {mean}");
        assert!(xs.iter().any(|&x| x < 2.05) && xs.iter().any(|&x| x > 2.95));
    }

    #[test]
    fn weighted_follows_weights_and_skips_zero() {
        let mut r = Rng::new(5);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[r.weighted(&[3, 0, 1]).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        let ratio = f64::from(counts[0]) / f64::from(counts[2]);
        assert!((ratio - 3.0).abs() < 0.25, "ratio {ratio}");
        assert_eq!(r.weighted(&[0, 0]), None);
        assert_eq!(r.weighted(&[]), None);
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let u = uuid_string(u64::MAX, 0);
        assert_eq!(u, "ffffffff-ffff-4fff-8000-000000000000");
        let u = uuid_string(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(u, "01234567-89ab-4def-bedc-ba9876543210");
        assert_eq!(u.len(), 36);
    }
}
