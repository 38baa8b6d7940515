//! What the usage lane keeps in the store (README, "Metering usage", the layout is a contract):
//!
//! ```text
//!   pk = usage#<subscription>#<dimension>   sk = hour#2026-12-04T10            the hour's total
//!   pk = usage#<subscription>#<dimension>   sk = batch#2026-12-04T10#<version> the events added
//!   pk = usage-pending                      sk = 2026-12-04T10#<hour's pk>     not reported yet
//! ```
//!
//! `<subscription>` is `sub#<licenseArn>`, or `sub#<productCode>#<customerIdentifier>` for legacy
//! customers (the registry's own key). An hour moves through
//!
//! ```text
//!   open ──claim──▶ claimed ──answer──▶ metered | failed ──report──▶ (pending entry deleted)
//!                    │  ▲
//!                    └──┘ a dead holder's lease lapsed: taken over, the same record sent again
//! ```
//!
//! Events are added many at a time, one atomic group per write, which may cover many
//! subscriptions' dimensions on the embedded store and one on DynamoDB (`worker::usage::count`
//! says why; the counter takes whatever events wait, within [`MAX_BATCH_EVENTS`],
//! [`MAX_BATCH_BODY_BYTES`] and [`MAX_BATCH_HOURS`]): for each hour they go to, the hour's new
//! total (on the version read, so concurrent writers never lose an update) and one `batch#` item
//! (created with that version, so it is absent) holding the events' usage ids and bodies (for
//! dead-letters, byte-identical); the pending entry when the hour is new. The batch items are the
//! idempotency markers: a usage id is counted once in its subscription and dimension, because a
//! writer reads the batches of the hours an event could be in before it adds it, and the version
//! condition fails if anyone added since (refusing the whole group, every partition in it). Only
//! an `open` hour takes usage: once claimed its quantity is frozen, since what was sent must be
//! what is sent again. If the process dies just before the group, nothing of it was counted and
//! its messages (none deleted yet) come back; just after it, the redeliveries find their usage ids
//! in the batches and are deleted without counting.
//!
//! An hour's answer is written before it is reported (write-ahead): the `metered`/`failed` state
//! outlives the process, and its answerer reports it (the `marketplace.usage.metered` event, the
//! dead-letters) and only then deletes the pending entry; a pass of another task reports it only
//! once the answerer's lease lapsed (it died between the two). A holder killed while its call is in
//! flight leaves its claim; the task that takes it over sends the identical record, which AWS
//! answers with the same MeteringRecordId: nothing is billed twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::{now_millis, Expect, Item, Store, StoreError, Write};
use crate::contract::usage::{Allocation, UsageCustomer, UsageEvent};
use crate::worker::usage::schedule::{hour_label, parse_hour_label};

/// The partition of the pending entries: one query lists every hour not reported yet.
pub const PENDING_PK: &str = "usage-pending";
/// Hours and event bodies are kept this long (for `usage show` and the dead-letters).
pub const HOUR_TTL_SECS: i64 = 40 * 24 * 3600;
/// The most events one write adds (each batch item stays well inside DynamoDB's 400 KB item).
pub const MAX_BATCH_EVENTS: usize = 200;
/// The most bytes of bodies one write adds (across its partitions: the whole group stays well
/// inside DynamoDB's 4 MB transaction).
pub const MAX_BATCH_BODY_BYTES: usize = 256 * 1024;
/// The most hours one write touches, counted across all the partitions it covers (three items each
/// at most: DynamoDB's 100-item transaction).
pub const MAX_BATCH_HOURS: usize = 30;

pub fn hour_pk(subscription: &str, dimension: &str) -> String {
    format!("usage#{subscription}#{dimension}")
}

pub fn hour_sk(hour: i64) -> String {
    format!("hour#{}", hour_label(hour))
}

/// The batch that took the hour to `version`.
fn batch_sk(hour: i64, version: u64) -> String {
    format!("{}{version:010}", batch_prefix(hour))
}

fn batch_prefix(hour: i64) -> String {
    format!("batch#{}#", hour_label(hour))
}

fn pending_sk(pk: &str, hour: i64) -> String {
    format!("{}#{pk}", hour_label(hour))
}

/// Where an hour stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HourState {
    /// Takes usage.
    Open,
    /// A task is metering it; its quantity is frozen.
    Claimed { holder: String, until_ms: i64 },
    /// BatchMeterUsage accepted it.
    Metered { record_id: String },
    /// It will never be metered: `status` is what AWS answered (or `OutsideMeteringWindow`),
    /// `reason` the dead-letter reason of its usage.
    Failed {
        status: String,
        reason: String,
        detail: String,
    },
}

impl HourState {
    pub fn name(&self) -> &'static str {
        match self {
            HourState::Open => "open",
            HourState::Claimed { .. } => "claimed",
            HourState::Metered { .. } => "metered",
            HourState::Failed { .. } => "failed",
        }
    }
}

/// One hour of one subscription's dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hour {
    pub pk: String,
    pub version: u64,
    pub subscription: String,
    pub dimension: String,
    pub product_code: String,
    pub customer: UsageCustomer,
    /// Unix seconds of the hour's start.
    pub hour: i64,
    pub quantity: i64,
    pub events: u64,
    /// When its last event was added (epoch ms; 0 for a zero record).
    pub last_event_ms: i64,
    /// Quantity by tag set (sorted tags), when any event had allocations; the untagged rest of
    /// the quantity is an allocation without tags.
    pub allocations: BTreeMap<Vec<(String, String)>, i64>,
    /// The hours whose late usage was added here.
    pub carried_from: Vec<i64>,
    pub state: HourState,
    /// The answer was reported (event published, letters sent).
    pub reported: bool,
    /// Who stored the answer and until when (epoch ms) reporting it is theirs alone: the task
    /// that metered an hour reports it; another task does only once that lease lapsed (its
    /// holder died between the answer and the report), so a live fleet publishes one event.
    pub report_lease: Option<(String, i64)>,
}

impl Hour {
    /// A new, empty, open hour for `event`'s subscription and dimension.
    pub fn new(subscription: &str, product: &str, event: &UsageEvent, hour: i64) -> Self {
        Hour {
            pk: hour_pk(subscription, &event.dimension),
            version: 0,
            subscription: subscription.to_owned(),
            dimension: event.dimension.clone(),
            product_code: product.to_owned(),
            customer: event.customer.clone(),
            hour,
            quantity: 0,
            events: 0,
            last_event_ms: 0,
            allocations: BTreeMap::new(),
            carried_from: Vec::new(),
            state: HourState::Open,
            reported: false,
            report_lease: None,
        }
    }

    pub fn sk(&self) -> String {
        hour_sk(self.hour)
    }

    pub fn is_open(&self) -> bool {
        self.state == HourState::Open
    }

    /// Adds one event's quantity (and allocations); `false` when the total would no longer fit a
    /// record's quantity.
    pub fn add(&mut self, event: &UsageEvent, carried_from: Option<i64>) -> bool {
        let Some(total) = self.quantity.checked_add(event.quantity) else {
            return false;
        };
        if total > crate::contract::usage::MAX_QUANTITY {
            return false;
        }
        self.quantity = total;
        self.events += 1;
        self.last_event_ms = now_millis();
        for Allocation { quantity, tags } in &event.allocations {
            *self.allocations.entry(tags.clone()).or_default() += quantity;
        }
        if event.allocations.is_empty() && !self.allocations.is_empty() {
            *self.allocations.entry(Vec::new()).or_default() += event.quantity;
        }
        if let Some(from) = carried_from {
            if !self.carried_from.contains(&from) {
                self.carried_from.push(from);
            }
        }
        true
    }

    /// The allocations the record carries: none when no event had any.
    pub fn record_allocations(&self) -> Vec<Allocation> {
        if self.allocations.is_empty() {
            return Vec::new();
        }
        let tagged: i64 = self.allocations.values().sum();
        let mut out: Vec<Allocation> = self
            .allocations
            .iter()
            .map(|(tags, quantity)| Allocation {
                quantity: *quantity,
                tags: tags.clone(),
            })
            .collect();
        // Events before the first one with allocations were untagged.
        if tagged < self.quantity {
            match out.iter_mut().find(|a| a.tags.is_empty()) {
                Some(untagged) => untagged.quantity += self.quantity - tagged,
                None => out.push(Allocation {
                    quantity: self.quantity - tagged,
                    tags: Vec::new(),
                }),
            }
        }
        out
    }

    fn to_item(&self) -> Item {
        let mut item = Item::new(&self.pk, self.sk())
            .with("subscription", self.subscription.as_str())
            .with("dimension", self.dimension.as_str())
            .with("productCode", self.product_code.as_str())
            .with("hour", hour_label(self.hour))
            .with("quantity", self.quantity)
            .with("events", self.events)
            .with("lastEventAt", self.last_event_ms)
            .with("state", self.state.name())
            .with("reported", self.reported)
            .with(
                "carriedFrom",
                Value::from(
                    self.carried_from
                        .iter()
                        .map(|h| hour_label(*h))
                        .collect::<Vec<_>>(),
                ),
            )
            .expiring_at(self.hour + HOUR_TTL_SECS);
        item = match &self.customer {
            UsageCustomer::Account {
                aws_account_id,
                license_arn,
            } => item
                .with("customerAWSAccountId", aws_account_id.as_str())
                .with("licenseArn", license_arn.as_str()),
            UsageCustomer::Legacy {
                customer_identifier,
            } => item.with("customerIdentifier", customer_identifier.as_str()),
        };
        if !self.allocations.is_empty() {
            let list: Vec<Value> = self
                .allocations
                .iter()
                .map(|(tags, q)| {
                    let tags: serde_json::Map<String, Value> = tags
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                        .collect();
                    json!({"quantity": q, "tags": tags})
                })
                .collect();
            item = item.with("allocations", Value::from(list));
        }
        match &self.state {
            HourState::Open => item,
            HourState::Claimed { holder, until_ms } => item
                .with("holder", holder.as_str())
                .with("leaseUntil", *until_ms),
            HourState::Metered { record_id } => self
                .with_report_lease(item)
                .with("status", "Success")
                .with("meteringRecordId", record_id.as_str()),
            HourState::Failed {
                status,
                reason,
                detail,
            } => self
                .with_report_lease(item)
                .with("status", status.as_str())
                .with("reason", reason.as_str())
                .with("detail", detail.as_str()),
        }
    }

    /// An answered hour keeps its answerer as `holder`/`leaseUntil`, the claim's attributes.
    fn with_report_lease(&self, item: Item) -> Item {
        match &self.report_lease {
            Some((holder, until_ms)) => item
                .with("holder", holder.as_str())
                .with("leaseUntil", *until_ms),
            None => item,
        }
    }

    /// The hour an item holds; `None` for an item this version cannot read.
    pub fn from_item(item: &Item) -> Option<Self> {
        let text = |name: &str| item.str(name).map(str::to_owned);
        let customer = match (
            text("customerAWSAccountId"),
            text("licenseArn"),
            text("customerIdentifier"),
        ) {
            (Some(aws_account_id), Some(license_arn), _) => UsageCustomer::Account {
                aws_account_id,
                license_arn,
            },
            (_, _, Some(customer_identifier)) => UsageCustomer::Legacy {
                customer_identifier,
            },
            _ => return None,
        };
        let state_name = item.str("state")?;
        let state = match state_name {
            "open" => HourState::Open,
            "claimed" => HourState::Claimed {
                holder: text("holder")?,
                until_ms: item.i64("leaseUntil")?,
            },
            "metered" => HourState::Metered {
                record_id: text("meteringRecordId")?,
            },
            "failed" => HourState::Failed {
                status: text("status")?,
                reason: text("reason")?,
                detail: text("detail").unwrap_or_default(),
            },
            _ => return None,
        };
        let mut allocations = BTreeMap::new();
        if let Some(Value::Array(list)) = item.attrs.get("allocations") {
            for entry in list {
                let q = entry.get("quantity")?.as_i64()?;
                let mut tags: Vec<(String, String)> = entry
                    .get("tags")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                tags.sort();
                allocations.insert(tags, q);
            }
        }
        let carried_from = match item.attrs.get("carriedFrom") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| parse_hour_label(v.as_str()?))
                .collect(),
            _ => Vec::new(),
        };
        Some(Hour {
            pk: item.pk.clone(),
            version: item.version,
            subscription: text("subscription")?,
            dimension: text("dimension")?,
            product_code: text("productCode")?,
            customer,
            hour: parse_hour_label(item.sk.strip_prefix("hour#")?)?,
            quantity: item.i64("quantity")?,
            events: item.i64("events").unwrap_or(0).max(0) as u64,
            last_event_ms: item.i64("lastEventAt").unwrap_or(0),
            allocations,
            carried_from,
            state,
            reported: item
                .attrs
                .get("reported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            report_lease: match state_name {
                "metered" | "failed" => text("holder").zip(item.i64("leaseUntil")),
                _ => None,
            },
        })
    }

    fn pending_item(&self) -> Item {
        Item::new(PENDING_PK, pending_sk(&self.pk, self.hour))
            .with("hourPk", self.pk.as_str())
            .with("hourSk", self.sk())
            .with("lastEventAt", self.last_event_ms)
    }

    fn expect(&self) -> Expect {
        if self.version == 0 {
            Expect::Absent
        } else {
            Expect::Version(self.version)
        }
    }
}

/// One event's body as it came off the queue, kept under its hour for the dead-letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub usage_id: String,
    pub body: String,
    pub quantity: i64,
    pub message_id: String,
    pub receive_count: u32,
    /// The event's own hour, when it was carried to this one.
    pub carried_from: Option<i64>,
}

impl StoredEvent {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "usageId": self.usage_id,
            "body": self.body,
            "quantity": self.quantity,
            "messageId": self.message_id,
            "receiveCount": self.receive_count,
        });
        if let Some(from) = self.carried_from {
            v["carriedFrom"] = Value::from(hour_label(from));
        }
        v
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(StoredEvent {
            usage_id: v.get("usageId")?.as_str()?.to_owned(),
            body: v.get("body")?.as_str()?.to_owned(),
            quantity: v.get("quantity").and_then(Value::as_i64).unwrap_or(0),
            message_id: v
                .get("messageId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            receive_count: v
                .get("receiveCount")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .min(u32::MAX as u64) as u32,
            carried_from: v
                .get("carriedFrom")
                .and_then(Value::as_str)
                .and_then(parse_hour_label),
        })
    }
}

/// An hour not reported yet, as the pending entry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub hour_pk: String,
    pub hour: i64,
    /// A hint (the hour item is authoritative): when an event was last added, epoch ms.
    pub last_event_ms: i64,
}

/// A subscription the registry shows granted, for zero records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub subscription: String,
    pub product_code: String,
    pub customer: UsageCustomer,
}

/// One subscription's dimension as this process last read it: its hours, and the usage ids
/// counted in the hours whose batches it read.
#[derive(Debug, Clone, Default)]
pub struct Partition {
    pub hours: BTreeMap<i64, Hour>,
    /// Each usage id read in a batch, and the hour the batch is of.
    counted: HashMap<String, i64>,
    batches_read: HashSet<i64>,
    /// Hours before this one were forgotten ([`Partition::forget_before`]): an event of one of
    /// them needs the partition read afresh.
    forgotten_before: i64,
}

impl Partition {
    /// Whether `usage_id` is in a batch read so far, of an hour that still stands for it. An hour
    /// that `failed` does not: its usage was dead-lettered, never billed, and comes back only
    /// when an operator redrives the letter (`dlq redrive --usage`), to be counted again (in the
    /// earliest open hour, as carried usage).
    pub fn is_counted(&self, usage_id: &str) -> bool {
        self.counted
            .get(usage_id)
            .is_some_and(|hour| self.stands(*hour))
    }

    /// The hour `usage_id` is counted in, if it is.
    pub fn counted_in(&self, usage_id: &str) -> Option<i64> {
        self.counted.get(usage_id).copied()
    }

    fn stands(&self, hour: i64) -> bool {
        !matches!(
            self.hours.get(&hour).map(|h| &h.state),
            Some(HourState::Failed { .. })
        )
    }

    /// Notes `usage_id` as counted in `hour`, unless it is counted in an hour that stands.
    fn note(&mut self, usage_id: String, hour: i64) {
        if !self.is_counted(&usage_id) {
            self.counted.insert(usage_id, hour);
        }
    }

    /// The hours at or after `hour` whose batches are not read yet: an event of `hour` may be in
    /// any of them (its own, or a later one it was carried to).
    pub fn unread_from(&self, hour: i64) -> Vec<i64> {
        self.hours
            .range(hour..)
            .map(|(h, _)| *h)
            .filter(|h| !self.batches_read.contains(h))
            .collect()
    }

    /// Whether what is remembered covers an event of `hour` (else the partition is read afresh).
    pub fn remembers(&self, hour: i64) -> bool {
        hour >= self.forgotten_before
    }

    /// Forgets the hours before `hour` and the usage ids counted in them, when it holds any: a
    /// partition written for weeks would otherwise remember every usage id it ever counted. An
    /// event of a forgotten hour (older than the metering window, so rare) reads the partition
    /// afresh, which finds whatever the store still holds.
    pub fn forget_before(&mut self, hour: i64) {
        if self.hours.first_key_value().is_none_or(|(h, _)| *h >= hour) {
            return;
        }
        self.hours = self.hours.split_off(&hour);
        self.batches_read.retain(|h| *h >= hour);
        self.counted.retain(|_, h| *h >= hour);
        self.forgotten_before = self.forgotten_before.max(hour);
    }

    /// Records a write that succeeded.
    pub fn written(&mut self, additions: Vec<Addition>) {
        for a in additions {
            let mut hour = a.after;
            hour.version = a.before.version + 1;
            let at = hour.hour;
            self.batches_read.insert(at);
            self.hours.insert(at, hour);
            for e in a.events {
                self.note(e.usage_id, at);
            }
        }
    }
}

/// What one write adds to one hour: the hour as read (version 0: new), as it will be, and the
/// events that make the difference.
#[derive(Debug, Clone)]
pub struct Addition {
    pub before: Hour,
    pub after: Hour,
    pub events: Vec<StoredEvent>,
}

/// The usage lane's use of the store.
#[derive(Debug, Clone)]
pub struct UsageLedger {
    store: Store,
}

impl UsageLedger {
    pub fn new(store: Store) -> Self {
        UsageLedger { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One hour, read consistently.
    pub async fn hour(&self, pk: &str, hour: i64) -> Result<Option<Hour>, StoreError> {
        match self.store.get(pk, &hour_sk(hour)).await? {
            None => Ok(None),
            Some(item) => readable(&item).map(Some),
        }
    }

    /// Every hour of one subscription's dimension, oldest first.
    pub async fn hours(&self, pk: &str) -> Result<Vec<Hour>, StoreError> {
        let items = self.store.query(pk, "hour#").await?;
        items.iter().map(readable).collect()
    }

    /// The hours of `pk`, without their batches (read when an event needs them). A read only.
    pub async fn partition(&self, pk: &str) -> Result<Partition, StoreError> {
        let hours = self.hours(pk).await?;
        Ok(Partition {
            hours: hours.into_iter().map(|h| (h.hour, h)).collect(),
            ..Partition::default()
        })
    }

    /// Reads the batches of `hours` into `partition`. A read only.
    pub async fn read_batches(
        &self,
        partition: &mut Partition,
        pk: &str,
        hours: &[i64],
    ) -> Result<(), StoreError> {
        for hour in hours {
            for item in self.store.query(pk, &batch_prefix(*hour)).await? {
                for event in batch_events(&item) {
                    partition.note(event.usage_id, *hour);
                }
            }
            partition.batches_read.insert(*hour);
        }
        Ok(())
    }

    /// Writes `additions` (of one partition or many) in one atomic group: each hour's new total
    /// over the version read, its batch of events, and the pending entry of a new hour.
    /// `Err(Conflict)` when any of the hours changed since it was read (another writer added to
    /// it, or claimed it): read again and plan again.
    ///
    /// Dies just before: nothing was written, the messages come back and are counted then. Dies
    /// just after: all of it was written; the redeliveries find their usage ids in the batches and
    /// are deleted.
    pub async fn add(&self, additions: &[Addition]) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(additions.len() * 3);
        for a in additions {
            let events: Vec<Value> = a.events.iter().map(StoredEvent::to_json).collect();
            writes.push(Write::Put {
                item: Item::new(&a.after.pk, batch_sk(a.after.hour, a.before.version + 1))
                    .with("events", Value::from(events))
                    .expiring_at(a.after.hour + HOUR_TTL_SECS),
                expect: Expect::Absent,
            });
            if a.before.version == 0 {
                writes.push(Write::Put {
                    item: a.after.pending_item(),
                    expect: Expect::Any,
                });
            }
            writes.push(Write::Put {
                item: a.after.to_item(),
                expect: a.before.expect(),
            });
        }
        self.store.write(writes).await
    }

    /// Creates `hour` with quantity 0 (a zero record) unless it exists. Dies before: the next
    /// pass creates it. After: it is an ordinary hour.
    pub async fn ensure_zero(
        &self,
        granted: &Granted,
        dimension: &str,
        hour: i64,
    ) -> Result<(), StoreError> {
        let h = Hour {
            pk: hour_pk(&granted.subscription, dimension),
            version: 0,
            subscription: granted.subscription.clone(),
            dimension: dimension.to_owned(),
            product_code: granted.product_code.clone(),
            customer: granted.customer.clone(),
            hour,
            quantity: 0,
            events: 0,
            last_event_ms: 0,
            allocations: BTreeMap::new(),
            carried_from: Vec::new(),
            state: HourState::Open,
            reported: false,
            report_lease: None,
        };
        let writes = vec![
            Write::Put {
                item: h.to_item(),
                expect: Expect::Absent,
            },
            Write::Put {
                item: h.pending_item(),
                expect: Expect::Any,
            },
        ];
        match self.store.write(writes).await {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `hour` in its new state over the version it was read at: a claim, a renewal, an
    /// answer. `Err(Conflict)` when anyone wrote it since (an event, another task's claim).
    ///
    /// A claim: dies before, the hour stays open or with the lapsing claim; dies after, the claim
    /// lapses and another task takes it over (sending the same record). An answer: dies before,
    /// the claim lapses and the record is sent again (the same MeteringRecordId); dies after, the
    /// next pass reports it.
    pub async fn put(&self, hour: &Hour) -> Result<u64, StoreError> {
        self.store.put(hour.to_item(), hour.expect()).await?;
        Ok(hour.version + 1)
    }

    /// Marks the hour reported and deletes its pending entry, together. Dies before: the next
    /// pass reports it again (the same eventId; a letter may go twice). After: done.
    pub async fn reported(&self, hour: &Hour) -> Result<(), StoreError> {
        let mut done = hour.clone();
        done.reported = true;
        self.store
            .write(vec![
                Write::Put {
                    item: done.to_item(),
                    expect: hour.expect(),
                },
                Write::Delete {
                    pk: PENDING_PK.to_owned(),
                    sk: pending_sk(&hour.pk, hour.hour),
                    expect: Expect::Any,
                },
            ])
            .await
    }

    /// Deletes a pending entry whose hour is gone or reported (left by a pass that died).
    pub async fn forget_pending(&self, pending: &Pending) -> Result<(), StoreError> {
        self.store
            .write(vec![Write::Delete {
                pk: PENDING_PK.to_owned(),
                sk: pending_sk(&pending.hour_pk, pending.hour),
                expect: Expect::Any,
            }])
            .await
    }

    /// Every hour not reported yet. A read only.
    pub async fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        let items = self.store.query(PENDING_PK, "").await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let hour_pk = item.str("hourPk")?.to_owned();
                let hour = parse_hour_label(item.str("hourSk")?.strip_prefix("hour#")?)?;
                Some(Pending {
                    hour_pk,
                    hour,
                    last_event_ms: item.i64("lastEventAt").unwrap_or(0),
                })
            })
            .collect())
    }

    /// The bodies of the events added to `hour`. A read only.
    pub async fn events(&self, hour: &Hour) -> Result<Vec<StoredEvent>, StoreError> {
        let items = self.store.query(&hour.pk, &batch_prefix(hour.hour)).await?;
        Ok(items.iter().flat_map(batch_events).collect())
    }

    /// The subscriptions the registry shows granted (items `pk = sub#…`, `sk = subscription`,
    /// `access = grant`). A full scan: once an hour, for zero records.
    pub async fn granted(&self) -> Result<Vec<Granted>, StoreError> {
        let items = self.store.scan("sub#").await?;
        Ok(items
            .iter()
            .filter(|i| i.sk == "subscription" && i.str("access") == Some("grant"))
            .filter_map(|i| {
                let product_code = i.str("productCode")?.to_owned();
                let customer = match (
                    i.str("customerAWSAccountId"),
                    i.str("licenseArn"),
                    i.str("customerIdentifier"),
                ) {
                    (Some(account), Some(license), _) => UsageCustomer::Account {
                        aws_account_id: account.to_owned(),
                        license_arn: license.to_owned(),
                    },
                    (_, _, Some(customer)) => UsageCustomer::Legacy {
                        customer_identifier: customer.to_owned(),
                    },
                    _ => return None,
                };
                Some(Granted {
                    subscription: i.pk.clone(),
                    product_code,
                    customer,
                })
            })
            .collect())
    }

    /// Every hour of the subscriptions whose key contains `needle` (a license ARN, an account id
    /// or a customer identifier), for `usage show`. A full scan.
    pub async fn hours_of(&self, needle: &str) -> Result<Vec<Hour>, StoreError> {
        let items = self.store.scan("usage#").await?;
        let mut out = Vec::new();
        for item in items.iter().filter(|i| i.sk.starts_with("hour#")) {
            let hour = readable(item)?;
            let matches = hour.subscription.contains(needle)
                || matches!(&hour.customer, UsageCustomer::Account { aws_account_id, .. } if aws_account_id == needle);
            if matches {
                out.push(hour);
            }
        }
        Ok(out)
    }
}

fn batch_events(item: &Item) -> Vec<StoredEvent> {
    let Some(Value::Array(events)) = item.attrs.get("events") else {
        return Vec::new();
    };
    events.iter().filter_map(StoredEvent::from_json).collect()
}

fn readable(item: &Item) -> Result<Hour, StoreError> {
    Hour::from_item(item).ok_or_else(|| {
        StoreError::Misconfigured(format!(
            "usage item {} {} has a shape this version cannot read",
            item.pk, item.sk
        ))
    })
}
