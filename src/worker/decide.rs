//! What happens to one delivery, decided in one place: a pure function from what is known about the
//! delivery to the one thing to do next. The worker gathers facts (parses the body, asks the API,
//! tries the publish) and executes actions; an action never chooses another one. Each row of the
//! README's "What happens to each message" table is a row of the tests below.

use std::time::Duration;

use crate::aws::metering::FailureKind;
use crate::contract::{
    CustomerEvent, DeadLetterReason, Fingerprint, Malformed, ResolvedCustomer, TokenRequest,
};
use crate::worker::resolve::ResolveOutcome;
use crate::worker::retry::{BackoffPolicy, HoldPolicy};

/// What any delivery, on either queue, goes through on its way to being settled: what this process
/// did with the same message or event before, the publish tries of its event, the dead-letter
/// send, and the shutdown. Each queue's delivery adds what is particular to its messages.
#[derive(Debug, Clone)]
pub struct Settling {
    /// The message's `ApproximateReceiveCount`.
    pub receive_count: u32,
    /// This process dead-lettered the message before (its delete was lost), with this reason.
    pub already_dead_lettered: Option<DeadLetterReason>,
    /// This process published the event before (a redelivery).
    pub already_published: bool,
    /// Publish tries that failed (after the SDK's retries), the time since the first failure, and
    /// the last error.
    pub publish_failures: u32,
    pub held_for: Duration,
    pub last_publish_error: Option<String>,
    /// SNS refused the event itself (too long): no retry can publish it.
    pub publish_refused: bool,
    /// The process is stopping: a held event is dead-lettered now rather than lost.
    pub stopping: bool,
    /// The dead-letter send failed (after the SDK's retries).
    pub dead_letter_failed: bool,
    /// The jitter drawn for this delivery, in `[0, 1]`: the fraction of a backoff step to wait.
    pub draw: f64,
}

impl Settling {
    pub fn new(receive_count: u32, draw: f64) -> Self {
        Settling {
            receive_count,
            already_dead_lettered: None,
            already_published: false,
            publish_failures: 0,
            held_for: Duration::ZERO,
            last_publish_error: None,
            publish_refused: false,
            stopping: false,
            dead_letter_failed: false,
            draw,
        }
    }

    /// The publish step of the delivery's event: publish after the returned wait (zero for the
    /// first try, a held event's backoff after), or give up because SNS refused the event itself,
    /// the process is stopping or the hold ran out, with the detail of the `unpublished` dead-letter (which carries the
    /// event: held, never away).
    pub fn next_publish(&self, hold: HoldPolicy) -> Result<Duration, String> {
        let failures = self.publish_failures;
        if failures == 0 {
            return Ok(Duration::ZERO);
        }
        if self.publish_refused {
            return Err(format!(
                "SNS refused the event, which no retry can change: {}",
                self.last_publish_error
                    .as_deref()
                    .unwrap_or("unknown error")
            ));
        }
        if self.stopping || self.held_for >= hold.hold {
            return Err(format!(
                "SNS publish failed {failures} times over {} s{}: {}",
                self.held_for.as_secs(),
                if self.stopping {
                    " (process stopping)"
                } else {
                    ""
                },
                self.last_publish_error
                    .as_deref()
                    .unwrap_or("unknown error")
            ));
        }
        Ok(hold.retry_delay(failures, self.draw))
    }

    /// How long a hand-back leaves the message invisible after `attempts` calls in this delivery.
    pub fn hand_back_delay(&self, policy: &BackoffPolicy, attempts: u32) -> Duration {
        policy.handback_delay_drawn(self.receive_count, attempts, self.draw)
    }
}

/// Everything known about one token delivery so far. The worker fills it in step by step.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub settling: Settling,
    /// The body, parsed against the inbound contract.
    pub request: Result<TokenRequest, Malformed>,
    /// Resolving is paused process-wide (DisabledApiException).
    pub paused: bool,
    /// What this delivery's ResolveCustomer calls ended in, once asked (or what this process
    /// learned for the same token earlier: a token may resolve only once).
    pub resolved: Option<ResolveOutcome>,
    /// The event built from the answer (or read from the store), kept as it is for every publish
    /// try and carried by any letter.
    pub event: Option<CustomerEvent>,
    /// What the store said before any call (`crate::store::tokens`).
    pub store: StoreStep,
    /// Shutdown's grace period ran out before the delivery finished.
    pub grace_over: bool,
    /// What a probe said about the worker's own credentials, asked before an
    /// `ExpiredTokenException` dead-letters a token (AWS answers expired credentials with the same
    /// code).
    pub credentials: Option<CredentialsCheck>,
}

/// What the probe (a token that cannot be valid) said about the worker's own credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsCheck {
    /// The API judged the probe token (InvalidToken): the credentials work, so an expiry was the
    /// registration token's.
    Valid,
    /// The probe was refused as expired too: the credentials are.
    Expired,
    /// The probe failed (throttled, unreachable, ...): nothing is known, so nothing is dead-lettered.
    Unknown,
}

/// Where a delivery stands with the store, before it may call ResolveCustomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreStep {
    /// Not looked yet.
    NotAsked,
    /// This delivery holds the token's claim: it may call.
    Claimed,
    /// Another delivery (here or in another task) holds a live claim until `lease_until_ms`.
    HeldElsewhere { lease_until_ms: i64 },
    /// The store answered with what it knew (an answer, a publish, a verdict): in `resolved`,
    /// `event` and `settling`.
    Known,
    /// The store could not be reached (or refused): nothing is called or dead-lettered meanwhile.
    Failed(String),
}

impl Delivery {
    pub fn new(receive_count: u32, request: Result<TokenRequest, Malformed>, draw: f64) -> Self {
        Delivery {
            settling: Settling::new(receive_count, draw),
            request,
            paused: false,
            resolved: None,
            event: None,
            store: StoreStep::NotAsked,
            grace_over: false,
            credentials: None,
        }
    }

    /// The token's fingerprint, when a token could be read (even from a malformed body).
    pub fn event_id(&self) -> Option<Fingerprint> {
        match &self.request {
            Ok(request) => Some(request.token.fingerprint()),
            Err(malformed) => malformed.fingerprint.clone(),
        }
    }
}

/// The settings a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The allow-list of product codes; empty allows every product.
    pub product_codes: &'a [String],
    pub policy: &'a BackoffPolicy,
    pub hold: HoldPolicy,
}

/// The one thing to do next with a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Handled before: delete the message without calling anything.
    Delete(Handled),
    /// Look the token up in the store, claiming it for a call when it is new there.
    Recall,
    /// Wait for the answer of the delivery that holds the token's claim, at most until it lapses,
    /// then look again.
    AwaitHolder { lease_until_ms: i64 },
    /// Ask ResolveCustomer (with the in-process retries of one delivery).
    Resolve,
    /// Probe whether the worker's own credentials work (cached briefly, one probe per burst).
    CheckCredentials,
    /// Publish the resolved customer after waiting `after` (zero for the first try; a held event's
    /// retry waits its backoff), then delete the message.
    Publish {
        customer: ResolvedCustomer,
        attempts: u32,
        after: Duration,
    },
    /// Send the body to the dead-letter queue with its reason (and, for `unpublished`, the event),
    /// then delete the message.
    DeadLetter(Letter),
    /// Leave the message on the queue, visible again after `delay`.
    HandBack {
        cause: HandBackCause,
        delay: Duration,
        /// The API answered DisabledApiException: pause resolving process-wide as well.
        pause_resolving: bool,
    },
}

/// A dead-letter to send: the body goes unchanged, with these as its `mpr.*` attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub reason: DeadLetterReason,
    pub detail: String,
    pub event_id: Option<Fingerprint>,
    /// For `unpublished`: the event that could not be published, so nothing AWS said is lost.
    pub event: Option<String>,
}

/// Why a message was deleted without new work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Published earlier by this process.
    Published(Fingerprint),
    /// Dead-lettered earlier by this process.
    DeadLettered(DeadLetterReason),
}

/// Why a message was handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBackCause {
    /// ResolveCustomer kept failing (throttled, transient, disabled) within this delivery.
    Resolve(FailureKind),
    /// GetEntitlements kept failing within this delivery (lifecycle queue).
    Entitlements(FailureKind),
    /// The dead-letter send failed.
    DeadLetter,
    /// The store could not be reached, so the token could not be looked up or its verdict kept.
    Store,
    /// The process is stopping and the grace period ran out.
    Shutdown,
}

/// Decides the next action for a delivery.
pub fn decide(d: &Delivery, rules: Rules<'_>) -> Action {
    let hand_back = |cause, attempts| Action::HandBack {
        cause,
        delay: d.settling.hand_back_delay(rules.policy, attempts),
        pause_resolving: false,
    };
    if d.grace_over {
        return Action::HandBack {
            cause: HandBackCause::Shutdown,
            delay: Duration::ZERO,
            pause_resolving: false,
        };
    }
    if let Some(reason) = d.settling.already_dead_lettered {
        return Action::Delete(Handled::DeadLettered(reason));
    }
    let request = match &d.request {
        Ok(request) => request,
        Err(_) if d.settling.dead_letter_failed => return hand_back(HandBackCause::DeadLetter, 1),
        Err(malformed) => {
            return Action::DeadLetter(Letter {
                reason: DeadLetterReason::MalformedMessage,
                detail: malformed.detail.clone(),
                event_id: malformed.fingerprint.clone(),
                event: None,
            })
        }
    };
    let event_id = request.token.fingerprint();
    if d.settling.already_published {
        return Action::Delete(Handled::Published(event_id));
    }
    let Some(resolved) = &d.resolved else {
        // The store first: a token it knows is settled from there, never asked about again.
        match &d.store {
            StoreStep::NotAsked => return Action::Recall,
            StoreStep::HeldElsewhere { lease_until_ms } => {
                return Action::AwaitHolder {
                    lease_until_ms: *lease_until_ms,
                }
            }
            StoreStep::Failed(_) => return hand_back(HandBackCause::Store, 0),
            StoreStep::Claimed | StoreStep::Known => {}
        }
        if d.paused {
            return hand_back(HandBackCause::Resolve(FailureKind::Disabled), 0);
        }
        return Action::Resolve;
    };
    match resolved {
        ResolveOutcome::Resolved { customer, attempts } => {
            let allowed = rules.product_codes.is_empty()
                || rules.product_codes.contains(&customer.product_code);
            if !allowed {
                if d.settling.dead_letter_failed {
                    return hand_back(HandBackCause::DeadLetter, 1);
                }
                // The letter keeps the answer: once the allow-list is fixed, `dlq redrive`
                // publishes it without a call.
                return Action::DeadLetter(Letter {
                    reason: DeadLetterReason::ProductMismatch,
                    detail: format!(
                        "product code {} is not in the allow-list (product_codes)",
                        customer.product_code
                    ),
                    event_id: Some(event_id),
                    event: d.event.as_ref().map(CustomerEvent::to_json),
                });
            }
            match d.settling.next_publish(rules.hold) {
                Ok(after) => Action::Publish {
                    customer: customer.clone(),
                    attempts: *attempts,
                    after,
                },
                Err(_) if d.settling.dead_letter_failed => hand_back(HandBackCause::DeadLetter, 1),
                Err(detail) => Action::DeadLetter(Letter {
                    reason: DeadLetterReason::Unpublished,
                    detail,
                    event_id: Some(event_id),
                    event: d.event.as_ref().map(CustomerEvent::to_json),
                }),
            }
        }
        ResolveOutcome::Rejected {
            reason: DeadLetterReason::ExpiredToken,
            attempts,
            ..
        } if d.credentials != Some(CredentialsCheck::Valid) => match d.credentials {
            None => Action::CheckCredentials,
            // Expired credentials, or unknown: never a dead-letter on a doubt.
            Some(_) => hand_back(HandBackCause::Resolve(FailureKind::Transient), *attempts),
        },
        ResolveOutcome::Rejected { reason, detail, .. } => {
            if d.settling.dead_letter_failed {
                return hand_back(HandBackCause::DeadLetter, 1);
            }
            Action::DeadLetter(Letter {
                reason: *reason,
                detail: detail.clone(),
                event_id: Some(event_id),
                event: None,
            })
        }
        ResolveOutcome::Unavailable { failure, attempts } => Action::HandBack {
            cause: HandBackCause::Resolve(failure.kind),
            delay: d.settling.hand_back_delay(rules.policy, *attempts),
            pause_resolving: failure.kind == FailureKind::Disabled,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::aws::metering::Failure;
    use crate::contract::parse_body;

    const TOKEN: &str = "tok-abc";

    pub(crate) fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(1_000),
            max: Duration::from_secs(5),
            factor: 2.0,
            max_attempts: 6,
            budget: Duration::from_secs(20),
            handback_max: Duration::from_secs(300),
        }
    }

    fn customer(product: &str) -> ResolvedCustomer {
        ResolvedCustomer {
            customer_identifier: None,
            customer_aws_account_id: "123456789012".into(),
            product_code: product.into(),
            license_arn: None,
            agreement_id: None,
        }
    }

    fn failure(kind: FailureKind) -> ResolveOutcome {
        ResolveOutcome::Unavailable {
            failure: Failure {
                kind,
                detail: "x".into(),
            },
            attempts: 3,
        }
    }

    fn rejected(reason: DeadLetterReason) -> ResolveOutcome {
        ResolveOutcome::Rejected {
            reason,
            detail: format!("ResolveCustomer: {reason}"),
            attempts: 1,
        }
    }

    /// A delivery of a good token (receive count 2, the full jitter step), changed by `f`.
    fn delivery(f: impl FnOnce(&mut Delivery)) -> Delivery {
        let mut d = Delivery::new(2, parse_body(TOKEN), 1.0);
        // The store was asked and gave this delivery the claim (the store's own rows set it).
        d.store = StoreStep::Claimed;
        f(&mut d);
        d
    }

    pub(crate) fn hold() -> HoldPolicy {
        HoldPolicy {
            hold: Duration::from_secs(60),
            max_delay: Duration::from_secs(30),
        }
    }

    fn event() -> CustomerEvent {
        let Ok(request) = parse_body(TOKEN) else {
            panic!("a good token")
        };
        CustomerEvent::new(
            &request,
            customer("prod-a"),
            None,
            "2026-11-30T00:00:00Z".into(),
            1,
        )
    }

    /// A resolved delivery whose publish failed twice.
    fn held(f: impl FnOnce(&mut Delivery)) -> Delivery {
        delivery(|d| {
            d.resolved = Some(ResolveOutcome::Resolved {
                customer: customer("prod-a"),
                attempts: 1,
            });
            d.event = Some(event());
            d.settling.publish_failures = 2;
            d.settling.last_publish_error = Some("NotFound: topic".into());
            f(d);
        })
    }

    fn fp() -> Option<Fingerprint> {
        Some(Fingerprint::of(TOKEN))
    }

    /// What the README's table promises, one row each: (row, delivery, expected action).
    fn rows() -> Vec<(&'static str, Delivery, Action)> {
        let p = policy();
        let after = |attempts| p.handback_delay_drawn(2, attempts, 1.0);
        vec![
            (
                "a token is looked up in the store before any call",
                delivery(|d| d.store = StoreStep::NotAsked),
                Action::Recall,
            ),
            (
                "the store not reachable: handed back, nothing called or dead-lettered",
                delivery(|d| d.store = StoreStep::Failed("DynamoDB: timeout".into())),
                Action::HandBack {
                    cause: HandBackCause::Store,
                    delay: after(0),
                    pause_resolving: false,
                },
            ),
            (
                "another delivery holds the claim: wait for its answer",
                delivery(|d| d.store = StoreStep::HeldElsewhere { lease_until_ms: 99 }),
                Action::AwaitHolder { lease_until_ms: 99 },
            ),
            (
                "the store knew the answer: published without a call",
                delivery(|d| {
                    d.store = StoreStep::Known;
                    d.resolved = Some(ResolveOutcome::Resolved {
                        customer: customer("prod-a"),
                        attempts: 1,
                    });
                    d.event = Some(event());
                }),
                Action::Publish {
                    customer: customer("prod-a"),
                    attempts: 1,
                    after: Duration::ZERO,
                },
            ),
            (
                "product_mismatch keeps the resolved event in the letter",
                delivery(|d| {
                    d.resolved = Some(ResolveOutcome::Resolved {
                        customer: customer("prod-other"),
                        attempts: 1,
                    });
                    d.event = Some(event());
                }),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::ProductMismatch,
                    detail: "product code prod-other is not in the allow-list (product_codes)"
                        .into(),
                    event_id: fp(),
                    event: Some(event().to_json()),
                }),
            ),
            (
                "a new token is resolved first",
                delivery(|_| {}),
                Action::Resolve,
            ),
            (
                "resolved, product allowed: publish",
                delivery(|d| {
                    d.resolved = Some(ResolveOutcome::Resolved {
                        customer: customer("prod-a"),
                        attempts: 2,
                    })
                }),
                Action::Publish {
                    customer: customer("prod-a"),
                    attempts: 2,
                    after: Duration::ZERO,
                },
            ),
            (
                "resolved, product not in product_codes: product_mismatch",
                delivery(|d| {
                    d.resolved = Some(ResolveOutcome::Resolved {
                        customer: customer("prod-other"),
                        attempts: 1,
                    })
                }),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::ProductMismatch,
                    detail: "product code prod-other is not in the allow-list (product_codes)"
                        .into(),
                    event_id: fp(),
                    event: None,
                }),
            ),
            (
                "InvalidTokenException: invalid_token",
                delivery(|d| d.resolved = Some(rejected(DeadLetterReason::InvalidToken))),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::InvalidToken,
                    detail: "ResolveCustomer: invalid_token".into(),
                    event_id: fp(),
                    event: None,
                }),
            ),
            (
                "ExpiredTokenException: the worker's credentials are checked first",
                delivery(|d| d.resolved = Some(rejected(DeadLetterReason::ExpiredToken))),
                Action::CheckCredentials,
            ),
            (
                "ExpiredTokenException and the probe says the credentials are expired: handed back",
                delivery(|d| {
                    d.resolved = Some(rejected(DeadLetterReason::ExpiredToken));
                    d.credentials = Some(CredentialsCheck::Expired);
                }),
                Action::HandBack {
                    cause: HandBackCause::Resolve(FailureKind::Transient),
                    delay: after(1),
                    pause_resolving: false,
                },
            ),
            (
                "ExpiredTokenException and the probe failed: handed back",
                delivery(|d| {
                    d.resolved = Some(rejected(DeadLetterReason::ExpiredToken));
                    d.credentials = Some(CredentialsCheck::Unknown);
                }),
                Action::HandBack {
                    cause: HandBackCause::Resolve(FailureKind::Transient),
                    delay: after(1),
                    pause_resolving: false,
                },
            ),
            (
                "ExpiredTokenException, credentials valid: expired_token",
                delivery(|d| {
                    d.resolved = Some(rejected(DeadLetterReason::ExpiredToken));
                    d.credentials = Some(CredentialsCheck::Valid);
                }),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::ExpiredToken,
                    detail: "ResolveCustomer: expired_token".into(),
                    event_id: fp(),
                    event: None,
                }),
            ),
            (
                "a body that breaks the inbound format: malformed_message",
                Delivery::new(2, parse_body("{\"registrationToken\": 5}"), 1.0),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::MalformedMessage,
                    detail: "`registrationToken` must be a string, found a number".into(),
                    event_id: None,
                    event: None,
                }),
            ),
            (
                "throttled past the budget: handed back with the backoff delay",
                delivery(|d| d.resolved = Some(failure(FailureKind::Throttled))),
                Action::HandBack {
                    cause: HandBackCause::Resolve(FailureKind::Throttled),
                    delay: after(3),
                    pause_resolving: false,
                },
            ),
            (
                "internal error, 5xx, timeout, credentials: handed back",
                delivery(|d| d.resolved = Some(failure(FailureKind::Transient))),
                Action::HandBack {
                    cause: HandBackCause::Resolve(FailureKind::Transient),
                    delay: after(3),
                    pause_resolving: false,
                },
            ),
            (
                "DisabledApiException: handed back and resolving paused",
                delivery(|d| d.resolved = Some(failure(FailureKind::Disabled))),
                Action::HandBack {
                    cause: HandBackCause::Resolve(FailureKind::Disabled),
                    delay: after(3),
                    pause_resolving: true,
                },
            ),
            (
                "paused: handed back without a call",
                delivery(|d| d.paused = true),
                Action::HandBack {
                    cause: HandBackCause::Resolve(FailureKind::Disabled),
                    delay: after(0),
                    pause_resolving: false,
                },
            ),
            (
                "the publish failed: held, retried after its backoff, no second call",
                held(|d| d.settling.held_for = Duration::from_secs(10)),
                Action::Publish {
                    customer: customer("prod-a"),
                    attempts: 1,
                    after: hold().retry_delay(2, 1.0),
                },
            ),
            (
                "held past publish.hold_secs: dead-lettered as unpublished, with the event",
                held(|d| d.settling.held_for = Duration::from_secs(60)),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::Unpublished,
                    detail: "SNS publish failed 2 times over 60 s: NotFound: topic".into(),
                    event_id: fp(),
                    event: Some(event().to_json()),
                }),
            ),
            (
                "SNS refused the event as too long: dead-lettered as unpublished at once, with the event",
                held(|d| {
                    d.settling.publish_failures = 1;
                    d.settling.publish_refused = true;
                    d.settling.last_publish_error =
                        Some("InvalidParameter: Invalid parameter: Message too long".into());
                }),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::Unpublished,
                    detail: "SNS refused the event, which no retry can change: InvalidParameter: \
                             Invalid parameter: Message too long"
                        .into(),
                    event_id: fp(),
                    event: Some(event().to_json()),
                }),
            ),
            (
                "held when the process stops: dead-lettered as unpublished at once",
                held(|d| d.settling.stopping = true),
                Action::DeadLetter(Letter {
                    reason: DeadLetterReason::Unpublished,
                    detail:
                        "SNS publish failed 2 times over 0 s (process stopping): NotFound: topic"
                            .into(),
                    event_id: fp(),
                    event: Some(event().to_json()),
                }),
            ),
            (
                "held, and its unpublished letter failed too: handed back",
                held(|d| {
                    d.settling.held_for = Duration::from_secs(60);
                    d.settling.dead_letter_failed = true;
                }),
                Action::HandBack {
                    cause: HandBackCause::DeadLetter,
                    delay: after(1),
                    pause_resolving: false,
                },
            ),
            (
                "resolved earlier by this process (a token resolves once): published, no call",
                delivery(|d| {
                    d.resolved = Some(ResolveOutcome::Resolved {
                        customer: customer("prod-a"),
                        attempts: 1,
                    });
                    d.paused = true;
                }),
                Action::Publish {
                    customer: customer("prod-a"),
                    attempts: 1,
                    after: Duration::ZERO,
                },
            ),
            (
                "the dead-letter send failed: handed back",
                delivery(|d| {
                    d.resolved = Some(rejected(DeadLetterReason::InvalidToken));
                    d.settling.dead_letter_failed = true;
                }),
                Action::HandBack {
                    cause: HandBackCause::DeadLetter,
                    delay: after(1),
                    pause_resolving: false,
                },
            ),
            (
                "a malformed body whose dead-letter send failed: handed back",
                {
                    let mut d = Delivery::new(2, parse_body("{"), 1.0);
                    d.settling.dead_letter_failed = true;
                    d
                },
                Action::HandBack {
                    cause: HandBackCause::DeadLetter,
                    delay: after(1),
                    pause_resolving: false,
                },
            ),
            (
                "already published by this process: deleted, no call",
                delivery(|d| d.settling.already_published = true),
                Action::Delete(Handled::Published(Fingerprint::of(TOKEN))),
            ),
            (
                "already published wins over a pause",
                delivery(|d| {
                    d.settling.already_published = true;
                    d.paused = true;
                }),
                Action::Delete(Handled::Published(Fingerprint::of(TOKEN))),
            ),
            (
                "already dead-lettered by this process: deleted, no second letter",
                delivery(|d| {
                    d.settling.already_dead_lettered = Some(DeadLetterReason::ExpiredToken)
                }),
                Action::Delete(Handled::DeadLettered(DeadLetterReason::ExpiredToken)),
            ),
            (
                "SIGTERM past the grace period: handed back with visibility 0",
                delivery(|d| {
                    d.grace_over = true;
                    d.resolved = Some(failure(FailureKind::Throttled));
                }),
                Action::HandBack {
                    cause: HandBackCause::Shutdown,
                    delay: Duration::ZERO,
                    pause_resolving: false,
                },
            ),
        ]
    }

    #[test]
    fn decide_follows_the_outcome_table() {
        let p = policy();
        let allow = vec!["prod-a".to_owned()];
        let rules = Rules {
            product_codes: &allow,
            policy: &p,
            hold: hold(),
        };
        for (row, delivery, expected) in rows() {
            assert_eq!(decide(&delivery, rules), expected, "{row}");
        }
    }

    #[test]
    fn decide_with_no_allow_list_publishes_any_product() {
        let p = policy();
        let rules = Rules {
            product_codes: &[],
            policy: &p,
            hold: hold(),
        };
        let d = delivery(|d| {
            d.resolved = Some(ResolveOutcome::Resolved {
                customer: customer("prod-anything"),
                attempts: 1,
            })
        });
        assert!(matches!(decide(&d, rules), Action::Publish { .. }));
    }

    #[test]
    fn decide_hand_back_delays_grow_with_receives_and_stay_in_bounds() {
        let p = policy();
        let rules = Rules {
            product_codes: &[],
            policy: &p,
            hold: hold(),
        };
        let delay_at = |receive_count, draw| {
            let mut d = delivery(|d| d.resolved = Some(failure(FailureKind::Throttled)));
            d.settling.receive_count = receive_count;
            d.settling.draw = draw;
            match decide(&d, rules) {
                Action::HandBack { delay, .. } => delay,
                other => panic!("{other:?}"),
            }
        };
        assert!(delay_at(1, 1.0) < delay_at(5, 1.0));
        assert_eq!(delay_at(40, 1.0), Duration::from_secs(300), "capped");
        assert_eq!(
            delay_at(1, 0.0),
            Duration::from_secs(1),
            "at least a second"
        );
    }
}
