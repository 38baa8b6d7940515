//! The ResolveCustomer check: a call with a token that cannot be valid, judged by its answer.

use super::{fix_for, Check, CheckResult};
use crate::aws::error::{AwsFailure, Problem};

/// The token `check` sends to ResolveCustomer: printable ASCII, so it passes the API's own input
/// validation, and never a real token, so a permitted call must answer InvalidTokenException.
pub const PROBE_TOKEN: &str = "mp-resolver-check-invalid-token";

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
    use crate::ops::check::Outcome;

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
}
