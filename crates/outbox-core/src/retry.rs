//! Backoff, the one formula every retry and idle wait uses, and the relay's
//! retry policy: that backoff with full jitter, bounded by attempts and by
//! the caller's deadline.

use std::time::Duration;

/// Exponential backoff: `initial * 2^(attempt-1)` before attempt `attempt`
/// (1-based), at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first attempt.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based; 0 counts as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// How failed entries are retried within one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retry).
    pub max_retries: u32,
    /// Backoff cap of the first retry; doubles each retry.
    pub base_delay: Duration,
    /// Largest backoff cap.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 retries, 50 ms doubling up to 5 s.
    fn default() -> Self {
        Self {
            max_retries: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The backoff cap before retry number `retry` (1-based):
    /// `min(max_delay, base_delay * 2^(retry-1))`.
    pub fn cap(&self, retry: u32) -> Duration {
        Backoff {
            initial: self.base_delay,
            max: self.max_delay,
        }
        .delay(retry)
    }

    /// A "full jitter" delay before retry number `retry`: uniform in
    /// `0..=cap(retry)`, drawn from `unit` in `0.0..=1.0`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        self.cap(retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_double_up_to_the_maximum() {
        let p = RetryPolicy::default();
        assert_eq!(p.cap(1), Duration::from_millis(50));
        assert_eq!(p.cap(2), Duration::from_millis(100));
        assert_eq!(p.cap(4), Duration::from_millis(400));
        assert_eq!(p.cap(30), Duration::from_secs(5));
        assert_eq!(p.cap(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(100));
        assert_eq!(p.delay(3, 7.0), Duration::from_millis(200));
    }
}
