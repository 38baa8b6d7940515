//! The usage lane (issue #21): each message of the usage queue is one usage event, added durably
//! to its (subscription, dimension, hour) total in the store, at most once per `usageId`, before
//! the message is deleted; `meter.rs` sends every closed hour once with BatchMeterUsage. What to
//! do with a message is decided by [`decide_usage`], a pure function; where its quantity goes and
//! when an hour is due, by `schedule.rs`, pure too. The worker gathers facts and carries them out.

mod count;
mod meter;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use crate::aws::sqs::ReceivedMessage;
use crate::config::Settings;
use crate::contract::usage::{parse_usage_body, UsageEvent};
use crate::contract::{DeadLetterReason, Malformed};
use crate::store::usage::{StoredEvent, UsageLedger};
use crate::store::Store;
use crate::worker::act::Attempt;
use crate::worker::decide::{HandBackCause, Handled, Letter, Settling};
use crate::worker::lane::Lane;
use crate::worker::lease::Lease;
use crate::worker::ratelimit::{AdaptiveRateLimiter, RatePolicy};
use crate::worker::retry::BackoffPolicy;
use crate::worker::{Outcome, Worker};
use count::{Counter, Incoming};
use schedule::HourRules;

/// What the usage lane shares across its deliveries and the metering pass.
pub struct UsageParts {
    pub ledger: UsageLedger,
    /// BatchMeterUsage's own adaptive limit (its quota is not ResolveCustomer's).
    pub limiter: Arc<AdaptiveRateLimiter>,
    pub rules: HourRules,
    pub metering: aws_sdk_marketplacemetering::Client,
    /// Adds events to their hours, many per write.
    counter: Counter,
    /// The metering pass's memory: when each hour may be retried, and the last zero-record hour.
    memory: Mutex<meter::Memory>,
}

impl UsageParts {
    pub fn new(
        settings: &Settings,
        store: Store,
        metering: aws_sdk_marketplacemetering::Client,
    ) -> Self {
        let m = &settings.metering;
        let mut policy = RatePolicy::from_settings(&settings.rate_limit);
        policy.max = Some(
            policy
                .max
                .map_or(m.max_calls_per_sec, |max| max.min(m.max_calls_per_sec)),
        );
        policy.initial = policy.initial.min(m.max_calls_per_sec);
        policy.min = policy.min.min(policy.initial);
        UsageParts {
            ledger: UsageLedger::new(store),
            limiter: Arc::new(AdaptiveRateLimiter::new(policy)),
            rules: HourRules::from_settings(m),
            metering,
            counter: Counter::default(),
            memory: Mutex::new(meter::Memory {
                retry_at: HashMap::new(),
                zero_hour: None,
            }),
        }
    }
}

/// Where a usage delivery stands with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountStep {
    /// Added to its hour (or, `carried_from` its own, to a later one).
    Counted { carried_from: Option<i64> },
    /// Its `usageId` was counted before.
    AlreadyCounted,
    /// Its hour can no longer be sent, and no later hour may take it.
    OutsideWindow { detail: String },
    /// The store did not answer (or kept losing to other writers).
    Failed(String),
}

/// Everything known about one usage delivery so far.
#[derive(Debug, Clone)]
pub struct UsageDelivery {
    pub settling: Settling,
    pub event: Result<UsageEvent, Malformed>,
    pub count: Option<CountStep>,
}

/// The one thing to do next with a usage delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum UsageAction {
    Delete(Handled),
    /// Add the event to its hour in the store, for `product`.
    Count {
        product: String,
    },
    /// In the store: delete the message.
    Counted {
        carried: bool,
        duplicate: bool,
    },
    DeadLetter(Letter),
    HandBack {
        cause: HandBackCause,
        delay: Duration,
    },
}

/// The product a usage event is for: its own `productCode`, or the only one `product_codes`
/// names; an event for a product not on a non-empty list is refused.
pub fn product_of(event: &UsageEvent, product_codes: &[String]) -> Result<String, Letter> {
    let letter = |reason, detail: String| Letter {
        reason,
        detail,
        event_id: None,
        event: None,
    };
    match (&event.product_code, product_codes) {
        (Some(code), []) => Ok(code.clone()),
        (Some(code), list) if list.contains(code) => Ok(code.clone()),
        (Some(code), _) => Err(letter(
            DeadLetterReason::ProductMismatch,
            format!("productCode {code:?} is not in product_codes"),
        )),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(letter(
            DeadLetterReason::MalformedMessage,
            "missing `productCode` (it may be left out only when product_codes names exactly one \
             product)"
                .into(),
        )),
    }
}

/// Decides the next action for a usage delivery.
pub fn decide_usage(
    d: &UsageDelivery,
    product_codes: &[String],
    policy: &BackoffPolicy,
) -> UsageAction {
    let dead_letter = |letter: Letter| {
        if d.settling.dead_letter_failed {
            UsageAction::HandBack {
                cause: HandBackCause::DeadLetter,
                delay: d.settling.hand_back_delay(policy, 1),
            }
        } else {
            UsageAction::DeadLetter(letter)
        }
    };
    if let Some(reason) = d.settling.already_dead_lettered {
        return UsageAction::Delete(Handled::DeadLettered(reason));
    }
    let event = match &d.event {
        Ok(event) => event,
        Err(malformed) => {
            return dead_letter(Letter {
                reason: DeadLetterReason::MalformedMessage,
                detail: malformed.detail.clone(),
                event_id: None,
                event: None,
            })
        }
    };
    let product = match product_of(event, product_codes) {
        Ok(product) => product,
        Err(letter) => return dead_letter(letter),
    };
    match &d.count {
        None => UsageAction::Count { product },
        Some(CountStep::Counted { carried_from }) => UsageAction::Counted {
            carried: carried_from.is_some(),
            duplicate: false,
        },
        Some(CountStep::AlreadyCounted) => UsageAction::Counted {
            carried: false,
            duplicate: true,
        },
        Some(CountStep::OutsideWindow { detail }) => dead_letter(Letter {
            reason: DeadLetterReason::OutsideMeteringWindow,
            detail: format!(
                "{detail}; quantity {} of {} not metered",
                event.quantity, event.dimension
            ),
            event_id: None,
            event: None,
        }),
        Some(CountStep::Failed(_)) => UsageAction::HandBack {
            cause: HandBackCause::Store,
            delay: d.settling.hand_back_delay(policy, 1),
        },
    }
}

impl Worker {
    /// Gathers the facts about one usage message and carries out what `decide_usage` says.
    pub(super) async fn process_usage(
        &self,
        lane: &Lane,
        message: &ReceivedMessage,
        lease: &Lease,
    ) -> Outcome {
        let Some(usage) = &self.usage else {
            unreachable!("the usage lane exists only with its parts")
        };
        let mut d = UsageDelivery {
            settling: Settling::new(message.receive_count, rand::rng().random_range(0.0..=1.0)),
            event: parse_usage_body(&message.body),
            count: None,
        };
        self.observe(&mut d.settling, &message.message_id, None);
        let mut attempt = Attempt::new(lane, message, lease);
        loop {
            self.refresh(&mut d.settling, &attempt.held);
            match decide_usage(&d, &self.settings.product_codes, &self.policy) {
                UsageAction::Count { product } => {
                    let Ok(event) = &d.event else {
                        unreachable!("decide_usage counts only parsed events")
                    };
                    let incoming = Incoming {
                        event: event.clone(),
                        product,
                        stored: StoredEvent {
                            usage_id: event.usage_id.clone(),
                            body: message.body.clone(),
                            quantity: event.quantity,
                            message_id: message.message_id.clone(),
                            receive_count: message.receive_count,
                            carried_from: None,
                        },
                    };
                    d.count = Some(
                        usage
                            .counter
                            .count(&usage.ledger, usage.rules, incoming)
                            .await,
                    );
                }
                UsageAction::Counted { carried, duplicate } => {
                    let result = match (duplicate, carried) {
                        (true, _) => "duplicate",
                        (false, true) => "carried",
                        (false, false) => "counted",
                    };
                    self.telemetry.metrics.usage_event(result);
                    self.delete(lane, message, lease).await;
                    return Outcome::Counted { carried, duplicate };
                }
                UsageAction::DeadLetter(letter) => {
                    if let Some(outcome) = self
                        .retire(&mut attempt, &mut d.settling, letter, None)
                        .await
                    {
                        self.telemetry.metrics.usage_event("dead_lettered");
                        return outcome;
                    }
                }
                UsageAction::HandBack { cause, delay } => {
                    if let Some(CountStep::Failed(error)) = &d.count {
                        tracing::warn!(%error, "store: the usage could not be counted; handed back");
                    }
                    self.telemetry.metrics.usage_event("handed_back");
                    self.hand_back(lane, lease, delay).await;
                    return Outcome::HandedBack { cause, delay };
                }
                UsageAction::Delete(handled) => {
                    return self.settle_handled(lane, message, lease, handled).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2.0,
            max_attempts: 3,
            budget: Duration::from_secs(10),
            handback_max: Duration::from_secs(60),
        }
    }

    fn delivery(body: &str) -> UsageDelivery {
        UsageDelivery {
            settling: Settling::new(1, 0.5),
            event: parse_usage_body(body),
            count: None,
        }
    }

    const LEGACY: &str = r#"{"usageId":"u","customerIdentifier":"c","dimension":"d","quantity":3,
        "timestamp":"2026-12-04T10:15:00Z"}"#;

    fn reason(action: UsageAction) -> DeadLetterReason {
        match action {
            UsageAction::DeadLetter(letter) => letter.reason,
            other => panic!("not a dead-letter: {other:?}"),
        }
    }

    #[test]
    fn the_usage_decision_table() {
        let p = policy();
        let one = vec!["prod-abc".to_owned()];
        let two = vec!["prod-abc".to_owned(), "prod-def".to_owned()];
        // Malformed: dead-lettered with the parser's reason.
        assert_eq!(
            reason(decide_usage(&delivery("{}"), &one, &p)),
            DeadLetterReason::MalformedMessage
        );
        // No productCode: filled in from a one-entry list, else malformed.
        assert_eq!(
            decide_usage(&delivery(LEGACY), &one, &p),
            UsageAction::Count {
                product: "prod-abc".into()
            }
        );
        assert_eq!(
            reason(decide_usage(&delivery(LEGACY), &two, &p)),
            DeadLetterReason::MalformedMessage
        );
        // A product not on the list.
        let other = LEGACY.replace("\"usageId\"", "\"productCode\":\"prod-zzz\",\"usageId\"");
        assert_eq!(
            reason(decide_usage(&delivery(&other), &one, &p)),
            DeadLetterReason::ProductMismatch
        );
        // After the store step.
        let mut d = delivery(LEGACY);
        d.count = Some(CountStep::Counted {
            carried_from: Some(0),
        });
        assert_eq!(
            decide_usage(&d, &one, &p),
            UsageAction::Counted {
                carried: true,
                duplicate: false
            }
        );
        d.count = Some(CountStep::AlreadyCounted);
        assert_eq!(
            decide_usage(&d, &one, &p),
            UsageAction::Counted {
                carried: false,
                duplicate: true
            }
        );
        d.count = Some(CountStep::OutsideWindow {
            detail: "too old".into(),
        });
        let UsageAction::DeadLetter(letter) = decide_usage(&d, &one, &p) else {
            panic!("outside the window is dead-lettered")
        };
        assert_eq!(letter.reason, DeadLetterReason::OutsideMeteringWindow);
        assert!(
            letter.detail.contains("quantity 3 of d"),
            "{}",
            letter.detail
        );
        d.count = Some(CountStep::Failed("down".into()));
        assert!(matches!(
            decide_usage(&d, &one, &p),
            UsageAction::HandBack {
                cause: HandBackCause::Store,
                ..
            }
        ));
        // A dead-letter that failed is handed back; one sent before is deleted.
        let mut d = delivery("{}");
        d.settling.dead_letter_failed = true;
        assert!(matches!(
            decide_usage(&d, &one, &p),
            UsageAction::HandBack {
                cause: HandBackCause::DeadLetter,
                ..
            }
        ));
        d.settling.already_dead_lettered = Some(DeadLetterReason::MalformedMessage);
        assert_eq!(
            decide_usage(&d, &one, &p),
            UsageAction::Delete(Handled::DeadLettered(DeadLetterReason::MalformedMessage))
        );
    }
}
