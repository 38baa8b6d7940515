//! The operator subcommands' arguments, and the step from arguments to library call to output and
//! exit code. `src/main.rs` only routes to these.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::check;
use super::dlq;
use super::enqueue::{self, Extras};
use super::load::{self, Needs, Required};
use super::output::{self, ErrorBody, Format, Render};
use super::progress::{Job, Progress};
use super::redrive::{self, RedriveOptions};
use super::{EXIT_DATA, EXIT_FAILURE};
use crate::aws::error::CallError;
use crate::aws::Clients;
use crate::config::{ConfigError, Loaded, Sources, EXIT_CONFIG};

const CHECK_HELP: &str = "\
Examples:
  mp-resolver check
  mp-resolver check --config prod.toml --json | jq '.checks[] | select(.outcome != \"pass\")'

Checks: configuration, aws_region, queue, dlq, queue_types, redrive_policy, visibility_timeout,
queue_visibility_timeout, dlq_retention, topic, topic_fifo, resolve_customer (a call with a
deliberately invalid token must answer InvalidTokenException); with lifecycle_queue_url also
lifecycle_queue, lifecycle_dlq, lifecycle_redrive_policy and get_entitlements; with
usage_queue_url also usage_queue, usage_dlq, usage_redrive_policy and batch_meter_usage (a record
of quantity 0 for a made-up product, which AWS refuses and nothing bills); with
marketplace.role_arn also marketplace_role (the API calls then run as that role); last, store
(the embedded file or the DynamoDB table opens, has the key schema, and takes a write).
docs/operations.md explains each.

Exit status: 0 when no check failed (warnings allowed), 1 when one did, 78 when the configuration
is missing or invalid.";

const ENQUEUE_HELP: &str = "\
Examples:
  mp-resolver enqueue \"$TOKEN\"
  mp-resolver enqueue --signup-id signup-42 --context plan=gold --context source=trial \"$TOKEN\"
  cut -f2 tokens.tsv | mp-resolver enqueue --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/mpr-tokens --json

Only the token queue is needed: MPR_QUEUE_URL, queue_url in --config, or --queue-url. Tokens given
as arguments show up in `ps` and shell history; prefer standard input for real ones. Every token is
checked with the worker's own parser first: if any would be dead-lettered as malformed, nothing is
sent (exit 65). Output names each token by its fingerprint (the eventId), never the token.";

const DLQ_HELP: &str = "\
Examples:
  mp-resolver dlq                      (same as `dlq list`)
  mp-resolver dlq list --max 100 --json | jq '.groups[] | {reason, count}'
  mp-resolver dlq redrive --reason expired_token --max 10";

const LIST_HELP: &str = "\
Examples:
  mp-resolver dlq list
  mp-resolver dlq list --dlq-url https://sqs.us-east-1.amazonaws.com/123456789012/mpr-tokens-dlq --json
  mp-resolver dlq list --lifecycle         (the lifecycle queue's dead-letters, lifecycle_dlq_url)
  mp-resolver dlq list --usage             (the usage queue's dead-letters, usage_dlq_url)

Nothing is consumed: messages are received with a 60 s visibility timeout and handed back with
visibility 0 once listed. Groups are the mpr.reason attribute; dead-letters without one were moved
by the token queue's redrive policy (maxReceiveCount) and are grouped as `redrive_policy`.
Dead-letters with the same mpr.sourceMessageId are copies of one letter: counted once, with their
number of copies. Ages are from the message's SentTimestamp on the dead-letter queue.";

const REDRIVE_HELP: &str = "\
Examples:
  mp-resolver dlq redrive --reason expired_token --max 10
  mp-resolver dlq redrive                  (everything, copied one by one)
  mp-resolver dlq redrive --move-task      (everything, by SQS's own message move task)
  mp-resolver dlq redrive --lifecycle --reason unrecognized_notification
                                           (lifecycle_dlq_url back to lifecycle_queue_url)
  mp-resolver dlq redrive --usage --reason customer_not_subscribed
                                           (usage_dlq_url back to usage_queue_url)

Reasons: invalid_token, expired_token, malformed_message, product_mismatch, unpublished,
unrecognized_notification, redrive_policy; for usage outside_metering_window,
customer_not_subscribed, invalid_dimension, invalid_product, invalid_customer,
invalid_allocations, duplicate_record. A redriven usage event whose hour failed is counted again,
in the earliest hour still open (carried); one counted in an hour that stands is not.
Copies of one letter (same mpr.sourceMessageId) are sent once; the other copies are deleted.
Each copy is sent to the token queue, body unchanged and without the mpr.* attributes, before its
original is deleted from the dead-letter queue; messages not taken are handed back at once.
Letters that carry their resolved event (unpublished, product_mismatch) are published to the topic
instead, with no ResolveCustomer call (their tokens are spent); a product_mismatch letter only once
its product is in product_codes.
--move-task is faster for a large backlog, but SQS carries the mpr.* attributes along, and it is
refused while any letter carries a resolved event (the console's redrive has the same problem:
don't use it on the token dead-letter queue).";

#[derive(Debug, Args)]
#[command(after_help = CHECK_HELP)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The flags every operator command has: where the configuration is, and how to report.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A TOML file layered over the defaults, as for `run` (environment variables still win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = ENQUEUE_HELP)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The token queue, instead of MPR_QUEUE_URL / queue_url.
    #[arg(long, value_name = "URL")]
    pub queue_url: Option<String>,
    /// `signupId` sent with every token.
    #[arg(long, value_name = "ID")]
    pub signup_id: Option<String>,
    /// A `context` entry sent with every token; repeat for more.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = enqueue::parse_context_pair)]
    pub context: Vec<(String, String)>,
    /// Registration tokens. None, or `-`, reads standard input, one token per line.
    #[arg(value_name = "TOKEN")]
    pub tokens: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = DLQ_HELP, args_conflicts_with_subcommands = true)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: Option<DlqCommand>,
    /// Without a subcommand, `dlq` lists.
    #[command(flatten)]
    pub list: DlqListArgs,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-letters grouped by reason, with counts, ages and fingerprints, without consuming them.
    List(DlqListArgs),
    /// Move dead-letters back to the token queue, body unchanged.
    Redrive(DlqRedriveArgs),
}

/// Which dead-letter queue a `dlq` subcommand works on, and how it reports.
#[derive(Debug, Args)]
pub struct DlqTarget {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The dead-letter queue, instead of MPR_DLQ_URL / dlq_url.
    #[arg(long, value_name = "URL")]
    pub dlq_url: Option<String>,
    /// The lifecycle queue's dead-letters (MPR_LIFECYCLE_DLQ_URL / lifecycle_dlq_url) instead; a
    /// redrive then moves them back to the lifecycle queue (lifecycle_queue_url).
    #[arg(long, conflicts_with = "dlq_url")]
    pub lifecycle: bool,
    /// The usage queue's dead-letters (MPR_USAGE_DLQ_URL / usage_dlq_url) instead; a redrive then
    /// moves them back to the usage queue (usage_queue_url), where they are counted again.
    #[arg(long, conflicts_with_all = ["dlq_url", "lifecycle"])]
    pub usage: bool,
}

impl DlqTarget {
    fn lane(&self) -> load::DlqLane {
        if self.lifecycle {
            load::DlqLane::Lifecycle
        } else if self.usage {
            load::DlqLane::Usage
        } else {
            load::DlqLane::Tokens
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = LIST_HELP)]
pub struct DlqListArgs {
    #[command(flatten)]
    pub target: DlqTarget,
    /// Look at no more than this many messages (they are all held invisible while listing).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max: u64,
}

#[derive(Debug, Args)]
#[command(after_help = REDRIVE_HELP)]
pub struct DlqRedriveArgs {
    #[command(flatten)]
    pub target: DlqTarget,
    /// Where to move them, instead of MPR_QUEUE_URL / queue_url.
    #[arg(long, value_name = "URL", conflicts_with_all = ["lifecycle", "usage"])]
    pub queue_url: Option<String>,
    /// Only dead-letters with this reason.
    #[arg(long, value_name = "REASON")]
    pub reason: Option<dlq::LetterReason>,
    /// Move at most this many.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max: Option<u64>,
    /// Let SQS move the whole queue (StartMessageMoveTask); falls back to copying if refused.
    #[arg(long, conflicts_with_all = ["reason", "max"])]
    pub move_task: bool,
}

pub async fn check(args: CheckArgs) -> ExitCode {
    let format = Format::from_json_flag(args.common.json);
    let needs = Needs {
        command: "check",
        keys: &Required::ALL,
        flags: false,
        example: "mp-resolver check",
    };
    let sources = Sources::from_process(args.common.config);
    let loaded = match load::load_for(&sources, &needs) {
        Ok(loaded) => loaded,
        Err(error) => return config_failure(&error, &sources, &needs, format),
    };
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let clients = Clients::from_sdk_config_with_role(&shared, &loaded.settings).await;
    let mut report = check::run_checks(&clients, &loaded.settings)
        .await
        .prepend(check::configuration(&loaded.ignored_env));
    report.push(check::store(&loaded.settings, &shared).await);
    output::print(&report, format);
    exit(report.ok)
}

pub async fn enqueue(args: EnqueueArgs) -> ExitCode {
    let format = Format::from_json_flag(args.common.json);
    let needs = Needs {
        command: "enqueue",
        keys: &[Required::QueueUrl],
        flags: true,
        example: "mp-resolver enqueue \"$TOKEN\"",
    };
    let Some(loaded) = load_with_flags(
        args.common.config,
        &[(Required::QueueUrl, args.queue_url)],
        &needs,
        format,
    ) else {
        return ExitCode::from(EXIT_CONFIG as u8);
    };
    let tokens = match read_args_or_stdin(args.tokens, "tokens") {
        Ok(tokens) => tokens,
        Err(message) => return input_failure(message, format),
    };
    let extras = Extras {
        signup_id: args.signup_id,
        context: args.context.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let prepared = match enqueue::prepare(&tokens, &extras) {
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
        command: "enqueue",
        unit: "tokens",
    };
    let report = Progress::on_stderr(format, job, Some(prepared.len() as u64))
        .run(enqueue::enqueue(
            &clients.sqs,
            &loaded.settings.queue_url,
            &prepared,
        ))
        .await;
    output::print(&report, format);
    exit(report.ok)
}

/// The store `[store]` names, for an operator command that can do without it (a warning when it
/// cannot be opened).
async fn open_store_for(settings: &crate::config::Settings) -> Option<crate::store::Store> {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    match crate::store::Store::open(&settings.store, &shared).await {
        Ok(store) => Some(store),
        Err(e) => {
            eprintln!("mp-resolver: the store could not be opened ({e}); letters whose event is in it stay on the dead-letter queue");
            None
        }
    }
}

pub async fn dlq(args: DlqArgs) -> ExitCode {
    match args.command {
        None => dlq_list(args.list).await,
        Some(DlqCommand::List(list)) => dlq_list(list).await,
        Some(DlqCommand::Redrive(redrive)) => dlq_redrive(redrive).await,
    }
}

/// A `dlq` subcommand's configuration, clients and the (dead-letter queue, its source queue)
/// pair it works on: the token queue's, or the lifecycle queue's with `--lifecycle`.
struct DlqSetup {
    settings: crate::config::Settings,
    clients: Clients,
    dlq_url: String,
    queue_url: String,
}

/// Loads what `command` needs (`keys` unless `--lifecycle`), with the URL flags on top; on
/// failure the explanation is printed and the exit code returned.
async fn dlq_setup(
    target: DlqTarget,
    queue_url: Option<String>,
    keys: &'static [Required],
    command: &'static str,
    example: &'static str,
) -> Result<DlqSetup, ExitCode> {
    let lane = target.lane();
    let needs = Needs {
        command,
        keys: if lane == load::DlqLane::Tokens {
            keys
        } else {
            &[]
        },
        flags: true,
        example,
    };
    let format = Format::from_json_flag(target.common.json);
    let flags = [
        (Required::QueueUrl, queue_url),
        (Required::DlqUrl, target.dlq_url),
    ];
    let Some(loaded) = load_with_flags(target.common.config, &flags, &needs, format) else {
        return Err(ExitCode::from(EXIT_CONFIG as u8));
    };
    let Some((dlq_url, queue_url)) = load::dlq_queues(&loaded.settings, lane, command) else {
        return Err(ExitCode::from(EXIT_CONFIG as u8));
    };
    Ok(DlqSetup {
        clients: Clients::from_environment(&loaded.settings).await,
        settings: loaded.settings,
        dlq_url,
        queue_url,
    })
}

/// Prints a command's report, or the AWS failure that stopped it; exits by the report's verdict.
fn report<R: Render + serde::Serialize>(
    result: Result<R, CallError>,
    ok: impl FnOnce(&R) -> bool,
    format: Format,
) -> ExitCode {
    match result {
        Ok(report) => {
            output::print(&report, format);
            exit(ok(&report))
        }
        Err(error) => aws_failure(&error, format),
    }
}

async fn dlq_list(args: DlqListArgs) -> ExitCode {
    let format = Format::from_json_flag(args.target.common.json);
    let setup = match dlq_setup(
        args.target,
        None,
        &[Required::DlqUrl],
        "dlq list",
        "mp-resolver dlq list",
    )
    .await
    {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let max = usize::try_from(args.max).unwrap_or(usize::MAX);
    let job = Job {
        command: "dlq list",
        unit: "messages",
    };
    let listing = Progress::on_stderr(format, job, None)
        .run(dlq::list(&setup.clients.sqs, &setup.dlq_url, max))
        .await;
    report(listing, |r| r.ok, format)
}

async fn dlq_redrive(args: DlqRedriveArgs) -> ExitCode {
    let format = Format::from_json_flag(args.target.common.json);
    let setup = match dlq_setup(
        args.target,
        args.queue_url,
        &[Required::QueueUrl, Required::DlqUrl],
        "dlq redrive",
        "mp-resolver dlq redrive --reason expired_token",
    )
    .await
    {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    // `unpublished` letters are published to the topic, when one is configured.
    let topic = setup.settings.topic_arn.trim();
    let options = RedriveOptions {
        reason: args.reason,
        max: args.max.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        move_task: args.move_task,
        publisher: (!topic.is_empty())
            .then(|| crate::aws::sns::Publisher::new(setup.clients.sns.clone(), topic.to_owned())),
        product_codes: setup.settings.product_codes.clone(),
        // Letters too large to carry their event refer to the store item holding it.
        store: open_store_for(&setup.settings).await,
    };
    let job = Job {
        command: "dlq redrive",
        unit: "moved",
    };
    let redriven = Progress::on_stderr(format, job, None)
        .run(redrive::redrive(
            &setup.clients.sqs,
            &setup.dlq_url,
            &setup.queue_url,
            &options,
        ))
        .await;
    report(redriven, |r| r.ok, format)
}

/// Loads the configuration with the command's URL flags on top; on failure prints the explanation
/// and returns `None` (the caller exits with EX_CONFIG).
fn load_with_flags(
    config_file: Option<PathBuf>,
    flags: &[(Required, Option<String>)],
    needs: &Needs,
    format: Format,
) -> Option<Loaded> {
    let mut sources = Sources::from_process(config_file);
    load::apply_overrides(&mut sources, flags);
    match load::load_for(&sources, needs) {
        Ok(loaded) => Some(loaded),
        Err(error) => {
            config_failure(&error, &sources, needs, format);
            None
        }
    }
}

/// The entries given as arguments; none, or `-`, means standard input too, one per line (blank
/// lines skipped). `what` names them in the prompt shown when standard input is a terminal.
pub(crate) fn read_args_or_stdin(args: Vec<String>, what: &str) -> Result<Vec<String>, String> {
    if !args.is_empty() && !args.iter().any(|a| a == "-") {
        return Ok(args);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Reading {what} from standard input, one per line; end with Ctrl-D.");
    }
    let mut entries: Vec<String> = args.into_iter().filter(|a| a != "-").collect();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("cannot read standard input: {e}"))?;
        if !line.trim().is_empty() {
            entries.push(line);
        }
    }
    Ok(entries)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

fn config_failure(
    error: &ConfigError,
    sources: &Sources,
    needs: &Needs,
    format: Format,
) -> ExitCode {
    eprint!("{}", load::explain(error, sources, needs));
    let missing = load::missing(sources, needs);
    ErrorBody {
        missing: missing.iter().map(|k| k.env()).collect(),
        ..ErrorBody::new("configuration", error.to_string())
    }
    .print(format);
    ExitCode::from(EXIT_CONFIG as u8)
}

fn aws_failure(error: &CallError, format: Format) -> ExitCode {
    let message = error.to_string();
    eprintln!("mp-resolver: {message}");
    eprintln!("Run `mp-resolver check` to see what is wrong and how to fix it.");
    ErrorBody::new("aws", message).print(format);
    ExitCode::from(EXIT_FAILURE)
}

fn input_failure(message: String, format: Format) -> ExitCode {
    eprintln!("mp-resolver enqueue: {message}");
    ErrorBody::new("input", message).print(format);
    ExitCode::from(EXIT_DATA)
}

const STORE_HELP: &str = "\
Examples:
  mp-resolver store create-table --table mp-resolver-state
  AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:4568 mp-resolver store create-table --table mpr-local

Creates the DynamoDB table the `dynamodb` store uses (partition key pk, sort key sk, both strings;
on-demand; TTL on expiresAt), unless it exists with that schema: safe to run again. For local use
and tests; production tables come from deploy/cloudformation/messaging.yaml (with point-in-time
recovery). The table is store.table (MPR_STORE__TABLE) unless --table names one.";

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the DynamoDB table of the `dynamodb` store (idempotent).
    #[command(after_help = STORE_HELP)]
    CreateTable(CreateTableArgs),
}

#[derive(Debug, Args)]
pub struct CreateTableArgs {
    /// The table's name (default: store.table).
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What `store create-table` found or made.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TableReport {
    ok: bool,
    table: String,
    status: String,
    detail: Option<String>,
}

impl Render for TableReport {
    fn human(&self) -> String {
        match &self.detail {
            None => format!(
                "table {} is ready ({}): pk (S) and sk (S), on demand, TTL on expiresAt\n",
                self.table, self.status
            ),
            Some(detail) => format!("table {}: {detail}\n", self.table),
        }
    }
}

pub async fn store(args: StoreArgs) -> ExitCode {
    match args.command {
        StoreCommand::CreateTable(args) => create_table(args).await,
    }
}

async fn create_table(args: CreateTableArgs) -> ExitCode {
    let format = Format::from_json_flag(args.common.json);
    let needs = Needs {
        command: "store create-table",
        keys: &[],
        flags: false,
        example: "mp-resolver store create-table --table mp-resolver-state",
    };
    let sources = Sources::from_process(args.common.config);
    let loaded = match load::load_for(&sources, &needs) {
        Ok(loaded) => loaded,
        Err(error) => return config_failure(&error, &sources, &needs, format),
    };
    let table = args
        .table
        .unwrap_or_else(|| loaded.settings.store.table.clone());
    if table.trim().is_empty() {
        ErrorBody::new(
            "configuration",
            "configuration key `store.table` (env MPR_STORE__TABLE): is required: the table to \
             create (or pass --table NAME)"
                .to_owned(),
        )
        .print(format);
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let report = match crate::store::create_table(&shared, &table).await {
        Ok(crate::store::TableCheck::Ready { status }) => TableReport {
            ok: true,
            table,
            status,
            detail: None,
        },
        Ok(crate::store::TableCheck::WrongSchema(detail)) => TableReport {
            ok: false,
            table,
            status: "WRONG_SCHEMA".into(),
            detail: Some(format!("exists, but is not the store's: {detail}")),
        },
        Ok(crate::store::TableCheck::Missing) => TableReport {
            ok: false,
            table,
            status: "MISSING".into(),
            detail: Some("was created but cannot be described yet; run again".into()),
        },
        Err(e) => TableReport {
            ok: false,
            table,
            status: "ERROR".into(),
            detail: Some(e.to_string()),
        },
    };
    output::print(&report, format);
    exit(report.ok)
}
