//! Counting usage events into their hours, many at a time (group commit). A SaaS application may
//! send one event per API request, so one store write per event would make the store the bound,
//! and so would one write per (subscription, dimension): with many subscriptions, a receive rarely
//! holds two events of one. Instead deliveries queue their events on a *slot*, and whichever
//! delivery holds the slot's writer takes the oldest waiting events that fit one atomic group
//! ([`take_group`]) and adds them in one write: for each (partition, hour) the hour's new total and
//! one batch item (README "The store layout").
//!
//! What a slot covers depends on who else writes: on the embedded store this process is the only
//! writer, so the whole process is one slot and one write takes events of many partitions (the
//! fewest writes). On DynamoDB every task of the service writes the same hours, and a transaction
//! fails whole when any one of its hours was written by another task meanwhile: a group across
//! partitions would lose to almost every write of the others, so each partition is its own slot
//! there, written side by side with the others, as contended as its own traffic and no more.
//!
//! Each partition is planned on its own, by [`plan`] (pure), from what this process remembers of
//! it (read when unknown); the partitions' additions then go to the store together. One slot has
//! one writer, so its writes do not conflict with each other; across tasks the hours' version
//! conditions keep them honest: a group that lost to another task's write (or a claim) fails
//! whole, its partitions are read again and planned again.
//!
//! Crash safety is the group's: if the process dies just before it, nothing of it was counted and
//! every message in it comes back (none was deleted, since a message is deleted only once its
//! write returned); just after it, all of it was counted, and the redeliveries find their usage ids
//! in the partitions' batch items and are deleted without counting.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use lru::LruCache;
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use crate::contract::usage::UsageEvent;
use crate::store::usage::{
    hour_pk, Addition, Hour, Partition, StoredEvent, UsageLedger, MAX_BATCH_BODY_BYTES,
    MAX_BATCH_EVENTS, MAX_BATCH_HOURS,
};
use crate::store::StoreError;
use crate::worker::lock;
use crate::worker::retry::full_jitter;
use crate::worker::usage::schedule::{hour_of, place, HourRules, HourView, Placement, HOUR};
use crate::worker::usage::CountStep;

/// How often a write is planned again after losing to another task's writer of the same hours
/// before its events are handed back.
const MAX_CONFLICTS: u32 = 40;
/// Partitions whose state is remembered between writes; past this, the least recently written
/// are forgotten (read again when their next event comes).
const REMEMBERED_PARTITIONS: usize = 4_096;

/// One event waiting to be counted.
pub struct Incoming {
    pub event: UsageEvent,
    pub product: String,
    pub stored: StoredEvent,
}

struct Waiting {
    /// Its partition (subscription and dimension) and its own hour: what a group's bounds count.
    pk: String,
    hour: i64,
    incoming: Incoming,
    reply: oneshot::Sender<CountStep>,
}

/// One queue of waiting events and its writer.
#[derive(Default)]
struct Slot {
    waiting: Mutex<VecDeque<Waiting>>,
    /// Held while writing.
    writer: tokio::sync::Mutex<()>,
}

/// The usage lane's counter: its slots (one, or one per partition: see the module documentation)
/// and what this process knows of the partitions it wrote lately.
pub struct Counter {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// A writer takes its partitions out while it writes them and puts them back after, so
    /// writers of different slots never wait for each other here.
    known: Mutex<LruCache<String, Partition>>,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            slots: Mutex::new(HashMap::new()),
            known: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED_PARTITIONS).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }
}

fn abandoned() -> CountStep {
    CountStep::Failed("the counting write was abandoned".into())
}

impl Counter {
    /// Counts one event: queues it, then, holding the writer, writes the oldest waiting groups
    /// (whatever others queued meanwhile, its own among them) until its own was written. While
    /// one group is written the next one gathers, so the busier the lane, the larger the groups.
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
        let hour = hour_of(incoming.event.timestamp.timestamp());
        let slot = {
            let key = if ledger.store().shared_by_tasks() {
                pk.as_str()
            } else {
                ""
            };
            let mut slots = lock(&self.slots);
            if slots.len() >= REMEMBERED_PARTITIONS {
                // Forget slots nobody is counting into (only this map holds them).
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            slots.entry(key.to_owned()).or_default().clone()
        };
        let (reply, mut answer) = oneshot::channel();
        lock(&slot.waiting).push_back(Waiting {
            pk,
            hour,
            incoming,
            reply,
        });
        let writer = slot.writer.lock().await;
        loop {
            // Written by the previous holder of the writer: nothing more to do here.
            match answer.try_recv() {
                Ok(step) => return step,
                Err(TryRecvError::Closed) => return abandoned(),
                Err(TryRecvError::Empty) => {}
            }
            let group = take_group(&mut lock(&slot.waiting));
            if group.is_empty() {
                // Not reachable while a taken event is answered before the writer is let go;
                // waiting, rather than spinning, is right either way.
                drop(writer);
                return answer.await.unwrap_or_else(|_| abandoned());
            }
            write_group(ledger, rules, &self.known, group).await;
        }
    }
}

/// The oldest waiting events that fit one atomic group: at most `MAX_BATCH_EVENTS` events,
/// `MAX_BATCH_BODY_BYTES` of bodies and `MAX_BATCH_HOURS` (partition, hour) pairs (each costs up to
/// three items of DynamoDB's 100-item transaction: the hour, its batch item, its pending entry).
/// An event's own hour bounds the hour it goes to: usage is carried only to one later hour, the
/// same for every event of its hour. Events whose delivery stopped waiting are dropped (their
/// messages come back). Oldest first: the first event that does not fit ends the group, so it
/// leads the next one.
fn take_group(waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let mut hours: HashSet<(String, i64)> = HashSet::new();
    let mut bytes = 0;
    let mut group = Vec::new();
    while let Some(next) = waiting.front() {
        if next.reply.is_closed() {
            waiting.pop_front();
            continue;
        }
        let len = next.incoming.stored.body.len();
        let new_hour = !hours.contains(&(next.pk.clone(), next.hour));
        if !group.is_empty()
            && (group.len() == MAX_BATCH_EVENTS
                || bytes + len > MAX_BATCH_BODY_BYTES
                || (new_hour && hours.len() == MAX_BATCH_HOURS))
        {
            break;
        }
        let Some(w) = waiting.pop_front() else { break };
        hours.insert((w.pk.clone(), w.hour));
        bytes += len;
        group.push(w);
    }
    group
}

/// One partition's share of a group.
struct Share {
    pk: String,
    /// What is known of it (`None`: read it).
    known: Option<Partition>,
    incoming: Vec<Incoming>,
    replies: Vec<oneshot::Sender<CountStep>>,
    /// Where its events came to, once settled.
    steps: Option<Vec<CountStep>>,
}

/// Writes one group and answers every delivery in it.
async fn write_group(
    ledger: &UsageLedger,
    rules: HourRules,
    known: &Mutex<LruCache<String, Partition>>,
    group: Vec<Waiting>,
) {
    let mut shares: Vec<Share> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for w in group {
        let i = *index.entry(w.pk.clone()).or_insert_with(|| {
            shares.push(Share {
                known: lock(known).pop(&w.pk),
                pk: w.pk.clone(),
                incoming: Vec::new(),
                replies: Vec::new(),
                steps: None,
            });
            shares.len() - 1
        });
        shares[i].incoming.push(w.incoming);
        shares[i].replies.push(w.reply);
    }
    write_shares(ledger, rules, &mut shares).await;
    // Hours older than any event the lane still counts (the window, and an hour's slack) are
    // forgotten, so a busy partition's memory stays bounded.
    let forget_before = hour_of(crate::store::now_secs() - rules.window_secs) - HOUR;
    for share in shares {
        if let Some(mut partition) = share.known {
            partition.forget_before(forget_before);
            lock(known).put(share.pk, partition);
        }
        let n = share.replies.len();
        let steps = share.steps.unwrap_or_else(|| vec![abandoned(); n]);
        for (reply, step) in share.replies.into_iter().zip(steps) {
            // A delivery that stopped waiting (its task ended) is answered by the redelivery.
            let _ = reply.send(step);
        }
    }
}

/// Plans every share and writes all their additions in one group, reading partitions again and
/// planning again while other tasks' writes win; settles each share's steps.
async fn write_shares(ledger: &UsageLedger, rules: HourRules, shares: &mut [Share]) {
    let failed = |e: &StoreError, n: usize| vec![CountStep::Failed(e.to_string()); n];
    let mut unsettled: Vec<usize> = (0..shares.len()).collect();
    for _ in 0..MAX_CONFLICTS {
        let now = crate::store::now_secs();
        // (share, its steps if the write succeeds, how many of `additions` are its)
        let mut planned: Vec<(usize, Vec<CountStep>, usize)> = Vec::new();
        let mut additions: Vec<Addition> = Vec::new();
        // The partitions' reads go out together: a group of first-seen partitions costs one
        // read's latency, not one per partition, while the writer (one per process on the
        // embedded store) waits for them. A group has at most MAX_BATCH_HOURS partitions.
        let remembered: Vec<Option<Partition>> =
            unsettled.iter().map(|&i| shares[i].known.take()).collect();
        let prepared = join_all(unsettled.iter().zip(remembered).map(|(&i, known)| {
            let share = &shares[i];
            prepare(ledger, &share.pk, known, &share.incoming)
        }))
        .await;
        for (&i, prepared) in unsettled.iter().zip(prepared) {
            let share = &mut shares[i];
            let partition = match prepared {
                Ok(p) => share.known.insert(p),
                Err(e) => {
                    share.steps = Some(failed(&e, share.incoming.len()));
                    continue;
                }
            };
            let (steps, mine) = plan(partition, &share.incoming, now, rules);
            if mine.is_empty() {
                // Nothing of it to write (all counted before, or outside the window): settled.
                share.steps = Some(steps);
            } else {
                planned.push((i, steps, mine.len()));
                additions.extend(mine);
            }
        }
        if planned.is_empty() {
            return;
        }
        match ledger.add(&additions).await {
            Ok(()) => {
                let mut additions = additions.into_iter();
                for (i, steps, n) in planned {
                    let share = &mut shares[i];
                    if let Some(partition) = &mut share.known {
                        partition.written(additions.by_ref().take(n).collect());
                    }
                    share.steps = Some(steps);
                }
                return;
            }
            Err(StoreError::Conflict) => {
                // Another task wrote (or claimed) one of the hours; which one the store does not
                // say, so every partition of the group is read again.
                unsettled = planned.into_iter().map(|(i, ..)| i).collect();
                for &i in &unsettled {
                    shares[i].known = None;
                }
                tokio::time::sleep(full_jitter(Duration::from_millis(20))).await;
            }
            Err(e) => {
                for (i, ..) in planned {
                    shares[i].known = None;
                    shares[i].steps = Some(failed(&e, shares[i].incoming.len()));
                }
                return;
            }
        }
    }
    for i in unsettled {
        let n = shares[i].incoming.len();
        shares[i].steps = Some(vec![
            CountStep::Failed(format!(
                "{MAX_CONFLICTS} writes in a row lost to other writers of the hour"
            ));
            n
        ]);
    }
}

/// The partition of `pk` ready to plan `incoming` on: read when not `known`; the batches of every
/// hour an event could already be counted in read; and, when remembered rather than just read,
/// checked that the hours its already-counted events are in still stand (else read afresh).
async fn prepare(
    ledger: &UsageLedger,
    pk: &str,
    mut known: Option<Partition>,
    incoming: &[Incoming],
) -> Result<Partition, StoreError> {
    let oldest = incoming
        .iter()
        .map(|i| hour_of(i.event.timestamp.timestamp()))
        .min()
        .unwrap_or_default();
    // At most twice: a partition just read needs no check.
    loop {
        let (mut partition, fresh) = match known.take() {
            Some(p) if p.remembers(oldest) => (p, false),
            _ => (ledger.partition(pk).await?, true),
        };
        let unread = partition.unread_from(oldest);
        ledger.read_batches(&mut partition, pk, &unread).await?;
        // A remembered hour may have failed since (its usage dead-lettered, and now redriven):
        // an event is dropped as counted only if its hour is as remembered. Redeliveries are
        // rare, so these reads are too.
        if fresh || remembered_hours_hold(ledger, pk, &partition, incoming).await? {
            return Ok(partition);
        }
    }
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
    fn a_partition_forgets_hours_before_a_bound_and_then_asks_to_be_read_afresh_for_them() {
        // "a" counted in the hour two hours before NOW, "b" in the hour before NOW.
        let (mut partition, own) = one_event_counted_then(HourState::Open);
        let (_, additions) = plan(&partition, &[incoming("b", 30, 1)], NOW, rules());
        partition.written(additions);
        let now_hour = hour_of(NOW - 30);
        assert!(partition.is_counted("a") && partition.remembers(own));

        partition.forget_before(now_hour);
        assert!(!partition.is_counted("a"), "its usage ids are gone");
        assert!(!partition.hours.contains_key(&own));
        assert!(!partition.remembers(own), "an event of it reads the store");
        assert!(partition.is_counted("b") && partition.remembers(now_hour));
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

    /// `incoming` queued for partition `pk` (its own hour from its timestamp); the receiver keeps
    /// the delivery waiting.
    fn queued(pk: &str, incoming: Incoming) -> (Waiting, oneshot::Receiver<CountStep>) {
        let (reply, answer) = oneshot::channel();
        let hour = hour_of(incoming.event.timestamp.timestamp());
        (
            Waiting {
                pk: pk.into(),
                hour,
                incoming,
                reply,
            },
            answer,
        )
    }

    fn queue(
        events: impl IntoIterator<Item = (String, Incoming)>,
    ) -> (VecDeque<Waiting>, Vec<oneshot::Receiver<CountStep>>) {
        events.into_iter().map(|(pk, i)| queued(&pk, i)).unzip()
    }

    fn ids(group: &[Waiting]) -> Vec<&str> {
        group
            .iter()
            .map(|w| w.incoming.event.usage_id.as_str())
            .collect()
    }

    #[test]
    fn a_write_takes_no_more_than_fits_one_transaction() {
        let (mut waiting, _answers) = queue(
            (0..MAX_BATCH_EVENTS + 5).map(|n| ("p".into(), incoming(&format!("u{n}"), 60, 1))),
        );
        assert_eq!(take_group(&mut waiting).len(), MAX_BATCH_EVENTS);
        assert_eq!(take_group(&mut waiting).len(), 5);
        // Events of more hours than one transaction can hold wait for the next write.
        let (mut waiting, _answers) = queue(
            (0..MAX_BATCH_HOURS as i64 + 2)
                .map(|n| ("p".into(), incoming(&format!("h{n}"), n * HOUR, 1))),
        );
        let first = take_group(&mut waiting);
        let hours: HashSet<i64> = first
            .iter()
            .map(|w| hour_of(w.incoming.event.timestamp.timestamp()))
            .collect();
        assert_eq!(hours.len(), MAX_BATCH_HOURS);
        assert_eq!(waiting.len(), 2, "the rest waits");
    }

    #[test]
    fn one_write_takes_many_partitions_oldest_first_within_the_bounds() {
        // One event for each of 40 partitions, all of one hour, then a second event for the
        // first partition: a (partition, hour) is what costs transaction items, so the group
        // takes the first MAX_BATCH_HOURS partitions and stops at the first event of another.
        let (mut waiting, _answers) = queue(
            (0..40)
                .map(|n| (format!("p{n}"), incoming(&format!("u{n}"), 60, 1)))
                .chain([("p0".to_owned(), incoming("again", 60, 1))]),
        );
        let first = take_group(&mut waiting);
        let partitions: HashSet<&str> = first.iter().map(|w| w.pk.as_str()).collect();
        assert_eq!(
            partitions.len(),
            MAX_BATCH_HOURS,
            "many partitions, one write"
        );
        let want: Vec<String> = (0..MAX_BATCH_HOURS).map(|n| format!("u{n}")).collect();
        assert_eq!(ids(&first), want, "the oldest, in order");
        // The rest, and the later event of a partition already written, go in the next one.
        let second = take_group(&mut waiting);
        assert_eq!(ids(&second).len(), 40 - MAX_BATCH_HOURS + 1);
        assert_eq!(ids(&second).last(), Some(&"again"));
        assert!(waiting.is_empty());

        // An event of a (partition, hour) already in the group fits past the hours' bound; one of
        // a new hour of a partition in the group does not.
        let (mut waiting, _answers) = queue(
            (0..MAX_BATCH_HOURS)
                .map(|n| (format!("p{n}"), incoming(&format!("u{n}"), 60, 1)))
                .chain([
                    ("p3".to_owned(), incoming("same-hour", 120, 1)),
                    ("p3".to_owned(), incoming("other-hour", HOUR + 60, 1)),
                ]),
        );
        let first = take_group(&mut waiting);
        assert_eq!(first.len(), MAX_BATCH_HOURS + 1);
        assert_eq!(ids(&first).last(), Some(&"same-hour"));
        assert_eq!(ids(&take_group(&mut waiting)), vec!["other-hour"]);

        // Bodies: the group stops before the event that would pass the bytes' bound.
        let per = incoming("x", 60, 1).stored.body.len();
        let fit = MAX_BATCH_BODY_BYTES / per;
        if fit < MAX_BATCH_EVENTS {
            let (mut waiting, _answers) = queue(
                (0..fit + 1).map(|n| (format!("b{}", n % 2), incoming(&format!("{n:04}"), 60, 1))),
            );
            assert!(take_group(&mut waiting).len() <= fit);
        }
        let (mut waiting, _answers) = queue((0..3).map(|n| {
            let mut i = incoming(&format!("big{n}"), 60, 1);
            i.stored.body = "x".repeat(MAX_BATCH_BODY_BYTES / 2 + 1);
            (format!("p{n}"), i)
        }));
        assert_eq!(
            take_group(&mut waiting).len(),
            1,
            "two would pass the bytes' bound"
        );
        // One event larger than the bound still goes (alone): nothing waits for ever.
        let (mut waiting, _answers) = queue([{
            let mut i = incoming("huge", 60, 1);
            i.stored.body = "x".repeat(MAX_BATCH_BODY_BYTES + 1);
            ("p".to_owned(), i)
        }]);
        assert_eq!(take_group(&mut waiting).len(), 1);
    }

    #[test]
    fn events_whose_delivery_stopped_waiting_are_not_written() {
        let (mut waiting, mut answers) =
            queue((0..4).map(|n| (format!("p{n}"), incoming(&format!("u{n}"), 60, 1))));
        // The deliveries of u1 and u2 ended (their messages come back).
        answers.remove(2);
        answers.remove(1);
        assert_eq!(ids(&take_group(&mut waiting)), vec!["u0", "u3"]);
    }
}
