//! The backoff between failed runs, as a value: no clock, no I/O.
//!
//! It keeps the seed's sequence exactly: sleep the current backoff, then
//! multiply it by the factor and cap it (`5, 10, 20, 40, ... 300` with the
//! defaults). Jitter, when asked for, shortens each sleep by a random part
//! of it, so a fleet that failed together does not retry together.

use std::time::Duration;

/// The backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// First backoff.
    pub start: Duration,
    /// Multiplier per failure, ≥ 1.
    pub factor: f64,
    /// Cap, ≥ start.
    pub max: Duration,
    /// Fraction 0..=1 of each backoff that is randomised.
    pub jitter: f64,
}

/// Where the backoff sequence stands.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    current: Duration,
}

impl Backoff {
    /// Starts a sequence at the policy's first backoff.
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            current: policy.start,
        }
    }

    /// The backoff the next failure will sleep, before jitter.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Returns the sleep for this failure and advances the sequence.
    ///
    /// `random` is a number in `0..1`; with jitter `j` the sleep is uniform
    /// in `[(1 - j) × current, current]`.
    pub fn next_sleep(&mut self, random: f64) -> Duration {
        let sleep = self
            .current
            .mul_f64(1.0 - self.policy.jitter * random.clamp(0.0, 1.0));
        let grown = self.current.as_secs_f64() * self.policy.factor;
        self.current = Duration::try_from_secs_f64(grown)
            .map_or(self.policy.max, |next| next.min(self.policy.max));
        sleep
    }

    /// Goes back to the first backoff (after a success or a resume).
    pub fn reset(&mut self) {
        self.current = self.policy.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(start: u64, factor: f64, max: u64, jitter: f64) -> BackoffPolicy {
        BackoffPolicy {
            start: Duration::from_secs(start),
            factor,
            max: Duration::from_secs(max),
            jitter,
        }
    }

    fn sequence(backoff: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| backoff.next_sleep(0.5).as_secs()).collect()
    }

    #[test]
    fn defaults_give_the_seed_sequence_and_reach_the_cap() {
        let mut backoff = Backoff::new(policy(5, 2.0, 300, 0.0));
        assert_eq!(
            sequence(&mut backoff, 9),
            [5, 10, 20, 40, 80, 160, 300, 300, 300]
        );
    }

    #[test]
    fn reset_goes_back_to_start() {
        let mut backoff = Backoff::new(policy(5, 2.0, 300, 0.0));
        sequence(&mut backoff, 3);
        backoff.reset();
        assert_eq!(backoff.current(), Duration::from_secs(5));
    }

    #[test]
    fn fractional_factor() {
        let mut backoff = Backoff::new(policy(4, 1.5, 100, 0.0));
        assert_eq!(sequence(&mut backoff, 4), [4, 6, 9, 13]);
    }

    #[test]
    fn factor_one_is_constant() {
        let mut backoff = Backoff::new(policy(7, 1.0, 7, 0.0));
        assert_eq!(sequence(&mut backoff, 3), [7, 7, 7]);
    }

    #[test]
    fn huge_factor_saturates_at_the_cap() {
        let mut backoff = Backoff::new(policy(1, 1e300, 60, 0.0));
        assert_eq!(sequence(&mut backoff, 3), [1, 60, 60]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut backoff = Backoff::new(policy(10, 1.0, 10, 0.3));
        for _ in 0..1000 {
            let sleep = backoff.next_sleep(rng.f64());
            assert!(sleep <= Duration::from_secs(10));
            assert!(sleep >= Duration::from_secs(7), "{sleep:?}");
        }
    }
}
