//! `[intake]`: the endpoint behind the product's fulfillment URL (`mp-resolver intake`).

use serde::{Deserialize, Serialize};

use super::validate::check_range;
use super::{invalid, ConfigError};

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

pub(super) fn validate(i: &IntakeSettings) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, Loaded, Sources};

    const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/tokens";

    fn load_env(extra: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let mut env: Vec<(String, String)> = [
            ("MPR_QUEUE_URL", QUEUE),
            (
                "MPR_DLQ_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/tokens-dlq",
            ),
            (
                "MPR_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:customers",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        load(&Sources {
            env,
            ..Sources::default()
        })
    }

    #[test]
    fn intake_defaults_match_the_documented_file() {
        let s = load_env(&[]).unwrap().settings;
        assert_eq!(s.intake.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.intake.path, "/");
        assert_eq!(s.intake.registration_url, "", "required by `intake` only");
        assert_eq!(s.intake.max_body_bytes, 16 * 1024);
        assert_eq!(s.intake.rate_limit_per_minute, 30);
        assert_eq!(s.intake.client_address, ClientAddressSource::XForwardedFor);
    }

    #[test]
    fn bad_intake_values_name_the_key() {
        for (var, value, key) in [
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
}
