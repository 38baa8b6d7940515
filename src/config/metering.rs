//! The usage lane (issue #21): the usage queue and `[metering]`, when hours are metered with
//! BatchMeterUsage (`crate::worker::usage`), and their checks.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Settings};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringSettings {
    /// An hour is metered once it ended and no usage arrived for it this long, in seconds.
    pub settle_secs: u64,
    /// ... and at the latest this long after its end, however busy it still is.
    pub max_delay_secs: u64,
    /// How old (from its record's timestamp) an hour may be when it is sent; AWS's own window is
    /// 6 hours by the API reference (24 hours by the pinned SDK): stay well inside it.
    pub window_secs: u64,
    /// Dimensions that get a record of quantity 0 each hour for every subscription the registry
    /// shows granted, when there was no usage.
    #[serde(deserialize_with = "super::settings::comma_separated")]
    pub zero_dimensions: Vec<String>,
    /// How long one task's claim on an hour lasts before another takes it over, in seconds.
    pub claim_lease_secs: u64,
    /// Ceiling of BatchMeterUsage calls per second (its own adaptive limit; AWS's quota is 10).
    pub max_calls_per_sec: f64,
}

impl MeteringSettings {
    pub fn settle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settle_secs)
    }
}

pub(super) fn validate(s: &Settings) -> Result<(), ConfigError> {
    let (queue, dlq) = (&s.usage_queue_url, &s.usage_dlq_url);
    for (key, url) in [("usage_queue_url", queue), ("usage_dlq_url", dlq)] {
        let is_url = url.starts_with("https://") || url.starts_with("http://");
        if !(url.is_empty() || is_url) {
            return Err(invalid(key, "must be an SQS queue URL (https://...)"));
        }
    }
    if !queue.is_empty() {
        if dlq.is_empty() {
            return Err(invalid(
                "usage_dlq_url",
                "is required when usage_queue_url is set: where usage that cannot be metered goes",
            ));
        }
        let others = [
            &s.queue_url,
            &s.dlq_url,
            &s.lifecycle_queue_url,
            &s.lifecycle_dlq_url,
        ];
        if others.contains(&queue) || queue == dlq {
            return Err(invalid(
                "usage_queue_url",
                "must be its own queue, not another lane's queue or a dead-letter queue",
            ));
        }
        if others.contains(&dlq) {
            return Err(invalid(
                "usage_dlq_url",
                "must be its own queue, not another lane's queue or dead-letter queue",
            ));
        }
    }
    let m = &s.metering;
    if m.settle_secs > 3_600 {
        return Err(invalid("metering.settle_secs", "must be at most 3,600"));
    }
    if m.max_delay_secs < m.settle_secs || m.max_delay_secs > 10_800 {
        return Err(invalid(
            "metering.max_delay_secs",
            "must be from metering.settle_secs to 10,800 (3 hours)",
        ));
    }
    if !(3_600..=21_600).contains(&m.window_secs) || m.window_secs < m.max_delay_secs + 3_600 {
        return Err(invalid(
            "metering.window_secs",
            "must be from 3,600 to 21,600 (AWS's 6 hours) and at least an hour above \
             metering.max_delay_secs",
        ));
    }
    if !(5..=3_600).contains(&m.claim_lease_secs) {
        return Err(invalid(
            "metering.claim_lease_secs",
            "must be from 5 to 3,600",
        ));
    }
    if !(m.max_calls_per_sec.is_finite() && (0.1..=1_000.0).contains(&m.max_calls_per_sec)) {
        return Err(invalid(
            "metering.max_calls_per_sec",
            "must be a number from 0.1 to 1,000",
        ));
    }
    if let Some(bad) = m
        .zero_dimensions
        .iter()
        .find(|d| d.is_empty() || d.len() > 255 || d.contains('#'))
    {
        return Err(invalid(
            "metering.zero_dimensions",
            format!("{bad:?} is not a dimension name (1 to 255 characters, no `#`)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load_env;

    #[test]
    fn usage_is_off_by_default_with_documented_hour_rules() {
        let s = load_env(&[]).unwrap().settings;
        assert!(s.usage_queue_url.is_empty() && s.usage_dlq_url.is_empty());
        assert_eq!(s.metering.settle_secs, 300);
        assert_eq!(s.metering.max_delay_secs, 3_600);
        assert!(s.metering.zero_dimensions.is_empty());
    }

    #[test]
    fn bad_usage_keys_are_named() {
        let q = "http://127.0.0.1:4566/000000000000/usage";
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("MPR_USAGE_QUEUE_URL", q)], "usage_dlq_url"),
            (&[("MPR_USAGE_QUEUE_URL", "usage")], "usage_queue_url"),
            (
                &[("MPR_USAGE_QUEUE_URL", q), ("MPR_USAGE_DLQ_URL", q)],
                "usage_queue_url",
            ),
            (
                &[("MPR_METERING__SETTLE_SECS", "4000")],
                "metering.settle_secs",
            ),
            (
                &[("MPR_METERING__MAX_DELAY_SECS", "20000")],
                "metering.max_delay_secs",
            ),
            (
                &[("MPR_METERING__WINDOW_SECS", "30000")],
                "metering.window_secs",
            ),
            (
                &[("MPR_METERING__ZERO_DIMENSIONS", "a#b")],
                "metering.zero_dimensions",
            ),
        ];
        for (env, key) in cases {
            let err = load_env(env).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{env:?}: {err}");
        }
        let s = load_env(&[("MPR_METERING__ZERO_DIMENSIONS", "seats, users")])
            .unwrap()
            .settings;
        assert_eq!(s.metering.zero_dimensions, ["seats", "users"]);
    }
}
