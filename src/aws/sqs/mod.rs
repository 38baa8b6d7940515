//! The SQS adapter, the only code that builds SQS requests: receive, visibility (single and batch),
//! batch delete, batch send, the dead-letter send and queue attributes. The worker uses it through
//! [`Queue`] (which also counts each call); the operator commands call the functions directly.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use chrono::{SecondsFormat, Utc};

use crate::aws::error::{describe, entry_results, AwsFailure, CallError, EntryFailure, Problem};
use crate::aws::is_fifo;
use crate::contract::{dlq_attr, DeadLetter};

mod queue;

pub use queue::{DeleteEntry, Queue, ReceivedMessage};

/// Sends one SQS batch request (the three batch operations differ only in their SDK types).
macro_rules! batch_call {
    ($sqs:expr, $operation:ident, $url:expr, $entries:expr, $op:expr) => {
        $sqs.$operation()
            .queue_url($url)
            .set_entries(Some($entries))
            .send()
            .await
            .map_err(|e| CallError::new($op, $url, describe(&e)))
    };
}

/// Most entries SQS accepts in one batch call.
pub const BATCH: usize = 10;

/// The longest visibility SQS allows (12 hours).
pub const MAX_VISIBILITY_SECS: u64 = 43_200;

/// Now, in the RFC 3339 form every timestamp of ours uses.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------------
// The calls

pub async fn queue_attributes(
    sqs: &Client,
    url: &str,
) -> Result<HashMap<QueueAttributeName, String>, CallError> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map(|out| out.attributes.unwrap_or_default())
        .map_err(|e| CallError::new("GetQueueAttributes", url, describe(&e)))
}

pub async fn queue_arn(sqs: &Client, url: &str) -> Result<String, CallError> {
    let attributes = queue_attributes(sqs, url).await?;
    attributes
        .get(&QueueAttributeName::QueueArn)
        .cloned()
        .ok_or_else(|| {
            CallError::new(
                "GetQueueAttributes",
                url,
                AwsFailure {
                    problem: Problem::Other,
                    code: None,
                    detail: "the answer has no QueueArn".into(),
                },
            )
        })
}

/// Receives up to `max` messages with every message and system attribute, hidden for
/// `visibility_secs`, long-polling up to `wait_secs`.
pub async fn receive(
    sqs: &Client,
    url: &str,
    max: i32,
    wait_secs: i32,
    visibility_secs: i32,
) -> Result<Vec<Message>, CallError> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, BATCH as i32))
        .wait_time_seconds(wait_secs)
        .visibility_timeout(visibility_secs)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map(|out| out.messages.unwrap_or_default())
        .map_err(|e| CallError::new("ReceiveMessage", url, describe(&e)))
}

/// Sets one message's visibility, capped at SQS's 12-hour limit.
pub async fn change_visibility(
    sqs: &Client,
    url: &str,
    receipt_handle: &str,
    delay: Duration,
) -> Result<(), CallError> {
    sqs.change_message_visibility()
        .queue_url(url)
        .receipt_handle(receipt_handle)
        .visibility_timeout(visibility_secs(delay))
        .send()
        .await
        .map(drop)
        .map_err(|e| CallError::new("ChangeMessageVisibility", url, describe(&e)))
}

/// Sets the visibility of up to ten receipt handles in one call; per-entry results in order.
pub async fn change_visibility_chunk(
    sqs: &Client,
    url: &str,
    receipt_handles: &[String],
    delay: Duration,
) -> Result<Vec<Result<(), EntryFailure>>, CallError> {
    const OP: &str = "ChangeMessageVisibilityBatch";
    let entries = entries(receipt_handles, OP, url, |id, handle| {
        ChangeMessageVisibilityBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(handle)
            .visibility_timeout(visibility_secs(delay))
            .build()
    })?;
    let out = batch_call!(sqs, change_message_visibility_batch, url, entries, OP)?;
    Ok(entry_results(
        receipt_handles.len(),
        out.successful.into_iter().map(|s| (s.id, ())),
        failures(out.failed),
    ))
}

/// Deletes up to ten receipt handles in one call; per-entry results in order.
pub async fn delete_chunk(
    sqs: &Client,
    url: &str,
    receipt_handles: &[String],
) -> Result<Vec<Result<(), EntryFailure>>, CallError> {
    const OP: &str = "DeleteMessageBatch";
    let entries = entries(receipt_handles, OP, url, |id, handle| {
        DeleteMessageBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(handle)
            .build()
    })?;
    let out = batch_call!(sqs, delete_message_batch, url, entries, OP)?;
    Ok(entry_results(
        receipt_handles.len(),
        out.successful.into_iter().map(|s| (s.id, ())),
        failures(out.failed),
    ))
}

/// A message to send. The body may hold a token: this type has no `Debug`.
pub struct Outgoing {
    pub body: String,
    /// FIFO queues only.
    pub group_id: Option<String>,
    /// FIFO queues only.
    pub deduplication_id: Option<String>,
}

/// Sends up to ten messages in one call (the caller keeps it under SQS's size limit); per-message
/// results in order, each the new message id.
pub async fn send_chunk(
    sqs: &Client,
    url: &str,
    messages: &[Outgoing],
) -> Result<Vec<Result<String, EntryFailure>>, CallError> {
    const OP: &str = "SendMessageBatch";
    let entries = entries(messages, OP, url, |id, m| {
        SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body(&m.body)
            .set_message_group_id(m.group_id.clone())
            .set_message_deduplication_id(m.deduplication_id.clone())
            .build()
    })?;
    let out = batch_call!(sqs, send_message_batch, url, entries, OP)?;
    Ok(entry_results(
        messages.len(),
        out.successful.into_iter().map(|s| (s.id, s.message_id)),
        failures(out.failed),
    ))
}

/// Runs a batch call over any number of items, ten at a time; a chunk whose call failed as a
/// whole fails each of its entries with that failure.
async fn chunked<'a, I, T, F, Fut>(items: &'a [I], mut call: F) -> Vec<Result<T, EntryFailure>>
where
    F: FnMut(&'a [I]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Result<T, EntryFailure>>, CallError>>,
{
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks(BATCH) {
        match call(chunk).await {
            Ok(answers) => results.extend(answers),
            Err(error) => results
                .extend((0..chunk.len()).map(|_| Err(EntryFailure::whole_call(&error.failure)))),
        }
    }
    results
}

/// Sets the visibility of every receipt handle; the result is per handle, in order.
pub async fn change_visibility_batch(
    sqs: &Client,
    url: &str,
    receipt_handles: &[String],
    delay: Duration,
) -> Vec<Result<(), EntryFailure>> {
    chunked(receipt_handles, |chunk| {
        change_visibility_chunk(sqs, url, chunk, delay)
    })
    .await
}

/// Deletes every receipt handle; the result is per handle, in order.
pub async fn delete(
    sqs: &Client,
    url: &str,
    receipt_handles: &[String],
) -> Vec<Result<(), EntryFailure>> {
    chunked(receipt_handles, |chunk| delete_chunk(sqs, url, chunk)).await
}

/// Sends the messages, at most ten per call; the result is the new message id or the failure,
/// per message, in order.
pub async fn send(
    sqs: &Client,
    url: &str,
    messages: &[Outgoing],
) -> Vec<Result<String, EntryFailure>> {
    chunked(messages, |chunk| send_chunk(sqs, url, chunk)).await
}

/// Sends the original body, unchanged, to the dead-letter queue with the reason attached.
pub async fn send_dead_letter(
    sqs: &Client,
    dlq_url: &str,
    letter: &DeadLetter,
    group_id: Option<&str>,
) -> Result<(), CallError> {
    const OP: &str = "SendMessage";
    let attribute = |data_type: &str, value: &str| {
        MessageAttributeValue::builder()
            .data_type(data_type)
            .string_value(value)
            .build()
            .map_err(|e| CallError::build(OP, dlq_url, e))
    };
    let mut request = sqs
        .send_message()
        .queue_url(dlq_url)
        .message_body(&letter.body)
        .message_attributes(
            dlq_attr::REASON,
            attribute("String", letter.reason.as_str())?,
        )
        .message_attributes(dlq_attr::DETAIL, attribute("String", &letter.detail)?)
        .message_attributes(
            dlq_attr::SOURCE_MESSAGE_ID,
            attribute("String", &letter.source_message_id)?,
        )
        .message_attributes(
            dlq_attr::RECEIVE_COUNT,
            attribute("Number", &letter.receive_count.to_string())?,
        )
        .message_attributes(dlq_attr::FAILED_AT, attribute("String", &letter.failed_at)?);
    if let Some(event) = &letter.event {
        request = request.message_attributes(dlq_attr::EVENT, attribute("String", event)?);
    }
    if let Some(event_ref) = &letter.event_ref {
        request = request.message_attributes(dlq_attr::EVENT_REF, attribute("String", event_ref)?);
    }
    if let Some(event_id) = &letter.event_id {
        request =
            request.message_attributes(dlq_attr::EVENT_ID, attribute("String", event_id.as_str())?);
    }
    if is_fifo(dlq_url) {
        // A FIFO dead-letter queue needs a group; keep the source's so order within it holds,
        // and dedupe on the source message id so a retried send is not a second letter.
        request = request
            .message_group_id(group_id.unwrap_or("mp-resolver"))
            .message_deduplication_id(&letter.source_message_id);
    }
    request
        .send()
        .await
        .map(drop)
        .map_err(|e| CallError::new(OP, dlq_url, describe(&e)))
}

/// The system attribute `name` of a received message.
pub fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

/// The string value of the message attribute `name`.
pub fn message_attribute<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .message_attributes
        .as_ref()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value.as_deref())
}

/// Builds a batch call's entries, each with its index as id (what [`entry_results`] maps back).
fn entries<I, B, E: std::error::Error>(
    items: &[I],
    op: &'static str,
    url: &str,
    build: impl Fn(String, &I) -> Result<B, E>,
) -> Result<Vec<B>, CallError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| build(i.to_string(), item).map_err(|e| CallError::build(op, url, e)))
        .collect()
}

/// An SQS batch answer's failed entries, as [`entry_results`] takes them.
fn failures(
    failed: Vec<BatchResultErrorEntry>,
) -> impl Iterator<Item = (String, String, Option<String>)> {
    failed.into_iter().map(|f| (f.id, f.code, f.message))
}

fn visibility_secs(delay: Duration) -> i32 {
    delay.as_secs().min(MAX_VISIBILITY_SECS) as i32
}
