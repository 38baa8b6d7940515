//! Publishing resolved customers to SNS, with the attributes subscribers filter on.

use std::sync::Arc;

use aws_sdk_sns::error::DisplayErrorContext;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

use crate::worker::batch::{entry_results, BatchSink};

use crate::contract::CustomerEvent;
use crate::observe::metrics::Telemetry;

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

    /// Publishes up to ten events in one `PublishBatch`; per-event results in the order given
    /// (each the SNS message id, or why that entry failed).
    pub async fn publish_batch(
        &self,
        events: &[CustomerEvent],
    ) -> Result<Vec<Result<String, String>>, PublishError> {
        let entries = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let mut entry = PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(event.to_json());
                for (name, value) in attributes(event) {
                    entry = entry.message_attributes(name, string_attribute(value)?);
                }
                if self.is_fifo() {
                    entry = entry
                        .message_group_id(&event.customer_aws_account_id)
                        .message_deduplication_id(event.event_id.as_str());
                }
                entry.build().map_err(|e| PublishError {
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let result = self
            .sns
            .publish_batch()
            .topic_arn(&self.topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await;
        if let Some(t) = &self.telemetry {
            t.metrics.aws_call("sns", "PublishBatch", result.is_ok());
        }
        let output = result.map_err(|e| PublishError {
            message: DisplayErrorContext(e).to_string(),
        })?;
        Ok(entry_results(
            events.len(),
            output
                .successful
                .unwrap_or_default()
                .into_iter()
                .map(|ok| (ok.id.unwrap_or_default(), ok.message_id.unwrap_or_default())),
            output
                .failed
                .unwrap_or_default()
                .into_iter()
                .map(|f| (f.id, f.code, f.message)),
        ))
    }
}

/// The attributes subscribers filter on.
fn attributes(event: &CustomerEvent) -> [(&'static str, &str); 3] {
    [
        ("eventType", event.event_type),
        ("productCode", &event.product_code),
        ("customerAWSAccountId", &event.customer_aws_account_id),
    ]
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, PublishError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| PublishError {
            message: e.to_string(),
        })
}

/// SNS caps a whole `PublishBatch` request's payload at 256 KiB.
pub const MAX_BATCH_BYTES: usize = 262_144;

/// Events go out through `PublishBatch`.
#[derive(Debug, Clone)]
pub struct PublishSink(pub Publisher);

impl BatchSink for PublishSink {
    type Item = CustomerEvent;
    type Output = String;

    fn weight(&self, event: &CustomerEvent) -> usize {
        // The message plus its attributes' names, types and values, with room to spare.
        event.to_json().len() + 256
    }

    async fn send(&self, events: &[CustomerEvent]) -> Result<Vec<Result<String, String>>, String> {
        self.0
            .publish_batch(events)
            .await
            .map_err(|e| e.to_string())
    }
}
