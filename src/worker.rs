//! The loop: receive with bounded concurrency, turn each message into an outcome, act on it as the
//! contract says, and on shutdown stop receiving, drain, and hand back what is left.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lru::LruCache;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::aws::Clients;
use crate::config::Settings;
use crate::deleter::Deleter;
use crate::message::{
    parse_body, CustomerEvent, DeadLetter, DeadLetterReason, Fingerprint, TokenRequest,
};
use crate::publish::Publisher;
use crate::queue::{now_rfc3339, DeleteEntry, Queue, ReceivedMessage};
use crate::resolve::{FailureKind, ResolveOutcome, Resolver};
use crate::retry::{full_jitter, BackoffPolicy};

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
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::HandedBack { .. } => "handed_back",
        }
    }
}

pub struct Worker {
    settings: Settings,
    queue: Queue,
    deleter: Deleter,
    publisher: Publisher,
    resolver: Resolver,
    policy: BackoffPolicy,
    /// Fingerprints this process published recently.
    published: Mutex<LruCache<Fingerprint, ()>>,
    /// Receipt handles of messages being worked on, by message id, for the shutdown hand-back.
    in_flight: Mutex<HashMap<String, String>>,
}

impl Worker {
    /// Must be called inside a tokio runtime: it starts the delete batcher.
    pub fn new(clients: Clients, settings: Settings) -> Arc<Self> {
        let queue = Queue::new(
            clients.sqs,
            settings.queue_url.clone(),
            settings.dlq_url.clone(),
        );
        let deleter = Deleter::spawn(
            queue.clone(),
            Duration::from_millis(settings.worker.delete_linger_ms),
        );
        let policy = BackoffPolicy::from_settings(&settings.resolve);
        let resolver = Resolver::new(
            clients.metering,
            policy.clone(),
            settings.resolve.attempt_timeout(),
        );
        let publisher = Publisher::new(clients.sns, settings.topic_arn.clone());
        let capacity =
            NonZeroUsize::new(settings.worker.dedupe_capacity).unwrap_or(NonZeroUsize::MIN);
        Arc::new(Worker {
            queue,
            deleter,
            publisher,
            resolver,
            policy,
            published: Mutex::new(LruCache::new(capacity)),
            in_flight: Mutex::new(HashMap::new()),
            settings,
        })
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
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
            // Wait for a free slot first, so the process never holds messages it cannot start.
            let first = tokio::select! {
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while permits.len() < w.receive_batch as usize {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            while let Some(done) = tasks.try_join_next() {
                report_join(done);
            }

            let received = tokio::select! {
                _ = &mut shutdown => break,
                r = self.queue.receive(permits.len() as i32, w.receive_wait_secs, w.visibility_timeout_secs) => r,
            };
            let messages = match received {
                Ok(messages) => {
                    receive_delays = receive_backoff();
                    messages
                }
                Err(error) => {
                    let wait = receive_delays.next().unwrap_or(Duration::from_secs(30));
                    tracing::error!(%error, retry_in_ms = wait.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(full_jitter(wait)) => continue,
                    }
                }
            };
            for (message, permit) in messages.into_iter().zip(permits.drain(..)) {
                self.track(&message);
                let worker = self.clone();
                tasks.spawn(async move {
                    let _slot = permit;
                    worker.handle(message).await;
                });
            }
            // Unused permits drop here and free their slots.
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
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        self.hand_back_unfinished().await;
        tracing::info!("worker stopped");
    }

    /// Works one message to its outcome and logs it; the step the loop runs per message.
    pub async fn handle(&self, message: ReceivedMessage) -> Outcome {
        let outcome = self.process(&message).await;
        self.untrack(&message.message_id);
        log_outcome(&message, &outcome);
        outcome
    }

    /// Decides and carries out what happens to one message (the table in the README).
    pub async fn process(&self, message: &ReceivedMessage) -> Outcome {
        let request = match parse_body(&message.body) {
            Ok(request) => request,
            Err(malformed) => {
                return self
                    .dead_letter(
                        message,
                        DeadLetterReason::MalformedMessage,
                        malformed.detail,
                        malformed.fingerprint,
                    )
                    .await
            }
        };
        let event_id = request.token.fingerprint();
        if self.was_published(&event_id) {
            self.delete(message).await;
            return Outcome::AlreadyPublished { event_id };
        }
        match self.resolver.resolve(&request.token).await {
            ResolveOutcome::Resolved { customer, attempts } => {
                let allowed = &self.settings.product_codes;
                if !allowed.is_empty() && !allowed.contains(&customer.product_code) {
                    let detail = format!(
                        "product code {} is not in the allow-list (product_codes)",
                        customer.product_code
                    );
                    return self
                        .dead_letter(
                            message,
                            DeadLetterReason::ProductMismatch,
                            detail,
                            Some(event_id),
                        )
                        .await;
                }
                self.publish(message, &request, customer, attempts).await
            }
            ResolveOutcome::Rejected { reason, detail, .. } => {
                self.dead_letter(message, reason, detail, Some(event_id))
                    .await
            }
            ResolveOutcome::Unavailable { failure, attempts } => {
                tracing::warn!(event_id = %event_id, message_id = %message.message_id,
                    failure = failure.kind.as_str(), detail = %failure.detail, attempts,
                    "ResolveCustomer unavailable for this delivery");
                let delay = self.policy.handback_delay(message.receive_count, attempts);
                self.hand_back(message, HandBackCause::Resolve(failure.kind), delay)
                    .await
            }
        }
    }

    async fn publish(
        &self,
        message: &ReceivedMessage,
        request: &TokenRequest,
        customer: crate::message::ResolvedCustomer,
        attempts: u32,
    ) -> Outcome {
        let event = CustomerEvent::new(
            request,
            customer,
            message.enqueued_at(),
            now_rfc3339(),
            attempts,
        );
        match self.publisher.publish(&event).await {
            Ok(_) => {
                self.remember_published(&event.event_id);
                self.delete(message).await;
                Outcome::Published {
                    event_id: event.event_id,
                    attempts,
                }
            }
            Err(error) => {
                tracing::warn!(event_id = %event.event_id, message_id = %message.message_id,
                    %error, "publish failed; handing the message back");
                let delay = self.policy.handback_delay(message.receive_count, 1);
                self.hand_back(message, HandBackCause::Publish, delay).await
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
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
                self.delete(message).await;
                Outcome::DeadLettered { reason, event_id }
            }
            Err(error) => {
                tracing::warn!(message_id = %message.message_id, %error, reason = reason.as_str(),
                    "dead-letter send failed; handing the message back");
                let delay = self.policy.handback_delay(message.receive_count, 1);
                self.hand_back(message, HandBackCause::DeadLetter, delay)
                    .await
            }
        }
    }

    async fn hand_back(
        &self,
        message: &ReceivedMessage,
        cause: HandBackCause,
        delay: Duration,
    ) -> Outcome {
        if let Err(error) = self
            .queue
            .change_visibility(&message.receipt_handle, delay)
            .await
        {
            // Not fatal: the message reappears when its current visibility runs out.
            tracing::warn!(message_id = %message.message_id, %error, "could not hand the message back early");
        }
        Outcome::HandedBack { cause, delay }
    }

    async fn delete(&self, message: &ReceivedMessage) {
        // A failed delete is logged by the batcher; the redelivery is caught by the
        // published-fingerprint memory or dead-lettered again by the same rule.
        let _ = self
            .deleter
            .delete(DeleteEntry {
                message_id: message.message_id.clone(),
                receipt_handle: message.receipt_handle.clone(),
            })
            .await;
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

fn log_outcome(message: &ReceivedMessage, outcome: &Outcome) {
    let message_id = message.message_id.as_str();
    match outcome {
        Outcome::Published { event_id, attempts } => {
            tracing::info!(%message_id, %event_id, attempts, outcome = outcome.kind(), "customer published")
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
