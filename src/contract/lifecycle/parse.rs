//! Reading a lifecycle-queue body: an EventBridge event from `aws.agreement-marketplace`, or a
//! legacy Marketplace SNS notification (raw, or inside the SNS envelope). Anything else is
//! [`Unrecognized`], with a detail that says why and never quotes the body.

use serde_json::{Map, Value};

use super::{Notification, NotificationFields, NotificationKind, Source};
use crate::contract::{
    is_sns_notification, json_type, parse_json_object, sns_message_object, Fingerprint,
};

/// The EventBridge `source` of agreement and license events.
pub const EVENTBRIDGE_SOURCE: &str = "aws.agreement-marketplace";

/// Longest value accepted in any field that is published, in characters. Real values are ids,
/// codes and ARNs well under 200 characters; anything longer is not a Marketplace notification.
pub const MAX_FIELD_CHARS: usize = 1_024;

/// A body that is none of the notifications the lifecycle queue accepts. The worker dead-letters
/// it as `unrecognized_notification`, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized notification: {detail}")]
pub struct Unrecognized {
    pub detail: String,
}

impl Unrecognized {
    fn new(detail: impl Into<String>) -> Self {
        Unrecognized {
            detail: detail.into(),
        }
    }
}

/// Parses one SQS body from the lifecycle queue. `sqs_message_id` is the SQS message's id: a raw
/// SNS notification carries no id of its own, and one customer's subscribe, unsubscribe and
/// subscribe again are byte-identical, so its event id is made of the body and this id (the same
/// for every redelivery of the message).
pub fn parse_lifecycle_body(
    body: &str,
    sqs_message_id: &str,
) -> Result<Notification, Unrecognized> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err(Unrecognized::new("empty body"));
    }
    let object = parse_json_object(trimmed).map_err(|m| Unrecognized::new(m.detail))?;
    if is_sns_notification(&object) {
        let message = sns_message_object(&object).map_err(|m| Unrecognized::new(m.detail))?;
        let message_id = optional_str(&object, "MessageId")?
            .ok_or_else(|| Unrecognized::new("SNS envelope has no `MessageId`"))?;
        let timestamp = optional_str(&object, "Timestamp")?;
        return parse_legacy(
            &message,
            Fingerprint::of(&format!("sns:{message_id}")),
            timestamp,
        );
    }
    if object.contains_key("detail-type") || object.contains_key("source") {
        return parse_eventbridge(&object, trimmed);
    }
    if object.contains_key("action") {
        return parse_legacy(
            &object,
            Fingerprint::of(&format!("sns-body:{sqs_message_id}:{trimmed}")),
            None,
        );
    }
    Err(Unrecognized::new(
        "neither an EventBridge event (`source`, `detail-type`) nor a Marketplace SNS notification (`action`)",
    ))
}

fn parse_eventbridge(event: &Map<String, Value>, body: &str) -> Result<Notification, Unrecognized> {
    let source = optional_str(event, "source")?.unwrap_or_default();
    if source != EVENTBRIDGE_SOURCE {
        return Err(Unrecognized::new(format!(
            "EventBridge source {:?} is not {EVENTBRIDGE_SOURCE}",
            clip(&source)
        )));
    }
    let detail_type = optional_str(event, "detail-type")?
        .ok_or_else(|| Unrecognized::new("EventBridge event has no `detail-type`"))?;
    let kind = kind_of_detail_type(&detail_type).ok_or_else(|| {
        Unrecognized::new(format!(
            "detail-type {:?} of {EVENTBRIDGE_SOURCE} is not one the lifecycle worker handles",
            clip(&detail_type)
        ))
    })?;
    // EventBridge always sets `id`; without one, the body itself is the stable identity.
    let event_id = match optional_str(event, "id")? {
        Some(id) => Fingerprint::of(&format!("eventbridge:{id}")),
        None => Fingerprint::of(&format!("eventbridge-body:{body}")),
    };
    let detail = match event.get("detail") {
        Some(Value::Object(d)) => d,
        Some(other) => {
            return Err(Unrecognized::new(format!(
                "EventBridge `detail` must be an object, found {}",
                json_type(other)
            )))
        }
        None => return Err(Unrecognized::new("EventBridge event has no `detail`")),
    };
    let agreement = nested(detail, "agreement")?;
    let notification = Notification {
        kind,
        fields: NotificationFields {
            event_id,
            product_code: nested_str(detail, "product", "code")?,
            customer_aws_account_id: nested_str(detail, "acceptor", "accountId")?,
            customer_identifier: None,
            license_arn: nested_str(detail, "license", "arn")?.map(|a| normalize_license_arn(&a)),
            agreement_id: field_str(agreement, "id")?,
            offer_id: nested_str(detail, "offer", "id")?,
            intent: field_str(agreement, "intent")?,
            status: field_str(agreement, "status")?,
            occurred_at: optional_str(event, "time")?,
            source: Source::EventBridge,
        },
        free_trial: None,
    };
    require_what_the_kind_needs(notification)
}

/// The detail types the worker handles, each with its role suffix.
fn kind_of_detail_type(detail_type: &str) -> Option<NotificationKind> {
    let (event, role) = detail_type.trim().rsplit_once(" - ")?;
    let either_role = matches!(role, "Manufacturer" | "Proposer");
    match event {
        "Purchase Agreement Created" if either_role => Some(NotificationKind::AgreementCreated),
        "Purchase Agreement Amended" if either_role => Some(NotificationKind::AgreementAmended),
        "Purchase Agreement Ended" if either_role => Some(NotificationKind::AgreementEnded),
        "License Updated" if role == "Manufacturer" => Some(NotificationKind::LicenseUpdated),
        "License Deprovisioned" if role == "Manufacturer" => {
            Some(NotificationKind::LicenseDeprovisioned)
        }
        _ => None,
    }
}

/// A notification of the `aws-mp-subscription-notification` or `aws-mp-entitlement-notification`
/// topic: `{"action", "customer-identifier", "product-code", "offer-identifier"?,
/// "isFreeTrialTermPresent"?}`.
fn parse_legacy(
    message: &Map<String, Value>,
    event_id: Fingerprint,
    occurred_at: Option<String>,
) -> Result<Notification, Unrecognized> {
    let action = optional_str(message, "action")?
        .ok_or_else(|| Unrecognized::new("Marketplace SNS notification has no `action`"))?;
    let kind = match action.as_str() {
        "subscribe-success" => NotificationKind::SubscribeSuccess,
        "subscribe-fail" => NotificationKind::SubscribeFail,
        "unsubscribe-pending" => NotificationKind::UnsubscribePending,
        "unsubscribe-success" => NotificationKind::UnsubscribeSuccess,
        "entitlement-updated" => NotificationKind::EntitlementUpdated,
        other => {
            return Err(Unrecognized::new(format!(
                "Marketplace SNS action {:?} is not one the lifecycle worker handles",
                clip(other)
            )))
        }
    };
    let customer_identifier = optional_str(message, "customer-identifier")?.ok_or_else(|| {
        Unrecognized::new(format!(
            "`{action}` notification has no `customer-identifier`"
        ))
    })?;
    let product_code = optional_str(message, "product-code")?.ok_or_else(|| {
        Unrecognized::new(format!("`{action}` notification has no `product-code`"))
    })?;
    let free_trial = match message.get("isFreeTrialTermPresent") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        // AWS's examples print it as a string.
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        Some(_) => {
            return Err(Unrecognized::new(
                "`isFreeTrialTermPresent` must be true or false",
            ))
        }
    };
    Ok(Notification {
        kind,
        fields: NotificationFields {
            event_id,
            product_code: Some(product_code),
            customer_aws_account_id: optional_str(message, "customer-aws-account-id")?,
            customer_identifier: Some(customer_identifier),
            license_arn: None,
            agreement_id: None,
            offer_id: optional_str(message, "offer-identifier")?,
            intent: None,
            status: None,
            occurred_at,
            source: Source::Sns,
        },
        free_trial,
    })
}

/// License updates are answered with the customer's entitlements, and GetEntitlements needs the
/// product code and a customer (or license) to filter on.
fn require_what_the_kind_needs(n: Notification) -> Result<Notification, Unrecognized> {
    if !n.kind.needs_entitlements() {
        return Ok(n);
    }
    let f = &n.fields;
    if f.product_code.is_none() {
        return Err(Unrecognized::new(format!(
            "{} without a product code: its entitlements cannot be read",
            n.kind.event_type()
        )));
    }
    if f.license_arn.is_none()
        && f.customer_aws_account_id.is_none()
        && f.customer_identifier.is_none()
    {
        return Err(Unrecognized::new(format!(
            "{} names no license or customer: its entitlements cannot be read",
            n.kind.event_type()
        )));
    }
    Ok(n)
}

/// AWS's own examples print license ARNs with and without the leading `arn:`
/// (`aws:license-manager:…`); ResolveCustomer returns them with it. Publish one form.
pub fn normalize_license_arn(raw: &str) -> String {
    let arn = raw.trim();
    let partition = arn.split(':').next().unwrap_or("");
    if !arn.starts_with("arn:") && partition.starts_with("aws") && arn.contains(':') {
        format!("arn:{arn}")
    } else {
        arn.to_owned()
    }
}

fn nested<'a>(
    object: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, Unrecognized> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(Unrecognized::new(format!(
            "`{key}` must be an object, found {}",
            json_type(other)
        ))),
    }
}

fn nested_str(
    object: &Map<String, Value>,
    outer: &str,
    inner: &str,
) -> Result<Option<String>, Unrecognized> {
    field_str(nested(object, outer)?, inner)
}

fn field_str(
    object: Option<&Map<String, Value>>,
    key: &str,
) -> Result<Option<String>, Unrecognized> {
    object.map_or(Ok(None), |o| optional_str(o, key))
}

/// A present string field, trimmed; JSON `null` and the empty string count as absent.
fn optional_str(object: &Map<String, Value>, key: &str) -> Result<Option<String>, Unrecognized> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > MAX_FIELD_CHARS {
                return Err(Unrecognized::new(format!(
                    "`{key}` is longer than {MAX_FIELD_CHARS} characters"
                )));
            }
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        Some(other) => Err(Unrecognized::new(format!(
            "`{key}` must be a string, found {}",
            json_type(other)
        ))),
    }
}

/// A value repeated in a detail, cut short so an operator's line stays a line.
fn clip(value: &str) -> String {
    value.chars().take(80).collect()
}
