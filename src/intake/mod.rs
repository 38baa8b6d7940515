//! `mp-resolver intake`: the endpoint behind the product's fulfillment URL. AWS Marketplace POSTs
//! the buyer's browser here with the registration token in a form field; intake checks it with
//! the worker's own bounds, puts it on the token queue in the documented JSON form with the
//! `signupId` bound to its fingerprint (`signups`), and answers `303 See Other` to the seller's
//! sign-up page with that `signupId`. The token never leaves the request body and the queue: not in a URL, a page, a log line or a metric.

pub mod form;
pub mod origin;
pub mod pages;
pub mod ratelimit;
pub mod redirect;
pub mod server;
pub mod signups;
pub mod telemetry;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tokio::time::Instant;
use url::Url;

use crate::aws::error::Problem;
use crate::aws::sqs;
use crate::config::{ConfigError, IntakeSettings, Settings};
use crate::contract::Fingerprint;
use crate::observe::admin;
use crate::ops::enqueue::{prepare, Extras};
use form::{Refusal, Submission, OFFER_TYPE_CONTEXT_KEY};
use origin::OriginPattern;
use ratelimit::ClientLimiter;
use signups::{InProcessSignupIds, SignupIds};
use telemetry::IntakeTelemetry;

/// A token that is on the queue, and where the buyer goes next.
#[derive(Debug)]
struct Accepted {
    location: String,
    signup_id: String,
    event_id: Fingerprint,
}

pub struct Intake {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    registration: Url,
    settings: IntakeSettings,
    allowed_origins: Vec<OriginPattern>,
    limiter: ClientLimiter,
    /// One permit per POST waiting for the queue (its body read): past `max_in_flight`, answer
    /// 503 at once.
    slots: Semaphore,
    /// The signupId each token is bound to. A browser that resubmits the same token (a double
    /// click, the back button, a retry after a lost answer) gets the same id again: the worker
    /// publishes one event per token, and that event must carry the id the buyer's final page has.
    signup_ids: Arc<dyn SignupIds>,
    telemetry: Arc<IntakeTelemetry>,
}

impl Intake {
    /// `settings.intake.registration_url` must be set (see `ops::load::INTAKE`). `sqs` gets
    /// intake's own timeouts (`aws::clients::for_intake`); signupIds are bound in this process.
    pub fn new(sqs: aws_sdk_sqs::Client, settings: &Settings) -> Result<Arc<Self>, ConfigError> {
        let ids = Arc::new(InProcessSignupIds::new(REMEMBERED_SIGNUPS));
        Self::with_signup_ids(sqs, settings, ids)
    }

    /// Like [`Intake::new`], with the signupIds bound by `signup_ids` (e.g. a store shared by
    /// every intake task).
    pub fn with_signup_ids(
        sqs: aws_sdk_sqs::Client,
        settings: &Settings,
        signup_ids: Arc<dyn SignupIds>,
    ) -> Result<Arc<Self>, ConfigError> {
        let registration = Url::parse(settings.intake.registration_url.trim()).map_err(|e| {
            ConfigError::Invalid {
                key: "intake.registration_url".into(),
                env: "MPR_INTAKE__REGISTRATION_URL".into(),
                problem: format!("is required for `mp-resolver intake`: an absolute URL ({e})"),
            }
        })?;
        Ok(Arc::new(Intake {
            sqs: crate::aws::clients::for_intake(&sqs, &settings.intake),
            queue_url: settings.queue_url.clone(),
            registration,
            settings: settings.intake.clone(),
            allowed_origins: origin::patterns(&settings.intake.allowed_origins),
            limiter: ClientLimiter::per_minute(settings.intake.rate_limit_per_minute),
            slots: Semaphore::new(settings.intake.max_in_flight),
            signup_ids,
            telemetry: Arc::new(IntakeTelemetry::new()),
        }))
    }

    pub fn telemetry(&self) -> &Arc<IntakeTelemetry> {
        &self.telemetry
    }

    /// The fulfillment routes: POST and GET on `intake.path`; every response gets the security
    /// headers. Serve it with connect info (`SocketAddr`): the peer is the fallback client address.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(&self.settings.path, post(submit).get(explain))
            .fallback(not_found)
            .layer(axum::middleware::map_response(with_security_headers))
            .with_state(self.clone())
    }

    /// Serves the fulfillment listener and the admin listener (`/healthz`, `/readyz`,
    /// `/metrics`) until `shutdown` completes and the requests under way are answered, for at
    /// most `intake.shutdown_grace_ms` (`server::serve`).
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        admin_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let admin_task = tokio::spawn(admin::serve(
            admin_listener,
            self.telemetry.clone(),
            until_stopped(stopped.clone()),
        ));
        let watcher = tokio::spawn(self.clone().watch_queue(stopped.clone()));
        let telemetry = self.telemetry.clone();
        let limits = server::ServeLimits {
            header_timeout: self.settings.header_timeout(),
            shutdown_grace: self.settings.shutdown_grace(),
        };
        let served = server::serve(listener, self.router(), limits, async move {
            shutdown.await;
            telemetry.set_stopping();
        })
        .await;
        let _ = stop.send(true);
        let _ = watcher.await;
        let admin_result = admin_task
            .await
            .map_err(|e| std::io::Error::other(format!("admin listener task: {e}")))?;
        served.and(admin_result)
    }

    /// `/readyz` asks the queue at start and every `readiness_interval_secs` with
    /// GetQueueAttributes. The task role may only SendMessage (deploy/iam/intake-task-policy.json),
    /// so `AccessDenied` counts as reachable: SQS answered a correctly signed request. Idle
    /// clients' limiter state is dropped on the same beat.
    async fn watch_queue(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.settings.readiness_interval_secs);
        loop {
            let reachable = match sqs::queue_attributes(&self.sqs, &self.queue_url).await {
                Ok(_) => true,
                Err(e) if e.failure.problem == Problem::Denied => true,
                Err(e) => {
                    tracing::warn!(error = %e, "token queue not reachable: not ready");
                    false
                }
            };
            self.telemetry.set_queue_reachable(reachable);
            self.limiter.forget_idle();
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }

    /// Every check, in order; the token is on the queue only when this returns `Ok`. What costs
    /// nothing comes first; a slot is taken only once the body is in, so a client that trickles
    /// its body holds its own connection (for `body_timeout_ms` at most), never a slot.
    async fn take(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Accepted, Refusal> {
        if let Err(sender) = origin::check(&self.allowed_origins, headers) {
            tracing::warn!(%sender, "fulfillment POST from a site not on intake.allowed_origins");
            return Err(Refusal::CrossSite);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|line| line.to_str().ok());
        let client = ratelimit::client_address(
            self.settings.client_address,
            self.settings.trusted_proxies,
            forwarded,
            peer.ip(),
        );
        if let Err(wait) = self.limiter.check(ratelimit::limit_key(client)) {
            tracing::warn!(%client, "client over the intake rate limit");
            return Err(Refusal::RateLimited {
                retry_after_secs: ratelimit::retry_after_secs(wait),
            });
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !form::is_form_encoded(content_type) {
            return Err(Refusal::UnsupportedType);
        }
        let read = read_limited(body, self.settings.max_body_bytes);
        let body = match tokio::time::timeout(self.settings.body_timeout(), read).await {
            Ok(body) => body?,
            Err(_) => {
                tracing::warn!(%client, "fulfillment POST body not in within intake.body_timeout_ms");
                return Err(Refusal::BodyTimeout);
            }
        };
        let submission = form::parse_form(&body)?;
        let Ok(permit) = self.slots.try_acquire() else {
            tracing::warn!("intake.max_in_flight POSTs waiting for the queue; answered 503");
            return Err(Refusal::Busy {
                retry_after_secs: self.settings.retry_after_secs,
            });
        };
        let _slot = Slot::new(permit, &self.telemetry);
        self.queue(submission).await
    }

    /// Binds the token's signupId, then sends the token with it: the rest of [`Intake::take`],
    /// holding a slot.
    async fn queue(&self, submission: Submission) -> Result<Accepted, Refusal> {
        let Submission { token, offer_type } = submission;
        let event_id = token.fingerprint();
        let retry_after_secs = self.settings.retry_after_secs;
        let signup_id = self
            .signup_ids
            .bind(&event_id, redirect::new_signup_id())
            .await
            .map_err(|e| {
                tracing::error!(%event_id, error = %e, "no signupId bound; answered 503");
                Refusal::QueueUnavailable { retry_after_secs }
            })?;
        let extras = Extras {
            signup_id: Some(signup_id.clone()),
            context: offer_type
                .map(|o| BTreeMap::from([(OFFER_TYPE_CONTEXT_KEY.to_owned(), o)]))
                .unwrap_or_default(),
        };
        // The same builder and check as `enqueue`: one message form, byte for byte.
        let prepared = prepare(&[token.expose().to_owned()], &extras).map_err(|rejected| {
            Refusal::BadForm {
                detail: rejected
                    .rejected
                    .first()
                    .map_or_else(|| rejected.to_string(), |r| r.detail.clone()),
                fingerprint: Some(event_id.clone()),
            }
        })?;
        let fifo = crate::aws::is_fifo(&self.queue_url);
        let outgoing: Vec<sqs::Outgoing> = prepared
            .iter()
            .map(|p| sqs::Outgoing {
                body: p.body().to_owned(),
                group_id: fifo.then(|| p.event_id.to_string()),
                deduplication_id: fifo.then(|| p.event_id.to_string()),
            })
            .collect();
        let started = Instant::now();
        let sent = sqs::send_chunk(&self.sqs, &self.queue_url, &outgoing).await;
        let outcome = SendOutcome::of(&sent);
        self.telemetry
            .sent(started.elapsed(), outcome == SendOutcome::Queued);
        match outcome {
            SendOutcome::Queued => Ok(Accepted {
                location: redirect::sign_up_location(&self.registration, &signup_id),
                signup_id,
                event_id,
            }),
            SendOutcome::Refused => {
                tracing::error!(
                    %event_id,
                    error = %SendOutcome::describe(&sent),
                    "the token queue refused the token; answered 503 (nothing queued)"
                );
                Err(Refusal::QueueUnavailable { retry_after_secs })
            }
            SendOutcome::NoAnswer => {
                tracing::error!(
                    %event_id,
                    %signup_id,
                    error = %SendOutcome::describe(&sent),
                    "the token queue did not answer within intake.send_deadline_ms; answered 503 \
                     (the token may be queued)"
                );
                Err(Refusal::QueueNoAnswer { retry_after_secs })
            }
        }
    }
}

/// What one send did, as far as intake can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendOutcome {
    Queued,
    /// SQS answered, and not with the message id: nothing was queued.
    Refused,
    /// No answer (a timeout, a connection lost): the message may be on the queue.
    NoAnswer,
}

type SendResult =
    Result<Vec<Result<String, crate::aws::error::EntryFailure>>, crate::aws::error::CallError>;

impl SendOutcome {
    fn of(sent: &SendResult) -> Self {
        match sent {
            Ok(entries) if !entries.is_empty() && entries.iter().all(Result::is_ok) => {
                SendOutcome::Queued
            }
            Ok(_) => SendOutcome::Refused,
            // A service error carries SQS's code; a timeout or a lost connection has none.
            Err(e) if e.failure.code.is_some() => SendOutcome::Refused,
            Err(_) => SendOutcome::NoAnswer,
        }
    }

    fn describe(sent: &SendResult) -> String {
        match sent {
            Ok(entries) => entries
                .iter()
                .filter_map(|e| e.as_ref().err())
                .map(|f| format!("{}: {}", f.code, f.message))
                .next()
                .unwrap_or_else(|| "no entry in the answer".to_owned()),
            Err(e) => e.to_string(),
        }
    }
}

/// Tokens whose signupId is remembered (about 100 bytes each).
const REMEMBERED_SIGNUPS: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();

/// A POST's place among `max_in_flight`, counted in `mpr_intake_in_flight` for as long as it
/// lives: also when the client goes away and the request's future is dropped midway.
struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    telemetry: &'a IntakeTelemetry,
}

impl<'a> Slot<'a> {
    fn new(permit: SemaphorePermit<'a>, telemetry: &'a IntakeTelemetry) -> Self {
        telemetry.in_flight(1);
        Slot {
            _permit: permit,
            telemetry,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.telemetry.in_flight(-1);
    }
}

/// The body, or `TooLarge` past `limit` bytes (a declared length is refused before reading).
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, Refusal> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Refusal::TooLarge),
        // The client went away mid-body: nothing to queue, and nobody reads the answer.
        Err(_) => Err(Refusal::NoToken),
    }
}

async fn submit(
    State(intake): State<Arc<Intake>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match intake.take(peer, &headers, body).await {
        Ok(accepted) => {
            intake.telemetry.request("accepted");
            tracing::info!(
                event_id = %accepted.event_id,
                signup_id = %accepted.signup_id,
                "token queued; buyer sent to the sign-up page"
            );
            match HeaderValue::from_str(&accepted.location) {
                Ok(location) => {
                    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
                }
                // A `Url` serialises to ASCII only; this is unreachable in practice.
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        Err(refusal) => refuse(&intake, &refusal),
    }
}

fn refuse(intake: &Intake, refusal: &Refusal) -> Response {
    intake.telemetry.request(refusal.result());
    if let Refusal::BadForm {
        detail,
        fingerprint,
    } = refusal
    {
        tracing::info!(
            result = refusal.result(),
            event_id = fingerprint.as_ref().map(|f| f.as_str()),
            %detail,
            "fulfillment request refused"
        );
    } else {
        tracing::info!(result = refusal.result(), "fulfillment request refused");
    }
    let mut response = (refusal.status(), Html(pages::refusal_page(refusal))).into_response();
    if let Some(secs) = refusal.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

async fn explain(State(intake): State<Arc<Intake>>) -> Response {
    intake.telemetry.request("info_page");
    Html(pages::explanation_page()).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Html(pages::explanation_page())).into_response()
}

async fn with_security_headers(mut response: Response) -> Response {
    pages::security_headers(&mut response);
    response
}
