//! The queues one worker consumes: the token queue, and the lifecycle queue when
//! `lifecycle_queue_url` is set. Each is a lane with its own queue, dead-letter queue, delete
//! batcher, in-flight registry and receive slots; one receive loop (`run.rs`) serves any lane, and
//! only the per-message step differs by [`Pipeline`].

use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::aws::sqs::Queue;
use crate::worker::batch::{BatchLimits, Batcher};
use crate::worker::inflight::InFlight;
use crate::worker::sinks::DeleteSink;

/// What a lane's messages are and how each one is worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// Registration tokens: ResolveCustomer, then the resolved-customer event (`process`).
    Tokens,
    /// Agreement, license and legacy SNS notifications: GetEntitlements when the notification
    /// needs them, then the lifecycle event (`lifecycle.rs`).
    Lifecycle,
    /// Usage events from the seller's application: each added to its hour in the store
    /// (`usage.rs`); the hours are metered apart from the messages.
    Usage,
}

impl Pipeline {
    pub fn as_str(self) -> &'static str {
        match self {
            Pipeline::Tokens => "tokens",
            Pipeline::Lifecycle => "lifecycle",
            Pipeline::Usage => "usage",
        }
    }

    /// Whether the lane stops receiving while ResolveCustomer is paused (DisabledApiException):
    /// only the token lane calls it.
    pub fn follows_resolve_pause(self) -> bool {
        self == Pipeline::Tokens
    }
}

pub struct Lane {
    pub pipeline: Pipeline,
    pub queue: Queue,
    pub deletes: Batcher<DeleteSink>,
    /// The deliveries being worked on.
    pub in_flight: InFlight,
    /// Receipt handles the unfinished deliveries left for the shutdown hand-back.
    pub shutdown_hand_backs: Mutex<Vec<String>>,
}

impl Lane {
    /// Starts the lane's delete batcher; its task is for the caller to supervise.
    pub fn spawn(pipeline: Pipeline, queue: Queue, linger: Duration) -> (Lane, JoinHandle<()>) {
        let (deletes, task) = Batcher::spawn_watched(
            DeleteSink(queue.clone()),
            BatchLimits {
                max_items: 10,
                max_weight: usize::MAX,
                linger,
                max_in_flight: crate::worker::BATCHES_IN_FLIGHT,
            },
        );
        let lane = Lane {
            pipeline,
            queue,
            deletes,
            in_flight: InFlight::default(),
            shutdown_hand_backs: Mutex::new(Vec::new()),
        };
        (lane, task)
    }

    /// The name of the lane's delete batcher among the watched background tasks.
    pub fn delete_batcher_name(&self) -> &'static str {
        match self.pipeline {
            Pipeline::Tokens => "delete_batcher",
            Pipeline::Lifecycle => "lifecycle_delete_batcher",
            Pipeline::Usage => "usage_delete_batcher",
        }
    }
}
