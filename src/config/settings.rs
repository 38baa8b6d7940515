//! The configuration's shape: one struct per section of `config/default.toml`, which documents
//! every key. Loading is in `config/mod.rs`, the rules a value must follow in `config/validate.rs`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub queue_url: String,
    pub dlq_url: String,
    pub topic_arn: String,
    #[serde(deserialize_with = "comma_separated")]
    pub product_codes: Vec<String>,
    /// The optional lifecycle queue (agreement, license and legacy SNS notifications); empty = off.
    pub lifecycle_queue_url: String,
    /// Its dead-letter queue; required when `lifecycle_queue_url` is set.
    pub lifecycle_dlq_url: String,
    /// The optional usage queue (usage events from the seller's application); empty = off.
    pub usage_queue_url: String,
    /// Its dead-letter queue; required when `usage_queue_url` is set.
    pub usage_dlq_url: String,
    pub metering: super::MeteringSettings,
    pub marketplace: super::MarketplaceSettings,
    pub worker: WorkerSettings,
    pub resolve: ResolveSettings,
    pub publish: PublishSettings,
    pub rate_limit: RateLimitSettings,
    pub pause: PauseSettings,
    pub admin: AdminSettings,
    pub intake: super::IntakeSettings,
    pub aws: AwsSettings,
    pub log: LogSettings,
    pub metrics: super::MetricsSettings,
    pub store: super::StoreSettings,
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
    /// Threads of `run`'s async runtime: 0 = one thread (tokio's current-thread runtime), N = a
    /// multi-thread runtime of N worker threads.
    pub runtime_threads: usize,
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
    /// How long a resolved event whose publish keeps failing is held and retried before it is
    /// dead-lettered as `unpublished`.
    pub hold_secs: u64,
    /// Longest wait between publish retries while an event is held.
    pub hold_max_delay_secs: u64,
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
    /// A new process starts at the rate the fleet learned (kept in the store) when it is at most
    /// this old, in seconds; 0 = always start at `initial_per_sec`.
    pub learned_max_age_secs: u64,
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
    pub fn handback_max(&self) -> Duration {
        Duration::from_secs(self.handback_max_secs)
    }
}

impl WorkerSettings {
    /// The visibility timeout asked for on every receive.
    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(self.visibility_timeout_secs.max(0) as u64)
    }
    pub fn receive_wait(&self) -> Duration {
        Duration::from_secs(self.receive_wait_secs.max(0) as u64)
    }
}

impl PublishSettings {
    pub fn hold(&self) -> Duration {
        Duration::from_secs(self.hold_secs)
    }
    pub fn hold_max_delay(&self) -> Duration {
        Duration::from_secs(self.hold_max_delay_secs)
    }
}

/// `product_codes` is a list in TOML and a comma-separated string in the environment.
pub(super) fn comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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
