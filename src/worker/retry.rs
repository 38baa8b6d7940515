//! The backoff policy: exponential with full jitter, bounded by an attempt count and a time
//! budget, plus the delay a handed-back message waits before it is received again.
//!
//! The schedule and its bounds come from `backon`. Its own jitter adds up to one more delay on top
//! of each step (so waits never shrink below the schedule); full jitter, which draws each wait
//! uniformly between zero and the step, spreads synchronized clients best, so it is applied here
//! on top of backon's un-jittered schedule.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
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

/// One delivery's in-process retries of a Marketplace call whose attempts may be cut: as
/// [`retry_without_cancelling`], with each attempt given up after `attempt_timeout`. For reads
/// (GetEntitlements, whose attempt may span pages and rate-limit waits), where a call given up
/// costs nothing but the call.
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
    retry_without_cancelling(
        policy,
        what,
        subject,
        || async { true },
        || {
            let one = attempt();
            async move {
                tokio::time::timeout(attempt_timeout, one)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Failure {
                            kind: FailureKind::Transient,
                            detail: format!("{what} timed out after {attempt_timeout:?}"),
                        })
                    })
            }
        },
    )
    .await
}

/// One delivery's in-process retries of a Marketplace call: `attempt` is tried with the backoff
/// of `policy` until it answers (`Ok`, whatever the answer means), a failure of kind `Disabled`
/// (never retried: the API will not change its mind soon), the attempts run out, or the budget is
/// spent. Also the attempts made. Shared by ResolveCustomer and GetEntitlements so both APIs
/// absorb throttling the same way.
///
/// **The budget only decides whether another attempt starts.** It runs from the first attempt's
/// start; the waits before a retry (the backoff, then `turn`: the rate limiter, which answers
/// `false` when no attempt may start any more, e.g. at shutdown) are cut when it is spent, and
/// then no attempt starts. An attempt that started runs to its answer (or the client's own attempt
/// timeout): AWS may already have processed a call the worker gives up on, and a ResolveCustomer
/// call spends a single-use token. So the loop ends within the budget plus one attempt, which is
/// what the configuration checks against the visibility timeout (`config::limits`).
pub async fn retry_without_cancelling<T, W, WFut, F, Fut>(
    policy: &BackoffPolicy,
    what: &'static str,
    subject: &(dyn std::fmt::Display + Sync),
    mut turn: W,
    mut attempt: F,
) -> (Result<T, Failure>, u32)
where
    W: FnMut() -> WFut,
    WFut: std::future::Future<Output = bool>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let spent_at = tokio::time::Instant::now() + policy.budget;
    let mut waits = policy.in_process().build();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let failure = match attempt().await {
            Ok(answer) => return (Ok(answer), attempts),
            Err(failure) if failure.kind == FailureKind::Disabled => {
                return (Err(failure), attempts)
            }
            Err(failure) => failure,
        };
        let Some(wait) = waits.next() else {
            return (Err(failure), attempts);
        };
        if tokio::time::Instant::now() >= spent_at {
            return (Err(spent(failure, policy)), attempts);
        }
        tracing::debug!(event_id = %subject, call = what, failure = failure.kind.as_str(),
            detail = %failure.detail, wait_ms = wait.as_millis() as u64, "retrying");
        let may_start = tokio::time::timeout_at(spent_at, async {
            tokio::time::sleep(wait).await;
            turn().await
        })
        .await;
        match may_start {
            Ok(true) => {}
            Ok(false) => return (Err(failure), attempts),
            Err(_) => return (Err(spent(failure, policy)), attempts),
        }
    }
}

/// The last failure, noting that the budget ended the retries.
fn spent(failure: Failure, policy: &BackoffPolicy) -> Failure {
    Failure {
        kind: failure.kind,
        detail: format!(
            "{}; retry budget of {:?} spent",
            failure.detail, policy.budget
        ),
    }
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

    /// Runs the retry loop with `attempt_takes` per attempt answering from `answers` (then the last
    /// one again) and `turn_takes` per wait for a turn: (result, attempts, time taken).
    async fn run_retries(
        budget: Duration,
        attempt_takes: Duration,
        turn_takes: Duration,
        answers: Vec<Result<u32, FailureKind>>,
    ) -> (Result<u32, Failure>, u32, Duration) {
        let mut p = policy();
        p.budget = budget;
        let started = tokio::time::Instant::now();
        let answers = std::sync::Mutex::new(answers.into_iter().collect::<Vec<_>>());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (result, attempts) = retry_without_cancelling(
            &p,
            "Test",
            &"subject",
            || async move {
                tokio::time::sleep(turn_takes).await;
                true
            },
            || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let answer = {
                    let a = answers.lock().unwrap();
                    a[n.min(a.len() - 1)]
                };
                async move {
                    tokio::time::sleep(attempt_takes).await;
                    answer.map_err(|kind| Failure {
                        kind,
                        detail: kind.as_str().into(),
                    })
                }
            },
        )
        .await;
        (result, attempts, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_in_flight_when_the_budget_runs_out_runs_to_its_answer() {
        let (result, attempts, took) = run_retries(
            Duration::from_secs(1),
            Duration::from_secs(25),
            Duration::ZERO,
            vec![Ok(7)],
        )
        .await;
        assert_eq!(result, Ok(7));
        assert_eq!(attempts, 1);
        assert_eq!(took, Duration::from_secs(25), "not cut at the budget");
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_once_the_budget_is_spent() {
        let transient = Err(FailureKind::Transient);
        let (result, attempts, took) = run_retries(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::ZERO,
            vec![transient],
        )
        .await;
        let failure = result.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Transient);
        assert!(failure.detail.contains("budget"), "{}", failure.detail);
        assert_eq!((attempts, took), (1, Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_turn_past_the_budget_is_cut_and_starts_no_attempt() {
        let (result, attempts, took) = run_retries(
            Duration::from_secs(1),
            Duration::from_millis(10),
            Duration::from_secs(60),
            vec![Err(FailureKind::Throttled)],
        )
        .await;
        assert_eq!(result.unwrap_err().kind, FailureKind::Throttled);
        assert_eq!((attempts, took), (1, Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_within_the_budget_until_an_answer_but_not_after_disabled() {
        let throttled = Err(FailureKind::Throttled);
        let (result, attempts, _) = run_retries(
            Duration::from_secs(20),
            Duration::from_millis(10),
            Duration::ZERO,
            vec![throttled, throttled, Ok(3)],
        )
        .await;
        assert_eq!((result, attempts), (Ok(3), 3));
        let (result, attempts, _) = run_retries(
            Duration::from_secs(20),
            Duration::from_millis(10),
            Duration::ZERO,
            vec![Err(FailureKind::Disabled), Ok(3)],
        )
        .await;
        assert_eq!(
            (result.unwrap_err().kind, attempts),
            (FailureKind::Disabled, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_refused_ends_the_retries() {
        let mut p = policy();
        p.budget = Duration::from_secs(20);
        let (result, attempts) = retry_without_cancelling(
            &p,
            "Test",
            &"subject",
            || async { false },
            || async {
                Err::<(), _>(Failure {
                    kind: FailureKind::Transient,
                    detail: "x".into(),
                })
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellable_attempt_is_cut_at_its_timeout() {
        let (result, attempts) = retry_within_budget(
            &BackoffPolicy {
                max_attempts: 1,
                ..policy()
            },
            Duration::from_secs(3),
            "Test",
            &"subject",
            || async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<u32, Failure>(1)
            },
        )
        .await;
        assert_eq!(result.unwrap_err().kind, FailureKind::Transient);
        assert_eq!(attempts, 1);
    }

    #[test]
    fn full_jitter_bounds() {
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..1000 {
            assert!(full_jitter(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }
}
