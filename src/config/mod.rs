//! Layered configuration: built-in defaults (`config/default.toml`, compiled in) → `config/default.toml`
//! in the working directory → the `--config` file → `MPR_` environment variables. Then validation, so
//! a bad value stops the start with the key named.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

/// The documented defaults; compiled in so the binary and the document cannot disagree.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "MPR_";
/// Exit code for bad configuration (sysexits.h EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub queue_url: String,
    pub dlq_url: String,
    pub topic_arn: String,
    #[serde(deserialize_with = "comma_separated")]
    pub product_codes: Vec<String>,
    pub worker: WorkerSettings,
    pub resolve: ResolveSettings,
    pub publish: PublishSettings,
    pub rate_limit: RateLimitSettings,
    pub pause: PauseSettings,
    pub admin: AdminSettings,
    pub intake: IntakeSettings,
    pub aws: AwsSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub max_in_flight: usize,
    pub receive_batch: i32,
    pub receive_wait_secs: i32,
    pub visibility_timeout_secs: i32,
    pub shutdown_grace_secs: u64,
    pub stall_timeout_secs: u64,
    pub dedupe_capacity: usize,
    pub delete_linger_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveSettings {
    pub attempt_timeout_ms: u64,
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub backoff_factor: f32,
    pub budget_secs: u64,
    pub handback_max_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    pub max_batch: usize,
    pub linger_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub initial_per_sec: f64,
    pub min_per_sec: f64,
    pub max_per_sec: f64,
    pub decrease_factor: f64,
    pub cooldown_ms: u64,
    pub increase_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseSettings {
    pub probe_initial_secs: u64,
    pub probe_max_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub listen: std::net::SocketAddr,
}

/// `mp-resolver intake`, the endpoint behind the product's fulfillment URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSettings {
    pub listen: std::net::SocketAddr,
    pub path: String,
    /// Empty unless set; `intake` refuses to start without it (the other commands ignore it).
    pub registration_url: String,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub rate_limit_per_minute: u32,
    pub client_address: ClientAddressSource,
    pub readiness_interval_secs: u64,
    pub retry_after_secs: u64,
}

/// Which address a request is counted against by the per-client limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddressSource {
    /// The last `X-Forwarded-For` entry: the address the load balancer itself saw.
    XForwardedFor,
    /// The TCP peer: for an endpoint with no load balancer in front.
    Peer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl ResolveSettings {
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }
    pub fn budget(&self) -> Duration {
        Duration::from_secs(self.budget_secs)
    }
}

/// A configuration problem, always naming the key (and its environment variable).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}` (env {env}): {problem}")]
    Invalid {
        key: String,
        env: String,
        problem: String,
    },
    #[error("configuration file {}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("configuration: {0}")]
    Other(String),
}

/// Where the layers come from. The environment is passed in (not read here) so that loading is
/// tested without touching process state.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `config/default.toml` in the working directory, when present.
    pub local_defaults: Option<PathBuf>,
    /// The file named by `--config`.
    pub config_file: Option<PathBuf>,
    /// Environment variables (all of them; only `MPR_` ones are read).
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The sources a process started in the current directory uses.
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        let local = PathBuf::from("config/default.toml");
        Sources {
            local_defaults: local.is_file().then_some(local),
            config_file,
            env: std::env::vars().collect(),
        }
    }
}

/// The loaded configuration and the `MPR_` variables that matched no key (reported, not fatal,
/// since scripts around the worker may use the prefix for their own settings).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub ignored_env: Vec<String>,
}

pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
    for path in [&sources.local_defaults, &sources.config_file]
        .into_iter()
        .flatten()
    {
        if !path.is_file() {
            return Err(ConfigError::File {
                path: path.clone(),
                problem: "not found or not a file".into(),
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    let (env_dict, ignored_env) = env_layer(&sources.env)?;
    figment = figment.merge(Serialized::defaults(env_dict));
    let settings: Settings = figment.extract().map_err(from_figment)?;
    validate(&settings)?;
    Ok(Loaded {
        settings,
        ignored_env,
    })
}

/// The key paths the configuration has, e.g. `worker.max_in_flight`.
fn known_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, dict: &Dict, out: &mut BTreeSet<String>) {
        for (key, value) in dict {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Dict(_, inner) => walk(&path, inner, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    if let Ok(dict) = Figment::from(Toml::string(DEFAULT_TOML)).extract::<Dict>() {
        walk("", &dict, &mut out);
    }
    out
}

/// Turns `MPR_WORKER__MAX_IN_FLIGHT=8` into `{worker: {max_in_flight: 8}}`, parsing values the way
/// figment's own `Env` provider does. (`Env` reads the process environment directly, which is
/// what this function exists to avoid.)
fn env_layer(env: &[(String, String)]) -> Result<(Dict, Vec<String>), ConfigError> {
    let known = known_keys();
    let mut root = Dict::new();
    let mut ignored = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if !known.contains(&path.join(".")) {
            ignored.push(name.clone());
            continue;
        }
        let value: Value = raw
            .trim()
            .parse()
            .unwrap_or_else(|_| Value::from(raw.clone()));
        insert_path(&mut root, &path, value);
    }
    Ok((root, ignored))
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        env: env_name(key),
        problem: problem.into(),
    }
}

fn from_figment(error: figment::Error) -> ConfigError {
    let key = error.path.join(".");
    // figment's message ends with "for key ..."; keep only the kind, the key is named separately.
    let problem = match &error.metadata {
        Some(meta) => format!("{} (from {})", error.kind, meta.name),
        None => error.kind.to_string(),
    };
    if key.is_empty() {
        ConfigError::Other(problem)
    } else {
        invalid(&key, problem)
    }
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

pub fn validate(s: &Settings) -> Result<(), ConfigError> {
    for (key, url) in [("queue_url", &s.queue_url), ("dlq_url", &s.dlq_url)] {
        if url.is_empty() {
            return Err(invalid(key, "is required: the SQS queue URL"));
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(key, "must be an SQS queue URL (https://...)"));
        }
    }
    if s.queue_url == s.dlq_url {
        return Err(invalid(
            "dlq_url",
            "must be a different queue than queue_url",
        ));
    }
    if s.topic_arn.is_empty() {
        return Err(invalid("topic_arn", "is required: the SNS topic ARN"));
    }
    if !s.topic_arn.starts_with("arn:") || !s.topic_arn.contains(":sns:") {
        return Err(invalid(
            "topic_arn",
            "must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)",
        ));
    }
    if let Some(bad) = s
        .product_codes
        .iter()
        .find(|c| c.is_empty() || c.chars().any(char::is_whitespace))
    {
        return Err(invalid(
            "product_codes",
            format!("{bad:?} is not a product code"),
        ));
    }

    let w = &s.worker;
    check_range("worker.max_in_flight", w.max_in_flight, 1, 10_000)?;
    check_range("worker.receive_batch", w.receive_batch, 1, 10)?;
    check_range("worker.receive_wait_secs", w.receive_wait_secs, 0, 20)?;
    // The heartbeat extends visibility every third of it; below 3 s that leaves no slack.
    check_range(
        "worker.visibility_timeout_secs",
        w.visibility_timeout_secs,
        3,
        43_200,
    )?;
    check_range(
        "worker.shutdown_grace_secs",
        w.shutdown_grace_secs,
        0,
        3_600,
    )?;
    check_range("worker.stall_timeout_secs", w.stall_timeout_secs, 1, 86_400)?;
    check_range("worker.dedupe_capacity", w.dedupe_capacity, 1, 10_000_000)?;
    check_range("worker.delete_linger_ms", w.delete_linger_ms, 0, 1_000)?;

    let r = &s.resolve;
    check_range(
        "resolve.attempt_timeout_ms",
        r.attempt_timeout_ms,
        100,
        60_000,
    )?;
    check_range("resolve.max_attempts", r.max_attempts, 1, 100)?;
    check_range(
        "resolve.initial_backoff_ms",
        r.initial_backoff_ms,
        1,
        60_000,
    )?;
    check_range(
        "resolve.max_backoff_ms",
        r.max_backoff_ms,
        r.initial_backoff_ms,
        600_000,
    )?;
    check_range("resolve.backoff_factor", r.backoff_factor, 1.0, 10.0)?;
    check_range("resolve.budget_secs", r.budget_secs, 0, 43_200)?;
    check_range("resolve.handback_max_secs", r.handback_max_secs, 1, 43_200)?;

    check_range("publish.max_batch", s.publish.max_batch, 1, 10)?;
    check_range("publish.linger_ms", s.publish.linger_ms, 0, 1_000)?;

    let rl = &s.rate_limit;
    check_range("rate_limit.min_per_sec", rl.min_per_sec, 0.01, 10_000.0)?;
    check_range(
        "rate_limit.initial_per_sec",
        rl.initial_per_sec,
        rl.min_per_sec,
        10_000.0,
    )?;
    if rl.max_per_sec != 0.0 {
        check_range(
            "rate_limit.max_per_sec",
            rl.max_per_sec,
            rl.initial_per_sec,
            10_000.0,
        )?;
    }
    check_range("rate_limit.decrease_factor", rl.decrease_factor, 0.05, 0.99)?;
    check_range("rate_limit.cooldown_ms", rl.cooldown_ms, 0, 60_000)?;
    check_range(
        "rate_limit.increase_per_sec",
        rl.increase_per_sec,
        0.0,
        1_000.0,
    )?;

    let p = &s.pause;
    check_range("pause.probe_initial_secs", p.probe_initial_secs, 1, 3_600)?;
    check_range(
        "pause.probe_max_secs",
        p.probe_max_secs,
        p.probe_initial_secs,
        86_400,
    )?;

    validate_intake(&s.intake)?;
    check_range("aws.max_attempts", s.aws.max_attempts, 1, 10)?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(s.log.level.trim()) {
        return Err(invalid(
            "log.level",
            format!("is not a log filter (e.g. `info` or `mp_resolver=debug,info`): {e}"),
        ));
    }
    Ok(())
}

fn validate_intake(i: &IntakeSettings) -> Result<(), ConfigError> {
    if !i.path.starts_with('/') || i.path.contains(['?', '#']) {
        return Err(invalid(
            "intake.path",
            format!("must be a URL path starting with `/`, got {:?}", i.path),
        ));
    }
    if !i.registration_url.is_empty() {
        let ok = url::Url::parse(i.registration_url.trim())
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
        if !ok {
            return Err(invalid(
                "intake.registration_url",
                "must be an absolute http(s) URL: your sign-up page, e.g. https://example.com/signup",
            ));
        }
    }
    // The Marketplace form is a few hundred bytes; the token alone may be up to 8 KiB.
    check_range("intake.max_body_bytes", i.max_body_bytes, 1_024, 1_048_576)?;
    check_range("intake.max_in_flight", i.max_in_flight, 1, 100_000)?;
    check_range(
        "intake.rate_limit_per_minute",
        i.rate_limit_per_minute,
        1,
        1_000_000,
    )?;
    check_range(
        "intake.readiness_interval_secs",
        i.readiness_interval_secs,
        1,
        3_600,
    )?;
    check_range("intake.retry_after_secs", i.retry_after_secs, 1, 3_600)?;
    Ok(())
}

/// `product_codes` is a list in TOML and a comma-separated string in the environment.
fn comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Codes {
        One(String),
        Many(Vec<String>),
    }
    let codes: Vec<String> = match Codes::deserialize(d)? {
        Codes::One(s) => s.split(',').map(|c| c.trim().to_owned()).collect(),
        Codes::Many(v) => v.into_iter().map(|c| c.trim().to_owned()).collect(),
    };
    Ok(codes
        .into_iter()
        .filter(|c: &String| !c.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE: &str = "http://127.0.0.1:4566/000000000000/tokens";
    const DLQ: &str = "http://127.0.0.1:4566/000000000000/tokens-dlq";
    const TOPIC: &str = "arn:aws:sns:us-east-1:000000000000:customers";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn required() -> Vec<(String, String)> {
        env(&[
            ("MPR_QUEUE_URL", QUEUE),
            ("MPR_DLQ_URL", DLQ),
            ("MPR_TOPIC_ARN", TOPIC),
        ])
    }

    fn load_env(extra: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let mut e = required();
        e.extend(env(extra));
        load(&Sources {
            env: e,
            ..Sources::default()
        })
    }

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mpr-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn defaults_match_the_documented_file() {
        let s = load_env(&[]).unwrap().settings;
        assert_eq!(s.worker.max_in_flight, 64);
        assert_eq!(s.worker.receive_batch, 10);
        assert_eq!(s.worker.receive_wait_secs, 20);
        assert_eq!(s.worker.shutdown_grace_secs, 25);
        assert_eq!(s.aws.max_attempts, 3);
        assert_eq!(s.log.format, LogFormat::Json);
        assert!(s.product_codes.is_empty());
        assert_eq!(s.intake.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.intake.path, "/");
        assert_eq!(s.intake.registration_url, "", "required by `intake` only");
        assert_eq!(s.intake.max_body_bytes, 16 * 1024);
        assert_eq!(s.intake.rate_limit_per_minute, 30);
        assert_eq!(s.intake.client_address, ClientAddressSource::XForwardedFor);
    }

    #[test]
    fn later_layers_win() {
        let local = temp_file(
            "local-defaults.toml",
            "[worker]\nmax_in_flight = 8\nreceive_batch = 5\n",
        );
        let file = temp_file(
            "layer.toml",
            "product_codes = [\"prod-a\"]\n[worker]\nmax_in_flight = 16\n",
        );
        let mut e = required();
        e.extend(env(&[("MPR_WORKER__MAX_IN_FLIGHT", "32")]));
        let s = load(&Sources {
            local_defaults: Some(local),
            config_file: Some(file),
            env: e,
        })
        .unwrap()
        .settings;
        assert_eq!(s.worker.max_in_flight, 32, "env beats the file");
        assert_eq!(s.worker.receive_batch, 5, "local defaults beat built-in");
        assert_eq!(s.product_codes, vec!["prod-a".to_string()]);
    }

    #[test]
    fn product_codes_from_env_are_comma_separated() {
        let s = load_env(&[("MPR_PRODUCT_CODES", "prod-a, prod-b,,")])
            .unwrap()
            .settings;
        assert_eq!(s.product_codes, vec!["prod-a", "prod-b"]);
    }

    #[test]
    fn missing_queue_url_names_the_key() {
        let err = load(&Sources::default()).unwrap_err().to_string();
        assert!(
            err.contains("`queue_url`") && err.contains("MPR_QUEUE_URL"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (var, value, key) in [
            ("MPR_WORKER__MAX_IN_FLIGHT", "0", "worker.max_in_flight"),
            ("MPR_WORKER__MAX_IN_FLIGHT", "lots", "worker.max_in_flight"),
            ("MPR_WORKER__RECEIVE_BATCH", "11", "worker.receive_batch"),
            (
                "MPR_WORKER__RECEIVE_WAIT_SECS",
                "21",
                "worker.receive_wait_secs",
            ),
            (
                "MPR_WORKER__VISIBILITY_TIMEOUT_SECS",
                "2",
                "worker.visibility_timeout_secs",
            ),
            (
                "MPR_RATE_LIMIT__DECREASE_FACTOR",
                "1.5",
                "rate_limit.decrease_factor",
            ),
            ("MPR_RATE_LIMIT__MAX_PER_SEC", "5", "rate_limit.max_per_sec"),
            ("MPR_ADMIN__LISTEN", "not-an-address", "admin.listen"),
            ("MPR_PAUSE__PROBE_MAX_SECS", "1", "pause.probe_max_secs"),
            (
                "MPR_RESOLVE__MAX_BACKOFF_MS",
                "10",
                "resolve.max_backoff_ms",
            ),
            ("MPR_LOG__FORMAT", "xml", "log.format"),
            ("MPR_TOPIC_ARN", "customers", "topic_arn"),
            ("MPR_DLQ_URL", QUEUE, "dlq_url"),
            ("MPR_INTAKE__PATH", "fulfil", "intake.path"),
            ("MPR_INTAKE__PATH", "/f?x=1", "intake.path"),
            (
                "MPR_INTAKE__REGISTRATION_URL",
                "/signup",
                "intake.registration_url",
            ),
            (
                "MPR_INTAKE__REGISTRATION_URL",
                "ftp://example.com/signup",
                "intake.registration_url",
            ),
            ("MPR_INTAKE__MAX_BODY_BYTES", "100", "intake.max_body_bytes"),
            ("MPR_INTAKE__MAX_IN_FLIGHT", "0", "intake.max_in_flight"),
            (
                "MPR_INTAKE__RATE_LIMIT_PER_MINUTE",
                "0",
                "intake.rate_limit_per_minute",
            ),
            (
                "MPR_INTAKE__CLIENT_ADDRESS",
                "leftmost",
                "intake.client_address",
            ),
            ("MPR_INTAKE__LISTEN", "8080", "intake.listen"),
        ] {
            let err = load_env(&[(var, value)]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(var),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn unknown_key_in_a_file_is_an_error() {
        let file = temp_file("typo.toml", "[worker]\nmax_inflight = 8\n");
        let err = load(&Sources {
            config_file: Some(file),
            env: required(),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_inflight"), "{err}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = load(&Sources {
            config_file: Some(PathBuf::from("/nonexistent/mpr.toml")),
            env: required(),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/mpr.toml"), "{err}");
    }

    #[test]
    fn unknown_env_vars_are_reported_not_fatal() {
        let loaded = load_env(&[("MPR_WORKER__MAX_INFLIGHT", "8"), ("OTHER", "x")]).unwrap();
        assert_eq!(
            loaded.ignored_env,
            vec!["MPR_WORKER__MAX_INFLIGHT".to_string()]
        );
        assert_eq!(loaded.settings.worker.max_in_flight, 64);
    }

    #[test]
    fn shipped_local_config_is_valid() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/local.toml");
        let loaded = load(&Sources {
            config_file: Some(path),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(loaded.settings.log.format, LogFormat::Pretty);
    }
}
