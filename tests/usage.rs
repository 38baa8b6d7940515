//! The usage lane end to end (issue #21): usage events on a LocalStack queue, hours accumulated in
//! the store (embedded redb, moto's DynamoDB), metered with BatchMeterUsage at the emulator, the
//! results on the topic and the usage that cannot be metered on the usage dead-letter queue.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mp_resolver::config::Settings;
use mp_resolver::emulator::Subscriber;
use mp_resolver::worker::Worker;
use rand::seq::SliceRandom;
use rand::Rng;
use support::process::WorkerProcess;
use support::store::Backend;
use support::{eventually_within, Fixture, Received, Topic};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PRODUCT: &str = "prod-abc";
const DIMENSIONS: [&str; 2] = ["api_calls", "storage_gb"];
const SUBSCRIPTIONS: usize = 10;
const HOURS: i64 = 3;
const EVENTS: usize = 1_200;
/// How long one run of the scenario may take, on a machine shared with other builds.
const LIMIT: Duration = Duration::from_secs(240);

fn account(i: usize) -> String {
    format!("{:012}", 400_000_000_000u64 + i as u64)
}

fn license(i: usize) -> String {
    format!(
        "arn:aws:license-manager::{}:license:l-usage{i:04}",
        account(i)
    )
}

/// The usage queue and its DLQ beside the fixture's, and settings for the usage lane.
async fn usage_settings(fx: &Fixture, settle_secs: u64) -> (Settings, String, String) {
    let dlq = fx.extra_queue(false, HashMap::new()).await;
    let queue = fx.extra_queue(false, HashMap::new()).await;
    let mut settings = fx.settings.clone();
    settings.usage_queue_url = queue.clone();
    settings.usage_dlq_url = dlq.clone();
    settings.product_codes = vec![PRODUCT.to_owned()];
    settings.metering.settle_secs = settle_secs;
    // The scenario's hours ended up to three hours ago: without this their longest delay would
    // have passed, and they would be metered while their usage still arrives (and the rest carried).
    settings.metering.max_delay_secs = 10_800;
    (settings, queue, dlq)
}

fn usage_env(queue: &str, dlq: &str, settle_secs: u64) -> Vec<(String, String)> {
    [
        ("MPR_USAGE_QUEUE_URL", queue.to_owned()),
        ("MPR_USAGE_DLQ_URL", dlq.to_owned()),
        ("MPR_PRODUCT_CODES", PRODUCT.to_owned()),
        ("MPR_METERING__SETTLE_SECS", settle_secs.to_string()),
        ("MPR_METERING__MAX_DELAY_SECS", "10800".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn subscribe_all(fx: &Fixture) {
    for i in 0..SUBSCRIPTIONS {
        fx.emulator
            .subscribe(Subscriber {
                product_code: PRODUCT.into(),
                customer_aws_account_id: Some(account(i)),
                customer_identifier: None,
                license_arn: Some(license(i)),
            })
            .expect("a valid subscriber");
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// 1,200 events over 10 subscriptions × 2 dimensions × the 3 previous hours, in random order, and
/// the quantity each (license, dimension, hour start) must be metered with.
/// Each (subscription, dimension, hour) with the quantity it must be metered with.
type Expected = BTreeMap<(String, String, i64), i64>;

fn scenario_events() -> (Vec<String>, Expected) {
    let current = now_secs() / 3600 * 3600;
    let mut rng = rand::rng();
    let mut bodies = Vec::with_capacity(EVENTS);
    let mut want = BTreeMap::new();
    for n in 0..EVENTS {
        let (sub, dim, back) = (
            n % SUBSCRIPTIONS,
            DIMENSIONS[(n / SUBSCRIPTIONS) % 2],
            1 + (n / (SUBSCRIPTIONS * 2)) as i64 % HOURS,
        );
        let hour = current - back * 3600;
        let quantity = rng.random_range(1..=50);
        let at = hour + rng.random_range(0..3600);
        let timestamp = chrono::DateTime::from_timestamp(at, 0)
            .expect("a time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        bodies.push(
            serde_json::json!({
                "usageId": format!("usage-{}-{n}", support::unique("u")),
                "customerAWSAccountId": account(sub),
                "licenseArn": license(sub),
                "dimension": dim,
                "quantity": quantity,
                "timestamp": timestamp,
            })
            .to_string(),
        );
        *want
            .entry((license(sub), dim.to_owned(), hour))
            .or_insert(0) += quantity;
    }
    (bodies, want)
}

/// Every body twice, shuffled: the application's retries and SQS's redeliveries.
fn twice(bodies: &[String]) -> Vec<String> {
    let mut all: Vec<String> = bodies.iter().chain(bodies).cloned().collect();
    all.shuffle(&mut rand::rng());
    all
}

struct Running {
    worker: Arc<Worker>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn run(worker: Arc<Worker>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.clone().run(async move {
        let _ = stopped.await;
    }));
    Running { worker, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the worker ends cleanly");
    }
}

/// Reads the topic's subscriber queue until `n` metered events arrived.
async fn metered_events(fx: &Fixture, n: usize) -> Vec<Received> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} metered events",
            out.len()
        );
        out.extend(
            fx.read_once(&fx.subscriber_url, 1)
                .await
                .into_iter()
                .filter(|r| {
                    r.attributes.get("eventType").map(String::as_str)
                        == Some("marketplace.usage.metered")
                }),
        );
    }
    out
}

/// What the user checks: the emulator holds exactly one record per (license, dimension, hour),
/// with the hour's summed quantity; one `Success` event per record, with its record id.
async fn assert_metered_once(fx: &Fixture, want: &Expected) {
    let records = fx.emulator.metered_records();
    let mut got = BTreeMap::new();
    for r in &records {
        let key = (
            r.license_arn.clone().expect("metered by license"),
            r.dimension.clone(),
            r.hour,
        );
        assert!(
            got.insert(key.clone(), r.quantity).is_none(),
            "{key:?} metered twice"
        );
    }
    assert_eq!(&got, want, "the emulator's records are the hours' sums");
    let events = metered_events(fx, want.len()).await;
    let ids: HashMap<String, String> = records
        .iter()
        .map(|r| {
            (
                r.metering_record_id.clone(),
                r.license_arn.clone().unwrap_or_default(),
            )
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        let json = e.json();
        assert_eq!(json["status"], "Success", "{json}");
        assert_eq!(e.attr("status"), "Success");
        let id = json["meteringRecordId"].as_str().expect("a record id");
        assert!(ids.contains_key(id), "{json}");
        assert!(
            seen.insert(json["eventId"].as_str().unwrap_or("").to_owned()),
            "one event per hour: {json}"
        );
    }
}

/// The settle time that outlasts any pause in one partition's usage while the backlog is counted:
/// an hour that settles before all of its usage is in is metered, and the rest rightly carried to
/// the next hour, which is not what these scenarios count. moto answers one request at a time, so
/// its runs get longer.
fn settle_for(backend: Backend, base: u64) -> u64 {
    match backend {
        Backend::Embedded => base,
        Backend::Dynamodb => base + 25,
    }
}

async fn in_process_scenario(backend: Backend) {
    let fx = Fixture::with_store(Topic::Standard, backend, &[]).await;
    subscribe_all(&fx);
    let (settings, queue, _dlq) = usage_settings(&fx, settle_for(backend, 5)).await;
    let (bodies, want) = scenario_events();
    assert_eq!(want.len(), 60);
    fx.send_all_to(&queue, &twice(&bodies)).await;
    let running = run(fx.worker_with(settings));
    eventually_within("60 hours metered", LIMIT, || async {
        fx.emulator.metered_records().len() >= 60
    })
    .await;
    assert_metered_once(&fx, &want).await;
    assert_eq!(fx.depth(&queue).await, 0, "every usage message deleted");
    let metrics = running.worker.telemetry().render();
    assert!(
        metrics.contains("mpr_usage_events_total{result=\"counted\"} 1200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mpr_usage_events_total{result=\"duplicate\"} 1200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mpr_usage_records_metered_total{status=\"success\"} 60"),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_hours_from_2400_messages_are_metered_once_embedded() {
    in_process_scenario(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_hours_from_2400_messages_are_metered_once_dynamodb() {
    in_process_scenario(Backend::Dynamodb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_sharing_dynamodb_meter_each_hour_once() {
    let fx = Fixture::with_store(Topic::Standard, Backend::Dynamodb, &[]).await;
    subscribe_all(&fx);
    let (settings, queue, _dlq) = usage_settings(&fx, settle_for(Backend::Dynamodb, 5)).await;
    let (bodies, want) = scenario_events();
    fx.send_all_to(&queue, &twice(&bodies)).await;
    let first = run(fx.worker_with(settings.clone()));
    let second = run(fx.worker_on(settings, fx.store.open().await));
    eventually_within("60 hours metered", LIMIT, || async {
        fx.emulator.metered_records().len() >= 60
    })
    .await;
    assert_metered_once(&fx, &want).await;
    first.stop().await;
    second.stop().await;
}

/// The real binary, SIGKILLed while it counts and restarted: nothing lost, nothing counted twice.
async fn sigkill_scenario(backend: Backend) {
    let fx = Fixture::with_store(Topic::Standard, backend, &[]).await;
    subscribe_all(&fx);
    // The messages the killed worker held come back when their visibility lapses (20 s here: the
    // shortest the resolve settings below allow). The settle outlasts that, so no hour is metered
    // before all of its usage is in; with a shorter one, an event whose copies were both in flight
    // would rightly be carried to the next hour, which is not what this scenario counts.
    let visibility = [
        ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "20"),
        ("MPR_RESOLVE__BUDGET_SECS", "5"),
        ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "3000"),
    ];
    let settle = settle_for(backend, 30);
    let (_, queue, dlq) = usage_settings(&fx, settle).await;
    let (bodies, want) = scenario_events();
    fx.send_all_to(&queue, &twice(&bodies)).await;
    let usage = usage_env(&queue, &dlq, settle);
    let env = fx.binary_env(
        &usage
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(visibility)
            .collect::<Vec<_>>(),
    );
    let mut first = WorkerProcess::spawn(env.clone());
    // Kill it once about a third of the messages are gone from the queue.
    eventually_within("a third of the usage counted", LIMIT, || async {
        fx.depth(&queue).await <= 1_600
    })
    .await;
    first.signal("-KILL");
    first.wait(Duration::from_secs(10)).await;
    let left = fx.depth(&queue).await;
    let mut second = WorkerProcess::spawn(env);
    eventually_within("60 hours metered after the restart", LIMIT, || async {
        fx.emulator.metered_records().len() >= 60
    })
    .await;
    assert_metered_once(&fx, &want).await;
    eprintln!(
        "sigkill ({backend:?}): killed with {left} of 2400 messages left; 60 records, 60 events"
    );
    second.signal("-TERM");
    second.wait(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_worker_loses_nothing_and_counts_nothing_twice_embedded() {
    sigkill_scenario(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_worker_loses_nothing_and_counts_nothing_twice_dynamodb() {
    sigkill_scenario(Backend::Dynamodb).await;
}

fn event(usage_id: &str, identity: serde_json::Value, dimension: &str, ago_secs: i64) -> String {
    let at = chrono::DateTime::from_timestamp(now_secs() - 3600 - ago_secs, 0)
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut body = serde_json::json!({
        "usageId": usage_id,
        "dimension": dimension,
        "quantity": 7,
        "timestamp": at,
    });
    for (k, v) in identity.as_object().expect("an object") {
        body[k] = v.clone();
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_that_cannot_be_metered_is_dead_lettered_with_its_reason_unchanged() {
    let fx = Fixture::new(Topic::Standard).await;
    subscribe_all(&fx);
    fx.emulator.configure(|s| {
        s.metering_dimensions = BTreeMap::from([(
            PRODUCT.to_owned(),
            DIMENSIONS.iter().map(|d| d.to_string()).collect(),
        )]);
    });
    let (settings, queue, dlq) = usage_settings(&fx, 1).await;
    let id = support::unique("bad");
    let good = serde_json::json!({"customerAWSAccountId": account(0), "licenseArn": license(0)});
    let bodies = BTreeMap::from([
        (
            "customer_not_subscribed",
            event(
                &format!("{id}-a"),
                serde_json::json!({"customerIdentifier": "nobody", "productCode": PRODUCT}),
                "api_calls",
                0,
            ),
        ),
        (
            "outside_metering_window",
            event(&format!("{id}-b"), good.clone(), "api_calls", 7 * 3600),
        ),
        (
            "invalid_dimension",
            event(&format!("{id}-c"), good.clone(), "no_such_dimension", 0),
        ),
        (
            "malformed_message",
            "{\"usageId\": \"x\", \"quantity\": \"lots\"}".to_owned(),
        ),
    ]);
    // A good event for the same license and hour as the bad dimension: still metered.
    let fine = event(&format!("{id}-d"), good, "api_calls", 0);
    let mut all: Vec<String> = bodies.values().cloned().collect();
    all.push(fine);
    fx.send_all_to(&queue, &all).await;
    let running = run(fx.worker_with(settings));
    let letters = fx.collect(&dlq, bodies.len()).await;
    let by_reason: HashMap<&str, &Received> =
        letters.iter().map(|l| (l.attr("mpr.reason"), l)).collect();
    for (reason, body) in &bodies {
        let letter = by_reason
            .get(reason)
            .unwrap_or_else(|| panic!("no {reason} letter in {letters:?}"));
        assert_eq!(&letter.body, body, "{reason}: the body byte-identical");
        assert!(!letter.attr("mpr.detail").is_empty());
    }
    assert!(by_reason["outside_metering_window"]
        .attr("mpr.detail")
        .contains("quantity 7"));
    eventually_within("the good event metered", LIMIT, || async {
        fx.emulator
            .metered_records()
            .iter()
            .any(|r| r.quantity == 7 && r.dimension == "api_calls")
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unprocessed_records_and_throttling_still_meter_every_hour_once() {
    let fx = Fixture::new(Topic::Standard).await;
    subscribe_all(&fx);
    fx.emulator.configure(|s| {
        s.metering_throttle = 3;
        s.metering_unprocessed = 7;
    });
    let (settings, queue, _dlq) = usage_settings(&fx, 5).await;
    let (bodies, want) = scenario_events();
    fx.send_all_to(&queue, &bodies).await;
    let running = run(fx.worker_with(settings));
    eventually_within("60 hours metered", LIMIT, || async {
        fx.emulator.metered_records().len() >= 60
    })
    .await;
    assert_metered_once(&fx, &want).await;
    let metrics = running.worker.telemetry().render();
    assert!(
        metrics.contains("mpr_usage_records_metered_total{status=\"unprocessed\"} 7"),
        "{metrics}"
    );
    running.stop().await;
}

/// `metering.zero_dimensions`: every subscription the registry shows granted gets a record of
/// quantity 0 for the last hour in a zero dimension it had no usage in; usage in that dimension is
/// metered as it is, and other dimensions get nothing without usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_dimensions_meter_quantity_zero_for_every_granted_subscription() {
    use mp_resolver::store::registry::{Change, Identity, Registry};
    let fx = Fixture::new(Topic::Standard).await;
    subscribe_all(&fx);
    let registry = Registry::new(fx.store_handle().clone());
    for i in 0..2 {
        let change = Change::Resolved {
            identity: Identity {
                customer_aws_account_id: Some(account(i)),
                product_code: Some(PRODUCT.to_owned()),
                license_arn: Some(license(i)),
                customer_identifier: None,
                agreement_id: None,
            },
            signup_id: None,
            context: BTreeMap::new(),
        };
        registry.apply(&change).await.expect("the registry written");
    }
    let (mut settings, queue, _dlq) = usage_settings(&fx, 1).await;
    settings.metering.zero_dimensions = vec!["storage_gb".to_owned()];
    let good = serde_json::json!({"customerAWSAccountId": account(0), "licenseArn": license(0)});
    let id = support::unique("zero");
    // Subscription 0 used both dimensions in the last hour; subscription 1 used nothing.
    let bodies = [
        event(&format!("{id}-a"), good.clone(), "api_calls", 0),
        event(&format!("{id}-b"), good, "storage_gb", 0),
    ];
    fx.send_all_to(&queue, &bodies).await;
    let running = run(fx.worker_with(settings));
    eventually_within("three records metered", LIMIT, || async {
        fx.emulator.metered_records().len() >= 3
    })
    .await;
    let hour = (now_secs() - 3600) / 3600 * 3600;
    let got: BTreeMap<(String, String, i64), i64> = fx
        .emulator
        .metered_records()
        .iter()
        .map(|r| {
            (
                (
                    r.license_arn.clone().expect("by license"),
                    r.dimension.clone(),
                    r.hour,
                ),
                r.quantity,
            )
        })
        .collect();
    let want = BTreeMap::from([
        ((license(0), "api_calls".to_owned(), hour), 7),
        ((license(0), "storage_gb".to_owned(), hour), 7),
        ((license(1), "storage_gb".to_owned(), hour), 0),
    ]);
    assert_eq!(got, want);
    let events = metered_events(&fx, 3).await;
    assert!(
        events.iter().all(|e| e.json()["status"] == "Success"),
        "{events:?}"
    );
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The operator commands: the real binary beside a running worker (on the same embedded store)

/// Runs the binary with only `env` (and PATH), `stdin` written to it when given.
async fn run_binary(
    args: &[&str],
    env: &[(String, String)],
    stdin: Option<&str>,
) -> (Option<i32>, String, String) {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(std::env::temp_dir())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mp-resolver starts");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .expect("stdin written");
    }
    let output = child.wait_with_output().await.expect("mp-resolver ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("one JSON document ({e}): {stdout}"))
}

/// `usage send` puts a script's events on the queue (all or nothing), `usage show` says where each
/// hour stands, `dlq list|redrive --usage` handle the usage dead-letters, and a redriven event whose
/// hour failed is counted again (carried to the next open hour) and metered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_send_show_and_dlq_usage_from_the_command_line() {
    let fx = Fixture::new(Topic::Standard).await;
    subscribe_all(&fx);
    let (settings, queue, dlq) = usage_settings(&fx, 1).await;
    let mut env = fx.binary_env(&[]);
    env.extend(usage_env(&queue, &dlq, 1));
    let id = support::unique("cli");
    // A legacy customer (CustomerIdentifier) the emulator does not know yet.
    let late_customer = format!("{id}-late-customer");
    let good = event(
        &format!("{id}-good"),
        serde_json::json!({"customerAWSAccountId": account(0), "licenseArn": license(0)}),
        "api_calls",
        0,
    );
    // Two hours ago, for that customer.
    let unknown = event(
        &format!("{id}-late"),
        serde_json::json!({"customerIdentifier": late_customer, "productCode": PRODUCT}),
        "api_calls",
        3600,
    );

    // Without the usage queue: exit 78 naming it. A malformed line: nothing sent, exit 65.
    let without: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "MPR_USAGE_QUEUE_URL")
        .cloned()
        .collect();
    let (code, _, stderr) = run_binary(&["usage", "send", &good], &without, None).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("MPR_USAGE_QUEUE_URL"), "{stderr}");
    let malformed = format!("{good}\n{{\"usageId\": \"x\", \"quantity\": \"lots\"}}\n");
    let (code, _, stderr) = run_binary(&["usage", "send"], &env, Some(&malformed)).await;
    assert_eq!(code, Some(65), "{stderr}");
    assert!(
        stderr.contains("event #2:") && stderr.contains("nothing was sent"),
        "{stderr}"
    );
    assert_eq!(fx.depth(&queue).await, 0, "nothing was sent");

    let input = format!("{good}\n\n{unknown}\n");
    let (code, stdout, stderr) = run_binary(&["usage", "send", "--json"], &env, Some(&input)).await;
    assert_eq!(code, Some(0), "{stderr}");
    let doc = json_of(&stdout);
    assert_eq!(doc["sent"].as_array().map(Vec::len), Some(2), "{doc}");
    assert_eq!(fx.depth(&queue).await, 2);

    let running = run(fx.worker_with(settings));
    let answered = metered_events(&fx, 2).await;
    let statuses: std::collections::BTreeSet<&str> =
        answered.iter().map(|e| e.attr("status")).collect();
    assert_eq!(
        statuses,
        ["CustomerNotSubscribed", "Success"].into_iter().collect()
    );
    let record = fx
        .emulator
        .metered_records()
        .into_iter()
        .find(|r| r.license_arn.as_deref() == Some(license(0).as_str()))
        .expect("the good usage metered");

    let (code, stdout, stderr) =
        run_binary(&["usage", "show", &license(0), "--json"], &env, None).await;
    assert_eq!(code, Some(0), "{stderr}");
    let doc = json_of(&stdout);
    let hours = doc["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 1, "{doc}");
    assert_eq!(hours[0]["state"], "metered");
    assert_eq!(hours[0]["quantity"], 7);
    assert_eq!(
        hours[0]["meteringRecordId"],
        record.metering_record_id.as_str()
    );
    let (code, stdout, _) = run_binary(&["usage", "show", &late_customer], &env, None).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("failed") && stdout.contains("customer_not_subscribed"),
        "{stdout}"
    );

    eventually_within(
        "the unknown customer's usage dead-lettered",
        LIMIT,
        || async { fx.depth(&dlq).await == 1 },
    )
    .await;
    let (code, stdout, stderr) = run_binary(&["dlq", "list", "--usage"], &env, None).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&dlq) && stdout.contains("customer_not_subscribed"),
        "{stdout}"
    );

    // The customer subscribes after all: the redriven event is counted again, into the next hour.
    fx.emulator
        .subscribe(Subscriber {
            product_code: PRODUCT.into(),
            customer_aws_account_id: None,
            customer_identifier: Some(late_customer.clone()),
            license_arn: None,
        })
        .expect("a valid subscriber");
    let (code, stdout, stderr) =
        run_binary(&["dlq", "redrive", "--usage", "--json"], &env, None).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json_of(&stdout)["movedCount"], 1, "{stdout}");
    let carried = metered_events(&fx, 1).await;
    let carried = carried[0].json();
    assert_eq!(carried["status"], "Success", "{carried}");
    assert_eq!(carried["quantity"], 7, "{carried}");
    let (code, stdout, stderr) =
        run_binary(&["usage", "show", &late_customer, "--json"], &env, None).await;
    assert_eq!(code, Some(0), "{stderr}");
    let doc = json_of(&stdout);
    let hours = doc["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 2, "{doc}");
    assert_eq!(
        (hours[0]["state"].as_str(), hours[1]["state"].as_str()),
        (Some("failed"), Some("metered")),
        "{doc}"
    );
    assert_eq!(hours[1]["carriedFrom"][0], hours[0]["hour"], "{doc}");
    let records = fx.emulator.metered_records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(fx.depth(&dlq).await, 0);

    let (code, stdout, _) = run_binary(&["usage", "show", "999999999999"], &env, None).await;
    assert_eq!(code, Some(1), "nothing matches: {stdout}");
    running.stop().await;
}

/// `check` with the usage lane on: its queue, its DLQ and the redrive between them, and
/// BatchMeterUsage through the worker's client (a probe that bills nothing).
#[tokio::test]
async fn check_verifies_the_usage_queues_and_batch_meter_usage() {
    use mp_resolver::ops::check::{run_checks, Check, Outcome};
    let fx = Fixture::new(Topic::Standard).await;
    let (queue, dlq) = fx.queue_with_dlq(10).await;
    let mut settings = fx.settings.clone();
    settings.usage_queue_url = queue;
    settings.usage_dlq_url = dlq;
    settings.product_codes = vec![PRODUCT.to_owned()];
    let usage_checks = [
        Check::UsageQueue,
        Check::UsageDlq,
        Check::UsageRedrivePolicy,
        Check::BatchMeterUsage,
    ];
    let report = run_checks(&fx.clients(&settings), &settings).await;
    assert!(report.ok, "{report:#?}");
    for c in usage_checks {
        assert_eq!(report.outcome(c), Some(Outcome::Pass), "{c:?}: {report:#?}");
    }
    assert!(
        fx.emulator.metered_records().is_empty(),
        "the probe meters nothing"
    );

    // A usage queue that does not redrive to its DLQ, and BatchMeterUsage disabled.
    let (unredriven, _, _) = usage_settings(&fx, 1).await;
    fx.emulator.configure(|s| s.disabled = true);
    let report = run_checks(&fx.clients(&unredriven), &unredriven).await;
    assert!(!report.ok);
    for c in [Check::UsageRedrivePolicy, Check::BatchMeterUsage] {
        let result = report.get(c).expect("check present");
        assert_eq!(result.outcome, Outcome::Fail, "{c:?}: {result:?}");
        assert!(
            result.fix.as_deref().is_some_and(|f| !f.is_empty()),
            "{result:?}"
        );
    }
    assert_eq!(report.outcome(Check::UsageQueue), Some(Outcome::Pass));
}
