//! Checks of the configuration itself: it loaded (and which `MPR_` variables it ignored), the AWS
//! region, and the visibility rule configuration validation enforces.

use super::{Check, CheckResult};
use crate::config::{limits, Settings};

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

pub(super) fn aws_region(region: Option<&str>) -> CheckResult {
    match region {
        Some(r) => CheckResult::pass(Check::AwsRegion, format!("AWS region {r}")),
        None => CheckResult::fail(
            Check::AwsRegion,
            "no AWS region configured",
            "set AWS_REGION (e.g. us-east-1), or a region in the AWS profile (AWS_PROFILE)",
        ),
    }
}

/// Whether one delivery's retries fit the visibility timeout: the rule configuration validation
/// enforces (`config::limits`), reported with its figures.
pub(super) fn visibility_timeout(settings: &Settings) -> CheckResult {
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
