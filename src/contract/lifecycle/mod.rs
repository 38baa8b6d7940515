//! The customer lifecycle: the notifications the lifecycle queue receives (EventBridge agreement
//! and license events, legacy Marketplace SNS notifications), what each means for the seller
//! (`access`), and the event published for each. Pure: no I/O here; the entitlements of license
//! and entitlement updates are read by `aws::entitlement` and passed in.

mod parse;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::contract::Fingerprint;

pub use parse::{normalize_license_arn, parse_lifecycle_body, Unrecognized, EVENTBRIDGE_SOURCE};

/// The `schemaVersion` of [`LifecycleEvent`].
pub const LIFECYCLE_SCHEMA_VERSION: u32 = 1;

/// Which notification arrived, whatever its role suffix or wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// `Purchase Agreement Created - Manufacturer|Proposer`
    AgreementCreated,
    /// `Purchase Agreement Amended - Manufacturer|Proposer`
    AgreementAmended,
    /// `Purchase Agreement Ended - Manufacturer|Proposer`
    AgreementEnded,
    /// `License Updated - Manufacturer`
    LicenseUpdated,
    /// `License Deprovisioned - Manufacturer`
    LicenseDeprovisioned,
    /// SNS `subscribe-success`
    SubscribeSuccess,
    /// SNS `subscribe-fail`
    SubscribeFail,
    /// SNS `unsubscribe-pending`
    UnsubscribePending,
    /// SNS `unsubscribe-success`
    UnsubscribeSuccess,
    /// SNS `entitlement-updated`
    EntitlementUpdated,
}

impl NotificationKind {
    /// The published `eventType`.
    pub fn event_type(self) -> &'static str {
        match self {
            NotificationKind::AgreementCreated => "marketplace.agreement.created",
            NotificationKind::AgreementAmended => "marketplace.agreement.amended",
            NotificationKind::AgreementEnded => "marketplace.agreement.ended",
            NotificationKind::LicenseUpdated => "marketplace.license.updated",
            NotificationKind::LicenseDeprovisioned => "marketplace.license.deprovisioned",
            NotificationKind::SubscribeSuccess => "marketplace.subscription.succeeded",
            NotificationKind::SubscribeFail => "marketplace.subscription.failed",
            NotificationKind::UnsubscribePending => "marketplace.unsubscribe.pending",
            NotificationKind::UnsubscribeSuccess => "marketplace.unsubscribe.succeeded",
            NotificationKind::EntitlementUpdated => "marketplace.entitlement.updated",
        }
    }

    /// Whether the event carries the customer's entitlements (read with GetEntitlements).
    pub fn needs_entitlements(self) -> bool {
        matches!(
            self,
            NotificationKind::LicenseUpdated | NotificationKind::EntitlementUpdated
        )
    }
}

/// Where a notification came from: the published `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    EventBridge,
    Sns,
}

/// What the seller should do for this customer, so subscribers need no Marketplace knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Grant,
    Revoke,
    Unchanged,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Grant => "grant",
            Access::Revoke => "revoke",
            Access::Unchanged => "unchanged",
        }
    }
}

/// A notification that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub kind: NotificationKind,
    /// Every field the event publishes as it is, normalised and trimmed.
    pub fields: NotificationFields,
    /// `isFreeTrialTermPresent` of subscribe notifications (not published in schema version 1).
    pub free_trial: Option<bool>,
}

/// What a notification says about whom: published in the event as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationFields {
    /// Deterministic from the source's own id, so every delivery carries the same one.
    pub event_id: Fingerprint,
    pub product_code: Option<String>,
    #[serde(rename = "customerAWSAccountId")]
    pub customer_aws_account_id: Option<String>,
    /// Legacy SNS notifications name the customer by this instead of an account id.
    pub customer_identifier: Option<String>,
    pub license_arn: Option<String>,
    pub agreement_id: Option<String>,
    pub offer_id: Option<String>,
    pub intent: Option<String>,
    pub status: Option<String>,
    pub occurred_at: Option<String>,
    pub source: Source,
}

/// How a notification's `access` is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRule {
    Fixed(Access),
    /// License and entitlement updates: grant while an entitlement is unexpired, else revoke.
    FromEntitlements,
}

/// The one filter GetEntitlements is called with, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntitlementFilter {
    LicenseArn(String),
    CustomerAwsAccountId(String),
    CustomerIdentifier(String),
}

impl Notification {
    /// The table: created/subscribe-success grant; ended as cancelled, expired or
    /// terminated, deprovisioned and unsubscribe-success revoke; updates depend on the
    /// entitlements; everything else (amended, unsubscribe-pending, subscribe-fail, ended because
    /// renewed or replaced, or with no status) leaves access unchanged.
    pub fn access_rule(&self) -> AccessRule {
        use NotificationKind as K;
        match self.kind {
            K::AgreementCreated | K::SubscribeSuccess => AccessRule::Fixed(Access::Grant),
            K::LicenseDeprovisioned | K::UnsubscribeSuccess => AccessRule::Fixed(Access::Revoke),
            K::AgreementEnded => {
                let status = self.fields.status.as_deref().unwrap_or("");
                let status = status.to_ascii_uppercase();
                match status.as_str() {
                    "CANCELLED" | "EXPIRED" | "TERMINATED" => AccessRule::Fixed(Access::Revoke),
                    _ => AccessRule::Fixed(Access::Unchanged),
                }
            }
            K::LicenseUpdated | K::EntitlementUpdated => AccessRule::FromEntitlements,
            K::AgreementAmended | K::SubscribeFail | K::UnsubscribePending => {
                AccessRule::Fixed(Access::Unchanged)
            }
        }
    }

    /// What to ask GetEntitlements for; `None` when the event carries no entitlements.
    pub fn entitlement_filter(&self) -> Option<EntitlementFilter> {
        if !self.kind.needs_entitlements() {
            return None;
        }
        let f = &self.fields;
        if let Some(arn) = &f.license_arn {
            Some(EntitlementFilter::LicenseArn(arn.clone()))
        } else if let Some(account) = &f.customer_aws_account_id {
            Some(EntitlementFilter::CustomerAwsAccountId(account.clone()))
        } else {
            f.customer_identifier
                .clone()
                .map(EntitlementFilter::CustomerIdentifier)
        }
    }
}

/// One entitlement as GetEntitlements reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    pub dimension: String,
    pub value: EntitlementValue,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The entitlement's value, published as the JSON number, boolean or string it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EntitlementValue {
    Integer(i64),
    Double(f64),
    Boolean(bool),
    String(String),
    /// A value kind this version does not know.
    Unknown,
}

fn rfc3339<S: Serializer>(time: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => s.serialize_none(),
    }
}

/// Grant while at least one entitlement has not expired at `now` (no expiry = unexpired).
pub fn access_from_entitlements(entitlements: &[Entitlement], now: DateTime<Utc>) -> Access {
    if entitlements
        .iter()
        .any(|e| e.expires_at.is_none_or(|at| at > now))
    {
        Access::Grant
    } else {
        Access::Revoke
    }
}

/// The event published for every lifecycle notification (schema version 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub access: Access,
    #[serde(flatten)]
    pub fields: NotificationFields,
    /// The customer's current entitlements for license and entitlement updates, else `null`.
    pub entitlements: Option<Vec<Entitlement>>,
}

/// The event for `notification`. `entitlements` are what GetEntitlements answered for
/// [`Notification::entitlement_filter`]; they are required for license and entitlement updates
/// and ignored otherwise. Called without them for an update, the event says `unchanged` rather
/// than revoke on missing data.
pub fn decide(
    notification: &Notification,
    entitlements: Option<Vec<Entitlement>>,
    now: DateTime<Utc>,
) -> LifecycleEvent {
    let (access, entitlements) = match notification.access_rule() {
        AccessRule::Fixed(access) => (access, None),
        AccessRule::FromEntitlements => match entitlements {
            Some(list) => (access_from_entitlements(&list, now), Some(list)),
            None => (Access::Unchanged, None),
        },
    };
    LifecycleEvent {
        event_type: notification.kind.event_type(),
        schema_version: LIFECYCLE_SCHEMA_VERSION,
        access,
        fields: notification.fields.clone(),
        entitlements,
    }
}

impl LifecycleEvent {
    pub fn to_json(&self) -> String {
        // Serializing strings, numbers, booleans and options cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The SNS message attributes subscribers filter on. SNS refuses empty values, so a field
    /// that is not known is left out rather than sent empty.
    pub fn message_attributes(&self) -> Vec<(&'static str, &str)> {
        let mut attributes = vec![
            ("eventType", self.event_type),
            ("access", self.access.as_str()),
        ];
        if let Some(code) = &self.fields.product_code {
            attributes.push(("productCode", code));
        }
        if let Some(account) = &self.fields.customer_aws_account_id {
            attributes.push(("customerAWSAccountId", account));
        }
        attributes
    }
}

#[cfg(test)]
mod tests;
