//! Reliability evidence: network faults, dependency errors (on the token and the lifecycle queue),
//! crashes, two workers, hostile input and load, each against the real `mp-resolver run` binary, LocalStack and the emulator, and each
//! ending in the same accounting: every token published at least once (same eventId on every
//! duplicate) or dead-lettered exactly once with the right reason; none lost, none stuck. The
//! worker's whole output is checked for raw tokens.
//!
//! CI runs short versions. `scripts/reliability.sh` runs the full sizes (MPR_RELIABILITY_FULL=1);
//! the figures are in RELIABILITY.md.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::faults::FaultProxy;
use support::ledger::{Ledger, Report};
use support::process::WorkerProcess;
use support::{eventually_within, Fixture, Topic};

/// Sizes and durations: short in CI, full from scripts/reliability.sh.
struct Scale {
    tokens: usize,
    cut: Duration,
    load_tokens: usize,
    /// How long a scenario may take to settle before what is missing counts as lost.
    settle: Duration,
}

fn scale() -> Scale {
    if std::env::var("MPR_RELIABILITY_FULL").is_ok_and(|v| v == "1") {
        Scale {
            tokens: 2_000,
            cut: Duration::from_secs(10),
            load_tokens: 20_000,
            settle: Duration::from_secs(1_200),
        }
    } else {
        Scale {
            tokens: 200,
            cut: Duration::from_secs(3),
            load_tokens: 1_000,
            settle: Duration::from_secs(240),
        }
    }
}

/// The three dependencies, each behind its own fault proxy.
struct Proxies {
    sqs: FaultProxy,
    sns: FaultProxy,
    metering: FaultProxy,
}

impl Proxies {
    async fn start(fx: &Fixture) -> Self {
        Proxies {
            sqs: FaultProxy::start(&fx.localstack.endpoint).await,
            sns: FaultProxy::start(&fx.localstack.endpoint).await,
            metering: FaultProxy::start(&fx.emulator.endpoint()).await,
        }
    }

    fn all(&self) -> [&FaultProxy; 3] {
        [&self.sqs, &self.sns, &self.metering]
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL_SQS".into(), self.sqs.endpoint.clone()),
            ("AWS_ENDPOINT_URL_SNS".into(), self.sns.endpoint.clone()),
            (
                "AWS_ENDPOINT_URL_MARKETPLACE_METERING".into(),
                self.metering.endpoint.clone(),
            ),
        ]
    }
}

// Scenarios run on a multi-threaded runtime: the task that drains the worker's standard error must
// keep up even while the test is busy, or the worker would block writing its logs.

/// Settings every scenario's worker runs with: debug logs (the most output to leak a token into)
/// and a short visibility timeout so messages of a killed worker come back quickly.
fn worker_env(fx: &Fixture, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut base: Vec<(&str, &str)> = vec![
        ("MPR_LOG__LEVEL", "debug"),
        // A short retry budget (5 s + one 3 s attempt) and the smallest visibility the
        // configuration allows with it (+ 10 s): what a SIGKILLed worker's messages wait before
        // they return.
        ("MPR_RESOLVE__BUDGET_SECS", "5"),
        ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "3000"),
        ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "18"),
        ("MPR_WORKER__SHUTDOWN_GRACE_SECS", "10"),
        ("MPR_RESOLVE__HANDBACK_MAX_SECS", "5"),
        ("MPR_RESOLVE__INITIAL_BACKOFF_MS", "20"),
        ("MPR_RESOLVE__MAX_BACKOFF_MS", "500"),
        ("MPR_RATE_LIMIT__INITIAL_PER_SEC", "200"),
    ];
    base.extend_from_slice(extra);
    fx.binary_env(&base)
}

fn with(mut env: Vec<(String, String)>, more: Vec<(String, String)>) -> Vec<(String, String)> {
    env.extend(more);
    env
}

/// No raw token in anything the worker wrote.
fn assert_no_token_leaks(scenario: &str, outputs: &[String], tokens: &[String]) {
    let total: usize = outputs.iter().map(String::len).sum();
    assert!(total > 0, "{scenario}: captured no worker output");
    for output in outputs {
        assert!(
            !output.contains("panicked"),
            "{scenario}: the worker panicked\n{output}"
        );
        for token in tokens.iter().filter(|t| t.len() >= 8) {
            assert!(
                !output.contains(token.as_str()),
                "{scenario}: a raw token appears in the worker's output"
            );
        }
    }
    eprintln!("{scenario}: {total} bytes of worker output, no raw token in them");
}

async fn stop(mut worker: WorkerProcess) -> String {
    worker.signal("-TERM");
    let status = worker.wait(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "worker exit {status:?}\n{}",
        worker.output()
    );
    worker.output()
}

/// Waits until the emulator has answered `calls` ResolveCustomer calls: the run is under way.
async fn wait_for_calls(fx: &Fixture, calls: u64) {
    eventually_within("progress", scale().settle, || async {
        fx.emulator.stats().calls >= calls
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_mid_run_loses_nothing() {
    let s = scale();
    let fx = Fixture::new(Topic::Standard).await;
    let proxies = Proxies::start(&fx).await;
    let ledger = Ledger::mixed(s.tokens, "cut");
    fx.send_all(&ledger.bodies()).await;
    let worker = WorkerProcess::spawn(with(worker_env(&fx, &[]), proxies.env()));

    wait_for_calls(&fx, (s.tokens / 4) as u64).await;
    for p in proxies.all() {
        p.cut();
    }
    tokio::time::sleep(s.cut).await; // the outage itself: a duration, not a condition
    for p in proxies.all() {
        p.restore();
    }
    let report = ledger.settle(&fx, s.settle).await;
    let output = stop(worker).await;
    report.assert_holds("network cut");
    assert_no_token_leaks("network cut", &[output], &ledger.tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_connection_resets_lose_nothing() {
    let s = scale();
    let fx = Fixture::new(Topic::Standard).await;
    let proxies = Proxies::start(&fx).await;
    for p in proxies.all() {
        p.set_latency(Duration::from_millis(50));
    }
    let ledger = Ledger::mixed(s.tokens, "resets");
    fx.send_all(&ledger.bodies()).await;
    let worker = WorkerProcess::spawn(with(worker_env(&fx, &[]), proxies.env()));

    for step in 1..=4u64 {
        wait_for_calls(&fx, step * (s.tokens as u64) / 6).await;
        for p in proxies.all() {
            p.reset_connections();
        }
    }
    let report = ledger.settle(&fx, s.settle).await;
    let output = stop(worker).await;
    report.assert_holds("latency and resets");
    assert_no_token_leaks("latency and resets", &[output], &ledger.tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_a_low_quota_and_an_sns_outage_lose_nothing() {
    let s = scale();
    let fx = Fixture::new(Topic::Standard).await;
    fx.emulator.configure(|e| {
        e.error_rate = 0.05;
        e.quota = Some(40.0);
    });
    let proxies = Proxies::start(&fx).await;
    let ledger = Ledger::mixed(s.tokens, "deps");
    fx.send_all(&ledger.bodies()).await;
    let worker = WorkerProcess::spawn(with(
        worker_env(&fx, &[("MPR_RATE_LIMIT__INITIAL_PER_SEC", "100")]),
        proxies.env(),
    ));

    wait_for_calls(&fx, (s.tokens / 3) as u64).await;
    proxies.sns.cut();
    tokio::time::sleep(s.cut).await; // SNS down for a while
    proxies.sns.restore();
    let report = ledger.settle(&fx, s.settle).await;
    let output = stop(worker).await;
    report.assert_holds("dependency errors");
    let stats = fx.emulator.stats();
    eprintln!("dependency errors: emulator {stats:?}");
    assert!(
        stats.internal_errors > 0 && stats.throttled > 0,
        "the faults happened: {stats:?}"
    );
    assert_no_token_leaks("dependency errors", &[output], &ledger.tokens);
}

async fn crash_and_restart(signal: &str) -> Report {
    let s = scale();
    let fx = Fixture::new(Topic::Standard).await;
    fx.emulator.configure(|e| e.latency_ms = 20);
    let ledger = Ledger::good(s.tokens, signal.trim_start_matches('-'));
    fx.send_all(&ledger.bodies()).await;
    let env = worker_env(&fx, &[]);
    let mut first = WorkerProcess::spawn(env.clone());
    wait_for_calls(&fx, (s.tokens / 3) as u64).await;
    first.signal(signal);
    let status = first.wait(Duration::from_secs(30)).await;
    if signal == "-TERM" {
        assert!(status.success(), "{status:?}");
    }
    let second = WorkerProcess::spawn(env);
    let report = ledger.settle(&fx, s.settle).await;
    let outputs = [first.output(), stop(second).await];
    assert_no_token_leaks(signal, &outputs, &ledger.tokens);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_loses_nothing() {
    let report = crash_and_restart("-KILL").await;
    report.assert_holds("SIGKILL and restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_then_restart_has_no_duplicates() {
    let report = crash_and_restart("-TERM").await;
    report.assert_holds("SIGTERM and restart");
    assert_eq!(
        report.duplicates, 0,
        "a graceful stop publishes nothing twice"
    );
}

/// SIGTERM while ten resolved events are in their first publish and SNS answers nothing (black
/// hole: every call hangs until the SDK's timeouts, 3 × 10 s). Those publishes are committed (the
/// message must not be handed back and published twice), but the process may not wait for them
/// past its grace: when it ends, each event is dead-lettered as `unpublished` with the event
/// attached, and the process exits within the grace with nothing left invisible on the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_publishes_into_a_black_hole_leaves_nothing_invisible() {
    let fx = Fixture::new(Topic::Standard).await;
    let proxies = Proxies::start(&fx).await;
    let ledger = Ledger::good(10, "blackhole");
    fx.send_all(&ledger.bodies()).await;
    proxies.sns.black_hole();
    let grace = Duration::from_secs(10);
    let mut worker = WorkerProcess::spawn(with(worker_env(&fx, &[]), proxies.env()));
    eventually_within(
        "ten events in their first publish",
        Duration::from_secs(60),
        || async {
            fx.emulator.stats().resolved >= 10 && proxies.sns.swallowed_occurrences(".Id=") >= 10
        },
    )
    .await;

    let signalled = Instant::now();
    worker.signal("-TERM");
    let status = worker.wait(Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}\n{}", worker.output());
    let (visible, invisible, delayed) = fx.counts(&fx.queue_url).await;
    let letters = fx.depth(&fx.dlq_url).await;
    eprintln!(
        "SIGTERM into an SNS black hole: exited after {:.1} s (grace {} s); dead-lettered \
         {letters}, visible {visible}, invisible {invisible}, delayed {delayed}",
        took.as_secs_f64(),
        grace.as_secs()
    );
    assert!(
        took < grace,
        "exited {took:?} after SIGTERM, grace {grace:?}"
    );
    assert_eq!(invisible + delayed, 0, "messages left invisible");
    assert_eq!(
        letters + visible,
        10,
        "every message dead-lettered or back on the queue"
    );
    assert_eq!(
        letters, 10,
        "each resolved event kept in an unpublished letter"
    );
    let expected: std::collections::HashSet<String> = ledger
        .tokens
        .iter()
        .map(|t| support::expected_event_id(t))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for letter in fx.dead_letters(10).await {
        assert_eq!(letter.attr("mpr.reason"), "unpublished");
        let event: Value =
            serde_json::from_str(letter.attr("mpr.event")).expect("mpr.event is the event");
        let id = event["eventId"].as_str().expect("eventId").to_owned();
        assert_eq!(letter.attr("mpr.eventId"), id);
        seen.insert(id);
    }
    assert_eq!(
        seen, expected,
        "one letter per token, each with its own event"
    );
    assert_eq!(
        fx.emulator.stats().calls,
        10,
        "one ResolveCustomer call per token"
    );
    assert_no_token_leaks(
        "SIGTERM into a black hole",
        &[worker.output()],
        &ledger.tokens,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_queue_share_the_work() {
    let s = scale();
    let fx = Fixture::new(Topic::Standard).await;
    fx.emulator.configure(|e| e.latency_ms = 20);
    let ledger = Ledger::mixed(s.tokens, "pair");
    fx.send_all(&ledger.bodies()).await;
    let env = worker_env(&fx, &[("MPR_WORKER__MAX_IN_FLIGHT", "16")]);
    let a = WorkerProcess::spawn(env.clone());
    let b = WorkerProcess::spawn(env);
    let report = ledger.settle(&fx, s.settle).await;
    let outputs = [stop(a).await, stop(b).await];
    report.assert_holds("two workers");
    let shares: Vec<usize> = outputs
        .iter()
        .map(|o| o.matches("\"outcome\":\"published\"").count())
        .collect();
    eprintln!("two workers: published {shares:?}");
    assert!(
        shares.iter().all(|n| *n > 0),
        "both workers did work: {shares:?}"
    );
    assert_no_token_leaks("two workers", &outputs, &ledger.tokens);
}

/// At least fifty ways to break the inbound contract.
fn hostile_bodies() -> Vec<String> {
    let good = "emu1.eyJhY2NvdW50IjoiMTIzNDU2Nzg5MDEyIiwicHJvZHVjdCI6InByb2QtYWJjIn0";
    let big = 255 * 1024;
    let mut bodies: Vec<String> = vec![
        // Not an object, or not JSON although it starts like it.
        "[]".into(),
        "[1,2,3]".into(),
        "\"a string\"".into(),
        "{".into(),
        "{\"registrationToken\":".into(),
        "{\"registrationToken\": \"abc\",}".into(),
        "{'registrationToken': 'single quotes'}".into(),
        "{\"registrationToken\": \"a\"} trailing".into(),
        "[".repeat(10_000),
        format!("{}{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)),
        // Missing, empty or badly typed token.
        "{}".into(),
        json!({"signupId": "s"}).to_string(),
        json!({"registrationToken": null}).to_string(),
        json!({"registrationToken": ""}).to_string(),
        json!({"registrationToken": 42}).to_string(),
        json!({"registrationToken": true}).to_string(),
        json!({"registrationToken": ["a"]}).to_string(),
        json!({"registrationToken": {"t": "a"}}).to_string(),
        json!({"x-amzn-marketplace-token": 7}).to_string(),
        json!({"registrationToken": good, "x-amzn-marketplace-token": "other"}).to_string(),
        // Out of bounds.
        json!({"registrationToken": "t".repeat(8_193)}).to_string(),
        json!({"registrationToken": "t".repeat(big)}).to_string(),
        "t".repeat(8_193),
        json!({"registrationToken": good, "signupId": "s".repeat(257)}).to_string(),
        json!({"registrationToken": good, "context": {"k": "v".repeat(1_025)}}).to_string(),
        json!({"registrationToken": good, "context": {"k".repeat(1_025): "v"}}).to_string(),
        json!({"registrationToken": good, "context": (0..33).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<String, Value>>()}).to_string(),
        json!({"registrationToken": good, "context": {"k": "v".repeat(big)}}).to_string(),
        // Wrong types elsewhere.
        json!({"registrationToken": good, "signupId": 1}).to_string(),
        json!({"registrationToken": good, "signupId": ["s"]}).to_string(),
        json!({"registrationToken": good, "context": "k=v"}).to_string(),
        json!({"registrationToken": good, "context": [["k", "v"]]}).to_string(),
        json!({"registrationToken": good, "context": {"k": 1}}).to_string(),
        json!({"registrationToken": good, "context": {"k": null}}).to_string(),
        json!({"registrationToken": good, "context": {"k": {"nested": "v"}}}).to_string(),
        json!({"registrationToken": good, "submittedAt": 1_700_000_000}).to_string(),
        // Control characters, unicode tricks and escapes inside the token.
        json!({"registrationToken": "tok\u{0}en"}).to_string(),
        json!({"registrationToken": "tok\nen"}).to_string(),
        json!({"registrationToken": "tok\u{7f}en"}).to_string(),
        json!({"registrationToken": "tok\u{200b}en"}).to_string(),
        json!({"registrationToken": "tok\u{202e}en"}).to_string(),
        json!({"registrationToken": "ｔｏｋｅｎ"}).to_string(),
        json!({"registrationToken": "tоken-with-cyrillic-o"}).to_string(),
        json!({"registrationToken": "token\u{fffd}"}).to_string(),
        json!({"registrationToken": "😀😀😀"}).to_string(),
        "{\"registrationToken\": \"\\ud800\"}".into(),
        "{\"registrationToken\": \"\\u0000abc\"}".into(),
        "{\"registrationToken\": \"abc\\u00e9\"}".into(),
        // Plain bodies that are not printable ASCII.
        "tok\ten".into(),
        "line one\nline two".into(),
        "ümlaut-token".into(),
        "\u{feff}bom-token".into(),
        "x".repeat(big),
        // Broken SNS envelopes.
        json!({"Type": "Notification"}).to_string(),
        json!({"Type": "Notification", "Message": null}).to_string(),
        json!({"Type": "Notification", "Message": 5}).to_string(),
        json!({"Type": "Notification", "Message": {"registrationToken": good}}).to_string(),
        json!({"Type": "Notification", "Message": "not json"}).to_string(),
        json!({"Type": "Notification", "Message": "[1]"}).to_string(),
        json!({"Type": "Notification", "Message": "{}"}).to_string(),
        json!({"Type": "Notification", "Message": json!({"registrationToken": ""}).to_string()}).to_string(),
    ];
    // Whitespace-only bodies are refused by SQS itself; a body of spaces and a token-less newline
    // are the closest it carries.
    bodies.push(" ".repeat(100));
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_dead_lettered_as_malformed_and_the_worker_stays_healthy() {
    let fx = Fixture::new(Topic::Standard).await;
    let bodies = hostile_bodies();
    assert!(bodies.len() >= 50, "{} bodies", bodies.len());
    let mut by_id = HashMap::new();
    for body in &bodies {
        by_id.insert(fx.send(body).await, body.clone());
    }
    // Tokens at the bound are well-formed: the API, not the parser, refuses them.
    let at_bound = "t".repeat(8_192);
    fx.send(&json!({"registrationToken": at_bound}).to_string())
        .await;
    fx.send(&at_bound).await;

    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let admin_addr = admin.local_addr().expect("address").to_string();
    drop(admin);
    let worker = WorkerProcess::spawn(worker_env(
        &fx,
        &[("MPR_ADMIN__LISTEN", admin_addr.as_str())],
    ));

    let letters = fx.dead_letters(bodies.len() + 2).await;
    let mut malformed = 0;
    let mut invalid = 0;
    for letter in &letters {
        let reason = letter.attr("mpr.reason");
        match by_id.get(letter.attr("mpr.sourceMessageId")) {
            Some(original) => {
                assert_eq!(
                    reason,
                    "malformed_message",
                    "{:?}",
                    original.chars().take(80).collect::<String>()
                );
                assert_eq!(&letter.body, original, "the DLQ body is byte-identical");
                malformed += 1;
            }
            None => {
                assert_eq!(
                    reason, "invalid_token",
                    "a token at the bound reaches the API"
                );
                invalid += 1;
            }
        }
    }
    assert_eq!((malformed, invalid), (bodies.len(), 2));
    // Each message is deleted after its letter went out (deletes are batched): the queue empties.
    eventually_within(
        "the token queue empties",
        Duration::from_secs(30),
        || async { fx.depth(&fx.queue_url).await == 0 },
    )
    .await;

    let health = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .args(["healthcheck", "--addr", &admin_addr])
        .output()
        .await
        .expect("healthcheck");
    assert!(
        health.status.success(),
        "the worker is healthy after: {health:?}"
    );
    let output = stop(worker).await;
    assert!(!output.contains("panicked"));
    eprintln!(
        "hostile input: {} bodies dead-lettered as malformed, 2 at-bound tokens as invalid",
        bodies.len()
    );
}

/// What one lifecycle notification must become: an event whose `agreementId` or
/// `customerIdentifier` is the key (with entitlements read from GetEntitlements, or none), or a
/// dead-letter of the body itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LifecycleExpect {
    Event { entitlements: bool },
    Unrecognized,
}

/// A mixed set of `n` lifecycle notifications, each with its own customer: license updates
/// (GetEntitlements by license ARN), legacy entitlement updates (by CustomerIdentifier), agreements
/// created and legacy subscribe-success (no call), and every twentieth body one the worker does not
/// know. The emulator gets each customer's entitlements. Returns (key, body, expectation).
fn lifecycle_notifications(fx: &Fixture, n: usize) -> Vec<(String, String, LifecycleExpect)> {
    use mp_resolver::emulator::{CustomerEntitlements, TestEntitlement};
    let mut out = Vec::new();
    for i in 0..n {
        let account = format!("{:012}", 300_000_000_000u64 + i as u64);
        let agreement = format!("agmt-rel-{i}");
        let customer = format!("CREL{i}");
        let item = match i % 4 {
            _ if i % 20 == 19 => (
                format!("unknown-{i}"),
                json!({"note": format!("not a Marketplace notification {i}")}).to_string(),
                LifecycleExpect::Unrecognized,
            ),
            0 => {
                let license = format!("arn:aws:license-manager::{account}:license:l-rel{i}");
                fx.emulator
                    .set_entitlements(
                        CustomerEntitlements::for_account("prodrel", &account)
                            .license(&license)
                            .with(TestEntitlement::integer("seats", 5)),
                    )
                    .expect("valid entitlements");
                let body = json!({
                    "version": "0", "id": format!("rel-license-{i}"),
                    "detail-type": "License Updated - Manufacturer",
                    "source": "aws.agreement-marketplace", "time": "2026-11-30T00:00:00Z",
                    "detail": {"agreement": {"id": agreement}, "product": {"code": "prodrel"},
                               "license": {"arn": license}, "acceptor": {"accountId": account}}
                });
                (
                    agreement,
                    body.to_string(),
                    LifecycleExpect::Event { entitlements: true },
                )
            }
            1 => {
                fx.emulator
                    .set_entitlements(
                        CustomerEntitlements::for_customer("prodrel", &customer)
                            .with(TestEntitlement::boolean("Premium", true)),
                    )
                    .expect("valid entitlements");
                let body = json!({"action": "entitlement-updated", "customer-identifier": customer,
                                  "product-code": "prodrel"});
                (
                    customer,
                    body.to_string(),
                    LifecycleExpect::Event { entitlements: true },
                )
            }
            2 => {
                let body = json!({
                    "version": "0", "id": format!("rel-created-{i}"),
                    "detail-type": "Purchase Agreement Created - Manufacturer",
                    "source": "aws.agreement-marketplace", "time": "2026-11-30T00:00:00Z",
                    "detail": {"agreement": {"id": agreement, "intent": "NEW", "status": "ACTIVE"},
                               "acceptor": {"accountId": account}, "offer": {"id": "offer-rel"}}
                });
                (
                    agreement,
                    body.to_string(),
                    LifecycleExpect::Event {
                        entitlements: false,
                    },
                )
            }
            _ => {
                let body = json!({"action": "subscribe-success", "customer-identifier": customer,
                                  "product-code": "prodrel"});
                (
                    customer,
                    body.to_string(),
                    LifecycleExpect::Event {
                        entitlements: false,
                    },
                )
            }
        };
        out.push(item);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_entitlement_errors_and_an_sns_outage_lose_nothing() {
    let s = scale();
    let fx = Fixture::new(Topic::Standard).await;
    // GetEntitlements fails 5% of the time and has a quota below demand.
    fx.emulator.configure(|e| {
        e.error_rate = 0.05;
        e.entitlement_quota = Some(20.0);
    });
    let (queue, dlq) = fx.queue_with_dlq(40).await;
    let notifications = lifecycle_notifications(&fx, s.tokens);
    let bodies: Vec<String> = notifications.iter().map(|n| n.1.clone()).collect();
    fx.send_all_to(&queue, &bodies).await;
    let proxies = Proxies::start(&fx).await;
    let mut env = proxies.env();
    env.push((
        "AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE".into(),
        proxies.metering.endpoint.clone(),
    ));
    let started = Instant::now();
    let worker = WorkerProcess::spawn(with(
        worker_env(
            &fx,
            &[
                ("MPR_LIFECYCLE_QUEUE_URL", &queue),
                ("MPR_LIFECYCLE_DLQ_URL", &dlq),
            ],
        ),
        env,
    ));

    let calls_needed = notifications
        .iter()
        .filter(|n| n.2 == LifecycleExpect::Event { entitlements: true })
        .count() as u64;
    eventually_within("GetEntitlements under way", s.settle, || async {
        fx.emulator.stats().entitlement_calls >= calls_needed / 3
    })
    .await;
    proxies.sns.cut();
    tokio::time::sleep(s.cut).await; // SNS down for a while
    proxies.sns.restore();

    // Settle: every notification accounted for and the lifecycle queue empty.
    let deadline = Instant::now() + s.settle;
    let mut events: HashMap<String, Vec<Value>> = HashMap::new();
    let mut letters: HashMap<String, Vec<String>> = HashMap::new();
    let accounted = |events: &HashMap<String, Vec<Value>>,
                     letters: &HashMap<String, Vec<String>>| {
        notifications
            .iter()
            .all(|(key, body, expect)| match expect {
                LifecycleExpect::Unrecognized => letters.contains_key(body),
                LifecycleExpect::Event { .. } => events.contains_key(key),
            })
    };
    loop {
        let mut got_any = false;
        for event in fx.read_once(&fx.subscriber_url, 1).await {
            got_any = true;
            let e = event.json();
            let key = e["agreementId"]
                .as_str()
                .or(e["customerIdentifier"].as_str())
                .unwrap_or_default()
                .to_owned();
            events.entry(key).or_default().push(e);
        }
        for letter in fx.read_once(&dlq, 0).await {
            got_any = true;
            let reason = letter.attr("mpr.reason").to_owned();
            letters.entry(letter.body).or_default().push(reason);
        }
        let done = accounted(&events, &letters) && fx.depth(&queue).await == 0;
        if (!got_any && done) || Instant::now() >= deadline {
            break;
        }
    }
    let took = started.elapsed();
    let output = stop(worker).await;

    let (mut published, mut duplicates, mut dead_lettered, mut lost) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for (key, body, expect) in &notifications {
        match expect {
            LifecycleExpect::Event { entitlements } => match events.get(key) {
                None => lost += 1,
                Some(copies) => {
                    published += 1;
                    duplicates += copies.len() - 1;
                    let id = &copies[0]["eventId"];
                    let listed = copies[0]["entitlements"].as_array().map(Vec::len);
                    if copies.iter().any(|c| &c["eventId"] != id)
                        || (*entitlements && listed.unwrap_or(0) == 0)
                        || (!*entitlements && listed.is_some())
                        || letters.contains_key(body)
                    {
                        wrong.push(format!("{key}: {copies:?}"));
                    }
                }
            },
            LifecycleExpect::Unrecognized => match letters.get(body) {
                None => lost += 1,
                Some(reasons) if reasons.iter().all(|r| r == "unrecognized_notification") => {
                    dead_lettered += 1
                }
                Some(reasons) => wrong.push(format!("{key}: dead-lettered as {reasons:?}")),
            },
        }
    }
    let known: std::collections::HashSet<&str> =
        notifications.iter().map(|n| n.0.as_str()).collect();
    let unexpected = events
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .count();
    let stats = fx.emulator.stats();
    eprintln!(
        "lifecycle faults: enqueued {}, published {published}, duplicates {duplicates}, \
         dead-lettered {dead_lettered}, lost {lost}, mis-routed {}, unexpected {unexpected}, \
         in {:.1} s; emulator {stats:?}",
        notifications.len(),
        wrong.len(),
        took.as_secs_f64()
    );
    assert_eq!(lost, 0, "lost notifications");
    assert!(wrong.is_empty(), "mis-routed: {wrong:?}");
    assert_eq!(unexpected, 0, "events for notifications never sent");
    assert_eq!(published + dead_lettered, notifications.len());
    assert_eq!(fx.depth(&queue).await, 0, "left on the lifecycle queue");
    assert!(
        stats.entitlement_errors > 0 && stats.entitlement_throttled > 0,
        "the faults happened: {stats:?}"
    );
    assert_no_token_leaks("lifecycle faults", &[output], &[]);
}

/// Out of order: each subscription's three events (Created, License Updated, Ended CANCELLED, ten
/// seconds apart) are enqueued shuffled across all subscriptions, and SNS is cut for a while
/// mid-run so some publishes are held and retried after newer events were applied. Every
/// subscription must end revoked in the registry, and a subscriber that keeps the highest
/// `sequence` per agreement must hold `revoke` for every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_lifecycle_events_converge_on_the_newest() {
    use mp_resolver::emulator::{CustomerEntitlements, TestEntitlement};
    use mp_resolver::store::registry::Registry;
    use rand::seq::SliceRandom;

    let s = scale();
    let subscriptions = s.tokens / 4;
    let fx = Fixture::new(Topic::Standard).await;
    let (queue, dlq) = fx.queue_with_dlq(40).await;
    let mut bodies = Vec::new();
    for i in 0..subscriptions {
        let account = format!("{:012}", 400_000_000_000u64 + i as u64);
        let agreement = format!("agmt-ooo-{i}");
        let license = format!("arn:aws:license-manager::{account}:license:l-ooo{i}");
        fx.emulator
            .set_entitlements(
                CustomerEntitlements::for_account("prodooo", &account)
                    .license(&license)
                    .with(TestEntitlement::integer("seats", 5)),
            )
            .expect("valid entitlements");
        let at = |secs: u32| format!("2026-11-30T00:{:02}:{:02}Z", i % 60, secs);
        let base = |kind: &str, secs: u32, detail: Value| {
            json!({"version": "0", "id": format!("ooo-{kind}-{i}"), "detail-type": kind,
                   "source": "aws.agreement-marketplace", "time": at(secs), "detail": detail})
            .to_string()
        };
        bodies.push(base(
            "Purchase Agreement Created - Manufacturer",
            0,
            json!({"agreement": {"id": agreement, "intent": "NEW", "status": "ACTIVE"},
                   "acceptor": {"accountId": account}}),
        ));
        bodies.push(base(
            "License Updated - Manufacturer",
            10,
            json!({"agreement": {"id": agreement}, "product": {"code": "prodooo"},
                   "license": {"arn": license}, "acceptor": {"accountId": account}}),
        ));
        bodies.push(base(
            "Purchase Agreement Ended - Manufacturer",
            20,
            json!({"agreement": {"id": agreement, "status": "CANCELLED"},
                   "acceptor": {"accountId": account}}),
        ));
    }
    bodies.shuffle(&mut rand::rng());
    let proxies = Proxies::start(&fx).await;
    let mut env = proxies.env();
    env.push((
        "AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE".into(),
        proxies.metering.endpoint.clone(),
    ));
    fx.send_all_to(&queue, &bodies).await;
    let started = Instant::now();
    let worker = WorkerProcess::spawn(with(
        worker_env(
            &fx,
            &[
                ("MPR_LIFECYCLE_QUEUE_URL", &queue),
                ("MPR_LIFECYCLE_DLQ_URL", &dlq),
                ("MPR_PUBLISH__HOLD_MAX_DELAY_SECS", "2"),
            ],
        ),
        env,
    ));
    eventually_within("lifecycle events under way", s.settle, || async {
        fx.emulator.stats().entitlement_calls >= (subscriptions / 4) as u64
    })
    .await;
    proxies.sns.cut();
    tokio::time::sleep(s.cut).await;
    proxies.sns.restore();

    // What a subscriber keeping the highest sequence per agreement holds, and what it saw.
    let mut held: HashMap<String, (u64, String)> = HashMap::new();
    let (mut duplicates, mut stale, mut arrival_flips) = (0usize, 0usize, 0usize);
    let mut last_seen: HashMap<String, String> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let deadline = Instant::now() + s.settle;
    while ids.len() < bodies.len() && Instant::now() < deadline {
        for event in fx.read_once(&fx.subscriber_url, 1).await {
            let e = event.json();
            if !ids.insert(e["eventId"].as_str().unwrap_or_default().to_owned()) {
                // A second copy (a publish retried after SNS took it): same event, same verdict.
                duplicates += 1;
            }
            let agreement = e["agreementId"].as_str().unwrap_or_default().to_owned();
            let access = e["access"].as_str().unwrap_or_default().to_owned();
            let sequence = e["sequence"].as_u64().unwrap_or(0);
            stale += usize::from(e["stale"] == true);
            if access == "grant" && last_seen.get(&agreement).is_some_and(|a| a == "revoke") {
                arrival_flips += 1;
            }
            last_seen.insert(agreement.clone(), access.clone());
            let entry = held.entry(agreement).or_insert((0, String::new()));
            if sequence >= entry.0 {
                *entry = (sequence, access);
            }
        }
    }
    let took = started.elapsed();
    let output = stop(worker).await;
    let registry = Registry::new(fx.store_handle().clone())
        .all()
        .await
        .expect("the registry reads");
    let revoked = registry
        .iter()
        .filter(|r| r.access.as_str() == "revoke")
        .count();
    let converged = held
        .values()
        .filter(|(_, access)| access == "revoke")
        .count();
    eprintln!(
        "out of order: {subscriptions} subscriptions, {} events enqueued shuffled, {} \
         published ({stale} stale, {duplicates} duplicate copies), SNS cut {:?}; registry: {} subscriptions, {revoked} revoked; \
         subscriber by sequence: {converged} revoked; grant after revoke in arrival order: \
         {arrival_flips} (ignored by sequence); in {:.1} s",
        bodies.len(),
        ids.len(),
        s.cut,
        registry.len(),
        took.as_secs_f64()
    );
    assert_eq!(ids.len(), bodies.len(), "every event published");
    assert_eq!(
        registry.len(),
        subscriptions,
        "one subscription each, merged"
    );
    assert_eq!(
        revoked, subscriptions,
        "the registry holds the newest verdict"
    );
    assert_eq!(
        converged, subscriptions,
        "a subscriber by sequence converges"
    );
    assert_eq!(fx.depth(&dlq).await, 0);
    assert_no_token_leaks("out of order", &[output], &[]);
}

/// Peak RSS of a worker working through `n` queued tokens.
async fn load_run(n: usize) -> (Report, u64, Duration) {
    let fx = Fixture::new(Topic::Standard).await;
    let ledger = Ledger::mixed(n, &format!("load{n}"));
    fx.send_all(&ledger.bodies()).await;
    let started = Instant::now();
    let worker = WorkerProcess::spawn(worker_env(
        &fx,
        &[
            ("MPR_LOG__LEVEL", "info"),
            ("MPR_RATE_LIMIT__INITIAL_PER_SEC", "5000"),
            ("MPR_RATE_LIMIT__MIN_PER_SEC", "1000"),
        ],
    ));
    let report = ledger.settle(&fx, scale().settle).await;
    let took = started.elapsed();
    let peak = worker.peak_rss_kib().unwrap_or(0);
    let output = stop(worker).await;
    assert_no_token_leaks("load", &[output], &ledger.tokens);
    (report, peak, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_memory_is_bounded_by_in_flight_not_by_backlog() {
    let s = scale();
    let small = s.load_tokens / 10;
    let (small_report, small_peak, small_took) = load_run(small).await;
    small_report.assert_holds("load (small backlog)");
    let (report, peak, took) = load_run(s.load_tokens).await;
    report.assert_holds("load");
    eprintln!(
        "load: {} tokens in {:.1} s ({:.0}/s), peak RSS {} KiB; {} tokens in {:.1} s, peak RSS {} KiB",
        small,
        small_took.as_secs_f64(),
        small as f64 / small_took.as_secs_f64(),
        small_peak,
        s.load_tokens,
        took.as_secs_f64(),
        peak,
    );
    // Ten times the backlog must not mean more memory: the worker holds at most max_in_flight
    // messages whatever the queue depth (a few MiB of allocator noise allowed).
    assert!(
        peak <= small_peak + small_peak / 2 + 8 * 1024,
        "peak RSS {peak} KiB with {} queued vs {small_peak} KiB with {small}",
        s.load_tokens
    );
}

#[test]
fn the_ledger_counts_a_lost_token() {
    // The accounting itself must be able to fail.
    let mut report = Report {
        enqueued: 2,
        published: 1,
        lost: 1,
        ..Report::default()
    };
    assert!(std::panic::catch_unwind(|| report.assert_holds("self-check")).is_err());
    report.lost = 0;
    report.dead_lettered = 1;
    report.assert_holds("self-check");
}
