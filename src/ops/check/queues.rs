//! Checks of the token queue and the dead-letter queue: reachable, same type, redrive policy,
//! the queue's own visibility timeout, dead-letter retention.

use std::fmt::Write as _;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{fix_for, Attributes, Check, CheckResult};
use crate::aws::error::CallError;
use crate::aws::error::Problem;
use crate::config::Settings;

/// Below this `maxReceiveCount` a single hand-back (a shutdown, one throttled delivery) can move
/// a valid token to the dead-letter queue: a failure.
pub const MIN_RECEIVE_COUNT: u32 = 3;
/// Below this, a throttling spell or a few deploys in a row can: a warning.
pub const RECOMMENDED_RECEIVE_COUNT: u32 = 10;

/// The region in a regional SQS URL, e.g. `us-east-1` in `https://sqs.us-east-1.amazonaws.com/…`.
fn url_region(url: &str) -> Option<&str> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    match (parts.next(), parts.next()) {
        (Some("sqs"), Some(region)) if host.contains("amazonaws.") => Some(region),
        (Some(region), Some("queue")) if host.contains("amazonaws.") => Some(region),
        _ => None,
    }
}

pub(super) fn queue_reachable(
    check: Check,
    variable: &str,
    url: &str,
    attributes: &Result<Attributes, CallError>,
    region: Option<&str>,
) -> CheckResult {
    match attributes {
        Ok(attrs) => {
            let get =
                |name: QueueAttributeName| attrs.get(&name).map(String::as_str).unwrap_or("?");
            let kind = if is_fifo_queue(attrs) {
                "FIFO"
            } else {
                "standard"
            };
            CheckResult::pass(
                check,
                format!(
                    "{url} is reachable ({kind}, ~{} visible, ~{} in flight)",
                    get(QueueAttributeName::ApproximateNumberOfMessages),
                    get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                ),
            )
        }
        Err(error) => {
            let mut not_found = format!(
                "create the queue, or set {variable} to its URL (`aws sqs get-queue-url --queue-name NAME` prints it)"
            );
            if let (Some(in_url), Some(configured)) = (url_region(url), region) {
                if in_url != configured {
                    let _ = write!(
                        not_found,
                        "; note the URL is in {in_url} but AWS_REGION is {configured}"
                    );
                }
            }
            let denied =
                "allow sqs:GetQueueAttributes on this queue for the identity running `check` \
                 (the operator policy in deploy/iam/ has it)"
                    .to_owned();
            let what = match error.failure.problem {
                Problem::NotFound => "does not exist".to_owned(),
                Problem::Denied => "is not readable with these credentials".to_owned(),
                Problem::Credentials => "could not be read: no usable AWS credentials".to_owned(),
                Problem::Unreachable => "could not be reached".to_owned(),
                Problem::Other => "could not be read".to_owned(),
            };
            CheckResult::fail(
                check,
                format!("{url} {what} ({})", error.failure),
                fix_for(&error.failure, not_found, denied, "SQS"),
            )
        }
    }
}

fn is_fifo_queue(attrs: &Attributes) -> bool {
    attrs
        .get(&QueueAttributeName::FifoQueue)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn kind(fifo: bool) -> &'static str {
    if fifo {
        "FIFO"
    } else {
        "standard"
    }
}

pub(super) fn queue_types(queue: Option<&Attributes>, dlq: Option<&Attributes>) -> CheckResult {
    let (Some(queue), Some(dlq)) = (queue, dlq) else {
        return CheckResult::skip(Check::QueueTypes, "the queue and the dead-letter queue");
    };
    let (q, d) = (is_fifo_queue(queue), is_fifo_queue(dlq));
    if q == d {
        CheckResult::pass(
            Check::QueueTypes,
            format!("the queue and the dead-letter queue are both {}", kind(q)),
        )
    } else {
        CheckResult::fail(
            Check::QueueTypes,
            format!(
                "the queue is {} but the dead-letter queue is {}: SQS accepts a redrive policy only \
                 between queues of the same type, so tokens that keep failing have nowhere to go",
                kind(q),
                kind(d)
            ),
            format!(
                "create a {} dead-letter queue (a FIFO name ends in .fifo) and set MPR_DLQ_URL to it",
                kind(q)
            ),
        )
    }
}

/// A queue the worker consumes and the dead-letter queue its redrive policy must point at.
pub(super) struct Pair<'a> {
    /// The check that judges the pair's redrive policy.
    pub check: Check,
    pub queue_url: &'a str,
    /// The variable that names the dead-letter queue, for the fix.
    pub dlq_variable: &'static str,
}

impl<'a> Pair<'a> {
    pub fn tokens(settings: &'a Settings) -> Self {
        Pair {
            check: Check::RedrivePolicy,
            queue_url: &settings.queue_url,
            dlq_variable: "MPR_DLQ_URL",
        }
    }

    pub fn lifecycle(settings: &'a Settings) -> Self {
        Pair {
            check: Check::LifecycleRedrivePolicy,
            queue_url: &settings.lifecycle_queue_url,
            dlq_variable: "MPR_LIFECYCLE_DLQ_URL",
        }
    }

    pub fn usage(settings: &'a Settings) -> Self {
        Pair {
            check: Check::UsageRedrivePolicy,
            queue_url: &settings.usage_queue_url,
            dlq_variable: "MPR_USAGE_DLQ_URL",
        }
    }
}

pub(super) fn redrive_policy(
    pair: &Pair,
    queue: Option<&Attributes>,
    dlq: Option<&Attributes>,
) -> CheckResult {
    let check = pair.check;
    let dlq_variable = pair.dlq_variable;
    let (Some(queue), Some(dlq)) = (queue, dlq) else {
        return CheckResult::skip(check, "the queue and the dead-letter queue");
    };
    let dlq_arn = dlq
        .get(&QueueAttributeName::QueueArn)
        .map(String::as_str)
        .unwrap_or("?");
    let set_it = |count: u32| {
        format!(
            "aws sqs set-queue-attributes --queue-url {} --attributes \
             '{{\"RedrivePolicy\":\"{{\\\"deadLetterTargetArn\\\":\\\"{dlq_arn}\\\",\\\"maxReceiveCount\\\":\\\"{count}\\\"}}\"}}'",
            pair.queue_url
        )
    };
    let Some(raw) = queue
        .get(&QueueAttributeName::RedrivePolicy)
        .filter(|r| !r.trim().is_empty())
    else {
        return CheckResult::fail(
            check,
            "the queue has no redrive policy: a message that keeps failing (one that crashes the \
             worker, or keeps being handed back) is received again forever, instead of reaching the \
             dead-letter queue",
            set_it(RECOMMENDED_RECEIVE_COUNT),
        );
    };
    let policy: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
    let target = policy
        .get("deadLetterTargetArn")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let count = match policy.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as u32),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    if target != dlq_arn {
        return CheckResult::fail(
            check,
            format!(
                "the redrive policy moves messages to {} but {dlq_variable} is {dlq_arn}: dead-letters \
                 would be split across two queues, and `dlq` would only see the worker's",
                if target.is_empty() { "nowhere readable" } else { target }
            ),
            format!(
                "point the redrive policy at the dead-letter queue ({}), or set {dlq_variable} to the \
                 redrive target",
                set_it(count.unwrap_or(RECOMMENDED_RECEIVE_COUNT).max(MIN_RECEIVE_COUNT))
            ),
        );
    }
    match count {
        Some(n) if n < MIN_RECEIVE_COUNT => CheckResult::fail(
            check,
            format!(
                "maxReceiveCount is {n}: one hand-back (a deploy, a throttled delivery) is enough to \
                 move a valid token to the dead-letter queue"
            ),
            format!("raise it to {RECOMMENDED_RECEIVE_COUNT} or more: {}", set_it(RECOMMENDED_RECEIVE_COUNT)),
        ),
        Some(n) if n < RECOMMENDED_RECEIVE_COUNT => CheckResult::warn(
            check,
            format!(
                "points at the dead-letter queue, but maxReceiveCount is {n}: a throttling spell or a \
                 few deploys in a row can move a valid token there (as `redrive_policy` in `dlq list`)"
            ),
            format!("raise it to {RECOMMENDED_RECEIVE_COUNT} or more: {}", set_it(RECOMMENDED_RECEIVE_COUNT)),
        ),
        Some(n) => CheckResult::pass(
            check,
            format!("moves messages to the dead-letter queue after {n} receives"),
        ),
        None => CheckResult::warn(
            check,
            format!("points at the dead-letter queue, but its maxReceiveCount is unreadable: {raw}"),
            set_it(RECOMMENDED_RECEIVE_COUNT),
        ),
    }
}

fn seconds(attrs: &Attributes, name: QueueAttributeName) -> Option<u64> {
    attrs.get(&name).and_then(|v| v.trim().parse().ok())
}

pub(super) fn queue_visibility_timeout(
    queue: Option<&Attributes>,
    settings: &Settings,
) -> CheckResult {
    let Some(queue) = queue else {
        return CheckResult::skip(Check::QueueVisibilityTimeout, "the queue");
    };
    let asked = settings.worker.visibility_timeout_secs.max(0) as u64;
    match seconds(queue, QueueAttributeName::VisibilityTimeout) {
        Some(own) if own >= asked => CheckResult::pass(
            Check::QueueVisibilityTimeout,
            format!("the queue's own VisibilityTimeout is {own} s (the worker's is {asked} s)"),
        ),
        Some(own) => CheckResult::warn(
            Check::QueueVisibilityTimeout,
            format!(
                "the queue's own VisibilityTimeout is {own} s, under the worker's {asked} s: the \
                 worker sets its own on every receive, but a consumer that does not (the console, \
                 `aws sqs receive-message`) hides a message for only {own} s"
            ),
            format!(
                "aws sqs set-queue-attributes --queue-url {} --attributes VisibilityTimeout={asked}",
                settings.queue_url
            ),
        ),
        None => CheckResult::warn(
            Check::QueueVisibilityTimeout,
            "the queue did not report its VisibilityTimeout",
            "check the queue in the AWS console",
        ),
    }
}

pub(super) fn dlq_retention(queue: Option<&Attributes>, dlq: Option<&Attributes>) -> CheckResult {
    let (Some(queue), Some(dlq)) = (queue, dlq) else {
        return CheckResult::skip(Check::DlqRetention, "the queue and the dead-letter queue");
    };
    let days = |s: u64| s as f64 / 86_400.0;
    match (
        seconds(queue, QueueAttributeName::MessageRetentionPeriod),
        seconds(dlq, QueueAttributeName::MessageRetentionPeriod),
    ) {
        (Some(q), Some(d)) if d < q => CheckResult::warn(
            Check::DlqRetention,
            format!(
                "dead-letters are kept {:.1} days, less than the queue's {:.1}: a message the redrive \
                 policy moves keeps its original enqueue time, so it can expire from the dead-letter \
                 queue before anyone looks",
                days(d),
                days(q)
            ),
            format!(
                "aws sqs set-queue-attributes --queue-url DLQ_URL --attributes MessageRetentionPeriod={}",
                q.max(1_209_600)
            ),
        ),
        (Some(q), Some(d)) => CheckResult::pass(
            Check::DlqRetention,
            format!(
                "dead-letters are kept {:.1} days (the queue keeps messages {:.1})",
                days(d),
                days(q)
            ),
        ),
        _ => CheckResult::warn(
            Check::DlqRetention,
            "a queue did not report its MessageRetentionPeriod",
            "check the queues in the AWS console",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_read_from_sqs_urls() {
        assert_eq!(
            url_region("https://sqs.eu-west-1.amazonaws.com/123456789012/q"),
            Some("eu-west-1")
        );
        assert_eq!(
            url_region("https://eu-west-1.queue.amazonaws.com/123456789012/q"),
            Some("eu-west-1")
        );
        assert_eq!(url_region("http://127.0.0.1:4566/000000000000/q"), None);
    }
}
