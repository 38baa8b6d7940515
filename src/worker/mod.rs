//! The loop: receive with bounded concurrency, turn each message into an outcome, act on it as the
//! contract says, and on shutdown stop receiving, drain, and hand back what is left.

mod act;
pub mod batch;
pub mod decide;
pub mod events;
pub mod lease;
pub mod pause;
pub mod ratelimit;
pub mod resolve;
pub mod retry;

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lru::LruCache;
use rand::Rng;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::aws::metering::{CallResult, FailureKind};
use crate::aws::sns::{PublishSink, Publisher, MAX_BATCH_BYTES};
use crate::aws::sqs::{now_rfc3339, DeleteSink, Queue, ReceivedMessage};
use crate::aws::Clients;
use crate::config::Settings;
use crate::contract::{parse_body, CustomerEvent, DeadLetterReason, Fingerprint, ResolvedCustomer};
use crate::observe::metrics::Telemetry;
use crate::worker::batch::{BatchLimits, Batcher};
use crate::worker::decide::{decide, Action, Delivery, Handled, Rules};
use crate::worker::events::{Finished, Held, PauseChanged, Received, Started, TokenResolved};
use crate::worker::lease::Lease;
use crate::worker::pause::{ApiPause, PauseChange};
use crate::worker::ratelimit::{AdaptiveRateLimiter, RatePolicy};
use crate::worker::resolve::{ResolveOutcome, Resolver};
use crate::worker::retry::{full_jitter, BackoffPolicy, HoldPolicy};

pub use crate::worker::decide::HandBackCause;

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
    hold: HoldPolicy,
    telemetry: Arc<Telemetry>,
    pause: Arc<ApiPause>,
    /// `true` once shutdown began: held events are dead-lettered instead of waiting.
    stopping: watch::Sender<bool>,
    /// Fingerprints this process published recently.
    published: Mutex<LruCache<Fingerprint, ()>>,
    /// What ResolveCustomer answered for tokens this process resolved recently: a token may
    /// resolve only once, so the answer is reused, never asked for again.
    resolved: Mutex<LruCache<Fingerprint, (ResolvedCustomer, u32)>>,
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
            hold: HoldPolicy::from_settings(&settings.publish),
            telemetry,
            pause: Arc::new(ApiPause::default()),
            stopping: watch::Sender::new(false),
            published: Mutex::new(LruCache::new(capacity)),
            resolved: Mutex::new(LruCache::new(capacity)),
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
                    let wait =
                        full_jitter(receive_delays.next().unwrap_or(Duration::from_secs(30)));
                    tracing::error!(%error, retry_in_ms = wait.as_millis() as u64, "receive failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            Received {
                count: messages.len(),
            }
            .emit(&self.telemetry);
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
        self.stopping.send_replace(true);
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
    /// the step the loop runs per message. Everything it logs carries the message's span.
    pub async fn handle(&self, message: ReceivedMessage) -> Outcome {
        let span = tracing::info_span!(
            "message",
            message_id = %message.message_id,
            event_id = tracing::field::Empty
        );
        async {
            Started.emit(&self.telemetry);
            let lease = Lease::new(message.receipt_handle.clone());
            let visibility =
                Duration::from_secs(self.settings.worker.visibility_timeout_secs as u64);
            let outcome = {
                let work = self.process(&message, &lease);
                let heartbeat = lease.heartbeat(&self.queue, visibility, &self.telemetry);
                tokio::pin!(work, heartbeat);
                tokio::select! {
                    outcome = &mut work => outcome,
                    _ = &mut heartbeat => work.await,
                }
            };
            self.untrack(&message.message_id);
            Finished { outcome: &outcome }.emit(&self.telemetry);
            outcome
        }
        .instrument(span)
        .await
    }

    /// Gathers the facts about one message step by step and carries out what `decide` says, until
    /// an action settles the message (the README's table, in `worker::decide`).
    pub async fn process(&self, message: &ReceivedMessage, lease: &Lease) -> Outcome {
        let mut delivery = Delivery::new(
            message.receive_count,
            parse_body(&message.body),
            rand::rng().random_range(0.0..=1.0),
        );
        if let Some(event_id) = delivery.event_id() {
            tracing::Span::current().record("event_id", tracing::field::display(&event_id));
        }
        // A message whose dead-letter went out but whose delete was lost comes back with the same
        // message id: it is settled without a second letter.
        delivery.already_dead_lettered =
            lock(&self.dead_lettered).get(&message.message_id).copied();
        if let Some(event_id) = delivery.event_id() {
            delivery.already_published = self.was_published(&event_id);
            delivery.resolved = lock(&self.resolved)
                .get(&event_id)
                .map(|(customer, attempts)| ResolveOutcome::Resolved {
                    customer: customer.clone(),
                    attempts: *attempts,
                });
        }
        let mut held: Option<HeldGuard<'_>> = None;
        loop {
            delivery.paused = self.pause.is_paused();
            delivery.stopping = *self.stopping.borrow();
            if let Some(h) = &held {
                delivery.held_for = h.since.elapsed();
            }
            let rules = Rules {
                product_codes: &self.settings.product_codes,
                policy: &self.policy,
                hold: self.hold,
            };
            match decide(&delivery, rules) {
                Action::Resolve => {
                    let Ok(request) = &delivery.request else {
                        unreachable!("decide resolves only parsed requests")
                    };
                    let outcome = self.resolver.resolve(&request.token).await;
                    if let ResolveOutcome::Resolved { customer, attempts } = &outcome {
                        lock(&self.resolved)
                            .put(request.token.fingerprint(), (customer.clone(), *attempts));
                        if let Some(sent) = message.sent_at {
                            let age = chrono::Utc::now().signed_duration_since(sent);
                            TokenResolved {
                                age: age.to_std().unwrap_or_default(),
                            }
                            .emit(&self.telemetry);
                        }
                    }
                    delivery.resolved = Some(outcome);
                }
                Action::Publish {
                    customer,
                    attempts,
                    after,
                } => {
                    if !after.is_zero() && self.wait_unless_stopping(after).await {
                        continue; // stopping: decide again (the held event is dead-lettered)
                    }
                    let Ok(request) = &delivery.request else {
                        unreachable!("decide publishes only parsed requests")
                    };
                    let event = delivery
                        .event
                        .get_or_insert_with(|| {
                            CustomerEvent::new(
                                request,
                                customer,
                                message.enqueued_at(),
                                now_rfc3339(),
                                attempts,
                            )
                        })
                        .clone();
                    match self.publish(event).await {
                        Ok(event_id) => {
                            self.remember_published(&event_id);
                            drop(held.take());
                            self.delete(message, lease).await;
                            return Outcome::Published { event_id, attempts };
                        }
                        Err(error) => {
                            delivery.publish_failures += 1;
                            delivery.last_publish_error = Some(error);
                            if held.is_none() {
                                held = Some(HeldGuard::start(&self.telemetry));
                            }
                        }
                    }
                }
                Action::DeadLetter {
                    reason,
                    detail,
                    event_id,
                    event,
                } => {
                    match self
                        .dead_letter(message, reason, detail, event_id.clone(), event)
                        .await
                    {
                        Ok(()) => {
                            lock(&self.dead_lettered).put(message.message_id.clone(), reason);
                            drop(held.take());
                            self.delete(message, lease).await;
                            return Outcome::DeadLettered { reason, event_id };
                        }
                        Err(()) => delivery.dead_letter_failed = true,
                    }
                }
                Action::HandBack {
                    cause,
                    delay,
                    pause_resolving,
                } => {
                    if pause_resolving {
                        self.pause_resolving();
                    }
                    self.hand_back(lease, delay).await;
                    return Outcome::HandedBack { cause, delay };
                }
                Action::Delete(handled) => {
                    self.delete(message, lease).await;
                    return match handled {
                        Handled::Published(event_id) => Outcome::AlreadyPublished { event_id },
                        Handled::DeadLettered(reason) => Outcome::AlreadyDeadLettered { reason },
                    };
                }
            }
        }
    }

    /// Sleeps `wait`, or less if the process starts stopping meanwhile (then `true`).
    async fn wait_unless_stopping(&self, wait: Duration) -> bool {
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stopping.wait_for(|s| *s) => true,
        }
    }

    /// The API is switched off: stop resolving everywhere, report not ready, and probe with
    /// backoff until it answers again.
    fn pause_resolving(&self) {
        if self.pause.pause() != PauseChange::Started {
            return;
        }
        PauseChanged { paused: true }.emit(&self.telemetry);
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
                        PauseChanged { paused: false }.emit(&telemetry);
                        pause.resume();
                        return;
                    }
                }
            }
        });
        *lock(&self.probe) = Some(probe);
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

/// Counts one held event from its first failed publish until it is published, dead-lettered, or
/// its task ends in any other way (a panic or an abort included).
struct HeldGuard<'a> {
    telemetry: &'a Telemetry,
    since: tokio::time::Instant,
}

impl<'a> HeldGuard<'a> {
    fn start(telemetry: &'a Telemetry) -> Self {
        Held { started: true }.emit(telemetry);
        HeldGuard {
            telemetry,
            since: tokio::time::Instant::now(),
        }
    }
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        Held { started: false }.emit(self.telemetry);
    }
}

/// A poisoned lock only means another task panicked mid-update of a cache; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn receive_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
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
