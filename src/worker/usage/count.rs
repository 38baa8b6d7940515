//! Counting usage events into their hours, many at a time (group commit). A SaaS application may
//! send one event per API request, so one store write per event would make the store the bound:
//! instead, the deliveries of one subscription's dimension queue their events, and whichever
//! delivery holds that partition's writer adds everything queued in one atomic write (the hours'
//! totals and one batch item per hour, README "The store"). In one process a partition has one
//! writer, so its writes do not conflict; across tasks the hour's version condition keeps them
//! honest. Where each event goes is [`plan`], pure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::contract::usage::UsageEvent;
use crate::store::usage::{
    hour_pk, Addition, Hour, Partition, StoredEvent, UsageLedger, MAX_BATCH_BODY_BYTES,
    MAX_BATCH_EVENTS, MAX_BATCH_HOURS,
};
use crate::store::StoreError;
use crate::worker::lock;
use crate::worker::retry::full_jitter;
use crate::worker::usage::schedule::{hour_of, place, HourRules, HourView, Placement};
use crate::worker::usage::CountStep;

/// How often a write is planned again after losing to another task's writer of the same hours
/// before its events are handed back.
const MAX_CONFLICTS: u32 = 40;
/// Partitions whose state is remembered between writes; past this, idle ones are forgotten (read
/// again when their next event comes).
const REMEMBERED_PARTITIONS: usize = 4_096;

/// One event waiting to be counted.
pub struct Incoming {
    pub event: UsageEvent,
    pub product: String,
    pub stored: StoredEvent,
}

struct Waiting {
    incoming: Incoming,
    reply: oneshot::Sender<CountStep>,
}

/// One partition's queue and writer.
#[derive(Default)]
struct Slot {
    waiting: Mutex<Vec<Waiting>>,
    /// Held while writing; holds what this process knows of the partition (`None`: read it).
    writer: tokio::sync::Mutex<Option<Partition>>,
}

/// The usage lane's counter: one slot per partition (subscription and dimension).
#[derive(Default)]
pub struct Counter {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Counter {
    /// Counts one event: queues it on its partition, then writes the queue (with whatever others
    /// queued meanwhile) unless another delivery's write already took it.
    pub async fn count(
        &self,
        ledger: &UsageLedger,
        rules: HourRules,
        incoming: Incoming,
    ) -> CountStep {
        let pk = hour_pk(
            &incoming.event.subscription(&incoming.product),
            &incoming.event.dimension,
        );
        let slot = {
            let mut slots = lock(&self.slots);
            if slots.len() >= REMEMBERED_PARTITIONS {
                // Forget partitions nobody is counting into (only this map holds them).
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            slots.entry(pk.clone()).or_default().clone()
        };
        let (reply, answer) = oneshot::channel();
        lock(&slot.waiting).push(Waiting { incoming, reply });
        {
            let mut partition = slot.writer.lock().await;
            loop {
                let batch = take_batch(&mut lock(&slot.waiting));
                if batch.is_empty() {
                    break;
                }
                write_batch(ledger, rules, &pk, &mut partition, batch).await;
            }
        }
        answer
            .await
            .unwrap_or_else(|_| CountStep::Failed("the counting write was abandoned".into()))
    }
}

/// The oldest waiting events that fit one write.
fn take_batch(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let mut hours = HashSet::new();
    let mut bytes = 0;
    let mut n = 0;
    for w in waiting.iter() {
        let hour = hour_of(w.incoming.event.timestamp.timestamp());
        let new_hour = !hours.contains(&hour);
        if n > 0
            && (n == MAX_BATCH_EVENTS
                || bytes + w.incoming.stored.body.len() > MAX_BATCH_BODY_BYTES
                || (new_hour && hours.len() == MAX_BATCH_HOURS))
        {
            break;
        }
        hours.insert(hour);
        bytes += w.incoming.stored.body.len();
        n += 1;
    }
    waiting.drain(..n).collect()
}

/// Writes one batch, reading the partition again and planning again while other tasks' writes
/// win; answers every waiting delivery.
async fn write_batch(
    ledger: &UsageLedger,
    rules: HourRules,
    pk: &str,
    known: &mut Option<Partition>,
    batch: Vec<Waiting>,
) {
    let (incoming, replies): (Vec<Incoming>, Vec<_>) =
        batch.into_iter().map(|w| (w.incoming, w.reply)).unzip();
    let steps = write_planned(ledger, rules, pk, known, &incoming).await;
    for (reply, step) in replies.into_iter().zip(steps) {
        // A delivery that stopped waiting (its task ended) is answered by the redelivery.
        let _ = reply.send(step);
    }
}

async fn write_planned(
    ledger: &UsageLedger,
    rules: HourRules,
    pk: &str,
    known: &mut Option<Partition>,
    incoming: &[Incoming],
) -> Vec<CountStep> {
    let failed = |e: StoreError| vec![CountStep::Failed(e.to_string()); incoming.len()];
    let mut fresh = false;
    for _ in 0..MAX_CONFLICTS {
        let partition = match known {
            Some(p) => p,
            None => match ledger.partition(pk).await {
                Ok(p) => {
                    fresh = true;
                    known.insert(p)
                }
                Err(e) => return failed(e),
            },
        };
        // Every hour an event could already be counted in is read before the plan.
        let oldest = incoming
            .iter()
            .map(|i| hour_of(i.event.timestamp.timestamp()))
            .min()
            .unwrap_or_default();
        let unread = partition.unread_from(oldest);
        if let Err(e) = ledger.read_batches(partition, pk, &unread).await {
            *known = None;
            return failed(e);
        }
        if !fresh {
            // A remembered hour may have failed since (its usage dead-lettered, and now
            // redriven): an event is dropped as counted only if its hour is as remembered.
            // Redeliveries are rare, so these reads are too.
            match remembered_hours_hold(ledger, pk, partition, incoming).await {
                Ok(true) => {}
                Ok(false) => {
                    *known = None;
                    continue;
                }
                Err(e) => {
                    *known = None;
                    return failed(e);
                }
            }
        }
        let (steps, additions) = plan(partition, incoming, crate::store::now_secs(), rules);
        if additions.is_empty() {
            return steps;
        }
        match ledger.add(&additions).await {
            Ok(()) => {
                partition.written(additions);
                return steps;
            }
            Err(StoreError::Conflict) => {
                // Another task wrote one of the hours: read the partition again.
                *known = None;
                tokio::time::sleep(full_jitter(Duration::from_millis(20))).await;
            }
            Err(e) => {
                *known = None;
                return failed(e);
            }
        }
    }
    vec![
        CountStep::Failed(format!(
            "{MAX_CONFLICTS} writes in a row lost to other writers of the hour"
        ));
        incoming.len()
    ]
}

/// Whether the hours the batch's already-counted events are counted in are, in the store, as
/// `partition` remembers them (same version).
async fn remembered_hours_hold(
    ledger: &UsageLedger,
    pk: &str,
    partition: &Partition,
    incoming: &[Incoming],
) -> Result<bool, StoreError> {
    let hours: HashSet<i64> = incoming
        .iter()
        .filter_map(|i| partition.counted_in(&i.event.usage_id))
        .collect();
    for hour in hours {
        let remembered = partition.hours.get(&hour).map(|h| h.version);
        let stored = ledger.hour(pk, hour).await?.map(|h| h.version);
        if stored != remembered {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where each event of a batch goes, given what the store shows of its partition at `now`: the
/// step each comes to if the write succeeds, and the write. Pure (bar the clock the hours stamp).
pub fn plan(
    partition: &Partition,
    incoming: &[Incoming],
    now: i64,
    rules: HourRules,
) -> (Vec<CountStep>, Vec<Addition>) {
    let mut additions: BTreeMap<i64, Addition> = BTreeMap::new();
    let mut in_batch: HashSet<&str> = HashSet::new();
    let mut steps = Vec::with_capacity(incoming.len());
    for i in incoming {
        let usage_id = i.event.usage_id.as_str();
        if partition.is_counted(usage_id) || in_batch.contains(usage_id) {
            steps.push(CountStep::AlreadyCounted);
            continue;
        }
        // Hours absent from the partition are new, so open; an hour this batch creates too.
        let views: Vec<HourView> = partition
            .hours
            .values()
            .map(|h| HourView {
                hour: h.hour,
                open: h.is_open(),
            })
            .collect();
        let timestamp = i.event.timestamp.timestamp();
        let (target, carried_from) = match place(timestamp, now, &views, rules) {
            Placement::OutsideWindow { detail } => {
                steps.push(CountStep::OutsideWindow { detail });
                continue;
            }
            Placement::Hour { hour, carried_from } => (hour, carried_from),
        };
        let addition = additions.entry(target).or_insert_with(|| {
            let before = partition.hours.get(&target).cloned().unwrap_or_else(|| {
                Hour::new(
                    &i.event.subscription(&i.product),
                    &i.product,
                    &i.event,
                    target,
                )
            });
            Addition {
                after: before.clone(),
                before,
                events: Vec::new(),
            }
        });
        if !addition.after.add(&i.event, carried_from) {
            steps.push(CountStep::Failed(format!(
                "the hour would exceed a record's largest quantity ({})",
                crate::contract::usage::MAX_QUANTITY
            )));
            continue;
        }
        let mut stored = i.stored.clone();
        stored.carried_from = carried_from;
        addition.events.push(stored);
        in_batch.insert(usage_id);
        steps.push(CountStep::Counted { carried_from });
    }
    (steps, additions.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::usage::parse_usage_body;
    use crate::store::usage::HourState;
    use crate::worker::usage::schedule::HOUR;

    const NOW: i64 = 1_796_378_400; // 2026-12-04T10:00:00Z

    fn rules() -> HourRules {
        HourRules {
            settle_secs: 300,
            max_delay_secs: 3600,
            window_secs: 6 * HOUR,
        }
    }

    fn incoming(usage_id: &str, ago_secs: i64, quantity: i64) -> Incoming {
        let ts = chrono::DateTime::from_timestamp(NOW - ago_secs, 0).unwrap();
        let body = format!(
            r#"{{"usageId":"{usage_id}","productCode":"prod-a","customerAWSAccountId":"111122223333",
            "licenseArn":"arn:aws:license-manager::111122223333:license:l-1","dimension":"api",
            "quantity":{quantity},"timestamp":"{}"}}"#,
            ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let event = parse_usage_body(&body).expect("valid");
        Incoming {
            stored: StoredEvent {
                usage_id: usage_id.into(),
                body,
                quantity,
                message_id: format!("m-{usage_id}"),
                receive_count: 1,
                carried_from: None,
            },
            event,
            product: "prod-a".into(),
        }
    }

    #[test]
    fn one_write_adds_a_batch_per_hour_and_counts_a_usage_id_once() {
        let batch = vec![
            incoming("a", HOUR + 60, 2),
            incoming("b", HOUR + 120, 3),
            incoming("a", HOUR + 60, 2), // the same event twice in one receive
            incoming("c", 2 * HOUR + 60, 5),
        ];
        let (steps, additions) = plan(&Partition::default(), &batch, NOW, rules());
        assert_eq!(
            steps,
            vec![
                CountStep::Counted { carried_from: None },
                CountStep::Counted { carried_from: None },
                CountStep::AlreadyCounted,
                CountStep::Counted { carried_from: None },
            ]
        );
        let totals: Vec<(i64, i64, usize)> = additions
            .iter()
            .map(|a| (a.after.hour, a.after.quantity, a.events.len()))
            .collect();
        assert_eq!(
            totals,
            vec![(NOW - 3 * HOUR, 5, 1), (NOW - 2 * HOUR, 5, 2)],
            "one addition per hour, oldest first, with the summed quantity"
        );
        // Once written, a resend of any of them is already counted.
        let mut partition = Partition::default();
        partition.written(additions);
        let (steps, additions) = plan(&partition, &[incoming("b", HOUR + 120, 3)], NOW, rules());
        assert_eq!(steps, vec![CountStep::AlreadyCounted]);
        assert!(additions.is_empty(), "nothing to write");
    }

    /// A partition where event "a" was counted in the hour two hours before NOW, which has since
    /// come to `state`; and that hour.
    fn one_event_counted_then(state: HourState) -> (Partition, i64) {
        let (_, additions) = plan(
            &Partition::default(),
            &[incoming("a", HOUR + 60, 2)],
            NOW,
            rules(),
        );
        let mut partition = Partition::default();
        partition.written(additions);
        let own = NOW - 2 * HOUR;
        partition.hours.get_mut(&own).unwrap().state = state;
        (partition, own)
    }

    #[test]
    fn usage_of_a_claimed_hour_is_carried_to_the_next_open_one() {
        let (partition, own) = one_event_counted_then(HourState::Claimed {
            holder: "t".into(),
            until_ms: 0,
        });
        let (steps, additions) = plan(&partition, &[incoming("z", HOUR + 30, 4)], NOW, rules());
        assert_eq!(
            steps,
            vec![CountStep::Counted {
                carried_from: Some(own)
            }]
        );
        assert_eq!(additions[0].after.hour, own + HOUR);
        assert_eq!(additions[0].before.version, 0, "a new hour");
        assert_eq!(additions[0].events[0].carried_from, Some(own));
        // Eight hours old: outside the window, whatever the partition holds.
        let (steps, _) = plan(&partition, &[incoming("old", 8 * HOUR, 1)], NOW, rules());
        assert!(matches!(steps[0], CountStep::OutsideWindow { .. }));
    }

    #[test]
    fn usage_of_a_failed_hour_counts_again_when_redriven_and_then_only_once() {
        let (mut partition, own) = one_event_counted_then(HourState::Failed {
            status: "CustomerNotSubscribed".into(),
            reason: "customer_not_subscribed".into(),
            detail: String::new(),
        });
        // The dead-lettered event, redriven: its hour failed, so it counts, in the next open hour.
        let (steps, additions) = plan(&partition, &[incoming("a", HOUR + 60, 2)], NOW, rules());
        assert_eq!(
            steps,
            vec![CountStep::Counted {
                carried_from: Some(own)
            }]
        );
        assert_eq!(additions[0].after.hour, own + HOUR);
        partition.written(additions);
        // Redriven twice (a copy of the letter): counted in an hour that stands, so not again.
        let (steps, additions) = plan(&partition, &[incoming("a", HOUR + 60, 2)], NOW, rules());
        assert_eq!(steps, vec![CountStep::AlreadyCounted]);
        assert!(additions.is_empty());
        assert_eq!(partition.counted_in("a"), Some(own + HOUR));
    }

    #[test]
    fn a_write_takes_no_more_than_fits_one_transaction() {
        let mut waiting: Vec<Waiting> = (0..MAX_BATCH_EVENTS + 5)
            .map(|n| Waiting {
                incoming: incoming(&format!("u{n}"), 60, 1),
                reply: oneshot::channel().0,
            })
            .collect();
        assert_eq!(take_batch(&mut waiting).len(), MAX_BATCH_EVENTS);
        assert_eq!(take_batch(&mut waiting).len(), 5);
        // Events of more hours than one transaction can hold wait for the next write.
        let mut waiting: Vec<Waiting> = (0..MAX_BATCH_HOURS as i64 + 2)
            .map(|n| Waiting {
                incoming: incoming(&format!("h{n}"), n * HOUR, 1),
                reply: oneshot::channel().0,
            })
            .collect();
        let first = take_batch(&mut waiting);
        let hours: HashSet<i64> = first
            .iter()
            .map(|w| hour_of(w.incoming.event.timestamp.timestamp()))
            .collect();
        assert_eq!(hours.len(), MAX_BATCH_HOURS);
        assert_eq!(waiting.len(), 2, "the rest waits");
    }
}
