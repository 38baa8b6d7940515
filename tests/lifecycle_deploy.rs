//! The assumed role of `[marketplace] role_arn` against LocalStack's IAM and STS: both Marketplace
//! clients sign with the role's session credentials from aws-config's AssumeRoleProvider, while
//! SQS and SNS keep the default chain; and an STS that cannot be reached is a transient failure,
//! never a verdict on a message. `check` reports the role and both Marketplace APIs called
//! through it.

mod support;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_marketplacemetering::config::{
    Credentials, ProvideCredentials, SharedCredentialsProvider,
};
use mp_resolver::aws::clients::marketplace_sdk_config;
use mp_resolver::aws::entitlement::EntitlementsResult;
use mp_resolver::aws::metering::{classify, CallResult, FailureKind};
use mp_resolver::aws::Clients;
use mp_resolver::config::Settings;
use mp_resolver::contract::lifecycle::EntitlementFilter;
use mp_resolver::ops::check::{run_checks, Check, Outcome};
use mp_resolver::worker::entitlements::EntitlementReader;
use mp_resolver::worker::ratelimit::{AdaptiveRateLimiter, RatePolicy};
use serde_json::json;
use support::aws_stub::{self, Recorded};
use support::{Fixture, Topic};

const BASE_KEY: &str = "AKIDBASECHAIN";

fn base_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            BASE_KEY, "secret", None, None, "tests",
        )))
        .endpoint_url(endpoint)
        .build()
}

fn settings(role_arn: &str, external_id: &str) -> Settings {
    aws_stub::client_settings(&[
        ("MPR_MARKETPLACE__ROLE_ARN", role_arn),
        ("MPR_MARKETPLACE__EXTERNAL_ID", external_id),
        ("MPR_AWS__MAX_ATTEMPTS", "1"),
    ])
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Creates a role through LocalStack's IAM query API (the crate has no IAM client; LocalStack
/// routes on the credential scope and does not check the signature).
async fn create_role(endpoint: &str, name: &str) -> String {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
    let body = form_encode(&[
        ("Action", "CreateRole"),
        ("Version", "2010-05-08"),
        ("RoleName", name),
        ("AssumeRolePolicyDocument", trust),
    ]);
    let response = support::localstack_request(
        endpoint,
        "iam",
        "application/x-www-form-urlencoded",
        "",
        &body,
    )
    .await;
    let arn = response
        .split("<Arn>")
        .nth(1)
        .and_then(|rest| rest.split("</Arn>").next())
        .expect("CreateRole answered an Arn");
    arn.to_owned()
}

fn service_of(api: &str) -> &'static str {
    match api {
        "ResolveCustomer" => "AWSMPMeteringService",
        _ => "AWSMPEntitlementService",
    }
}

fn signing_key(request: &Recorded) -> String {
    let auth = request
        .header("authorization")
        .expect("the request is signed");
    auth.split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .expect("a SigV4 credential")
        .to_owned()
}

fn reader(clients: &Clients) -> EntitlementReader {
    let settings = settings("", "");
    EntitlementReader::new(
        clients.entitlement.clone(),
        std::sync::Arc::new(AdaptiveRateLimiter::new(RatePolicy::from_settings(
            &settings.rate_limit,
        ))),
    )
}

#[tokio::test]
async fn marketplace_clients_sign_with_the_assumed_role_and_queues_do_not() {
    let localstack = support::localstack().await;
    let role_name = format!("mpr-marketplace-{}", std::process::id());
    let role_arn = create_role(&localstack.endpoint, &role_name).await;
    let shared = base_config(&localstack.endpoint);
    let settings = settings(&role_arn, "seller-42");
    let clients = Clients::from_sdk_config_with_role(&shared, &settings).await;

    // The Marketplace configuration's provider goes through STS AssumeRole at LocalStack.
    let marketplace = marketplace_sdk_config(&shared, &settings.marketplace).await;
    let creds = marketplace
        .credentials_provider()
        .expect("a credentials provider")
        .provide_credentials()
        .await
        .unwrap_or_else(|e| panic!("AssumeRole through LocalStack STS failed: {e}"));
    assert_ne!(creds.access_key_id(), BASE_KEY);
    assert!(creds.session_token().is_some(), "a session has a token");
    assert!(creds.expiry().is_some(), "session credentials expire");

    // And the requests they send are signed with the session, not the base key.
    let error = json!({"__type": "InternalServiceErrorException", "message": "stub"});
    let (stub, mut requests) = aws_stub::start(vec![(500, error.clone()); 3]).await;
    // SQS keeps the default chain (one attempt: MPR_AWS__MAX_ATTEMPTS=1).
    let sqs = aws_sdk_sqs::Client::from_conf(
        clients
            .sqs
            .config()
            .to_builder()
            .endpoint_url(&stub)
            .build(),
    );
    assert!(sqs.get_queue_url().queue_name("q").send().await.is_err());
    let request = tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("the stub saw the SQS request")
        .expect("a request");
    assert_eq!(signing_key(&request), BASE_KEY, "SQS must not use the role");
    assert!(request.header("x-amz-security-token").is_none());

    let metering = aws_sdk_marketplacemetering::Client::from_conf(
        clients
            .metering
            .config()
            .to_builder()
            .endpoint_url(&stub)
            .build(),
    );
    let result = classify(
        metering
            .resolve_customer()
            .registration_token("not-a-token")
            .send()
            .await,
    );
    assert!(matches!(result, CallResult::Failed(_)), "{result:?}");
    let entitlement = Clients {
        entitlement: aws_sdk_marketplaceentitlement::Client::from_conf(
            clients
                .entitlement
                .config()
                .to_builder()
                .endpoint_url(&stub)
                .build(),
        ),
        ..clients.clone()
    };
    let result = reader(&entitlement)
        .fetch(
            "prod-abc",
            &EntitlementFilter::CustomerAwsAccountId("111122223333".into()),
        )
        .await;
    // The error came back through the awsJson 1.1 error parser, by name.
    assert!(
        matches!(&result, EntitlementsResult::Failed(f) if f.kind == FailureKind::Transient
            && f.detail == "GetEntitlements: InternalServiceErrorException"),
        "{result:?}"
    );
    for api in ["ResolveCustomer", "GetEntitlements"] {
        let request = tokio::time::timeout(Duration::from_secs(10), requests.recv())
            .await
            .expect("the stub saw the request")
            .expect("a request");
        let key = signing_key(&request);
        assert_ne!(key, BASE_KEY, "{api} is signed with the base credentials");
        assert!(
            request.header("x-amz-security-token").is_some(),
            "{api} carries the session token"
        );
        let target = request.header("x-amz-target").unwrap_or("");
        // Both speak awsJson 1.1 (the Entitlement client is pinned to it; see aws::clients).
        assert_eq!(
            target,
            format!("{}.{api}", service_of(api)),
            "{}",
            request.head
        );
        assert_eq!(
            request.header("content-type"),
            Some("application/x-amz-json-1.1")
        );
        if api == "GetEntitlements" {
            // The Entitlement Service exists only in us-east-1, whatever the worker's region.
            let auth = request.header("authorization").unwrap_or("");
            assert!(auth.contains("/us-east-1/aws-marketplace/"), "{auth}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_sts_is_a_transient_failure_not_a_verdict() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let shared = base_config("http://127.0.0.1:9");
    let clients = Clients::from_sdk_config_with_role(
        &shared,
        &settings("arn:aws:iam::000000000000:role/missing", ""),
    )
    .await;
    let result = classify(
        clients
            .metering
            .resolve_customer()
            .registration_token("not-a-token")
            .send()
            .await,
    );
    assert!(
        matches!(&result, CallResult::Failed(f) if f.kind == FailureKind::Transient),
        "{result:?}"
    );
    let result = reader(&clients)
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

#[tokio::test]
async fn check_calls_both_marketplace_apis_through_the_assumed_role() {
    let fx = Fixture::new(Topic::Standard).await;
    // Requests without a SigV4 signature for the API's signing name are refused, as by AWS.
    fx.emulator.configure(|s| s.strict_auth = true);
    let role_arn = create_role(
        &fx.localstack.endpoint,
        &format!("mpr-check-{}", std::process::id()),
    )
    .await;
    let (queue, dlq) = fx.queue_with_dlq(40).await;
    let mut settings = fx.settings.clone();
    settings.lifecycle_queue_url = queue;
    settings.lifecycle_dlq_url = dlq;
    settings.marketplace.role_arn = role_arn.clone();
    settings.marketplace.external_id = "seller-42".into();

    let clients = fx
        .clients_with_role(&settings, &fx.localstack.endpoint)
        .await;
    let report = run_checks(&clients, &settings).await;
    assert!(report.ok, "{report:#?}");
    let outcome = |c: Check| report.get(c).map(|r| (r.outcome, r.summary.clone()));
    for c in [
        Check::LifecycleQueue,
        Check::LifecycleDlq,
        Check::LifecycleRedrivePolicy,
        Check::MarketplaceRole,
        Check::ResolveCustomer,
        Check::GetEntitlements,
    ] {
        assert_eq!(
            outcome(c).map(|o| o.0),
            Some(Outcome::Pass),
            "{c:?}: {report:#?}"
        );
    }
    let role = outcome(Check::MarketplaceRole).unwrap().1;
    assert!(
        role.contains(&role_arn) && role.contains("session credentials until"),
        "{role}"
    );
    for c in [Check::ResolveCustomer, Check::GetEntitlements] {
        let summary = outcome(c).unwrap().1;
        assert!(
            summary.contains(&format!("(as {role_arn})")),
            "{c:?}: {summary}"
        );
    }
    let stats = fx.emulator.stats();
    assert!(stats.entitlement_calls >= 1, "{stats:?}");
    assert_eq!(stats.rejected, 0, "every call was signed: {stats:?}");

    // The role cannot be assumed (STS does not answer): that is the failure, with its fix, and
    // the two API checks, which would only repeat it, are skipped.
    let clients = fx.clients_with_role(&settings, "http://127.0.0.1:9").await;
    let report = run_checks(&clients, &settings).await;
    assert!(!report.ok);
    assert_eq!(
        report.with_outcome(Outcome::Fail),
        [Check::MarketplaceRole],
        "{report:#?}"
    );
    let failed = report.get(Check::MarketplaceRole).unwrap();
    assert!(failed.summary.contains(&role_arn), "{failed:?}");
    assert!(
        failed.fix.as_deref().unwrap_or("").contains("trust policy"),
        "{failed:?}"
    );
    assert_eq!(
        report.with_outcome(Outcome::Skip),
        [Check::ResolveCustomer, Check::GetEntitlements],
        "{report:#?}"
    );
}
