//! The emulator driven the way the worker drives AWS: through `aws-sdk-marketplacemetering` over
//! real HTTP. The control endpoints are exercised with a minimal HTTP/1.1 client on a TcpStream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_marketplacemetering::config::retry::RetryConfig;
use aws_sdk_marketplacemetering::config::{Credentials, Region};
use aws_sdk_marketplacemetering::error::ProvideErrorMetadata;
use aws_sdk_marketplacemetering::operation::resolve_customer::{
    ResolveCustomerError, ResolveCustomerOutput,
};
use aws_sdk_marketplacemetering::Client;
use mp_resolver::emulator::{serve, EmulatorSettings, EmulatorStats, RunningEmulator, TestToken};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ACCOUNT: &str = "123456789012";
const PRODUCT: &str = "prod-abc";

fn encode(token: TestToken) -> String {
    token.encode().expect("valid test token")
}

async fn start() -> RunningEmulator {
    RunningEmulator::start(EmulatorSettings::default())
        .await
        .expect("emulator starts")
}

fn client(endpoint: String) -> Client {
    let config = aws_sdk_marketplacemetering::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

async fn resolve(
    client: &Client,
    token: &str,
) -> Result<ResolveCustomerOutput, ResolveCustomerError> {
    client
        .resolve_customer()
        .registration_token(token)
        .send()
        .await
        .map_err(|e| e.into_service_error())
}

/// The error variant's name, or "ok", so a sequence of calls reads as one assertion.
fn kind(result: &Result<ResolveCustomerOutput, ResolveCustomerError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ResolveCustomerError::InvalidTokenException(_)) => "InvalidToken",
        Err(ResolveCustomerError::ExpiredTokenException(_)) => "ExpiredToken",
        Err(ResolveCustomerError::ThrottlingException(_)) => "Throttling",
        Err(ResolveCustomerError::InternalServiceErrorException(_)) => "InternalServiceError",
        Err(ResolveCustomerError::DisabledApiException(_)) => "DisabledApi",
        Err(_) => "other",
    }
}

async fn kinds(client: &Client, token: &str, calls: usize) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        out.push(kind(&resolve(client, token).await));
    }
    out
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("fits")
}

/// One HTTP/1.1 exchange with `Connection: close`; returns the status and the JSON body (or Null).
async fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let (status, _, body) = http_with_headers(endpoint, method, path, headers, body).await;
    (status, body)
}

/// [`http`], also returning the response head (lowercased) for header checks.
async fn http_with_headers(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let addr = endpoint.strip_prefix("http://").expect("http endpoint");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).expect("JSON body")
    };
    (status, head.to_ascii_lowercase(), body)
}

#[tokio::test]
async fn resolves_a_good_token_with_every_field() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = encode(
        TestToken::new(ACCOUNT, PRODUCT)
            .customer("cust-123")
            .license("arn:aws:license-manager::123456789012:license:l-abc")
            .agreement("agmt-456")
            .expires_at(unix_now() + 3600),
    );

    let output = resolve(&client, &token).await.expect("resolves");
    assert_eq!(output.customer_identifier(), Some("cust-123"));
    assert_eq!(output.customer_aws_account_id(), Some(ACCOUNT));
    assert_eq!(output.product_code(), Some(PRODUCT));
    assert_eq!(
        output.license_arn(),
        Some("arn:aws:license-manager::123456789012:license:l-abc")
    );
    assert_eq!(
        output.metadata().and_then(|m| m.agreement_id()),
        Some("agmt-456")
    );

    let minimal = resolve(&client, &encode(TestToken::new(ACCOUNT, PRODUCT)))
        .await
        .expect("resolves");
    assert_eq!(minimal.customer_identifier(), None);
    assert_eq!(minimal.license_arn(), None);
    assert!(minimal.metadata().is_none());
    assert_eq!(
        emu.stats(),
        EmulatorStats {
            calls: 2,
            resolved: 2,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn invalid_tokens_are_rejected_without_echoing_them() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let not_json = format!("emu1.{}", "bm90LWpzb24"); // base64url of "not-json"
    for token in [
        "garbage-token-value",
        "emu1.!!!not-base64!!!",
        not_json.as_str(),
        "emu1.eyJwcm9kdWN0IjoicCJ9", // {"product":"p"}: no account
    ] {
        let error = resolve(&client, token).await.expect_err("invalid");
        assert!(
            matches!(error, ResolveCustomerError::InvalidTokenException(_)),
            "{token}: {error:?}"
        );
        let message = error.message().unwrap_or_default();
        assert!(!message.is_empty());
        assert!(
            !message.contains(token),
            "message echoes the token: {message}"
        );
    }
    assert_eq!(emu.stats().invalid, 4);
}

#[tokio::test]
async fn expired_token() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT).expires_at(unix_now() - 1));
    let error = resolve(&client, &token).await.expect_err("expired");
    assert!(
        matches!(error, ResolveCustomerError::ExpiredTokenException(_)),
        "{error:?}"
    );
    assert_eq!(emu.stats().expired, 1);
}

#[tokio::test]
async fn throttle_then_success() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT).throttle(3));
    assert_eq!(
        kinds(&client, &token, 5).await,
        ["Throttling", "Throttling", "Throttling", "ok", "ok"]
    );
    let stats = emu.stats();
    assert_eq!((stats.calls, stats.throttled, stats.resolved), (5, 3, 2));
}

#[tokio::test]
async fn fail_then_success_and_throttles_come_first() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT).fail(2));
    assert_eq!(
        kinds(&client, &token, 3).await,
        ["InternalServiceError", "InternalServiceError", "ok"]
    );
    let both = encode(TestToken::new(ACCOUNT, PRODUCT).throttle(2).fail(1));
    assert_eq!(
        kinds(&client, &both, 4).await,
        ["Throttling", "Throttling", "InternalServiceError", "ok"]
    );
    assert_eq!(emu.stats().internal_errors, 3);
}

#[tokio::test]
async fn disabled_api() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    emu.configure(|s| s.disabled = true);
    let error = resolve(&client, &token).await.expect_err("disabled");
    assert!(
        matches!(error, ResolveCustomerError::DisabledApiException(_)),
        "{error:?}"
    );
    emu.configure(|s| s.disabled = false);
    assert_eq!(kinds(&client, &token, 1).await, ["ok"]);
    assert_eq!(emu.stats().disabled, 1);
}

#[tokio::test]
async fn quota_throttles_a_burst_and_stats_add_up() {
    let emu = RunningEmulator::start(EmulatorSettings {
        quota: Some(5.0),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let client = client(emu.endpoint());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));

    let started = std::time::Instant::now();
    let results = kinds(&client, &token, 20).await;
    let elapsed = started.elapsed().as_secs_f64();

    let ok = results.iter().filter(|k| **k == "ok").count();
    let throttled = results.iter().filter(|k| **k == "Throttling").count();
    assert_eq!(ok + throttled, 20, "{results:?}");
    // The burst of five always passes; beyond it only what refilled while the calls ran.
    assert!(ok >= 5, "{results:?}");
    assert!(ok as f64 <= 5.0 + elapsed * 5.0 + 1.0, "{results:?}");
    assert!(throttled > 0, "{results:?}");
    assert_eq!(&results[..5], ["ok"; 5]);

    let stats = emu.stats();
    assert_eq!(stats.calls, 20);
    assert_eq!(stats.resolved as usize, ok);
    assert_eq!(stats.throttled as usize, throttled);
}

#[tokio::test]
async fn random_errors_come_before_the_token_script() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT).throttle(1));
    let (status, _) = http(
        &emu.endpoint(),
        "POST",
        "/emulator/config",
        &[("Content-Type", "application/json")],
        r#"{"errorRate": 1.0}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(kinds(&client, &token, 2).await, ["InternalServiceError"; 2]);
    emu.configure(|s| s.error_rate = 0.0);
    assert_eq!(kinds(&client, &token, 2).await, ["Throttling", "ok"]);
}

#[tokio::test]
async fn latency_delays_each_answer() {
    let emu = RunningEmulator::start(EmulatorSettings {
        latency_ms: 150,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let client = client(emu.endpoint());
    let started = std::time::Instant::now();
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    assert_eq!(kinds(&client, &token, 1).await, ["ok"]);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn control_endpoints() {
    let emu = start().await;
    let endpoint = emu.endpoint();
    let client = client(endpoint.clone());

    let (status, config) = http(&endpoint, "GET", "/emulator/config", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        json!({"quota": null, "latencyMs": 0, "errorRate": 0.0, "disabled": false,
               "singleUse": false, "strictAuth": false, "entitlementQuota": null,
               "meteringQuota": 10.0, "meteringWindowHours": 24, "meteringDimensions": {},
               "meteringThrottle": 0, "meteringFail": 0, "meteringUnprocessed": 0})
    );

    let (status, config) = http(
        &endpoint,
        "POST",
        "/emulator/config",
        &[("Content-Type", "application/json")],
        r#"{"quota": 20, "disabled": true, "singleUse": true, "entitlementQuota": 3}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        json!({"quota": 20.0, "latencyMs": 0, "errorRate": 0.0, "disabled": true,
               "singleUse": true, "strictAuth": false, "entitlementQuota": 3.0,
               "meteringQuota": 10.0, "meteringWindowHours": 24, "meteringDimensions": {},
               "meteringThrottle": 0, "meteringFail": 0, "meteringUnprocessed": 0})
    );
    assert_eq!(emu.settings().quota, Some(20.0));

    for bad in [
        r#"{"errorRate": 1.5}"#,
        r#"{"quota": -1}"#,
        r#"{"latencyMs": "slow"}"#,
        r#"{"unknown": 1}"#,
        "not json",
    ] {
        let (status, body) = http(&endpoint, "POST", "/emulator/config", &[], bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {body}"
        );
    }
    // Rejected patches change nothing.
    let (_, config) = http(&endpoint, "GET", "/emulator/config", &[], "").await;
    assert_eq!(config["quota"], json!(20.0));
    assert_eq!(config["errorRate"], json!(0.0));

    let (status, config) = http(
        &endpoint,
        "POST",
        "/emulator/config",
        &[],
        r#"{"quota": null, "disabled": false, "singleUse": false}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(config["quota"], Value::Null);

    let good = encode(TestToken::new(ACCOUNT, PRODUCT).fail(1));
    assert_eq!(
        kinds(&client, &good, 2).await,
        ["InternalServiceError", "ok"]
    );
    assert_eq!(kinds(&client, "bad", 1).await, ["InvalidToken"]);
    let (status, stats) = http(&endpoint, "GET", "/emulator/stats", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats,
        json!({"calls": 3, "resolved": 1, "throttled": 0, "invalid": 1, "expired": 0,
               "internalErrors": 1, "disabled": 0, "rejected": 0, "entitlementCalls": 0,
               "entitlementThrottled": 0, "entitlementErrors": 0, "meteringCalls": 0,
               "meteringThrottled": 0, "meteringErrors": 0, "meteringRefused": 0,
               "recordsMetered": 0, "recordsDuplicate": 0, "recordsNotSubscribed": 0,
               "recordsUnprocessed": 0})
    );

    let (status, _) = http(&endpoint, "POST", "/emulator/reset", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(emu.stats(), EmulatorStats::default());
    // The per-token script starts over after a reset.
    assert_eq!(kinds(&client, &good, 1).await, ["InternalServiceError"]);

    emu.reset();
    assert_eq!(emu.stats(), EmulatorStats::default());
}

#[tokio::test]
async fn protocol_errors() {
    let emu = start().await;
    let endpoint = emu.endpoint();
    let json_type = ("Content-Type", "application/x-amz-json-1.1");
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    let body = json!({ "RegistrationToken": token }).to_string();

    let (status, error) = http(
        &endpoint,
        "POST",
        "/",
        &[
            json_type,
            ("X-Amz-Target", "AWSMPMeteringService.MeterUsage"),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error["__type"], "UnknownOperationException");

    let (status, error) = http(&endpoint, "POST", "/", &[json_type], &body).await;
    assert_eq!(
        (status, &error["__type"]),
        (400, &json!("UnknownOperationException"))
    );

    let target = ("X-Amz-Target", "AWSMPMeteringService.ResolveCustomer");
    let broken = format!(r#"{{"RegistrationToken": "{token}""#);
    let (status, error) = http(&endpoint, "POST", "/", &[json_type, target], &broken).await;
    assert_eq!(status, 400);
    assert_eq!(error["__type"], "SerializationException");
    assert!(!error.to_string().contains(&token));

    let (status, resolved) = http(&endpoint, "POST", "/", &[json_type, target], &body).await;
    assert_eq!(status, 200);
    assert_eq!(resolved["CustomerAWSAccountId"], ACCOUNT);

    // Refused requests count too, as rejected.
    let stats = emu.stats();
    assert_eq!((stats.calls, stats.rejected, stats.resolved), (4, 3, 1));
}

#[tokio::test]
async fn serve_runs_until_shutdown_and_rejects_bad_settings() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bad = EmulatorSettings {
        error_rate: 2.0,
        ..Default::default()
    };
    let error = serve(listener, bad, async {}).await.expect_err("rejected");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, EmulatorSettings::default(), async {
        let _ = stopped.await;
    }));
    let client = client(endpoint.clone());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    assert_eq!(kinds(&client, &token, 1).await, ["ok"]);
    drop(client);

    stop.send(()).expect("server still running");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .expect("task")
        .expect("served");
    let addr = endpoint.trim_start_matches("http://");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn running_emulator_shuts_down() {
    let emu = start().await;
    let endpoint = emu.endpoint();
    let addr = endpoint.trim_start_matches("http://").to_owned();
    tokio::time::timeout(Duration::from_secs(5), emu.shutdown())
        .await
        .expect("shuts down");
    assert!(TcpStream::connect(&addr).await.is_err());
}

// ---- singleUse and ttl (issue #11) ----

#[tokio::test]
async fn single_use_tokens_expire_after_resolving_once() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let (status, _) = http(
        &emu.endpoint(),
        "POST",
        "/emulator/config",
        &[],
        r#"{"singleUse": true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(emu.settings().single_use);

    let token = encode(TestToken::new(ACCOUNT, PRODUCT).throttle(1));
    assert_eq!(
        kinds(&client, &token, 4).await,
        ["Throttling", "ok", "ExpiredToken", "ExpiredToken"]
    );
    let other = encode(TestToken::new(ACCOUNT, PRODUCT).customer("someone-else"));
    assert_eq!(kinds(&client, &other, 2).await, ["ok", "ExpiredToken"]);
    let stats = emu.stats();
    assert_eq!((stats.resolved, stats.expired), (2, 3));
}

#[tokio::test]
async fn ttl_expires_a_token_after_its_first_call() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = encode(TestToken::new(ACCOUNT, PRODUCT).ttl(1));
    assert_eq!(kinds(&client, &token, 1).await, ["ok"]);
    // Resolves until a second has passed since the first call, then never again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let kind = kind(&resolve(&client, &token).await);
        seen.push(kind);
        if kind != "ok" || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.last(), Some(&"ExpiredToken"), "{seen:?}");
    assert_eq!(kinds(&client, &token, 1).await, ["ExpiredToken"]);
}

#[tokio::test]
async fn tokens_with_values_aws_never_sends_do_not_resolve() {
    let emu = start().await;
    let client = client(emu.endpoint());
    // Hand-made, since the builder refuses these values.
    let raw = |json: &str| {
        use base64::Engine as _;
        format!(
            "emu1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    };
    for json in [
        r#"{"account":"42","product":"prod-abc"}"#,
        r#"{"account":"123456789012","product":"prod abc"}"#,
        r#"{"account":"123456789012","product":"p","license":"arn:l"}"#,
        r#"{"account":"123456789012","product":"p","agreement":""}"#,
    ] {
        assert_eq!(
            kinds(&client, &raw(json), 1).await,
            ["InvalidToken"],
            "{json}"
        );
    }
    assert!(TestToken::new("42", PRODUCT).encode().is_err());
}

// ---- GetEntitlements (issue #14) ----

use aws_sdk_marketplaceentitlement as entitlement;
use entitlement::operation::get_entitlements::GetEntitlementsError;
use entitlement::types::GetEntitlementFilterName as FilterName;
use mp_resolver::emulator::{CustomerEntitlements, TestEntitlement};

const OTHER_ACCOUNT: &str = "210987654321";
const LICENSE: &str = "arn:aws:license-manager::123456789012:license:l-0123456789abcdef";

fn entitlement_client(endpoint: String) -> entitlement::Client {
    entitlement::Client::from_conf(entitlement_config(endpoint).build())
}

fn entitlement_config(endpoint: String) -> entitlement::config::Builder {
    entitlement::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(entitlement::config::Region::new("us-east-1"))
        .credentials_provider(entitlement::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .retry_config(entitlement::config::retry::RetryConfig::disabled())
}

/// One customer with 30 integer dimensions, one legacy customer with a value of each other type.
fn seed(emu: &RunningEmulator) {
    let mut many = CustomerEntitlements::for_account(PRODUCT, ACCOUNT).license(LICENSE);
    for i in 0..30 {
        many = many.with(TestEntitlement::integer(format!("dim-{i:02}"), i));
    }
    emu.set_entitlements(many).expect("valid");
    emu.set_entitlements(
        CustomerEntitlements::for_customer(PRODUCT, "cust-legacy")
            .account(OTHER_ACCOUNT)
            .with(TestEntitlement::double("storage-tb", 2.5))
            .with(TestEntitlement::boolean("sso", true).expires_at(1_900_000_000))
            .with(TestEntitlement::string("tier", "gold")),
    )
    .expect("valid");
    emu.set_entitlements(
        CustomerEntitlements::for_account("prod-other", ACCOUNT)
            .with(TestEntitlement::integer("dim-00", 99)),
    )
    .expect("valid");
}

fn dimensions(
    output: &entitlement::operation::get_entitlements::GetEntitlementsOutput,
) -> Vec<String> {
    output
        .entitlements()
        .iter()
        .filter_map(|e| e.dimension().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn get_entitlements_pages_through_more_than_25() {
    let emu = start().await;
    seed(&emu);
    let client = entitlement_client(emu.endpoint());
    let account = || vec![ACCOUNT.to_owned()];

    let first = client
        .get_entitlements()
        .product_code(PRODUCT)
        .filter(FilterName::CustomerAwsAccountId, account())
        .send()
        .await
        .expect("first page");
    assert_eq!(first.entitlements().len(), 25);
    let token = first.next_token().expect("more follow").to_owned();
    let second = client
        .get_entitlements()
        .product_code(PRODUCT)
        .filter(FilterName::CustomerAwsAccountId, account())
        .next_token(token)
        .send()
        .await
        .expect("second page");
    assert_eq!(second.entitlements().len(), 5);
    assert_eq!(second.next_token(), None);

    // The SDK's own paginator, with a smaller page, sees every entitlement exactly once.
    let pages: Vec<_> = client
        .get_entitlements()
        .product_code(PRODUCT)
        .filter(FilterName::CustomerAwsAccountId, account())
        .max_results(7)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("all pages");
    assert_eq!(
        pages
            .iter()
            .map(|p| p.entitlements().len())
            .collect::<Vec<_>>(),
        [7, 7, 7, 7, 2]
    );
    let all: Vec<String> = pages.iter().flat_map(dimensions).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("dim-{i:02}")).collect();
    assert_eq!(all, expected);

    let stats = emu.stats();
    assert_eq!((stats.entitlement_calls, stats.calls), (7, 7));
}

#[tokio::test]
async fn get_entitlements_filters_and_values() {
    let emu = start().await;
    seed(&emu);
    let client = entitlement_client(emu.endpoint());
    let query = |name: FilterName, values: &[&str]| {
        client
            .get_entitlements()
            .product_code(PRODUCT)
            .filter(name, values.iter().map(|v| (*v).to_owned()).collect())
            .send()
    };

    let legacy = query(FilterName::CustomerIdentifier, &["cust-legacy"])
        .await
        .expect("ok");
    assert_eq!(dimensions(&legacy), ["storage-tb", "sso", "tier"]);
    let by_dimension = |d: &str| {
        legacy
            .entitlements()
            .iter()
            .find(|e| e.dimension() == Some(d))
            .expect("present")
            .clone()
    };
    let storage = by_dimension("storage-tb");
    assert_eq!(storage.value().and_then(|v| v.double_value()), Some(2.5));
    assert_eq!(storage.customer_identifier(), Some("cust-legacy"));
    assert_eq!(storage.customer_aws_account_id(), Some(OTHER_ACCOUNT));
    assert_eq!(storage.product_code(), Some(PRODUCT));
    let sso = by_dimension("sso");
    assert_eq!(sso.value().and_then(|v| v.boolean_value()), Some(true));
    assert_eq!(sso.expiration_date().map(|d| d.secs()), Some(1_900_000_000));
    let tier = by_dimension("tier");
    assert_eq!(tier.value().and_then(|v| v.string_value()), Some("gold"));
    assert_eq!(tier.expiration_date(), None);

    let by_account = query(FilterName::CustomerAwsAccountId, &[OTHER_ACCOUNT])
        .await
        .expect("ok");
    assert_eq!(dimensions(&by_account), ["storage-tb", "sso", "tier"]);

    let by_license = query(FilterName::LicenseArn, &[LICENSE]).await.expect("ok");
    assert_eq!(by_license.entitlements().len(), 25);
    let seat = &by_license.entitlements()[3];
    assert_eq!(seat.license_arn(), Some(LICENSE));
    assert_eq!(seat.value().and_then(|v| v.integer_value()), Some(3));
    assert_eq!(seat.customer_identifier(), None);

    // Values OR within a filter; filters AND across keys; other products never leak in.
    let by_dimension = query(FilterName::Dimension, &["dim-00", "tier"])
        .await
        .expect("ok");
    assert_eq!(dimensions(&by_dimension), ["dim-00", "tier"]);
    let both = client
        .get_entitlements()
        .product_code(PRODUCT)
        .filter(FilterName::Dimension, vec!["dim-00".into(), "tier".into()])
        .filter(FilterName::CustomerAwsAccountId, vec![ACCOUNT.into()])
        .send()
        .await
        .expect("ok");
    assert_eq!(dimensions(&both), ["dim-00"]);
    assert_eq!(
        both.entitlements()[0]
            .value()
            .and_then(|v| v.integer_value()),
        Some(0)
    );
    let nothing = query(FilterName::CustomerAwsAccountId, &["999999999999"])
        .await
        .expect("ok");
    assert!(nothing.entitlements().is_empty());
    assert_eq!(nothing.next_token(), None);
}

#[tokio::test]
async fn get_entitlements_rejects_invalid_parameters() {
    let emu = start().await;
    seed(&emu);
    let client = entitlement_client(emu.endpoint());
    let invalid = |result: Result<_, entitlement::error::SdkError<GetEntitlementsError, _>>| {
        matches!(
            result.map_err(|e| e.into_service_error()),
            Err(GetEntitlementsError::InvalidParameterException(_))
        )
    };
    let mutually_exclusive = client
        .get_entitlements()
        .product_code(PRODUCT)
        .filter(FilterName::CustomerIdentifier, vec!["cust-legacy".into()])
        .filter(FilterName::CustomerAwsAccountId, vec![ACCOUNT.into()])
        .send()
        .await;
    assert!(invalid(mutually_exclusive));
    for max in [0, 26] {
        let result = client
            .get_entitlements()
            .product_code(PRODUCT)
            .max_results(max)
            .send()
            .await;
        assert!(invalid(result), "MaxResults {max}");
    }
    let made_up = client
        .get_entitlements()
        .product_code(PRODUCT)
        .next_token("made-up")
        .send()
        .await;
    assert!(invalid(made_up));
    let empty_values = client
        .get_entitlements()
        .product_code(PRODUCT)
        .filter(FilterName::Dimension, Vec::new())
        .send()
        .await;
    assert!(invalid(empty_values));
    assert_eq!(emu.stats().rejected, 5);
}

#[tokio::test]
async fn get_entitlements_has_its_own_quota() {
    let emu = RunningEmulator::start(EmulatorSettings {
        // One call every two seconds, burst one.
        entitlement_quota: Some(0.5),
        quota: Some(100.0),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    seed(&emu);
    let client = entitlement_client(emu.endpoint());
    let started = std::time::Instant::now();
    let mut passed = Vec::new();
    for _ in 0..6 {
        match client
            .get_entitlements()
            .product_code(PRODUCT)
            .send()
            .await
            .map_err(|e| e.into_service_error())
        {
            Ok(_) => passed.push(true),
            Err(GetEntitlementsError::ThrottlingException(_)) => passed.push(false),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    // The burst passes; beyond it only what refilled while the calls ran.
    let refilled = (started.elapsed().as_secs_f64() * 0.5).floor() as usize;
    let ok = passed.iter().filter(|p| **p).count();
    assert!(passed[0], "{passed:?}");
    assert!(ok <= 1 + refilled, "{passed:?}");
    let throttled = (6 - ok) as u64;
    assert!(throttled > 0, "{passed:?}");
    // ResolveCustomer's bucket is another one: still open.
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    assert_eq!(kinds(&client_for(&emu), &token, 3).await, ["ok"; 3]);
    let stats = emu.stats();
    assert_eq!(stats.entitlement_throttled, throttled);
    assert_eq!(stats.throttled, 0);

    // errorRate and disabled apply too, answered with the model's InternalServiceErrorException.
    emu.configure(|s| {
        s.entitlement_quota = None;
        s.disabled = true;
    });
    let error = client
        .get_entitlements()
        .product_code(PRODUCT)
        .send()
        .await
        .expect_err("disabled")
        .into_service_error();
    assert!(
        matches!(
            error,
            GetEntitlementsError::InternalServiceErrorException(_)
        ),
        "{error:?}"
    );
}

fn client_for(emu: &RunningEmulator) -> Client {
    client(emu.endpoint())
}

#[tokio::test]
async fn entitlements_control_endpoint() {
    let emu = start().await;
    let endpoint = emu.endpoint();
    let body = json!({
        "productCode": PRODUCT,
        "customerAWSAccountId": ACCOUNT,
        "licenseArn": LICENSE,
        "entitlements": [
            {"Dimension": "seats", "Value": {"IntegerValue": 10}, "ExpirationDate": 1_900_000_000},
            {"Dimension": "sso", "Value": {"BooleanValue": false}},
        ],
    });
    let (status, echoed) = http(
        &endpoint,
        "POST",
        "/emulator/entitlements",
        &[],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{echoed}");
    let client = entitlement_client(endpoint.clone());
    let output = client
        .get_entitlements()
        .product_code(PRODUCT)
        .send()
        .await
        .expect("ok");
    assert_eq!(dimensions(&output), ["seats", "sso"]);
    assert_eq!(
        output.entitlements()[0]
            .value()
            .and_then(|v| v.integer_value()),
        Some(10)
    );

    // Replacing the customer's set, then bad bodies that change nothing.
    let replacement = json!({"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT,
        "entitlements": [{"Dimension": "seats", "Value": {"IntegerValue": 20}}]});
    let (status, _) = http(
        &endpoint,
        "POST",
        "/emulator/entitlements",
        &[],
        &replacement.to_string(),
    )
    .await;
    assert_eq!(status, 200);
    for bad in [
        json!({"productCode": PRODUCT, "entitlements": []}),
        json!({"productCode": PRODUCT, "customerAWSAccountId": "42", "entitlements": []}),
        json!({"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT, "licenseArn": "arn:l"}),
        json!({"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT,
               "entitlements": [{"Dimension": "x", "Value": {}}]}),
        json!({"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT, "extra": 1}),
    ] {
        let (status, error) = http(
            &endpoint,
            "POST",
            "/emulator/entitlements",
            &[],
            &bad.to_string(),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let output = client
        .get_entitlements()
        .product_code(PRODUCT)
        .send()
        .await
        .expect("ok");
    // The in-process setter refuses the same values.
    assert!(emu
        .set_entitlements(CustomerEntitlements::for_account(PRODUCT, "42"))
        .is_err());
    // The whole set was replaced: one dimension, new value, no license any more.
    assert_eq!(dimensions(&output), ["seats"]);
    let seats = &output.entitlements()[0];
    assert_eq!(seats.value().and_then(|v| v.integer_value()), Some(20));
    assert_eq!(seats.license_arn(), None);
    assert_eq!(seats.customer_aws_account_id(), Some(ACCOUNT));
}

// ---- strictAuth, error headers, over-size bodies ----

#[tokio::test]
async fn strict_auth_accepts_signed_sdk_calls_and_refuses_unsigned_ones() {
    let emu = RunningEmulator::start(EmulatorSettings {
        strict_auth: true,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    seed(&emu);
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    assert_eq!(kinds(&client_for(&emu), &token, 1).await, ["ok"]);
    entitlement_client(emu.endpoint())
        .get_entitlements()
        .product_code(PRODUCT)
        .send()
        .await
        .expect("signed GetEntitlements passes");

    let body = json!({ "RegistrationToken": token }).to_string();
    let target = ("X-Amz-Target", "AWSMPMeteringService.ResolveCustomer");
    let (status, head, error) =
        http_with_headers(&emu.endpoint(), "POST", "/", &[target], &body).await;
    assert_eq!(status, 403);
    assert_eq!(error["__type"], "MissingAuthenticationTokenException");
    assert!(
        head.contains("x-amzn-errortype: missingauthenticationtokenexception"),
        "{head}"
    );

    let wrong_service = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/marketplacemetering/aws4_request, SignedHeaders=host, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let (status, error) = http(
        &emu.endpoint(),
        "POST",
        "/",
        &[target, ("Authorization", wrong_service)],
        &body,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error["__type"], "InvalidSignatureException");

    let stats = emu.stats();
    assert_eq!((stats.calls, stats.rejected, stats.resolved), (4, 2, 1));

    // Off: the same unsigned request resolves.
    emu.configure(|s| s.strict_auth = false);
    let (status, _) = http(&emu.endpoint(), "POST", "/", &[target], &body).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn errors_name_their_type_in_a_header_too() {
    let emu = start().await;
    let token = encode(TestToken::new(ACCOUNT, PRODUCT).throttle(1));
    let body = json!({ "RegistrationToken": token }).to_string();
    let target = ("X-Amz-Target", "AWSMPMeteringService.ResolveCustomer");
    let (status, head, error) =
        http_with_headers(&emu.endpoint(), "POST", "/", &[target], &body).await;
    assert_eq!(
        (status, &error["__type"]),
        (400, &json!("ThrottlingException"))
    );
    assert!(
        head.contains("x-amzn-errortype: throttlingexception"),
        "{head}"
    );
    let (status, head, _) = http_with_headers(&emu.endpoint(), "POST", "/", &[target], &body).await;
    assert_eq!(status, 200);
    assert!(!head.contains("x-amzn-errortype"), "{head}");
    let (_, head, _) = http_with_headers(&emu.endpoint(), "POST", "/", &[], &body).await;
    assert!(
        head.contains("x-amzn-errortype: unknownoperationexception"),
        "{head}"
    );
}

#[tokio::test]
async fn over_size_bodies_get_an_error_the_sdk_can_read() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let huge = "x".repeat(1024 * 1024 + 1);
    let error = resolve(&client, &huge).await.expect_err("refused");
    assert_eq!(
        error.code(),
        Some("RequestEntityTooLargeException"),
        "{error:?}"
    );
    assert!(error.message().is_some_and(|m| m.contains("bytes")));
    // The emulator keeps serving.
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    assert_eq!(kinds(&client, &token, 1).await, ["ok"]);
    let stats = emu.stats();
    assert_eq!((stats.calls, stats.rejected), (2, 1));
}

#[tokio::test]
async fn get_entitlements_over_aws_json_too() {
    let emu = start().await;
    seed(&emu);
    // Current SDKs send RPC v2 CBOR; the CLI, boto3 and older SDKs send awsJson 1.1.
    let config = entitlement_config(emu.endpoint())
        .protocol(aws_smithy_json::protocol::aws_json_rpc::AwsJsonRpcProtocol::aws_json_1_1())
        .build();
    let client = entitlement::Client::from_conf(config);
    let pages: Vec<_> = client
        .get_entitlements()
        .product_code(PRODUCT)
        .max_results(25)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("all pages");
    let all: Vec<String> = pages.iter().flat_map(dimensions).collect();
    assert_eq!(all.len(), 33);
    let sso = pages
        .iter()
        .flat_map(|p| p.entitlements())
        .find(|e| e.dimension() == Some("sso"))
        .expect("present");
    assert_eq!(sso.expiration_date().map(|d| d.secs()), Some(1_900_000_000));
    assert_eq!(sso.value().and_then(|v| v.boolean_value()), Some(true));

    let error = client
        .get_entitlements()
        .product_code(PRODUCT)
        .max_results(30)
        .send()
        .await
        .expect_err("invalid")
        .into_service_error();
    assert!(
        matches!(error, GetEntitlementsError::InvalidParameterException(_)),
        "{error:?}"
    );
}

// ---- Judged on arrival (issue #19) ----

fn metering_client_with_timeout(endpoint: String, timeout: Duration) -> Client {
    let config = aws_sdk_marketplacemetering::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            aws_sdk_marketplacemetering::config::timeout::TimeoutConfig::builder()
                .operation_timeout(timeout)
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// The latency outlasts the client's patience by far, so the first calls can only have been
/// judged when they arrived.
const LONG_LATENCY_MS: u64 = 20_000;
const IMPATIENT: Duration = Duration::from_millis(1_000);

#[tokio::test]
async fn a_single_use_token_is_spent_even_when_the_client_times_out() {
    let emu = RunningEmulator::start(EmulatorSettings {
        single_use: true,
        latency_ms: LONG_LATENCY_MS,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let impatient = metering_client_with_timeout(emu.endpoint(), IMPATIENT);
    let token = encode(TestToken::new(ACCOUNT, PRODUCT));
    let error = impatient
        .resolve_customer()
        .registration_token(&token)
        .send()
        .await
        .expect_err("times out");
    assert!(
        matches!(
            error,
            aws_sdk_marketplacemetering::error::SdkError::TimeoutError(_)
        ),
        "{error:?}"
    );
    // Judged on arrival: counted before the answer was due.
    assert_eq!((emu.stats().calls, emu.stats().resolved), (1, 1));

    emu.configure(|s| s.latency_ms = 0);
    assert_eq!(
        kinds(&client(emu.endpoint()), &token, 1).await,
        ["ExpiredToken"]
    );
    let stats = emu.stats();
    assert_eq!((stats.resolved, stats.expired), (1, 1));
}

#[tokio::test]
async fn entitlements_and_metering_are_judged_on_arrival_too() {
    let emu = RunningEmulator::start(EmulatorSettings {
        latency_ms: LONG_LATENCY_MS,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    seed(&emu);
    let config = entitlement_config(emu.endpoint())
        .timeout_config(
            entitlement::config::timeout::TimeoutConfig::builder()
                .operation_timeout(IMPATIENT)
                .build(),
        )
        .build();
    let error = entitlement::Client::from_conf(config)
        .get_entitlements()
        .product_code(PRODUCT)
        .send()
        .await
        .expect_err("times out");
    assert!(
        matches!(error, entitlement::error::SdkError::TimeoutError(_)),
        "{error:?}"
    );
    assert_eq!(emu.stats().entitlement_calls, 1);

    let impatient = metering_client_with_timeout(emu.endpoint(), IMPATIENT);
    // A legacy record: the raw SDK can send no account-only record (see below).
    let legacy = UsageRecord::builder()
        .timestamp(DateTime::from(SystemTime::now()))
        .customer_identifier("cust-legacy")
        .dimension("api_calls")
        .quantity(7)
        .build()
        .expect("built");
    let error = impatient
        .batch_meter_usage()
        .product_code(PRODUCT)
        .usage_records(legacy)
        .send()
        .await
        .expect_err("times out");
    assert!(
        matches!(
            error,
            aws_sdk_marketplacemetering::error::SdkError::TimeoutError(_)
        ),
        "{error:?}"
    );
    // The record was metered although the caller never saw the answer.
    let metered = emu.metered_records();
    assert_eq!(metered.len(), 1, "{metered:?}");
    assert_eq!(metered[0].quantity, 7);
    assert_eq!(
        metered[0].customer_identifier.as_deref(),
        Some("cust-legacy")
    );
    assert_eq!(emu.stats().records_metered, 1);
}

// ---- BatchMeterUsage on the wire (issue #21) ----

use aws_sdk_marketplacemetering::operation::batch_meter_usage::BatchMeterUsageError;
use aws_sdk_marketplacemetering::primitives::DateTime;
use aws_sdk_marketplacemetering::types::{UsageRecord, UsageRecordResultStatus};

/// A record for `account` now, built as the SDK's own users build one.
fn usage(account: &str, quantity: i32) -> UsageRecord {
    UsageRecord::builder()
        .timestamp(DateTime::from(SystemTime::now()))
        .customer_aws_account_id(account)
        .dimension("api_calls")
        .quantity(quantity)
        .build()
        .expect("timestamp and dimension set")
}

#[tokio::test]
async fn the_sdk_sends_an_empty_customer_identifier_and_the_emulator_refuses_it() {
    let emu = start().await;
    // Known through its entitlements, so only the empty identifier can be wrong.
    seed(&emu);
    let error = client_for(&emu)
        .batch_meter_usage()
        .product_code(PRODUCT)
        .usage_records(usage(ACCOUNT, 1))
        .send()
        .await
        .expect_err("refused")
        .into_service_error();
    assert_eq!(error.code(), Some("ValidationException"), "{error:?}");
    assert!(
        error
            .message()
            .is_some_and(|m| m.contains("usageRecords.1.member.customerIdentifier")),
        "{error:?}"
    );
    assert!(emu.metered_records().is_empty());
    assert_eq!(emu.stats().rejected, 1);

    // The same record as raw JSON without the member is accepted.
    let body = json!({"ProductCode": PRODUCT, "UsageRecords": [{
        "Timestamp": unix_now(), "CustomerAWSAccountId": ACCOUNT, "Dimension": "api_calls",
        "Quantity": 1}]});
    let target = ("X-Amz-Target", "AWSMPMeteringService.BatchMeterUsage");
    let (status, answer) = http(&emu.endpoint(), "POST", "/", &[target], &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["Results"][0]["Status"], "Success");
    assert!(answer["Results"][0]["MeteringRecordId"].is_string());
    assert_eq!(answer["UnprocessedRecords"], json!([]));
}

#[tokio::test]
async fn legacy_records_through_the_sdk_and_more_than_25_refused() {
    let emu = start().await;
    seed(&emu);
    let legacy = UsageRecord::builder()
        .timestamp(DateTime::from(SystemTime::now()))
        .customer_identifier("cust-legacy")
        .dimension("api_calls")
        .quantity(2)
        .build()
        .expect("built");
    let output = client_for(&emu)
        .batch_meter_usage()
        .product_code(PRODUCT)
        .usage_records(legacy.clone())
        .send()
        .await
        .expect("accepted");
    let result = &output.results()[0];
    assert_eq!(result.status(), Some(&UsageRecordResultStatus::Success));
    assert_eq!(
        result.usage_record().map(|r| r.customer_identifier()),
        Some("cust-legacy")
    );

    let error = client_for(&emu)
        .batch_meter_usage()
        .product_code(PRODUCT)
        .set_usage_records(Some(vec![legacy; 26]))
        .send()
        .await
        .expect_err("refused")
        .into_service_error();
    assert_eq!(error.code(), Some("ValidationException"), "{error:?}");
    assert!(!matches!(
        error,
        BatchMeterUsageError::ThrottlingException(_)
    ));
}

#[tokio::test]
async fn subscribers_and_metering_control_endpoints() {
    let emu = start().await;
    let endpoint = emu.endpoint();
    let license = "arn:aws:license-manager::123456789012:license:l-abc";
    let (status, list) = http(
        &endpoint,
        "POST",
        "/emulator/subscribers",
        &[],
        &json!({"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT, "licenseArn": license})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list,
        json!([{"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT, "licenseArn": license}])
    );
    for bad in [
        json!({"productCode": PRODUCT}),
        json!({"productCode": PRODUCT, "customerAWSAccountId": "42"}),
        json!({"productCode": PRODUCT, "customerIdentifier": "c", "licenseArn": license}),
        json!({"productCode": "a b", "customerAWSAccountId": ACCOUNT}),
        json!({"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT, "extra": 1}),
    ] {
        let (status, error) = http(
            &endpoint,
            "POST",
            "/emulator/subscribers",
            &[],
            &bad.to_string(),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // By license: no ProductCode, the license names the product.
    let now = unix_now();
    let body = json!({"UsageRecords": [{
        "Timestamp": now, "CustomerAWSAccountId": ACCOUNT, "LicenseArn": license,
        "Dimension": "api_calls", "Quantity": 5,
        "UsageAllocations": [{"AllocatedUsageQuantity": 2, "Tags": [{"Key": "team", "Value": "a"}]},
                             {"AllocatedUsageQuantity": 3}]}]});
    let target = ("X-Amz-Target", "AWSMPMeteringService.BatchMeterUsage");
    let (status, answer) = http(&endpoint, "POST", "/", &[target], &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["Results"][0]["MeteringRecordId"].clone();
    let (status, metered) = http(&endpoint, "GET", "/emulator/metering", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(
        metered,
        json!([{"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT, "licenseArn": license,
                "dimension": "api_calls", "hour": now - now % 3600, "timestamp": now,
                "quantity": 5, "meteringRecordId": id,
                "allocations": [{"AllocatedUsageQuantity": 2, "Tags": [{"Key": "team", "Value": "a"}]},
                                {"AllocatedUsageQuantity": 3}]}])
    );

    // Unsubscribing by account removes the license too: the license is then unknown.
    let (status, list) = http(
        &endpoint,
        "POST",
        "/emulator/subscribers",
        &[],
        &json!({"productCode": PRODUCT, "customerAWSAccountId": ACCOUNT, "subscribed": false})
            .to_string(),
    )
    .await;
    assert_eq!((status, list), (200, json!([])));
    let (status, head, error) =
        http_with_headers(&endpoint, "POST", "/", &[target], &body.to_string()).await;
    assert_eq!(
        (status, &error["__type"]),
        (400, &json!("InvalidLicenseException"))
    );
    assert!(
        head.contains("x-amzn-errortype: invalidlicenseexception"),
        "{head}"
    );

    let stats = emu.stats();
    assert_eq!(
        (
            stats.calls,
            stats.metering_calls,
            stats.metering_refused,
            stats.records_metered
        ),
        (2, 2, 1, 1)
    );
    emu.reset();
    assert!(emu.metered_records().is_empty());
}
