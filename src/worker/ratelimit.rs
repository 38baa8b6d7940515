//! One adaptive rate limit for ResolveCustomer per process, shared by every in-flight message, so
//! that concurrency never turns into a throttling storm.
//!
//! AIMD with a slow start, as TCP does it: until the API first throttles, every answered call adds
//! one call per second (the rate doubles each second it is used in full), so an unthrottled API is
//! not held back by a cautious starting rate; from the first throttle on, each throttle cuts the
//! rate by a factor (at most once per cool-down, since the throttles of calls already sent all
//! arrive together) and each answered call adds a little, so the rate settles just under the quota
//! the API grants this seller and follows it when it changes. Calls are spaced evenly at the
//! current rate through a fair (FIFO) lock, so a rate change applies to the very next call rather
//! than to a queue of pre-assigned slots.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimitSettings;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    pub initial: f64,
    pub min: f64,
    /// Hard ceiling; `None` lets the rate grow until the API pushes back.
    pub max: Option<f64>,
    /// Multiplier applied on a throttle.
    pub decrease: f64,
    /// Calls per second added per second of successful calls at the current rate.
    pub increase: f64,
    /// Minimum time between two decreases.
    pub cooldown: Duration,
}

impl RatePolicy {
    pub fn from_settings(s: &RateLimitSettings) -> Self {
        RatePolicy {
            initial: s.initial_per_sec,
            min: s.min_per_sec,
            max: (s.max_per_sec > 0.0).then_some(s.max_per_sec),
            decrease: s.decrease_factor,
            increase: s.increase_per_sec,
            cooldown: Duration::from_millis(s.cooldown_ms),
        }
    }
}

#[derive(Debug)]
struct State {
    rate: f64,
    /// Earliest time the next call may go.
    next: Instant,
    last_decrease: Option<Instant>,
    /// Slow start: no throttle seen yet.
    probing: bool,
}

#[derive(Debug)]
pub struct AdaptiveRateLimiter {
    policy: RatePolicy,
    state: Mutex<State>,
    /// Callers wait their turn here, first come first served.
    turn: tokio::sync::Mutex<()>,
}

impl AdaptiveRateLimiter {
    pub fn new(policy: RatePolicy) -> Self {
        let rate = clamp(policy.initial, &policy);
        AdaptiveRateLimiter {
            policy,
            state: Mutex::new(State {
                rate,
                next: Instant::now(),
                last_decrease: None,
                probing: true,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The current rate, calls per second.
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }

    /// Waits until this caller may make one call.
    pub async fn acquire(&self) {
        let _turn = self.turn.lock().await;
        loop {
            let wait_until = {
                let mut s = self.lock();
                let now = Instant::now();
                if s.next <= now {
                    // An idle limiter does not bank credit: a burst after a pause is still spaced.
                    s.next = now + interval(s.rate);
                    return;
                }
                s.next
            };
            // The rate may drop while waiting; the loop re-reads the slot after waking.
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// The API throttled a call: slow down (once per cool-down).
    pub fn throttled(&self) {
        let mut s = self.lock();
        // Slow start doubles each second, so by the first throttle it may be up to twice the
        // quota: that first cut halves it, whatever the configured factor.
        let factor = if s.probing {
            self.policy.decrease.min(0.5)
        } else {
            self.policy.decrease
        };
        s.probing = false;
        let now = Instant::now();
        if s.last_decrease
            .is_some_and(|t| now.duration_since(t) < self.policy.cooldown)
        {
            return;
        }
        let old_interval = interval(s.rate);
        s.rate = clamp(s.rate * factor, &self.policy);
        s.last_decrease = Some(now);
        // Push the next slot out to the new spacing so the cut takes effect immediately.
        let pushed = s.next.max(now) + interval(s.rate).saturating_sub(old_interval);
        s.next = pushed;
    }

    /// A call got an answer that was not a throttle: speed up (fast until the first throttle,
    /// a little after it).
    pub fn succeeded(&self) {
        let mut s = self.lock();
        let step = if s.probing {
            1.0
        } else {
            // `increase` per second at the current rate means `increase / rate` per call.
            self.policy.increase / s.rate
        };
        s.rate = clamp(s.rate + step, &self.policy);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn clamp(rate: f64, p: &RatePolicy) -> f64 {
    let upper = p.max.unwrap_or(f64::MAX);
    rate.max(p.min).min(upper)
}

fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn policy() -> RatePolicy {
        RatePolicy {
            initial: 10.0,
            min: 0.5,
            max: None,
            decrease: 0.5,
            increase: 1.0,
            cooldown: Duration::from_secs(1),
        }
    }

    /// Calls granted in `window` by `callers` tasks hammering the limiter.
    async fn granted_in(limiter: Arc<AdaptiveRateLimiter>, window: Duration) -> usize {
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (l, c) = (limiter.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    l.acquire().await;
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(window).await;
        for t in tasks {
            t.abort();
        }
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_rate() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let n = granted_in(limiter, Duration::from_secs(10)).await;
        // 10 calls/s for 10 s, whatever the number of callers.
        assert!((99..=101).contains(&n), "{n}");
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_halves_the_rate_once_per_cooldown() {
        let limiter = AdaptiveRateLimiter::new(policy());
        limiter.throttled();
        limiter.throttled();
        limiter.throttled();
        assert_eq!(limiter.rate(), 5.0);
        tokio::time::advance(Duration::from_millis(1_001)).await;
        limiter.throttled();
        assert_eq!(limiter.rate(), 2.5);
        for _ in 0..100 {
            limiter.throttled();
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert_eq!(limiter.rate(), 0.5, "never below the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_doubles_until_the_first_throttle() {
        let limiter = AdaptiveRateLimiter::new(policy());
        // One second of answered calls at 10/s doubles the rate...
        for _ in 0..10 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 20.0);
        for _ in 0..20 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 40.0);
        // ...until the API pushes back.
        limiter.throttled();
        assert_eq!(limiter.rate(), 20.0);
        for _ in 0..20 {
            limiter.succeeded();
        }
        assert!((limiter.rate() - 21.0).abs() < 0.05, "{}", limiter.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_throttle_successes_raise_the_rate_slowly_up_to_the_ceiling() {
        let limiter = AdaptiveRateLimiter::new(RatePolicy {
            max: Some(12.0),
            ..policy()
        });
        limiter.throttled(); // 5/s, slow start over
                             // One second of successes at 5/s adds about one call per second.
        for _ in 0..5 {
            limiter.succeeded();
        }
        assert!((limiter.rate() - 6.0).abs() < 0.1, "{}", limiter.rate());
        for _ in 0..1_000 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 12.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_applies_to_the_waiting_callers() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        limiter.throttled(); // 5/s
        limiter.throttled(); // within cool-down: still 5/s
        let n = granted_in(limiter, Duration::from_secs(4)).await;
        assert!((19..=21).contains(&n), "{n}");
    }
}
