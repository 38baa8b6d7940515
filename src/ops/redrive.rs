//! `dlq redrive`: dead-letters back onto the token queue, body unchanged.
//!
//! By default each message is copied: received from the dead-letter queue, sent to the token queue
//! with its body and nothing else (the `mpr.*` attributes describe the old failure, not the new
//! delivery), and deleted from the dead-letter queue only after the send succeeded. Messages that
//! do not match `--reason`, or are over `--max`, are handed back with visibility 0.
//!
//! `--move-task` (whole queue only) asks SQS to do the move itself with `StartMessageMoveTask`, which
//! is faster for a large backlog but carries the `mpr.*` attributes along; if the endpoint refuses
//! it, the copy is used instead and the report says so.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::dlq::{DeadLetterView, HandBackFailure, Scan};
use super::output::Render;
use super::progress;
use crate::aws::error::{describe, AwsFailure};
use crate::aws::sqs_ops::{self, CallError, Outgoing};

/// Message group for a FIFO token queue when the dead-letter has neither a group nor a token.
const FALLBACK_GROUP: &str = "mp-resolver-redrive";
/// How long `--move-task` waits for SQS to finish before it reports the task as still running.
const MOVE_TASK_PATIENCE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default)]
pub struct RedriveOptions {
    /// Only dead-letters with this `mpr.reason` (or `redrive_policy`).
    pub reason: Option<String>,
    /// Move at most this many.
    pub max: Option<usize>,
    /// Let SQS move the whole queue (`StartMessageMoveTask`); ignored with `reason` or `max`.
    pub move_task: bool,
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
    pub reason: String,
    pub event_id: Option<String>,
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
pub struct MoveTaskStatus {
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED, as SQS reports it.
    pub status: String,
    pub moved: i64,
    pub to_move: Option<i64>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    pub ok: bool,
    pub method: Method,
    pub dlq_url: String,
    pub queue_url: String,
    pub reason: Option<String>,
    pub max: Option<usize>,
    /// Messages now on the token queue and gone from the dead-letter queue.
    pub moved_count: u64,
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
            let _ = writeln!(
                out,
                "  {:<18} eventId={}  {} -> {}",
                m.reason,
                m.event_id.as_deref().unwrap_or("-"),
                m.dlq_message_id,
                m.message_id
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
    let queue_arn = sqs_ops::queue_arn(sqs_client, queue_url).await?;
    let mut note = None;
    if options.move_task {
        if options.reason.is_some() || options.max.is_some() {
            note = Some(
                "--move-task moves the whole queue; with --reason or --max the messages were copied one by one"
                    .to_owned(),
            );
        } else {
            let dlq_arn = sqs_ops::queue_arn(sqs_client, dlq_url).await?;
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

async fn copy(
    sqs_client: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
    options: &RedriveOptions,
) -> RedriveReport {
    let fifo = sqs_ops::is_fifo_url(queue_url);
    let mut scan = Scan::new(sqs_client, dlq_url);
    let mut moved: Vec<Moved> = Vec::new();
    let mut failed: Vec<RedriveFailure> = Vec::new();
    let mut left = 0;
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
            let mut take: Vec<DeadLetterView> = Vec::new();
            for view in batch {
                let wanted = options.reason.as_deref().is_none_or(|r| r == view.reason);
                if wanted && take.len() < remaining {
                    take.push(view);
                } else {
                    scan.hold(&view);
                    left += 1;
                }
            }
            if take.is_empty() {
                continue;
            }
            let outgoing: Vec<Outgoing> = take
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
            let sent = sqs_ops::send(sqs_client, queue_url, &outgoing).await;
            let mut copied: Vec<(DeadLetterView, String)> = Vec::new();
            for (view, result) in take.into_iter().zip(sent) {
                match result {
                    Ok(message_id) => copied.push((view, message_id)),
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
            if copied.is_empty() {
                // Nothing could be sent: the rest would fail the same way.
                break;
            }
            let handles: Vec<String> = copied
                .iter()
                .map(|(v, _)| v.receipt_handle.clone())
                .collect();
            let deleted = sqs_ops::delete(sqs_client, dlq_url, &handles).await;
            for ((view, message_id), result) in copied.into_iter().zip(deleted) {
                match result {
                    Ok(()) => {
                        progress::advance(1);
                        moved.push(Moved {
                            dlq_message_id: view.message_id,
                            message_id,
                            reason: view.reason,
                            event_id: view.event_id,
                        });
                    }
                    Err(e) => {
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
    RedriveReport {
        ok: failed.is_empty() && hand_back_failures.is_empty() && error.is_none(),
        method: Method::Copy,
        dlq_url: dlq_url.to_owned(),
        queue_url: queue_url.to_owned(),
        reason: options.reason.clone(),
        max: options.max,
        moved_count: moved.len() as u64,
        moved,
        left,
        failed,
        hand_back_failures,
        task: None,
        note: None,
        error,
    }
}

/// Starts SQS's move task and waits for it. `Err` only when the task could not be started (then
/// nothing moved and the copy can run instead); once started, everything goes into the status.
async fn move_task(
    sqs_client: &aws_sdk_sqs::Client,
    dlq_arn: &str,
    queue_arn: &str,
) -> Result<MoveTaskStatus, AwsFailure> {
    // Tasks are listed newest first and finished ones may have no handle: remember the newest
    // one before ours, so ours is recognized by its start time.
    let before = latest_task(sqs_client, dlq_arn)
        .await
        .ok()
        .flatten()
        .map_or(0, |t| t.started_timestamp);
    let handle = sqs_client
        .start_message_move_task()
        .source_arn(dlq_arn)
        .destination_arn(queue_arn)
        .send()
        .await
        .map_err(|e| describe(&e))?
        .task_handle;
    let deadline = tokio::time::Instant::now() + MOVE_TASK_PATIENCE;
    let mut pause = Duration::from_millis(200);
    loop {
        match latest_task(sqs_client, dlq_arn).await {
            Ok(Some(task))
                if task.started_timestamp > before
                    || (handle.is_some() && task.task_handle == handle) =>
            {
                let status = MoveTaskStatus {
                    status: task.status.clone().unwrap_or_else(|| "UNKNOWN".into()),
                    moved: task.approximate_number_of_messages_moved,
                    to_move: task.approximate_number_of_messages_to_move,
                    failure_reason: task.failure_reason.clone(),
                };
                let running = matches!(status.status.as_str(), "RUNNING" | "CANCELLING");
                if !running || tokio::time::Instant::now() >= deadline {
                    return Ok(status);
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Ok(MoveTaskStatus {
                    status: "UNKNOWN".into(),
                    moved: 0,
                    to_move: None,
                    failure_reason: Some(format!("started, but ListMessageMoveTasks failed: {e}")),
                })
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(MoveTaskStatus {
                status: "UNKNOWN".into(),
                moved: 0,
                to_move: None,
                failure_reason: Some("started, but not listed by ListMessageMoveTasks".into()),
            });
        }
        // SQS has no completion notification for a move task; poll it, gently.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn latest_task(
    sqs_client: &aws_sdk_sqs::Client,
    dlq_arn: &str,
) -> Result<Option<aws_sdk_sqs::types::ListMessageMoveTasksResultEntry>, AwsFailure> {
    let out = sqs_client
        .list_message_move_tasks()
        .source_arn(dlq_arn)
        .max_results(1)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(out.results.unwrap_or_default().into_iter().next())
}

fn task_report(
    dlq_url: &str,
    queue_url: &str,
    dlq_arn: &str,
    task: MoveTaskStatus,
) -> RedriveReport {
    let completed = task.status == "COMPLETED";
    let note = (task.status == "RUNNING" || task.status == "UNKNOWN").then(|| {
        format!(
            "the move task is still running in SQS; follow it with: aws sqs list-message-move-tasks --source-arn {dlq_arn}"
        )
    });
    RedriveReport {
        ok: completed,
        method: Method::MoveTask,
        dlq_url: dlq_url.to_owned(),
        queue_url: queue_url.to_owned(),
        reason: None,
        max: None,
        moved_count: task.moved.max(0) as u64,
        moved: Vec::new(),
        left: 0,
        failed: Vec::new(),
        hand_back_failures: Vec::new(),
        task: Some(task),
        note,
        error: None,
    }
}
