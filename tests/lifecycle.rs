//! The lifecycle queue end to end against LocalStack (SQS, SNS, EventBridge) and the emulator's
//! GetEntitlements: Marketplace events put on the default bus reach the worker through an
//! EventBridge rule and come out on the topic with their `eventType`, `access` and entitlements;
//! legacy SNS notifications, raw and enveloped, do too; an unknown body is dead-lettered
//! byte-identical as `unrecognized_notification`; throttled GetEntitlements calls are retried and
//! never dead-letter a notification.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use mp_resolver::aws::Clients;
use mp_resolver::config::Settings;
use mp_resolver::contract::dlq_attr;
use mp_resolver::emulator::{CustomerEntitlements, TestEntitlement, TestToken};
use mp_resolver::store::registry::{Identity, Registry, Subscription};
use mp_resolver::worker::Worker;
use serde_json::{json, Value};
use support::faults::FaultProxy;
use support::store::Backend;
use support::{eventually, eventually_within, Fixture, Received, Topic};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CREATED: &str = include_str!("fixtures/lifecycle/agreement-created-manufacturer.json");
const LICENSE_UPDATED: &str = include_str!("fixtures/lifecycle/license-updated-manufacturer.json");
const SUBSCRIBE_SUCCESS: &str = include_str!("fixtures/lifecycle/sns-subscribe-success.json");
const ENTITLEMENT_ENVELOPE: &str =
    include_str!("fixtures/lifecycle/sns-entitlement-updated-envelope.json");
const ENDED: &str = include_str!("fixtures/lifecycle/agreement-ended-manufacturer.json");
const DEPROVISIONED: &str =
    include_str!("fixtures/lifecycle/license-deprovisioned-manufacturer.json");

/// Runs an async test function once per store backend: `name::embedded`, `name::dynamodb`.
macro_rules! per_store {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            use super::*;
            #[tokio::test]
            async fn embedded() {
                super::$name(Backend::Embedded).await
            }
            #[tokio::test]
            async fn dynamodb() {
                super::$name(Backend::Dynamodb).await
            }
        })*
    };
}

/// One awsJson 1.1 call to LocalStack's EventBridge (the crate has no EventBridge client;
/// LocalStack routes on the target header and the credential scope and does not check the
/// signature). The response body as JSON.
async fn eventbridge(endpoint: &str, operation: &str, body: Value) -> Value {
    let response = support::localstack_request(
        endpoint,
        "events",
        "application/x-amz-json-1.1",
        &format!("X-Amz-Target: AWSEvents.{operation}\r\n"),
        &body.to_string(),
    )
    .await;
    let json = match (response.find('{'), response.rfind('}')) {
        (Some(start), Some(end)) => &response[start..=end],
        _ => "{}",
    };
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{operation} answered {response}: {e}"))
}

/// A lifecycle queue and its dead-letter queue beside the fixture's, and a worker running on
/// both queues.
struct Running {
    fx: Fixture,
    queue_url: String,
    dlq_url: String,
    worker: Arc<Worker>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(fx: Fixture, change: impl FnOnce(&mut mp_resolver::config::Settings)) -> Running {
    let dlq_url = fx.extra_queue(false, HashMap::new()).await;
    let queue_url = fx.extra_queue(false, HashMap::new()).await;
    start_on(fx, queue_url, dlq_url, change)
}

/// A worker on `queue_url` (and its dead-letter queue `dlq_url`) as the lifecycle queue.
fn start_on(
    fx: Fixture,
    queue_url: String,
    dlq_url: String,
    change: impl FnOnce(&mut mp_resolver::config::Settings),
) -> Running {
    let store = fx.store_handle().clone();
    start_on_store(fx, queue_url, dlq_url, store, change)
}

/// [`start_on`] with the worker on `store` instead of the fixture's.
fn start_on_store(
    fx: Fixture,
    queue_url: String,
    dlq_url: String,
    store: mp_resolver::store::Store,
    change: impl FnOnce(&mut mp_resolver::config::Settings),
) -> Running {
    let clients = |fx: &Fixture, settings: &Settings| fx.clients(settings);
    start_on_store_with_clients(fx, queue_url, dlq_url, store, clients, change)
}

/// [`start`] with the worker's AWS clients made by `clients` (e.g. one sent through a fault
/// proxy) instead of the fixture's.
async fn start_with_clients(
    fx: Fixture,
    clients: impl FnOnce(&Fixture, &Settings) -> Clients,
    change: impl FnOnce(&mut Settings),
) -> Running {
    let dlq_url = fx.extra_queue(false, HashMap::new()).await;
    let queue_url = fx.extra_queue(false, HashMap::new()).await;
    let store = fx.store_handle().clone();
    start_on_store_with_clients(fx, queue_url, dlq_url, store, clients, change)
}

fn start_on_store_with_clients(
    fx: Fixture,
    queue_url: String,
    dlq_url: String,
    store: mp_resolver::store::Store,
    clients: impl FnOnce(&Fixture, &Settings) -> Clients,
    change: impl FnOnce(&mut Settings),
) -> Running {
    let mut settings = fx.settings.clone();
    settings.lifecycle_queue_url = queue_url.clone();
    settings.lifecycle_dlq_url = dlq_url.clone();
    change(&mut settings);
    let worker = Worker::new(clients(&fx, &settings), settings, store);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.clone().run(async move {
        let _ = stopped.await;
    }));
    Running {
        fx,
        queue_url,
        dlq_url,
        worker,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) -> Fixture {
        let _ = self.stop.send(());
        self.task.await.expect("the worker ends cleanly");
        self.fx
    }

    async fn send(&self, body: &str) {
        self.fx
            .sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send to the lifecycle queue");
    }
}

fn unique_account() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{:012}",
        (nanos ^ u128::from(std::process::id())) % 1_000_000_000_000
    )
}

/// The events on the topic, by `eventType`.
fn by_type(events: Vec<Received>) -> HashMap<String, Received> {
    events
        .into_iter()
        .map(|e| (e.attr("eventType").to_owned(), e))
        .collect()
}

#[tokio::test]
async fn eventbridge_events_reach_the_topic_through_the_rule() {
    let lc = start(Fixture::new(Topic::Standard).await, |_| {}).await;
    let endpoint = lc.fx.localstack.endpoint.clone();
    // The default bus is shared by every test: the rule only takes this test's customer.
    let account = unique_account();
    let rule = format!("mpr-lifecycle-{account}");
    let pattern = json!({
        "source": ["aws.agreement-marketplace"],
        "detail": {"acceptor": {"accountId": [account]}}
    });
    eventbridge(
        &endpoint,
        "PutRule",
        json!({"Name": rule, "EventPattern": pattern.to_string(), "State": "ENABLED"}),
    )
    .await;
    let queue_arn = lc.fx.arn_of(&lc.queue_url).await;
    let targets = eventbridge(
        &endpoint,
        "PutTargets",
        json!({"Rule": rule, "Targets": [{"Id": "lifecycle", "Arn": queue_arn}]}),
    )
    .await;
    assert_eq!(targets["FailedEntryCount"], 0, "{targets}");

    let product = format!("prod{account}");
    let license = format!("arn:aws:license-manager::{account}:license:l-{account}abcdef");
    lc.fx
        .emulator
        .set_entitlements(CustomerEntitlements {
            product_code: product.clone(),
            customer_aws_account_id: Some(account.clone()),
            customer_identifier: None,
            license_arn: Some(license.clone()),
            entitlements: vec![TestEntitlement::integer("Users", 10)],
        })
        .expect("valid entitlements");

    let mut created: Value = serde_json::from_str(CREATED).unwrap();
    created["detail"]["acceptor"]["accountId"] = json!(account);
    let mut updated: Value = serde_json::from_str(LICENSE_UPDATED).unwrap();
    updated["detail"]["acceptor"]["accountId"] = json!(account);
    updated["detail"]["product"]["code"] = json!(product);
    updated["detail"]["license"]["arn"] = json!(license);
    let entries: Vec<Value> = [created, updated]
        .iter()
        .map(|event| {
            json!({
                "Source": event["source"],
                "DetailType": event["detail-type"],
                "Detail": event["detail"].to_string(),
                "EventBusName": "default",
            })
        })
        .collect();
    let put = eventbridge(&endpoint, "PutEvents", json!({ "Entries": entries })).await;
    assert_eq!(put["FailedEntryCount"], 0, "{put}");

    let events = by_type(lc.fx.events(2).await);
    let created = &events["marketplace.agreement.created"];
    assert_eq!(created.attr("access"), "grant");
    assert_eq!(created.attr("customerAWSAccountId"), account);
    let body = created.json();
    assert_eq!(body["source"], "eventbridge");
    assert_eq!(body["agreementId"], "agmt-4mwg1nevbokzw95eca5797ixs");
    assert_eq!(body["entitlements"], Value::Null);

    let updated = &events["marketplace.license.updated"];
    assert_eq!(updated.attr("access"), "grant");
    assert_eq!(updated.attr("productCode"), product);
    let body = updated.json();
    assert_eq!(body["licenseArn"], license);
    assert_eq!(
        body["entitlements"],
        json!([{"dimension": "Users", "value": 10, "expiresAt": null}])
    );

    eventbridge(
        &endpoint,
        "RemoveTargets",
        json!({"Rule": rule, "Ids": ["lifecycle"]}),
    )
    .await;
    eventbridge(&endpoint, "DeleteRule", json!({"Name": rule})).await;
    // Counted once the publish answered, which may be just after the subscriber saw the event.
    eventually("lifecycle events are counted", || async {
        let metrics = lc.worker.telemetry().render();
        metrics.contains(r#"event_type="marketplace.license.updated",access="grant""#)
    })
    .await;
    lc.stop().await;
}

#[tokio::test]
async fn legacy_notifications_raw_and_enveloped_and_unknown_bodies() {
    let lc = start(Fixture::new(Topic::Standard).await, |_| {}).await;
    lc.fx
        .emulator
        .set_entitlements(CustomerEntitlements {
            product_code: "n0123EXAMPLEXXXXXXXXXXXX".into(),
            customer_aws_account_id: None,
            customer_identifier: Some("X01EXAMPLEX".into()),
            license_arn: None,
            // Expired an hour ago: nothing left, so access is revoked.
            entitlements: vec![TestEntitlement::integer("Users", 5)
                .expires_at(chrono::Utc::now().timestamp() - 3_600)],
        })
        .expect("valid entitlements");
    let unknown = "  {\"action\": \"something-new\", \"product-code\": \"p\"}\n";
    lc.send(SUBSCRIBE_SUCCESS).await;
    let events = lc.fx.events(1).await;
    let subscribed = &events[0];
    assert_eq!(
        subscribed.attr("eventType"),
        "marketplace.subscription.succeeded"
    );
    assert_eq!(subscribed.attr("access"), "grant");
    let body = subscribed.json();
    assert_eq!(body["customerIdentifier"], "X01EXAMPLEX");
    assert_eq!(body["source"], "sns");
    assert_eq!(body["entitlements"], Value::Null);
    assert_eq!(
        (body["sequence"].as_u64(), body["stale"].as_bool()),
        (Some(1), Some(false))
    );

    // AWS's sample envelope is from 2012: this update happens after the subscribe above (whose
    // time, a raw notification having none, is the SQS SentTimestamp).
    let mut envelope: Value = serde_json::from_str(ENTITLEMENT_ENVELOPE).unwrap();
    envelope["Timestamp"] =
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    lc.send(&envelope.to_string()).await;
    lc.send(unknown).await;
    let events = lc.fx.events(1).await;
    let updated = &events[0];
    assert_eq!(updated.attr("eventType"), "marketplace.entitlement.updated");
    assert_eq!(updated.attr("access"), "revoke");
    let body = updated.json();
    assert_eq!(body["entitlements"][0]["dimension"], "Users");
    assert_eq!(
        (body["previousAccess"].as_str(), body["sequence"].as_u64()),
        (Some("grant"), Some(2))
    );

    let letters = lc.fx.collect(&lc.dlq_url, 1).await;
    assert_eq!(letters[0].body, unknown, "the body is kept byte for byte");
    assert_eq!(
        letters[0].attr(dlq_attr::REASON),
        "unrecognized_notification"
    );
    let fx = lc.stop().await;
    assert_eq!(fx.depth(&fx.dlq_url).await, 0, "the token DLQ is untouched");
}

#[tokio::test]
async fn throttled_get_entitlements_is_retried_never_dead_lettered() {
    let fx = Fixture::new(Topic::Standard).await;
    // Half a call per second: most of the first calls are throttled.
    fx.emulator.configure(|s| s.entitlement_quota = Some(0.5));
    let lc = start(fx, |s| s.resolve.handback_max_secs = 2).await;
    let customers = ["C01THROTTLE", "C02THROTTLE", "C03THROTTLE"];
    for customer in customers {
        lc.fx
            .emulator
            .set_entitlements(CustomerEntitlements {
                product_code: "prodthrottle".into(),
                customer_aws_account_id: None,
                customer_identifier: Some(customer.into()),
                license_arn: None,
                entitlements: vec![TestEntitlement::boolean("Premium", true)],
            })
            .expect("valid entitlements");
        lc.send(
            &json!({
                "action": "entitlement-updated",
                "customer-identifier": customer,
                "product-code": "prodthrottle",
            })
            .to_string(),
        )
        .await;
    }
    let events = lc.fx.events(customers.len()).await;
    for event in &events {
        assert_eq!(event.attr("access"), "grant");
        assert_eq!(event.json()["entitlements"][0]["value"], true);
    }
    let stats = lc.fx.emulator.stats();
    assert!(
        stats.entitlement_throttled > 0,
        "the quota throttled some calls: {stats:?}"
    );
    eventually("the lifecycle queue is empty", || async {
        lc.fx.depth(&lc.queue_url).await == 0
    })
    .await;
    assert_eq!(
        lc.fx.depth(&lc.dlq_url).await,
        0,
        "throttling never dead-letters"
    );
    lc.stop().await;
}

/// Runs the real binary with only `env` (and PATH).
async fn run_binary(args: &[&str], env: &[(String, String)]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("mp-resolver runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dlq_lifecycle_lists_and_redrives_the_lifecycle_dead_letters() {
    let lc = start(Fixture::new(Topic::Standard).await, |_| {}).await;
    let unknown = "{\"detail-type\": \"Something Else\"}";
    lc.send(unknown).await;
    eventually("the unknown body is dead-lettered", || async {
        lc.fx.depth(&lc.dlq_url).await == 1
    })
    .await;
    let (queue_url, dlq_url) = (lc.queue_url.clone(), lc.dlq_url.clone());
    let fx = lc.stop().await;
    let env = fx.binary_env(&[
        ("MPR_LIFECYCLE_QUEUE_URL", queue_url.as_str()),
        ("MPR_LIFECYCLE_DLQ_URL", dlq_url.as_str()),
    ]);

    let (code, stdout, stderr) = run_binary(&["dlq", "list", "--lifecycle"], &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&dlq_url) && stdout.contains("unrecognized_notification"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        run_binary(&["dlq", "redrive", "--lifecycle", "--json"], &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(doc["movedCount"], 1, "{doc}");
    let back = fx.collect(&queue_url, 1).await;
    assert_eq!(
        back[0].body, unknown,
        "back on the lifecycle queue, unchanged"
    );
    assert_eq!(fx.depth(&fx.queue_url).await, 0, "not on the token queue");

    // Without the lifecycle queue configured: exit 78 naming the key.
    let (code, _, stderr) = run_binary(&["dlq", "list", "--lifecycle"], &fx.binary_env(&[])).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("lifecycle_dlq_url"), "{stderr}");
}

#[tokio::test]
async fn a_disabled_resolve_customer_pauses_tokens_but_not_the_lifecycle_queue() {
    let fx = Fixture::new(Topic::Standard).await;
    fx.emulator.configure(|s| s.disabled = true);
    let lc = start(fx, |_| {}).await;
    lc.fx.send("tok-while-disabled").await;
    eventually("ResolveCustomer is paused", || async {
        lc.worker.is_paused()
    })
    .await;
    lc.send(SUBSCRIBE_SUCCESS).await;
    let events = lc.fx.events(1).await;
    assert_eq!(
        events[0].attr("eventType"),
        "marketplace.subscription.succeeded"
    );
    assert!(lc.worker.is_paused(), "tokens stay paused meanwhile");
    assert_eq!(lc.fx.depth(&lc.fx.dlq_url).await, 0);
    lc.stop().await;
}

#[tokio::test]
async fn health_names_the_lifecycle_queue_when_only_its_receives_fail() {
    use mp_resolver::emulator::TestToken;
    use mp_resolver::observe::metrics::Readiness;
    let lc = start(Fixture::new(Topic::Standard).await, |_| {}).await;
    let health = &lc.worker.telemetry().health;
    eventually("ready on both queues", || async {
        health.readiness() == Readiness::Ready
    })
    .await;
    lc.fx
        .sqs
        .delete_queue()
        .queue_url(&lc.queue_url)
        .send()
        .await
        .expect("delete the lifecycle queue");
    // The token queue keeps working, and must not hide the lifecycle queue's failing receives.
    let token = TestToken::new("123456789012", "prod-abc")
        .encode()
        .expect("valid test token");
    lc.fx.send(&token).await;
    lc.fx.events(1).await;
    eventually("not ready, naming the lifecycle queue", || async {
        health.readiness() == Readiness::QueueUnreachable
            && health.readiness_detail().contains("lifecycle queue")
    })
    .await;
    lc.stop().await;
}

// The customer registry: ordered verdicts, sign-ups on lifecycle events, redrives, quotas.

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An EventBridge agreement event (AWS's sample `fixture`) for `account`'s `agreement`, at `time`,
/// with its own id.
fn agreement_event(
    fixture: &str,
    account: &str,
    agreement: &str,
    id: &str,
    time: DateTime<Utc>,
) -> Value {
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    event["id"] = json!(id);
    event["time"] = json!(rfc3339(time));
    event["detail"]["acceptor"]["accountId"] = json!(account);
    event["detail"]["agreement"]["id"] = json!(agreement);
    event
}

/// A License Updated (or Deprovisioned, from `fixture`) for `license` of `account` and `product`.
fn license_event(
    fixture: &str,
    account: &str,
    product: &str,
    license: &str,
    time: DateTime<Utc>,
) -> Value {
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    event["id"] = json!(format!("{license}-{}", time.timestamp_millis()));
    event["time"] = json!(rfc3339(time));
    event["detail"]["acceptor"]["accountId"] = json!(account);
    event["detail"]["product"]["code"] = json!(product);
    event["detail"]["license"]["arn"] = json!(license);
    event
}

fn license_of(account: &str) -> String {
    format!("arn:aws:license-manager::{account}:license:l-{account}abcdef")
}

/// The registry's subscription for `agreement`.
async fn subscription_of_agreement(fx: &Fixture, agreement: &str) -> Option<Subscription> {
    let identity = Identity {
        agreement_id: Some(agreement.to_owned()),
        ..Identity::default()
    };
    Registry::new(fx.store_handle().clone())
        .current(&identity)
        .await
        .expect("the registry reads")
}

/// Routes this account's Marketplace events on LocalStack's default bus to the lifecycle queue.
async fn route_account(lc: &Running, account: &str) -> String {
    let endpoint = &lc.fx.localstack.endpoint;
    let rule = format!("mpr-lifecycle-{account}");
    let pattern = json!({
        "source": ["aws.agreement-marketplace"],
        "detail": {"acceptor": {"accountId": [account]}}
    });
    eventbridge(
        endpoint,
        "PutRule",
        json!({"Name": rule, "EventPattern": pattern.to_string(), "State": "ENABLED"}),
    )
    .await;
    let queue_arn = lc.fx.arn_of(&lc.queue_url).await;
    let targets = eventbridge(
        endpoint,
        "PutTargets",
        json!({"Rule": rule, "Targets": [{"Id": "lifecycle", "Arn": queue_arn}]}),
    )
    .await;
    assert_eq!(targets["FailedEntryCount"], 0, "{targets}");
    rule
}

async fn unroute(lc: &Running, rule: &str) {
    let endpoint = &lc.fx.localstack.endpoint;
    eventbridge(
        endpoint,
        "RemoveTargets",
        json!({"Rule": rule, "Ids": ["lifecycle"]}),
    )
    .await;
    eventbridge(endpoint, "DeleteRule", json!({"Name": rule})).await;
}

/// Puts `event` on the default bus with its own `time`.
async fn put_event(lc: &Running, event: &Value) {
    let time = DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).unwrap();
    let entry = json!({
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": event["detail"].to_string(),
        "Time": time.timestamp(),
        "EventBusName": "default",
    });
    let put = eventbridge(
        &lc.fx.localstack.endpoint,
        "PutEvents",
        json!({ "Entries": [entry] }),
    )
    .await;
    assert_eq!(put["FailedEntryCount"], 0, "{put}");
}

/// The `access` of each event, in the order the topic delivered them.
fn accesses(events: &[Received]) -> Vec<String> {
    events.iter().map(|e| e.attr("access").to_owned()).collect()
}

per_store!(
    an_older_created_after_a_newer_ended_through_eventbridge_stays_revoked,
    a_created_whose_publish_failed_goes_out_stale_after_the_newer_ended,
    a_resolved_sign_up_rides_on_lifecycle_events_and_customers_show_prints_it,
    a_redriven_unpublished_revoke_reaches_a_subscriber_filtered_on_access,
    an_entitlement_quota_never_dead_letters_license_updates,
);

async fn an_older_created_after_a_newer_ended_through_eventbridge_stays_revoked(backend: Backend) {
    let lc = start(
        Fixture::with_store(Topic::Standard, backend, &[]).await,
        |_| {},
    )
    .await;
    let account = unique_account();
    let agreement = format!("agmt-{account}");
    let rule = route_account(&lc, &account).await;
    // EventBridge times are whole seconds.
    let created_at = DateTime::from_timestamp(Utc::now().timestamp() - 60, 0).expect("a time");
    let (created, ended) = created_then_ended(&account, &agreement, created_at);

    // The cancellation is delivered first, the creation it ended after it.
    put_event(&lc, &ended).await;
    let first = lc.fx.events(1).await;
    put_event(&lc, &created).await;
    let second = lc.fx.events(1).await;
    unroute(&lc, &rule).await;

    assert_eq!(first[0].attr("eventType"), "marketplace.agreement.ended");
    assert_eq!(second[0].attr("eventType"), "marketplace.agreement.created");
    let events = [first, second].concat();
    assert_eq!(
        accesses(&events),
        ["revoke", "revoke"],
        "no grant after the revoke"
    );
    let late = events[1].json();
    assert_eq!(late["stale"], true, "{late}");
    assert_eq!(late["sequence"], 1, "the older event applied nothing");
    assert_eq!(late["reason"], "agreement_created");
    assert_eq!(late["occurredAt"], rfc3339(created_at));
    let s = subscription_of_agreement(&lc.fx, &agreement)
        .await
        .expect("a subscription");
    assert_eq!(s.access.as_str(), "revoke");
    assert_eq!(s.agreement_status.as_deref(), Some("CANCELLED"));
    assert_eq!(
        s.latest.map(|l| l.event_type),
        Some("marketplace.agreement.ended".into())
    );
    lc.stop().await;
}

/// An agreement's Created at `created_at` and its Ended ten seconds later.
fn created_then_ended(account: &str, agreement: &str, created_at: DateTime<Utc>) -> (Value, Value) {
    let created = agreement_event(CREATED, account, agreement, "created", created_at);
    let ended = agreement_event(
        ENDED,
        account,
        agreement,
        "ended",
        created_at + chrono::Duration::seconds(10),
    );
    (created, ended)
}

/// A lifecycle worker on `backend` whose SNS calls go through a fault proxy, holding an event whose
/// publish fails for two minutes and retrying it at least every second; and a new agreement's
/// Created and, ten seconds after it, Ended.
struct HeldPublishes {
    lc: Running,
    sns: FaultProxy,
    agreement: String,
    created: Value,
    ended: Value,
}

impl HeldPublishes {
    async fn start(backend: Backend) -> Self {
        let fx = Fixture::with_store(Topic::Standard, backend, &[]).await;
        // SNS is reached through a proxy that is cut and restored, not a topic that is deleted
        // and created again: a held event retried between a new topic's creation and its
        // subscription would be accepted and reach no subscriber.
        let sns = FaultProxy::start(&fx.localstack.endpoint).await;
        let lc = start_with_clients(
            fx,
            |fx, settings| fx.clients_with_sns(settings, &sns.endpoint),
            |s| {
                s.publish.hold_secs = 120;
                s.publish.hold_max_delay_secs = 1;
            },
        )
        .await;
        let account = unique_account();
        let agreement = format!("agmt-{account}");
        let created_at = Utc::now() - chrono::Duration::seconds(60);
        let (created, ended) = created_then_ended(&account, &agreement, created_at);
        HeldPublishes {
            lc,
            sns,
            agreement,
            created,
            ended,
        }
    }

    /// How many messages are held (their publish failing) right now.
    fn held(&self) -> u64 {
        let metrics = self.lc.worker.telemetry().render();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("mpr_held_messages "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Reads both events off the topic: Ended revokes, and Created's retry, which re-read the
    /// registry after Ended was applied, went out stale with Ended's verdict. Then stops.
    async fn assert_created_went_out_stale_after_ended(self) {
        let events = by_type(self.lc.fx.events(2).await);
        let (created, ended) = (
            &events["marketplace.agreement.created"],
            &events["marketplace.agreement.ended"],
        );
        assert_eq!(ended.attr("access"), "revoke");
        assert_eq!(ended.json()["sequence"], 2);
        assert_eq!(
            created.attr("access"),
            "revoke",
            "a late retry never grants again"
        );
        let late = created.json();
        assert_eq!(
            (late["stale"].as_bool(), late["sequence"].as_u64()),
            (Some(true), Some(2))
        );
        self.lc.stop().await;
    }
}

async fn a_created_whose_publish_failed_goes_out_stale_after_the_newer_ended(backend: Backend) {
    let h = HeldPublishes::start(backend).await;
    // SNS is out of reach: Created is applied (grant) but its publish fails, and it is held.
    h.sns.cut();
    h.lc.send(&h.created.to_string()).await;
    eventually("Created is applied and held", || async { h.held() == 1 }).await;
    // Ended is applied on top of it (revoke) and held too.
    h.lc.send(&h.ended.to_string()).await;
    eventually("Ended is applied and held", || async { h.held() == 2 }).await;
    let s = subscription_of_agreement(&h.lc.fx, &h.agreement)
        .await
        .expect("a subscription");
    assert_eq!((s.access.as_str(), s.sequence), ("revoke", 2));

    h.sns.restore();
    // Created's retry re-read the registry: the newer Ended had overtaken it.
    h.assert_created_went_out_stale_after_ended().await;
}

/// The race RELIABILITY.md's "Known limits" described: a held Created's retry reads the registry
/// (grant, sequence 1) and its publish hangs; Ended is applied meanwhile, and SNS comes back before
/// the retry gives up. The SDK would send the same request again (the grant it read); a held
/// retry is one attempt, so the hold's next turn re-reads the registry and Created goes out stale.
#[tokio::test]
async fn a_held_retry_in_flight_when_a_newer_event_is_applied_goes_out_stale() {
    let h = HeldPublishes::start(Backend::Embedded).await;
    // SNS refuses connections: Created is applied (grant) and held.
    h.sns.cut();
    h.lc.send(&h.created.to_string()).await;
    eventually("Created is applied and held", || async { h.held() >= 1 }).await;
    // SNS now answers nothing: the next retry of Created hangs (up to the SDK's 10 s attempt).
    h.sns.black_hole();
    eventually("a retry of Created hangs in SNS", || async {
        h.sns.swallowed_containing("agreement.created") >= 1
    })
    .await;
    // Ended is applied on top of it while that retry is in flight.
    h.lc.send(&h.ended.to_string()).await;
    eventually("Ended is applied", || async {
        subscription_of_agreement(&h.lc.fx, &h.agreement)
            .await
            .is_some_and(|s| s.sequence == 2)
    })
    .await;
    h.sns.restore();
    h.assert_created_went_out_stale_after_ended().await;
}

async fn a_resolved_sign_up_rides_on_lifecycle_events_and_customers_show_prints_it(
    backend: Backend,
) {
    let lc = start(
        Fixture::with_store(Topic::Standard, backend, &[]).await,
        |_| {},
    )
    .await;
    let account = unique_account();
    let product = format!("prod{account}");
    let license = license_of(&account);
    let agreement = format!("agmt-{account}");
    let token = TestToken::new(account.clone(), product.clone())
        .license(license.clone())
        .agreement(agreement.clone())
        .encode()
        .expect("a valid test token");
    let signup = format!("signup-{account}");
    lc.fx
        .send(
            &json!({"registrationToken": token, "signupId": signup, "context": {"plan": "gold"}})
                .to_string(),
        )
        .await;
    let resolved = lc.fx.events(1).await;
    assert_eq!(
        resolved[0].attr("eventType"),
        "marketplace.customer.resolved"
    );

    lc.fx
        .emulator
        .set_entitlements(CustomerEntitlements {
            product_code: product.clone(),
            customer_aws_account_id: Some(account.clone()),
            customer_identifier: None,
            license_arn: Some(license.clone()),
            entitlements: vec![TestEntitlement::integer("Users", 10)],
        })
        .expect("valid entitlements");
    let updated = license_event(LICENSE_UPDATED, &account, &product, &license, Utc::now());
    lc.send(&updated.to_string()).await;
    let events = lc.fx.events(1).await;
    let body = events[0].json();
    assert_eq!(body["eventType"], "marketplace.license.updated");
    assert_eq!(body["signupId"], signup.as_str(), "{body}");
    assert_eq!(body["context"], json!({"plan": "gold"}));
    assert_eq!(
        (body["access"].as_str(), body["sequence"].as_u64()),
        (Some("grant"), Some(1))
    );

    // The operator command, the real binary, beside the running worker (for the embedded store,
    // on the same file).
    let env = lc.fx.binary_env(&[]);
    let (code, stdout, stderr) = run_binary(&["customers", "show", &license], &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        signup.as_str(),
        "Users=10",
        "grant",
        "marketplace.license.updated",
        "plan=gold",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }
    let (code, stdout, stderr) = run_binary(&["customers", "show", &account, "--json"], &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("one JSON document");
    let found = &doc["subscriptions"][0];
    assert_eq!(found["signupId"], signup.as_str());
    assert_eq!(found["licenseArn"], license.as_str());
    assert_eq!(found["agreementId"], agreement.as_str());
    assert_eq!(found["entitlements"][0]["dimension"], "Users");
    assert_eq!(found["latestEventType"], "marketplace.license.updated");
    let (code, stdout, _) =
        run_binary(&["customers", "list", "--access", "revoke", "--json"], &env).await;
    assert_eq!(code, Some(0));
    assert!(!stdout.contains(&license), "{stdout}");
    let (code, _, _) = run_binary(&["customers", "show", "agmt-nobody"], &env).await;
    assert_eq!(code, Some(1), "nothing matches: exit 1");
    lc.stop().await;
}

async fn a_redriven_unpublished_revoke_reaches_a_subscriber_filtered_on_access(backend: Backend) {
    let fx = Fixture::with_store(Topic::Standard, backend, &[]).await;
    let lc = start(fx, |s| {
        s.publish.hold_secs = 1;
        s.publish.hold_max_delay_secs = 1;
    })
    .await;
    let account = unique_account();
    let license = license_of(&account);
    lc.fx.delete_topic().await;
    let deprovisioned = license_event(
        DEPROVISIONED,
        &account,
        &format!("prod{account}"),
        &license,
        Utc::now(),
    );
    lc.send(&deprovisioned.to_string()).await;
    eventually("the revoke is dead-lettered as unpublished", || async {
        lc.fx.depth(&lc.dlq_url).await == 1
    })
    .await;
    let (queue_url, dlq_url) = (lc.queue_url.clone(), lc.dlq_url.clone());
    let fx = lc.stop().await;

    fx.recreate_topic().await;
    let revokes = fx.extra_queue(false, HashMap::new()).await;
    fx.sns
        .subscribe()
        .topic_arn(&fx.topic_arn)
        .protocol("sqs")
        .endpoint(fx.arn_of(&revokes).await)
        .attributes("RawMessageDelivery", "true")
        .attributes("FilterPolicy", json!({"access": ["revoke"]}).to_string())
        .send()
        .await
        .expect("subscribe with a filter");
    let env = fx.binary_env(&[
        ("MPR_LIFECYCLE_QUEUE_URL", queue_url.as_str()),
        ("MPR_LIFECYCLE_DLQ_URL", dlq_url.as_str()),
    ]);
    let (code, stdout, stderr) =
        run_binary(&["dlq", "redrive", "--lifecycle", "--json"], &env).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let got = fx.collect(&revokes, 1).await;
    assert_eq!(got[0].attr("access"), "revoke");
    assert_eq!(
        got[0].attr("eventType"),
        "marketplace.license.deprovisioned"
    );
    assert_eq!(got[0].attr("customerAWSAccountId"), account);
    assert_eq!(got[0].json()["licenseArn"], license.as_str());
}

async fn an_entitlement_quota_never_dead_letters_license_updates(backend: Backend) {
    const UPDATES: usize = 64;
    let fx = Fixture::with_store(
        Topic::Standard,
        backend,
        &[
            ("MPR_RESOLVE__BUDGET_SECS", "20"),
            ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "40"),
        ],
    )
    .await;
    fx.emulator.configure(|s| s.entitlement_quota = Some(1.0));
    let (queue_url, dlq_url) = fx.queue_with_dlq(2).await;
    let lc = start_on(fx, queue_url, dlq_url, |_| {});
    let mut bodies = Vec::new();
    for i in 0..UPDATES {
        let account = format!("{:012}", 700_000_000_000u64 + i as u64);
        let product = "prodquota".to_owned();
        let license = license_of(&account);
        lc.fx
            .emulator
            .set_entitlements(CustomerEntitlements {
                product_code: product.clone(),
                customer_aws_account_id: Some(account.clone()),
                customer_identifier: None,
                license_arn: Some(license.clone()),
                entitlements: vec![TestEntitlement::integer("Users", i as i32 + 1)],
            })
            .expect("valid entitlements");
        bodies.push(
            license_event(LICENSE_UPDATED, &account, &product, &license, Utc::now()).to_string(),
        );
    }
    lc.fx.send_all_to(&lc.queue_url, &bodies).await;
    eventually_within(
        "every update is published",
        std::time::Duration::from_secs(240),
        || async { lc.fx.visible_and_in_flight(&lc.queue_url).await == (0, 0) },
    )
    .await;
    assert_eq!(
        lc.fx.depth(&lc.dlq_url).await,
        0,
        "nothing reached the lifecycle DLQ"
    );
    let events = lc.fx.events(UPDATES).await;
    assert!(events.iter().all(|e| e.attr("access") == "grant"));
    let stats = lc.fx.emulator.stats();
    assert!(
        stats.entitlement_throttled > 0,
        "the quota was hit: {stats:?}"
    );
    lc.stop().await;
}

/// The store (DynamoDB, behind a fault proxy) goes away while a notification is worked on: it is
/// handed back, never dead-lettered, and published once the store answers again.
#[tokio::test]
async fn a_store_outage_hands_lifecycle_events_back_and_dead_letters_none() {
    use support::faults::FaultProxy;
    let fx = Fixture::with_store(Topic::Standard, Backend::Dynamodb, &[]).await;
    let proxy = FaultProxy::start(&fx.store.endpoint).await;
    let mut via_proxy = fx.store.clone();
    via_proxy.endpoint = proxy.endpoint.clone();
    let store = via_proxy.open().await;
    let (queue_url, dlq_url) = fx.queue_with_dlq(10).await;
    let lc = start_on_store(fx, queue_url, dlq_url, store, |_| {});
    let account = unique_account();
    let agreement = format!("agmt-{account}");
    proxy.cut();
    let created = agreement_event(CREATED, &account, &agreement, "created", Utc::now());
    lc.send(&created.to_string()).await;
    eventually("the notification is handed back", || async {
        lc.worker
            .telemetry()
            .render()
            .contains(r#"outcome="handed_back""#)
    })
    .await;
    assert_eq!(lc.fx.depth(&lc.dlq_url).await, 0, "never dead-lettered");
    proxy.restore();
    let events = lc.fx.events(1).await;
    assert_eq!(events[0].attr("access"), "grant");
    assert_eq!(events[0].json()["sequence"], 1);
    eventually("the lifecycle queue is empty", || async {
        lc.fx.visible_and_in_flight(&lc.queue_url).await == (0, 0)
    })
    .await;
    assert_eq!(lc.fx.depth(&lc.dlq_url).await, 0);
    lc.stop().await;
}
