//! The rate the fleet last learned for ResolveCustomer: one item every task writes now and then
//! while busy and reads when it starts, so a task added because of a backlog starts at the rate the
//! others found instead of slow-starting from `rate_limit.initial_per_sec`.
//!
//! ```text
//!   pk = "ratelimit#ResolveCustomer", sk = "fleet"
//!   rate (N, calls/s), learned ("quota" | "peak"), writtenAt (N, epoch ms), writer (S), expiresAt
//! ```
//!
//! A hint, not a truth: every write is unconditional (the last writer wins, and any task's recent
//! rate is as good as another's), nothing waits for it, and a reader that cannot read it, or reads
//! something it does not understand, starts from the configured rate as if there were none.

use std::time::Duration;

use super::{now_millis, Expect, Item, Store, StoreError};
use crate::worker::ratelimit::Learned;

/// The partition key of the ResolveCustomer limiter's fleet item.
pub const FLEET_RATE_PK: &str = "ratelimit#ResolveCustomer";
/// Its sort key.
pub const FLEET_RATE_SK: &str = "fleet";

/// How long the item is kept after its last write: past any `rate_limit.learned_max_age_secs`
/// (a day at most), so a fleet that stopped leaves nothing behind for long.
pub const FLEET_RATE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The fleet's learned rate as read: what was learned and when it was written (epoch ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetRate {
    pub learned: Learned,
    pub written_ms: i64,
}

impl FleetRate {
    /// How far `written_ms` is from `now_ms`, either way: a hint from a task whose clock runs
    /// ahead is as old as it is far ahead (and refused like an old one when that is too far).
    pub fn age(&self, now_ms: i64) -> Duration {
        Duration::from_millis(now_ms.abs_diff(self.written_ms))
    }

    fn to_item(self, writer: &str) -> Item {
        let expires = self.written_ms / 1000 + FLEET_RATE_TTL.as_secs() as i64;
        Item::new(FLEET_RATE_PK, FLEET_RATE_SK)
            .with("rate", self.learned.rate)
            .with("learned", if self.learned.quota { "quota" } else { "peak" })
            .with("writtenAt", self.written_ms)
            .with("writer", writer)
            .expiring_at(expires)
    }

    /// `None` for an item this version cannot read (a missing or non-numeric rate, an unknown
    /// kind): the configured start is safer than a guess.
    fn from_item(item: &Item) -> Option<Self> {
        let rate = item.attrs.get("rate")?.as_f64()?;
        let quota = match item.str("learned")? {
            "quota" => true,
            "peak" => false,
            _ => return None,
        };
        Some(FleetRate {
            learned: Learned { rate, quota },
            written_ms: item.i64("writtenAt")?,
        })
    }
}

/// Reads the fleet's learned rate; `Ok(None)` when there is none (or none this version reads).
pub async fn read(store: &Store) -> Result<Option<FleetRate>, StoreError> {
    Ok(store
        .get(FLEET_RATE_PK, FLEET_RATE_SK)
        .await?
        .as_ref()
        .and_then(FleetRate::from_item))
}

/// Writes `learned` as the fleet's rate, learned now by `writer` (last writer wins).
pub async fn write(store: &Store, learned: Learned, writer: &str) -> Result<(), StoreError> {
    let rate = FleetRate {
        learned,
        written_ms: now_millis(),
    };
    store.put(rate.to_item(writer), Expect::Any).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_reads_back_as_written_and_a_strange_one_reads_as_none() {
        let rate = FleetRate {
            learned: Learned {
                rate: 123.5,
                quota: true,
            },
            written_ms: 1_700_000_000_000,
        };
        let item = rate.to_item("host/1");
        assert_eq!(item.pk, FLEET_RATE_PK);
        assert_eq!(item.expires_at, Some(1_700_000_000 + 86_400));
        assert_eq!(FleetRate::from_item(&item), Some(rate));
        let peak = FleetRate {
            learned: Learned {
                rate: 40.0,
                quota: false,
            },
            ..rate
        };
        assert_eq!(FleetRate::from_item(&peak.to_item("w")), Some(peak));
        for broken in [
            item.clone().with("rate", "fast"),
            item.clone().with("learned", "guess"),
            item.clone().with("writtenAt", "yesterday"),
        ] {
            assert_eq!(FleetRate::from_item(&broken), None, "{broken:?}");
        }
    }

    #[test]
    fn age_counts_either_way() {
        let rate = FleetRate {
            learned: Learned {
                rate: 1.0,
                quota: false,
            },
            written_ms: 10_000,
        };
        assert_eq!(rate.age(12_500), Duration::from_millis(2_500));
        assert_eq!(rate.age(7_000), Duration::from_millis(3_000));
    }
}
