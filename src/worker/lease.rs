//! A message's hold on its visibility while the worker works on it: a heartbeat that extends it
//! before it runs out, a settle step that ends the heartbeat before the message's final
//! visibility change (so a late heartbeat can never undo a hand-back), and what shutdown needs to
//! know about the delivery: whether its outcome is being delivered, and whether a call AWS may
//! act on is in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Mutex, MutexGuard};
use tokio::time::MissedTickBehavior;

use crate::aws::sqs::Queue;
use crate::observe::metrics::Telemetry;
use crate::worker::events::Heartbeat;

#[derive(Debug)]
pub struct Lease {
    message_id: String,
    receipt_handle: String,
    /// `true` once the message is settled (deleted or handed back). The heartbeat holds this lock
    /// while it extends, and settling takes it, so the two never interleave; a heartbeat call is
    /// bounded ([`heartbeat_call_timeout`]), so settling never waits longer than that for it.
    settled: Mutex<bool>,
    /// The message's outcome is being delivered (its event published, its dead-letter sent, or its
    /// delete submitted): from here on, handing it back would do the work twice.
    committed: AtomicBool,
    /// A call whose effect AWS may keep even if the worker gives up on it (ResolveCustomer spends
    /// a single-use token) is in flight.
    calling: watch::Sender<bool>,
    /// Shutdown's grace period ended: no such call starts any more.
    winding_down: AtomicBool,
}

/// How long one heartbeat call may take before it is given up: a sixth of the visibility timeout,
/// so a beat (every third of it) that hangs is over well before the next one is due, and one lost
/// beat still leaves the next one time to land before the visibility runs out. Also the longest
/// settling waits for a beat in flight.
pub fn heartbeat_call_timeout(visibility: Duration) -> Duration {
    (visibility / 6).max(Duration::from_millis(250))
}

/// A call in flight, from [`Lease::begin_call`]; its end is announced when it drops.
pub struct CallInFlight<'a>(&'a Lease);

impl Drop for CallInFlight<'_> {
    fn drop(&mut self) {
        self.0.calling.send_replace(false);
    }
}

impl Lease {
    pub fn new(message_id: String, receipt_handle: String) -> Self {
        Lease {
            message_id,
            receipt_handle,
            settled: Mutex::new(false),
            committed: AtomicBool::new(false),
            calling: watch::Sender::new(false),
            winding_down: AtomicBool::new(false),
        }
    }

    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    pub fn receipt_handle(&self) -> &str {
        &self.receipt_handle
    }

    /// The message's outcome is being delivered; shutdown lets such messages finish rather than
    /// handing them back (which would publish or dead-letter them twice).
    pub fn mark_committed(&self) {
        self.committed.store(true, Ordering::Relaxed);
    }

    pub fn is_committed(&self) -> bool {
        self.committed.load(Ordering::Relaxed)
    }

    /// A call AWS may act on is about to start; `None` once the grace period is over (the delivery
    /// is about to be handed back, so no such call may start).
    pub fn begin_call(&self) -> Option<CallInFlight<'_>> {
        if self.is_winding_down() {
            return None;
        }
        self.calling.send_replace(true);
        Some(CallInFlight(self))
    }

    pub fn is_calling(&self) -> bool {
        *self.calling.borrow()
    }

    /// Completes once no call is in flight.
    pub async fn call_ended(&self) {
        let mut calling = self.calling.subscribe();
        drop(calling.wait_for(|c| !*c).await);
    }

    /// The grace period is over: no new call starts.
    pub fn wind_down(&self) {
        self.winding_down.store(true, Ordering::Relaxed);
    }

    pub fn is_winding_down(&self) -> bool {
        self.winding_down.load(Ordering::Relaxed)
    }

    /// Ends the heartbeat, waiting at most one [`heartbeat_call_timeout`] for a beat in flight.
    /// Hold the guard while making the final visibility change.
    pub async fn settle(&self) -> MutexGuard<'_, bool> {
        let mut guard = self.settled.lock().await;
        *guard = true;
        guard
    }

    /// Settles for a hand-back, unless the delivery committed to its outcome or settled itself
    /// meanwhile (then `None`: its own work finishes it): shutdown hands back only what has not
    /// started to deliver its outcome.
    pub async fn settle_uncommitted(&self) -> Option<MutexGuard<'_, bool>> {
        let mut guard = self.settled.lock().await;
        if self.is_committed() || *guard {
            return None;
        }
        *guard = true;
        Some(guard)
    }

    /// Extends the visibility by `visibility` every third of it until the lease is settled. Beats
    /// keep their schedule whatever one of them took, and each gives up after
    /// [`heartbeat_call_timeout`]: a hung ChangeMessageVisibility (with the SDK's own attempt
    /// timeout and retries it could take longer than the visibility itself) must neither let the
    /// message reappear while it is worked on nor hold up settling.
    /// Never returns: run it beside the work and drop it when the work is done.
    pub async fn heartbeat(&self, queue: &Queue, visibility: Duration, telemetry: &Telemetry) {
        let every = (visibility / 3).max(Duration::from_millis(500));
        let bound = heartbeat_call_timeout(visibility);
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            beats.tick().await;
            let settled = self.settled.lock().await;
            if *settled {
                drop(settled);
                return std::future::pending().await;
            }
            // Given up after `bound`, the call is cancelled before settling may go on: the final
            // visibility change is only sent after it, on the same path.
            let result = tokio::time::timeout(
                bound,
                queue.change_visibility(&self.receipt_handle, visibility),
            )
            .await;
            drop(settled);
            let error = match &result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "ChangeMessageVisibility did not answer within {} ms; given up",
                    bound.as_millis()
                )),
            };
            Heartbeat {
                visibility,
                error: error.as_ref().map(|e| e as &dyn std::fmt::Display),
            }
            .emit(telemetry);
        }
    }
}
