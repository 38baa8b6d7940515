//! The ResolveCustomer check: a call with a token that cannot be valid, judged by its answer.

use super::{fix_for, Check, CheckResult};
use crate::aws::error::Problem;
use crate::aws::metering::{Answer, CallResult, FailureKind, EXPIRED_CREDENTIALS};

/// The token `check` sends: the worker's probe token (`aws::metering::PROBE_TOKEN`).
pub use crate::aws::metering::PROBE_TOKEN;

/// Judges the answer to a ResolveCustomer call with [`PROBE_TOKEN`], a token that cannot be valid:
/// a permitted caller gets the API's verdict on it. The answer is classified by the worker's own
/// classifier (`aws::metering`), so `check` and the worker cannot disagree on what it means.
pub fn resolve_customer(answer: &Answer) -> CheckResult {
    let iam_fix = "allow aws-marketplace:ResolveCustomer (Resource \"*\") for the worker's role \
                   (deploy/iam/ has the policy); `check` needs it too";
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
}
