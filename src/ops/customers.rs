//! `mp-resolver customers show|list`: the customer registry (`store::registry`), read. Opens the
//! store `[store]` names (the embedded file while the worker runs, through redb's multi-process
//! mode, or the DynamoDB table) and only reads it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use super::cli::CommonArgs;
use super::load::{self, Needs};
use super::output::{self, ErrorBody, Format, Render};
use super::EXIT_FAILURE;
use crate::config::{Sources, EXIT_CONFIG};
use crate::store::registry::{Registry, Subscription};
use crate::store::Store;

const SHOW_HELP: &str = "\
Examples:
  mp-resolver customers show arn:aws:license-manager::123456789012:license:l-0123456789abcdef
  mp-resolver customers show agmt-4mwg1nevbokzw95eca5797ixs --json
  mp-resolver customers show 123456789012      (every subscription of the account)

Matches the license ARN, agreement id, AWS account id or legacy customer identifier of every
subscription in the registry (a scan of the store: for operators, not the hot path). Exit status: 0
when at least one subscription matches, 1 when none does or the store cannot be read, 78 when the
configuration is invalid.";

const LIST_HELP: &str = "\
Examples:
  mp-resolver customers list
  mp-resolver customers list --access revoke --json | jq '.subscriptions[].licenseArn'

Every subscription in the registry, one line each (a scan of the store).";

#[derive(Debug, Args)]
pub struct CustomersArgs {
    #[command(subcommand)]
    pub command: CustomersCommand,
}

#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Every subscription a license ARN, agreement id or account id names: access, agreement
    /// status, entitlements, signupId, the last event and its time.
    #[command(after_help = SHOW_HELP)]
    Show(ShowArgs),
    /// Every subscription, optionally only those with one access.
    #[command(after_help = LIST_HELP)]
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A license ARN, an agreement id, an AWS account id (or a legacy customer identifier).
    #[arg(value_name = "LICENSE_ARN|AGREEMENT_ID|ACCOUNT_ID")]
    pub key: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only subscriptions with this access.
    #[arg(long, value_enum)]
    pub access: Option<AccessArg>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessArg {
    Grant,
    Revoke,
}

/// One subscription as the commands print it: the item's attributes (README, "The customer
/// registry"), under the same names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub pk: String,
    pub access: &'static str,
    pub previous_access: Option<&'static str>,
    pub reason: String,
    #[serde(rename = "customerAWSAccountId")]
    pub customer_aws_account_id: Option<String>,
    pub product_code: Option<String>,
    pub license_arn: Option<String>,
    pub customer_identifier: Option<String>,
    pub agreement_id: Option<String>,
    pub agreement_status: Option<String>,
    pub entitlements: Value,
    pub signup_id: Option<String>,
    pub context: std::collections::BTreeMap<String, String>,
    pub latest_event_at: Option<String>,
    pub latest_event_id: Option<String>,
    pub latest_event_type: Option<String>,
    pub sequence: u64,
    pub updated_at: String,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        let latest = s.latest.as_ref();
        SubscriptionView {
            pk: s.pk,
            access: s.access.as_str(),
            previous_access: s.previous_access.map(|a| a.as_str()),
            reason: s.reason,
            customer_aws_account_id: s.identity.customer_aws_account_id,
            product_code: s.identity.product_code,
            license_arn: s.identity.license_arn,
            customer_identifier: s.identity.customer_identifier,
            agreement_id: s.identity.agreement_id,
            agreement_status: s.agreement_status,
            entitlements: s.entitlements.unwrap_or(Value::Null),
            signup_id: s.signup_id,
            context: s.context,
            latest_event_at: latest
                .map(|l| l.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            latest_event_id: latest.map(|l| l.event_id.clone()),
            latest_event_type: latest.map(|l| l.event_type.clone()),
            sequence: s.sequence,
            updated_at: s.updated_at,
        }
    }
}

/// What `customers show` and `customers list` print.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomersReport {
    pub ok: bool,
    pub store: String,
    /// What `show` looked for; `None` for `list`.
    pub key: Option<String>,
    pub subscriptions: Vec<SubscriptionView>,
}

fn or_dash(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

/// `Users=10 (until 2027-01-01T00:00:00Z), sso=true`.
fn entitlements_line(entitlements: &Value) -> String {
    let Some(list) = entitlements.as_array() else {
        return "none read".into();
    };
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|e| {
            let dimension = e["dimension"].as_str().unwrap_or("?");
            let value = match &e["value"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match e["expiresAt"].as_str() {
                Some(at) => format!("{dimension}={value} (until {at})"),
                None => format!("{dimension}={value}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Render for CustomersReport {
    fn human(&self) -> String {
        let mut out = String::new();
        if self.subscriptions.is_empty() {
            let _ = match &self.key {
                Some(key) => writeln!(out, "no subscription in {} matches {key}", self.store),
                None => writeln!(out, "no subscriptions in {}", self.store),
            };
            return out;
        }
        if self.key.is_none() {
            let _ = writeln!(
                out,
                "{:<7} {:<13} {:<26} {:<20} {:<30} latest event",
                "access", "account", "product", "signupId", "license / customer"
            );
            for s in &self.subscriptions {
                let who = s.license_arn.as_ref().or(s.customer_identifier.as_ref());
                let _ = writeln!(
                    out,
                    "{:<7} {:<13} {:<26} {:<20} {:<30} {} {}",
                    s.access,
                    or_dash(&s.customer_aws_account_id),
                    or_dash(&s.product_code),
                    or_dash(&s.signup_id),
                    who.map_or("-", String::as_str),
                    or_dash(&s.latest_event_type),
                    or_dash(&s.latest_event_at),
                );
            }
            let _ = writeln!(out, "{} subscription(s)", self.subscriptions.len());
            return out;
        }
        for s in &self.subscriptions {
            let _ = writeln!(out, "{}", s.pk);
            let _ = writeln!(
                out,
                "  access        {} (was {}; {})",
                s.access,
                s.previous_access.unwrap_or("-"),
                s.reason
            );
            let _ = writeln!(
                out,
                "  account       {}",
                or_dash(&s.customer_aws_account_id)
            );
            let _ = writeln!(out, "  product       {}", or_dash(&s.product_code));
            let _ = writeln!(out, "  license       {}", or_dash(&s.license_arn));
            if s.customer_identifier.is_some() {
                let _ = writeln!(out, "  customer      {}", or_dash(&s.customer_identifier));
            }
            let _ = writeln!(
                out,
                "  agreement     {} ({})",
                or_dash(&s.agreement_id),
                s.agreement_status.as_deref().unwrap_or("status not known")
            );
            let _ = writeln!(
                out,
                "  entitlements  {}",
                entitlements_line(&s.entitlements)
            );
            let _ = writeln!(out, "  signupId      {}", or_dash(&s.signup_id));
            if !s.context.is_empty() {
                let context: Vec<String> =
                    s.context.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(out, "  context       {}", context.join(", "));
            }
            let _ = match (&s.latest_event_type, &s.latest_event_at) {
                (Some(kind), Some(at)) => writeln!(
                    out,
                    "  last event    {kind} at {at} (sequence {})",
                    s.sequence
                ),
                _ => writeln!(out, "  last event    none yet (a resolved token only)"),
            };
        }
        out
    }
}

/// The subscriptions of the registry that `key` names (every id field is compared).
pub async fn show(store: &Store, key: &str) -> Result<Vec<Subscription>, crate::store::StoreError> {
    let key = crate::contract::lifecycle::normalize_license_arn(key);
    let mut all = Registry::new(store.clone()).all().await?;
    all.retain(|s| s.identity.names(&key));
    Ok(all)
}

/// Every subscription, with `access` if given.
pub async fn list(
    store: &Store,
    access: Option<AccessArg>,
) -> Result<Vec<Subscription>, crate::store::StoreError> {
    let mut all = Registry::new(store.clone()).all().await?;
    if let Some(access) = access {
        let wanted = match access {
            AccessArg::Grant => "grant",
            AccessArg::Revoke => "revoke",
        };
        all.retain(|s| s.access.as_str() == wanted);
    }
    Ok(all)
}

pub async fn customers(args: CustomersArgs) -> ExitCode {
    match args.command {
        CustomersCommand::Show(args) => {
            run(args.common.config, args.common.json, Some(args.key), None).await
        }
        CustomersCommand::List(args) => {
            run(args.common.config, args.common.json, None, args.access).await
        }
    }
}

async fn run(
    config: Option<PathBuf>,
    json: bool,
    key: Option<String>,
    access: Option<AccessArg>,
) -> ExitCode {
    let format = Format::from_json_flag(json);
    let needs = Needs {
        command: if key.is_some() {
            "customers show"
        } else {
            "customers list"
        },
        keys: &[],
        flags: false,
        example: "mp-resolver customers show agmt-4mwg1nevbokzw95eca5797ixs",
    };
    let sources = Sources::from_process(config);
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
    let store = match Store::open(&loaded.settings.store, &shared).await {
        Ok(store) => store,
        Err(error) => return store_failure(&error, format),
    };
    let found = match &key {
        Some(key) => show(&store, key).await,
        None => list(&store, access).await,
    };
    let subscriptions = match found {
        Ok(found) => found,
        Err(error) => return store_failure(&error, format),
    };
    let report = CustomersReport {
        // `show` of something no subscription names is a failure a script can test.
        ok: key.is_none() || !subscriptions.is_empty(),
        store: store.describe().to_owned(),
        key,
        subscriptions: subscriptions.into_iter().map(Into::into).collect(),
    };
    output::print(&report, format);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

fn store_failure(error: &crate::store::StoreError, format: Format) -> ExitCode {
    let message = format!("the store cannot be read: {error}");
    eprintln!("mp-resolver: {message}");
    eprintln!("Run `mp-resolver check` to see what is wrong and how to fix it.");
    ErrorBody::new("store", message).print(format);
    ExitCode::from(EXIT_FAILURE)
}
