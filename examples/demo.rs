//! The local demo's AWS side (scripts/demo.sh runs it): `setup` creates the queues and the topic
//! that config/local.toml names; `run` enqueues tokens of every kind and prints the events and
//! dead-letters as they arrive; `signup-token` prints a buyer's token for the `intake` step,
//! `await-signup ID` waits for the event that carries that signupId, and `await-lifecycle N` waits
//! for N subscription lifecycle events and prints them; `usage` sends a customer's usage events for
//! the last hour (each twice, as an application's retries would) and waits for the hour's
//! `marketplace.usage.metered` events. Endpoints and credentials come from the
//! SDK's standard chain.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_config::BehaviorVersion;
use aws_sdk_sqs::types::QueueAttributeName;
use mp_resolver::config::{self, Settings, Sources};
use mp_resolver::emulator::TestToken;
use serde_json::{json, Value};

const ACCOUNT: &str = "111122223333";
const PRODUCT: &str = "prod-demo";

#[tokio::main]
async fn main() -> Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    let settings = config::load(&Sources {
        config_file: Some("config/local.toml".into()),
        ..Sources::default()
    })?
    .settings;
    let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let sqs = aws_sdk_sqs::Client::new(&shared);
    let sns = aws_sdk_sns::Client::new(&shared);
    match command.as_str() {
        "setup" => setup(&sqs, &sns, &settings).await,
        "run" => run(&sqs, &settings).await,
        "signup-token" => {
            println!("{}", TestToken::new("555566667777", PRODUCT).encode()?);
            Ok(())
        }
        "await-signup" => {
            let id = std::env::args().nth(2).unwrap_or_default();
            await_signup(&sqs, &settings, &id).await
        }
        "await-lifecycle" => {
            let n = std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            await_lifecycle(&sqs, &settings, n).await
        }
        "usage" => usage(&sqs, &settings).await,
        _ => bail!(
            "usage: demo setup|run|signup-token|await-signup SIGNUP_ID|await-lifecycle N|usage"
        ),
    }
}

fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

fn subscriber_name(settings: &Settings) -> String {
    format!("{}-subscriber", queue_name(&settings.queue_url))
}

async fn setup(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    settings: &Settings,
) -> Result<()> {
    let dlq = sqs
        .create_queue()
        .queue_name(queue_name(&settings.dlq_url))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .context("create the dead-letter queue")?;
    let dlq_arn = arn_of(sqs, dlq.queue_url().unwrap_or_default()).await?;
    sqs.create_queue()
        .queue_name(queue_name(&settings.queue_url))
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}).to_string(),
        )
        .send()
        .await
        .context("create the token queue")?;
    let lifecycle_dlq = sqs
        .create_queue()
        .queue_name(queue_name(&settings.lifecycle_dlq_url))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .context("create the lifecycle dead-letter queue")?;
    let lifecycle_dlq_arn = arn_of(sqs, lifecycle_dlq.queue_url().unwrap_or_default()).await?;
    sqs.create_queue()
        .queue_name(queue_name(&settings.lifecycle_queue_url))
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": lifecycle_dlq_arn, "maxReceiveCount": "5"}).to_string(),
        )
        .send()
        .await
        .context("create the lifecycle queue")?;
    let usage_dlq = sqs
        .create_queue()
        .queue_name(queue_name(&settings.usage_dlq_url))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .context("create the usage dead-letter queue")?;
    let usage_dlq_arn = arn_of(sqs, usage_dlq.queue_url().unwrap_or_default()).await?;
    sqs.create_queue()
        .queue_name(queue_name(&settings.usage_queue_url))
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": usage_dlq_arn, "maxReceiveCount": "5"}).to_string(),
        )
        .send()
        .await
        .context("create the usage queue")?;
    let topic_name = settings.topic_arn.rsplit(':').next().unwrap_or_default();
    let topic = sns
        .create_topic()
        .name(topic_name)
        .send()
        .await
        .context("create the topic")?;
    let subscriber = sqs
        .create_queue()
        .queue_name(subscriber_name(settings))
        .send()
        .await
        .context("create the subscriber queue")?;
    let subscriber_url = subscriber.queue_url().unwrap_or_default();
    sns.subscribe()
        .topic_arn(topic.topic_arn().unwrap_or_default())
        .protocol("sqs")
        .endpoint(arn_of(sqs, subscriber_url).await?)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .context("subscribe the subscriber queue")?;
    for url in [
        &settings.queue_url,
        &settings.dlq_url,
        &settings.lifecycle_queue_url,
        &settings.lifecycle_dlq_url,
        &settings.usage_queue_url,
        &settings.usage_dlq_url,
        &subscriber_url.to_owned(),
    ] {
        sqs.purge_queue().queue_url(url).send().await.ok();
    }
    println!(
        "created: token queue {} (redrive to {} after 5 receives), lifecycle queue {} (redrive to {}), usage queue {} (redrive to {}), topic {}, subscriber queue {}",
        queue_name(&settings.queue_url),
        queue_name(&settings.dlq_url),
        queue_name(&settings.lifecycle_queue_url),
        queue_name(&settings.lifecycle_dlq_url),
        queue_name(&settings.usage_queue_url),
        queue_name(&settings.usage_dlq_url),
        topic_name,
        subscriber_name(settings)
    );
    Ok(())
}

async fn arn_of(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .unwrap_or_default()
        .remove(&QueueAttributeName::QueueArn)
        .context("queue without an ARN")
}

async fn run(sqs: &aws_sdk_sqs::Client, settings: &Settings) -> Result<()> {
    let in_an_hour = chrono::Utc::now().timestamp() + 3600;
    let an_hour_ago = chrono::Utc::now().timestamp() - 3600;
    // Every fixture here is a value AWS could send; `encode` refuses any that is not.
    let token = |t: TestToken| t.encode().expect("valid demo token");
    let tokens: Vec<(&str, String)> = vec![
        ("good, legacy integration with a CustomerIdentifier",
         json!({"registrationToken": token(TestToken::new(ACCOUNT, PRODUCT).customer("cust-legacy-1").expires_at(in_an_hour)),
                "signupId": "signup-001", "context": {"plan": "team"}, "submittedAt": chrono::Utc::now().to_rfc3339()}).to_string()),
        ("good, new integration (no CustomerIdentifier; license and agreement)",
         json!({"x-amzn-marketplace-token": token(TestToken::new("444455556666", PRODUCT)
                .license("arn:aws:license-manager::444455556666:license:l-demo").agreement("agmt-demo"))}).to_string()),
        ("good, sent as a plain body", token(TestToken::new("777788889999", PRODUCT))),
        ("throttled 3 times, then good", json!({"registrationToken": token(TestToken::new("123123123123", PRODUCT).throttle(3)), "signupId": "signup-throttled"}).to_string()),
        ("internal error twice, then good", json!({"registrationToken": token(TestToken::new("321321321321", PRODUCT).fail(2)), "signupId": "signup-flaky"}).to_string()),
        ("invalid", json!({"registrationToken": "not-a-marketplace-token", "signupId": "signup-typo"}).to_string()),
        ("expired", json!({"registrationToken": token(TestToken::new(ACCOUNT, PRODUCT).expires_at(an_hour_ago)), "signupId": "signup-late"}).to_string()),
        ("malformed: wrong field type", json!({"registrationToken": 12345}).to_string()),
        ("malformed: not JSON and not a token", "hello\tworld".to_owned()),
    ];
    let expected_events = 5;
    let expected_letters = 4;

    println!(
        "\nEnqueueing {} messages on {}:",
        tokens.len(),
        queue_name(&settings.queue_url)
    );
    for (what, body) in &tokens {
        sqs.send_message()
            .queue_url(&settings.queue_url)
            .message_body(body)
            .send()
            .await
            .with_context(|| format!("enqueue {what}"))?;
        println!("  - {what}");
    }

    let subscriber_url = subscriber_url(sqs, settings).await?;
    println!("\nWaiting for {expected_events} events on the topic and {expected_letters} dead-letters...\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut events, mut letters) = (0, 0);
    while (events < expected_events || letters < expected_letters) && Instant::now() < deadline {
        for m in drain(sqs, &subscriber_url).await? {
            events += 1;
            print_event(&serde_json::from_str(&m.0).unwrap_or(Value::Null));
        }
        for m in drain(sqs, &settings.dlq_url).await? {
            letters += 1;
            let attr = |k: &str| m.1.get(k).cloned().unwrap_or_else(|| "-".into());
            println!(
                "DEAD-LETTER reason={} eventId={} detail=\"{}\" body={} bytes",
                attr("mpr.reason"),
                attr("mpr.eventId"),
                attr("mpr.detail"),
                m.0.len()
            );
        }
    }
    println!("\n{events} events published, {letters} dead-letters.");
    if events != expected_events || letters != expected_letters {
        bail!("expected {expected_events} events and {expected_letters} dead-letters");
    }
    Ok(())
}

async fn subscriber_url(sqs: &aws_sdk_sqs::Client, settings: &Settings) -> Result<String> {
    Ok(sqs
        .get_queue_url()
        .queue_name(subscriber_name(settings))
        .send()
        .await?
        .queue_url
        .unwrap_or_default())
}

fn print_event(e: &Value) {
    println!("EVENT       eventId={} account={} product={} customer={} license={} agreement={} signupId={} context={} attempts={}",
        e["eventId"].as_str().unwrap_or("?"), e["customerAWSAccountId"].as_str().unwrap_or("?"),
        e["productCode"].as_str().unwrap_or("?"), e["customerIdentifier"].as_str().unwrap_or("null"),
        e["licenseArn"].as_str().unwrap_or("null"), e["agreementId"].as_str().unwrap_or("null"),
        e["signupId"].as_str().unwrap_or("null"), e["context"], e["attempts"]);
}

/// Waits for the event of the sign-up that went through `intake`.
async fn await_signup(
    sqs: &aws_sdk_sqs::Client,
    settings: &Settings,
    signup_id: &str,
) -> Result<()> {
    let subscriber_url = subscriber_url(sqs, settings).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        for m in drain(sqs, &subscriber_url).await? {
            let event: Value = serde_json::from_str(&m.0).unwrap_or(Value::Null);
            print_event(&event);
            if event["signupId"] == signup_id {
                println!("\nThe event carries the signupId the sign-up page got ({signup_id}).");
                return Ok(());
            }
        }
    }
    bail!("no event with signupId {signup_id} within 60 s")
}

/// Waits for `n` lifecycle events on the topic and prints what a subscriber acts on.
async fn await_lifecycle(sqs: &aws_sdk_sqs::Client, settings: &Settings, n: usize) -> Result<()> {
    let subscriber_url = subscriber_url(sqs, settings).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < n && Instant::now() < deadline {
        for m in drain(sqs, &subscriber_url).await? {
            let e: Value = serde_json::from_str(&m.0).unwrap_or(Value::Null);
            let entitlements = match e["entitlements"].as_array() {
                Some(list) => format!(
                    "[{}]",
                    list.iter()
                        .map(|x| format!(
                            "{}={}",
                            x["dimension"].as_str().unwrap_or("?"),
                            x["value"]
                        ))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => "null".to_owned(),
            };
            println!(
                "LIFECYCLE   {:<36} access={:<6} sequence={} stale={} account={} license={} entitlements={}",
                e["eventType"].as_str().unwrap_or("?"),
                e["access"].as_str().unwrap_or("?"),
                e["sequence"],
                e["stale"],
                e["customerAWSAccountId"].as_str().unwrap_or("null"),
                e["licenseArn"].as_str().unwrap_or("null"),
                entitlements
            );
            seen += 1;
        }
    }
    if seen < n {
        bail!("{seen} of {n} lifecycle events within 60 s");
    }
    Ok(())
}

/// The new-integration customer of `run` (its resolved token made it known to the emulator) used
/// the product in the last hour: 6 events on two dimensions, each sent twice.
async fn usage(sqs: &aws_sdk_sqs::Client, settings: &Settings) -> Result<()> {
    let now = chrono::Utc::now().timestamp();
    let hour = now / 3600 * 3600 - 3600;
    let events = [
        ("api_calls", 120, 60),
        ("api_calls", 80, 900),
        ("api_calls", 45, 2400),
        ("api_calls", 5, 3500),
        ("storage_gb", 3, 300),
        ("storage_gb", 4, 3000),
    ];
    let at = |offset: i64| {
        chrono::DateTime::from_timestamp(hour + offset, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    println!(
        "\nSending {} usage events for {} (each twice) to {}:",
        events.len(),
        at(0),
        queue_name(&settings.usage_queue_url)
    );
    for (n, (dimension, quantity, offset)) in events.iter().enumerate() {
        let body = json!({
            "usageId": format!("demo-usage-{hour}-{n}"),
            "productCode": PRODUCT,
            "customerAWSAccountId": "444455556666",
            "licenseArn": "arn:aws:license-manager::444455556666:license:l-demo",
            "dimension": dimension,
            "quantity": quantity,
            "timestamp": at(*offset),
        })
        .to_string();
        for _ in 0..2 {
            sqs.send_message()
                .queue_url(&settings.usage_queue_url)
                .message_body(&body)
                .send()
                .await
                .context("send a usage event")?;
        }
        println!("  {body}");
    }
    let subscriber_url = subscriber_url(sqs, settings).await?;
    let want = 2;
    println!("\nWaiting for the hour to settle and {want} marketplace.usage.metered events...\n");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = 0;
    while seen < want && Instant::now() < deadline {
        for m in drain(sqs, &subscriber_url).await? {
            let e: Value = serde_json::from_str(&m.0).unwrap_or(Value::Null);
            if e["eventType"] != "marketplace.usage.metered" {
                continue;
            }
            println!(
                "METERED     hour={} dimension={:<10} quantity={:<4} status={} events={} meteringRecordId={}",
                e["hour"].as_str().unwrap_or("?"),
                e["dimension"].as_str().unwrap_or("?"),
                e["quantity"],
                e["status"].as_str().unwrap_or("?"),
                e["events"],
                e["meteringRecordId"].as_str().unwrap_or("null"),
            );
            seen += 1;
        }
    }
    if seen < want {
        bail!("{seen} of {want} metered events within 90 s");
    }
    Ok(())
}

/// One long poll on `url`; returns (body, attributes) of what arrived and deletes it.
async fn drain(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<Vec<(String, HashMap<String, String>)>> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_attribute_names("All")
        .send()
        .await?;
    let mut got = Vec::new();
    for m in out.messages.unwrap_or_default() {
        if let Some(handle) = &m.receipt_handle {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await?;
        }
        let attrs = m
            .message_attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
            .collect();
        got.push((m.body.unwrap_or_default(), attrs));
    }
    Ok(got)
}
