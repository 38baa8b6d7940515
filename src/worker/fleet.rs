//! The ResolveCustomer limiter's learned rate, handed on across the fleet through the store
//! (`store/fleet.rs`): read once at start-up, so a task added because of a backlog starts at the
//! rate the others found instead of slow-starting from `rate_limit.initial_per_sec`; written now
//! and then while busy, and once more on the way out.
//!
//! It is a hint: a store that does not answer (or answers slowly) costs the new task its head
//! start and nothing else. Every failure is logged, counted (`mpr_fleet_rate_total`) and ignored;
//! no store call here waits longer than [`FLEET_CALL_TIMEOUT`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::store::fleet;
use crate::store::now_millis;
use crate::worker::ratelimit::{Learned, RatePolicy, Start};
use crate::worker::Worker;

/// How often a busy process writes its rate (when it changed materially): often enough that a
/// task started now finds a rate from the last half-minute, rarely enough to cost nothing (one
/// small write per task per interval at most).
pub const FLEET_WRITE_EVERY: Duration = Duration::from_secs(15);

/// The longest a fleet read or write may take: start-up and shutdown do not wait for a hint.
pub const FLEET_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A rate within this share of the last one written is not written again.
const MATERIAL_CHANGE: f64 = 0.1;

/// Whether `now` is worth writing after `last` was: a first write, a change of kind (a quota found,
/// or a peak after a restart of the slow start), or a rate that moved by more than
/// [`MATERIAL_CHANGE`].
pub fn worth_writing(last: Option<Learned>, now: Learned) -> bool {
    let Some(last) = last else {
        return true;
    };
    last.quota != now.quota || (now.rate - last.rate).abs() > MATERIAL_CHANGE * last.rate
}

impl Worker {
    /// Starts the ResolveCustomer limiter from the fleet's learned rate when there is one young
    /// enough (`rate_limit.learned_max_age_secs`); otherwise it keeps the configured start.
    pub(super) async fn adopt_fleet_rate(&self) {
        let max_age = Duration::from_secs(self.settings.rate_limit.learned_max_age_secs);
        if max_age.is_zero() {
            return;
        }
        let metrics = &self.telemetry.metrics;
        let read = match tokio::time::timeout(FLEET_CALL_TIMEOUT, fleet::read(&self.store)).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                metrics.fleet_rate("read", "error");
                tracing::warn!(error = %e, "the fleet's learned rate could not be read; starting at the configured rate");
                return;
            }
            Err(_) => {
                metrics.fleet_rate("read", "error");
                tracing::warn!(
                    timeout_ms = FLEET_CALL_TIMEOUT.as_millis() as u64,
                    "the fleet's learned rate was not read in time; starting at the configured rate"
                );
                return;
            }
        };
        let Some(hint) = read else {
            metrics.fleet_rate("read", "absent");
            tracing::debug!("no learned rate in the store; starting at the configured rate");
            return;
        };
        let policy = RatePolicy::from_settings(&self.settings.rate_limit);
        let age = hint.age(now_millis());
        let start = Start::from_hint(&policy, Some((hint.learned, age)), max_age);
        if start == Start::configured(&policy) {
            metrics.fleet_rate("read", "stale");
            tracing::debug!(
                rate = hint.learned.rate,
                age_secs = age.as_secs(),
                "the fleet's learned rate is too old (or teaches nothing); starting at the configured rate"
            );
            return;
        }
        let limiter = self.resolver.limiter();
        if limiter.adopt(start) {
            metrics.fleet_rate("read", "adopted");
            metrics.rate_limit(limiter.rate());
            tracing::info!(
                rate = limiter.rate(),
                slow_start = start.slow_start,
                age_secs = age.as_secs(),
                "starting at the fleet's learned rate"
            );
        }
    }

    /// Writes the ResolveCustomer limiter's rate to the store every [`FLEET_WRITE_EVERY`] while
    /// it lets calls through and its rate moved materially, and once more when `shutdown`
    /// completes (a task scaled in hands on what it learned last).
    pub(super) async fn share_fleet_rate(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        if self.settings.rate_limit.learned_max_age_secs == 0 {
            shutdown.await;
            return;
        }
        let mut last_written: Option<Learned> = None;
        let (_, mut last_granted) = self.resolver.limiter().learned();
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + FLEET_WRITE_EVERY,
            FLEET_WRITE_EVERY,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let stopping = tokio::select! {
                _ = &mut shutdown => true,
                _ = ticks.tick() => false,
            };
            let (learned, granted) = self.resolver.limiter().learned();
            // Only a busy limiter knows something new: an idle one's rate is decaying back to the
            // configured start and would only overwrite a busy task's better figure.
            if granted > last_granted
                && worth_writing(last_written, learned)
                && self.write_fleet_rate(learned).await
            {
                last_written = Some(learned);
            }
            last_granted = granted;
            if stopping {
                return;
            }
        }
    }

    /// One write of `learned`; whether it landed.
    async fn write_fleet_rate(&self, learned: Learned) -> bool {
        let metrics = &self.telemetry.metrics;
        let write = fleet::write(&self.store, learned, &self.holder);
        match tokio::time::timeout(FLEET_CALL_TIMEOUT, write).await {
            Ok(Ok(())) => {
                metrics.fleet_rate("write", "ok");
                tracing::debug!(
                    rate = learned.rate,
                    quota = learned.quota,
                    "wrote the learned rate"
                );
                true
            }
            Ok(Err(e)) => {
                metrics.fleet_rate("write", "error");
                tracing::warn!(error = %e, "the learned rate could not be written; carrying on");
                false
            }
            Err(_) => {
                metrics.fleet_rate("write", "error");
                tracing::warn!(
                    timeout_ms = FLEET_CALL_TIMEOUT.as_millis() as u64,
                    "the learned rate was not written in time; carrying on"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_material_changes_are_written() {
        let at = |rate, quota| Learned { rate, quota };
        assert!(worth_writing(None, at(10.0, false)));
        assert!(!worth_writing(Some(at(100.0, false)), at(109.0, false)));
        assert!(!worth_writing(Some(at(100.0, false)), at(91.0, false)));
        assert!(worth_writing(Some(at(100.0, false)), at(111.0, false)));
        assert!(worth_writing(Some(at(100.0, false)), at(89.0, false)));
        assert!(worth_writing(Some(at(100.0, false)), at(100.0, true)));
    }
}
