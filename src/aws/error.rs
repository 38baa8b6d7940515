//! What an AWS call's failure means for an operator: missing resource, missing permission, bad
//! credentials, or an endpoint that cannot be reached. Each kind has a different fix.

use std::fmt;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The queue or topic does not exist (or not in this account and region).
    NotFound,
    /// The caller is authenticated but IAM does not allow the action.
    Denied,
    /// The credentials are missing, unknown, expired or signed wrongly.
    Credentials,
    /// The endpoint did not answer: network, region, or endpoint URL.
    Unreachable,
    /// Anything else; `detail` says what.
    Other,
}

/// A failed AWS call, reduced to what an operator acts on. Never carries a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsFailure {
    pub problem: Problem,
    /// The service's error code, when the service answered.
    pub code: Option<String>,
    pub detail: String,
}

impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

const NOT_FOUND: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NotFound",
    "NotFoundException",
    "ResourceNotFoundException",
];
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "AuthorizationErrorException",
    "KMS.AccessDeniedException",
];
const CREDENTIALS: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "InvalidToken",
];

/// Classifies a service error code. `ExpiredTokenException` is left out on purpose: from
/// ResolveCustomer it is a verdict on the registration token, so that caller decides.
pub fn problem_of_code(code: &str) -> Problem {
    if NOT_FOUND.contains(&code) {
        Problem::NotFound
    } else if DENIED.contains(&code) {
        Problem::Denied
    } else if CREDENTIALS.contains(&code) {
        Problem::Credentials
    } else {
        Problem::Other
    }
}

/// Turns any SDK error into an [`AwsFailure`].
pub fn describe<E, R>(error: &SdkError<E, R>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    let detail = chain(error);
    match error {
        SdkError::ServiceError(_) => {
            let code = error.code().map(str::to_owned);
            let message = error.message().unwrap_or("");
            let problem = code.as_deref().map_or(Problem::Other, problem_of_code);
            AwsFailure {
                problem,
                detail: match &code {
                    Some(c) if message.is_empty() => c.clone(),
                    Some(c) => format!("{c}: {message}"),
                    None => detail,
                },
                code,
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => AwsFailure {
            // A missing credential surfaces as a failure to send; it needs the credentials fix.
            problem: if mentions_credentials(&detail) {
                Problem::Credentials
            } else {
                Problem::Unreachable
            },
            code: None,
            detail,
        },
        _ => AwsFailure {
            problem: if mentions_credentials(&detail) {
                Problem::Credentials
            } else {
                Problem::Other
            },
            code: None,
            detail,
        },
    }
}

/// The error and its sources, one after the other: the SDK's own context display appends a
/// `Debug` dump of the whole chain, which is noise in a one-line report.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = next.source();
    }
    parts.join(": ")
}

fn mentions_credentials(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    lower.contains("credential") || lower.contains("identity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_problems() {
        assert_eq!(
            problem_of_code("AWS.SimpleQueueService.NonExistentQueue"),
            Problem::NotFound
        );
        assert_eq!(problem_of_code("NotFound"), Problem::NotFound);
        assert_eq!(problem_of_code("AccessDenied"), Problem::Denied);
        assert_eq!(problem_of_code("AuthorizationError"), Problem::Denied);
        assert_eq!(
            problem_of_code("UnrecognizedClientException"),
            Problem::Credentials
        );
        assert_eq!(problem_of_code("ThrottlingException"), Problem::Other);
        assert_eq!(problem_of_code("ExpiredTokenException"), Problem::Other);
    }
}
