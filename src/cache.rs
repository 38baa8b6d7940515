//! Bounded LRU caches that allocate as they fill: the worker's dedupe caches and intake's
//! remembered sign-up ids are sized for 100,000 entries but usually hold far fewer.

use std::num::NonZeroUsize;

use lru::LruCache;

/// An LRU cache of at most `capacity` entries whose table grows as it fills. `LruCache::new`
/// allocates the table for every entry at once (about 2 MB for the default 100,000), and hashing
/// spreads the first few thousand entries over all of its pages, so each cache would cost its full
/// size in resident memory almost from the start.
pub fn growing_lru<K: std::hash::Hash + Eq, V>(capacity: NonZeroUsize) -> LruCache<K, V> {
    let mut cache = LruCache::unbounded();
    cache.resize(capacity);
    cache
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_lru_keeps_its_bound() {
        let mut cache = growing_lru::<u32, ()>(NonZeroUsize::new(3).unwrap());
        for key in 0..5 {
            cache.put(key, ());
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.cap().get(), 3);
        assert!(
            cache.get(&0).is_none() && cache.get(&1).is_none(),
            "the oldest went first"
        );
        assert!(cache.get(&4).is_some());
    }
}
