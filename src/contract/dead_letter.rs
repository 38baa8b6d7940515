//! The dead-letter contract: the original body, byte for byte, with `mpr.*` attributes saying why,
//! and the typed reasons (`mpr.reason`) that `dlq list` and `dlq redrive --reason` parse and print.

use std::fmt;

use super::Fingerprint;

/// Why a message was retired to the dead-letter queue: the value of its `mpr.reason` attribute.
/// It prints as that wire string and parses from it, so `dlq list` groups and `dlq redrive
/// --reason` filters by the same names the worker writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadLetterReason {
    InvalidToken,
    ExpiredToken,
    MalformedMessage,
    ProductMismatch,
    /// ResolveCustomer answered, but the event could not be published within `publish.hold_secs`;
    /// the dead-letter carries the event JSON in [`dlq_attr::EVENT`].
    Unpublished,
    /// A message on the lifecycle queue that is not a known notification.
    UnrecognizedNotification,
    /// Usage that can no longer be sent inside BatchMeterUsage's window (too old, or last month's
    /// after 06:00 UTC on the 1st); the letter's detail carries the quantity.
    OutsideMeteringWindow,
    /// BatchMeterUsage answered CustomerNotSubscribed for the usage's hour.
    CustomerNotSubscribed,
    /// InvalidUsageDimensionException: the product has no such dimension.
    InvalidDimension,
    /// InvalidProductCodeException.
    InvalidProduct,
    /// InvalidLicenseException or InvalidCustomerIdentifierException.
    InvalidCustomer,
    /// InvalidTagException or InvalidUsageAllocationsException.
    InvalidAllocations,
    /// DuplicateRecord: AWS holds another quantity for the hour (an anomaly, never resent).
    DuplicateRecord,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 13] = [
        DeadLetterReason::InvalidToken,
        DeadLetterReason::ExpiredToken,
        DeadLetterReason::MalformedMessage,
        DeadLetterReason::ProductMismatch,
        DeadLetterReason::Unpublished,
        DeadLetterReason::UnrecognizedNotification,
        DeadLetterReason::OutsideMeteringWindow,
        DeadLetterReason::CustomerNotSubscribed,
        DeadLetterReason::InvalidDimension,
        DeadLetterReason::InvalidProduct,
        DeadLetterReason::InvalidCustomer,
        DeadLetterReason::InvalidAllocations,
        DeadLetterReason::DuplicateRecord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::InvalidToken => "invalid_token",
            DeadLetterReason::ExpiredToken => "expired_token",
            DeadLetterReason::MalformedMessage => "malformed_message",
            DeadLetterReason::ProductMismatch => "product_mismatch",
            DeadLetterReason::Unpublished => "unpublished",
            DeadLetterReason::UnrecognizedNotification => "unrecognized_notification",
            DeadLetterReason::OutsideMeteringWindow => "outside_metering_window",
            DeadLetterReason::CustomerNotSubscribed => "customer_not_subscribed",
            DeadLetterReason::InvalidDimension => "invalid_dimension",
            DeadLetterReason::InvalidProduct => "invalid_product",
            DeadLetterReason::InvalidCustomer => "invalid_customer",
            DeadLetterReason::InvalidAllocations => "invalid_allocations",
            DeadLetterReason::DuplicateRecord => "duplicate_record",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of [`DeadLetterReason::ALL`]'s wire names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter reason {0:?}")]
pub struct UnknownReason(pub String);

impl std::str::FromStr for DeadLetterReason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadLetterReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

/// Names of the SQS message attributes on a dead-letter.
pub mod dlq_attr {
    pub const REASON: &str = "mpr.reason";
    pub const DETAIL: &str = "mpr.detail";
    pub const EVENT_ID: &str = "mpr.eventId";
    pub const SOURCE_MESSAGE_ID: &str = "mpr.sourceMessageId";
    pub const RECEIVE_COUNT: &str = "mpr.receiveCount";
    pub const FAILED_AT: &str = "mpr.failedAt";
    /// On an `unpublished` or `product_mismatch` dead-letter: the resolved event, as JSON.
    pub const EVENT: &str = "mpr.event";
    /// Instead of `mpr.event` on a letter that would be too large with it: the store item that
    /// holds the event (`token#<eventId>`), which `dlq redrive` reads.
    pub const EVENT_REF: &str = "mpr.eventRef";
}

/// The largest dead-letter the worker sends with its event attached: SQS's classic message limit
/// (body and attributes together), which queues created before SQS's 1 MiB limit still have.
pub const MAX_LETTER_BYTES: usize = 256 * 1024;
/// What a letter's own attributes (names, types, the detail, ids) take beside the body and event.
pub const LETTER_OVERHEAD_BYTES: usize = 2 * 1024;

/// A dead-letter to send: the original body, byte for byte, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub body: String,
    pub reason: DeadLetterReason,
    pub detail: String,
    pub event_id: Option<Fingerprint>,
    pub source_message_id: String,
    pub receive_count: u32,
    pub failed_at: String,
    /// The event JSON, on `unpublished` and `product_mismatch` letters.
    pub event: Option<String>,
    /// The store item holding the event, when the letter would be too large with it.
    pub event_ref: Option<String>,
}
