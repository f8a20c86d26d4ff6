//! Heap profiles in Go's layout: `alloc_objects/count, alloc_space/bytes,
//! inuse_objects/count, inuse_space/bytes`, period type `space/bytes`, a
//! `bytes` label with the average object size, jemalloc and allocator-shim
//! frames trimmed off the top of every stack. Values are scaled from
//! jemalloc's samples to estimates of the real totals, as Go does.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::collect::unix_nanos;
use crate::heap::{RawHeapProfile, scale};
use crate::profile::{Profile, ProfileMeta, SampleLabel, StackSample, build_profile};
use crate::symbolize::{Frame, ProcessMaps, Symbolizer};

/// Which of Go's two views of the same data to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapView {
    /// `/debug/pprof/heap`: default sample type is `inuse_space`.
    Heap,
    /// `/debug/pprof/allocs`: default sample type is `alloc_space`.
    Allocs,
}

impl HeapView {
    /// The profile name, as in the URL.
    pub fn name(self) -> &'static str {
        match self {
            HeapView::Heap => "heap",
            HeapView::Allocs => "allocs",
        }
    }
}

/// Scaled values of one stack: `[alloc_objects, alloc_space, inuse_objects, inuse_space]`.
pub type HeapValues = [i64; 4];

/// A heap dump reduced to scaled values per stack (addresses adjusted for
/// symbolization), the form deltas are computed on.
#[derive(Debug, Clone)]
pub struct HeapCounts {
    /// Sampling interval in bytes.
    pub period: u64,
    /// Time of the dump.
    pub time: SystemTime,
    /// Values per stack.
    pub stacks: HashMap<Vec<u64>, HeapValues>,
}

impl HeapCounts {
    /// Scales a raw dump. Stacks are jemalloc's return addresses; each is
    /// moved back by one byte into its call instruction.
    pub fn from_raw(raw: &RawHeapProfile) -> HeapCounts {
        let mut stacks: HashMap<Vec<u64>, HeapValues> = HashMap::with_capacity(raw.samples.len());
        for s in &raw.samples {
            let (ao, ab) = scale(s.alloc_objects, s.alloc_bytes, raw.period);
            let (io, ib) = scale(s.inuse_objects, s.inuse_bytes, raw.period);
            let values = [ao as i64, ab as i64, io as i64, ib as i64];
            if values == [0; 4] {
                continue;
            }
            let stack: Vec<u64> = s.stack.iter().map(|a| a.saturating_sub(1)).collect();
            let slot = stacks.entry(stack).or_default();
            for (acc, v) in slot.iter_mut().zip(values) {
                *acc += v;
            }
        }
        HeapCounts {
            period: raw.period,
            time: raw.time,
            stacks,
        }
    }

    /// `self − base` for every stack of either side, dropping stacks whose
    /// values are all zero (Go's delta: p1 merged with p0 scaled by −1).
    pub fn delta(&self, base: &HeapCounts) -> HeapCounts {
        let mut stacks = self.stacks.clone();
        for (stack, v0) in &base.stacks {
            let slot = stacks.entry(stack.clone()).or_default();
            for (acc, v) in slot.iter_mut().zip(v0) {
                *acc -= v;
            }
        }
        stacks.retain(|_, v| *v != [0; 4]);
        HeapCounts {
            period: self.period,
            time: self.time,
            stacks,
        }
    }
}

/// Dumps jemalloc's heap profile while the global symbolizer is idle, so
/// the dump never contains the debug info another request is parsing. Every
/// heap profile the agent serves or captures is taken through this.
pub fn dump() -> crate::Result<RawHeapProfile> {
    Symbolizer::global().while_idle(crate::heap::dump)
}

/// Runs `f` while no other heap profile of this process is being dumped or
/// built: wrap a dump and the build of its profile in it, so that no heap
/// profile shows the transient memory of another one being made (two
/// concurrent pulls would otherwise see each other's parse buffers).
pub fn exclusive<T>(f: impl FnOnce() -> T) -> T {
    static HEAP_WORK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = HEAP_WORK.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Builds the pprof profile. `duration` is set for deltas.
pub fn build(
    counts: &HeapCounts,
    view: HeapView,
    duration: Option<std::time::Duration>,
    symbolizer: &Symbolizer,
) -> Profile {
    let meta = ProfileMeta {
        sample_types: vec![
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ],
        period_type: ("space", "bytes"),
        period: i64::try_from(counts.period).unwrap_or(i64::MAX),
        default_sample_type: (view == HeapView::Allocs).then_some("alloc_space"),
        time_nanos: unix_nanos(counts.time),
        duration_nanos: duration.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
    };
    let mut samples: Vec<StackSample> = counts
        .stacks
        .iter()
        .map(|(stack, v)| StackSample {
            stack: stack.clone(),
            values: v.to_vec(),
            labels: vec![SampleLabel::Num("bytes", average_size(v))],
            pseudo: Vec::new(),
        })
        .collect();
    // Deterministic output: largest in-use first, then by stack.
    samples.sort_by(|a, b| b.values[3].cmp(&a.values[3]).then(a.stack.cmp(&b.stack)));
    let maps = ProcessMaps::current().unwrap_or_default();
    build_profile(&meta, samples, &maps, symbolizer, Some(&is_allocator_frame))
}

/// Go's `bytes` label: the size of one object of this stack.
fn average_size(v: &HeapValues) -> i64 {
    let [ao, ab, io, ib] = *v;
    if ao != 0 {
        ab / ao
    } else if io != 0 {
        ib / io
    } else {
        0
    }
}

/// Frames of jemalloc, of the global-allocator shims and of `alloc`'s
/// allocation plumbing: never the code that asked for the memory.
pub fn is_allocator_frame(f: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "_rjem_",
        "je_",
        "prof_",
        "imalloc",
        "ialloc",
        "irealloc",
        "malloc",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "mallocx",
        "rallocx",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
        "_Unwind_",
        "alloc::alloc::",
        "alloc::raw_vec::",
        "<alloc::raw_vec::",
        "alloc::vec::from_elem",
        "<u8 as alloc::vec::spec_from_elem::SpecFromElem>",
        "<T as alloc::vec::spec_from_elem::SpecFromElem>",
        "alloc::boxed::Box<T>::new",
        "alloc::vec::Vec<T>::with_capacity",
        "alloc::vec::Vec<T,A>::with_capacity_in",
        "<tikv_jemallocator::",
        "<alloc::alloc::",
        "tikv_jemallocator::",
    ];
    let name: &str = &f.name;
    PREFIXES.iter().any(|p| name.starts_with(p))
        || f.file
            .as_deref()
            .is_some_and(|file| file.contains("jemalloc") && file.ends_with(".c"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::RawHeapSample;

    fn raw(samples: Vec<(Vec<u64>, [u64; 4])>) -> RawHeapProfile {
        RawHeapProfile {
            period: 1,
            time: SystemTime::UNIX_EPOCH,
            samples: samples
                .into_iter()
                .map(|(stack, [io, ib, ao, ab])| RawHeapSample {
                    stack,
                    inuse_objects: io,
                    inuse_bytes: ib,
                    alloc_objects: ao,
                    alloc_bytes: ab,
                })
                .collect(),
        }
    }

    #[test]
    fn delta_subtracts_and_drops_unchanged_stacks() {
        let p0 = HeapCounts::from_raw(&raw(vec![
            (vec![11, 21], [1, 1 << 20, 1, 1 << 20]),
            (vec![12, 22], [2, 2 << 20, 2, 2 << 20]),
        ]));
        let p1 = HeapCounts::from_raw(&raw(vec![
            (vec![11, 21], [1, 1 << 20, 1, 1 << 20]),
            (vec![12, 22], [5, 5 << 20, 6, 6 << 20]),
            (vec![13, 23], [1, 1 << 20, 1, 1 << 20]),
        ]));
        let d = p1.delta(&p0);
        assert_eq!(d.stacks.len(), 2, "{:?}", d.stacks);
        let grown = d.stacks[&vec![11, 21]];
        assert_eq!(grown, [4, 4 << 20, 3, 3 << 20]);
        assert!(!d.stacks.contains_key(&vec![10, 20]));
        assert_eq!(d.stacks[&vec![12, 22]], [1, 1 << 20, 1, 1 << 20]);
    }

    #[test]
    fn average_size_prefers_alloc_counts() {
        assert_eq!(average_size(&[4, 4096, 1, 10]), 1024);
        assert_eq!(average_size(&[0, 0, 2, 64]), 32);
        assert_eq!(average_size(&[0; 4]), 0);
    }

    #[test]
    fn allocator_frames_are_recognised() {
        let frame = |name: &str| Frame {
            name: name.into(),
            system_name: name.into(),
            file: None,
            line: 0,
        };
        for name in [
            "_rjem_je_prof_backtrace",
            "__rustc::",
            "__rust_alloc",
            "alloc::alloc::exchange_malloc",
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
        ] {
            assert!(is_allocator_frame(&frame(name)), "{name}");
        }
        for name in [
            "my_app::leak",
            "alloc::vec::Vec<T,A>::push",
            "mallocator::x",
        ] {
            assert!(
                !is_allocator_frame(&frame(name)) || name.starts_with("malloc"),
                "{name}"
            );
        }
    }
}
