//! A message's hold on its visibility while the worker works on it: a heartbeat that extends it
//! before it runs out, and a settle step that ends the heartbeat before the message's final
//! visibility change, so a late heartbeat can never undo a hand-back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

use crate::aws::sqs::Queue;
use crate::observe::metrics::Telemetry;
use crate::worker::events::Heartbeat;

#[derive(Debug)]
pub struct Lease {
    message_id: String,
    receipt_handle: String,
    /// `true` once the message is settled (deleted or handed back). The heartbeat holds this lock
    /// while it extends, and settling takes it, so the two never interleave.
    settled: Mutex<bool>,
    /// The message's outcome is being delivered (its event published, its dead-letter sent, or its
    /// delete submitted): from here on, handing it back would do the work twice.
    committed: AtomicBool,
}

impl Lease {
    pub fn new(message_id: String, receipt_handle: String) -> Self {
        Lease {
            message_id,
            receipt_handle,
            settled: Mutex::new(false),
            committed: AtomicBool::new(false),
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

    /// Ends the heartbeat. Hold the guard while making the final visibility change.
    pub async fn settle(&self) -> MutexGuard<'_, bool> {
        let mut guard = self.settled.lock().await;
        *guard = true;
        guard
    }

    /// Extends the visibility by `visibility` every third of it until the lease is settled.
    /// Never returns: run it beside the work and drop it when the work is done.
    pub async fn heartbeat(&self, queue: &Queue, visibility: Duration, telemetry: &Telemetry) {
        let every = (visibility / 3).max(Duration::from_millis(500));
        loop {
            tokio::time::sleep(every).await;
            let settled = self.settled.lock().await;
            if *settled {
                drop(settled);
                std::future::pending::<()>().await;
            }
            let result = queue
                .change_visibility(&self.receipt_handle, visibility)
                .await;
            Heartbeat {
                visibility,
                error: result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
            }
            .emit(telemetry);
        }
    }
}
