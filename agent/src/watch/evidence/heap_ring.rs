//! A bounded ring of the process's own heap snapshots, kept in memory so
//! that a heap alert can name the site that keeps growing (and the viewer
//! can show leak suspects) without a snapshot store.
//!
//! It stays small on purpose: stacks are interned once in a shared table
//! and each snapshot keeps only `(stack id, four values)` per stack, so a
//! snapshot of a few thousand stacks costs tens of KiB, and the table is
//! rebuilt without the stacks no snapshot uses once the ring has turned
//! over. Nothing is symbolized until a finding or a page asks: then every
//! address of the ring is resolved in one batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use crate::collect::heap::{HeapCounts, HeapValues};
use crate::explain::heap::{HeapSnapshot, SiteKey, site_of};
use crate::symbolize::{ProcessMaps, Symbolizer};

/// One snapshot in the ring.
#[derive(Debug, Clone)]
pub struct RingSnapshot {
    /// Its number, counting from 1 since the ring was made.
    pub seq: u64,
    /// When the heap was dumped.
    pub time: SystemTime,
    /// Sampling period in bytes.
    pub period: u64,
    values: Vec<(u32, HeapValues)>,
}

/// The ring. Cloning it is cheap (stacks are shared): take a copy under a
/// lock, then reduce it after letting go.
#[derive(Debug, Clone)]
pub struct HeapRing {
    capacity: usize,
    stacks: Vec<Arc<[u64]>>,
    ids: HashMap<Arc<[u64]>, u32>,
    snaps: VecDeque<RingSnapshot>,
    next_seq: u64,
}

impl HeapRing {
    /// A ring keeping the last `capacity` snapshots (at least 2).
    pub fn new(capacity: usize) -> HeapRing {
        HeapRing {
            capacity: capacity.max(2),
            stacks: Vec::new(),
            ids: HashMap::new(),
            snaps: VecDeque::new(),
            next_seq: 1,
        }
    }

    /// Keeps `counts` as the newest snapshot (the oldest goes when the
    /// ring is full); its number.
    pub fn push(&mut self, counts: &HeapCounts) -> u64 {
        let mut values = Vec::with_capacity(counts.stacks.len());
        for (stack, v) in &counts.stacks {
            let id = match self.ids.get(stack.as_slice()) {
                Some(&id) => id,
                None => {
                    let id = self.stacks.len() as u32;
                    let stack: Arc<[u64]> = stack.as_slice().into();
                    self.stacks.push(stack.clone());
                    self.ids.insert(stack, id);
                    id
                }
            };
            values.push((id, *v));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.snaps.push_back(RingSnapshot {
            seq,
            time: counts.time,
            period: counts.period,
            values,
        });
        if self.snaps.len() > self.capacity {
            self.snaps.pop_front();
        }
        // Once there are twice as many stacks as the snapshots use, drop
        // the unused ones.
        if seq.is_multiple_of(self.capacity as u64) {
            self.compact();
        }
        seq
    }

    /// Rebuilds the stack table with only the stacks a snapshot uses.
    fn compact(&mut self) {
        let mut used = vec![false; self.stacks.len()];
        for s in &self.snaps {
            for (id, _) in &s.values {
                used[*id as usize] = true;
            }
        }
        let mut remap = vec![u32::MAX; self.stacks.len()];
        let mut stacks = Vec::new();
        for (old, stack) in self.stacks.drain(..).enumerate() {
            if used[old] {
                remap[old] = stacks.len() as u32;
                stacks.push(stack);
            }
        }
        for s in &mut self.snaps {
            for (id, _) in &mut s.values {
                *id = remap[*id as usize];
            }
        }
        self.ids = stacks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        self.stacks = stacks;
    }

    /// The snapshots, oldest first.
    pub fn snapshots(&self) -> impl Iterator<Item = &RingSnapshot> {
        self.snaps.iter()
    }

    /// Number of snapshots kept.
    pub fn len(&self) -> usize {
        self.snaps.len()
    }

    /// True when no snapshot is kept.
    pub fn is_empty(&self) -> bool {
        self.snaps.is_empty()
    }

    /// Number of distinct stacks in the table (for tests of its bound).
    pub fn stack_count(&self) -> usize {
        self.stacks.len()
    }

    /// Snapshot `seq` as heap counts again (to build a profile of it).
    pub fn counts(&self, seq: u64) -> Option<HeapCounts> {
        let s = self.snaps.iter().find(|s| s.seq == seq)?;
        Some(HeapCounts {
            period: s.period,
            time: s.time,
            stacks: s
                .values
                .iter()
                .map(|(id, v)| (self.stacks[*id as usize].to_vec(), *v))
                .collect(),
        })
    }

    /// Every snapshot reduced to sites, symbolizing every address of the
    /// ring in one batch with `symbolizer` against the process's mappings.
    pub fn reduce(&self, symbolizer: &Symbolizer) -> Vec<HeapSnapshot> {
        let mut addrs: Vec<u64> = self.stacks.iter().flat_map(|s| s.iter().copied()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let maps = ProcessMaps::current().unwrap_or_default();
        let resolved = symbolizer.resolve(&maps, &addrs);
        let sites: Vec<Option<SiteKey>> = self
            .stacks
            .iter()
            .map(|stack| {
                let frames: Vec<(&str, &str, i64)> = stack
                    .iter()
                    .filter_map(|a| resolved.get(a))
                    .flat_map(|r| r.frames.iter())
                    .map(|f| (&*f.name, f.file.as_deref().unwrap_or(""), i64::from(f.line)))
                    .collect();
                site_of(&frames)
            })
            .collect();
        self.snaps
            .iter()
            .map(|s| {
                let mut snap = HeapSnapshot {
                    t: crate::collect::unix_seconds(s.time),
                    period: s.period.max(1) as f64,
                    ..HeapSnapshot::default()
                };
                for (id, v) in &s.values {
                    let (inuse, alloc) = (v[3] as f64, v[1] as f64);
                    let slot = match &sites[*id as usize] {
                        Some(key) => snap.sites.entry(key.clone()).or_default(),
                        None => &mut snap.agent,
                    };
                    slot[0] += inuse;
                    slot[1] += alloc;
                }
                snap
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(stacks: &[(u64, i64)]) -> HeapCounts {
        HeapCounts {
            period: 1,
            time: SystemTime::UNIX_EPOCH,
            stacks: stacks
                .iter()
                .map(|(a, v)| (vec![*a, *a + 1], [1, *v, 1, *v]))
                .collect(),
        }
    }

    #[test]
    fn keeps_the_last_snapshots_and_only_the_stacks_they_use() {
        let mut ring = HeapRing::new(3);
        for i in 0..30u64 {
            // Each snapshot has one stack of its own and one shared.
            ring.push(&counts(&[(1000 + 10 * i, 5), (7, 9)]));
        }
        assert_eq!(ring.len(), 3);
        let seqs: Vec<u64> = ring.snapshots().map(|s| s.seq).collect();
        assert_eq!(seqs, [28, 29, 30]);
        // Compacted at 30: the shared stack and the three kept.
        assert_eq!(ring.stack_count(), 4);
        let c = ring.counts(29).expect("kept");
        assert_eq!(c.stacks.len(), 2);
        assert_eq!(c.stacks[&vec![1280, 1281]], [1, 5, 1, 5]);
        assert!(ring.counts(27).is_none());
    }

    #[test]
    fn reduces_stacks_to_sites_and_sets_leakscope_s_own_apart() {
        // An address of this very function, which is leakscope's own code:
        // its bytes go to `agent`, never to a site.
        let here = reduces_stacks_to_sites_and_sets_leakscope_s_own_apart as *const () as u64;
        let mut ring = HeapRing::new(4);
        ring.push(&counts(&[(here, 100), (8, 5)]));
        ring.push(&counts(&[(here, 300), (8, 5)]));
        let snaps = ring.reduce(Symbolizer::global());
        assert_eq!(snaps.len(), 2);
        assert_eq!(snaps[1].agent, [300.0, 300.0]);
        // Address 8 maps to nothing: an unknown stack, charged to a site
        // that is not the program's own.
        assert_eq!(snaps[1].sites.len(), 1);
        assert!(snaps[1].sites.keys().all(|k| !k.own));
    }
}
