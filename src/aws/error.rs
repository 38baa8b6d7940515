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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{detail}")]
pub struct AwsFailure {
    pub problem: Problem,
    /// The service's error code, when the service answered.
    pub code: Option<String>,
    pub detail: String,
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

/// An AWS call that failed as a whole, after the SDK's own retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} on {target} failed: {failure}")]
pub struct CallError {
    pub operation: &'static str,
    /// The queue URL or topic ARN.
    pub target: String,
    #[source]
    pub failure: AwsFailure,
}

impl CallError {
    pub fn new(operation: &'static str, target: &str, failure: AwsFailure) -> Self {
        CallError {
            operation,
            target: target.to_owned(),
            failure,
        }
    }

    /// A request the SDK refused to build (a missing required field): a bug, reported like a call.
    pub fn build(operation: &'static str, target: &str, error: impl std::error::Error) -> Self {
        CallError::new(
            operation,
            target,
            AwsFailure {
                problem: Problem::Other,
                code: None,
                detail: error.to_string(),
            },
        )
    }
}

/// One entry of a batch call that failed on its own (a batch call that succeeds can still have
/// failed for some of its entries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if message.is_empty() { code.clone() } else { format!("{code}: {message}") })]
pub struct EntryFailure {
    pub code: String,
    pub message: String,
}

impl EntryFailure {
    pub(crate) fn missing() -> Self {
        EntryFailure {
            code: "MissingFromResponse".into(),
            message: "the batch response did not mention this entry".into(),
        }
    }

    /// SNS refused the message itself as too long (`InvalidParameter: ... Message too long` for an
    /// entry or a single Publish, `BatchRequestTooLong` for a batch of one event, as LocalStack and
    /// SNS answer): no retry can ever publish it.
    pub fn is_too_long(&self) -> bool {
        is_too_long(&self.code, &self.message)
    }

    /// Every entry of a batch whose call failed as a whole gets the call's failure.
    pub fn whole_call(failure: &AwsFailure) -> Self {
        EntryFailure {
            code: failure
                .code
                .clone()
                .unwrap_or_else(|| "CallFailed".to_owned()),
            message: failure.detail.clone(),
        }
    }
}

/// Maps a batch API's answer back to its entries, which were sent with their index as id: every
/// entry is either among the successes (with its output) or the failures (with code and message);
/// one in neither is reported as missing. The one mapper for every SQS and SNS batch call.
pub fn entry_results<T>(
    entries: usize,
    successes: impl IntoIterator<Item = (String, T)>,
    failures: impl IntoIterator<Item = (String, String, Option<String>)>,
) -> Vec<Result<T, EntryFailure>> {
    let mut results: Vec<Result<T, EntryFailure>> =
        (0..entries).map(|_| Err(EntryFailure::missing())).collect();
    let slot = |id: &str| id.parse::<usize>().ok().filter(|i| *i < entries);
    for (id, output) in successes {
        if let Some(i) = slot(&id) {
            results[i] = Ok(output);
        }
    }
    for (id, code, message) in failures {
        if let Some(i) = slot(&id) {
            results[i] = Err(EntryFailure {
                code,
                message: message.unwrap_or_default(),
            });
        }
    }
    results
}

/// Whether an SNS error says the message (or the batch) is over the size limit.
pub fn is_too_long(code: &str, message: &str) -> bool {
    code == "BatchRequestTooLong"
        || (code == "InvalidParameter" || code == "InvalidParameterValue")
            && message.to_ascii_lowercase().contains("too long")
}

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
    fn entry_results_match_ids_to_entries() {
        let r = entry_results(
            3,
            [
                ("2".to_owned(), "m2"),
                ("0".to_owned(), "m0"),
                ("9".to_owned(), "stray"),
            ],
            [(
                "1".to_owned(),
                "Throttled".to_owned(),
                Some("slow down".to_owned()),
            )],
        );
        let shown: Vec<Result<&str, String>> = r
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        assert_eq!(
            shown,
            vec![Ok("m0"), Err("Throttled: slow down".to_owned()), Ok("m2")]
        );
        let r: Vec<Result<(), EntryFailure>> = entry_results(1, [], []);
        assert_eq!(r, vec![Err(EntryFailure::missing())]);
    }

    #[test]
    fn too_long_is_told_apart_from_other_invalid_parameters() {
        let entry = |code: &str, message: &str| EntryFailure {
            code: code.into(),
            message: message.into(),
        };
        assert!(entry("InvalidParameter", "Invalid parameter: Message too long").is_too_long());
        assert!(entry(
            "BatchRequestTooLong",
            "The length of all the messages put together is more than the limit."
        )
        .is_too_long());
        assert!(!entry("InvalidParameter", "Invalid parameter: TopicArn").is_too_long());
        assert!(!entry("NotFound", "Topic does not exist").is_too_long());
        assert!(!entry("Throttling", "Rate exceeded").is_too_long());
    }

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
