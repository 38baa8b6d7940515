//! HTTP: the API endpoints (awsJson 1.1 at `POST /`, operations told apart by `X-Amz-Target` as on
//! AWS; RPC v2 CBOR at `POST /service/<Service>/operation/<Operation>`) and the `/emulator/*`
//! control endpoints.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::auth;
use super::engine::{CallContext, Engine, SharedEngine};
use super::entitlements::CustomerEntitlements;
use super::entitlements_wire::{
    self, ENTITLEMENT_SERVICE, GET_ENTITLEMENTS, GET_ENTITLEMENTS_TARGET,
};
use super::metering::Subscriber;
use super::metering_wire::{self, BATCH_METER_USAGE_TARGET};
use super::protocol::Protocol;
use super::settings::SettingsPatch;
use super::token::fingerprint;
use super::wire::{self, ApiError, MAX_BODY_BYTES};

pub fn router(engine: SharedEngine) -> Router {
    Router::new()
        .route("/", post(api))
        .route("/service/{service}/operation/{operation}", post(cbor_api))
        .route("/emulator/config", get(get_config).post(post_config))
        .route("/emulator/entitlements", post(post_entitlements))
        .route(
            "/emulator/subscribers",
            get(get_subscribers).post(post_subscribers),
        )
        .route("/emulator/metering", get(get_metering))
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

/// An awsJson 1.1 request: the operation is named by `X-Amz-Target`.
async fn api(State(engine): State<SharedEngine>, headers: HeaderMap, body: Body) -> Response {
    let operation = match headers.get(wire::TARGET_HEADER).map(HeaderValue::to_str) {
        Some(Ok(wire::RESOLVE_CUSTOMER_TARGET)) => Some(Operation::ResolveCustomer),
        Some(Ok(GET_ENTITLEMENTS_TARGET)) => Some(Operation::GetEntitlements),
        Some(Ok(BATCH_METER_USAGE_TARGET)) => Some(Operation::BatchMeterUsage),
        _ => None,
    };
    serve_call(&engine, Protocol::AwsJson, operation, &headers, body).await
}

/// A Smithy RPC v2 CBOR request: the operation is named by the path. Only the Entitlement Service
/// speaks it; the Metering Service is awsJson only.
async fn cbor_api(
    State(engine): State<SharedEngine>,
    Path((service, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let operation = (service == ENTITLEMENT_SERVICE && operation == GET_ENTITLEMENTS)
        .then_some(Operation::GetEntitlements);
    serve_call(&engine, Protocol::RpcV2Cbor, operation, &headers, body).await
}

enum Operation {
    ResolveCustomer,
    GetEntitlements,
    BatchMeterUsage,
}

/// Authentication (under `strictAuth`), the body, then the operation. Requests refused before an
/// operation runs are counted as `rejected`.
async fn serve_call(
    engine: &SharedEngine,
    protocol: Protocol,
    operation: Option<Operation>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let admitted = admit(engine, protocol, operation, headers, body).await;
    match admitted {
        Ok((Operation::ResolveCustomer, request)) => resolve_customer(engine, request).await,
        Ok((Operation::GetEntitlements, request)) => {
            get_entitlements(engine, protocol, request).await
        }
        Ok((Operation::BatchMeterUsage, request)) => batch_meter_usage(engine, request).await,
        Err(error) => {
            engine.with(|e| e.reject());
            protocol.respond::<()>(Err(error))
        }
    }
}

async fn admit(
    engine: &SharedEngine,
    protocol: Protocol,
    operation: Option<Operation>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Operation, serde_json::Value), ApiError> {
    if engine.with(|e| e.settings().strict_auth) {
        auth::check(headers)?;
    }
    let operation = operation.ok_or_else(ApiError::unknown_operation)?;
    let body = read_body(body).await?;
    Ok((operation, protocol.decode(&body)?))
}

/// The whole body, or an error the SDKs can parse when it is too large to be a real request.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::too_large())
        }
        Err(_) => Err(wire::serialization_error(
            "The request body could not be read",
        )),
    }
}

async fn latency(engine: &SharedEngine) {
    let latency = engine.with(|e| e.settings().latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
}

fn call_context() -> CallContext {
    CallContext {
        now: Instant::now(),
        unix_now: unix_now(),
        roll: rand::random::<f64>(),
    }
}

/// Judges a parsed request the moment it arrived, then answers after the configured latency; a
/// request that did not parse is counted as rejected and answered at once.
///
/// Judging first is what AWS does: a call is decided when it reaches the service, and a client
/// that gives up waiting (a timeout, a dropped connection) has still spent a single-use token or
/// metered its records. Nothing after the judgement awaits anything but the latency, so a
/// cancelled handler cannot undo it.
async fn run_operation<Q, T: Serialize>(
    engine: &SharedEngine,
    protocol: Protocol,
    request: Result<Q, ApiError>,
    judge: impl FnOnce(&mut Engine, &Q, CallContext) -> Result<T, ApiError>,
) -> Response {
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            engine.with(|e| e.reject());
            return protocol.respond::<()>(Err(error));
        }
    };
    let ctx = call_context();
    let answer = engine.with(|e| judge(e, &request, ctx));
    latency(engine).await;
    protocol.respond(answer)
}

async fn resolve_customer(engine: &SharedEngine, request: serde_json::Value) -> Response {
    let token = wire::token_from(request);
    run_operation(engine, Protocol::AwsJson, token, |e, token, ctx| {
        let outcome = e.call(token, ctx);
        tracing::debug!(
            token = %fingerprint(token),
            outcome = outcome.label(),
            "emulated ResolveCustomer"
        );
        wire::respond(outcome)
    })
    .await
}

async fn get_entitlements(
    engine: &SharedEngine,
    protocol: Protocol,
    request: serde_json::Value,
) -> Response {
    let query = entitlements_wire::query_from(request);
    run_operation(engine, protocol, query, |e, query, ctx| {
        let result = e.get_entitlements(query, ctx);
        tracing::debug!(
            product = %query.product_code,
            ok = result.is_ok(),
            "emulated GetEntitlements"
        );
        result.map_err(entitlements_wire::failure)
    })
    .await
}

async fn batch_meter_usage(engine: &SharedEngine, request: serde_json::Value) -> Response {
    let request = metering_wire::request_from(request);
    run_operation(engine, Protocol::AwsJson, request, |e, request, ctx| {
        let result = e.batch_meter_usage(request, ctx);
        tracing::debug!(
            product = request.product_code.as_deref().unwrap_or("(by license)"),
            records = request.records.len(),
            ok = result.is_ok(),
            "emulated BatchMeterUsage"
        );
        result
            .map(|verdicts| metering_wire::respond(request, verdicts))
            .map_err(metering_wire::failure)
    })
    .await
}

fn unix_now() -> i64 {
    // A clock before 1970 is treated as 1970: tokens then simply do not expire early.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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

/// Replaces one customer's entitlements for one product (see [`CustomerEntitlements`]).
async fn post_entitlements(State(engine): State<SharedEngine>, body: Bytes) -> Response {
    let set: CustomerEntitlements = match serde_json::from_slice(&body) {
        Ok(set) => set,
        Err(e) => return bad_request(format!("invalid entitlements: {e}")),
    };
    match engine.with(|e| e.set_entitlements(set.clone())) {
        Ok(()) => Json(set).into_response(),
        Err(error) => bad_request(error.to_string()),
    }
}

/// Body of `POST /emulator/subscribers`: a [`Subscriber`], and `subscribed: false` to remove every
/// subscription of the product matching the identifiers given.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubscriberChange {
    product_code: String,
    #[serde(rename = "customerAWSAccountId", default)]
    customer_aws_account_id: Option<String>,
    #[serde(default)]
    customer_identifier: Option<String>,
    #[serde(default)]
    license_arn: Option<String>,
    #[serde(default = "subscribed")]
    subscribed: bool,
}

fn subscribed() -> bool {
    true
}

async fn post_subscribers(State(engine): State<SharedEngine>, body: Bytes) -> Response {
    let change: SubscriberChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(e) => return bad_request(format!("invalid subscriber: {e}")),
    };
    let subscriber = Subscriber {
        product_code: change.product_code,
        customer_aws_account_id: change.customer_aws_account_id,
        customer_identifier: change.customer_identifier,
        license_arn: change.license_arn,
    };
    let changed = engine.with(|e| {
        e.subscribers_mut()
            .change(subscriber, change.subscribed)
            .map(|()| e.subscribers_mut().list())
    });
    match changed {
        Ok(list) => Json(list).into_response(),
        Err(error) => bad_request(error.to_string()),
    }
}

async fn get_subscribers(State(engine): State<SharedEngine>) -> Response {
    Json(engine.with(|e| e.subscribers_mut().list())).into_response()
}

/// The records BatchMeterUsage accepted, in the order it accepted them.
async fn get_metering(State(engine): State<SharedEngine>) -> Response {
    Json(engine.with(|e| e.metered_records().to_vec())).into_response()
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
