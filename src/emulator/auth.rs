//! `strictAuth`: refuse API calls that are not SigV4-signed for Marketplace, as AWS does.
//!
//! Both the Metering and the Entitlement Service sign with the name `aws-marketplace` (the
//! `aws.auth#sigv4` trait of both Smithy models), so a credential scoped to any other service is
//! refused. The signature itself is NOT verified: the emulator has no secret keys to check it
//! with. This catches clients that send no credentials or sign for the wrong service or shape.

use axum::http::{header, HeaderMap, StatusCode};

use super::wire::ApiError;

/// The SigV4 signing name of both Marketplace services.
pub const SIGNING_NAME: &str = "aws-marketplace";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Accepts a request whose `Authorization` header has the SigV4 shape for [`SIGNING_NAME`].
pub fn check(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| invalid("Authorization header is not ASCII"))?;
    check_authorization(value)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidSignatureException",
        message,
    )
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/aws-marketplace/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>`.
fn check_authorization(value: &str) -> Result<(), ApiError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| invalid(format!("Authorization must use the {ALGORITHM} algorithm")))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| invalid("Authorization has no Credential"))?;
    check_scope(credential)?;
    if signed_headers.is_none_or(str::is_empty) {
        return Err(invalid("Authorization has no SignedHeaders"));
    }
    let signature = signature.unwrap_or_default();
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("Signature must be 64 hexadecimal characters"));
    }
    Ok(())
}

/// `AKID/yyyymmdd/region/service/aws4_request`, scoped to Marketplace.
fn check_scope(credential: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = parts.as_slice() else {
        return Err(invalid(
            "Credential must be <access key>/<date>/<region>/<service>/aws4_request",
        ));
    };
    if key.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || region.is_empty()
        || *terminator != "aws4_request"
    {
        return Err(invalid(
            "Credential must be <access key>/<date>/<region>/<service>/aws4_request",
        ));
    }
    if *service != SIGNING_NAME {
        // The wording of AWS's own answer to a wrongly scoped credential.
        return Err(invalid(format!(
            "Credential should be scoped to correct service: '{SIGNING_NAME}'."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNATURE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn authorization(credential: &str) -> String {
        format!(
            "{ALGORITHM} Credential={credential}, SignedHeaders=host;x-amz-date;x-amz-target, \
             Signature={SIGNATURE}"
        )
    }

    #[test]
    fn accepts_a_marketplace_sigv4_header() {
        let good = authorization("AKIDEXAMPLE/20260101/us-east-1/aws-marketplace/aws4_request");
        assert_eq!(check_authorization(&good), Ok(()));
        // The SDK's own layout, without spaces after the commas.
        let compact = good.replace(", ", ",");
        assert_eq!(check_authorization(&compact), Ok(()));
    }

    #[test]
    fn missing_header_is_missing_authentication_token() {
        let error = check(&HeaderMap::new()).expect_err("refused");
        assert_eq!(
            (error.status.as_u16(), error.code),
            (403, "MissingAuthenticationTokenException")
        );
    }

    #[test]
    fn malformed_or_wrongly_scoped_headers_are_invalid_signatures() {
        let cases = [
            "Bearer abc".to_owned(),
            ALGORITHM.to_owned(),
            format!("{ALGORITHM} SignedHeaders=host, Signature={SIGNATURE}"),
            authorization("AKID/20260101/us-east-1/marketplacemetering/aws4_request"),
            authorization("AKID/20260101/us-east-1/aws-marketplace"),
            authorization("AKID/2026-01-01/us-east-1/aws-marketplace/aws4_request"),
            authorization("/20260101/us-east-1/aws-marketplace/aws4_request"),
            authorization("AKID/20260101/us-east-1/aws-marketplace/aws4_request")
                .replace(SIGNATURE, "abc"),
            format!(
                "{ALGORITHM} Credential=AKID/20260101/us-east-1/aws-marketplace/aws4_request, \
                 Signature={SIGNATURE}"
            ),
        ];
        for value in cases {
            let error = check_authorization(&value).expect_err("refused");
            assert_eq!(
                (error.status.as_u16(), error.code),
                (400, "InvalidSignatureException"),
                "{value}"
            );
        }
        let wrong_service =
            check_authorization(&authorization("AKID/20260101/us-east-1/sqs/aws4_request"))
                .expect_err("refused");
        assert!(wrong_service.message.contains("'aws-marketplace'"));
    }
}
