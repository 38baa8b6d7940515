//! A clean stop: stop receiving, let the long poll that is already registered at SQS end and hand
//! back what it brings, let in-flight work finish within the grace period, then have every
//! unfinished delivery hand itself back (after its heartbeat settled) in a reserved part of the
//! grace, with `ChangeMessageVisibilityBatch` calls in parallel. Deliveries that already published
//! and only wait for their delete are let finish, not handed back (which would publish them twice).

use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::aws::error::CallError;
use crate::aws::sqs::ReceivedMessage;
use crate::worker::lane::Lane;
use crate::worker::run::{reap, report_join};
use crate::worker::{lock, Worker};

/// The part of the grace period kept for handing back: a fifth of it, between 1 and 5 seconds.
pub fn hand_back_reserve(grace: Duration) -> Duration {
    (grace / 5)
        .clamp(Duration::from_secs(1), Duration::from_secs(5))
        .min(grace)
}

type PendingReceive = JoinHandle<Result<Vec<ReceivedMessage>, CallError>>;

impl Worker {
    pub(super) async fn shut_down(
        &self,
        lane: &Lane,
        mut tasks: JoinSet<()>,
        pending_receive: Option<PendingReceive>,
    ) {
        self.telemetry.health.set_stopping();
        self.stopping.send_replace(true);
        reap(&mut tasks);
        let grace = Duration::from_secs(self.settings.worker.shutdown_grace_secs);
        let reserve = hand_back_reserve(grace);
        let started = Instant::now();
        tracing::info!(
            queue = lane.pipeline.as_str(),
            in_flight = tasks.len(),
            grace_secs = grace.as_secs(),
            "shutting down: receiving stopped, draining"
        );

        // SQS keeps a long poll registered until it ends, whether or not the client is still
        // there: dropped, it would capture the next messages sent and hide them for a whole
        // visibility timeout. So it is let end (within receive_wait_secs) and what it brings goes
        // straight back, while in-flight work drains.
        let receive = async {
            let Some(pending) = pending_receive else {
                return;
            };
            match tokio::time::timeout_at(started + grace, pending).await {
                Ok(Ok(Ok(messages))) if !messages.is_empty() => {
                    let handles = messages.into_iter().map(|m| m.receipt_handle).collect();
                    self.hand_back_now(lane, handles, "received during shutdown")
                        .await;
                }
                Err(_) => tracing::warn!("the last long poll outlived the grace period"),
                _ => {}
            }
        };
        let drain = async {
            let _ = tokio::time::timeout_at(started + grace - reserve, async {
                while let Some(done) = tasks.join_next().await {
                    report_join(done);
                }
            })
            .await;
        };
        tokio::join!(receive, drain);

        if !tasks.is_empty() {
            tracing::warn!(
                unfinished = tasks.len(),
                "grace period over; handing back unfinished messages"
            );
            // Each unfinished delivery settles its heartbeat and hands itself back; one that
            // only waits for its delete finishes instead.
            self.grace_over.send_replace(true);
            let _ = tokio::time::timeout(reserve, async {
                while let Some(done) = tasks.join_next().await {
                    report_join(done);
                }
            })
            .await;
        }
        if !tasks.is_empty() {
            // Last resort: tasks that did not answer within the reserve.
            let stuck: Vec<String> = lane
                .in_flight
                .unfinished()
                .iter()
                .map(|lease| lease.receipt_handle().to_owned())
                .collect();
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            lock(&lane.shutdown_hand_backs).extend(stuck);
        }
        let unfinished = std::mem::take(&mut *lock(&lane.shutdown_hand_backs));
        self.hand_back_now(lane, unfinished, "unfinished").await;
        tracing::info!(
            queue = lane.pipeline.as_str(),
            took_ms = started.elapsed().as_millis() as u64,
            "queue drained"
        );
    }

    /// After every lane drained.
    pub(super) fn stopped(&self) {
        // Tasks that would outlive their purpose; the batchers end with the worker, and the admin
        // listener answers until the caller stops it.
        for (name, task) in lock(&self.background).iter() {
            if matches!(*name, "pause_probe" | "startup_check") {
                task.abort();
            }
        }
        tracing::info!("worker stopped");
    }

    /// Makes messages visible again at once (visibility 0), in parallel batches.
    async fn hand_back_now(&self, lane: &Lane, receipt_handles: Vec<String>, what: &str) {
        if receipt_handles.is_empty() {
            return;
        }
        let count = receipt_handles.len();
        let failed = lane
            .queue
            .hand_back_all(receipt_handles, Duration::ZERO)
            .await;
        for (_, problem) in &failed {
            tracing::warn!(%problem, what, "could not hand a message back; it reappears after its visibility timeout");
        }
        tracing::info!(count, failed = failed.len(), what, "handed back");
    }
}
