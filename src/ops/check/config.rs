//! Checks of the configuration itself: it loaded (and which `MPR_` variables it ignored), the AWS
//! region, and the visibility rule configuration validation enforces.

use super::{Check, CheckResult};
use crate::config::{limits, ClientAddressSource, IntakeSettings, Settings};

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

/// Whether intake's per-client limit can count clients as configured. Reported only when it
/// cannot (a passing line about intake would be noise for a worker-only deployment):
/// `x-forwarded-for` with `trusted_proxies = 0` trusts no entry, so every client counts as the
/// TCP peer, i.e. the load balancer, and one client's junk makes everyone wait. Whether the
/// listener is reachable only through the proxies is the network's to ensure (the ALB's security
/// group); `check` cannot see it.
pub(super) fn intake_client_address(intake: &IntakeSettings) -> Option<CheckResult> {
    (intake.client_address == ClientAddressSource::XForwardedFor && intake.trusted_proxies == 0)
        .then(|| {
            CheckResult::warn(
                Check::IntakeClientAddress,
                "intake.client_address = \"x-forwarded-for\" with intake.trusted_proxies = 0 \
                 trusts no X-Forwarded-For entry: every client counts as the TCP peer (the load \
                 balancer, if there is one), so one client over the limit refuses them all",
                "behind a load balancer set MPR_INTAKE__TRUSTED_PROXIES to the number of proxies \
                 that append to X-Forwarded-For (1 for an ALB); with none, set \
                 MPR_INTAKE__CLIENT_ADDRESS=peer",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_client_address_warns_only_when_no_entry_can_be_trusted() {
        let base = crate::config::load(&crate::config::Sources {
            env: vec![
                (
                    "MPR_QUEUE_URL".into(),
                    "https://sqs.us-east-1.amazonaws.com/1/q".into(),
                ),
                (
                    "MPR_DLQ_URL".into(),
                    "https://sqs.us-east-1.amazonaws.com/1/d".into(),
                ),
                ("MPR_TOPIC_ARN".into(), "arn:aws:sns:us-east-1:1:t".into()),
            ],
            ..Default::default()
        })
        .unwrap()
        .settings
        .intake;
        use ClientAddressSource::{Peer, XForwardedFor};
        for (source, proxies, warns) in [
            (XForwardedFor, 1, false),
            (XForwardedFor, 2, false),
            (XForwardedFor, 0, true),
            (Peer, 0, false),
            (Peer, 1, false),
        ] {
            let mut intake = base.clone();
            intake.client_address = source;
            intake.trusted_proxies = proxies;
            let result = intake_client_address(&intake);
            assert_eq!(result.is_some(), warns, "{source:?} {proxies}");
            if let Some(r) = result {
                assert_eq!(r.outcome, super::super::Outcome::Warn);
                assert!(r.fix.unwrap().contains("MPR_INTAKE__TRUSTED_PROXIES"));
            }
        }
    }
}
