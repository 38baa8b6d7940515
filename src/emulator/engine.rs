//! What one `ResolveCustomer` call answers, independent of HTTP: the service-wide checks, the
//! per-token countdowns, and the counters behind `/emulator/stats`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::quota::TokenBucket;
use super::settings::EmulatorSettings;
use super::token::{TestToken, TokenError};

/// Counts of calls by outcome since start or the last reset. Every call lands in exactly one of the
/// outcome counters, so they add up to `calls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmulatorStats {
    pub calls: u64,
    pub resolved: u64,
    /// Both quota and per-token throttling.
    pub throttled: u64,
    pub invalid: u64,
    pub expired: u64,
    /// Both random errors and per-token failures.
    pub internal_errors: u64,
    pub disabled: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Resolved(TestToken),
    Disabled,
    QuotaExceeded,
    TokenThrottled,
    RandomFailure,
    TokenFailure,
    Invalid(TokenError),
    Expired,
}

impl Outcome {
    /// Names the outcome in log lines.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Resolved(_) => "resolved",
            Self::Disabled => "disabled",
            Self::QuotaExceeded => "quota-exceeded",
            Self::TokenThrottled => "token-throttled",
            Self::RandomFailure => "random-failure",
            Self::TokenFailure => "token-failure",
            Self::Invalid(_) => "invalid",
            Self::Expired => "expired",
        }
    }
}

/// The time and chance a call is judged with, passed in so tests can fix them.
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    pub now: Instant,
    pub unix_now: i64,
    /// Uniform in `[0, 1)`; the call fails at random when it is below the error rate.
    pub roll: f64,
}

#[derive(Debug)]
pub struct Engine {
    settings: EmulatorSettings,
    bucket: Option<TokenBucket>,
    stats: EmulatorStats,
    /// For tokens that ask for throttles or failures: how many calls reached the per-token stage.
    /// Tokens without either are never stored, so plain traffic does not grow this map.
    seen: HashMap<String, u64>,
}

impl Engine {
    pub fn new(settings: EmulatorSettings, now: Instant) -> Self {
        let bucket = settings.quota.and_then(|q| TokenBucket::new(q, now));
        Self {
            settings,
            bucket,
            stats: EmulatorStats::default(),
            seen: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &EmulatorSettings {
        &self.settings
    }

    /// Replaces the settings. The quota bucket starts full again only if the quota changed, so
    /// toggling another knob mid-test does not hand out a fresh burst.
    pub fn set_settings(&mut self, settings: EmulatorSettings, now: Instant) {
        if settings.quota != self.settings.quota {
            self.bucket = settings.quota.and_then(|q| TokenBucket::new(q, now));
        }
        self.settings = settings;
    }

    pub fn stats(&self) -> EmulatorStats {
        self.stats
    }

    /// Zeroes the counters and the per-token countdowns and refills the quota bucket, so a test
    /// starts from the same state as a freshly started emulator.
    pub fn reset(&mut self, now: Instant) {
        self.stats = EmulatorStats::default();
        self.seen.clear();
        self.bucket = self.settings.quota.and_then(|q| TokenBucket::new(q, now));
    }

    /// Judges one call and counts it. Service-wide checks come first, so a call they reject does
    /// not use up any of the token's scripted throttles or failures.
    pub fn call(&mut self, token: &str, ctx: CallContext) -> Outcome {
        let outcome = self.judge(token, ctx);
        let stats = &mut self.stats;
        stats.calls += 1;
        let counter = match outcome {
            Outcome::Resolved(_) => &mut stats.resolved,
            Outcome::Disabled => &mut stats.disabled,
            Outcome::QuotaExceeded | Outcome::TokenThrottled => &mut stats.throttled,
            Outcome::RandomFailure | Outcome::TokenFailure => &mut stats.internal_errors,
            Outcome::Invalid(_) => &mut stats.invalid,
            Outcome::Expired => &mut stats.expired,
        };
        *counter += 1;
        outcome
    }

    fn judge(&mut self, token: &str, ctx: CallContext) -> Outcome {
        if self.settings.disabled {
            return Outcome::Disabled;
        }
        if let Some(bucket) = &mut self.bucket {
            if !bucket.try_acquire(ctx.now) {
                return Outcome::QuotaExceeded;
            }
        }
        if ctx.roll < self.settings.effective_error_rate() {
            return Outcome::RandomFailure;
        }
        let decoded = match TestToken::decode(token) {
            Ok(decoded) => decoded,
            Err(error) => return Outcome::Invalid(error),
        };
        if decoded.is_expired(ctx.unix_now) {
            return Outcome::Expired;
        }
        let throttles = u64::from(decoded.throttle.unwrap_or(0));
        let failures = u64::from(decoded.fail.unwrap_or(0));
        if throttles + failures == 0 {
            return Outcome::Resolved(decoded);
        }
        let seen = self.seen.entry(token.to_owned()).or_insert(0);
        let step = *seen;
        if step >= throttles + failures {
            return Outcome::Resolved(decoded);
        }
        *seen += 1;
        if step < throttles {
            Outcome::TokenThrottled
        } else {
            Outcome::TokenFailure
        }
    }
}

/// The engine as the server and [`RunningEmulator`](super::RunningEmulator) share it.
#[derive(Debug, Clone)]
pub struct SharedEngine(Arc<Mutex<Engine>>);

impl SharedEngine {
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(Mutex::new(engine)))
    }

    /// Runs `f` with the engine locked. Never hold the lock across an await.
    pub fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A panic while locked cannot leave the engine half-updated in a way that matters for a
        // test double, so keep serving rather than poisoning every later call.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::advance;

    const NOW: i64 = 1_700_000_000;

    fn ctx() -> CallContext {
        CallContext {
            now: Instant::now(),
            unix_now: NOW,
            roll: 0.5,
        }
    }

    fn engine(settings: EmulatorSettings) -> Engine {
        Engine::new(settings, Instant::now())
    }

    fn labels(engine: &mut Engine, token: &str, calls: usize) -> Vec<&'static str> {
        (0..calls)
            .map(|_| engine.call(token, ctx()).label())
            .collect()
    }

    #[test]
    fn resolves_a_good_token() {
        let token = TestToken::new("123456789012", "prod-abc").customer("c");
        let mut engine = engine(EmulatorSettings::default());
        assert_eq!(
            engine.call(&token.encode(), ctx()),
            Outcome::Resolved(token)
        );
        assert_eq!(
            engine.stats(),
            EmulatorStats {
                calls: 1,
                resolved: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn invalid_and_expired_tokens() {
        let mut engine = engine(EmulatorSettings::default());
        assert_eq!(
            engine.call("garbage", ctx()),
            Outcome::Invalid(TokenError::Prefix)
        );
        let expired = TestToken::new("1", "p").expires_at(NOW - 1).encode();
        assert_eq!(engine.call(&expired, ctx()), Outcome::Expired);
        let fresh = TestToken::new("1", "p").expires_at(NOW + 60).encode();
        assert_eq!(engine.call(&fresh, ctx()).label(), "resolved");
        let stats = engine.stats();
        assert_eq!((stats.calls, stats.invalid, stats.expired), (3, 1, 1));
    }

    #[test]
    fn throttles_are_used_before_failures_then_the_token_resolves() {
        let mut engine = engine(EmulatorSettings::default());
        let token = TestToken::new("1", "p").throttle(2).fail(1).encode();
        assert_eq!(
            labels(&mut engine, &token, 5),
            [
                "token-throttled",
                "token-throttled",
                "token-failure",
                "resolved",
                "resolved"
            ]
        );
        let stats = engine.stats();
        assert_eq!(
            (
                stats.calls,
                stats.throttled,
                stats.internal_errors,
                stats.resolved
            ),
            (5, 2, 1, 2)
        );
    }

    #[test]
    fn countdowns_are_per_token_and_reset_clears_them() {
        let mut engine = engine(EmulatorSettings::default());
        let a = TestToken::new("1", "p").fail(1).encode();
        let b = TestToken::new("2", "p").fail(1).encode();
        assert_eq!(labels(&mut engine, &a, 2), ["token-failure", "resolved"]);
        assert_eq!(labels(&mut engine, &b, 1), ["token-failure"]);
        engine.reset(Instant::now());
        assert_eq!(engine.stats(), EmulatorStats::default());
        assert_eq!(labels(&mut engine, &a, 1), ["token-failure"]);
    }

    #[test]
    fn expired_and_invalid_calls_do_not_use_up_the_script() {
        let mut engine = engine(EmulatorSettings::default());
        let token = TestToken::new("1", "p")
            .expires_at(NOW)
            .throttle(1)
            .encode();
        assert_eq!(labels(&mut engine, &token, 2), ["expired", "expired"]);
        assert!(engine.seen.is_empty());
    }

    #[test]
    fn disabled_wins_over_everything() {
        let mut engine = engine(EmulatorSettings {
            disabled: true,
            error_rate: 1.0,
            quota: Some(1.0),
            ..Default::default()
        });
        assert_eq!(labels(&mut engine, "garbage", 3), ["disabled"; 3]);
        assert_eq!(engine.stats().disabled, 3);
    }

    #[test]
    fn random_errors_follow_the_roll_and_spare_the_script() {
        let mut engine = engine(EmulatorSettings {
            error_rate: 0.25,
            ..Default::default()
        });
        let token = TestToken::new("1", "p").throttle(1).encode();
        let at = |roll| CallContext { roll, ..ctx() };
        assert_eq!(engine.call(&token, at(0.1)), Outcome::RandomFailure);
        assert_eq!(engine.call(&token, at(0.25)), Outcome::TokenThrottled);
        assert_eq!(engine.call(&token, at(0.0)), Outcome::RandomFailure);
        assert_eq!(engine.call(&token, at(0.9)).label(), "resolved");
        assert_eq!(engine.stats().internal_errors, 2);
    }

    #[test]
    fn out_of_range_error_rates_are_clamped() {
        let mut always = engine(EmulatorSettings {
            error_rate: 7.0,
            ..Default::default()
        });
        let roll = CallContext {
            roll: 0.999,
            ..ctx()
        };
        assert_eq!(always.call("x", roll), Outcome::RandomFailure);
        let mut never = engine(EmulatorSettings {
            error_rate: f64::NAN,
            ..Default::default()
        });
        let roll = CallContext { roll: 0.0, ..ctx() };
        assert_eq!(never.call("x", roll).label(), "invalid");
    }

    #[tokio::test(start_paused = true)]
    async fn quota_rejections_spare_the_script() {
        let mut engine = engine(EmulatorSettings {
            quota: Some(2.0),
            ..Default::default()
        });
        let token = TestToken::new("1", "p").fail(1).encode();
        assert_eq!(
            labels(&mut engine, &token, 4),
            [
                "token-failure",
                "resolved",
                "quota-exceeded",
                "quota-exceeded"
            ]
        );
        let script = TestToken::new("1", "p").throttle(1).encode();
        assert_eq!(labels(&mut engine, &script, 1), ["quota-exceeded"]);
        advance(Duration::from_millis(500)).await;
        assert_eq!(
            labels(&mut engine, &script, 2),
            ["token-throttled", "quota-exceeded"]
        );
        let stats = engine.stats();
        assert_eq!((stats.calls, stats.throttled), (7, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn changing_the_quota_refills_and_keeping_it_does_not() {
        let settings = EmulatorSettings {
            quota: Some(1.0),
            ..Default::default()
        };
        let mut engine = engine(settings.clone());
        assert_eq!(labels(&mut engine, "x", 2), ["invalid", "quota-exceeded"]);

        let same_quota = EmulatorSettings {
            latency_ms: 3,
            ..settings.clone()
        };
        engine.set_settings(same_quota, Instant::now());
        assert_eq!(labels(&mut engine, "x", 1), ["quota-exceeded"]);

        engine.set_settings(
            EmulatorSettings {
                quota: Some(2.0),
                ..settings
            },
            Instant::now(),
        );
        assert_eq!(
            labels(&mut engine, "x", 3),
            ["invalid", "invalid", "quota-exceeded"]
        );

        engine.set_settings(EmulatorSettings::default(), Instant::now());
        assert_eq!(labels(&mut engine, "x", 50), ["invalid"; 50]);
    }
}
