//! Item descriptions, cached: the cache holds at most a fixed number of
//! entries and, once full, replaces an old entry for each new one. It
//! fills up, then stays the same size: not a leak.

use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes of one cached description.
const ENTRY_BYTES: usize = 2 * 1024;

pub struct Catalog {
    capacity: usize,
    entries: Mutex<(HashMap<u64, Vec<u8>>, Vec<u64>)>,
}

impl Catalog {
    pub fn with_capacity(capacity: usize) -> Catalog {
        Catalog {
            capacity,
            entries: Mutex::new((HashMap::new(), Vec::new())),
        }
    }

    /// The description of `sku`, loading (and caching) it on a miss.
    pub fn lookup(&self, sku: u64) -> Vec<u8> {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        if let Some(hit) = map.get(&sku) {
            return hit.clone();
        }
        let description = describe(sku);
        if map.len() >= self.capacity {
            // Replace the oldest entry.
            let oldest = order.remove(0);
            map.remove(&oldest);
        }
        map.insert(sku, description.clone());
        order.push(sku);
        description
    }
}

/// Builds a description (stands in for a database read).
fn describe(sku: u64) -> Vec<u8> {
    let mut d = vec![b' '; ENTRY_BYTES];
    let head = format!("item {sku}");
    d[..head.len()].copy_from_slice(head.as_bytes());
    d
}
