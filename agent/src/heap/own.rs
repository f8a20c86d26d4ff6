//! The agent's own memory in flight, counted exactly so that the heap rule
//! (`heap_bytes`: jemalloc's allocated bytes) never fires on leakscope's
//! work: symbolizing a profile parses tens of MB of debug info and frees
//! them a moment later, which in the allocator's total looks like the
//! service growing.
//!
//! [`agent_work`] wraps a piece of the agent's heavy work (building a
//! profile for HTTP, writing a capture to the store). While it runs, the
//! thread's jemalloc counters (`thread.allocatedp`, `thread.deallocatedp`:
//! pointers to the running totals of this thread, which jemalloc keeps
//! current without locks) are listed in a small fixed table with their
//! values at the start; [`in_flight`] sums, over the listed threads,
//! allocated − deallocated since their start: the bytes the agent's work
//! holds right now. When the work ends its entry is removed, so memory it
//! kept (a cache, a stored profile) counts as the service's from then on,
//! as it should: the agent's lasting memory is bounded and small.

use std::sync::Mutex;

use tikv_jemalloc_ctl::raw;

/// Most threads doing agent work at once that are counted (the HTTP layer
/// runs at most two heavy jobs, plus the watch and store threads).
const SLOTS: usize = 16;

/// One running piece of agent work.
#[derive(Clone, Copy)]
struct Entry {
    allocated: *const u64,
    deallocated: *const u64,
    start_allocated: u64,
    start_deallocated: u64,
}

// SAFETY: the pointers are only read while their thread is inside
// `agent_work` (the entry is removed before the closure's thread leaves it),
// and jemalloc keeps a thread's counters alive as long as the thread.
unsafe impl Send for Entry {}

static TABLE: Mutex<[Option<Entry>; SLOTS]> = Mutex::new([None; SLOTS]);

/// Pointers to this thread's running allocated and deallocated totals.
fn counters() -> Option<(*const u64, *const u64)> {
    // SAFETY: both controls are `uint64_t *` in jemalloc, read into a
    // pointer-sized value; names are NUL-terminated.
    let allocated = unsafe { raw::read::<*mut u64>(b"thread.allocatedp\0") }.ok()?;
    // SAFETY: as above.
    let deallocated = unsafe { raw::read::<*mut u64>(b"thread.deallocatedp\0") }.ok()?;
    (!allocated.is_null() && !deallocated.is_null())
        .then_some((allocated.cast_const(), deallocated.cast_const()))
}

/// Runs `f` as the agent's own work: what it allocates and has not freed
/// is left out of [`in_flight`]'s complement while it runs.
pub fn agent_work<T>(f: impl FnOnce() -> T) -> T {
    let Some((allocated, deallocated)) = counters() else {
        return f();
    };
    // SAFETY: the pointers are this thread's own counters, just returned by
    // jemalloc.
    let (a, d) = unsafe { (allocated.read_volatile(), deallocated.read_volatile()) };
    let entry = Entry {
        allocated,
        deallocated,
        start_allocated: a,
        start_deallocated: d,
    };
    let slot = {
        let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let free = table.iter().position(Option::is_none);
        if let Some(i) = free {
            table[i] = Some(entry);
        }
        free
    };
    // Removes the entry even if `f` panics.
    struct Release(Option<usize>);
    impl Drop for Release {
        fn drop(&mut self) {
            if let Some(i) = self.0 {
                TABLE.lock().unwrap_or_else(|e| e.into_inner())[i] = None;
            }
        }
    }
    let _release = Release(slot);
    f()
}

/// Bytes the agent's running work holds now (allocated and not yet freed
/// since each piece of work started); 0 when none runs.
pub fn in_flight() -> u64 {
    let table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    table
        .iter()
        .flatten()
        .map(|e| {
            // SAFETY: see `Entry`: the thread is still inside `agent_work`,
            // so its counters are alive; they are plain u64s that only
            // their own thread writes, read here racily (a torn read cannot
            // happen for an aligned u64 on the supported targets).
            let (a, d) = unsafe { (e.allocated.read_volatile(), e.deallocated.read_volatile()) };
            let grown = a.saturating_sub(e.start_allocated);
            let freed = d.saturating_sub(e.start_deallocated);
            grown.saturating_sub(freed)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn work_in_flight_is_counted_and_released() {
        assert!(counters().is_some(), "jemalloc's thread counters");
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            agent_work(|| {
                // Through jemalloc itself: the test binary's global
                // allocator is the system's.
                let layout = Layout::from_size_align(8 << 20, 8).unwrap();
                let jemalloc = tikv_jemallocator::Jemalloc;
                // SAFETY: a valid, non-zero layout; freed below with it.
                let held = unsafe { jemalloc.alloc(layout) };
                assert!(!held.is_null());
                tx.send(()).unwrap();
                done_rx.recv().unwrap();
                // SAFETY: allocated above with this layout.
                unsafe { jemalloc.dealloc(held, layout) };
            })
        });
        rx.recv().unwrap();
        assert!(in_flight() >= 8 << 20, "{}", in_flight());
        done_tx.send(()).unwrap();
        worker.join().unwrap();
        assert!(in_flight() < 1 << 20, "{}", in_flight());
    }
}
