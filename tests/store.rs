//! One conformance suite for both store backends: every test runs against the embedded file and
//! against a DynamoDB table (moto's server), and must see the same behaviour. The primitives first
//! (conditional writes, atomic groups, expiry, queries), then the token lane's ledger built on them.

mod support;

use std::time::Duration;

use mp_resolver::contract::lifecycle::{Access, Effect};
use mp_resolver::contract::{CustomerEvent, DeadLetterReason, Fingerprint, ResolvedCustomer};
use mp_resolver::store::registry::{self, Change, EventMark, Identity, Registry};
use mp_resolver::store::tokens::{Begin, TokenLedger, TokenState};
use mp_resolver::store::{now_secs, Expect, Item, Store, StoreError, Write};
use serde_json::json;
use support::store::{Backend, TestStore};

const LICENSE: &str = "arn:aws:license-manager::111122223333:license:l-1";

fn at(secs: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(2026, 12, 1, 10, 0, secs)
        .unwrap()
}

/// A lifecycle event of the license `LICENSE` (and agreement `agmt-1`) at second `secs`.
fn lifecycle(secs: u32, id: &str, access: Access, license: Option<&str>) -> Change {
    Change::Event {
        identity: Identity {
            customer_aws_account_id: Some("111122223333".into()),
            license_arn: license.map(str::to_owned),
            agreement_id: Some("agmt-1".into()),
            ..Identity::default()
        },
        mark: EventMark {
            at: at(secs),
            event_id: id.into(),
            event_type: format!("marketplace.test.{id}"),
        },
        effect: Effect::Set(access),
        reason: "test",
        agreement_status: None,
        entitlements: None,
    }
}

async fn subscription_item(store: &Store, pk: &str) -> Item {
    store
        .get(pk, registry::SUBSCRIPTION_SK)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no item {pk}"))
}

/// Runs `body` once per backend, each with a fresh store.
macro_rules! conformance {
    ($($name:ident => $body:expr;)*) => {
        mod embedded {
            use super::*;
            $(#[tokio::test] async fn $name() { let t = TestStore::new(Backend::Embedded).await; ($body)(t.open().await).await; })*
        }
        mod dynamodb {
            use super::*;
            $(#[tokio::test] async fn $name() { let t = TestStore::new(Backend::Dynamodb).await; ($body)(t.open().await).await; })*
        }
    };
}

fn item(pk: &str, sk: &str) -> Item {
    Item::new(pk, sk).with("note", "hello")
}

async fn absent_items_read_as_none_and_create_once(store: Store) {
    assert_eq!(store.get("a", "1").await.unwrap(), None);
    store.put(item("a", "1"), Expect::Absent).await.unwrap();
    let read = store.get("a", "1").await.unwrap().expect("written");
    assert_eq!((read.version, read.str("note")), (1, Some("hello")));
    assert_eq!(
        store.put(item("a", "1"), Expect::Absent).await,
        Err(StoreError::Conflict),
        "a second create must lose"
    );
}

async fn versioned_writes_lose_to_an_earlier_writer(store: Store) {
    store.put(item("v", "1"), Expect::Absent).await.unwrap();
    store
        .put(item("v", "1").with("note", "second"), Expect::Version(1))
        .await
        .unwrap();
    assert_eq!(
        store
            .put(item("v", "1").with("note", "stale"), Expect::Version(1))
            .await,
        Err(StoreError::Conflict)
    );
    let read = store.get("v", "1").await.unwrap().unwrap();
    assert_eq!((read.version, read.str("note")), (2, Some("second")));
    assert_eq!(
        store.put(item("missing", "1"), Expect::Version(1)).await,
        Err(StoreError::Conflict),
        "a version expected of an absent item does not hold"
    );
}

async fn a_group_is_written_whole_or_not_at_all(store: Store) {
    store.put(item("g", "b"), Expect::Absent).await.unwrap();
    let group = vec![
        Write::Put {
            item: item("g", "a"),
            expect: Expect::Absent,
        },
        Write::Put {
            item: item("g", "b"),
            expect: Expect::Version(7),
        },
    ];
    assert_eq!(store.write(group).await, Err(StoreError::Conflict));
    assert_eq!(
        store.get("g", "a").await.unwrap(),
        None,
        "nothing of a failed group is written"
    );
    let group = vec![
        Write::Put {
            item: item("g", "a"),
            expect: Expect::Absent,
        },
        Write::Check {
            pk: "g".into(),
            sk: "b".into(),
            expect: Expect::Version(1),
        },
        Write::Delete {
            pk: "g".into(),
            sk: "c".into(),
            expect: Expect::Any,
        },
    ];
    store.write(group).await.unwrap();
    assert!(store.get("g", "a").await.unwrap().is_some());
}

async fn expired_items_read_as_absent(store: Store) {
    let past = item("e", "1").expiring_at(now_secs() - 10);
    store.put(past, Expect::Any).await.unwrap();
    assert_eq!(store.get("e", "1").await.unwrap(), None);
    assert_eq!(store.query("e", "").await.unwrap(), vec![]);
    store
        .put(
            item("e", "1").expiring_at(now_secs() + 3600),
            Expect::Absent,
        )
        .await
        .expect("an expired item counts as absent for a create");
}

async fn attributes_round_trip(store: Store) {
    let value = json!({"s": "text", "n": 42, "neg": -7, "f": 1.5, "b": true, "null": null,
        "list": [1, "two", {"three": 3}], "map": {"inner": "x", "count": 2}});
    let mut written = Item::new("r", "1").expiring_at(now_secs() + 60);
    if let serde_json::Value::Object(map) = value.clone() {
        written.attrs = map;
    }
    store.put(written, Expect::Absent).await.unwrap();
    let read = store.get("r", "1").await.unwrap().unwrap();
    assert_eq!(serde_json::Value::Object(read.attrs), value);
}

async fn query_takes_a_sort_key_prefix_in_order_and_scan_a_partition_prefix(store: Store) {
    for sk in [
        "hour#2026-12-04T10",
        "hour#2026-12-04T09",
        "meta",
        "hour#2026-12-04T11",
    ] {
        store.put(item("sub#1", sk), Expect::Absent).await.unwrap();
    }
    store
        .put(item("sub#2", "meta"), Expect::Absent)
        .await
        .unwrap();
    store
        .put(item("other", "meta"), Expect::Absent)
        .await
        .unwrap();
    let hours: Vec<String> = store
        .query("sub#1", "hour#")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.sk)
        .collect();
    assert_eq!(
        hours,
        [
            "hour#2026-12-04T09",
            "hour#2026-12-04T10",
            "hour#2026-12-04T11"
        ]
    );
    let subs: Vec<(String, String)> = store
        .scan("sub#")
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.pk, i.sk))
        .collect();
    assert_eq!(subs.len(), 5);
    assert!(subs.iter().all(|(pk, _)| pk.starts_with("sub#")));
}

async fn concurrent_creates_have_one_winner(store: Store) {
    let tries = (0..16).map(|n| {
        let store = store.clone();
        async move {
            store
                .put(item("race", "1").with("n", n), Expect::Absent)
                .await
        }
    });
    let results = futures_join_all(tries).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(StoreError::Conflict)));
}

fn event(token: &str, signup: &str) -> CustomerEvent {
    let request = mp_resolver::contract::parse_body(
        &json!({"registrationToken": token, "signupId": signup}).to_string(),
    )
    .expect("a token request");
    CustomerEvent::new(
        &request,
        ResolvedCustomer {
            customer_identifier: None,
            customer_aws_account_id: "111122223333".into(),
            product_code: "prod-demo".into(),
            license_arn: Some("arn:aws:license-manager::111122223333:license:l-1".into()),
            agreement_id: Some("agmt-1".into()),
        },
        None,
        "2026-12-04T10:00:00Z".into(),
        1,
    )
}

const LEASE: Duration = Duration::from_secs(30);

async fn one_claim_at_a_time_and_the_answer_is_kept(store: Store) {
    let (a, b) = (
        TokenLedger::new(store.clone(), "task-a", LEASE),
        TokenLedger::new(store.clone(), "task-b", LEASE),
    );
    let fp = Fingerprint::of("tok-claim");
    let Begin::Claimed { version } = a.begin(&fp).await.unwrap() else {
        panic!("the first delivery claims")
    };
    assert!(matches!(
        b.begin(&fp).await.unwrap(),
        Begin::HeldElsewhere { .. }
    ));
    let first = event("tok-claim", "signup-a");
    let stored = a.resolved(&fp, Some(version), &first).await.unwrap();
    assert_eq!(stored, first);
    // The holder is publishing its answer: the other delivery still waits for it.
    assert!(matches!(
        b.begin(&fp).await.unwrap(),
        Begin::HeldElsewhere { .. }
    ));
    // A second answer (another delivery's event) never replaces the first.
    let second = event("tok-claim", "signup-b");
    assert_eq!(b.resolved(&fp, None, &second).await.unwrap(), first);
    // A verdict after the answer (a spent token's ExpiredTokenException) returns the answer.
    assert_eq!(
        b.rejected(&fp, None, DeadLetterReason::ExpiredToken, "expired")
            .await
            .unwrap(),
        Some(first.clone())
    );
    a.published(&fp, None, &first).await.unwrap();
    assert_eq!(b.begin(&fp).await.unwrap(), Begin::Published(first));
}

/// Issue #23: a new token costs three store calls (the claim, the answer written ahead with its
/// subscription, the publish recorded on the version the answer made), not four; a publish recorded
/// on a version that moved meanwhile reads and still lands.
async fn a_new_token_takes_three_store_calls(store: Store) {
    let telemetry = std::sync::Arc::new(mp_resolver::observe::metrics::Telemetry::new(
        Duration::from_secs(60),
    ));
    let counted = store.with_telemetry(telemetry.clone());
    let calls = || -> u64 {
        telemetry
            .render()
            .lines()
            .filter(|l| l.starts_with("mpr_store_calls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let a = TokenLedger::new(counted.clone(), "task-a", LEASE);
    let fp = Fingerprint::of("tok-three-calls");
    let Begin::Claimed { version } = a.begin(&fp).await.unwrap() else {
        panic!("a new token is claimed")
    };
    let answer = event("tok-three-calls", "signup-3");
    let (stored, written) = a.write_ahead(&fp, Some(version), &answer).await.unwrap();
    assert_eq!(stored, answer);
    assert_eq!(
        written,
        Some(version + 1),
        "the answer's write made the next version"
    );
    a.published(&fp, written, &answer).await.unwrap();
    assert_eq!(calls(), 3, "claim, answer, publish: {}", telemetry.render());
    assert_eq!(
        a.state(&fp).await.unwrap(),
        Some(TokenState::Published(answer.clone()))
    );

    // A stale version (the item moved since): the write loses, reads, and records the publish.
    let fp = Fingerprint::of("tok-stale-version");
    let Begin::Claimed { version } = a.begin(&fp).await.unwrap() else {
        panic!("claimed")
    };
    let answer = event("tok-stale-version", "signup-4");
    a.write_ahead(&fp, Some(version), &answer).await.unwrap();
    a.published(&fp, Some(version), &answer).await.unwrap();
    assert_eq!(
        a.state(&fp).await.unwrap(),
        Some(TokenState::Published(answer))
    );
}

async fn an_answer_whose_holder_died_is_published_by_the_next_delivery(store: Store) {
    let short = Duration::from_millis(1);
    let dying = TokenLedger::new(store.clone(), "task-dying", short);
    let fp = Fingerprint::of("tok-orphan");
    let Begin::Claimed { version } = dying.begin(&fp).await.unwrap() else {
        panic!("claims")
    };
    let answer = event("tok-orphan", "signup-1");
    dying.resolved(&fp, Some(version), &answer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await; // the lease is wall-clock time
    let next = TokenLedger::new(store.clone(), "task-next", LEASE);
    assert_eq!(next.begin(&fp).await.unwrap(), Begin::Resolved(answer));
    // ... and holds it while publishing: a third delivery waits.
    let third = TokenLedger::new(store, "task-third", LEASE);
    assert!(matches!(
        third.begin(&fp).await.unwrap(),
        Begin::HeldElsewhere { .. }
    ));
}

async fn a_lapsed_claim_is_taken_over_and_a_released_one_is_free(store: Store) {
    let a_short = TokenLedger::new(store.clone(), "task-a", Duration::from_millis(1));
    let b = TokenLedger::new(store.clone(), "task-b", LEASE);
    let fp = Fingerprint::of("tok-lapsed");
    assert!(matches!(
        a_short.begin(&fp).await.unwrap(),
        Begin::Claimed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(20)).await; // the lease is wall-clock time
    let Begin::Claimed { version } = b.begin(&fp).await.unwrap() else {
        panic!("a lapsed claim is taken over")
    };
    b.release(&fp, version).await.unwrap();
    assert_eq!(b.state(&fp).await.unwrap(), None);
    assert!(matches!(
        a_short.begin(&fp).await.unwrap(),
        Begin::Claimed { .. }
    ));
}

async fn a_verdict_is_kept_for_later_deliveries(store: Store) {
    let a = TokenLedger::new(store.clone(), "task-a", LEASE);
    let fp = Fingerprint::of("tok-invalid");
    let Begin::Claimed { version } = a.begin(&fp).await.unwrap() else {
        panic!("claims")
    };
    assert_eq!(
        a.rejected(
            &fp,
            Some(version),
            DeadLetterReason::InvalidToken,
            "ResolveCustomer: InvalidTokenException"
        )
        .await
        .unwrap(),
        None
    );
    let b = TokenLedger::new(store, "task-b", LEASE);
    assert_eq!(
        b.begin(&fp).await.unwrap(),
        Begin::Rejected {
            reason: DeadLetterReason::InvalidToken,
            detail: "ResolveCustomer: InvalidTokenException".into()
        }
    );
    assert!(matches!(
        b.state(&fp).await.unwrap(),
        Some(TokenState::Rejected { .. })
    ));
}

async fn racing_deliveries_of_one_token_get_one_claim(store: Store) {
    let fp = Fingerprint::of("tok-race");
    let tries = (0..12).map(|n| {
        let ledger = TokenLedger::new(store.clone(), format!("task-{n}"), LEASE);
        let fp = fp.clone();
        async move { ledger.begin(&fp).await }
    });
    let results = futures_join_all(tries).await;
    let claimed = results
        .iter()
        .filter(|r| matches!(r, Ok(Begin::Claimed { .. })))
        .count();
    assert_eq!(claimed, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(Begin::Claimed { .. } | Begin::HeldElsewhere { .. }))));
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

async fn an_event_applies_only_if_newer_than_the_subscription(store: Store) {
    let registry = Registry::new(store.clone());
    let license = Some(LICENSE);
    let ended = registry
        .apply(&lifecycle(20, "ended", Access::Revoke, license))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            ended.verdict.access,
            ended.verdict.sequence,
            ended.verdict.stale
        ),
        (Access::Revoke, 1, false)
    );
    let created = registry
        .apply(&lifecycle(10, "created", Access::Grant, license))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            created.verdict.access,
            created.verdict.sequence,
            created.verdict.stale
        ),
        (Access::Revoke, 1, true),
        "the older grant is stale and never flips the newer revoke"
    );
    // Redelivered: the same answer, nothing applied twice.
    let again = registry
        .apply(&lifecycle(20, "ended", Access::Revoke, license))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.verdict, ended.verdict);

    let item = subscription_item(&store, &format!("sub#{LICENSE}")).await;
    assert_eq!(item.str("access"), Some("revoke"));
    assert_eq!(item.i64("sequence"), Some(1));
    assert_eq!(item.str("latestEventAt"), Some("2026-12-01T10:00:20.000Z"));
    assert_eq!(item.str("latestEventId"), Some("ended"));
    assert_eq!(item.str("latestEventType"), Some("marketplace.test.ended"));
    assert_eq!(item.str("licenseArn"), Some(LICENSE));
    assert_eq!(item.str("customerAWSAccountId"), Some("111122223333"));
    assert_eq!(item.expires_at, None, "a subscription is kept");
    // The agreement leads to it.
    let pointer = store
        .get("agmt#agmt-1", "subscription")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        pointer.str("subscriptionPk"),
        Some(format!("sub#{LICENSE}").as_str())
    );
}

async fn ties_in_time_go_to_the_greater_event_id_whatever_the_order(store: Store) {
    let registry = Registry::new(store.clone());
    for (license, order) in [("arn:l-ab", ["aaa", "bbb"]), ("arn:l-ba", ["bbb", "aaa"])] {
        for id in order {
            let access = if id == "bbb" {
                Access::Revoke
            } else {
                Access::Grant
            };
            let mut change = lifecycle(10, id, access, Some(license));
            if let Change::Event { identity, .. } = &mut change {
                identity.agreement_id = None;
            }
            registry.apply(&change).await.unwrap();
        }
        let item = subscription_item(&store, &format!("sub#{license}")).await;
        assert_eq!(
            (item.str("access"), item.str("latestEventId")),
            (Some("revoke"), Some("bbb")),
            "{license}"
        );
    }
}

async fn a_resolved_token_writes_its_subscription_in_the_answer_group(store: Store) {
    let ledger = TokenLedger::new(store.clone(), "task-a", LEASE);
    let registry = Registry::new(store.clone());
    let fp = Fingerprint::of("tok-registry");
    let Begin::Claimed { version } = ledger.begin(&fp).await.unwrap() else {
        panic!("claims")
    };
    ledger
        .resolved(&fp, Some(version), &event("tok-registry", "signup-r"))
        .await
        .unwrap();
    let item = subscription_item(&store, &format!("sub#{LICENSE}")).await;
    assert_eq!(
        (
            item.str("access"),
            item.str("signupId"),
            item.i64("sequence")
        ),
        (Some("grant"), Some("signup-r"), Some(0))
    );
    assert_eq!(item.str("latestEventAt"), None, "a resolve is not an event");
    // An agreement event, which names no license, finds it through the agreement.
    let ended = registry
        .apply(&lifecycle(20, "ended", Access::Revoke, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.subscription.pk, format!("sub#{LICENSE}"));
    assert_eq!(ended.verdict.signup_id.as_deref(), Some("signup-r"));
    assert_eq!(ended.verdict.previous_access, Some(Access::Grant));
    // A second token for the subscription resolves later: access and history stay.
    let fp2 = Fingerprint::of("tok-registry-2");
    ledger
        .resolved(&fp2, None, &event("tok-registry-2", "signup-late"))
        .await
        .unwrap();
    let item = subscription_item(&store, &format!("sub#{LICENSE}")).await;
    assert_eq!(
        (
            item.str("access"),
            item.i64("sequence"),
            item.str("signupId")
        ),
        (Some("revoke"), Some(1), Some("signup-r"))
    );
}

async fn an_agreement_seen_before_its_license_is_merged_into_it(store: Store) {
    let registry = Registry::new(store.clone());
    let created = registry
        .apply(&lifecycle(10, "created", Access::Grant, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.subscription.pk, "sub#agmt#agmt-1");
    let updated = registry
        .apply(&lifecycle(20, "updated", Access::Grant, Some(LICENSE)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.subscription.pk, format!("sub#{LICENSE}"));
    assert_eq!(updated.verdict.sequence, 2, "both histories count");
    assert_eq!(
        store.get("sub#agmt#agmt-1", "subscription").await.unwrap(),
        None,
        "the provisional subscription is gone"
    );
    let ended = registry
        .apply(&lifecycle(30, "ended", Access::Revoke, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ended.subscription.pk.as_str(), ended.verdict.sequence),
        (format!("sub#{LICENSE}").as_str(), 3)
    );
    assert_eq!(registry.all().await.unwrap().len(), 1);
}

async fn racing_events_of_one_subscription_are_all_applied(store: Store) {
    let registry = Registry::new(store.clone());
    let tasks: Vec<_> = (0..6u32)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let access = if i % 2 == 0 {
                    Access::Grant
                } else {
                    Access::Revoke
                };
                registry
                    .apply(&lifecycle(i, &format!("e{i}"), access, Some(LICENSE)))
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut stale = 0;
    for task in tasks {
        stale += u32::from(task.await.unwrap().verdict.stale);
    }
    let item = subscription_item(&store, &format!("sub#{LICENSE}")).await;
    // Whatever the interleaving: the newest event's access, and one sequence step per applied one.
    assert_eq!(item.str("latestEventId"), Some("e5"));
    assert_eq!(item.str("access"), Some("revoke"));
    assert_eq!(item.i64("sequence"), Some(i64::from(6 - stale)));
}

async fn the_fleet_rate_round_trips_and_the_last_writer_wins(store: Store) {
    use mp_resolver::store::fleet;
    use mp_resolver::worker::ratelimit::Learned;
    assert_eq!(fleet::read(&store).await.unwrap(), None);
    let peak = Learned {
        rate: 212.5,
        quota: false,
    };
    fleet::write(&store, peak, "task-a").await.unwrap();
    let read = fleet::read(&store).await.unwrap().expect("written");
    assert_eq!(read.learned, peak);
    // A whole rate (DynamoDB keeps `310.0` as `310`) reads back as the same rate.
    let quota = Learned {
        rate: 310.0,
        quota: true,
    };
    fleet::write(&store, quota, "task-b").await.unwrap();
    let read = fleet::read(&store).await.unwrap().expect("written");
    assert_eq!(read.learned, quota, "the last writer wins");
    assert!(read.age(mp_resolver::store::now_millis()) < Duration::from_secs(60));
}

conformance! {
    absent_items => absent_items_read_as_none_and_create_once;
    versioned_writes => versioned_writes_lose_to_an_earlier_writer;
    atomic_groups => a_group_is_written_whole_or_not_at_all;
    expiry => expired_items_read_as_absent;
    attributes => attributes_round_trip;
    query_and_scan => query_takes_a_sort_key_prefix_in_order_and_scan_a_partition_prefix;
    concurrent_creates => concurrent_creates_have_one_winner;
    token_claim_and_answer => one_claim_at_a_time_and_the_answer_is_kept;
    token_lapsed_claim => a_lapsed_claim_is_taken_over_and_a_released_one_is_free;
    token_orphaned_answer => an_answer_whose_holder_died_is_published_by_the_next_delivery;
    token_three_calls => a_new_token_takes_three_store_calls;
    token_verdict => a_verdict_is_kept_for_later_deliveries;
    token_race => racing_deliveries_of_one_token_get_one_claim;
    registry_newer_than => an_event_applies_only_if_newer_than_the_subscription;
    registry_ties => ties_in_time_go_to_the_greater_event_id_whatever_the_order;
    registry_resolved_token => a_resolved_token_writes_its_subscription_in_the_answer_group;
    registry_agreement_merge => an_agreement_seen_before_its_license_is_merged_into_it;
    registry_race => racing_events_of_one_subscription_are_all_applied;
    fleet_rate => the_fleet_rate_round_trips_and_the_last_writer_wins;
}
