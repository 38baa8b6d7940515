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

// Tested with the other keys in `config::tests` (defaults, and every bad value naming its key).
