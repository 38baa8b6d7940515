//! The awsJson 1.1 shapes of `ResolveCustomer`, matching what `aws-sdk-marketplacemetering`
//! serializes and deserializes. Messages follow the real service's where known and never include
//! the registration token.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::engine::Outcome;
use super::token::TestToken;

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
pub const TARGET_HEADER: &str = "x-amz-target";
pub const RESOLVE_CUSTOMER_TARGET: &str = "AWSMPMeteringService.ResolveCustomer";
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// AWS JSON services name the error in this header too; some clients read it before the body.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";
/// The largest request body accepted. ResolveCustomer and GetEntitlements requests are a few hundred
/// bytes; anything near this is a mistake.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
struct ResolveCustomerRequest {
    #[serde(rename = "RegistrationToken")]
    registration_token: Option<String>,
}

/// Member names are the SDK's (`CustomerAWSAccountId` is not plain PascalCase); `None` members are
/// left out as the real service does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolveCustomerResponse {
    #[serde(rename = "CustomerIdentifier", skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    #[serde(rename = "CustomerAWSAccountId")]
    pub customer_aws_account_id: String,
    #[serde(rename = "ProductCode")]
    pub product_code: String,
    #[serde(rename = "LicenseArn", skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
    #[serde(rename = "Metadata", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    #[serde(rename = "AgreementId")]
    pub agreement_id: String,
}

impl From<TestToken> for ResolveCustomerResponse {
    fn from(token: TestToken) -> Self {
        Self {
            customer_identifier: token.customer,
            customer_aws_account_id: token.account,
            product_code: token.product,
            license_arn: token.license,
            metadata: token
                .agreement
                .map(|agreement_id| Metadata { agreement_id }),
        }
    }
}

/// An awsJson error: the SDK picks the error variant from `__type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unknown_operation() -> Self {
        Self::client(
            "UnknownOperationException",
            "The requested operation is not supported by the emulator",
        )
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLargeException",
            format!("The request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!(ErrorBody {
            code: self.code,
            message: &self.message,
        })
    }
}

pub fn serialization_error(message: impl Into<String>) -> ApiError {
    ApiError::client("SerializationException", message)
}

pub fn throttled() -> ApiError {
    ApiError::client("ThrottlingException", "Rate exceeded")
}

pub fn internal_error() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServiceErrorException",
        "An internal error occurred; please retry",
    )
}

/// A request body as the JSON object the protocol sends.
pub fn parse_object(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    // serde_json's messages can quote input strings, so only its position goes back.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        serialization_error(format!(
            "Could not parse the request body (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    // serde's derived visitor would also take a JSON array; the protocol sends an object.
    if !value.is_object() {
        return Err(serialization_error(
            "The request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// The registration token from an awsJson request body.
#[cfg(test)]
pub fn parse_request(body: &[u8]) -> Result<String, ApiError> {
    token_from(parse_object(body)?)
}

/// The registration token from a decoded request object.
pub fn token_from(value: serde_json::Value) -> Result<String, ApiError> {
    let request: ResolveCustomerRequest = serde_json::from_value(value)
        .map_err(|_| serialization_error("RegistrationToken must be a string"))?;
    request.registration_token.ok_or_else(|| {
        ApiError::client(
            "ValidationException",
            "1 validation error detected: Value null at 'registrationToken' failed to satisfy \
             constraint: Member must not be null",
        )
    })
}

/// What the service answers for a judged call.
pub fn respond(outcome: Outcome) -> Result<ResolveCustomerResponse, ApiError> {
    match outcome {
        Outcome::Resolved(token) => Ok(token.into()),
        Outcome::Disabled => Err(ApiError::client(
            "DisabledApiException",
            "The API is disabled in the emulator",
        )),
        Outcome::QuotaExceeded | Outcome::TokenThrottled => Err(throttled()),
        Outcome::RandomFailure | Outcome::TokenFailure => Err(internal_error()),
        Outcome::Invalid(reason) => Err(ApiError::client(
            "InvalidTokenException",
            format!("Invalid registration token: {reason}"),
        )),
        Outcome::Expired => Err(ApiError::client(
            "ExpiredTokenException",
            "The registration token has expired",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::token::TokenError;

    #[test]
    fn success_body_uses_sdk_member_names_and_omits_absent_ones() {
        let license = "arn:aws:license-manager::123456789012:license:l-1";
        let full = TestToken::new("123456789012", "prod-abc")
            .customer("c")
            .license(license)
            .agreement("a");
        let json = serde_json::to_value(respond(Outcome::Resolved(full)).expect("ok"))
            .expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "CustomerIdentifier": "c",
                "CustomerAWSAccountId": "123456789012",
                "ProductCode": "prod-abc",
                "LicenseArn": license,
                "Metadata": {"AgreementId": "a"},
            })
        );
        let bare = respond(Outcome::Resolved(TestToken::new("123456789012", "p"))).expect("ok");
        assert_eq!(
            serde_json::to_value(bare).expect("serializes"),
            serde_json::json!({"CustomerAWSAccountId": "123456789012", "ProductCode": "p"})
        );
    }

    #[test]
    fn errors_map_to_codes_and_statuses() {
        let cases = [
            (Outcome::Disabled, 400, "DisabledApiException"),
            (Outcome::QuotaExceeded, 400, "ThrottlingException"),
            (Outcome::TokenThrottled, 400, "ThrottlingException"),
            (Outcome::RandomFailure, 500, "InternalServiceErrorException"),
            (Outcome::TokenFailure, 500, "InternalServiceErrorException"),
            (
                Outcome::Invalid(TokenError::Base64),
                400,
                "InvalidTokenException",
            ),
            (Outcome::Expired, 400, "ExpiredTokenException"),
        ];
        for (outcome, status, code) in cases {
            let error = respond(outcome).expect_err("an error");
            assert_eq!((error.status.as_u16(), error.code), (status, code));
            assert_eq!(error.body()["__type"], code);
        }
    }

    #[test]
    fn parses_requests_without_echoing_them() {
        assert_eq!(
            parse_request(br#"{"RegistrationToken":"t"}"#).as_deref(),
            Ok("t")
        );
        let secret = "emu1.super-secret-token";
        for body in [
            format!(r#"{{"RegistrationToken": {secret}}}"#),
            format!(r#"["{secret}"]"#),
            format!(r#"{{"RegistrationToken": ["{secret}"]}}"#),
        ] {
            let error = parse_request(body.as_bytes()).expect_err("bad body");
            assert_eq!(error.code, "SerializationException", "{body}");
            assert!(!error.message.contains("secret"), "{}", error.message);
        }
        assert_eq!(
            parse_request(b"{}").expect_err("missing").code,
            "ValidationException"
        );
    }
}
