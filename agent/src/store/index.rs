//! The in-memory index of a store: snapshot metadata in time order, the
//! byte total, the counters, and the retention rule that picks which
//! snapshots to drop.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{SnapshotMeta, StoreOptions};

/// Order of the index: time (the bits of a non-negative f64 sort like the
/// number), then id.
pub(super) type Key = (u64, String);

/// Index key of `meta`.
fn key_of(meta: &SnapshotMeta) -> Key {
    (meta.time.to_bits(), meta.id.clone())
}

/// The mutable part of the store.
#[derive(Default)]
pub(super) struct State {
    /// Metadata of every stored snapshot, oldest first.
    pub(super) index: BTreeMap<Key, SnapshotMeta>,
    /// Index keys by id.
    pub(super) keys: HashMap<String, Key>,
    /// Sum of `bytes` over the index.
    pub(super) bytes: u64,
    /// Sequence number of the next id.
    pub(super) next_seq: u64,
    /// See [`StoreStats::skipped`](super::StoreStats::skipped).
    pub(super) skipped: usize,
    /// See [`StoreStats::removed_by_retention`](super::StoreStats::removed_by_retention).
    pub(super) removed_by_retention: u64,
}

impl State {
    /// Adds `meta` to the index and returns its key.
    pub(super) fn insert(&mut self, meta: SnapshotMeta) -> Key {
        let key = key_of(&meta);
        self.bytes = self.bytes.saturating_add(meta.bytes);
        self.keys.insert(meta.id.clone(), key.clone());
        self.index.insert(key.clone(), meta);
        key
    }

    /// Drops `id` from the index, returning its metadata.
    pub(super) fn remove(&mut self, id: &str) -> Option<SnapshotMeta> {
        let key = self.keys.remove(id)?;
        let meta = self.index.remove(&key)?;
        self.bytes = self.bytes.saturating_sub(meta.bytes);
        Some(meta)
    }

    /// Drops the oldest snapshots, never `keep`, until the limits hold, and
    /// returns them (oldest first) for their files to be removed.
    pub(super) fn retain(
        &mut self,
        options: &StoreOptions,
        now: SystemTime,
        keep: Option<&Key>,
    ) -> Vec<SnapshotMeta> {
        let cutoff = options
            .max_age
            .and_then(|age| now.checked_sub(age))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let mut count = self.index.len();
        let mut bytes = self.bytes;
        let mut doomed = Vec::new();
        for (key, meta) in &self.index {
            if Some(key) == keep {
                continue;
            }
            // Times only grow along the index, so once a snapshot is young
            // enough and the limits hold, every later one stays too.
            let expired = cutoff.is_some_and(|c| meta.time < c);
            let over = options.max_count.is_some_and(|m| count > m)
                || options.max_bytes.is_some_and(|m| bytes > m);
            if !expired && !over {
                break;
            }
            count -= 1;
            bytes = bytes.saturating_sub(meta.bytes);
            doomed.push(meta.id.clone());
        }
        let removed: Vec<SnapshotMeta> = doomed.iter().filter_map(|id| self.remove(id)).collect();
        self.removed_by_retention += removed.len() as u64;
        removed
    }
}
