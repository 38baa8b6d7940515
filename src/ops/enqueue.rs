//! `enqueue`: registration tokens onto the token queue in the JSON form of the README's "Inbound: the token message", ten per
//! `SendMessageBatch`. Every body is run through the worker's own parser first, so the tool never
//! enqueues something the worker would dead-letter as malformed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::output::Render;
use super::progress;
use crate::aws::sqs::now_rfc3339;
use crate::aws::sqs::{self, Outgoing};
use crate::contract::{parse_body, Fingerprint};

/// SQS's limit on one batch request's total payload (the smallest any endpoint applies).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// What goes with every token of one `enqueue`.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub signup_id: Option<String>,
    pub context: BTreeMap<String, String>,
}

/// A token ready to send. Its body holds the token, so `Debug` shows only the fingerprint.
pub struct Prepared {
    pub event_id: Fingerprint,
    body: String,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("event_id", &self.event_id)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Prepared {
    /// The JSON body, as the worker will receive it.
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// A token refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// 1-based position among the tokens given.
    pub position: usize,
    /// Absent when there was no token to fingerprint (an empty one).
    pub event_id: Option<Fingerprint>,
    /// Written for an operator; never contains the token.
    pub detail: String,
}

/// Every token refused; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{} of the tokens would be dead-lettered as malformed; nothing was sent", rejected.len())]
pub struct RejectedTokens {
    pub rejected: Vec<Rejected>,
}

impl Render for RejectedTokens {
    fn human(&self) -> String {
        let mut out = format!("mp-resolver enqueue: {self}:\n");
        for r in &self.rejected {
            let id = r
                .event_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            let _ = writeln!(out, "  token #{} (eventId={id}): {}", r.position, r.detail);
        }
        out
    }
}

/// Builds the inbound JSON body (README, "Inbound: the token message") for each token and checks it with [`parse_body`]: all or nothing.
pub fn prepare(tokens: &[String], extras: &Extras) -> Result<Vec<Prepared>, RejectedTokens> {
    let submitted_at = now_rfc3339();
    let mut prepared = Vec::with_capacity(tokens.len());
    let mut rejected = Vec::new();
    for (i, raw) in tokens.iter().enumerate() {
        let token = raw.trim();
        let mut object = Map::new();
        object.insert("registrationToken".into(), Value::from(token));
        if let Some(id) = &extras.signup_id {
            object.insert("signupId".into(), Value::from(id.as_str()));
        }
        if !extras.context.is_empty() {
            object.insert("context".into(), json!(extras.context));
        }
        object.insert("submittedAt".into(), Value::from(submitted_at.as_str()));
        let body = Value::Object(object).to_string();
        match parse_body(&body) {
            Ok(request) => prepared.push(Prepared {
                event_id: request.token.fingerprint(),
                body,
            }),
            Err(malformed) => rejected.push(Rejected {
                position: i + 1,
                event_id: malformed
                    .fingerprint
                    .or_else(|| (!token.is_empty()).then(|| Fingerprint::of(token))),
                detail: malformed.detail,
            }),
        }
    }
    if tokens.is_empty() {
        rejected.push(Rejected {
            position: 0,
            event_id: None,
            detail: "no tokens given (as arguments or on standard input, one per line)".into(),
        });
    }
    if rejected.is_empty() {
        Ok(prepared)
    } else {
        Err(RejectedTokens { rejected })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub event_id: Fingerprint,
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotSent {
    pub event_id: Fingerprint,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueueReport {
    pub ok: bool,
    pub queue_url: String,
    pub sent: Vec<Sent>,
    pub failed: Vec<NotSent>,
}

impl Render for EnqueueReport {
    fn human(&self) -> String {
        let mut out = format!(
            "enqueued {} of {} token(s) on {}\n",
            self.sent.len(),
            self.sent.len() + self.failed.len(),
            self.queue_url
        );
        for s in &self.sent {
            let _ = writeln!(
                out,
                "  sent    eventId={} messageId={}",
                s.event_id, s.message_id
            );
        }
        for f in &self.failed {
            let _ = writeln!(
                out,
                "  FAILED  eventId={} {}: {}",
                f.event_id, f.code, f.message
            );
        }
        if !self.failed.is_empty() {
            let _ = writeln!(
                out,
                "Tokens that failed were not enqueued; run the command again with just those."
            );
        }
        out
    }
}

/// Sends the prepared tokens. A FIFO queue gets each token in its own message group (tokens need
/// no order between them) and the fingerprint as deduplication id: the same token enqueued twice
/// within SQS's five-minute window is one message, which is what the worker would make of it anyway.
pub async fn enqueue(
    sqs_client: &aws_sdk_sqs::Client,
    queue_url: &str,
    prepared: &[Prepared],
) -> EnqueueReport {
    let messages: Vec<(String, &str)> = prepared
        .iter()
        .map(|p| (p.event_id.to_string(), p.body.as_str()))
        .collect();
    let results = send_bodies(sqs_client, queue_url, &messages).await;
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for (p, result) in prepared.iter().zip(results) {
        match result {
            Ok(message_id) => sent.push(Sent {
                event_id: p.event_id.clone(),
                message_id,
            }),
            Err(e) => failed.push(NotSent {
                event_id: p.event_id.clone(),
                code: e.code,
                message: e.message,
            }),
        }
    }
    EnqueueReport {
        ok: failed.is_empty(),
        queue_url: queue_url.to_owned(),
        sent,
        failed,
    }
}

/// Sends `(id, body)` messages, ten per `SendMessageBatch` and inside its size limit, advancing
/// the progress line; per message, its SQS message id or why not. On a FIFO queue the id is each
/// message's group and deduplication id (the messages need no order between them, and SQS drops
/// a resend of the same one within its five-minute window).
pub(super) async fn send_bodies(
    sqs_client: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[(String, &str)],
) -> Vec<Result<String, crate::aws::error::EntryFailure>> {
    let fifo = crate::aws::is_fifo(queue_url);
    let mut results = Vec::with_capacity(messages.len());
    for chunk in chunks(messages, |(_, body)| body.len()) {
        let outgoing: Vec<Outgoing> = chunk
            .iter()
            .map(|(id, body)| Outgoing {
                body: (*body).to_owned(),
                group_id: fifo.then(|| id.clone()),
                deduplication_id: fifo.then(|| id.clone()),
            })
            .collect();
        results.extend(sqs::send(sqs_client, queue_url, &outgoing).await);
        progress::advance(chunk.len());
    }
    results
}

/// Up to ten messages and at most [`MAX_BATCH_BYTES`] per batch.
fn chunks<T>(items: &[T], len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let len = len(item);
        if i > start && (i - start == sqs::BATCH || bytes + len > MAX_BATCH_BYTES) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Parses `--context k=v`.
pub fn parse_context_pair(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {pair:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bodies_are_the_json_form_with_the_extras() {
        let extras = Extras {
            signup_id: Some("s-1".into()),
            context: BTreeMap::from([("plan".into(), "gold".into())]),
        };
        let prepared = prepare(&tokens(&[" tok-a ", "tok-b"]), &extras).unwrap();
        let body: Value = serde_json::from_str(prepared[0].body()).unwrap();
        assert_eq!(body["registrationToken"], "tok-a");
        assert_eq!(body["signupId"], "s-1");
        assert_eq!(body["context"]["plan"], "gold");
        assert!(body["submittedAt"].is_string());
        assert_eq!(prepared[1].event_id, Fingerprint::of("tok-b"));
    }

    #[test]
    fn one_bad_token_refuses_the_lot_without_showing_it() {
        let secret = format!("tok\u{7}{}", "x".repeat(20));
        let err = prepare(&tokens(&["good", &secret, ""]), &Extras::default()).unwrap_err();
        assert_eq!(err.rejected.len(), 2);
        assert_eq!(err.rejected[0].position, 2);
        assert_eq!(err.rejected[0].event_id, Some(Fingerprint::of(&secret)));
        assert_eq!(err.rejected[1].position, 3);
        let shown = format!("{}{}", err.human(), serde_json::to_string(&err).unwrap());
        assert!(!shown.contains(&secret));
    }

    #[test]
    fn extras_out_of_bounds_are_refused() {
        let extras = Extras {
            signup_id: Some("x".repeat(300)),
            ..Extras::default()
        };
        let err = prepare(&tokens(&["tok"]), &extras).unwrap_err();
        assert!(err.rejected[0].detail.contains("signupId"));
    }

    #[test]
    fn no_tokens_is_refused() {
        assert!(prepare(&[], &Extras::default()).is_err());
    }

    #[test]
    fn context_pairs() {
        assert_eq!(
            parse_context_pair("plan=gold=1").unwrap(),
            ("plan".to_owned(), "gold=1".to_owned())
        );
        assert!(parse_context_pair("=x").is_err());
        assert!(parse_context_pair("plan").is_err());
    }

    #[test]
    fn batches_hold_ten_and_respect_the_size_limit() {
        let many: Vec<String> = (0..23).map(|i| format!("tok-{i}")).collect();
        let prepared = prepare(&many, &Extras::default()).unwrap();
        let sizes: Vec<usize> = chunks(&prepared, |p| p.body.len())
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![10, 10, 3]);

        let big: Vec<String> = (0..10)
            .map(|i| format!("{i}{}", "t".repeat(8_000)))
            .collect();
        let extras = Extras {
            signup_id: None,
            context: (0..30)
                .map(|i| (format!("k{i}"), "v".repeat(1_000)))
                .collect(),
        };
        let prepared = prepare(&big, &extras).unwrap();
        for chunk in chunks(&prepared, |p| p.body.len()) {
            let bytes: usize = chunk.iter().map(|p| p.body().len()).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        }
    }
}
