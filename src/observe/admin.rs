//! The health and metrics listener: `/healthz` (liveness: the receive loop made progress recently),
//! `/readyz` (queue reachable, not paused, not stopping), `/metrics` (Prometheus), and the client
//! side that `mp-resolver healthcheck` uses, so a container needs no curl. `intake` serves the same
//! endpoints from its own [`Probe`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::observe::metrics::{Liveness, Readiness, Telemetry};

/// What the admin listener asks the process it serves: the worker (`run`) and the fulfillment
/// endpoint (`intake`) answer the same three endpoints from their own state.
pub trait Probe: Send + Sync + 'static {
    fn liveness(&self) -> Liveness;
    fn readiness(&self) -> Readiness;
    /// The readiness in words, with a detail when there is one.
    fn readiness_detail(&self) -> String {
        self.readiness().as_str().to_owned()
    }
    /// The metrics in the OpenMetrics text format.
    fn render_metrics(&self) -> String;
}

impl Probe for Telemetry {
    fn liveness(&self) -> Liveness {
        self.health.liveness()
    }
    fn readiness(&self) -> Readiness {
        self.health.readiness()
    }
    fn readiness_detail(&self) -> String {
        self.health.readiness_detail()
    }
    fn render_metrics(&self) -> String {
        self.render()
    }
}

pub fn router<P: Probe>(probe: Arc<P>) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<P>))
        .route("/readyz", get(readyz::<P>))
        .route("/metrics", get(metrics::<P>))
        .with_state(probe)
}

pub async fn serve<P: Probe>(
    listener: TcpListener,
    probe: Arc<P>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(probe))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz<P: Probe>(State(p): State<Arc<P>>) -> Response {
    match p.liveness() {
        Liveness::Healthy => (StatusCode::OK, Json(json!({"status": "healthy"}))).into_response(),
        Liveness::Stalled { queue, since_secs } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "stalled", "queue": queue, "secondsWithoutProgress": since_secs}),
            ),
        )
            .into_response(),
        Liveness::TaskStopped { task } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "task_stopped", "task": task})),
        )
            .into_response(),
    }
}

async fn readyz<P: Probe>(State(p): State<Arc<P>>) -> Response {
    let readiness = p.readiness();
    let status = if readiness == Readiness::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": readiness == Readiness::Ready, "status": p.readiness_detail()})),
    )
        .into_response()
}

async fn metrics<P: Probe>(State(p): State<Arc<P>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        p.render_metrics(),
    )
        .into_response()
}

/// The address to ask for a listen address: an unspecified one (0.0.0.0) is asked on loopback.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        let loopback = match listen {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        SocketAddr::new(loopback, listen.port())
    } else {
        listen
    }
}

/// GETs `path` from the admin listener; returns the HTTP status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 3 s"))?
}
