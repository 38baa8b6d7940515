//! The backoff policy: exponential with full jitter, bounded by an attempt count and a time
//! budget, plus the delay a handed-back message waits before it is received again.
//!
//! The schedule and its bounds come from `backon`. Its own jitter adds up to one more delay on top
//! of each step (so waits never shrink below the schedule); full jitter, which draws each wait
//! uniformly between zero and the step, spreads synchronized clients best, so it is applied here
//! on top of backon's un-jittered schedule.

use std::time::Duration;

use std::sync::atomic::{AtomicU32, Ordering};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use rand::Rng;

use crate::aws::metering::{Failure, FailureKind};
use crate::config::{PublishSettings, ResolveSettings};

#[derive(Debug, Clone)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f32,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Total waiting allowed inside the process per delivery.
    pub budget: Duration,
    /// Longest hand-back delay.
    pub handback_max: Duration,
}

impl BackoffPolicy {
    pub fn from_settings(r: &ResolveSettings) -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(r.initial_backoff_ms),
            max: Duration::from_millis(r.max_backoff_ms),
            factor: r.backoff_factor,
            max_attempts: r.max_attempts,
            budget: r.budget(),
            handback_max: Duration::from_secs(r.handback_max_secs),
        }
    }

    /// The waits between attempts of one delivery, for `backon`'s `Retryable`.
    pub fn in_process(&self) -> FullJitter<ExponentialBuilder> {
        FullJitter(
            ExponentialBuilder::default()
                .with_min_delay(self.initial)
                .with_max_delay(self.max)
                .with_factor(self.factor)
                .with_max_times(self.max_attempts.saturating_sub(1) as usize)
                // backon checks the budget against the un-jittered steps; full-jitter waits are
                // never longer, so the real waiting stays inside it too.
                .with_total_delay(Some(self.budget)),
        )
    }

    /// How long a handed-back message stays invisible: the exponential step for the number of
    /// tries it has had so far (earlier receives and this delivery's attempts), full jitter,
    /// at least a second (SQS visibility has a one-second grain).
    pub fn handback_delay(&self, receive_count: u32, attempts: u32) -> Duration {
        self.handback_delay_drawn(receive_count, attempts, rand::rng().random_range(0.0..=1.0))
    }

    /// [`handback_delay`](Self::handback_delay) with the jitter drawn by the caller (`draw` in
    /// `[0, 1]`, the fraction of the step to wait), so a decision that uses it stays a pure function.
    pub fn handback_delay_drawn(&self, receive_count: u32, attempts: u32, draw: f64) -> Duration {
        let step = receive_count
            .saturating_sub(1)
            .saturating_add(attempts)
            .min(64) as usize;
        let ceiling = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.handback_max)
            .with_factor(self.factor)
            .without_max_times()
            .build()
            .nth(step)
            .unwrap_or(self.handback_max);
        ceiling.mul_f64(draw.clamp(0.0, 1.0)).clamp(
            Duration::from_secs(1),
            self.handback_max.max(Duration::from_secs(1)),
        )
    }
}

/// How a resolved event whose publish keeps failing is held: retried with exponential backoff from
/// one second, at most `max_delay` apart, for at most `hold` since the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPolicy {
    pub hold: Duration,
    pub max_delay: Duration,
}

impl HoldPolicy {
    pub fn from_settings(p: &PublishSettings) -> Self {
        HoldPolicy {
            hold: Duration::from_secs(p.hold_secs),
            max_delay: Duration::from_secs(p.hold_max_delay_secs),
        }
    }

    /// The wait before publish try number `failures + 1`, `draw` in `[0, 1]` being the jitter.
    pub fn retry_delay(&self, failures: u32, draw: f64) -> Duration {
        let ceiling = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(self.max_delay.max(Duration::from_secs(1)))
            .without_max_times()
            .build()
            .nth(failures.saturating_sub(1).min(64) as usize)
            .unwrap_or(self.max_delay);
        // Never less than 100 ms, so a broken topic is not hammered by a zero draw.
        ceiling
            .mul_f64(draw.clamp(0.0, 1.0))
            .max(Duration::from_millis(100))
    }
}

/// One delivery's in-process retries of a Marketplace call: `attempt` is tried with the backoff of
/// `policy` until it answers (`Ok`, whatever the answer means), a failure of kind `Disabled` (never
/// retried: the API will not change its mind soon), the attempts run out, or the budget plus one
/// attempt's timeout is spent. Also the attempts made. Shared by ResolveCustomer and
/// GetEntitlements so both APIs absorb throttling the same way.
pub async fn retry_within_budget<T, F, Fut>(
    policy: &BackoffPolicy,
    attempt_timeout: Duration,
    what: &'static str,
    subject: &(dyn std::fmt::Display + Sync),
    mut attempt: F,
) -> (Result<T, Failure>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let attempts = AtomicU32::new(0);
    let one_attempt = || {
        attempts.fetch_add(1, Ordering::Relaxed);
        attempt()
    };
    let retrying = one_attempt
        .retry(policy.in_process())
        .when(|f: &Failure| f.kind != FailureKind::Disabled)
        .notify(|f: &Failure, wait| {
            tracing::debug!(event_id = %subject, call = what, failure = f.kind.as_str(),
                detail = %f.detail, wait_ms = wait.as_millis() as u64, "retrying");
        });
    // The whole retry loop, attempts included, fits in budget + one attempt, which is what the
    // configuration checks against the visibility timeout.
    let deadline = policy.budget + attempt_timeout;
    let result = match tokio::time::timeout(deadline, retrying).await {
        Ok(result) => result,
        Err(_) => Err(Failure {
            kind: FailureKind::Transient,
            detail: format!("retry budget of {deadline:?} spent"),
        }),
    };
    (result, attempts.load(Ordering::Relaxed))
}

/// Draws uniformly in `[0, ceiling]`.
pub fn full_jitter(ceiling: Duration) -> Duration {
    if ceiling.is_zero() {
        return ceiling;
    }
    let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// A backoff builder whose waits are full-jittered versions of the inner builder's.
#[derive(Debug, Clone, Copy)]
pub struct FullJitter<B>(pub B);

impl<B: BackoffBuilder> BackoffBuilder for FullJitter<B> {
    type Backoff = FullJitterBackoff<B::Backoff>;

    fn build(self) -> Self::Backoff {
        FullJitterBackoff(self.0.build())
    }
}

#[derive(Debug)]
pub struct FullJitterBackoff<I>(I);

impl<I: Iterator<Item = Duration> + Send + Sync + Unpin> Iterator for FullJitterBackoff<I> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.0.next().map(full_jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            factor: 2.0,
            max_attempts: 6,
            budget: Duration::from_secs(20),
            handback_max: Duration::from_secs(300),
        }
    }

    #[test]
    fn waits_stay_under_the_exponential_steps() {
        let ceilings = [100u64, 200, 400, 800, 1_000];
        for _ in 0..200 {
            let waits: Vec<Duration> = policy().in_process().build().collect();
            // max_attempts 6 → at most 5 waits between them
            assert_eq!(waits.len(), 5);
            for (wait, ceiling) in waits.iter().zip(ceilings) {
                assert!(
                    *wait <= Duration::from_millis(ceiling),
                    "{wait:?} > {ceiling} ms"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let first: Vec<Duration> = (0..200)
            .map(|_| policy().in_process().build().next().unwrap())
            .collect();
        let min = first.iter().min().unwrap();
        let max = first.iter().max().unwrap();
        assert!(*min < Duration::from_millis(30), "min {min:?}");
        assert!(*max > Duration::from_millis(70), "max {max:?}");
    }

    #[test]
    fn budget_cuts_the_schedule_short() {
        let mut p = policy();
        p.max_attempts = 100;
        p.budget = Duration::from_millis(1_550);
        let waits: Vec<Duration> = p.in_process().build().collect();
        // un-jittered 100 + 200 + 400 + 800 = 1500 fits in 1550; the next 1000 would not
        assert_eq!(waits.len(), 4);
        assert!(waits.iter().sum::<Duration>() <= p.budget);
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let mut p = policy();
        p.max_attempts = 1;
        assert_eq!(p.in_process().build().count(), 0);
    }

    #[test]
    fn handback_delay_grows_with_tries_and_is_bounded() {
        let p = policy();
        for _ in 0..200 {
            let d = p.handback_delay(1, 1);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(1),
                "{d:?}"
            );
            let d = p.handback_delay(50, 6);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(300),
                "{d:?}"
            );
        }
        let late: Vec<Duration> = (0..200).map(|_| p.handback_delay(12, 6)).collect();
        assert!(
            late.iter().any(|d| *d > Duration::from_secs(60)),
            "late hand-backs spread wide"
        );
    }

    #[test]
    fn full_jitter_bounds() {
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..1000 {
            assert!(full_jitter(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }
}
