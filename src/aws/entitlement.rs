//! GetEntitlements: what a contract customer is entitled to, read for license and entitlement
//! updates. Every page is read; errors are classified as for ResolveCustomer (`metering`), with
//! the same `Failure` kinds, so the worker's backoff and hand-back treat both APIs alike.

use aws_sdk_marketplaceentitlement::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_marketplaceentitlement::operation::get_entitlements::{
    GetEntitlementsError, GetEntitlementsOutput,
};
use aws_sdk_marketplaceentitlement::types::{self as sdk, GetEntitlementFilterName};
use chrono::{DateTime, Utc};

use crate::aws::error::{describe, AwsFailure};
use crate::aws::metering::{code_detail, is_throttling, service_error, Failure, FailureKind};
use crate::contract::lifecycle::{Entitlement, EntitlementFilter, EntitlementValue};

const API: &str = "GetEntitlements";

/// Entitlements asked for per page (the API's maximum).
pub const PAGE_SIZE: i32 = 25;

/// What GetEntitlements said about one notification's customer.
#[derive(Debug, Clone, PartialEq)]
pub enum EntitlementsResult {
    /// Every page read: the customer's current entitlements (possibly none).
    Fetched(Vec<Entitlement>),
    /// The API's verdict that this request can never succeed (InvalidParameterException: the
    /// notification names a product or customer the seller's account does not have).
    Rejected { detail: String },
    /// Worth another try: throttling, a 5xx, a timeout, credentials or permissions.
    Failed(Failure),
}

/// Classifies one GetEntitlements page's failure. Like ResolveCustomer, only the service's own
/// verdict on the request is final; everything about the call itself is retried.
pub fn classify_error(error: SdkError<GetEntitlementsError>) -> EntitlementsResult {
    let (service_error, status) = match service_error(API, error) {
        Ok(pair) => pair,
        Err(failure) => return EntitlementsResult::Failed(failure),
    };
    let code = service_error.code().unwrap_or("unknown").to_owned();
    let failed = |kind, detail: String| EntitlementsResult::Failed(Failure { kind, detail });
    match service_error {
        GetEntitlementsError::InvalidParameterException(_) => EntitlementsResult::Rejected {
            detail: format!("{API}: InvalidParameterException"),
        },
        GetEntitlementsError::ThrottlingException(_) => failed(
            FailureKind::Throttled,
            format!("{API}: ThrottlingException"),
        ),
        GetEntitlementsError::InternalServiceErrorException(_) => failed(
            FailureKind::Transient,
            format!("{API}: InternalServiceErrorException"),
        ),
        _ if is_throttling(&code, status) => {
            failed(FailureKind::Throttled, code_detail(API, &code, status))
        }
        _ => failed(FailureKind::Transient, code_detail(API, &code, status)),
    }
}

/// The SDK's entitlement in the published shape.
fn entitlement(e: sdk::Entitlement) -> Entitlement {
    let value = match e.value {
        Some(v) => match (
            v.integer_value,
            v.double_value,
            v.boolean_value,
            v.string_value,
        ) {
            (Some(i), ..) => EntitlementValue::Integer(i.into()),
            (_, Some(d), ..) => EntitlementValue::Double(d),
            (_, _, Some(b), _) => EntitlementValue::Boolean(b),
            (.., Some(s)) => EntitlementValue::String(s),
            _ => EntitlementValue::Unknown,
        },
        None => EntitlementValue::Unknown,
    };
    Entitlement {
        dimension: e.dimension.unwrap_or_default(),
        value,
        expires_at: e
            .expiration_date
            .and_then(|d| DateTime::<Utc>::from_timestamp(d.secs(), d.subsec_nanos())),
    }
}

fn filter_of(filter: &EntitlementFilter) -> (GetEntitlementFilterName, &str) {
    match filter {
        EntitlementFilter::LicenseArn(arn) => (GetEntitlementFilterName::LicenseArn, arn),
        EntitlementFilter::CustomerAwsAccountId(id) => {
            (GetEntitlementFilterName::CustomerAwsAccountId, id)
        }
        EntitlementFilter::CustomerIdentifier(id) => {
            (GetEntitlementFilterName::CustomerIdentifier, id)
        }
    }
}

/// One GetEntitlements answer with the operator's view of a failure (what `check` judges).
#[derive(Debug)]
pub struct Answer {
    pub result: EntitlementsResult,
    pub failure: Option<AwsFailure>,
}

/// One page (of at most one entitlement) of `product_code`, unfiltered: enough to learn whether
/// the caller may call the API at all.
pub async fn ask(client: &aws_sdk_marketplaceentitlement::Client, product_code: &str) -> Answer {
    let response = client
        .get_entitlements()
        .product_code(product_code)
        .max_results(1)
        .send()
        .await;
    match response {
        Ok(page) => Answer {
            result: EntitlementsResult::Fetched(
                page.entitlements
                    .unwrap_or_default()
                    .into_iter()
                    .map(entitlement)
                    .collect(),
            ),
            failure: None,
        },
        Err(error) => Answer {
            failure: Some(describe(&error)),
            result: classify_error(error),
        },
    }
}

/// One page of a customer's entitlements, and the token of the next page when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entitlements: Vec<Entitlement>,
    pub next_token: Option<String>,
}

/// One GetEntitlements request (`PAGE_SIZE` at most) for `product_code` and `filter`, from
/// `next_token` on: the page, or the classified failure. The client must have its SDK retries off
/// (`aws::Clients` builds it so): retrying a failed read is the worker's backoff.
pub async fn page(
    client: &aws_sdk_marketplaceentitlement::Client,
    product_code: &str,
    filter: &EntitlementFilter,
    next_token: Option<String>,
) -> Result<Page, EntitlementsResult> {
    let (name, value) = filter_of(filter);
    let GetEntitlementsOutput {
        entitlements,
        next_token,
        ..
    } = client
        .get_entitlements()
        .product_code(product_code)
        .filter(name, vec![value.to_owned()])
        .max_results(PAGE_SIZE)
        .set_next_token(next_token)
        .send()
        .await
        .map_err(classify_error)?;
    Ok(Page {
        entitlements: entitlements
            .unwrap_or_default()
            .into_iter()
            .map(entitlement)
            .collect(),
        next_token: next_token.filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_marketplaceentitlement::operation::get_entitlements::GetEntitlementsError as E;
    use aws_sdk_marketplaceentitlement::types::error as te;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn service_error(err: E, status: u16) -> SdkError<E> {
        let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    fn meta(code: &str) -> aws_smithy_types::error::ErrorMetadata {
        aws_smithy_types::error::ErrorMetadata::builder()
            .code(code)
            .message("m")
            .build()
    }

    #[test]
    fn errors_are_classified_like_resolve_customer() {
        let cases = [
            (
                E::ThrottlingException(te::ThrottlingException::builder().build()),
                400,
                Some(FailureKind::Throttled),
            ),
            (
                E::InternalServiceErrorException(
                    te::InternalServiceErrorException::builder().build(),
                ),
                500,
                Some(FailureKind::Transient),
            ),
            (
                E::generic(meta("TooManyRequestsException")),
                429,
                Some(FailureKind::Throttled),
            ),
            (
                E::generic(meta("ServiceUnavailable")),
                503,
                Some(FailureKind::Transient),
            ),
            // The worker's own permissions or credentials: fixable, never a verdict.
            (
                E::generic(meta("AccessDeniedException")),
                400,
                Some(FailureKind::Transient),
            ),
            (
                E::generic(meta("ExpiredTokenException")),
                400,
                Some(FailureKind::Transient),
            ),
            (
                E::InvalidParameterException(te::InvalidParameterException::builder().build()),
                400,
                None,
            ),
        ];
        for (err, status, expected) in cases {
            let shown = format!("{err:?}");
            match (classify_error(service_error(err, status)), expected) {
                (EntitlementsResult::Failed(f), Some(kind)) => {
                    assert_eq!(f.kind, kind, "{shown}");
                    assert!(f.detail.starts_with("GetEntitlements"), "{}", f.detail);
                }
                (EntitlementsResult::Rejected { detail }, None) => {
                    assert!(detail.contains("InvalidParameterException"), "{detail}")
                }
                (other, _) => panic!("{shown} → {other:?}"),
            }
        }
    }

    #[test]
    fn timeouts_are_transient() {
        let error: SdkError<E> = SdkError::timeout_error("slow");
        assert!(matches!(
            classify_error(error),
            EntitlementsResult::Failed(Failure {
                kind: FailureKind::Transient,
                ..
            })
        ));
    }

    #[test]
    fn sdk_entitlements_map_to_the_published_shape() {
        let value = |v: sdk::EntitlementValue| {
            entitlement(
                sdk::Entitlement::builder()
                    .dimension("d")
                    .value(v)
                    .expiration_date(aws_smithy_types::DateTime::from_secs(1_798_761_600))
                    .build(),
            )
        };
        let e = value(sdk::EntitlementValue::builder().integer_value(12).build());
        assert_eq!(e.value, EntitlementValue::Integer(12));
        assert_eq!(e.dimension, "d");
        assert_eq!(
            e.expires_at.map(|t| t.to_rfc3339()),
            Some("2027-01-01T00:00:00+00:00".to_string())
        );
        assert_eq!(
            value(sdk::EntitlementValue::builder().boolean_value(true).build()).value,
            EntitlementValue::Boolean(true)
        );
        assert_eq!(
            value(
                sdk::EntitlementValue::builder()
                    .string_value("gold")
                    .build()
            )
            .value,
            EntitlementValue::String("gold".into())
        );
        assert_eq!(
            value(sdk::EntitlementValue::builder().double_value(1.5).build()).value,
            EntitlementValue::Double(1.5)
        );
        let bare = entitlement(sdk::Entitlement::builder().dimension("d").build());
        assert_eq!(
            (bare.value, bare.expires_at),
            (EntitlementValue::Unknown, None)
        );
    }

    #[test]
    fn filters_use_the_api_names() {
        let cases = [
            (
                EntitlementFilter::LicenseArn("arn:l".into()),
                GetEntitlementFilterName::LicenseArn,
            ),
            (
                EntitlementFilter::CustomerAwsAccountId("1".into()),
                GetEntitlementFilterName::CustomerAwsAccountId,
            ),
            (
                EntitlementFilter::CustomerIdentifier("c".into()),
                GetEntitlementFilterName::CustomerIdentifier,
            ),
        ];
        for (filter, name) in cases {
            assert_eq!(filter_of(&filter).0, name);
        }
    }
}
