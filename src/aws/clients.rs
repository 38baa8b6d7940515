//! The AWS clients, built from the SDK's standard configuration chain with retries set on purpose:
//! the SDK retries SQS and SNS calls (the only retry layer for those), and does not retry
//! ResolveCustomer or GetEntitlements, whose retries are the worker's own backoff
//! (`metering::Resolver`). The two Marketplace clients may use an assumed role
//! (`[marketplace] role_arn`), since they must act as the seller account; SQS and SNS never do.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_marketplacemetering::config::SharedCredentialsProvider;
use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::BoxError;
use aws_smithy_async::time::SystemTimeSource;
use aws_smithy_json::protocol::aws_json_rpc::AwsJsonRpcProtocol;

use crate::config::{IntakeSettings, MarketplaceSettings, Settings};

/// Connection attempts that take longer than this fail fast and count as transient errors.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The AWS Marketplace Entitlement Service has one endpoint, in us-east-1.
pub const ENTITLEMENT_REGION: &str = "us-east-1";

/// The STS session name of the assumed role, as CloudTrail shows it in the seller account.
pub const ROLE_SESSION_NAME: &str = "mp-resolver";

#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub metering: aws_sdk_marketplacemetering::Client,
    pub entitlement: aws_sdk_marketplaceentitlement::Client,
    /// The credentials the two Marketplace clients sign with (the assumed role's when one is
    /// set), so `check` can ask for them on their own and report a failed AssumeRole as such.
    pub marketplace_credentials: Option<SharedCredentialsProvider>,
}

impl Clients {
    /// Credentials, region and endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`,
    /// `AWS_ENDPOINT_URL_SNS`, `AWS_ENDPOINT_URL_MARKETPLACE_METERING`,
    /// `AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE`) from the SDK's own chain, and the
    /// assumed role of `[marketplace]` when one is set.
    pub async fn from_environment(settings: &Settings) -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_sdk_config_with_role(&shared, settings).await
    }

    /// Like [`Clients::from_sdk_config`], with the Marketplace clients on the assumed role of
    /// `[marketplace] role_arn` when one is set.
    pub async fn from_sdk_config_with_role(shared: &SdkConfig, settings: &Settings) -> Self {
        let marketplace = marketplace_sdk_config(shared, &settings.marketplace).await;
        Self::build(shared, &marketplace, settings)
    }

    /// Every client on `shared` as it is (no assumed role).
    pub fn from_sdk_config(shared: &SdkConfig, settings: &Settings) -> Self {
        Self::build(shared, shared, settings)
    }

    fn build(shared: &SdkConfig, marketplace: &SdkConfig, settings: &Settings) -> Self {
        let sdk_retry = RetryConfig::standard().with_max_attempts(settings.aws.max_attempts);
        // A long poll holds the request open for receive_wait_secs; give it room on top.
        let sqs_timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(Duration::from_secs(
                settings.worker.receive_wait_secs.max(0) as u64 + 10,
            ))
            .build();
        let sns_timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(Duration::from_secs(10))
            .build();
        let marketplace_timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(settings.resolve.attempt_timeout()))
            .operation_attempt_timeout(settings.resolve.attempt_timeout())
            .build();

        let sqs = aws_sdk_sqs::config::Builder::from(shared)
            .interceptor(KeepAlive)
            .retry_config(sdk_retry.clone())
            .timeout_config(sqs_timeouts)
            .build();
        let sns = aws_sdk_sns::config::Builder::from(shared)
            .interceptor(KeepAlive)
            .retry_config(sdk_retry)
            .timeout_config(sns_timeouts)
            .build();
        let metering = aws_sdk_marketplacemetering::config::Builder::from(marketplace)
            .interceptor(KeepAlive)
            .retry_config(RetryConfig::disabled())
            .timeout_config(marketplace_timeouts.clone())
            .build();
        // The service accepts awsJson 1.1 and Smithy RPC v2 CBOR, and this SDK defaults to CBOR.
        // Pin awsJson 1.1: the protocol the service has always spoken, the one boto3, the AWS CLI
        // and the JS SDK use, and the one the emulator serves.
        let entitlement = aws_sdk_marketplaceentitlement::config::Builder::from(marketplace)
            .protocol(AwsJsonRpcProtocol::aws_json_1_1())
            .interceptor(KeepAlive)
            .region(Region::from_static(ENTITLEMENT_REGION))
            .retry_config(RetryConfig::disabled())
            .timeout_config(marketplace_timeouts)
            .build();
        Clients {
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
            metering: aws_sdk_marketplacemetering::Client::from_conf(metering),
            entitlement: aws_sdk_marketplaceentitlement::Client::from_conf(entitlement),
            marketplace_credentials: marketplace.credentials_provider(),
        }
    }
}

/// Asks a plain-HTTP endpoint to keep the connection open (`Connection: keep-alive`).
///
/// HTTP/1.1 connections are persistent by default, and AWS's endpoints keep them, but LocalStack's
/// gateway (and some proxies) close every connection whose request does not ask for keep-alive,
/// which the SDK's client never does: measured against LocalStack, every call of ours then
/// opened a TCP connection of its own (3,377 connections for 3,377 calls of a 10,000-token
/// backlog, against 70 for the JS SDK's 5,000), and LocalStack spent about half again as much CPU
/// per call. Only `http://` endpoints get the header: over TLS the client may negotiate HTTP/2,
/// where a `Connection` header is illegal (hyper strips it with a warning per request). Added
/// after signing: it is a hop-by-hop header, which a proxy may drop, so it must not be signed.
#[derive(Debug)]
pub struct KeepAlive;

impl Intercept for KeepAlive {
    fn name(&self) -> &'static str {
        "KeepAlive"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        if asks_keep_alive(request.uri()) {
            request.headers_mut().insert("connection", "keep-alive");
        }
        Ok(())
    }
}

fn asks_keep_alive(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

/// Intake's SQS client: `sqs` (credentials, region, endpoint, attempts) with intake's own
/// timeouts. The worker's SQS timeouts leave room for a 20 s long poll; a buyer's browser, behind
/// an ALB that gives up after 60 s idle, cannot wait that long, so one attempt gets
/// `send_attempt_timeout_ms` and every attempt together `send_deadline_ms`.
pub fn for_intake(sqs: &aws_sdk_sqs::Client, intake: &IntakeSettings) -> aws_sdk_sqs::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(intake.send_attempt_timeout()))
        .operation_attempt_timeout(intake.send_attempt_timeout())
        .operation_timeout(intake.send_deadline())
        .build();
    let config = sqs.config().to_builder().timeout_config(timeouts).build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// `shared`, with its credentials replaced by those of the assumed role when one is configured.
/// aws-config's `AssumeRoleProvider` calls STS with `shared`'s own credentials, region and
/// endpoint (`AWS_ENDPOINT_URL_STS`), and the clients' identity cache refreshes the session
/// before it expires.
pub async fn marketplace_sdk_config(shared: &SdkConfig, m: &MarketplaceSettings) -> SdkConfig {
    let Some((role_arn, external_id)) = m.role() else {
        return shared.clone();
    };
    // aws-config's loader always sets a time source; a hand-built SdkConfig may not, and the
    // provider needs one.
    let sts_config = match shared.time_source() {
        Some(_) => shared.clone(),
        None => shared
            .to_builder()
            .time_source(SystemTimeSource::new())
            .build(),
    };
    let mut builder = AssumeRoleProvider::builder(role_arn)
        .session_name(ROLE_SESSION_NAME)
        .configure(&sts_config);
    if let Some(id) = external_id {
        builder = builder.external_id(id);
    }
    let provider = builder.build().await;
    shared
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}

#[cfg(test)]
mod tests {
    use super::asks_keep_alive;

    #[test]
    fn only_plain_http_endpoints_are_asked_to_keep_the_connection() {
        assert!(asks_keep_alive("http://127.0.0.1:4566/"));
        assert!(asks_keep_alive("HTTP://localstack:4566"));
        assert!(!asks_keep_alive("https://sqs.us-east-1.amazonaws.com/"));
        assert!(!asks_keep_alive("http"));
        assert!(!asks_keep_alive(""));
    }
}
