//! The Marketplace Metering Service: ResolveCustomer (one call, the classification of what came
//! back) and BatchMeterUsage (one call for up to 25 usage records, each record's outcome mapped to
//! our own types).

use std::time::SystemTime;

use aws_sdk_marketplacemetering::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_marketplacemetering::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_marketplacemetering::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_marketplacemetering::operation::batch_meter_usage::{
    BatchMeterUsageError, BatchMeterUsageOutput,
};
use aws_sdk_marketplacemetering::operation::resolve_customer::{
    ResolveCustomerError, ResolveCustomerOutput,
};
use aws_sdk_marketplacemetering::primitives::DateTime;
use aws_sdk_marketplacemetering::types::{self as sdk, UsageRecordResultStatus};

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

// ---- BatchMeterUsage ----

/// Who a usage record is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MeteredCustomer {
    /// The buyer's AWS account (new integrations). With the agreement's license when metering by
    /// license (Concurrent Agreements), in which case the call carries no ProductCode.
    Account {
        aws_account_id: String,
        license_arn: Option<String>,
    },
    /// ResolveCustomer's CustomerIdentifier (legacy integrations; the call needs a ProductCode).
    Legacy { customer_identifier: String },
}

/// A share of a record's quantity under a set of tags (vendor-metered tagging). The quantities of a
/// record's allocations must add up to its quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageAllocation {
    pub quantity: i32,
    /// Key and value; at most 5, none for the untagged bucket.
    pub tags: Vec<(String, String)>,
}

/// One usage record: a quantity of one dimension for one customer at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub customer: MeteredCustomer,
    pub dimension: String,
    pub quantity: i32,
    /// When the usage happened. AWS de-duplicates records on its hour, and refuses the whole call
    /// when one is too old or in the future.
    pub timestamp: SystemTime,
    /// Empty: no allocations sent.
    pub allocations: Vec<UsageAllocation>,
}

/// What the service did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Accepted (or an identical record already was): `record_id` is AWS's MeteringRecordId.
    Success { record_id: String },
    /// The customer cannot use the product (unknown, not or no longer subscribed, suspended).
    CustomerNotSubscribed,
    /// A record for the same customer, dimension and hour was accepted with another quantity.
    DuplicateRecord,
    /// Not processed (UnprocessedRecords, or absent from the answer): send it again; an identical
    /// record is idempotent, so a resend can never bill twice.
    Unprocessed,
}

/// What one BatchMeterUsage call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterResult {
    /// One outcome per record, in the order the records were given.
    Metered(Vec<RecordOutcome>),
    /// The call failed as a whole and is worth another try: throttled, transient (5xx,
    /// InternalServiceError, timeout, connection, credentials) or disabled.
    Failed(Failure),
    /// The API's verdict on the request itself: sending it unchanged will fail the same way. No
    /// record of the call was processed.
    Refused {
        /// The exception's name, e.g. `TimestampOutOfBoundsException`.
        exception: String,
        /// For operators.
        detail: String,
    },
}

/// The exceptions that are a verdict on the request (BatchMeterUsage's own, and the protocol's
/// validation errors), so a retry cannot help.
const REFUSALS: &[&str] = &[
    "TimestampOutOfBoundsException",
    "InvalidProductCodeException",
    "InvalidUsageDimensionException",
    "InvalidLicenseException",
    "InvalidCustomerIdentifierException",
    "InvalidTagException",
    "InvalidUsageAllocationsException",
    "ValidationException",
    "SerializationException",
    "RequestEntityTooLargeException",
];

/// One BatchMeterUsage request for `records` (at most 25; the service refuses more), classified.
/// `product_code` is required for legacy and account records without a license, and must be left
/// out when metering by license. The client must have the SDK's retries off (see `aws::Clients`):
/// the caller decides when to send again.
pub async fn batch_meter_usage(
    client: &aws_sdk_marketplacemetering::Client,
    product_code: Option<&str>,
    records: &[UsageRecord],
) -> MeterResult {
    let mut sdk_records = Vec::with_capacity(records.len());
    for record in records {
        match to_sdk(record) {
            Ok(r) => sdk_records.push(r),
            Err(error) => {
                return MeterResult::Refused {
                    exception: "InvalidUsageRecord".into(),
                    detail: format!("BatchMeterUsage: {error}"),
                }
            }
        }
    }
    let result = client
        .batch_meter_usage()
        .set_product_code(product_code.map(str::to_owned))
        .set_usage_records(Some(sdk_records))
        .customize()
        .interceptor(OmitEmptyCustomerIdentifier)
        .send()
        .await;
    classify_metering(records, result)
}

fn to_sdk(
    record: &UsageRecord,
) -> Result<sdk::UsageRecord, aws_sdk_marketplacemetering::error::BuildError> {
    let mut builder = sdk::UsageRecord::builder()
        .timestamp(DateTime::from(record.timestamp))
        .dimension(&record.dimension)
        .quantity(record.quantity);
    builder = match &record.customer {
        MeteredCustomer::Account {
            aws_account_id,
            license_arn,
        } => builder
            .customer_aws_account_id(aws_account_id)
            .set_license_arn(license_arn.clone()),
        MeteredCustomer::Legacy {
            customer_identifier,
        } => builder.customer_identifier(customer_identifier),
    };
    for allocation in &record.allocations {
        let mut sdk_allocation =
            sdk::UsageAllocation::builder().allocated_usage_quantity(allocation.quantity);
        for (key, value) in &allocation.tags {
            sdk_allocation =
                sdk_allocation.tags(sdk::Tag::builder().key(key).value(value).build()?);
        }
        builder = builder.usage_allocations(sdk_allocation.build()?);
    }
    builder.build()
}

/// Classifies a BatchMeterUsage answer for the `records` that were sent.
pub fn classify_metering(
    records: &[UsageRecord],
    result: Result<BatchMeterUsageOutput, SdkError<BatchMeterUsageError>>,
) -> MeterResult {
    let error = match result {
        Ok(output) => return MeterResult::Metered(outcomes(records, &output)),
        Err(error) => error,
    };
    let (service_error, status) = match service_error("BatchMeterUsage", error) {
        Ok(pair) => pair,
        Err(failure) => return MeterResult::Failed(failure),
    };
    let code = service_error.code().unwrap_or("unknown").to_owned();
    let message = service_error.message().unwrap_or("").to_owned();
    let failed = |kind| {
        MeterResult::Failed(Failure {
            kind,
            detail: format!("BatchMeterUsage: {code}"),
        })
    };
    match service_error {
        BatchMeterUsageError::ThrottlingException(_) => failed(FailureKind::Throttled),
        BatchMeterUsageError::DisabledApiException(_) => failed(FailureKind::Disabled),
        BatchMeterUsageError::InternalServiceErrorException(_) => failed(FailureKind::Transient),
        _ if REFUSALS.contains(&code.as_str()) => MeterResult::Refused {
            detail: if message.is_empty() {
                format!("BatchMeterUsage: {code}")
            } else {
                format!("BatchMeterUsage: {code}: {message}")
            },
            exception: code,
        },
        _ if is_throttling(&code, status) => failed(FailureKind::Throttled),
        _ => MeterResult::Failed(Failure {
            kind: FailureKind::Transient,
            detail: code_detail("BatchMeterUsage", &code, status),
        }),
    }
}

/// What identifies a record in the answer, which echoes each record: the service does not promise
/// to keep the order. Timestamps are compared in whole seconds, the precision the echo keeps.
type RecordKey = (
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i32,
    i64,
);

fn key_of(record: &UsageRecord) -> RecordKey {
    let (account, license, customer) = match &record.customer {
        MeteredCustomer::Account {
            aws_account_id,
            license_arn,
        } => (Some(aws_account_id.clone()), license_arn.clone(), None),
        MeteredCustomer::Legacy {
            customer_identifier,
        } => (None, None, Some(customer_identifier.clone())),
    };
    (
        account,
        license,
        customer,
        record.dimension.clone(),
        record.quantity,
        DateTime::from(record.timestamp).secs(),
    )
}

fn key_of_sdk(record: &sdk::UsageRecord) -> RecordKey {
    // The SDK reads an absent CustomerIdentifier as "".
    let customer = Some(record.customer_identifier().to_owned()).filter(|c| !c.is_empty());
    (
        record.customer_aws_account_id().map(str::to_owned),
        record.license_arn().map(str::to_owned),
        customer,
        record.dimension().to_owned(),
        record.quantity().unwrap_or(0),
        record.timestamp().secs(),
    )
}

/// Each record's outcome: matched to the answer's results and unprocessed records by content
/// (identical records take the answers in turn); a record the answer does not mention is
/// unprocessed, as is a result with a status this client does not know.
fn outcomes(records: &[UsageRecord], output: &BatchMeterUsageOutput) -> Vec<RecordOutcome> {
    let keys: Vec<RecordKey> = records.iter().map(key_of).collect();
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
    let mut place = |key: RecordKey, outcome: RecordOutcome| {
        if let Some(i) = (0..keys.len()).find(|&i| outcomes[i].is_none() && keys[i] == key) {
            outcomes[i] = Some(outcome);
        }
    };
    for result in output.results() {
        let Some(record) = result.usage_record() else {
            continue;
        };
        let outcome = match (result.status(), result.metering_record_id()) {
            (Some(UsageRecordResultStatus::Success), Some(id)) if !id.is_empty() => {
                RecordOutcome::Success {
                    record_id: id.to_owned(),
                }
            }
            (Some(UsageRecordResultStatus::CustomerNotSubscribed), _) => {
                RecordOutcome::CustomerNotSubscribed
            }
            (Some(UsageRecordResultStatus::DuplicateRecord), _) => RecordOutcome::DuplicateRecord,
            _ => RecordOutcome::Unprocessed,
        };
        place(key_of_sdk(record), outcome);
    }
    for record in output.unprocessed_records() {
        place(key_of_sdk(record), RecordOutcome::Unprocessed);
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(RecordOutcome::Unprocessed))
        .collect()
}

/// `aws-sdk-marketplacemetering` models `UsageRecord.CustomerIdentifier` as a plain string and
/// always serialises it, so a record identified by `CustomerAWSAccountId` goes out with
/// `"CustomerIdentifier": ""`, which breaks the model's length constraint and the rule that the
/// two are mutually exclusive. This drops the empty member from the body before it is signed.
#[derive(Debug)]
struct OmitEmptyCustomerIdentifier;

impl Intercept for OmitEmptyCustomerIdentifier {
    fn name(&self) -> &'static str {
        "OmitEmptyCustomerIdentifier"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let request = context.request_mut();
        let Some(stripped) = request
            .body()
            .bytes()
            .and_then(without_empty_customer_identifiers)
        else {
            return Ok(());
        };
        let length = stripped.len().to_string();
        *request.body_mut() = stripped.into();
        request.headers_mut().insert("content-length", length);
        Ok(())
    }
}

/// The body without `"CustomerIdentifier": ""` in any usage record, or `None` when it has none
/// (or is not the JSON the SDK writes, which is then sent as it is).
fn without_empty_customer_identifiers(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    for record in value
        .get_mut("UsageRecords")?
        .as_array_mut()?
        .iter_mut()
        .filter_map(serde_json::Value::as_object_mut)
    {
        if record.get("CustomerIdentifier").and_then(|c| c.as_str()) == Some("") {
            record.remove("CustomerIdentifier");
            changed = true;
        }
    }
    changed.then(|| value.to_string().into_bytes())
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
    fn only_empty_customer_identifiers_are_dropped() {
        let body = br#"{"ProductCode":"p","UsageRecords":[{"CustomerIdentifier":"","CustomerAWSAccountId":"123456789012","Dimension":"d","Timestamp":1},{"CustomerIdentifier":"c","Dimension":"d","Timestamp":1}]}"#;
        let stripped = without_empty_customer_identifiers(body).expect("changed");
        let value: serde_json::Value = serde_json::from_slice(&stripped).expect("json");
        assert!(value["UsageRecords"][0].get("CustomerIdentifier").is_none());
        assert_eq!(
            value["UsageRecords"][0]["CustomerAWSAccountId"],
            "123456789012"
        );
        assert_eq!(value["UsageRecords"][1]["CustomerIdentifier"], "c");
        assert_eq!(value["ProductCode"], "p");
        for unchanged in [
            &br#"{"UsageRecords":[{"CustomerIdentifier":"c"}]}"#[..],
            b"{}",
            b"not json",
            br#"{"UsageRecords":{}}"#,
        ] {
            assert_eq!(without_empty_customer_identifiers(unchanged), None);
        }
    }

    fn usage(account: &str, quantity: i32) -> UsageRecord {
        UsageRecord {
            customer: MeteredCustomer::Account {
                aws_account_id: account.to_owned(),
                license_arn: None,
            },
            dimension: "api_calls".into(),
            quantity,
            timestamp: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_774_958_400),
            allocations: Vec::new(),
        }
    }

    #[test]
    fn metering_outcomes_follow_the_records_not_the_answers_order() {
        let records = [
            usage("111111111111", 1),
            usage("222222222222", 2),
            usage("111111111111", 1),
            usage("333333333333", 3),
        ];
        let sdk_record = |r: &UsageRecord| to_sdk(r).expect("builds");
        let output = BatchMeterUsageOutput::builder()
            .results(
                sdk::UsageRecordResult::builder()
                    .usage_record(sdk_record(&records[1]))
                    .status(UsageRecordResultStatus::DuplicateRecord)
                    .build(),
            )
            .results(
                sdk::UsageRecordResult::builder()
                    .usage_record(sdk_record(&records[0]))
                    .status(UsageRecordResultStatus::Success)
                    .metering_record_id("id-1")
                    .build(),
            )
            .results(
                sdk::UsageRecordResult::builder()
                    .usage_record(sdk_record(&records[0]))
                    .status(UsageRecordResultStatus::CustomerNotSubscribed)
                    .build(),
            )
            .build();
        assert_eq!(
            outcomes(&records, &output),
            [
                RecordOutcome::Success {
                    record_id: "id-1".into()
                },
                RecordOutcome::DuplicateRecord,
                RecordOutcome::CustomerNotSubscribed,
                // Not mentioned at all.
                RecordOutcome::Unprocessed,
            ]
        );
        let unprocessed = BatchMeterUsageOutput::builder()
            .unprocessed_records(sdk_record(&records[3]))
            .results(
                sdk::UsageRecordResult::builder()
                    .usage_record(sdk_record(&records[1]))
                    .status(UsageRecordResultStatus::Success)
                    .build(),
            )
            .build();
        assert_eq!(
            outcomes(&records[1..], &unprocessed),
            [
                // Success without a MeteringRecordId is not trusted.
                RecordOutcome::Unprocessed,
                RecordOutcome::Unprocessed,
                RecordOutcome::Unprocessed,
            ]
        );
    }

    #[test]
    fn metering_errors_are_retryable_kinds_or_refusals() {
        use aws_sdk_marketplacemetering::operation::batch_meter_usage::BatchMeterUsageError as B;
        fn sdk_error(err: B, status: u16) -> SdkError<B> {
            let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
            SdkError::service_error(err, raw)
        }
        let records = [usage("111111111111", 1)];
        let cases = [
            (
                B::ThrottlingException(
                    te::ThrottlingException::builder()
                        .meta(meta("ThrottlingException", ""))
                        .build(),
                ),
                400,
                "throttled",
            ),
            (
                B::DisabledApiException(
                    te::DisabledApiException::builder()
                        .meta(meta("DisabledApiException", ""))
                        .build(),
                ),
                400,
                "disabled",
            ),
            (
                B::InternalServiceErrorException(
                    te::InternalServiceErrorException::builder()
                        .meta(meta("InternalServiceErrorException", ""))
                        .build(),
                ),
                500,
                "transient",
            ),
            (
                B::TimestampOutOfBoundsException(
                    te::TimestampOutOfBoundsException::builder()
                        .meta(meta("TimestampOutOfBoundsException", "old"))
                        .build(),
                ),
                400,
                "TimestampOutOfBoundsException",
            ),
            (
                B::InvalidTagException(
                    te::InvalidTagException::builder()
                        .meta(meta("InvalidTagException", ""))
                        .build(),
                ),
                400,
                "InvalidTagException",
            ),
            (
                B::generic(meta("ValidationException", "too many")),
                400,
                "ValidationException",
            ),
            (
                B::generic(meta("TooManyRequestsException", "")),
                429,
                "throttled",
            ),
            (
                B::generic(meta("AccessDeniedException", "")),
                400,
                "transient",
            ),
            (B::generic(meta("ServiceUnavailable", "")), 503, "transient"),
        ];
        for (err, status, expected) in cases {
            let shown = format!("{err:?}");
            let got = match classify_metering(&records, Err(sdk_error(err, status))) {
                MeterResult::Failed(f) => f.kind.as_str().to_owned(),
                MeterResult::Refused { exception, detail } => {
                    assert!(detail.contains(&exception), "{detail}");
                    exception
                }
                MeterResult::Metered(m) => panic!("{shown} metered {m:?}"),
            };
            assert_eq!(got, expected, "{shown}");
        }
    }

    #[test]
    fn success_without_account_is_not_trusted() {
        let output = ResolveCustomerOutput::builder().product_code("p").build();
        assert!(matches!(classify(Ok(output)), CallResult::Failed(_)));
    }
}
