//! Exponential backoff with jitter: pure, no I/O, no clock.
//!
//! Delay n is drawn uniformly from `[d/2, d]` with `d = min(cap, initial * 2^n)`: the jitter
//! spreads reconnects of many gateways (no reconnect storm), the lower bound keeps a dead
//! server from being hammered, and the cap bounds the silence once the server is back.

use std::time::Duration;

use rand::Rng as _;

/// Backoff state for one connection or process.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and never exceeding `cap`.
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            initial: initial.max(Duration::from_millis(1)),
            cap: cap.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, with `jitter` in `[0, 1]` choosing within `[ceiling/2, ceiling]`.
    pub fn next_with(&mut self, jitter: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The next delay, with random jitter.
    pub fn next_delay(&mut self) -> Duration {
        let jitter = rand::rng().random::<f64>();
        self.next_with(jitter)
    }

    /// Attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Call after a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|_| b.next_with(1.0).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_between_half_and_full_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(b.next_with(0.0), Duration::from_millis(50));
        for _ in 0..1000 {
            let d = b.next_delay();
            assert!(d >= Duration::from_secs(5) / 2 || b.attempts() < 8, "{d:?}");
            assert!(d <= Duration::from_secs(10));
        }
    }

    #[test]
    fn reset_starts_over_and_huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..100 {
            b.next_with(1.0);
        }
        assert_eq!(b.next_with(1.0), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
    }
}
