//! The worker's events. Each one logs and counts in a single `emit`, so what the logs say and what
//! `/metrics` counts cannot drift apart. Message-level events are emitted inside the message's span,
//! which carries `message_id` and `event_id`.

use std::time::Duration;

use crate::aws::metering::CallResult;
use crate::observe::metrics::Telemetry;
use crate::worker::decide::HandBackCause;
use crate::worker::Outcome;

/// One ResolveCustomer call, and the rate limit it left behind.
#[derive(Debug)]
pub struct ResolveAttempt<'a> {
    pub result: &'a CallResult,
    pub took: Duration,
    pub rate_limit: f64,
}

impl ResolveAttempt<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        let m = &telemetry.metrics;
        m.resolve_attempt(self.result.label(), self.result.is_throttle(), self.took);
        m.rate_limit(self.rate_limit);
        match self.result {
            CallResult::Failed(f) => tracing::debug!(
                result = self.result.label(),
                detail = %f.detail,
                took_ms = self.took.as_millis() as u64,
                rate_limit = self.rate_limit,
                "ResolveCustomer call failed"
            ),
            _ => tracing::debug!(
                result = self.result.label(),
                took_ms = self.took.as_millis() as u64,
                rate_limit = self.rate_limit,
                "ResolveCustomer answered"
            ),
        }
    }
}

/// Messages received by one receive call.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub count: usize,
}

impl Received {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.metrics.received(self.count);
        if self.count > 0 {
            tracing::debug!(count = self.count, "received");
        }
    }
}

/// A token resolved, `age` after it was enqueued.
#[derive(Debug, Clone, Copy)]
pub struct TokenResolved {
    pub age: Duration,
}

impl TokenResolved {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.metrics.token_age(self.age);
    }
}

/// What became of a message: its outcome counted, a dead-letter counted by reason, and one log line.
#[derive(Debug)]
pub struct Finished<'a> {
    pub outcome: &'a Outcome,
}

impl Finished<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        let m = &telemetry.metrics;
        m.outcome(self.outcome.kind());
        let kind = self.outcome.kind();
        match self.outcome {
            Outcome::Published { attempts, .. } => {
                tracing::info!(attempts, outcome = kind, "event published")
            }
            Outcome::AlreadyDeadLettered { reason } => {
                tracing::info!(
                    reason = reason.as_str(),
                    outcome = kind,
                    "already dead-lettered; deleted"
                )
            }
            Outcome::AlreadyPublished { .. } => {
                tracing::info!(outcome = kind, "already published; deleted")
            }
            Outcome::DeadLettered { reason, .. } => {
                m.dead_lettered(reason.as_str());
                tracing::info!(reason = reason.as_str(), outcome = kind, "dead-lettered")
            }
            Outcome::Counted { carried, .. } => {
                tracing::debug!(carried, outcome = kind, "usage counted; deleted")
            }
            Outcome::HandedBack { cause, delay } => {
                tracing::info!(
                    cause = cause_label(*cause),
                    delay_secs = delay.as_secs(),
                    outcome = kind,
                    "handed back"
                )
            }
        }
    }
}

fn cause_label(cause: HandBackCause) -> &'static str {
    match cause {
        HandBackCause::Resolve(kind) | HandBackCause::Entitlements(kind) => kind.as_str(),
        HandBackCause::DeadLetter => "dead_letter_failed",
        HandBackCause::Store => "store_unavailable",
        HandBackCause::Shutdown => "shutdown",
    }
}

/// A step of a message's handling failed; the action that follows is the decision table's.
pub struct StepFailed<'a> {
    pub step: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl StepFailed<'_> {
    pub fn emit(self, _telemetry: &Telemetry) {
        // Counted by the AWS call that failed (`mpr_aws_calls_total`); logged here with the span.
        tracing::warn!(step = self.step, error = %self.error, "step failed");
    }
}

/// The visibility heartbeat of a slow message.
pub struct Heartbeat<'a> {
    pub visibility: Duration,
    pub error: Option<&'a dyn std::fmt::Display>,
}

impl Heartbeat<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        match self.error {
            None => {
                telemetry.metrics.heartbeat();
                tracing::debug!(
                    visibility_secs = self.visibility.as_secs(),
                    "visibility extended"
                );
            }
            // The next beat may still get through before the current visibility ends.
            Some(error) => tracing::warn!(%error, "visibility heartbeat failed"),
        }
    }
}

/// Resolving paused (DisabledApiException) or resumed process-wide.
#[derive(Debug, Clone, Copy)]
pub struct PauseChanged {
    pub kind: PauseKind,
    pub paused: bool,
}

/// What a pause waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseKind {
    /// ResolveCustomer answered DisabledApiException.
    Resolve,
    /// The store did not answer.
    Store,
}

impl PauseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::Resolve => "resolve_customer",
            PauseKind::Store => "store",
        }
    }

    /// The supervised probe task's name.
    pub fn probe_task(self) -> &'static str {
        match self {
            PauseKind::Resolve => "pause_probe",
            PauseKind::Store => "store_probe",
        }
    }
}

impl PauseChanged {
    pub fn emit(self, telemetry: &Telemetry) {
        match self.kind {
            PauseKind::Resolve => {
                telemetry.health.set_paused(self.paused);
                telemetry.metrics.paused(self.paused);
                if self.paused {
                    tracing::error!("ResolveCustomer answered DisabledApiException: pausing all resolving and probing with backoff");
                } else {
                    tracing::info!("ResolveCustomer answers again: resuming");
                }
            }
            PauseKind::Store => {
                telemetry.health.set_store_paused(self.paused);
                if self.paused {
                    tracing::error!("the store does not answer: tokens wait on the queue (none dead-lettered) while it is probed with backoff");
                } else {
                    tracing::info!("the store answers again: resuming");
                }
            }
        }
    }
}

/// A resolved event's publish failed and the event is now held (`started`), or it stopped being
/// held (published, dead-lettered as `unpublished`, or the task ended).
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub started: bool,
}

impl Held {
    pub fn emit(self, telemetry: &Telemetry) {
        let held = telemetry.metrics.held(if self.started { 1 } else { -1 });
        telemetry.health.set_held(held.max(0) as u64);
        if self.started {
            tracing::warn!(
                held,
                "publish failed: holding the resolved event and retrying"
            );
        }
    }
}
