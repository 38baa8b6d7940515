//! BatchMeterUsage's judged state and rules, independent of HTTP: who is subscribed, which records
//! were accepted, and the checks AWS applies to a call (identity, product and license, dimension,
//! tags, allocation sums, the timestamp window, de-duplication on the hour).
//!
//! Sources: the `aws-sdk-marketplacemetering` 1.124 model docs (BatchMeterUsage, UsageRecord,
//! UsageRecordResult, the error shapes) and the service model's constraints (`TagKey`, `TagValue`,
//! `TagList`, `UsageAllocations`, `AllocatedUsageQuantity`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model;

/// `UsageRecordList`: at most 25 records a call.
pub const MAX_RECORDS: usize = 25;
/// `UsageAllocations`: 1 to 2500 allocations a record.
pub const MAX_ALLOCATIONS: usize = 2500;
/// `TagList`: 1 to 5 tags an allocation.
pub const MAX_TAGS: usize = 5;
/// How far ahead of the emulator's clock a record may be: callers' clocks drift, and AWS, like
/// every service that checks timestamps, allows for that. Five minutes is SigV4's own allowance.
pub const FUTURE_SKEW_SECS: i64 = 5 * 60;
/// Last month's usage is accepted until 06:00 UTC on the first day of the next month.
pub const MONTH_END_GRACE_SECS: i64 = 6 * 3600;
/// "Usage records aren't accepted 24 hours or more after an event" (the pinned model's
/// BatchMeterUsage docs; older API references said 6 hours).
pub const DEFAULT_WINDOW_HOURS: u32 = 24;

const HOUR_SECS: i64 = 3600;

/// One `UsageRecord` as the wire carries it, in both directions (the results echo it). Members
/// the model requires are optional here so that their absence can be answered with the model's
/// `ValidationException` instead of a deserialization failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// awsJson timestamps are epoch seconds, possibly with a fraction.
    #[serde(rename = "Timestamp", default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    #[serde(
        rename = "CustomerIdentifier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_identifier: Option<String>,
    #[serde(rename = "Dimension", default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    /// Defaults to 0 when absent, as the model says. Wider than the model's integer so that an
    /// out-of-range value is a validation error, not a parse error.
    #[serde(rename = "Quantity", default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(
        rename = "UsageAllocations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_allocations: Option<Vec<UsageAllocation>>,
    #[serde(
        rename = "CustomerAWSAccountId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    #[serde(
        rename = "LicenseArn",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub license_arn: Option<String>,
}

impl UsageRecord {
    /// Whole seconds; the wire has already checked the timestamp is present.
    pub fn unix_secs(&self) -> i64 {
        // `as` saturates, so an absurd timestamp lands far outside the window.
        self.timestamp.unwrap_or_default().floor() as i64
    }

    pub fn quantity(&self) -> i64 {
        self.quantity.unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAllocation {
    #[serde(rename = "AllocatedUsageQuantity")]
    pub allocated_usage_quantity: i64,
    #[serde(rename = "Tags", default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: String,
}

/// A request that passed the model's constraints (see `metering_wire`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeteringRequest {
    pub product_code: Option<String>,
    pub records: Vec<UsageRecord>,
}

/// The modeled errors a BatchMeterUsage call can be refused with, once it parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    InvalidProductCode,
    InvalidUsageDimension,
    InvalidLicense,
    InvalidCustomerIdentifier,
    InvalidTag,
    InvalidUsageAllocations,
    TimestampOutOfBounds,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidProductCode => "InvalidProductCodeException",
            Self::InvalidUsageDimension => "InvalidUsageDimensionException",
            Self::InvalidLicense => "InvalidLicenseException",
            Self::InvalidCustomerIdentifier => "InvalidCustomerIdentifierException",
            Self::InvalidTag => "InvalidTagException",
            Self::InvalidUsageAllocations => "InvalidUsageAllocationsException",
            Self::TimestampOutOfBounds => "TimestampOutOfBoundsException",
        }
    }
}

/// A refusal and the message that explains it (record positions count from 0, values are not echoed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub message: String,
}

fn refuse(refusal: Refusal, message: impl Into<String>) -> Refused {
    Refused {
        refusal,
        message: message.into(),
    }
}

/// Why a record's timestamp is outside what the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfBounds {
    /// More than [`FUTURE_SKEW_SECS`] ahead of now.
    Future,
    /// `window_hours` or more before now.
    TooOld,
    /// In an earlier month than now, and now is past 06:00 UTC on the 1st.
    PastMonthEnd,
}

/// Whether a record for `timestamp` (unix seconds) is accepted at `now`: not in the future beyond
/// the clock skew, less than `window_hours` old, and, once the month-end grace is over, not in an
/// earlier month.
pub fn check_timestamp(timestamp: i64, now: i64, window_hours: u32) -> Result<(), OutOfBounds> {
    if timestamp > now.saturating_add(FUTURE_SKEW_SECS) {
        return Err(OutOfBounds::Future);
    }
    if now.saturating_sub(timestamp) >= i64::from(window_hours) * HOUR_SECS {
        return Err(OutOfBounds::TooOld);
    }
    let month_start = month_start(now);
    if timestamp < month_start && now >= month_start + MONTH_END_GRACE_SECS {
        return Err(OutOfBounds::PastMonthEnd);
    }
    Ok(())
}

/// 00:00 UTC on the first day of `now`'s month, in unix seconds.
fn month_start(now: i64) -> i64 {
    let now = DateTime::<Utc>::from_timestamp(now, 0).unwrap_or_default();
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |start| start.timestamp())
}

/// The start of the hour `timestamp` falls in: records are de-duplicated per hour.
pub fn hour_of(timestamp: i64) -> i64 {
    timestamp.div_euclid(HOUR_SECS) * HOUR_SECS
}

/// `TagKey` (1 to 100) and `TagValue` (1 to 256): `^[a-zA-Z0-9+ -=._:\/@]+$`. Inside the brackets
/// ` -=` is a range (space to `=`), so it also admits `!"#$%&'()*,;<` and the digits.
fn is_tag_text(value: &str, max: usize) -> bool {
    (1..=max).contains(&value.chars().count())
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || (b' '..=b'=').contains(&b) || b"+._:/@".contains(&b)
        })
}

/// Tags and allocations of one record: each allocation's tags valid and unique by key, the tag
/// sets unique across allocations, and the allocated quantities summing to the record's quantity.
pub fn check_allocations(index: usize, record: &UsageRecord) -> Result<(), Refused> {
    let Some(allocations) = &record.usage_allocations else {
        return Ok(());
    };
    let mut tag_sets = BTreeSet::new();
    for allocation in allocations {
        let tags = allocation.tags.as_deref().unwrap_or_default();
        if allocation.tags.is_some() && !(1..=MAX_TAGS).contains(&tags.len()) {
            return Err(refuse(
                Refusal::InvalidTag,
                format!("UsageRecords[{index}]: an allocation must have 1 to {MAX_TAGS} tags"),
            ));
        }
        if !tags
            .iter()
            .all(|t| is_tag_text(&t.key, 100) && is_tag_text(&t.value, 256))
        {
            return Err(refuse(
                Refusal::InvalidTag,
                format!(
                    "UsageRecords[{index}]: tag keys (1 to 100) and values (1 to 256) must match \
                     [a-zA-Z0-9+ -=._:/@]"
                ),
            ));
        }
        let keys: BTreeSet<&str> = tags.iter().map(|t| t.key.as_str()).collect();
        if keys.len() != tags.len() {
            return Err(refuse(
                Refusal::InvalidTag,
                format!("UsageRecords[{index}]: an allocation has the same tag key twice"),
            ));
        }
        let set: BTreeSet<&Tag> = tags.iter().collect();
        if !tag_sets.insert(set) {
            return Err(refuse(
                Refusal::InvalidUsageAllocations,
                format!("UsageRecords[{index}]: each allocation must have a unique set of tags"),
            ));
        }
    }
    if !(1..=MAX_ALLOCATIONS).contains(&allocations.len()) {
        return Err(refuse(
            Refusal::InvalidUsageAllocations,
            format!("UsageRecords[{index}]: a record must have 1 to {MAX_ALLOCATIONS} allocations"),
        ));
    }
    if allocation_sum(allocations) != record.quantity() {
        return Err(refuse(
            Refusal::InvalidUsageAllocations,
            format!(
                "UsageRecords[{index}]: the sum of allocated usage quantities is not equal to the \
                 usage quantity"
            ),
        ));
    }
    Ok(())
}

/// Each quantity is at most `i32::MAX` (checked on parse) and there are at most 2500, so the sum
/// cannot overflow an `i64`.
fn allocation_sum(allocations: &[UsageAllocation]) -> i64 {
    allocations.iter().map(|a| a.allocated_usage_quantity).sum()
}

/// Who a record meters: the buyer's account (with the license when metering by license), or the
/// legacy CustomerIdentifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Account {
        account: String,
        license: Option<String>,
    },
    Legacy {
        customer: String,
    },
}

/// The record's identity: exactly one of CustomerAWSAccountId and CustomerIdentifier, and a
/// LicenseArn only with an account.
pub fn identity_of(index: usize, record: &UsageRecord) -> Result<Identity, Refused> {
    match (
        &record.customer_aws_account_id,
        &record.customer_identifier,
        &record.license_arn,
    ) {
        (Some(_), Some(_), _) => Err(refuse(
            Refusal::InvalidCustomerIdentifier,
            format!(
                "UsageRecords[{index}]: CustomerIdentifier and CustomerAWSAccountId are mutually \
                 exclusive"
            ),
        )),
        (None, None, _) => Err(refuse(
            Refusal::InvalidCustomerIdentifier,
            format!("UsageRecords[{index}]: give CustomerAWSAccountId or CustomerIdentifier"),
        )),
        (None, Some(_), Some(_)) => Err(refuse(
            Refusal::InvalidLicense,
            format!("UsageRecords[{index}]: a LicenseArn is metered with CustomerAWSAccountId"),
        )),
        (Some(account), None, license) => Ok(Identity::Account {
            account: account.clone(),
            license: license.clone(),
        }),
        (None, Some(customer), None) => Ok(Identity::Legacy {
            customer: customer.clone(),
        }),
    }
}

/// A customer the emulator knows as subscribed to a product. Also the body of
/// `POST /emulator/subscribers` (with `subscribed`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscriber {
    pub product_code: String,
    #[serde(
        rename = "customerAWSAccountId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
}

/// Why a [`Subscriber`] could never be a real one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriberError {
    #[error("productCode must be 1 to 255 characters of [-a-zA-Z0-9/=:_.@]")]
    Product,
    #[error("give customerAWSAccountId or customerIdentifier (or both)")]
    NoCustomer,
    #[error("customerAWSAccountId must be a 12-digit AWS account id")]
    Account,
    #[error("customerIdentifier must be 1 to 255 characters")]
    Customer,
    #[error(
        "licenseArn must be a license ARN (arn:aws:license-manager::<12 digits>:license:l-<id>) \
         of a customerAWSAccountId"
    )]
    License,
}

impl Subscriber {
    pub fn validate(&self) -> Result<(), SubscriberError> {
        if !model::is_product_code(&self.product_code) {
            return Err(SubscriberError::Product);
        }
        match (&self.customer_aws_account_id, &self.customer_identifier) {
            (None, None) => return Err(SubscriberError::NoCustomer),
            (Some(account), _) if !model::is_account_id(account) => {
                return Err(SubscriberError::Account)
            }
            (_, Some(customer)) if !model::is_customer_identifier(customer) => {
                return Err(SubscriberError::Customer)
            }
            _ => {}
        }
        if let Some(license) = &self.license_arn {
            if !model::is_license_arn(license) || self.customer_aws_account_id.is_none() {
                return Err(SubscriberError::License);
            }
        }
        Ok(())
    }

    /// True when every identifier `pattern` names is this subscriber's (for unsubscribing).
    fn matches(&self, pattern: &Subscriber) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        self.product_code == pattern.product_code
            && same(
                &pattern.customer_aws_account_id,
                &self.customer_aws_account_id,
            )
            && same(&pattern.customer_identifier, &self.customer_identifier)
            && same(&pattern.license_arn, &self.license_arn)
    }
}

/// Every subscription the emulator knows of: from resolved tokens, entitlements and
/// `POST /emulator/subscribers`.
#[derive(Debug, Default)]
pub struct Subscribers {
    set: BTreeSet<Subscriber>,
}

impl Subscribers {
    /// Adds a subscriber that is known to be valid (a resolved token, a validated entitlement set).
    pub fn add(&mut self, subscriber: Subscriber) {
        self.set.insert(subscriber);
    }

    /// Subscribes or, with `subscribed` false, removes every subscription matching the identifiers given.
    pub fn change(
        &mut self,
        subscriber: Subscriber,
        subscribed: bool,
    ) -> Result<(), SubscriberError> {
        if subscribed {
            subscriber.validate()?;
            self.add(subscriber);
        } else {
            if !model::is_product_code(&subscriber.product_code) {
                return Err(SubscriberError::Product);
            }
            self.set.retain(|s| !s.matches(&subscriber));
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<Subscriber> {
        self.set.iter().cloned().collect()
    }

    fn knows_product(&self, product: &str) -> bool {
        self.set.iter().any(|s| s.product_code == product)
    }

    fn license(&self, license: &str) -> Option<&Subscriber> {
        self.set
            .iter()
            .find(|s| s.license_arn.as_deref() == Some(license))
    }

    fn is_subscribed(&self, product: &str, identity: &Identity) -> bool {
        self.set.iter().any(|s| {
            s.product_code == product
                && match identity {
                    Identity::Account { account, license } => {
                        s.customer_aws_account_id.as_ref() == Some(account)
                            && (license.is_none() || s.license_arn == *license)
                    }
                    Identity::Legacy { customer } => {
                        s.customer_identifier.as_ref() == Some(customer)
                    }
                }
        })
    }
}

/// A record the service accepted, as `GET /emulator/metering` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeteredRecord {
    pub product_code: String,
    #[serde(
        rename = "customerAWSAccountId",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
    pub dimension: String,
    /// Unix seconds of the start of the hour the record counts for.
    pub hour: i64,
    /// The record's own timestamp, unix seconds.
    pub timestamp: i64,
    pub quantity: i64,
    pub metering_record_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<UsageAllocation>,
}

/// What the service answered for one record of a call that was processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Success { metering_record_id: String },
    CustomerNotSubscribed,
    DuplicateRecord,
    Unprocessed,
}

type LedgerKey = (String, Identity, String, i64);

/// The accepted records, de-duplicated on (product, customer, dimension, hour).
#[derive(Debug, Default)]
pub struct Ledger {
    records: Vec<MeteredRecord>,
    index: HashMap<LedgerKey, usize>,
}

impl Ledger {
    pub fn records(&self) -> &[MeteredRecord] {
        &self.records
    }

    /// Accepts a record unless the same customer, dimension and hour was metered before: with the
    /// same quantity that is a resend and answers the first record's id; with another quantity it
    /// is a `DuplicateRecord`.
    fn meter(&mut self, product: &str, identity: &Identity, record: &UsageRecord) -> Verdict {
        let dimension = record.dimension.clone().unwrap_or_default();
        let timestamp = record.unix_secs();
        let key = (
            product.to_owned(),
            identity.clone(),
            dimension.clone(),
            hour_of(timestamp),
        );
        if let Some(&i) = self.index.get(&key) {
            let earlier = &self.records[i];
            return if earlier.quantity == record.quantity() {
                Verdict::Success {
                    metering_record_id: earlier.metering_record_id.clone(),
                }
            } else {
                Verdict::DuplicateRecord
            };
        }
        let metering_record_id = record_id(&key, record.quantity());
        let (account, customer, license) = match identity {
            Identity::Account { account, license } => (Some(account), None, license.clone()),
            Identity::Legacy { customer } => (None, Some(customer), None),
        };
        self.records.push(MeteredRecord {
            product_code: product.to_owned(),
            customer_aws_account_id: account.cloned(),
            customer_identifier: customer.cloned(),
            license_arn: license,
            dimension,
            hour: key.3,
            timestamp,
            quantity: record.quantity(),
            metering_record_id: metering_record_id.clone(),
            allocations: record.usage_allocations.clone().unwrap_or_default(),
        });
        self.index.insert(key, self.records.len() - 1);
        Verdict::Success { metering_record_id }
    }
}

/// A stable id in UUID layout, derived from what makes the record unique.
fn record_id(key: &LedgerKey, quantity: i64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{key:?}/{quantity}"));
    let hex = hex::encode(&hasher.finalize()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// What the rules need from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub window_hours: u32,
    /// Per product; a product without an entry (or with an empty list) accepts any dimension.
    pub dimensions: &'a BTreeMap<String, Vec<String>>,
    pub now: i64,
}

/// One record, checked: its product and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub product: String,
    pub identity: Identity,
}

/// Checks every record of a call before any is applied: one refused record refuses the whole call,
/// as AWS does for a timestamp out of bounds.
pub fn check_call(
    request: &MeteringRequest,
    subscribers: &Subscribers,
    rules: Rules<'_>,
) -> Result<Vec<Checked>, Refused> {
    let mut call_product: Option<String> = request.product_code.clone();
    let mut checked = Vec::with_capacity(request.records.len());
    for (i, record) in request.records.iter().enumerate() {
        let identity = identity_of(i, record)?;
        let product = product_of(i, &identity, request, subscribers)?;
        match &call_product {
            Some(p) if *p != product => {
                return Err(refuse(
                    Refusal::InvalidProductCode,
                    format!(
                        "UsageRecords[{i}]: every BatchMeterUsage request is for one product; \
                         its LicenseArn is for another"
                    ),
                ))
            }
            Some(_) => {}
            None => call_product = Some(product.clone()),
        }
        if !subscribers.knows_product(&product) && !rules.dimensions.contains_key(&product) {
            return Err(refuse(
                Refusal::InvalidProductCode,
                "The product code passed does not match the product code used for publishing the \
                 product",
            ));
        }
        let dimension = record.dimension.as_deref().unwrap_or_default();
        if let Some(known) = rules.dimensions.get(&product) {
            if !known.is_empty() && !known.iter().any(|d| d == dimension) {
                return Err(refuse(
                    Refusal::InvalidUsageDimension,
                    format!(
                        "UsageRecords[{i}]: the usage dimension does not match one of the \
                         product's dimensions"
                    ),
                ));
            }
        }
        check_allocations(i, record)?;
        if let Err(why) = check_timestamp(record.unix_secs(), rules.now, rules.window_hours) {
            let what = match why {
                OutOfBounds::Future => "is in the future",
                OutOfBounds::TooOld => "is older than the metering window",
                OutOfBounds::PastMonthEnd => {
                    "is in an earlier billing month, whose records were accepted until 06:00 UTC \
                     on the first day of this month"
                }
            };
            return Err(refuse(
                Refusal::TimestampOutOfBounds,
                format!("UsageRecords[{i}]: the timestamp {what}; no record was processed"),
            ));
        }
        checked.push(Checked { product, identity });
    }
    Ok(checked)
}

/// The record's product: the request's ProductCode, or the product of its license.
fn product_of(
    i: usize,
    identity: &Identity,
    request: &MeteringRequest,
    subscribers: &Subscribers,
) -> Result<String, Refused> {
    let Identity::Account {
        account,
        license: Some(license),
    } = identity
    else {
        return request.product_code.clone().ok_or_else(|| {
            refuse(
                Refusal::InvalidProductCode,
                format!(
                    "UsageRecords[{i}]: ProductCode is required for records without LicenseArn"
                ),
            )
        });
    };
    let invalid = || {
        refuse(
            Refusal::InvalidLicense,
            format!(
                "UsageRecords[{i}]: ensure the LicenseArn is valid, matches the customer, and \
                 usage is within the license activation period"
            ),
        )
    };
    if !model::is_license_arn(license) {
        return Err(invalid());
    }
    let subscriber = subscribers.license(license).ok_or_else(invalid)?;
    if subscriber.customer_aws_account_id.as_ref() != Some(account) {
        return Err(invalid());
    }
    Ok(subscriber.product_code.clone())
}

/// Applies a checked call: the first `unprocessed` records are left unprocessed (an injected
/// fault), the others are metered if their customer is subscribed.
pub fn apply_call(
    request: &MeteringRequest,
    checked: &[Checked],
    subscribers: &Subscribers,
    ledger: &mut Ledger,
    unprocessed: &mut u32,
) -> Vec<Verdict> {
    request
        .records
        .iter()
        .zip(checked)
        .map(|(record, Checked { product, identity })| {
            if *unprocessed > 0 {
                *unprocessed -= 1;
                Verdict::Unprocessed
            } else if !subscribers.is_subscribed(product, identity) {
                Verdict::CustomerNotSubscribed
            } else {
                ledger.meter(product, identity, record)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-31 12:00:00 UTC.
    const MARCH_31_NOON: i64 = 1_774_958_400;
    /// 2026-04-01 00:00:00 UTC.
    const APRIL_1: i64 = 1_775_001_600;
    const H: i64 = HOUR_SECS;

    #[test]
    fn the_constants_are_the_dates_they_name() {
        let april = DateTime::<Utc>::from_timestamp(APRIL_1, 0).expect("valid");
        assert_eq!(april.to_rfc3339(), "2026-04-01T00:00:00+00:00");
        assert_eq!(month_start(APRIL_1 + 5 * H), APRIL_1);
        assert_eq!(month_start(APRIL_1 - 1), APRIL_1 - 31 * 24 * H);
        assert_eq!(MARCH_31_NOON, APRIL_1 - 12 * H);
    }

    #[test]
    fn timestamp_window_table() {
        use OutOfBounds::*;
        let now = MARCH_31_NOON;
        let cases: [(i64, i64, u32, Result<(), OutOfBounds>); 14] = [
            // (timestamp, now, window hours, verdict)
            (now, now, 24, Ok(())),
            (now + FUTURE_SKEW_SECS, now, 24, Ok(())),
            (now + FUTURE_SKEW_SECS + 1, now, 24, Err(Future)),
            (now - 24 * H + 1, now, 24, Ok(())),
            (now - 24 * H, now, 24, Err(TooOld)),
            (now - 6 * H + 1, now, 6, Ok(())),
            (now - 6 * H, now, 6, Err(TooOld)),
            // The month-end grace: March usage until 06:00 UTC on April 1.
            (APRIL_1 - 1, APRIL_1 + 5 * H, 24, Ok(())),
            (APRIL_1 - 1, APRIL_1 + 6 * H - 1, 24, Ok(())),
            (APRIL_1 - 1, APRIL_1 + 6 * H, 24, Err(PastMonthEnd)),
            (APRIL_1 - 3 * H, APRIL_1 + 7 * H, 24, Err(PastMonthEnd)),
            // April usage is not affected by the cutoff.
            (APRIL_1, APRIL_1 + 7 * H, 24, Ok(())),
            // The window still applies inside the grace.
            (APRIL_1 - 20 * H, APRIL_1 + 5 * H, 24, Err(TooOld)),
            (i64::MIN, now, 24, Err(TooOld)),
        ];
        for (timestamp, now, window, expected) in cases {
            assert_eq!(
                check_timestamp(timestamp, now, window),
                expected,
                "timestamp {timestamp} now {now} window {window}"
            );
        }
        assert_eq!(check_timestamp(i64::MAX, now, 24), Err(Future));
    }

    #[test]
    fn hours_truncate_down_also_before_1970() {
        assert_eq!(hour_of(MARCH_31_NOON + 3599), MARCH_31_NOON);
        assert_eq!(hour_of(MARCH_31_NOON), MARCH_31_NOON);
        assert_eq!(hour_of(-1), -3600);
    }

    fn record(quantity: i64, allocations: Option<Vec<UsageAllocation>>) -> UsageRecord {
        UsageRecord {
            timestamp: Some(MARCH_31_NOON as f64),
            customer_identifier: None,
            dimension: Some("api_calls".into()),
            quantity: Some(quantity),
            usage_allocations: allocations,
            customer_aws_account_id: Some("123456789012".into()),
            license_arn: None,
        }
    }

    fn allocation(quantity: i64, tags: &[(&str, &str)]) -> UsageAllocation {
        UsageAllocation {
            allocated_usage_quantity: quantity,
            tags: (!tags.is_empty()).then(|| {
                tags.iter()
                    .map(|(k, v)| Tag {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn allocation_table() {
        use Refusal::*;
        let six_tags: Vec<(String, String)> =
            (0..6).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let six: Vec<(&str, &str)> = six_tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cases: Vec<(i64, Option<Vec<UsageAllocation>>, Option<Refusal>)> = vec![
            (5, None, None),
            (5, Some(vec![allocation(5, &[])]), None),
            (
                5,
                Some(vec![allocation(2, &[("team", "a")]), allocation(3, &[])]),
                None,
            ),
            (0, Some(vec![allocation(0, &[("team", "a")])]), None),
            (
                5,
                Some(vec![allocation(2, &[("team", "a")]), allocation(2, &[])]),
                Some(InvalidUsageAllocations),
            ),
            (5, Some(vec![]), Some(InvalidUsageAllocations)),
            (
                4,
                Some(vec![
                    allocation(2, &[("team", "a")]),
                    allocation(2, &[("team", "a")]),
                ]),
                Some(InvalidUsageAllocations),
            ),
            (1, Some(vec![allocation(1, &six)]), Some(InvalidTag)),
            (
                1,
                Some(vec![allocation(1, &[("team", "a"), ("team", "b")])]),
                Some(InvalidTag),
            ),
            (
                1,
                Some(vec![allocation(1, &[("team", "")])]),
                Some(InvalidTag),
            ),
            (1, Some(vec![allocation(1, &[("", "a")])]), Some(InvalidTag)),
            (
                1,
                Some(vec![allocation(1, &[("tëam", "a")])]),
                Some(InvalidTag),
            ),
            (
                1,
                Some(vec![allocation(1, &[("team", "a|b")])]),
                Some(InvalidTag),
            ),
            (
                1,
                Some(vec![allocation(1, &[("cost center: 1/2", "x+y=z @ .")])]),
                None,
            ),
        ];
        for (quantity, allocations, expected) in cases {
            let shown = format!("{quantity} {allocations:?}");
            let result = check_allocations(0, &record(quantity, allocations));
            assert_eq!(result.err().map(|r| r.refusal), expected, "{shown}");
        }
        let mut long = vec![allocation(0, &[]); MAX_ALLOCATIONS + 1];
        long[0] = allocation(0, &[("a", "b")]);
        // Unique tag sets fail first here; the count is checked for unique sets too.
        assert!(check_allocations(0, &record(0, Some(long))).is_err());
        let key = "k".repeat(101);
        assert_eq!(
            check_allocations(0, &record(1, Some(vec![allocation(1, &[(&key, "v")])])))
                .map_err(|r| r.refusal),
            Err(InvalidTag)
        );
    }

    #[test]
    fn identities_are_exclusive() {
        let mut r = record(1, None);
        assert!(matches!(identity_of(0, &r), Ok(Identity::Account { .. })));
        r.customer_identifier = Some("c".into());
        assert_eq!(
            identity_of(0, &r).map_err(|e| e.refusal),
            Err(Refusal::InvalidCustomerIdentifier)
        );
        r.customer_aws_account_id = None;
        assert_eq!(
            identity_of(0, &r),
            Ok(Identity::Legacy {
                customer: "c".into()
            })
        );
        r.license_arn = Some("arn:aws:license-manager::123456789012:license:l-1".into());
        assert_eq!(
            identity_of(0, &r).map_err(|e| e.refusal),
            Err(Refusal::InvalidLicense)
        );
        r.customer_identifier = None;
        assert_eq!(
            identity_of(0, &r).map_err(|e| e.refusal),
            Err(Refusal::InvalidCustomerIdentifier)
        );
    }

    const LICENSE: &str = "arn:aws:license-manager::123456789012:license:l-abc";

    fn subscribers() -> Subscribers {
        let mut s = Subscribers::default();
        s.add(Subscriber {
            product_code: "prod-abc".into(),
            customer_aws_account_id: Some("123456789012".into()),
            customer_identifier: None,
            license_arn: Some(LICENSE.into()),
        });
        s
    }

    fn call(product: Option<&str>, records: Vec<UsageRecord>) -> MeteringRequest {
        MeteringRequest {
            product_code: product.map(str::to_owned),
            records,
        }
    }

    fn rules(dimensions: &BTreeMap<String, Vec<String>>, now: i64) -> Rules<'_> {
        Rules {
            window_hours: 24,
            dimensions,
            now,
        }
    }

    #[test]
    fn products_licenses_and_dimensions() {
        let none = BTreeMap::new();
        let subs = subscribers();
        let refusal = |request: &MeteringRequest, dims| {
            check_call(request, &subs, rules(dims, MARCH_31_NOON))
                .err()
                .map(|r| r.refusal)
        };
        let plain = record(1, None);
        assert_eq!(
            refusal(&call(Some("prod-abc"), vec![plain.clone()]), &none),
            None
        );
        assert_eq!(
            refusal(&call(Some("prod-unknown"), vec![plain.clone()]), &none),
            Some(Refusal::InvalidProductCode)
        );
        assert_eq!(
            refusal(&call(None, vec![plain.clone()]), &none),
            Some(Refusal::InvalidProductCode)
        );
        let mut licensed = plain.clone();
        licensed.license_arn = Some(LICENSE.into());
        assert_eq!(refusal(&call(None, vec![licensed.clone()]), &none), None);
        assert_eq!(
            refusal(&call(Some("prod-abc"), vec![licensed.clone()]), &none),
            None
        );
        let dims = BTreeMap::from([("prod-other".to_owned(), vec![])]);
        assert_eq!(
            refusal(&call(Some("prod-other"), vec![licensed.clone()]), &dims),
            Some(Refusal::InvalidProductCode)
        );
        let mut stranger = licensed.clone();
        stranger.customer_aws_account_id = Some("210987654321".into());
        assert_eq!(
            refusal(&call(None, vec![stranger]), &none),
            Some(Refusal::InvalidLicense)
        );
        let mut unknown = licensed.clone();
        unknown.license_arn = Some("arn:aws:license-manager::123456789012:license:l-zzz".into());
        assert_eq!(
            refusal(&call(None, vec![unknown]), &none),
            Some(Refusal::InvalidLicense)
        );
        let dims = BTreeMap::from([("prod-abc".to_owned(), vec!["storage".to_owned()])]);
        assert_eq!(
            refusal(&call(Some("prod-abc"), vec![plain.clone()]), &dims),
            Some(Refusal::InvalidUsageDimension)
        );
        let any = BTreeMap::from([("prod-abc".to_owned(), vec![])]);
        assert_eq!(
            refusal(&call(Some("prod-abc"), vec![plain.clone()]), &any),
            None
        );
        // One record out of bounds refuses the call.
        let mut old = plain.clone();
        old.timestamp = Some((MARCH_31_NOON - 25 * H) as f64);
        assert_eq!(
            refusal(&call(Some("prod-abc"), vec![plain, old]), &none),
            Some(Refusal::TimestampOutOfBounds)
        );
    }

    #[test]
    fn dedupe_on_the_hour_and_resends_keep_their_id() {
        let subs = subscribers();
        let mut ledger = Ledger::default();
        let none = BTreeMap::new();
        let run = |ledger: &mut Ledger, records: Vec<UsageRecord>, unprocessed: &mut u32| {
            let request = call(Some("prod-abc"), records);
            let now = MARCH_31_NOON + H - 1;
            let checked = check_call(&request, &subs, rules(&none, now)).expect("valid");
            apply_call(&request, &checked, &subs, ledger, unprocessed)
        };
        let first = record(3, None);
        let mut later_same_hour = first.clone();
        later_same_hour.timestamp = Some((MARCH_31_NOON + 1800) as f64);
        let mut changed = later_same_hour.clone();
        changed.quantity = Some(4);
        let mut next_hour = changed.clone();
        next_hour.timestamp = Some((MARCH_31_NOON - 1) as f64);
        let mut stranger = first.clone();
        stranger.customer_aws_account_id = Some("210987654321".into());

        let mut none_unprocessed = 0;
        let verdicts = run(
            &mut ledger,
            vec![first, later_same_hour, changed, next_hour, stranger],
            &mut none_unprocessed,
        );
        let Verdict::Success {
            metering_record_id: id,
        } = &verdicts[0]
        else {
            panic!("{verdicts:?}")
        };
        assert_eq!(
            verdicts[1],
            Verdict::Success {
                metering_record_id: id.clone()
            }
        );
        assert_eq!(verdicts[2], Verdict::DuplicateRecord);
        assert!(
            matches!(&verdicts[3], Verdict::Success { metering_record_id } if metering_record_id != id)
        );
        assert_eq!(verdicts[4], Verdict::CustomerNotSubscribed);
        assert_eq!(ledger.records().len(), 2);
        assert_eq!(ledger.records()[0].hour, MARCH_31_NOON);
        assert_eq!(ledger.records()[1].hour, MARCH_31_NOON - H);

        let mut two = 2;
        let verdicts = run(&mut ledger, vec![record(3, None); 3], &mut two);
        assert_eq!(&verdicts[..2], [Verdict::Unprocessed, Verdict::Unprocessed]);
        assert!(matches!(verdicts[2], Verdict::Success { .. }));
        assert_eq!(two, 0);
    }

    #[test]
    fn subscribers_validate_and_unsubscribe_by_what_is_named() {
        let mut subs = subscribers();
        let by_account = Subscriber {
            product_code: "prod-abc".into(),
            customer_aws_account_id: Some("123456789012".into()),
            customer_identifier: None,
            license_arn: None,
        };
        let identity = Identity::Account {
            account: "123456789012".into(),
            license: None,
        };
        assert!(subs.is_subscribed("prod-abc", &identity));
        subs.change(by_account.clone(), false).expect("valid");
        assert!(!subs.is_subscribed("prod-abc", &identity));
        assert!(subs.list().is_empty());
        for (bad, error) in [
            (
                Subscriber {
                    product_code: "prod abc".into(),
                    ..by_account.clone()
                },
                SubscriberError::Product,
            ),
            (
                Subscriber {
                    customer_aws_account_id: None,
                    ..by_account.clone()
                },
                SubscriberError::NoCustomer,
            ),
            (
                Subscriber {
                    customer_aws_account_id: Some("42".into()),
                    ..by_account.clone()
                },
                SubscriberError::Account,
            ),
            (
                Subscriber {
                    license_arn: Some("arn:l".into()),
                    ..by_account.clone()
                },
                SubscriberError::License,
            ),
        ] {
            assert_eq!(subs.change(bad, true), Err(error));
        }
    }
}
