//! The awsJson 1.1 request of `GetEntitlements` (target `AWSMPEntitlementService.GetEntitlements`)
//! and its errors, validated as the Entitlement Service model says: the only errors it declares are
//! `InvalidParameterException`, `ThrottlingException` and `InternalServiceErrorException`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Deserialize;

use super::engine::EntitlementFailure;
use super::entitlements::{EntitlementQuery, FilterName, MAX_PAGE_SIZE};
use super::model;
use super::wire::{self, ApiError};

pub const ENTITLEMENT_SERVICE: &str = "AWSMPEntitlementService";
pub const GET_ENTITLEMENTS: &str = "GetEntitlements";
pub const GET_ENTITLEMENTS_TARGET: &str = "AWSMPEntitlementService.GetEntitlements";

#[derive(Debug, Deserialize)]
struct GetEntitlementsRequest {
    #[serde(rename = "ProductCode")]
    product_code: Option<String>,
    #[serde(rename = "Filter")]
    filter: Option<BTreeMap<String, Vec<String>>>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidParameterException",
        message,
    )
}

/// The query an awsJson request body asks for, or the error the service answers.
#[cfg(test)]
pub fn parse_request(body: &[u8]) -> Result<EntitlementQuery, ApiError> {
    query_from(wire::parse_object(body)?)
}

/// The query a decoded request object asks for, or the error the service answers.
pub fn query_from(value: serde_json::Value) -> Result<EntitlementQuery, ApiError> {
    let request: GetEntitlementsRequest = serde_json::from_value(value).map_err(|_| {
        wire::serialization_error(
            "ProductCode and NextToken must be strings, Filter a map of string lists, \
             MaxResults an integer",
        )
    })?;
    let product_code = request
        .product_code
        .ok_or_else(|| invalid("ProductCode is required"))?;
    // The entitlement model only bounds the length (1 to 255).
    if !(1..=255).contains(&product_code.chars().count()) {
        return Err(invalid("ProductCode must be 1 to 255 characters"));
    }
    let filter = parse_filter(request.filter.unwrap_or_default())?;
    let page_size = match request.max_results {
        None => MAX_PAGE_SIZE,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| invalid(format!("MaxResults must be between 1 and 25, got {n}")))?,
    };
    let mut query = EntitlementQuery {
        product_code,
        filter,
        offset: 0,
        page_size,
    };
    if let Some(token) = request.next_token {
        if !model::is_non_empty_string(&token) {
            return Err(invalid(
                "NextToken must be a non-empty string without spaces",
            ));
        }
        query.offset = query
            .offset_of(&token)
            .ok_or_else(|| invalid("NextToken is not valid for this request"))?;
    }
    Ok(query)
}

fn parse_filter(
    raw: BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<FilterName, Vec<String>>, ApiError> {
    let mut filter = BTreeMap::new();
    for (name, values) in raw {
        let key = FilterName::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = FilterName::ALL.iter().map(|f| f.as_str()).collect();
            invalid(format!(
                "Filter key {name:?} is not one of {}",
                known.join(", ")
            ))
        })?;
        if values.is_empty() {
            return Err(invalid(format!(
                "Filter {name} must list at least one value"
            )));
        }
        filter.insert(key, values);
    }
    if filter.contains_key(&FilterName::CustomerIdentifier)
        && filter.contains_key(&FilterName::CustomerAwsAccountId)
    {
        return Err(invalid(
            "CUSTOMER_IDENTIFIER and CUSTOMER_AWS_ACCOUNT_ID are mutually exclusive",
        ));
    }
    Ok(filter)
}

/// What a validated call that still failed answers. The model has no `DisabledApiException`, so a
/// disabled emulator answers GetEntitlements with an internal error.
pub fn failure(failure: EntitlementFailure) -> ApiError {
    match failure {
        EntitlementFailure::Throttled => wire::throttled(),
        EntitlementFailure::Disabled | EntitlementFailure::RandomFailure => wire::internal_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        parse_request(body.as_bytes()).expect_err("an error").code
    }

    #[test]
    fn parses_a_full_request() {
        let query = parse_request(
            br#"{"ProductCode": "prod-abc", "MaxResults": 3,
                 "Filter": {"DIMENSION": ["seats", "sso"], "LICENSE_ARN": ["arn:x"]}}"#,
        )
        .expect("valid");
        assert_eq!(query.product_code, "prod-abc");
        assert_eq!(query.page_size, 3);
        assert_eq!(query.offset, 0);
        assert_eq!(query.filter[&FilterName::Dimension], ["seats", "sso"]);
        assert_eq!(query.filter.len(), 2);

        let defaults = parse_request(br#"{"ProductCode": "p"}"#).expect("valid");
        assert_eq!(defaults.page_size, 25);
        assert!(defaults.filter.is_empty());

        let token = defaults.next_token(30);
        let next = parse_request(
            serde_json::json!({"ProductCode": "p", "NextToken": token})
                .to_string()
                .as_bytes(),
        )
        .expect("valid");
        assert_eq!(next.offset, 30);
    }

    #[test]
    fn rejects_what_the_model_does_not_allow() {
        for body in [
            "{}",
            r#"{"ProductCode": ""}"#,
            r#"{"ProductCode": "p", "MaxResults": 0}"#,
            r#"{"ProductCode": "p", "MaxResults": 26}"#,
            r#"{"ProductCode": "p", "MaxResults": -1}"#,
            r#"{"ProductCode": "p", "Filter": {"PRODUCT": ["x"]}}"#,
            r#"{"ProductCode": "p", "Filter": {"DIMENSION": []}}"#,
            r#"{"ProductCode": "p", "Filter": {"CUSTOMER_IDENTIFIER": ["a"],
                "CUSTOMER_AWS_ACCOUNT_ID": ["123456789012"]}}"#,
            r#"{"ProductCode": "p", "NextToken": ""}"#,
            r#"{"ProductCode": "p", "NextToken": "made-up"}"#,
        ] {
            assert_eq!(code(body), "InvalidParameterException", "{body}");
        }
        let other_query = parse_request(br#"{"ProductCode": "q"}"#)
            .expect("valid")
            .next_token(5);
        let body = serde_json::json!({"ProductCode": "p", "NextToken": other_query}).to_string();
        assert_eq!(code(&body), "InvalidParameterException");
    }

    #[test]
    fn unreadable_bodies_are_serialization_errors() {
        for body in [
            "not json",
            "[]",
            r#"{"ProductCode": 5}"#,
            r#"{"ProductCode": "p", "MaxResults": "ten"}"#,
            r#"{"ProductCode": "p", "Filter": ["DIMENSION"]}"#,
        ] {
            assert_eq!(code(body), "SerializationException", "{body}");
        }
    }

    #[test]
    fn failures_use_only_the_models_errors() {
        let cases = [
            (EntitlementFailure::Throttled, 400, "ThrottlingException"),
            (
                EntitlementFailure::Disabled,
                500,
                "InternalServiceErrorException",
            ),
            (
                EntitlementFailure::RandomFailure,
                500,
                "InternalServiceErrorException",
            ),
        ];
        for (f, status, code) in cases {
            let error = failure(f);
            assert_eq!((error.status.as_u16(), error.code), (status, code));
        }
    }
}
