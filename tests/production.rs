//! Production behaviour against LocalStack and the emulator: the visibility heartbeat, the adaptive
//! rate limit, the pause on a disabled API, graceful shutdown of the real binary on a real signal,
//! health and metrics, and the stall guard. Each test fails without the behaviour it names.

mod support;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mp_resolver::emulator::TestToken;
use mp_resolver::observe::admin;
use mp_resolver::worker::Worker;
use serde_json::json;
use support::{eventually, eventually_within, expected_event_id, Fixture, Topic};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn token(i: usize) -> String {
    TestToken::new("123456789012", "prod-abc")
        .customer(format!("cust-{i}"))
        .encode()
        .expect("valid test token")
}

fn body(token: &str) -> String {
    json!({ "registrationToken": token }).to_string()
}

/// The worker running with its admin listener, as `mp-resolver run` runs it.
struct Running {
    admin: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(worker: Arc<Worker>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin = listener.local_addr().expect("admin address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_with_admin(listener, async {
            let _ = stopped.await;
        }));
        Running {
            admin,
            stop: Some(stop),
            task,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        admin::http_get(self.admin, path)
            .await
            .expect("admin answers")
    }

    async fn stop(self) {
        self.stop_within(Duration::from_secs(20)).await;
    }

    /// What SIGTERM does to `mp-resolver run`: the shutdown future completes.
    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    async fn stop_within(mut self, limit: Duration) {
        self.signal_stop();
        tokio::time::timeout(limit, &mut self.task)
            .await
            .expect("worker stops in time")
            .expect("worker task")
            .expect("admin listener");
    }
}

/// Receives everything visible on `url` (hiding it for a minute), for up to `within`, until `n`
/// distinct messages came; their bodies.
async fn receive_all(fx: &Fixture, url: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = std::collections::HashMap::new();
    while seen.len() < n && Instant::now() < deadline {
        let out = fx
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in out.messages.unwrap_or_default() {
            seen.insert(m.message_id.unwrap_or_default(), m.body.unwrap_or_default());
        }
    }
    seen.into_values().collect()
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn held_messages_stay_hidden_while_the_topic_is_away_and_publish_once_when_it_is_back() {
    // Single-use tokens (a second ResolveCustomer call would answer ExpiredToken, as AWS does for a
    // resubmitted token) resolve while the topic is gone, and stay gone for longer than 20 s, past
    // the visibility timeout (18 s: the smallest the configuration allows with the fixture's
    // budget). The worker holds each resolved event, the heartbeat keeps each message hidden, and
    // when the topic is back every token is published exactly once.
    const TOKENS: usize = 5;
    let fx = Fixture::with_env(
        Topic::Standard,
        &[
            ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "18"),
            ("MPR_PUBLISH__HOLD_MAX_DELAY_SECS", "2"),
        ],
    )
    .await;
    fx.emulator.configure(|s| s.single_use = true);
    fx.delete_topic().await;
    let tokens: Vec<String> = (0..TOKENS).map(token).collect();
    for t in &tokens {
        fx.send(&body(t)).await;
    }
    let worker = fx.worker();
    let running = Running::start(worker.clone()).await;

    eventually("every token is resolved and its event held", || async {
        metric(&running.get("/metrics").await.1, "mpr_held_messages") == TOKENS as f64
    })
    .await;
    let (status, _) = running.get("/readyz").await;
    assert_eq!(status, 503, "not ready while holding");
    // The heartbeat extends each message every 6 s: four rounds is past 20 s.
    eventually_within(
        "the heartbeat keeps the held messages hidden for 20 s",
        Duration::from_secs(45),
        || async {
            metric(
                &running.get("/metrics").await.1,
                "mpr_visibility_extensions_total",
            ) >= (4 * TOKENS) as f64
        },
    )
    .await;
    fx.recreate_topic().await;

    // Every held event is published once the topic is back. (Counted at the worker: a publish that
    // lands between the test's CreateTopic and its Subscribe is accepted by SNS but reaches no
    // subscriber, so the subscriber queue may miss one; what it got must still be once each.)
    eventually("every held event published", || async {
        metric(
            &running.get("/metrics").await.1,
            "mpr_outcomes_total{outcome=\"published\"}",
        ) == TOKENS as f64
    })
    .await;
    let want: HashSet<String> = tokens.iter().map(|t| expected_event_id(t)).collect();
    let got = receive_all(&fx, &fx.subscriber_url, TOKENS, Duration::from_secs(3)).await;
    let mut seen = HashSet::new();
    for body in &got {
        let v: serde_json::Value = serde_json::from_str(body).expect("an event");
        let id = v["eventId"].as_str().unwrap_or_default().to_owned();
        assert!(want.contains(&id), "an event for a token that was not sent");
        assert!(seen.insert(id), "an event published twice");
    }
    let (_, text) = running.get("/metrics").await;
    running.stop().await;

    assert_eq!(
        fx.emulator.stats().calls,
        TOKENS as u64,
        "each token resolved by exactly one call"
    );
    assert_eq!(
        metric(&text, "mpr_messages_received_total"),
        TOKENS as f64,
        "no message came back while held"
    );
    assert_eq!(metric(&text, "mpr_held_messages"), 0.0);
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "none dead-lettered");
    assert_eq!(fx.depth(&fx.queue_url).await, 0);
}

#[tokio::test]
async fn receiving_follows_what_a_low_quota_can_take() {
    // A quota of 3 calls/s against 256 slots: without receiving by the rate, most of the 240
    // messages would wait for the limiter past their budget, be handed back with their receive
    // count raised, and reach the DLQ through the redrive policy. The token queue's
    // maxReceiveCount is 2 here, stricter than the 3 a seller might use: an empty DLQ then also
    // shows that no message was received more than twice.
    const TOKENS: usize = 240;
    let fx = Fixture::with_env(
        Topic::Standard,
        &[
            ("MPR_WORKER__MAX_IN_FLIGHT", "256"),
            ("MPR_RESOLVE__MAX_ATTEMPTS", "10"),
        ],
    )
    .await;
    let dlq_arn = fx.arn_of(&fx.dlq_url).await;
    fx.sqs
        .set_queue_attributes()
        .queue_url(&fx.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#),
        )
        .send()
        .await
        .expect("set the redrive policy");
    fx.emulator.configure(|s| s.quota = Some(3.0));
    let tokens: Vec<String> = (0..TOKENS).map(token).collect();
    fx.send_all(&tokens.iter().map(|t| body(t)).collect::<Vec<_>>())
        .await;

    let started = Instant::now();
    let running = Running::start(fx.worker()).await;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while seen.len() < TOKENS {
        assert!(
            Instant::now() < deadline,
            "only {} of {TOKENS} published",
            seen.len()
        );
        assert_eq!(
            fx.depth(&fx.dlq_url).await,
            0,
            "a valid token reached the DLQ"
        );
        for event in fx.read_once(&fx.subscriber_url, 1).await {
            seen.insert(
                event.json()["eventId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    let elapsed = started.elapsed();
    let (_, text) = running.get("/metrics").await;
    running.stop().await;
    let stats = fx.emulator.stats();
    println!(
        "quota 3/s: {TOKENS} tokens in {:.1} s = {:.2} tokens/s; {} calls, {} throttled ({:.1}%); {} receives",
        elapsed.as_secs_f64(),
        TOKENS as f64 / elapsed.as_secs_f64(),
        stats.calls,
        stats.throttled,
        100.0 * stats.throttled as f64 / stats.calls.max(1) as f64,
        metric(&text, "mpr_messages_received_total"),
    );
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "none in the DLQ");
    assert_eq!(fx.depth(&fx.queue_url).await, 0, "none left on the queue");
}

#[tokio::test]
async fn adaptive_rate_limit_keeps_throttling_low_under_a_quota() {
    const TOKENS: usize = 400;
    let fx = Fixture::with_env(
        Topic::Standard,
        &[
            ("MPR_WORKER__MAX_IN_FLIGHT", "128"),
            ("MPR_RESOLVE__BUDGET_SECS", "60"),
            ("MPR_RESOLVE__MAX_ATTEMPTS", "30"),
            ("MPR_RESOLVE__HANDBACK_MAX_SECS", "2"),
            // One delivery's budget (60 s) plus an attempt and the margin must fit (config rule).
            ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "73"),
        ],
    )
    .await;
    fx.emulator.configure(|s| s.quota = Some(20.0));
    let tokens: Vec<String> = (0..TOKENS).map(token).collect();
    fx.send_all(&tokens.iter().map(|t| body(t)).collect::<Vec<_>>())
        .await;

    let started = Instant::now();
    let running = Running::start(fx.worker()).await;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < TOKENS {
        assert!(
            Instant::now() < deadline,
            "only {} of {TOKENS} resolved",
            seen.len()
        );
        for event in fx.read_once(&fx.subscriber_url, 1).await {
            seen.insert(
                event.json()["eventId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    let elapsed = started.elapsed();
    let (_, text) = running.get("/metrics").await;
    running.stop().await;

    let expected: HashSet<String> = tokens.iter().map(|t| expected_event_id(t)).collect();
    assert_eq!(seen, expected, "every token resolved");
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "none dead-lettered");
    let stats = fx.emulator.stats();
    let ratio = stats.throttled as f64 / stats.calls as f64;
    eprintln!(
        "rate limit: {TOKENS} tokens in {:.1} s = {:.1} tokens/s against a quota of 20/s; \
         {} calls, {} throttled ({:.1}%); final limit {:.1}/s",
        elapsed.as_secs_f64(),
        TOKENS as f64 / elapsed.as_secs_f64(),
        stats.calls,
        stats.throttled,
        ratio * 100.0,
        metric(&text, "mpr_resolve_rate_limit")
    );
    assert!(
        ratio < 0.25,
        "throttled {} of {} calls",
        stats.throttled,
        stats.calls
    );
}

#[tokio::test]
async fn disabled_api_pauses_everything_until_it_answers_again() {
    let fx = Fixture::with_env(
        Topic::Standard,
        &[
            ("MPR_PAUSE__PROBE_INITIAL_SECS", "1"),
            ("MPR_PAUSE__PROBE_MAX_SECS", "1"),
            ("MPR_RESOLVE__HANDBACK_MAX_SECS", "1"),
        ],
    )
    .await;
    fx.emulator.configure(|s| s.disabled = true);
    let tokens: Vec<String> = (0..5).map(token).collect();
    fx.send_all(&tokens.iter().map(|t| body(t)).collect::<Vec<_>>())
        .await;
    let worker = fx.worker();
    let running = Running::start(worker.clone()).await;

    eventually("the worker pauses", || async { worker.is_paused() }).await;
    let (status, ready) = running.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("paused"), "{ready}");
    let (status, _) = running.get("/healthz").await;
    assert_eq!(
        status, 200,
        "paused is not stalled: the orchestrator must not kill it"
    );
    // Probes keep going while paused; tokens are not dead-lettered.
    let calls_when_paused = fx.emulator.stats().calls;
    eventually("a probe", || async {
        fx.emulator.stats().calls > calls_when_paused
    })
    .await;
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
    assert!(fx.emulator.stats().resolved == 0);

    fx.emulator.configure(|s| s.disabled = false);
    let events = fx.events(tokens.len()).await;
    let seen: HashSet<String> = events
        .iter()
        .map(|e| e.json()["eventId"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(seen.len(), tokens.len());
    eventually("ready again", || async {
        running.get("/readyz").await.0 == 200
    })
    .await;
    running.stop().await;
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "nothing dead-lettered");
    // Paused means not receiving: the messages were not churned through the redrive count.
    assert!(
        fx.emulator.stats().disabled < 10,
        "{:?}",
        fx.emulator.stats()
    );
}

/// Starts the real binary, waits until it has messages in flight, signals it, and checks the
/// accounting: every token published or back on the queue, visible, nothing stranded.
async fn signal_mid_run(signal: &str, latency_ms: u64, grace_secs: u64) {
    const TOKENS: usize = 20;
    let fx = Fixture::new(Topic::Standard).await;
    fx.emulator.configure(|s| s.latency_ms = latency_ms);
    let tokens: Vec<String> = (0..TOKENS).map(token).collect();
    fx.send_all(&tokens.iter().map(|t| body(t)).collect::<Vec<_>>())
        .await;
    let grace = grace_secs.to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(fx.binary_env(&[
            ("MPR_WORKER__SHUTDOWN_GRACE_SECS", grace.as_str()),
            ("MPR_WORKER__MAX_IN_FLIGHT", "8"),
        ]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mp-resolver run");
    let pid = child.id().expect("pid").to_string();

    eventually("messages in flight", || async {
        fx.visible_and_in_flight(&fx.queue_url).await.1 >= 4
    })
    .await;
    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(grace_secs + 10), child.wait())
        .await
        .expect("the worker exits after the signal")
        .expect("wait");
    let took = signalled.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(exit.success(), "exit {exit:?}\n{stderr}");
    assert!(
        took < Duration::from_secs(grace_secs + 3),
        "exited {took:?} after the signal, grace {grace_secs} s"
    );
    for t in &tokens {
        assert!(
            !stderr.contains(t.as_str()),
            "a raw token in the worker's output"
        );
    }

    let (visible, in_flight) = fx.visible_and_in_flight(&fx.queue_url).await;
    assert_eq!(
        in_flight, 0,
        "nothing stranded invisible after exit\n{stderr}"
    );
    let mut published = HashSet::new();
    loop {
        let events = fx.read_once(&fx.subscriber_url, 1).await;
        if events.is_empty() {
            break;
        }
        for e in events {
            published.insert(e.json()["eventId"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        published.len() as u64 + visible,
        TOKENS as u64,
        "published {} + back on the queue {visible} = every token",
        published.len()
    );
    assert_eq!(fx.depth(&fx.dlq_url).await, 0);
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_exits_zero() {
    // Calls take 1 s and the grace is 10 s: everything in flight finishes and is published.
    signal_mid_run("-TERM", 1_000, 10).await;
}

#[tokio::test]
async fn sigint_past_the_grace_hands_unfinished_messages_back_at_once() {
    // Calls take 4 s and the grace is 1 s: in-flight messages are handed back with visibility 0.
    signal_mid_run("-INT", 4_000, 1).await;
}

#[tokio::test]
async fn metrics_health_and_healthcheck_report_what_happened() {
    let fx = Fixture::new(Topic::Standard).await;
    fx.send_all(&[
        body(&token(1)),
        body(
            &TestToken::new("123456789012", "prod-abc")
                .throttle(1)
                .encode()
                .expect("valid test token"),
        ),
        body("not-a-token"),
        "[1]".to_owned(),
    ])
    .await;
    let running = Running::start(fx.worker()).await;
    fx.events(2).await;
    fx.dead_letters(2).await;
    eventually("outcomes counted", || async {
        let (_, text) = running.get("/metrics").await;
        metric(&text, "mpr_outcomes_total{outcome=\"dead_lettered\"}") == 2.0
            && metric(&text, "mpr_outcomes_total{outcome=\"published\"}") == 2.0
    })
    .await;
    let (status, text) = running.get("/metrics").await;
    assert_eq!(status, 200);
    for (series, value) in [
        ("mpr_messages_received_total", 4.0),
        ("mpr_dead_letters_total{reason=\"invalid_token\"}", 1.0),
        ("mpr_dead_letters_total{reason=\"malformed_message\"}", 1.0),
        ("mpr_resolve_attempts_total{result=\"resolved\"}", 2.0),
        ("mpr_resolve_attempts_total{result=\"throttled\"}", 1.0),
        ("mpr_resolve_attempts_total{result=\"invalid\"}", 1.0),
        ("mpr_resolve_throttles_total", 1.0),
        ("mpr_resolve_duration_seconds_count", 4.0),
        ("mpr_token_age_seconds_count", 2.0),
        ("mpr_in_flight", 0.0),
        (
            "mpr_aws_calls_total{service=\"sqs\",operation=\"SendMessage\",result=\"ok\"}",
            2.0,
        ),
    ] {
        assert_eq!(metric(&text, series), value, "{series}\n{text}");
    }
    // Two events, one or two PublishBatch calls depending on whether they met within the linger.
    let batches = metric(
        &text,
        "mpr_aws_calls_total{service=\"sns\",operation=\"PublishBatch\",result=\"ok\"}",
    );
    assert!((1.0..=2.0).contains(&batches), "{text}");
    assert!(
        metric(
            &text,
            "mpr_aws_calls_total{service=\"sqs\",operation=\"ReceiveMessage\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "mpr_aws_calls_total{service=\"sqs\",operation=\"DeleteMessageBatch\",result=\"ok\"}"
        ) >= 1.0
    );
    assert_eq!(running.get("/healthz").await.0, 200);
    assert_eq!(running.get("/readyz").await.0, 200);

    // The admin listener runs on this test's runtime: wait for the child without blocking it.
    let healthcheck = |addr: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
            .args(["healthcheck", "--addr", &addr])
            .output()
            .await
            .expect("run healthcheck")
    };
    let ok = healthcheck(running.admin.to_string()).await;
    assert!(ok.status.success(), "{ok:?}");
    let addr = running.admin.to_string();
    running.stop().await;
    let down = healthcheck(addr).await;
    assert_eq!(down.status.code(), Some(1), "nothing listening: unhealthy");
}

#[tokio::test]
async fn a_receive_loop_that_keeps_failing_turns_unhealthy() {
    // The smallest stall timeout the configuration allows with a 1 s long poll: 1 + 30 + 1.
    let fx = Fixture::with_env(Topic::Standard, &[("MPR_WORKER__STALL_TIMEOUT_SECS", "32")]).await;
    let mut settings = fx.settings.clone();
    settings.queue_url = format!("{}-deleted", fx.queue_url);
    let running = Running::start(fx.worker_with(settings)).await;

    eventually_within(
        "healthz turns unhealthy",
        Duration::from_secs(60),
        || async { running.get("/healthz").await.0 == 503 },
    )
    .await;
    let (_, ready) = running.get("/readyz").await;
    assert!(ready.contains("queue not reachable"), "{ready}");
    let (_, text) = running.get("/metrics").await;
    assert!(
        metric(
            &text,
            "mpr_aws_calls_total{service=\"sqs\",operation=\"ReceiveMessage\",result=\"error\"}"
        ) >= 2.0,
        "it keeps retrying\n{text}"
    );
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .args(["healthcheck", "--addr", &running.admin.to_string()])
        .output()
        .await
        .expect("run healthcheck");
    assert_eq!(check.status.code(), Some(1));
    running.stop().await;
}

#[tokio::test]
async fn a_stopped_idle_worker_leaves_no_long_poll_hiding_messages() {
    // An idle worker long-polls for 20 s. Stopped, it lets that poll end (SQS would keep it
    // registered anyway) and hands back what it brings, so ten messages sent right after the stop
    // are all receivable within two seconds instead of hiding for a visibility timeout.
    let fx = Fixture::with_env(
        Topic::Standard,
        &[
            ("MPR_WORKER__RECEIVE_WAIT_SECS", "20"),
            ("MPR_WORKER__STALL_TIMEOUT_SECS", "60"),
            ("MPR_WORKER__SHUTDOWN_GRACE_SECS", "25"),
        ],
    )
    .await;
    let mut running = Running::start(fx.worker()).await;
    eventually("ready", || async { running.get("/readyz").await.0 == 200 }).await;
    running.signal_stop();
    let bodies: Vec<String> = (0..10).map(|i| body(&token(i))).collect();
    fx.send_all(&bodies).await;
    let got = receive_all(&fx, &fx.queue_url, 10, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 10, "all ten receivable within two seconds");
    running.stop_within(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn shutdown_hands_back_200_slow_messages_within_the_grace_and_duplicates_nothing() {
    const TOKENS: usize = 200;
    let fx = Fixture::with_env(
        Topic::Standard,
        &[
            ("MPR_WORKER__MAX_IN_FLIGHT", "200"),
            ("MPR_WORKER__SHUTDOWN_GRACE_SECS", "3"),
            ("MPR_RATE_LIMIT__INITIAL_PER_SEC", "1000"),
        ],
    )
    .await;
    // Every call takes 2 s: at any moment most messages are waiting for the API.
    fx.emulator.configure(|s| s.latency_ms = 2_000);
    let tokens: Vec<String> = (0..TOKENS).map(token).collect();
    fx.send_all(&tokens.iter().map(|t| body(t)).collect::<Vec<_>>())
        .await;
    let mut running = Running::start(fx.worker()).await;
    eventually("all in flight", || async {
        metric(&running.get("/metrics").await.1, "mpr_in_flight") == TOKENS as f64
    })
    .await;
    let stopping = Instant::now();
    running.signal_stop();
    running.stop_within(Duration::from_secs(10)).await;
    let took = stopping.elapsed();
    assert!(
        took <= Duration::from_secs(4),
        "stopped in {took:?}, grace 3 s"
    );

    // Nothing is left invisible: every token was either published or is back on the queue.
    let (_, invisible) = fx.visible_and_in_flight(&fx.queue_url).await;
    assert_eq!(invisible, 0, "no message left hidden");
    let published: HashSet<String> =
        receive_all(&fx, &fx.subscriber_url, TOKENS, Duration::from_secs(3))
            .await
            .iter()
            .map(|b| {
                let v: serde_json::Value = serde_json::from_str(b).expect("an event");
                v["eventId"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
    let back = receive_all(
        &fx,
        &fx.queue_url,
        TOKENS - published.len(),
        Duration::from_secs(10),
    )
    .await;
    let back_ids: HashSet<String> = back
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).expect("a token body");
            expected_event_id(v["registrationToken"].as_str().unwrap_or_default())
        })
        .collect();
    assert!(
        published.is_disjoint(&back_ids),
        "a published token was handed back"
    );
    // Calls in flight are let answer (the token may be spent), so answers keep arriving to the
    // grace's end; a first publish SNS has not answered when the grace ends is given up and its
    // event dead-lettered as `unpublished` (never lost, never left invisible).
    let lettered: HashSet<String> = fx
        .collect(&fx.dlq_url, fx.depth(&fx.dlq_url).await as usize)
        .await
        .iter()
        .map(|letter| {
            assert_eq!(letter.attr("mpr.reason"), "unpublished");
            let event: serde_json::Value =
                serde_json::from_str(letter.attr("mpr.event")).expect("the letter keeps the event");
            event["eventId"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(
        lettered.is_disjoint(&back_ids),
        "a dead-lettered token was handed back"
    );
    let accounted: HashSet<&String> = published.iter().chain(&back_ids).chain(&lettered).collect();
    assert_eq!(accounted.len(), TOKENS, "every token accounted for");
    eprintln!(
        "shutdown of 200 slow messages: {} published, {} handed back, {} dead-lettered as unpublished, in {took:?}",
        published.len(),
        back_ids.len(),
        lettered.len()
    );
}

#[tokio::test]
async fn readiness_comes_from_a_start_up_check_not_the_first_long_poll() {
    let env = [
        ("MPR_WORKER__RECEIVE_WAIT_SECS", "20"),
        ("MPR_WORKER__STALL_TIMEOUT_SECS", "60"),
        ("MPR_WORKER__SHUTDOWN_GRACE_SECS", "25"),
    ];
    let fx = Fixture::with_env(Topic::Standard, &env).await;
    let running = Running::start(fx.worker()).await;
    eventually_within(
        "ready within two seconds",
        Duration::from_secs(2),
        || async { running.get("/readyz").await.0 == 200 },
    )
    .await;
    running.stop_within(Duration::from_secs(30)).await;

    let fx = Fixture::with_env(Topic::Standard, &env).await;
    fx.delete_topic().await;
    let running = Running::start(fx.worker()).await;
    eventually_within("not ready, saying why", Duration::from_secs(5), || async {
        let (status, body) = running.get("/readyz").await;
        status == 503 && body.contains("topic not reachable")
    })
    .await;
    running.stop_within(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_background_task_that_stops_turns_the_process_unhealthy() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();
    let running = Running::start(worker.clone()).await;
    eventually("healthy", || async {
        running.get("/healthz").await.0 == 200
    })
    .await;
    assert!(worker.abort_background_task("publish_batcher"));
    eventually("unhealthy, naming the task", || async {
        let (status, body) = running.get("/healthz").await;
        status == 503 && body.contains("publish_batcher")
    })
    .await;
    running.stop().await;
}

/// Publishes `tokens` through a fresh worker and returns the tokens per second it took.
async fn throughput(fx: &Fixture, tokens: &[String]) -> f64 {
    fx.send_all(&tokens.iter().map(|t| body(t)).collect::<Vec<_>>())
        .await;
    let started = Instant::now();
    let running = Running::start(fx.worker()).await;
    let events = fx.events(tokens.len()).await;
    let elapsed = started.elapsed();
    running.stop().await;
    let ids: HashSet<String> = events
        .iter()
        .map(|e| e.json()["eventId"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), tokens.len(), "every token published once");
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "none dead-lettered");
    tokens.len() as f64 / elapsed.as_secs_f64()
}

#[tokio::test]
async fn a_few_tokens_throttled_many_times_do_not_slow_the_rest() {
    // 5% of the tokens are throttled 8 times each while the account has no quota at all: the
    // limiter must not mistake them for the account's quota. The figures go to BENCHMARKS.md.
    const TOKENS: usize = 200;
    let env = [
        ("MPR_WORKER__MAX_IN_FLIGHT", "64"),
        ("MPR_RESOLVE__MAX_ATTEMPTS", "10"),
    ];
    let clean: Vec<String> = (0..TOKENS).map(token).collect();
    let fx = Fixture::with_env(Topic::Standard, &env).await;
    let without = throughput(&fx, &clean).await;

    let mixed: Vec<String> = (0..TOKENS)
        .map(|i| {
            let t = TestToken::new("123456789012", "prod-abc").customer(format!("mixed-{i}"));
            let t = if i % 20 == 0 { t.throttle(8) } else { t };
            t.encode().expect("valid test token")
        })
        .collect();
    let fx = Fixture::with_env(Topic::Standard, &env).await;
    let with = throughput(&fx, &mixed).await;
    let stats = fx.emulator.stats();
    println!(
        "no quota, {TOKENS} tokens: {without:.1} tokens/s clean; {with:.1} tokens/s with 5% throttled 8 times \
         ({} calls, {} throttled)",
        stats.calls, stats.throttled
    );
    assert_eq!(
        stats.throttled,
        (TOKENS / 20 * 8) as u64,
        "only the scripted throttles"
    );
}

#[tokio::test]
async fn a_new_worker_starts_at_the_rate_the_fleet_learned() {
    // A first worker drains a backlog (no quota: its slow start is never pushed back) and hands
    // its rate on as it stops; a second worker on the same store starts at that rate before its
    // first call, not at rate_limit.initial_per_sec (10/s).
    const TOKENS: usize = 200;
    let fx = Fixture::with_env(Topic::Standard, &[("MPR_WORKER__MAX_IN_FLIGHT", "64")]).await;
    let tokens: Vec<String> = (0..TOKENS).map(token).collect();
    fx.send_all(&tokens.iter().map(|t| body(t)).collect::<Vec<_>>())
        .await;
    let first = Running::start(fx.worker()).await;
    fx.events(TOKENS).await;
    let (_, text) = first.get("/metrics").await;
    let first_rate = metric(&text, "mpr_resolve_rate_limit");
    first.stop().await;
    let stored = mp_resolver::store::fleet::read(fx.store_handle())
        .await
        .expect("the store answers")
        .expect("the first worker wrote its rate on its way out");
    assert!(!stored.learned.quota, "no quota: a slow-start peak");
    assert!(
        stored.learned.rate > 5.0 * 10.0 && stored.learned.rate <= first_rate,
        "{stored:?} against {first_rate}"
    );

    let second = Running::start(fx.worker()).await;
    eventually("the second worker starts at the learned rate", || async {
        let (_, text) = second.get("/metrics").await;
        metric(&text, "mpr_resolve_rate_limit") == stored.learned.rate
            && metric(
                &text,
                r#"mpr_fleet_rate_total{operation="read",result="adopted"}"#,
            ) == 1.0
    })
    .await;
    second.stop().await;
    println!(
        "fleet rate: the first worker ended at {first_rate:.1}/s and wrote {:.1}/s; the second \
         started at it (configured start: 10/s)",
        stored.learned.rate
    );
}
