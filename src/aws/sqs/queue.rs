//! The token queue as the worker uses it: one received message, and the [`Queue`] that makes the
//! calls of `aws::sqs` for it, each counted as an [`AwsCall`] event.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{
    change_visibility, change_visibility_chunk, delete_chunk, queue_attributes, receive,
    send_dead_letter, system_attribute, BATCH,
};
use crate::aws::error::{CallError, EntryFailure};
use crate::contract::DeadLetter;
use crate::observe::events::{AwsCall, BatchEntryFailed};
use crate::observe::metrics::Telemetry;

/// One message as the worker received it. `body` may hold a token: it is never logged.
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
    /// `None` for a message without an id or receipt handle (SQS always sends both).
    pub fn from_message(m: Message) -> Option<Self> {
        let get = |name| system_attribute(&m, name).map(str::to_owned);
        let receive_count = get(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let sent_at = get(MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis);
        let group_id = get(MessageSystemAttributeName::MessageGroupId);
        Some(ReceivedMessage {
            message_id: m.message_id?,
            receipt_handle: m.receipt_handle?,
            body: m.body.unwrap_or_default(),
            receive_count,
            sent_at,
            group_id,
        })
    }

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

/// The token queue and its dead-letter queue as the worker uses them: the calls above, each counted
/// as an [`AwsCall`] event.
#[derive(Debug, Clone)]
pub struct Queue {
    sqs: Client,
    queue_url: String,
    dlq_url: String,
    telemetry: Option<Arc<Telemetry>>,
}

impl Queue {
    pub fn new(sqs: Client, queue_url: String, dlq_url: String) -> Self {
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

    pub fn url(&self) -> &str {
        &self.queue_url
    }

    fn count<T>(&self, operation: &'static str, result: &Result<T, CallError>) {
        if let Some(t) = &self.telemetry {
            AwsCall {
                service: "sqs",
                operation,
                ok: result.is_ok(),
            }
            .emit(t);
        }
    }

    /// Asks SQS for the attributes of the token queue and the dead-letter queue: both exist and
    /// this process may use them.
    /// On failure, which of the two it was.
    pub async fn check(&self) -> Result<(), (&'static str, CallError)> {
        for (what, url) in [
            ("queue", &self.queue_url),
            ("dead-letter queue", &self.dlq_url),
        ] {
            let result = queue_attributes(&self.sqs, url).await;
            self.count("GetQueueAttributes", &result);
            result.map_err(|e| (what, e))?;
        }
        Ok(())
    }

    /// Hands back many messages at once (visibility `delay`), ten per call, the calls in parallel;
    /// the receipt handles that could not be handed back, with why.
    pub async fn hand_back_all(
        &self,
        receipt_handles: Vec<String>,
        delay: Duration,
    ) -> Vec<(String, EntryFailure)> {
        let mut calls = tokio::task::JoinSet::new();
        for chunk in receipt_handles.chunks(BATCH) {
            let (queue, chunk) = (self.clone(), chunk.to_vec());
            calls.spawn(async move {
                let result =
                    change_visibility_chunk(&queue.sqs, &queue.queue_url, &chunk, delay).await;
                queue.count("ChangeMessageVisibilityBatch", &result);
                let results = match result {
                    Ok(results) => results,
                    Err(error) => (0..chunk.len())
                        .map(|_| Err(EntryFailure::whole_call(&error.failure)))
                        .collect(),
                };
                chunk
                    .into_iter()
                    .zip(results)
                    .filter_map(|(handle, r)| r.err().map(|e| (handle, e)))
                    .collect::<Vec<_>>()
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = calls.join_next().await {
            failed.extend(done.unwrap_or_default());
        }
        failed
    }

    pub async fn receive(
        &self,
        max: i32,
        wait_secs: i32,
        visibility_secs: i32,
    ) -> Result<Vec<ReceivedMessage>, CallError> {
        let result = receive(&self.sqs, &self.queue_url, max, wait_secs, visibility_secs).await;
        self.count("ReceiveMessage", &result);
        Ok(result?
            .into_iter()
            .filter_map(ReceivedMessage::from_message)
            .collect())
    }

    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), CallError> {
        let result = change_visibility(&self.sqs, &self.queue_url, receipt_handle, delay).await;
        self.count("ChangeMessageVisibility", &result);
        result
    }

    /// Deletes up to ten messages in one call; per-entry results, in the order given.
    pub async fn delete_batch(&self, entries: &[DeleteEntry]) -> Vec<Result<(), EntryFailure>> {
        let handles: Vec<String> = entries.iter().map(|e| e.receipt_handle.clone()).collect();
        let result = delete_chunk(&self.sqs, &self.queue_url, &handles).await;
        self.count("DeleteMessageBatch", &result);
        match result {
            Ok(results) => {
                if let Some(t) = &self.telemetry {
                    for problem in results.iter().filter_map(|r| r.as_ref().err()) {
                        BatchEntryFailed {
                            service: "sqs",
                            operation: "DeleteMessageBatch",
                            problem,
                        }
                        .emit(t);
                    }
                }
                results
            }
            Err(error) => (0..entries.len())
                .map(|_| Err(EntryFailure::whole_call(&error.failure)))
                .collect(),
        }
    }

    pub async fn send_dead_letter(
        &self,
        letter: &DeadLetter,
        group_id: Option<&str>,
    ) -> Result<(), CallError> {
        let result = send_dead_letter(&self.sqs, &self.dlq_url, letter, group_id).await;
        self.count("SendMessage", &result);
        result
    }
}
