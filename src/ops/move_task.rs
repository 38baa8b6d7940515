//! `dlq redrive --move-task`: SQS's own `StartMessageMoveTask` from the dead-letter queue to the
//! token queue, waited for and reported as a [`RedriveReport`].

use std::time::Duration;

use serde::Serialize;

use super::redrive::{Method, RedriveReport};
use crate::aws::error::{describe, AwsFailure};

/// How long `--move-task` waits for SQS to finish before it reports the task as still running.
const MOVE_TASK_PATIENCE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveTaskStatus {
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED, as SQS reports it.
    pub status: String,
    pub moved: i64,
    pub to_move: Option<i64>,
    pub failure_reason: Option<String>,
}

/// Starts SQS's move task and waits for it. `Err` only when the task could not be started (then
/// nothing moved and the copy can run instead); once started, everything goes into the status.
pub(super) async fn move_task(
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

pub(super) fn task_report(
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
        copies_deleted: 0,
        moved: Vec::new(),
        left: 0,
        failed: Vec::new(),
        hand_back_failures: Vec::new(),
        task: Some(task),
        note,
        error: None,
    }
}
