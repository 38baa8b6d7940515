//! The customer lifecycle: the notifications the lifecycle queue receives (EventBridge agreement
//! and license events, legacy Marketplace SNS notifications), what each means for the seller
//! (`meaning`: the verdict table), and the event published for each. Pure: no I/O here; the entitlements of license
//! and entitlement updates are read by `aws::entitlement` and passed in.

mod parse;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::contract::Fingerprint;

pub use parse::{normalize_license_arn, parse_lifecycle_body, Unrecognized, EVENTBRIDGE_SOURCE};

/// The `schemaVersion` of [`LifecycleEvent`].
pub const LIFECYCLE_SCHEMA_VERSION: u32 = 2;

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

/// Whether the seller's customer may use the product: the registry's state of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Grant,
    Revoke,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Grant => "grant",
            Access::Revoke => "revoke",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "grant" => Some(Access::Grant),
            "revoke" => Some(Access::Revoke),
            _ => None,
        }
    }
}

/// What one notification does to a subscription's access, once it is known to be the newest
/// event the subscription has seen (older ones change nothing: `registry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Access becomes this.
    Set(Access),
    /// Access stays as it is; a subscription seen for the first time starts with `if_new` (what
    /// the notification implies about an agreement nobody told us about yet).
    Keep { if_new: Access },
}

impl Effect {
    /// The access after applying this to a subscription whose access is `current` (`None`: new).
    pub fn on(self, current: Option<Access>) -> Access {
        match (self, current) {
            (Effect::Set(access), _) => access,
            (Effect::Keep { .. }, Some(access)) => access,
            (Effect::Keep { if_new }, None) => if_new,
        }
    }
}

/// A notification's effect, and why (published as the event's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meaning {
    pub effect: Effect,
    pub reason: &'static str,
}

/// A notification that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub kind: NotificationKind,
    /// Every field the event publishes as it is, normalised and trimmed.
    pub fields: NotificationFields,
    /// `isFreeTrialTermPresent` of subscribe notifications (not published).
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

/// The one filter GetEntitlements is called with, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntitlementFilter {
    LicenseArn(String),
    CustomerAwsAccountId(String),
    CustomerIdentifier(String),
}

impl Notification {
    /// Whether the notification names a subscription the registry can keep: a license, a legacy
    /// customer of a product, or an agreement.
    pub fn names_a_subscription(&self) -> bool {
        let f = &self.fields;
        f.license_arn.is_some()
            || (f.customer_identifier.is_some() && f.product_code.is_some())
            || f.agreement_id.is_some()
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

/// The verdict table: what each notification does to access, and why. `entitlements` are what
/// GetEntitlements answered for [`Notification::entitlement_filter`] (license and entitlement
/// updates; ignored otherwise), judged at `now`.
///
/// Ended agreements revoke only when access really ends (CANCELLED, EXPIRED, TERMINATED); the
/// other statuses name an agreement that another one continues (RENEWED, REPLACED, SUPERSEDED,
/// ROLLED_BACK: an earlier revision is in force again) or give no reason (ARCHIVED, unknown, none),
/// and leave access as it is: a license that really ends says so with License Deprovisioned. An
/// update whose GetEntitlements answered nothing never revokes on its own: right after a grant
/// the entitlements may not be provisioned yet (`entitlements_pending`).
pub fn meaning(
    notification: &Notification,
    entitlements: Option<&[Entitlement]>,
    now: DateTime<Utc>,
) -> Meaning {
    use Access::{Grant, Revoke};
    use NotificationKind as K;
    let row = |effect, reason| Meaning { effect, reason };
    match notification.kind {
        K::AgreementCreated => row(Effect::Set(Grant), "agreement_created"),
        K::SubscribeSuccess => row(Effect::Set(Grant), "subscribed"),
        K::LicenseDeprovisioned => row(Effect::Set(Revoke), "license_deprovisioned"),
        K::UnsubscribeSuccess => row(Effect::Set(Revoke), "unsubscribed"),
        K::AgreementAmended => row(Effect::Keep { if_new: Grant }, "agreement_amended"),
        K::UnsubscribePending => row(Effect::Keep { if_new: Grant }, "unsubscribe_pending"),
        K::SubscribeFail => row(Effect::Keep { if_new: Revoke }, "subscribe_failed"),
        K::AgreementEnded => {
            let status = notification.fields.status.as_deref().unwrap_or("");
            match status.to_ascii_uppercase().as_str() {
                "CANCELLED" => row(Effect::Set(Revoke), "agreement_cancelled"),
                "EXPIRED" => row(Effect::Set(Revoke), "agreement_expired"),
                "TERMINATED" => row(Effect::Set(Revoke), "agreement_terminated"),
                "RENEWED" => row(Effect::Keep { if_new: Grant }, "agreement_renewed"),
                "REPLACED" => row(Effect::Keep { if_new: Grant }, "agreement_replaced"),
                "SUPERSEDED" => row(Effect::Keep { if_new: Grant }, "agreement_superseded"),
                "ROLLED_BACK" => row(Effect::Keep { if_new: Grant }, "agreement_rolled_back"),
                "ARCHIVED" => row(Effect::Keep { if_new: Revoke }, "agreement_archived"),
                _ => row(
                    Effect::Keep { if_new: Revoke },
                    "agreement_ended_unknown_status",
                ),
            }
        }
        K::LicenseUpdated | K::EntitlementUpdated => match entitlements {
            None | Some([]) => row(Effect::Keep { if_new: Grant }, "entitlements_pending"),
            Some(list) if list.iter().any(|e| e.expires_at.is_none_or(|at| at > now)) => {
                row(Effect::Set(Grant), "entitlements_current")
            }
            Some(_) => row(Effect::Set(Revoke), "entitlements_expired"),
        },
    }
}

/// Where a published lifecycle event stands in its subscription's history (the registry's
/// answer when the event was applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Access after this event (for a stale one: the current access, unchanged).
    pub access: Access,
    /// Access before it; `None` for a subscription this event created.
    pub previous_access: Option<Access>,
    /// The subscription's `sequence` after this event; a subscriber keeps the highest.
    pub sequence: u64,
    /// The subscription had already applied a newer event: this one changed nothing.
    pub stale: bool,
    /// The sign-up of the subscription, when a resolved token told the registry.
    pub signup_id: Option<String>,
    pub context: BTreeMap<String, String>,
}

/// The event published for every lifecycle notification (schema version 2: `access` is the
/// subscription's state after the event, with its `sequence`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub access: Access,
    pub previous_access: Option<Access>,
    pub sequence: u64,
    pub stale: bool,
    pub reason: &'static str,
    #[serde(flatten)]
    pub fields: NotificationFields,
    pub signup_id: Option<String>,
    pub context: BTreeMap<String, String>,
    /// The customer's current entitlements for license and entitlement updates, else `null`.
    pub entitlements: Option<Vec<Entitlement>>,
}

impl LifecycleEvent {
    /// The event for `notification`, applied at `occurred_at` with `verdict`. `entitlements` are
    /// published for license and entitlement updates only.
    pub fn new(
        notification: &Notification,
        meaning: Meaning,
        entitlements: Option<Vec<Entitlement>>,
        occurred_at: DateTime<Utc>,
        verdict: &Verdict,
    ) -> Self {
        let mut fields = notification.fields.clone();
        fields.occurred_at = Some(occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true));
        LifecycleEvent {
            event_type: notification.kind.event_type(),
            schema_version: LIFECYCLE_SCHEMA_VERSION,
            access: verdict.access,
            previous_access: verdict.previous_access,
            sequence: verdict.sequence,
            stale: verdict.stale,
            reason: meaning.reason,
            fields,
            signup_id: verdict.signup_id.clone(),
            context: verdict.context.clone(),
            entitlements: entitlements.filter(|_| notification.kind.needs_entitlements()),
        }
    }

    /// This event, overtaken by a newer one before it was published: it goes out as stale with
    /// the subscription's current access and sequence, so it never undoes the newer one.
    pub fn overtaken(&self, access: Access, sequence: u64) -> Self {
        LifecycleEvent {
            access,
            previous_access: Some(access),
            sequence,
            stale: true,
            ..self.clone()
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing strings, numbers, booleans and options cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The SNS message attributes subscribers filter on ([`topic_attributes`]).
    pub fn message_attributes(&self) -> Vec<(&'static str, &str)> {
        let f = &self.fields;
        topic_attributes(|name| match name {
            "eventType" => Some(self.event_type),
            "access" => Some(self.access.as_str()),
            "productCode" => f.product_code.as_deref(),
            "customerAWSAccountId" => f.customer_aws_account_id.as_deref(),
            _ => None,
        })
    }

    /// The FIFO message group ([`topic_group`]).
    pub fn group_id(&self) -> &str {
        let f = &self.fields;
        topic_group(|name| match name {
            "customerAWSAccountId" => f.customer_aws_account_id.as_deref(),
            "customerIdentifier" => f.customer_identifier.as_deref(),
            "productCode" => f.product_code.as_deref(),
            _ => None,
        })
    }
}

/// The SNS message attributes of an event, from its JSON fields: `eventType`, `access` (lifecycle
/// events), `productCode` and `customerAWSAccountId`, each only when known (SNS refuses empty
/// values). The one list for a live publish and a redriven `unpublished` letter, so a subscriber
/// filtering on any of them gets both.
pub fn topic_attributes<'a>(
    field: impl Fn(&str) -> Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    ["eventType", "access", "productCode", "customerAWSAccountId"]
        .into_iter()
        .filter_map(|name| Some((name, field(name).filter(|v| !v.is_empty())?)))
        .collect()
}

/// The FIFO message group of an event, from its JSON fields: the customer's account, else the
/// legacy customer identifier, else the product, so one customer's events keep their order, live
/// or redriven.
pub fn topic_group<'a>(field: impl Fn(&str) -> Option<&'a str>) -> &'a str {
    ["customerAWSAccountId", "customerIdentifier", "productCode"]
        .into_iter()
        .find_map(|name| field(name).filter(|v| !v.is_empty()))
        .unwrap_or("marketplace")
}

#[cfg(test)]
mod tests;
