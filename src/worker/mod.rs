//! The worker: receives from each of its queues (`lane.rs`: tokens, and lifecycle notifications
//! when configured) with bounded concurrency (`run.rs`), works each message to an outcome by
//! gathering facts and carrying out what `decide.rs` (tokens) or `lifecycle.rs` says (`act.rs`),
//! keeps its background tasks watched (`supervise.rs`) and stops cleanly (`shutdown.rs`).

mod act;
pub mod batch;
pub mod decide;
pub mod entitlements;
pub mod events;
mod fleet;
mod inflight;
pub mod lane;
pub mod lease;
pub mod lifecycle;
pub mod pause;
pub mod ratelimit;
pub mod resolve;
pub mod retry;
pub mod run;
mod shutdown;
pub mod sinks;
mod supervise;
pub mod usage;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::aws::sns::{Publisher, TopicEvent, MAX_BATCH_BYTES};
use crate::aws::sqs::{now_rfc3339, Queue, ReceivedMessage};
use crate::aws::Clients;
use crate::config::Settings;
use crate::contract::{parse_body, CustomerEvent, DeadLetterReason, Fingerprint, ResolvedCustomer};
use crate::observe::metrics::Telemetry;
use crate::store::registry::Registry;
use crate::store::tokens::{Begin, TokenLedger};
use crate::store::Store;
use crate::worker::act::Attempt;
use crate::worker::batch::{BatchLimits, Batcher};
use crate::worker::decide::{decide, Action, Delivery, Rules, StoreStep};
use crate::worker::entitlements::EntitlementReader;
use crate::worker::events::{Finished, Held, TokenResolved};
use crate::worker::lane::{Lane, Pipeline};
use crate::worker::lease::Lease;
use crate::worker::pause::ApiPause;
use crate::worker::ratelimit::{AdaptiveRateLimiter, RatePolicy};
use crate::worker::resolve::{ResolveOutcome, Resolver};
use crate::worker::retry::{BackoffPolicy, HoldPolicy};
use crate::worker::shutdown::{at_grace_end, GraceEnd, HandBackIfDropped};
use crate::worker::sinks::PublishSink;
use crate::worker::supervise::Expect;

pub use crate::worker::decide::HandBackCause;

/// `PublishBatch` and `DeleteMessageBatch` calls a batcher sends at once: with one, a backlog moved
/// one batch of ten per round trip of each service; four let the next batches go while one is
/// answered (BENCHMARKS.md).
pub const BATCHES_IN_FLIGHT: usize = 4;

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
    /// A usage event added to its hour in the store (`carried`: to a later hour, its own was
    /// metered), or found counted before (`duplicate`); the message is deleted.
    Counted { carried: bool, duplicate: bool },
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Published { .. } => "published",
            Outcome::AlreadyPublished { .. } => "already_published",
            Outcome::AlreadyDeadLettered { .. } => "already_dead_lettered",
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::HandedBack { .. } => "handed_back",
            Outcome::Counted {
                duplicate: false, ..
            } => "counted",
            Outcome::Counted {
                duplicate: true, ..
            } => "already_counted",
        }
    }
}

pub struct Worker {
    settings: Settings,
    /// The token lane first, then the lifecycle lane when `lifecycle_queue_url` is set.
    lanes: Vec<Lane>,
    publishes: Batcher<PublishSink>,
    /// For the start-up check and a held event's retries (one attempt each); other events go
    /// through `publishes`.
    publisher: Publisher,
    resolver: Resolver,
    /// GetEntitlements, under its own adaptive rate limit.
    entitlements: EntitlementReader,
    policy: BackoffPolicy,
    hold: HoldPolicy,
    telemetry: Arc<Telemetry>,
    pause: Arc<ApiPause>,
    /// Receiving tokens waits while the store does not answer.
    store_pause: Arc<ApiPause>,
    /// `true` once shutdown began: held events are dead-lettered instead of waiting.
    stopping: watch::Sender<bool>,
    /// `true` once the grace period is over: unfinished deliveries hand themselves back.
    grace_over: watch::Sender<bool>,
    /// Watched background tasks, by name.
    background: Mutex<Vec<(&'static str, AbortHandle)>>,
    /// Fingerprints this process published recently.
    published: Mutex<LruCache<Fingerprint, ()>>,
    /// What ResolveCustomer answered for tokens this process resolved recently: a token may
    /// resolve only once, so the answer is reused, never asked for again.
    resolved: Mutex<LruCache<Fingerprint, (ResolvedCustomer, u32)>>,
    /// Source message ids this process dead-lettered recently, with the reason.
    dead_lettered: Mutex<LruCache<String, DeadLetterReason>>,
    /// The store's record of every token: claims, answers written ahead, publishes, verdicts.
    tokens: TokenLedger,
    /// The customer registry: one item per subscription, which the lifecycle lane orders its
    /// events by (the token lane writes it through `tokens`).
    registry: Registry,
    /// Numbers this process's deliveries, so each claim names its own holder.
    deliveries: std::sync::atomic::AtomicU64,
    /// Names this process in claims (host, pid, a random part).
    holder: String,
    /// The usage lane's store ledger, BatchMeterUsage limiter and hour rules, when
    /// `usage_queue_url` is set.
    usage: Option<usage::UsageParts>,
    /// The store itself, for the fleet's learned rate (`fleet.rs`).
    store: Store,
}

impl Worker {
    /// Must be called inside a tokio runtime: it starts the delete batcher. `store` is where
    /// answers are kept (`Store::open` with `settings.store`).
    pub fn new(clients: Clients, settings: Settings, store: Store) -> Arc<Self> {
        let telemetry = Arc::new(Telemetry::new(Duration::from_secs(
            settings.worker.stall_timeout_secs,
        )));
        let holder = process_holder();
        // A claim covers one delivery's whole retrying plus a margin: a holder that died is taken
        // over that long after its last write.
        let claim_lease = settings.resolve.budget()
            + settings.resolve.attempt_timeout()
            + Duration::from_millis(settings.store.claim_margin_ms);
        let store = store.with_telemetry(telemetry.clone());
        let usage = (!settings.usage_queue_url.is_empty())
            .then(|| usage::UsageParts::new(&settings, store.clone(), clients.metering.clone()));
        let registry = Registry::new(store.clone());
        let tokens = TokenLedger::new(store.clone(), holder.clone(), claim_lease);
        let linger = Duration::from_millis(settings.worker.delete_linger_ms);
        let mut lanes = Vec::new();
        let mut delete_tasks = Vec::new();
        let queues = [
            (Pipeline::Tokens, &settings.queue_url, &settings.dlq_url),
            (
                Pipeline::Lifecycle,
                &settings.lifecycle_queue_url,
                &settings.lifecycle_dlq_url,
            ),
            (
                Pipeline::Usage,
                &settings.usage_queue_url,
                &settings.usage_dlq_url,
            ),
        ];
        for (pipeline, url, dlq) in queues {
            if url.is_empty() {
                continue;
            }
            let queue = Queue::new(clients.sqs.clone(), url.clone(), dlq.clone())
                .with_telemetry(telemetry.clone());
            telemetry.health.watch_queue(pipeline.as_str());
            let (lane, task) = Lane::spawn(pipeline, queue, linger);
            delete_tasks.push((lane.delete_batcher_name(), task));
            lanes.push(lane);
        }
        let policy = BackoffPolicy::from_settings(&settings.resolve);
        let limiter = Arc::new(AdaptiveRateLimiter::new(RatePolicy::from_settings(
            &settings.rate_limit,
        )));
        telemetry.metrics.rate_limit(limiter.rate());
        let resolver = Resolver::new(clients.metering, policy.clone(), limiter, telemetry.clone());
        // GetEntitlements has its own quota, so its own limiter with the same policy.
        let entitlements = EntitlementReader::new(
            clients.entitlement,
            Arc::new(AdaptiveRateLimiter::new(RatePolicy::from_settings(
                &settings.rate_limit,
            ))),
        );
        let publisher = Publisher::new(clients.sns, settings.topic_arn.clone())
            .with_telemetry(telemetry.clone());
        let (publishes, publish_task) = Batcher::spawn_watched(
            PublishSink(publisher.clone()),
            BatchLimits {
                max_items: settings.publish.max_batch,
                max_weight: MAX_BATCH_BYTES,
                linger: Duration::from_millis(settings.publish.linger_ms),
                // A FIFO topic keeps one customer's events in order: one batch at a time.
                max_in_flight: if publisher.is_fifo() {
                    1
                } else {
                    BATCHES_IN_FLIGHT
                },
            },
        );
        let capacity =
            NonZeroUsize::new(settings.worker.dedupe_capacity).unwrap_or(NonZeroUsize::MIN);
        let worker = Arc::new(Worker {
            lanes,
            publishes,
            publisher,
            resolver,
            entitlements,
            policy,
            hold: HoldPolicy::from_settings(&settings.publish),
            telemetry,
            pause: Arc::new(ApiPause::default()),
            store_pause: Arc::new(ApiPause::default()),
            stopping: watch::Sender::new(false),
            grace_over: watch::Sender::new(false),
            background: Mutex::new(Vec::new()),
            published: Mutex::new(crate::cache::growing_lru(capacity)),
            resolved: Mutex::new(crate::cache::growing_lru(capacity)),
            dead_lettered: Mutex::new(crate::cache::growing_lru(capacity)),
            tokens,
            registry,
            deliveries: std::sync::atomic::AtomicU64::new(0),
            holder,
            usage,
            store,
            settings,
        });
        for (name, task) in delete_tasks {
            worker.supervise(name, Expect::Forever, task);
        }
        worker.supervise("publish_batcher", Expect::Forever, publish_task);
        worker
    }

    /// The token queue.
    pub fn queue(&self) -> &Queue {
        &self.lanes[0].queue
    }

    /// Metrics and health, for the admin endpoint and for tests.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Works one token message to its outcome (see [`Worker::handle_on`]).
    pub async fn handle(&self, message: ReceivedMessage) -> Outcome {
        self.handle_on(&self.lanes[0], message).await
    }

    /// Works one message of the lifecycle queue to its outcome; `None` when no lifecycle queue is
    /// configured.
    pub async fn handle_lifecycle(&self, message: ReceivedMessage) -> Option<Outcome> {
        let lane = self
            .lanes
            .iter()
            .find(|l| l.pipeline == Pipeline::Lifecycle)?;
        Some(self.handle_on(lane, message).await)
    }

    /// Works one message of `lane` to its outcome, keeping its visibility alive meanwhile, and
    /// reports it; the step the loop runs per message. Everything it logs carries the message's
    /// span.
    async fn handle_on(&self, lane: &Lane, message: ReceivedMessage) -> Outcome {
        let span = tracing::info_span!(
            "message",
            queue = lane.pipeline.as_str(),
            message_id = %message.message_id,
            event_id = tracing::field::Empty
        );
        async {
            let lease = Arc::new(Lease::new(
                message.message_id.clone(),
                message.receipt_handle.clone(),
            ));
            let _entry = lane.in_flight.enter(lease.clone(), self.telemetry.clone());
            let visibility =
                Duration::from_secs(self.settings.worker.visibility_timeout_secs as u64);
            let mut work = Box::pin(async {
                match lane.pipeline {
                    Pipeline::Tokens => self.process(lane, &message, &lease).await,
                    Pipeline::Lifecycle => self.process_lifecycle(lane, &message, &lease).await,
                    Pipeline::Usage => self.process_usage(lane, &message, &lease).await,
                }
            });
            let mut heartbeat = Box::pin(lease.heartbeat(&lane.queue, visibility, &self.telemetry));
            // Dropped unsettled at the end of shutdown (its task aborted), the message is still
            // handed back with the others.
            let mut unsettled = HandBackIfDropped::new(lane, &lease, &self.grace_over);
            let mut grace_over = self.grace_over.subscribe();
            let outcome = tokio::select! {
                outcome = &mut work => outcome,
                _ = &mut heartbeat => work.await,
                _ = async { drop(grace_over.wait_for(|over| *over).await) } => {
                    match at_grace_end(&lease, work.as_mut(), heartbeat.as_mut()).await {
                        GraceEnd::Finished(outcome) => outcome,
                        // `decide`'s shutdown row: back with visibility 0, in the shutdown's
                        // batch, after the heartbeat settled, so no beat can land after.
                        GraceEnd::Settled(settled) => {
                            lock(&lane.shutdown_hand_backs)
                                .push(lease.receipt_handle().to_owned());
                            drop(settled);
                            Outcome::HandedBack {
                                cause: HandBackCause::Shutdown,
                                delay: Duration::ZERO,
                            }
                        }
                    }
                }
            };
            unsettled.disarm();
            Finished { outcome: &outcome }.emit(&self.telemetry);
            outcome
        }
        .instrument(span)
        .await
    }

    /// Gathers the facts about one message step by step and carries out what `decide` says, until
    /// an action settles the message (the README's table, in `worker::decide`).
    async fn process(&self, lane: &Lane, message: &ReceivedMessage, lease: &Lease) -> Outcome {
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
        let event_id = delivery.event_id();
        self.observe(
            &mut delivery.settling,
            &message.message_id,
            event_id.as_ref(),
        );
        if let Some(event_id) = &event_id {
            delivery.resolved = lock(&self.resolved)
                .get(event_id)
                .map(|(customer, attempts)| ResolveOutcome::Resolved {
                    customer: customer.clone(),
                    attempts: *attempts,
                });
        }
        let mut attempt = Attempt::new(lane, message, lease);
        // The store for this delivery, claiming in its own name; its claim on the token (the
        // version), and whether the answer it holds is in the store.
        let n = self
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ledger = self.tokens.for_holder(format!("{}/{n}", self.holder));
        let mut claim: Option<u64> = None;
        let mut saved = false;
        // The token item's version after this delivery's own write-ahead (`None`: not known), so
        // that the publish is recorded without reading the item again.
        let mut written: Option<u64> = None;
        loop {
            delivery.paused = self.pause.is_paused();
            self.refresh(&mut delivery.settling, &attempt.held);
            let rules = Rules {
                product_codes: &self.settings.product_codes,
                policy: &self.policy,
                hold: self.hold,
            };
            match decide(&delivery, rules) {
                Action::Recall => {
                    let Some(fingerprint) = &event_id else {
                        unreachable!("decide recalls only parsed requests")
                    };
                    self.recall(&ledger, &mut delivery, fingerprint, &mut claim)
                        .await;
                }
                Action::AwaitHolder { lease_until_ms } => {
                    // The holder's answer lands in the store; look again soon, and take the
                    // claim over once it lapsed (the holder died).
                    let left = lease_until_ms
                        .saturating_sub(crate::store::now_millis())
                        .max(0);
                    let wait = Duration::from_millis((left as u64).clamp(50, 250));
                    if self.wait_unless_stopping(wait).await {
                        delivery.grace_over = *self.grace_over.borrow();
                    }
                    delivery.store = StoreStep::NotAsked;
                }
                Action::Resolve => {
                    let Ok(request) = &delivery.request else {
                        unreachable!("decide resolves only parsed requests")
                    };
                    let fingerprint = request.token.fingerprint();
                    let outcome = self.resolver.resolve(&request.token, lease).await;
                    match outcome {
                        ResolveOutcome::Resolved { customer, attempts } => {
                            lock(&self.resolved)
                                .put(fingerprint.clone(), (customer.clone(), attempts));
                            if let Some(sent) = message.sent_at {
                                let age = chrono::Utc::now().signed_duration_since(sent);
                                TokenResolved {
                                    age: age.to_std().unwrap_or_default(),
                                }
                                .emit(&self.telemetry);
                            }
                            // Written ahead of any publish try or letter: from here on the
                            // answer outlives this process.
                            let event = CustomerEvent::new(
                                request,
                                customer.clone(),
                                message.enqueued_at(),
                                now_rfc3339(),
                                attempts,
                            );
                            delivery.event = Some(event);
                            let stored = self
                                .write_ahead(&ledger, &mut delivery, &fingerprint, claim)
                                .await;
                            saved = stored.is_some();
                            written = stored.flatten();
                            // An answer that came in after the grace ended (the call was let
                            // finish) is stored, then handed back: the next delivery publishes it
                            // from the store, no call.
                            if saved && *self.grace_over.borrow() {
                                delivery.grace_over = true;
                            }
                            if !saved {
                                delivery.resolved =
                                    Some(ResolveOutcome::Resolved { customer, attempts });
                            }
                        }
                        ResolveOutcome::Rejected {
                            reason,
                            detail,
                            attempts,
                        } => {
                            // A resolved token is never dead-lettered as expired: the store may
                            // hold its answer from an earlier delivery.
                            match self
                                .tokens
                                .rejected(&fingerprint, claim, reason, &detail)
                                .await
                            {
                                Ok(Some(stored)) => {
                                    delivery.resolved = Some(ResolveOutcome::Resolved {
                                        customer: stored.customer(),
                                        attempts: stored.attempts,
                                    });
                                    delivery.event = Some(stored);
                                    saved = true;
                                }
                                Ok(None) => {
                                    delivery.resolved = Some(ResolveOutcome::Rejected {
                                        reason,
                                        detail,
                                        attempts,
                                    })
                                }
                                Err(e) => delivery.store = StoreStep::Failed(e.to_string()),
                            }
                        }
                        unavailable @ ResolveOutcome::Unavailable { .. } => {
                            delivery.resolved = Some(unavailable);
                        }
                    }
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
                    let fingerprint = request.token.fingerprint();
                    delivery.event.get_or_insert_with(|| {
                        CustomerEvent::new(
                            request,
                            customer,
                            message.enqueued_at(),
                            now_rfc3339(),
                            attempts,
                        )
                    });
                    // Nothing is published that the store does not hold: a write-ahead that
                    // failed is tried again first, as a failed publish try (held, then
                    // dead-lettered with the event if the store stays away).
                    if !saved {
                        let stored = self
                            .write_ahead(&ledger, &mut delivery, &fingerprint, claim)
                            .await;
                        saved = stored.is_some();
                        written = stored.flatten();
                        if !saved {
                            if attempt.held.is_none() {
                                attempt.held = Some(HeldGuard::start(&self.telemetry));
                            }
                            continue;
                        }
                    }
                    let Some(event) = delivery.event.clone() else {
                        unreachable!("the event was built above")
                    };
                    let publish = (event.event_id.clone(), TopicEvent::Customer(event.clone()));
                    if let Some(event_id) = self
                        .publish_then_delete(&mut attempt, &mut delivery.settling, publish)
                        .await
                    {
                        self.record_published(&ledger, &fingerprint, written, &event)
                            .await;
                        return Outcome::Published { event_id, attempts };
                    }
                }
                Action::DeadLetter(mut letter) => {
                    let event_ref = self
                        .refer_to_stored_event(&ledger, &mut letter, message, claim)
                        .await;
                    if let Some(outcome) = self
                        .retire(&mut attempt, &mut delivery.settling, letter, event_ref)
                        .await
                    {
                        return outcome;
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
                    if cause == HandBackCause::Store {
                        self.pause_for_store();
                    }
                    // The claim is given up so the next delivery goes on at once: without an
                    // answer it calls; with a stored answer it publishes it, no call.
                    if let Some(fingerprint) = &event_id {
                        let given_up = match (claim, saved) {
                            (_, true) => ledger.let_go(fingerprint).await,
                            (Some(version), false) => ledger.release(fingerprint, version).await,
                            (None, false) => Ok(()),
                        };
                        if let Err(e) = given_up {
                            tracing::debug!(error = %e, "claim not given up; it lapses on its own");
                        }
                    }
                    self.hand_back(lane, lease, delay).await;
                    return Outcome::HandedBack { cause, delay };
                }
                Action::CheckCredentials => {
                    delivery.credentials = Some(self.resolver.credentials_check().await);
                }
                Action::Delete(handled) => {
                    return self.settle_handled(lane, message, lease, handled).await
                }
            }
        }
    }

    /// Sleeps `wait`, or less if the process starts stopping meanwhile (then `true`).
    async fn wait_unless_stopping(&self, wait: Duration) -> bool {
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = async { drop(stopping.wait_for(|s| *s).await) } => true,
        }
    }

    /// Asks the store about the token before any call: claims it when it is new there, or takes
    /// what the store knows (an answer to publish, a publish, a verdict).
    async fn recall(
        &self,
        ledger: &TokenLedger,
        delivery: &mut Delivery,
        fingerprint: &Fingerprint,
        claim: &mut Option<u64>,
    ) {
        delivery.store = match ledger.begin(fingerprint).await {
            Ok(Begin::Claimed { version }) => {
                *claim = Some(version);
                StoreStep::Claimed
            }
            Ok(Begin::HeldElsewhere { lease_until_ms }) => {
                StoreStep::HeldElsewhere { lease_until_ms }
            }
            Ok(Begin::Resolved(event)) => {
                delivery.resolved = Some(ResolveOutcome::Resolved {
                    customer: event.customer(),
                    attempts: event.attempts,
                });
                delivery.event = Some(event);
                StoreStep::Known
            }
            Ok(Begin::Published(_)) => {
                delivery.settling.already_published = true;
                StoreStep::Known
            }
            Ok(Begin::Rejected { reason, detail }) => {
                delivery.resolved = Some(ResolveOutcome::Rejected {
                    reason,
                    detail,
                    attempts: 0,
                });
                StoreStep::Known
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: the token could not be looked up; handed back");
                StoreStep::Failed(e.to_string())
            }
        };
    }

    /// Writes the delivery's answer to the store ahead of any publish. When another delivery
    /// stored one first, that event replaces this delivery's. `None` (with the failure counted
    /// as a failed publish try) when the store did not take it; otherwise `Some` of the item's
    /// version when this write made it (`Some(None)`: another delivery's answer stands).
    async fn write_ahead(
        &self,
        ledger: &TokenLedger,
        delivery: &mut Delivery,
        fingerprint: &Fingerprint,
        claim: Option<u64>,
    ) -> Option<Option<u64>> {
        let event = delivery.event.clone()?;
        match ledger.write_ahead(fingerprint, claim, &event).await {
            Ok((stored, version)) => {
                delivery.resolved = Some(ResolveOutcome::Resolved {
                    customer: stored.customer(),
                    attempts: stored.attempts,
                });
                delivery.event = Some(stored);
                Some(version)
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: the answer could not be written ahead; held");
                delivery.settling.publish_failures += 1;
                delivery.settling.last_publish_error = Some(format!("store: {e}"));
                None
            }
        }
    }

    /// A letter too large for SQS with its event attached (a body near the limit) carries a
    /// reference to the store item instead, once the event is surely there (written again here:
    /// the write keeps an answer already stored). `None` when the letter keeps its event.
    async fn refer_to_stored_event(
        &self,
        ledger: &TokenLedger,
        letter: &mut crate::worker::decide::Letter,
        message: &ReceivedMessage,
        claim: Option<u64>,
    ) -> Option<String> {
        use crate::contract::{LETTER_OVERHEAD_BYTES, MAX_LETTER_BYTES};
        let json = letter.event.as_deref()?;
        if message.body.len() + json.len() + LETTER_OVERHEAD_BYTES <= MAX_LETTER_BYTES {
            return None;
        }
        let (Some(fingerprint), Some(event)) = (&letter.event_id, CustomerEvent::from_json(json))
        else {
            return None;
        };
        match ledger.resolved(fingerprint, claim, &event).await {
            Ok(_) => {
                letter.event = None;
                Some(crate::store::tokens::token_pk(fingerprint))
            }
            // Sent with the event; too large, the send fails and the message is handed back
            // until the store answers (or the redrive policy takes it, body intact).
            Err(e) => {
                tracing::warn!(error = %e, "store: a letter too large for its event could not refer to the store");
                None
            }
        }
    }

    /// Marks the token published in the store. A failure only costs a second publish (same
    /// `eventId`) should the message come back; it is logged, not retried.
    async fn record_published(
        &self,
        ledger: &TokenLedger,
        fingerprint: &Fingerprint,
        known_version: Option<u64>,
        event: &CustomerEvent,
    ) {
        if let Err(e) = ledger.published(fingerprint, known_version, event).await {
            tracing::warn!(error = %e, "store: the publish could not be recorded");
        }
    }

    /// The store's token ledger (for `dlq redrive` and the tests).
    pub fn tokens(&self) -> &TokenLedger {
        &self.tokens
    }

    fn was_published(&self, event_id: &Fingerprint) -> bool {
        lock(&self.published).get(event_id).is_some()
    }

    fn remember_published(&self, event_id: &Fingerprint) {
        lock(&self.published).put(event_id.clone(), ());
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

/// Names this process in the store's claims: the host (the ECS task's hostname), the pid and a
/// random part, so a restarted process never mistakes its predecessor's claim for its own.
fn process_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// A poisoned lock only means another task panicked mid-update of a cache; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
