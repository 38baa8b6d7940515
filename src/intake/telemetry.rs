//! What `intake` counts and reports on the admin listener: requests by result, the latency of
//! queueing a token, and whether the token queue answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::observe::admin::Probe;
use crate::observe::metrics::{Liveness, Readiness};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug)]
pub struct IntakeTelemetry {
    registry: Registry,
    requests: Family<ResultLabel, Counter>,
    send_seconds: Histogram,
    in_flight: Gauge,
    queue_reachable: AtomicBool,
    stopping: AtomicBool,
}

impl Default for IntakeTelemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl IntakeTelemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ResultLabel, Counter>::default();
        let send_seconds = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "mpr_intake_requests",
            "Fulfillment requests, by result (accepted, no_token, bad_form, too_large, \
             unsupported_media_type, cross_site, body_timeout, rate_limited, queue_unavailable, \
             queue_no_answer, busy, info_page)",
            requests.clone(),
        );
        registry.register(
            "mpr_intake_send_duration_seconds",
            "Time to put one token on the token queue (SendMessageBatch, SDK retries included)",
            send_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "mpr_intake_in_flight",
            "Fulfillment POSTs waiting for the token queue (at most intake.max_in_flight)",
            in_flight.clone(),
        );
        IntakeTelemetry {
            registry,
            requests,
            send_seconds,
            in_flight,
            queue_reachable: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn request(&self, result: &'static str) {
        self.requests.get_or_create(&ResultLabel { result }).inc();
    }

    /// A send to the token queue finished; its outcome is also the freshest readiness signal.
    pub fn sent(&self, took: Duration, ok: bool) {
        self.send_seconds.observe(took.as_secs_f64());
        self.set_queue_reachable(ok);
    }

    /// `delta` is +1 when a POST gets a slot and -1 when it leaves it.
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    pub fn set_queue_reachable(&self, reachable: bool) {
        self.queue_reachable.store(reachable, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

impl Probe for IntakeTelemetry {
    /// A process that answers HTTP is alive: intake has no loop that can stall.
    fn liveness(&self) -> Liveness {
        Liveness::Healthy
    }

    fn readiness(&self) -> Readiness {
        if self.stopping.load(Ordering::Relaxed) {
            Readiness::Stopping
        } else if self.queue_reachable.load(Ordering::Relaxed) {
            Readiness::Ready
        } else {
            Readiness::QueueUnreachable
        }
    }

    fn render_metrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_queue_and_stopping() {
        let t = IntakeTelemetry::new();
        assert_eq!(t.readiness(), Readiness::QueueUnreachable);
        t.sent(Duration::from_millis(3), true);
        assert_eq!(t.readiness(), Readiness::Ready);
        t.sent(Duration::from_millis(3), false);
        assert_eq!(t.readiness(), Readiness::QueueUnreachable);
        t.set_queue_reachable(true);
        t.set_stopping();
        assert_eq!(t.readiness(), Readiness::Stopping);
        assert_eq!(t.liveness(), Liveness::Healthy);
    }

    #[test]
    fn metrics_name_results() {
        let t = IntakeTelemetry::new();
        t.request("accepted");
        t.request("accepted");
        t.sent(Duration::from_millis(20), true);
        let text = t.render_metrics();
        assert!(
            text.contains("mpr_intake_requests_total{result=\"accepted\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mpr_intake_send_duration_seconds_count 1"),
            "{text}"
        );
    }
}
