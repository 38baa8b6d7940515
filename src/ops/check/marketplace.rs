//! The Marketplace checks, each judged from one answer: the assumed role (`[marketplace]
//! role_arn`) gives session credentials, ResolveCustomer answers a token that cannot be valid, and
//! GetEntitlements answers one page (when the lifecycle queue is configured). Both API calls are
//! made with the worker's own Marketplace clients, so they run as the assumed role when one is set.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{fix_for, Check, CheckResult, Outcome};
use crate::aws::entitlement::{self, EntitlementsResult};
use crate::aws::error::{problem_of_code, Problem};
use crate::aws::metering::{
    Answer, CallResult, FailureKind, MeterResult, MeteredCustomer, RecordOutcome, UsageRecord,
    EXPIRED_CREDENTIALS,
};

/// The product `check` asks GetEntitlements about when `product_codes` names none: any answer
/// but a refusal of the caller shows the call is permitted.
pub const PROBE_PRODUCT_CODE: &str = "mp-resolver-check-probe";

/// Judges an attempt to get the assumed role's session credentials (their expiry, or the error).
pub fn assumed_role(
    role_arn: &str,
    external_id: Option<&str>,
    credentials: &Result<Option<SystemTime>, String>,
) -> CheckResult {
    let with_id = if external_id.is_some() {
        " with the external id"
    } else {
        ""
    };
    match credentials {
        Ok(expiry) => CheckResult::pass(
            Check::MarketplaceRole,
            match expiry {
                Some(t) => format!(
                    "assumed {role_arn}{with_id}: session credentials until {}",
                    DateTime::<Utc>::from(*t).to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                None => format!("assumed {role_arn}{with_id}"),
            },
        ),
        Err(error) => CheckResult::fail(
            Check::MarketplaceRole,
            format!("cannot assume {role_arn}{with_id}: {error}"),
            "in the seller account, the role's trust policy must allow the worker's task role with              the external id of `marketplace.external_id` (deploy/iam/marketplace-role-trust-policy.json),              and the task role (or whoever runs `check`) needs sts:AssumeRole on the role              (deploy/iam/worker-task-policy.json); an STS endpoint that does not answer: check              AWS_ENDPOINT_URL_STS and the network path",
        ),
    }
}

/// Names the assumed role in a Marketplace API check's summary, so the report says whose
/// permission was checked.
pub fn as_role(mut result: CheckResult, role_arn: Option<&str>) -> CheckResult {
    if let (Some(role), false) = (role_arn, result.outcome == Outcome::Skip) {
        result.summary.push_str(&format!(" (as {role})"));
    }
    result
}

/// Judges one GetEntitlements page for `product_code`: entitlements or the API's verdict on the
/// product both mean the caller is permitted.
pub fn get_entitlements(answer: &entitlement::Answer, product_code: &str) -> CheckResult {
    let iam_fix = "allow aws-marketplace:GetEntitlements (Resource \"*\") for the identity that \
                   calls Marketplace: the worker's task role, or the role of `marketplace.role_arn` \
                   (deploy/iam/ has both policies); `check` needs it too";
    let failure = match &answer.result {
        EntitlementsResult::Fetched(page) => {
            return CheckResult::pass(
                Check::GetEntitlements,
                format!(
                    "permitted: answered for product {product_code} ({})",
                    if page.is_empty() {
                        "no entitlements"
                    } else {
                        "with entitlements"
                    }
                ),
            )
        }
        EntitlementsResult::Rejected { detail } => {
            return CheckResult::pass(
                Check::GetEntitlements,
                format!(
                    "permitted: product {product_code} was answered {}",
                    detail.trim_start_matches("GetEntitlements: ")
                ),
            )
        }
        EntitlementsResult::Failed(f) => f,
    };
    match (failure.kind, answer.failure.as_ref()) {
        (FailureKind::Throttled, _) => CheckResult::warn(
            Check::GetEntitlements,
            "permitted (the call was authorized), but throttled right now",
            "nothing to change if it passes on a second run",
        ),
        (_, Some(a)) if a.problem == Problem::Denied => CheckResult::fail(
            Check::GetEntitlements,
            format!("not permitted ({a})"),
            iam_fix,
        ),
        (_, Some(a)) if a.code.as_deref() == Some("InternalServiceErrorException") => {
            CheckResult::warn(
                Check::GetEntitlements,
                "not confirmed: the API answered InternalServiceErrorException",
                "run `mp-resolver check` again in a minute",
            )
        }
        (_, Some(a)) => CheckResult::fail(
            Check::GetEntitlements,
            format!("the call failed ({a})"),
            fix_for(
                a,
                iam_fix.to_owned(),
                iam_fix.to_owned(),
                "Marketplace Entitlement Service",
            ),
        ),
        (_, None) => CheckResult::fail(
            Check::GetEntitlements,
            format!("the call failed ({})", failure.detail),
            iam_fix,
        ),
    }
}

/// The record `check` meters: quantity 0 of a dimension no product has, for a customer that
/// cannot exist, under [`PROBE_PRODUCT_CODE`]. A permitted caller gets the API's verdict on it
/// (InvalidProductCodeException from AWS, which knows the seller has no such product); nothing
/// can be billed.
pub fn probe_usage_record() -> UsageRecord {
    UsageRecord {
        customer: MeteredCustomer::Legacy {
            customer_identifier: "mp-resolver-check-probe".to_owned(),
        },
        dimension: "mp-resolver-check-probe".to_owned(),
        quantity: 0,
        timestamp: SystemTime::now(),
        allocations: Vec::new(),
    }
}

/// Judges the answer to BatchMeterUsage with [`probe_usage_record`]: any verdict on the request
/// or the record means the caller is permitted.
pub fn batch_meter_usage(answer: &MeterResult) -> CheckResult {
    let iam_fix = "allow aws-marketplace:BatchMeterUsage (Resource \"*\") for the identity that \
                   calls Marketplace: the worker's task role, or the role of `marketplace.role_arn` \
                   (deploy/iam/ has both policies); `check` needs it too";
    match answer {
        MeterResult::Refused { exception, .. } => CheckResult::pass(
            Check::BatchMeterUsage,
            format!("permitted: the probe record was answered {exception}"),
        ),
        MeterResult::Metered(outcomes) => match outcomes.first() {
            Some(RecordOutcome::Success { .. }) => CheckResult::warn(
                Check::BatchMeterUsage,
                "permitted, but the probe record (quantity 0 of product mp-resolver-check-probe) was accepted",
                "check AWS_ENDPOINT_URL_MARKETPLACE_METERING: it should be unset in production, \
                 and point at Marketplace Metering (or `mp-resolver emulator`) otherwise",
            ),
            Some(outcome) => CheckResult::pass(
                Check::BatchMeterUsage,
                format!("permitted: the probe record came back {outcome:?}"),
            ),
            None => CheckResult::warn(
                Check::BatchMeterUsage,
                "permitted, but the answer named no record",
                "run `mp-resolver check` again",
            ),
        },
        MeterResult::Failed(failure) => {
            // `BatchMeterUsage: Code (HTTP 400)`: the code decides what the failure means.
            let code = failure
                .detail
                .trim_start_matches("BatchMeterUsage: ")
                .split([' ', ':'])
                .next()
                .unwrap_or_default();
            match (failure.kind, problem_of_code(code)) {
                (FailureKind::Throttled, _) => CheckResult::warn(
                    Check::BatchMeterUsage,
                    "permitted (the call was authorized), but throttled right now",
                    "nothing to change if it passes on a second run",
                ),
                (FailureKind::Disabled, _) => CheckResult::fail(
                    Check::BatchMeterUsage,
                    format!("the API is disabled for this account ({})", failure.detail),
                    "BatchMeterUsage answers DisabledApiException until AWS Marketplace enables \
                     metering for the product: ask the Marketplace seller operations team",
                ),
                (_, Problem::Denied) => CheckResult::fail(
                    Check::BatchMeterUsage,
                    format!("not permitted ({})", failure.detail),
                    iam_fix,
                ),
                (_, Problem::Credentials) => CheckResult::fail(
                    Check::BatchMeterUsage,
                    format!("no usable credentials ({})", failure.detail),
                    "AWS credentials are missing, unknown or expired: set AWS_PROFILE, or \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where the task role applies",
                ),
                _ => CheckResult::warn(
                    Check::BatchMeterUsage,
                    format!("not confirmed: {}", failure.detail),
                    "run `mp-resolver check` again in a minute; if it persists, check \
                     AWS_ENDPOINT_URL_MARKETPLACE_METERING and the network path",
                ),
            }
        }
    }
}

/// The token `check` sends: the worker's probe token (`aws::metering::PROBE_TOKEN`).
pub use crate::aws::metering::PROBE_TOKEN;

/// Judges the answer to a ResolveCustomer call with [`PROBE_TOKEN`], a token that cannot be valid:
/// a permitted caller gets the API's verdict on it. The answer is classified by the worker's own
/// classifier (`aws::metering`), so `check` and the worker cannot disagree on what it means.
pub fn resolve_customer(answer: &Answer) -> CheckResult {
    let iam_fix = "allow aws-marketplace:ResolveCustomer (Resource \"*\") for the identity that \
                   calls Marketplace: the worker's task role, or the role of `marketplace.role_arn` \
                   (deploy/iam/ has both policies); `check` needs it too";
    let failure = match &answer.result {
        CallResult::Resolved(_) => return CheckResult::warn(
            Check::ResolveCustomer,
            format!("permitted, but the deliberately invalid token {PROBE_TOKEN:?} resolved"),
            "check AWS_ENDPOINT_URL_MARKETPLACE_METERING: it should be unset in production, and \
                 point at Marketplace Metering (or `mp-resolver emulator`) otherwise",
        ),
        CallResult::Rejected { detail, .. } => {
            let code = detail.trim_start_matches("ResolveCustomer: ");
            return CheckResult::pass(
                Check::ResolveCustomer,
                format!("permitted: a deliberately invalid token was answered {code}"),
            );
        }
        CallResult::Failed(f) => f,
    };
    let aws = answer.failure.as_ref();
    match failure.kind {
        FailureKind::Throttled => CheckResult::warn(
            Check::ResolveCustomer,
            "permitted (the call was authorized), but throttled right now",
            "nothing to change if it passes on a second run; otherwise other callers in this \
             account use up the quota (see rate_limit.max_per_sec in config/default.toml)",
        ),
        FailureKind::Disabled => CheckResult::fail(
            Check::ResolveCustomer,
            "the API answers DisabledApiException: the worker will pause and resolve nothing",
            "ask AWS Marketplace Seller Operations why the API is disabled for this account",
        ),
        FailureKind::Transient if failure.detail == EXPIRED_CREDENTIALS => CheckResult::fail(
            Check::ResolveCustomer,
            format!(
                "the AWS credentials have expired ({})",
                aws.map_or(failure.detail.as_str(), |a| a.detail.as_str())
            ),
            "refresh the credentials (AWS_SESSION_TOKEN, `aws sso login`), or run where the task role applies",
        ),
        FailureKind::Transient
            if aws.and_then(|a| a.code.as_deref()) == Some("InternalServiceErrorException") =>
        {
            CheckResult::warn(
                Check::ResolveCustomer,
                "not confirmed: the API answered InternalServiceErrorException",
                "run `mp-resolver check` again in a minute",
            )
        }
        FailureKind::Transient => match aws {
            Some(a) if a.problem == Problem::Denied => CheckResult::fail(
                Check::ResolveCustomer,
                format!("not permitted ({a})"),
                iam_fix,
            ),
            Some(a) => CheckResult::fail(
                Check::ResolveCustomer,
                format!("the call failed ({a})"),
                fix_for(a, iam_fix.to_owned(), iam_fix.to_owned(), "Marketplace Metering"),
            ),
            None => CheckResult::fail(
                Check::ResolveCustomer,
                format!("the call failed ({})", failure.detail),
                iam_fix,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::error::AwsFailure;
    use crate::aws::metering::Failure;
    use crate::contract::{DeadLetterReason, ResolvedCustomer};
    use crate::ops::check::Outcome;

    #[test]
    fn batch_meter_usage_is_judged_by_what_the_probe_came_to() {
        let refused = MeterResult::Refused {
            exception: "InvalidProductCodeException".into(),
            detail: String::new(),
        };
        assert_eq!(batch_meter_usage(&refused).outcome, Outcome::Pass);
        let unknown = MeterResult::Metered(vec![RecordOutcome::CustomerNotSubscribed]);
        assert_eq!(batch_meter_usage(&unknown).outcome, Outcome::Pass);
        let accepted = MeterResult::Metered(vec![RecordOutcome::Success {
            record_id: "r".into(),
        }]);
        assert_eq!(batch_meter_usage(&accepted).outcome, Outcome::Warn);
        let failure = |kind, detail: &str| {
            batch_meter_usage(&MeterResult::Failed(Failure {
                kind,
                detail: detail.to_owned(),
            }))
            .outcome
        };
        assert_eq!(
            failure(
                FailureKind::Transient,
                "BatchMeterUsage: AccessDeniedException (HTTP 400)"
            ),
            Outcome::Fail
        );
        assert_eq!(
            failure(
                FailureKind::Throttled,
                "BatchMeterUsage: ThrottlingException"
            ),
            Outcome::Warn
        );
        assert_eq!(
            failure(
                FailureKind::Disabled,
                "BatchMeterUsage: DisabledApiException"
            ),
            Outcome::Fail
        );
        assert_eq!(
            failure(FailureKind::Transient, "BatchMeterUsage timed out"),
            Outcome::Warn
        );
        assert_eq!(probe_usage_record().quantity, 0, "a probe bills nothing");
    }

    /// A failed call as the worker's classifier and `describe` see it.
    fn failed(kind: FailureKind, detail: &str, problem: Problem, code: &str) -> Answer {
        Answer {
            result: CallResult::Failed(Failure {
                kind,
                detail: detail.to_owned(),
            }),
            failure: Some(AwsFailure {
                problem,
                code: Some(code.to_owned()),
                detail: format!("{code}: no"),
            }),
        }
    }

    #[test]
    fn resolve_verdicts() {
        let judge = |a: Answer| resolve_customer(&a).outcome;
        let rejected = Answer {
            result: CallResult::Rejected {
                reason: DeadLetterReason::InvalidToken,
                detail: "ResolveCustomer: InvalidTokenException".into(),
            },
            failure: None,
        };
        assert_eq!(judge(rejected), Outcome::Pass);
        let denied = || {
            failed(
                FailureKind::Transient,
                "ResolveCustomer: AccessDeniedException (HTTP 400)",
                Problem::Denied,
                "AccessDeniedException",
            )
        };
        assert_eq!(judge(denied()), Outcome::Fail);
        assert_eq!(
            judge(failed(
                FailureKind::Transient,
                "ResolveCustomer: UnrecognizedClientException",
                Problem::Credentials,
                "UnrecognizedClientException"
            )),
            Outcome::Fail
        );
        assert_eq!(
            judge(failed(
                FailureKind::Transient,
                EXPIRED_CREDENTIALS,
                Problem::Other,
                "ExpiredTokenException"
            )),
            Outcome::Fail
        );
        assert_eq!(
            judge(failed(
                FailureKind::Throttled,
                "ResolveCustomer: ThrottlingException",
                Problem::Other,
                "ThrottlingException"
            )),
            Outcome::Warn
        );
        assert_eq!(
            judge(failed(
                FailureKind::Disabled,
                "ResolveCustomer: DisabledApiException",
                Problem::Other,
                "DisabledApiException"
            )),
            Outcome::Fail
        );
        let resolved = Answer {
            result: CallResult::Resolved(ResolvedCustomer {
                customer_identifier: None,
                customer_aws_account_id: "123456789012".into(),
                product_code: "p".into(),
                license_arn: None,
                agreement_id: None,
            }),
            failure: None,
        };
        assert_eq!(judge(resolved), Outcome::Warn);
        let denied = resolve_customer(&denied());
        assert!(denied
            .fix
            .unwrap()
            .contains("aws-marketplace:ResolveCustomer"));
    }

    fn entitlement_answer(
        result: EntitlementsResult,
        failure: Option<AwsFailure>,
    ) -> entitlement::Answer {
        entitlement::Answer { result, failure }
    }

    #[test]
    fn get_entitlements_verdicts() {
        let judge = |a: entitlement::Answer| get_entitlements(&a, "prod-abc");
        let fetched = judge(entitlement_answer(
            EntitlementsResult::Fetched(vec![]),
            None,
        ));
        assert_eq!(fetched.outcome, Outcome::Pass);
        assert!(fetched.summary.contains("prod-abc"), "{fetched:?}");
        let rejected = EntitlementsResult::Rejected {
            detail: "GetEntitlements: InvalidParameterException".into(),
        };
        let rejected = judge(entitlement_answer(rejected, None));
        assert_eq!(rejected.outcome, Outcome::Pass);
        assert!(rejected.summary.contains("InvalidParameterException"));
        let failed = |kind, problem, code: &str| {
            entitlement_answer(
                EntitlementsResult::Failed(Failure {
                    kind,
                    detail: format!("GetEntitlements: {code}"),
                }),
                Some(AwsFailure {
                    problem,
                    code: Some(code.to_owned()),
                    detail: format!("{code}: no"),
                }),
            )
        };
        let denied = judge(failed(
            FailureKind::Transient,
            Problem::Denied,
            "AccessDeniedException",
        ));
        assert_eq!(denied.outcome, Outcome::Fail);
        assert!(denied
            .fix
            .unwrap()
            .contains("aws-marketplace:GetEntitlements"));
        let throttled = failed(
            FailureKind::Throttled,
            Problem::Other,
            "ThrottlingException",
        );
        assert_eq!(judge(throttled).outcome, Outcome::Warn);
        let internal = failed(
            FailureKind::Transient,
            Problem::Other,
            "InternalServiceErrorException",
        );
        assert_eq!(judge(internal).outcome, Outcome::Warn);
        let credentials = failed(
            FailureKind::Transient,
            Problem::Credentials,
            "UnrecognizedClientException",
        );
        assert_eq!(judge(credentials).outcome, Outcome::Fail);
    }

    #[test]
    fn assumed_role_verdicts() {
        const ROLE: &str = "arn:aws:iam::111122223333:role/marketplace";
        let expiry = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let ok = assumed_role(ROLE, Some("seller-42"), &Ok(Some(expiry)));
        assert_eq!(ok.outcome, Outcome::Pass);
        assert!(
            ok.summary.contains(ROLE) && ok.summary.contains("2027-01-15T08:00:00Z"),
            "{ok:?}"
        );
        let failed = assumed_role(ROLE, None, &Err("AccessDenied: not authorized".into()));
        assert_eq!(failed.outcome, Outcome::Fail);
        assert!(failed.summary.contains("AccessDenied"), "{failed:?}");
        assert!(failed.fix.unwrap().contains("sts:AssumeRole"));
        // The API checks name the role they ran as; a skipped one does not pretend it ran.
        let pass = CheckResult::pass(Check::ResolveCustomer, "permitted");
        assert_eq!(
            as_role(pass, Some(ROLE)).summary,
            format!("permitted (as {ROLE})")
        );
        let skipped = CheckResult::skip(Check::ResolveCustomer, "the Marketplace role");
        assert!(!as_role(skipped, Some(ROLE)).summary.contains(ROLE));
        let plain = CheckResult::pass(Check::ResolveCustomer, "permitted");
        assert_eq!(as_role(plain, None).summary, "permitted");
    }
}
