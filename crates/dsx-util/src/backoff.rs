//! Exponential backoff with jitter: `min(base · 2^attempt, cap)`, then spread so that
//! clients that failed together do not retry in step.

use std::time::Duration;

/// How a nominal delay `d` is randomised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// Uniform in `[d·(1-f), d·(1+f)]`, e.g. `Spread(0.1)` for ±10 %.
    Spread(f64),
    /// Uniform in `[0, d]` ("full jitter").
    Full,
    /// Uniform in `[d/2, d]` ("equal jitter").
    Equal,
}

/// A retry schedule. Attempt 0 waits about `base`, each further attempt doubles it, up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Self { base, cap, jitter }
    }

    /// The delay before retry `attempt` without jitter: `min(base · 2^attempt, cap)`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        // 2^31 is the largest power of two a u32 factor holds; any cap is reached long before.
        self.base.saturating_mul(1u32 << attempt.min(31)).min(self.cap)
    }

    /// The delay before retry `attempt`, randomised by the schedule's jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }

    /// As [`delay`](Self::delay) with the random draw given (`unit` in `[0, 1)`), for tests.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let d = self.nominal(attempt);
        let unit = unit.clamp(0.0, 1.0);
        match self.jitter {
            Jitter::None => d,
            Jitter::Spread(f) => d.mul_f64((1.0 - f + 2.0 * f * unit).max(0.0)),
            Jitter::Full => d.mul_f64(unit),
            Jitter::Equal => d / 2 + (d / 2).mul_f64(unit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_from_base_to_the_cap() {
        let b = Backoff::new(S(2), S(60), Jitter::None);
        let got: Vec<u64> = [0, 1, 2, 3, 4, 5, 10, 31, 32, u32::MAX].iter().map(|a| b.delay(*a).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
    }

    #[test]
    fn huge_base_saturates_instead_of_overflowing() {
        let b = Backoff::new(Duration::MAX, Duration::MAX, Jitter::None);
        assert_eq!(b.nominal(40), Duration::MAX);
    }

    #[test]
    fn spread_stays_within_its_fraction() {
        let b = Backoff::new(S(10), S(60), Jitter::Spread(0.1));
        assert_eq!(b.delay_with(0, 0.0), S(9));
        assert_eq!(b.delay_with(0, 0.5), S(10));
        assert_eq!(b.delay_with(0, 1.0), S(11));
        for attempt in 0..40 {
            let d = b.delay(attempt).as_secs_f64();
            let n = b.nominal(attempt).as_secs_f64();
            assert!(d >= n * 0.9 - 1e-9 && d <= n * 1.1 + 1e-9, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn full_and_equal_jitter_ranges() {
        let full = Backoff::new(S(8), S(60), Jitter::Full);
        assert_eq!(full.delay_with(0, 0.0), Duration::ZERO);
        assert_eq!(full.delay_with(0, 0.5), S(4));
        let equal = Backoff::new(S(8), S(60), Jitter::Equal);
        assert_eq!(equal.delay_with(0, 0.0), S(4));
        assert_eq!(equal.delay_with(0, 1.0), S(8));
        for _ in 0..100 {
            assert!(full.delay(1) <= S(16));
            assert!((S(8)..=S(16)).contains(&equal.delay(1)));
        }
    }
}
