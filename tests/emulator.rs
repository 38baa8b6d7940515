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
    (status, body)
}

#[tokio::test]
async fn resolves_a_good_token_with_every_field() {
    let emu = start().await;
    let client = client(emu.endpoint());
    let token = TestToken::new(ACCOUNT, PRODUCT)
        .customer("cust-123")
        .license("arn:aws:license-manager::123456789012:license:l-abc")
        .agreement("agmt-456")
        .expires_at(unix_now() + 3600)
        .encode();

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

    let minimal = resolve(&client, &TestToken::new(ACCOUNT, PRODUCT).encode())
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
    let token = TestToken::new(ACCOUNT, PRODUCT)
        .expires_at(unix_now() - 1)
        .encode();
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
    let token = TestToken::new(ACCOUNT, PRODUCT).throttle(3).encode();
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
    let token = TestToken::new(ACCOUNT, PRODUCT).fail(2).encode();
    assert_eq!(
        kinds(&client, &token, 3).await,
        ["InternalServiceError", "InternalServiceError", "ok"]
    );
    let both = TestToken::new(ACCOUNT, PRODUCT)
        .throttle(2)
        .fail(1)
        .encode();
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
    let token = TestToken::new(ACCOUNT, PRODUCT).encode();
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
    let token = TestToken::new(ACCOUNT, PRODUCT).encode();

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
    let token = TestToken::new(ACCOUNT, PRODUCT).throttle(1).encode();
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
    let token = TestToken::new(ACCOUNT, PRODUCT).encode();
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
        json!({"quota": null, "latencyMs": 0, "errorRate": 0.0, "disabled": false})
    );

    let (status, config) = http(
        &endpoint,
        "POST",
        "/emulator/config",
        &[("Content-Type", "application/json")],
        r#"{"quota": 20, "disabled": true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        json!({"quota": 20.0, "latencyMs": 0, "errorRate": 0.0, "disabled": true})
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
        r#"{"quota": null, "disabled": false}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(config["quota"], Value::Null);

    let good = TestToken::new(ACCOUNT, PRODUCT).fail(1).encode();
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
               "internalErrors": 1, "disabled": 0})
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
    let token = TestToken::new(ACCOUNT, PRODUCT).encode();
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

    // Only well-formed ResolveCustomer calls count.
    assert_eq!(emu.stats().calls, 1);
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
    let token = TestToken::new(ACCOUNT, PRODUCT).encode();
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
