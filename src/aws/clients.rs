//! The AWS clients, built from the SDK's standard configuration chain with retries set on purpose:
//! the SDK retries SQS and SNS calls (the only retry layer for those), and does not retry
//! ResolveCustomer, whose retries are the worker's own backoff (`resolve::Resolver`).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::Settings;

/// Connection attempts that take longer than this fail fast and count as transient errors.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub metering: aws_sdk_marketplacemetering::Client,
}

impl Clients {
    /// Credentials, region and endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`,
    /// `AWS_ENDPOINT_URL_SNS`, `AWS_ENDPOINT_URL_MARKETPLACE_METERING`) from the SDK's own chain.
    pub async fn from_environment(settings: &Settings) -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_sdk_config(&shared, settings)
    }

    pub fn from_sdk_config(shared: &SdkConfig, settings: &Settings) -> Self {
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
        let metering_timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(settings.resolve.attempt_timeout()))
            .operation_attempt_timeout(settings.resolve.attempt_timeout())
            .build();

        let sqs = aws_sdk_sqs::config::Builder::from(shared)
            .retry_config(sdk_retry.clone())
            .timeout_config(sqs_timeouts)
            .build();
        let sns = aws_sdk_sns::config::Builder::from(shared)
            .retry_config(sdk_retry)
            .timeout_config(sns_timeouts)
            .build();
        let metering = aws_sdk_marketplacemetering::config::Builder::from(shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(metering_timeouts)
            .build();
        Clients {
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
            metering: aws_sdk_marketplacemetering::Client::from_conf(metering),
        }
    }
}
