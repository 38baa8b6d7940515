//! The SQS calls the operator tools make, in batches of ten, with per-entry results: a batch call
//! that "succeeds" can still have failed for some of its entries.

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use crate::aws::error::{describe, AwsFailure};

/// Most entries SQS accepts in one batch call.
pub const BATCH: usize = 10;

/// An AWS call that failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} on {target} failed: {failure}")]
pub struct CallError {
    pub operation: &'static str,
    pub target: String,
    pub failure: AwsFailure,
}

impl CallError {
    fn new(operation: &'static str, target: &str, failure: AwsFailure) -> Self {
        CallError {
            operation,
            target: target.to_owned(),
            failure,
        }
    }
}

/// One entry of a batch call that failed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for EntryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

fn missing_from_response() -> EntryFailure {
    EntryFailure {
        code: "MissingFromResponse".into(),
        message: "the batch response did not mention this entry".into(),
    }
}

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
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| CallError::new("GetQueueAttributes", url, describe(&e)))?
        .attributes
        .unwrap_or_default();
    attributes
        .get(&QueueAttributeName::QueueArn)
        .cloned()
        .ok_or_else(|| {
            CallError::new(
                "GetQueueAttributes",
                url,
                AwsFailure {
                    problem: crate::aws::error::Problem::Other,
                    code: None,
                    detail: "the answer has no QueueArn".into(),
                },
            )
        })
}

/// Receives up to ten messages with every message and system attribute, hidden for
/// `visibility_secs`.
pub async fn receive(
    sqs: &Client,
    url: &str,
    wait_secs: i32,
    visibility_secs: i32,
) -> Result<Vec<Message>, CallError> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(BATCH as i32)
        .wait_time_seconds(wait_secs)
        .visibility_timeout(visibility_secs)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map(|out| out.messages.unwrap_or_default())
        .map_err(|e| CallError::new("ReceiveMessage", url, describe(&e)))
}

/// Sets the visibility of every receipt handle; the result is per handle, in order.
pub async fn change_visibility(
    sqs: &Client,
    url: &str,
    receipt_handles: &[String],
    visibility_secs: i32,
) -> Vec<Result<(), EntryFailure>> {
    let mut results = Vec::with_capacity(receipt_handles.len());
    for chunk in receipt_handles.chunks(BATCH) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(visibility_secs)
                    .build()
                    .ok()
            })
            .collect();
        let answer = sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        results.extend(match answer {
            Ok(out) => per_entry(
                chunk.len(),
                out.successful.iter().map(|s| s.id.as_str()),
                out.failed
                    .iter()
                    .map(|f| (f.id.as_str(), &f.code, f.message.as_deref())),
            ),
            Err(e) => whole_call_failed(chunk.len(), &describe(&e)),
        });
    }
    results
}

/// Deletes every receipt handle; the result is per handle, in order.
pub async fn delete(
    sqs: &Client,
    url: &str,
    receipt_handles: &[String],
) -> Vec<Result<(), EntryFailure>> {
    let mut results = Vec::with_capacity(receipt_handles.len());
    for chunk in receipt_handles.chunks(BATCH) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .ok()
            })
            .collect();
        let answer = sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        results.extend(match answer {
            Ok(out) => per_entry(
                chunk.len(),
                out.successful.iter().map(|s| s.id.as_str()),
                out.failed
                    .iter()
                    .map(|f| (f.id.as_str(), &f.code, f.message.as_deref())),
            ),
            Err(e) => whole_call_failed(chunk.len(), &describe(&e)),
        });
    }
    results
}

/// A message to send. The body may hold a token: this type has no `Debug`.
pub struct Outgoing {
    pub body: String,
    /// FIFO queues only.
    pub group_id: Option<String>,
    /// FIFO queues only.
    pub deduplication_id: Option<String>,
}

/// Sends the messages, at most ten per call (the caller keeps each call under SQS's size limit);
/// the result is the new message id or the failure, per message, in order.
pub async fn send(
    sqs: &Client,
    url: &str,
    messages: &[Outgoing],
) -> Vec<Result<String, EntryFailure>> {
    let mut results = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(BATCH) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_group_id(m.group_id.clone())
                    .set_message_deduplication_id(m.deduplication_id.clone())
                    .build()
                    .ok()
            })
            .collect();
        let answer = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        match answer {
            Ok(out) => {
                let mut slots: Vec<Result<String, EntryFailure>> =
                    vec![Err(missing_from_response()); chunk.len()];
                for ok in &out.successful {
                    if let Some(slot) = slot_of(&mut slots, &ok.id) {
                        *slot = Ok(ok.message_id.clone());
                    }
                }
                for failed in &out.failed {
                    if let Some(slot) = slot_of(&mut slots, &failed.id) {
                        *slot = Err(EntryFailure {
                            code: failed.code.clone(),
                            message: failed.message.clone().unwrap_or_default(),
                        });
                    }
                }
                results.extend(slots);
            }
            Err(e) => {
                let failure = describe(&e);
                results.extend(
                    whole_call_failed(chunk.len(), &failure)
                        .into_iter()
                        .map(|r| r.map(|()| String::new())),
                );
            }
        }
    }
    results
}

fn slot_of<'a, T>(slots: &'a mut [T], id: &str) -> Option<&'a mut T> {
    id.parse::<usize>().ok().and_then(|i| slots.get_mut(i))
}

fn per_entry<'a>(
    len: usize,
    successful: impl Iterator<Item = &'a str>,
    failed: impl Iterator<Item = (&'a str, &'a String, Option<&'a str>)>,
) -> Vec<Result<(), EntryFailure>> {
    let mut slots: Vec<Result<(), EntryFailure>> = vec![Err(missing_from_response()); len];
    for id in successful {
        if let Some(slot) = slot_of(&mut slots, id) {
            *slot = Ok(());
        }
    }
    for (id, code, message) in failed {
        if let Some(slot) = slot_of(&mut slots, id) {
            *slot = Err(EntryFailure {
                code: code.clone(),
                message: message.unwrap_or_default().to_owned(),
            });
        }
    }
    slots
}

fn whole_call_failed(len: usize, failure: &AwsFailure) -> Vec<Result<(), EntryFailure>> {
    let entry = EntryFailure {
        code: failure
            .code
            .clone()
            .unwrap_or_else(|| "CallFailed".to_owned()),
        message: failure.detail.clone(),
    };
    vec![Err(entry); len]
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

/// Whether a queue URL names a FIFO queue (SQS requires the `.fifo` suffix for those).
pub fn is_fifo_url(url: &str) -> bool {
    url.trim_end_matches('/').ends_with(".fifo")
}
