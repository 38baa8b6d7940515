//! HTTP: the `ResolveCustomer` endpoint at `POST /` and the `/emulator/*` control endpoints.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::engine::{CallContext, SharedEngine};
use super::settings::SettingsPatch;
use super::token::fingerprint;
use super::wire::{self, ApiError};

pub fn router(engine: SharedEngine) -> Router {
    Router::new()
        .route("/", post(resolve_customer))
        .route("/emulator/config", get(get_config).post(post_config))
        .route("/emulator/stats", get(get_stats))
        .route("/emulator/reset", post(reset))
        .with_state(engine)
}

pub async fn run(
    listener: TcpListener,
    engine: SharedEngine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn resolve_customer(
    State(engine): State<SharedEngine>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get(wire::TARGET_HEADER)
        .and_then(|v| v.to_str().ok());
    if target != Some(wire::RESOLVE_CUSTOMER_TARGET) {
        return aws_json(Err(ApiError::unknown_operation()));
    }
    let token = match wire::parse_request(&body) {
        Ok(token) => token,
        Err(error) => return aws_json(Err(error)),
    };

    let latency = engine.with(|e| e.settings().latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let ctx = CallContext {
        now: Instant::now(),
        unix_now: unix_now(),
        roll: rand::random::<f64>(),
    };
    let outcome = engine.with(|e| e.call(&token, ctx));
    tracing::debug!(
        token = %fingerprint(&token),
        outcome = outcome.label(),
        "emulated ResolveCustomer"
    );
    aws_json(wire::respond(outcome))
}

fn unix_now() -> i64 {
    // A clock before 1970 is treated as 1970: tokens then simply do not expire early.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An awsJson 1.1 response, with a request id as the SDK reports it in errors.
fn aws_json(result: Result<wire::ResolveCustomerResponse, ApiError>) -> Response {
    let (status, body) = match result {
        Ok(output) => (StatusCode::OK, serde_json::to_value(output)),
        Err(error) => (error.status, Ok(error.body())),
    };
    let mut response = match body {
        Ok(body) => (status, Json(body)).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::CONTENT_TYPE),
    );
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert(wire::REQUEST_ID_HEADER, id);
    }
    response
}

/// A random id in UUID layout, like the real service's.
fn request_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

async fn get_config(State(engine): State<SharedEngine>) -> Response {
    Json(engine.with(|e| e.settings().clone())).into_response()
}

async fn post_config(State(engine): State<SharedEngine>, body: Bytes) -> Response {
    let patch = match SettingsPatch::parse(&body) {
        Ok(patch) => patch,
        Err(message) => return bad_request(message),
    };
    // Apply inside one lock so concurrent updates of different fields do not overwrite each other.
    let applied = engine.with(|e| {
        let next = patch.apply_to(e.settings())?;
        e.set_settings(next.clone(), Instant::now());
        Ok::<_, String>(next)
    });
    match applied {
        Ok(settings) => {
            tracing::info!(?settings, "emulator reconfigured");
            Json(settings).into_response()
        }
        Err(message) => bad_request(message),
    }
}

async fn get_stats(State(engine): State<SharedEngine>) -> Response {
    Json(engine.with(|e| e.stats())).into_response()
}

async fn reset(State(engine): State<SharedEngine>) -> Response {
    Json(engine.with(|e| {
        e.reset(Instant::now());
        e.stats()
    }))
    .into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}
