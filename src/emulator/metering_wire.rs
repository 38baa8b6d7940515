//! The awsJson 1.1 shapes of `BatchMeterUsage` (target `AWSMPMeteringService.BatchMeterUsage`):
//! the request checked against the model's constraints (`ValidationException`, as AWS answers a
//! request that breaks them before the operation runs), and the answer built from the verdicts.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::engine::MeteringFailure;
use super::metering::{MeteringRequest, UsageRecord, Verdict, MAX_RECORDS};
use super::model;
use super::wire::{self, ApiError};

pub const BATCH_METER_USAGE_TARGET: &str = "AWSMPMeteringService.BatchMeterUsage";

#[derive(Debug, Deserialize)]
struct BatchMeterUsageRequest {
    #[serde(rename = "UsageRecords")]
    usage_records: Option<Vec<UsageRecord>>,
    #[serde(rename = "ProductCode")]
    product_code: Option<String>,
}

/// The `BatchMeterUsageResult` shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchMeterUsageResponse {
    #[serde(rename = "Results")]
    pub results: Vec<UsageRecordResult>,
    #[serde(rename = "UnprocessedRecords")]
    pub unprocessed_records: Vec<UsageRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRecordResult {
    #[serde(rename = "UsageRecord")]
    pub usage_record: UsageRecord,
    #[serde(rename = "MeteringRecordId", skip_serializing_if = "Option::is_none")]
    pub metering_record_id: Option<String>,
    #[serde(rename = "Status")]
    pub status: &'static str,
}

/// The wording of AWS's constraint violations; values are not echoed.
fn invalid(member: &str, constraint: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        format!("1 validation error detected: Value at '{member}' failed to satisfy constraint: {constraint}"),
    )
}

const NOT_NULL: &str = "Member must not be null";

/// The request an awsJson body asks for, or the error the service answers.
#[cfg(test)]
pub fn parse_request(body: &[u8]) -> Result<MeteringRequest, ApiError> {
    request_from(wire::parse_object(body)?)
}

/// The request a decoded object asks for, or the error the service answers.
pub fn request_from(value: serde_json::Value) -> Result<MeteringRequest, ApiError> {
    let request: BatchMeterUsageRequest = serde_json::from_value(value).map_err(|_| {
        wire::serialization_error(
            "UsageRecords must be a list of UsageRecord objects (Timestamp a number of epoch \
             seconds, Quantity and AllocatedUsageQuantity integers, the others strings) and \
             ProductCode a string",
        )
    })?;
    let records = request
        .usage_records
        .ok_or_else(|| invalid("usageRecords", NOT_NULL))?;
    if records.len() > MAX_RECORDS {
        return Err(invalid(
            "usageRecords",
            &format!("Member must have length less than or equal to {MAX_RECORDS}"),
        ));
    }
    if let Some(product) = &request.product_code {
        if !model::is_product_code(product) {
            return Err(invalid(
                "productCode",
                "Member must satisfy regular expression pattern: ^[-a-zA-Z0-9/=:_.@]*$ and have \
                 length between 1 and 255",
            ));
        }
    }
    for (i, record) in records.iter().enumerate() {
        check_record(i, record)?;
    }
    Ok(MeteringRequest {
        product_code: request.product_code,
        records,
    })
}

fn check_record(i: usize, record: &UsageRecord) -> Result<(), ApiError> {
    let member = |name: &str| format!("usageRecords.{}.member.{name}", i + 1);
    let length = |value: &str, max: usize| (1..=max).contains(&value.chars().count());
    let quantity = |q: i64| (0..=i64::from(i32::MAX)).contains(&q);
    if record.timestamp.is_none() {
        return Err(invalid(&member("timestamp"), NOT_NULL));
    }
    match &record.dimension {
        None => return Err(invalid(&member("dimension"), NOT_NULL)),
        Some(d) if !length(d, 255) => {
            return Err(invalid(
                &member("dimension"),
                "Member must have length between 1 and 255",
            ))
        }
        Some(_) => {}
    }
    if !record.quantity.is_none_or(quantity) {
        return Err(invalid(
            &member("quantity"),
            "Member must have value between 0 and 2147483647",
        ));
    }
    // An empty CustomerIdentifier is what aws-sdk-marketplacemetering sends when none was set.
    if record
        .customer_identifier
        .as_deref()
        .is_some_and(|c| !model::is_customer_identifier(c))
    {
        return Err(invalid(
            &member("customerIdentifier"),
            "Member must have length between 1 and 255",
        ));
    }
    if record
        .customer_aws_account_id
        .as_deref()
        .is_some_and(|a| !length(a, 255) || !a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(
            &member("customerAWSAccountId"),
            "Member must satisfy regular expression pattern: ^[0-9]+$ and have length between 1 \
             and 255",
        ));
    }
    if record.license_arn.as_deref().is_some_and(str::is_empty) {
        return Err(invalid(
            &member("licenseArn"),
            "Member must have length greater than or equal to 1",
        ));
    }
    let allocations = record.usage_allocations.as_deref().unwrap_or_default();
    if allocations
        .iter()
        .any(|a| !quantity(a.allocated_usage_quantity))
    {
        return Err(invalid(
            &member("usageAllocations"),
            "AllocatedUsageQuantity must have value between 0 and 2147483647",
        ));
    }
    Ok(())
}

/// The answer to a processed call: each record's result, echoing it, and the unprocessed ones.
pub fn respond(request: &MeteringRequest, verdicts: Vec<Verdict>) -> BatchMeterUsageResponse {
    let mut results = Vec::new();
    let mut unprocessed_records = Vec::new();
    for (record, verdict) in request.records.iter().zip(verdicts) {
        let (status, metering_record_id) = match verdict {
            Verdict::Success { metering_record_id } => ("Success", Some(metering_record_id)),
            Verdict::CustomerNotSubscribed => ("CustomerNotSubscribed", None),
            Verdict::DuplicateRecord => ("DuplicateRecord", None),
            Verdict::Unprocessed => {
                unprocessed_records.push(record.clone());
                continue;
            }
        };
        results.push(UsageRecordResult {
            usage_record: record.clone(),
            metering_record_id,
            status,
        });
    }
    BatchMeterUsageResponse {
        results,
        unprocessed_records,
    }
}

/// What a parsed call that was not processed answers.
pub fn failure(failure: MeteringFailure) -> ApiError {
    match failure {
        MeteringFailure::Disabled => ApiError::new(
            StatusCode::BAD_REQUEST,
            "DisabledApiException",
            "The API is disabled in the emulator",
        ),
        MeteringFailure::Throttled => wire::throttled(),
        MeteringFailure::InternalError => wire::internal_error(),
        MeteringFailure::Refused(refused) => ApiError::new(
            StatusCode::BAD_REQUEST,
            refused.refusal.code(),
            refused.message,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::metering::{Refusal, Refused};

    fn code(body: &str) -> &'static str {
        parse_request(body.as_bytes()).expect_err("an error").code
    }

    fn record(extra: &str) -> String {
        format!(
            r#"{{"Timestamp": 1774958400, "Dimension": "d", "CustomerAWSAccountId": "123456789012"{extra}}}"#
        )
    }

    #[test]
    fn parses_a_full_request() {
        let body = format!(
            r#"{{"ProductCode": "prod-abc", "UsageRecords": [{}, {}]}}"#,
            record(
                r#", "Quantity": 3, "UsageAllocations": [{"AllocatedUsageQuantity": 3, "Tags": [{"Key": "k", "Value": "v"}]}]"#
            ),
            r#"{"Timestamp": 1774958400.5, "Dimension": "d", "CustomerIdentifier": "c"}"#
        );
        let request = parse_request(body.as_bytes()).expect("valid");
        assert_eq!(request.product_code.as_deref(), Some("prod-abc"));
        assert_eq!(request.records.len(), 2);
        assert_eq!(request.records[0].quantity(), 3);
        assert_eq!(request.records[1].quantity(), 0);
        assert_eq!(request.records[1].unix_secs(), 1_774_958_400);
        let no_product = format!(r#"{{"UsageRecords": [{}]}}"#, record(""));
        assert_eq!(
            parse_request(no_product.as_bytes())
                .expect("valid")
                .product_code,
            None
        );
    }

    #[test]
    fn constraint_violations_are_validation_errors() {
        let many = vec![record(""); 26].join(",");
        for body in [
            "{}".to_owned(),
            format!(r#"{{"UsageRecords": [{many}]}}"#),
            format!(r#"{{"ProductCode": "", "UsageRecords": [{}]}}"#, record("")),
            format!(r#"{{"ProductCode": "a b", "UsageRecords": [{}]}}"#, record("")),
            r#"{"UsageRecords": [{"Dimension": "d", "CustomerAWSAccountId": "1"}]}"#.to_owned(),
            r#"{"UsageRecords": [{"Timestamp": 1, "CustomerAWSAccountId": "1"}]}"#.to_owned(),
            format!(r#"{{"UsageRecords": [{}]}}"#, record(r#", "CustomerIdentifier": """#)),
            format!(r#"{{"UsageRecords": [{}]}}"#, record(r#", "Quantity": -1"#)),
            format!(r#"{{"UsageRecords": [{}]}}"#, record(r#", "Quantity": 2147483648"#)),
            format!(r#"{{"UsageRecords": [{}]}}"#, record(r#", "LicenseArn": """#)),
            format!(
                r#"{{"UsageRecords": [{}]}}"#,
                record(r#", "UsageAllocations": [{"AllocatedUsageQuantity": -1}]"#)
            ),
            r#"{"UsageRecords": [{"Timestamp": 1, "Dimension": "", "CustomerAWSAccountId": "1"}]}"#
                .to_owned(),
            r#"{"UsageRecords": [{"Timestamp": 1, "Dimension": "d", "CustomerAWSAccountId": "12a"}]}"#
                .to_owned(),
        ] {
            assert_eq!(code(&body), "ValidationException", "{body}");
        }
        // 25 is the limit, not over it.
        let most = vec![record(""); 25].join(",");
        assert!(parse_request(format!(r#"{{"UsageRecords": [{most}]}}"#).as_bytes()).is_ok());
        let error = parse_request(
            format!(
                r#"{{"UsageRecords": [{}]}}"#,
                record(r#", "CustomerIdentifier": """#)
            )
            .as_bytes(),
        )
        .expect_err("empty");
        assert!(
            error
                .message
                .contains("usageRecords.1.member.customerIdentifier"),
            "{}",
            error.message
        );
    }

    #[test]
    fn wrong_types_are_serialization_errors() {
        for body in [
            "[]",
            r#"{"UsageRecords": {}}"#,
            r#"{"UsageRecords": [{"Timestamp": "2026-03-31T12:00:00Z"}]}"#,
            r#"{"UsageRecords": [], "ProductCode": 5}"#,
            r#"{"UsageRecords": [{"Quantity": 1.5}]}"#,
        ] {
            assert_eq!(code(body), "SerializationException", "{body}");
        }
    }

    #[test]
    fn answers_echo_records_and_list_unprocessed_ones() {
        let body = format!(
            r#"{{"ProductCode": "p", "UsageRecords": [{}, {}, {}, {}]}}"#,
            record(""),
            record(""),
            record(""),
            record("")
        );
        let request = parse_request(body.as_bytes()).expect("valid");
        let response = respond(
            &request,
            vec![
                Verdict::Success {
                    metering_record_id: "id-1".into(),
                },
                Verdict::CustomerNotSubscribed,
                Verdict::Unprocessed,
                Verdict::DuplicateRecord,
            ],
        );
        let json = serde_json::to_value(&response).expect("serializes");
        assert_eq!(json["Results"][0]["MeteringRecordId"], "id-1");
        assert_eq!(json["Results"][0]["Status"], "Success");
        assert_eq!(
            json["Results"][0]["UsageRecord"],
            serde_json::json!({"Timestamp": 1774958400.0, "Dimension": "d",
                               "CustomerAWSAccountId": "123456789012"})
        );
        assert_eq!(json["Results"][1]["Status"], "CustomerNotSubscribed");
        assert!(json["Results"][1].get("MeteringRecordId").is_none());
        assert_eq!(json["Results"][2]["Status"], "DuplicateRecord");
        assert_eq!(json["UnprocessedRecords"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn failures_use_the_models_errors() {
        let cases = [
            (MeteringFailure::Disabled, 400, "DisabledApiException"),
            (MeteringFailure::Throttled, 400, "ThrottlingException"),
            (
                MeteringFailure::InternalError,
                500,
                "InternalServiceErrorException",
            ),
            (
                MeteringFailure::Refused(Refused {
                    refusal: Refusal::TimestampOutOfBounds,
                    message: "m".into(),
                }),
                400,
                "TimestampOutOfBoundsException",
            ),
        ];
        for (f, status, code) in cases {
            let error = failure(f);
            assert_eq!((error.status.as_u16(), error.code), (status, code));
        }
    }
}
