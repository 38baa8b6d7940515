//! The embedded backend: one redb table keyed by `(pk, sk)`, values the item's JSON. redb gives the
//! ACID part (a commit is all or nothing and durable when it returns, a file left by a SIGKILL is
//! recovered on the next open); this file only maps items onto it.
//!
//! Writes go through one writer thread that commits whatever groups are waiting in one
//! transaction (group commit): each group's expectations are checked against the transaction as
//! it stands, so a group sees every group committed before it, and a group whose expectation does
//! not hold is skipped with `Conflict` without touching the others. Every caller is answered only
//! after the commit, so `Ok` still means durable, at one fsync per batch instead of one per write.
//!
//! The file is opened in redb's multi-process mode, so the operator commands (`customers`, `dlq`)
//! can open it while the worker runs on the same machine.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::{now_secs, Expect, Item, StoreError, Write};

const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");

/// The most groups one commit takes, so one commit's latency stays bounded under a burst.
const MAX_GROUPS_PER_COMMIT: usize = 256;

/// Memory redb may keep of the file's pages. Its default (1 GiB) is filled as the file grows, so a
/// long-lived worker's memory followed a week of tokens (BENCHMARKS.md, issue #23: 27.7 MiB after a
/// 2,000-token backlog, 45.8 after 10,000). The hot pages are the B-tree's upper levels and the
/// latest tokens, which fit well within this. 1 MiB since 2026-12-07 (8 before): peak RSS at 256
/// in flight 36.7–37.1 MiB against 38.1–38.3 with 2 MiB (both with the fat-LTO build), and the
/// throughput runs no slower (a page not cached is one read of the OS's page cache).
const CACHE_BYTES: usize = 1024 * 1024;

type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(super) struct Embedded {
    db: Arc<Database>,
    writes: mpsc::Sender<(Vec<Write>, Reply)>,
}

/// An item's value in the table.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "v")]
    version: u64,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(rename = "a")]
    attrs: Map<String, Value>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Embedded {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Misconfigured(format!("store.path {}: {e}", path.display()))
            })?;
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                StoreError::Misconfigured(format!("store.path {}: {e}", path.display()))
            })?;
        // Create the table once, so readers never find it missing.
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(ITEMS).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&writer_db, &queue))
            .map_err(unavailable)?;
        Ok(Embedded { db, writes })
    }

    pub(super) async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let (db, pk, sk) = (self.db.clone(), pk.to_owned(), sk.to_owned());
        blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ITEMS).map_err(unavailable)?;
            let found = table.get((pk.as_str(), sk.as_str())).map_err(unavailable)?;
            found.map(|v| decode(&pk, &sk, v.value())).transpose()
        })
        .await
    }

    pub(super) async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send((writes, reply))
            .map_err(|_| StoreError::Unavailable("the store's writer thread stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer thread stopped".into()))?
    }

    pub(super) async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Item>, StoreError> {
        let (db, pk, prefix) = (self.db.clone(), pk.to_owned(), sk_prefix.to_owned());
        blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ITEMS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in table
                .range((pk.as_str(), prefix.as_str())..)
                .map_err(unavailable)?
            {
                let (key, value) = entry.map_err(unavailable)?;
                let (k_pk, k_sk) = key.value();
                if k_pk != pk || !k_sk.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode(k_pk, k_sk, value.value())?);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn scan(&self, pk_prefix: &str) -> Result<Vec<Item>, StoreError> {
        let (db, prefix) = (self.db.clone(), pk_prefix.to_owned());
        blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ITEMS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in table.range((prefix.as_str(), "")..).map_err(unavailable)? {
                let (key, value) = entry.map_err(unavailable)?;
                let (k_pk, k_sk) = key.value();
                if !k_pk.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode(k_pk, k_sk, value.value())?);
            }
            Ok(out)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store read: {e}")))?
}

fn decode(pk: &str, sk: &str, bytes: &[u8]) -> Result<Item, StoreError> {
    let stored: Stored = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Misconfigured(format!("item {pk}/{sk} is not readable: {e}")))?;
    Ok(Item {
        pk: pk.to_owned(),
        sk: sk.to_owned(),
        version: stored.version,
        expires_at: stored.expires_at,
        attrs: stored.attrs,
    })
}

/// The writer thread: takes the waiting groups, applies them in one transaction, commits, answers.
fn write_loop(db: &Database, queue: &mpsc::Receiver<(Vec<Write>, Reply)>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUPS_PER_COMMIT {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (results, committed) = commit_batch(db, batch.iter().map(|(w, _)| w.as_slice()));
        for ((_, reply), result) in batch.into_iter().zip(results) {
            let answer = match &committed {
                Ok(()) => result,
                Err(e) => Err(e.clone()),
            };
            // The caller may have gone (its task was dropped): the write stands either way.
            let _ = reply.send(answer);
        }
    }
}

/// Applies each group that holds (or records its conflict) and commits them together.
fn commit_batch<'a>(
    db: &Database,
    groups: impl Iterator<Item = &'a [Write]>,
) -> (Vec<Result<(), StoreError>>, Result<(), StoreError>) {
    let groups: Vec<&[Write]> = groups.collect();
    let fail_all = |e: StoreError| (groups.iter().map(|_| Err(e.clone())).collect(), Ok(()));
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return fail_all(unavailable(e)),
    };
    let mut results = Vec::with_capacity(groups.len());
    {
        let mut table = match txn.open_table(ITEMS) {
            Ok(t) => t,
            Err(e) => return fail_all(unavailable(e)),
        };
        let now = now_secs();
        for group in &groups {
            match apply_group(&mut table, group, now) {
                Ok(()) => results.push(Ok(())),
                Err(StoreError::Conflict) => results.push(Err(StoreError::Conflict)),
                // A group may be half applied: the whole transaction is dropped (aborted).
                Err(e) => {
                    drop(table);
                    drop(txn);
                    return fail_all(e);
                }
            }
        }
    }
    let committed = txn.commit().map_err(unavailable);
    (results, committed)
}

fn apply_group(
    table: &mut redb::Table<(&str, &str), &[u8]>,
    group: &[Write],
    now: i64,
) -> Result<(), StoreError> {
    // Every expectation first, against the table as the earlier groups left it.
    let mut versions = Vec::with_capacity(group.len());
    for write in group {
        let (pk, sk) = write.keys();
        let current = match table.get((pk, sk)).map_err(unavailable)? {
            Some(v) => Some(decode(pk, sk, v.value())?),
            None => None,
        }
        .filter(|item| !item.is_expired(now));
        let holds = match (write.expect(), &current) {
            (Expect::Any, _) => true,
            (Expect::Absent, None) => true,
            (Expect::Absent, Some(_)) => false,
            (Expect::Version(v), Some(item)) => item.version == v,
            (Expect::Version(_), None) => false,
        };
        if !holds {
            return Err(StoreError::Conflict);
        }
        versions.push(current.map_or(0, |i| i.version));
    }
    for (write, current) in group.iter().zip(versions) {
        match write {
            Write::Put { item, expect } => {
                // As DynamoDB's backend does: the version follows from what the write expected.
                let version = match expect {
                    Expect::Absent => 1,
                    Expect::Version(_) => current + 1,
                    Expect::Any => item.version + 1,
                };
                let stored = Stored {
                    version,
                    expires_at: item.expires_at,
                    attrs: item.attrs.clone(),
                };
                let bytes = serde_json::to_vec(&stored).map_err(unavailable)?;
                table
                    .insert((item.pk.as_str(), item.sk.as_str()), bytes.as_slice())
                    .map_err(unavailable)?;
            }
            Write::Delete { pk, sk, .. } => {
                table
                    .remove((pk.as_str(), sk.as_str()))
                    .map_err(unavailable)?;
            }
            Write::Check { .. } => {}
        }
    }
    Ok(())
}
