//! Heap profiles from jemalloc, read from inside the process.
//!
//! This module asks jemalloc (through `mallctl`) whether heap profiling is on
//! ([`state`]), has it write a heap dump into an anonymous in-memory file and
//! parses it ([`dump`], [`parse_dump`]) into raw stacks and counts: a
//! [`RawHeapProfile`]. Symbolizing the addresses and encoding pprof is left to
//! a later step; [`scale`] is the estimate that step applies to the sampled
//! counts, and [`write_legacy_text`] writes Go's legacy text heap profile
//! (`/debug/pprof/heap?debug=1`).
//!
//! Heap profiling has to be switched on when the process starts: jemalloc
//! must be the global allocator and its configuration must contain
//! `prof:true` (see `_rjem_malloc_conf` or the `_RJEM_MALLOC_CONF`
//! environment variable).
//!
//! Submodules: `jemalloc` (mallctl calls and the dump), `dump` (parser of
//! jemalloc's `heap_v2` text) and `legacy` (Go's legacy text writer).

mod dump;
mod jemalloc;
mod legacy;
mod own;

use std::time::SystemTime;

pub use legacy::write_legacy_text;
pub use own::{agent_work, in_flight as agent_bytes_in_flight};

/// State of jemalloc's profiler in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapState {
    /// jemalloc was started with `prof:true`.
    Enabled {
        /// Average sampling interval in bytes (`1 << opt.lg_prof_sample`).
        sample_interval: u64,
        /// Whether accumulated counts are kept (`opt.prof_accum`).
        accum: bool,
        /// Whether sampling is currently active (`prof.active`).
        active: bool,
    },
    /// Heap profiling is not available: jemalloc was started without
    /// `prof:true`, or jemalloc could not be asked.
    Disabled,
}

/// A heap profile as jemalloc wrote it: unsymbolized stacks and sampled counts.
#[derive(Debug, Clone)]
pub struct RawHeapProfile {
    /// Average sampling interval in bytes (from the "heap_v2/N" header).
    pub period: u64,
    /// One per stack in the dump ("@ 0x.. 0x.." lines), with the t* (all threads) counts.
    pub samples: Vec<RawHeapSample>,
    /// Wall-clock time the dump was taken (set by dump(); parse_dump leaves SystemTime::now()).
    pub time: SystemTime,
}

/// The counts of one stack in a heap dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawHeapSample {
    /// Addresses as written by jemalloc, leaf first (jemalloc's own frames included; a later step trims them).
    pub stack: Vec<u64>,
    /// Sampled (unscaled) count of objects in use.
    pub inuse_objects: u64,
    /// Sampled (unscaled) bytes in use.
    pub inuse_bytes: u64,
    /// Sampled (unscaled) count of objects allocated since start (0 when prof_accum is off).
    pub alloc_objects: u64,
    /// Sampled (unscaled) bytes allocated since start (0 when prof_accum is off).
    pub alloc_bytes: u64,
}

/// Reads the state of jemalloc's profiler. Never panics: any failure to
/// read a setting gives [`HeapState::Disabled`].
pub fn state() -> HeapState {
    jemalloc::state()
}

/// jemalloc's own accounting of the process heap, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes allocated by the application.
    pub allocated: u64,
    /// Bytes in active pages (allocated plus page-level fragmentation).
    pub active: u64,
    /// Bytes in physically resident data pages mapped by jemalloc.
    pub resident: u64,
    /// Bytes of jemalloc's own metadata.
    pub metadata: u64,
    /// Bytes of virtual memory retained for reuse, not returned to the OS.
    pub retained: u64,
}

/// jemalloc's statistics, or `None` when they cannot be read (jemalloc not
/// linked as the allocator, or built without stats).
pub fn allocator_stats() -> Option<AllocatorStats> {
    jemalloc::allocator_stats()
}

/// Returns jemalloc's unused dirty pages to the kernel now rather than after
/// its decay time: called after the agent frees a burst of its own memory
/// (parsed debug info), so the service's RSS comes back down at once.
pub fn purge() {
    jemalloc::purge();
}

/// Changes jemalloc's average sampling interval to `bytes` (rounded down to
/// a power of two) through `prof.reset`, which also clears the counts
/// collected so far.
pub fn set_sample_interval(bytes: u64) -> crate::error::Result<()> {
    jemalloc::set_sample_interval(bytes)
}

/// Has jemalloc dump its heap profile and parses it.
///
/// Returns [`crate::error::Error::HeapProfilingDisabled`] when jemalloc was
/// not started with `prof:true`. Dumps are serialized within the process.
pub fn dump() -> crate::error::Result<RawHeapProfile> {
    jemalloc::dump()
}

/// Parses the text of a jemalloc `heap_v2` heap dump.
///
/// Only the all-threads (`t*`) counts of each stack are kept; per-thread
/// lines are ignored and parsing stops at `MAPPED_LIBRARIES:`. The returned
/// profile's `time` is the time of the call.
pub fn parse_dump(text: &str) -> crate::error::Result<RawHeapProfile> {
    dump::parse(text)
}

/// Estimates the true count and bytes behind sampled ones.
///
/// jemalloc samples on average one allocation per `period` bytes, so an
/// allocation of the average size `a = bytes / count` is seen with
/// probability `p = 1 - exp(-a / period)`; the estimate is
/// `(count / p, bytes / p)`. Gives `(0.0, 0.0)` when `count` or `period` is 0.
///
/// jemalloc 5.3 (with its default `prof_unbias:true`) writes counts chosen so
/// that this very formula gives its internally tracked unbiased totals.
pub fn scale(count: u64, bytes: u64, period: u64) -> (f64, f64) {
    if count == 0 || period == 0 {
        return (0.0, 0.0);
    }
    let count = count as f64;
    let bytes = bytes as f64;
    let avg = bytes / count;
    // 1 - exp(-x) computed without cancellation for small x.
    let p = -(-avg / period as f64).exp_m1();
    if p <= 0.0 || !p.is_finite() {
        // Only when bytes == 0: nothing to scale.
        return (count, bytes);
    }
    (count / p, bytes / p)
}

#[cfg(test)]
mod tests {
    use super::scale;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn scale_zero_inputs() {
        assert_eq!(scale(0, 100, 4096), (0.0, 0.0));
        assert_eq!(scale(3, 100, 0), (0.0, 0.0));
        assert_eq!(scale(0, 0, 0), (0.0, 0.0));
        // Objects of size 0 are counted as they are.
        assert_eq!(scale(2, 0, 4096), (2.0, 0.0));
    }

    #[test]
    fn scale_matches_formula() {
        // One object of exactly one period: p = 1 - 1/e.
        let p = 1.0 - (-1.0f64).exp();
        let (c, b) = scale(1, 4096, 4096);
        assert!(close(c, 1.0 / p), "{c}");
        assert!(close(b, 4096.0 / p), "{b}");

        // Small objects: p ~ a / period, so bytes scale to ~ count * period.
        let (c, b) = scale(10, 160, 1 << 19);
        let p = 1.0 - (-16.0 / (1u64 << 19) as f64).exp();
        assert!(close(c, 10.0 / p), "{c}");
        assert!(close(b, 160.0 / p), "{b}");
        assert!((b / (10.0 * (1u64 << 19) as f64) - 1.0).abs() < 1e-3);

        // Huge objects are always sampled: no scaling.
        let (c, b) = scale(2, 2 << 30, 4096);
        assert!(close(c, 2.0));
        assert!(close(b, (2u64 << 30) as f64));
    }
}
