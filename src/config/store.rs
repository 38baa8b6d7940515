//! `[store]`: where the durable state shared by every task lives (`crate::store`).

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A redb file on local disk (`path`): one machine.
    Embedded,
    /// One DynamoDB table (`table`) shared by every task.
    Dynamodb,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// The embedded store's file.
    pub path: String,
    /// The DynamoDB table's name (or ARN).
    pub table: String,
    /// How long a claim on a token lasts beyond one ResolveCustomer attempt, in milliseconds: a
    /// holder that died is taken over this long after its call would have timed out.
    pub claim_margin_ms: u64,
}

pub(super) fn validate(s: &Settings) -> Result<(), ConfigError> {
    let store = &s.store;
    match store.kind {
        StoreKind::Embedded if store.path.trim().is_empty() => Err(invalid(
            "store.path",
            "is required with store.kind = \"embedded\": the file the store lives in",
        )),
        StoreKind::Dynamodb if store.table.trim().is_empty() => Err(invalid(
            "store.table",
            "is required with store.kind = \"dynamodb\": the DynamoDB table every task shares \
             (pk and sk strings, TTL on expiresAt; `mp-resolver store create-table` makes one)",
        )),
        _ if store.claim_margin_ms > 600_000 => Err(invalid(
            "store.claim_margin_ms",
            "must be at most 600,000 (10 minutes)",
        )),
        _ => Ok(()),
    }
}
