//! Retry math (pure): exponential backoff between attempts and the queue lifetime.

use std::time::Duration;

/// Delay before the next attempt after `attempts` failed attempts (1 = the first failure):
/// `min`, `2*min`, `4*min`, ... capped at `max`.
pub fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let shift = attempts.saturating_sub(1).min(30);
    let d = min.checked_mul(1u32 << shift).unwrap_or(max);
    d.min(max).max(min)
}

/// Whether a message received at `received_at` (unix seconds) has outlived `lifetime` at `now`.
pub fn expired(received_at: i64, now: i64, lifetime: Duration) -> bool {
    now.saturating_sub(received_at) >= lifetime.as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let min = Duration::from_secs(300);
        let max = Duration::from_secs(4000);
        let got: Vec<u64> = (1..=7).map(|a| backoff(a, min, max).as_secs()).collect();
        assert_eq!(got, [300, 600, 1200, 2400, 4000, 4000, 4000]);
        assert_eq!(backoff(0, min, max).as_secs(), 300);
        assert_eq!(backoff(u32::MAX, min, max).as_secs(), 4000);
    }

    #[test]
    fn lifetime() {
        let five_days = Duration::from_secs(5 * 86_400);
        assert!(!expired(1000, 1000, five_days));
        assert!(!expired(1000, 1000 + 5 * 86_400 - 1, five_days));
        assert!(expired(1000, 1000 + 5 * 86_400, five_days));
        assert!(
            !expired(2000, 1000, five_days),
            "clock going backwards never expires"
        );
    }
}
