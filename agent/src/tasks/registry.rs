//! The registry of tokio tasks by spawn site: per site (file, line, column)
//! how many tasks were spawned and how many ended, and one representative
//! stack of the code that spawned there.
//!
//! A spawn is hot, so the spawn path is a lookup in a fixed-size,
//! insert-only open-addressing table of atomic pointers (no lock) and one
//! atomic add; it allocates only the first time a site is seen (its entry
//! and its spawner stack). The number of sites is bounded: once the table
//! holds [`Registry::DEFAULT_MAX_SITES`] sites, tasks of new sites are
//! counted together as "other". (A site first seen at the very moment the
//! table fills up may have a few tasks counted as other and their ends
//! against the site; every spawn is still counted exactly once.)
//!
//! tokio calls the terminate hook for `spawn_blocking` tasks too, but not
//! the spawn hook, so a site can be seen ending tasks it never spawned: such
//! a site gets an entry with no spawns (it takes a slot and is never
//! reported), which keeps its ends from being taken off another site.

use std::fmt;
use std::hash::Hasher;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Where tasks were spawned: the caller of `tokio::spawn` (or of any
/// spawning function marked `#[track_caller]`), as tokio reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpawnSite {
    /// Source file, as the compiler named it (relative to the workspace for
    /// the program's own crates).
    pub file: &'static str,
    /// Line, 1-based.
    pub line: u32,
    /// Column, 1-based.
    pub column: u32,
}

impl SpawnSite {
    /// The site of a `#[track_caller]` location.
    pub fn from_location(location: &'static std::panic::Location<'static>) -> SpawnSite {
        SpawnSite {
            file: location.file(),
            line: location.line(),
            column: location.column(),
        }
    }

    fn hash64(&self) -> u64 {
        let mut h = Fnv::default();
        h.write(self.file.as_bytes());
        h.write_u32(self.line);
        h.write_u32(self.column);
        h.finish()
    }
}

impl fmt::Display for SpawnSite {
    /// `file:line:column`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// FNV-1a: a few multiplications per byte, enough to spread spawn sites
/// over the table (and task ids over shards) without SipHash's cost.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One site's counters. Entries are created once and live as long as the
/// registry.
struct Entry {
    site: SpawnSite,
    spawned: AtomicU64,
    terminated: AtomicU64,
    /// The first spawner's stack: return addresses, innermost first.
    stack: OnceLock<Box<[u64]>>,
}

/// Live tasks by spawn site. See the module documentation.
pub struct Registry {
    slots: Box<[AtomicPtr<Entry>]>,
    mask: usize,
    max_sites: usize,
    /// Sites in the table (reserved before insertion, so never above
    /// `max_sites`).
    sites: AtomicUsize,
    other_spawned: AtomicU64,
    other_terminated: AtomicU64,
}

/// One site's counts, read by [`Registry::counts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCount {
    /// Where.
    pub site: SpawnSite,
    /// Tasks spawned there that have not ended.
    pub live: u64,
    /// Tasks spawned there in all.
    pub spawned: u64,
    /// Return addresses of the code that first spawned there, innermost
    /// first (empty when no stack could be taken).
    pub stack: Vec<u64>,
}

/// Everything the registry knows at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every site that spawned at least one task, most live tasks first.
    pub sites: Vec<SiteCount>,
    /// Live tasks of sites that found the table full.
    pub other_live: u64,
    /// Tasks spawned in all by sites that found the table full.
    pub other_spawned: u64,
    /// True when the table is full: new sites are counted as other.
    pub full: bool,
}

impl Counts {
    /// Live tasks over every site, other included.
    pub fn live(&self) -> u64 {
        self.sites
            .iter()
            .map(|s| s.live)
            .fold(self.other_live, u64::saturating_add)
    }
}

impl Registry {
    /// Most sites the process-wide registry tells apart.
    pub const DEFAULT_MAX_SITES: usize = 512;
    /// Most return addresses kept per spawner stack.
    pub const MAX_STACK: usize = 64;

    /// A registry of at most `max_sites` sites (at least 1).
    pub fn new(max_sites: usize) -> Registry {
        let max_sites = max_sites.max(1);
        // Half full at most, so probes stay short.
        let len = (max_sites * 2).next_power_of_two();
        let slots = (0..len).map(|_| AtomicPtr::new(ptr::null_mut())).collect();
        Registry {
            slots,
            mask: len - 1,
            max_sites,
            sites: AtomicUsize::new(0),
            other_spawned: AtomicU64::new(0),
            other_terminated: AtomicU64::new(0),
        }
    }

    /// The process-wide registry the runtime hooks feed.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| Registry::new(Self::DEFAULT_MAX_SITES))
    }

    /// Counts a task spawned at `site`. `stack` is called only while the
    /// site has no spawner stack yet (normally once per site) and should
    /// return at most [`Registry::MAX_STACK`] addresses.
    pub fn spawned(&self, site: SpawnSite, stack: impl FnOnce() -> Vec<u64>) {
        match self.entry(site) {
            Some(e) => {
                e.spawned.fetch_add(1, Ordering::Relaxed);
                if e.stack.get().is_none() {
                    let mut s = stack();
                    s.truncate(Self::MAX_STACK);
                    // Two first spawns may race: one stack is kept.
                    let _ = e.stack.set(s.into_boxed_slice());
                }
            }
            None => {
                self.other_spawned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a task spawned at `site` that ended.
    pub fn terminated(&self, site: SpawnSite) {
        match self.entry(site) {
            Some(e) => e.terminated.fetch_add(1, Ordering::Relaxed),
            None => self.other_terminated.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Reads every site's counters. A count read while tasks spawn and end
    /// is a moment's picture: ends are read before spawns, so a live count
    /// is never below the truth of the moment the spawns were read.
    pub fn counts(&self) -> Counts {
        let mut sites = Vec::new();
        for slot in self.slots.iter() {
            let p = slot.load(Ordering::Acquire);
            if p.is_null() {
                continue;
            }
            // SAFETY: non-null slots hold entries published with Release
            // and never freed before the registry is dropped.
            let e = unsafe { &*p };
            let terminated = e.terminated.load(Ordering::Relaxed);
            let spawned = e.spawned.load(Ordering::Relaxed);
            if spawned == 0 {
                continue;
            }
            sites.push(SiteCount {
                site: e.site,
                live: spawned.saturating_sub(terminated),
                spawned,
                stack: e.stack.get().map(|s| s.to_vec()).unwrap_or_default(),
            });
        }
        sites.sort_by(|a, b| b.live.cmp(&a.live).then(a.site.cmp(&b.site)));
        let other_terminated = self.other_terminated.load(Ordering::Relaxed);
        let other_spawned = self.other_spawned.load(Ordering::Relaxed);
        Counts {
            sites,
            other_live: other_spawned.saturating_sub(other_terminated),
            other_spawned,
            full: self.sites.load(Ordering::Relaxed) >= self.max_sites,
        }
    }

    /// The entry of `site`, inserted if new; `None` when the table is full.
    fn entry(&self, site: SpawnSite) -> Option<&Entry> {
        // An entry made here but not yet published, with its reserved place
        // in `sites`.
        let mut fresh: Option<Box<Entry>> = None;
        let mut i = site.hash64() as usize & self.mask;
        for _ in 0..self.slots.len() {
            let p = self.slots[i].load(Ordering::Acquire);
            if p.is_null() {
                let entry = match fresh.take() {
                    Some(e) => e,
                    None => {
                        if self.sites.fetch_add(1, Ordering::Relaxed) >= self.max_sites {
                            self.sites.fetch_sub(1, Ordering::Relaxed);
                            return None;
                        }
                        Box::new(Entry {
                            site,
                            spawned: AtomicU64::new(0),
                            terminated: AtomicU64::new(0),
                            stack: OnceLock::new(),
                        })
                    }
                };
                let raw = Box::into_raw(entry);
                match self.slots[i].compare_exchange(
                    ptr::null_mut(),
                    raw,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    // SAFETY: just published; lives as long as the registry.
                    Ok(_) => return Some(unsafe { &*raw }),
                    Err(theirs) => {
                        // SAFETY: `raw` came from Box::into_raw above and was
                        // not published.
                        fresh = Some(unsafe { Box::from_raw(raw) });
                        // SAFETY: a published entry, as in `counts`.
                        let theirs = unsafe { &*theirs };
                        if theirs.site == site {
                            self.sites.fetch_sub(1, Ordering::Relaxed);
                            return Some(theirs);
                        }
                    }
                }
            } else {
                // SAFETY: a published entry, as in `counts`.
                let e = unsafe { &*p };
                if e.site == site {
                    if fresh.is_some() {
                        self.sites.fetch_sub(1, Ordering::Relaxed);
                    }
                    return Some(e);
                }
            }
            i = (i + 1) & self.mask;
        }
        // Unreachable while the table is at most half full; kept safe anyway.
        if fresh.is_some() {
            self.sites.fetch_sub(1, Ordering::Relaxed);
        }
        None
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for slot in self.slots.iter_mut() {
            let p = std::mem::replace(slot.get_mut(), ptr::null_mut());
            if !p.is_null() {
                // SAFETY: every published pointer came from Box::into_raw and
                // is freed once, here, with no reader left (`&mut self`).
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("max_sites", &self.max_sites)
            .field("sites", &self.sites.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(line: u32) -> SpawnSite {
        SpawnSite {
            file: "src/jobs.rs",
            line,
            column: 9,
        }
    }

    fn find(c: &Counts, line: u32) -> Option<&SiteCount> {
        c.sites.iter().find(|s| s.site == site(line))
    }

    #[test]
    fn counts_live_and_spawned_by_site() {
        let r = Registry::new(16);
        for _ in 0..5 {
            r.spawned(site(10), || vec![0x1000, 0x2000]);
        }
        for _ in 0..3 {
            r.spawned(site(20), || vec![0x3000]);
        }
        r.terminated(site(10));
        r.terminated(site(20));
        r.terminated(site(20));
        r.terminated(site(20));
        let c = r.counts();
        let a = find(&c, 10).expect("site 10");
        assert_eq!((a.live, a.spawned), (4, 5));
        assert_eq!(a.stack, vec![0x1000, 0x2000]);
        let b = find(&c, 20).expect("site 20");
        assert_eq!((b.live, b.spawned), (0, 3));
        assert_eq!(c.sites[0].site, site(10), "most live first");
        assert_eq!(c.live(), 4);
        assert!(!c.full);
    }

    #[test]
    fn stack_is_taken_once_per_site() {
        let r = Registry::new(4);
        let mut calls = 0;
        for _ in 0..10 {
            r.spawned(site(1), || {
                calls += 1;
                vec![calls]
            });
        }
        assert_eq!(calls, 1);
        assert_eq!(find(&r.counts(), 1).map(|s| s.stack.clone()), Some(vec![1]));
    }

    #[test]
    fn ends_of_tasks_never_spawned_here_are_kept_apart() {
        // spawn_blocking tasks end through the hook without a spawn.
        let r = Registry::new(4);
        r.spawned(site(1), Vec::new);
        r.terminated(site(2));
        r.terminated(site(2));
        let c = r.counts();
        assert_eq!(c.sites.len(), 1, "a site with no spawns is not reported");
        assert_eq!(c.live(), 1);
        // A later spawn there still gets its stack.
        r.spawned(site(2), || vec![7]);
        let c = r.counts();
        let s = find(&c, 2).expect("site 2");
        assert_eq!((s.live, s.stack.clone()), (0, vec![7]));
    }

    #[test]
    fn sites_beyond_the_bound_are_counted_as_other() {
        let r = Registry::new(3);
        for line in 1..=10 {
            for _ in 0..line {
                r.spawned(site(line), Vec::new);
            }
        }
        r.terminated(site(9));
        r.terminated(site(2));
        let c = r.counts();
        assert!(c.full);
        assert_eq!(c.sites.len(), 3);
        let known: u64 = c.sites.iter().map(|s| s.spawned).sum();
        assert_eq!(known + c.other_spawned, 55);
        assert_eq!(c.live(), 53, "every task is counted once, known or other");
    }

    /// `THREADS` threads each spawn `ROUNDS` tasks over `sites` sites and
    /// end nine in ten of them.
    fn spawn_from_threads(r: &Registry, sites: u32) {
        std::thread::scope(|s| {
            for t in 0..THREADS {
                s.spawn(move || {
                    for i in 0..ROUNDS {
                        let line = (i * 7 + t) % sites + 1;
                        r.spawned(site(line), || vec![u64::from(t) + 1]);
                        if i % 10 != 0 {
                            r.terminated(site(line));
                        }
                    }
                });
            }
        });
    }

    const THREADS: u32 = 4;
    const ROUNDS: u32 = 2_000;

    #[test]
    fn concurrent_spawns_and_ends_from_several_threads() {
        const SITES: u32 = 40;
        let r = Registry::new(64);
        spawn_from_threads(&r, SITES);
        let c = r.counts();
        assert!(!c.full);
        assert_eq!(c.sites.len(), SITES as usize);
        assert_eq!(c.other_spawned, 0);
        assert_eq!(c.live(), u64::from(THREADS * ROUNDS / 10));
        // Each site has exactly its own spawns and ends, whichever thread
        // inserted it first, and one of the racing first stacks.
        for s in &c.sites {
            let mine = |t: u32, i: u32| (i * 7 + t) % SITES + 1 == s.site.line;
            let spawned = (0..THREADS)
                .flat_map(|t| (0..ROUNDS).filter(move |i| mine(t, *i)))
                .count() as u64;
            let live = (0..THREADS)
                .flat_map(|t| (0..ROUNDS).filter(move |i| mine(t, *i) && i % 10 == 0))
                .count() as u64;
            assert_eq!((s.spawned, s.live), (spawned, live), "{}", s.site);
            assert_eq!(s.stack.len(), 1);
        }
    }

    #[test]
    fn concurrent_spawns_into_a_full_table_are_all_counted() {
        let r = Registry::new(32);
        spawn_from_threads(&r, 40);
        let c = r.counts();
        assert!(c.full, "40 sites in a table of 32");
        assert_eq!(c.sites.len(), 32);
        let spawned: u64 = c.sites.iter().map(|s| s.spawned).sum::<u64>() + c.other_spawned;
        assert_eq!(spawned, u64::from(THREADS * ROUNDS));
        assert!(c.other_spawned > 0);
    }
}
