//! Configuration for the operator commands, and the explanation a first run gets.
//!
//! `check` and `run` need the whole configuration and load it with [`config::load`] unchanged.
//! `enqueue` and `dlq` need only one or two of the three required keys; for them the keys they do
//! not use are filled with placeholders *when unset*, so the full validation still runs on
//! everything else and a key that is set but wrong is still reported.

use std::fmt::Write as _;
use std::path::Path;

use figment::providers::{Format, Toml};
use figment::Figment;

use crate::config::{self, ConfigError, Loaded, Settings, Sources};

/// A top-level key without a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    QueueUrl,
    DlqUrl,
    TopicArn,
    /// `intake.registration_url`: required by `intake` only, so it is not in [`Required::ALL`]
    /// (its empty default is valid for every other command).
    RegistrationUrl,
    /// `usage_queue_url`: required by `usage send` only (empty turns the usage lane off).
    UsageQueueUrl,
}

impl Required {
    /// The keys every full configuration (`run`, `check`) needs.
    pub const ALL: [Required; 3] = [Required::QueueUrl, Required::DlqUrl, Required::TopicArn];

    pub fn key(self) -> &'static str {
        match self {
            Required::QueueUrl => "queue_url",
            Required::DlqUrl => "dlq_url",
            Required::TopicArn => "topic_arn",
            Required::RegistrationUrl => "intake.registration_url",
            Required::UsageQueueUrl => "usage_queue_url",
        }
    }

    pub fn env(self) -> &'static str {
        match self {
            Required::QueueUrl => "MPR_QUEUE_URL",
            Required::DlqUrl => "MPR_DLQ_URL",
            Required::TopicArn => "MPR_TOPIC_ARN",
            Required::RegistrationUrl => "MPR_INTAKE__REGISTRATION_URL",
            Required::UsageQueueUrl => "MPR_USAGE_QUEUE_URL",
        }
    }

    /// The command-line flag that can stand in for the variable (`enqueue` and `dlq` only).
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Required::QueueUrl => Some("--queue-url"),
            Required::DlqUrl => Some("--dlq-url"),
            Required::UsageQueueUrl => Some("--usage-queue-url"),
            Required::TopicArn | Required::RegistrationUrl => None,
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Required::QueueUrl => "the SQS queue your sign-up page puts tokens on",
            Required::DlqUrl => {
                "the SQS dead-letter queue (normally the token queue's redrive target)"
            }
            Required::TopicArn => "the SNS topic resolved customers are published to",
            Required::RegistrationUrl => "your sign-up page, where intake sends the buyer",
            Required::UsageQueueUrl => "the SQS queue your application sends usage events to",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Required::QueueUrl => "https://sqs.us-east-1.amazonaws.com/123456789012/mpr-tokens",
            Required::DlqUrl => "https://sqs.us-east-1.amazonaws.com/123456789012/mpr-tokens-dlq",
            Required::TopicArn => "arn:aws:sns:us-east-1:123456789012:mpr-customers",
            Required::RegistrationUrl => "https://example.com/signup",
            Required::UsageQueueUrl => "https://sqs.us-east-1.amazonaws.com/123456789012/mpr-usage",
        }
    }

    /// Valid in form, never used: the command that gets it does not touch this key.
    fn placeholder(self) -> &'static str {
        match self {
            Required::QueueUrl => "https://sqs.invalid/000000000000/mp-resolver-unused-queue",
            Required::DlqUrl => "https://sqs.invalid/000000000000/mp-resolver-unused-dlq",
            Required::TopicArn => "arn:aws:sns:invalid:000000000000:mp-resolver-unused-topic",
            Required::RegistrationUrl => "https://invalid.example/mp-resolver-unused-signup",
            Required::UsageQueueUrl => "https://sqs.invalid/000000000000/mp-resolver-unused-usage",
        }
    }
}

/// The dead-letter queue and its source queue a `dlq` command works on: the token queue's, or with
/// `--lifecycle` / `--usage` that lane's. `None` (after saying which key is missing) when the
/// lane's queues are not configured.
pub fn dlq_queues(settings: &Settings, lane: DlqLane, command: &str) -> Option<(String, String)> {
    let (flag, pair) = match lane {
        DlqLane::Tokens => return Some((settings.dlq_url.clone(), settings.queue_url.clone())),
        DlqLane::Lifecycle => (
            "--lifecycle",
            [
                (
                    "lifecycle_dlq_url",
                    "MPR_LIFECYCLE_DLQ_URL",
                    &settings.lifecycle_dlq_url,
                ),
                (
                    "lifecycle_queue_url",
                    "MPR_LIFECYCLE_QUEUE_URL",
                    &settings.lifecycle_queue_url,
                ),
            ],
        ),
        DlqLane::Usage => (
            "--usage",
            [
                (
                    "usage_dlq_url",
                    "MPR_USAGE_DLQ_URL",
                    &settings.usage_dlq_url,
                ),
                (
                    "usage_queue_url",
                    "MPR_USAGE_QUEUE_URL",
                    &settings.usage_queue_url,
                ),
            ],
        ),
    };
    for (key, env, value) in pair {
        if value.is_empty() {
            eprintln!(
                "{command} {flag}: {key} is not set. Set {env} (or {key} in --config) to the \
                 queue's URL."
            );
            return None;
        }
    }
    Some((pair[0].2.clone(), pair[1].2.clone()))
}

/// Which lane's dead-letter queue a `dlq` command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqLane {
    Tokens,
    Lifecycle,
    Usage,
}

/// What an operator command needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The subcommand, for messages (`check`, `enqueue`, `dlq list`).
    pub command: &'static str,
    pub keys: &'static [Required],
    /// Whether the command has `--queue-url` / `--dlq-url` flags.
    pub flags: bool,
    /// The command as the example in the explanation runs it.
    pub example: &'static str,
}

/// What `run` needs: everything, and no flags stand in for it.
pub const RUN: Needs = Needs {
    // Empty: `run`'s messages start with plain `mp-resolver:`, as they always have.
    command: "",
    keys: &Required::ALL,
    flags: false,
    example: "mp-resolver check && mp-resolver run",
};

/// What `intake` needs: the token queue and the sign-up page; no DLQ, no topic.
pub const INTAKE: Needs = Needs {
    command: "intake",
    keys: &[Required::QueueUrl, Required::RegistrationUrl],
    flags: false,
    example: "mp-resolver intake",
};

/// Loads for `needs` and then insists on its keys that have no placeholder: a key outside
/// [`Required::ALL`] (like `intake.registration_url`) is valid empty for the other commands, so
/// only the command that needs it refuses to start, naming it.
pub fn load_requiring(sources: &Sources, needs: &Needs) -> Result<Loaded, ConfigError> {
    let loaded = load_for(sources, needs)?;
    if let Some(key) = missing(sources, needs).first() {
        return Err(ConfigError::Invalid {
            key: key.key().to_owned(),
            env: key.env().to_owned(),
            problem: format!(
                "is required for `mp-resolver {}`: {}",
                needs.command,
                key.meaning()
            ),
        });
    }
    Ok(loaded)
}

/// `--queue-url URL` and friends: they win over every other layer.
pub fn apply_overrides(sources: &mut Sources, overrides: &[(Required, Option<String>)]) {
    for (key, value) in overrides {
        if let Some(value) = value {
            sources.env.push((key.env().to_owned(), value.clone()));
        }
    }
}

/// Loads the configuration, with placeholders for the required keys `needs` does not use.
pub fn load_for(sources: &Sources, needs: &Needs) -> Result<Loaded, ConfigError> {
    let mut sources = sources.clone();
    for key in Required::ALL {
        if !needs.keys.contains(&key) && raw_value(&sources, key).is_none() {
            sources
                .env
                .push((key.env().to_owned(), key.placeholder().to_owned()));
        }
    }
    config::load(&sources)
}

/// The value a required key gets from the layers, before validation; `None` when unset or empty.
pub fn raw_value(sources: &Sources, key: Required) -> Option<String> {
    let from_env = sources
        .env
        .iter()
        .rev()
        .find(|(name, _)| name.eq_ignore_ascii_case(key.env()))
        .map(|(_, value)| value.trim().to_owned());
    if let Some(value) = from_env {
        return (!value.is_empty()).then_some(value);
    }
    [&sources.config_file, &sources.local_defaults]
        .into_iter()
        .flatten()
        .find_map(|path| from_file(path, key))
}

fn from_file(path: &Path, key: Required) -> Option<String> {
    Figment::from(Toml::file(path))
        .extract_inner::<String>(key.key())
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// What to print when the configuration cannot be loaded: what is missing, with an example, and
/// where to read more, instead of one terse line.
pub fn explain(error: &ConfigError, sources: &Sources, needs: &Needs) -> String {
    let missing = missing(sources, needs);
    let mut out = String::new();
    let name = if needs.command.is_empty() {
        "mp-resolver".to_owned()
    } else {
        format!("mp-resolver {}", needs.command)
    };
    let _ = writeln!(out, "{name}: {error}");
    if missing.is_empty() {
        let _ = writeln!(
            out,
            "See config/default.toml and the README's Configuration section for every key."
        );
        return out;
    }
    let names: Vec<&str> = missing.iter().map(|k| k.env()).collect();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Not configured yet: {} {} not set.\nSet {} (or {} in a TOML file given with --config{}):",
        names.join(", "),
        if names.len() == 1 { "is" } else { "are" },
        if missing.len() == 1 {
            "it as an environment variable"
        } else {
            "them as environment variables"
        },
        missing
            .iter()
            .map(|k| format!("`{}`", k.key()))
            .collect::<Vec<_>>()
            .join(", "),
        if needs.flags {
            ", or the flag shown"
        } else {
            ""
        }
    );
    for key in &missing {
        let flag = match key.flag() {
            Some(flag) if needs.flags => format!("; or pass {flag} URL"),
            _ => String::new(),
        };
        let _ = writeln!(out, "  {:<14} {}{flag}", key.env(), key.meaning());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "For example:");
    for key in &missing {
        let _ = writeln!(out, "  export {}={}", key.env(), key.example());
    }
    let _ = writeln!(out, "  {}", needs.example);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "AWS credentials and region come from the AWS SDK's standard chain (AWS_PROFILE or\n\
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION). To try everything locally, without\n\
         AWS, run scripts/demo.sh. Every setting is documented in config/default.toml; see the\n\
         README's \"Configuration\" section, and docs/operations.md for the operator commands."
    );
    out
}

/// The keys `needs` requires that no layer sets.
pub fn missing(sources: &Sources, needs: &Needs) -> Vec<Required> {
    needs
        .keys
        .iter()
        .copied()
        .filter(|key| raw_value(sources, *key).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENQUEUE: Needs = Needs {
        command: "enqueue",
        keys: &[Required::QueueUrl],
        flags: true,
        example: "mp-resolver enqueue \"$TOKEN\"",
    };
    const CHECK: Needs = Needs {
        command: "check",
        keys: &Required::ALL,
        flags: false,
        example: "mp-resolver check",
    };

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Sources::default()
        }
    }

    #[test]
    fn enqueue_needs_only_the_queue() {
        let s = load_for(
            &env(&[("MPR_QUEUE_URL", "http://localhost:4566/000000000000/q")]),
            &ENQUEUE,
        )
        .unwrap()
        .settings;
        assert_eq!(s.queue_url, "http://localhost:4566/000000000000/q");
    }

    #[test]
    fn a_flag_stands_in_for_the_variable() {
        let mut sources = env(&[("MPR_QUEUE_URL", "http://a/000000000000/from-env")]);
        apply_overrides(
            &mut sources,
            &[(
                Required::QueueUrl,
                Some("http://a/000000000000/from-flag".into()),
            )],
        );
        let s = load_for(&sources, &ENQUEUE).unwrap().settings;
        assert_eq!(s.queue_url, "http://a/000000000000/from-flag");
    }

    #[test]
    fn a_set_but_wrong_unused_key_is_still_reported() {
        let err = load_for(
            &env(&[
                ("MPR_QUEUE_URL", "http://a/000000000000/q"),
                ("MPR_TOPIC_ARN", "customers"),
            ]),
            &ENQUEUE,
        )
        .unwrap_err();
        assert!(err.to_string().contains("topic_arn"), "{err}");
    }

    #[test]
    fn nothing_configured_lists_all_three_with_an_example() {
        let sources = Sources::default();
        let err = load_for(&sources, &CHECK).unwrap_err();
        let text = explain(&err, &sources, &CHECK);
        for needle in [
            "MPR_QUEUE_URL",
            "MPR_DLQ_URL",
            "MPR_TOPIC_ARN",
            "export MPR_QUEUE_URL=https://",
            "README",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(text.starts_with("mp-resolver check: configuration key `queue_url`"));
    }

    #[test]
    fn enqueue_explains_only_the_queue_and_its_flag() {
        let sources = Sources::default();
        let err = load_for(&sources, &ENQUEUE).unwrap_err();
        let text = explain(&err, &sources, &ENQUEUE);
        assert!(text.contains("MPR_QUEUE_URL") && text.contains("--queue-url"));
        assert!(!text.contains("MPR_TOPIC_ARN"), "{text}");
    }

    #[test]
    fn a_wrong_value_is_explained_by_its_error() {
        let sources = env(&[
            ("MPR_QUEUE_URL", "http://a/000000000000/q"),
            ("MPR_DLQ_URL", "http://a/000000000000/d"),
            ("MPR_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:t"),
            ("MPR_WORKER__RECEIVE_BATCH", "50"),
        ]);
        let err = load_for(&sources, &CHECK).unwrap_err();
        let text = explain(&err, &sources, &CHECK);
        assert!(
            text.contains("worker.receive_batch") && text.contains("README"),
            "{text}"
        );
    }

    #[test]
    fn intake_needs_the_queue_and_the_sign_up_page_only() {
        let queue = ("MPR_QUEUE_URL", "http://a/000000000000/q");
        let err = load_requiring(&env(&[queue]), &INTAKE).unwrap_err();
        assert!(
            err.to_string().contains("intake.registration_url")
                && err.to_string().contains("MPR_INTAKE__REGISTRATION_URL"),
            "{err}"
        );
        let text = explain(&err, &env(&[queue]), &INTAKE);
        assert!(
            text.contains("export MPR_INTAKE__REGISTRATION_URL=https://"),
            "{text}"
        );
        assert!(!text.contains("MPR_DLQ_URL"), "{text}");

        let s = load_requiring(
            &env(&[
                queue,
                (
                    "MPR_INTAKE__REGISTRATION_URL",
                    "https://example.com/signup?a=1",
                ),
            ]),
            &INTAKE,
        )
        .unwrap()
        .settings;
        assert_eq!(s.intake.registration_url, "https://example.com/signup?a=1");
        // `run` and `check` do not need it.
        let full = env(&[
            queue,
            ("MPR_DLQ_URL", "http://a/000000000000/d"),
            ("MPR_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:t"),
        ]);
        assert!(load_requiring(&full, &RUN).is_ok());
    }

    #[test]
    fn raw_values_come_from_files_too() {
        let dir = std::env::temp_dir().join(format!("mpr-ops-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ops.toml");
        std::fs::write(&file, "queue_url = \"http://a/000000000000/q\"\n").unwrap();
        let sources = Sources {
            config_file: Some(file),
            ..Sources::default()
        };
        assert_eq!(
            raw_value(&sources, Required::QueueUrl).as_deref(),
            Some("http://a/000000000000/q")
        );
        assert_eq!(raw_value(&sources, Required::DlqUrl), None);
    }
}
