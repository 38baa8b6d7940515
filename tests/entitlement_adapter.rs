//! The GetEntitlements adapter on the wire, against a tiny local HTTP stub that answers as the AWS
//! Marketplace Entitlement Service does in awsJson 1.1: every page read with its NextToken, the
//! filter and product code sent, throttling fed back into the rate limit, a verdict kept apart
//! from a failure. (The emulator's GetEntitlements will cover the same ground end to end.)

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_marketplacemetering::config::{Credentials, SharedCredentialsProvider};
use mp_resolver::aws::entitlement::EntitlementsResult;
use mp_resolver::aws::metering::FailureKind;
use mp_resolver::aws::Clients;
use mp_resolver::contract::lifecycle::{EntitlementFilter, EntitlementValue};
use mp_resolver::worker::entitlements::EntitlementReader;
use mp_resolver::worker::ratelimit::{AdaptiveRateLimiter, RatePolicy};
use serde_json::{json, Value};
use support::aws_stub::{self, Recorded};
use tokio::sync::mpsc;

fn reader_at(endpoint: &str) -> (EntitlementReader, Arc<AdaptiveRateLimiter>) {
    let shared = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKID", "secret", None, None, "tests",
        )))
        .endpoint_url(endpoint)
        .build();
    // Every throttle is its own window (cooldown 0), so the one throttle a test answers is a whole
    // window's share and moves the rate even during the slow start.
    let settings = aws_stub::client_settings(&[("MPR_RATE_LIMIT__COOLDOWN_MS", "0")]);
    let clients = Clients::from_sdk_config(&shared, &settings);
    let limiter = Arc::new(AdaptiveRateLimiter::new(RatePolicy::from_settings(
        &settings.rate_limit,
    )));
    (
        EntitlementReader::new(clients.entitlement, limiter.clone()),
        limiter,
    )
}

/// The next request's `X-Amz-Target` and JSON body.
async fn next(requests: &mut mpsc::Receiver<Recorded>) -> (String, Value) {
    let r = tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("the stub saw a request")
        .expect("a request");
    (r.header("x-amz-target").unwrap_or("").to_owned(), r.body)
}

const LICENSE: &str = "arn:aws:license-manager::111122223333:license:l-0123456789abcdef";

#[tokio::test]
async fn every_page_is_read_with_its_token_and_the_filter() {
    let (url, mut requests) = aws_stub::start(vec![
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
    let (url, mut requests) = aws_stub::start(vec![(
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
    let (url, _requests) = aws_stub::start(vec![(
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
    let (url, _requests) = aws_stub::start(vec![
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
