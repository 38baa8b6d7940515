//! The lifecycle lane's per-message step: parse the notification, read the customer's
//! entitlements when it needs them (GetEntitlements, with the same backoff and budget as
//! ResolveCustomer under its own rate limit), apply it to the customer registry (only if it is
//! newer than what the subscription holds: `store::registry`), publish the lifecycle event with
//! the subscription's state on the topic, and dead-letter what is not a known notification. What
//! to do next is decided by [`decide_lifecycle`], a pure function; the worker only gathers facts
//! and carries it out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::aws::entitlement::EntitlementsResult;
use crate::aws::metering::Failure;
use crate::aws::sns::TopicEvent;
use crate::aws::sqs::ReceivedMessage;
use crate::contract::lifecycle::{
    self, parse_lifecycle_body, Entitlement, EntitlementFilter, LifecycleEvent, Notification,
    Unrecognized, Verdict,
};
use crate::contract::{DeadLetterReason, Fingerprint};
use crate::store::registry::{Change, EventMark, Identity};
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
    /// The event, built once the registry applied the notification, and kept for every publish
    /// try (a retry may only mark it overtaken: `LifecycleEvent::overtaken`).
    pub event: Option<LifecycleEvent>,
    /// The registry could not be read or written: why.
    pub registry_failed: Option<String>,
}

impl LifecycleDelivery {
    pub fn new(receive_count: u32, notification: Result<Notification, Unrecognized>) -> Self {
        LifecycleDelivery {
            settling: Settling::new(receive_count, 1.0),
            notification,
            entitlements: None,
            event: None,
            registry_failed: None,
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
    /// Apply the notification to the customer registry and build the event from its answer.
    Record,
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
    if !notification.names_a_subscription() {
        return dead_letter(
            DeadLetterReason::UnrecognizedNotification,
            format!(
                "{} names no license, customer or agreement",
                notification.kind.event_type()
            ),
            Some(event_id),
            None,
        );
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
    // A store outage hands the notification back, never dead-letters it.
    if d.event.is_none() {
        return match &d.registry_failed {
            Some(_) => hand_back(HandBackCause::Store, 1),
            None => LifecycleAction::Record,
        };
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
        let mut d = LifecycleDelivery::new(
            message.receive_count,
            parse_lifecycle_body(&message.body, &message.message_id),
        );
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
                LifecycleAction::Record => {
                    let Ok(notification) = &d.notification else {
                        unreachable!("decide_lifecycle records only parsed notifications")
                    };
                    let entitlements = match &d.entitlements {
                        Some(EntitlementsOutcome::Fetched(list)) => Some(list.clone()),
                        _ => None,
                    };
                    match self
                        .record(notification, entitlements, message.sent_at)
                        .await
                    {
                        Ok(event) => d.event = Some(event),
                        Err(e) => {
                            tracing::warn!(error = %e, "store: the notification could not be applied to the registry; handed back");
                            d.registry_failed = Some(e.to_string());
                        }
                    }
                }
                LifecycleAction::Publish { after } => {
                    if !after.is_zero() && self.wait_unless_stopping(after).await {
                        continue; // stopping: decide again (the held event is dead-lettered)
                    }
                    let Some(mut event) = d.event.clone() else {
                        unreachable!("decide_lifecycle publishes only recorded events")
                    };
                    if d.settling.publish_failures > 0 {
                        // Held: a newer event may have been applied (and published) meanwhile.
                        event = self.unless_overtaken(event).await;
                        d.event = Some(event.clone());
                    }
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
                    if cause == HandBackCause::Store {
                        self.pause_for_store();
                    }
                    self.hand_back(lane, lease, delay).await;
                    return Outcome::HandedBack { cause, delay };
                }
                LifecycleAction::Delete(handled) => {
                    return self.settle_handled(lane, message, lease, handled).await
                }
            }
        }
    }

    /// Applies the notification to the registry and builds the event from its answer: the
    /// subscription's access after it (or, for an older event, as it stands, `stale`), its
    /// sequence, and the sign-up a resolved token left there.
    ///
    /// The notification's time orders it: the EventBridge `time`, the SNS envelope's `Timestamp`,
    /// and for a raw SNS notification (which carries none) the SQS `SentTimestamp`. If the
    /// process dies just before the write, the message comes back and is applied then; just
    /// after, its redelivery finds it applied and publishes the same state.
    async fn record(
        &self,
        notification: &Notification,
        entitlements: Option<Vec<Entitlement>>,
        sent_at: Option<DateTime<Utc>>,
    ) -> Result<LifecycleEvent, crate::store::StoreError> {
        let now = Utc::now();
        let meaning = lifecycle::meaning(notification, entitlements.as_deref(), now);
        let occurred_at = notification
            .fields
            .occurred_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(sent_at)
            .unwrap_or(now);
        let change = Change::Event {
            identity: Identity::from(&notification.fields),
            mark: EventMark {
                at: occurred_at,
                event_id: notification.fields.event_id.to_string(),
                event_type: notification.kind.event_type().to_owned(),
            },
            effect: meaning.effect,
            reason: meaning.reason,
            agreement_status: notification.fields.status.clone(),
            entitlements: entitlements
                .as_ref()
                .filter(|list| !list.is_empty())
                .and_then(|list| serde_json::to_value(list).ok()),
        };
        let verdict = match self.registry.apply(&change).await? {
            Some(applied) => applied.verdict,
            // `decide_lifecycle` dead-letters what names no subscription; were one to get here,
            // its event says what the notification means on its own.
            None => Verdict {
                access: meaning.effect.on(None),
                previous_access: None,
                sequence: 0,
                stale: false,
                signup_id: None,
                context: Default::default(),
            },
        };
        Ok(LifecycleEvent::new(
            notification,
            meaning,
            entitlements,
            occurred_at,
            &verdict,
        ))
    }

    /// A held event, as it must go out now: if the subscription applied a newer event since, it is
    /// stale with the current access, so a late retry never undoes a newer verdict. When the
    /// registry cannot be read, the event goes as it is (its `sequence` still orders it).
    async fn unless_overtaken(&self, event: LifecycleEvent) -> LifecycleEvent {
        match self.registry.current(&Identity::from(&event.fields)).await {
            Ok(Some(now)) if now.sequence > event.sequence => {
                event.overtaken(now.access, now.sequence)
            }
            Ok(_) => event,
            Err(e) => {
                tracing::debug!(error = %e, "store: the subscription could not be read before a publish retry");
                event
            }
        }
    }

    /// GetEntitlements with the in-process retries ResolveCustomer has: throttling and transient
    /// failures are retried within the budget, then the message is handed back. As for
    /// ResolveCustomer, the budget starts at the first call, not while waiting for the rate
    /// limiter, and retries keep their place in its line (oldest delivery first).
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
        let queued = tokio::time::Instant::now();
        self.entitlements.limiter().acquire_for(queued).await;
        let first_turn = AtomicBool::new(true);
        let (result, attempts) = retry_within_budget(
            &self.policy,
            self.settings.resolve.attempt_timeout(),
            "GetEntitlements",
            &subject,
            || async {
                let turn_taken = first_turn.swap(false, Ordering::Relaxed);
                match self
                    .entitlements
                    .fetch_in_line(product_code, filter, queued, turn_taken)
                    .await
                {
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
