//! The timing limits a configuration must respect, as pure functions: configuration validation
//! (`validate.rs`, exit 78 on a breach) and `check` (`src/ops/check/config.rs`) both use these, so
//! what refuses to start and what the preflight reports cannot disagree.
//!
//! - One delivery's ResolveCustomer retries must fit the visibility timeout, so a message is never
//!   kept hidden by the heartbeat alone while it is being resolved.
//! - Nothing may keep a message hidden past SQS's 12-hour limit from its receipt: SQS refuses a
//!   visibility change beyond it, and the message reappears while it is still being worked on.
//! - The stall timeout must exceed the longest quiet spell of a healthy receive loop.

use std::time::Duration;

use super::{ResolveSettings, Settings};

/// SQS keeps a message hidden at most 12 hours from its receipt, heartbeats included.
pub const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

/// Room the visibility timeout leaves after the resolve loop's deadline: to publish the event (or
/// send the dead-letter) and delete the message before another consumer may see it, should every
/// heartbeat fail.
pub const VISIBILITY_MARGIN: Duration = Duration::from_secs(10);

/// Ceiling of the receive loop's backoff after a failed ReceiveMessage (`src/worker/mod.rs`).
pub const RECEIVE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The longest one delivery spends in ResolveCustomer and its retries: the backoff budget plus one
/// attempt's timeout. The budget only decides whether another attempt starts
/// (`worker::retry::retry_without_cancelling`); the attempt running when it is spent is never cut
/// (AWS may already have spent the token) and may take its full timeout.
pub fn delivery_worst_case(resolve: &ResolveSettings) -> Duration {
    resolve.budget() + resolve.attempt_timeout()
}

/// How the visibility timeout compares with what one delivery needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisibilityBudget {
    /// `worker.visibility_timeout_secs`.
    pub asked: Duration,
    /// [`delivery_worst_case`].
    pub worst_case: Duration,
    /// The shortest visibility timeout that fits: the worst case plus [`VISIBILITY_MARGIN`], in
    /// whole seconds (SQS's grain), rounded up.
    pub needed: Duration,
}

impl VisibilityBudget {
    pub fn fits(&self) -> bool {
        self.asked >= self.needed
    }

    /// Where `needed` comes from, e.g. `budget 20 s + one attempt 30 s + 10 s margin`.
    pub fn breakdown(&self, resolve: &ResolveSettings) -> String {
        format!(
            "budget {} s + one attempt {} + {} s margin",
            resolve.budget_secs,
            secs_text(resolve.attempt_timeout()),
            VISIBILITY_MARGIN.as_secs()
        )
    }
}

/// The visibility rule's figures for these settings.
pub fn visibility_budget(settings: &Settings) -> VisibilityBudget {
    let worst_case = delivery_worst_case(&settings.resolve);
    VisibilityBudget {
        asked: settings.worker.visibility_timeout(),
        worst_case,
        needed: whole_secs_up(worst_case + VISIBILITY_MARGIN),
    }
}

/// Whether one delivery's retries fit the visibility timeout the worker asks for.
pub fn visibility_fits(settings: &Settings) -> bool {
    visibility_budget(settings).fits()
}

/// The longest a message handed back after a spent budget stays hidden, from its receipt: the
/// whole resolve loop, then the longest hand-back delay.
pub fn handback_span(settings: &Settings) -> Duration {
    delivery_worst_case(&settings.resolve) + settings.resolve.handback_max()
}

/// The longest a resolved message whose publish keeps failing stays hidden, from its receipt: the
/// resolve loop, the hold, and the last heartbeat's extension by the visibility timeout.
pub fn hold_span(settings: &Settings) -> Duration {
    delivery_worst_case(&settings.resolve)
        + settings.publish.hold()
        + settings.worker.visibility_timeout()
}

/// The shortest stall timeout that never fires on a healthy receive loop: one long poll, plus the
/// longest backoff after a failed receive.
pub fn quiet_receive_loop(settings: &Settings) -> Duration {
    settings.worker.receive_wait() + RECEIVE_BACKOFF_MAX
}

fn whole_secs_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// `5 s`, or `2.5 s` when there is a fraction.
fn secs_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load_env;

    fn settings(extra: &[(&str, &str)]) -> Settings {
        load_env(extra).expect("valid settings").settings
    }

    #[test]
    fn the_defaults_need_60_s_of_visibility_and_ask_for_60() {
        let b = visibility_budget(&settings(&[]));
        assert_eq!(b.worst_case, Duration::from_secs(50));
        assert_eq!(b.needed, Duration::from_secs(60));
        assert_eq!(b.asked, Duration::from_secs(60));
        assert!(b.fits());
    }

    #[test]
    fn the_worst_case_is_the_budget_plus_one_attempt() {
        for (budget, attempt_ms, worst_ms, needed) in [
            ("0", "100", 100, 11),
            ("5", "3000", 8_000, 18),
            ("20", "5000", 25_000, 35),
            ("60", "2500", 62_500, 73),
        ] {
            let s = settings(&[
                ("MPR_RESOLVE__BUDGET_SECS", budget),
                ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", attempt_ms),
                ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "600"),
            ]);
            let b = visibility_budget(&s);
            assert_eq!(
                b.worst_case,
                Duration::from_millis(worst_ms),
                "{budget}/{attempt_ms}"
            );
            assert_eq!(
                b.needed,
                Duration::from_secs(needed),
                "{budget}/{attempt_ms}"
            );
        }
    }

    #[test]
    fn the_visibility_fits_from_the_needed_second_on() {
        let mut s = settings(&[]);
        s.worker.visibility_timeout_secs = 60;
        assert!(visibility_fits(&s));
        s.worker.visibility_timeout_secs = 59;
        assert!(!visibility_fits(&s));
    }

    #[test]
    fn spans_from_receipt() {
        let s = settings(&[]);
        // 20 s budget + 30 s attempt, then a 300 s hand-back, or a 900 s hold with a 60 s extension.
        assert_eq!(handback_span(&s), Duration::from_secs(350));
        assert_eq!(hold_span(&s), Duration::from_secs(1_010));
        assert_eq!(quiet_receive_loop(&s), Duration::from_secs(50));
    }

    #[test]
    fn breakdown_names_each_part() {
        let s = settings(&[("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "2500")]);
        assert_eq!(
            visibility_budget(&s).breakdown(&s.resolve),
            "budget 20 s + one attempt 2.5 s + 10 s margin"
        );
    }
}
