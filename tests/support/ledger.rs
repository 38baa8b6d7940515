//! Token accounting: every token enqueued must end as at least one published event (the same
//! `eventId` on every duplicate) or exactly one dead-letter with the right reason; none stuck,
//! none lost.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use mp_resolver::emulator::TestToken;
use serde_json::json;

use super::{expected_event_id, Fixture};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Published,
    DeadLetter(&'static str),
}

/// The tokens of a scenario and what must become of each.
#[derive(Debug, Default)]
pub struct Ledger {
    pub tokens: Vec<String>,
    expected: HashMap<String, Expect>,
}

impl Ledger {
    /// `n` tokens: mostly good, some invalid, expired and throttled ones, all distinct.
    pub fn mixed(n: usize, tag: &str) -> Self {
        let mut ledger = Ledger::default();
        let past = chrono::Utc::now().timestamp() - 60;
        for i in 0..n {
            let base = TestToken::new("123456789012", "prod-abc").customer(format!("{tag}-{i}"));
            let (token, expect) = match i % 10 {
                7 => (
                    format!("not-a-token-{tag}-{i}"),
                    Expect::DeadLetter("invalid_token"),
                ),
                8 => (
                    base.expires_at(past).encode().expect("valid test token"),
                    Expect::DeadLetter("expired_token"),
                ),
                9 => (
                    base.throttle(2).encode().expect("valid test token"),
                    Expect::Published,
                ),
                _ => (base.encode().expect("valid test token"), Expect::Published),
            };
            ledger.add(token, expect);
        }
        ledger
    }

    /// `n` good tokens.
    pub fn good(n: usize, tag: &str) -> Self {
        let mut ledger = Ledger::default();
        for i in 0..n {
            let token = TestToken::new("123456789012", "prod-abc")
                .customer(format!("{tag}-{i}"))
                .encode()
                .expect("valid test token");
            ledger.add(token, Expect::Published);
        }
        ledger
    }

    pub fn add(&mut self, token: String, expect: Expect) {
        self.expected.insert(expected_event_id(&token), expect);
        self.tokens.push(token);
    }

    pub fn bodies(&self) -> Vec<String> {
        self.tokens
            .iter()
            .map(|t| json!({ "registrationToken": t }).to_string())
            .collect()
    }

    pub fn expected_published(&self) -> usize {
        self.expected
            .values()
            .filter(|e| **e == Expect::Published)
            .count()
    }

    /// Reads events and dead-letters until every token is accounted for and the token queue is
    /// empty, or `limit` passes; then reports.
    pub async fn settle(&self, fx: &Fixture, limit: Duration) -> Report {
        let deadline = tokio::time::Instant::now() + limit;
        let mut events: HashMap<String, usize> = HashMap::new();
        let mut letters: HashMap<String, Vec<String>> = HashMap::new();
        let mut unexpected = 0usize;
        loop {
            let mut got_any = false;
            for event in fx.read_once(&fx.subscriber_url, 1).await {
                got_any = true;
                let id = event.json()["eventId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if !self.expected.contains_key(&id) {
                    unexpected += 1;
                }
                *events.entry(id).or_default() += 1;
            }
            for letter in fx.read_once(&fx.dlq_url, 0).await {
                got_any = true;
                let id = letter
                    .attributes
                    .get("mpr.eventId")
                    .cloned()
                    .unwrap_or_default();
                let reason = letter
                    .attributes
                    .get("mpr.reason")
                    .cloned()
                    .unwrap_or_else(|| "redrive_policy".to_owned());
                if !self.expected.contains_key(&id) {
                    unexpected += 1;
                }
                letters.entry(id).or_default().push(reason);
            }
            let accounted = self
                .expected
                .keys()
                .filter(|id| events.contains_key(*id) || letters.contains_key(*id))
                .count();
            if !got_any && accounted == self.expected.len() && fx.depth(&fx.queue_url).await == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let mut report = Report {
            enqueued: self.expected.len(),
            unexpected,
            queue_left: fx.depth(&fx.queue_url).await,
            ..Report::default()
        };
        for (id, expect) in &self.expected {
            let published = events.get(id).copied().unwrap_or(0);
            let dead = letters.get(id).cloned().unwrap_or_default();
            match (expect, published, dead.as_slice()) {
                (Expect::Published, n, []) if n > 0 => {
                    report.published += 1;
                    report.duplicates += n - 1;
                }
                (Expect::DeadLetter(reason), 0, [got]) if got == reason => {
                    report.dead_lettered += 1
                }
                // SQS SendMessage is not idempotent: when a connection dies after the letter was
                // stored, the SDK's retry stores a second copy (same sourceMessageId and eventId).
                (Expect::DeadLetter(reason), 0, letters)
                    if !letters.is_empty() && letters.iter().all(|got| got == reason) =>
                {
                    report.dead_lettered += 1;
                    report.dead_letter_duplicates += letters.len() - 1;
                }
                (_, 0, []) => report.lost += 1,
                _ => report.wrong.push(format!(
                    "{id}: expected {expect:?}, got {published} events and dead-letters {dead:?}"
                )),
            }
        }
        report
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub enqueued: usize,
    pub published: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
    pub dead_letter_duplicates: usize,
    pub lost: usize,
    pub wrong: Vec<String>,
    pub unexpected: usize,
    pub queue_left: u64,
}

impl Report {
    /// The accounting rule: nothing lost, nothing mis-routed, nothing left on the queue.
    pub fn assert_holds(&self, scenario: &str) {
        eprintln!("{scenario}: {self}");
        assert_eq!(self.lost, 0, "{scenario}: lost tokens\n{self}");
        assert!(
            self.wrong.is_empty(),
            "{scenario}: mis-routed tokens {:?}",
            self.wrong
        );
        assert_eq!(
            self.unexpected, 0,
            "{scenario}: events or letters for unknown tokens"
        );
        assert_eq!(
            self.queue_left, 0,
            "{scenario}: messages left on the token queue"
        );
        assert_eq!(
            self.published + self.dead_lettered,
            self.enqueued,
            "{scenario}: {self}"
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "enqueued {}, published {}, duplicates {}, dead-lettered {} (duplicate letters {}), lost {}, mis-routed {}, left on queue {}",
            self.enqueued,
            self.published,
            self.duplicates,
            self.dead_lettered,
            self.dead_letter_duplicates,
            self.lost,
            self.wrong.len(),
            self.queue_left
        )
    }
}
