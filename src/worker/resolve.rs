//! The in-process retries of one delivery's ResolveCustomer calls: backoff with full jitter inside a
//! budget, under the process-wide adaptive rate limit.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::aws::metering::{
    self, CallResult, Failure, FailureKind, EXPIRED_CREDENTIALS, PROBE_TOKEN,
};
use crate::contract::{DeadLetterReason, RegistrationToken, ResolvedCustomer};

use crate::observe::metrics::Telemetry;
use crate::worker::decide::CredentialsCheck;
use crate::worker::events::ResolveAttempt;
use crate::worker::lease::Lease;
use crate::worker::ratelimit::{AdaptiveRateLimiter, Call};
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
    /// The last credentials probe and when it answered; the lock is held while one probes, so a
    /// burst of expired tokens makes one probe.
    credentials: Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, CredentialsCheck)>>>,
}

/// How long a credentials probe's verdict is reused.
pub const CREDENTIALS_PROBE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// What the probe token's answer says about the worker's own credentials: the API judging the
/// token at all (InvalidToken) shows they work; ExpiredToken for a token that was never issued
/// (or the expired-credentials wording) shows they do not; a failed call shows nothing.
pub fn credentials_verdict(probe: &CallResult) -> CredentialsCheck {
    match probe {
        CallResult::Rejected {
            reason: DeadLetterReason::InvalidToken,
            ..
        }
        | CallResult::Resolved(_) => CredentialsCheck::Valid,
        CallResult::Rejected {
            reason: DeadLetterReason::ExpiredToken,
            ..
        } => CredentialsCheck::Expired,
        CallResult::Failed(f) if f.detail == EXPIRED_CREDENTIALS => CredentialsCheck::Expired,
        CallResult::Rejected { .. } | CallResult::Failed(_) => CredentialsCheck::Unknown,
    }
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
            credentials: Arc::default(),
        }
    }

    /// One call, rate-limited, counted, and fed back into the rate limit.
    pub async fn call(&self, token: &RegistrationToken) -> CallResult {
        self.limiter.acquire().await;
        self.call_now(token.expose(), Some(Call::First)).await
    }

    /// Asks the API whether it is still disabled, with a token that cannot be valid.
    pub async fn probe(&self) -> CallResult {
        self.limiter.acquire().await;
        self.call_now(PROBE_TOKEN, Some(Call::First)).await
    }

    /// Whether the worker's own credentials work, from a probe made at most once per
    /// [`CREDENTIALS_PROBE_TTL`] (concurrent askers wait for the one probe in flight).
    pub async fn credentials_check(&self) -> CredentialsCheck {
        let mut last = self.credentials.lock().await;
        if let Some((at, verdict)) = *last {
            if at.elapsed() < CREDENTIALS_PROBE_TTL {
                return verdict;
            }
        }
        let verdict = credentials_verdict(&self.probe().await);
        if verdict != CredentialsCheck::Valid {
            tracing::warn!(?verdict, "ExpiredTokenException, and the credentials probe did not show working credentials: not dead-lettering");
        }
        *last = Some((tokio::time::Instant::now(), verdict));
        verdict
    }

    /// The rate limiter, for the receive loop (it receives only what the rate can resolve).
    pub fn limiter(&self) -> &AdaptiveRateLimiter {
        &self.limiter
    }

    /// One call once the limiter gave this caller its turn; a throttle is fed back as `feedback`
    /// says (`None`: not at all). AWS throttles per account, so an account over its quota shows up
    /// in the first calls of fresh deliveries: those set the rate. A delivery's first retry after
    /// a throttled first call, throttled again, is a [`Call::Repeat`]: the sign of a token
    /// throttled on its own (or the emulator's scripted `throttle: n`), which the limiter tolerates
    /// rather than cutting for. Later retries' throttles are not fed back: feeding every retry back
    /// at a weight was tried (BENCHMARKS.md, issue #23): with 5% of the tokens hot, their retries
    /// filled the slots, their throttles became most of the calls as the rate fell, and the rate
    /// fell to a few calls a second.
    async fn call_now(&self, token: &str, feedback: Option<Call>) -> CallResult {
        let started = tokio::time::Instant::now();
        let result = metering::resolve_customer(&self.client, token).await;
        match &result {
            CallResult::Failed(f) if f.kind == FailureKind::Throttled => {
                if let Some(call) = feedback {
                    self.limiter.throttled(call);
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
        let calls = AtomicU32::new(0);
        let first_throttled = AtomicBool::new(false);
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
                let nth = calls.fetch_add(1, Ordering::Relaxed);
                let feedback = match nth {
                    0 => Some(Call::First),
                    1 if first_throttled.load(Ordering::Relaxed) => Some(Call::Repeat),
                    _ => None,
                };
                let Some(_in_flight) = lease.begin_call() else {
                    return Err(Failure {
                        kind: FailureKind::Transient,
                        detail: "ResolveCustomer not called: the worker is stopping".into(),
                    });
                };
                let result = self.call_now(token.expose(), feedback).await;
                if nth == 0 {
                    first_throttled.store(result.is_throttle(), Ordering::Relaxed);
                }
                match result {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answer_tells_what_the_credentials_are() {
        let rejected = |reason| CallResult::Rejected {
            reason,
            detail: String::new(),
        };
        let failed = |kind, detail: &str| {
            CallResult::Failed(Failure {
                kind,
                detail: detail.into(),
            })
        };
        let rows = [
            (
                rejected(DeadLetterReason::InvalidToken),
                CredentialsCheck::Valid,
            ),
            (
                rejected(DeadLetterReason::ExpiredToken),
                CredentialsCheck::Expired,
            ),
            (
                failed(FailureKind::Transient, EXPIRED_CREDENTIALS),
                CredentialsCheck::Expired,
            ),
            (
                failed(
                    FailureKind::Throttled,
                    "ResolveCustomer: ThrottlingException",
                ),
                CredentialsCheck::Unknown,
            ),
            (
                failed(FailureKind::Transient, "ResolveCustomer timed out"),
                CredentialsCheck::Unknown,
            ),
            (
                failed(
                    FailureKind::Disabled,
                    "ResolveCustomer: DisabledApiException",
                ),
                CredentialsCheck::Unknown,
            ),
        ];
        for (answer, want) in rows {
            assert_eq!(credentials_verdict(&answer), want, "{answer:?}");
        }
    }
}
