//! The fulfillment listener's HTTP/1.1 server: hyper's own connection builder with a header read
//! deadline, and a shutdown whose drain is bounded. `axum::serve` sets neither, so a client that
//! trickles its headers, or leaves a keep-alive connection idle, holds a connection for ever, and
//! shutdown waits for all of them.
//!
//! - **Headers**: hyper's `header_read_timeout` closes a connection whose request head is not in
//!   within `intake.header_timeout_ms`. hyper restarts it after every answer, so it also bounds
//!   an idle keep-alive connection.
//! - **Bodies**: read by the handler under `intake.body_timeout_ms` (see `Intake::take`).
//! - **Shutdown**: stop accepting, ask every connection to close after its request under way
//!   (idle ones close at once), and after `intake.shutdown_grace_ms` close the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` (with the peer as `ConnectInfo<SocketAddr>`) until `shutdown`
/// completes, then drains for at most `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine; pause so a full table is not spun on.
                    tracing::warn!(error = %e, "intake could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Finished connections leave the set here, so it holds the open ones only.
        while connections.try_join_next().is_some() {}
        let Ok(service) = make_service.clone().oneshot(peer).await;
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let watched = graceful.watch(connection);
        connections.spawn(async move {
            // A client that goes away or times out ends its connection; nothing to report.
            let _ = watched.await;
        });
    }
    drop(listener);
    let open = connections.len();
    let started = tokio::time::Instant::now();
    tokio::select! {
        () = graceful.shutdown() => {
            tracing::info!(connections = open, took_ms = started.elapsed().as_millis() as u64, "intake drained");
        }
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                connections = connections.len(),
                grace_ms = limits.shutdown_grace.as_millis() as u64,
                "intake.shutdown_grace_ms passed with requests under way; closing their connections"
            );
        }
    }
    connections.shutdown().await;
    Ok(())
}
