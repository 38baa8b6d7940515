//! Durable state shared by every task: one small interface (items under a partition key `pk` and a
//! sort key `sk`, read consistently, written under a condition, several at once atomically) and two
//! backends behind it, chosen by `[store] kind`:
//!
//! - `embedded` (the default): a redb file on local disk (`store.path`), for one machine: the demo,
//!   a single VM, tests. Processes on that machine (the worker and the operator commands beside it)
//!   share the file through redb's multi-process mode.
//! - `dynamodb`: one DynamoDB table (`store.table`) shared by every task of an ECS service.
//!
//! What each lane keeps in it is built on these primitives in its own module (`tokens.rs`: the
//! token lane's write-ahead and claims), so both backends run the same domain logic and one
//! conformance suite (`tests/store.rs`) holds them to the same contract. The item layout is a
//! contract a seller's application may read (README, "The store").
//!
//! Crash safety of the primitives: a write is applied whole or not at all, and is durable once the
//! call returned `Ok` (redb commits with `Durability::Immediate`; DynamoDB acknowledges after its
//! replicas wrote). A process that dies before the call returned may or may not have applied it:
//! every user of the store reads before it acts, so either outcome is recognised on the next try.

pub mod capacity;
mod dynamodb;
mod embedded;
pub mod fleet;
pub mod registry;
pub mod tokens;
pub mod usage;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{StoreKind, StoreSettings};
use crate::observe::metrics::Telemetry;

pub use dynamodb::{create_table, describe_table, TableCheck};

/// The name of the TTL attribute (epoch seconds). DynamoDB deletes an item some time after it;
/// both backends read an item past it as absent, so nothing depends on when it is swept.
pub const EXPIRES_AT: &str = "expiresAt";
/// The optimistic-concurrency counter every write sets: 1 on creation, +1 on each update.
pub const VERSION: &str = "version";

/// One stored item: its keys, its version, its expiry, and its other attributes (JSON values;
/// in DynamoDB strings are `S`, numbers `N`, booleans `BOOL`, objects `M`, arrays `L`).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    /// Set by the store on every write; read back with the item.
    pub version: u64,
    /// Epoch seconds after which the item reads as absent.
    pub expires_at: Option<i64>,
    pub attrs: Map<String, Value>,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Item {
            pk: pk.into(),
            sk: sk.into(),
            version: 0,
            expires_at: None,
            attrs: Map::new(),
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }

    pub fn expiring_at(mut self, epoch_secs: i64) -> Self {
        self.expires_at = Some(epoch_secs);
        self
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).and_then(Value::as_str)
    }

    pub fn i64(&self, name: &str) -> Option<i64> {
        self.attrs.get(name).and_then(Value::as_i64)
    }

    fn is_expired(&self, now_secs: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_secs)
    }
}

/// What a write expects to find, checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No item (an expired one counts as none).
    Absent,
    /// The item at exactly this version (so nobody wrote it since it was read).
    Version(u64),
    /// Anything: an unconditional write.
    Any,
}

/// One write of an atomic group.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Creates or replaces the item; its version becomes the expected one + 1 (1 when absent).
    Put { item: Item, expect: Expect },
    /// Removes the item.
    Delete {
        pk: String,
        sk: String,
        expect: Expect,
    },
    /// Writes nothing; fails the group unless the item is as expected.
    Check {
        pk: String,
        sk: String,
        expect: Expect,
    },
}

impl Write {
    fn keys(&self) -> (&str, &str) {
        match self {
            Write::Put { item, .. } => (&item.pk, &item.sk),
            Write::Delete { pk, sk, .. } | Write::Check { pk, sk, .. } => (pk, sk),
        }
    }

    fn expect(&self) -> Expect {
        match self {
            Write::Put { expect, .. }
            | Write::Delete { expect, .. }
            | Write::Check { expect, .. } => *expect,
        }
    }
}

/// Why a store call did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A write's expectation did not hold: someone else wrote first. Nothing was written.
    #[error("conditional write lost: the item changed")]
    Conflict,
    /// The store could not be reached or refused the call; the caller retries later. Whether a
    /// write was applied is unknown (read before acting again).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is misconfigured (no such table, a file that is not a store): an operator fixes it.
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
}

/// Most writes one atomic group may hold (DynamoDB's TransactWriteItems limit).
pub const MAX_GROUP: usize = 100;

enum Backend {
    Embedded(embedded::Embedded),
    DynamoDb(dynamodb::DynamoDb),
}

/// The store: a cheap handle to share.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    telemetry: Option<Arc<Telemetry>>,
    description: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.description)
    }
}

impl Store {
    /// Opens the store `settings` describe: the embedded file (created when missing) or the
    /// DynamoDB table (not checked here: `check` and the first call say when it is missing).
    pub async fn open(
        settings: &StoreSettings,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, StoreError> {
        match settings.kind {
            StoreKind::Embedded => Self::embedded(Path::new(&settings.path)).await,
            StoreKind::Dynamodb => Ok(Self::dynamodb(sdk, &settings.table)),
        }
    }

    /// The embedded store in the file at `path`, created when missing.
    pub async fn embedded(path: &Path) -> Result<Self, StoreError> {
        let owned = path.to_owned();
        let backend = tokio::task::spawn_blocking(move || embedded::Embedded::open(&owned))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the store: {e}")))??;
        Ok(Store {
            backend: Arc::new(Backend::Embedded(backend)),
            telemetry: None,
            description: format!("embedded {}", path.display()).into(),
        })
    }

    /// The DynamoDB table `table`, with a client built from `sdk` (the SDK's own chain, endpoint
    /// from `AWS_ENDPOINT_URL_DYNAMODB`).
    pub fn dynamodb(sdk: &aws_config::SdkConfig, table: &str) -> Self {
        Store {
            backend: Arc::new(Backend::DynamoDb(dynamodb::DynamoDb::new(sdk, table))),
            telemetry: None,
            description: format!("dynamodb table {table}").into(),
        }
    }

    /// Counts every call's latency and result in `telemetry`'s metrics.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Whether other tasks write to this store as this process does (DynamoDB, shared by every
    /// task of the service), rather than this process alone (the embedded file).
    pub fn shared_by_tasks(&self) -> bool {
        matches!(&*self.backend, Backend::DynamoDb(_))
    }

    /// `embedded PATH` or `dynamodb table NAME`, for logs and `check`.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The item at `pk`/`sk`, read consistently; `None` when absent or expired.
    pub async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let started = tokio::time::Instant::now();
        let result = match &*self.backend {
            Backend::Embedded(b) => b.get(pk, sk).await,
            Backend::DynamoDb(b) => b.get(pk, sk).await,
        };
        self.count("get", &result, started);
        Ok(result?.filter(|item| !item.is_expired(now_secs())))
    }

    /// Applies `writes` all or none: `Err(Conflict)` when any expectation did not hold.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        if writes.len() > MAX_GROUP {
            return Err(StoreError::Misconfigured(format!(
                "{} writes in one atomic group; at most {MAX_GROUP}",
                writes.len()
            )));
        }
        let started = tokio::time::Instant::now();
        let result = match &*self.backend {
            Backend::Embedded(b) => b.write(writes).await,
            Backend::DynamoDb(b) => {
                let units = capacity::write_units(&writes);
                let result = b.write(writes).await;
                if let (Ok(()), Some(t)) = (&result, &self.telemetry) {
                    t.metrics.store_write_units(units);
                }
                result
            }
        };
        self.count("write", &result, started);
        result
    }

    /// One write on its own.
    pub async fn put(&self, item: Item, expect: Expect) -> Result<(), StoreError> {
        self.write(vec![Write::Put { item, expect }]).await
    }

    /// The items under `pk` whose sort key starts with `sk_prefix`, in sort-key order, read
    /// consistently; expired ones left out.
    pub async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Item>, StoreError> {
        let started = tokio::time::Instant::now();
        let result = match &*self.backend {
            Backend::Embedded(b) => b.query(pk, sk_prefix).await,
            Backend::DynamoDb(b) => b.query(pk, sk_prefix).await,
        };
        self.count("query", &result, started);
        let now = now_secs();
        Ok(result?.into_iter().filter(|i| !i.is_expired(now)).collect())
    }

    /// Every item whose partition key starts with `pk_prefix` (a full scan: for operator commands,
    /// not the hot path); expired ones left out.
    pub async fn scan(&self, pk_prefix: &str) -> Result<Vec<Item>, StoreError> {
        let started = tokio::time::Instant::now();
        let result = match &*self.backend {
            Backend::Embedded(b) => b.scan(pk_prefix).await,
            Backend::DynamoDb(b) => b.scan(pk_prefix).await,
        };
        self.count("scan", &result, started);
        let now = now_secs();
        Ok(result?.into_iter().filter(|i| !i.is_expired(now)).collect())
    }

    /// Writes and reads back a probe item: `Ok` when the store works for this process.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let item = Item::new("probe#mp-resolver", "probe")
            .with("at", now_secs())
            .expiring_at(now_secs() + 3600);
        self.put(item, Expect::Any).await?;
        match self.get("probe#mp-resolver", "probe").await? {
            Some(_) => Ok(()),
            None => Err(StoreError::Unavailable(
                "a probe item written was not read back".into(),
            )),
        }
    }

    fn count<T>(
        &self,
        operation: &'static str,
        result: &Result<T, StoreError>,
        started: tokio::time::Instant,
    ) {
        if let Some(t) = &self.telemetry {
            let outcome = match result {
                Ok(_) => "ok",
                Err(StoreError::Conflict) => "conflict",
                Err(_) => "error",
            };
            t.metrics.store_call(operation, outcome, started.elapsed());
        }
    }
}

/// Seconds since the epoch, the unit of `expiresAt`.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Milliseconds since the epoch, the unit of leases.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long a stored answer is kept: a week, well past any redelivery or redrive of its message.
pub const ANSWER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
