//! `[intake]`: the endpoint behind the product's fulfillment URL (`mp-resolver intake`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::settings::comma_separated;
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
    /// How many proxies in front of intake append to `X-Forwarded-For` (the ALB: 1).
    pub trusted_proxies: usize,
    /// Origins a cross-site POST may come from (`Origin`, or the origin of `Referer`); an entry
    /// `https://*.example.com` stands for every subdomain of `example.com`.
    #[serde(deserialize_with = "comma_separated")]
    pub allowed_origins: Vec<String>,
    pub readiness_interval_secs: u64,
    pub retry_after_secs: u64,
    /// A client must send a request's headers within this (idle keep-alive connections included).
    pub header_timeout_ms: u64,
    /// A client must send a request's whole body within this, counted from its headers.
    pub body_timeout_ms: u64,
    /// One SendMessageBatch attempt to the token queue.
    pub send_attempt_timeout_ms: u64,
    /// Every attempt of one send together: the longest a buyer waits for the queue.
    pub send_deadline_ms: u64,
    /// At shutdown, how long requests under way may take before their connections are closed.
    pub shutdown_grace_ms: u64,
}

impl IntakeSettings {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
    pub fn send_attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.send_attempt_timeout_ms)
    }
    pub fn send_deadline(&self) -> Duration {
        Duration::from_millis(self.send_deadline_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Which address a request is counted against by the per-client limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddressSource {
    /// The `X-Forwarded-For` entry the outermost of `trusted_proxies` proxies appended: the
    /// address that proxy saw.
    XForwardedFor,
    /// The TCP peer: for an endpoint with no load balancer in front.
    Peer,
}

/// An ALB closes a connection idle for 60 s by default: intake answers well within it.
const LOAD_BALANCER_IDLE_MS: u64 = 60_000;

pub(super) fn validate(i: &IntakeSettings) -> Result<(), ConfigError> {
    validate_path(&i.path)?;
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
    check_range("intake.trusted_proxies", i.trusted_proxies, 0, 10)?;
    for origin in &i.allowed_origins {
        if let Err(problem) = crate::intake::origin::OriginPattern::parse(origin) {
            return Err(invalid("intake.allowed_origins", problem));
        }
    }
    check_range(
        "intake.readiness_interval_secs",
        i.readiness_interval_secs,
        1,
        3_600,
    )?;
    check_range("intake.retry_after_secs", i.retry_after_secs, 1, 3_600)?;
    check_range("intake.header_timeout_ms", i.header_timeout_ms, 100, 60_000)?;
    check_range("intake.body_timeout_ms", i.body_timeout_ms, 100, 60_000)?;
    check_range(
        "intake.send_attempt_timeout_ms",
        i.send_attempt_timeout_ms,
        100,
        30_000,
    )?;
    check_range(
        "intake.send_deadline_ms",
        i.send_deadline_ms,
        i.send_attempt_timeout_ms,
        LOAD_BALANCER_IDLE_MS - 10_000,
    )?;
    check_range("intake.shutdown_grace_ms", i.shutdown_grace_ms, 0, 120_000)?;
    Ok(())
}

/// A path axum can route as it is: no segment it would panic on (`:x`, `*x`, the capture
/// syntax of axum 0.7) or turn into a capture (`{x}`).
fn validate_path(path: &str) -> Result<(), ConfigError> {
    let refuse = |problem: String| Err(invalid("intake.path", format!("{problem}, got {path:?}")));
    if !path.starts_with('/') || path.contains(['?', '#']) {
        return refuse("must be a URL path starting with `/`".to_owned());
    }
    match path
        .split('/')
        .find(|s| s.starts_with([':', '*']) || s.contains(['{', '}']))
    {
        Some(segment) => refuse(format!(
            "must be a fixed path: the segment {segment:?} would be a route parameter \
             (no segment may start with `:` or `*` or contain `{{` or `}}`)"
        )),
        None => Ok(()),
    }
}

// The other keys are tested in `config::tests` (defaults, and every bad value naming its key).
#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &[(&str, &str)]) -> Result<IntakeSettings, ConfigError> {
        let env: Vec<(String, String)> = [
            ("MPR_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q"),
            ("MPR_DLQ_URL", "https://sqs.us-east-1.amazonaws.com/1/d"),
            ("MPR_TOPIC_ARN", "arn:aws:sns:us-east-1:1:t"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        super::super::load(&super::super::Sources {
            env,
            ..Default::default()
        })
        .map(|l| l.settings.intake)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let i = load(&[]).unwrap();
        assert_eq!(i.trusted_proxies, 1);
        assert_eq!(
            i.allowed_origins,
            [
                "https://aws.amazon.com",
                "https://console.aws.amazon.com",
                "https://*.console.aws.amazon.com"
            ]
        );
        assert_eq!(i.header_timeout(), Duration::from_secs(5));
        assert_eq!(i.body_timeout(), Duration::from_secs(5));
        assert_eq!(i.send_attempt_timeout(), Duration::from_secs(3));
        assert_eq!(i.send_deadline(), Duration::from_secs(10));
        assert_eq!(i.shutdown_grace(), Duration::from_secs(10));
        let from_env = load(&[(
            "MPR_INTAKE__ALLOWED_ORIGINS",
            "https://aws.amazon.com, http://127.0.0.1:8081",
        )])
        .unwrap();
        assert_eq!(
            from_env.allowed_origins,
            ["https://aws.amazon.com", "http://127.0.0.1:8081"]
        );
    }

    #[test]
    fn bad_intake_values_name_the_key() {
        #[rustfmt::skip]
        let cases = [
            ("MPR_INTAKE__PATH", "/{id}", "intake.path"),
            ("MPR_INTAKE__PATH", "/:id", "intake.path"),
            ("MPR_INTAKE__TRUSTED_PROXIES", "11", "intake.trusted_proxies"),
            ("MPR_INTAKE__ALLOWED_ORIGINS", "aws.amazon.com", "intake.allowed_origins"),
            ("MPR_INTAKE__HEADER_TIMEOUT_MS", "0", "intake.header_timeout_ms"),
            ("MPR_INTAKE__BODY_TIMEOUT_MS", "600000", "intake.body_timeout_ms"),
            ("MPR_INTAKE__SEND_ATTEMPT_TIMEOUT_MS", "50", "intake.send_attempt_timeout_ms"),
            // Past an ALB's 60 s idle timeout (with room for the headers and the body).
            ("MPR_INTAKE__SEND_DEADLINE_MS", "60000", "intake.send_deadline_ms"),
            // Shorter than one attempt.
            ("MPR_INTAKE__SEND_DEADLINE_MS", "1000", "intake.send_deadline_ms"),
            ("MPR_INTAKE__SHUTDOWN_GRACE_MS", "-1", "intake.shutdown_grace_ms"),
        ];
        for (var, value, key) in cases {
            let err = load(&[(var, value)]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(var),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn paths_axum_would_capture_or_panic_on_are_refused_naming_the_key() {
        for bad in [
            "/:x",
            "/fulfil/:id",
            "/*x",
            "/a/*rest",
            "/{x}",
            "/a{b}",
            "/}",
            "fulfil",
        ] {
            let err = validate_path(bad).unwrap_err().to_string();
            assert!(
                err.contains("`intake.path`") && err.contains("MPR_INTAKE__PATH"),
                "{bad}: {err}"
            );
        }
        for good in [
            "/",
            "/fulfil",
            "/marketplace/fulfil/",
            "/a:b",
            "/a*b",
            "/a-b_c.d",
        ] {
            assert!(validate_path(good).is_ok(), "{good}");
            // And axum routes it without panicking.
            let _ = axum::Router::<()>::new().route(good, axum::routing::post(|| async {}));
        }
    }
}
