//! A local stand-in for the AWS Marketplace Metering `ResolveCustomer` and `BatchMeterUsage` APIs
//! and the Entitlement Service's `GetEntitlements`, on one listener.
//!
//! It speaks the real awsJson 1.1 protocol, so `aws-sdk-marketplacemetering` and
//! `aws-sdk-marketplaceentitlement` work against it through an endpoint URL. It resolves
//! self-describing test tokens ([`TestToken`]) whose contents script what each call answers, and
//! serves the entitlements tests set ([`CustomerEntitlements`]). Service-wide misbehaviour (quotas,
//! latency, random errors, a disabled API, single-use tokens, strict authentication) is set at
//! start and changed live, over `/emulator/config` or [`RunningEmulator::configure`].

mod auth;
mod engine;
mod entitlements;
mod entitlements_wire;
mod metering;
mod metering_wire;
mod model;
mod protocol;
pub(crate) mod quota;
mod server;
mod settings;
mod token;
mod wire;

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use auth::SIGNING_NAME;
pub use engine::EmulatorStats;
pub use entitlements::{CustomerEntitlements, EntitlementError, EntitlementValue, TestEntitlement};
pub use metering::{
    check_timestamp, MeteredRecord, OutOfBounds, Subscriber, SubscriberError, Tag, UsageAllocation,
    FUTURE_SKEW_SECS, MONTH_END_GRACE_SECS,
};
pub use settings::EmulatorSettings;
pub use token::{TestToken, TokenError, TOKEN_PREFIX};

use engine::{Engine, SharedEngine};

/// Serve until `shutdown` completes. Fails at once if `settings` are out of range.
pub async fn serve(
    listener: TcpListener,
    settings: EmulatorSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let engine = new_engine(settings)?;
    server::run(listener, engine, shutdown).await
}

fn new_engine(settings: EmulatorSettings) -> io::Result<SharedEngine> {
    settings
        .validate()
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    Ok(SharedEngine::new(Engine::new(settings, Instant::now())))
}

/// An emulator serving on `127.0.0.1` in the background, for tests.
///
/// Dropping it stops the server too: the dropped sender completes the shutdown future, and the
/// server task finishes on its own.
#[derive(Debug)]
pub struct RunningEmulator {
    addr: SocketAddr,
    engine: SharedEngine,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl RunningEmulator {
    pub async fn start(settings: EmulatorSettings) -> io::Result<Self> {
        let engine = new_engine(settings)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            // Either a send or the sender's drop means stop.
            let _ = stopped.await;
        };
        let task = tokio::spawn(server::run(listener, engine.clone(), shutdown));
        Ok(Self {
            addr,
            engine,
            stop,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> EmulatorStats {
        self.engine.with(|e| e.stats())
    }

    pub fn settings(&self) -> EmulatorSettings {
        self.engine.with(|e| e.settings().clone())
    }

    /// Changes settings live. Unlike `/emulator/config` this does not validate: out-of-range
    /// values are tolerated (a bad quota means unlimited, the error rate is clamped to 0..=1).
    pub fn configure(&self, f: impl FnOnce(&mut EmulatorSettings)) {
        self.engine.with(|e| {
            let mut next = e.settings().clone();
            f(&mut next);
            e.set_settings(next, Instant::now());
        });
    }

    /// Replaces one customer's entitlements for one product, as `POST /emulator/entitlements`
    /// does; an empty list removes them. Refuses values the real service could never return.
    pub fn set_entitlements(&self, set: CustomerEntitlements) -> Result<(), EntitlementError> {
        self.engine.with(|e| e.set_entitlements(set))
    }

    /// Subscribes a customer to a product for BatchMeterUsage, as `POST /emulator/subscribers`
    /// does. Customers whose token resolved or who have entitlements are subscribed already.
    pub fn subscribe(&self, subscriber: Subscriber) -> Result<(), SubscriberError> {
        self.engine
            .with(|e| e.subscribers_mut().change(subscriber, true))
    }

    /// Removes every subscription of the product matching the identifiers `subscriber` names.
    pub fn unsubscribe(&self, subscriber: Subscriber) -> Result<(), SubscriberError> {
        self.engine
            .with(|e| e.subscribers_mut().change(subscriber, false))
    }

    /// The records BatchMeterUsage accepted, as `GET /emulator/metering` lists them.
    pub fn metered_records(&self) -> Vec<MeteredRecord> {
        self.engine.with(|e| e.metered_records().to_vec())
    }

    /// Zeroes the stats, forgets per-token throttle/fail progress, first calls, used tokens,
    /// entitlements, subscribers and metered records, and refills the quotas.
    pub fn reset(&self) {
        self.engine.with(|e| e.reset(Instant::now()));
    }

    /// Stops accepting, lets in-flight calls finish, and waits for the server to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "emulator server ended with an error"),
            Err(error) => tracing::warn!(%error, "emulator server task failed"),
        }
    }
}
