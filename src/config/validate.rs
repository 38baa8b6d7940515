//! The rules a loaded configuration must follow. Each breach is an error naming the key and its
//! environment variable; `mp-resolver` exits 78 with it (docs/operations.md, "Configuration
//! rules"). Single values first (required, finite, in range), then the timing rules between keys
//! (`limits.rs`).

use std::time::Duration;

use super::limits::{self, RECEIVE_BACKOFF_MAX, SQS_MAX_VISIBILITY, VISIBILITY_MARGIN};
use super::{invalid, ConfigError, Settings};

pub fn validate(s: &Settings) -> Result<(), ConfigError> {
    resources(s)?;
    super::marketplace::validate(s)?;
    super::metering::validate(s)?;
    super::store::validate(s)?;
    s.metrics.validate()?;
    super::intake::validate(&s.intake)?;
    finite_numbers(s)?;
    ranges(s)?;
    timing(s)?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(s.log.level.trim()) {
        return Err(invalid(
            "log.level",
            format!("is not a log filter (e.g. `info` or `mp_resolver=debug,info`): {e}"),
        ));
    }
    Ok(())
}

fn resources(s: &Settings) -> Result<(), ConfigError> {
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
    Ok(())
}

/// TOML (and so the environment) accepts `nan` and `inf`; no float setting means anything with
/// them, and NaN would slip through every range comparison.
fn finite_numbers(s: &Settings) -> Result<(), ConfigError> {
    let rl = &s.rate_limit;
    for (key, value) in [
        (
            "resolve.backoff_factor",
            f64::from(s.resolve.backoff_factor),
        ),
        ("rate_limit.initial_per_sec", rl.initial_per_sec),
        ("rate_limit.min_per_sec", rl.min_per_sec),
        ("rate_limit.max_per_sec", rl.max_per_sec),
        ("rate_limit.decrease_factor", rl.decrease_factor),
        ("rate_limit.increase_per_sec", rl.increase_per_sec),
    ] {
        if !value.is_finite() {
            return Err(invalid(
                key,
                format!("must be a finite number, got {value}"),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_range<T: PartialOrd + std::fmt::Display>(
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

fn ranges(s: &Settings) -> Result<(), ConfigError> {
    let (w, r, p, rl, pa) = (&s.worker, &s.resolve, &s.publish, &s.rate_limit, &s.pause);
    // Whole-number keys as (key, value, min, max); every integer type fits an i128 as it is.
    #[rustfmt::skip]
    let whole: [(&str, i128, i128, i128); 24] = [
        ("worker.max_in_flight", w.max_in_flight as i128, 1, 10_000),
        ("worker.receive_batch", w.receive_batch as i128, 1, 10),
        ("worker.receive_wait_secs", w.receive_wait_secs as i128, 0, 20),
        // The heartbeat extends visibility every third of it; below 3 s that leaves no slack.
        ("worker.visibility_timeout_secs", w.visibility_timeout_secs as i128, 3, 43_200),
        ("worker.shutdown_grace_secs", w.shutdown_grace_secs as i128, 0, 3_600),
        ("worker.stall_timeout_secs", w.stall_timeout_secs as i128, 1, 86_400),
        ("worker.dedupe_capacity", w.dedupe_capacity as i128, 1, 1_000_000),
        ("worker.delete_linger_ms", w.delete_linger_ms as i128, 0, 1_000),
        ("worker.runtime_threads", w.runtime_threads as i128, 0, 64),
        ("resolve.attempt_timeout_ms", r.attempt_timeout_ms as i128, 100, 60_000),
        ("resolve.max_attempts", r.max_attempts as i128, 1, 100),
        ("resolve.initial_backoff_ms", r.initial_backoff_ms as i128, 1, 60_000),
        ("resolve.max_backoff_ms", r.max_backoff_ms as i128, r.initial_backoff_ms as i128, 600_000),
        ("resolve.budget_secs", r.budget_secs as i128, 0, 43_200),
        ("resolve.handback_max_secs", r.handback_max_secs as i128, 1, 43_200),
        ("publish.max_batch", p.max_batch as i128, 1, 10),
        ("publish.linger_ms", p.linger_ms as i128, 0, 1_000),
        ("publish.hold_secs", p.hold_secs as i128, 1, 43_200),
        ("publish.hold_max_delay_secs", p.hold_max_delay_secs as i128, 1, p.hold_secs as i128),
        ("rate_limit.cooldown_ms", rl.cooldown_ms as i128, 0, 60_000),
        // The fleet's item lives a day after its last write (store/fleet.rs).
        ("rate_limit.learned_max_age_secs", rl.learned_max_age_secs as i128, 0, 86_400),
        ("pause.probe_initial_secs", pa.probe_initial_secs as i128, 1, 3_600),
        ("pause.probe_max_secs", pa.probe_max_secs as i128, pa.probe_initial_secs as i128, 86_400),
        ("aws.max_attempts", s.aws.max_attempts as i128, 1, 10),
    ];
    #[rustfmt::skip]
    let fractional: [(&str, f64, f64, f64); 4] = [
        ("rate_limit.min_per_sec", rl.min_per_sec, 0.01, 10_000.0),
        ("rate_limit.initial_per_sec", rl.initial_per_sec, rl.min_per_sec, 10_000.0),
        ("rate_limit.decrease_factor", rl.decrease_factor, 0.05, 0.99),
        ("rate_limit.increase_per_sec", rl.increase_per_sec, 0.0, 1_000.0),
    ];
    for (key, value, min, max) in whole {
        check_range(key, value, min, max)?;
    }
    for (key, value, min, max) in fractional {
        check_range(key, value, min, max)?;
    }
    check_range("resolve.backoff_factor", r.backoff_factor, 1.0, 10.0)?;
    // A max_per_sec of 0 means no ceiling.
    if rl.max_per_sec != 0.0 {
        check_range(
            "rate_limit.max_per_sec",
            rl.max_per_sec,
            rl.initial_per_sec,
            10_000.0,
        )?;
    }
    Ok(())
}

/// Whole seconds, for messages (every limit here is in whole seconds).
fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// What is left of the 12 hours once `used` is spent, in whole seconds.
fn room_after(used: Duration) -> u64 {
    secs(SQS_MAX_VISIBILITY.saturating_sub(used))
}

/// The rules between keys, each naming the key to change.
fn timing(s: &Settings) -> Result<(), ConfigError> {
    let max = secs(SQS_MAX_VISIBILITY);
    let worst_case = limits::delivery_worst_case(&s.resolve);
    let visibility = limits::visibility_budget(s);

    if visibility.needed > SQS_MAX_VISIBILITY {
        return Err(invalid(
            "resolve.budget_secs",
            format!(
                "with one attempt of {} ms and the {} s margin, no visibility timeout can cover it \
                 (SQS allows at most {max} s); at most {} fits",
                s.resolve.attempt_timeout_ms,
                secs(VISIBILITY_MARGIN),
                room_after(s.resolve.attempt_timeout() + VISIBILITY_MARGIN)
            ),
        ));
    }
    if !visibility.fits() {
        return Err(invalid(
            "worker.visibility_timeout_secs",
            format!(
                "is {} s, but one delivery's retries need {} s ({}): must be at least {} s, or \
                 lower resolve.budget_secs or resolve.attempt_timeout_ms",
                secs(visibility.asked),
                visibility.needed.as_secs(),
                visibility.breakdown(&s.resolve),
                visibility.needed.as_secs()
            ),
        ));
    }
    if limits::handback_span(s) > SQS_MAX_VISIBILITY {
        return Err(invalid(
            "resolve.handback_max_secs",
            format!(
                "after a delivery's retries (up to {} s), a hand-back this long would keep the \
                 message hidden past SQS's {max} s limit from its receipt; at most {} fits",
                worst_case.as_secs_f64(),
                room_after(worst_case)
            ),
        ));
    }
    if limits::hold_span(s) > SQS_MAX_VISIBILITY {
        let used = worst_case + s.worker.visibility_timeout();
        return Err(invalid(
            "publish.hold_secs",
            format!(
                "after a delivery's retries (up to {} s), a hold this long, extended by the \
                 heartbeat ({} s at a time), would keep the message hidden past SQS's {max} s \
                 limit from its receipt; at most {} fits (or lower worker.visibility_timeout_secs)",
                worst_case.as_secs_f64(),
                s.worker.visibility_timeout_secs,
                room_after(used)
            ),
        ));
    }
    let quiet = limits::quiet_receive_loop(s);
    if Duration::from_secs(s.worker.stall_timeout_secs) <= quiet {
        return Err(invalid(
            "worker.stall_timeout_secs",
            format!(
                "is {} s, but a healthy receive loop can be quiet for {} s (receive_wait_secs {} \
                 + the receive retry backoff's ceiling of {} s): must be above {}, or every idle \
                 queue or single failed receive would report unhealthy and restart the task",
                s.worker.stall_timeout_secs,
                secs(quiet),
                s.worker.receive_wait_secs,
                secs(RECEIVE_BACKOFF_MAX),
                secs(quiet)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{load_env, required, temp_file};
    use crate::config::{load, Sources};

    /// Asserts that these variables are refused, naming `key` and its variable, with `says` in
    /// the problem.
    fn refused(vars: &[(&str, &str)], key: &str, says: &str) {
        let err = load_env(vars).expect_err(&format!("{vars:?} should be refused"));
        let text = err.to_string();
        let env = crate::config::env_name(key);
        assert!(
            text.contains(&format!("`{key}`")) && text.contains(&env) && text.contains(says),
            "{vars:?}: wanted `{key}` ({env}) and {says:?} in: {text}"
        );
    }

    /// Accepted when `ok`, otherwise refused as [`refused`] says.
    fn judged(vars: &[(&str, &str)], ok: bool, key: &str, says: &str) {
        if ok {
            accepted(vars);
        } else {
            refused(vars, key, says);
        }
    }

    fn accepted(vars: &[(&str, &str)]) {
        if let Err(e) = load_env(vars) {
            panic!("{vars:?} should be accepted: {e}");
        }
    }

    const FLOAT_KEYS: [&str; 6] = [
        "resolve.backoff_factor",
        "rate_limit.initial_per_sec",
        "rate_limit.min_per_sec",
        "rate_limit.max_per_sec",
        "rate_limit.decrease_factor",
        "rate_limit.increase_per_sec",
    ];

    #[test]
    fn nan_and_infinite_numbers_are_refused_in_every_float_key() {
        for key in FLOAT_KEYS {
            let (section, name) = key.split_once('.').expect("section.key");
            for literal in ["nan", "inf", "-inf"] {
                // TOML reads these as floats; the finite rule refuses them.
                let file = temp_file(
                    &format!("{key}-{literal}.toml"),
                    &format!("[{section}]\n{name} = {literal}\n"),
                );
                let err = load(&Sources {
                    config_file: Some(file),
                    env: required(),
                    ..Sources::default()
                })
                .expect_err(literal)
                .to_string();
                assert!(
                    err.contains(&format!("`{key}`")) && err.contains("must be a finite number"),
                    "{key} = {literal}: {err}"
                );
                // The environment has no float literal for them: a type error, same key.
                refused(&[(&crate::config::env_name(key), literal)], key, "");
            }
        }
    }

    #[test]
    fn stall_timeout_must_exceed_the_quiet_receive_loop() {
        // receive_wait_secs 20 + the 30 s receive backoff ceiling = 50 s of quiet when healthy.
        for (stall, wait, ok) in [
            ("5", "20", false),
            ("50", "20", false),
            ("51", "20", true),
            ("30", "0", false),
            ("31", "0", true),
            ("32", "1", true),
        ] {
            let vars = [
                ("MPR_WORKER__STALL_TIMEOUT_SECS", stall),
                ("MPR_WORKER__RECEIVE_WAIT_SECS", wait),
            ];
            judged(&vars, ok, "worker.stall_timeout_secs", "must be above");
        }
    }

    #[test]
    fn retries_must_fit_the_visibility_timeout() {
        // Needed: budget + one attempt (rounded up to whole seconds) + 10 s.
        for (visibility, budget, attempt_ms, ok) in [
            ("60", "20", "30000", true),
            ("59", "20", "30000", false),
            ("35", "20", "5000", true),
            ("34", "20", "5000", false),
            ("30", "60", "3000", false),
            ("73", "60", "3000", true),
            ("11", "0", "100", true),
            ("10", "0", "100", false),
            ("4", "15", "10000", false),
        ] {
            let vars = [
                ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", visibility),
                ("MPR_RESOLVE__BUDGET_SECS", budget),
                ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", attempt_ms),
            ];
            judged(
                &vars,
                ok,
                "worker.visibility_timeout_secs",
                "must be at least",
            );
        }
    }

    #[test]
    fn nothing_keeps_a_message_hidden_past_12_hours_from_receipt() {
        let big_visibility = ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "43200");
        for (vars, key, says) in [
            // A budget no visibility timeout can cover.
            (
                vec![big_visibility, ("MPR_RESOLVE__BUDGET_SECS", "43195")],
                "resolve.budget_secs",
                "at most 43160 fits",
            ),
            // 50 s of retries + a 43,180 s hand-back.
            (
                vec![("MPR_RESOLVE__HANDBACK_MAX_SECS", "43180")],
                "resolve.handback_max_secs",
                "at most 43150 fits",
            ),
            // 50 s of retries + a 43,150 s hold + a 60 s heartbeat extension.
            (
                vec![
                    ("MPR_PUBLISH__HOLD_SECS", "43150"),
                    ("MPR_PUBLISH__HOLD_MAX_DELAY_SECS", "30"),
                ],
                "publish.hold_secs",
                "at most 43090 fits",
            ),
            // The longest visibility timeout leaves no room for any hold.
            (vec![big_visibility], "publish.hold_secs", "at most 0 fits"),
        ] {
            refused(&vars, key, says);
        }
        accepted(&[("MPR_RESOLVE__HANDBACK_MAX_SECS", "43150")]);
        accepted(&[("MPR_PUBLISH__HOLD_SECS", "43090")]);
    }

    #[test]
    fn publish_hold_keys_have_their_ranges() {
        refused(
            &[("MPR_PUBLISH__HOLD_SECS", "0")],
            "publish.hold_secs",
            "between 1",
        );
        refused(
            &[("MPR_PUBLISH__HOLD_MAX_DELAY_SECS", "901")],
            "publish.hold_max_delay_secs",
            "between 1 and 900",
        );
        refused(
            &[("MPR_PUBLISH__HOLD_MAX_DELAY_SECS", "0")],
            "publish.hold_max_delay_secs",
            "between 1",
        );
        let s = load_env(&[]).unwrap().settings;
        assert_eq!(
            (s.publish.hold_secs, s.publish.hold_max_delay_secs),
            (900, 30)
        );
    }
}
