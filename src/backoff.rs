//! Capped exponential backoff with jitter, for reconnects and retried writes.
//!
//! Jitter matters here: several workers that lose Redis or MySQL at the same moment must not
//! come back in lockstep and hammer the server together.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: `base * 2^n`, capped at `max`, then scaled by a random
    /// factor in [0.5, 1.0) so it never drops below half the nominal delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        nominal.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// How many delays have been handed out since the last success.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Called after a success: the next failure starts again from `base`.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] < Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] < Duration::from_millis(800));
        for d in &delays[5..] {
            assert!(
                *d >= Duration::from_secs(1) && *d < Duration::from_secs(2),
                "{d:?}"
            );
        }
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(100));
    }
}
