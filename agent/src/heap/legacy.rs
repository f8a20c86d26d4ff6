//! Writer of Go's legacy text heap profile, the format net/http/pprof serves
//! for `/debug/pprof/heap?debug=1` (Go's `runtime/pprof.writeHeapInternal`).
//!
//! ```text
//! heap profile: 3: 12288 [10: 40960] @ heap/8192
//! 2: 8192 [5: 20480] @ 0x7f0000001234 0x55aa00000010
//! #<TAB>0x7f0000001234<TAB>malloc+0x14
//! #<TAB>0x55aa00000010<TAB>prog::leak+0x20 src/main.rs:10
//!
//! MAPPED_LIBRARIES:
//! 55aa00000000-55aa00001000 r-xp 00000000 08:01 123 /bin/prog
//! ```
//!
//! `go tool pprof` (`profile/legacy_profile.go`, `parseHeap`) reads it: the
//! header's `heap/<N>` means a sampling rate of `N/2` (Go writes
//! `2*MemProfileRate`), counts are the raw sampled ones and pprof scales them
//! itself with `1/(1-exp(-avg/rate))`, `#` lines are ignored, and a
//! `MAPPED_LIBRARIES:` line starts a /proc/self/maps style memory map.

use std::fmt::Write as _;

use super::{RawHeapProfile, RawHeapSample};

/// Writes Go's legacy text heap profile (what net/http/pprof serves for
/// `/debug/pprof/heap?debug=1`), in the form `go tool pprof` parses.
///
/// - Header `heap profile: <inuse_objs>: <inuse_bytes> [<alloc_objs>: <alloc_bytes>] @ heap/<2*period>`,
///   with the sums over all samples.
/// - One line per sample `<inuse_objs>: <inuse_bytes> [<alloc_objs>: <alloc_bytes>] @ 0x.. 0x..`
///   with the raw sampled counts (pprof scales them), in the order of `p.samples`.
/// - After each sample line, `#\t0x<addr>\t<description>` for each address
///   whose `describe` gives `Some` (line breaks in it become spaces), then a
///   blank line, as Go does.
/// - At the end, `"\nMAPPED_LIBRARIES:\n"` and `maps` if `maps` is `Some`.
///
/// pprof's parser reads the alloc columns, and reports the sample types
/// alloc_objects, alloc_space, inuse_objects and inuse_space, only when the
/// header's alloc totals differ from its in-use totals and are not 0; otherwise
/// it reports just objects and space, from the in-use columns. So a profile
/// taken without `prof_accum`, or in which nothing sampled was ever freed,
/// has two sample types there (Go's own writer behaves the same way).
///
/// pprof refuses a count of 0 with a byte total other than 0; jemalloc's
/// rounding of its unbiased counts could give one, so such a count is
/// written as 1.
pub fn write_legacy_text(
    p: &RawHeapProfile,
    describe: &mut dyn FnMut(u64) -> Option<String>,
    maps: Option<&str>,
) -> String {
    let mut total = RawHeapSample::default();
    for s in &p.samples {
        let (io, ib) = fix_pair(s.inuse_objects, s.inuse_bytes);
        let (ao, ab) = fix_pair(s.alloc_objects, s.alloc_bytes);
        total.inuse_objects = total.inuse_objects.saturating_add(io);
        total.inuse_bytes = total.inuse_bytes.saturating_add(ib);
        total.alloc_objects = total.alloc_objects.saturating_add(ao);
        total.alloc_bytes = total.alloc_bytes.saturating_add(ab);
    }

    let mut out = String::with_capacity(128 + p.samples.len() * 160);
    // `write!` into a String cannot fail.
    let _ = writeln!(
        out,
        "heap profile: {}: {} [{}: {}] @ heap/{}",
        total.inuse_objects,
        total.inuse_bytes,
        total.alloc_objects,
        total.alloc_bytes,
        p.period.saturating_mul(2)
    );

    for s in &p.samples {
        let (io, ib) = fix_pair(s.inuse_objects, s.inuse_bytes);
        let (ao, ab) = fix_pair(s.alloc_objects, s.alloc_bytes);
        let _ = write!(out, "{io}: {ib} [{ao}: {ab}] @");
        for addr in &s.stack {
            let _ = write!(out, " {addr:#x}");
        }
        out.push('\n');
        for &addr in &s.stack {
            if let Some(desc) = describe(addr) {
                let desc = desc.replace(['\n', '\r'], " ");
                let _ = writeln!(out, "#\t{addr:#x}\t{desc}");
            }
        }
        out.push('\n');
    }

    if let Some(maps) = maps {
        out.push_str("\nMAPPED_LIBRARIES:\n");
        out.push_str(maps);
    }
    out
}

/// A count of 0 with bytes is refused by pprof: write it as 1.
fn fix_pair(objects: u64, bytes: u64) -> (u64, u64) {
    if objects == 0 && bytes != 0 {
        (1, bytes)
    } else {
        (objects, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn profile() -> RawHeapProfile {
        RawHeapProfile {
            period: 4096,
            samples: vec![
                RawHeapSample {
                    stack: vec![0x7f0000001234, 0x55aa00000010],
                    inuse_objects: 2,
                    inuse_bytes: 8192,
                    alloc_objects: 5,
                    alloc_bytes: 20480,
                },
                RawHeapSample {
                    stack: vec![0x10],
                    inuse_objects: 0,
                    inuse_bytes: 0,
                    alloc_objects: 1,
                    alloc_bytes: 64,
                },
            ],
            time: SystemTime::now(),
        }
    }

    #[test]
    fn writes_go_format() {
        let mut describe = |a: u64| match a {
            0x7f0000001234 => Some("malloc+0x14".to_string()),
            0x55aa00000010 => Some("prog::leak+0x20\nsrc/main.rs:10".to_string()),
            _ => None,
        };
        let text = write_legacy_text(
            &profile(),
            &mut describe,
            Some("55aa00000000-55aa00001000 r-xp 00000000 08:01 123 /bin/prog\n"),
        );
        let expected = "heap profile: 2: 8192 [6: 20544] @ heap/8192
2: 8192 [5: 20480] @ 0x7f0000001234 0x55aa00000010
#\t0x7f0000001234\tmalloc+0x14
#\t0x55aa00000010\tprog::leak+0x20 src/main.rs:10

0: 0 [1: 64] @ 0x10


MAPPED_LIBRARIES:
55aa00000000-55aa00001000 r-xp 00000000 08:01 123 /bin/prog
";
        assert_eq!(text, expected);
    }

    #[test]
    fn no_maps_no_samples() {
        let p = RawHeapProfile {
            period: 524288,
            samples: Vec::new(),
            time: SystemTime::now(),
        };
        let text = write_legacy_text(&p, &mut |_| None, None);
        assert_eq!(text, "heap profile: 0: 0 [0: 0] @ heap/1048576\n");
    }

    #[test]
    fn zero_count_with_bytes_is_written_as_one() {
        let mut p = profile();
        p.samples.truncate(1);
        p.samples[0].inuse_objects = 0;
        let text = write_legacy_text(&p, &mut |_| None, None);
        assert!(text.starts_with("heap profile: 1: 8192 [5: 20480] @ heap/8192\n1: 8192 [5: 20480] @ 0x7f0000001234 0x55aa00000010\n"), "{text}");
    }
}
