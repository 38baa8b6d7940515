//! The loop: receive with bounded concurrency, turn each message into an outcome, act on it as the
//! contract says, and on shutdown stop receiving, drain, and hand back what is left.

pub mod batch;
pub mod lease;
pub mod pause;
pub mod ratelimit;
pub mod retry;

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::aws::metering::{CallResult, FailureKind, ResolveOutcome, Resolver};
use crate::aws::sns::{PublishSink, Publisher, MAX_BATCH_BYTES};
use crate::aws::sqs::{now_rfc3339, DeleteEntry, DeleteSink, Queue, ReceivedMessage};
use crate::aws::Clients;
use crate::config::limits::RECEIVE_BACKOFF_MAX;
use crate::config::Settings;
use crate::contract::{
    parse_body, CustomerEvent, DeadLetter, DeadLetterReason, Fingerprint, TokenRequest,
};
use crate::observe::metrics::Telemetry;
use crate::worker::batch::{BatchLimits, Batcher};
use crate::worker::lease::Lease;
use crate::worker::pause::{ApiPause, PauseChange};
use crate::worker::ratelimit::{AdaptiveRateLimiter, RatePolicy};
use crate::worker::retry::{full_jitter, BackoffPolicy};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Resolved and published; the message is deleted.
    Published {
        event_id: Fingerprint,
        attempts: u32,
    },
    /// Published earlier by this process; deleted without calling the API again.
    AlreadyPublished { event_id: Fingerprint },
    /// Dead-lettered earlier by this process (its delete was lost); deleted without a second letter.
    AlreadyDeadLettered { reason: DeadLetterReason },
    /// Retired to the dead-letter queue with its reason; the message is deleted.
    DeadLettered {
        reason: DeadLetterReason,
        event_id: Option<Fingerprint>,
    },
    /// Left on the queue to be tried again after `delay`.
    HandedBack {
        cause: HandBackCause,
        delay: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBackCause {
    /// ResolveCustomer kept failing (throttled, transient, disabled) within this delivery.
    Resolve(FailureKind),
    /// The SNS publish failed.
    Publish,
    /// The dead-letter send failed.
    DeadLetter,
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Published { .. } => "published",
            Outcome::AlreadyPublished { .. } => "already_published",
            Outcome::AlreadyDeadLettered { .. } => "already_dead_lettered",
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::HandedBack { .. } => "handed_back",
        }
    }
}

pub struct Worker {
    settings: Settings,
    queue: Queue,
    deletes: Batcher<DeleteSink>,
    publishes: Batcher<PublishSink>,
    resolver: Resolver,
    policy: BackoffPolicy,
    telemetry: Arc<Telemetry>,
    pause: Arc<ApiPause>,
    /// Fingerprints this process published recently.
    published: Mutex<LruCache<Fingerprint, ()>>,
    /// Source message ids this process dead-lettered recently, with the reason.
    dead_lettered: Mutex<LruCache<String, DeadLetterReason>>,
    /// Receipt handles of messages being worked on, by message id, for the shutdown hand-back.
    in_flight: Mutex<HashMap<String, String>>,
    probe: Mutex<Option<JoinHandle<()>>>,
}

/// How long shutdown waits for a receive already in progress to answer.
const RECEIVE_SETTLE: Duration = Duration::from_millis(500);

/// What the receive loop does next.
enum Next {
    Shutdown,
    Receive(Vec<OwnedSemaphorePermit>),
}

impl Worker {
    /// Must be called inside a tokio runtime: it starts the delete batcher.
    pub fn new(clients: Clients, settings: Settings) -> Arc<Self> {
        let telemetry = Arc::new(Telemetry::new(Duration::from_secs(
            settings.worker.stall_timeout_secs,
        )));
        let queue = Queue::new(
            clients.sqs,
            settings.queue_url.clone(),
            settings.dlq_url.clone(),
        )
        .with_telemetry(telemetry.clone());
        let deletes = Batcher::spawn(
            DeleteSink(queue.clone()),
            BatchLimits {
                max_items: 10,
                max_weight: usize::MAX,
                linger: Duration::from_millis(settings.worker.delete_linger_ms),
            },
        );
        let policy = BackoffPolicy::from_settings(&settings.resolve);
        let limiter = Arc::new(AdaptiveRateLimiter::new(RatePolicy::from_settings(
            &settings.rate_limit,
        )));
        telemetry.metrics.rate_limit(limiter.rate());
        let resolver = Resolver::new(
            clients.metering,
            policy.clone(),
            settings.resolve.attempt_timeout(),
            limiter,
            telemetry.clone(),
        );
        let publishes = Batcher::spawn(
            PublishSink(
                Publisher::new(clients.sns, settings.topic_arn.clone())
                    .with_telemetry(telemetry.clone()),
            ),
            BatchLimits {
                max_items: settings.publish.max_batch,
                max_weight: MAX_BATCH_BYTES,
                linger: Duration::from_millis(settings.publish.linger_ms),
            },
        );
        let capacity =
            NonZeroUsize::new(settings.worker.dedupe_capacity).unwrap_or(NonZeroUsize::MIN);
        Arc::new(Worker {
            queue,
            deletes,
            publishes,
            resolver,
            policy,
            telemetry,
            pause: Arc::new(ApiPause::default()),
            published: Mutex::new(LruCache::new(capacity)),
            dead_lettered: Mutex::new(LruCache::new(capacity)),
            in_flight: Mutex::new(HashMap::new()),
            probe: Mutex::new(None),
            settings,
        })
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Metrics and health, for the admin endpoint and for tests.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Receives and works until `shutdown` completes, then stops receiving, lets in-flight work
    /// finish within the grace period, and hands back whatever did not finish.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let w = &self.settings.worker;
        let slots = Arc::new(Semaphore::new(w.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut receive_delays = receive_backoff();
        tokio::pin!(shutdown);
        tracing::info!(queue = %self.queue.url(), max_in_flight = w.max_in_flight, "worker started");

        loop {
            let permits = match self.next_slots(&slots, &mut shutdown).await {
                Next::Shutdown => break,
                Next::Receive(permits) => permits,
            };
            while let Some(done) = tasks.try_join_next() {
                report_join(done);
            }
            let receive = self.queue.receive(
                permits.len() as i32,
                w.receive_wait_secs,
                w.visibility_timeout_secs,
            );
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => r,
                _ = &mut shutdown => {
                    // Stop at once, but not blindly: a long poll that found messages answers within
                    // milliseconds, and those go straight back; one still waiting holds none.
                    if let Ok(Ok(messages)) = tokio::time::timeout(RECEIVE_SETTLE, &mut receive).await {
                        self.hand_back_now(messages).await;
                    }
                    break;
                }
            };
            let messages = match received {
                Ok(messages) => {
                    self.telemetry.health.receive_succeeded();
                    receive_delays = receive_backoff();
                    messages
                }
                Err(error) => {
                    self.telemetry.health.receive_failed();
                    let wait = full_jitter(receive_delays.next().unwrap_or(RECEIVE_BACKOFF_MAX));
                    tracing::error!(%error, retry_in_ms = wait.as_millis() as u64, "receive failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            self.telemetry.metrics.received(messages.len());
            for (message, permit) in messages.into_iter().zip(permits) {
                self.track(&message);
                let worker = self.clone();
                tasks.spawn(async move {
                    let _slot = permit;
                    worker.handle(message).await;
                });
            }
            // Permits not matched by a message drop here and free their slots.
        }

        self.telemetry.health.set_stopping();
        while let Some(done) = tasks.try_join_next() {
            report_join(done);
        }
        let grace = Duration::from_secs(w.shutdown_grace_secs);
        tracing::info!(
            in_flight = tasks.len(),
            grace_secs = grace.as_secs(),
            "shutting down: receiving stopped, draining"
        );
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = tasks.join_next().await {
                report_join(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                unfinished = tasks.len(),
                "grace period over; handing back unfinished messages"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        self.hand_back_unfinished().await;
        if let Some(probe) = lock(&self.probe).take() {
            probe.abort();
        }
        tracing::info!("worker stopped");
    }

    /// Waits until receiving makes sense: not paused, and at least one free slot (then takes as
    /// many free slots as one receive may fill). Waiting by choice is progress, not a stall.
    async fn next_slots(
        &self,
        slots: &Arc<Semaphore>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Next {
        let tick = Duration::from_secs(self.settings.worker.stall_timeout_secs)
            .max(Duration::from_secs(2))
            / 2;
        loop {
            if self.pause.is_paused() {
                tokio::select! {
                    _ = shutdown.as_mut() => return Next::Shutdown,
                    _ = self.pause.resumed() => continue,
                    _ = tokio::time::sleep(tick) => {
                        self.telemetry.health.idle_by_choice();
                        continue;
                    }
                }
            }
            let first = tokio::select! {
                _ = shutdown.as_mut() => return Next::Shutdown,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return Next::Shutdown,
                },
                _ = tokio::time::sleep(tick) => {
                    self.telemetry.health.idle_by_choice();
                    continue;
                }
            };
            let mut permits = vec![first];
            while permits.len() < self.settings.worker.receive_batch as usize {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            return Next::Receive(permits);
        }
    }

    /// Works one message to its outcome, keeping its visibility alive meanwhile, and reports it;
    /// the step the loop runs per message.
    pub async fn handle(&self, message: ReceivedMessage) -> Outcome {
        self.telemetry.metrics.in_flight(1);
        let lease = Lease::new(message.receipt_handle.clone());
        let visibility = Duration::from_secs(self.settings.worker.visibility_timeout_secs as u64);
        let outcome = {
            let work = self.process(&message, &lease);
            let heartbeat = lease.heartbeat(
                &self.queue,
                visibility,
                &self.telemetry,
                &message.message_id,
            );
            tokio::pin!(work, heartbeat);
            tokio::select! {
                outcome = &mut work => outcome,
                _ = &mut heartbeat => work.await,
            }
        };
        self.untrack(&message.message_id);
        self.telemetry.metrics.in_flight(-1);
        self.telemetry.metrics.outcome(outcome.kind());
        if let Outcome::DeadLettered { reason, .. } = &outcome {
            self.telemetry.metrics.dead_lettered(*reason);
        }
        log_outcome(&message, &outcome);
        outcome
    }

    /// Decides and carries out what happens to one message (the table in the README).
    pub async fn process(&self, message: &ReceivedMessage, lease: &Lease) -> Outcome {
        // A message whose dead-letter went out but whose delete was lost comes back with the same
        // message id: settle it without a second letter.
        let already = lock(&self.dead_lettered).get(&message.message_id).copied();
        if let Some(reason) = already {
            self.delete(message, lease).await;
            return Outcome::AlreadyDeadLettered { reason };
        }
        let request = match parse_body(&message.body) {
            Ok(request) => request,
            Err(malformed) => {
                return self
                    .dead_letter(
                        message,
                        lease,
                        DeadLetterReason::MalformedMessage,
                        malformed.detail,
                        malformed.fingerprint,
                    )
                    .await
            }
        };
        let event_id = request.token.fingerprint();
        if self.was_published(&event_id) {
            self.delete(message, lease).await;
            return Outcome::AlreadyPublished { event_id };
        }
        if self.pause.is_paused() {
            let delay = self.policy.handback_delay(message.receive_count, 0);
            return self
                .hand_back(
                    message,
                    lease,
                    HandBackCause::Resolve(FailureKind::Disabled),
                    delay,
                )
                .await;
        }
        match self.resolver.resolve(&request.token).await {
            ResolveOutcome::Resolved { customer, attempts } => {
                if let Some(sent) = message.sent_at {
                    let age = chrono::Utc::now().signed_duration_since(sent);
                    self.telemetry
                        .metrics
                        .token_age(age.to_std().unwrap_or_default());
                }
                let allowed = &self.settings.product_codes;
                if !allowed.is_empty() && !allowed.contains(&customer.product_code) {
                    let detail = format!(
                        "product code {} is not in the allow-list (product_codes)",
                        customer.product_code
                    );
                    return self
                        .dead_letter(
                            message,
                            lease,
                            DeadLetterReason::ProductMismatch,
                            detail,
                            Some(event_id),
                        )
                        .await;
                }
                self.publish(message, lease, &request, customer, attempts)
                    .await
            }
            ResolveOutcome::Rejected { reason, detail, .. } => {
                self.dead_letter(message, lease, reason, detail, Some(event_id))
                    .await
            }
            ResolveOutcome::Unavailable { failure, attempts } => {
                tracing::warn!(event_id = %event_id, message_id = %message.message_id,
                    failure = failure.kind.as_str(), detail = %failure.detail, attempts,
                    "ResolveCustomer unavailable for this delivery");
                if failure.kind == FailureKind::Disabled {
                    self.pause_resolving();
                }
                let delay = self.policy.handback_delay(message.receive_count, attempts);
                self.hand_back(message, lease, HandBackCause::Resolve(failure.kind), delay)
                    .await
            }
        }
    }

    /// The API is switched off: stop resolving everywhere, report not ready, and probe with
    /// backoff until it answers again.
    fn pause_resolving(&self) {
        if self.pause.pause() != PauseChange::Started {
            return;
        }
        tracing::error!("ResolveCustomer answered DisabledApiException: pausing all resolving and probing with backoff");
        self.telemetry.health.set_paused(true);
        self.telemetry.metrics.paused(true);
        let resolver = self.resolver.clone();
        let telemetry = self.telemetry.clone();
        let settings = self.settings.pause.clone();
        let pause = self.pause.clone();
        let probe = tokio::spawn(async move {
            let mut delays = ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(settings.probe_initial_secs))
                .with_max_delay(Duration::from_secs(settings.probe_max_secs))
                .without_max_times()
                .build();
            loop {
                let wait = delays
                    .next()
                    .unwrap_or(Duration::from_secs(settings.probe_max_secs));
                tokio::time::sleep(wait).await;
                match resolver.probe().await {
                    CallResult::Failed(f)
                        if matches!(f.kind, FailureKind::Disabled | FailureKind::Transient) =>
                    {
                        tracing::warn!(
                            failure = f.kind.as_str(),
                            next_probe_in_secs = wait.as_secs(),
                            "ResolveCustomer still unavailable; staying paused"
                        );
                    }
                    _ => {
                        tracing::info!("ResolveCustomer answers again: resuming");
                        telemetry.health.set_paused(false);
                        telemetry.metrics.paused(false);
                        pause.resume();
                        return;
                    }
                }
            }
        });
        *lock(&self.probe) = Some(probe);
    }

    async fn publish(
        &self,
        message: &ReceivedMessage,
        lease: &Lease,
        request: &TokenRequest,
        customer: crate::contract::ResolvedCustomer,
        attempts: u32,
    ) -> Outcome {
        let event = CustomerEvent::new(
            request,
            customer,
            message.enqueued_at(),
            now_rfc3339(),
            attempts,
        );
        let event_id = event.event_id.clone();
        match self.publishes.submit(event).await {
            Ok(_) => {
                self.remember_published(&event_id);
                self.delete(message, lease).await;
                Outcome::Published { event_id, attempts }
            }
            Err(error) => {
                tracing::warn!(event_id = %event_id, message_id = %message.message_id,
                    %error, "publish failed; handing the message back");
                let delay = self.policy.handback_delay(message.receive_count, 1);
                self.hand_back(message, lease, HandBackCause::Publish, delay)
                    .await
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        lease: &Lease,
        reason: DeadLetterReason,
        detail: String,
        event_id: Option<Fingerprint>,
    ) -> Outcome {
        let letter = DeadLetter {
            body: message.body.clone(),
            reason,
            detail: if detail.is_empty() {
                reason.as_str().to_owned()
            } else {
                detail
            },
            event_id: event_id.clone(),
            source_message_id: message.message_id.clone(),
            receive_count: message.receive_count,
            failed_at: now_rfc3339(),
        };
        match self
            .queue
            .send_dead_letter(&letter, message.group_id.as_deref())
            .await
        {
            Ok(()) => {
                lock(&self.dead_lettered).put(message.message_id.clone(), reason);
                self.delete(message, lease).await;
                Outcome::DeadLettered { reason, event_id }
            }
            Err(error) => {
                tracing::warn!(message_id = %message.message_id, %error, reason = reason.as_str(),
                    "dead-letter send failed; handing the message back");
                let delay = self.policy.handback_delay(message.receive_count, 1);
                self.hand_back(message, lease, HandBackCause::DeadLetter, delay)
                    .await
            }
        }
    }

    async fn hand_back(
        &self,
        message: &ReceivedMessage,
        lease: &Lease,
        cause: HandBackCause,
        delay: Duration,
    ) -> Outcome {
        let _settled = lease.settle().await;
        if let Err(error) = self
            .queue
            .change_visibility(lease.receipt_handle(), delay)
            .await
        {
            // Not fatal: the message reappears when its current visibility runs out.
            tracing::warn!(message_id = %message.message_id, %error, "could not hand the message back early");
        }
        Outcome::HandedBack { cause, delay }
    }

    async fn delete(&self, message: &ReceivedMessage, lease: &Lease) {
        drop(lease.settle().await);
        let deleted = self
            .deletes
            .submit(DeleteEntry {
                message_id: message.message_id.clone(),
                receipt_handle: lease.receipt_handle().to_owned(),
            })
            .await;
        if let Err(problem) = deleted {
            // Not lost: the redelivery is caught by the published-fingerprint memory, or
            // dead-lettered again by the same rule.
            tracing::warn!(message_id = %message.message_id, %problem,
                "delete failed; the message will come back and be recognized");
        }
    }

    fn was_published(&self, event_id: &Fingerprint) -> bool {
        lock(&self.published).get(event_id).is_some()
    }

    fn remember_published(&self, event_id: &Fingerprint) {
        lock(&self.published).put(event_id.clone(), ());
    }

    fn track(&self, message: &ReceivedMessage) {
        lock(&self.in_flight).insert(message.message_id.clone(), message.receipt_handle.clone());
    }

    fn untrack(&self, message_id: &str) {
        lock(&self.in_flight).remove(message_id);
    }

    async fn hand_back_now(&self, messages: Vec<ReceivedMessage>) {
        for message in messages {
            if let Err(error) = self
                .queue
                .change_visibility(&message.receipt_handle, Duration::ZERO)
                .await
            {
                tracing::warn!(message_id = %message.message_id, %error, "could not hand back a message received during shutdown");
            }
        }
    }

    async fn hand_back_unfinished(&self) {
        let unfinished: Vec<(String, String)> = lock(&self.in_flight).drain().collect();
        for (message_id, receipt_handle) in unfinished {
            match self
                .queue
                .change_visibility(&receipt_handle, Duration::ZERO)
                .await
            {
                Ok(()) => tracing::info!(%message_id, "handed back unfinished message"),
                Err(error) => {
                    tracing::warn!(%message_id, %error, "could not hand back unfinished message")
                }
            }
        }
    }
}

/// A poisoned lock only means another task panicked mid-update of a cache; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits between failed receives. Its ceiling is also what `worker.stall_timeout_secs` must
/// allow for (`config::limits`).
fn receive_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(RECEIVE_BACKOFF_MAX)
        .without_max_times()
        .build()
}

fn report_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(
                "a message task panicked; its message will reappear after its visibility timeout"
            );
        }
    }
}

fn log_outcome(message: &ReceivedMessage, outcome: &Outcome) {
    let message_id = message.message_id.as_str();
    match outcome {
        Outcome::Published { event_id, attempts } => {
            tracing::info!(%message_id, %event_id, attempts, outcome = outcome.kind(), "customer published")
        }
        Outcome::AlreadyDeadLettered { reason } => {
            tracing::info!(%message_id, reason = reason.as_str(), outcome = outcome.kind(), "already dead-lettered; deleted")
        }
        Outcome::AlreadyPublished { event_id } => {
            tracing::info!(%message_id, %event_id, outcome = outcome.kind(), "already published; deleted")
        }
        Outcome::DeadLettered { reason, event_id } => {
            let event_id = event_id.as_ref().map(Fingerprint::as_str).unwrap_or("-");
            tracing::info!(%message_id, event_id, reason = reason.as_str(), outcome = outcome.kind(), "dead-lettered")
        }
        Outcome::HandedBack { cause, delay } => {
            tracing::info!(%message_id, cause = ?cause, delay_secs = delay.as_secs(), outcome = outcome.kind(), "handed back")
        }
    }
}
