use chrono::TimeZone;
use serde_json::{json, Value};

use super::*;

fn fixture(name: &str) -> &'static str {
    match name {
        "agreement-created-proposer" => {
            include_str!("../../../tests/fixtures/lifecycle/agreement-created-proposer.json")
        }
        "agreement-created-proposer-renew" => {
            include_str!("../../../tests/fixtures/lifecycle/agreement-created-proposer-renew.json")
        }
        "agreement-created-manufacturer" => {
            include_str!("../../../tests/fixtures/lifecycle/agreement-created-manufacturer.json")
        }
        "agreement-amended-proposer" => {
            include_str!("../../../tests/fixtures/lifecycle/agreement-amended-proposer.json")
        }
        "agreement-amended-manufacturer" => {
            include_str!("../../../tests/fixtures/lifecycle/agreement-amended-manufacturer.json")
        }
        "agreement-ended-proposer" => {
            include_str!("../../../tests/fixtures/lifecycle/agreement-ended-proposer.json")
        }
        "agreement-ended-manufacturer" => {
            include_str!("../../../tests/fixtures/lifecycle/agreement-ended-manufacturer.json")
        }
        "license-updated-manufacturer" => {
            include_str!("../../../tests/fixtures/lifecycle/license-updated-manufacturer.json")
        }
        "license-deprovisioned-manufacturer" => {
            include_str!(
                "../../../tests/fixtures/lifecycle/license-deprovisioned-manufacturer.json"
            )
        }
        "agreement-advisory-issued-manufacturer" => include_str!(
            "../../../tests/fixtures/lifecycle/agreement-advisory-issued-manufacturer.json"
        ),
        "sns-subscribe-success" => {
            include_str!("../../../tests/fixtures/lifecycle/sns-subscribe-success.json")
        }
        "sns-entitlement-updated-envelope" => {
            include_str!("../../../tests/fixtures/lifecycle/sns-entitlement-updated-envelope.json")
        }
        other => panic!("no fixture {other}"),
    }
}

fn ok(body: &str) -> Notification {
    crate::contract::testing::parsed(body, |b| parse_lifecycle_body(b, "m-sqs"))
}

fn unrecognized(body: &str) -> Unrecognized {
    crate::contract::testing::refused(body, |b| parse_lifecycle_body(b, "m-sqs"))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

/// An EventBridge event of `detail_type` built on AWS's License Updated sample.
fn with_detail_type(detail_type: &str) -> String {
    let mut v: Value = serde_json::from_str(fixture("license-updated-manufacturer")).unwrap();
    v["detail-type"] = json!(detail_type);
    v.to_string()
}

#[test]
fn every_aws_sample_maps_to_its_event_type_and_effect() {
    let cases = [
        (
            "agreement-created-proposer",
            "marketplace.agreement.created",
            Some(Effect::Set(Access::Grant)),
        ),
        (
            "agreement-created-proposer-renew",
            "marketplace.agreement.created",
            Some(Effect::Set(Access::Grant)),
        ),
        (
            "agreement-created-manufacturer",
            "marketplace.agreement.created",
            Some(Effect::Set(Access::Grant)),
        ),
        (
            "agreement-amended-proposer",
            "marketplace.agreement.amended",
            Some(Effect::Keep {
                if_new: Access::Grant,
            }),
        ),
        (
            "agreement-amended-manufacturer",
            "marketplace.agreement.amended",
            Some(Effect::Keep {
                if_new: Access::Grant,
            }),
        ),
        (
            "agreement-ended-proposer",
            "marketplace.agreement.ended",
            Some(Effect::Set(Access::Revoke)),
        ),
        (
            "agreement-ended-manufacturer",
            "marketplace.agreement.ended",
            Some(Effect::Set(Access::Revoke)),
        ),
        (
            "license-updated-manufacturer",
            "marketplace.license.updated",
            None,
        ),
        (
            "license-deprovisioned-manufacturer",
            "marketplace.license.deprovisioned",
            Some(Effect::Set(Access::Revoke)),
        ),
        (
            "sns-subscribe-success",
            "marketplace.subscription.succeeded",
            Some(Effect::Set(Access::Grant)),
        ),
        (
            "sns-entitlement-updated-envelope",
            "marketplace.entitlement.updated",
            None,
        ),
    ];
    for (name, event_type, access) in cases {
        let n = ok(fixture(name));
        assert_eq!(n.kind.event_type(), event_type, "{name}");
        // Updates depend on their entitlements: none read yet keeps access.
        let expected = access.unwrap_or(Effect::Keep {
            if_new: Access::Grant,
        });
        assert_eq!(meaning(&n, None, now()).effect, expected, "{name}");
    }
}

#[test]
fn eventbridge_fields_come_from_the_envelope_and_detail() {
    let n = ok(fixture("agreement-created-manufacturer"));
    assert_eq!(n.fields.source, Source::EventBridge);
    assert_eq!(
        n.fields.customer_aws_account_id.as_deref(),
        Some("845735284135")
    );
    assert_eq!(
        n.fields.agreement_id.as_deref(),
        Some("agmt-4mwg1nevbokzw95eca5797ixs")
    );
    assert_eq!(n.fields.offer_id.as_deref(), Some("offer-1234567890123"));
    assert_eq!(n.fields.intent.as_deref(), Some("NEW"));
    assert_eq!(n.fields.status.as_deref(), Some("ACTIVE"));
    assert_eq!(
        n.fields.occurred_at.as_deref(),
        Some("2024-08-30T21:36:03Z")
    );
    // Agreement events name the product by id only; the product code is not known.
    assert_eq!(n.fields.product_code, None);
    assert_eq!(n.fields.license_arn, None);
    assert_eq!(
        n.fields.event_id,
        Fingerprint::of("eventbridge:12345678-1234-1234-1234-123456789012")
    );

    let n = ok(fixture("license-updated-manufacturer"));
    assert_eq!(
        n.fields.product_code.as_deref(),
        Some("aw4fgf5tyo5w2ap6fEXAMPLE")
    );
    assert_eq!(
        n.fields.license_arn.as_deref(),
        Some("arn:aws:license-manager:us-east-1:123456789012:l-e52ca6f38bf84d0fafb8802ca15ac11x")
    );
    assert_eq!(
        n.fields.offer_id.as_deref(),
        Some("8kkr91jo647j3qxlcjhlqce7y")
    );
}

#[test]
fn every_handled_detail_type_with_each_role() {
    let cases = [
        (
            "Purchase Agreement Created - Manufacturer",
            NotificationKind::AgreementCreated,
        ),
        (
            "Purchase Agreement Created - Proposer",
            NotificationKind::AgreementCreated,
        ),
        (
            "Purchase Agreement Amended - Manufacturer",
            NotificationKind::AgreementAmended,
        ),
        (
            "Purchase Agreement Amended - Proposer",
            NotificationKind::AgreementAmended,
        ),
        (
            "Purchase Agreement Ended - Manufacturer",
            NotificationKind::AgreementEnded,
        ),
        (
            "Purchase Agreement Ended - Proposer",
            NotificationKind::AgreementEnded,
        ),
        (
            "License Updated - Manufacturer",
            NotificationKind::LicenseUpdated,
        ),
        (
            "License Deprovisioned - Manufacturer",
            NotificationKind::LicenseDeprovisioned,
        ),
    ];
    for (detail_type, kind) in cases {
        assert_eq!(
            ok(&with_detail_type(detail_type)).kind,
            kind,
            "{detail_type}"
        );
    }
}

#[test]
fn other_detail_types_of_the_source_are_unrecognized() {
    let advisory = unrecognized(fixture("agreement-advisory-issued-manufacturer"));
    assert!(
        advisory.detail.contains("Advisory Issued"),
        "{}",
        advisory.detail
    );
    for detail_type in [
        "Purchase Agreement Ending - Proposer",
        "Purchase Agreement Created - Acceptor",
        "License Updated - Proposer",
        "License Updated",
        "Agreement Cancellation Request Approved - Proposer",
        "",
    ] {
        let u = unrecognized(&with_detail_type(detail_type));
        assert!(
            u.detail.contains("detail-type"),
            "{detail_type}: {}",
            u.detail
        );
    }
}

#[test]
fn legacy_actions_raw_and_in_the_sns_envelope() {
    let cases = [
        (
            "subscribe-success",
            NotificationKind::SubscribeSuccess,
            Effect::Set(Access::Grant),
        ),
        (
            "subscribe-fail",
            NotificationKind::SubscribeFail,
            Effect::Keep {
                if_new: Access::Revoke,
            },
        ),
        (
            "unsubscribe-pending",
            NotificationKind::UnsubscribePending,
            Effect::Keep {
                if_new: Access::Grant,
            },
        ),
        (
            "unsubscribe-success",
            NotificationKind::UnsubscribeSuccess,
            Effect::Set(Access::Revoke),
        ),
    ];
    for (action, kind, access) in cases {
        let message = json!({"action": action, "customer-identifier": " X01EXAMPLEX",
            "product-code": "n0123EXAMPLEXXXXXXXXXXXX", "offer-identifier": "offer-abc"});
        let envelope = json!({"Type": "Notification", "MessageId": "m-1",
            "Timestamp": "2026-11-30T10:00:00.000Z", "Message": message.to_string()});
        for (body, form) in [
            (message.to_string(), "raw"),
            (envelope.to_string(), "envelope"),
        ] {
            let n = ok(&body);
            assert_eq!(n.kind, kind, "{action} {form}");
            assert_eq!(meaning(&n, None, now()).effect, access, "{action} {form}");
            assert_eq!(n.fields.source, Source::Sns);
            assert_eq!(n.fields.customer_identifier.as_deref(), Some("X01EXAMPLEX"));
            assert_eq!(
                n.fields.product_code.as_deref(),
                Some("n0123EXAMPLEXXXXXXXXXXXX")
            );
            assert_eq!(n.fields.offer_id.as_deref(), Some("offer-abc"));
            assert_eq!(n.fields.customer_aws_account_id, None);
            if form == "envelope" {
                assert_eq!(n.fields.event_id, Fingerprint::of("sns:m-1"));
                assert_eq!(
                    n.fields.occurred_at.as_deref(),
                    Some("2026-11-30T10:00:00.000Z")
                );
            } else {
                assert_eq!(
                    n.fields.event_id,
                    Fingerprint::of(&format!("sns-body:m-sqs:{body}"))
                );
                assert_eq!(n.fields.occurred_at, None);
            }
        }
    }
    let n = ok(fixture("sns-entitlement-updated-envelope"));
    assert_eq!(n.kind, NotificationKind::EntitlementUpdated);
    assert_eq!(
        n.entitlement_filter(),
        Some(EntitlementFilter::CustomerIdentifier("X01EXAMPLEX".into()))
    );
    assert_eq!(ok(fixture("sns-subscribe-success")).free_trial, Some(true));
}

#[test]
fn free_trial_flag_accepts_booleans_and_strings() {
    for (value, expected) in [
        (json!(true), Some(true)),
        (json!("false"), Some(false)),
        (json!("TRUE"), Some(true)),
        (Value::Null, None),
    ] {
        let body = json!({"action": "subscribe-success", "customer-identifier": "c",
            "product-code": "p", "isFreeTrialTermPresent": value});
        assert_eq!(ok(&body.to_string()).free_trial, expected, "{value}");
    }
    let body = json!({"action": "subscribe-success", "customer-identifier": "c",
        "product-code": "p", "isFreeTrialTermPresent": "maybe"});
    assert!(unrecognized(&body.to_string())
        .detail
        .contains("isFreeTrialTermPresent"));
}

#[test]
fn event_ids_are_stable_across_deliveries_and_distinct_across_events() {
    let body = fixture("license-updated-manufacturer");
    assert_eq!(ok(body).fields.event_id, ok(body).fields.event_id);
    let mut other: Value = serde_json::from_str(body).unwrap();
    other["id"] = json!("another-id");
    assert_ne!(
        ok(body).fields.event_id,
        ok(&other.to_string()).fields.event_id
    );
    assert_eq!(ok(body).fields.event_id.as_str().len(), 32);
}

#[test]
fn license_arns_get_one_form() {
    let cases = [
        (
            "aws:license-manager:us-east-1:123456789012:l-e52ca6f38bf84d0fafb8802ca15ac11x",
            "arn:aws:license-manager:us-east-1:123456789012:l-e52ca6f38bf84d0fafb8802ca15ac11x",
        ),
        (
            "arn:aws:license-manager::123456789012:license:l-abc",
            "arn:aws:license-manager::123456789012:license:l-abc",
        ),
        (
            " aws-us-gov:license-manager::123456789012:license:l-abc ",
            "arn:aws-us-gov:license-manager::123456789012:license:l-abc",
        ),
        ("l-abc", "l-abc"),
        ("awsome", "awsome"),
    ];
    for (raw, expected) in cases {
        assert_eq!(normalize_license_arn(raw), expected, "{raw}");
    }
}

#[test]
fn anything_else_is_unrecognized_with_a_reason() {
    let envelope_without_id = json!({"Type": "Notification",
        "Message": json!({"action": "subscribe-success"}).to_string()});
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "empty"),
        ("not json".into(), "not valid JSON"),
        ("[1]".into(), "not an object"),
        ("{}".into(), "neither"),
        (r#"{"registrationToken":"abc"}"#.into(), "neither"),
        (r#"{"source":"aws.marketplacecatalog","detail-type":"Offer Released","detail":{}}"#.into(), "source"),
        (r#"{"source":"aws.agreement-marketplace","detail":{}}"#.into(), "no `detail-type`"),
        (r#"{"source":"aws.agreement-marketplace","detail-type":"Purchase Agreement Created - Proposer"}"#.into(), "no `detail`"),
        (r#"{"source":"aws.agreement-marketplace","detail-type":"Purchase Agreement Created - Proposer","detail":[]}"#.into(), "must be an object"),
        (r#"{"source":"aws.agreement-marketplace","detail-type":"Purchase Agreement Created - Proposer","detail":{"agreement":"x"}}"#.into(), "`agreement` must be an object"),
        (r#"{"source":"aws.agreement-marketplace","detail-type":"Purchase Agreement Created - Proposer","detail":{"acceptor":{"accountId":845735284135}}}"#.into(), "`accountId` must be a string"),
        (r#"{"source":"aws.agreement-marketplace","detail-type":"License Updated - Manufacturer","detail":{"acceptor":{"accountId":"845735284135"}}}"#.into(), "without a product code"),
        (r#"{"source":"aws.agreement-marketplace","detail-type":"License Updated - Manufacturer","detail":{"product":{"code":"p"}}}"#.into(), "names no license or customer"),
        (r#"{"action":"subscribe-maybe","customer-identifier":"c","product-code":"p"}"#.into(), "action"),
        (r#"{"action":"subscribe-success","product-code":"p"}"#.into(), "customer-identifier"),
        (r#"{"action":"subscribe-success","customer-identifier":"c"}"#.into(), "product-code"),
        (envelope_without_id.to_string(), "MessageId"),
        (r#"{"Type":"Notification","MessageId":"m","Message":"[]"}"#.into(), "must be a JSON object"),
        (format!(r#"{{"action":"subscribe-success","customer-identifier":"{}","product-code":"p"}}"#, "c".repeat(1025)), "longer than"),
    ];
    for (body, expected) in cases {
        let u = unrecognized(&body);
        assert!(
            u.detail.contains(expected),
            "{:.80}: detail {:?} should mention {expected:?}",
            body,
            u.detail
        );
    }
}

fn entitlement(expires_at: Option<DateTime<Utc>>) -> Entitlement {
    Entitlement {
        dimension: "seats".into(),
        value: EntitlementValue::Integer(10),
        expires_at,
    }
}

/// The verdict table for updates: one unexpired entitlement grants, only expired ones revoke, and
/// an empty answer (GetEntitlements right after a grant, before provisioning) keeps access.
#[test]
fn updates_grant_on_one_unexpired_entitlement_and_never_revoke_on_an_empty_answer() {
    let past = now() - chrono::Duration::days(1);
    let future = now() + chrono::Duration::days(1);
    let pending = Meaning {
        effect: Effect::Keep {
            if_new: Access::Grant,
        },
        reason: "entitlements_pending",
    };
    let grant = Meaning {
        effect: Effect::Set(Access::Grant),
        reason: "entitlements_current",
    };
    let revoke = Meaning {
        effect: Effect::Set(Access::Revoke),
        reason: "entitlements_expired",
    };
    let cases = [
        (Some(vec![]), pending),
        (None, pending),
        (Some(vec![entitlement(Some(past))]), revoke),
        (Some(vec![entitlement(Some(now()))]), revoke),
        (
            Some(vec![entitlement(Some(past)), entitlement(Some(future))]),
            grant,
        ),
        (Some(vec![entitlement(None)]), grant),
    ];
    for fixture_name in [
        "license-updated-manufacturer",
        "sns-entitlement-updated-envelope",
    ] {
        let n = ok(fixture(fixture_name));
        for (list, expected) in &cases {
            assert_eq!(
                meaning(&n, list.as_deref(), now()),
                *expected,
                "{fixture_name} {list:?}"
            );
        }
    }
    // After a grant, the empty answer keeps it; on a subscription seen for the first time it
    // grants too (the license exists, its entitlements are on their way).
    assert_eq!(pending.effect.on(Some(Access::Grant)), Access::Grant);
    assert_eq!(pending.effect.on(Some(Access::Revoke)), Access::Revoke);
    assert_eq!(pending.effect.on(None), Access::Grant);
}

#[test]
fn ended_agreements_revoke_only_when_access_really_ends() {
    use Access::{Grant, Revoke};
    let cases = [
        (
            Some("CANCELLED"),
            Effect::Set(Revoke),
            "agreement_cancelled",
        ),
        (Some("EXPIRED"), Effect::Set(Revoke), "agreement_expired"),
        (
            Some("TERMINATED"),
            Effect::Set(Revoke),
            "agreement_terminated",
        ),
        (
            Some("cancelled"),
            Effect::Set(Revoke),
            "agreement_cancelled",
        ),
        (
            Some("RENEWED"),
            Effect::Keep { if_new: Grant },
            "agreement_renewed",
        ),
        (
            Some("REPLACED"),
            Effect::Keep { if_new: Grant },
            "agreement_replaced",
        ),
        (
            Some("SUPERSEDED"),
            Effect::Keep { if_new: Grant },
            "agreement_superseded",
        ),
        (
            Some("ROLLED_BACK"),
            Effect::Keep { if_new: Grant },
            "agreement_rolled_back",
        ),
        (
            Some("ARCHIVED"),
            Effect::Keep { if_new: Revoke },
            "agreement_archived",
        ),
        (
            Some("SOMETHING_NEW"),
            Effect::Keep { if_new: Revoke },
            "agreement_ended_unknown_status",
        ),
        (
            None,
            Effect::Keep { if_new: Revoke },
            "agreement_ended_unknown_status",
        ),
    ];
    let base = ok(fixture("agreement-ended-proposer"));
    for (status, effect, reason) in cases {
        let mut n = base.clone();
        n.fields.status = status.map(str::to_owned);
        assert_eq!(
            meaning(&n, None, now()),
            Meaning { effect, reason },
            "{status:?}"
        );
        // None of the statuses that keep access ever flips a granted subscription.
        if matches!(effect, Effect::Keep { .. }) {
            assert_eq!(effect.on(Some(Grant)), Grant, "{status:?}");
        }
    }
}

fn verdict(access: Access, sequence: u64) -> Verdict {
    Verdict {
        access,
        previous_access: None,
        sequence,
        stale: false,
        signup_id: None,
        context: Default::default(),
    }
}

#[test]
fn updates_carry_their_entitlements_and_others_carry_none() {
    let license = ok(fixture("license-updated-manufacturer"));
    let list = vec![entitlement(Some(now() + chrono::Duration::days(30)))];
    let m = meaning(&license, Some(&list), now());
    let event = LifecycleEvent::new(
        &license,
        m,
        Some(list.clone()),
        now(),
        &verdict(Access::Grant, 1),
    );
    assert_eq!(event.entitlements.as_deref(), Some(&list[..]));

    let created = ok(fixture("agreement-created-proposer"));
    let m = meaning(&created, None, now());
    let event = LifecycleEvent::new(&created, m, Some(list), now(), &verdict(Access::Grant, 1));
    assert_eq!(event.entitlements, None);
}

#[test]
fn an_overtaken_event_goes_out_stale_with_the_current_state() {
    let created = ok(fixture("agreement-created-proposer"));
    let m = meaning(&created, None, now());
    let event = LifecycleEvent::new(&created, m, None, now(), &verdict(Access::Grant, 1));
    let late = event.overtaken(Access::Revoke, 2);
    assert_eq!(
        (late.access, late.previous_access, late.sequence, late.stale),
        (Access::Revoke, Some(Access::Revoke), 2, true)
    );
    assert_eq!(late.fields, event.fields, "the same event, by id");
}

#[test]
fn entitlement_filter_prefers_the_license_then_the_account() {
    let license = ok(fixture("license-updated-manufacturer"));
    assert!(matches!(
        license.entitlement_filter(),
        Some(EntitlementFilter::LicenseArn(a)) if a.starts_with("arn:aws:license-manager")
    ));
    let mut by_account = license.clone();
    by_account.fields.license_arn = None;
    assert_eq!(
        by_account.entitlement_filter(),
        Some(EntitlementFilter::CustomerAwsAccountId(
            "845735284135".into()
        ))
    );
    let created = ok(fixture("agreement-created-proposer"));
    assert_eq!(created.entitlement_filter(), None);
}

#[test]
fn event_serializes_with_the_contract_names_and_attributes() {
    let license = ok(fixture("license-updated-manufacturer"));
    let list = vec![
        Entitlement {
            dimension: "seats".into(),
            value: EntitlementValue::Integer(10),
            expires_at: Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()),
        },
        Entitlement {
            dimension: "sso".into(),
            value: EntitlementValue::Boolean(true),
            expires_at: None,
        },
    ];
    let m = meaning(&license, Some(&list), now());
    let mut v = verdict(Access::Grant, 3);
    v.previous_access = Some(Access::Revoke);
    v.signup_id = Some("signup-7".into());
    let event = LifecycleEvent::new(&license, m, Some(list), now(), &v);
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    let keys = crate::contract::testing::keys(&json);
    let expected = [
        "eventType",
        "schemaVersion",
        "eventId",
        "access",
        "previousAccess",
        "sequence",
        "stale",
        "reason",
        "signupId",
        "context",
        "productCode",
        "customerAWSAccountId",
        "customerIdentifier",
        "licenseArn",
        "agreementId",
        "offerId",
        "intent",
        "status",
        "occurredAt",
        "source",
        "entitlements",
    ];
    assert_eq!(keys.len(), expected.len(), "{keys:?}");
    for key in expected {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
    assert_eq!(json["eventType"], "marketplace.license.updated");
    assert_eq!(json["schemaVersion"], 2);
    assert_eq!(json["access"], "grant");
    assert_eq!(json["previousAccess"], "revoke");
    assert_eq!(json["sequence"], 3);
    assert_eq!(json["stale"], false);
    assert_eq!(json["reason"], "entitlements_current");
    assert_eq!(json["signupId"], "signup-7");
    assert_eq!(json["occurredAt"], "2026-11-30T12:00:00.000Z");
    assert_eq!(json["source"], "eventbridge");
    assert_eq!(json["customerIdentifier"], Value::Null);
    assert_eq!(
        json["entitlements"],
        json!([{"dimension": "seats", "value": 10, "expiresAt": "2027-01-01T00:00:00Z"},
               {"dimension": "sso", "value": true, "expiresAt": null}])
    );
    assert_eq!(
        event.message_attributes(),
        vec![
            ("eventType", "marketplace.license.updated"),
            ("access", "grant"),
            ("productCode", "aw4fgf5tyo5w2ap6fEXAMPLE"),
            ("customerAWSAccountId", "845735284135"),
        ]
    );

    let subscribed = ok(fixture("sns-subscribe-success"));
    let m = meaning(&subscribed, None, now());
    let legacy = LifecycleEvent::new(&subscribed, m, None, now(), &verdict(Access::Grant, 1));
    let names: Vec<&str> = legacy
        .message_attributes()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(names, ["eventType", "access", "productCode"]);
    let json: Value = serde_json::from_str(&legacy.to_json()).unwrap();
    assert_eq!(json["source"], "sns");
    assert_eq!(json["entitlements"], Value::Null);
}

#[test]
fn identical_raw_sns_notifications_in_different_messages_get_different_event_ids() {
    // subscribe, unsubscribe, subscribe again: the first and third bodies are byte-identical.
    let body = fixture("sns-subscribe-success");
    let first = parse_lifecycle_body(body, "sqs-1").unwrap();
    let third = parse_lifecycle_body(body, "sqs-3").unwrap();
    assert_ne!(first.fields.event_id, third.fields.event_id);
    // A redelivery of one message keeps its id.
    let again = parse_lifecycle_body(body, "sqs-1").unwrap();
    assert_eq!(first.fields.event_id, again.fields.event_id);
}
