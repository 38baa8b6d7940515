//! The usage queue's inbound contract: one usage event from the seller's application, parsed and
//! bounded. A body that breaks it is dead-lettered as `malformed_message`, unchanged.
//!
//! ```json
//! {"usageId": "u-1", "productCode": "prod-abc",
//!  "customerAWSAccountId": "123456789012", "licenseArn": "arn:aws:license-manager::...",
//!  "dimension": "api_calls", "quantity": 5, "timestamp": "2026-12-04T10:15:00Z",
//!  "allocations": [{"quantity": 5, "tags": {"team": "a"}}]}
//! ```
//!
//! `customerIdentifier` instead of the account and license for legacy integrations; `productCode`
//! may be left out when `product_codes` names exactly one product (the worker fills it in).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Malformed;

/// Longest `usageId`, in characters.
pub const MAX_USAGE_ID_CHARS: usize = 128;
/// Longest `dimension`, in characters (BatchMeterUsage's own limit).
pub const MAX_DIMENSION_CHARS: usize = 255;
/// Most allocations one event may carry (BatchMeterUsage allows 2,500 a record; an hour's record
/// sums its events' allocations by tag set, so one event gets a small share of that).
pub const MAX_EVENT_ALLOCATIONS: usize = 100;
/// Most tags per allocation (BatchMeterUsage's `TagList`).
pub const MAX_TAGS: usize = 5;
/// The largest quantity one record may carry (BatchMeterUsage's `Quantity` is a 32-bit integer).
pub const MAX_QUANTITY: i64 = i32::MAX as i64;

/// Who the usage is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UsageCustomer {
    /// New integrations: the buyer's account and the agreement's license.
    Account {
        aws_account_id: String,
        license_arn: String,
    },
    /// Legacy integrations: ResolveCustomer's CustomerIdentifier (the call needs the product).
    Legacy { customer_identifier: String },
}

/// A share of an event's quantity under a set of tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub quantity: i64,
    /// Sorted by key, so equal tag sets compare equal.
    pub tags: Vec<(String, String)>,
}

/// A usage event that passed every bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub usage_id: String,
    pub product_code: Option<String>,
    pub customer: UsageCustomer,
    pub dimension: String,
    pub quantity: i64,
    pub timestamp: DateTime<Utc>,
    /// Empty: none. Otherwise their quantities add up to `quantity`.
    pub allocations: Vec<Allocation>,
}

impl UsageEvent {
    /// The subscription's key in the store: `sub#<licenseArn>`, or `sub#<productCode>#<customerIdentifier>`
    /// for legacy customers (`product` is the event's product, filled in when it was left out).
    pub fn subscription(&self, product: &str) -> String {
        match &self.customer {
            UsageCustomer::Account { license_arn, .. } => format!("sub#{license_arn}"),
            UsageCustomer::Legacy {
                customer_identifier,
            } => format!("sub#{product}#{customer_identifier}"),
        }
    }
}

/// Parses a usage queue body against the contract.
pub fn parse_usage_body(body: &str) -> Result<UsageEvent, Malformed> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err(Malformed::new("empty body"));
    }
    let object = super::parse_json_object(trimmed)?;
    parse_usage_object(&object)
}

fn parse_usage_object(o: &Map<String, Value>) -> Result<UsageEvent, Malformed> {
    let usage_id = required_text(o, "usageId", MAX_USAGE_ID_CHARS)?;
    if !usage_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
    {
        return Err(Malformed::new(
            "`usageId` may hold only letters, digits and -_.:/",
        ));
    }
    let product_code = optional_text(o, "productCode", 255)?;
    if let Some(code) = &product_code {
        if !is_product_code(code) {
            return Err(Malformed::new(
                "`productCode` must be 1 to 255 characters of [-a-zA-Z0-9/=:_.@]",
            ));
        }
    }
    let account = optional_text(o, "customerAWSAccountId", 12)?;
    let license = optional_text(o, "licenseArn", 2048)?;
    let legacy = optional_text(o, "customerIdentifier", 255)?;
    let customer = match (account, license, legacy) {
        (Some(account), Some(license), None) => {
            if !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())) {
                return Err(Malformed::new(
                    "`customerAWSAccountId` must be a 12-digit AWS account id",
                ));
            }
            if !license.starts_with("arn:") || license.contains('#') {
                return Err(Malformed::new("`licenseArn` must be a license ARN"));
            }
            UsageCustomer::Account {
                aws_account_id: account,
                license_arn: license,
            }
        }
        (None, None, Some(customer)) => {
            if customer.contains('#') {
                return Err(Malformed::new("`customerIdentifier` may not contain `#`"));
            }
            UsageCustomer::Legacy {
                customer_identifier: customer,
            }
        }
        (None, None, None) => {
            return Err(Malformed::new(
                "missing the customer: `customerAWSAccountId` with `licenseArn`, or `customerIdentifier`",
            ))
        }
        (Some(_), None, None) | (None, Some(_), None) => {
            return Err(Malformed::new(
                "`customerAWSAccountId` and `licenseArn` go together",
            ))
        }
        _ => {
            return Err(Malformed::new(
                "give `customerAWSAccountId` with `licenseArn`, or `customerIdentifier`, not both",
            ))
        }
    };
    let dimension = required_text(o, "dimension", MAX_DIMENSION_CHARS)?;
    if dimension.contains('#') || dimension.chars().any(char::is_control) {
        return Err(Malformed::new(
            "`dimension` may not contain `#` or control characters",
        ));
    }
    let quantity = quantity(o.get("quantity"), "quantity")?;
    let timestamp = match o.get("timestamp") {
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map_err(|_| {
                Malformed::new(
                    "`timestamp` must be an RFC 3339 timestamp (e.g. 2026-12-04T10:15:00Z)",
                )
            })?
            .with_timezone(&Utc),
        Some(other) => {
            return Err(Malformed::new(format!(
                "`timestamp` must be a string, found {}",
                super::json_type(other)
            )))
        }
        None => return Err(Malformed::new("missing `timestamp`")),
    };
    let allocations = match o.get("allocations").filter(|v| !v.is_null()) {
        None => Vec::new(),
        Some(Value::Array(list)) => parse_allocations(list, quantity)?,
        Some(other) => {
            return Err(Malformed::new(format!(
                "`allocations` must be an array, found {}",
                super::json_type(other)
            )))
        }
    };
    Ok(UsageEvent {
        usage_id,
        product_code,
        customer,
        dimension,
        quantity,
        timestamp,
        allocations,
    })
}

fn parse_allocations(list: &[Value], total: i64) -> Result<Vec<Allocation>, Malformed> {
    if list.is_empty() || list.len() > MAX_EVENT_ALLOCATIONS {
        return Err(Malformed::new(format!(
            "`allocations` must hold 1 to {MAX_EVENT_ALLOCATIONS} entries"
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let Value::Object(entry) = entry else {
            return Err(Malformed::new("each allocation must be an object"));
        };
        let quantity = quantity(entry.get("quantity"), "allocations[].quantity")?;
        let mut tags = Vec::new();
        match entry.get("tags").filter(|v| !v.is_null()) {
            None => {}
            Some(Value::Object(map)) => {
                if map.len() > MAX_TAGS {
                    return Err(Malformed::new(format!(
                        "an allocation has {} tags, at most {MAX_TAGS} are allowed",
                        map.len()
                    )));
                }
                for (key, value) in map {
                    let Value::String(value) = value else {
                        return Err(Malformed::new("allocation tag values must be strings"));
                    };
                    if !is_tag_text(key, 100) || !is_tag_text(value, 256) {
                        return Err(Malformed::new(
                            "allocation tag keys (1 to 100) and values (1 to 256) may hold only \
                             letters, digits, spaces and +-=._:/@",
                        ));
                    }
                    tags.push((key.clone(), value.clone()));
                }
            }
            Some(_) => {
                return Err(Malformed::new(
                    "allocation `tags` must be an object of strings",
                ))
            }
        }
        tags.sort();
        out.push(Allocation { quantity, tags });
    }
    let sum: i64 = out.iter().map(|a| a.quantity).sum();
    if sum != total {
        return Err(Malformed::new(format!(
            "the allocations add up to {sum}, not the event's quantity {total}"
        )));
    }
    Ok(out)
}

/// BatchMeterUsage's `ProductCode`: 1 to 255 characters of `[-a-zA-Z0-9/=:_.@]`.
fn is_product_code(value: &str) -> bool {
    (1..=255).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/=:_.@".contains(c))
}

fn is_tag_text(value: &str, max: usize) -> bool {
    let len = value.chars().count();
    (1..=max).contains(&len)
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " +-=._:/@".contains(c))
}

fn quantity(value: Option<&Value>, field: &str) -> Result<i64, Malformed> {
    match value {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(q) if (0..=MAX_QUANTITY).contains(&q) => Ok(q),
            _ => Err(Malformed::new(format!(
                "`{field}` must be a whole number from 0 to {MAX_QUANTITY}"
            ))),
        },
        Some(other) => Err(Malformed::new(format!(
            "`{field}` must be a number, found {}",
            super::json_type(other)
        ))),
        None => Err(Malformed::new(format!("missing `{field}`"))),
    }
}

fn required_text(o: &Map<String, Value>, field: &str, max: usize) -> Result<String, Malformed> {
    optional_text(o, field, max)?.ok_or_else(|| Malformed::new(format!("missing `{field}`")))
}

fn optional_text(
    o: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, Malformed> {
    match o.get(field).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(Malformed::new(format!("`{field}` is empty")))
        }
        Some(Value::String(s)) if s.chars().count() > max => Err(Malformed::new(format!(
            "`{field}` is longer than {max} characters"
        ))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Malformed::new(format!(
            "`{field}` must be a string, found {}",
            super::json_type(other)
        ))),
    }
}

/// The `eventType` of every usage result on the topic.
pub const METERED_EVENT_TYPE: &str = "marketplace.usage.metered";

/// One hour record's outcome, published on the topic: what was sent (or could not be), for whom,
/// and what AWS answered. `eventId` is derived from the hour's key, so a report repeated after a
/// crash carries the same id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMeteredEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub event_id: String,
    pub subscription: String,
    pub product_code: String,
    #[serde(
        rename = "customerAWSAccountId",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    pub dimension: String,
    /// The hour's start, RFC 3339.
    pub hour: String,
    pub quantity: i64,
    /// `Success`, `CustomerNotSubscribed`, `DuplicateRecord`, the refusing exception's name, or
    /// `OutsideMeteringWindow`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metering_record_id: Option<String>,
    /// The hours (RFC 3339) whose late usage is in this record.
    pub carried_from: Vec<String>,
    /// The dead-letter reason of the hour's usage, when it was not metered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub events: u64,
    pub reported_at: String,
}

impl UsageMeteredEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn message_attributes(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("eventType", self.event_type.as_str()),
            ("productCode", self.product_code.as_str()),
            ("dimension", self.dimension.as_str()),
            ("status", self.status.as_str()),
        ];
        if let Some(account) = &self.customer_aws_account_id {
            out.push(("customerAWSAccountId", account));
        }
        out
    }

    pub fn group_id(&self) -> &str {
        &self.subscription
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LICENSE: &str = "arn:aws:license-manager::123456789012:license:l-abc";

    fn body(extra: &str) -> String {
        format!(
            r#"{{"usageId":"u-1","customerAWSAccountId":"123456789012","licenseArn":"{LICENSE}",
               "dimension":"api_calls","quantity":5,"timestamp":"2026-12-04T10:15:00Z"{extra}}}"#
        )
    }

    #[test]
    fn a_license_event_parses() {
        let e = parse_usage_body(&body("")).expect("parses");
        assert_eq!(e.usage_id, "u-1");
        assert_eq!(e.quantity, 5);
        assert_eq!(e.product_code, None);
        assert_eq!(e.subscription("prod-abc"), format!("sub#{LICENSE}"));
        assert_eq!(e.timestamp.to_rfc3339(), "2026-12-04T10:15:00+00:00");
    }

    #[test]
    fn a_legacy_event_keys_on_product_and_customer() {
        let e = parse_usage_body(
            r#"{"usageId":"u","productCode":"prod-abc","customerIdentifier":"cust-1",
                "dimension":"d","quantity":0,"timestamp":"2026-12-04T10:15:00Z"}"#,
        )
        .expect("parses");
        assert_eq!(e.subscription("prod-abc"), "sub#prod-abc#cust-1");
    }

    #[test]
    fn allocations_are_summed_and_checked() {
        let ok = parse_usage_body(&body(
            r#","allocations":[{"quantity":2,"tags":{"team":"a"}},{"quantity":3}]"#,
        ))
        .expect("parses");
        assert_eq!(ok.allocations.len(), 2);
        assert_eq!(ok.allocations[0].tags, vec![("team".into(), "a".into())]);
    }

    #[test]
    fn every_broken_rule_is_malformed_with_its_reason() {
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty body"),
            ("[1]".into(), "not an object"),
            ("{not json".into(), "not valid JSON"),
            (body("").replace("\"u-1\"", "\"\""), "`usageId` is empty"),
            (body("").replace("\"u-1\"", "\"a b\""), "`usageId` may hold"),
            (body("").replace("5,", "-1,"), "from 0 to"),
            (body("").replace("5,", "2147483648,"), "from 0 to"),
            (body("").replace("5,", "1.5,"), "whole number"),
            (body("").replace("5,", "\"5\","), "must be a number"),
            (
                body("").replace("2026-12-04T10:15:00Z", "yesterday"),
                "RFC 3339",
            ),
            (body("").replace("\"123456789012\"", "\"12\""), "12-digit"),
            (body(r#","customerIdentifier":"c""#), "not both"),
            (
                body("").replace(&format!(r#","licenseArn":"{LICENSE}""#), ""),
                "go together",
            ),
            (body("").replace("api_calls", "a#b"), "`dimension` may not"),
            (body(r#","allocations":[{"quantity":4}]"#), "add up to 4"),
            (
                body(r#","allocations":[{"quantity":5,"tags":{"k":"v!"}}]"#),
                "tag keys",
            ),
            (body(r#","allocations":[]"#), "1 to 100"),
            (body(r#","productCode":"no spaces""#), "`productCode` must"),
        ];
        for (input, want) in cases {
            let err = parse_usage_body(&input).expect_err(&input);
            assert!(err.detail.contains(want), "{input}: {}", err.detail);
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_json() {
        for input in [
            "null",
            "1",
            "\"x\"",
            "{}",
            r#"{"usageId":1}"#,
            r#"{"quantity":null}"#,
            r#"{"usageId":"u","customerIdentifier":"c","dimension":"d","quantity":1e30,"timestamp":"2026-12-04T10:15:00Z"}"#,
        ] {
            assert!(parse_usage_body(input).is_err(), "{input}");
        }
    }
}
