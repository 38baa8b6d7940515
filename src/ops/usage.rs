//! `mp-resolver usage send|show`: usage events onto the usage queue (checked with the worker's
//! own parser first), and the hours the store holds for a customer (`store::usage`), read.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::cli::CommonArgs;
use super::load::{self, Needs, Required};
use super::output::{self, ErrorBody, Format, Render};
use super::progress::{Job, Progress};
use super::{EXIT_DATA, EXIT_FAILURE};
use crate::aws::Clients;
use crate::config::{Sources, EXIT_CONFIG};
use crate::contract::usage::{parse_usage_body, UsageCustomer};
use crate::store::usage::{Hour, HourState, UsageLedger};
use crate::store::{Store, StoreError};
use crate::worker::usage::schedule::{hour_label, hour_of, parse_hour_label, HOUR};

const SEND_HELP: &str = "\
Examples:
  mp-resolver usage send '{\"usageId\":\"req-1\",\"licenseArn\":\"arn:aws:license-manager::123456789012:license:l-1\",\"customerAWSAccountId\":\"123456789012\",\"dimension\":\"api_calls\",\"quantity\":5,\"timestamp\":\"2026-12-04T10:15:00Z\"}'
  jq -c '.[]' usage.json | mp-resolver usage send --json

Each event is one JSON object in the README's \"Inbound: the usage event\" format: as arguments, or
on standard input one per line. Only the usage queue is needed: MPR_USAGE_QUEUE_URL,
usage_queue_url in --config, or --usage-queue-url. Every event is checked with the worker's own
parser first: if any would be dead-lettered as malformed, nothing is sent (exit 65). Sending an
event twice is harmless: the worker counts each usageId once.";

const SHOW_HELP: &str = "\
Examples:
  mp-resolver usage show arn:aws:license-manager::123456789012:license:l-0123456789abcdef
  mp-resolver usage show 123456789012 --hour 2026-12-04T10 --json

Every hour of usage the store holds for the subscriptions a license ARN, AWS account id or legacy
customer identifier names, per dimension: the quantity, the events counted, and the hour's state:
open (the hour has not ended), settling (ended, waiting for metering.settle_secs of quiet),
metering (a task holds its claim), metered (with the MeteringRecordId) or failed (with what AWS
answered and the dead-letter reason). A scan of the store: for operators, not the hot path. Exit
status: 0 when at least one hour matches, 1 when none does or the store cannot be read, 78 when
the configuration is invalid.";

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub command: UsageCommand,
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Put usage events on the usage queue (for scripts, trials and tests).
    #[command(after_help = SEND_HELP)]
    Send(SendArgs),
    /// The hours of usage of a license, account or legacy customer, and where each stands.
    #[command(after_help = SHOW_HELP)]
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The usage queue, instead of MPR_USAGE_QUEUE_URL / usage_queue_url.
    #[arg(long, value_name = "URL")]
    pub usage_queue_url: Option<String>,
    /// Usage events, one JSON object each. None, or `-`, reads standard input, one per line.
    #[arg(value_name = "EVENT")]
    pub events: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A license ARN, an AWS account id, or a legacy customer identifier.
    #[arg(value_name = "LICENSE_ARN|ACCOUNT_ID|CUSTOMER_IDENTIFIER")]
    pub key: String,
    /// Only this hour: `2026-12-04T10` (or any RFC 3339 time inside it).
    #[arg(long, value_name = "HOUR", value_parser = parse_hour_arg)]
    pub hour: Option<i64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `2026-12-04T10`, or an RFC 3339 time (the hour it falls in).
fn parse_hour_arg(text: &str) -> Result<i64, String> {
    parse_hour_label(text)
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| hour_of(t.timestamp()))
        })
        .ok_or_else(|| format!("expected an hour like 2026-12-04T10, got {text:?}"))
}

pub async fn usage(args: UsageArgs) -> ExitCode {
    match args.command {
        UsageCommand::Send(args) => send(args).await,
        UsageCommand::Show(args) => show(args).await,
    }
}

// ---- send ---------------------------------------------------------------------------------

/// An event refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedEvent {
    /// 1-based position among the events given.
    pub position: usize,
    pub detail: String,
}

/// Every event refused; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{} of the usage events would be dead-lettered as malformed; nothing was sent", rejected.len())]
pub struct RejectedEvents {
    pub rejected: Vec<RejectedEvent>,
}

impl Render for RejectedEvents {
    fn human(&self) -> String {
        let mut out = format!("mp-resolver usage send: {self}:\n");
        for r in &self.rejected {
            let _ = writeln!(out, "  event #{}: {}", r.position, r.detail);
        }
        out
    }
}

/// A usage event ready to send: its usageId and its body, exactly as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    pub usage_id: String,
    pub body: String,
}

/// Checks every event with the worker's parser: all or nothing.
pub fn prepare(events: &[String]) -> Result<Vec<PreparedEvent>, RejectedEvents> {
    let mut prepared = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (i, body) in events.iter().enumerate() {
        match parse_usage_body(body) {
            Ok(event) => prepared.push(PreparedEvent {
                usage_id: event.usage_id,
                body: body.trim().to_owned(),
            }),
            Err(malformed) => rejected.push(RejectedEvent {
                position: i + 1,
                detail: malformed.detail,
            }),
        }
    }
    if events.is_empty() {
        rejected.push(RejectedEvent {
            position: 0,
            detail: "no usage events given (as arguments or on standard input, one per line)"
                .into(),
        });
    }
    if rejected.is_empty() {
        Ok(prepared)
    } else {
        Err(RejectedEvents { rejected })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SentEvent {
    pub usage_id: String,
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotSentEvent {
    pub usage_id: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendReport {
    pub ok: bool,
    pub usage_queue_url: String,
    pub sent: Vec<SentEvent>,
    pub failed: Vec<NotSentEvent>,
}

impl Render for SendReport {
    fn human(&self) -> String {
        let mut out = format!(
            "sent {} of {} usage event(s) to {}\n",
            self.sent.len(),
            self.sent.len() + self.failed.len(),
            self.usage_queue_url
        );
        for s in &self.sent {
            let _ = writeln!(
                out,
                "  sent    usageId={} messageId={}",
                s.usage_id, s.message_id
            );
        }
        for f in &self.failed {
            let _ = writeln!(
                out,
                "  FAILED  usageId={} {}: {}",
                f.usage_id, f.code, f.message
            );
        }
        if !self.failed.is_empty() {
            let _ = writeln!(
                out,
                "Events that failed were not sent; send them again (a usageId is counted once)."
            );
        }
        out
    }
}

/// Sends the prepared events, ten per batch (on a FIFO queue the usageId is the deduplication id).
pub async fn send_events(
    sqs_client: &aws_sdk_sqs::Client,
    usage_queue_url: &str,
    prepared: &[PreparedEvent],
) -> SendReport {
    let messages: Vec<(String, &str)> = prepared
        .iter()
        .map(|p| (p.usage_id.clone(), p.body.as_str()))
        .collect();
    let results = super::enqueue::send_bodies(sqs_client, usage_queue_url, &messages).await;
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for (p, result) in prepared.iter().zip(results) {
        match result {
            Ok(message_id) => sent.push(SentEvent {
                usage_id: p.usage_id.clone(),
                message_id,
            }),
            Err(e) => failed.push(NotSentEvent {
                usage_id: p.usage_id.clone(),
                code: e.code,
                message: e.message,
            }),
        }
    }
    SendReport {
        ok: failed.is_empty(),
        usage_queue_url: usage_queue_url.to_owned(),
        sent,
        failed,
    }
}

async fn send(args: SendArgs) -> ExitCode {
    let format = Format::from_json_flag(args.common.json);
    let needs = Needs {
        command: "usage send",
        keys: &[Required::UsageQueueUrl],
        flags: true,
        example: "mp-resolver usage send < usage.jsonl",
    };
    let mut sources = Sources::from_process(args.common.config);
    load::apply_overrides(
        &mut sources,
        &[(Required::UsageQueueUrl, args.usage_queue_url)],
    );
    let loaded = match load::load_requiring(&sources, &needs) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprint!("{}", load::explain(&error, &sources, &needs));
            ErrorBody {
                missing: load::missing(&sources, &needs)
                    .iter()
                    .map(|k| k.env())
                    .collect(),
                ..ErrorBody::new("configuration", error.to_string())
            }
            .print(format);
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let events =
        match super::cli::read_args_or_stdin(args.events, "usage events (one JSON object each)") {
            Ok(events) => events,
            Err(message) => {
                eprintln!("mp-resolver usage send: {message}");
                ErrorBody::new("input", message).print(format);
                return ExitCode::from(EXIT_DATA);
            }
        };
    let prepared = match prepare(&events) {
        Ok(prepared) => prepared,
        Err(rejected) => {
            eprint!("{}", output::render(&rejected, Format::Human));
            ErrorBody {
                details: serde_json::to_value(&rejected).ok(),
                ..ErrorBody::new("input", rejected.to_string())
            }
            .print(format);
            return ExitCode::from(EXIT_DATA);
        }
    };
    let clients = Clients::from_environment(&loaded.settings).await;
    let job = Job {
        command: "usage send",
        unit: "events",
    };
    let report = Progress::on_stderr(format, job, Some(prepared.len() as u64))
        .run(send_events(
            &clients.sqs,
            &loaded.settings.usage_queue_url,
            &prepared,
        ))
        .await;
    output::print(&report, format);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

// ---- show ---------------------------------------------------------------------------------

/// One hour as `usage show` prints it (the hour item's attributes, README "Metering usage").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HourView {
    pub subscription: String,
    pub dimension: String,
    pub product_code: String,
    #[serde(rename = "customerAWSAccountId")]
    pub customer_aws_account_id: Option<String>,
    pub license_arn: Option<String>,
    pub customer_identifier: Option<String>,
    /// `2026-12-04T10`.
    pub hour: String,
    pub quantity: i64,
    pub events: u64,
    /// open, settling, metering, metered or failed.
    pub state: &'static str,
    pub metering_record_id: Option<String>,
    /// What AWS answered for a failed hour (or `OutsideMeteringWindow`).
    pub status: Option<String>,
    /// The dead-letter reason of a failed hour's usage.
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub carried_from: Vec<String>,
    /// Its answer was reported (the `marketplace.usage.metered` event published).
    pub reported: bool,
}

impl HourView {
    fn of(hour: Hour, now: i64) -> Self {
        let (account, license, legacy) = match hour.customer {
            UsageCustomer::Account {
                aws_account_id,
                license_arn,
            } => (Some(aws_account_id), Some(license_arn), None),
            UsageCustomer::Legacy {
                customer_identifier,
            } => (None, None, Some(customer_identifier)),
        };
        let (state, record_id, status, reason, detail) = match hour.state {
            HourState::Open if now < hour.hour + HOUR => ("open", None, None, None, None),
            HourState::Open => ("settling", None, None, None, None),
            HourState::Claimed { .. } => ("metering", None, None, None, None),
            HourState::Metered { record_id } => ("metered", Some(record_id), None, None, None),
            HourState::Failed {
                status,
                reason,
                detail,
            } => ("failed", None, Some(status), Some(reason), Some(detail)),
        };
        HourView {
            subscription: hour.subscription,
            dimension: hour.dimension,
            product_code: hour.product_code,
            customer_aws_account_id: account,
            license_arn: license,
            customer_identifier: legacy,
            hour: hour_label(hour.hour),
            quantity: hour.quantity,
            events: hour.events,
            state,
            metering_record_id: record_id,
            status,
            reason,
            detail,
            carried_from: hour.carried_from.iter().map(|h| hour_label(*h)).collect(),
            reported: hour.reported,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub ok: bool,
    pub store: String,
    pub key: String,
    pub hour: Option<String>,
    /// By subscription, dimension, then hour.
    pub hours: Vec<HourView>,
}

impl Render for UsageReport {
    fn human(&self) -> String {
        let mut out = String::new();
        if self.hours.is_empty() {
            let _ = writeln!(
                out,
                "no usage in {} for {}{}",
                self.store,
                self.key,
                self.hour
                    .as_ref()
                    .map_or_else(String::new, |h| format!(" in hour {h}"))
            );
            return out;
        }
        let mut current: Option<(&str, &str)> = None;
        for h in &self.hours {
            if current != Some((&h.subscription, &h.dimension)) {
                current = Some((&h.subscription, &h.dimension));
                let who = h
                    .license_arn
                    .as_ref()
                    .or(h.customer_identifier.as_ref())
                    .map_or("-", String::as_str);
                let _ = writeln!(
                    out,
                    "{who}  dimension {}  (product {}, account {})",
                    h.dimension,
                    h.product_code,
                    h.customer_aws_account_id.as_deref().unwrap_or("-")
                );
                let _ = writeln!(
                    out,
                    "  {:<14} {:>10} {:>7}  {:<9} detail",
                    "hour", "quantity", "events", "state"
                );
            }
            let detail = match (h.state, &h.metering_record_id, &h.status) {
                ("metered", Some(id), _) => format!("meteringRecordId {id}"),
                ("failed", _, Some(status)) => format!(
                    "{status} -> dead-lettered as {} {}",
                    h.reason.as_deref().unwrap_or("-"),
                    h.detail.as_deref().unwrap_or("")
                ),
                _ => String::new(),
            };
            let carried = if h.carried_from.is_empty() {
                String::new()
            } else {
                format!(" (carries late usage of {})", h.carried_from.join(", "))
            };
            let _ = writeln!(
                out,
                "  {:<14} {:>10} {:>7}  {:<9} {detail}{carried}",
                h.hour, h.quantity, h.events, h.state
            );
        }
        let total: i64 = self.hours.iter().map(|h| h.quantity).sum();
        let _ = writeln!(out, "{} hour(s), total quantity {total}", self.hours.len());
        out
    }
}

/// The hours of the subscriptions `key` names, in `hour` if given, ordered for printing.
pub async fn hours_for(
    store: &Store,
    key: &str,
    hour: Option<i64>,
) -> Result<Vec<Hour>, StoreError> {
    let key = crate::contract::lifecycle::normalize_license_arn(key);
    let mut hours = UsageLedger::new(store.clone()).hours_of(&key).await?;
    hours.retain(|h| hour.is_none_or(|wanted| h.hour == wanted));
    hours.sort_by(|a, b| {
        (&a.subscription, &a.dimension, a.hour).cmp(&(&b.subscription, &b.dimension, b.hour))
    });
    Ok(hours)
}

async fn show(args: ShowArgs) -> ExitCode {
    let format = Format::from_json_flag(args.common.json);
    let needs = Needs {
        command: "usage show",
        keys: &[],
        flags: false,
        example: "mp-resolver usage show 123456789012",
    };
    let sources = Sources::from_process(args.common.config);
    let loaded = match load::load_for(&sources, &needs) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprint!("{}", load::explain(&error, &sources, &needs));
            ErrorBody::new("configuration", error.to_string()).print(format);
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let found = match Store::open(&loaded.settings.store, &shared).await {
        Ok(store) => hours_for(&store, &args.key, args.hour)
            .await
            .map(|hours| (store.describe().to_owned(), hours)),
        Err(error) => Err(error),
    };
    let (store, hours) = match found {
        Ok(found) => found,
        Err(error) => {
            let message = format!("the store cannot be read: {error}");
            eprintln!("mp-resolver: {message}");
            eprintln!("Run `mp-resolver check` to see what is wrong and how to fix it.");
            ErrorBody::new("store", message).print(format);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let now = crate::store::now_secs();
    let report = UsageReport {
        ok: !hours.is_empty(),
        store,
        key: args.key,
        hour: args.hour.map(hour_label),
        hours: hours.into_iter().map(|h| HourView::of(h, now)).collect(),
    };
    output::print(&report, format);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(usage_id: &str) -> String {
        format!(
            r#"{{"usageId":"{usage_id}","customerAWSAccountId":"111122223333",
            "licenseArn":"arn:aws:license-manager::111122223333:license:l-1","dimension":"api",
            "quantity":3,"timestamp":"2026-12-04T10:15:00Z"}}"#
        )
    }

    #[test]
    fn events_are_sent_as_given_and_named_by_their_usage_id() {
        let prepared = prepare(&[event("a"), format!("  {}  ", event("b"))]).unwrap();
        assert_eq!(prepared[0].usage_id, "a");
        assert_eq!(prepared[0].body, event("a"));
        assert_eq!(prepared[1].body, event("b"), "trimmed, otherwise unchanged");
    }

    #[test]
    fn one_malformed_event_refuses_the_lot() {
        let err = prepare(&[event("a"), "{\"usageId\":\"b\"}".into(), String::new()]).unwrap_err();
        let positions: Vec<usize> = err.rejected.iter().map(|r| r.position).collect();
        assert_eq!(positions, vec![2, 3]);
        assert!(err.human().contains("event #2"), "{}", err.human());
        assert!(prepare(&[]).is_err(), "nothing given");
    }

    #[test]
    fn hours_are_given_as_labels_or_times_inside_them() {
        let ten = parse_hour_label("2026-12-04T10").unwrap();
        assert_eq!(parse_hour_arg("2026-12-04T10"), Ok(ten));
        assert_eq!(parse_hour_arg("2026-12-04T10:59:59Z"), Ok(ten));
        assert!(parse_hour_arg("yesterday").is_err());
    }
}
