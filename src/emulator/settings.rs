//! Whole-service behaviour knobs, and the partial updates the control endpoint accepts.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::metering::DEFAULT_WINDOW_HOURS;

/// BatchMeterUsage calls per second before ThrottlingException, unless set otherwise.
pub const DEFAULT_METERING_QUOTA: f64 = 10.0;

/// How the whole emulated service behaves. Every field can be changed while it runs: as the flags
/// of `mp-resolver emulator` (the first line of each comment is its help), and as JSON members of
/// `POST /emulator/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(rename_all = "camelCase", default)]
pub struct EmulatorSettings {
    // Across all tokens; `None` or `0` means unlimited.
    /// Calls per second before ThrottlingException (token bucket). Unlimited when absent.
    #[arg(long, value_name = "CALLS_PER_S")]
    pub quota: Option<f64>,
    /// Delay added to every call, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,
    /// Fraction of calls (0 to 1) that fail with InternalServiceErrorException, at random.
    #[arg(long, default_value_t = 0.0, value_name = "0..1")]
    pub error_rate: f64,
    // GetEntitlements, whose model has no such error, answers `InternalServiceErrorException`.
    /// Answer every call with DisabledApiException.
    #[arg(long)]
    pub disabled: bool,
    /// A token that resolved once answers ExpiredTokenException on every later call, as AWS does
    /// when a buyer resubmits a registration token.
    #[arg(long)]
    pub single_use: bool,
    /// Refuse calls without a SigV4 Authorization header for `aws-marketplace` (the signature itself is not verified).
    #[arg(long)]
    pub strict_auth: bool,
    // The real services have separate quotas; `None` or `0` means unlimited.
    /// GetEntitlements calls per second before ThrottlingException (its own bucket). Unlimited when absent.
    #[arg(long, value_name = "CALLS_PER_S")]
    pub entitlement_quota: Option<f64>,
    // BatchMeterUsage has a quota of its own too; unlike the others it is limited by default.
    /// BatchMeterUsage calls per second before ThrottlingException (its own bucket); 0 means unlimited.
    #[arg(long, value_name = "CALLS_PER_S", default_value = "10")]
    pub metering_quota: Option<f64>,
    /// How many hours back a BatchMeterUsage record's Timestamp may be.
    #[arg(long, default_value_t = DEFAULT_WINDOW_HOURS, value_name = "HOURS")]
    pub metering_window_hours: u32,
    // Set over `/emulator/config` only: a product without an entry accepts any dimension.
    #[arg(skip)]
    pub metering_dimensions: BTreeMap<String, Vec<String>>,
    /// The next n BatchMeterUsage calls answer ThrottlingException (counts down as they are used).
    #[arg(long, default_value_t = 0, value_name = "CALLS")]
    pub metering_throttle: u32,
    /// After those, the next n BatchMeterUsage calls answer InternalServiceErrorException (counts down).
    #[arg(long, default_value_t = 0, value_name = "CALLS")]
    pub metering_fail: u32,
    /// The next n records of processed BatchMeterUsage calls come back in UnprocessedRecords (counts down).
    #[arg(long, default_value_t = 0, value_name = "RECORDS")]
    pub metering_unprocessed: u32,
}

impl Default for EmulatorSettings {
    fn default() -> Self {
        Self {
            quota: None,
            latency_ms: 0,
            error_rate: 0.0,
            disabled: false,
            single_use: false,
            strict_auth: false,
            entitlement_quota: None,
            metering_quota: Some(DEFAULT_METERING_QUOTA),
            metering_window_hours: DEFAULT_WINDOW_HOURS,
            metering_dimensions: BTreeMap::new(),
            metering_throttle: 0,
            metering_fail: 0,
            metering_unprocessed: 0,
        }
    }
}

impl EmulatorSettings {
    /// Rejects values the emulator could only guess the meaning of. The in-process
    /// [`configure`](super::RunningEmulator::configure) hook skips this, so the engine also copes
    /// with such values (see `effective_error_rate` and the quota bucket).
    pub fn validate(&self) -> Result<(), String> {
        for (key, quota) in [
            ("quota (--quota)", self.quota),
            (
                "entitlementQuota (--entitlement-quota)",
                self.entitlement_quota,
            ),
            ("meteringQuota (--metering-quota)", self.metering_quota),
        ] {
            if let Some(quota) = quota {
                if !quota.is_finite() || quota < 0.0 {
                    return Err(format!(
                        "{key} must be a finite number >= 0 (0 or null means unlimited), got {quota}"
                    ));
                }
            }
        }
        if self.metering_window_hours == 0 {
            return Err("meteringWindowHours (--metering-window-hours) must be at least 1".into());
        }
        for (product, dimensions) in &self.metering_dimensions {
            if !super::model::is_product_code(product) {
                return Err(format!(
                    "meteringDimensions: {product:?} is not a product code ([-a-zA-Z0-9/=:_.@], 1 to 255)"
                ));
            }
            if let Some(bad) = dimensions
                .iter()
                .find(|d| !(1..=255).contains(&d.chars().count()))
            {
                return Err(format!(
                    "meteringDimensions: {product}: dimension {bad:?} is not 1 to 255 characters"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "errorRate (--error-rate) must be a number from 0 to 1, got {}",
                self.error_rate
            ));
        }
        Ok(())
    }

    /// The error rate as a probability, whatever was stored.
    pub(crate) fn effective_error_rate(&self) -> f64 {
        if self.error_rate.is_nan() {
            0.0
        } else {
            self.error_rate.clamp(0.0, 1.0)
        }
    }
}

/// Body of `POST /emulator/config`: any subset of the settings. For the quotas, an absent member keeps
/// the current value while an explicit `null` makes the service unlimited, hence the double option.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default, deserialize_with = "present")]
    pub quota: Option<Option<f64>>,
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub disabled: Option<bool>,
    pub single_use: Option<bool>,
    pub strict_auth: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub entitlement_quota: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub metering_quota: Option<Option<f64>>,
    pub metering_window_hours: Option<u32>,
    pub metering_dimensions: Option<BTreeMap<String, Vec<String>>>,
    pub metering_throttle: Option<u32>,
    pub metering_fail: Option<u32>,
    pub metering_unprocessed: Option<u32>,
}

/// Only runs when the member is present, so `null` becomes `Some(None)`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl SettingsPatch {
    /// Parses a request body. The message names what was wrong, for the 400 answer.
    /// An empty body is an empty patch, so a bare `POST` just reports the config.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
        // serde's derived visitor would also take a JSON array; the endpoint promises an object.
        if !value.is_object() {
            return Err("body must be a JSON object".to_owned());
        }
        serde_json::from_value(value).map_err(|e| format!("invalid config: {e}"))
    }

    /// The settings this patch would produce, if they are valid.
    pub fn apply_to(&self, current: &EmulatorSettings) -> Result<EmulatorSettings, String> {
        let mut next = current.clone();
        if let Some(quota) = self.quota {
            next.quota = quota;
        }
        if let Some(latency_ms) = self.latency_ms {
            next.latency_ms = latency_ms;
        }
        if let Some(error_rate) = self.error_rate {
            next.error_rate = error_rate;
        }
        if let Some(disabled) = self.disabled {
            next.disabled = disabled;
        }
        if let Some(single_use) = self.single_use {
            next.single_use = single_use;
        }
        if let Some(strict_auth) = self.strict_auth {
            next.strict_auth = strict_auth;
        }
        if let Some(quota) = self.entitlement_quota {
            next.entitlement_quota = quota;
        }
        if let Some(quota) = self.metering_quota {
            next.metering_quota = quota;
        }
        if let Some(hours) = self.metering_window_hours {
            next.metering_window_hours = hours;
        }
        if let Some(dimensions) = &self.metering_dimensions {
            next.metering_dimensions = dimensions.clone();
        }
        if let Some(n) = self.metering_throttle {
            next.metering_throttle = n;
        }
        if let Some(n) = self.metering_fail {
            next.metering_fail = n;
        }
        if let Some(n) = self.metering_unprocessed {
            next.metering_unprocessed = n;
        }
        next.validate()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> SettingsPatch {
        SettingsPatch::parse(json.as_bytes()).expect("valid patch")
    }

    #[test]
    fn absent_members_keep_their_values_and_null_quota_means_unlimited() {
        let current = EmulatorSettings {
            quota: Some(20.0),
            latency_ms: 5,
            error_rate: 0.5,
            disabled: true,
            ..Default::default()
        };
        assert_eq!(patch("{}").apply_to(&current), Ok(current.clone()));
        assert_eq!(patch(" ").apply_to(&current), Ok(current.clone()));
        let next = patch(r#"{"quota": null, "disabled": false}"#)
            .apply_to(&current)
            .expect("valid");
        assert_eq!(next.quota, None);
        assert!(!next.disabled);
        assert_eq!(next.latency_ms, 5);
        assert_eq!(
            patch(r#"{"quota": 3.5, "latencyMs": 7, "errorRate": 0}"#).apply_to(&current),
            Ok(EmulatorSettings {
                quota: Some(3.5),
                latency_ms: 7,
                error_rate: 0.0,
                disabled: true,
                ..Default::default()
            })
        );
        let next = patch(r#"{"singleUse": true, "strictAuth": true, "entitlementQuota": 2}"#)
            .apply_to(&current)
            .expect("valid");
        assert!(next.single_use && next.strict_auth);
        assert_eq!(next.entitlement_quota, Some(2.0));
        assert_eq!(next.quota, Some(20.0));
        let next = patch(r#"{"entitlementQuota": null}"#)
            .apply_to(&next)
            .expect("valid");
        assert_eq!(next.entitlement_quota, None);
    }

    #[test]
    fn metering_settings_default_to_the_services_limits_and_patch() {
        let current = EmulatorSettings::default();
        assert_eq!(current.metering_quota, Some(10.0));
        assert_eq!(current.metering_window_hours, 24);
        let next = patch(
            r#"{"meteringQuota": null, "meteringWindowHours": 6, "meteringThrottle": 2,
                "meteringFail": 1, "meteringUnprocessed": 3,
                "meteringDimensions": {"prod-abc": ["api_calls"]}}"#,
        )
        .apply_to(&current)
        .expect("valid");
        assert_eq!(next.metering_quota, None);
        assert_eq!(next.metering_window_hours, 6);
        assert_eq!(
            (
                next.metering_throttle,
                next.metering_fail,
                next.metering_unprocessed
            ),
            (2, 1, 3)
        );
        assert_eq!(next.metering_dimensions["prod-abc"], ["api_calls"]);
        assert_eq!(patch("{}").apply_to(&next), Ok(next.clone()));
        let parsed: EmulatorSettings =
            serde_json::from_str(r#"{"meteringQuota": null}"#).expect("parses");
        assert_eq!(parsed.metering_quota, None);
        let parsed: EmulatorSettings = serde_json::from_str("{}").expect("parses");
        assert_eq!(parsed, EmulatorSettings::default());
    }

    #[test]
    fn rejects_out_of_range_values() {
        let current = EmulatorSettings::default();
        for json in [
            r#"{"errorRate": 1.5}"#,
            r#"{"errorRate": -0.1}"#,
            r#"{"quota": -1}"#,
            r#"{"entitlementQuota": -2}"#,
            r#"{"meteringQuota": -2}"#,
            r#"{"meteringWindowHours": 0}"#,
            r#"{"meteringDimensions": {"prod abc": ["d"]}}"#,
            r#"{"meteringDimensions": {"prod-abc": [""]}}"#,
        ] {
            assert!(patch(json).apply_to(&current).is_err(), "{json}");
        }
        for json in [
            r#"{"latencyMs": -1}"#,
            r#"{"quota": "fast"}"#,
            r#"{"errorrate": 0.1}"#,
            r#"{"singleUse": "yes"}"#,
            "[null, null, null, null]",
            "not json",
        ] {
            assert!(SettingsPatch::parse(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn validate_rejects_non_finite_values() {
        let mut settings = EmulatorSettings {
            quota: Some(f64::INFINITY),
            ..Default::default()
        };
        assert!(settings.validate().is_err());
        settings.quota = Some(0.0);
        assert!(settings.validate().is_ok());
        settings.error_rate = f64::NAN;
        assert!(settings.validate().is_err());
        assert_eq!(settings.effective_error_rate(), 0.0);
    }
}
