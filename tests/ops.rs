//! The operator tools against LocalStack (SQS, SNS) and the emulator (ResolveCustomer): what an
//! on-call engineer sees from `check`, `enqueue` and `dlq`, through the library functions the
//! command line calls, and through the real binary for its output, exit codes and first run.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;

use aws_sdk_sqs::types::QueueAttributeName;
use mp_resolver::aws::sqs::Queue;
use mp_resolver::contract::{dlq_attr, parse_body, DeadLetter, DeadLetterReason, Fingerprint};
use mp_resolver::ops::check::{run_checks, Check, CheckReport, Outcome};
use mp_resolver::ops::dlq::{self, REDRIVE_POLICY};
use mp_resolver::ops::enqueue::{self, Extras};
use mp_resolver::ops::output::Render;
use mp_resolver::ops::redrive::{self, Method, RedriveOptions, Stage};
use serde_json::{json, Value};
use support::{Fixture, Received, Topic};
use tokio::io::AsyncWriteExt;

const BINARY: &str = env!("CARGO_BIN_EXE_mp-resolver");

async fn check(fx: &Fixture, settings: &mp_resolver::config::Settings) -> CheckReport {
    run_checks(&fx.clients(settings), settings).await
}

fn assert_fails_only(report: &CheckReport, expected: &[Check]) {
    assert_eq!(report.with_outcome(Outcome::Fail), expected, "{report:#?}");
    assert!(!report.ok);
    for c in expected {
        let result = report.get(*c).expect("check present");
        assert!(
            result.fix.as_deref().is_some_and(|f| !f.is_empty()),
            "{c:?} fails without a fix: {result:?}"
        );
    }
}

fn redrive_policy(target_arn: &str, max_receive_count: u32) -> String {
    json!({"deadLetterTargetArn": target_arn, "maxReceiveCount": max_receive_count.to_string()})
        .to_string()
}

async fn set_queue_attribute(fx: &Fixture, url: &str, name: QueueAttributeName, value: &str) {
    fx.sqs
        .set_queue_attributes()
        .queue_url(url)
        .attributes(name, value)
        .send()
        .await
        .expect("set queue attributes");
}

// ---------------------------------------------------------------------------------------------
// check

#[tokio::test]
async fn check_passes_on_a_good_setup() {
    let fx = Fixture::new(Topic::Standard).await;
    let report = check(&fx, &fx.settings).await;
    assert!(report.ok, "{report:#?}");
    for c in [
        Check::AwsRegion,
        Check::Queue,
        Check::Dlq,
        Check::QueueTypes,
        Check::RedrivePolicy,
        Check::VisibilityTimeout,
        Check::QueueVisibilityTimeout,
        Check::DlqRetention,
        Check::Topic,
        Check::TopicFifo,
        Check::ResolveCustomer,
    ] {
        assert_eq!(report.outcome(c), Some(Outcome::Pass), "{c:?}: {report:#?}");
    }
    assert!(report
        .get(Check::ResolveCustomer)
        .unwrap()
        .summary
        .contains("InvalidTokenException"));
    assert_eq!(
        fx.emulator.stats().invalid,
        1,
        "one probe call with an invalid token"
    );
}

#[tokio::test]
async fn check_passes_on_a_good_fifo_setup() {
    let fx = Fixture::new(Topic::Fifo).await;
    let report = check(&fx, &fx.settings).await;
    assert!(report.ok, "{report:#?}");
    assert!(report
        .get(Check::TopicFifo)
        .unwrap()
        .summary
        .contains("FIFO topic"));
}

#[tokio::test]
async fn check_fails_on_a_missing_dlq() {
    let fx = Fixture::new(Topic::Standard).await;
    let mut settings = fx.settings.clone();
    settings.dlq_url = format!("{}-missing", fx.dlq_url);
    let report = check(&fx, &settings).await;
    assert_fails_only(&report, &[Check::Dlq]);
    let dlq = report.get(Check::Dlq).unwrap();
    assert!(dlq.summary.contains("does not exist"), "{dlq:?}");
    assert!(dlq.fix.as_deref().unwrap().contains("MPR_DLQ_URL"));
    // What depends on the DLQ is not guessed at.
    assert_eq!(report.outcome(Check::RedrivePolicy), Some(Outcome::Skip));
    assert_eq!(report.outcome(Check::DlqRetention), Some(Outcome::Skip));
}

#[tokio::test]
async fn check_fails_on_a_missing_queue_and_topic() {
    let fx = Fixture::new(Topic::Standard).await;
    let mut settings = fx.settings.clone();
    settings.queue_url = format!("{}-missing", fx.queue_url);
    settings.topic_arn = format!("{}-missing", fx.topic_arn);
    let report = check(&fx, &settings).await;
    assert_fails_only(&report, &[Check::Queue, Check::Topic]);
    let topic = report.get(Check::Topic).unwrap();
    assert!(topic.summary.contains("does not exist"), "{topic:?}");
    assert!(topic.fix.as_deref().unwrap().contains("MPR_TOPIC_ARN"));
    assert_eq!(report.outcome(Check::TopicFifo), Some(Outcome::Skip));
}

#[tokio::test]
async fn check_fails_when_the_redrive_policy_points_elsewhere() {
    let fx = Fixture::new(Topic::Standard).await;
    let elsewhere = fx.extra_queue(false, HashMap::new()).await;
    let elsewhere_arn = fx.arn_of(&elsewhere).await;
    set_queue_attribute(
        &fx,
        &fx.queue_url,
        QueueAttributeName::RedrivePolicy,
        &redrive_policy(&elsewhere_arn, 10),
    )
    .await;
    let report = check(&fx, &fx.settings).await;
    assert_fails_only(&report, &[Check::RedrivePolicy]);
    let result = report.get(Check::RedrivePolicy).unwrap();
    assert!(result.summary.contains(&elsewhere_arn), "{result:?}");
    assert!(result
        .fix
        .as_deref()
        .unwrap()
        .contains(&fx.arn_of(&fx.dlq_url).await));
}

#[tokio::test]
async fn check_judges_max_receive_count() {
    let fx = Fixture::new(Topic::Standard).await;
    let dlq_arn = fx.arn_of(&fx.dlq_url).await;
    for (count, expected) in [(1, Outcome::Fail), (5, Outcome::Warn), (10, Outcome::Pass)] {
        set_queue_attribute(
            &fx,
            &fx.queue_url,
            QueueAttributeName::RedrivePolicy,
            &redrive_policy(&dlq_arn, count),
        )
        .await;
        let report = check(&fx, &fx.settings).await;
        assert_eq!(
            report.outcome(Check::RedrivePolicy),
            Some(expected),
            "maxReceiveCount {count}: {report:#?}"
        );
        assert_eq!(report.ok, expected != Outcome::Fail);
    }
}

#[tokio::test]
async fn check_fails_when_visibility_does_not_cover_the_backoff_budget() {
    let fx = Fixture::new(Topic::Standard).await;
    let mut settings = fx.settings.clone();
    // 30 s asked for; 60 s of backoff budget plus one attempt of 3 s plus the 10 s margin
    // (the rule configuration validation enforces, config::limits) do not fit.
    settings.resolve.budget_secs = 60;
    let report = check(&fx, &settings).await;
    assert_fails_only(&report, &[Check::VisibilityTimeout]);
    let result = report.get(Check::VisibilityTimeout).unwrap();
    assert!(result.summary.contains("73 s"), "{result:?}");
    assert!(result
        .fix
        .as_deref()
        .unwrap()
        .contains("MPR_WORKER__VISIBILITY_TIMEOUT_SECS to at least 73"));

    // The queue's own, shorter visibility timeout is a warning: the worker sets its own.
    set_queue_attribute(
        &fx,
        &fx.queue_url,
        QueueAttributeName::VisibilityTimeout,
        "5",
    )
    .await;
    let report = check(&fx, &fx.settings).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        report.with_outcome(Outcome::Warn),
        vec![Check::QueueVisibilityTimeout]
    );
}

#[tokio::test]
async fn check_fails_when_the_topic_is_not_fifo_but_its_arn_says_so() {
    let fx = Fixture::new(Topic::Fifo).await;
    // AWS ties FIFO-ness to the name; LocalStack lets the attribute be changed, which stands in
    // for a topic that is not what its ARN promises.
    fx.sns
        .set_topic_attributes()
        .topic_arn(&fx.topic_arn)
        .attribute_name("FifoTopic")
        .attribute_value("false")
        .send()
        .await
        .expect("set topic attributes");
    let report = check(&fx, &fx.settings).await;
    assert_fails_only(&report, &[Check::TopicFifo]);
}

#[tokio::test]
async fn check_fails_when_queue_and_dlq_types_differ() {
    let fx = Fixture::new(Topic::Standard).await;
    let fifo_queue = fx.extra_queue(true, HashMap::new()).await;
    let mut settings = fx.settings.clone();
    settings.queue_url = fifo_queue;
    let report = check(&fx, &settings).await;
    assert_eq!(report.outcome(Check::QueueTypes), Some(Outcome::Fail));
    let summary = &report.get(Check::QueueTypes).unwrap().summary;
    assert!(
        summary.contains("FIFO") && summary.contains("standard"),
        "{summary}"
    );
    // The FIFO queue has no redrive policy either, which is its own failure.
    assert_fails_only(&report, &[Check::QueueTypes, Check::RedrivePolicy]);
}

#[tokio::test]
async fn check_fails_when_resolve_customer_is_disabled() {
    let fx = Fixture::new(Topic::Standard).await;
    fx.emulator.configure(|s| s.disabled = true);
    let report = check(&fx, &fx.settings).await;
    assert_fails_only(&report, &[Check::ResolveCustomer]);
    assert!(report
        .get(Check::ResolveCustomer)
        .unwrap()
        .summary
        .contains("DisabledApiException"));
}

/// A Marketplace Metering endpoint that refuses every call the way IAM does.
async fn access_denied_endpoint() -> String {
    use axum::http::{header, StatusCode};
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
            json!({
                "__type": "AccessDeniedException",
                "message": "User: arn:aws:sts::123456789012:assumed-role/worker/t is not authorized to perform: aws-marketplace:ResolveCustomer"
            })
            .to_string(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn check_fails_with_the_iam_fix_when_resolve_customer_is_denied() {
    let fx = Fixture::new(Topic::Standard).await;
    let endpoint = access_denied_endpoint().await;
    let clients = fx.clients_with_metering(&fx.settings, &endpoint);
    let report = run_checks(&clients, &fx.settings).await;
    assert_fails_only(&report, &[Check::ResolveCustomer]);
    let result = report.get(Check::ResolveCustomer).unwrap();
    assert!(
        result.summary.contains("AccessDeniedException"),
        "{result:?}"
    );
    assert!(result
        .fix
        .as_deref()
        .unwrap()
        .contains("aws-marketplace:ResolveCustomer"));
}

// ---------------------------------------------------------------------------------------------
// enqueue

#[tokio::test]
async fn enqueue_sends_every_token_in_the_json_form() {
    let fx = Fixture::new(Topic::Standard).await;
    let tokens: Vec<String> = (0..13).map(|i| format!("tok-{i}-abc")).collect();
    let extras = Extras {
        signup_id: Some("signup-7".into()),
        context: BTreeMap::from([("plan".to_owned(), "gold".to_owned())]),
    };
    let prepared = enqueue::prepare(&tokens, &extras).expect("valid tokens");
    let report = enqueue::enqueue(&fx.sqs, &fx.queue_url, &prepared).await;
    assert!(report.ok && report.failed.is_empty(), "{report:?}");
    assert_eq!(report.sent.len(), 13);

    let received = fx.collect(&fx.queue_url, 13).await;
    let mut got = HashSet::new();
    for message in &received {
        assert!(message.body.starts_with('{'), "JSON form: {}", message.body);
        let request = parse_body(&message.body).expect("the worker accepts it");
        assert_eq!(request.signup_id.as_deref(), Some("signup-7"));
        assert_eq!(
            request.context.get("plan").map(String::as_str),
            Some("gold")
        );
        assert!(request.submitted_at.is_some());
        got.insert(request.token.expose().to_owned());
    }
    assert_eq!(got, tokens.iter().cloned().collect::<HashSet<_>>());
    let reported: HashSet<&str> = report.sent.iter().map(|s| s.event_id.as_str()).collect();
    for token in &tokens {
        assert!(reported.contains(Fingerprint::of(token).as_str()));
    }
    let shown = serde_json::to_string(&report).unwrap();
    assert!(
        !shown.contains("tok-0-abc"),
        "the report names tokens by fingerprint only"
    );
}

#[tokio::test]
async fn enqueue_refuses_a_malformed_token_and_sends_nothing() {
    let fx = Fixture::new(Topic::Standard).await;
    let tokens = vec![
        "good-token".to_owned(),
        "bad\u{7}token".to_owned(),
        "x".repeat(8_193),
    ];
    let refused = enqueue::prepare(&tokens, &Extras::default()).expect_err("refused");
    let positions: Vec<usize> = refused.rejected.iter().map(|r| r.position).collect();
    assert_eq!(positions, vec![2, 3]);
    assert_eq!(fx.depth(&fx.queue_url).await, 0, "nothing was sent");
}

#[tokio::test]
async fn enqueue_to_a_fifo_queue() {
    let fx = Fixture::new(Topic::Standard).await;
    let fifo = fx.extra_queue(true, HashMap::new()).await;
    let prepared = enqueue::prepare(
        &["fifo-a".to_owned(), "fifo-b".to_owned()],
        &Extras::default(),
    )
    .expect("valid tokens");
    let report = enqueue::enqueue(&fx.sqs, &fifo, &prepared).await;
    assert!(report.ok, "{report:?}");
    let received = fx.collect(&fifo, 2).await;
    assert!(received.iter().all(|m| m.group_id.is_some()));
}

// ---------------------------------------------------------------------------------------------
// dlq

/// Two invalid tokens and one expired, dead-lettered as the worker does it, and one message the
/// queue's redrive policy moved (no attributes). Returns their bodies, by reason.
async fn seed_dead_letters(fx: &Fixture) -> HashMap<&'static str, Vec<String>> {
    let queue = Queue::new(fx.sqs.clone(), fx.queue_url.clone(), fx.dlq_url.clone());
    let mut bodies: HashMap<&'static str, Vec<String>> = HashMap::new();
    for (i, reason) in [
        DeadLetterReason::InvalidToken,
        DeadLetterReason::InvalidToken,
        DeadLetterReason::ExpiredToken,
    ]
    .into_iter()
    .enumerate()
    {
        let token = format!("dead-{i}-{}", reason.as_str());
        let body = json!({"registrationToken": token, "signupId": format!("s-{i}")}).to_string();
        queue
            .send_dead_letter(
                &DeadLetter {
                    body: body.clone(),
                    reason,
                    detail: format!("ResolveCustomer: {reason}"),
                    event_id: Some(Fingerprint::of(&token)),
                    source_message_id: format!("source-{i}"),
                    receive_count: 1,
                    failed_at: mp_resolver::aws::sqs::now_rfc3339(),
                    event: None,
                    event_ref: None,
                },
                None,
            )
            .await
            .expect("send dead-letter");
        bodies.entry(reason.as_str()).or_default().push(body);
    }
    let moved = "  moved-by-redrive-policy-token ".to_owned();
    fx.sqs
        .send_message()
        .queue_url(&fx.dlq_url)
        .message_body(&moved)
        .send()
        .await
        .expect("send");
    bodies.entry(REDRIVE_POLICY).or_default().push(moved);
    bodies
}

fn bodies(received: &[Received]) -> HashSet<String> {
    received.iter().map(|m| m.body.clone()).collect()
}

#[tokio::test]
async fn dlq_list_groups_by_reason_and_consumes_nothing() {
    let fx = Fixture::new(Topic::Standard).await;
    let seeded = seed_dead_letters(&fx).await;
    let report = dlq::list(&fx.sqs, &fx.dlq_url, 1000).await.expect("list");
    assert!(report.ok && !report.truncated, "{report:?}");
    assert_eq!(report.examined, 4);
    let counts: Vec<(&str, usize)> = report
        .groups
        .iter()
        .map(|g| (g.reason.as_str(), g.count))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("invalid_token", 2),
            ("expired_token", 1),
            (REDRIVE_POLICY, 1)
        ]
    );
    let invalid = &report.groups[0];
    let ids: HashSet<&str> = invalid
        .messages
        .iter()
        .filter_map(|m| m.event_id.as_deref())
        .collect();
    assert!(ids.contains(Fingerprint::of("dead-0-invalid_token").as_str()));
    assert!(invalid.oldest_age_secs.is_some() && invalid.messages[0].detail.is_some());
    // Without an attribute, the fingerprint comes from the body, as the worker would make it.
    assert_eq!(
        report.groups[2].messages[0].event_id.as_deref(),
        Some(Fingerprint::of("moved-by-redrive-policy-token").as_str())
    );

    // Everything is still there, visible at once.
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (4, 0));
    let again = fx.dead_letters(4).await;
    let all: HashSet<String> = seeded.values().flatten().cloned().collect();
    assert_eq!(bodies(&again), all);
}

/// `dlq redrive` with no filter, as the library function the command line calls.
async fn redrive_everything(fx: &Fixture) -> redrive::RedriveReport {
    redrive::redrive(
        &fx.sqs,
        &fx.dlq_url,
        &fx.queue_url,
        &RedriveOptions::default(),
    )
    .await
    .expect("redrive")
}

/// Two dead-letters of the same token queue message (the worker sent its dead-letter twice, say
/// because the delete after the first failed), written by hand with the worker's attributes.
async fn seed_two_copies(fx: &Fixture) -> String {
    let body = json!({"registrationToken": "copied-token"}).to_string();
    for attempt in ["1", "2"] {
        let attribute = |value: &str| {
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("attribute")
        };
        fx.sqs
            .send_message()
            .queue_url(&fx.dlq_url)
            .message_body(&body)
            .message_attributes(dlq_attr::REASON, attribute("invalid_token"))
            .message_attributes(dlq_attr::SOURCE_MESSAGE_ID, attribute("source-copied"))
            .message_attributes(dlq_attr::RECEIVE_COUNT, attribute(attempt))
            .send()
            .await
            .expect("send dead-letter copy");
    }
    body
}

#[tokio::test]
async fn dlq_list_and_redrive_collapse_copies_of_one_letter() {
    let fx = Fixture::new(Topic::Standard).await;
    let body = seed_two_copies(&fx).await;

    let report = dlq::list(&fx.sqs, &fx.dlq_url, 1000).await.expect("list");
    assert!(report.ok, "{report:?}");
    assert_eq!((report.examined, report.letters), (2, 1), "{report:?}");
    assert_eq!(report.groups.len(), 1, "{report:?}");
    let group = &report.groups[0];
    assert_eq!(
        (group.reason.as_str(), group.count, group.copies),
        ("invalid_token", 1, 2)
    );
    assert_eq!(group.messages.len(), 1);
    assert_eq!(group.messages[0].copies, 2);
    assert_eq!(
        group.messages[0].source_message_id.as_deref(),
        Some("source-copied")
    );
    let json = serde_json::to_value(&report).expect("JSON");
    assert_eq!(json["letters"], 1);
    assert_eq!(json["groups"][0]["count"], 1);
    assert_eq!(json["groups"][0]["messages"][0]["copies"], 2);
    let human = report.human();
    assert!(
        human.contains("1 dead-letter(s)") && human.contains("(2 copies)"),
        "{human}"
    );
    // Listing consumed nothing.
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (2, 0));

    let report = redrive_everything(&fx).await;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.moved_count, report.copies_deleted), (1, 1));
    assert_eq!(report.moved[0].copies, 2);
    assert!(report.human().contains("2 copies"), "{}", report.human());

    // One message on the token queue, body unchanged; the dead-letter queue is empty.
    let on_queue = fx.collect(&fx.queue_url, 1).await;
    assert_eq!(on_queue[0].body, body);
    assert!(
        fx.read_once(&fx.queue_url, 1).await.is_empty(),
        "one copy sent, not two"
    );
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (0, 0));
}

#[tokio::test]
async fn dlq_list_stops_at_max() {
    let fx = Fixture::new(Topic::Standard).await;
    seed_dead_letters(&fx).await;
    let report = dlq::list(&fx.sqs, &fx.dlq_url, 2).await.expect("list");
    assert_eq!(report.examined, 2);
    assert!(report.truncated);
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (4, 0));
}

#[tokio::test]
async fn dlq_redrive_with_a_reason_moves_only_those_bodies_unchanged() {
    let fx = Fixture::new(Topic::Standard).await;
    let seeded = seed_dead_letters(&fx).await;
    let options = RedriveOptions {
        reason: Some(DeadLetterReason::InvalidToken.into()),
        ..RedriveOptions::default()
    };
    let report = redrive::redrive(&fx.sqs, &fx.dlq_url, &fx.queue_url, &options)
        .await
        .expect("redrive");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.method, Method::Copy);
    assert_eq!(report.moved_count, 2);
    assert_eq!(report.left, 2);

    let on_queue = fx.collect(&fx.queue_url, 2).await;
    assert_eq!(
        bodies(&on_queue),
        seeded["invalid_token"]
            .iter()
            .cloned()
            .collect::<HashSet<_>>(),
        "bodies byte for byte"
    );
    for m in &on_queue {
        assert!(
            !m.attributes.contains_key(dlq_attr::REASON) && m.attributes.is_empty(),
            "no mpr.* attributes carried over: {:?}",
            m.attributes
        );
    }
    // The others are still on the DLQ and visible; the moved ones are gone from it.
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (2, 0));
    let left = fx.dead_letters(2).await;
    let reasons: HashSet<String> = left
        .iter()
        .map(|m| {
            m.attributes
                .get(dlq_attr::REASON)
                .cloned()
                .unwrap_or_else(|| REDRIVE_POLICY.to_owned())
        })
        .collect();
    assert_eq!(
        reasons,
        HashSet::from(["expired_token".to_owned(), REDRIVE_POLICY.to_owned()])
    );
}

#[tokio::test]
async fn dlq_redrive_without_a_filter_moves_everything() {
    let fx = Fixture::new(Topic::Standard).await;
    let seeded = seed_dead_letters(&fx).await;
    let report = redrive_everything(&fx).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.moved_count, 4);
    let on_queue = fx.collect(&fx.queue_url, 4).await;
    let all: HashSet<String> = seeded.values().flatten().cloned().collect();
    assert_eq!(bodies(&on_queue), all);
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
}

#[tokio::test]
async fn dlq_redrive_honours_max() {
    let fx = Fixture::new(Topic::Standard).await;
    seed_dead_letters(&fx).await;
    let options = RedriveOptions {
        max: Some(3),
        ..RedriveOptions::default()
    };
    let report = redrive::redrive(&fx.sqs, &fx.dlq_url, &fx.queue_url, &options)
        .await
        .expect("redrive");
    assert_eq!(report.moved_count, 3, "{report:?}");
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (1, 0));
    assert_eq!(fx.depth(&fx.queue_url).await, 3);
}

#[tokio::test]
async fn dlq_redrive_by_sqs_move_task_moves_everything() {
    let fx = Fixture::new(Topic::Standard).await;
    let seeded = seed_dead_letters(&fx).await;
    let options = RedriveOptions {
        move_task: true,
        ..RedriveOptions::default()
    };
    let report = redrive::redrive(&fx.sqs, &fx.dlq_url, &fx.queue_url, &options)
        .await
        .expect("redrive");
    assert_eq!(report.method, Method::MoveTask, "{report:?}");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.moved_count, 4);
    let on_queue = fx.collect(&fx.queue_url, 4).await;
    let all: HashSet<String> = seeded.values().flatten().cloned().collect();
    assert_eq!(bodies(&on_queue), all);
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
}

#[tokio::test]
async fn dlq_redrive_deletes_nothing_whose_copy_was_not_sent() {
    let fx = Fixture::new(Topic::Standard).await;
    // A destination that refuses bodies over 1 KiB, entry by entry.
    let small = fx
        .extra_queue(
            false,
            HashMap::from([(QueueAttributeName::MaximumMessageSize, "1024".to_owned())]),
        )
        .await;
    let big = "b".repeat(2_000);
    for body in ["small-token", big.as_str()] {
        fx.sqs
            .send_message()
            .queue_url(&fx.dlq_url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
    let report = redrive::redrive(&fx.sqs, &fx.dlq_url, &small, &RedriveOptions::default())
        .await
        .expect("redrive");
    assert!(!report.ok);
    assert_eq!(report.moved_count, 1, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].stage, Stage::Send);
    assert_eq!(
        report.failed[0].event_id.as_deref(),
        Some(Fingerprint::of(&big).as_str())
    );
    // The refused one is still on the DLQ, visible again at once.
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (1, 0));
    assert_eq!(fx.dead_letters(1).await[0].body, big);
    assert_eq!(fx.collect(&small, 1).await[0].body, "small-token");
}

#[tokio::test]
async fn dlq_redrive_to_a_missing_queue_touches_nothing() {
    let fx = Fixture::new(Topic::Standard).await;
    seed_dead_letters(&fx).await;
    let missing = format!("{}-missing", fx.queue_url);
    let error = redrive::redrive(&fx.sqs, &fx.dlq_url, &missing, &RedriveOptions::default())
        .await
        .expect_err("no destination");
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_eq!(fx.visible_and_in_flight(&fx.dlq_url).await, (4, 0));
}

#[tokio::test]
async fn dlq_redrive_between_fifo_queues_keeps_groups() {
    let fx = Fixture::new(Topic::Standard).await;
    let fifo_dlq = fx
        .extra_queue(
            true,
            HashMap::from([(QueueAttributeName::ContentBasedDeduplication, "true".into())]),
        )
        .await;
    let fifo_queue = fx.extra_queue(true, HashMap::new()).await;
    for (group, body) in [("g-1", "fifo-1"), ("g-1", "fifo-2"), ("g-2", "fifo-3")] {
        fx.sqs
            .send_message()
            .queue_url(&fifo_dlq)
            .message_body(body)
            .message_group_id(group)
            .send()
            .await
            .expect("send");
    }
    let report = redrive::redrive(&fx.sqs, &fifo_dlq, &fifo_queue, &RedriveOptions::default())
        .await
        .expect("redrive");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.moved_count, 3);
    let on_queue = fx.collect(&fifo_queue, 3).await;
    let groups: HashMap<String, Option<String>> = on_queue
        .iter()
        .map(|m| (m.body.clone(), m.group_id.clone()))
        .collect();
    assert_eq!(groups["fifo-1"].as_deref(), Some("g-1"));
    assert_eq!(groups["fifo-3"].as_deref(), Some("g-2"));
}

// ---------------------------------------------------------------------------------------------
// The real binary: output, exit codes, first run

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with only `env` (and PATH) in a directory without a config/default.toml.
async fn run_binary(args: &[&str], env: &[(String, String)], stdin: Option<&str>) -> Run {
    let dir = std::env::temp_dir().join(format!("mpr-ops-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start mp-resolver");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
    }
    let output = child.wait_with_output().await.expect("mp-resolver ends");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn first_run_without_configuration_says_what_to_set() {
    for args in [
        &["run"][..],
        &["check"],
        &["dlq"],
        &["dlq", "redrive"],
        &["enqueue", "tok"],
    ] {
        let run = run_binary(args, &[], None).await;
        assert_eq!(run.code, Some(78), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("Not configured yet")
                && run.stderr.contains("For example:")
                && run.stderr.contains("README"),
            "{args:?}:\n{}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    let run = run_binary(&["check"], &[], None).await;
    for variable in ["MPR_QUEUE_URL", "MPR_DLQ_URL", "MPR_TOPIC_ARN"] {
        assert!(run.stderr.contains(variable), "{}", run.stderr);
    }
    // `enqueue` needs only the queue, and says it can be given as a flag.
    let run = run_binary(&["enqueue", "tok"], &[], None).await;
    assert!(run.stderr.contains("MPR_QUEUE_URL") && run.stderr.contains("--queue-url"));
    assert!(!run.stderr.contains("MPR_TOPIC_ARN"), "{}", run.stderr);

    // Scripts get one JSON document on stdout.
    let run = run_binary(&["check", "--json"], &[], None).await;
    assert_eq!(run.code, Some(78));
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(doc["error"]["kind"], "configuration");
    assert_eq!(
        doc["error"]["missing"],
        json!(["MPR_QUEUE_URL", "MPR_DLQ_URL", "MPR_TOPIC_ARN"])
    );
}

#[tokio::test]
async fn every_subcommand_has_help_with_an_example() {
    for args in [
        &["check", "--help"][..],
        &["enqueue", "--help"],
        &["dlq", "--help"],
        &["dlq", "list", "--help"],
        &["dlq", "redrive", "--help"],
        &["usage", "send", "--help"],
        &["usage", "show", "--help"],
    ] {
        let run = run_binary(args, &[], None).await;
        assert_eq!(run.code, Some(0), "{args:?}");
        assert!(
            run.stdout.contains("Example") && run.stdout.contains("--json"),
            "{args:?}:\n{}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn check_from_the_command_line() {
    let fx = Fixture::new(Topic::Standard).await;
    // The fixture's queue hides messages for 30 s: ask for that, with retries that fit in it.
    let tuned = [
        ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "30"),
        ("MPR_RESOLVE__BUDGET_SECS", "5"),
        ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "3000"),
    ];
    let run = run_binary(&["check"], &fx.binary_env(&tuned), None).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("ok    resolve_customer"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("ok    store"),
        "the store check runs last: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("All 13 checks passed"),
        "{}",
        run.stdout
    );

    let missing_topic = format!("{}-missing", fx.topic_arn);
    let env = fx.binary_env(&[("MPR_TOPIC_ARN", missing_topic.as_str())]);
    let run = run_binary(&["check"], &env, None).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("FAIL  topic"), "{}", run.stdout);
    assert!(
        run.stdout.contains("fix: create the topic"),
        "{}",
        run.stdout
    );

    let run = run_binary(&["check", "--json"], &env, None).await;
    assert_eq!(run.code, Some(1));
    let doc: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(doc["ok"], false);
    let topic = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "topic")
        .expect("topic check");
    assert_eq!(topic["outcome"], "fail");
}

#[tokio::test]
async fn enqueue_and_dlq_from_the_command_line() {
    let fx = Fixture::new(Topic::Standard).await;
    // Only the queue: enqueue needs nothing else.
    let env: Vec<(String, String)> = fx
        .binary_env(&[])
        .into_iter()
        .filter(|(k, _)| k != "MPR_DLQ_URL" && k != "MPR_TOPIC_ARN")
        .collect();
    let run = run_binary(
        &[
            "enqueue",
            "--json",
            "--signup-id",
            "cli-1",
            "--context",
            "plan=gold",
        ],
        &env,
        Some("cli-token-1\n\ncli-token-2\n"),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        !run.stdout.contains("cli-token-1"),
        "tokens are never printed"
    );
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let ids: HashSet<&str> = doc["sent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["eventId"].as_str())
        .collect();
    assert_eq!(
        ids,
        HashSet::from([
            Fingerprint::of("cli-token-1").as_str(),
            Fingerprint::of("cli-token-2").as_str()
        ])
    );
    assert_eq!(fx.depth(&fx.queue_url).await, 2);

    // A malformed token: nothing sent, exit 65, and the token is not echoed.
    let run = run_binary(&["enqueue", "fine", "not\u{1}fine"], &env, None).await;
    assert_eq!(run.code, Some(65), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was sent"), "{}", run.stderr);
    assert!(!run.stderr.contains("not\u{1}fine"));
    assert_eq!(fx.depth(&fx.queue_url).await, 2);

    seed_dead_letters(&fx).await;
    let dlq_env = fx.binary_env(&[]);
    let run = run_binary(&["dlq"], &dlq_env, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("4 dead-letter(s)")
            && run.stdout.contains("invalid_token")
            && run.stdout.contains(REDRIVE_POLICY)
            && run.stdout.contains("Nothing was consumed"),
        "{}",
        run.stdout
    );
    let run = run_binary(
        &["dlq", "redrive", "--reason", "expired_token", "--json"],
        &dlq_env,
        None,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(doc["movedCount"], 1);
    assert_eq!(doc["method"], "copy");
    let run = run_binary(&["dlq", "redrive", "--reason", "nope"], &dlq_env, None).await;
    assert_eq!(run.code, Some(2), "a usage error: {}", run.stderr);
    assert!(run.stderr.contains("expired_token"), "{}", run.stderr);
}
