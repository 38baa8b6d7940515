//! A resolved answer outlives the process: the store's guarantees, tested the way they fail in
//! production. Single-use tokens throughout (the emulator answers ExpiredTokenException to a second
//! call, as AWS does), so any second ResolveCustomer call shows up as a dead-letter.
//!
//! - SIGKILL while the topic is down, after every token resolved; a new worker on the same store
//!   publishes every stored answer: once with the embedded store, once with DynamoDB and two
//!   workers killed together and a third started.
//! - Two deliveries of one token at once, in two workers: one call, one event, no letter.
//! - `product_mismatch` then the allow-list fixed: `dlq redrive` publishes with no call, and
//!   `--move-task` refuses while such letters wait.

mod support;

use std::time::Duration;

use mp_resolver::aws::sns::Publisher;
use mp_resolver::contract::{DeadLetterReason, Fingerprint};
use mp_resolver::emulator::TestToken;
use mp_resolver::ops::redrive::{self, RedriveOptions};
use mp_resolver::store::tokens::{TokenLedger, TokenState};
use mp_resolver::worker::Outcome;
use serde_json::json;
use support::faults::FaultProxy;
use support::ledger::Ledger;
use support::process::WorkerProcess;
use support::store::Backend;
use support::{eventually_within, Fixture, Topic};

const TOKENS: usize = 40;

/// A worker process that keeps events held (not dead-lettered) for as long as the test needs, with
/// a short visibility so a killed worker's messages come back soon.
fn worker_env(fx: &Fixture, sns_endpoint: &str) -> Vec<(String, String)> {
    let mut env = fx.binary_env(&[
        ("MPR_LOG__LEVEL", "debug"),
        ("MPR_RESOLVE__BUDGET_SECS", "5"),
        ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "3000"),
        ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "18"),
        ("MPR_PUBLISH__HOLD_SECS", "600"),
        ("MPR_PUBLISH__HOLD_MAX_DELAY_SECS", "1"),
        ("MPR_RATE_LIMIT__INITIAL_PER_SEC", "200"),
    ]);
    env.push(("AWS_ENDPOINT_URL_SNS".into(), sns_endpoint.to_owned()));
    env
}

/// How many of `ledger`'s tokens the store shows resolved (answered, not yet published).
async fn stored_answers(fx: &Fixture, ledger: &Ledger) -> usize {
    let reader = TokenLedger::new(fx.store_handle().clone(), "test", Duration::from_secs(1));
    let mut n = 0;
    for token in &ledger.tokens {
        if let Ok(Some(TokenState::Resolved(..))) = reader.state(&Fingerprint::of(token)).await {
            n += 1;
        }
    }
    n
}

/// Resolves every token with the topic unreachable, SIGKILLs `killed` workers together once every
/// answer is stored, restores the topic and starts one more worker on the same store: every token
/// must come out published once, with one ResolveCustomer call each.
async fn answers_survive_sigkill(backend: Backend, killed: usize) {
    let fx = Fixture::with_store(Topic::Standard, backend, &[]).await;
    fx.emulator.configure(|e| e.single_use = true);
    let sns = FaultProxy::start(&fx.localstack.endpoint).await;
    sns.cut();
    let ledger = Ledger::good(TOKENS, &format!("kill-{killed}"));
    fx.send_all(&ledger.bodies()).await;
    let env = worker_env(&fx, &sns.endpoint);
    let mut first: Vec<WorkerProcess> = (0..killed)
        .map(|_| WorkerProcess::spawn(env.clone()))
        .collect();

    eventually_within("every answer stored", Duration::from_secs(120), || async {
        stored_answers(&fx, &ledger).await == TOKENS
    })
    .await;
    assert_eq!(fx.emulator.stats().resolved, TOKENS as u64);
    for worker in &first {
        worker.signal("-KILL");
    }
    let mut outputs = Vec::new();
    for worker in &mut first {
        worker.wait(Duration::from_secs(30)).await;
        outputs.push(worker.output());
    }
    sns.restore();

    let mut last = WorkerProcess::spawn(env);
    let report = ledger.settle(&fx, Duration::from_secs(180)).await;
    last.signal("-TERM");
    last.wait(Duration::from_secs(30)).await;
    outputs.push(last.output());
    report.assert_holds("SIGKILL with the topic down");
    let stats = fx.emulator.stats();
    eprintln!(
        "{backend:?}, {killed} killed: {report}; emulator calls {} (resolved {}, expired {})",
        stats.calls, stats.resolved, stats.expired
    );
    assert_eq!(report.published, TOKENS, "every token published");
    assert_eq!(report.dead_lettered, 0, "none dead-lettered");
    assert_eq!(
        stats.calls, TOKENS as u64,
        "one ResolveCustomer call per token"
    );
    assert_eq!(stats.expired, 0, "no spent token asked about again");
    for output in &outputs {
        for token in &ledger.tokens {
            assert!(
                !output.contains(token.as_str()),
                "a raw token in the worker's output"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_outlives_a_sigkill_with_the_topic_down_embedded() {
    answers_survive_sigkill(Backend::Embedded, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_outlive_two_workers_killed_together_dynamodb() {
    answers_survive_sigkill(Backend::Dynamodb, 2).await;
}

/// The fixture's next token message, worked by `worker`, must be dead-lettered as
/// `product_mismatch`.
async fn assert_dead_lettered_as_mismatch(fx: &Fixture, worker: &mp_resolver::worker::Worker) {
    let message = fx.receive_token_message(worker).await;
    let outcome = worker.handle(message).await;
    assert!(
        matches!(
            outcome,
            Outcome::DeadLettered {
                reason: DeadLetterReason::ProductMismatch,
                ..
            }
        ),
        "{outcome:?}"
    );
}

/// `dlq redrive` from the fixture's dead-letter queue back to its token queue.
async fn redrive_on(fx: &Fixture, options: RedriveOptions) -> redrive::RedriveReport {
    redrive::redrive(&fx.sqs, &fx.dlq_url, &fx.queue_url, &options)
        .await
        .expect("redrive")
}

async fn one_call_for_a_double_submit(backend: Backend) {
    let fx = Fixture::with_store(Topic::Standard, backend, &[]).await;
    fx.emulator.configure(|e| {
        e.single_use = true;
        e.latency_ms = 300;
    });
    let token = TestToken::new("123456789012", "prod-abc")
        .customer("double")
        .encode()
        .expect("valid test token");
    let body = json!({"registrationToken": token, "signupId": "signup-double"}).to_string();
    fx.send(&body).await;
    fx.send(&body).await;
    let (a, b) = (fx.worker(), fx.worker());
    let (first, second) = (
        fx.receive_token_message(&a).await,
        fx.receive_token_message(&b).await,
    );
    let (one, two) = tokio::join!(a.handle(first), b.handle(second));
    let outcomes = [one, two];
    let published = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Published { .. }))
        .count();
    assert_eq!(published, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::AlreadyPublished { .. })),
        "{outcomes:?}"
    );
    assert_eq!(fx.emulator.stats().calls, 1, "one ResolveCustomer call");
    assert_eq!(fx.events(1).await.len(), 1);
    assert!(
        fx.read_once(&fx.subscriber_url, 1).await.is_empty(),
        "one event"
    );
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "no letter");
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
}

#[tokio::test]
async fn two_deliveries_of_one_token_at_once_make_one_call_embedded() {
    one_call_for_a_double_submit(Backend::Embedded).await;
}

#[tokio::test]
async fn two_deliveries_of_one_token_at_once_make_one_call_dynamodb() {
    one_call_for_a_double_submit(Backend::Dynamodb).await;
}

#[tokio::test]
async fn a_product_mismatch_is_published_by_redrive_once_the_allow_list_is_fixed() {
    let fx = Fixture::with_env(Topic::Standard, &[("MPR_PRODUCT_CODES", "prod-typo")]).await;
    fx.emulator.configure(|e| e.single_use = true);
    let worker = fx.worker();
    let token = TestToken::new("123456789012", "prod-abc")
        .customer("mismatch")
        .encode()
        .expect("valid test token");
    fx.send(&json!({"registrationToken": token, "signupId": "s-1"}).to_string())
        .await;
    assert_dead_lettered_as_mismatch(&fx, &worker).await;

    // A move task would send the letter back to be resolved again: refused, nothing moved.
    let publisher = Publisher::new(fx.sns.clone(), fx.topic_arn.clone());
    let refused = redrive_on(
        &fx,
        RedriveOptions {
            move_task: true,
            publisher: Some(publisher.clone()),
            product_codes: vec!["prod-typo".into()],
            ..RedriveOptions::default()
        },
    )
    .await;
    assert!(!refused.ok, "{refused:?}");
    assert!(
        refused
            .note
            .as_deref()
            .is_some_and(|n| n.contains("refused")),
        "{refused:?}"
    );
    assert_eq!(refused.moved_count, 0);

    // With the allow-list still wrong, the letter stays.
    let still = redrive_on(
        &fx,
        RedriveOptions {
            publisher: Some(publisher.clone()),
            product_codes: vec!["prod-typo".into()],
            ..RedriveOptions::default()
        },
    )
    .await;
    assert_eq!((still.moved_count, still.left), (0, 1), "{still:?}");

    // Fixed: the letter's event is published as it is, with no call; nothing goes back to the
    // token queue.
    let fixed = redrive_on(
        &fx,
        RedriveOptions {
            publisher: Some(publisher),
            product_codes: vec!["prod-typo".into(), "prod-abc".into()],
            ..RedriveOptions::default()
        },
    )
    .await;
    assert!(fixed.ok, "{fixed:?}");
    assert_eq!(fixed.moved_count, 1);
    let events = fx.events(1).await;
    assert_eq!(events[0].json()["signupId"], "s-1");
    assert_eq!(events[0].json()["productCode"], "prod-abc");
    assert_eq!(
        fx.emulator.stats().calls,
        1,
        "no second ResolveCustomer call"
    );
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
}

/// A body too large to dead-letter with its event attached (SQS's classic 256 KiB) is
/// dead-lettered with a reference to the stored event instead, and `dlq redrive` publishes the
/// stored event: nothing learned is lost, nothing loops.
#[tokio::test]
async fn a_letter_too_large_for_its_event_refers_to_the_store_and_redrive_publishes_it() {
    let fx = Fixture::with_env(Topic::Standard, &[("MPR_PRODUCT_CODES", "prod-typo")]).await;
    fx.emulator.configure(|e| e.single_use = true);
    let worker = fx.worker();
    let token = TestToken::new("123456789012", "prod-abc")
        .customer("large")
        .encode()
        .expect("valid test token");
    // Unknown fields are ignored by the parser; this one brings the body within 1 KiB of 256 KiB.
    let body = json!({"registrationToken": token, "signupId": "s-large", "padding": "p".repeat(255 * 1024)})
        .to_string();
    fx.send(&body).await;
    assert_dead_lettered_as_mismatch(&fx, &worker).await;
    // Peek at the letter (received, then visible again at once).
    let received = fx
        .sqs
        .receive_message()
        .queue_url(&fx.dlq_url)
        .message_attribute_names("All")
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive the letter");
    let letter = received.messages().first().expect("one letter").clone();
    fx.sqs
        .change_message_visibility()
        .queue_url(&fx.dlq_url)
        .receipt_handle(letter.receipt_handle().unwrap_or_default())
        .visibility_timeout(0)
        .send()
        .await
        .expect("hand the letter back");
    let attribute = |name: &str| {
        letter
            .message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .map(str::to_owned)
    };
    assert_eq!(
        attribute("mpr.eventRef"),
        Some(format!("token#{}", Fingerprint::of(&token))),
        "the letter names the store item"
    );
    assert_eq!(attribute("mpr.event"), None);
    assert_eq!(
        letter.body(),
        Some(body.as_str()),
        "the body is byte-identical"
    );

    let report = redrive_on(
        &fx,
        RedriveOptions {
            publisher: Some(Publisher::new(fx.sns.clone(), fx.topic_arn.clone())),
            product_codes: vec!["prod-abc".into()],
            store: Some(fx.store_handle().clone()),
            ..RedriveOptions::default()
        },
    )
    .await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.moved_count, 1);
    let events = fx.events(1).await;
    assert_eq!(events[0].json()["signupId"], "s-large");
    assert_eq!(
        fx.emulator.stats().calls,
        1,
        "no second ResolveCustomer call"
    );
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        0,
        "nothing sent back to be resolved"
    );
}
