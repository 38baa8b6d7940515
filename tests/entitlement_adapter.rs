//! The GetEntitlements adapter on the wire, against a tiny local HTTP stub that answers as the AWS
//! Marketplace Entitlement Service does in awsJson 1.1: every page read with its NextToken, the
//! filter and product code sent, throttling fed back into the rate limit, a verdict kept apart
//! from a failure. (The emulator's GetEntitlements will cover the same ground end to end.)

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_marketplacemetering::config::{Credentials, SharedCredentialsProvider};
use mp_resolver::aws::entitlement::{EntitlementReader, EntitlementsResult};
use mp_resolver::aws::metering::FailureKind;
use mp_resolver::aws::Clients;
use mp_resolver::config::{self, Settings, Sources};
use mp_resolver::contract::lifecycle::{EntitlementFilter, EntitlementValue};
use mp_resolver::worker::ratelimit::{AdaptiveRateLimiter, RatePolicy};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One canned answer: HTTP status and JSON body (errors carry `__type`, as AWS JSON services do).
type Answer = (u16, Value);

/// A stub endpoint answering `answers` in order; each request's (target header, JSON body) is sent
/// on the returned channel.
async fn stub(answers: Vec<Answer>) -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for (status, body) in answers {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let header_end = loop {
                if let Some(pos) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos + 4;
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            };
            let head = String::from_utf8_lossy(&seen[..header_end]).to_string();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
            };
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while seen.len() < header_end + length {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let request: Value = serde_json::from_slice(&seen[header_end..header_end + length])
                .unwrap_or(Value::Null);
            let text = body.to_string();
            let error_type = body["__type"].as_str().unwrap_or("");
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                if error_type.is_empty() {
                    String::new()
                } else {
                    format!("x-amzn-ErrorType: {error_type}\r\n")
                },
                text.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = tx
                .send((header("x-amz-target").unwrap_or_default(), request))
                .await;
        }
    });
    (url, rx)
}

fn settings() -> Settings {
    let env = [
        ("MPR_QUEUE_URL", "http://127.0.0.1:4566/000000000000/q"),
        ("MPR_DLQ_URL", "http://127.0.0.1:4566/000000000000/q-dlq"),
        ("MPR_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:t"),
        ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "3000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    config::load(&Sources {
        env,
        ..Sources::default()
    })
    .expect("test settings are valid")
    .settings
}

fn reader_at(endpoint: &str) -> (EntitlementReader, Arc<AdaptiveRateLimiter>) {
    let shared = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKID", "secret", None, None, "tests",
        )))
        .endpoint_url(endpoint)
        .build();
    let settings = settings();
    let clients = Clients::from_sdk_config(&shared, &settings);
    let limiter = Arc::new(AdaptiveRateLimiter::new(RatePolicy::from_settings(
        &settings.rate_limit,
    )));
    (
        EntitlementReader::new(clients.entitlement, limiter.clone()),
        limiter,
    )
}

async fn next(requests: &mut mpsc::Receiver<(String, Value)>) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("the stub saw a request")
        .expect("a request")
}

const LICENSE: &str = "arn:aws:license-manager::111122223333:license:l-0123456789abcdef";

#[tokio::test]
async fn every_page_is_read_with_its_token_and_the_filter() {
    let (url, mut requests) = stub(vec![
        (
            200,
            json!({"Entitlements": [{"ProductCode": "prod-abc", "Dimension": "seats",
                "CustomerAWSAccountId": "111122223333", "LicenseArn": LICENSE,
                "Value": {"IntegerValue": 10}, "ExpirationDate": 1798761600}],
                "NextToken": "page-2"}),
        ),
        (
            200,
            json!({"Entitlements": [{"ProductCode": "prod-abc", "Dimension": "tier",
                "Value": {"StringValue": "gold"}}]}),
        ),
    ])
    .await;
    let (reader, _) = reader_at(&url);
    let result = reader
        .fetch("prod-abc", &EntitlementFilter::LicenseArn(LICENSE.into()))
        .await;
    let EntitlementsResult::Fetched(list) = result else {
        panic!("expected both pages, got {result:?}")
    };
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0].dimension, "seats");
    assert_eq!(list[0].value, EntitlementValue::Integer(10));
    assert_eq!(
        list[0].expires_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2027-01-01T00:00:00+00:00")
    );
    assert_eq!(list[1].value, EntitlementValue::String("gold".into()));
    assert_eq!(list[1].expires_at, None);

    let (target, first) = next(&mut requests).await;
    assert_eq!(target, "AWSMPEntitlementService.GetEntitlements");
    assert_eq!(first["ProductCode"], "prod-abc");
    assert_eq!(first["Filter"], json!({"LICENSE_ARN": [LICENSE]}));
    assert_eq!(first.get("NextToken"), None);
    let (_, second) = next(&mut requests).await;
    assert_eq!(second["NextToken"], "page-2");
    assert_eq!(second["Filter"], first["Filter"]);
}

#[tokio::test]
async fn throttling_slows_the_limiter_and_is_retryable() {
    let (url, mut requests) = stub(vec![(
        400,
        json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
    )])
    .await;
    let (reader, limiter) = reader_at(&url);
    let before = limiter.rate();
    let result = reader
        .fetch(
            "prod-abc",
            &EntitlementFilter::CustomerAwsAccountId("111122223333".into()),
        )
        .await;
    assert!(
        matches!(&result, EntitlementsResult::Failed(f) if f.kind == FailureKind::Throttled),
        "{result:?}"
    );
    assert!(limiter.rate() < before, "{} !< {before}", limiter.rate());
    let (_, request) = next(&mut requests).await;
    assert_eq!(
        request["Filter"],
        json!({"CUSTOMER_AWS_ACCOUNT_ID": ["111122223333"]})
    );
}

#[tokio::test]
async fn an_invalid_parameter_is_a_verdict_and_a_5xx_on_a_later_page_a_failure() {
    let (url, _requests) = stub(vec![(
        400,
        json!({"__type": "InvalidParameterException", "message": "bad product code"}),
    )])
    .await;
    let (reader, _) = reader_at(&url);
    let result = reader
        .fetch("prod-x", &EntitlementFilter::CustomerIdentifier("c".into()))
        .await;
    assert!(
        matches!(&result, EntitlementsResult::Rejected { detail } if detail.contains("InvalidParameterException")),
        "{result:?}"
    );

    // A failure after the first page loses the whole read: no partial list is ever returned.
    let (url, _requests) = stub(vec![
        (
            200,
            json!({"Entitlements": [{"Dimension": "seats", "Value": {"IntegerValue": 1}}], "NextToken": "t"}),
        ),
        (
            500,
            json!({"__type": "InternalServiceErrorException", "message": "oops"}),
        ),
    ])
    .await;
    let (reader, _) = reader_at(&url);
    let result = reader
        .fetch(
            "prod-abc",
            &EntitlementFilter::CustomerIdentifier("c".into()),
        )
        .await;
    assert!(
        matches!(&result, EntitlementsResult::Failed(f) if f.kind == FailureKind::Transient),
        "{result:?}"
    );
}
