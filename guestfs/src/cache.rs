//! A small bounded cache for decoded metadata tables (grain tables, L2
//! tables, BAT pages) and decompressed clusters. Bounded by entry count so a
//! hostile image cannot grow it; a clock-style eviction keeps it cheap.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

pub struct BoundedCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

struct Inner<K, V> {
    map: HashMap<K, (Arc<V>, u64)>,
    tick: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedCache { inner: Mutex::new(Inner { map: HashMap::new(), tick: 0 }), capacity: capacity.max(1) }
    }

    /// Returns the cached value for `key`, or loads it with `load` (outside
    /// the lock, so slow loads do not serialise readers) and caches it.
    pub fn get_or_load<E>(&self, key: K, load: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.tick += 1;
            let tick = g.tick;
            if let Some(entry) = g.map.get_mut(&key) {
                entry.1 = tick;
                return Ok(entry.0.clone());
            }
        }
        let value = Arc::new(load()?);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.map.len() >= self.capacity {
            // Evict the least recently used entry. O(n) but n is small and
            // eviction only happens on a miss, which already costs a read.
            if let Some(old) = g.map.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| k.clone()) {
                g.map.remove(&old);
            }
        }
        g.tick += 1;
        let tick = g.tick;
        g.map.insert(key, (value.clone(), tick));
        Ok(value)
    }
}
