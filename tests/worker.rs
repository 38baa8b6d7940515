//! The worker against LocalStack (SQS, SNS) and the emulator (ResolveCustomer), through the real
//! SDK clients and the worker's own code: what a seller would check on the queues and the topic.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use mp_resolver::aws::metering::FailureKind;
use mp_resolver::aws::sns::Publisher;
use mp_resolver::contract::DeadLetterReason;
use mp_resolver::emulator::TestToken;
use mp_resolver::ops::redrive::{self, RedriveOptions};
use mp_resolver::worker::{HandBackCause, Outcome};
use serde_json::{json, Value};
use support::{expected_event_id, Fixture, Topic};

const ACCOUNT: &str = "123456789012";
const PRODUCT: &str = "prod-abc";

fn good_token() -> TestToken {
    TestToken::new(ACCOUNT, PRODUCT)
}

fn unix_now() -> i64 {
    Utc::now().timestamp()
}

fn body_for(token: &str) -> String {
    json!({"registrationToken": token}).to_string()
}

/// Sends one body, lets the worker receive and process it, and returns the outcome.
async fn process_one(fx: &Fixture, worker: &mp_resolver::worker::Worker, body: &str) -> Outcome {
    fx.send(body).await;
    let message = fx.receive_token_message(worker).await;
    worker.handle(message).await
}

#[tokio::test]
async fn good_token_is_published_with_every_field_and_deleted() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();
    let token = good_token()
        .customer("cust-1")
        .license("arn:aws:license-manager::123456789012:license:l-1")
        .agreement("agmt-1")
        .encode()
        .expect("valid test token");
    let body = json!({
        "registrationToken": token,
        "signupId": "signup-42",
        "context": {"plan": "gold", "region": "eu"},
        "submittedAt": "2026-11-23T10:00:00Z",
        "ignored": true,
    })
    .to_string();
    let sent = Utc::now();

    let outcome = process_one(&fx, &worker, &body).await;
    assert_eq!(
        outcome,
        Outcome::Published {
            event_id: mp_resolver::contract::Fingerprint::of(&token),
            attempts: 1
        }
    );

    let events = fx.events(1).await;
    let event = events[0].json();
    assert_eq!(event["eventType"], "marketplace.customer.resolved");
    assert_eq!(event["schemaVersion"], 1);
    assert_eq!(event["eventId"], expected_event_id(&token));
    assert_eq!(event["customerIdentifier"], "cust-1");
    assert_eq!(event["customerAWSAccountId"], ACCOUNT);
    assert_eq!(event["productCode"], PRODUCT);
    assert_eq!(
        event["licenseArn"],
        "arn:aws:license-manager::123456789012:license:l-1"
    );
    assert_eq!(event["agreementId"], "agmt-1");
    assert_eq!(event["signupId"], "signup-42");
    assert_eq!(event["context"], json!({"plan": "gold", "region": "eu"}));
    assert_eq!(event["submittedAt"], "2026-11-23T10:00:00Z");
    assert_eq!(event["attempts"], 1);
    let enqueued: DateTime<Utc> = event["enqueuedAt"].as_str().unwrap().parse().unwrap();
    let resolved: DateTime<Utc> = event["resolvedAt"].as_str().unwrap().parse().unwrap();
    assert!(
        (enqueued - sent).num_seconds().abs() < 5,
        "enqueuedAt {enqueued} vs sent {sent}"
    );
    assert!(resolved >= enqueued);
    assert_eq!(event.as_object().unwrap().len(), 14, "{event}");
    assert!(
        !events[0].body.contains(&token),
        "the raw token is never published"
    );

    assert_eq!(events[0].attr("eventType"), "marketplace.customer.resolved");
    assert_eq!(events[0].attr("productCode"), PRODUCT);
    assert_eq!(events[0].attr("customerAWSAccountId"), ACCOUNT);

    assert_eq!(
        fx.depth(&fx.queue_url).await,
        0,
        "the source message is gone"
    );
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
}

#[tokio::test]
async fn new_integrations_without_customer_identifier_publish_null() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();
    let token = good_token().encode().expect("valid test token");
    process_one(&fx, &worker, &token).await;
    let event = fx.events(1).await[0].json();
    assert_eq!(event["customerIdentifier"], Value::Null);
    assert_eq!(event["licenseArn"], Value::Null);
    assert_eq!(event["signupId"], Value::Null);
    assert_eq!(event["context"], json!({}));
}

#[tokio::test]
async fn fifo_topic_gets_group_and_dedup_ids() {
    let fx = Fixture::new(Topic::Fifo).await;
    let worker = fx.worker();
    let token = good_token()
        .customer("cust-fifo")
        .encode()
        .expect("valid test token");
    let outcome = process_one(&fx, &worker, &body_for(&token)).await;
    assert!(matches!(outcome, Outcome::Published { .. }), "{outcome:?}");

    let events = fx.events(1).await;
    let event = events[0].json();
    assert_eq!(event["eventId"], expected_event_id(&token));
    assert_eq!(event["customerAWSAccountId"], ACCOUNT);
    assert_eq!(
        events[0].group_id.as_deref(),
        Some(ACCOUNT),
        "MessageGroupId is the account"
    );
    assert_eq!(events[0].attr("productCode"), PRODUCT);
    assert_eq!(fx.depth(&fx.queue_url).await, 0);

    // The dedup id is the event id: a second publish of the same token within SNS's dedup window
    // delivers nothing new. (A worker on a store of its own, so it does publish again.)
    let other_store = support::store::TestStore::new(support::store::Backend::Embedded).await;
    let again = fx.worker_on(fx.settings.clone(), other_store.open().await);
    fx.send(&body_for(&token)).await;
    let message = fx.receive_token_message(&again).await;
    assert!(matches!(
        again.handle(message).await,
        Outcome::Published { .. }
    ));
    assert!(
        fx.read_once(&fx.subscriber_url, 2).await.is_empty(),
        "deduplicated by eventId"
    );
}

#[tokio::test]
async fn api_verdicts_are_dead_lettered_with_their_reason() {
    let fx = Fixture::with_env(
        Topic::Standard,
        &[("MPR_PRODUCT_CODES", "prod-allowed,prod-abc")],
    )
    .await;
    let worker = fx.worker();
    let expired = good_token()
        .expires_at(unix_now() - 60)
        .encode()
        .expect("valid test token");
    let wrong_product = TestToken::new(ACCOUNT, "prod-other")
        .encode()
        .expect("valid test token");
    let cases = [
        (
            body_for("not-a-real-token"),
            DeadLetterReason::InvalidToken,
            Some("not-a-real-token"),
        ),
        (
            body_for(&expired),
            DeadLetterReason::ExpiredToken,
            Some(expired.as_str()),
        ),
        (
            body_for(&wrong_product),
            DeadLetterReason::ProductMismatch,
            Some(wrong_product.as_str()),
        ),
    ];
    for (body, reason, token) in &cases {
        let outcome = process_one(&fx, &worker, body).await;
        assert!(
            matches!(&outcome, Outcome::DeadLettered { reason: r, .. } if r == reason),
            "{reason:?}: {outcome:?}"
        );
        let letters = fx.dead_letters(1).await;
        let letter = &letters[0];
        assert_eq!(
            &letter.body, body,
            "DLQ body is the original, byte for byte"
        );
        assert_eq!(letter.attr("mpr.reason"), reason.as_str());
        assert_eq!(
            letter.attr("mpr.eventId"),
            expected_event_id(token.unwrap())
        );
        assert_eq!(letter.attr("mpr.receiveCount"), "1");
        assert!(!letter.attr("mpr.sourceMessageId").is_empty());
        assert!(letter.attr("mpr.failedAt").parse::<DateTime<Utc>>().is_ok());
        assert!(
            !letter.attr("mpr.detail").contains(token.unwrap()),
            "detail never has the token"
        );
        assert_eq!(
            fx.depth(&fx.queue_url).await,
            0,
            "{reason:?}: source message gone"
        );
    }
    assert!(
        fx.read_once(&fx.subscriber_url, 1).await.is_empty(),
        "nothing published"
    );
}

/// Every way of breaking the inbound contract, through the running worker loop: each is
/// dead-lettered as malformed with its body intact, and the worker keeps going.
#[tokio::test]
async fn malformed_bodies_are_dead_lettered_and_the_worker_keeps_running() {
    let fx = Fixture::new(Topic::Standard).await;
    let good = good_token().encode().expect("valid test token");
    let oversize = "t".repeat(8_193);
    let big_context: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("k{i}"), json!("v"))).collect();
    let bad_bodies: Vec<String> = vec![
        "[1, 2, 3]".into(),                                      // JSON, not an object
        "{\"registrationToken\": \"abc\"".into(),                // broken JSON
        json!({"signupId": "s"}).to_string(),                    // no token
        json!({"registrationToken": ""}).to_string(),            // empty token
        json!({"registrationToken": oversize}).to_string(),      // oversize token
        json!({"registrationToken": "abc\u{1}def"}).to_string(), // control character
        "tok\ten\twith\ttabs".into(), // plain body, control char (SQS only carries tab, LF, CR)
        json!({"registrationToken": 12345}).to_string(), // wrong type
        json!({"registrationToken": good, "context": ["a"]}).to_string(), // wrong context type
        json!({"registrationToken": good, "context": big_context}).to_string(), // oversize context
        json!({"registrationToken": good, "signupId": "x".repeat(300)}).to_string(), // long signupId
        json!({"Type": "Notification", "Message": "{not json"}).to_string(), // broken SNS envelope
        json!({"Type": "Notification", "Message": {"registrationToken": good}}).to_string(), // envelope Message not a string
        "   ".into(), // blank
    ];
    let mut ids = std::collections::HashMap::new();
    for body in &bad_bodies {
        ids.insert(fx.send(body).await, body.clone());
    }
    fx.send(&body_for(&good)).await;

    let worker = fx.worker();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    let letters = fx.dead_letters(bad_bodies.len()).await;
    let events = fx.events(1).await;
    assert_eq!(events[0].json()["eventId"], expected_event_id(&good));
    for letter in &letters {
        let source = letter.attr("mpr.sourceMessageId");
        let original = ids
            .get(source)
            .unwrap_or_else(|| panic!("unknown source {source}"));
        assert_eq!(&letter.body, original, "DLQ body is byte-identical");
        assert_eq!(
            letter.attr("mpr.reason"),
            "malformed_message",
            "{original:?}"
        );
        assert!(!letter.attr("mpr.detail").is_empty());
        assert!(!letter.attr("mpr.detail").contains(&good));
    }
    assert!(!running.is_finished(), "the worker is still running");
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        0,
        "every source message is gone"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the worker stops after its shutdown future completes")
        .unwrap();
}

#[tokio::test]
async fn throttled_and_failing_tokens_resolve_after_retries() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();

    let throttled = good_token().throttle(3).encode().expect("valid test token");
    let outcome = process_one(&fx, &worker, &body_for(&throttled)).await;
    assert!(
        matches!(outcome, Outcome::Published { attempts: 4, .. }),
        "{outcome:?}"
    );
    let event = fx.events(1).await[0].json();
    assert_eq!(event["attempts"], 4);
    assert_eq!(event["eventId"], expected_event_id(&throttled));

    let failing = good_token().fail(2).encode().expect("valid test token");
    let outcome = process_one(&fx, &worker, &body_for(&failing)).await;
    assert!(
        matches!(outcome, Outcome::Published { attempts: 3, .. }),
        "{outcome:?}"
    );
    assert_eq!(fx.events(1).await[0].json()["attempts"], 3);

    let stats = fx.emulator.stats();
    assert_eq!(stats.throttled, 3);
    assert_eq!(stats.internal_errors, 2);
    assert_eq!(stats.resolved, 2);
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "nothing dead-lettered");
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
}

#[tokio::test]
async fn throttling_beyond_the_attempt_limit_hands_the_message_back() {
    let fx = Fixture::with_env(Topic::Standard, &[("MPR_RESOLVE__MAX_ATTEMPTS", "3")]).await;
    let worker = fx.worker();
    let token = good_token().throttle(5).encode().expect("valid test token");
    let id = fx.send(&body_for(&token)).await;
    let message = fx.receive_token_message(&worker).await;
    let outcome = worker.handle(message).await;
    let Outcome::HandedBack { cause, delay } = outcome else {
        panic!("expected a hand-back, got {outcome:?}")
    };
    assert_eq!(cause, HandBackCause::Resolve(FailureKind::Throttled));
    assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(300));
    assert_eq!(
        fx.emulator.stats().calls,
        3,
        "exactly max_attempts calls, no SDK retries on top"
    );
    assert_eq!(
        fx.depth(&fx.dlq_url).await,
        0,
        "a throttled token is never dead-lettered"
    );

    // Next delivery: two throttles left, then success.
    let again = fx.receive_token_message(&worker).await;
    assert_eq!(again.message_id, id);
    assert_eq!(again.receive_count, 2);
    let outcome = worker.handle(again).await;
    assert!(
        matches!(outcome, Outcome::Published { attempts: 3, .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_publish_that_keeps_failing_is_held_then_dead_lettered_as_unpublished() {
    let fx = Fixture::new(Topic::Standard).await;
    let mut settings = fx.settings.clone();
    settings.topic_arn = format!("{}-missing", fx.topic_arn);
    settings.publish.hold_secs = 2;
    settings.publish.hold_max_delay_secs = 1;
    let worker = fx.worker_with(settings);
    let token = good_token().encode().expect("valid test token");
    let id = fx.send(&body_for(&token)).await;
    let message = fx.receive_token_message(&worker).await;

    let outcome = worker.handle(message).await;
    assert!(
        matches!(
            outcome,
            Outcome::DeadLettered {
                reason: DeadLetterReason::Unpublished,
                ..
            }
        ),
        "{outcome:?}"
    );
    // The answer was kept: one ResolveCustomer call for all the publish tries.
    assert_eq!(fx.emulator.stats().calls, 1);
    // The letter carries the body byte for byte and the event it could not publish.
    // Peeked (visibility 0), not consumed: `dlq redrive` takes it below.
    let peeked = fx
        .sqs
        .receive_message()
        .queue_url(&fx.dlq_url)
        .message_attribute_names("All")
        .visibility_timeout(0)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("peek at the DLQ")
        .messages
        .unwrap_or_default();
    assert_eq!(peeked.len(), 1, "one letter");
    let attr = |name: &str| {
        peeked[0]
            .message_attributes
            .as_ref()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value.clone())
            .unwrap_or_default()
    };
    assert_eq!(peeked[0].body.as_deref(), Some(body_for(&token).as_str()));
    assert_eq!(attr("mpr.reason"), "unpublished");
    assert_eq!(attr("mpr.sourceMessageId"), id);
    let event: serde_json::Value =
        serde_json::from_str(&attr("mpr.event")).expect("mpr.event is the event JSON");
    assert_eq!(event["eventId"], expected_event_id(&token));
    assert_eq!(event["customerAWSAccountId"], "123456789012");
    assert_eq!(event["attempts"], 1);
    // And the source message is gone.
    assert_eq!(fx.depth(&fx.queue_url).await, 0);

    // `dlq redrive` publishes the letter's event as it is, once the topic is right: no second
    // ResolveCustomer call (the token may be spent), nothing back on the token queue.
    let options = RedriveOptions {
        publisher: Some(Publisher::new(fx.sns.clone(), fx.topic_arn.clone())),
        ..RedriveOptions::default()
    };
    let report = redrive::redrive(&fx.sqs, &fx.dlq_url, &fx.queue_url, &options)
        .await
        .expect("redrive");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.moved_count, 1);
    let events = fx.events(1).await;
    assert_eq!(events[0].json(), event, "the held event, unchanged");
    assert_eq!(events[0].attr("eventType"), "marketplace.customer.resolved");
    assert_eq!(fx.emulator.stats().calls, 1, "no ResolveCustomer call");
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
}

#[tokio::test]
async fn the_same_token_twice_has_one_call_and_one_event_across_processes_sharing_a_store() {
    let fx = Fixture::new(Topic::Standard).await;
    let token = good_token().encode().expect("valid test token");
    let body = body_for(&token);

    let first = fx.worker();
    assert!(matches!(
        process_one(&fx, &first, &body).await,
        Outcome::Published { .. }
    ));
    // Another process (an ECS task next to this one) on the same store: the store says the token
    // was published, so it is deleted with no call and no second event.
    let second = fx.worker();
    let outcome = process_one(&fx, &second, &body).await;
    assert_eq!(
        outcome,
        Outcome::AlreadyPublished {
            event_id: mp_resolver::contract::Fingerprint::of(&token)
        }
    );
    let events = fx.events(1).await;
    assert_eq!(events[0].json()["eventId"], expected_event_id(&token));
    assert_eq!(fx.emulator.stats().calls, 1, "one ResolveCustomer call");

    // A redelivery to the process that published it: deleted, no call, no event.
    let outcome = process_one(&fx, &first, &body).await;
    assert_eq!(
        outcome,
        Outcome::AlreadyPublished {
            event_id: mp_resolver::contract::Fingerprint::of(&token)
        }
    );
    assert_eq!(
        fx.emulator.stats().calls,
        1,
        "no second ResolveCustomer call"
    );
    assert!(
        fx.read_once(&fx.subscriber_url, 1).await.is_empty(),
        "no second event"
    );
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
}

#[tokio::test]
async fn disabled_api_hands_back_and_never_dead_letters() {
    let fx = Fixture::new(Topic::Standard).await;
    fx.emulator.configure(|s| s.disabled = true);
    let worker = fx.worker();
    let outcome = process_one(
        &fx,
        &worker,
        &body_for(&good_token().encode().expect("valid test token")),
    )
    .await;
    assert!(
        matches!(
            outcome,
            Outcome::HandedBack {
                cause: HandBackCause::Resolve(FailureKind::Disabled),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        fx.emulator.stats().calls,
        1,
        "a disabled API is not hammered"
    );
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
    assert_eq!(fx.depth(&fx.queue_url).await, 1, "still on the queue");
}

#[tokio::test]
async fn a_redelivered_dead_letter_is_not_sent_twice() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();
    fx.send(&body_for("not-a-real-token")).await;
    let message = fx.receive_token_message(&worker).await;
    let outcome = worker.handle(message.clone()).await;
    assert!(matches!(
        outcome,
        Outcome::DeadLettered {
            reason: DeadLetterReason::InvalidToken,
            ..
        }
    ));
    // The same delivery again, as if its delete had been lost: no call, no second letter.
    let calls = fx.emulator.stats().calls;
    let again = worker.handle(message).await;
    assert_eq!(
        again,
        Outcome::AlreadyDeadLettered {
            reason: DeadLetterReason::InvalidToken
        }
    );
    assert_eq!(fx.emulator.stats().calls, calls);
    assert_eq!(fx.dead_letters(1).await.len(), 1);
    assert!(
        fx.read_once(&fx.dlq_url, 1).await.is_empty(),
        "exactly one dead-letter"
    );
}

/// `resolve.attempt_timeout_ms` as the built-in defaults have it.
fn default_attempt_timeout_ms() -> u64 {
    let env = [
        ("MPR_QUEUE_URL", "http://127.0.0.1:1/000000000000/q"),
        ("MPR_DLQ_URL", "http://127.0.0.1:1/000000000000/q-dlq"),
        ("MPR_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:t"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    mp_resolver::config::load(&mp_resolver::config::Sources {
        env,
        ..Default::default()
    })
    .expect("the defaults are valid")
    .settings
    .resolve
    .attempt_timeout_ms
}

/// A ResolveCustomer call AWS may already have processed (spending the single-use token) is never
/// cut short: not by the default attempt timeout (5 s before, which cut a 6 s answer) and not by
/// the delivery's budget (1 s here), which only decides whether another call starts.
#[tokio::test]
async fn a_slow_answer_past_the_budget_is_waited_for_and_published_after_one_call() {
    let attempt_ms = default_attempt_timeout_ms().to_string();
    let fx = Fixture::with_env(
        Topic::Standard,
        &[
            ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", attempt_ms.as_str()),
            ("MPR_RESOLVE__BUDGET_SECS", "1"),
            ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    fx.emulator.configure(|e| e.latency_ms = 6_000);
    let worker = fx.worker();
    let token = good_token().encode().expect("valid test token");
    let outcome = process_one(&fx, &worker, &body_for(&token)).await;
    assert!(
        matches!(outcome, Outcome::Published { attempts: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(fx.emulator.stats().calls, 1, "one call, answered");
    assert_eq!(
        fx.events(1).await[0].json()["eventId"],
        expected_event_id(&token)
    );
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
}

/// Whether another consumer could receive the token queue's message right now (it would take it
/// for a second).
async fn another_consumer_gets_it(fx: &Fixture) -> bool {
    let got = fx
        .sqs
        .receive_message()
        .queue_url(&fx.queue_url)
        .visibility_timeout(1)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    !got.messages.unwrap_or_default().is_empty()
}

/// A heartbeat whose ChangeMessageVisibility hangs (SQS black-holed; with the SDK's own attempt
/// timeout of receive_wait_secs + 10 s it would hang 30 s) is given up after a sixth of the
/// visibility: the next beat keeps the message hidden, and settling the message while a beat hangs
/// waits no longer than that bound; the hand-back then holds.
#[tokio::test]
async fn a_hung_heartbeat_neither_lets_the_message_reappear_nor_holds_up_its_hand_back() {
    use mp_resolver::aws::sqs::Queue;
    use mp_resolver::observe::metrics::Telemetry;
    use mp_resolver::worker::lease::{heartbeat_call_timeout, Lease};
    use std::sync::Arc;
    use support::faults::FaultProxy;

    let fx = Fixture::with_env(Topic::Standard, &[("MPR_WORKER__RECEIVE_WAIT_SECS", "20")]).await;
    let proxy = FaultProxy::start(&fx.localstack.endpoint).await;
    let queue_via = |endpoint: &str| {
        Queue::new(
            fx.sqs_via(&fx.settings, endpoint),
            fx.queue_url.clone(),
            fx.dlq_url.clone(),
        )
    };
    let (slow, direct) = (
        queue_via(&proxy.endpoint),
        queue_via(&fx.localstack.endpoint),
    );
    // Beats every 2 s, each given up after 1 s.
    let visibility = Duration::from_secs(6);
    let bound = heartbeat_call_timeout(visibility);
    assert_eq!(bound, Duration::from_secs(1));
    fx.send("heartbeat-me").await;
    let message = loop {
        if let Some(m) = direct.receive(1, 1, 6).await.expect("receive").pop() {
            break m;
        }
    };
    let lease = Arc::new(Lease::new(
        message.message_id.clone(),
        message.receipt_handle.clone(),
    ));
    let telemetry = Arc::new(Telemetry::new(Duration::from_secs(60)));
    let beating = {
        let (lease, telemetry) = (lease.clone(), telemetry.clone());
        tokio::spawn(async move { lease.heartbeat(&slow, visibility, &telemetry).await })
    };

    // The first beat goes into the black hole; SQS answers again right after.
    proxy.black_hole();
    support::eventually("a beat hangs", || async {
        proxy.swallowed_containing("ChangeMessageVisibility") >= 1
    })
    .await;
    proxy.restore();
    // Two visibility timeouts: nobody else may see the message meanwhile.
    let until = tokio::time::Instant::now() + 2 * visibility;
    while tokio::time::Instant::now() < until {
        assert!(
            !another_consumer_gets_it(&fx).await,
            "the message reappeared while its lease was alive"
        );
    }

    // Settling while a beat hangs waits at most the bound, and the hand-back holds.
    proxy.black_hole();
    let swallowed = proxy.swallowed_containing("ChangeMessageVisibility");
    support::eventually("another beat hangs", || async {
        proxy.swallowed_containing("ChangeMessageVisibility") > swallowed
    })
    .await;
    let started = tokio::time::Instant::now();
    let settled = lease.settle().await;
    let waited = started.elapsed();
    assert!(
        waited <= bound + Duration::from_millis(300),
        "settling waited {waited:?} for a hung beat"
    );
    direct
        .change_visibility(lease.receipt_handle(), Duration::ZERO)
        .await
        .expect("hand back");
    drop(settled);
    assert!(
        another_consumer_gets_it(&fx).await,
        "handed back: visible at once"
    );
    beating.abort();
    eprintln!("hung heartbeat: settled after {waited:?} (bound {bound:?})");
}

/// An event SNS refuses as too long (a `context` at the extreme of its bounds: 32 entries of 1,024
/// four-byte characters each way, over SNS's 256 KiB) can never be published: it is not held for
/// `publish.hold_secs` (900 s by default) but dead-lettered as `unpublished` at once, with the
/// event attached, after one ResolveCustomer call.
#[tokio::test]
async fn an_event_too_long_for_sns_is_dead_lettered_at_once_with_the_event() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();
    let token = good_token().encode().expect("valid test token");
    let context: serde_json::Map<String, Value> = (0..32u32)
        .map(|i| {
            let key: String =
                std::iter::repeat_n(char::from_u32(0x1F600 + i).unwrap(), 1_024).collect();
            (key, json!("🦀".repeat(1_024)))
        })
        .collect();
    let body = json!({"registrationToken": token, "context": context}).to_string();
    assert!(
        body.len() > 262_144,
        "the context alone is over SNS's limit"
    );

    let started = std::time::Instant::now();
    let outcome = process_one(&fx, &worker, &body).await;
    let took = started.elapsed();
    assert!(
        matches!(
            outcome,
            Outcome::DeadLettered {
                reason: DeadLetterReason::Unpublished,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(took < Duration::from_secs(15), "not held: {took:?}");
    assert_eq!(fx.emulator.stats().calls, 1);
    let letters = fx.dead_letters(1).await;
    assert_eq!(letters[0].body, body, "the body, byte for byte");
    assert_eq!(letters[0].attr("mpr.reason"), "unpublished");
    assert!(
        letters[0]
            .attr("mpr.detail")
            .contains("SNS refused the event"),
        "{}",
        letters[0].attr("mpr.detail")
    );
    // Body and event together are over SQS's classic 256 KiB: the letter names the store item
    // that holds the event (written before the publish was tried), which `dlq redrive` reads.
    assert_eq!(
        letters[0].attr("mpr.eventRef"),
        format!("token#{}", expected_event_id(&token))
    );
    let stored = mp_resolver::store::tokens::TokenLedger::new(
        fx.store_handle().clone(),
        "test",
        Duration::from_secs(1),
    )
    .state(&mp_resolver::contract::Fingerprint::of(&token))
    .await
    .expect("the store answers");
    let Some(mp_resolver::store::tokens::TokenState::Resolved(event, _)) = stored else {
        panic!("the store holds the answer: {stored:?}")
    };
    assert_eq!(event.event_id.as_str(), expected_event_id(&token));
    assert_eq!(
        serde_json::to_value(&event.context).expect("context"),
        Value::Object(context)
    );
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
    assert!(
        fx.read_once(&fx.subscriber_url, 1).await.is_empty(),
        "nothing published"
    );
    eprintln!("too long for SNS: dead-lettered after {took:?}");
}

/// `ExpiredTokenException` comes back both for an expired registration token and for the worker's
/// own expired credentials, told apart only by wording. Before a token is dead-lettered as
/// `expired_token`, a probe (a token that cannot be valid) checks the credentials: the emulator
/// judges it InvalidToken, so an expired token is dead-lettered, and one probe serves a burst;
/// an endpoint that answers ExpiredToken to the probe too (credentials expired, worded unlike the
/// usual "security token" message) gets the message handed back, never dead-lettered.
#[tokio::test]
async fn an_expired_token_is_dead_lettered_only_once_a_probe_shows_the_credentials_work() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();
    for (n, calls) in [(1, 2), (2, 3)] {
        let expired = good_token()
            .customer(format!("c-{n}"))
            .expires_at(unix_now() - 60)
            .encode()
            .expect("valid test token");
        let outcome = process_one(&fx, &worker, &body_for(&expired)).await;
        assert!(
            matches!(
                outcome,
                Outcome::DeadLettered {
                    reason: DeadLetterReason::ExpiredToken,
                    ..
                }
            ),
            "{outcome:?}"
        );
        // The token's call and one probe; the second token reuses the probe's verdict.
        assert_eq!(fx.emulator.stats().calls, calls);
        assert_eq!(
            fx.dead_letters(1).await[0].attr("mpr.reason"),
            "expired_token"
        );
    }

    let expired = |message: &str| {
        (
            400,
            json!({"__type": "ExpiredTokenException", "message": message}),
        )
    };
    let (endpoint, mut seen) = support::aws_stub::start(vec![
        expired("Token has expired"),
        expired("Token has expired"),
    ])
    .await;
    let settings = fx.settings.clone();
    let stale = mp_resolver::worker::Worker::new(
        fx.clients_with_metering(&settings, &endpoint),
        settings,
        fx.store_handle().clone(),
    );
    let token = good_token().encode().expect("valid test token");
    let outcome = process_one(&fx, &stale, &body_for(&token)).await;
    assert!(
        matches!(
            outcome,
            Outcome::HandedBack {
                cause: HandBackCause::Resolve(FailureKind::Transient),
                ..
            }
        ),
        "{outcome:?}"
    );
    let first = seen.recv().await.expect("the token's call");
    let probe = seen.recv().await.expect("the probe");
    assert_eq!(first.body["RegistrationToken"], token.as_str());
    assert_eq!(
        probe.body["RegistrationToken"],
        mp_resolver::aws::metering::PROBE_TOKEN
    );
    assert_eq!(
        fx.depth(&fx.dlq_url).await,
        0,
        "never dead-lettered on a doubt"
    );
    assert_eq!(fx.depth(&fx.queue_url).await, 1, "still on the queue");
}

/// LocalStack's gateway closes every HTTP/1.1 connection whose request does not ask for
/// keep-alive; the clients ask, so a run of calls shares one connection per service instead of
/// opening one per call (which cost LocalStack, the bench's bound, a TCP connection each).
#[tokio::test]
async fn calls_to_localstack_share_one_connection_per_service() {
    use mp_resolver::aws::sqs::queue_attributes;
    use support::faults::FaultProxy;

    let fx = Fixture::new(Topic::Standard).await;
    let proxy = FaultProxy::start(&fx.localstack.endpoint).await;
    let clients = fx.clients_at(&fx.settings, &proxy.endpoint);
    let publisher = Publisher::new(clients.sns, fx.topic_arn.clone());

    for _ in 0..5 {
        queue_attributes(&clients.sqs, &fx.queue_url)
            .await
            .expect("GetQueueAttributes through the proxy");
        publisher
            .check()
            .await
            .expect("GetTopicAttributes through the proxy");
    }
    assert_eq!(
        proxy.connections(),
        2,
        "ten calls, one after another, to two services"
    );
}
