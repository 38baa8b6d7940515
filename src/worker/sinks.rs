//! Where the worker's batchers (`batch.rs`) send: deletes to a lane's queue as
//! `DeleteMessageBatch`, events to the topic as `PublishBatch`. The adapters in `aws/` make the
//! calls; this is only the seam between them and the generic batcher.

use crate::aws::error::EntryFailure;
use crate::aws::sns::{Publishable, Publisher, TopicEvent};
use crate::aws::sqs::{DeleteEntry, Queue};
use crate::worker::batch::BatchSink;

/// Deletes go out through `DeleteMessageBatch`.
#[derive(Debug, Clone)]
pub struct DeleteSink(pub Queue);

impl BatchSink for DeleteSink {
    type Item = DeleteEntry;
    type Output = ();

    async fn send(&self, items: &[DeleteEntry]) -> Vec<Result<(), EntryFailure>> {
        self.0.delete_batch(items).await
    }
}

/// Events go out through `PublishBatch`.
#[derive(Debug, Clone)]
pub struct PublishSink(pub Publisher);

impl BatchSink for PublishSink {
    type Item = TopicEvent;
    type Output = String;

    fn weight(&self, event: &TopicEvent) -> usize {
        // The message plus its attributes' names, types and values, with room to spare.
        event.to_json().len() + 256
    }

    async fn send(&self, events: &[TopicEvent]) -> Vec<Result<String, EntryFailure>> {
        match self.0.publish_batch(events).await {
            Ok(results) => results,
            Err(error) => events
                .iter()
                .map(|_| Err(EntryFailure::whole_call(&error.failure)))
                .collect(),
        }
    }
}
