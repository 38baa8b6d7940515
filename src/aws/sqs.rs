//! The SQS side: receive from the token queue, change visibility, delete in batches, and send
//! dead-letters.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::contract::{dlq_attr, DeadLetter};
use crate::observe::metrics::Telemetry;
use crate::worker::batch::{entry_results, BatchSink};

/// An SQS call that failed after the SDK's own retries.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    pub message: String,
}

impl QueueError {
    fn new(operation: &'static str, error: impl std::error::Error) -> Self {
        QueueError {
            operation,
            message: DisplayErrorContext(error).to_string(),
        }
    }
}

/// One message as received. `body` may hold a token: it is never logged.
#[derive(Clone)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: Option<DateTime<Utc>>,
    /// Present on FIFO queues.
    pub group_id: Option<String>,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("message_id", &self.message_id)
            .field("receive_count", &self.receive_count)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl ReceivedMessage {
    pub fn enqueued_at(&self) -> Option<String> {
        self.sent_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

/// A receipt handle to delete, with the id that ties a batch result back to it.
#[derive(Debug, Clone)]
pub struct DeleteEntry {
    pub message_id: String,
    pub receipt_handle: String,
}

#[derive(Debug, Clone)]
pub struct Queue {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
    telemetry: Option<Arc<Telemetry>>,
}

impl Queue {
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: String, dlq_url: String) -> Self {
        Queue {
            sqs,
            queue_url,
            dlq_url,
            telemetry: None,
        }
    }

    /// Counts every call in `mpr_aws_calls`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    fn count<T, E>(&self, operation: &'static str, result: Result<T, E>) -> Result<T, QueueError>
    where
        E: std::error::Error,
    {
        if let Some(t) = &self.telemetry {
            t.metrics.aws_call("sqs", operation, result.is_ok());
        }
        result.map_err(|e| QueueError::new(operation, e))
    }

    pub fn url(&self) -> &str {
        &self.queue_url
    }

    pub async fn receive(
        &self,
        max: i32,
        wait_secs: i32,
        visibility_secs: i32,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_secs)
            .visibility_timeout(visibility_secs)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await;
        let output = self.count("ReceiveMessage", output)?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let attrs = m.attributes.unwrap_or_default();
                let get = |name: MessageSystemAttributeName| attrs.get(&name).cloned();
                Some(ReceivedMessage {
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    receive_count: get(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                    sent_at: get(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|ms| ms.parse::<i64>().ok())
                        .and_then(DateTime::from_timestamp_millis),
                    group_id: get(MessageSystemAttributeName::MessageGroupId),
                })
            })
            .collect())
    }

    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let secs = delay.as_secs().min(43_200) as i32;
        let result = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs)
            .send()
            .await;
        self.count("ChangeMessageVisibility", result)?;
        Ok(())
    }

    /// Deletes up to ten messages in one call. The outer error is the call failing; the inner
    /// results are per entry, in the order given, since a batch can partly fail.
    pub async fn delete_batch(
        &self,
        entries: &[DeleteEntry],
    ) -> Result<Vec<Result<(), String>>, QueueError> {
        let request_entries = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&e.receipt_handle)
                    .build()
                    .map_err(|e| QueueError::new("DeleteMessageBatch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(request_entries))
            .send()
            .await;
        let output = self.count("DeleteMessageBatch", output)?;
        Ok(entry_results(
            entries.len(),
            output.successful.into_iter().map(|ok| (ok.id, ())),
            output.failed.into_iter().map(|f| (f.id, f.code, f.message)),
        ))
    }

    /// Sends the original body, unchanged, to the dead-letter queue with the reason attached.
    pub async fn send_dead_letter(
        &self,
        letter: &DeadLetter,
        group_id: Option<&str>,
    ) -> Result<(), QueueError> {
        let string = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| QueueError::new("SendMessage", e))
        };
        let number = |v: u32| {
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(v.to_string())
                .build()
                .map_err(|e| QueueError::new("SendMessage", e))
        };
        let mut request = self
            .sqs
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(&letter.body)
            .message_attributes(dlq_attr::REASON, string(letter.reason.as_str())?)
            .message_attributes(dlq_attr::DETAIL, string(&letter.detail)?)
            .message_attributes(
                dlq_attr::SOURCE_MESSAGE_ID,
                string(&letter.source_message_id)?,
            )
            .message_attributes(dlq_attr::RECEIVE_COUNT, number(letter.receive_count)?)
            .message_attributes(dlq_attr::FAILED_AT, string(&letter.failed_at)?);
        if let Some(event_id) = &letter.event_id {
            request = request.message_attributes(dlq_attr::EVENT_ID, string(event_id.as_str())?);
        }
        if self.dlq_url.ends_with(".fifo") {
            // A FIFO dead-letter queue needs a group; keep the source's so order within it holds,
            // and dedupe on the source message id so a retried send is not a second letter.
            request = request
                .message_group_id(group_id.unwrap_or("mp-resolver"))
                .message_deduplication_id(&letter.source_message_id);
        }
        let result = request.send().await;
        self.count("SendMessage", result)?;
        Ok(())
    }
}

/// Deletes go out through `DeleteMessageBatch`.
#[derive(Debug, Clone)]
pub struct DeleteSink(pub Queue);

impl BatchSink for DeleteSink {
    type Item = DeleteEntry;
    type Output = ();

    async fn send(&self, items: &[DeleteEntry]) -> Result<Vec<Result<(), String>>, String> {
        self.0.delete_batch(items).await.map_err(|e| e.to_string())
    }
}

/// Now, in the RFC 3339 form every timestamp of ours uses.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}
