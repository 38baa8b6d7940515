//! The lifecycle lane's per-message step: parse the notification, read the customer's
//! entitlements when it needs them (GetEntitlements, with the same backoff and budget as
//! ResolveCustomer under its own rate limit), publish the lifecycle event on the topic, and
//! dead-letter what is not a known notification. What to do next is decided by
//! [`decide_lifecycle`], a pure function; the worker only gathers facts and carries it out.

use std::time::Duration;

use rand::Rng;

use crate::aws::entitlement::EntitlementsResult;
use crate::aws::metering::Failure;
use crate::aws::sns::TopicEvent;
use crate::aws::sqs::ReceivedMessage;
use crate::contract::lifecycle::{
    self, parse_lifecycle_body, Entitlement, EntitlementFilter, LifecycleEvent, Notification,
    Unrecognized,
};
use crate::contract::{DeadLetterReason, Fingerprint};
use crate::worker::act::Attempt;
use crate::worker::decide::{HandBackCause, Handled, Letter, Settling};
use crate::worker::lane::Lane;
use crate::worker::lease::Lease;
use crate::worker::retry::{retry_within_budget, BackoffPolicy, HoldPolicy};
use crate::worker::{Outcome, Worker};

/// What this delivery's GetEntitlements calls ended in.
#[derive(Debug, Clone, PartialEq)]
pub enum EntitlementsOutcome {
    Fetched(Vec<Entitlement>),
    /// InvalidParameterException: the notification names a product or customer the seller's
    /// account does not have.
    Rejected {
        detail: String,
    },
    /// Retries (or the budget) ran out: hand the message back, never dead-letter.
    Unavailable {
        failure: Failure,
        attempts: u32,
    },
}

/// Everything known about one lifecycle delivery so far.
#[derive(Debug, Clone)]
pub struct LifecycleDelivery {
    pub settling: Settling,
    pub notification: Result<Notification, Unrecognized>,
    /// Once asked (only for license and entitlement updates).
    pub entitlements: Option<EntitlementsOutcome>,
    /// The event, built once and kept as it is for every publish try.
    pub event: Option<LifecycleEvent>,
}

impl LifecycleDelivery {
    pub fn new(receive_count: u32, notification: Result<Notification, Unrecognized>) -> Self {
        LifecycleDelivery {
            settling: Settling::new(receive_count, 1.0),
            notification,
            entitlements: None,
            event: None,
        }
    }

    pub fn event_id(&self) -> Option<&Fingerprint> {
        self.notification.as_ref().ok().map(|n| &n.fields.event_id)
    }
}

/// The one thing to do next with a lifecycle delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleAction {
    Delete(Handled),
    /// Read every page of the customer's entitlements (with the in-process retries).
    FetchEntitlements {
        product_code: String,
        filter: EntitlementFilter,
    },
    /// Publish the lifecycle event after `after`, then delete the message.
    Publish {
        after: Duration,
    },
    DeadLetter(Letter),
    HandBack {
        cause: HandBackCause,
        delay: Duration,
    },
}

/// Decides the next action for a lifecycle delivery.
pub fn decide_lifecycle(
    d: &LifecycleDelivery,
    policy: &BackoffPolicy,
    hold: HoldPolicy,
) -> LifecycleAction {
    let hand_back = |cause, attempts| LifecycleAction::HandBack {
        cause,
        delay: d.settling.hand_back_delay(policy, attempts),
    };
    let dead_letter = |reason, detail, event_id, event| {
        if d.settling.dead_letter_failed {
            hand_back(HandBackCause::DeadLetter, 1)
        } else {
            LifecycleAction::DeadLetter(Letter {
                reason,
                detail,
                event_id,
                event,
            })
        }
    };
    if let Some(reason) = d.settling.already_dead_lettered {
        return LifecycleAction::Delete(Handled::DeadLettered(reason));
    }
    let notification = match &d.notification {
        Ok(n) => n,
        Err(unrecognized) => {
            return dead_letter(
                DeadLetterReason::UnrecognizedNotification,
                unrecognized.detail.clone(),
                None,
                None,
            )
        }
    };
    let event_id = notification.fields.event_id.clone();
    if d.settling.already_published {
        return LifecycleAction::Delete(Handled::Published(event_id));
    }
    if let Some(filter) = notification.entitlement_filter() {
        match (&d.entitlements, &notification.fields.product_code) {
            (None, Some(code)) => {
                return LifecycleAction::FetchEntitlements {
                    product_code: code.clone(),
                    filter,
                }
            }
            (None, None) => {
                return dead_letter(
                    DeadLetterReason::UnrecognizedNotification,
                    format!("{} without a product code", notification.kind.event_type()),
                    Some(event_id),
                    None,
                )
            }
            (Some(EntitlementsOutcome::Rejected { detail }), _) => {
                return dead_letter(
                    DeadLetterReason::UnrecognizedNotification,
                    detail.clone(),
                    Some(event_id),
                    None,
                )
            }
            (Some(EntitlementsOutcome::Unavailable { failure, attempts }), _) => {
                return hand_back(HandBackCause::Entitlements(failure.kind), *attempts)
            }
            (Some(EntitlementsOutcome::Fetched(_)), _) => {}
        }
    }
    match d.settling.next_publish(hold) {
        Ok(after) => LifecycleAction::Publish { after },
        Err(detail) => dead_letter(
            DeadLetterReason::Unpublished,
            detail,
            Some(event_id),
            d.event.as_ref().map(LifecycleEvent::to_json),
        ),
    }
}

impl Worker {
    /// Gathers the facts about one lifecycle message and carries out what `decide_lifecycle`
    /// says, until an action settles the message.
    pub(super) async fn process_lifecycle(
        &self,
        lane: &Lane,
        message: &ReceivedMessage,
        lease: &Lease,
    ) -> Outcome {
        let mut d =
            LifecycleDelivery::new(message.receive_count, parse_lifecycle_body(&message.body));
        d.settling.draw = rand::rng().random_range(0.0..=1.0);
        let event_id = d.event_id().cloned();
        if let Some(event_id) = &event_id {
            tracing::Span::current().record("event_id", tracing::field::display(event_id));
        }
        self.observe(&mut d.settling, &message.message_id, event_id.as_ref());
        let mut attempts = 0;
        let mut attempt = Attempt::new(lane, message, lease);
        loop {
            self.refresh(&mut d.settling, &attempt.held);
            match decide_lifecycle(&d, &self.policy, self.hold) {
                LifecycleAction::FetchEntitlements {
                    product_code,
                    filter,
                } => {
                    let outcome = self.read_entitlements(&d, &product_code, &filter).await;
                    if let EntitlementsOutcome::Unavailable { attempts: a, .. } = &outcome {
                        attempts = *a;
                    }
                    d.entitlements = Some(outcome);
                }
                LifecycleAction::Publish { after } => {
                    if !after.is_zero() && self.wait_unless_stopping(after).await {
                        continue; // stopping: decide again (the held event is dead-lettered)
                    }
                    let Ok(notification) = &d.notification else {
                        unreachable!("decide_lifecycle publishes only parsed notifications")
                    };
                    let entitlements = match &d.entitlements {
                        Some(EntitlementsOutcome::Fetched(list)) => Some(list.clone()),
                        _ => None,
                    };
                    let event = d
                        .event
                        .get_or_insert_with(|| {
                            lifecycle::decide(notification, entitlements, chrono::Utc::now())
                        })
                        .clone();
                    let event_id = event.fields.event_id.clone();
                    let (event_type, access) = (event.event_type, event.access.as_str());
                    let publish = (event_id, TopicEvent::Lifecycle(event));
                    if let Some(event_id) = self
                        .publish_then_delete(&mut attempt, &mut d.settling, publish)
                        .await
                    {
                        self.telemetry.metrics.lifecycle_event(event_type, access);
                        return Outcome::Published { event_id, attempts };
                    }
                }
                LifecycleAction::DeadLetter(letter) => {
                    if let Some(outcome) = self
                        .retire(&mut attempt, &mut d.settling, letter, None)
                        .await
                    {
                        return outcome;
                    }
                }
                LifecycleAction::HandBack { cause, delay } => {
                    self.hand_back(lane, lease, delay).await;
                    return Outcome::HandedBack { cause, delay };
                }
                LifecycleAction::Delete(handled) => {
                    return self.settle_handled(lane, message, lease, handled).await
                }
            }
        }
    }

    /// GetEntitlements with the in-process retries ResolveCustomer has: throttling and transient
    /// failures are retried within the budget, then the message is handed back.
    async fn read_entitlements(
        &self,
        d: &LifecycleDelivery,
        product_code: &str,
        filter: &EntitlementFilter,
    ) -> EntitlementsOutcome {
        let subject = d
            .event_id()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let (result, attempts) = retry_within_budget(
            &self.policy,
            self.settings.resolve.attempt_timeout(),
            "GetEntitlements",
            &subject,
            || async {
                match self.entitlements.fetch(product_code, filter).await {
                    EntitlementsResult::Fetched(list) => Ok(Ok(list)),
                    EntitlementsResult::Rejected { detail } => Ok(Err(detail)),
                    EntitlementsResult::Failed(failure) => Err(failure),
                }
            },
        )
        .await;
        match result {
            Ok(Ok(list)) => EntitlementsOutcome::Fetched(list),
            Ok(Err(detail)) => EntitlementsOutcome::Rejected { detail },
            Err(failure) => EntitlementsOutcome::Unavailable { failure, attempts },
        }
    }
}

#[cfg(test)]
mod tests;
