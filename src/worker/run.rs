//! The receive loop: one per lane (token queue, lifecycle queue), each with its own
//! `max_in_flight` slots; receive only when there is a free slot and (token lane) resolving is not
//! paused, start one task per message, and on shutdown hand over to `shutdown.rs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::config::limits::RECEIVE_BACKOFF_MAX;
use crate::worker::events::Received;
use crate::worker::lane::{Lane, Pipeline};
use crate::worker::retry::full_jitter;
use crate::worker::Worker;

/// What the receive loop does next.
enum Next {
    Shutdown,
    Receive(Vec<OwnedSemaphorePermit>),
}

impl Worker {
    /// Receives and works on every lane until `shutdown` completes, then stops receiving, lets
    /// in-flight work finish within the grace period, and hands back whatever did not finish.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        self.check_dependencies();
        // Before the first receive: a task started into a backlog starts at the fleet's rate.
        self.adopt_fleet_rate().await;
        let stop = tokio::sync::watch::Sender::new(false);
        let mut loops = JoinSet::new();
        {
            let mut stopped = stop.subscribe();
            loops.spawn(self.clone().share_fleet_rate(async move {
                drop(stopped.wait_for(|s| *s).await);
            }));
        }
        for index in 0..self.lanes.len() {
            let mut stopped = stop.subscribe();
            loops.spawn(self.clone().run_lane(index, async move {
                drop(stopped.wait_for(|s| *s).await);
            }));
        }
        if self.usage.is_some() {
            let mut stopped = stop.subscribe();
            loops.spawn(self.clone().run_metering(async move {
                drop(stopped.wait_for(|s| *s).await);
            }));
        }
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {}
            // A lane loop only ends after a shutdown, or by a panic: stop the others too.
            _ = loops.join_next() => {}
        }
        stop.send_replace(true);
        while let Some(done) = loops.join_next().await {
            report_join(done);
        }
        self.stopped();
    }

    /// The receive loop of lane `index`, until `shutdown` completes; then its shutdown.
    async fn run_lane(self: Arc<Self>, index: usize, shutdown: impl Future<Output = ()>) {
        let lane = &self.lanes[index];
        let w = &self.settings.worker;
        let slots = Arc::new(Semaphore::new(w.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut receive_delays = receive_backoff();
        tokio::pin!(shutdown);
        tracing::info!(queue = %lane.queue.url(), pipeline = lane.pipeline.as_str(),
            max_in_flight = w.max_in_flight, "worker started");

        let mut pending_receive = None;
        loop {
            let permits = match self.next_slots(lane, &slots, &mut shutdown).await {
                Next::Shutdown => break,
                Next::Receive(permits) => permits,
            };
            reap(&mut tasks);
            // The receive runs as its own task so that, at shutdown, it can finish while in-flight
            // work drains (see `shutdown.rs`).
            let mut receive = tokio::spawn({
                let queue = lane.queue.clone();
                let (max, wait, visibility) = (
                    permits.len() as i32,
                    w.receive_wait_secs,
                    w.visibility_timeout_secs,
                );
                async move { queue.receive(max, wait, visibility).await }
            });
            let received = tokio::select! {
                r = &mut receive => r,
                _ = &mut shutdown => {
                    pending_receive = Some(receive);
                    break;
                }
            };
            let messages = match received {
                Ok(Ok(messages)) => {
                    self.telemetry
                        .health
                        .receive_succeeded(lane.pipeline.as_str());
                    receive_delays = receive_backoff();
                    messages
                }
                failed => {
                    self.telemetry.health.receive_failed(lane.pipeline.as_str());
                    let wait = full_jitter(receive_delays.next().unwrap_or(RECEIVE_BACKOFF_MAX));
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => format!("receive task: {e}"),
                        Ok(Ok(_)) => unreachable!(),
                    };
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
                let worker = self.clone();
                tasks.spawn(async move {
                    let _slot = permit;
                    worker.handle_on(&worker.lanes[index], message).await;
                });
            }
            // Permits not matched by a message drop here and free their slots.
        }
        self.shut_down(lane, tasks, pending_receive).await;
    }

    /// Waits until receiving makes sense: not paused, and at least one free slot (then takes as
    /// many free slots as one receive may fill). Waiting by choice is progress, not a stall.
    async fn next_slots(
        &self,
        lane: &Lane,
        slots: &Arc<Semaphore>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Next {
        let tick = Duration::from_secs(self.settings.worker.stall_timeout_secs)
            .max(Duration::from_secs(2))
            / 2;
        // Both lanes need the store: neither receives while it does not answer (a lifecycle
        // notification handed back again and again would reach its queue's maxReceiveCount).
        let paused = || {
            (lane.pipeline.follows_resolve_pause() && self.pause.is_paused())
                || self.store_pause.is_paused()
        };
        let resumed = || async {
            self.pause.resumed().await;
            self.store_pause.resumed().await;
        };
        loop {
            if paused() {
                tokio::select! {
                    _ = shutdown.as_mut() => return Next::Shutdown,
                    _ = resumed() => continue,
                    _ = tokio::time::sleep(tick) => {
                        self.telemetry.health.idle_by_choice(lane.pipeline.as_str());
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
                    self.telemetry.health.idle_by_choice(lane.pipeline.as_str());
                    continue;
                }
            };
            // The API may have been found disabled while this waited for a slot: receiving now
            // would only hand the messages back.
            if paused() {
                drop(first);
                continue;
            }
            // Receive only what the current rate can serve within one delivery's budget: the
            // rest would wait for the limiter until their budget ran out, be handed back with
            // their receive count raised, and could reach the redrive policy's maxReceiveCount.
            // The token lane's calls are ResolveCustomer's, the lifecycle lane's GetEntitlements'.
            let batch = self.settings.worker.receive_batch as usize;
            // The usage lane's calls are per closed hour, not per message: it takes full batches.
            let limiter = match lane.pipeline {
                Pipeline::Tokens => Some(self.resolver.limiter()),
                Pipeline::Lifecycle => Some(self.entitlements.limiter()),
                Pipeline::Usage => None,
            };
            let room = limiter.map_or(batch, |limiter| {
                limiter
                    .capacity(self.policy.budget, batch)
                    .saturating_sub(lane.in_flight.len())
            });
            if room == 0 {
                drop(first);
                tokio::select! {
                    _ = shutdown.as_mut() => return Next::Shutdown,
                    _ = lane.in_flight.one_left() => {}
                    // The rate may rise meanwhile.
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                self.telemetry.health.idle_by_choice(lane.pipeline.as_str());
                continue;
            }
            let mut permits = vec![first];
            while permits.len() < batch.min(room) {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            return Next::Receive(permits);
        }
    }
}

/// Collects the tasks that finished, reporting panics.
pub(super) fn reap(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.try_join_next() {
        report_join(done);
    }
}

pub(super) fn report_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(
                "a message task panicked; its message will reappear after its visibility timeout"
            );
        }
    }
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
