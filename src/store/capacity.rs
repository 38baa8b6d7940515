//! What a group of writes costs on DynamoDB, in write capacity units, estimated from the items'
//! sizes by DynamoDB's rules: a write consumes one unit per 1 KB of the item (rounded up), a write
//! inside a transaction twice that. DynamoDB bills a put by the larger of the old and the new item
//! and a delete by the deleted item's size; neither is known without a read, so a put counts its
//! new item and a delete or a condition check one KB. The figure is for capacity planning
//! (`mpr_store_write_units_total`, BENCHMARKS.md), not an invoice.

use serde_json::Value;

use super::{Item, Write};

const KB: usize = 1024;

/// Estimated write capacity units of `group` as one call: a `PutItem`/`DeleteItem` alone, a
/// `TransactWriteItems` otherwise.
pub fn write_units(group: &[Write]) -> u64 {
    let per_item = |w: &Write| -> u64 {
        match w {
            Write::Put { item, .. } => item_bytes(item).div_ceil(KB).max(1) as u64,
            Write::Delete { .. } | Write::Check { .. } => 1,
        }
    };
    let units: u64 = group.iter().map(per_item).sum();
    if group.len() > 1 {
        2 * units
    } else {
        units
    }
}

/// An item's size as DynamoDB counts it: each attribute's name and value, the keys, `version` and
/// `expiresAt` included.
pub fn item_bytes(item: &Item) -> usize {
    let keys = "pk".len() + item.pk.len() + "sk".len() + item.sk.len();
    let version = super::VERSION.len() + number_bytes(&item.version.to_string());
    let expires = item.expires_at.map_or(0, |at| {
        super::EXPIRES_AT.len() + number_bytes(&at.to_string())
    });
    let attrs: usize = item
        .attrs
        .iter()
        .map(|(name, value)| name.len() + value_bytes(value))
        .sum();
    keys + version + expires + attrs
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 1,
        Value::Number(n) => number_bytes(&n.to_string()),
        Value::String(s) => s.len(),
        // A list or a map costs 3 bytes, and each element one more than its own size.
        Value::Array(values) => 3 + values.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        Value::Object(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
    }
}

/// A number: about one byte per two significant digits, plus one.
fn number_bytes(text: &str) -> usize {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    digits.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Expect;

    fn put(bytes_of_body: usize) -> Write {
        Write::Put {
            item: Item::new("token#abc", "token").with("event", "x".repeat(bytes_of_body)),
            expect: Expect::Absent,
        }
    }

    #[test]
    fn a_write_costs_a_unit_per_kb_and_twice_that_in_a_transaction() {
        let small = put(100);
        assert_eq!(write_units(std::slice::from_ref(&small)), 1);
        // 2,000 bytes of body plus the keys and names: two KB started.
        assert_eq!(write_units(&[put(2_000)]), 2);
        let delete = Write::Delete {
            pk: "a".into(),
            sk: "b".into(),
            expect: Expect::Any,
        };
        // A transaction of a 1-unit put, a 2-unit put and a delete: (1 + 2 + 1) × 2.
        assert_eq!(write_units(&[small, put(2_000), delete]), 8);
    }

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        let item = Item::new("p", "s")
            .with("n", 12345)
            .with("list", serde_json::json!(["ab", true]))
            .with("map", serde_json::json!({"k": "vv"}));
        // keys 2+1+2+1, version "version"+2, n: 1+4, list: 4+(3+1+2+1+1), map: 3+(3+1+1+2)
        assert_eq!(item_bytes(&item), 6 + 9 + 5 + 12 + 10);
    }
}
