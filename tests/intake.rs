//! `mp-resolver intake` over HTTP, against LocalStack: what the buyer's browser gets for every
//! kind of request, what lands on the token queue, the per-client limit, the queue being
//! unreachable, and a scan showing the raw token in no response and no log line.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::Method;
use mp_resolver::emulator::TestToken;
use serde_json::Value;
use support::faults::FaultProxy;
use support::http::{get, post_form, send, Answer};
use support::intake::{intake_settings, Drip, RunningIntake, SlowClients, REGISTRATION};
use support::process::WorkerProcess;
use support::{eventually, Fixture, Topic};
use url::Url;

fn token() -> String {
    TestToken::new("123456789012", "prod-abc")
        .encode()
        .expect("valid test token")
}

fn form_for(token: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("x-amzn-marketplace-token", token)
        .finish()
}

fn assert_security_headers(answer: &Answer, what: &str) {
    assert_eq!(answer.header("cache-control"), "no-store", "{what}");
    assert_eq!(answer.header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(answer.header("x-content-type-options"), "nosniff", "{what}");
    let csp = answer.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp:?}");
}

#[tokio::test]
async fn a_buyer_post_is_queued_and_redirected_with_a_signup_id() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |_| {});
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let token = token();

    let body = format!(
        "{}&x-amzn-marketplace-offer-type=free-trial",
        form_for(&token)
    );
    let answer = post_form(&intake.url("/"), &[], &body).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_security_headers(&answer, "303");
    let location = Url::parse(answer.header("location")).expect("absolute Location");
    assert_eq!(location.path(), "/signup");
    assert_eq!(location.fragment(), Some("form"), "fragment kept");
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs[0], ("plan".into(), "gold".into()), "{location}");
    assert_eq!(pairs[1], ("ref".into(), "a b".into()), "{location}");
    assert_eq!(pairs[2].0, "signupId");
    let signup_id = pairs[2].1.clone();
    assert!(signup_id.len() >= 22, "128 bits or more: {signup_id}");
    assert!(!answer.everything().contains(&token));

    let queued = fx.collect(&fx.queue_url, 1).await;
    let message: Value = queued[0].json();
    assert_eq!(message["registrationToken"], token.as_str());
    assert_eq!(message["signupId"], signup_id.as_str());
    assert_eq!(message["context"]["offerType"], "free-trial");
    let submitted = message["submittedAt"].as_str().expect("submittedAt");
    assert!(
        chrono::DateTime::parse_from_rfc3339(submitted).is_ok(),
        "{submitted}"
    );
    // The worker's own parser accepts it as it is.
    mp_resolver::contract::parse_body(&queued[0].body).expect("the worker can read it");

    // The browser resubmits the same token (back button, a lost answer): the same signupId, so
    // the one event the worker publishes for the token carries the id the buyer's page ends with.
    let again = post_form(&intake.url("/"), &[], &form_for(&token)).await;
    assert_eq!(again.status, 303);
    assert!(
        again
            .header("location")
            .ends_with(&format!("signupId={signup_id}#form")),
        "{}",
        again.header("location")
    );
    let requeued = fx.collect(&fx.queue_url, 1).await;
    assert_eq!(requeued[0].json()["signupId"], signup_id.as_str());
    // Another buyer's token gets its own id.
    let other = TestToken::new("210987654321", "prod-abc")
        .encode()
        .expect("valid test token");
    let another = post_form(&intake.url("/"), &[], &form_for(&other)).await;
    assert_eq!(another.status, 303);
    assert!(!another.header("location").contains(&signup_id));

    let (status, metrics) = intake.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mpr_intake_requests_total{result=\"accepted\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mpr_intake_send_duration_seconds_count 3"),
        "{metrics}"
    );
    let (status, _) = intake.admin_get("/healthz").await;
    assert_eq!(status, 200);
    eventually("intake ready", || async {
        intake.admin_get("/readyz").await.0 == 200
    })
    .await;
    intake.stop().await;
}

#[tokio::test]
async fn every_bad_request_gets_a_page_and_queues_nothing() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |s| {
        s.intake.path = "/fulfil".into();
        s.intake.max_body_bytes = 1_024;
    });
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let secret = token();
    let form = "application/x-www-form-urlencoded";
    let with_bell = format!("x-amzn-marketplace-token={}%07", &secret);
    let oversized = format!("{}&pad={}", form_for(&secret), "p".repeat(2_000));
    let two = format!("{}&x-amzn-marketplace-token=other", form_for(&secret));
    let in_query = format!("/fulfil?{}", form_for(&secret));
    let json = format!("{{\"x-amzn-marketplace-token\":\"{secret}\"}}");
    // (what, method, path, content type, body, status)
    type Case<'a> = (&'a str, Method, &'a str, Option<&'a str>, String, u16);
    let cases: Vec<Case> = vec![
        (
            "no token",
            Method::POST,
            "/fulfil",
            Some(form),
            "a=1".into(),
            400,
        ),
        (
            "empty token",
            Method::POST,
            "/fulfil",
            Some(form),
            "x-amzn-marketplace-token=".into(),
            400,
        ),
        (
            "control byte",
            Method::POST,
            "/fulfil",
            Some(form),
            with_bell,
            400,
        ),
        ("two tokens", Method::POST, "/fulfil", Some(form), two, 400),
        (
            "token only in the query",
            Method::POST,
            &in_query,
            Some(form),
            String::new(),
            400,
        ),
        (
            "over the body limit",
            Method::POST,
            "/fulfil",
            Some(form),
            oversized,
            413,
        ),
        (
            "JSON",
            Method::POST,
            "/fulfil",
            Some("application/json"),
            json,
            415,
        ),
        (
            "no content type",
            Method::POST,
            "/fulfil",
            None,
            form_for(&secret),
            415,
        ),
        ("GET", Method::GET, "/fulfil", None, String::new(), 200),
        (
            "other path",
            Method::POST,
            "/",
            Some(form),
            form_for(&secret),
            404,
        ),
    ];
    for (what, method, path, content_type, body, status) in cases {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        let answer = send(method, &intake.url(path), &headers, body.into_bytes()).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_security_headers(&answer, what);
        assert!(
            answer.header("content-type").starts_with("text/html"),
            "{what}"
        );
        assert!(
            answer.body.contains("AWS Marketplace"),
            "{what}: a next step: {}",
            answer.body
        );
        assert!(answer.header("location").is_empty(), "{what}");
        assert!(
            !answer.everything().contains(&secret),
            "{what}: token in the answer"
        );
    }
    assert_eq!(fx.depth(&fx.queue_url).await, 0, "nothing was queued");
    let (_, metrics) = intake.admin_get("/metrics").await;
    for (result, n) in [
        ("no_token", 3),
        ("bad_form", 2),
        ("too_large", 1),
        ("unsupported_media_type", 2),
        ("info_page", 1),
    ] {
        let line = format!("mpr_intake_requests_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(!metrics.contains(&secret));
    intake.stop().await;
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_with_retry_after() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |s| s.intake.rate_limit_per_minute = 3);
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let url = intake.url("/");
    // The ALB appends the address it saw; what the client put before it does not count.
    let client_a = [("x-forwarded-for", "10.9.9.9, 203.0.113.10")];
    for _ in 0..3 {
        assert_eq!(
            post_form(&url, &client_a, &form_for(&token())).await.status,
            303
        );
    }
    let spoofing = [("x-forwarded-for", "10.1.1.1, 203.0.113.10")];
    let limited = post_form(&url, &spoofing, &form_for(&token())).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry: u64 = limited
        .header("retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!(
        (1..=20).contains(&retry),
        "3 a minute: next one within 20 s, got {retry}"
    );
    assert_security_headers(&limited, "429");
    assert!(limited.body.contains("wait a minute"), "{}", limited.body);

    let client_b = [("x-forwarded-for", "203.0.113.11")];
    assert_eq!(
        post_form(&url, &client_b, &form_for(&token())).await.status,
        303
    );
    assert_eq!(
        fx.collect(&fx.queue_url, 4).await.len(),
        4,
        "the limited one was not queued"
    );
    intake.stop().await;
}

#[tokio::test]
async fn queue_unreachable_gives_503_with_retry_after_then_recovers() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |s| s.intake.retry_after_secs = 7);
    let proxy = FaultProxy::start(&fx.localstack.endpoint).await;
    let intake = RunningIntake::start(fx.sqs_via(&settings, &proxy.endpoint), &settings).await;
    eventually("ready while the queue answers", || async {
        intake.admin_get("/readyz").await.0 == 200
    })
    .await;

    // The proxy takes each connection and drops it: SQS never answers, so for all intake can
    // tell the token may be queued.
    proxy.cut();
    let secret = token();
    let answer = post_form(&intake.url("/"), &[], &form_for(&secret)).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), "7");
    assert!(answer.body.contains("may have been"), "{}", answer.body);
    assert_security_headers(&answer, "503");
    assert!(!answer.everything().contains(&secret));
    let (status, body) = intake.admin_get("/readyz").await;
    assert_eq!(status, 503, "not ready while the queue is cut: {body}");

    // The buyer's browser resubmits the same form once the queue is back.
    proxy.restore();
    let retried = post_form(&intake.url("/"), &[], &form_for(&secret)).await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    let queued = fx.collect(&fx.queue_url, 1).await;
    assert_eq!(queued[0].json()["registrationToken"], secret.as_str());
    assert_eq!(intake.admin_get("/readyz").await.0, 200);
    let (_, metrics) = intake.admin_get("/metrics").await;
    assert!(
        metrics.contains("mpr_intake_requests_total{result=\"queue_no_answer\"} 1"),
        "{metrics}"
    );
    intake.stop().await;
}

#[tokio::test]
async fn a_queue_that_refuses_gets_503_saying_nothing_was_queued() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |s| {
        s.queue_url = format!("{}-gone", fx.queue_url);
    });
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let answer = post_form(&intake.url("/"), &[], &form_for(&token())).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("nothing was half-done"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("may have been"), "{}", answer.body);
    let (_, metrics) = intake.admin_get("/metrics").await;
    assert!(
        metrics.contains("mpr_intake_requests_total{result=\"queue_unavailable\"} 1"),
        "{metrics}"
    );
    intake.stop().await;
}

/// Issue #22: SQS black-holed (connections taken, nothing ever answered). The buyer gets intake's
/// own page within `send_deadline_ms`, well inside an ALB's 60 s, and the page says the token may
/// be queued; the retry is taken with the signupId bound before the first send.
#[tokio::test]
async fn a_black_holed_queue_answers_503_within_the_deadline_saying_it_may_be_queued() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |s| {
        s.intake.send_attempt_timeout_ms = 3_000;
        s.intake.send_deadline_ms = 8_000;
        s.intake.retry_after_secs = 4;
    });
    let proxy = FaultProxy::start(&fx.localstack.endpoint).await;
    let intake = RunningIntake::start(fx.sqs_via(&settings, &proxy.endpoint), &settings).await;
    eventually("ready while the queue answers", || async {
        intake.admin_get("/readyz").await.0 == 200
    })
    .await;

    // Every byte to SQS is held for an hour: the request never arrives, nothing answers.
    proxy.set_latency(Duration::from_secs(3_600));
    let secret = token();
    let started = std::time::Instant::now();
    let answer = post_form(&intake.url("/"), &[], &form_for(&secret)).await;
    let took = started.elapsed();
    println!("black-holed queue: answered {} in {took:?}", answer.status);
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    assert_eq!(answer.header("retry-after"), "4");
    assert!(answer.body.contains("may have been"), "{}", answer.body);
    assert!(answer.body.contains("safe"), "{}", answer.body);
    assert!(!answer.body.contains("nothing was"), "{}", answer.body);
    assert_security_headers(&answer, "503");
    assert!(!answer.everything().contains(&secret));
    let (_, metrics) = intake.admin_get("/metrics").await;
    assert!(
        metrics.contains("mpr_intake_requests_total{result=\"queue_no_answer\"} 1"),
        "{metrics}"
    );

    // The held connections go; the browser's resubmission is queued once, and what it queued
    // carries the id its page shows.
    proxy.set_latency(Duration::ZERO);
    proxy.reset_connections();
    let retried = post_form(&intake.url("/"), &[], &form_for(&secret)).await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    let id = signup_id_of(&retried);
    let queued = fx.collect(&fx.queue_url, 1).await;
    assert_eq!(queued[0].json()["signupId"], id.as_str());
    intake.stop().await;
}

fn signup_id_of(answer: &Answer) -> String {
    Url::parse(answer.header("location"))
        .expect("absolute Location")
        .query_pairs()
        .find(|(k, _)| k == "signupId")
        .map(|(_, v)| v.into_owned())
        .expect("signupId in the Location")
}

/// Issue #22: a double click, or a retry racing the first POST, against a slow queue. Every
/// answer names one signupId, and every message on the queue carries that one: the event the
/// worker publishes for the token matches the buyer's page whichever message it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_of_one_token_all_get_the_signup_id_the_queue_carries() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |_| {});
    let proxy = FaultProxy::start(&fx.localstack.endpoint).await;
    let intake = RunningIntake::start(fx.sqs_via(&settings, &proxy.endpoint), &settings).await;
    eventually("ready", || async {
        intake.admin_get("/readyz").await.0 == 200
    })
    .await;
    // The queue takes 300 ms: every click arrives before the first send has come back.
    proxy.set_latency(Duration::from_millis(300));
    let body = form_for(&token());
    let clicks: Vec<_> = (0..6)
        .map(|_| {
            let (url, body) = (intake.url("/"), body.clone());
            tokio::spawn(async move { post_form(&url, &[], &body).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for click in clicks {
        let answer = click.await.unwrap();
        assert_eq!(answer.status, 303, "{}", answer.body);
        ids.insert(signup_id_of(&answer));
    }
    assert_eq!(ids.len(), 1, "one signupId for one token: {ids:?}");
    proxy.set_latency(Duration::ZERO);
    let queued = fx.collect(&fx.queue_url, 6).await;
    for message in &queued {
        assert_eq!(
            message.json()["signupId"].as_str(),
            ids.first().map(String::as_str)
        );
    }
    intake.stop().await;
}

/// Issue #22: a client cannot choose the address it is limited under. Behind one ALB, a client
/// that sends its own X-Forwarded-For lines is still counted by the entry the ALB appended;
/// behind CloudFront and an ALB, by the entry CloudFront appended; an IPv6 client by its /64.
#[tokio::test]
async fn the_limit_counts_the_address_the_trusted_proxies_saw() {
    let fx = Fixture::new(Topic::Standard).await;
    let url_of = |intake: &RunningIntake| intake.url("/");
    // (trusted proxies, the same client's requests with spoofed entries, another client)
    let alb: Vec<Vec<String>> = (1..=4)
        .map(|i| vec![format!("10.0.0.{i}"), format!("10.1.0.{i}, 203.0.113.10")])
        .collect();
    let alb_v6: Vec<Vec<String>> = (1..=4)
        .map(|i| vec![format!("2001:db8:1:2:{i}::{i}")])
        .collect();
    let chained: Vec<Vec<String>> = (1..=4)
        .map(|i| {
            vec![
                format!("10.0.0.{i}"),
                format!("10.2.0.{i}, 198.51.100.20, 130.176.0.{i}"),
            ]
        })
        .collect();
    type Case<'a> = (usize, &'a [Vec<String>], &'a [&'a str]);
    let cases: [Case; 3] = [
        (1, &alb, &["203.0.113.11"]),
        (1, &alb_v6, &["2001:db8:1:3::1"]),
        (2, &chained, &["198.51.100.21, 130.176.0.1"]),
    ];
    for (proxies, same_client, other) in cases {
        let settings = intake_settings(&fx, |s| {
            s.intake.rate_limit_per_minute = 3;
            s.intake.trusted_proxies = proxies;
        });
        let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
        for (n, lines) in same_client.iter().enumerate() {
            let headers: Vec<(&str, &str)> = lines
                .iter()
                .map(|l| ("x-forwarded-for", l.as_str()))
                .collect();
            let answer = post_form(&url_of(&intake), &headers, &form_for(&token())).await;
            let expected = if n < 3 { 303 } else { 429 };
            assert_eq!(answer.status, expected, "{proxies} proxies, {lines:?}");
        }
        let headers: Vec<(&str, &str)> = other.iter().map(|l| ("x-forwarded-for", *l)).collect();
        let answer = post_form(&url_of(&intake), &headers, &form_for(&token())).await;
        assert_eq!(answer.status, 303, "another client: {other:?}");
        intake.stop().await;
    }
}

/// Issue #22: another site's page cannot make a visitor's browser post a token to intake.
#[tokio::test]
async fn a_cross_site_post_gets_403_and_queues_nothing() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |_| {});
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let url = intake.url("/");
    for (what, header) in [
        ("Origin", ("origin", "https://evil.example")),
        ("Referer", ("referer", "https://evil.example/free-stuff")),
        (
            "look-alike",
            ("origin", "https://aws.amazon.com.evil.example"),
        ),
    ] {
        let secret = token();
        let answer = post_form(&url, &[header], &form_for(&secret)).await;
        assert_eq!(answer.status, 403, "{what}: {}", answer.body);
        assert!(
            answer.body.contains("AWS Marketplace"),
            "{what}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("another site"),
            "{what}: {}",
            answer.body
        );
        assert_security_headers(&answer, what);
        assert!(!answer.everything().contains(&secret));
    }
    assert_eq!(fx.depth(&fx.queue_url).await, 0, "nothing was queued");
    for (what, header) in [
        ("AWS Marketplace", ("origin", "https://aws.amazon.com")),
        (
            "a regional console",
            (
                "referer",
                "https://us-east-1.console.aws.amazon.com/marketplace/home",
            ),
        ),
        ("no-referrer", ("origin", "null")),
    ] {
        let answer = post_form(&url, &[header], &form_for(&token())).await;
        assert_eq!(answer.status, 303, "{what}: {}", answer.body);
    }
    assert_eq!(fx.collect(&fx.queue_url, 3).await.len(), 3);
    let (_, metrics) = intake.admin_get("/metrics").await;
    assert!(
        metrics.contains("mpr_intake_requests_total{result=\"cross_site\"} 3"),
        "{metrics}"
    );
    intake.stop().await;
}

/// Issue #22: the slow-client attack. 270 connections trickle a body and 30 trickle their headers,
/// a byte every 250 ms, reconnecting whenever cut off (about 1,200 bytes a minute each: far below
/// any bandwidth limit). On the old listener they held all 256 slots, so every buyer got 503,
/// and shutdown waited for them. Now a trickled body holds a connection for body_timeout_ms and no
/// slot, so buyers are served during the attack, and shutdown ends within shutdown_grace_ms while
/// the attackers are still connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_take_no_slot_and_do_not_hold_up_buyers_or_shutdown() {
    let fx = Fixture::new(Topic::Standard).await;
    let grace = Duration::from_millis(1_500);
    let settings = intake_settings(&fx, |s| {
        s.intake.header_timeout_ms = 2_000;
        s.intake.body_timeout_ms = 3_000;
        s.intake.shutdown_grace_ms = grace.as_millis() as u64;
        // The attacker has addresses enough: the per-client limit is not what holds it off.
        s.intake.rate_limit_per_minute = 1_000_000;
    });
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let attack = SlowClients::start(
        intake.addr(),
        &[(Drip::Body, 270), (Drip::Headers, 30)],
        Duration::from_millis(250),
    );
    eventually("every body-trickling attacker has sent its headers", || {
        std::future::ready(attack.heads_sent.load(Ordering::Relaxed) >= 270)
    })
    .await;

    // Buyers arrive one every 100 ms for as long as it takes every attacker to be cut off and
    // come back at least once: the whole attack cycle, not just its first seconds. (Counted per
    // attacker: header tricklers are cut sooner and more often, so a count of cuts reaches 300
    // before every body trickler has had its 408.)
    let (mut buyers, mut slowest) = (0usize, Duration::ZERO);
    while buyers < 20 || attack.attackers_cut_off.load(Ordering::Relaxed) < 300 {
        assert!(buyers < 600, "the attackers were never cut off");
        let xff = format!("203.0.113.{}", buyers % 250);
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            post_form(
                &intake.url("/"),
                &[("x-forwarded-for", &xff)],
                &form_for(&token()),
            ),
        )
        .await
        .expect("a buyer answered within 5 s during the attack");
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            answer.status, 303,
            "buyer {buyers} during the attack: {}",
            answer.body
        );
        buyers += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = intake.admin_get("/metrics").await;
    println!(
        "slow clients: {} connections open, {} cut off; {buyers}/{buyers} buyers got 303, \
         slowest {slowest:?}",
        attack.open(),
        attack.cut_off.load(Ordering::Relaxed)
    );
    let body_timeouts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mpr_intake_requests_total{result=\"body_timeout\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        body_timeouts >= 270,
        "every body trickler got 408: {metrics}"
    );
    assert!(
        metrics.contains("mpr_intake_in_flight 0"),
        "no slot held: {metrics}"
    );
    assert_eq!(fx.collect(&fx.queue_url, buyers).await.len(), buyers);

    eventually("the attackers are connected", || {
        std::future::ready(attack.open() >= 250)
    })
    .await;
    let connected = attack.open();
    let started = std::time::Instant::now();
    tokio::time::timeout(grace + Duration::from_secs(3), intake.stop())
        .await
        .expect("shutdown within intake.shutdown_grace_ms (+3 s) while attackers are connected");
    let took = started.elapsed();
    println!("slow clients: shutdown with {connected} attackers connected took {took:?}");
    attack.stop().await;
}

/// Issue #22: a keep-alive connection left idle after an answer is closed after
/// `header_timeout_ms` (hyper restarts the header deadline for the next request).
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_header_timeout_ms() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |s| s.intake.header_timeout_ms = 500);
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let mut stream = tokio::net::TcpStream::connect(intake.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: intake\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(
        closed.is_ok(),
        "the idle connection was still open after 5 s"
    );
    let answer = String::from_utf8_lossy(&seen);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "kept alive, then closed for idling: {answer}"
    );
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    intake.stop().await;
}

/// Issue #22: a path axum would panic on (`/:x`, `/*x`) or turn into a capture (`/{x}`) stops
/// intake with exit 78 naming the key.
#[tokio::test]
async fn an_intake_path_with_route_syntax_exits_78_naming_the_key() {
    for path in ["/:x", "/*x", "/{x}"] {
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
                .arg("intake")
                .env_clear()
                .env("MPR_QUEUE_URL", "http://127.0.0.1:9/000000000000/q")
                .env("MPR_INTAKE__REGISTRATION_URL", REGISTRATION)
                .env("MPR_INTAKE__PATH", path)
                .env("MPR_INTAKE__LISTEN", "127.0.0.1:0")
                .env("MPR_ADMIN__LISTEN", "127.0.0.1:0")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{path}: intake started instead of refusing the path"))
        .expect("run intake");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{path}: {stderr}");
        assert!(
            stderr.contains("intake.path") && stderr.contains("MPR_INTAKE__PATH"),
            "{path}: {stderr}"
        );
    }
}

#[tokio::test]
async fn past_max_in_flight_a_post_gets_503_at_once_and_the_others_go_through() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = intake_settings(&fx, |s| {
        s.intake.max_in_flight = 1;
        s.intake.retry_after_secs = 3;
    });
    let proxy = FaultProxy::start(&fx.localstack.endpoint).await;
    let intake = RunningIntake::start(fx.sqs_via(&settings, &proxy.endpoint), &settings).await;
    eventually("ready", || async {
        intake.admin_get("/readyz").await.0 == 200
    })
    .await;

    // A slow queue: the first POST holds the only slot while its send is delayed.
    proxy.set_latency(Duration::from_millis(800));
    let first_token = token();
    let url = intake.url("/");
    let body = form_for(&first_token);
    let first = tokio::spawn(async move { post_form(&url, &[], &body).await });
    eventually("the first POST holds the slot", || async {
        intake
            .admin_get("/metrics")
            .await
            .1
            .contains("mpr_intake_in_flight 1")
    })
    .await;

    let second = post_form(&intake.url("/"), &[], &form_for(&token())).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert_eq!(second.header("retry-after"), "3");
    assert!(second.body.contains("try again"), "{}", second.body);
    assert_security_headers(&second, "busy 503");

    assert_eq!(
        first.await.unwrap().status,
        303,
        "the POST in the slot finishes"
    );
    proxy.set_latency(Duration::ZERO);
    let queued = fx.collect(&fx.queue_url, 1).await;
    assert_eq!(queued[0].json()["registrationToken"], first_token.as_str());
    let (_, metrics) = intake.admin_get("/metrics").await;
    assert!(
        metrics.contains("mpr_intake_requests_total{result=\"busy\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mpr_intake_in_flight 0"), "{metrics}");
    // The slot is free again.
    assert_eq!(
        post_form(&intake.url("/"), &[], &form_for(&token()))
            .await
            .status,
        303
    );
    intake.stop().await;
}

/// Reads the `listen` and `admin` addresses the binary logged.
async fn bound_addresses(process: &WorkerProcess) -> (String, SocketAddr) {
    let mut found = None;
    eventually("intake logs its addresses", || {
        let line = process
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "fulfillment endpoint listening");
        found = line.map(|v| {
            (
                format!("http://{}", v["listen"].as_str().unwrap_or_default()),
                v["admin"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .expect("admin address"),
            )
        });
        std::future::ready(found.is_some())
    })
    .await;
    found.expect("addresses")
}

#[tokio::test]
async fn the_binary_serves_answers_healthcheck_and_never_shows_the_token() {
    let fx = Fixture::new(Topic::Standard).await;
    let mut process = WorkerProcess::spawn_command(
        &["intake"],
        fx.binary_env(&[
            ("MPR_INTAKE__LISTEN", "127.0.0.1:0"),
            ("MPR_INTAKE__REGISTRATION_URL", REGISTRATION),
            ("MPR_LOG__LEVEL", "debug"),
        ]),
    );
    let (base, admin) = bound_addresses(&process).await;
    let good = token();
    let bad = format!("{}\u{7}", token());
    let mut seen = String::new();
    for body in [
        form_for(&good),
        form_for(&bad),
        format!("{}&x-amzn-marketplace-token=x", form_for(&good)),
    ] {
        seen.push_str(
            &post_form(&format!("{base}/"), &[], &body)
                .await
                .everything(),
        );
    }
    seen.push_str(
        &get(&format!("{base}/?x-amzn-marketplace-token={good}"))
            .await
            .everything(),
    );
    assert_eq!(fx.collect(&fx.queue_url, 1).await.len(), 1);

    let health = std::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .args(["healthcheck", "--addr", &admin.to_string()])
        .output()
        .expect("run healthcheck");
    assert!(health.status.success(), "{health:?}");
    let (_, metrics) = mp_resolver::observe::admin::http_get(admin, "/metrics")
        .await
        .unwrap();
    seen.push_str(&metrics);

    process.signal("-TERM");
    assert!(process.wait(Duration::from_secs(20)).await.success());
    let logs = process.output();
    assert!(logs.contains("token queued"), "{logs}");
    seen.push_str(&logs);
    for raw in [&good, &bad] {
        let visible = raw.trim_end_matches('\u{7}');
        assert!(
            !seen.contains(visible),
            "a raw token appeared in a response, the metrics or the logs"
        );
    }
    let fingerprint = mp_resolver::contract::Fingerprint::of(&good);
    assert!(
        logs.contains(fingerprint.as_str()),
        "the log names the token by its fingerprint"
    );
}

#[tokio::test]
async fn without_a_registration_url_intake_exits_78_naming_the_key() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .arg("intake")
        .env_clear()
        .env("MPR_QUEUE_URL", "http://127.0.0.1:4566/000000000000/q")
        .output()
        .await
        .expect("run intake");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("intake.registration_url")
            && stderr.contains("MPR_INTAKE__REGISTRATION_URL"),
        "{stderr}"
    );
}

/// The bench behind BENCHMARKS.md's "intake" section (not a test: no assertion on speed).
/// Offers POSTs at fixed rates, open loop: each request starts at its scheduled time whether or
/// not earlier ones have answered, and its latency counts from that time, so a slow server cannot
/// hide its queueing. Run with `scripts/bench-intake.sh` (a release build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-intake.sh"]
async fn bench_intake_at_fixed_offered_rates() {
    let rates: Vec<u32> = std::env::var("MPR_BENCH_RATES")
        .unwrap_or_else(|_| "50,100,200".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: u32 = std::env::var("MPR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let fx = Fixture::new(Topic::Standard).await;
    // scripts/bench-intake.sh points this at the release build.
    let program =
        std::env::var("MPR_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mp-resolver").into());
    let mut process = WorkerProcess::spawn_program(
        &program,
        &["intake"],
        fx.binary_env(&[
            ("MPR_INTAKE__LISTEN", "127.0.0.1:0"),
            ("MPR_INTAKE__REGISTRATION_URL", REGISTRATION),
            // One driver address: the per-client limit is not what is measured.
            ("MPR_INTAKE__RATE_LIMIT_PER_MINUTE", "1000000"),
            // The default level: one JSON log line per request, as in production.
            ("MPR_LOG__LEVEL", "info"),
        ]),
    );
    let (base, _) = bound_addresses(&process).await;
    let url = format!("{base}/");
    let body = form_for(&token());
    println!("| offered (req/s) | duration (s) | answered 303 | other | achieved (req/s) | p50 (ms) | p99 (ms) | max (ms) | intake CPU ms/request |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for rate in rates {
        let total = rate * secs;
        let period = Duration::from_secs_f64(1.0 / f64::from(rate));
        let cpu_before = cpu_seconds(process.pid);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let scheduled = start + period * i;
            tokio::time::sleep_until(scheduled).await;
            let (url, body) = (url.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let answer = post_form(&url, &[], &body).await;
                (
                    answer.status,
                    scheduled.elapsed(),
                    tokio::time::Instant::now(),
                )
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        let (mut ok, mut last) = (0u32, start);
        let mut other = std::collections::BTreeMap::<u16, u32>::new();
        for task in tasks {
            let (status, took, done) = task.await.expect("request task");
            if status == 303 {
                ok += 1;
            } else {
                *other.entry(status).or_default() += 1;
            }
            latencies.push(took);
            last = last.max(done);
        }
        latencies.sort();
        let pct = |p: f64| {
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i].as_secs_f64() * 1000.0
        };
        let elapsed = last.duration_since(start).as_secs_f64();
        let cpu_ms = (cpu_seconds(process.pid) - cpu_before) * 1000.0 / f64::from(total);
        let other: Vec<String> = other.iter().map(|(s, n)| format!("{n}× {s}")).collect();
        println!(
            "| {rate} | {secs} | {ok} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {cpu_ms:.2} |",
            if other.is_empty() {
                "0".to_owned()
            } else {
                other.join(", ")
            },
            f64::from(ok) / elapsed,
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
        // Keep the next rate's queue from starting full: drain what this one sent.
        fx.sqs
            .purge_queue()
            .queue_url(&fx.queue_url)
            .send()
            .await
            .ok();
    }
    let peak = process.peak_rss_kib().unwrap_or(0);
    println!("\nintake peak RSS: {:.1} MiB", peak as f64 / 1024.0);
    process.signal("-TERM");
    process.wait(Duration::from_secs(20)).await;
}

/// User + system CPU time of a process so far (/proc/PID/stat, clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Issue #22: two intake tasks behind one load balancer, sharing the store. A double submit of one
/// token lands on both at once; every answer and every queued message carries one signupId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_submit_through_two_intake_processes_gets_one_signup_id() {
    let fx = Fixture::new(Topic::Standard).await;
    let env = fx.binary_env(&[
        ("MPR_INTAKE__LISTEN", "127.0.0.1:0"),
        ("MPR_INTAKE__REGISTRATION_URL", REGISTRATION),
    ]);
    let (one, two) = (
        WorkerProcess::spawn_command(&["intake"], env.clone()),
        WorkerProcess::spawn_command(&["intake"], env),
    );
    let (base_one, _) = bound_addresses(&one).await;
    let (base_two, _) = bound_addresses(&two).await;
    let body = form_for(&token());
    let clicks: Vec<_> = [&base_one, &base_two, &base_one, &base_two]
        .into_iter()
        .map(|base| {
            let (url, body) = (format!("{base}/"), body.clone());
            tokio::spawn(async move { post_form(&url, &[], &body).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for click in clicks {
        let answer = click.await.unwrap();
        assert_eq!(answer.status, 303, "{}", answer.body);
        ids.insert(signup_id_of(&answer));
    }
    assert_eq!(ids.len(), 1, "one signupId across both tasks: {ids:?}");
    for message in fx.collect(&fx.queue_url, 4).await {
        assert_eq!(
            message.json()["signupId"].as_str(),
            ids.first().map(String::as_str)
        );
    }
    for mut process in [one, two] {
        process.signal("-TERM");
        assert!(process.wait(Duration::from_secs(20)).await.success());
    }
}
