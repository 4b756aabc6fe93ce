//! A small read-through cache for keys and agents, with an epoch so that a lookup which
//! raced with a `clear` can never put back what the clear removed: a value read from
//! the store is only kept if no clear happened since the read began.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::RwLock;

/// Most entries held; past that the cache starts over.
const LIMIT: usize = 10_000;

pub struct Cache<K, V> {
    inner: RwLock<Inner<K, V>>,
}

struct Inner<K, V> {
    epoch: u64,
    entries: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(Inner {
                epoch: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// The cached value and, either way, the epoch to pass to `insert` after a miss.
    pub fn get<Q>(&self, key: &Q) -> (Option<V>, u64)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let inner = self.inner.read();
        (inner.entries.get(key).cloned(), inner.epoch)
    }

    /// Keeps `value` unless the cache was cleared since `epoch` was read.
    pub fn insert(&self, epoch: u64, key: K, value: V) {
        let mut inner = self.inner.write();
        if inner.epoch != epoch {
            return;
        }
        if inner.entries.len() >= LIMIT {
            inner.entries.clear();
        }
        inner.entries.insert(key, value);
    }

    /// Forgets everything, including lookups still in flight.
    pub fn clear(&self) {
        let mut inner = self.inner.write();
        inner.epoch += 1;
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_raced_with_clear_is_not_kept() {
        let cache = Cache::new();
        let (_, epoch) = cache.get(&1);
        cache.clear();
        cache.insert(epoch, 1, "stale");
        assert_eq!(cache.get(&1).0, None);
        let (_, epoch) = cache.get(&1);
        cache.insert(epoch, 1, "fresh");
        assert_eq!(cache.get(&1).0, Some("fresh"));
    }
}
