//! Gathers single requests from all in-flight messages into batch calls (SQS `DeleteMessageBatch`,
//! SNS `PublishBatch`) and answers each caller for its own entry, since a batch can partly fail.
//!
//! A batch goes out when it is full (by count or by payload size) or when its first entry has
//! waited `linger`: batching cuts requests per token by up to ten at the cost of that much latency.
//! Up to `max_in_flight` batches are sent at once while the next one gathers: with one, a backlog's
//! pace was one batch of ten per round trip of the service, whatever else the worker could do
//! (BENCHMARKS.md). A FIFO topic's publishes keep one in flight, so one customer's events are
//! sent in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::aws::error::EntryFailure;

/// Why one submitted item did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Its entry failed (alone, or with the whole call).
    #[error(transparent)]
    Entry(#[from] EntryFailure),
    /// The batching task is gone; nothing was sent.
    #[error("the batcher stopped")]
    Stopped,
}

/// Where batches go.
pub trait BatchSink: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Payload size an item adds to its batch, for services that cap the batch's bytes.
    fn weight(&self, _item: &Self::Item) -> usize {
        0
    }

    /// Sends one batch; the results are per entry, in the order given (a call that failed as a
    /// whole fails every entry with its failure).
    fn send(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Vec<Result<Self::Output, EntryFailure>>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_items: usize,
    pub max_weight: usize,
    pub linger: Duration,
    /// Batches sent at once (at least one).
    pub max_in_flight: usize,
}

type Request<S> = (
    <S as BatchSink>::Item,
    oneshot::Sender<Result<<S as BatchSink>::Output, BatchError>>,
);

pub struct Batcher<S: BatchSink> {
    tx: mpsc::Sender<Request<S>>,
}

impl<S: BatchSink> Clone for Batcher<S> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<S: BatchSink> std::fmt::Debug for Batcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<S: BatchSink> Batcher<S> {
    /// Starts the batching task. It ends once every `Batcher` clone is dropped and the last batch
    /// is answered.
    pub fn spawn(sink: S, limits: BatchLimits) -> Self {
        Self::spawn_watched(sink, limits).0
    }

    /// [`spawn`](Self::spawn), also returning the batching task, for a supervisor to watch.
    pub fn spawn_watched(sink: S, limits: BatchLimits) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(sink, limits, rx));
        (Batcher { tx }, task)
    }

    /// Submits one item; resolves when its batch has been answered.
    pub async fn submit(&self, item: S::Item) -> Result<S::Output, BatchError> {
        let (done, result) = oneshot::channel();
        self.tx
            .send((item, done))
            .await
            .map_err(|_| BatchError::Stopped)?;
        result.await.unwrap_or(Err(BatchError::Stopped))
    }
}

async fn run<S: BatchSink>(sink: S, limits: BatchLimits, mut rx: mpsc::Receiver<Request<S>>) {
    let sink = Arc::new(sink);
    let mut sending = JoinSet::new();
    let mut carried: Option<Request<S>> = None;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => match rx.recv().await {
                Some(request) => request,
                None => break,
            },
        };
        let mut weight = sink.weight(&first.0);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + limits.linger;
        while batch.len() < limits.max_items {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => {
                    let w = sink.weight(&next.0);
                    if weight + w > limits.max_weight {
                        carried = Some(next);
                        break;
                    }
                    weight += w;
                    batch.push(next);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Answered batches leave the set; a full set is waited on before the next goes out.
        while sending.try_join_next().is_some() {}
        while sending.len() >= limits.max_in_flight.max(1) {
            sending.join_next().await;
        }
        sending.spawn(send_and_answer(sink.clone(), batch));
    }
    // Every batcher handle is gone: the batches still out are answered before the task ends.
    while sending.join_next().await.is_some() {}
}

/// Sends one batch and answers each caller for its own entry.
async fn send_and_answer<S: BatchSink>(sink: Arc<S>, batch: Vec<Request<S>>) {
    let (items, replies): (Vec<S::Item>, Vec<_>) = batch.into_iter().unzip();
    let mut results = sink.send(&items).await.into_iter();
    for reply in replies {
        let result = results.next().unwrap_or(Err(EntryFailure {
            code: "MissingFromResponse".into(),
            message: "the sink answered fewer entries than it was given".into(),
        }));
        let _ = reply.send(result.map_err(BatchError::Entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records batch sizes; fails items equal to 13.
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl BatchSink for Recorder {
        type Item = usize;
        type Output = usize;
        fn weight(&self, item: &usize) -> usize {
            *item
        }
        async fn send(&self, items: &[usize]) -> Vec<Result<usize, EntryFailure>> {
            self.0.lock().unwrap().push(items.len());
            items
                .iter()
                .map(|&i| {
                    if i == 13 {
                        Err(EntryFailure {
                            code: "unlucky".into(),
                            message: String::new(),
                        })
                    } else {
                        Ok(i * 2)
                    }
                })
                .collect()
        }
    }

    fn limits() -> BatchLimits {
        BatchLimits {
            max_items: 10,
            max_weight: 1_000,
            linger: Duration::from_millis(20),
            max_in_flight: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_batches_go_at_once_and_each_caller_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::spawn(Recorder(sizes.clone()), limits());
        let calls: Vec<_> = (1..=25)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        let mut results = Vec::new();
        for c in calls {
            results.push(c.await.unwrap());
        }
        assert_eq!(results[0], Ok(2));
        assert_eq!(
            results[12].as_ref().map_err(|e| e.to_string()),
            Err("unlucky".into()),
            "a partial failure reaches only its caller"
        );
        assert_eq!(results[24], Ok(50));
        assert_eq!(*sizes.lock().unwrap(), vec![10, 10, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn weight_caps_a_batch() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::spawn(Recorder(sizes.clone()), limits());
        let calls: Vec<_> = [600, 300, 300, 50]
            .into_iter()
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        for c in calls {
            assert!(c.await.unwrap().is_ok());
        }
        // 600 + 300 fits in 1000; the next 300 starts a new batch.
        assert_eq!(*sizes.lock().unwrap(), vec![2, 2]);
    }

    /// Takes 100 ms a batch and records the most batches it was sending at once.
    struct Slow {
        now: Arc<Mutex<usize>>,
        most: Arc<Mutex<usize>>,
    }

    impl BatchSink for Slow {
        type Item = usize;
        type Output = usize;
        async fn send(&self, items: &[usize]) -> Vec<Result<usize, EntryFailure>> {
            {
                let mut now = self.now.lock().unwrap();
                *now += 1;
                let mut most = self.most.lock().unwrap();
                *most = (*most).max(*now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            *self.now.lock().unwrap() -= 1;
            items.iter().map(|&i| Ok(i)).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn up_to_max_in_flight_batches_are_sent_at_once() {
        for (max_in_flight, expect_most, expect_ms) in [(1, 1, 600), (3, 3, 200)] {
            let most = Arc::new(Mutex::new(0));
            let b = Batcher::spawn(
                Slow {
                    now: Arc::new(Mutex::new(0)),
                    most: most.clone(),
                },
                BatchLimits {
                    max_in_flight,
                    ..limits()
                },
            );
            let started = tokio::time::Instant::now();
            let calls: Vec<_> = (0..60)
                .map(|i| {
                    let b = b.clone();
                    tokio::spawn(async move { b.submit(i).await })
                })
                .collect();
            for (i, c) in calls.into_iter().enumerate() {
                assert_eq!(c.await.unwrap(), Ok(i), "each caller gets its own answer");
            }
            assert_eq!(
                *most.lock().unwrap(),
                expect_most,
                "{max_in_flight} in flight"
            );
            assert_eq!(
                started.elapsed(),
                Duration::from_millis(expect_ms),
                "six batches of 100 ms, {max_in_flight} at a time"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_item_waits_only_the_linger() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::spawn(Recorder(sizes.clone()), limits());
        let started = tokio::time::Instant::now();
        assert_eq!(b.submit(4).await, Ok(8));
        assert_eq!(started.elapsed(), Duration::from_millis(20));
    }
}
