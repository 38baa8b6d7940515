//! Publishing events to the topic (resolved customers and lifecycle events), with the attributes
//! subscribers filter on.

use std::sync::Arc;

use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

use crate::aws::error::{describe, entry_results, CallError, EntryFailure};
use crate::aws::is_fifo;
use crate::contract::lifecycle::{topic_attributes, topic_group, LifecycleEvent};
use crate::contract::usage::UsageMeteredEvent;
use crate::contract::CustomerEvent;
use crate::observe::events::{AwsCall, BatchEntryFailed};
use crate::observe::metrics::Telemetry;

const OP: &str = "PublishBatch";

#[derive(Debug, Clone)]
pub struct Publisher {
    sns: aws_sdk_sns::Client,
    topic_arn: String,
    telemetry: Option<Arc<Telemetry>>,
}

impl Publisher {
    pub fn new(sns: aws_sdk_sns::Client, topic_arn: String) -> Self {
        Publisher {
            sns,
            topic_arn,
            telemetry: None,
        }
    }

    /// Counts every call in `mpr_aws_calls`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    pub fn is_fifo(&self) -> bool {
        is_fifo(&self.topic_arn)
    }

    /// Asks SNS for the topic's attributes: it exists and this process may see it.
    pub async fn check(&self) -> Result<(), CallError> {
        let result = self
            .sns
            .get_topic_attributes()
            .topic_arn(&self.topic_arn)
            .send()
            .await;
        if let Some(t) = &self.telemetry {
            AwsCall {
                service: "sns",
                operation: "GetTopicAttributes",
                ok: result.is_ok(),
            }
            .emit(t);
        }
        result
            .map(drop)
            .map_err(|e| CallError::new("GetTopicAttributes", &self.topic_arn, describe(&e)))
    }

    /// Publishes up to ten events in one `PublishBatch`; per-event results in the order given
    /// (each the SNS message id, or why that entry failed). A batch SNS refuses as too long as a
    /// whole is sent again one event per request, so only an event that is too long by itself
    /// fails (its `BatchRequestTooLong` is then a verdict on it: [`EntryFailure::is_too_long`]).
    pub async fn publish_batch<E: Publishable>(
        &self,
        events: &[E],
    ) -> Result<Vec<Result<String, EntryFailure>>, CallError> {
        match self.publish_one_batch(events, Attempts::Configured).await {
            Err(e)
                if events.len() > 1 && e.failure.code.as_deref() == Some("BatchRequestTooLong") =>
            {
                let mut results = Vec::with_capacity(events.len());
                for event in events {
                    results.extend(
                        match self
                            .publish_one_batch(std::slice::from_ref(event), Attempts::Configured)
                            .await
                        {
                            Ok(one) => one,
                            Err(e) => vec![Err(EntryFailure::whole_call(&e.failure))],
                        },
                    );
                }
                Ok(results)
            }
            other => other,
        }
    }

    /// Publishes one event in a request of its own with a single attempt (no SDK retries): for a
    /// held event's retry, whose own loop retries and re-reads what it publishes before each turn,
    /// so no attempt goes out on a reading older than one call (RELIABILITY.md, "Known limits").
    pub async fn publish_once<E: Publishable>(&self, event: &E) -> Result<String, EntryFailure> {
        match self
            .publish_one_batch(std::slice::from_ref(event), Attempts::One)
            .await
        {
            Ok(results) => results
                .into_iter()
                .next()
                .unwrap_or_else(|| Err(EntryFailure::missing())),
            Err(e) => Err(EntryFailure::whole_call(&e.failure)),
        }
    }

    async fn publish_one_batch<E: Publishable>(
        &self,
        events: &[E],
        attempts: Attempts,
    ) -> Result<Vec<Result<String, EntryFailure>>, CallError> {
        let entries = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let mut entry = PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(event.to_json());
                for (name, value) in event.attributes() {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()
                        .map_err(|e| CallError::build(OP, &self.topic_arn, e))?;
                    entry = entry.message_attributes(name, value);
                }
                if self.is_fifo() {
                    entry = entry
                        .message_group_id(event.group_id())
                        .message_deduplication_id(event.dedup_id());
                }
                entry
                    .build()
                    .map_err(|e| CallError::build(OP, &self.topic_arn, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let request = self
            .sns
            .publish_batch()
            .topic_arn(&self.topic_arn)
            .set_publish_batch_request_entries(Some(entries));
        let result = if attempts == Attempts::One {
            let one = RetryConfig::standard().with_max_attempts(1);
            request
                .customize()
                .config_override(aws_sdk_sns::config::Builder::default().retry_config(one))
                .send()
                .await
        } else {
            request.send().await
        };
        if let Some(t) = &self.telemetry {
            AwsCall {
                service: "sns",
                operation: OP,
                ok: result.is_ok(),
            }
            .emit(t);
        }
        let output = result.map_err(|e| CallError::new(OP, &self.topic_arn, describe(&e)))?;
        let results = entry_results(
            events.len(),
            output
                .successful
                .unwrap_or_default()
                .into_iter()
                .map(|ok| (ok.id.unwrap_or_default(), ok.message_id.unwrap_or_default())),
            output
                .failed
                .unwrap_or_default()
                .into_iter()
                .map(|f| (f.id, f.code, f.message)),
        );
        if let Some(t) = &self.telemetry {
            for problem in results.iter().filter_map(|r| r.as_ref().err()) {
                BatchEntryFailed {
                    service: "sns",
                    operation: OP,
                    problem,
                }
                .emit(t);
            }
        }
        Ok(results)
    }
}

/// How many attempts one `PublishBatch` request makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempts {
    /// The client's (`aws.max_attempts`, with the SDK's backoff).
    Configured,
    /// One, whatever `aws.max_attempts` says.
    One,
}

/// An event kept as JSON (an `unpublished` dead-letter's `mpr.event`), with the attributes
/// subscribers filter on and the FIFO group (the customer's account) and deduplication id (the
/// `eventId`) read from it: what `dlq redrive` publishes as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsMessage {
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
    pub group_id: String,
    pub deduplication_id: String,
}

impl SnsMessage {
    /// An event kept as JSON (an `unpublished` dead-letter's `mpr.event`), published as it is;
    /// `None` when it is not an event of ours.
    pub fn from_event_json(json: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        let field = |name: &str| value.get(name)?.as_str();
        let event_id = field("eventId")?.to_owned();
        field("eventType")?;
        // The attributes and group a live publish of the event has, from the same functions.
        let attributes = topic_attributes(field)
            .into_iter()
            .map(|(name, v)| (name, v.to_owned()))
            .collect();
        Some(SnsMessage {
            body: json.to_owned(),
            group_id: topic_group(field).to_owned(),
            deduplication_id: event_id,
            attributes,
        })
    }
}

impl Publishable for SnsMessage {
    fn to_json(&self) -> String {
        self.body.clone()
    }

    fn attributes(&self) -> Vec<(&'static str, &str)> {
        self.attributes
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect()
    }

    fn group_id(&self) -> &str {
        &self.group_id
    }

    fn dedup_id(&self) -> &str {
        &self.deduplication_id
    }
}

/// What the publisher needs of an event: its message, the attributes subscribers filter on, and
/// for a FIFO topic its message group and deduplication id.
pub trait Publishable {
    fn to_json(&self) -> String;
    fn attributes(&self) -> Vec<(&'static str, &str)>;
    /// Events of one customer keep their order on a FIFO topic.
    fn group_id(&self) -> &str;
    /// Deterministic, so a redelivered message is not published twice within SNS's window.
    fn dedup_id(&self) -> &str;
}

impl Publishable for CustomerEvent {
    fn to_json(&self) -> String {
        CustomerEvent::to_json(self)
    }

    fn attributes(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("eventType", self.event_type),
            ("productCode", &self.product_code),
            ("customerAWSAccountId", &self.customer_aws_account_id),
        ]
    }

    fn group_id(&self) -> &str {
        &self.customer_aws_account_id
    }

    fn dedup_id(&self) -> &str {
        self.event_id.as_str()
    }
}

impl Publishable for LifecycleEvent {
    fn to_json(&self) -> String {
        LifecycleEvent::to_json(self)
    }

    fn attributes(&self) -> Vec<(&'static str, &str)> {
        self.message_attributes()
    }

    fn group_id(&self) -> &str {
        LifecycleEvent::group_id(self)
    }

    fn dedup_id(&self) -> &str {
        self.fields.event_id.as_str()
    }
}

impl Publishable for UsageMeteredEvent {
    fn to_json(&self) -> String {
        UsageMeteredEvent::to_json(self)
    }

    fn attributes(&self) -> Vec<(&'static str, &str)> {
        self.message_attributes()
    }

    fn group_id(&self) -> &str {
        UsageMeteredEvent::group_id(self)
    }

    fn dedup_id(&self) -> &str {
        &self.event_id
    }
}

/// Any event the worker publishes; one publisher and one batcher carry both kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicEvent {
    Customer(CustomerEvent),
    Lifecycle(LifecycleEvent),
    Usage(UsageMeteredEvent),
}

impl TopicEvent {
    fn inner(&self) -> &dyn Publishable {
        match self {
            TopicEvent::Customer(e) => e,
            TopicEvent::Lifecycle(e) => e,
            TopicEvent::Usage(e) => e,
        }
    }
}

impl Publishable for TopicEvent {
    fn to_json(&self) -> String {
        self.inner().to_json()
    }

    fn attributes(&self) -> Vec<(&'static str, &str)> {
        self.inner().attributes()
    }

    fn group_id(&self) -> &str {
        self.inner().group_id()
    }

    fn dedup_id(&self) -> &str {
        self.inner().dedup_id()
    }
}

/// SNS caps a whole `PublishBatch` request's payload at 256 KiB.
pub const MAX_BATCH_BYTES: usize = 262_144;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::lifecycle::{meaning, parse_lifecycle_body, Access, Verdict};

    /// A redriven `unpublished` letter's event must be filterable and grouped exactly as its
    /// live publish was.
    #[test]
    fn a_redriven_lifecycle_event_has_the_live_attributes_and_group() {
        let body =
            include_str!("../../tests/fixtures/lifecycle/license-deprovisioned-manufacturer.json");
        let n = parse_lifecycle_body(body, "m-1").expect("a notification");
        let now = chrono::Utc::now();
        let verdict = Verdict {
            access: Access::Revoke,
            previous_access: Some(Access::Grant),
            sequence: 4,
            stale: false,
            signup_id: None,
            context: Default::default(),
        };
        let live = LifecycleEvent::new(&n, meaning(&n, None, now), None, now, &verdict);
        let redriven = SnsMessage::from_event_json(&live.to_json()).expect("our event");
        assert_eq!(redriven.attributes(), live.attributes());
        assert!(redriven.attributes().contains(&("access", "revoke")));
        assert_eq!(redriven.group_id(), Publishable::group_id(&live));
        assert_eq!(redriven.dedup_id(), live.dedup_id());
        assert_eq!(redriven.to_json(), live.to_json());
    }
}
