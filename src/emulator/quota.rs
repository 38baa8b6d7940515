//! The service-wide call quota: a token bucket refilled continuously.
//!
//! The bucket keeps its level as a `Duration` of credit rather than a float count of tokens: one
//! call costs `1 / quota` seconds and the bucket holds `burst` calls' worth. Integer nanoseconds make
//! the arithmetic exact, so "five calls, then one more 200 ms later" behaves the same on every run.
//!
//! The clock is passed in (`tokio::time::Instant`) so tests can drive it with paused time.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Credit one call consumes.
    cost: Duration,
    /// Credit a full bucket holds: `burst * cost`.
    capacity: Duration,
    credit: Duration,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket for `per_second` calls, or `None` when that means "unlimited" (zero, negative
    /// or not a finite number; the control API rejects the last two, but the in-process API does not).
    pub fn new(per_second: f64, now: Instant) -> Option<Self> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return None;
        }
        // A quota so small that one call costs more than `Duration` can hold saturates: the full
        // initial bucket still lets the first call through, then nothing refills in practice.
        let cost = Duration::try_from_secs_f64(per_second.recip()).unwrap_or(Duration::MAX);
        // Float to int `as` saturates, which is what an enormous quota wants.
        let burst = (per_second.ceil() as u64).max(1);
        let capacity = cost.saturating_mul(u32::try_from(burst).unwrap_or(u32::MAX));
        Some(Self {
            cost,
            capacity,
            credit: capacity,
            last_refill: now,
        })
    }

    /// Take one call's worth of credit if the bucket has it.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last_refill);
        self.credit = self.credit.saturating_add(elapsed).min(self.capacity);
        self.last_refill = now;
        if self.credit >= self.cost {
            self.credit -= self.cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn admitted(bucket: &mut TokenBucket, calls: usize) -> usize {
        (0..calls)
            .filter(|_| bucket.try_acquire(Instant::now()))
            .count()
    }

    #[test]
    fn zero_negative_and_non_finite_mean_unlimited() {
        let now = Instant::now();
        for quota in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(TokenBucket::new(quota, now).is_none(), "quota {quota}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_equals_quota_then_refills_continuously() {
        let mut bucket = TokenBucket::new(5.0, Instant::now()).expect("limited");
        assert_eq!(admitted(&mut bucket, 20), 5);

        // One call costs 200 ms of credit.
        advance(Duration::from_millis(199)).await;
        assert_eq!(admitted(&mut bucket, 1), 0);
        advance(Duration::from_millis(1)).await;
        assert_eq!(admitted(&mut bucket, 2), 1);

        // Partial credit carries over: 100 ms + 100 ms is one call.
        advance(Duration::from_millis(100)).await;
        assert_eq!(admitted(&mut bucket, 1), 0);
        advance(Duration::from_millis(100)).await;
        assert_eq!(admitted(&mut bucket, 1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refill_stops_at_the_burst() {
        let mut bucket = TokenBucket::new(5.0, Instant::now()).expect("limited");
        assert_eq!(admitted(&mut bucket, 5), 5);
        advance(Duration::from_secs(60)).await;
        assert_eq!(admitted(&mut bucket, 20), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_quota_rounds_the_burst_up() {
        // 2.5/s: burst 3, one call per 400 ms.
        let mut bucket = TokenBucket::new(2.5, Instant::now()).expect("limited");
        assert_eq!(admitted(&mut bucket, 10), 3);
        advance(Duration::from_millis(400)).await;
        assert_eq!(admitted(&mut bucket, 10), 1);

        // Below one call a second the burst is still one call.
        let mut slow = TokenBucket::new(0.5, Instant::now()).expect("limited");
        assert_eq!(admitted(&mut slow, 3), 1);
        advance(Duration::from_millis(1999)).await;
        assert_eq!(admitted(&mut slow, 1), 0);
        advance(Duration::from_millis(1)).await;
        assert_eq!(admitted(&mut slow, 1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn extreme_quotas_do_not_overflow() {
        let mut tiny = TokenBucket::new(1e-300, Instant::now()).expect("limited");
        assert_eq!(admitted(&mut tiny, 3), 1);
        advance(Duration::from_secs(86_400)).await;
        assert_eq!(admitted(&mut tiny, 1), 0);

        let mut huge = TokenBucket::new(1e300, Instant::now()).expect("limited");
        assert_eq!(admitted(&mut huge, 1000), 1000);
    }
}
