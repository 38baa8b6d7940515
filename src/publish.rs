//! Publishing resolved customers to SNS, with the attributes subscribers filter on.

use std::sync::Arc;

use aws_sdk_sns::error::DisplayErrorContext;
use aws_sdk_sns::types::MessageAttributeValue;

use crate::message::CustomerEvent;
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
#[error("SNS Publish failed: {message}")]
pub struct PublishError {
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Publisher {
    sns: aws_sdk_sns::Client,
    topic_arn: String,
    telemetry: Option<Arc<Telemetry>>,
}

impl Publisher {
    pub fn new(sns: aws_sdk_sns::Client, topic_arn: String) -> Self {
        Publisher {
            sns,
            topic_arn,
            telemetry: None,
        }
    }

    /// Counts every call in `mpr_aws_calls`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    pub fn is_fifo(&self) -> bool {
        self.topic_arn.ends_with(".fifo")
    }

    /// Publishes one event; returns the SNS message id.
    pub async fn publish(&self, event: &CustomerEvent) -> Result<String, PublishError> {
        let attribute = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| PublishError {
                    message: e.to_string(),
                })
        };
        let mut request = self
            .sns
            .publish()
            .topic_arn(&self.topic_arn)
            .message(event.to_json())
            .message_attributes("eventType", attribute(event.event_type)?)
            .message_attributes("productCode", attribute(&event.product_code)?)
            .message_attributes(
                "customerAWSAccountId",
                attribute(&event.customer_aws_account_id)?,
            );
        if self.is_fifo() {
            request = request
                .message_group_id(&event.customer_aws_account_id)
                .message_deduplication_id(event.event_id.as_str());
        }
        let result = request.send().await;
        if let Some(t) = &self.telemetry {
            t.metrics.aws_call("sns", "Publish", result.is_ok());
        }
        let output = result.map_err(|e| PublishError {
            message: DisplayErrorContext(e).to_string(),
        })?;
        Ok(output.message_id.unwrap_or_default())
    }
}
