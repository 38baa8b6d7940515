//! Layered configuration: built-in defaults (`config/default.toml`, compiled in) → `config/default.toml`
//! in the working directory → the `--config` file → `MPR_` environment variables. Then validation
//! (`validate.rs`, with the timing limits of `limits.rs`), so a bad value stops the start with the
//! key named and exit code 78.

pub mod limits;
mod settings;
mod validate;

use std::collections::BTreeSet;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;

pub use settings::*;
pub use validate::validate;

mod intake;
mod marketplace;
mod metering;
mod metrics;
mod store;

pub use intake::{ClientAddressSource, IntakeSettings};
pub use marketplace::MarketplaceSettings;
pub use metering::MeteringSettings;
pub use metrics::MetricsSettings;
pub use store::{StoreKind, StoreSettings};

/// The documented defaults; compiled in so the binary and the document cannot disagree.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "MPR_";
/// Exit code for bad configuration (sysexits.h EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

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

/// The environment variable that sets `key`, e.g. `MPR_WORKER__MAX_IN_FLIGHT` for `worker.max_in_flight`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
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

#[cfg(test)]
pub(crate) mod tests {
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

    pub(crate) fn required() -> Vec<(String, String)> {
        env(&[
            ("MPR_QUEUE_URL", QUEUE),
            ("MPR_DLQ_URL", DLQ),
            ("MPR_TOPIC_ARN", TOPIC),
        ])
    }

    pub(crate) fn load_env(extra: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let mut e = required();
        e.extend(env(extra));
        load(&Sources {
            env: e,
            ..Sources::default()
        })
    }

    /// The configuration of `file` over the defaults, with the required keys in the environment.
    fn load_file(file: PathBuf) -> Result<Loaded, ConfigError> {
        load(&Sources {
            config_file: Some(file),
            env: required(),
            ..Sources::default()
        })
    }

    pub(crate) fn temp_file(name: &str, contents: &str) -> PathBuf {
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
        #[rustfmt::skip]
        let cases = [
            ("MPR_WORKER__MAX_IN_FLIGHT", "0", "worker.max_in_flight"),
            ("MPR_WORKER__MAX_IN_FLIGHT", "lots", "worker.max_in_flight"),
            ("MPR_WORKER__RECEIVE_BATCH", "11", "worker.receive_batch"),
            ("MPR_WORKER__RECEIVE_WAIT_SECS", "21", "worker.receive_wait_secs"),
            ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "2", "worker.visibility_timeout_secs"),
            ("MPR_RATE_LIMIT__DECREASE_FACTOR", "1.5", "rate_limit.decrease_factor"),
            ("MPR_RATE_LIMIT__MAX_PER_SEC", "5", "rate_limit.max_per_sec"),
            ("MPR_RATE_LIMIT__LEARNED_MAX_AGE_SECS", "86401", "rate_limit.learned_max_age_secs"),
            ("MPR_RATE_LIMIT__LEARNED_MAX_AGE_SECS", "-1", "rate_limit.learned_max_age_secs"),
            ("MPR_ADMIN__LISTEN", "not-an-address", "admin.listen"),
            ("MPR_PAUSE__PROBE_MAX_SECS", "1", "pause.probe_max_secs"),
            ("MPR_RESOLVE__MAX_BACKOFF_MS", "10", "resolve.max_backoff_ms"),
            ("MPR_LOG__FORMAT", "xml", "log.format"),
            ("MPR_TOPIC_ARN", "customers", "topic_arn"),
            ("MPR_DLQ_URL", QUEUE, "dlq_url"),
            ("MPR_INTAKE__PATH", "fulfil", "intake.path"),
            ("MPR_INTAKE__PATH", "/f?x=1", "intake.path"),
            ("MPR_INTAKE__REGISTRATION_URL", "/signup", "intake.registration_url"),
            ("MPR_INTAKE__REGISTRATION_URL", "ftp://example.com/signup", "intake.registration_url"),
            ("MPR_INTAKE__MAX_BODY_BYTES", "100", "intake.max_body_bytes"),
            ("MPR_INTAKE__MAX_IN_FLIGHT", "0", "intake.max_in_flight"),
            ("MPR_INTAKE__RATE_LIMIT_PER_MINUTE", "0", "intake.rate_limit_per_minute"),
            ("MPR_INTAKE__CLIENT_ADDRESS", "leftmost", "intake.client_address"),
            ("MPR_INTAKE__LISTEN", "8080", "intake.listen"),
        ];
        for (var, value, key) in cases {
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
        let err = load_file(file).unwrap_err().to_string();
        assert!(err.contains("max_inflight"), "{err}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = load_file(PathBuf::from("/nonexistent/mpr.toml"))
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
