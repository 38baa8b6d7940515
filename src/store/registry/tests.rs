//! The registry's rule, pure: newer events apply, older ones are stale, ties go by event id, a
//! resolved token never moves the history, and an agreement's provisional subscription merges.

use chrono::TimeZone;

use super::*;

const PK: &str = "sub#arn:aws:license-manager::1:license:l-1";

fn at(secs: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, secs).unwrap()
}

fn identity() -> Identity {
    Identity {
        customer_aws_account_id: Some("111122223333".into()),
        license_arn: Some("arn:aws:license-manager::1:license:l-1".into()),
        ..Identity::default()
    }
}

fn event(secs: u32, id: &str, effect: Effect) -> Change {
    Change::Event {
        identity: identity(),
        mark: EventMark {
            at: at(secs),
            event_id: id.into(),
            event_type: "marketplace.test".into(),
        },
        effect,
        reason: "test",
        agreement_status: None,
        entitlements: None,
    }
}

const GRANT: Effect = Effect::Set(Access::Grant);
const REVOKE: Effect = Effect::Set(Access::Revoke);

/// Applies `changes` in order, as the store would keep them.
fn run(changes: &[Change]) -> (Option<Subscription>, Vec<Verdict>) {
    let mut current = None;
    let mut verdicts = Vec::new();
    for change in changes {
        let applied = apply(current.clone(), PK, change, "now");
        if applied.changed {
            current = Some(applied.subscription);
        }
        verdicts.push(applied.verdict);
    }
    (current, verdicts)
}

#[test]
fn a_newer_event_applies_and_an_older_one_is_stale() {
    let (s, verdicts) = run(&[event(20, "ended", REVOKE), event(10, "created", GRANT)]);
    let s = s.unwrap();
    assert_eq!((s.access, s.sequence), (Access::Revoke, 1));
    assert_eq!(s.latest.unwrap().event_id, "ended");
    let late = &verdicts[1];
    assert_eq!(
        (late.access, late.stale, late.sequence),
        (Access::Revoke, true, 1),
        "the older grant never flips the newer revoke"
    );
}

#[test]
fn in_order_events_each_apply_with_their_previous_access() {
    let (s, verdicts) = run(&[event(10, "created", GRANT), event(20, "ended", REVOKE)]);
    assert_eq!(s.unwrap().sequence, 2);
    assert_eq!(
        (verdicts[0].previous_access, verdicts[0].access),
        (None, Access::Grant)
    );
    assert_eq!(
        (
            verdicts[1].previous_access,
            verdicts[1].access,
            verdicts[1].stale
        ),
        (Some(Access::Grant), Access::Revoke, false)
    );
}

#[test]
fn ties_in_time_go_to_the_greater_event_id_in_any_arrival_order() {
    let a = event(10, "aaa", GRANT);
    let b = event(10, "bbb", REVOKE);
    for order in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
        let (s, _) = run(&order);
        assert_eq!(s.unwrap().access, Access::Revoke, "bbb wins the tie");
    }
}

#[test]
fn a_redelivered_event_is_not_applied_twice_nor_stale() {
    let created = event(10, "created", GRANT);
    let (s, verdicts) = run(&[created.clone(), created]);
    assert_eq!(s.unwrap().sequence, 1);
    assert_eq!(verdicts[1], verdicts[0]);
}

#[test]
fn keep_leaves_access_and_starts_a_new_subscription_with_its_default() {
    let pending = Effect::Keep {
        if_new: Access::Grant,
    };
    let (s, _) = run(&[
        event(10, "deprovisioned", REVOKE),
        event(20, "updated", pending),
    ]);
    let s = s.unwrap();
    assert_eq!((s.access, s.sequence), (Access::Revoke, 2));
    let (s, _) = run(&[event(20, "updated", pending)]);
    assert_eq!(s.unwrap().access, Access::Grant);
}

#[test]
fn a_resolved_token_fills_the_sign_up_but_never_moves_the_history() {
    let resolved = Change::Resolved {
        identity: identity(),
        signup_id: Some("signup-1".into()),
        context: BTreeMap::from([("plan".into(), "gold".into())]),
    };
    // After the lifecycle events: access and the latest event stay.
    let (s, _) = run(&[event(20, "ended", REVOKE), resolved.clone()]);
    let s = s.unwrap();
    assert_eq!((s.access, s.sequence), (Access::Revoke, 1));
    assert_eq!(s.latest.unwrap().event_id, "ended");
    assert_eq!(s.signup_id.as_deref(), Some("signup-1"));
    // Before any: a new, granted subscription with no history, which any event then updates.
    let (s, verdicts) = run(&[resolved, event(5, "old", REVOKE)]);
    let s = s.unwrap();
    assert_eq!((s.access, s.sequence), (Access::Revoke, 1));
    assert_eq!(verdicts[1].signup_id.as_deref(), Some("signup-1"));
}

#[test]
fn a_provisional_subscription_merges_into_its_license() {
    let mut provisional = Subscription::new(
        provisional_pk("agmt-1"),
        Identity::default(),
        Access::Revoke,
        "x",
    );
    provisional.latest = Some(EventMark {
        at: at(30),
        event_id: "ended".into(),
        event_type: "marketplace.agreement.ended".into(),
    });
    provisional.sequence = 2;
    let found = Found {
        pk: PK.into(),
        own: true,
        target: None,
        provisional: Some((4, provisional)),
        pointer: None,
        agreement: Some("agmt-1".into()),
    };
    let (writes, applied) = plan(&found, &event(10, "updated", GRANT), "now");
    assert_eq!(applied.subscription.pk, PK);
    assert_eq!(
        (applied.subscription.access, applied.subscription.sequence),
        (Access::Revoke, 2),
        "the older license event is stale against the merged history"
    );
    assert!(applied.verdict.stale);
    assert!(
        matches!(&writes[1], Write::Delete { pk, expect: Expect::Version(4), .. } if pk == "sub#agmt#agmt-1")
    );
    assert!(
        matches!(&writes[2], Write::Put { item, expect: Expect::Absent } if item.pk == "agmt#agmt-1")
    );
}

#[test]
fn items_round_trip() {
    let (s, _) = run(&[event(10, "created", GRANT)]);
    let s = s.unwrap();
    let mut item = s.to_item();
    item.version = 3;
    assert_eq!(Subscription::from_item(&item), Some(s));
    assert!(item.attrs.get("expiresAt").is_none() && item.expires_at.is_none());
}
