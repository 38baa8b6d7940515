//! A clean stop: stop receiving, let the long poll that is already registered at SQS end and hand
//! back what it brings, let in-flight work finish within the grace period, then have every
//! unfinished delivery hand itself back (after its heartbeat settled) in a reserved part of the
//! grace, with `ChangeMessageVisibilityBatch` calls in parallel. Deliveries committed to their
//! outcome (publishing, dead-lettering, deleting) and deliveries whose ResolveCustomer call is in
//! flight (AWS may spend the token whether or not the worker waits) are let finish, not handed
//! back; a publish still unanswered when the grace ends is given up and its event dead-lettered as
//! `unpublished`. Whatever is still unsettled when the last part of the reserve begins is dropped
//! and handed back with the rest, so every message is settled or handed back, all before the
//! grace period ends.
//!
//! ```text
//! SIGTERM ── drain ──────────────── grace − reserve ── settle themselves ── grace − reserve/2 ── hand back ── grace
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{watch, MutexGuard};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::aws::error::CallError;
use crate::aws::sqs::ReceivedMessage;
use crate::worker::lane::Lane;
use crate::worker::lease::Lease;
use crate::worker::run::{reap, report_join};
use crate::worker::{lock, Outcome, Worker};

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
        let deadline = started + grace;
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
            match tokio::time::timeout_at(deadline, pending).await {
                Ok(Ok(Ok(messages))) if !messages.is_empty() => {
                    let handles = messages.into_iter().map(|m| m.receipt_handle).collect();
                    self.hand_back_now(lane, handles, "received during shutdown", deadline)
                        .await;
                }
                Err(_) => tracing::warn!("the last long poll outlived the grace period"),
                _ => {}
            }
        };
        let drain = join_until(&mut tasks, deadline - reserve);
        tokio::join!(receive, drain);

        if !tasks.is_empty() {
            tracing::warn!(
                unfinished = tasks.len(),
                "grace period over; handing back unfinished messages"
            );
            // Each unfinished delivery settles its heartbeat and hands itself back; one committed
            // to its outcome or in a ResolveCustomer call finishes instead (`at_grace_end`).
            self.grace_over.send_replace(true);
            join_until(&mut tasks, deadline - reserve / 2).await;
        }
        if !tasks.is_empty() {
            // Last resort: dropped, each hands its message back (`HandBackIfDropped`).
            tracing::warn!(
                unfinished = tasks.len(),
                "deliveries still unsettled; dropping them and handing their messages back"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let unfinished = std::mem::take(&mut *lock(&lane.shutdown_hand_backs));
        self.hand_back_now(lane, unfinished, "unfinished", deadline)
            .await;
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

    /// Makes messages visible again at once (visibility 0), in parallel batches, giving up at
    /// `deadline` (the end of the grace period: the orchestrator's stop timeout follows).
    async fn hand_back_now(
        &self,
        lane: &Lane,
        receipt_handles: Vec<String>,
        what: &str,
        deadline: Instant,
    ) {
        if receipt_handles.is_empty() {
            return;
        }
        let count = receipt_handles.len();
        let hand_back = lane.queue.hand_back_all(receipt_handles, Duration::ZERO);
        let Ok(failed) = tokio::time::timeout_at(deadline, hand_back).await else {
            tracing::warn!(
                count,
                what,
                "the hand-back did not finish within the grace period; \
                those messages reappear after their visibility timeout"
            );
            return;
        };
        for (_, problem) in &failed {
            tracing::warn!(%problem, what, "could not hand a message back; it reappears after its visibility timeout");
        }
        tracing::info!(count, failed = failed.len(), what, "handed back");
    }
}

/// Reports the tasks that end until `until`.
async fn join_until(tasks: &mut JoinSet<()>, until: Instant) {
    let _ = tokio::time::timeout_at(until, async {
        while let Some(done) = tasks.join_next().await {
            report_join(done);
        }
    })
    .await;
}

/// What became of a delivery when the grace period ended.
pub(super) enum GraceEnd<'l> {
    /// Its own work finished it (its outcome, its own hand-back included).
    Finished(Outcome),
    /// Settled for the shutdown's hand-back: hold the guard while queueing it.
    Settled(MutexGuard<'l, bool>),
}

/// One delivery at the end of the grace period. No new ResolveCustomer call starts; a call in
/// flight is let answer (AWS may spend the token either way; the answer is then acted on), and a
/// delivery committed to its outcome finishes it; otherwise the delivery is settled for the
/// hand-back. The work is polled throughout: it may itself be handing the message back, holding
/// the settle guard, and must be able to finish (a guard held by a future nobody polls would stall
/// the task until it is dropped).
pub(super) async fn at_grace_end<'l, W, H>(
    lease: &'l Lease,
    mut work: Pin<&mut W>,
    mut heartbeat: Pin<&mut H>,
) -> GraceEnd<'l>
where
    W: Future<Output = Outcome>,
    H: Future<Output = ()>,
{
    lease.wind_down();
    loop {
        if lease.is_calling() {
            tokio::select! {
                outcome = work.as_mut() => return GraceEnd::Finished(outcome),
                _ = heartbeat.as_mut() => {}
                _ = lease.call_ended() => {}
            }
            continue;
        }
        if lease.is_committed() {
            break;
        }
        tokio::select! {
            outcome = work.as_mut() => return GraceEnd::Finished(outcome),
            _ = heartbeat.as_mut() => {}
            settled = lease.settle_uncommitted() => match settled {
                Some(guard) => return GraceEnd::Settled(guard),
                // Committed, or settled by its own work meanwhile.
                None => break,
            },
        }
    }
    // It finishes by itself, the heartbeat beside it (a held event is dead-lettered at once, a
    // publish unanswered at the grace's end is given up: `Worker::publish_then_delete`).
    tokio::select! {
        outcome = work.as_mut() => GraceEnd::Finished(outcome),
        _ = heartbeat => GraceEnd::Finished(work.await),
    }
}

/// Hands a delivery's message back in the shutdown's batch if its task is dropped before it
/// settled (aborted at the end of the grace period): every message is settled or handed back.
pub(super) struct HandBackIfDropped<'a> {
    lane: &'a Lane,
    lease: &'a Lease,
    grace_over: &'a watch::Sender<bool>,
    armed: bool,
}

impl<'a> HandBackIfDropped<'a> {
    pub fn new(lane: &'a Lane, lease: &'a Lease, grace_over: &'a watch::Sender<bool>) -> Self {
        HandBackIfDropped {
            lane,
            lease,
            grace_over,
            armed: true,
        }
    }

    /// The delivery reached its outcome.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for HandBackIfDropped<'_> {
    fn drop(&mut self) {
        if self.armed && *self.grace_over.borrow() {
            lock(&self.lane.shutdown_hand_backs).push(self.lease.receipt_handle().to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::metering::FailureKind;
    use crate::contract::Fingerprint;
    use crate::worker::HandBackCause;

    fn published() -> Outcome {
        Outcome::Published {
            event_id: Fingerprint::of("tok"),
            attempts: 1,
        }
    }

    /// Runs `work` until it waits (so it holds whatever it took first), then the grace ends:
    /// what `at_grace_end` made of it, bounded so a stall fails the test, and how long it took.
    async fn grace_ends_during<W: Future<Output = Outcome>>(
        lease: &Lease,
        work: W,
    ) -> (Result<Result<Outcome, bool>, ()>, Duration) {
        let mut work = std::pin::pin!(work);
        let mut heartbeat = std::pin::pin!(std::future::pending::<()>());
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "the work is under way");
        let started = Instant::now();
        let end = tokio::time::timeout(
            Duration::from_secs(60),
            at_grace_end(lease, work.as_mut(), heartbeat.as_mut()),
        )
        .await
        .map(|end| match end {
            GraceEnd::Finished(outcome) => Ok(outcome),
            GraceEnd::Settled(guard) => Err(*guard),
        })
        .map_err(drop);
        (end, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_grace_that_ends_while_the_work_hands_back_lets_that_hand_back_finish() {
        let lease = Lease::new("m".into(), "r".into());
        let handing_back = async {
            let _settled = lease.settle().await;
            tokio::time::sleep(Duration::from_secs(2)).await; // ChangeMessageVisibility
            Outcome::HandedBack {
                cause: HandBackCause::Resolve(FailureKind::Throttled),
                delay: Duration::from_secs(7),
            }
        };
        let (end, took) = grace_ends_during(&lease, handing_back).await;
        assert_eq!(
            end,
            Ok(Ok(Outcome::HandedBack {
                cause: HandBackCause::Resolve(FailureKind::Throttled),
                delay: Duration::from_secs(7),
            })),
            "its own hand-back finished, not stalled on the guard it holds"
        );
        assert!(took <= Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolve_call_in_flight_is_let_answer_and_its_answer_acted_on() {
        let lease = Lease::new("m".into(), "r".into());
        let calling = async {
            let call = lease.begin_call().expect("a call may start");
            tokio::time::sleep(Duration::from_secs(3)).await; // ResolveCustomer
            drop(call);
            // Resolved: publishing commits the delivery.
            lease.mark_committed();
            tokio::time::sleep(Duration::from_millis(100)).await;
            published()
        };
        let (end, took) = grace_ends_during(&lease, calling).await;
        assert_eq!(end, Ok(Ok(published())));
        assert_eq!(took, Duration::from_millis(3_100));
        assert!(
            lease.begin_call().is_none(),
            "no call starts after the grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_fails_at_the_grace_end_is_handed_back_without_a_retry() {
        let lease = Lease::new("m".into(), "r".into());
        let retrying = async {
            let call = lease.begin_call().expect("a call may start");
            tokio::time::sleep(Duration::from_secs(1)).await; // throttled
            drop(call);
            tokio::time::sleep(Duration::from_secs(30)).await; // backoff, then another call
            let _ = lease.begin_call();
            published()
        };
        let (end, took) = grace_ends_during(&lease, retrying).await;
        assert_eq!(end, Ok(Err(true)), "settled for the shutdown's hand-back");
        assert_eq!(took, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_delivery_is_settled_at_once_and_a_committed_one_finishes() {
        let lease = Lease::new("m".into(), "r".into());
        let waiting = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            published()
        };
        let (end, took) = grace_ends_during(&lease, waiting).await;
        assert_eq!((end, took), (Ok(Err(true)), Duration::ZERO));

        let lease = Lease::new("m".into(), "r".into());
        let publishing = async {
            lease.mark_committed();
            tokio::time::sleep(Duration::from_secs(4)).await;
            published()
        };
        let (end, took) = grace_ends_during(&lease, publishing).await;
        assert_eq!((end, took), (Ok(Ok(published())), Duration::from_secs(4)));
    }
}
