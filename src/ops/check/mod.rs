//! `check`: a preflight of everything the worker depends on, one result per check, each failure
//! with its fix. What is a failure and what is a warning is documented in docs/operations.md;
//! in short: a failure means the worker would not work as the contract says, a warning means it
//! works but something an operator should know about is off.

use std::collections::HashMap;
use std::fmt::Write as _;

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use super::output::Render;
use crate::aws::error::{describe, AwsFailure, Problem};
use crate::aws::sqs_ops::{self, CallError};
use crate::aws::Clients;
use crate::config::{limits, Settings};

/// The token `check` sends to ResolveCustomer: printable ASCII, so it passes the API's own input
/// validation, and never a real token, so a permitted call must answer InvalidTokenException.
pub const PROBE_TOKEN: &str = "mp-resolver-check-invalid-token";

/// Below this `maxReceiveCount` a single hand-back (a shutdown, one throttled delivery) can move
/// a valid token to the dead-letter queue: a failure.
pub const MIN_RECEIVE_COUNT: u32 = 3;
/// Below this, a throttling spell or a few deploys in a row can: a warning.
pub const RECOMMENDED_RECEIVE_COUNT: u32 = 10;

/// Every check, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Configuration,
    AwsRegion,
    Queue,
    Dlq,
    QueueTypes,
    RedrivePolicy,
    VisibilityTimeout,
    QueueVisibilityTimeout,
    DlqRetention,
    Topic,
    TopicFifo,
    ResolveCustomer,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Configuration => "configuration",
            Check::AwsRegion => "aws_region",
            Check::Queue => "queue",
            Check::Dlq => "dlq",
            Check::QueueTypes => "queue_types",
            Check::RedrivePolicy => "redrive_policy",
            Check::VisibilityTimeout => "visibility_timeout",
            Check::QueueVisibilityTimeout => "queue_visibility_timeout",
            Check::DlqRetention => "dlq_retention",
            Check::Topic => "topic",
            Check::TopicFifo => "topic_fifo",
            Check::ResolveCustomer => "resolve_customer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// Works, but worth changing.
    Warn,
    /// The worker would not behave as the contract says; `check` exits non-zero.
    Fail,
    /// Not checked because a check it depends on failed.
    Skip,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub check: Check,
    pub outcome: Outcome,
    /// What was found.
    pub summary: String,
    /// How to fix it (warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckResult {
    fn pass(check: Check, summary: impl Into<String>) -> Self {
        CheckResult {
            check,
            outcome: Outcome::Pass,
            summary: summary.into(),
            fix: None,
        }
    }
    fn warn(check: Check, summary: impl Into<String>, fix: impl Into<String>) -> Self {
        CheckResult {
            check,
            outcome: Outcome::Warn,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(check: Check, summary: impl Into<String>, fix: impl Into<String>) -> Self {
        CheckResult {
            check,
            outcome: Outcome::Fail,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }
    fn skip(check: Check, needs: &str) -> Self {
        CheckResult {
            check,
            outcome: Outcome::Skip,
            summary: format!("not checked: needs {needs}"),
            fix: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// No check failed (warnings allowed).
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

impl CheckReport {
    fn new(checks: Vec<CheckResult>) -> Self {
        CheckReport {
            ok: checks.iter().all(|c| c.outcome != Outcome::Fail),
            checks,
        }
    }

    pub fn get(&self, check: Check) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.check == check)
    }

    pub fn outcome(&self, check: Check) -> Option<Outcome> {
        self.get(check).map(|c| c.outcome)
    }

    /// Puts `result` first (the command line adds the configuration check this way).
    pub fn prepend(mut self, result: CheckResult) -> Self {
        self.checks.insert(0, result);
        CheckReport::new(self.checks)
    }

    pub fn with_outcome(&self, outcome: Outcome) -> Vec<Check> {
        self.checks
            .iter()
            .filter(|c| c.outcome == outcome)
            .map(|c| c.check)
            .collect()
    }
}

impl Render for CheckReport {
    fn human(&self) -> String {
        let count = |o| self.checks.iter().filter(|c| c.outcome == o).count();
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{:<5} {:<25} {}",
                c.outcome.label(),
                c.check.as_str(),
                c.summary
            );
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "{:<31} fix: {fix}", "");
            }
        }
        let (failed, warned, skipped) = (
            count(Outcome::Fail),
            count(Outcome::Warn),
            count(Outcome::Skip),
        );
        let _ = writeln!(out);
        let _ = match (failed, warned) {
            (0, 0) => writeln!(out, "All {} checks passed.", self.checks.len()),
            (0, w) => writeln!(out, "Passed, with {w} warning(s)."),
            (f, w) => writeln!(
                out,
                "FAILED: {f} check(s) failed, {w} warning(s){}. Each failure says how to fix it.",
                if skipped > 0 {
                    format!(", {skipped} not checked")
                } else {
                    String::new()
                }
            ),
        };
        out
    }
}

type Attributes = HashMap<QueueAttributeName, String>;

/// Runs every check against the configured resources.
pub async fn run_checks(clients: &Clients, settings: &Settings) -> CheckReport {
    let mut results = Vec::new();
    let region = clients.sqs.config().region().map(|r| r.to_string());
    results.push(aws_region(region.as_deref()));

    let queue = sqs_ops::queue_attributes(&clients.sqs, &settings.queue_url).await;
    results.push(queue_reachable(
        Check::Queue,
        "MPR_QUEUE_URL",
        &settings.queue_url,
        &queue,
        region.as_deref(),
    ));
    let dlq = sqs_ops::queue_attributes(&clients.sqs, &settings.dlq_url).await;
    results.push(queue_reachable(
        Check::Dlq,
        "MPR_DLQ_URL",
        &settings.dlq_url,
        &dlq,
        region.as_deref(),
    ));
    let (queue, dlq) = (queue.ok(), dlq.ok());
    results.push(queue_types(queue.as_ref(), dlq.as_ref()));
    results.push(redrive_policy(queue.as_ref(), dlq.as_ref(), settings));
    results.push(visibility_timeout(settings));
    results.push(queue_visibility_timeout(queue.as_ref(), settings));
    results.push(dlq_retention(queue.as_ref(), dlq.as_ref()));

    let topic = clients
        .sns
        .get_topic_attributes()
        .topic_arn(&settings.topic_arn)
        .send()
        .await
        .map(|out| out.attributes.unwrap_or_default())
        .map_err(|e| describe(&e));
    results.push(topic_reachable(&settings.topic_arn, &topic));
    results.push(topic_fifo(&settings.topic_arn, topic.as_ref().ok()));

    let answer = clients
        .metering
        .resolve_customer()
        .registration_token(PROBE_TOKEN)
        .send()
        .await;
    results.push(resolve_customer(
        answer.map(|_| ()).map_err(|e| describe(&e)),
    ));
    CheckReport::new(results)
}

/// The configuration loaded (or `check` would not have run); `MPR_` variables that match no key
/// are usually typos of one that does.
pub fn configuration(ignored_env: &[String]) -> CheckResult {
    if ignored_env.is_empty() {
        CheckResult::pass(Check::Configuration, "loaded and valid")
    } else {
        CheckResult::warn(
            Check::Configuration,
            format!(
                "loaded and valid, but {} {} no configuration key and {} ignored",
                ignored_env.join(", "),
                if ignored_env.len() == 1 {
                    "matches"
                } else {
                    "match"
                },
                if ignored_env.len() == 1 { "is" } else { "are" }
            ),
            "fix the name (config/default.toml lists every key; MPR_ + path in upper case, `__` \
             between section and key), or remove it if it belongs to another tool",
        )
    }
}

fn aws_region(region: Option<&str>) -> CheckResult {
    match region {
        Some(r) => CheckResult::pass(Check::AwsRegion, format!("AWS region {r}")),
        None => CheckResult::fail(
            Check::AwsRegion,
            "no AWS region configured",
            "set AWS_REGION (e.g. us-east-1), or a region in the AWS profile (AWS_PROFILE)",
        ),
    }
}

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

/// The fix for an AWS failure, by what it means. `what` names the resource and its setting.
fn fix_for(failure: &AwsFailure, not_found: String, denied: String, service: &str) -> String {
    match failure.problem {
        Problem::NotFound => not_found,
        Problem::Denied => denied,
        Problem::Credentials => {
            "AWS credentials are missing, unknown or expired: set AWS_PROFILE, or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or run where the \
             task role applies"
                .to_owned()
        }
        Problem::Unreachable => format!(
            "the {service} endpoint did not answer: check AWS_REGION, AWS_ENDPOINT_URL (or \
             AWS_ENDPOINT_URL_{}) and the network path (VPC endpoint, NAT, proxy)",
            service.to_ascii_uppercase().replace(' ', "_")
        ),
        Problem::Other => {
            "see the error; `aws sqs get-queue-attributes` or the AWS console shows the same"
                .to_owned()
        }
    }
}

fn queue_reachable(
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

fn queue_types(queue: Option<&Attributes>, dlq: Option<&Attributes>) -> CheckResult {
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

fn redrive_policy(
    queue: Option<&Attributes>,
    dlq: Option<&Attributes>,
    settings: &Settings,
) -> CheckResult {
    let (Some(queue), Some(dlq)) = (queue, dlq) else {
        return CheckResult::skip(Check::RedrivePolicy, "the queue and the dead-letter queue");
    };
    let dlq_arn = dlq
        .get(&QueueAttributeName::QueueArn)
        .map(String::as_str)
        .unwrap_or("?");
    let set_it = |count: u32| {
        format!(
            "aws sqs set-queue-attributes --queue-url {} --attributes \
             '{{\"RedrivePolicy\":\"{{\\\"deadLetterTargetArn\\\":\\\"{dlq_arn}\\\",\\\"maxReceiveCount\\\":\\\"{count}\\\"}}\"}}'",
            settings.queue_url
        )
    };
    let Some(raw) = queue
        .get(&QueueAttributeName::RedrivePolicy)
        .filter(|r| !r.trim().is_empty())
    else {
        return CheckResult::fail(
            Check::RedrivePolicy,
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
            Check::RedrivePolicy,
            format!(
                "the redrive policy moves messages to {} but MPR_DLQ_URL is {dlq_arn}: dead-letters \
                 would be split across two queues, and `dlq` would only see the worker's",
                if target.is_empty() { "nowhere readable" } else { target }
            ),
            format!(
                "point the redrive policy at the dead-letter queue ({}), or set MPR_DLQ_URL to the \
                 redrive target",
                set_it(count.unwrap_or(RECOMMENDED_RECEIVE_COUNT).max(MIN_RECEIVE_COUNT))
            ),
        );
    }
    match count {
        Some(n) if n < MIN_RECEIVE_COUNT => CheckResult::fail(
            Check::RedrivePolicy,
            format!(
                "maxReceiveCount is {n}: one hand-back (a deploy, a throttled delivery) is enough to \
                 move a valid token to the dead-letter queue"
            ),
            format!("raise it to {RECOMMENDED_RECEIVE_COUNT} or more: {}", set_it(RECOMMENDED_RECEIVE_COUNT)),
        ),
        Some(n) if n < RECOMMENDED_RECEIVE_COUNT => CheckResult::warn(
            Check::RedrivePolicy,
            format!(
                "points at the dead-letter queue, but maxReceiveCount is {n}: a throttling spell or a \
                 few deploys in a row can move a valid token there (as `redrive_policy` in `dlq list`)"
            ),
            format!("raise it to {RECOMMENDED_RECEIVE_COUNT} or more: {}", set_it(RECOMMENDED_RECEIVE_COUNT)),
        ),
        Some(n) => CheckResult::pass(
            Check::RedrivePolicy,
            format!("moves messages to the dead-letter queue after {n} receives"),
        ),
        None => CheckResult::warn(
            Check::RedrivePolicy,
            format!("points at the dead-letter queue, but its maxReceiveCount is unreadable: {raw}"),
            set_it(RECOMMENDED_RECEIVE_COUNT),
        ),
    }
}

/// Whether one delivery's retries fit the visibility timeout: the rule configuration validation
/// enforces (`config::limits`), reported with its figures.
fn visibility_timeout(settings: &Settings) -> CheckResult {
    let budget = limits::visibility_budget(settings);
    let (asked, need) = (budget.asked.as_secs(), budget.needed.as_secs());
    let how = budget.breakdown(&settings.resolve);
    if budget.fits() {
        CheckResult::pass(
            Check::VisibilityTimeout,
            format!(
                "the worker asks for {asked} s on every receive; one delivery's retries need {need} s ({how})"
            ),
        )
    } else {
        CheckResult::fail(
            Check::VisibilityTimeout,
            format!(
                "the worker asks for {asked} s on every receive, but one delivery's retries need \
                 {need} s ({how}): only the heartbeat keeps such a message hidden, and one late or \
                 failed ChangeMessageVisibility lets another task resolve it again"
            ),
            format!(
                "set MPR_WORKER__VISIBILITY_TIMEOUT_SECS to at least {need}, or lower \
                 MPR_RESOLVE__BUDGET_SECS or MPR_RESOLVE__ATTEMPT_TIMEOUT_MS"
            ),
        )
    }
}

fn seconds(attrs: &Attributes, name: QueueAttributeName) -> Option<u64> {
    attrs.get(&name).and_then(|v| v.trim().parse().ok())
}

fn queue_visibility_timeout(queue: Option<&Attributes>, settings: &Settings) -> CheckResult {
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

fn dlq_retention(queue: Option<&Attributes>, dlq: Option<&Attributes>) -> CheckResult {
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

fn topic_reachable(arn: &str, topic: &Result<HashMap<String, String>, AwsFailure>) -> CheckResult {
    match topic {
        Ok(attrs) => CheckResult::pass(
            Check::Topic,
            format!(
                "{arn} exists ({} confirmed subscription(s))",
                attrs
                    .get("SubscriptionsConfirmed")
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
        ),
        Err(failure) => {
            let what = match failure.problem {
                Problem::NotFound => "does not exist",
                Problem::Denied => "is not readable with these credentials",
                Problem::Credentials => "could not be read: no usable AWS credentials",
                Problem::Unreachable => "could not be reached",
                Problem::Other => "could not be read",
            };
            CheckResult::fail(
                Check::Topic,
                format!("{arn} {what} ({failure})"),
                fix_for(
                    failure,
                    "create the topic, or set MPR_TOPIC_ARN to its ARN (`aws sns list-topics` lists them)"
                        .to_owned(),
                    "allow sns:GetTopicAttributes on the topic for the identity running `check` (the \
                     operator policy in deploy/iam/ has it; the worker itself needs only sns:Publish)"
                        .to_owned(),
                    "SNS",
                ),
            )
        }
    }
}

fn topic_fifo(arn: &str, attrs: Option<&HashMap<String, String>>) -> CheckResult {
    let Some(attrs) = attrs else {
        return CheckResult::skip(Check::TopicFifo, "the topic");
    };
    let by_arn = arn.ends_with(".fifo");
    let by_attribute = attrs
        .get("FifoTopic")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match (by_arn, by_attribute) {
        (true, true) => CheckResult::pass(
            Check::TopicFifo,
            "FIFO topic: events carry MessageGroupId = customerAWSAccountId and MessageDeduplicationId = eventId",
        ),
        (false, false) => CheckResult::pass(Check::TopicFifo, "standard topic"),
        (true, false) => CheckResult::fail(
            Check::TopicFifo,
            "the ARN ends in .fifo, so the worker publishes with MessageGroupId and \
             MessageDeduplicationId, but the topic says it is not FIFO (FifoTopic is not true) and \
             would refuse those publishes",
            "use a FIFO topic (created with FifoTopic=true, name ending in .fifo), or a standard topic \
             whose name does not end in .fifo, and set MPR_TOPIC_ARN to it",
        ),
        (false, true) => CheckResult::fail(
            Check::TopicFifo,
            "the topic is FIFO (FifoTopic=true) but its ARN does not end in .fifo, so the worker \
             would publish without the MessageGroupId a FIFO topic requires",
            "set MPR_TOPIC_ARN to the topic's exact ARN (FIFO topic ARNs end in .fifo)",
        ),
    }
}

/// Judges the answer to the probe call. A permitted caller gets the API's verdict on the token.
pub fn resolve_customer(answer: Result<(), AwsFailure>) -> CheckResult {
    let iam_fix = "allow aws-marketplace:ResolveCustomer (Resource \"*\") for the worker's role \
                   (deploy/iam/ has the policy); `check` needs it too";
    let failure = match answer {
        Ok(()) => return CheckResult::warn(
            Check::ResolveCustomer,
            format!("permitted, but the deliberately invalid token {PROBE_TOKEN:?} resolved"),
            "check AWS_ENDPOINT_URL_MARKETPLACE_METERING: it should be unset in production, and \
                 point at Marketplace Metering (or `mp-resolver emulator`) otherwise",
        ),
        Err(failure) => failure,
    };
    let code = failure.code.as_deref().unwrap_or("");
    let lower = failure.detail.to_ascii_lowercase();
    match code {
        "InvalidTokenException" => CheckResult::pass(
            Check::ResolveCustomer,
            "permitted: a deliberately invalid token was answered InvalidTokenException",
        ),
        "ExpiredTokenException" if lower.contains("security token") => CheckResult::fail(
            Check::ResolveCustomer,
            format!("the AWS credentials have expired ({failure})"),
            "refresh the credentials (AWS_SESSION_TOKEN, `aws sso login`), or run where the task role applies",
        ),
        "ExpiredTokenException" => CheckResult::pass(
            Check::ResolveCustomer,
            "permitted: a deliberately invalid token was answered ExpiredTokenException",
        ),
        "ThrottlingException" => CheckResult::warn(
            Check::ResolveCustomer,
            "permitted (the call was authorized), but throttled right now",
            "nothing to change if it passes on a second run; otherwise other callers in this \
             account use up the quota (see rate_limit.max_per_sec in config/default.toml)",
        ),
        "DisabledApiException" => CheckResult::fail(
            Check::ResolveCustomer,
            "the API answers DisabledApiException: the worker will pause and resolve nothing",
            "ask AWS Marketplace Seller Operations why the API is disabled for this account",
        ),
        "InternalServiceErrorException" => CheckResult::warn(
            Check::ResolveCustomer,
            "not confirmed: the API answered InternalServiceErrorException",
            "run `mp-resolver check` again in a minute",
        ),
        _ => match failure.problem {
            Problem::Denied => CheckResult::fail(
                Check::ResolveCustomer,
                format!("not permitted ({failure})"),
                iam_fix,
            ),
            _ => CheckResult::fail(
                Check::ResolveCustomer,
                format!("the call failed ({failure})"),
                fix_for(
                    &failure,
                    iam_fix.to_owned(),
                    iam_fix.to_owned(),
                    "Marketplace Metering",
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(problem: Problem, code: &str, detail: &str) -> AwsFailure {
        AwsFailure {
            problem,
            code: Some(code.to_owned()),
            detail: format!("{code}: {detail}"),
        }
    }

    #[test]
    fn resolve_verdicts() {
        let judge = |r| resolve_customer(r).outcome;
        assert_eq!(
            judge(Err(failure(Problem::Other, "InvalidTokenException", "no"))),
            Outcome::Pass
        );
        assert_eq!(
            judge(Err(failure(Problem::Denied, "AccessDeniedException", "no"))),
            Outcome::Fail
        );
        assert_eq!(
            judge(Err(failure(
                Problem::Credentials,
                "UnrecognizedClientException",
                "no"
            ))),
            Outcome::Fail
        );
        assert_eq!(
            judge(Err(failure(
                Problem::Other,
                "ExpiredTokenException",
                "The security token included in the request is expired"
            ))),
            Outcome::Fail
        );
        assert_eq!(
            judge(Err(failure(Problem::Other, "ThrottlingException", "slow"))),
            Outcome::Warn
        );
        assert_eq!(
            judge(Err(failure(Problem::Other, "DisabledApiException", "off"))),
            Outcome::Fail
        );
        assert_eq!(judge(Ok(())), Outcome::Warn);
        let denied = resolve_customer(Err(failure(Problem::Denied, "AccessDeniedException", "")));
        assert!(denied
            .fix
            .unwrap()
            .contains("aws-marketplace:ResolveCustomer"));
    }

    #[test]
    fn topic_fifo_compares_arn_and_attribute() {
        let attrs = |fifo: &str| HashMap::from([("FifoTopic".to_owned(), fifo.to_owned())]);
        let arn = "arn:aws:sns:us-east-1:1:t";
        let fifo_arn = "arn:aws:sns:us-east-1:1:t.fifo";
        assert_eq!(
            topic_fifo(arn, Some(&HashMap::new())).outcome,
            Outcome::Pass
        );
        assert_eq!(
            topic_fifo(fifo_arn, Some(&attrs("true"))).outcome,
            Outcome::Pass
        );
        assert_eq!(
            topic_fifo(fifo_arn, Some(&attrs("false"))).outcome,
            Outcome::Fail
        );
        assert_eq!(topic_fifo(arn, Some(&attrs("true"))).outcome, Outcome::Fail);
        assert_eq!(topic_fifo(arn, None).outcome, Outcome::Skip);
    }

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
