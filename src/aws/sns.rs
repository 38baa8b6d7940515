//! Publishing resolved customers to SNS, with the attributes subscribers filter on.

use std::sync::Arc;

use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

use crate::aws::error::{describe, entry_results, CallError, EntryFailure};
use crate::aws::is_fifo;
use crate::contract::CustomerEvent;
use crate::observe::events::{AwsCall, BatchEntryFailed};
use crate::observe::metrics::Telemetry;
use crate::worker::batch::BatchSink;

const OP: &str = "PublishBatch";

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
        is_fifo(&self.topic_arn)
    }

    /// Asks SNS for the topic's attributes: it exists and this process may see it.
    pub async fn check(&self) -> Result<(), CallError> {
        let result = self
            .sns
            .get_topic_attributes()
            .topic_arn(&self.topic_arn)
            .send()
            .await;
        if let Some(t) = &self.telemetry {
            AwsCall {
                service: "sns",
                operation: "GetTopicAttributes",
                ok: result.is_ok(),
            }
            .emit(t);
        }
        result
            .map(drop)
            .map_err(|e| CallError::new("GetTopicAttributes", &self.topic_arn, describe(&e)))
    }

    /// Publishes up to ten events in one `PublishBatch`; per-event results in the order given
    /// (each the SNS message id, or why that entry failed).
    pub async fn publish_batch(
        &self,
        events: &[CustomerEvent],
    ) -> Result<Vec<Result<String, EntryFailure>>, CallError> {
        let messages: Vec<SnsMessage> = events.iter().map(SnsMessage::from_event).collect();
        self.publish_messages(&messages).await
    }

    /// Publishes up to ten messages in one `PublishBatch`; per-message results in order.
    pub async fn publish_messages(
        &self,
        messages: &[SnsMessage],
    ) -> Result<Vec<Result<String, EntryFailure>>, CallError> {
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, message)| {
                let mut entry = PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(&message.body);
                for (name, value) in &message.attributes {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()
                        .map_err(|e| CallError::build(OP, &self.topic_arn, e))?;
                    entry = entry.message_attributes(*name, value);
                }
                if self.is_fifo() {
                    entry = entry
                        .message_group_id(&message.group_id)
                        .message_deduplication_id(&message.deduplication_id);
                }
                entry
                    .build()
                    .map_err(|e| CallError::build(OP, &self.topic_arn, e))
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
            AwsCall {
                service: "sns",
                operation: OP,
                ok: result.is_ok(),
            }
            .emit(t);
        }
        let output = result.map_err(|e| CallError::new(OP, &self.topic_arn, describe(&e)))?;
        let results = entry_results(
            messages.len(),
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
        );
        if let Some(t) = &self.telemetry {
            for problem in results.iter().filter_map(|r| r.as_ref().err()) {
                BatchEntryFailed {
                    service: "sns",
                    operation: OP,
                    problem,
                }
                .emit(t);
            }
        }
        Ok(results)
    }
}

/// One message for the topic: the event JSON, the attributes subscribers filter on, and the FIFO
/// group (the customer's account) and deduplication id (the `eventId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsMessage {
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
    pub group_id: String,
    pub deduplication_id: String,
}

impl SnsMessage {
    pub fn from_event(event: &CustomerEvent) -> Self {
        SnsMessage {
            body: event.to_json(),
            attributes: vec![
                ("eventType", event.event_type.to_owned()),
                ("productCode", event.product_code.clone()),
                (
                    "customerAWSAccountId",
                    event.customer_aws_account_id.clone(),
                ),
            ],
            group_id: event.customer_aws_account_id.clone(),
            deduplication_id: event.event_id.as_str().to_owned(),
        }
    }

    /// An event kept as JSON (an `unpublished` dead-letter's `mpr.event`), published as it is;
    /// `None` when it is not an event of ours.
    pub fn from_event_json(json: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        let field = |name: &str| value.get(name)?.as_str().map(str::to_owned);
        let event_id = field("eventId")?;
        let mut attributes = vec![("eventType", field("eventType")?)];
        for name in ["productCode", "customerAWSAccountId"] {
            if let Some(v) = field(name).filter(|v| !v.is_empty()) {
                attributes.push((name, v));
            }
        }
        Some(SnsMessage {
            body: json.to_owned(),
            group_id: field("customerAWSAccountId").unwrap_or_else(|| event_id.clone()),
            deduplication_id: event_id,
            attributes,
        })
    }
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

    async fn send(&self, events: &[CustomerEvent]) -> Vec<Result<String, EntryFailure>> {
        match self.0.publish_batch(events).await {
            Ok(results) => results,
            Err(error) => events
                .iter()
                .map(|_| Err(EntryFailure::whole_call(&error.failure)))
                .collect(),
        }
    }
}
