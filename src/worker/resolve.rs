//! The in-process retries of one delivery's ResolveCustomer calls: backoff with full jitter inside a
//! budget, under the process-wide adaptive rate limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::aws::metering::{self, CallResult, Failure, FailureKind, PROBE_TOKEN};
use crate::contract::{DeadLetterReason, RegistrationToken, ResolvedCustomer};

use crate::observe::metrics::Telemetry;
use crate::worker::events::ResolveAttempt;
use crate::worker::lease::Lease;
use crate::worker::ratelimit::AdaptiveRateLimiter;
use crate::worker::retry::{retry_without_cancelling, BackoffPolicy};

/// How one delivery's resolution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveOutcome {
    Resolved {
        customer: ResolvedCustomer,
        attempts: u32,
    },
    Rejected {
        reason: DeadLetterReason,
        detail: String,
        attempts: u32,
    },
    /// Retries (or the budget) ran out, or the API is disabled: hand the message back.
    Unavailable { failure: Failure, attempts: u32 },
}

/// Calls ResolveCustomer with backoff, under the process-wide adaptive rate limit. The SDK client
/// it is given must have its own retries turned off (see `aws::Clients`), so each attempt here is
/// exactly one request.
#[derive(Debug, Clone)]
pub struct Resolver {
    client: aws_sdk_marketplacemetering::Client,
    policy: BackoffPolicy,
    limiter: Arc<AdaptiveRateLimiter>,
    telemetry: Arc<Telemetry>,
}

impl Resolver {
    pub fn new(
        client: aws_sdk_marketplacemetering::Client,
        policy: BackoffPolicy,
        limiter: Arc<AdaptiveRateLimiter>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Resolver {
            client,
            policy,
            limiter,
            telemetry,
        }
    }

    /// One call, rate-limited, counted, and fed back into the rate limit.
    pub async fn call(&self, token: &RegistrationToken) -> CallResult {
        self.limiter.acquire().await;
        self.call_now(token.expose(), false).await
    }

    /// Asks the API whether it is still disabled, with a token that cannot be valid.
    pub async fn probe(&self) -> CallResult {
        self.limiter.acquire().await;
        self.call_now(PROBE_TOKEN, false).await
    }

    /// The rate limiter, for the receive loop (it receives only what the rate can resolve).
    pub fn limiter(&self) -> &AdaptiveRateLimiter {
        &self.limiter
    }

    /// One call once the limiter gave this caller its turn. A throttle of a `retry` is not fed back
    /// into the rate: AWS throttles per account, so an account over its quota shows up in the first
    /// calls of fresh deliveries; one token throttled again and again (or the emulator's scripted
    /// `throttle: n`) must not drag every other message down.
    async fn call_now(&self, token: &str, retry: bool) -> CallResult {
        let started = tokio::time::Instant::now();
        let result = metering::resolve_customer(&self.client, token).await;
        match &result {
            CallResult::Failed(f) if f.kind == FailureKind::Throttled => {
                if !retry {
                    self.limiter.throttled();
                }
            }
            CallResult::Failed(_) => {}
            CallResult::Resolved(_) | CallResult::Rejected { .. } => self.limiter.succeeded(),
        }
        ResolveAttempt {
            result: &result,
            took: started.elapsed(),
            rate_limit: self.limiter.rate(),
        }
        .emit(&self.telemetry);
        result
    }

    /// One delivery's calls. The delivery's budget starts at its first call, not while it waits for
    /// its first turn; its retries keep their place in the limiter's line (oldest delivery first),
    /// so a throttled retry does not go to the back behind fresh messages. A call is never cut by
    /// the budget (it only decides whether another call starts): AWS may already have spent the
    /// token. Each call is marked on `lease` while in flight, so shutdown lets it finish, and none
    /// starts once the lease winds down.
    pub async fn resolve(&self, token: &RegistrationToken, lease: &Lease) -> ResolveOutcome {
        let queued = tokio::time::Instant::now();
        self.limiter.acquire_for(queued).await;
        let first_turn = AtomicBool::new(true);
        let fingerprint = token.fingerprint();
        let (result, attempts) = retry_without_cancelling(
            &self.policy,
            "ResolveCustomer",
            &fingerprint,
            || async {
                self.limiter.acquire_for(queued).await;
                !lease.is_winding_down()
            },
            || async {
                let retry = !first_turn.swap(false, Ordering::Relaxed);
                let Some(_in_flight) = lease.begin_call() else {
                    return Err(Failure {
                        kind: FailureKind::Transient,
                        detail: "ResolveCustomer not called: the worker is stopping".into(),
                    });
                };
                match self.call_now(token.expose(), retry).await {
                    CallResult::Resolved(c) => Ok(Ok(c)),
                    CallResult::Rejected { reason, detail } => Ok(Err((reason, detail))),
                    CallResult::Failed(failure) => Err(failure),
                }
            },
        )
        .await;
        match result {
            Ok(Ok(customer)) => ResolveOutcome::Resolved { customer, attempts },
            Ok(Err((reason, detail))) => ResolveOutcome::Rejected {
                reason,
                detail,
                attempts,
            },
            Err(failure) => ResolveOutcome::Unavailable { failure, attempts },
        }
    }
}
