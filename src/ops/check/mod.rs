//! `check`: a preflight of everything the worker depends on, one result per check, each failure
//! with its fix. What is a failure and what is a warning is documented in docs/operations.md;
//! in short: a failure means the worker would not work as the contract says, a warning means it
//! works but something an operator should know about is off.
//!
//! This file has the results, the report and the order the checks run in; the checks themselves
//! are by concern: `config.rs` (configuration, region, visibility rule), `queues.rs` (the token
//! queue, the lifecycle queue and their dead-letter queues), `topic.rs` (SNS), `marketplace.rs`
//! (the assumed role, ResolveCustomer, GetEntitlements).

mod config;
mod marketplace;
mod queues;
mod store;
mod topic;

use std::collections::HashMap;
use std::fmt::Write as _;

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use super::output::Render;
use crate::aws::error::{describe, AwsFailure, Problem};
use crate::aws::sqs;
use crate::aws::Clients;
use crate::config::Settings;

pub use config::configuration;
pub use marketplace::{
    assumed_role, get_entitlements, resolve_customer, PROBE_PRODUCT_CODE, PROBE_TOKEN,
};
pub use queues::{MIN_RECEIVE_COUNT, RECOMMENDED_RECEIVE_COUNT};
pub use store::store;

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
    LifecycleQueue,
    LifecycleDlq,
    LifecycleRedrivePolicy,
    UsageQueue,
    UsageDlq,
    UsageRedrivePolicy,
    MarketplaceRole,
    ResolveCustomer,
    GetEntitlements,
    BatchMeterUsage,
    Store,
    IntakeClientAddress,
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
            Check::LifecycleQueue => "lifecycle_queue",
            Check::LifecycleDlq => "lifecycle_dlq",
            Check::LifecycleRedrivePolicy => "lifecycle_redrive_policy",
            Check::UsageQueue => "usage_queue",
            Check::UsageDlq => "usage_dlq",
            Check::UsageRedrivePolicy => "usage_redrive_policy",
            Check::MarketplaceRole => "marketplace_role",
            Check::ResolveCustomer => "resolve_customer",
            Check::GetEntitlements => "get_entitlements",
            Check::BatchMeterUsage => "batch_meter_usage",
            Check::Store => "store",
            Check::IntakeClientAddress => "intake_client_address",
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

    /// Adds `result` last (the command line adds the store check this way).
    pub fn push(&mut self, result: CheckResult) {
        self.ok &= result.outcome != Outcome::Fail;
        self.checks.push(result);
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
    results.push(config::aws_region(region.as_deref()));

    let queue = sqs::queue_attributes(&clients.sqs, &settings.queue_url).await;
    results.push(queues::queue_reachable(
        Check::Queue,
        "MPR_QUEUE_URL",
        &settings.queue_url,
        &queue,
        region.as_deref(),
    ));
    let dlq = sqs::queue_attributes(&clients.sqs, &settings.dlq_url).await;
    results.push(queues::queue_reachable(
        Check::Dlq,
        "MPR_DLQ_URL",
        &settings.dlq_url,
        &dlq,
        region.as_deref(),
    ));
    let (queue, dlq) = (queue.ok(), dlq.ok());
    results.push(queues::queue_types(queue.as_ref(), dlq.as_ref()));
    let tokens = queues::Pair::tokens(settings);
    results.push(queues::redrive_policy(
        &tokens,
        queue.as_ref(),
        dlq.as_ref(),
    ));
    results.push(config::visibility_timeout(settings));
    results.push(queues::queue_visibility_timeout(queue.as_ref(), settings));
    results.push(queues::dlq_retention(queue.as_ref(), dlq.as_ref()));

    let topic = clients
        .sns
        .get_topic_attributes()
        .topic_arn(&settings.topic_arn)
        .send()
        .await
        .map(|out| out.attributes.unwrap_or_default())
        .map_err(|e| describe(&e));
    results.push(topic::topic_reachable(&settings.topic_arn, &topic));
    results.push(topic::topic_fifo(&settings.topic_arn, topic.as_ref().ok()));

    let lifecycle = !settings.lifecycle_queue_url.trim().is_empty();
    if lifecycle {
        results.extend(lifecycle_queues(clients, settings, region.as_deref()).await);
    }
    let usage = !settings.usage_queue_url.trim().is_empty();
    if usage {
        results.extend(usage_queues(clients, settings, region.as_deref()).await);
    }
    results.extend(marketplace_apis(clients, settings, lifecycle, usage).await);
    results.extend(config::intake_client_address(&settings.intake));
    CheckReport::new(results)
}

/// The lifecycle queue and its dead-letter queue: reachable, and the one redriving to the other.
async fn lifecycle_queues(
    clients: &Clients,
    settings: &Settings,
    region: Option<&str>,
) -> Vec<CheckResult> {
    let queue = sqs::queue_attributes(&clients.sqs, &settings.lifecycle_queue_url).await;
    let dlq = sqs::queue_attributes(&clients.sqs, &settings.lifecycle_dlq_url).await;
    vec![
        queues::queue_reachable(
            Check::LifecycleQueue,
            "MPR_LIFECYCLE_QUEUE_URL",
            &settings.lifecycle_queue_url,
            &queue,
            region,
        ),
        queues::queue_reachable(
            Check::LifecycleDlq,
            "MPR_LIFECYCLE_DLQ_URL",
            &settings.lifecycle_dlq_url,
            &dlq,
            region,
        ),
        queues::redrive_policy(
            &queues::Pair::lifecycle(settings),
            queue.ok().as_ref(),
            dlq.ok().as_ref(),
        ),
    ]
}

/// The usage queue and its dead-letter queue: reachable, and the one redriving to the other.
async fn usage_queues(
    clients: &Clients,
    settings: &Settings,
    region: Option<&str>,
) -> Vec<CheckResult> {
    let queue = sqs::queue_attributes(&clients.sqs, &settings.usage_queue_url).await;
    let dlq = sqs::queue_attributes(&clients.sqs, &settings.usage_dlq_url).await;
    vec![
        queues::queue_reachable(
            Check::UsageQueue,
            "MPR_USAGE_QUEUE_URL",
            &settings.usage_queue_url,
            &queue,
            region,
        ),
        queues::queue_reachable(
            Check::UsageDlq,
            "MPR_USAGE_DLQ_URL",
            &settings.usage_dlq_url,
            &dlq,
            region,
        ),
        queues::redrive_policy(
            &queues::Pair::usage(settings),
            queue.ok().as_ref(),
            dlq.ok().as_ref(),
        ),
    ]
}

/// The Marketplace APIs, called with the worker's own Marketplace clients: first the assumed
/// role when one is set (without its credentials no call can be judged), then ResolveCustomer,
/// then GetEntitlements when lifecycle events are consumed, then BatchMeterUsage when usage is.
async fn marketplace_apis(
    clients: &Clients,
    settings: &Settings,
    lifecycle: bool,
    usage: bool,
) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let role = settings.marketplace.role();
    if let Some((role_arn, external_id)) = role {
        let credentials = marketplace_credentials(clients).await;
        results.push(assumed_role(role_arn, external_id, &credentials));
        if credentials.is_err() {
            results.push(CheckResult::skip(
                Check::ResolveCustomer,
                "the Marketplace role",
            ));
            if lifecycle {
                results.push(CheckResult::skip(
                    Check::GetEntitlements,
                    "the Marketplace role",
                ));
            }
            if usage {
                results.push(CheckResult::skip(
                    Check::BatchMeterUsage,
                    "the Marketplace role",
                ));
            }
            return results;
        }
    }
    let role_arn = role.map(|(arn, _)| arn);
    let answer = crate::aws::metering::ask(&clients.metering, PROBE_TOKEN).await;
    results.push(marketplace::as_role(resolve_customer(&answer), role_arn));
    if lifecycle {
        let product = settings
            .product_codes
            .first()
            .map_or(PROBE_PRODUCT_CODE, String::as_str);
        let answer = crate::aws::entitlement::ask(&clients.entitlement, product).await;
        results.push(marketplace::as_role(
            get_entitlements(&answer, product),
            role_arn,
        ));
    }
    if usage {
        let answer = crate::aws::metering::batch_meter_usage(
            &clients.metering,
            Some(PROBE_PRODUCT_CODE),
            &[marketplace::probe_usage_record()],
        )
        .await;
        results.push(marketplace::as_role(
            marketplace::batch_meter_usage(&answer),
            role_arn,
        ));
    }
    results
}

/// The session credentials of the Marketplace clients' provider (the assumed role's), or why not.
async fn marketplace_credentials(
    clients: &Clients,
) -> Result<Option<std::time::SystemTime>, String> {
    use aws_sdk_marketplacemetering::config::ProvideCredentials as _;
    use aws_sdk_marketplacemetering::error::DisplayErrorContext;
    let Some(provider) = &clients.marketplace_credentials else {
        return Err("no credentials provider is configured".to_owned());
    };
    provider
        .provide_credentials()
        .await
        .map(|c| c.expiry())
        .map_err(|e| DisplayErrorContext(&e).to_string())
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
