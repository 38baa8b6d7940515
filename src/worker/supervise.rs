//! The worker's background tasks, each watched: the delete and publish batchers, the start-up
//! reachability check, the pause probe and the admin listener. A task the process cannot work
//! without that stops (or panics) while the process is not stopping turns `/healthz` unhealthy, so
//! the orchestrator replaces the process instead of every message failing quietly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};

use crate::aws::metering::{CallResult, FailureKind};
use crate::observe::admin;
use crate::worker::events::{PauseChanged, PauseKind};
use crate::worker::pause::{ApiPause, PauseChange};
use crate::worker::{lock, Worker};

/// What a watched task's end means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Runs for the life of the process: ending early is a failure.
    Forever,
    /// Ends when its job is done: only a panic is a failure.
    Finishes,
}

impl Worker {
    /// Watches `task`: when it ends against `expect` while the process is not stopping, liveness
    /// fails naming it.
    pub(super) fn supervise(&self, name: &'static str, expect: Expect, task: JoinHandle<()>) {
        lock(&self.background).push((name, task.abort_handle()));
        let telemetry = self.telemetry.clone();
        let stopping = self.stopping.subscribe();
        tokio::spawn(async move {
            let ended = task.await;
            let failed = match ended {
                Err(e) => e.is_panic() || expect == Expect::Forever,
                Ok(()) => expect == Expect::Forever,
            };
            if failed && !*stopping.borrow() {
                tracing::error!(
                    task = name,
                    "a background task stopped: reporting unhealthy"
                );
                telemetry.health.task_stopped(name);
            }
        });
    }

    /// Stops a background task by name, as a bug or a crash would; for tests of the supervision.
    /// `false` when no task has that name.
    #[doc(hidden)]
    pub fn abort_background_task(&self, name: &str) -> bool {
        let tasks = lock(&self.background);
        let found: Vec<&AbortHandle> = tasks
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, h)| h)
            .collect();
        found.iter().for_each(|h| h.abort());
        !found.is_empty()
    }

    /// Readiness from the first second: asks the queue, the dead-letter queue and the topic at
    /// start, so a healthy process is ready at once (not after its first long poll) and one that
    /// cannot reach them says which. Retries with backoff until all answer.
    pub(super) fn check_dependencies(self: &Arc<Self>) {
        let worker = self.clone();
        let task = tokio::spawn(async move {
            let mut delays = ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(30))
                .without_max_times()
                .build();
            loop {
                let mut queues = None;
                for lane in &worker.lanes {
                    if let Err((what, e)) = lane.queue.check().await {
                        queues = Some(format!(
                            "{} {what} not reachable: {e}",
                            lane.pipeline.as_str()
                        ));
                        break;
                    }
                }
                let problem = match queues {
                    None => worker
                        .publisher
                        .check()
                        .await
                        .err()
                        .map(|e| format!("topic not reachable: {e}")),
                    Some(problem) => Some(problem),
                };
                let done = problem.is_none();
                if let Some(detail) = &problem {
                    tracing::warn!(%detail, "start-up check: a dependency does not answer");
                }
                worker.telemetry.health.set_unreachable(problem);
                if done {
                    return;
                }
                let wait = delays.next().unwrap_or(Duration::from_secs(30));
                tokio::time::sleep(wait).await;
            }
        });
        self.supervise("startup_check", Expect::Finishes, task);
    }

    /// The API is switched off: stop resolving everywhere, report not ready, and probe with
    /// backoff until it answers again.
    pub(super) fn pause_resolving(&self) {
        let resolver = self.resolver.clone();
        self.pause_until(PauseKind::Resolve, self.pause.clone(), move || {
            let resolver = resolver.clone();
            async move {
                match resolver.probe().await {
                    CallResult::Failed(f)
                        if matches!(f.kind, FailureKind::Disabled | FailureKind::Transient) =>
                    {
                        Err(f.kind.as_str().to_owned())
                    }
                    _ => Ok(()),
                }
            }
        });
    }

    /// The store does not answer: stop taking tokens (they wait on the queue, never
    /// dead-lettered), report not ready, and probe the store with backoff until it answers.
    pub(super) fn pause_for_store(&self) {
        let store = self.tokens.store().clone();
        self.pause_until(PauseKind::Store, self.store_pause.clone(), move || {
            let store = store.clone();
            async move { store.probe().await.map_err(|e| e.to_string()) }
        });
    }

    /// One pause mechanism for both: pause, probe with `[pause]`'s backoff until `probe` says the
    /// dependency answers, then resume.
    fn pause_until<F, Fut>(&self, kind: PauseKind, pause: Arc<ApiPause>, probe: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        if pause.pause() != PauseChange::Started {
            return;
        }
        PauseChanged { kind, paused: true }.emit(&self.telemetry);
        let telemetry = self.telemetry.clone();
        let settings = self.settings.pause.clone();
        let task = tokio::spawn(async move {
            let mut delays = ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(settings.probe_initial_secs))
                .with_max_delay(Duration::from_secs(settings.probe_max_secs))
                .without_max_times()
                .build();
            loop {
                let wait = delays
                    .next()
                    .unwrap_or(Duration::from_secs(settings.probe_max_secs));
                tokio::time::sleep(wait).await;
                match probe().await {
                    Err(failure) => tracing::warn!(
                        dependency = kind.as_str(),
                        failure = %failure,
                        next_probe_in_secs = wait.as_secs(),
                        "still unavailable; staying paused"
                    ),
                    Ok(()) => {
                        PauseChanged {
                            kind,
                            paused: false,
                        }
                        .emit(&telemetry);
                        pause.resume();
                        return;
                    }
                }
            }
        });
        self.supervise(kind.probe_task(), Expect::Finishes, task);
    }

    /// Runs the worker with its admin listener (`/healthz`, `/readyz`, `/metrics`) until
    /// `shutdown` completes and the worker has drained; the listener answers (not ready, stopping)
    /// until the very end.
    pub async fn run_with_admin(
        self: Arc<Self>,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let (stop_admin, admin_stop) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(admin::serve(admin, self.telemetry.clone(), async {
            let _ = admin_stop.await;
        }));
        let listener = tokio::spawn(async move {
            let _ = done_tx.send(server.await);
        });
        self.supervise("admin_listener", Expect::Forever, listener);
        self.clone().run(shutdown).await;
        let _ = stop_admin.send(());
        match done_rx.await {
            Ok(Ok(served)) => served,
            Ok(Err(e)) => Err(std::io::Error::other(format!("admin listener task: {e}"))),
            Err(_) => Err(std::io::Error::other("admin listener task ended")),
        }
    }
}
