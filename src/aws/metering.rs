//! ResolveCustomer: one call, the classification of what came back, and the in-process retries
//! of one delivery.

use aws_sdk_marketplacemetering::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_marketplacemetering::operation::resolve_customer::{
    ResolveCustomerError, ResolveCustomerOutput,
};

use crate::aws::error::{describe, AwsFailure};
use crate::contract::{DeadLetterReason, ResolvedCustomer};

/// What the API said about one call, reduced to what the worker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    Resolved(ResolvedCustomer),
    /// The API's own verdict that this token can never resolve.
    Rejected {
        reason: DeadLetterReason,
        detail: String,
    },
    /// Worth another try: the message is fine, the call was not.
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// For operators; never contains the token.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// ThrottlingException (or an HTTP 429).
    Throttled,
    /// InternalServiceError, 5xx, timeout, connection error, credentials, anything unexpected.
    Transient,
    /// DisabledApiException: the API is switched off for this seller; retrying soon is pointless.
    Disabled,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Throttled => "throttled",
            FailureKind::Transient => "transient",
            FailureKind::Disabled => "disabled",
        }
    }
}

/// Classifies a ResolveCustomer result. A failure of the call itself is never a verdict on the
/// token, so only InvalidToken and ExpiredToken lead to a dead-letter.
pub fn classify(
    result: Result<ResolveCustomerOutput, SdkError<ResolveCustomerError>>,
) -> CallResult {
    let error = match result {
        Ok(output) => return resolved(output),
        Err(error) => error,
    };
    let (service_error, status) = match service_error("ResolveCustomer", error) {
        Ok(pair) => pair,
        Err(failure) => return CallResult::Failed(failure),
    };
    let message = service_error.message().unwrap_or("").to_owned();
    let code = service_error.code().unwrap_or("unknown").to_owned();
    match service_error {
        ResolveCustomerError::InvalidTokenException(_) => CallResult::Rejected {
            reason: DeadLetterReason::InvalidToken,
            detail: "ResolveCustomer: InvalidTokenException".into(),
        },
        // An expired *security* token (the worker's own credentials) comes back under the same
        // code; that is the worker's problem, not the registration token's.
        ResolveCustomerError::ExpiredTokenException(_)
            if message.to_ascii_lowercase().contains("security token") =>
        {
            transient(EXPIRED_CREDENTIALS)
        }
        ResolveCustomerError::ExpiredTokenException(_) => CallResult::Rejected {
            reason: DeadLetterReason::ExpiredToken,
            detail: "ResolveCustomer: ExpiredTokenException".into(),
        },
        ResolveCustomerError::ThrottlingException(_) => CallResult::Failed(Failure {
            kind: FailureKind::Throttled,
            detail: "ResolveCustomer: ThrottlingException".into(),
        }),
        ResolveCustomerError::DisabledApiException(_) => CallResult::Failed(Failure {
            kind: FailureKind::Disabled,
            detail: "ResolveCustomer: DisabledApiException".into(),
        }),
        ResolveCustomerError::InternalServiceErrorException(_) => {
            transient("ResolveCustomer: InternalServiceErrorException")
        }
        _ if is_throttling(&code, status) => CallResult::Failed(Failure {
            kind: FailureKind::Throttled,
            detail: format!("ResolveCustomer: {code}"),
        }),
        _ => transient(code_detail("ResolveCustomer", &code, status)),
    }
}

/// The service's own error and the HTTP status; or, when the call never got one (timeout,
/// connection, unreadable response), a transient failure of `api`. Shared by every Marketplace API.
pub(crate) fn service_error<E>(api: &str, error: SdkError<E>) -> Result<(E, Option<u16>), Failure>
where
    E: std::error::Error + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let detail = match error {
        SdkError::ServiceError(context) => return Ok((context.into_err(), status)),
        SdkError::TimeoutError(_) => format!("{api} timed out"),
        SdkError::DispatchFailure(e) => {
            let what = if e.is_timeout() {
                "timed out connecting"
            } else if e.is_io() {
                "connection error"
            } else {
                "could not send the request"
            };
            format!("{api} {what}")
        }
        SdkError::ResponseError(_) => format!("{api} response unreadable"),
        SdkError::ConstructionFailure(_) => format!("{api} request could not be built"),
        other => format!("{api} failed: {other}"),
    };
    Err(Failure {
        kind: FailureKind::Transient,
        detail,
    })
}

/// A throttle the SDK did not model as ThrottlingException: an HTTP 429 or a throttling code.
pub(crate) fn is_throttling(code: &str, status: Option<u16>) -> bool {
    status == Some(429) || code.contains("Throttl") || code == "TooManyRequestsException"
}

/// `API: Code (HTTP status)`, for an error the classification has no better words for.
pub(crate) fn code_detail(api: &str, code: &str, status: Option<u16>) -> String {
    match status {
        Some(s) => format!("{api}: {code} (HTTP {s})"),
        None => format!("{api}: {code}"),
    }
}

impl CallResult {
    /// The `result` label of `mpr_resolve_attempts_total`.
    pub fn label(&self) -> &'static str {
        match self {
            CallResult::Resolved(_) => "resolved",
            CallResult::Rejected {
                reason: DeadLetterReason::ExpiredToken,
                ..
            } => "expired",
            CallResult::Rejected { .. } => "invalid",
            CallResult::Failed(f) => f.kind.as_str(),
        }
    }

    pub fn is_throttle(&self) -> bool {
        matches!(self, CallResult::Failed(f) if f.kind == FailureKind::Throttled)
    }
}

fn transient(detail: impl Into<String>) -> CallResult {
    CallResult::Failed(Failure {
        kind: FailureKind::Transient,
        detail: detail.into(),
    })
}

fn resolved(output: ResolveCustomerOutput) -> CallResult {
    let (Some(account), Some(product)) = (
        output.customer_aws_account_id.clone(),
        output.product_code.clone(),
    ) else {
        return transient("ResolveCustomer answered without CustomerAWSAccountId or ProductCode");
    };
    CallResult::Resolved(ResolvedCustomer {
        customer_identifier: output.customer_identifier,
        customer_aws_account_id: account,
        product_code: product,
        license_arn: output.license_arn,
        agreement_id: output.metadata.and_then(|m| m.agreement_id),
    })
}

/// A token no real registration has: the pause probe and `check` send it, and any answer other
/// than DisabledApiException (normally InvalidTokenException) shows the API answers this caller.
/// Printable ASCII, so it passes the API's own input validation.
pub const PROBE_TOKEN: &str = "mp-resolver-probe-not-a-token";

/// The detail of a call that failed because the caller's own AWS credentials expired (AWS answers
/// that with the same ExpiredTokenException code as an expired registration token).
pub const EXPIRED_CREDENTIALS: &str = "ResolveCustomer: the worker's AWS credentials have expired";

/// One ResolveCustomer answer: what the worker acts on, and, for a failed call, what an operator
/// needs to fix it (`check` judges both; the worker needs only `result`).
#[derive(Debug, Clone)]
pub struct Answer {
    pub result: CallResult,
    pub failure: Option<AwsFailure>,
}

/// [`resolve_customer`], keeping the operator's view of a failure.
pub async fn ask(client: &aws_sdk_marketplacemetering::Client, token: &str) -> Answer {
    let response = client
        .resolve_customer()
        .registration_token(token)
        .send()
        .await;
    let failure = response.as_ref().err().map(describe);
    Answer {
        result: classify(response),
        failure,
    }
}

/// One ResolveCustomer request, classified. The client must have the SDK's retries off (see
/// `aws::Clients`): the worker's backoff is the only retry layer for this call.
pub async fn resolve_customer(
    client: &aws_sdk_marketplacemetering::Client,
    token: &str,
) -> CallResult {
    classify(
        client
            .resolve_customer()
            .registration_token(token)
            .send()
            .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_marketplacemetering::operation::resolve_customer::ResolveCustomerError as E;
    use aws_sdk_marketplacemetering::types::error as te;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn service_error(err: E, status: u16) -> SdkError<E> {
        let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    fn meta(code: &str, message: &str) -> aws_smithy_types::error::ErrorMetadata {
        aws_smithy_types::error::ErrorMetadata::builder()
            .code(code)
            .message(message)
            .build()
    }

    #[test]
    fn verdicts_on_the_token_are_rejections() {
        let invalid = E::InvalidTokenException(te::InvalidTokenException::builder().build());
        assert!(matches!(
            classify(Err(service_error(invalid, 400))),
            CallResult::Rejected {
                reason: DeadLetterReason::InvalidToken,
                ..
            }
        ));
        let expired = E::ExpiredTokenException(
            te::ExpiredTokenException::builder()
                .message("Registration token is expired")
                .build(),
        );
        assert!(matches!(
            classify(Err(service_error(expired, 400))),
            CallResult::Rejected {
                reason: DeadLetterReason::ExpiredToken,
                ..
            }
        ));
    }

    #[test]
    fn expired_credentials_are_not_an_expired_registration_token() {
        let expired = E::ExpiredTokenException(
            te::ExpiredTokenException::builder()
                .message("The security token included in the request is expired")
                .meta(meta(
                    "ExpiredTokenException",
                    "The security token included in the request is expired",
                ))
                .build(),
        );
        assert!(matches!(
            classify(Err(service_error(expired, 400))),
            CallResult::Failed(Failure {
                kind: FailureKind::Transient,
                ..
            })
        ));
    }

    #[test]
    fn call_failures_are_retryable_kinds() {
        let cases = [
            (
                E::ThrottlingException(te::ThrottlingException::builder().build()),
                400,
                FailureKind::Throttled,
            ),
            (
                E::DisabledApiException(te::DisabledApiException::builder().build()),
                400,
                FailureKind::Disabled,
            ),
            (
                E::InternalServiceErrorException(
                    te::InternalServiceErrorException::builder().build(),
                ),
                500,
                FailureKind::Transient,
            ),
            (
                E::generic(meta("ServiceUnavailable", "x")),
                503,
                FailureKind::Transient,
            ),
            (
                E::generic(meta("AccessDeniedException", "no")),
                400,
                FailureKind::Transient,
            ),
            (
                E::generic(meta("TooManyRequestsException", "slow")),
                429,
                FailureKind::Throttled,
            ),
        ];
        for (err, status, kind) in cases {
            let shown = format!("{err:?}");
            match classify(Err(service_error(err, status))) {
                CallResult::Failed(f) => assert_eq!(f.kind, kind, "{shown}"),
                other => panic!("{shown} → {other:?}"),
            }
        }
    }

    #[test]
    fn success_maps_every_field() {
        let output = ResolveCustomerOutput::builder()
            .customer_aws_account_id("123456789012")
            .product_code("prod-abc")
            .license_arn("arn:aws:license-manager::123456789012:license/l-1")
            .metadata(
                aws_sdk_marketplacemetering::types::Metadata::builder()
                    .agreement_id("agmt-1")
                    .build(),
            )
            .build();
        let CallResult::Resolved(c) = classify(Ok(output)) else {
            panic!()
        };
        assert_eq!(c.customer_aws_account_id, "123456789012");
        assert_eq!(c.product_code, "prod-abc");
        assert_eq!(c.customer_identifier, None);
        assert_eq!(c.agreement_id.as_deref(), Some("agmt-1"));
        assert!(c.license_arn.is_some());
    }

    #[test]
    fn success_without_account_is_not_trusted() {
        let output = ResolveCustomerOutput::builder().product_code("p").build();
        assert!(matches!(classify(Ok(output)), CallResult::Failed(_)));
    }
}
