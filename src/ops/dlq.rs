//! `dlq list`: the dead-letters, grouped by `mpr.reason`, without consuming them. Also the scan
//! both `list` and `redrive` walk the dead-letter queue with: receive with a visibility timeout,
//! remember what was seen, and hand back everything not taken with visibility 0 at the end.
//!
//! Copies: a message can be dead-lettered more than once (a `SendMessage` whose response was lost
//! and that the SDK retried; two processes retiring the same message). Dead-letters with the same
//! reason and `mpr.sourceMessageId` are one letter: listed once with their number of copies, and
//! redriven once with the other copies deleted.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub use super::letter::{LetterReason, REDRIVE_POLICY};
use super::output::{age, Render};
use super::progress;
use crate::aws::error::{CallError, EntryFailure};
use crate::aws::sqs;
use crate::contract::{dlq_attr, parse_body};

/// How long a scanned message stays hidden while the tool works. If the tool dies mid-way, its
/// messages are visible again after this long; a normal run hands them back at once.
pub const SCAN_VISIBILITY_SECS: i32 = 60;

/// Long-poll wait per receive while scanning: long enough that SQS asks all of its servers, so
/// an empty answer means the queue has no more visible messages.
const SCAN_WAIT_SECS: i32 = 1;

/// A received dead-letter. The body may hold a token: it is only readable inside `ops`, and
/// `Debug` leaves it out.
#[derive(Clone)]
pub struct DeadLetterView {
    pub message_id: String,
    pub(super) receipt_handle: String,
    pub(super) body: String,
    /// `mpr.reason`, or the redrive policy when absent.
    pub reason: LetterReason,
    /// `mpr.sourceMessageId`: the token queue message this is a dead-letter of. Dead-letters with
    /// the same one are copies of one letter.
    pub source_message_id: Option<String>,
    /// `mpr.eventId`, or the fingerprint of the token in the body when one can be read.
    pub event_id: Option<String>,
    pub detail: Option<String>,
    /// `mpr.event` on an `unpublished` or `product_mismatch` letter: the resolved event.
    pub(super) event: Option<String>,
    /// `mpr.eventRef`: the store item holding that event, on a letter too large to carry it.
    pub(super) event_ref: Option<String>,
    pub failed_at: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
    pub receive_count: Option<u32>,
}

impl std::fmt::Debug for DeadLetterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterView")
            .field("message_id", &self.message_id)
            .field("reason", &self.reason)
            .field("event_id", &self.event_id)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl DeadLetterView {
    fn from_message(m: Message) -> Option<Self> {
        let reason = LetterReason::from_attribute(sqs::message_attribute(&m, dlq_attr::REASON));
        let body = m.body.clone().unwrap_or_default();
        // The fingerprint is the eventId a subscriber saw or would see; a message the redrive
        // policy moved has no attribute, so it comes from the body, exactly as the worker makes it.
        let event_id = sqs::message_attribute(&m, dlq_attr::EVENT_ID)
            .map(str::to_owned)
            .or_else(|| match parse_body(&body) {
                Ok(request) => Some(request.token.fingerprint().to_string()),
                Err(malformed) => malformed.fingerprint.map(|f| f.to_string()),
            });
        let sent_at = sqs::system_attribute(&m, MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis);
        Some(DeadLetterView {
            detail: sqs::message_attribute(&m, dlq_attr::DETAIL).map(str::to_owned),
            failed_at: sqs::message_attribute(&m, dlq_attr::FAILED_AT).map(str::to_owned),
            group_id: sqs::system_attribute(&m, MessageSystemAttributeName::MessageGroupId)
                .map(str::to_owned),
            receive_count: sqs::message_attribute(&m, dlq_attr::RECEIVE_COUNT)
                .and_then(|c| c.parse().ok()),
            source_message_id: sqs::message_attribute(&m, dlq_attr::SOURCE_MESSAGE_ID)
                .map(str::to_owned),
            sent_at,
            reason,
            event_id,
            event: sqs::message_attribute(&m, dlq_attr::EVENT).map(str::to_owned),
            event_ref: sqs::message_attribute(&m, dlq_attr::EVENT_REF).map(str::to_owned),
            body,
            message_id: m.message_id?,
            receipt_handle: m.receipt_handle?,
        })
    }

    pub fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.sent_at.and_then(|t| (now - t).to_std().ok())
    }

    /// What makes two dead-letters copies of one letter: the same reason and source message. A
    /// dead-letter without a source (moved by the redrive policy) is a letter of its own.
    pub(super) fn letter_key(&self) -> Option<LetterKey> {
        self.source_message_id
            .as_ref()
            .map(|source| (self.reason.clone(), source.clone()))
    }
}

/// A letter's reason and `mpr.sourceMessageId`.
pub(super) type LetterKey = (LetterReason, String);

/// Dead-letters gathered into letters, in first-seen order: copies of one letter (same
/// [`DeadLetterView::letter_key`]) go together, the first one seen first.
pub(super) fn collapse_copies(views: Vec<DeadLetterView>) -> Vec<Vec<DeadLetterView>> {
    let mut letters: Vec<Vec<DeadLetterView>> = Vec::new();
    let mut index: HashMap<LetterKey, usize> = HashMap::new();
    for view in views {
        let key = view.letter_key();
        match key.as_ref().and_then(|k| index.get(k)) {
            Some(&i) => letters[i].push(view),
            None => {
                if let Some(key) = key {
                    index.insert(key, letters.len());
                }
                letters.push(vec![view]);
            }
        }
    }
    letters
}

/// A message that could not be handed back: it becomes visible again on its own after
/// [`SCAN_VISIBILITY_SECS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandBackFailure {
    pub message_id: String,
    pub code: String,
    pub message: String,
}

/// Walks the dead-letter queue, holding what it has seen.
pub(super) struct Scan<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    url: &'a str,
    /// Receipt handles to hand back at the end, by message id (the latest handle wins: SQS only
    /// accepts the handle of the most recent receive).
    held: HashMap<String, String>,
    /// Every message id this scan has returned, so a message whose visibility ran out during a
    /// long scan is not listed or moved twice.
    seen: std::collections::HashSet<String>,
}

impl<'a> Scan<'a> {
    pub(super) fn new(sqs: &'a aws_sdk_sqs::Client, url: &'a str) -> Self {
        Scan {
            sqs,
            url,
            held: HashMap::new(),
            seen: Default::default(),
        }
    }

    /// The next messages not seen before; empty when the queue has nothing new to give.
    pub(super) async fn next_batch(&mut self) -> Result<Vec<DeadLetterView>, CallError> {
        let received = sqs::receive(
            self.sqs,
            self.url,
            sqs::BATCH as i32,
            SCAN_WAIT_SECS,
            SCAN_VISIBILITY_SECS,
        )
        .await?;
        let mut fresh = Vec::new();
        for view in received
            .into_iter()
            .filter_map(DeadLetterView::from_message)
        {
            if self.seen.insert(view.message_id.clone()) {
                fresh.push(view);
            } else {
                // Seen before and visible again: hold it (with its new handle) for the hand-back.
                self.held.insert(view.message_id, view.receipt_handle);
            }
        }
        Ok(fresh)
    }

    /// Keep this message on the queue: it is handed back at the end.
    pub(super) fn hold(&mut self, view: &DeadLetterView) {
        self.held
            .insert(view.message_id.clone(), view.receipt_handle.clone());
    }

    /// Makes every held message visible again at once.
    pub(super) async fn hand_back(self) -> Vec<HandBackFailure> {
        let (ids, handles): (Vec<String>, Vec<String>) = self.held.into_iter().unzip();
        let results =
            sqs::change_visibility_batch(self.sqs, self.url, &handles, std::time::Duration::ZERO)
                .await;
        ids.into_iter()
            .zip(results)
            .filter_map(|(message_id, r)| {
                r.err()
                    .map(|EntryFailure { code, message }| HandBackFailure {
                        message_id,
                        code,
                        message,
                    })
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub message_id: String,
    pub event_id: Option<String>,
    /// SentTimestamp on the dead-letter queue, RFC 3339. For a message moved by the redrive
    /// policy of a standard queue, SQS keeps the original enqueue time.
    pub sent_at: Option<String>,
    pub age_secs: Option<u64>,
    pub failed_at: Option<String>,
    pub detail: Option<String>,
    pub receive_count: Option<u32>,
    /// `mpr.sourceMessageId`, when the worker wrote it.
    pub source_message_id: Option<String>,
    /// How many dead-letters on the queue are this letter (same `mpr.sourceMessageId`); 1 unless
    /// it was dead-lettered more than once. `message_id` is the oldest copy.
    pub copies: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub reason: LetterReason,
    /// Letters: copies of one count once.
    pub count: usize,
    /// Dead-letters on the queue, copies included.
    pub copies: usize,
    pub oldest_age_secs: Option<u64>,
    pub newest_age_secs: Option<u64>,
    /// Oldest first.
    pub messages: Vec<Listed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListReport {
    /// False when some messages could not be handed back.
    pub ok: bool,
    pub dlq_url: String,
    /// What SQS counted on the queue (visible and in flight) before the scan; approximate.
    pub approximate_total: Option<u64>,
    /// Dead-letters examined, copies included.
    pub examined: usize,
    /// Letters among them: copies of one (same `mpr.sourceMessageId`) count once.
    pub letters: usize,
    /// True when `--max` stopped the scan: there may be more.
    pub truncated: bool,
    /// Most messages first.
    pub groups: Vec<Group>,
    pub hand_back_failures: Vec<HandBackFailure>,
}

/// How many fingerprints per group the human output shows; `--json` has them all.
const HUMAN_PER_GROUP: usize = 10;

impl Render for ListReport {
    fn human(&self) -> String {
        let mut out = format!("{} dead-letter(s) on {}", self.letters, self.dlq_url);
        let copies = self.examined - self.letters.min(self.examined);
        if copies > 0 {
            let _ = write!(
                out,
                " ({} messages: {copies} extra {} of a letter dead-lettered more than once)",
                self.examined,
                if copies == 1 { "copy" } else { "copies" }
            );
        }
        if let Some(total) = self.approximate_total {
            let _ = write!(out, " (SQS counts ~{total})");
        }
        if self.truncated {
            out.push_str("; stopped at --max, there may be more");
        }
        out.push('\n');
        let show_age = |secs: Option<u64>| {
            secs.map_or_else(|| "?".to_owned(), |s| age(Duration::from_secs(s)))
        };
        for g in &self.groups {
            let _ = writeln!(
                out,
                "\n  {:<18} {:>5}   oldest {}   newest {}",
                g.reason,
                g.count,
                show_age(g.oldest_age_secs),
                show_age(g.newest_age_secs)
            );
            for m in g.messages.iter().take(HUMAN_PER_GROUP) {
                let id = m
                    .event_id
                    .as_ref()
                    .map_or_else(|| format!("{:<32}", "(none)"), ToString::to_string);
                let copies = if m.copies > 1 {
                    format!("({} copies) ", m.copies)
                } else {
                    String::new()
                };
                let line = format!(
                    "    eventId={id}  age {:<8} {copies}{}",
                    show_age(m.age_secs),
                    m.detail.as_deref().unwrap_or("")
                );
                let _ = writeln!(out, "{}", line.trim_end());
            }
            if g.messages.len() > HUMAN_PER_GROUP {
                let _ = writeln!(
                    out,
                    "    ... and {} more (--json lists them all)",
                    g.messages.len() - HUMAN_PER_GROUP
                );
            }
        }
        if self
            .approximate_total
            .is_some_and(|t| t > self.examined as u64)
            && !self.truncated
        {
            let _ = writeln!(
                out,
                "\nSome messages were not seen: they are in flight (another `dlq` run, or a consumer), \
                 or, on a FIFO queue, behind a listed message of the same group. Run it again shortly."
            );
        }
        if self.examined > 0 {
            out.push('\n');
            if self.hand_back_failures.is_empty() {
                out.push_str(
                    "Nothing was consumed: every message is visible on the queue again.\n",
                );
            } else {
                let _ = writeln!(
                    out,
                    "{} message(s) could not be handed back; they are visible again within {SCAN_VISIBILITY_SECS} s.",
                    self.hand_back_failures.len()
                );
            }
        }
        out
    }
}

/// Lists up to `max` dead-letters, grouped by reason, and hands every one of them back.
pub async fn list(
    sqs_client: &aws_sdk_sqs::Client,
    dlq_url: &str,
    max: usize,
) -> Result<ListReport, CallError> {
    // Also the existence check: a missing queue fails here, before anything is received.
    let attributes = sqs::queue_attributes(sqs_client, dlq_url).await?;
    let count = |name| {
        attributes
            .get(&name)
            .and_then(|v: &String| v.parse::<u64>().ok())
    };
    let approximate_total = match (
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ) {
        (Some(visible), Some(in_flight)) => Some(visible + in_flight),
        (Some(visible), None) => Some(visible),
        _ => None,
    };
    if let Some(total) = approximate_total {
        progress::set_total(total.min(max as u64));
    }
    let mut scan = Scan::new(sqs_client, dlq_url);
    let mut listed: Vec<DeadLetterView> = Vec::new();
    let mut truncated = false;
    let walked: Result<(), CallError> = async {
        while listed.len() < max {
            let batch = scan.next_batch().await?;
            if batch.is_empty() {
                break;
            }
            for view in batch {
                scan.hold(&view);
                if listed.len() < max {
                    listed.push(view);
                    progress::advance(1);
                } else {
                    truncated = true;
                }
            }
        }
        Ok(())
    }
    .await;
    // Hand back even when the walk failed part-way: listing never consumes.
    let hand_back_failures = scan.hand_back().await;
    walked?;
    if listed.len() >= max {
        truncated = true;
    }
    let examined = listed.len();
    let groups = group(listed, Utc::now());
    Ok(ListReport {
        ok: hand_back_failures.is_empty(),
        dlq_url: dlq_url.to_owned(),
        approximate_total,
        examined,
        letters: groups.iter().map(|g| g.count).sum(),
        truncated,
        groups,
        hand_back_failures,
    })
}

/// Groups by reason, copies of a letter collapsed into one entry; the most letters first.
fn group(views: Vec<DeadLetterView>, now: DateTime<Utc>) -> Vec<Group> {
    let mut by_reason: BTreeMap<LetterReason, Vec<DeadLetterView>> = BTreeMap::new();
    for v in views {
        by_reason.entry(v.reason.clone()).or_default().push(v);
    }
    let mut groups: Vec<Group> = by_reason
        .into_iter()
        .map(|(reason, views)| {
            let copies = views.len();
            let ages: Vec<u64> = views
                .iter()
                .filter_map(|v| v.age(now))
                .map(|d| d.as_secs())
                .collect();
            let mut letters: Vec<Vec<DeadLetterView>> = collapse_copies(views);
            for copies in &mut letters {
                copies.sort_by_key(|v| v.sent_at);
            }
            letters.sort_by_key(|copies| copies.first().and_then(|v| v.sent_at));
            Group {
                count: letters.len(),
                copies,
                oldest_age_secs: ages.iter().copied().max(),
                newest_age_secs: ages.iter().copied().min(),
                messages: letters.into_iter().filter_map(|c| listed(c, now)).collect(),
                reason,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.reason.as_str().cmp(b.reason.as_str()))
    });
    groups
}

/// One letter, described by its oldest copy (copies sorted oldest first).
fn listed(copies: Vec<DeadLetterView>, now: DateTime<Utc>) -> Option<Listed> {
    let count = copies.len();
    let v = copies.into_iter().next()?;
    Some(Listed {
        age_secs: v.age(now).map(|d| d.as_secs()),
        sent_at: v
            .sent_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        message_id: v.message_id,
        event_id: v.event_id,
        failed_at: v.failed_at,
        detail: v.detail,
        receive_count: v.receive_count,
        source_message_id: v.source_message_id,
        copies: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Fingerprint;

    fn letter(id: &str, reason: Option<&str>, source: Option<&str>) -> DeadLetterView {
        let mut m = Message::builder()
            .message_id(id)
            .receipt_handle(format!("h-{id}"))
            .body("token");
        for (name, value) in [
            (dlq_attr::REASON, reason),
            (dlq_attr::SOURCE_MESSAGE_ID, source),
        ] {
            if let Some(v) = value {
                m = m.message_attributes(
                    name,
                    aws_sdk_sqs::types::MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(v)
                        .build()
                        .unwrap(),
                );
            }
        }
        DeadLetterView::from_message(m.build()).unwrap()
    }

    #[test]
    fn copies_of_a_letter_collapse_by_reason_and_source() {
        let views = vec![
            letter("a1", Some("invalid_token"), Some("src-a")),
            letter("b1", Some("invalid_token"), Some("src-b")),
            letter("a2", Some("invalid_token"), Some("src-a")),
            // Same source, another reason: another letter.
            letter("a3", Some("expired_token"), Some("src-a")),
            // No source (moved by the redrive policy): never a copy.
            letter("r1", None, None),
            letter("r2", None, None),
        ];
        let letters = collapse_copies(views.clone());
        let ids: Vec<Vec<&str>> = letters
            .iter()
            .map(|l| l.iter().map(|v| v.message_id.as_str()).collect())
            .collect();
        assert_eq!(
            ids,
            vec![
                vec!["a1", "a2"],
                vec!["b1"],
                vec!["a3"],
                vec!["r1"],
                vec!["r2"]
            ]
        );

        let groups = group(views, Utc::now());
        let summary: Vec<(&str, usize, usize)> = groups
            .iter()
            .map(|g| (g.reason.as_str(), g.count, g.copies))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("invalid_token", 2, 3),
                ("redrive_policy", 2, 2),
                ("expired_token", 1, 1)
            ]
        );
        let copies: Vec<usize> = groups[0].messages.iter().map(|m| m.copies).collect();
        assert_eq!(copies.iter().sum::<usize>(), 3);
        assert!(copies.contains(&2), "{copies:?}");
    }

    #[test]
    fn messages_without_a_reason_group_as_redrive_policy() {
        let m = Message::builder()
            .message_id("m-1")
            .receipt_handle("h-1")
            .body("plain-token")
            .build();
        let view = DeadLetterView::from_message(m).unwrap();
        assert_eq!(view.reason, LetterReason::RedrivePolicy);
        assert_eq!(
            view.event_id.as_deref(),
            Some(Fingerprint::of("plain-token").as_str())
        );
        assert!(!format!("{view:?}").contains("plain-token"));
    }
}
