//! The lifecycle queue end to end against LocalStack (SQS, SNS, EventBridge) and the emulator's
//! GetEntitlements: Marketplace events put on the default bus reach the worker through an
//! EventBridge rule and come out on the topic with their `eventType`, `access` and entitlements;
//! legacy SNS notifications, raw and enveloped, do too; an unknown body is dead-lettered
//! byte-identical as `unrecognized_notification`; throttled GetEntitlements calls are retried and
//! never dead-letter a notification.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use mp_resolver::contract::dlq_attr;
use mp_resolver::emulator::{CustomerEntitlements, TestEntitlement};
use mp_resolver::worker::Worker;
use serde_json::{json, Value};
use support::{eventually, Fixture, Received, Topic};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CREATED: &str = include_str!("fixtures/lifecycle/agreement-created-manufacturer.json");
const LICENSE_UPDATED: &str = include_str!("fixtures/lifecycle/license-updated-manufacturer.json");
const SUBSCRIBE_SUCCESS: &str = include_str!("fixtures/lifecycle/sns-subscribe-success.json");
const ENTITLEMENT_ENVELOPE: &str =
    include_str!("fixtures/lifecycle/sns-entitlement-updated-envelope.json");

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
    let mut settings = fx.settings.clone();
    settings.lifecycle_queue_url = queue_url.clone();
    settings.lifecycle_dlq_url = dlq_url.clone();
    change(&mut settings);
    let worker = fx.worker_with(settings);
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
