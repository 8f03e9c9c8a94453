//! Capped exponential backoff with full jitter, so that many processes retrying against a
//! recovering service (ClickHouse, a webhook) do not hit it in lockstep. Pure: the caller sleeps.

use std::time::Duration;

/// Delays between retries: `initial`, doubling up to `max`, each drawn uniformly from the upper
/// half of the current step (never zero, never above `max`).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    state: u64,
}

impl Backoff {
    /// A backoff seeded with `seed` (any value; the clock is a fine seed).
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            state: seed | 1,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let step = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let fraction = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(fraction)
    }

    /// Retries made since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn random(&mut self) -> u64 {
        // SplitMix64: enough spread for jitter, no dependency.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_then_stays_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 7);
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn different_seeds_do_not_retry_in_lockstep() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 2);
        let same = (0..20).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 3);
    }

    proptest! {
        #[test]
        fn every_delay_is_within_half_of_its_step_and_the_cap(
            initial_ms in 1u64..5_000, max_ms in 1u64..60_000, seed: u64, n in 1usize..80
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = Duration::from_millis(max_ms).max(initial);
            let mut b = Backoff::new(initial, max, seed);
            for _ in 0..n {
                let d = b.next_delay();
                prop_assert!(d <= max);
                prop_assert!(d >= initial / 2);
            }
        }
    }
}
