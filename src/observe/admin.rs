//! The health and metrics listener: `/healthz` (liveness: the receive loop made progress recently),
//! `/readyz` (queue reachable, not paused, not stopping), `/metrics` (Prometheus), and the client
//! side that `mp-resolver healthcheck` uses, so a container needs no curl.

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

pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(telemetry)
}

pub async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(telemetry))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(t): State<Arc<Telemetry>>) -> Response {
    match t.health.liveness() {
        Liveness::Healthy => (StatusCode::OK, Json(json!({"status": "healthy"}))).into_response(),
        Liveness::Stalled { since_secs } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stalled", "secondsWithoutProgress": since_secs})),
        )
            .into_response(),
        Liveness::TaskStopped { task } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "task_stopped", "task": task})),
        )
            .into_response(),
    }
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> Response {
    let readiness = t.health.readiness();
    let status = if readiness == Readiness::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({"ready": readiness == Readiness::Ready, "status": t.health.readiness_detail()}),
        ),
    )
        .into_response()
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.render(),
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
