//! `dlq redrive`: dead-letters back onto the token queue, body unchanged.
//!
//! By default each message is copied: received from the dead-letter queue, sent to the token queue
//! with its body and nothing else (the `mpr.*` attributes describe the old failure, not the new
//! delivery), and deleted from the dead-letter queue only after the send succeeded. Messages that
//! do not match `--reason`, or are over `--max`, are handed back with visibility 0.
//!
//! Copies of one letter (dead-letters with the same `mpr.sourceMessageId`, see `dlq.rs`) are sent
//! once: the first is copied, and the others are deleted once that copy is on the token queue.
//!
//! `--move-task` (whole queue only) asks SQS to do the move itself with `StartMessageMoveTask`, which
//! is faster for a large backlog but carries the `mpr.*` attributes along; if the endpoint refuses
//! it, the copy is used instead and the report says so.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::dlq::{DeadLetterView, HandBackFailure, LetterKey, LetterReason, Scan};
use super::move_task::{move_task, task_report};
use super::output::Render;
use super::progress;
use crate::aws::error::CallError;
use crate::aws::error::EntryFailure;
use crate::aws::sns::{Publisher, SnsMessage};
use crate::aws::sqs::{self, Outgoing};
use crate::contract::DeadLetterReason;

pub use super::move_task::MoveTaskStatus;

/// Message group for a FIFO token queue when the dead-letter has neither a group nor a token.
const FALLBACK_GROUP: &str = "mp-resolver-redrive";

#[derive(Debug, Clone, Default)]
pub struct RedriveOptions {
    /// Only dead-letters with this `mpr.reason` (or none: the redrive policy's).
    pub reason: Option<LetterReason>,
    /// Move at most this many.
    pub max: Option<usize>,
    /// Let SQS move the whole queue (`StartMessageMoveTask`); ignored with `reason` or `max`.
    pub move_task: bool,
    /// Where the events of letters that carry one (`unpublished`, `product_mismatch`) go:
    /// published as they are, with no ResolveCustomer call (their token is spent). Without it,
    /// such letters stay on the dead-letter queue.
    pub publisher: Option<Publisher>,
    /// The allow-list in force (`product_codes`; empty allows all): a `product_mismatch` letter is
    /// published only once its product is allowed, else it stays.
    pub product_codes: Vec<String>,
    /// Where the events of letters that carry only a reference (`mpr.eventRef`) are read.
    pub store: Option<crate::store::Store>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Receive, send a copy, delete the original: ours.
    Copy,
    /// SQS's own StartMessageMoveTask.
    MoveTask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The copy could not be sent; the original is still on the dead-letter queue.
    Send,
    /// The copy was sent but the original could not be deleted: it is on both queues.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    pub dlq_message_id: String,
    /// The copy's id on the token queue.
    pub message_id: String,
    pub reason: LetterReason,
    pub event_id: Option<String>,
    /// How many dead-letters were this letter (same `mpr.sourceMessageId`): one was sent, all
    /// were deleted. 1 unless it had been dead-lettered more than once.
    pub copies: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveFailure {
    pub dlq_message_id: String,
    pub event_id: Option<String>,
    pub stage: Stage,
    /// Set for `Stage::Delete`: the copy that was sent.
    pub message_id: Option<String>,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    pub ok: bool,
    pub method: Method,
    pub dlq_url: String,
    pub queue_url: String,
    pub reason: Option<LetterReason>,
    pub max: Option<usize>,
    /// Letters now on the token queue and gone from the dead-letter queue (copies count once).
    pub moved_count: u64,
    /// Extra copies deleted from the dead-letter queue without being sent again.
    pub copies_deleted: u64,
    /// Each one, for the copy method (SQS's task does not say which).
    pub moved: Vec<Moved>,
    /// Examined and left on the dead-letter queue: another reason, or over `max`.
    pub left: usize,
    pub failed: Vec<RedriveFailure>,
    pub hand_back_failures: Vec<HandBackFailure>,
    pub task: Option<MoveTaskStatus>,
    /// Why the method differs from the one asked for, or what to do next.
    pub note: Option<String>,
    /// A call that stopped the run part-way; what was moved before it is listed above.
    pub error: Option<String>,
}

impl Render for RedriveReport {
    fn human(&self) -> String {
        let filter = match (&self.reason, self.max) {
            (Some(r), Some(m)) => format!(" (reason {r}, at most {m})"),
            (Some(r), None) => format!(" (reason {r})"),
            (None, Some(m)) => format!(" (at most {m})"),
            (None, None) => String::new(),
        };
        let method = match self.method {
            Method::Copy => "copied, then deleted",
            Method::MoveTask => "SQS message move task",
        };
        let mut out = format!(
            "moved {} dead-letter(s){filter} from {} to {} ({method})\n",
            self.moved_count, self.dlq_url, self.queue_url
        );
        for m in &self.moved {
            let copies = if m.copies > 1 {
                format!(
                    "  ({} copies on the dead-letter queue, sent once)",
                    m.copies
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:<18} eventId={}  {} -> {}{copies}",
                m.reason.as_str(),
                m.event_id.as_deref().unwrap_or("-"),
                m.dlq_message_id,
                m.message_id
            );
        }
        if self.copies_deleted > 0 {
            let _ = writeln!(
                out,
                "deleted {} extra copie(s) of letters dead-lettered more than once",
                self.copies_deleted
            );
        }
        if let Some(task) = &self.task {
            let _ = writeln!(
                out,
                "  task {}: {} moved{}{}",
                task.status,
                task.moved,
                task.to_move.map(|n| format!(" of {n}")).unwrap_or_default(),
                task.failure_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        if self.left > 0 {
            let _ = writeln!(
                out,
                "left {} on the dead-letter queue (not matching, or over --max)",
                self.left
            );
        }
        for f in &self.failed {
            let what = match f.stage {
                Stage::Send => "not sent, still on the dead-letter queue".to_owned(),
                Stage::Delete => format!(
                    "sent as {} but not deleted from the dead-letter queue: it is on both (a second redrive would send it again; subscribers dedupe on eventId)",
                    f.message_id.as_deref().unwrap_or("?")
                ),
            };
            let _ = writeln!(
                out,
                "  FAILED eventId={} {}: {} -- {what}",
                f.event_id.as_deref().unwrap_or("-"),
                f.code,
                f.message
            );
        }
        if !self.hand_back_failures.is_empty() {
            let _ = writeln!(
                out,
                "{} message(s) could not be handed back; they are visible again within {} s.",
                self.hand_back_failures.len(),
                super::dlq::SCAN_VISIBILITY_SECS
            );
        }
        if let Some(note) = &self.note {
            let _ = writeln!(out, "note: {note}");
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "stopped: {error}");
        }
        out
    }
}

/// Moves dead-letters from `dlq_url` back to `queue_url`.
pub async fn redrive(
    sqs_client: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
    options: &RedriveOptions,
) -> Result<RedriveReport, CallError> {
    // Nothing leaves the dead-letter queue unless the destination answers first.
    let queue_arn = sqs::queue_arn(sqs_client, queue_url).await?;
    let mut note = None;
    if options.move_task {
        // A move task would send letters that carry their resolved event back to be resolved
        // again: their tokens are spent, so each would come back as `expired_token`.
        let with_events = letters_with_events(sqs_client, dlq_url).await?;
        if with_events > 0 && options.reason.is_none() && options.max.is_none() {
            let mut report = empty_report(dlq_url, queue_url, options, Method::MoveTask);
            report.ok = false;
            report.note = Some(format!(
                "refused: {with_events} dead-letter(s) carry a resolved event (unpublished or \
                 product_mismatch); a message move task (or the console's redrive) would send them \
                 to be resolved again, and their tokens are spent. Run `mp-resolver dlq redrive` \
                 without --move-task: it publishes their events with no ResolveCustomer call"
            ));
            return Ok(report);
        }
        if options.reason.is_some() || options.max.is_some() {
            note = Some(
                "--move-task moves the whole queue; with --reason or --max the messages were copied one by one"
                    .to_owned(),
            );
        } else {
            let dlq_arn = sqs::queue_arn(sqs_client, dlq_url).await?;
            match move_task(sqs_client, &dlq_arn, &queue_arn).await {
                Ok(task) => return Ok(task_report(dlq_url, queue_url, &dlq_arn, task)),
                Err(refused) => {
                    note = Some(format!(
                        "StartMessageMoveTask was refused ({refused}); the messages were copied one by one instead"
                    ))
                }
            }
        }
    }
    let mut report = copy(sqs_client, dlq_url, queue_url, options).await;
    report.note = note;
    Ok(report)
}

/// Publishes `unpublished` letters' events to the topic; per letter, the SNS message id or why not.
async fn publish_events(
    publisher: Option<&Publisher>,
    letters: &[DeadLetterView],
) -> Vec<Result<String, EntryFailure>> {
    let refuse = |code: &str, message: &str| EntryFailure {
        code: code.to_owned(),
        message: message.to_owned(),
    };
    let Some(publisher) = publisher else {
        return letters
            .iter()
            .map(|_| {
                Err(refuse(
                    "NoTopic",
                    "an unpublished letter is published to the topic: set MPR_TOPIC_ARN",
                ))
            })
            .collect();
    };
    let mut results = Vec::with_capacity(letters.len());
    for chunk in letters.chunks(10) {
        let messages: Vec<Option<SnsMessage>> = chunk
            .iter()
            .map(|v| v.event.as_deref().and_then(SnsMessage::from_event_json))
            .collect();
        let valid: Vec<SnsMessage> = messages.iter().flatten().cloned().collect();
        let mut answers = match publisher.publish_batch(&valid).await {
            Ok(answers) => answers,
            Err(error) => valid
                .iter()
                .map(|_| Err(EntryFailure::whole_call(&error.failure)))
                .collect(),
        }
        .into_iter();
        for (message, view) in messages.into_iter().zip(chunk) {
            results.push(match message {
                Some(_) => answers
                    .next()
                    .unwrap_or(Err(refuse("MissingFromResponse", ""))),
                None if view.event.is_none() => Err(refuse(
                    "EventNotInStore",
                    "the letter's event is in the store (mpr.eventRef), which could not be read: \
                     check the [store] settings (MPR_STORE__*) of this command",
                )),
                None => Err(refuse("NotAnEvent", "mpr.event is not an event of ours")),
            });
        }
    }
    results
}

/// What a dead-letter taken by the copy is, with the id of the message sent for its letter.
enum Taken {
    /// This one was sent.
    Sent(String),
    /// Another copy of its letter was sent; this one is only deleted.
    Copy(String),
}

async fn copy(
    sqs_client: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
    options: &RedriveOptions,
) -> RedriveReport {
    let fifo = crate::aws::is_fifo(queue_url);
    let mut scan = Scan::new(sqs_client, dlq_url);
    let mut moved: Vec<Moved> = Vec::new();
    let mut failed: Vec<RedriveFailure> = Vec::new();
    let mut left = 0;
    let mut still_mismatched = 0;
    let mut copies_deleted = 0;
    // Letters sent in this run, by key: the sent message's id. A copy seen later (even in another
    // batch) is deleted, not sent again.
    let mut sent: HashMap<LetterKey, String> = HashMap::new();
    // Where each letter's entry is in `moved`, to count its copies.
    let mut moved_at: HashMap<LetterKey, usize> = HashMap::new();
    let walked: Result<(), CallError> = async {
        loop {
            let remaining = options
                .max
                .map_or(usize::MAX, |m| m.saturating_sub(moved.len()));
            if remaining == 0 {
                break;
            }
            let batch = scan.next_batch().await?;
            if batch.is_empty() {
                break;
            }
            let mut send: Vec<DeadLetterView> = Vec::new();
            let mut extra: Vec<DeadLetterView> = Vec::new();
            for view in batch {
                let wanted = options.reason.as_ref().is_none_or(|r| *r == view.reason);
                let key = view.letter_key();
                let copy_of_taken = key.as_ref().is_some_and(|k| {
                    sent.contains_key(k) || send.iter().any(|v| v.letter_key().as_ref() == Some(k))
                });
                if wanted && copy_of_taken {
                    extra.push(view);
                } else if wanted && send.len() < remaining {
                    send.push(view);
                } else {
                    scan.hold(&view);
                    left += 1;
                }
            }
            // Letters that carry their resolved event (`unpublished`, `product_mismatch`), or a
            // reference to it in the store, are published, never re-resolved; a mismatch whose
            // product is still not allowed stays.
            for view in &mut send {
                fill_from_store(view, options.store.as_ref()).await;
            }
            let (publish, send): (Vec<DeadLetterView>, Vec<DeadLetterView>) = send
                .into_iter()
                .partition(|v| v.event.is_some() || v.event_ref.is_some());
            let (publish, not_allowed): (Vec<DeadLetterView>, Vec<DeadLetterView>) = publish
                .into_iter()
                .partition(|v| event_allowed(v, &options.product_codes));
            for view in &not_allowed {
                scan.hold(view);
                left += 1;
                still_mismatched += 1;
            }
            let published = publish_events(options.publisher.as_ref(), &publish).await;
            let outgoing: Vec<Outgoing> = send
                .iter()
                .map(|v| Outgoing {
                    body: v.body.clone(),
                    // Keep the original group so order within it holds; a message from a standard
                    // dead-letter queue gets its token's own group.
                    group_id: fifo.then(|| {
                        v.group_id
                            .clone()
                            .or_else(|| v.event_id.clone())
                            .unwrap_or_else(|| FALLBACK_GROUP.to_owned())
                    }),
                    // A retried redrive of the same dead-letter within SQS's window is one message.
                    deduplication_id: fifo.then(|| format!("redrive-{}", v.message_id)),
                })
                .collect();
            let results = if outgoing.is_empty() {
                Vec::new()
            } else {
                sqs::send(sqs_client, queue_url, &outgoing).await
            };
            let mut taken: Vec<(DeadLetterView, Taken)> = Vec::new();
            let answered = publish.into_iter().zip(published);
            for (view, result) in send.into_iter().zip(results).chain(answered) {
                match result {
                    Ok(message_id) => {
                        if let Some(key) = view.letter_key() {
                            sent.insert(key, message_id.clone());
                        }
                        taken.push((view, Taken::Sent(message_id)));
                    }
                    Err(e) => {
                        scan.hold(&view);
                        failed.push(RedriveFailure {
                            dlq_message_id: view.message_id.clone(),
                            event_id: view.event_id.clone(),
                            stage: Stage::Send,
                            message_id: None,
                            code: e.code,
                            message: e.message,
                        });
                    }
                }
            }
            for view in extra {
                match view.letter_key().and_then(|k| sent.get(&k).cloned()) {
                    Some(message_id) => taken.push((view, Taken::Copy(message_id))),
                    // Its letter could not be sent: it stays, as that copy does.
                    None => {
                        scan.hold(&view);
                        left += 1;
                    }
                }
            }
            if taken.is_empty() {
                // Nothing could be sent: the rest would fail the same way.
                break;
            }
            let handles: Vec<String> = taken
                .iter()
                .map(|(v, _)| v.receipt_handle.clone())
                .collect();
            let deleted = sqs::delete(sqs_client, dlq_url, &handles).await;
            // Sent ones come first in `taken`, so a letter's entry exists before its copies count.
            for ((view, what), result) in taken.into_iter().zip(deleted) {
                match (what, result) {
                    (Taken::Sent(message_id), Ok(())) => {
                        progress::advance(1);
                        if let Some(key) = view.letter_key() {
                            moved_at.insert(key, moved.len());
                        }
                        moved.push(Moved {
                            dlq_message_id: view.message_id,
                            message_id,
                            reason: view.reason,
                            event_id: view.event_id,
                            copies: 1,
                        });
                    }
                    (Taken::Copy(_), Ok(())) => {
                        copies_deleted += 1;
                        if let Some(&i) = view.letter_key().and_then(|k| moved_at.get(&k)) {
                            moved[i].copies += 1;
                        }
                    }
                    (Taken::Sent(message_id) | Taken::Copy(message_id), Err(e)) => {
                        scan.hold(&view);
                        failed.push(RedriveFailure {
                            dlq_message_id: view.message_id.clone(),
                            event_id: view.event_id.clone(),
                            stage: Stage::Delete,
                            message_id: Some(message_id),
                            code: e.code,
                            message: e.message,
                        });
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let hand_back_failures = scan.hand_back().await;
    let error = walked.err().map(|e| e.to_string());
    let mut report = empty_report(dlq_url, queue_url, options, Method::Copy);
    report.ok = failed.is_empty() && hand_back_failures.is_empty() && error.is_none();
    report.moved_count = moved.len() as u64;
    report.copies_deleted = copies_deleted;
    report.moved = moved;
    report.left = left;
    report.failed = failed;
    report.hand_back_failures = hand_back_failures;
    report.error = error;
    if still_mismatched > 0 {
        report.note = Some(format!(
            "{still_mismatched} product_mismatch letter(s) left: their product is still not in \
             product_codes (add it, then redrive again)"
        ));
    }
    report
}

fn empty_report(
    dlq_url: &str,
    queue_url: &str,
    options: &RedriveOptions,
    method: Method,
) -> RedriveReport {
    RedriveReport {
        ok: true,
        method,
        dlq_url: dlq_url.to_owned(),
        queue_url: queue_url.to_owned(),
        reason: options.reason.clone(),
        max: options.max,
        moved_count: 0,
        copies_deleted: 0,
        moved: Vec::new(),
        left: 0,
        failed: Vec::new(),
        hand_back_failures: Vec::new(),
        task: None,
        note: None,
        error: None,
    }
}

/// Whether a letter's event may be published under `product_codes` (an `unpublished` one always
/// may: it was allowed when it resolved).
fn event_allowed(view: &DeadLetterView, product_codes: &[String]) -> bool {
    if view.reason != LetterReason::from(DeadLetterReason::ProductMismatch)
        || product_codes.is_empty()
    {
        return true;
    }
    let product = view
        .event
        .as_deref()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|e| {
            e.get("productCode")
                .and_then(|p| p.as_str())
                .map(str::to_owned)
        });
    product.is_some_and(|p| product_codes.contains(&p))
}

/// Reads the event of a letter that carries only its store reference (`mpr.eventRef`, a letter
/// too large to carry it). Without a store, or if the store does not have it, the letter keeps no
/// event and its publish is refused, so it stays on the dead-letter queue.
async fn fill_from_store(view: &mut DeadLetterView, store: Option<&crate::store::Store>) {
    let (None, Some(reference), Some(store)) = (&view.event, &view.event_ref, store) else {
        return;
    };
    let Ok(Some(item)) = store.get(reference, crate::store::tokens::TOKEN_SK).await else {
        return;
    };
    view.event = item.str("event").map(str::to_owned);
}

/// How many dead-letters carry a resolved event; every one looked at is handed back at once.
async fn letters_with_events(
    sqs_client: &aws_sdk_sqs::Client,
    dlq_url: &str,
) -> Result<usize, CallError> {
    let mut scan = Scan::new(sqs_client, dlq_url);
    let mut count = 0;
    let walked: Result<(), CallError> = async {
        loop {
            let batch = scan.next_batch().await?;
            if batch.is_empty() {
                return Ok(());
            }
            for view in batch {
                count += usize::from(view.event.is_some() || view.event_ref.is_some());
                scan.hold(&view);
            }
        }
    }
    .await;
    drop(scan.hand_back().await);
    walked.map(|()| count)
}
