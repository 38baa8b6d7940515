//! Batches deletes from all in-flight messages into `DeleteMessageBatch` calls of up to ten, and
//! tells each caller whether its own entry was deleted (a batch can partly fail).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::queue::{DeleteEntry, Queue};

/// SQS's limit for one `DeleteMessageBatch`.
const MAX_BATCH: usize = 10;

type Request = (DeleteEntry, oneshot::Sender<Result<(), String>>);

#[derive(Debug, Clone)]
pub struct Deleter {
    tx: mpsc::Sender<Request>,
}

impl Deleter {
    /// Starts the batching task. It ends once every `Deleter` clone is dropped and the last
    /// batch is sent.
    pub fn spawn(queue: Queue, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(queue, linger, rx));
        Deleter { tx }
    }

    /// Deletes one message; resolves when its batch has been answered.
    pub async fn delete(&self, entry: DeleteEntry) -> Result<(), String> {
        let (done, result) = oneshot::channel();
        self.tx
            .send((entry, done))
            .await
            .map_err(|_| "delete batcher stopped".to_owned())?;
        result
            .await
            .unwrap_or_else(|_| Err("delete batcher stopped".to_owned()))
    }
}

async fn run(queue: Queue, linger: Duration, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let entries: Vec<DeleteEntry> = batch.iter().map(|(e, _)| e.clone()).collect();
        match queue.delete_batch(&entries).await {
            Ok(results) => {
                for ((entry, done), result) in batch.into_iter().zip(results) {
                    if let Err(problem) = &result {
                        tracing::warn!(message_id = %entry.message_id, %problem,
                            "delete failed; the message will come back and be recognized");
                    }
                    let _ = done.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, entries = entries.len(), "DeleteMessageBatch failed");
                for (_, done) in batch {
                    let _ = done.send(Err(error.to_string()));
                }
            }
        }
    }
}
