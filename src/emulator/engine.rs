//! What one API call answers, independent of HTTP: the service-wide checks, the per-token
//! countdowns and lifetimes, the entitlements, the subscribers and metered records, and the
//! counters behind `/emulator/stats`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::entitlements::{
    CustomerEntitlements, EntitlementError, EntitlementQuery, EntitlementStore, Page,
};
use super::metering::{self, Ledger, MeteringRequest, Refused, Subscriber, Subscribers, Verdict};
use super::quota::TokenBucket;
use super::settings::EmulatorSettings;
use super::token::{TestToken, TokenError};

/// Counts of API requests by outcome since start or the last reset. Every request lands in exactly
/// one counter besides `calls`: `resolved + throttled + invalid + expired + internalErrors +
/// disabled` (ResolveCustomer) `+ entitlementCalls + meteringCalls + rejected == calls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmulatorStats {
    /// Every request to the API endpoint, rejected ones included.
    pub calls: u64,
    pub resolved: u64,
    /// ResolveCustomer: both quota and per-token throttling.
    pub throttled: u64,
    pub invalid: u64,
    /// Past `exp`, past `ttl`, or resubmitted with `singleUse` on.
    pub expired: u64,
    /// ResolveCustomer: both random errors and per-token failures.
    pub internal_errors: u64,
    pub disabled: u64,
    /// Refused before reaching an operation: unknown target, unreadable or over-size body, missing
    /// or invalid parameters, missing signature under `strictAuth`.
    pub rejected: u64,
    /// GetEntitlements calls that passed validation, whatever they answered.
    pub entitlement_calls: u64,
    /// GetEntitlements calls over `entitlementQuota`.
    pub entitlement_throttled: u64,
    /// GetEntitlements calls that answered `InternalServiceErrorException` (random or disabled).
    pub entitlement_errors: u64,
    /// BatchMeterUsage calls that passed validation, whatever they answered.
    pub metering_calls: u64,
    /// BatchMeterUsage calls over `meteringQuota` or scripted by `meteringThrottle`.
    pub metering_throttled: u64,
    /// BatchMeterUsage calls that answered `InternalServiceErrorException` (random or scripted by
    /// `meteringFail`) or `DisabledApiException`.
    pub metering_errors: u64,
    /// BatchMeterUsage calls refused with one of the operation's own errors
    /// (`TimestampOutOfBoundsException`, `InvalidProductCodeException`, …); none of their records
    /// was processed.
    pub metering_refused: u64,
    /// Records answered `Success` (resends of an accepted record included).
    pub records_metered: u64,
    pub records_duplicate: u64,
    pub records_not_subscribed: u64,
    /// Records returned in `UnprocessedRecords`.
    pub records_unprocessed: u64,
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

/// Why a GetEntitlements call that passed validation still failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntitlementFailure {
    Disabled,
    Throttled,
    RandomFailure,
}

/// Why a BatchMeterUsage call that passed validation was not processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeteringFailure {
    Disabled,
    Throttled,
    InternalError,
    Refused(Refused),
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
    entitlement_bucket: Option<TokenBucket>,
    metering_bucket: Option<TokenBucket>,
    stats: EmulatorStats,
    /// For tokens that ask for throttles or failures: how many calls reached the per-token stage.
    /// Tokens without either are never stored, so plain traffic does not grow this map.
    seen: HashMap<String, u64>,
    /// For tokens with a `ttl`: when their first call was judged.
    first_calls: HashMap<String, Instant>,
    /// Tokens that resolved while `singleUse` was on; only filled while it is on.
    consumed: HashSet<String>,
    entitlements: EntitlementStore,
    subscribers: Subscribers,
    ledger: Ledger,
}

impl Engine {
    pub fn new(settings: EmulatorSettings, now: Instant) -> Self {
        Self {
            bucket: settings.quota.and_then(|q| TokenBucket::new(q, now)),
            entitlement_bucket: settings
                .entitlement_quota
                .and_then(|q| TokenBucket::new(q, now)),
            metering_bucket: settings
                .metering_quota
                .and_then(|q| TokenBucket::new(q, now)),
            settings,
            stats: EmulatorStats::default(),
            seen: HashMap::new(),
            first_calls: HashMap::new(),
            consumed: HashSet::new(),
            entitlements: EntitlementStore::default(),
            subscribers: Subscribers::default(),
            ledger: Ledger::default(),
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
        if settings.entitlement_quota != self.settings.entitlement_quota {
            self.entitlement_bucket = settings
                .entitlement_quota
                .and_then(|q| TokenBucket::new(q, now));
        }
        if settings.metering_quota != self.settings.metering_quota {
            self.metering_bucket = settings
                .metering_quota
                .and_then(|q| TokenBucket::new(q, now));
        }
        self.settings = settings;
    }

    pub fn stats(&self) -> EmulatorStats {
        self.stats
    }

    /// Replaces one customer's entitlements for one product; a customer with entitlements is also
    /// a subscriber for BatchMeterUsage (emptying them later does not unsubscribe it).
    pub fn set_entitlements(&mut self, set: CustomerEntitlements) -> Result<(), EntitlementError> {
        self.entitlements.set(set.clone())?;
        if !set.entitlements.is_empty() {
            self.subscribers.add(Subscriber {
                product_code: set.product_code,
                customer_aws_account_id: set.customer_aws_account_id,
                customer_identifier: set.customer_identifier,
                license_arn: set.license_arn,
            });
        }
        Ok(())
    }

    pub fn subscribers_mut(&mut self) -> &mut Subscribers {
        &mut self.subscribers
    }

    pub fn metered_records(&self) -> &[metering::MeteredRecord] {
        self.ledger.records()
    }

    /// Zeroes the counters, forgets the per-token countdowns, first calls, used tokens,
    /// entitlements, subscribers and metered records, and refills the quota buckets, so a test starts from the same state as a
    /// freshly started emulator with the same settings.
    pub fn reset(&mut self, now: Instant) {
        let settings = self.settings.clone();
        *self = Self::new(settings, now);
    }

    /// Counts a request refused before it reached an operation.
    pub fn reject(&mut self) {
        self.stats.calls += 1;
        self.stats.rejected += 1;
    }

    /// Judges one validated GetEntitlements call and counts it. It shares `disabled`, `errorRate`
    /// and the order of the checks with ResolveCustomer but has its own quota bucket.
    pub fn get_entitlements(
        &mut self,
        query: &EntitlementQuery,
        ctx: CallContext,
    ) -> Result<Page, EntitlementFailure> {
        self.stats.calls += 1;
        self.stats.entitlement_calls += 1;
        let failure = if self.settings.disabled {
            Some(EntitlementFailure::Disabled)
        } else if self
            .entitlement_bucket
            .as_mut()
            .is_some_and(|bucket| !bucket.try_acquire(ctx.now))
        {
            Some(EntitlementFailure::Throttled)
        } else if ctx.roll < self.settings.effective_error_rate() {
            Some(EntitlementFailure::RandomFailure)
        } else {
            None
        };
        match failure {
            None => Ok(self.entitlements.query(query)),
            Some(EntitlementFailure::Throttled) => {
                self.stats.entitlement_throttled += 1;
                Err(EntitlementFailure::Throttled)
            }
            Some(other) => {
                self.stats.entitlement_errors += 1;
                Err(other)
            }
        }
    }

    /// Judges one validated BatchMeterUsage call and counts it: `disabled`, its own quota, the
    /// random error rate, the scripted throttles and failures, then the records (all checked
    /// before any is applied, so a refused call meters nothing).
    pub fn batch_meter_usage(
        &mut self,
        request: &MeteringRequest,
        ctx: CallContext,
    ) -> Result<Vec<Verdict>, MeteringFailure> {
        self.stats.calls += 1;
        self.stats.metering_calls += 1;
        let result = self.judge_metering(request, ctx);
        let stats = &mut self.stats;
        match &result {
            Ok(verdicts) => {
                for verdict in verdicts {
                    let counter = match verdict {
                        Verdict::Success { .. } => &mut stats.records_metered,
                        Verdict::DuplicateRecord => &mut stats.records_duplicate,
                        Verdict::CustomerNotSubscribed => &mut stats.records_not_subscribed,
                        Verdict::Unprocessed => &mut stats.records_unprocessed,
                    };
                    *counter += 1;
                }
            }
            Err(MeteringFailure::Throttled) => stats.metering_throttled += 1,
            Err(MeteringFailure::Disabled | MeteringFailure::InternalError) => {
                stats.metering_errors += 1
            }
            Err(MeteringFailure::Refused(_)) => stats.metering_refused += 1,
        }
        result
    }

    fn judge_metering(
        &mut self,
        request: &MeteringRequest,
        ctx: CallContext,
    ) -> Result<Vec<Verdict>, MeteringFailure> {
        if self.settings.disabled {
            return Err(MeteringFailure::Disabled);
        }
        if let Some(bucket) = &mut self.metering_bucket {
            if !bucket.try_acquire(ctx.now) {
                return Err(MeteringFailure::Throttled);
            }
        }
        if ctx.roll < self.settings.effective_error_rate() {
            return Err(MeteringFailure::InternalError);
        }
        if self.settings.metering_throttle > 0 {
            self.settings.metering_throttle -= 1;
            return Err(MeteringFailure::Throttled);
        }
        if self.settings.metering_fail > 0 {
            self.settings.metering_fail -= 1;
            return Err(MeteringFailure::InternalError);
        }
        let rules = metering::Rules {
            window_hours: self.settings.metering_window_hours,
            dimensions: &self.settings.metering_dimensions,
            now: ctx.unix_now,
        };
        let checked = metering::check_call(request, &self.subscribers, rules)
            .map_err(MeteringFailure::Refused)?;
        Ok(metering::apply_call(
            request,
            &checked,
            &self.subscribers,
            &mut self.ledger,
            &mut self.settings.metering_unprocessed,
        ))
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
        if decoded.is_expired(ctx.unix_now) || self.past_ttl(token, &decoded, ctx.now) {
            return Outcome::Expired;
        }
        // Turning `singleUse` off lets used tokens resolve again, as a fresh emulator would.
        if self.settings.single_use && self.consumed.contains(token) {
            return Outcome::Expired;
        }
        let outcome = self.run_script(token, decoded);
        if let Outcome::Resolved(resolved) = &outcome {
            if self.settings.single_use {
                self.consumed.insert(token.to_owned());
            }
            // The customer can now be metered, as after a real registration.
            self.subscribers.add(Subscriber {
                product_code: resolved.product.clone(),
                customer_aws_account_id: Some(resolved.account.clone()),
                customer_identifier: resolved.customer.clone(),
                license_arn: resolved.license.clone(),
            });
        }
        outcome
    }

    /// Starts the token's clock on its first judged call; true once `ttl` seconds have passed.
    fn past_ttl(&mut self, token: &str, decoded: &TestToken, now: Instant) -> bool {
        let Some(ttl) = decoded.ttl else {
            return false;
        };
        let first = *self.first_calls.entry(token.to_owned()).or_insert(now);
        now.saturating_duration_since(first) > Duration::from_secs(ttl)
    }

    /// The token's scripted throttles, then failures, then success.
    fn run_script(&mut self, token: &str, decoded: TestToken) -> Outcome {
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

    fn valid_token(account: &str) -> TestToken {
        TestToken::new(account, "prod-abc")
    }

    fn encode(token: TestToken) -> String {
        token.encode().expect("valid test token")
    }

    const A: &str = "123456789012";
    const B: &str = "210987654321";

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
        let token = valid_token(A).customer("c");
        let mut engine = engine(EmulatorSettings::default());
        assert_eq!(
            engine.call(&encode(token.clone()), ctx()),
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
        let expired = encode(valid_token(A).expires_at(NOW - 1));
        assert_eq!(engine.call(&expired, ctx()), Outcome::Expired);
        let fresh = encode(valid_token(A).expires_at(NOW + 60));
        assert_eq!(engine.call(&fresh, ctx()).label(), "resolved");
        let stats = engine.stats();
        assert_eq!((stats.calls, stats.invalid, stats.expired), (3, 1, 1));
    }

    #[test]
    fn throttles_are_used_before_failures_then_the_token_resolves() {
        let mut engine = engine(EmulatorSettings::default());
        let token = encode(valid_token(A).throttle(2).fail(1));
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
        let a = encode(valid_token(A).fail(1));
        let b = encode(valid_token(B).fail(1));
        assert_eq!(labels(&mut engine, &a, 2), ["token-failure", "resolved"]);
        assert_eq!(labels(&mut engine, &b, 1), ["token-failure"]);
        engine.reset(Instant::now());
        assert_eq!(engine.stats(), EmulatorStats::default());
        assert_eq!(labels(&mut engine, &a, 1), ["token-failure"]);
    }

    #[test]
    fn expired_and_invalid_calls_do_not_use_up_the_script() {
        let mut engine = engine(EmulatorSettings::default());
        let token = encode(valid_token(A).expires_at(NOW).throttle(1));
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
        let token = encode(valid_token(A).throttle(1));
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
        let token = encode(valid_token(A).fail(1));
        assert_eq!(
            labels(&mut engine, &token, 4),
            [
                "token-failure",
                "resolved",
                "quota-exceeded",
                "quota-exceeded"
            ]
        );
        let script = encode(valid_token(A).throttle(1));
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

    #[test]
    fn single_use_expires_a_token_after_it_resolved_once() {
        let mut engine = engine(EmulatorSettings {
            single_use: true,
            ..Default::default()
        });
        let once = encode(valid_token(A));
        assert_eq!(
            labels(&mut engine, &once, 3),
            ["resolved", "expired", "expired"]
        );
        // Scripted throttles and failures do not use the token up; only a resolution does.
        let flaky = encode(valid_token(B).throttle(1).fail(1));
        assert_eq!(
            labels(&mut engine, &flaky, 4),
            ["token-throttled", "token-failure", "resolved", "expired"]
        );
        let stats = engine.stats();
        assert_eq!((stats.resolved, stats.expired), (2, 3));

        // Off again: used tokens resolve as on a fresh emulator, and nothing more is remembered.
        let mut settings = engine.settings().clone();
        settings.single_use = false;
        engine.set_settings(settings, Instant::now());
        assert_eq!(labels(&mut engine, &once, 2), ["resolved", "resolved"]);
        assert!(!engine
            .consumed
            .contains(&encode(valid_token(A).customer("new"))));
    }

    #[test]
    fn single_use_is_forgotten_on_reset() {
        let mut engine = engine(EmulatorSettings {
            single_use: true,
            ..Default::default()
        });
        let once = encode(valid_token(A));
        assert_eq!(labels(&mut engine, &once, 2), ["resolved", "expired"]);
        engine.reset(Instant::now());
        assert_eq!(labels(&mut engine, &once, 1), ["resolved"]);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_counts_from_the_first_call() {
        let mut engine = engine(EmulatorSettings::default());
        let token = encode(valid_token(A).ttl(30));
        // The clock starts at the first call, not at creation.
        advance(Duration::from_secs(3600)).await;
        assert_eq!(labels(&mut engine, &token, 1), ["resolved"]);
        advance(Duration::from_secs(30)).await;
        assert_eq!(labels(&mut engine, &token, 1), ["resolved"]);
        advance(Duration::from_millis(1)).await;
        assert_eq!(labels(&mut engine, &token, 2), ["expired", "expired"]);
        // Each token has its own clock.
        let other = encode(valid_token(B).ttl(30));
        assert_eq!(labels(&mut engine, &other, 1), ["resolved"]);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_starts_on_a_throttled_call_but_not_on_a_refused_one() {
        let mut engine = engine(EmulatorSettings {
            disabled: true,
            ..Default::default()
        });
        let token = encode(valid_token(A).ttl(10).throttle(1));
        assert_eq!(labels(&mut engine, &token, 1), ["disabled"]);
        engine.set_settings(EmulatorSettings::default(), Instant::now());
        advance(Duration::from_secs(60)).await;
        assert_eq!(
            labels(&mut engine, &token, 2),
            ["token-throttled", "resolved"]
        );
        advance(Duration::from_secs(11)).await;
        assert_eq!(labels(&mut engine, &token, 1), ["expired"]);
    }

    #[test]
    fn rejected_requests_count_as_calls() {
        let mut engine = engine(EmulatorSettings::default());
        engine.reject();
        engine.call(&encode(valid_token(A)), ctx());
        let stats = engine.stats();
        assert_eq!((stats.calls, stats.rejected, stats.resolved), (2, 1, 1));
    }

    fn query() -> EntitlementQuery {
        EntitlementQuery {
            product_code: "prod-abc".to_owned(),
            filter: Default::default(),
            offset: 0,
            page_size: 25,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entitlements_have_their_own_quota_and_share_the_other_knobs() {
        use crate::emulator::{CustomerEntitlements, TestEntitlement};
        let mut engine = engine(EmulatorSettings {
            quota: Some(1.0),
            entitlement_quota: Some(2.0),
            ..Default::default()
        });
        engine
            .set_entitlements(
                CustomerEntitlements::for_account("prod-abc", A)
                    .with(TestEntitlement::integer("seats", 5)),
            )
            .expect("valid");
        // The metering bucket running dry does not throttle entitlements, and vice versa.
        assert_eq!(
            labels(&mut engine, &encode(valid_token(A)), 2),
            ["resolved", "quota-exceeded"]
        );
        let results: Vec<_> = (0..3)
            .map(|_| engine.get_entitlements(&query(), ctx()))
            .collect();
        assert_eq!(results[0].as_ref().map(|p| p.entitlements.len()), Ok(1));
        assert!(results[1].is_ok());
        assert_eq!(results[2], Err(EntitlementFailure::Throttled));
        advance(Duration::from_millis(500)).await;
        assert!(engine.get_entitlements(&query(), ctx()).is_ok());

        let mut settings = engine.settings().clone();
        settings.error_rate = 0.5;
        engine.set_settings(settings.clone(), Instant::now());
        advance(Duration::from_secs(1)).await;
        let roll = CallContext { roll: 0.1, ..ctx() };
        assert_eq!(
            engine.get_entitlements(&query(), roll),
            Err(EntitlementFailure::RandomFailure)
        );
        settings.disabled = true;
        engine.set_settings(settings, Instant::now());
        assert_eq!(
            engine.get_entitlements(&query(), ctx()),
            Err(EntitlementFailure::Disabled)
        );

        let stats = engine.stats();
        assert_eq!(
            (
                stats.calls,
                stats.entitlement_calls,
                stats.entitlement_throttled,
                stats.entitlement_errors
            ),
            (8, 6, 1, 2)
        );
        assert_eq!(stats.throttled, 1);
    }
}
