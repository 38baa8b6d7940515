//! What the worker counts (Prometheus metrics) and what it knows about its own health. Every
//! count has one method here, named after the event, so the code that acts only says what happened.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsOperationLabel {
    service: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsCallLabel {
    service: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreCallLabel {
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifecycleLabel {
    event_type: &'static str,
    access: &'static str,
}

/// The worker's metrics. Cheap to clone handles; registered once in `Telemetry::new`.
#[derive(Debug)]
pub struct Metrics {
    received: Counter,
    outcomes: Family<OutcomeLabel, Counter>,
    dead_letters: Family<ReasonLabel, Counter>,
    resolve_attempts: Family<ResultLabel, Counter>,
    resolve_seconds: Histogram,
    throttles: Counter,
    in_flight: Gauge,
    token_age_seconds: Histogram,
    aws_calls: Family<AwsCallLabel, Counter>,
    batch_entry_failures: Family<AwsOperationLabel, Counter>,
    heartbeats: Counter,
    rate_limit: Gauge<f64, AtomicU64>,
    paused: Gauge,
    held: Gauge,
    lifecycle_events: Family<LifecycleLabel, Counter>,
    store_calls: Family<StoreCallLabel, Counter>,
    fleet_rate: Family<StoreCallLabel, Counter>,
    store_seconds: Family<StoreOperationLabel, Histogram, fn() -> Histogram>,
    store_write_units: Counter,
    usage_events: Family<ResultLabel, Counter>,
    usage_records_metered: Family<StatusLabel, Counter>,
    usage_hours_pending: Gauge,
    usage_oldest_unmetered: Gauge,
}

impl Metrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            received: Counter::default(),
            outcomes: Family::default(),
            dead_letters: Family::default(),
            resolve_attempts: Family::default(),
            resolve_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            throttles: Counter::default(),
            in_flight: Gauge::default(),
            token_age_seconds: Histogram::new([
                0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
            ]),
            aws_calls: Family::default(),
            batch_entry_failures: Family::default(),
            heartbeats: Counter::default(),
            rate_limit: Gauge::default(),
            paused: Gauge::default(),
            held: Gauge::default(),
            lifecycle_events: Family::default(),
            store_calls: Family::default(),
            fleet_rate: Family::default(),
            store_seconds: Family::new_with_constructor(store_histogram),
            store_write_units: Counter::default(),
            usage_events: Family::default(),
            usage_records_metered: Family::default(),
            usage_hours_pending: Gauge::default(),
            usage_oldest_unmetered: Gauge::default(),
        };
        let r = registry;
        r.register(
            "mpr_messages_received",
            "Messages received from the token queue and the lifecycle queue",
            m.received.clone(),
        );
        r.register(
            "mpr_outcomes",
            "Messages by final outcome of a delivery",
            m.outcomes.clone(),
        );
        r.register(
            "mpr_dead_letters",
            "Messages dead-lettered, by reason",
            m.dead_letters.clone(),
        );
        r.register(
            "mpr_resolve_attempts",
            "ResolveCustomer calls, by result",
            m.resolve_attempts.clone(),
        );
        r.register(
            "mpr_resolve_duration_seconds",
            "ResolveCustomer call latency",
            m.resolve_seconds.clone(),
        );
        r.register(
            "mpr_resolve_throttles",
            "ResolveCustomer calls throttled",
            m.throttles.clone(),
        );
        r.register(
            "mpr_in_flight",
            "Messages being worked on",
            m.in_flight.clone(),
        );
        r.register(
            "mpr_token_age_seconds",
            "Time from enqueue (SentTimestamp) to resolution",
            m.token_age_seconds.clone(),
        );
        r.register(
            "mpr_aws_calls",
            "SQS and SNS calls, by operation and result",
            m.aws_calls.clone(),
        );
        r.register(
            "mpr_aws_batch_entry_failures",
            "Entries of SQS and SNS batch calls that failed on their own, by operation",
            m.batch_entry_failures.clone(),
        );
        r.register(
            "mpr_visibility_extensions",
            "Visibility heartbeats sent for slow messages",
            m.heartbeats.clone(),
        );
        r.register(
            "mpr_resolve_rate_limit",
            "Current adaptive ResolveCustomer rate limit, calls per second",
            m.rate_limit.clone(),
        );
        r.register(
            "mpr_paused",
            "1 while resolving is paused because the API answered DisabledApiException",
            m.paused.clone(),
        );
        r.register(
            "mpr_held_messages",
            "Resolved events waiting for a failing publish to succeed",
            m.held.clone(),
        );
        r.register(
            "mpr_lifecycle_events",
            "Subscription lifecycle events, by type and the access they give",
            m.lifecycle_events.clone(),
        );
        r.register(
            "mpr_fleet_rate",
            "Reads and writes of the fleet's learned ResolveCustomer rate, by result (read: adopted, stale, absent, error; write: ok, error)",
            m.fleet_rate.clone(),
        );
        r.register(
            "mpr_store_calls",
            "Store calls, by operation and result (ok, conflict: a conditional write lost, error)",
            m.store_calls.clone(),
        );
        r.register(
            "mpr_store_duration_seconds",
            "Store call latency, by operation",
            m.store_seconds.clone(),
        );
        r.register(
            "mpr_store_write_units",
            "DynamoDB write capacity units of the store's successful writes, estimated from the items' sizes (1 per KB, twice that in a transaction; none for the embedded store)",
            m.store_write_units.clone(),
        );
        r.register(
            "mpr_usage_events",
            "Usage events from the usage queue, by result (counted, carried, duplicate, dead_lettered, handed_back)",
            m.usage_events.clone(),
        );
        r.register(
            "mpr_usage_records_metered",
            "Hour records BatchMeterUsage answered, by status",
            m.usage_records_metered.clone(),
        );
        r.register(
            "mpr_usage_hours_pending",
            "Hours of usage in the store not yet metered and reported",
            m.usage_hours_pending.clone(),
        );
        r.register(
            "mpr_usage_oldest_unmetered_hour_age_seconds",
            "Seconds since the end of the oldest hour not yet metered (0 when none has ended)",
            m.usage_oldest_unmetered.clone(),
        );
        m
    }

    /// One usage event worked to its result.
    pub fn usage_event(&self, result: &'static str) {
        self.usage_events
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// One hour record's outcome from BatchMeterUsage (or the verdict that it cannot be sent).
    pub fn usage_record_metered(&self, status: &'static str) {
        self.usage_records_metered
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// The metering pass's view of the hours not yet metered.
    pub fn usage_hours(&self, pending: usize, oldest_age_secs: i64) {
        self.usage_hours_pending.set(pending as i64);
        self.usage_oldest_unmetered.set(oldest_age_secs.max(0));
    }

    /// One store call: `result` is `ok`, `conflict` or `error`.
    pub fn store_write_units(&self, units: u64) {
        self.store_write_units.inc_by(units);
    }

    pub fn store_call(&self, operation: &'static str, result: &'static str, took: Duration) {
        self.store_calls
            .get_or_create(&StoreCallLabel { operation, result })
            .inc();
        self.store_seconds
            .get_or_create(&StoreOperationLabel { operation })
            .observe(took.as_secs_f64());
    }

    /// One read (`adopted`, `stale`, `absent`, `error`) or write (`ok`, `error`) of the fleet's
    /// learned rate.
    pub fn fleet_rate(&self, operation: &'static str, result: &'static str) {
        self.fleet_rate
            .get_or_create(&StoreCallLabel { operation, result })
            .inc();
    }

    /// Adds `delta` to the held gauge; the new value.
    pub fn held(&self, delta: i64) -> i64 {
        self.held.inc_by(delta) + delta
    }

    pub fn received(&self, n: usize) {
        self.received.inc_by(n as u64);
    }

    pub fn outcome(&self, outcome: &'static str) {
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn dead_lettered(&self, reason: &'static str) {
        self.dead_letters
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// One ResolveCustomer call: `result` is its label, `throttled` whether it was a throttle.
    pub fn resolve_attempt(&self, result: &'static str, throttled: bool, took: Duration) {
        if throttled {
            self.throttles.inc();
        }
        self.resolve_attempts
            .get_or_create(&ResultLabel { result })
            .inc();
        self.resolve_seconds.observe(took.as_secs_f64());
    }

    /// One entry of a batch call that failed on its own while the call succeeded.
    pub fn batch_entry_failed(&self, service: &'static str, operation: &'static str) {
        self.batch_entry_failures
            .get_or_create(&AwsOperationLabel { service, operation })
            .inc();
    }

    pub fn token_age(&self, age: Duration) {
        self.token_age_seconds.observe(age.as_secs_f64());
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    pub fn aws_call(&self, service: &'static str, operation: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.aws_calls
            .get_or_create(&AwsCallLabel {
                service,
                operation,
                result,
            })
            .inc();
    }

    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    pub fn rate_limit(&self, per_sec: f64) {
        self.rate_limit.set(per_sec);
    }

    pub fn paused(&self, paused: bool) {
        self.paused.set(i64::from(paused));
    }

    /// One lifecycle event published, by its `eventType` and `access`.
    pub fn lifecycle_event(&self, event_type: &'static str, access: &'static str) {
        self.lifecycle_events
            .get_or_create(&LifecycleLabel { event_type, access })
            .inc();
    }
}

fn store_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    ])
}

/// One consumed queue's receive loop, as health sees it.
#[derive(Debug, Clone, Copy)]
struct QueueHealth {
    name: &'static str,
    /// When its receive loop last completed a receive (empty or not) or waited by choice.
    last_progress: Option<Instant>,
    /// Whether its last receive (or the start-up check) reached it.
    reachable: bool,
}

/// What `/healthz` and `/readyz` report. Each consumed queue (the token queue, the lifecycle
/// queue) is followed on its own, so one lane's progress never hides another lane's stall or
/// failing receives.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    stall_timeout: Duration,
    queues: Mutex<Vec<QueueHealth>>,
    paused: AtomicBool,
    /// The store did not answer; the token lane waits for it.
    store_paused: AtomicBool,
    stopping: AtomicBool,
    /// Resolved events held for a failing publish.
    held: AtomicU64,
    /// Why a dependency (queue, dead-letter queue, topic) did not answer the start-up check.
    unreachable: Mutex<Option<String>>,
    /// A background task the process cannot work without, which stopped.
    stopped_task: Mutex<Option<&'static str>>,
}

/// The answer of `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Healthy,
    /// No successful receive on `queue` for longer than the stall timeout.
    Stalled {
        queue: &'static str,
        since_secs: u64,
    },
    /// A background task the process needs stopped.
    TaskStopped {
        task: &'static str,
    },
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    QueueUnreachable,
    /// The start-up check could not reach the queue, the dead-letter queue or the topic.
    Unreachable,
    Paused,
    /// The store does not answer: tokens wait on the queue.
    StoreUnavailable,
    /// Resolved events are held because the topic does not take publishes.
    PublishFailing,
    Stopping,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::QueueUnreachable => "queue not reachable (yet)",
            Readiness::Unreachable => "a dependency did not answer the start-up check",
            Readiness::Paused => "paused: ResolveCustomer answered DisabledApiException",
            Readiness::StoreUnavailable => {
                "paused: the store does not answer (tokens wait on the queue; none is dead-lettered)"
            }
            Readiness::PublishFailing => {
                "holding resolved events: the topic does not accept publishes (see mpr_held_messages)"
            }
            Readiness::Stopping => "stopping",
        }
    }
}

impl Health {
    pub fn new(stall_timeout: Duration) -> Self {
        Health {
            started: Instant::now(),
            stall_timeout,
            queues: Mutex::new(Vec::new()),
            paused: AtomicBool::new(false),
            store_paused: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            held: AtomicU64::new(0),
            unreachable: Mutex::new(None),
            stopped_task: Mutex::new(None),
        }
    }

    /// Follows `queue` (by its lane's name) from now on: not reachable and without progress
    /// until its loop reports.
    pub fn watch_queue(&self, queue: &'static str) {
        self.update(queue, |_| {});
    }

    fn update(&self, queue: &'static str, change: impl FnOnce(&mut QueueHealth)) {
        let mut queues = lock(&self.queues);
        let index = match queues.iter().position(|q| q.name == queue) {
            Some(i) => i,
            None => {
                queues.push(QueueHealth {
                    name: queue,
                    last_progress: None,
                    reachable: false,
                });
                queues.len() - 1
            }
        };
        change(&mut queues[index]);
    }

    pub fn receive_succeeded(&self, queue: &'static str) {
        self.update(queue, |q| {
            q.last_progress = Some(Instant::now());
            q.reachable = true;
        });
    }

    pub fn receive_failed(&self, queue: &'static str) {
        self.update(queue, |q| q.reachable = false);
    }

    /// Progress also counts while the loop deliberately does not receive (paused, all slots
    /// busy): those are not stalls.
    pub fn idle_by_choice(&self, queue: &'static str) {
        self.update(queue, |q| q.last_progress = Some(Instant::now()));
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub fn set_store_paused(&self, paused: bool) {
        self.store_paused.store(paused, Ordering::Relaxed);
    }

    /// The start-up reachability check: `None` when every dependency answered.
    pub fn set_unreachable(&self, detail: Option<String>) {
        if detail.is_none() {
            for q in lock(&self.queues).iter_mut() {
                q.reachable = true;
            }
        }
        *lock(&self.unreachable) = detail;
    }

    /// A background task the process needs has stopped (or panicked): liveness fails, so the
    /// orchestrator replaces the process instead of it failing every message quietly.
    pub fn task_stopped(&self, task: &'static str) {
        lock(&self.stopped_task).get_or_insert(task);
    }

    pub fn set_held(&self, held: u64) {
        self.held.store(held, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn liveness(&self) -> Liveness {
        if let Some(task) = *lock(&self.stopped_task) {
            return Liveness::TaskStopped { task };
        }
        let now = Instant::now();
        let queues = lock(&self.queues);
        // The queue that went longest without progress; before any is watched, the process's
        // own start.
        let (queue, last) = queues
            .iter()
            .map(|q| (q.name, q.last_progress.unwrap_or(self.started)))
            .min_by_key(|(_, last)| *last)
            .unwrap_or(("queue", self.started));
        let since = now.saturating_duration_since(last);
        if since > self.stall_timeout {
            Liveness::Stalled {
                queue,
                since_secs: since.as_secs(),
            }
        } else {
            Liveness::Healthy
        }
    }

    /// The first watched queue whose last receive failed (all of them when none is watched yet).
    fn unreachable_queue(&self) -> Option<&'static str> {
        let queues = lock(&self.queues);
        if queues.is_empty() {
            return Some("queue");
        }
        queues.iter().find(|q| !q.reachable).map(|q| q.name)
    }

    /// The readiness, in words, with the failing dependency's detail when there is one.
    pub fn readiness_detail(&self) -> String {
        match (self.readiness(), lock(&self.unreachable).as_deref()) {
            (Readiness::Unreachable, Some(detail)) => detail.to_owned(),
            (Readiness::QueueUnreachable, _) => match self.unreachable_queue() {
                Some(queue) if queue != "queue" => {
                    format!("the {queue} queue is not reachable (yet)")
                }
                _ => Readiness::QueueUnreachable.as_str().to_owned(),
            },
            (readiness, _) => readiness.as_str().to_owned(),
        }
    }

    pub fn readiness(&self) -> Readiness {
        if self.stopping.load(Ordering::Relaxed) {
            Readiness::Stopping
        } else if self.paused.load(Ordering::Relaxed) {
            Readiness::Paused
        } else if self.store_paused.load(Ordering::Relaxed) {
            Readiness::StoreUnavailable
        } else if lock(&self.unreachable).is_some() {
            Readiness::Unreachable
        } else if self.unreachable_queue().is_some() {
            Readiness::QueueUnreachable
        } else if self.held.load(Ordering::Relaxed) > 0 {
            Readiness::PublishFailing
        } else {
            Readiness::Ready
        }
    }
}

/// Metrics, their registry, and health: one per process, shared by the worker and the admin
/// endpoint.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    pub metrics: Metrics,
    pub health: Health,
}

impl Telemetry {
    pub fn new(stall_timeout: Duration) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        Telemetry {
            registry,
            metrics,
            health: Health::new(stall_timeout),
        }
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn liveness_turns_stalled_after_the_timeout_without_progress() {
        let health = Health::new(Duration::from_secs(60));
        assert_eq!(
            health.liveness(),
            Liveness::Healthy,
            "a fresh process gets its grace"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(
            health.liveness(),
            Liveness::Stalled { since_secs: 61, .. }
        ));
        health.receive_succeeded("tokens");
        assert_eq!(health.liveness(), Liveness::Healthy);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(health.liveness(), Liveness::Healthy);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(health.liveness(), Liveness::Stalled { .. }));
    }

    #[test]
    fn readiness_needs_a_reachable_queue_and_no_pause() {
        let health = Health::new(Duration::from_secs(60));
        assert_eq!(health.readiness(), Readiness::QueueUnreachable);
        health.receive_succeeded("tokens");
        assert_eq!(health.readiness(), Readiness::Ready);
        health.set_paused(true);
        assert_eq!(health.readiness(), Readiness::Paused);
        health.set_paused(false);
        health.receive_failed("tokens");
        assert_eq!(health.readiness(), Readiness::QueueUnreachable);
        health.set_stopping();
        assert_eq!(health.readiness(), Readiness::Stopping);
    }

    #[tokio::test(start_paused = true)]
    async fn one_queue_does_not_hide_the_other() {
        let health = Health::new(Duration::from_secs(60));
        health.watch_queue("tokens");
        health.watch_queue("lifecycle");
        health.receive_succeeded("tokens");
        assert_eq!(
            health.readiness(),
            Readiness::QueueUnreachable,
            "the lifecycle queue has not answered yet"
        );
        assert_eq!(
            health.readiness_detail(),
            "the lifecycle queue is not reachable (yet)"
        );
        health.receive_succeeded("lifecycle");
        assert_eq!(health.readiness(), Readiness::Ready);
        // The lifecycle queue's receives keep failing while the token queue's succeed.
        health.receive_failed("lifecycle");
        health.receive_succeeded("tokens");
        assert_eq!(health.readiness(), Readiness::QueueUnreachable);
        assert!(health.readiness_detail().contains("lifecycle"));
        // Only the token loop makes progress: the lifecycle loop is stalled.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(20)).await;
            health.receive_succeeded("tokens");
        }
        assert_eq!(
            health.liveness(),
            Liveness::Stalled {
                queue: "lifecycle",
                since_secs: 80
            }
        );
        health.receive_succeeded("lifecycle");
        assert_eq!(health.liveness(), Liveness::Healthy);
        assert_eq!(health.readiness(), Readiness::Ready);
    }

    #[test]
    fn metrics_render_with_their_names_and_labels() {
        let t = Telemetry::new(Duration::from_secs(60));
        t.metrics.received(3);
        t.metrics.outcome("published");
        t.metrics.dead_lettered("invalid_token");
        t.metrics.aws_call("sqs", "ReceiveMessage", true);
        let text = t.render();
        for needle in [
            "mpr_messages_received_total 3",
            "mpr_outcomes_total{outcome=\"published\"} 1",
            "mpr_dead_letters_total{reason=\"invalid_token\"} 1",
            "mpr_aws_calls_total{service=\"sqs\",operation=\"ReceiveMessage\",result=\"ok\"} 1",
            "mpr_in_flight 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
