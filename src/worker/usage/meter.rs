//! The metering pass: every tick, the hours the store shows pending are looked at; the due ones are
//! claimed (one task meters an hour: a claim with a lease, taken over when its holder died), sent
//! in calls of at most 25 records for one product under BatchMeterUsage's own rate limit, and each
//! answer is written ahead of its report (the `marketplace.usage.metered` event; for usage that
//! will never be metered, the dead-letters of its bodies). What to do with one hour is
//! [`next_step`], pure. An hour that must wait says until when, and the pass does not read it again
//! before then (a settling hour's due time only moves later), so a tick reads only the hours that
//! may have a step to take.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws::metering::{
    batch_meter_usage, FailureKind, MeterResult, MeteredCustomer, RecordOutcome, UsageAllocation,
    UsageRecord,
};
use crate::aws::sns::TopicEvent;
use crate::aws::sqs::now_rfc3339;
use crate::contract::usage::{UsageCustomer, UsageMeteredEvent, METERED_EVENT_TYPE};
use crate::contract::{DeadLetter, DeadLetterReason, Fingerprint};
use crate::store::usage::{Hour, HourState, Pending};
use crate::store::{now_millis, StoreError};
use crate::worker::lane::Pipeline;
use crate::worker::ratelimit::Call;
use crate::worker::retry::full_jitter;
use crate::worker::usage::schedule::{
    hour_label, hour_rfc3339, phase, record_timestamp, zero_record_hour, HourRules, Phase, HOUR,
};
use crate::worker::usage::UsageParts;
use crate::worker::{lock, Worker};

/// BatchMeterUsage's limit of records per call.
pub const MAX_RECORDS: usize = 25;

/// What the pass remembers between ticks (lost on a restart, which only retries sooner).
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Per hour (pk, start): not before this (epoch ms), and the failed tries so far.
    pub retry_at: HashMap<(String, i64), (i64, u32)>,
    /// The last hour zero records were written for.
    pub zero_hour: Option<i64>,
}

/// What to do with one pending hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HourStep {
    /// Nothing before `until_ms` (epoch ms): still open, settling, or claimed (or being
    /// reported) by a live holder elsewhere. The hour cannot need a step sooner (more usage only
    /// moves a settling hour's due time later), so the pass does not read it again before then.
    Wait { until_ms: i64 },
    /// Claim it (or renew this process's claim, or take over a lapsed one) and send it.
    Claim,
    /// Its window closed before it could be sent: record it failed, dead-letter its usage.
    Expire,
    /// Its answer is stored but not reported: publish the event (and the letters).
    Report,
    /// Reported: only the pending entry is left.
    Forget,
}

/// The next step for `hour` at `now_ms`, for the holder `me`.
pub fn next_step(hour: &Hour, now_ms: i64, me: &str, rules: HourRules) -> HourStep {
    match &hour.state {
        HourState::Open => {
            match phase(hour.hour, hour.last_event_ms / 1000, now_ms / 1000, rules) {
                Phase::Due => HourStep::Claim,
                Phase::Expired => HourStep::Expire,
                Phase::Open => HourStep::Wait {
                    until_ms: (hour.hour + HOUR) * 1000,
                },
                Phase::Settling { due_at } => HourStep::Wait {
                    until_ms: due_at * 1000,
                },
            }
        }
        // Frozen: whoever holds it sends exactly this quantity, again if need be.
        HourState::Claimed { holder, until_ms } => {
            if holder == me || *until_ms <= now_ms {
                HourStep::Claim
            } else {
                HourStep::Wait {
                    until_ms: *until_ms,
                }
            }
        }
        HourState::Metered { .. } | HourState::Failed { .. } if hour.reported => HourStep::Forget,
        // The answerer reports; another task only once the answerer's lease lapsed.
        HourState::Metered { .. } | HourState::Failed { .. } => match &hour.report_lease {
            Some((holder, until_ms)) if holder != me && *until_ms > now_ms => HourStep::Wait {
                until_ms: *until_ms,
            },
            _ => HourStep::Report,
        },
    }
}

/// What one record's answer makes of its hour: its final state, or `None` to send it again.
pub fn verdict(outcome: &RecordOutcome) -> Option<HourState> {
    let failed = |status: &str, reason: DeadLetterReason, detail: &str| {
        Some(HourState::Failed {
            status: status.to_owned(),
            reason: reason.as_str().to_owned(),
            detail: detail.to_owned(),
        })
    };
    match outcome {
        RecordOutcome::Success { record_id } => Some(HourState::Metered {
            record_id: record_id.clone(),
        }),
        RecordOutcome::CustomerNotSubscribed => failed(
            "CustomerNotSubscribed",
            DeadLetterReason::CustomerNotSubscribed,
            "BatchMeterUsage: CustomerNotSubscribed",
        ),
        RecordOutcome::DuplicateRecord => failed(
            "DuplicateRecord",
            DeadLetterReason::DuplicateRecord,
            "BatchMeterUsage: DuplicateRecord: AWS holds another quantity for this hour",
        ),
        RecordOutcome::Unprocessed => None,
    }
}

/// The dead-letter reason of a refused record, by the exception's name.
pub fn refusal_reason(exception: &str) -> DeadLetterReason {
    match exception {
        "InvalidUsageDimensionException" => DeadLetterReason::InvalidDimension,
        "InvalidProductCodeException" => DeadLetterReason::InvalidProduct,
        "InvalidLicenseException" | "InvalidCustomerIdentifierException" => {
            DeadLetterReason::InvalidCustomer
        }
        "TimestampOutOfBoundsException" => DeadLetterReason::OutsideMeteringWindow,
        _ => DeadLetterReason::InvalidAllocations,
    }
}

/// The metric label of a final state.
fn status_label(state: &HourState) -> &'static str {
    match state {
        HourState::Metered { .. } => "success",
        HourState::Failed { status, .. } => match status.as_str() {
            "CustomerNotSubscribed" => "customer_not_subscribed",
            "DuplicateRecord" => "duplicate_record",
            "OutsideMeteringWindow" => "outside_window",
            _ => "refused",
        },
        _ => "unknown",
    }
}

/// The record an hour is sent as: always the same for the same hour.
pub fn record_of(hour: &Hour) -> UsageRecord {
    UsageRecord {
        customer: match &hour.customer {
            UsageCustomer::Account {
                aws_account_id,
                license_arn,
            } => MeteredCustomer::Account {
                aws_account_id: aws_account_id.clone(),
                license_arn: Some(license_arn.clone()),
            },
            UsageCustomer::Legacy {
                customer_identifier,
            } => MeteredCustomer::Legacy {
                customer_identifier: customer_identifier.clone(),
            },
        },
        dimension: hour.dimension.clone(),
        quantity: hour.quantity.clamp(0, i64::from(i32::MAX)) as i32,
        timestamp: SystemTime::UNIX_EPOCH
            + Duration::from_secs(record_timestamp(hour.hour).max(0) as u64),
        allocations: hour
            .record_allocations()
            .into_iter()
            .map(|a| UsageAllocation {
                quantity: a.quantity.clamp(0, i64::from(i32::MAX)) as i32,
                tags: a.tags,
            })
            .collect(),
    }
}

/// The event that reports `hour`'s answer.
pub fn metered_event(hour: &Hour) -> UsageMeteredEvent {
    let (account, license, legacy) = match &hour.customer {
        UsageCustomer::Account {
            aws_account_id,
            license_arn,
        } => (
            Some(aws_account_id.clone()),
            Some(license_arn.clone()),
            None,
        ),
        UsageCustomer::Legacy {
            customer_identifier,
        } => (None, None, Some(customer_identifier.clone())),
    };
    let (status, record_id, reason) = match &hour.state {
        HourState::Metered { record_id } => ("Success".to_owned(), Some(record_id.clone()), None),
        HourState::Failed { status, reason, .. } => (status.clone(), None, Some(reason.clone())),
        other => (other.name().to_owned(), None, None),
    };
    UsageMeteredEvent {
        event_type: METERED_EVENT_TYPE.to_owned(),
        schema_version: 1,
        event_id: Fingerprint::of(&format!("{}/{}", hour.pk, hour.sk())).to_string(),
        subscription: hour.subscription.clone(),
        product_code: hour.product_code.clone(),
        customer_aws_account_id: account,
        license_arn: license,
        customer_identifier: legacy,
        dimension: hour.dimension.clone(),
        hour: hour_rfc3339(hour.hour),
        quantity: hour.quantity,
        status,
        metering_record_id: record_id,
        carried_from: hour.carried_from.iter().map(|h| hour_rfc3339(*h)).collect(),
        reason,
        events: hour.events,
        reported_at: now_rfc3339(),
    }
}

impl Worker {
    /// Runs metering passes until `shutdown` completes. The tick follows the settle time, so a
    /// test's one-second settle is honoured and production's five minutes costs little.
    pub(crate) async fn run_metering(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let settle = self.settings.metering.settle();
        let tick = (settle / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        tokio::pin!(shutdown);
        tracing::info!(tick_ms = tick.as_millis() as u64, "metering started");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(tick) => {}
            }
            if let Err(e) = self.meter_pass().await {
                tracing::warn!(error = %e, "metering pass: the store did not answer; next tick");
            }
        }
    }

    /// One metering pass: zero records, then every pending hour's next step, then the sends.
    pub async fn meter_pass(&self) -> Result<(), StoreError> {
        let Some(usage) = &self.usage else {
            return Ok(());
        };
        let now_ms = now_millis();
        let now = now_ms / 1000;
        self.zero_records(usage, now).await?;
        let pending = usage.ledger.pending().await?;
        let oldest = pending
            .iter()
            .map(|p| p.hour + HOUR)
            .filter(|end| *end <= now)
            .min()
            .map_or(0, |end| now - end);
        self.telemetry.metrics.usage_hours(pending.len(), oldest);
        // What is remembered of hours no longer pending (reported, here or by another task) goes.
        let keys: HashSet<(&str, i64)> = pending
            .iter()
            .map(|p| (p.hour_pk.as_str(), p.hour))
            .collect();
        lock(&usage.memory)
            .retry_at
            .retain(|(pk, hour), _| keys.contains(&(pk.as_str(), *hour)));
        let mut to_send: Vec<Hour> = Vec::new();
        for p in pending {
            let key = (p.hour_pk.clone(), p.hour);
            if lock(&usage.memory)
                .retry_at
                .get(&key)
                .is_some_and(|(at, _)| *at > now_ms)
            {
                continue;
            }
            // The entry's hint spares reading hours that are plainly not due yet.
            if matches!(
                phase(p.hour, p.last_event_ms / 1000, now, usage.rules),
                Phase::Open | Phase::Settling { .. }
            ) {
                continue;
            }
            let Some(hour) = usage.ledger.hour(&p.hour_pk, p.hour).await? else {
                usage.ledger.forget_pending(&p).await?;
                continue;
            };
            match next_step(&hour, now_ms, &self.holder, usage.rules) {
                HourStep::Wait { until_ms } => wait_until(usage, &hour, until_ms),
                HourStep::Claim => {
                    if let Some(claimed) = self.claim(usage, hour, now_ms).await? {
                        to_send.push(claimed);
                    }
                }
                HourStep::Expire => {
                    let state = HourState::Failed {
                        status: "OutsideMeteringWindow".into(),
                        reason: DeadLetterReason::OutsideMeteringWindow.as_str().into(),
                        detail: format!(
                            "the hour {} could not be sent inside the metering window; \
                             quantity {} not metered",
                            hour_label(hour.hour),
                            hour.quantity
                        ),
                    };
                    self.settle_hour(usage, hour, state).await;
                }
                HourStep::Report => self.report(usage, &hour).await,
                HourStep::Forget => usage.ledger.forget_pending(&pending_of(&hour)).await?,
            }
        }
        // One product a call; records by license go without a product code, legacy ones with it.
        let mut calls: BTreeMap<(String, bool), Vec<Hour>> = BTreeMap::new();
        for hour in to_send {
            let by_license = matches!(hour.customer, UsageCustomer::Account { .. });
            calls
                .entry((hour.product_code.clone(), by_license))
                .or_default()
                .push(hour);
        }
        for ((product, by_license), hours) in calls {
            let mut hours = hours;
            while !hours.is_empty() {
                let rest = hours.split_off(hours.len().min(MAX_RECORDS));
                let call = std::mem::replace(&mut hours, rest);
                let product = (!by_license).then_some(product.as_str());
                self.send(usage, product, call).await;
            }
        }
        Ok(())
    }

    /// Writes this process's claim over the version read; `None` when another writer got there.
    async fn claim(
        &self,
        usage: &UsageParts,
        mut hour: Hour,
        now_ms: i64,
    ) -> Result<Option<Hour>, StoreError> {
        let lease = self.settings.metering.claim_lease_secs as i64 * 1000;
        hour.state = HourState::Claimed {
            holder: self.holder.clone(),
            until_ms: now_ms + lease,
        };
        match usage.ledger.put(&hour).await {
            Ok(version) => {
                hour.version = version;
                Ok(Some(hour))
            }
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One BatchMeterUsage call for `hours` (claimed, at most 25, one product). A refused call
    /// holds a record AWS will never take: it is split until that record is alone, so the others
    /// are still metered.
    async fn send(&self, usage: &UsageParts, product: Option<&str>, hours: Vec<Hour>) {
        let mut work = vec![hours];
        while let Some(part) = work.pop() {
            let records: Vec<UsageRecord> = part.iter().map(record_of).collect();
            usage.limiter.acquire().await;
            match batch_meter_usage(&usage.metering, product, &records).await {
                MeterResult::Metered(outcomes) => {
                    usage.limiter.succeeded();
                    for (hour, outcome) in part.into_iter().zip(outcomes) {
                        match verdict(&outcome) {
                            Some(state) => {
                                if let HourState::Failed { status, .. } = &state {
                                    if status == "DuplicateRecord" {
                                        tracing::error!(
                                            hour = %hour_label(hour.hour), pk = %hour.pk,
                                            quantity = hour.quantity,
                                            "BatchMeterUsage answered DuplicateRecord for a \
                                             quantity this worker never sent before: AWS holds \
                                             another quantity for the hour; not resent"
                                        );
                                    }
                                }
                                self.settle_hour(usage, hour, state).await;
                            }
                            None => {
                                self.telemetry.metrics.usage_record_metered("unprocessed");
                                retry_later(usage, &hour);
                            }
                        }
                    }
                }
                MeterResult::Failed(failure) => {
                    if failure.kind == FailureKind::Throttled {
                        // A batch is retried in a later pass, not as a delivery's retry: each call counts in full.
                        usage.limiter.throttled(Call::First);
                    }
                    tracing::warn!(failure = failure.kind.as_str(), detail = %failure.detail,
                        records = part.len(), "BatchMeterUsage failed; the hours are retried");
                    for hour in &part {
                        retry_later(usage, hour);
                    }
                }
                MeterResult::Refused { exception, detail } => {
                    usage.limiter.succeeded();
                    if part.len() > 1 {
                        let mut first = part;
                        let second = first.split_off(first.len() / 2);
                        work.push(second);
                        work.push(first);
                        continue;
                    }
                    for hour in part {
                        let state = HourState::Failed {
                            status: exception.clone(),
                            reason: refusal_reason(&exception).as_str().to_owned(),
                            detail: detail.clone(),
                        };
                        self.settle_hour(usage, hour, state).await;
                    }
                }
            }
        }
    }

    /// Writes the hour's final state over this process's claim, then reports it. A claim lost
    /// meanwhile (the lease lapsed and another task took over) is left to that task.
    async fn settle_hour(&self, usage: &UsageParts, mut hour: Hour, state: HourState) {
        let label = status_label(&state);
        hour.state = state;
        let lease = self.settings.metering.claim_lease_secs as i64 * 1000;
        hour.report_lease = Some((self.holder.clone(), now_millis() + lease));
        match usage.ledger.put(&hour).await {
            Ok(version) => {
                hour.version = version;
                lock(&usage.memory)
                    .retry_at
                    .remove(&(hour.pk.clone(), hour.hour));
                self.telemetry.metrics.usage_record_metered(label);
                self.report(usage, &hour).await;
            }
            Err(StoreError::Conflict) => {
                tracing::warn!(pk = %hour.pk, hour = %hour_label(hour.hour),
                    "the hour's claim was taken over; its new holder reports it");
            }
            Err(e) => {
                tracing::warn!(error = %e, pk = %hour.pk, "store: the answer could not be kept; \
                    the claim lapses and the same record is sent again");
            }
        }
    }

    /// Reports a stored answer: the dead-letters of usage that will never be metered, then the
    /// event, then the pending entry goes. Anything that fails is tried again next pass.
    async fn report(&self, usage: &UsageParts, hour: &Hour) {
        let event = metered_event(hour);
        if let HourState::Failed { reason, detail, .. } = &hour.state {
            if let Err(e) = self.dead_letter_hour(usage, hour, reason, detail).await {
                tracing::warn!(error = %e, pk = %hour.pk, "the hour's usage could not be \
                    dead-lettered yet; next pass");
                return;
            }
        }
        if let Err(e) = self.publishes.submit(TopicEvent::Usage(event)).await {
            tracing::warn!(error = %e, pk = %hour.pk, "the metered event could not be published \
                yet; next pass");
            return;
        }
        match usage.ledger.reported(hour).await {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => tracing::warn!(error = %e, "store: the report could not be recorded"),
        }
    }

    /// Sends every event body of the hour to the usage dead-letter queue, unchanged, with the
    /// reason and the hour's figures.
    async fn dead_letter_hour(
        &self,
        usage: &UsageParts,
        hour: &Hour,
        reason: &str,
        detail: &str,
    ) -> Result<(), String> {
        let Some(lane) = self.lanes.iter().find(|l| l.pipeline == Pipeline::Usage) else {
            return Err("no usage lane".into());
        };
        let reason: DeadLetterReason = reason.parse().map_err(|e| format!("{e}"))?;
        let events = usage.ledger.events(hour).await.map_err(|e| e.to_string())?;
        for stored in events {
            let letter = DeadLetter {
                body: stored.body,
                reason,
                detail: format!(
                    "{detail} (hour {} of {} {}: quantity {} of this event, {} of the hour)",
                    hour_label(hour.hour),
                    hour.subscription,
                    hour.dimension,
                    stored.quantity,
                    hour.quantity
                ),
                event_id: None,
                source_message_id: stored.message_id,
                receive_count: stored.receive_count,
                failed_at: now_rfc3339(),
                // No `mpr.event`: on a letter it tells `dlq redrive` to publish that event instead
                // of sending the body back, and a usage letter is redriven to be counted again.
                // The hour's event is on the topic already.
                event: None,
                event_ref: None,
            };
            lane.queue
                .send_dead_letter(&letter, None)
                .await
                .map_err(|e| e.to_string())?;
            self.telemetry.metrics.dead_lettered(reason.as_str());
        }
        Ok(())
    }

    /// Zero records for the last hour, once it settled: one per granted subscription and zero
    /// dimension that has no usage for it.
    async fn zero_records(&self, usage: &UsageParts, now: i64) -> Result<(), StoreError> {
        let dimensions = &self.settings.metering.zero_dimensions;
        if dimensions.is_empty() {
            return Ok(());
        }
        let Some(hour) = zero_record_hour(now, usage.rules) else {
            return Ok(());
        };
        if lock(&usage.memory).zero_hour == Some(hour) {
            return Ok(());
        }
        for granted in usage.ledger.granted().await? {
            for dimension in dimensions {
                usage.ledger.ensure_zero(&granted, dimension, hour).await?;
            }
        }
        lock(&usage.memory).zero_hour = Some(hour);
        Ok(())
    }
}

fn pending_of(hour: &Hour) -> Pending {
    Pending {
        hour_pk: hour.pk.clone(),
        hour: hour.hour,
        last_event_ms: hour.last_event_ms,
    }
}

/// Leaves the hour unread until `until_ms`, keeping its count of failed tries.
fn wait_until(usage: &UsageParts, hour: &Hour, until_ms: i64) {
    let mut memory = lock(&usage.memory);
    let entry = memory
        .retry_at
        .entry((hour.pk.clone(), hour.hour))
        .or_insert((0, 0));
    entry.0 = entry.0.max(until_ms);
}

/// Backs the hour off with full jitter: 0.5 s doubling per failed try, at most a minute.
fn retry_later(usage: &UsageParts, hour: &Hour) {
    let mut memory = lock(&usage.memory);
    let entry = memory
        .retry_at
        .entry((hour.pk.clone(), hour.hour))
        .or_insert((0, 0));
    let ceiling = Duration::from_millis(500u64.saturating_mul(1 << entry.1.min(7)))
        .min(Duration::from_secs(60));
    entry.1 += 1;
    entry.0 = now_millis() + full_jitter(ceiling).as_millis() as i64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::usage::parse_usage_body;

    const RULES: HourRules = HourRules {
        settle_secs: 300,
        max_delay_secs: 3_600,
        window_secs: 18_000,
    };

    fn hour(state: HourState, reported: bool) -> Hour {
        let event = parse_usage_body(
            r#"{"usageId":"u","customerIdentifier":"c","dimension":"d","quantity":3,
                "timestamp":"2026-12-04T10:15:00Z"}"#,
        )
        .unwrap();
        let mut h = Hour::new("sub#p#c", "p", &event, 1_796_378_400);
        h.state = state;
        h.reported = reported;
        h.last_event_ms = (h.hour + 1_000) * 1000;
        h
    }

    #[test]
    fn the_hour_step_table() {
        let end_ms = (1_796_378_400 + HOUR) * 1000;
        let claimed = |holder: &str, until_ms| HourState::Claimed {
            holder: holder.into(),
            until_ms,
        };
        let metered = HourState::Metered {
            record_id: "r".into(),
        };
        let answered_by = |holder: &str, until_ms| Hour {
            report_lease: Some((holder.to_owned(), until_ms)),
            ..hour(metered.clone(), false)
        };
        #[rustfmt::skip]
        let rows = [
            (hour(HourState::Open, false), end_ms - 1, HourStep::Wait { until_ms: end_ms }),
            // Usage a second before the end: due once it settled, 300 s after that event.
            (Hour { last_event_ms: end_ms - 1_000, ..hour(HourState::Open, false) },
                end_ms + 1, HourStep::Wait { until_ms: end_ms + 299_000 }),
            (hour(HourState::Open, false), end_ms + 1, HourStep::Claim),
            (hour(HourState::Open, false), end_ms + 6 * 3_600_000, HourStep::Expire),
            (hour(claimed("me", end_ms), false), end_ms + 1, HourStep::Claim),
            (hour(claimed("other", end_ms + 10), false), end_ms + 1,
                HourStep::Wait { until_ms: end_ms + 10 }),
            (hour(claimed("other", end_ms), false), end_ms + 1, HourStep::Claim),
            (hour(metered.clone(), false), end_ms, HourStep::Report),
            (answered_by("me", end_ms + 10), end_ms, HourStep::Report),
            // A live answerer reports its own answer; a lapsed one's is reported by anyone.
            (answered_by("other", end_ms + 10), end_ms, HourStep::Wait { until_ms: end_ms + 10 }),
            (answered_by("other", end_ms), end_ms, HourStep::Report),
            (hour(metered, true), end_ms, HourStep::Forget),
        ];
        for (h, now_ms, want) in rows {
            assert_eq!(
                next_step(&h, now_ms, "me", RULES),
                want,
                "{:?} at {now_ms}",
                h.state
            );
        }
    }

    #[test]
    fn answers_and_refusals_map_to_states_and_reasons() {
        assert!(matches!(
            verdict(&RecordOutcome::Success {
                record_id: "r".into()
            }),
            Some(HourState::Metered { .. })
        ));
        assert_eq!(verdict(&RecordOutcome::Unprocessed), None);
        for (outcome, reason) in [
            (
                RecordOutcome::CustomerNotSubscribed,
                "customer_not_subscribed",
            ),
            (RecordOutcome::DuplicateRecord, "duplicate_record"),
        ] {
            let Some(HourState::Failed { reason: r, .. }) = verdict(&outcome) else {
                panic!("{outcome:?}")
            };
            assert_eq!(r, reason);
        }
        for (exception, reason) in [
            (
                "InvalidUsageDimensionException",
                DeadLetterReason::InvalidDimension,
            ),
            (
                "InvalidProductCodeException",
                DeadLetterReason::InvalidProduct,
            ),
            ("InvalidLicenseException", DeadLetterReason::InvalidCustomer),
            (
                "InvalidCustomerIdentifierException",
                DeadLetterReason::InvalidCustomer,
            ),
            ("InvalidTagException", DeadLetterReason::InvalidAllocations),
            (
                "InvalidUsageAllocationsException",
                DeadLetterReason::InvalidAllocations,
            ),
            (
                "TimestampOutOfBoundsException",
                DeadLetterReason::OutsideMeteringWindow,
            ),
        ] {
            assert_eq!(refusal_reason(exception), reason, "{exception}");
        }
    }

    #[test]
    fn an_hour_is_always_sent_as_the_same_record() {
        let h = hour(HourState::Open, false);
        assert_eq!(record_of(&h), record_of(&h.clone()));
        let r = record_of(&h);
        assert_eq!(
            r.timestamp,
            SystemTime::UNIX_EPOCH + Duration::from_secs((h.hour + HOUR - 1) as u64)
        );
        let e = metered_event(&h);
        assert_eq!(e.event_id, metered_event(&h).event_id);
        assert_eq!(e.hour, "2026-12-04T10:00:00Z");
    }
}
