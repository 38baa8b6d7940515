//! `decide_lifecycle`'s table: one row per test.

use super::*;
use crate::aws::metering::FailureKind;
use crate::worker::decide::tests::{hold, policy};

const CREATED: &str =
    include_str!("../../../tests/fixtures/lifecycle/agreement-created-manufacturer.json");
const LICENSE_UPDATED: &str =
    include_str!("../../../tests/fixtures/lifecycle/license-updated-manufacturer.json");

fn delivery(body: &str, f: impl FnOnce(&mut LifecycleDelivery)) -> LifecycleDelivery {
    let mut d = LifecycleDelivery::new(2, parse_lifecycle_body(body, "m-1"));
    f(&mut d);
    d
}

/// The event the registry's answer builds (granted, first of its subscription).
fn recorded(d: &mut LifecycleDelivery) {
    let n = d.notification.as_ref().expect("a parsed notification");
    let now = chrono::Utc::now();
    let meaning = lifecycle::meaning(n, None, now);
    let verdict = Verdict {
        access: meaning.effect.on(None),
        previous_access: None,
        sequence: 1,
        stale: false,
        signup_id: None,
        context: Default::default(),
    };
    d.event = Some(LifecycleEvent::new(n, meaning, None, now, &verdict));
}

fn next(d: &LifecycleDelivery) -> LifecycleAction {
    decide_lifecycle(d, &policy(), hold())
}

fn event_id(d: &LifecycleDelivery) -> Fingerprint {
    d.event_id().cloned().expect("a parsed notification")
}

#[test]
fn an_unknown_body_is_dead_lettered_as_unrecognized() {
    let d = delivery(r#"{"hello":"world"}"#, |_| {});
    assert!(matches!(
        next(&d),
        LifecycleAction::DeadLetter(Letter {
            reason: DeadLetterReason::UnrecognizedNotification,
            event_id: None,
            ..
        })
    ));
}

#[test]
fn an_unknown_body_whose_letter_failed_is_handed_back() {
    let d = delivery("not json", |d| d.settling.dead_letter_failed = true);
    assert!(matches!(
        next(&d),
        LifecycleAction::HandBack {
            cause: HandBackCause::DeadLetter,
            ..
        }
    ));
}

#[test]
fn an_agreement_event_is_recorded_without_entitlements_then_published() {
    let d = delivery(CREATED, |_| {});
    assert_eq!(next(&d), LifecycleAction::Record);
    let d = delivery(CREATED, recorded);
    assert_eq!(
        next(&d),
        LifecycleAction::Publish {
            after: Duration::ZERO
        }
    );
}

#[test]
fn a_store_outage_hands_the_notification_back_never_dead_letters_it() {
    let d = delivery(CREATED, |d| {
        d.registry_failed = Some("store unavailable: connection refused".into())
    });
    match next(&d) {
        LifecycleAction::HandBack { cause, delay } => {
            assert_eq!(cause, HandBackCause::Store);
            assert!(delay >= Duration::from_secs(1), "{delay:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_notification_that_names_no_subscription_is_dead_lettered() {
    let mut created: serde_json::Value = serde_json::from_str(CREATED).unwrap();
    created["detail"]["agreement"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let d = delivery(&created.to_string(), |_| {});
    match next(&d) {
        LifecycleAction::DeadLetter(Letter {
            reason: DeadLetterReason::UnrecognizedNotification,
            detail,
            event_id: Some(_),
            ..
        }) => assert!(detail.contains("names no license"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_license_update_reads_entitlements_first() {
    let d = delivery(LICENSE_UPDATED, |_| {});
    assert!(matches!(
        next(&d),
        LifecycleAction::FetchEntitlements {
            filter: EntitlementFilter::LicenseArn(_),
            ..
        }
    ));
}

#[test]
fn a_license_update_with_entitlements_is_recorded_then_published() {
    let d = delivery(LICENSE_UPDATED, |d| {
        d.entitlements = Some(EntitlementsOutcome::Fetched(vec![]))
    });
    assert_eq!(next(&d), LifecycleAction::Record);
    let d = delivery(LICENSE_UPDATED, |d| {
        d.entitlements = Some(EntitlementsOutcome::Fetched(vec![]));
        recorded(d);
    });
    assert_eq!(
        next(&d),
        LifecycleAction::Publish {
            after: Duration::ZERO
        }
    );
}

#[test]
fn entitlements_unavailable_hand_back_never_dead_letter() {
    for kind in [
        FailureKind::Throttled,
        FailureKind::Transient,
        FailureKind::Disabled,
    ] {
        let d = delivery(LICENSE_UPDATED, |d| {
            d.entitlements = Some(EntitlementsOutcome::Unavailable {
                failure: Failure {
                    kind,
                    detail: "x".into(),
                },
                attempts: 6,
            })
        });
        match next(&d) {
            LifecycleAction::HandBack { cause, delay } => {
                assert_eq!(cause, HandBackCause::Entitlements(kind));
                assert!(delay >= Duration::from_secs(1), "{delay:?}");
            }
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

#[test]
fn entitlements_rejected_are_dead_lettered_with_the_event_id() {
    let d = delivery(LICENSE_UPDATED, |d| {
        d.entitlements = Some(EntitlementsOutcome::Rejected {
            detail: "GetEntitlements: InvalidParameterException".into(),
        })
    });
    let id = event_id(&d);
    assert_eq!(
        next(&d),
        LifecycleAction::DeadLetter(Letter {
            reason: DeadLetterReason::UnrecognizedNotification,
            detail: "GetEntitlements: InvalidParameterException".into(),
            event_id: Some(id),
            event: None,
        })
    );
}

#[test]
fn a_redelivery_of_a_published_event_is_deleted() {
    let d = delivery(CREATED, |d| d.settling.already_published = true);
    let id = event_id(&d);
    assert_eq!(next(&d), LifecycleAction::Delete(Handled::Published(id)));
}

#[test]
fn a_redelivery_of_a_dead_letter_is_deleted() {
    let d = delivery("junk", |d| {
        d.settling.already_dead_lettered = Some(DeadLetterReason::UnrecognizedNotification)
    });
    assert_eq!(
        next(&d),
        LifecycleAction::Delete(Handled::DeadLettered(
            DeadLetterReason::UnrecognizedNotification
        ))
    );
}

#[test]
fn a_failed_publish_is_retried_after_a_backoff_while_held() {
    let d = delivery(CREATED, |d| {
        recorded(d);
        d.settling.publish_failures = 2;
        d.settling.held_for = Duration::from_secs(10);
    });
    match next(&d) {
        LifecycleAction::Publish { after } => assert!(after >= Duration::from_millis(100)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_held_event_past_its_hold_or_at_shutdown_is_dead_lettered_with_the_event() {
    for (held_for, stopping) in [(Duration::from_secs(60), false), (Duration::ZERO, true)] {
        let d = delivery(CREATED, |d| {
            d.settling.publish_failures = 1;
            d.settling.held_for = held_for;
            d.settling.stopping = stopping;
            d.settling.last_publish_error = Some("NotFound".into());
            recorded(d);
        });
        match next(&d) {
            LifecycleAction::DeadLetter(Letter {
                reason: DeadLetterReason::Unpublished,
                event: Some(event),
                detail,
                ..
            }) => {
                assert!(event.contains("marketplace.agreement.created"), "{event}");
                assert!(detail.contains("NotFound"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}
